"""What a picture shows of one detection's query in one decoder layer, and how it is drawn.

Every coordinate is in pixels of the image the model was fed (after the test-time resize, before padding),
(x, y) with y down; a map covers the valid (unpadded) cells of the attended feature map, which span that
image. A picture is a list of `Panel`s, each drawn by matplotlib over the image (where Detectron2's
Visualizer has drawn the detection's box) on one Axes whose data coordinates are those pixels.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

__all__ = [
    "Panel",
    "SamplingPoints",
    "SalientPoints",
    "MapPart",
    "AttentionMaps",
    "LEVEL_COLORS",
    "HEAD_COLORS",
]

# feature levels, finest first (bright, to stand out on photos and on the shapes' saturated colours), and
# attention heads (matplotlib's tab10, then more)
LEVEL_COLORS = ("#00e5ff", "#ffe119", "#f032e6", "#808080", "#aaffc3", "#9a6324")
HEAD_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)
# marker area (pt^2) of a sampling point whose attention weight is 1
POINT_AREA_PER_WEIGHT = 350.0


@dataclass
class Panel:
    title: str
    draw: Callable  # draw(ax, (height, width)): over the image of that size, in its pixels


def _box_patch(box: np.ndarray, color: str, style: str = "--"):
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = (float(v) for v in box)
    return Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linestyle=style, linewidth=1.5)


def _legend(ax, colors: Sequence[str], labels: Sequence[str], marker: str = "o") -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=marker, linestyle="", color=c, markersize=5) for c in colors]
    ax.legend(handles, labels, loc="best", fontsize=6, framealpha=0.7, handletextpad=0.1, borderpad=0.3,
              labelspacing=0.2, ncol=2 if len(labels) > 4 else 1, columnspacing=0.4)


def _reference(ax, point: np.ndarray, box: Optional[np.ndarray]) -> None:
    if box is not None:
        ax.add_patch(_box_patch(box, "white"))
    ax.plot(point[0], point[1], marker="*", markersize=13, color="white", markeredgecolor="black", linestyle="")


@dataclass
class SamplingPoints:
    """Deformable cross-attention (`MSDeformAttn`): where the query sampled the memory.

    points (M, L, P, 2): the sampling locations of its M heads, L levels and P points per level, exactly the
    locations the deformable op was given (normalised over each padded level there), in pixels; weights
    (M, L, P): the attention weights the op was given (each head's sum to 1 over its L * P points);
    reference (2,): the reference point (x, y); reference_box (4,): the reference box (x1, y1, x2, y2) when the
    layer samples around a box (two-stage, box refinement), else None; level_shapes: (H_l, W_l) per level.
    """

    points: np.ndarray
    weights: np.ndarray
    reference: np.ndarray
    reference_box: Optional[np.ndarray]
    level_shapes: List[tuple]

    description = (
        "sampling points of the query's deformable cross-attention, coloured by feature level, area proportional "
        "to their attention weight (all heads); the star is the reference point, the dashed white box the "
        "reference box when the layer samples around one"
    )

    def panels(self, per_head: bool = False) -> List[Panel]:
        M = self.points.shape[0]
        heads = [[h] for h in range(M)] if per_head else [list(range(M))]
        return [
            Panel(f"sampling points, head {h[0]}" if per_head else f"sampling points, {M} heads", self._drawer(h))
            for h in heads
        ]

    def _drawer(self, heads: List[int]):
        def draw(ax, image_size):
            _reference(ax, self.reference, self.reference_box)
            for level, color in zip(range(self.points.shape[1]), LEVEL_COLORS * 4):
                xy = self.points[heads, level].reshape(-1, 2)
                area = self.weights[heads, level].reshape(-1) * POINT_AREA_PER_WEIGHT
                ax.scatter(xy[:, 0], xy[:, 1], s=area, c=color, alpha=0.75, edgecolors="black", linewidths=0.3)
            labels = [f"level {i} ({h}x{w})" for i, (h, w) in enumerate(self.level_shapes)]
            _legend(ax, LEVEL_COLORS[: len(labels)], labels)

        return draw


@dataclass
class SalientPoints:
    """SAM-DETR's Semantics Aligner: the query's RoIAlign box (its reference box, resampled 7 x 7) and the
    salient point of each head inside it, where the head's content and position queries were sampled.

    points (M, 2): the salient points (x, y); roi_box (4,): (x1, y1, x2, y2).
    """

    points: np.ndarray
    roi_box: np.ndarray

    description = (
        "the query's resampled region (its reference box, RoI-aligned; dashed white) and the salient point of "
        "each head inside it, where the head's query features were sampled (one colour per head)"
    )

    def panels(self, per_head: bool = False) -> List[Panel]:
        def draw(ax, image_size):
            ax.add_patch(_box_patch(self.roi_box, "white"))
            colors = [HEAD_COLORS[h % len(HEAD_COLORS)] for h in range(len(self.points))]
            ax.scatter(self.points[:, 0], self.points[:, 1], s=45, c=colors, edgecolors="black", linewidths=0.6)
            _legend(ax, colors, [f"head {h}" for h in range(len(colors))])

        return [Panel(f"RoIAlign box, {len(self.points)} salient points", draw)]


@dataclass
class MapPart:
    """One map of a query over the attended feature map, per head.

    maps (M, h, w) over the valid cells; signed: a bias (drawn as the mean over heads, blue below 0 and red
    above), else attention weights (drawn per head, or all heads at once, each cell in the colour of its
    strongest head, opaque where that head's weight nears its maximum)."""

    name: str
    maps: np.ndarray
    signed: bool = False


@dataclass
class AttentionMaps:
    """Attention of the query over a single feature map: its parts (`MapPart`s), and the reference box the
    layer attended with, where it has one (x1, y1, x2, y2)."""

    parts: List[MapPart]
    reference_box: Optional[np.ndarray] = None
    description: str = field(default="")

    def panels(self, per_head: bool = False) -> List[Panel]:
        panels = []
        for part in self.parts:
            M = part.maps.shape[0]
            if part.signed or not per_head:
                title = f"{part.name}, mean of {M} heads" if part.signed else f"{part.name}, {M} heads"
                panels.append(Panel(title, self._drawer(part, None)))
            else:
                panels += [Panel(f"{part.name}, head {h}", self._drawer(part, h)) for h in range(M)]
        return panels

    def _drawer(self, part: MapPart, head: Optional[int]):
        def draw(ax, image_size):
            extent = (0, image_size[1], image_size[0], 0)
            if part.signed:
                bias = part.maps.mean(0)
                limit = float(np.abs(bias).max()) or 1.0
                ax.imshow(bias, cmap="coolwarm", vmin=-limit, vmax=limit, alpha=0.6, extent=extent,
                          interpolation="nearest")
                ax.text(2, 2, f"{bias.min():.2f} .. {bias.max():.2f}", fontsize=6, va="top", color="black",
                        bbox=dict(facecolor="white", alpha=0.7, pad=1, linewidth=0))
            elif head is not None:
                ax.imshow(part.maps[head], cmap="inferno", alpha=0.65, extent=extent, interpolation="nearest")
            else:
                ax.imshow(head_colored(part.maps), extent=extent, interpolation="nearest")
                M = part.maps.shape[0]
                _legend(ax, [HEAD_COLORS[h % len(HEAD_COLORS)] for h in range(M)], [f"head {h}" for h in range(M)],
                        marker="s")
            if self.reference_box is not None:
                ax.add_patch(_box_patch(self.reference_box, "white"))

        return draw


def head_colored(maps: np.ndarray) -> np.ndarray:
    """(M, h, w) non-negative maps -> (h, w, 4) RGBA: each cell in the colour of the head whose map, divided by
    its own maximum, is largest there, with that value as opacity (times 0.85)."""
    from matplotlib.colors import to_rgb

    peak = maps.max(axis=(1, 2), keepdims=True)
    normed = maps / np.where(peak > 0, peak, 1.0)
    strongest = normed.argmax(0)
    colors = np.array([to_rgb(HEAD_COLORS[h % len(HEAD_COLORS)]) for h in range(maps.shape[0])])
    rgba = np.concatenate([colors[strongest], 0.85 * normed.max(0)[..., None]], -1)
    return rgba
