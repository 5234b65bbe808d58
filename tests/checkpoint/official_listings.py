"""Fake official checkpoints built from the official state-dict listings in tests/checkpoint/listings, shared by
the converter tests.

A listing `sd_<name>.txt` is a header line, then one line per tensor of the official model's state dict:
`key (shape)`, or `key (shape)  [same tensor as other_key]` for a tied tensor. The listings are those of
../shared/notes/official_statedicts (DETR-R50's built on CPU by ../shared/tools/build_official.py), compacted:
runs of layers listed alike are one block of lines with a `{first-last}` index range (`expand_listing`). To
add one: `python tests/checkpoint/official_listings.py SOURCE.txt...` writes the compacted copies here.
"""
import re
import sys
from pathlib import Path
from typing import List

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTINGS = Path(__file__).parent / "listings"
# the marks of a converter test module: its models are built on the meta device (only names and shapes
# matter, loading values is a no-op)
CONVERTER_TEST_MARKS = [pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter:UserWarning")]

# the official duplicate heads of the refine / two-stage models, tied to `class_embed.` and `bbox_embed.`
TIED_HEADS = ("transformer.decoder.bbox_embed.", "transformer.decoder.class_embed.")


def convert_and_load_strictly(convert, official, model, dropped_prefixes=(), dropped_suffixes=()):
    """`convert(official, model.state_dict())`, checked as a strict converter must be: every official key used
    but the dropped ones (tied duplicate heads, geometry buffers), the result loadable by Detectron2's
    checkpointer with no missing, unexpected or mis-shaped key, and by `load_state_dict(strict=True)`."""
    from detectron2.checkpoint import DetectionCheckpointer

    converted = convert(official, model.state_dict())
    kept = [k for k in official if not k.startswith(dropped_prefixes) and not k.endswith(dropped_suffixes)]
    assert len(converted) == len(kept)
    incompatible = DetectionCheckpointer(model)._load_model({"model": converted, "matching_heuristics": False})
    assert not incompatible.missing_keys and not incompatible.unexpected_keys and not incompatible.incorrect_shapes
    model.load_state_dict(converted, strict=True)
    return converted


def assert_renamed(expected, official_key, official, converted):
    """Each official key of `expected` maps to its value there (by `official_key`) and keeps its tensor."""
    for source, target in expected.items():
        assert official_key(source) == target
        assert torch.equal(converted[target], official[source])


def meta_model(config: str, num_classes: int, **overrides):
    """The model of `configs/<config>` with `num_classes` classes (and `overrides` of cfg.model), on the meta
    device: names and shapes only."""
    from detectron2.config import LazyConfig, instantiate

    model = LazyConfig.load(str(REPO_ROOT / "configs" / config)).model
    model.criterion.num_classes = num_classes
    model.update(overrides)
    with torch.device("meta"):
        return instantiate(model)


_LINE = re.compile(r"^(\S+) \(([\d, ]*)\)(?:  \[same tensor as (\S+)\])?$")
# a block of lines listing layers alike: every {first-last} is the layer index, the block repeated for each
_RANGE = re.compile(r"\{(\d+)-(\d+)\}")


# a layer index: a dotted numeric component of a key
_INDEX = re.compile(r"(?<=\.)(\d+)(?=\.)")


def compact_listing(lines: List[str]) -> List[str]:
    """The inverse of `expand_listing`: at each line, the longest run of blocks of lines that differ only in
    one layer index, counting up, becomes one block with the range (then a blank line)."""
    out, i = [], 0
    while i < len(lines):
        best = None  # (lines covered, block's common start, first index, block length, repeats)
        for match in _INDEX.finditer(lines[i].split(" ")[0]):
            prefix, first = lines[i][: match.start()], int(match.group())
            for size in range(1, len(lines) - i + 1):
                block = lines[i : i + size]
                if not block[-1].startswith(f"{prefix}{first}."):
                    break
                if not lines[i + size : i + size + 1] or not lines[i + size].startswith(f"{prefix}{first + 1}."):
                    continue  # the next layer does not start right after this block
                repeats = 1
                while [line.replace(f"{prefix}{first}.", f"{prefix}{first + repeats}.") for line in block] == \
                        lines[i + repeats * size : i + (repeats + 1) * size]:
                    repeats += 1
                if repeats > 1 and (best is None or size * repeats > best[0]):
                    best = (size * repeats, prefix, first, size, repeats)
        if best is None:
            out.append(lines[i])
            i += 1
            continue
        covered, prefix, first, size, repeats = best
        span = f"{prefix}{{{first}-{first + repeats - 1}}}."
        out += [line.replace(f"{prefix}{first}.", span) for line in lines[i : i + size]] + [""]
        i += covered
    return out


def expand_listing(lines: List[str]) -> List[str]:
    """The lines of a listing as the official models list them. In tests/checkpoint/listings, a run of layers
    listed alike is one block: consecutive lines with the same `{first-last}` range (a blank line ends a
    block), repeated for each index in the range, block after block."""
    out, block, span = [], [], None

    def flush():
        if block:
            first, last = (int(v) for v in span)
            out.extend(_RANGE.sub(str(n), line) for n in range(first, last + 1) for line in block)
            block.clear()

    for line in lines:
        match = _RANGE.search(line)
        if match is None or match.groups() != span:
            flush()
            span = None if match is None else match.groups()
        if match is not None:
            block.append(line)
        elif line:
            out.append(line)
    flush()
    return out
# every official classifier, including the tied copies the official models register under the decoder
_CLASS_HEAD = re.compile(r"(^|\.)class_embed\.")


def fake_official(listing: str):
    """A state dict with the official keys, shapes and tied tensors of `sd_<listing>.txt`; each tensor holds
    its own index, the class heads one value per row (broadcast views: no memory for the millions of values)."""
    state = {}
    lines = expand_listing((LISTINGS / f"sd_{listing}.txt").read_text().splitlines())
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


if __name__ == "__main__":  # compacts the official listings given into tests/checkpoint/listings
    for source in map(Path, sys.argv[1:]):
        lines = source.read_text().splitlines()
        compacted = compact_listing(lines)
        if expand_listing(compacted) != lines:
            sys.exit(f"{source}: the compacted listing does not expand back to it")
        (LISTINGS / source.name).write_text("\n".join(compacted) + "\n")
