"""sam_detr.evaluation.batch_invariance: how an image's detections at two batch sizes are compared (the
whole evaluation: tests/tools/test_eval_batch_invariance.py)."""
import pytest

from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402

from sam_detr.evaluation.batch_invariance import Evaluation, compare_detections  # noqa: E402


def test_detections_are_compared_with_their_partners_not_by_rank():
    def evaluation(batch_size, scores, boxes, classes):
        return Evaluation(batch_size, False, 0.0, 0.0, 0.0,
                               {7: (torch.tensor(scores), torch.tensor(boxes), torch.tensor(classes))})

    boxes = [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]]
    single = evaluation(1, [0.5, 0.5], boxes, [1, 2])
    # two tied detections in the other order: the same detections
    swapped = evaluation(2, [0.5, 0.5], boxes[::-1], [2, 1])
    assert compare_detections(single, swapped, topk=2, box_tolerance=1.0) == {
        "max_score_diff": 0.0, "max_box_diff_px": 0.0, "same_topk": 1.0}
    moved = evaluation(2, [0.5, 0.25], [boxes[0], [5.0, 5.0, 20.0, 30.0]], [1, 2])
    assert compare_detections(single, moved, topk=2, box_tolerance=1.0) == {
        "max_score_diff": 0.25, "max_box_diff_px": 10.0, "same_topk": 0.0}
    # class 2 is no longer detected
    assert compare_detections(single, evaluation(2, [0.5], boxes[:1], [1]), topk=2, box_tolerance=1.0)[
        "max_box_diff_px"] == float("inf")
    with pytest.raises(ValueError, match="image 7 was evaluated at batch 1 but not at batch 2"):
        compare_detections(single, Evaluation(2, False, 0.0, 0.0, 0.0, {}), topk=2, box_tolerance=1.0)
