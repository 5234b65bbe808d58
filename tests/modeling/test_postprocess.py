import pytest
import torch

pytest.importorskip("detectron2", reason="sam_detr.modeling needs detectron2")

from sam_detr.modeling.postprocess import softmax_postprocess, topk_postprocess  # noqa: E402


def test_topk_over_queries_and_classes():
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 2, 1] = 3.0  # best: query 2, class 1
    logits[0, 0, 3] = 2.0  # second: query 0, class 3
    logits[0, 0, 0] = 1.0  # third: the same query again, another class
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5]]])
    (r,) = topk_postprocess(logits, boxes, [(10, 20)], num_select=3)
    assert r.pred_classes.tolist() == [1, 3, 0]
    torch.testing.assert_close(r.scores, torch.sigmoid(torch.tensor([3.0, 2.0, 1.0])))
    torch.testing.assert_close(r.pred_boxes.tensor[0], torch.tensor([0.0, 5.0, 10.0, 10.0]))
    torch.testing.assert_close(r.pred_boxes.tensor[1], torch.tensor([8.0, 3.0, 12.0, 7.0]))
    assert r.image_size == (10, 20)
    # fewer (query, class) pairs than num_select
    assert len(topk_postprocess(logits, boxes, [(10, 20)], num_select=100)[0]) == 12


def test_softmax_skips_no_object():
    logits = torch.tensor([[[0.0, 1.0, 5.0], [2.0, 0.0, 0.0]]])  # 2 classes + no-object
    boxes = torch.full((1, 2, 4), 0.5)
    (r,) = softmax_postprocess(logits, boxes, [(4, 4)])
    assert r.pred_classes.tolist() == [1, 0]
    torch.testing.assert_close(r.scores[0], logits[0, 0].softmax(-1)[1])
