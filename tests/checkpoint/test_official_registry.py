"""The registry of official-checkpoint converters: a model finds the converter of its meta-architecture, or
of its nearest registered base class; an unregistered one is named."""
import pytest
import torch

from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from sam_detr.checkpoint import convert_deformable_detr, convert_ms_detr  # noqa: E402
from sam_detr.checkpoint.official import OFFICIAL_CONVERTERS, official_converter  # noqa: E402
from sam_detr.modeling import MSDETR, DeformableDETR  # noqa: E402


def instance_of(cls):
    return cls.__new__(cls)  # the lookup reads the type only


def test_a_model_takes_its_class_entry_then_its_nearest_base():
    assert official_converter(instance_of(MSDETR)).convert is convert_ms_detr
    assert official_converter(instance_of(DeformableDETR)).repository == "fundamentalvision/Deformable-DETR"

    class Variant(MSDETR):
        pass

    assert official_converter(instance_of(Variant)).convert is convert_ms_detr
    assert official_converter(instance_of(DeformableDETR)).convert is convert_deformable_detr
    assert all("/" in c.repository for c in OFFICIAL_CONVERTERS.values())


def test_an_unregistered_model_is_named():
    with pytest.raises(ValueError, match="no official-checkpoint converter for Linear; registered: .*SAMDETR"):
        official_converter(torch.nn.Linear(1, 1))
