"""Evaluation beyond d2's evaluators: batch-size invariance of the detections."""
