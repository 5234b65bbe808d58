"""Every quickstart model exported to ONNX and run by ONNX Runtime gives the PyTorch model's detections on
real COCO images, at two image sizes other than the export example's and in a padded batch of two: the same
detections (matched one to one by class), scores within 1e-4, boxes within 1e-2 px. Random weights (seed 0):
the graph, not the training, is under test."""
from pathlib import Path

import pytest
import torch
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
DEPLOY_MISSING = "the deploy extra is not installed (pip install -e .[deploy])"
for module in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(module, reason=DEPLOY_MISSING)

import numpy as np  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402

from sam_detr.export import OnnxDetector, check_exportable, compare_detections, export_onnx  # noqa: E402
from sam_detr.export.verify import BOX_TOLERANCE, SCORE_TOLERANCE  # noqa: E402

QUICKSTART_CONFIGS = sorted(p.stem for p in (REPO_ROOT / "configs" / "quickstart").glob("*.py"))
EXPORT_SIZE = (2, 160, 208)  # the example the graphs are traced with
# (short edge, longest edge) per image of each case: sizes other than the export example's
CASES = {"size_a": [(144, 183)], "size_b": [(171, 120)], "padded_batch": [(150, 199), (128, 171)]}


def build(config: str):
    torch.manual_seed(0)
    return instantiate(LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / f"{config}.py")).model).eval()


@pytest.fixture(scope="module", params=QUICKSTART_CONFIGS)
def exported(request, tmp_path_factory):
    """(PyTorch model, the ONNX Runtime detector of its export), once per quickstart config."""
    model = build(request.param)
    path = export_onnx(model, str(tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"), example_size=EXPORT_SIZE)
    return model, OnnxDetector(path, num_threads=1)


def coco_image(coco_mini_dir: Path, index: int, size) -> torch.Tensor:
    """The index-th COCO image, resized to the (short, long) edge bound `size` as the test loader resizes."""
    path = sorted((coco_mini_dir / "val2017").glob("*.jpg"))[index]
    image = T.AugInput(read_image(str(path), format="RGB"))
    T.ResizeShortestEdge(size[0], size[1])(image)
    return torch.as_tensor(np.ascontiguousarray(image.image.transpose(2, 0, 1)))


@pytest.mark.coco_mini
@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_runtime_gives_pytorch_detections(exported, case, coco_mini_dir):
    model, detector = exported
    inputs = [{"image": coco_image(coco_mini_dir, i, size)} for i, size in enumerate(CASES[case])]
    with torch.no_grad():
        reference = model(inputs)
    differences = compare_detections(reference, detector(inputs))
    assert differences.detections > 0 and differences.unmatched == 0, differences
    assert differences.max_score <= SCORE_TOLERANCE and differences.max_box <= BOX_TOLERANCE, differences


def test_batch_invariant_model_is_refused():
    model = build("detr")
    model.batch_invariant = True
    with pytest.raises(ValueError, match=r"^batch_invariant=True runs the backbone once per image") as error:
        check_exportable(model)
    assert "\n" not in str(error.value)


# one published model per method family (random weights: no download), at the test loader's kind of sizes
PUBLISHED_CONFIGS = [
    "detr_r50_500ep", "conditional_detr_r50_50ep", "sam_detr_r50_12ep", "deformable_detr_r50_two_stage_50ep",
    "ms_detr_pp_r50_12ep", "plain_detr_swinv2_small_sup_pt_boxrpe",
]
PUBLISHED_CASES = [[(320, 427)], [(288, 512)], [(320, 401), (256, 341)]]


@pytest.mark.slow
@pytest.mark.coco_mini
@pytest.mark.parametrize("config", PUBLISHED_CONFIGS)
def test_published_model_exports(config, coco_mini_dir, tmp_path):
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(REPO_ROOT / "configs" / f"{config}.py")).model).eval()
    detector = OnnxDetector(export_onnx(model, str(tmp_path / f"{config}.onnx"), example_size=(2, 352, 384)))
    for sizes in PUBLISHED_CASES:
        inputs = [{"image": coco_image(coco_mini_dir, i + 2, size)} for i, size in enumerate(sizes)]
        with torch.no_grad():
            reference = model(inputs)
        differences = compare_detections(reference, detector(inputs))
        assert differences.detections > 0 and differences.unmatched == 0, (sizes, differences)
        assert differences.max_score <= SCORE_TOLERANCE and differences.max_box <= BOX_TOLERANCE, (sizes, differences)
