"""An `ImageExplanation` drawn into PNG files: each detection's box by Detectron2's Visualizer, the rest of its
picture by matplotlib; one column per detection and one row per panel of its picture."""
import io
import os
import textwrap
from typing import List, Optional, Sequence

import numpy as np
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from .explain import DetectionExplanation, ImageExplanation

__all__ = ["draw_figure", "save_png", "write_pictures"]

# the drawn width of one panel: inches at DPI
PANEL_INCHES = 3.0
DPI = 100


def _box_image(image: np.ndarray, detection: DetectionExplanation, metadata) -> np.ndarray:
    """The image with the detection's box and label drawn by Detectron2's Visualizer, at about panel size."""
    h, w = image.shape[:2]
    scale = PANEL_INCHES * DPI / max(h, w)
    instances = Instances((h, w))
    instances.pred_boxes = Boxes(np.asarray(detection.box, dtype=np.float32)[None])
    instances.scores = np.array([detection.score])
    instances.pred_classes = np.array([detection.label])
    return Visualizer(image, metadata, scale=scale).draw_instance_predictions(instances).get_image()


def _class_name(metadata, label: int) -> str:
    names = metadata.get("thing_classes", None) if metadata is not None else None
    return names[label] if names and 0 <= label < len(names) else f"class {label}"


def draw_figure(
    explanation: ImageExplanation,
    image: np.ndarray,
    metadata=None,
    per_head: bool = False,
    detections: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """The figure of some detections (default: all) of an explanation, as an (H, W, 3) uint8 RGB array.

    Args:
        image: (h, w, 3) uint8 RGB, the image as the model was fed it (`explanation.image_size`).
        metadata: of the dataset, for class names (None: class numbers).
        per_head: a panel per attention head instead of all heads in one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if tuple(image.shape[:2]) != tuple(explanation.image_size):
        raise ValueError(f"the image is {image.shape[:2]}, the explanation was made at {explanation.image_size}")
    if detections is None:
        detections = range(len(explanation.detections))
    chosen = [explanation.detections[i] for i in detections]
    if not chosen:
        raise ValueError("no detection to draw")
    panels = [d.picture.panels(per_head) for d in chosen]
    rows, cols = len(panels[0]), len(chosen)
    h, w = explanation.image_size
    # laid out in inches: per row a title band over the panels; the caption at the bottom
    panel_w, panel_h, gap = PANEL_INCHES, PANEL_INCHES * h / w, 0.08
    title_h = 0.3
    width = cols * panel_w + (cols + 1) * gap
    caption = textwrap.fill(
        f"{explanation.method}, decoder layer {explanation.layer} of 0..{explanation.num_layers - 1}: "
        + explanation.description + ".",
        width=int(width * 15),
    )
    caption_h = 0.13 * (caption.count("\n") + 1) + 0.12
    height = rows * (title_h + panel_h) + caption_h
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    for c, (detection, column) in enumerate(zip(chosen, panels)):
        boxed = _box_image(image, detection, metadata)
        for r, panel in enumerate(column):
            left, top = gap + c * (panel_w + gap), r * (title_h + panel_h) + title_h
            ax = fig.add_axes((left / width, 1 - (top + panel_h) / height, panel_w / width, panel_h / height))
            ax.imshow(boxed, extent=(0, w, h, 0))
            panel.draw(ax, (h, w))
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_axis_off()
            header = f"{_class_name(metadata, detection.label)} {detection.score:.2f}, query {detection.query}\n"
            ax.set_title((header if r == 0 else "") + panel.title, fontsize=7, pad=2)
    fig.text(gap / width, 0.06 / height, caption, fontsize=6.5, va="bottom", ha="left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def save_png(array: np.ndarray, path: str, colors: int = 0) -> None:
    """Writes an RGB array as a PNG; `colors` > 0 reduces it to that many colours first (a smaller file)."""
    picture = Image.fromarray(array)
    if colors:
        # the octree keeps the rare saturated colours of points and legends that median cut merges into the photo
        picture = picture.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    picture.save(path, optimize=True)


def write_pictures(
    explanation: ImageExplanation,
    image: np.ndarray,
    path: str,
    metadata=None,
    per_detection: bool = False,
    per_head: bool = False,
    colors: int = 0,
) -> List[str]:
    """Writes the figure of an explanation to `path` (a .png), or with `per_detection` one figure per detection,
    to <path stem>_<i>.png. Returns the files written."""
    if not explanation.detections:
        return []
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not per_detection:
        save_png(draw_figure(explanation, image, metadata, per_head), path, colors)
        return [path]
    stem = os.path.splitext(path)[0]
    paths = []
    for i in range(len(explanation.detections)):
        paths.append(f"{stem}_{i}.png")
        save_png(draw_figure(explanation, image, metadata, per_head, [i]), paths[-1], colors)
    return paths
