"""A synthetic detection dataset that needs no download: coloured shapes on a textured background.

It is the data of the project's main job, the convergence race (tools/race.py): small DETRs trained from
scratch on a few CPU cores must visibly learn it in minutes, and it must still separate the methods. Each
class has its own shape and its own colour on a plain background with mild texture, which makes learning
quick; the objects vary from small (about one cell of the quickstart models' stride-16 features; over a
third are COCO's "small") to half the image, there are up to six of them, and they overlap and occlude one
another (a later object is drawn over an earlier one, whose box stays whole), so that AP is far from
saturated after the race. The image sizes vary (and are odd as often as even) so that batching pads.

A dataset is fully described by a `ShapesSpec` and stored in COCO format (a json and PNG files) in a cache
directory, generated on first use (see `ensure_shapes`). Generation draws integers from NumPy's
`RandomState` (whose stream NumPy keeps fixed across versions), one generator per image, and computes
with integers only, but for a few Python float products (rounded the same by every IEEE machine): every
machine produces the same pixels and the same json. An image does not depend on how many images the
dataset has. The PNG bytes also depend on the zlib that Pillow uses; the decoded pixels do not.
"""
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.utils.file_io import PathHandler, PathManager

__all__ = [
    "SHAPES_CLASSES",
    "ShapesSpec",
    "datasets_root",
    "render_shapes_image",
    "write_shapes",
    "ensure_shapes",
    "register_shapes",
]

logger = logging.getLogger(__name__)

SHAPES_CLASSES = ("ellipse", "rectangle", "triangle", "diamond", "cross")
SHAPES_COLORS = ((220, 50, 47), (38, 99, 210), (46, 160, 67), (148, 60, 190), (240, 150, 20))

# Bump when the generator changes what it writes, so that caches made by older code are not reused.
_FORMAT_VERSION = 1
_ENV_ROOT = "SAM_DETR_DATASETS"
_ANNOTATIONS = "annotations.json"
_IMAGES = "images"


@dataclasses.dataclass(frozen=True)
class ShapesSpec:
    """Everything that determines a shapes dataset. The ranges are inclusive."""

    num_images: int
    seed: int
    image_size: Tuple[int, int] = (128, 192)
    """range of the height and of the width, drawn independently"""
    num_objects: Tuple[int, int] = (1, 6)
    """range of the number of objects an image tries to place (see `max_overlap`)"""
    object_size: Tuple[float, float] = (0.12, 0.55)
    """range of an object's width, as a fraction of the image's shorter side"""
    aspect_ratio: Tuple[float, float] = (0.8, 1.25)
    """range of an object's height / width"""
    max_overlap: float = 0.35
    """largest intersection of two objects' boxes, as a fraction of the smaller box; an object that
    finds no place within `_PLACEMENT_TRIES` tries is left out"""
    noise: int = 8
    """luminance noise, about uniform in [-noise, noise], the same on the three channels"""

    def __post_init__(self):
        checks = {
            "num_images": self.num_images >= 0,
            "image_size": 0 < self.image_size[0] <= self.image_size[1],
            "num_objects": 0 <= self.num_objects[0] <= self.num_objects[1],
            "object_size": 0 < self.object_size[0] <= self.object_size[1] <= 1,
            "aspect_ratio": 0 < self.aspect_ratio[0] <= self.aspect_ratio[1],
            "max_overlap": 0 <= self.max_overlap <= 1,
            "noise": 0 <= self.noise <= 127,
        }
        for field, ok in checks.items():
            if not ok:
                raise ValueError(f"ShapesSpec: invalid {field}={getattr(self, field)!r}")

    @property
    def dirname(self) -> str:
        fields = json.dumps(dataclasses.asdict(self), sort_keys=True)
        digest = hashlib.sha256(f"{_FORMAT_VERSION}:{fields}".encode()).hexdigest()[:12]
        return f"shapes-n{self.num_images}-seed{self.seed}-{digest}"


_PLACEMENT_TRIES = 20


def datasets_root() -> str:
    """Where generated datasets are cached: $SAM_DETR_DATASETS, else ~/.cache/sam_detr/datasets."""
    return os.path.expanduser(os.environ.get(_ENV_ROOT, os.path.join("~", ".cache", "sam_detr", "datasets")))


def _shape_mask(class_id: int, h: int, w: int) -> np.ndarray:
    """The (h, w) mask of a shape filling an h x w box, tested at pixel centres in integer arithmetic."""
    # 2 * (offset of the pixel centre from the box centre), in pixels
    dx = np.abs(2 * np.arange(w) + 1 - w)[None, :]
    dy = np.abs(2 * np.arange(h) + 1 - h)[:, None]
    name = SHAPES_CLASSES[class_id]
    if name == "ellipse":
        return (dx * h) ** 2 + (dy * w) ** 2 <= (w * h) ** 2
    if name == "rectangle":
        return np.ones((h, w), dtype=bool)
    if name == "triangle":  # apex at the top centre
        return (2 * np.arange(h) + 1)[:, None] * w >= 2 * h * dx
    if name == "diamond":
        return dx * h + dy * w <= w * h
    if name == "cross":  # arms one third of the box wide
        return (3 * dx <= w) | (3 * dy <= h)
    raise ValueError(f"unknown shape {name}")


def _overlaps(box, boxes, max_overlap: float) -> bool:
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        iw = min(x + w, bx + bw) - max(x, bx)
        ih = min(y + h, by + bh) - max(y, by)
        if iw > 0 and ih > 0 and iw * ih > max_overlap * min(w * h, bw * bh):
            return True
    return False


def render_shapes_image(spec: ShapesSpec, index: int) -> Tuple[np.ndarray, List[dict]]:
    """
    Draw image `index` of the dataset `spec`.

    Returns:
        an (H, W, 3) uint8 RGB image, and its objects as dicts with "category" (index into
        SHAPES_CLASSES), "bbox" (the tight XYWH box of the drawn shape, in whole pixels) and "area" (the
        shape's pixel count). Later objects are drawn over earlier ones, whose boxes stay whole.
    """
    rng = np.random.RandomState([spec.seed, index])
    height, width = (int(s) for s in rng.randint(spec.image_size[0], spec.image_size[1] + 1, size=2))

    gray = rng.randint(175, 236)
    color = (gray + rng.randint(-12, 13, size=3)).astype(np.int16)
    gx, gy = rng.randint(-24, 25, size=2)
    # a linear gradient of total range about gx across the width and gy across the height
    ramp_x = ((gx * (2 * np.arange(width) + 1 - width)) // (2 * width)).astype(np.int16)
    ramp_y = ((gy * (2 * np.arange(height) + 1 - height)) // (2 * height)).astype(np.int16)
    image = (ramp_y[:, None] + ramp_x[None, :])[:, :, None] + color

    short = min(height, width)
    min_w, max_w = (max(int(round(f * short)), 1) for f in spec.object_size)
    min_ar, max_ar = (int(round(100 * r)) for r in spec.aspect_ratio)  # in percent
    objects, boxes = [], []
    for _ in range(rng.randint(spec.num_objects[0], spec.num_objects[1] + 1)):
        class_id = int(rng.randint(len(SHAPES_CLASSES)))
        w = int(rng.randint(min_w, max_w + 1))
        h = min(max((w * int(rng.randint(min_ar, max_ar + 1)) + 50) // 100, 1), height)
        object_color = np.clip(np.array(SHAPES_COLORS[class_id]) + rng.randint(-20, 21, size=3), 0, 255)
        for _ in range(_PLACEMENT_TRIES):
            x = int(rng.randint(width - w + 1))
            y = int(rng.randint(height - h + 1))
            if not _overlaps((x, y, w, h), boxes, spec.max_overlap):
                break
        else:
            continue
        boxes.append((x, y, w, h))
        mask = _shape_mask(class_id, h, w)
        image[y : y + h, x : x + w][mask] = object_color
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        objects.append(
            {
                "category": class_id,
                "bbox": [x + int(cols[0]), y + int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)],
                "area": int(mask.sum()),
            }
        )

    # luminance noise: one draw per pixel, from raw bytes, which is several times faster than randint
    noise = np.frombuffer(rng.bytes(height * width), dtype=np.uint8).reshape(height, width, 1)
    image += noise.astype(np.int16) % (2 * spec.noise + 1) - spec.noise
    return np.clip(image, 0, 255).astype(np.uint8), objects


def write_shapes(spec: ShapesSpec, out_dir: str) -> None:
    """Write the dataset `spec` into `out_dir`: images/<image_id:06d>.png and annotations.json (COCO)."""
    os.makedirs(os.path.join(out_dir, _IMAGES), exist_ok=True)
    images, annotations = [], []
    for index in range(spec.num_images):
        image, objects = render_shapes_image(spec, index)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        # compress_level 1: the noise barely compresses, and a higher level only makes generation slower
        Image.fromarray(image).save(os.path.join(out_dir, _IMAGES, file_name), compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["category"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": "sam_detr synthetic shapes", "version": str(_FORMAT_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES_CLASSES)],
        "spec": dataclasses.asdict(spec),
    }
    with open(os.path.join(out_dir, _ANNOTATIONS), "w") as f:
        json.dump(coco, f, separators=(",", ":"))


def ensure_shapes(spec: ShapesSpec, root: Optional[str] = None) -> str:
    """
    The directory of the dataset `spec` under `root` (default: `datasets_root()`), generated there first
    if it is absent.

    Generation writes into a temporary directory beside the final one and renames it into place, which
    is atomic: processes that start at once (the ranks of a distributed job) each generate, the first
    rename wins and the others discard their copy. A directory that exists is therefore complete (delete
    it to generate it again).
    """
    root = datasets_root() if root is None else root
    final = os.path.join(root, spec.dirname)
    if os.path.isdir(final):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{spec.dirname}.tmp-", dir=root)
    start = time.perf_counter()
    try:
        write_shapes(spec, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private to this user
        os.rename(tmp, final)
        logger.info(f"Generated {spec.num_images} synthetic images in {final} in {time.perf_counter() - start:.1f} s")
    except OSError:
        # a rename onto a directory that another process has completed in the meantime fails: use that one
        if not os.path.isdir(final):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# registered dataset name -> spec; read by the dataset loader and by the path handler of `json_file`
_REGISTERED = {}


def _load_shapes(name: str) -> List[dict]:
    directory = ensure_shapes(_REGISTERED[name])
    return load_coco_json(os.path.join(directory, _ANNOTATIONS), os.path.join(directory, _IMAGES), name)


class ShapesPathHandler(PathHandler):
    """
    Resolves "sam_detr-shapes://<dataset name>" to the annotation json of that registered dataset,
    generating the dataset if needed. It is the `json_file` of the dataset's metadata, so that
    `COCOEvaluator` and `load_coco_json`, which read `json_file` through the PathManager, find the json
    whether or not the dataset has been loaded before, the way "detectron2://" downloads on first use.
    """

    PREFIX = "sam_detr-shapes://"

    def _get_supported_prefixes(self):
        return [self.PREFIX]

    def _get_local_path(self, path, force=False, **kwargs):
        self._check_kwargs(kwargs)
        name = path[len(self.PREFIX) :]
        if name not in _REGISTERED:
            raise KeyError(f"{path}: '{name}' is not a registered shapes dataset; registered: {sorted(_REGISTERED)}")
        return os.path.join(ensure_shapes(_REGISTERED[name]), _ANNOTATIONS)

    def _open(self, path, mode="r", buffering=-1, **kwargs):
        return PathManager.open(self._get_local_path(path), mode, buffering=buffering, **kwargs)


PathManager.register_handler(ShapesPathHandler())


def register_shapes(name: str, spec: ShapesSpec) -> None:
    """
    Register the shapes dataset `spec` as `name` in DatasetCatalog and MetadataCatalog, in COCO format
    (its `json_file` works with `COCOEvaluator`). Nothing is generated until the dataset or its json is
    first used.
    """
    DatasetCatalog.register(name, functools.partial(_load_shapes, name))
    _REGISTERED[name] = spec
    MetadataCatalog.get(name).set(
        json_file=ShapesPathHandler.PREFIX + name,
        evaluator_type="coco",
        thing_classes=list(SHAPES_CLASSES),
        thing_colors=[list(c) for c in SHAPES_COLORS],
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASSES))},
    )
