"""The official state-dict listings of tests/checkpoint/listings: well formed, and compacted without loss."""
import re

import pytest

from official_listings import LISTINGS, compact_listing, expand_listing

LISTING_FILES = sorted(p.name for p in LISTINGS.glob("sd_*.txt"))
_LINE = re.compile(r"^(\S+) \(([\d, ]*)\)(?:  \[same tensor as (\S+)\])?$")


@pytest.mark.parametrize("name", LISTING_FILES)
def test_listing_expands_to_unique_keys_and_compacts_back(name):
    lines = expand_listing((LISTINGS / name).read_text().splitlines())
    assert lines[0].startswith("# trainable params")
    keys = set()
    for line in lines[1:]:
        key, _, tied = _LINE.match(line).groups()
        assert key not in keys and "{" not in key
        assert tied is None or tied in keys, f"{key} is tied to {tied}, not listed before it"
        keys.add(key)
    assert expand_listing(compact_listing(lines)) == lines


def test_blocks_expand_one_after_another():
    compact = [
        "# header", "a.{0-1}.x (1,)", "a.{0-1}.y (2,)", "", "a.{0-1}.z (3,)  [same tensor as a.{0-1}.x]", "b (4,)"
    ]
    assert expand_listing(compact) == [
        "# header", "a.0.x (1,)", "a.0.y (2,)", "a.1.x (1,)", "a.1.y (2,)",
        "a.0.z (3,)  [same tensor as a.0.x]", "a.1.z (3,)  [same tensor as a.1.x]", "b (4,)",
    ]
    # compacted again: every block ends with a blank line
    assert compact_listing(expand_listing(compact)) == compact[:4] + [compact[4], "", "b (4,)"]
