"""d2's `build_model(cfg)` with a yacs CfgNode builds every method from its LazyConfig (sam_detr.config:
cfg.MODEL.DETR.CONFIG_FILE and OVERRIDES), the model `instantiate(lazy.model)` builds."""
import pytest

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.config import LazyConfig, get_cfg, instantiate  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from sam_detr.config import add_detr_config  # noqa: E402
from sam_detr.modeling import DETR, SAMDETR  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
QUICKSTART_CONFIGS = sorted("quickstart/" + p.name for p in (CONFIGS / "quickstart").glob("*.py"))
# one published row per method (MS-DETR and Plain-DETR's hybrid-matching criterion included)
PUBLISHED_CONFIGS = [
    "detr_r50_500ep.py",
    "conditional_detr_r50_50ep.py",
    "sam_detr_r50_smca_ms_12ep.py",
    "deformable_detr_r50_two_stage_50ep.py",
    "ms_detr_pp_r50_12ep.py",
    "plain_detr_swinv2_small_mim_pt_boxrpe_reparam.py",
]


def yacs_cfg(config_file, overrides=(), meta_architecture=None, device="cpu"):
    cfg = add_detr_config(get_cfg())
    cfg.MODEL.DETR.CONFIG_FILE = str(config_file)
    cfg.MODEL.DETR.OVERRIDES = list(overrides)
    lazy = LazyConfig.load(str(CONFIGS / config_file))
    cfg.MODEL.META_ARCHITECTURE = meta_architecture or lazy.model._target_.__name__
    cfg.MODEL.DEVICE = device
    return cfg, lazy


def state(model):
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def loss_groups(model):
    """The criterion's loss groups: their fields, the matcher as printed (its settings)."""
    return [{k: str(v) if k == "matcher" else v for k, v in vars(g).items()} for g in model.criterion.groups]


@pytest.mark.parametrize("name", QUICKSTART_CONFIGS)
def test_quickstart_config_builds_the_same_model(name):
    """The same class, structure and (from the same seed) the same initial weights as the LazyConfig's."""
    cfg, lazy = yacs_cfg(name)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.manual_seed(0)
    expected = instantiate(lazy.model)
    assert type(model) is type(expected)
    assert str(model) == str(expected)
    assert model.state_dict().keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert loss_groups(model) == loss_groups(expected)


@pytest.mark.parametrize("name", PUBLISHED_CONFIGS)
def test_published_config_builds_with_overrides(name):
    """The published model (on the meta device) with the official 91 classes set through OVERRIDES."""
    cfg, lazy = yacs_cfg(name, ["model.criterion.num_classes=91"], device="meta")
    with torch.device("meta"):
        model = build_model(cfg)
        lazy.model.criterion.num_classes = 91
        expected = instantiate(lazy.model)
    assert type(model) is type(expected) and model.num_classes == 91
    assert state(model) == state(expected)
    assert str(model) == str(expected) and loss_groups(model) == loss_groups(expected)


def test_plain_detr_criterion_is_the_configs():
    """Plain-DETR's hybrid-matching group is built by its LazyConfig's criterion (the constructor checks it
    is there), its repeats overridable like any field."""
    cfg, _ = yacs_cfg(
        "plain_detr_swinv2_small_sup_pt_boxrpe.py", ["model.criterion.groups.target_repeats=3"], device="meta"
    )
    with torch.device("meta"):
        model = build_model(cfg)
    assert [(g.key, g.target_repeats) for g in model.criterion.groups] == [
        (None, 1), ("enc_outputs", 1), ("hybrid_outputs", 3)
    ]


def test_config_paths_and_keyword_arguments():
    """CONFIG_FILE absolute or under configs/; the constructor's own keyword arguments override the config's,
    and keyword construction without a cfg works as before."""
    cfg, _ = yacs_cfg("quickstart/detr.py")
    cfg.MODEL.DETR.CONFIG_FILE = str(CONFIGS / "quickstart" / "detr.py")
    model = DETR(cfg, num_queries=3, num_select=2)
    assert model.query_embed.num_embeddings == 3 and model.num_select == 2
    again = DETR(**{k: getattr(model, k) for k in ("backbone", "criterion", "in_features")},
                 transformer=model.transformer, num_queries=4)
    assert again.query_embed.num_embeddings == 4


@pytest.mark.parametrize(
    "config_file, overrides, meta_architecture, error, match",
    [
        # the config builds another method than cfg.MODEL.META_ARCHITECTURE names
        ("quickstart/sam_detr.py", [], "DETR", TypeError, "builds SAMDETR, not DETR"),
        ("deformable_detr_r50_50ep.py", [], "SAMDETR", TypeError, "builds DeformableDETR, not SAMDETR"),
        ("quickstart/detr.py", ["train.max_iter=1"], None, ValueError, r"train\.max_iter=1.*'model\.'"),
        ("quickstart/detr.py", ["model.no_such_argument=1"], None, TypeError, "no_such_argument"),
    ],
)
def test_clear_errors(config_file, overrides, meta_architecture, error, match):
    cfg, _ = yacs_cfg(config_file, overrides, meta_architecture, device="meta")
    with pytest.raises(error, match=match), torch.device("meta"):
        build_model(cfg)


def test_missing_or_unset_config_file():
    cfg = add_detr_config(get_cfg())
    cfg.MODEL.META_ARCHITECTURE = "DeformableDETR"
    with pytest.raises(ValueError, match="CONFIG_FILE is empty"):
        build_model(cfg)
    cfg.MODEL.DETR.CONFIG_FILE = "quickstart/no_such_method.py"
    with pytest.raises(FileNotFoundError, match=r"no_such_method\.py.*configs"):
        build_model(cfg)
    plain = get_cfg()
    plain.MODEL.META_ARCHITECTURE = "SAMDETR"
    with pytest.raises(KeyError, match="add_detr_config"):
        SAMDETR(plain)
