"""Detectron2 models: the shared DETR pipeline and one meta-architecture per method."""
