"""The DETR-R50 config instantiates and runs a training step and an inference on CPU (the SAM-DETR and
Deformable DETR configs: tests/modeling/test_sam_detr.py, test_deformable_detr.py; the quickstart configs:
tests/modeling/test_contract.py)."""
import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from model_inputs import train_step_and_inference  # noqa: E402

from sam_detr.modeling import DETR  # noqa: E402

CONFIGS = REPO_ROOT / "configs"


@pytest.mark.parametrize("name, cls", [("detr_r50_500ep.py", DETR)])
def test_config_trains_and_infers(name, cls):
    cfg = LazyConfig.load(str(CONFIGS / name))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert type(model) is cls
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    _, out = train_step_and_inference(model, optimizer)
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


@pytest.mark.parametrize(
    "name, layer_keys",
    [
        ("sam_detr.py", ("d_model", "nhead", "dim_feedforward", "dropout")),
        ("deformable_detr.py", ("d_model", "n_heads", "d_ffn", "dropout")),
    ],
)
def test_quickstarts_match_the_quickstart_detr(name, layer_keys):
    """The main jobs differ only in the detector, so that their APs compare."""
    detr, other = load_quickstarts(name)
    t = detr.transformer
    for part in (other.transformer.encoder, other.transformer.decoder):
        assert tuple(part.layer[k] for k in layer_keys) == (t.d_model, t.nhead, t.dim_feedforward, t.dropout)
    assert other.transformer.encoder.num_layers == t.num_encoder_layers
    assert other.transformer.decoder.num_layers == t.num_decoder_layers


def test_plain_detr_quickstart_matches_the_quickstart_detr():
    """Plain-DETR has no encoder: its decoder has the quickstart DETR's width, heads, FFN, dropout and depth."""
    detr, other = load_quickstarts("plain_detr.py")
    t, layer = detr.transformer, other.decoder.layer
    expected = (t.d_model, t.nhead, t.dim_feedforward, t.dropout)
    assert (layer.d_model, layer.n_heads, layer.d_ffn, layer.dropout) == expected
    assert other.decoder.num_layers == t.num_decoder_layers
