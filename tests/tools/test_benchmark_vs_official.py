"""tools/benchmark_vs_official.py: its rows name loadable configs, and DINO's two sides take a training step and
an inference on a small image (the official side from a clone of IDEA-Research/DINO: $SAM_DETR_OFFICIAL/DINO,
by default ../ext/official/DINO beside the checkout; skipped where it is absent)."""
import argparse
import os
from pathlib import Path

import pytest
import torch
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from tool_helpers import load_tool  # noqa: E402

OFFICIAL_DINO = Path(os.environ.get("SAM_DETR_OFFICIAL", REPO_ROOT.parent / "ext" / "official")) / "DINO"
HEIGHT, WIDTH = 200, 264  # small (1129 encoder tokens: more than the 900 queries), not a multiple of 64


@pytest.fixture(scope="module")
def tool():
    return load_tool("benchmark_vs_official")


def test_every_row_names_a_loadable_config(tool):
    from detectron2.config import LazyConfig

    for name, method in tool.METHODS.items():
        for row_name, row in method.rows.items():
            cfg = LazyConfig.load(str(REPO_ROOT / "configs" / row.config))
            assert "criterion" in cfg.model, f"{name} {row_name}: {row.config}"


def test_dino_ours_train_step_is_measured(tool):
    # forward with the denoising groups, the losses, backward, clipping and AdamW, timed once
    args = argparse.Namespace(method="dino", row="4scale", impl="ours", size=(HEIGHT, WIDTH), task="train",
                              threads=1, iters=1, warmup=0, official=None)
    figures = tool.measure(args)
    assert figures["seconds"] > 0 and figures["cpu_seconds"] > 0 and figures["peak_mib"] > 0, figures


@pytest.mark.skipif(
    not (OFFICIAL_DINO / "models" / "dino").is_dir(), reason=f"no IDEA-Research/DINO clone at {OFFICIAL_DINO}"
)
def test_dino_official_losses_include_denoising_and_it_predicts_91_classes(tool):
    method = tool.METHODS["dino"]
    model, criterion, nested = method.official(str(OFFICIAL_DINO), method.rows["4scale"].official_args)
    image, boxes, labels = tool.sample(HEIGHT, WIDTH)
    samples = nested([tool.normalised(image)])
    targets = [{"labels": labels, "boxes": tool.cxcywh(boxes, HEIGHT, WIDTH)}]
    model.train()
    losses = criterion(model(samples, targets), targets)
    # the weighted denoising terms: class, L1 and GIoU of every decoder layer
    dn_terms = [k for k in losses if "_dn" in k and k in criterion.weight_dict]
    assert len(dn_terms) == 3 * 6, sorted(losses)
    assert all(torch.isfinite(losses[k]) for k in dn_terms)
    assert any(losses[k] > 0 for k in dn_terms)
    model.eval()
    with torch.no_grad():
        assert model(samples)["pred_logits"].shape == (1, 900, tool.NUM_CLASSES)
    tool.steps_official(method, str(OFFICIAL_DINO), method.rows["4scale"], HEIGHT, WIDTH, "train")()
