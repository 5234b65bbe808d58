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
