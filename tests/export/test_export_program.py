"""`_export_program` keeps every declared dimension dynamic: where torch.export would tie a size to a
multiple (a graph for some image sizes only), the export is an error, not a narrower range."""
import pytest
import torch
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from sam_detr.export.onnx_export import _export_program  # noqa: E402


class Blocks(torch.nn.Module):
    def forward(self, x):  # needs the width to be a multiple of 8
        return x.view(x.shape[0], -1, 8).sum(-1)


def test_a_width_tied_to_multiples_is_an_error():
    dims = {"x": {1: torch.export.Dim("width", min=2, max=1024)}}
    with pytest.raises(torch._dynamo.exc.UserError, match="width"):
        _export_program(Blocks(), (torch.zeros(2, 40),), dims)

