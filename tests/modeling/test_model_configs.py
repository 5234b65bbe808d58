"""The DETR and Conditional DETR row configs instantiate and run a training step and an inference on CPU,
with the official optimisation (the SAM-DETR and Deformable DETR configs: tests/modeling/test_sam_detr.py,
test_deformable_detr.py; the quickstart configs: tests/modeling/test_contract.py)."""
import pytest

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig  # noqa: E402
from model_inputs import model_and_optimizer, train_step_and_inference  # noqa: E402

from sam_detr.engine import checkpointer  # noqa: E402
from sam_detr.modeling import DETR, ConditionalDETR  # noqa: E402

CONFIGS = REPO_ROOT / "configs"


ROW_CONFIGS = [
    ("detr_r50_500ep.py", DETR),
    ("detr_r50_50ep.py", DETR),
    ("detr_r50_dc5_500ep.py", DETR),
    ("detr_r101_500ep.py", DETR),
    ("detr_r101_50ep.py", DETR),
    ("detr_r101_dc5_500ep.py", DETR),
    ("conditional_detr_r50_50ep.py", ConditionalDETR),
    ("conditional_detr_r50_dc5_50ep.py", ConditionalDETR),
    ("conditional_detr_r101_50ep.py", ConditionalDETR),
    ("conditional_detr_r101_dc5_50ep.py", ConditionalDETR),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, cls", ROW_CONFIGS)
def test_config_trains_and_infers(name, cls):
    cfg = LazyConfig.load(str(CONFIGS / name))
    model, optimizer = model_and_optimizer(cfg)
    assert type(model) is cls
    _, out = train_step_and_inference(model, optimizer)
    assert [o["instances"].image_size for o in out] == [(134, 186), (45, 101)]


# row -> total batch, epochs, lr drop epoch (Conditional DETR's table; the 500-epoch DETRs: facebookresearch/detr)
SCHEDULES = {
    "detr_r50_500ep.py": (64, 500, 400),
    "detr_r50_50ep.py": (16, 50, 40),
    "detr_r50_dc5_500ep.py": (16, 500, 400),
    "detr_r101_500ep.py": (64, 500, 400),
    "detr_r101_50ep.py": (16, 50, 40),
    "detr_r101_dc5_500ep.py": (16, 500, 400),
    "conditional_detr_r50_50ep.py": (16, 50, 40),
    "conditional_detr_r50_dc5_50ep.py": (8, 50, 40),
    "conditional_detr_r101_50ep.py": (16, 50, 40),
    "conditional_detr_r101_dc5_50ep.py": (8, 50, 40),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_row_configs_use_the_official_optimisation(name):
    cfg = LazyConfig.load(str(CONFIGS / name))
    batch, epochs, lr_drop = SCHEDULES[name]
    assert (cfg.dataloader.train.total_batch_size, cfg.train.epochs) == (batch, epochs)
    assert list(cfg.lr_multiplier.milestones) == [lr_drop] and list(cfg.lr_multiplier["values"]) == [1.0, 0.1]
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (1e-4, 1e-4)
    assert cfg.optimizer.params.lr_factor_func.factors == {"backbone.": 0.1}
    assert cfg.train.clip_grad.enabled and cfg.train.clip_grad.max_norm == 0.1
    depth = 101 if "r101" in name else 50
    assert (cfg.model.backbone.depth, cfg.model.backbone.dc5) == (depth, "dc5" in name)
    assert cfg.train.init_checkpoint_partial == checkpointer.IMAGENET_BACKBONE
    assert f"R-{depth}" in cfg.train.init_checkpoint or f"r{depth}" in cfg.train.init_checkpoint


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


LAYER_KEYS = ("d_model", "nhead", "dim_feedforward", "dropout")  # every layer's names for them


@pytest.mark.parametrize("name", ["sam_detr.py", "conditional_detr.py", "deformable_detr.py", "ms_detr.py"])
def test_quickstarts_match_the_quickstart_detr(name):
    """The main jobs differ only in the detector, so that their APs compare."""
    detr, other = load_quickstarts(name)
    t = detr.transformer
    for part in (other.transformer.encoder, other.transformer.decoder):
        assert tuple(part.layer[k] for k in LAYER_KEYS) == (t.d_model, t.nhead, t.dim_feedforward, t.dropout)
    assert other.transformer.encoder.num_layers == t.num_encoder_layers
    assert other.transformer.decoder.num_layers == t.num_decoder_layers


def test_plain_detr_quickstart_matches_the_quickstart_detr():
    """Plain-DETR has no encoder: its decoder has the quickstart DETR's width, heads, FFN, dropout and depth."""
    detr, other = load_quickstarts("plain_detr.py")
    t, layer = detr.transformer, other.decoder.layer
    expected = (t.d_model, t.nhead, t.dim_feedforward, t.dropout)
    assert tuple(layer[k] for k in LAYER_KEYS) == expected
    assert other.decoder.num_layers == t.num_decoder_layers
