"""The DETR-R50 config instantiates and runs a training step and an inference on CPU (the SAM-DETR configs:
tests/modeling/test_sam_detr.py; the quickstart configs: tests/modeling/test_contract.py)."""
import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from model_inputs import two_images  # noqa: E402

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


def test_quickstart_sam_detr_matches_the_quickstart_detr():
    """The two main jobs differ only in the detector, so that their APs compare."""
    detr = LazyConfig.load(str(CONFIGS / "quickstart" / "detr.py"))
    sam = LazyConfig.load(str(CONFIGS / "quickstart" / "sam_detr.py"))
    for key in ("dataloader", "optimizer", "lr_multiplier"):
        assert LazyConfig.to_py(sam[key]) == LazyConfig.to_py(detr[key])
    assert {k: v for k, v in sam.train.items() if k != "output_dir"} == {
        k: v for k, v in detr.train.items() if k != "output_dir"
    }
    assert sam.model.backbone == detr.model.backbone and sam.model.in_features == detr.model.in_features
    assert sam.model.num_queries == detr.model.num_queries
    assert sam.model.criterion.num_classes == detr.model.criterion.num_classes
    t = detr.model.transformer
    for part in (sam.model.transformer.encoder, sam.model.transformer.decoder):
        layer = part.layer
        assert (layer.d_model, layer.nhead, layer.dim_feedforward, layer.dropout) == (
            t.d_model, t.nhead, t.dim_feedforward, t.dropout
        )
    assert sam.model.transformer.encoder.num_layers == t.num_encoder_layers
    assert sam.model.transformer.decoder.num_layers == t.num_decoder_layers
