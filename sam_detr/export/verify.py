"""Whether an exported file gives the PyTorch model's detections: matched one to one (same class, score and
box within tolerances), so that two near-equal scores that swap places do not count as a difference, nor
does a swap at the top-k cutoff (a detection whose score is within the score tolerance of the last one kept,
which rounding may put on either side of the cutoff; counted apart, as `at_cutoff`)."""
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
from detectron2.structures import Instances

__all__ = ["DetectionDifferences", "compare_detections", "verify_export", "SCORE_TOLERANCE", "BOX_TOLERANCE"]

SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-2  # pixels


class DetectionDifferences(NamedTuple):
    detections: int  # in the reference
    unmatched: int  # reference detections without a match (count differences included), but those at_cutoff
    max_score: float  # largest score difference among the matched pairs
    max_box: float  # largest box coordinate difference among the matched pairs, in pixels
    at_cutoff: int = 0  # unmatched ones within the score tolerance of the last score kept, in full lists

    def __str__(self) -> str:
        return (f"{self.detections} detections, {self.unmatched} unmatched ({self.at_cutoff} more swapped at the "
                f"top-k cutoff); largest differences: score {self.max_score:.2e}, box {self.max_box:.2e} px")


def _match(reference: Instances, other: Instances, score_tol: float, box_tol: float):
    """Greedy one-to-one matching in the reference's order: the closest unmatched detection of `other` with
    the same class within the tolerances. Returns the unmatched reference detections' indices and the score
    and box differences of the pairs."""
    ref_boxes, other_boxes = reference.pred_boxes.tensor.double(), other.pred_boxes.tensor.double()
    score_diff = (reference.scores.double()[:, None] - other.scores.double()[None]).abs()
    box_diff = (ref_boxes[:, None] - other_boxes[None]).abs().amax(-1) if len(other) else score_diff
    ok = (reference.pred_classes[:, None] == other.pred_classes[None]) & (score_diff <= score_tol) & (box_diff <= box_tol)
    taken = torch.zeros(len(other), dtype=torch.bool)
    unmatched, scores, boxes = [], [], []
    for i in range(len(reference)):
        candidates = (ok[i] & ~taken).nonzero().flatten()
        if len(candidates) == 0:
            unmatched.append(i)
            continue
        j = candidates[score_diff[i, candidates].argmin()]
        taken[j] = True
        scores.append(float(score_diff[i, j]))
        boxes.append(float(box_diff[i, j]))
    return unmatched, scores, boxes


def compare_detections(
    reference: Sequence[Dict[str, Instances]], other: Sequence[Dict[str, Instances]],
    score_tol: float = SCORE_TOLERANCE, box_tol: float = BOX_TOLERANCE,
) -> DetectionDifferences:
    """Two models' outputs on the same inputs (`[{"instances": Instances}]` per image), compared per image; a
    detection of `other` beyond the reference's count is unmatched too."""
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} reference outputs, {len(other)} others")
    detections = unmatched = at_cutoff = 0
    scores: List[float] = []
    boxes: List[float] = []
    for r, o in zip(reference, other):
        r, o = r["instances"].to("cpu"), o["instances"].to("cpu")
        missed, s, b = _match(r, o, score_tol, box_tol)
        # in two lists of the same length, a miss within the tolerance of the lowest score kept is a swap at
        # the cutoff (the other list holds a near-equal detection the reference cut instead)
        cutoff = [i for i in missed if len(o) == len(r) and float(r.scores[i] - r.scores.min()) <= score_tol]
        detections += len(r)
        at_cutoff += len(cutoff)
        unmatched += len(missed) - len(cutoff) + max(0, len(o) - len(r))
        scores += s
        boxes += b
    return DetectionDifferences(detections, unmatched, max(scores, default=0.0), max(boxes, default=0.0), at_cutoff)


def verify_export(model, path: str, sizes: Optional[Sequence] = None, seed: int = 0) -> List[str]:
    """Runs the exported file `path` with ONNX Runtime and `model` on random images: one at each of two sizes
    (not the export example's) and a padded batch of two. Returns one line per case."""
    from .onnx_runtime import OnnxDetector

    detector = OnnxDetector(path)
    generator = torch.Generator().manual_seed(seed)
    cases = sizes or [[(203, 317)], [(331, 229)], [(243, 301), (190, 355)]]
    lines = []
    for case in cases:
        inputs = [{"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator)} for h, w in case]
        with torch.no_grad():
            reference = model(inputs)
        lines.append(f"{' + '.join(f'{h}x{w}' for h, w in case)}: {compare_detections(reference, detector(inputs))}")
    return lines
