"""The DETR and quickstart configs instantiate and run a training step and an inference on CPU (the
SAM-DETR and Deformable DETR configs: tests/modeling/test_sam_detr.py, test_deformable_detr.py)."""
import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from model_inputs import two_images  # noqa: E402

from sam_detr.modeling import DETR, SAMDETR, DeformableDETR  # noqa: E402

CONFIGS = REPO_ROOT / "configs"


@pytest.mark.parametrize(
    "name, cls",
    [
        ("detr_r50_500ep.py", DETR),
        ("quickstart/detr.py", DETR),
        ("quickstart/sam_detr.py", SAMDETR),
        ("quickstart/deformable_detr.py", DeformableDETR),
    ],
)
def test_config_trains_and_infers(name, cls):
    cfg = LazyConfig.load(str(CONFIGS / name))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert type(model) is cls
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    with EventStorage():
        losses = model(two_images())
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(two_images())
    assert [o["instances"].image_size for o in out] == [(134, 186), (45, 101)]


def load_quickstarts(name):
    """The quickstart DETR and another quickstart, after checking that they run the same job: data,
    optimiser, schedule, training options, backbone, levels, queries and classes."""
    detr = LazyConfig.load(str(CONFIGS / "quickstart" / "detr.py"))
    other = LazyConfig.load(str(CONFIGS / "quickstart" / name))
    for key in ("dataloader", "optimizer", "lr_multiplier"):
        assert LazyConfig.to_py(other[key]) == LazyConfig.to_py(detr[key])
    assert {k: v for k, v in other.train.items() if k != "output_dir"} == {
        k: v for k, v in detr.train.items() if k != "output_dir"
    }
    assert other.model.backbone == detr.model.backbone and other.model.in_features == detr.model.in_features
    assert other.model.num_queries == detr.model.num_queries
    assert other.model.criterion.num_classes == detr.model.criterion.num_classes
    return detr.model, other.model


def test_quickstart_sam_detr_matches_the_quickstart_detr():
    """The two main jobs differ only in the detector, so that their APs compare."""
    detr, sam = load_quickstarts("sam_detr.py")
    t = detr.transformer
    for part in (sam.transformer.encoder, sam.transformer.decoder):
        layer = part.layer
        assert (layer.d_model, layer.nhead, layer.dim_feedforward, layer.dropout) == (
            t.d_model, t.nhead, t.dim_feedforward, t.dropout
        )
    assert sam.transformer.encoder.num_layers == t.num_encoder_layers
    assert sam.transformer.decoder.num_layers == t.num_decoder_layers


def test_quickstart_deformable_detr_matches_the_quickstart_detr():
    detr, deformable = load_quickstarts("deformable_detr.py")
    t = detr.transformer
    for part in (deformable.transformer.encoder, deformable.transformer.decoder):
        layer = part.layer
        assert (layer.d_model, layer.n_heads, layer.d_ffn, layer.dropout) == (
            t.d_model, t.nhead, t.dim_feedforward, t.dropout
        )
    assert deformable.transformer.encoder.num_layers == t.num_encoder_layers
    assert deformable.transformer.decoder.num_layers == t.num_decoder_layers
    assert deformable.transformer.proposals.d_model == t.d_model and deformable.with_box_refine
