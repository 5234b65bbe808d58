"""Fake official checkpoints built from the official state-dict listings (../shared/notes/official_statedicts),
shared by the converter tests."""
import os
import re
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT

LISTINGS = Path(
    os.environ.get("SAM_DETR_OFFICIAL_STATEDICTS", REPO_ROOT.parent / "shared" / "notes" / "official_statedicts")
)
# listings of official models that ../shared does not hold (facebookresearch/detr's DETR-R50, built on CPU by
# ../shared/tools/build_official.py and listed in the same format)
REPO_LISTINGS = Path(__file__).parent / "listings"
needs_listings = pytest.mark.skipif(
    not LISTINGS.is_dir(), reason=f"{LISTINGS} (the official state-dict listings) is absent"
)
# the marks of a converter test module: its models are built on the meta device (only names and shapes
# matter, loading values is a no-op)
CONVERTER_TEST_MARKS = [
    needs_listings,
    pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter:UserWarning"),
]

_LINE = re.compile(r"^(\S+) \(([\d, ]*)\)(?:  \[same tensor as (\S+)\])?$")
# every official classifier, including the tied copies the official models register under the decoder
_CLASS_HEAD = re.compile(r"(^|\.)class_embed\.")


def fake_official(listing: str):
    """A state dict with the official keys, shapes and tied tensors of `sd_<listing>.txt`; each tensor holds
    its own index, the class heads one value per row (broadcast views: no memory for the millions of values)."""
    state = {}
    name = f"sd_{listing}.txt"
    path = REPO_LISTINGS / name if (REPO_LISTINGS / name).is_file() else LISTINGS / name
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines[1:]):
        key, shape, tied = _LINE.match(line).groups()
        if tied:
            state[key] = state[tied]
            continue
        shape = tuple(int(s) for s in shape.split(",") if s.strip())
        value = torch.tensor(float(i))
        if _CLASS_HEAD.search(key):
            value = value + torch.arange(shape[0], dtype=torch.float32).view(-1, *[1] * (len(shape) - 1)) / 100
        state[key] = value.expand(shape)
    return state
