"""The ops' export paths: multi-scale deformable attention and RoIAlign recorded as standard ONNX operators,
run by ONNX Runtime at sizes other than the export example's, equal to the compiled ops."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import importorskip_deploy

from sam_detr.layers import ms_deform_attn, roi_align
from sam_detr.layers.level_shapes import shapes_tensor

importorskip_deploy()
import onnxruntime as ort  # noqa: E402

# torchvision's adaptive sampling (-1) is ONNX RoiAlign's 0: the same rule, though the exporter warns
pytestmark = pytest.mark.filterwarnings("ignore:ONNX export for RoIAlign with a non-zero sampling_ratio")


def export_and_load(module, args, dynamic_shapes, path):
    torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=18, dynamic_shapes=dynamic_shapes,
                      verbose=False, external_data=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class TwoLevelAttention(torch.nn.Module):
    """Deformable attention over a map and its 2x2-pooled level, the level shapes computed in the graph."""

    def forward(self, x, locations, weights):
        levels = [x, F.avg_pool2d(x, 2)]
        spatial_shapes = shapes_tensor(levels)
        start = torch.cat([spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]])
        value = torch.cat([f.flatten(2) for f in levels], 2).transpose(1, 2)
        N, S, C = value.shape
        return ms_deform_attn(value.view(N, S, 2, C // 2), spatial_shapes, start, locations, weights)


def test_ms_deform_attn_any_level_sizes(tmp_path):
    g = torch.Generator().manual_seed(0)
    locations = torch.rand(2, 7, 2, 2, 3, 2, generator=g) * 1.2 - 0.1  # some outside the map
    weights = torch.rand(2, 7, 2, 2, 3, generator=g)
    x = torch.randn(2, 8, 12, 18, generator=g)
    height, width = torch.export.Dim("height", min=4, max=512), torch.export.Dim("width", min=4, max=512)
    session = export_and_load(TwoLevelAttention(), (x, locations, weights), ({2: height, 3: width}, None, None),
                              tmp_path / "msda.onnx")
    for size in [(13, 17), (31, 8)]:  # odd sizes: the pooled level floors them
        x = torch.randn(2, 8, *size, generator=g)
        expected = TwoLevelAttention()(x, locations, weights)  # the compiled kernel
        (got,) = session.run(None, {"x": x.numpy(), "locations": locations.numpy(), "weights": weights.numpy()})
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5)


class Align(torch.nn.Module):
    def __init__(self, aligned, sampling_ratio):
        super().__init__()
        self.aligned, self.sampling_ratio = aligned, sampling_ratio

    def forward(self, x, rois):
        return roi_align(x, rois, (7, 5), 0.5, self.sampling_ratio, self.aligned)


@pytest.mark.parametrize("aligned,sampling_ratio", [(True, -1), (False, -1), (True, 2)])
def test_roi_align_as_onnx_roialign(aligned, sampling_ratio, tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 11, 14, generator=g)
    corners = torch.rand(9, 2, generator=g) * 30 - 3  # boxes partly outside, some tiny
    rois = torch.cat([torch.randint(0, 2, (9, 1), generator=g).float(), corners,
                      corners + torch.rand(9, 2, generator=g) * 12], 1)
    dims = {0: torch.export.Dim("n", min=1, max=8), 2: torch.export.Dim("h", min=2, max=512),
            3: torch.export.Dim("w", min=2, max=512)}
    session = export_and_load(Align(aligned, sampling_ratio), (x, rois), (dims, {0: torch.export.Dim("k")}),
                              tmp_path / "roi.onnx")
    x = torch.randn(3, 3, 17, 9, generator=g)
    rois[:, 0] = torch.arange(9) % 3
    (got,) = session.run(None, {"x": x.numpy(), "rois": rois.numpy()})
    np.testing.assert_allclose(got, Align(aligned, sampling_ratio)(x, rois).numpy(), rtol=0, atol=1e-6)


class LevelMask(torch.nn.Module):
    """The image mask resized to a feature level's size (the size of `level`)."""

    def forward(self, mask, level):
        from sam_detr.modeling.transformer.levels import resize_mask

        return resize_mask(mask, level.shape[-2:])


def test_level_masks_pick_torchs_pixels(tmp_path):
    """ONNX Resize picks other pixels than torch's nearest resizing for some sizes (e.g. 60 -> 4 rows)."""
    Dim = torch.export.Dim
    dims = {"mask": {1: Dim("H", min=2, max=4096), 2: Dim("W", min=2, max=4096)},
            "level": {2: Dim("h", min=1, max=4096), 3: Dim("w", min=1, max=4096)}}
    session = export_and_load(LevelMask(), (torch.zeros(1, 50, 60, dtype=torch.bool), torch.zeros(1, 1, 7, 9)),
                              dims, tmp_path / "mask.onnx")
    g = torch.Generator().manual_seed(0)
    for H, W, stride in [(60, 70, 16), (78, 90, 8), (90, 102, 4), (84, 104, 32), (226, 341, 8), (800, 1199, 64)]:
        mask = torch.rand(1, H, W, generator=g) > 0.5
        h, w = -(-H // stride), -(-W // stride)
        expected = F.interpolate(mask[None].float(), size=(h, w)).to(torch.bool)[0]
        got = session.run(None, {"mask": mask.numpy(), "level": np.zeros((1, 1, h, w), np.float32)})[0]
        assert np.array_equal(got, expected.numpy()), (H, W, stride)


class SelectTop(torch.nn.Module):
    def forward(self, scores):
        from sam_detr.modeling.transformer.proposals import select_top

        return select_top(scores, 50)


def test_top_k_selection_orders_ties_as_pytorch(tmp_path):
    """The two-stage selection exported as ONNX TopK orders exactly tied scores as PyTorch does (the lower
    index first), at other lengths than the export example's."""
    g = torch.Generator().manual_seed(0)
    session = export_and_load(SelectTop(), (torch.zeros(2, 300),), ({1: torch.export.Dim("S", min=50, max=100000)},),
                              tmp_path / "top.onnx")
    for length in (51, 300, 2597, 20000):
        scores = torch.randint(0, 4, (2, length), generator=g).float()  # ties across the cutoff and above it
        (got,) = session.run(None, {"scores": scores.numpy()})
        assert np.array_equal(got, SelectTop()(scores).numpy()), length
