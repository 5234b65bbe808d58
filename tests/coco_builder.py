"""Temporary COCO-format datasets registered the Detectron2 way (register_coco_instances), for the tests of bad
data: each image is a file written by one of the writers below (or none: a missing file), each annotation a
dict as it appears in the json."""
import io
import json
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from PIL import Image

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "disk"}]


def png(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Callable[[Path], None]:
    """A writer of a noise image of this size and PIL mode."""
    def write(path: Path) -> None:
        rng = np.random.default_rng(seed)
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path, compress_level=1)
    return write


def flat_png(width: int, height: int) -> Callable[[Path], None]:
    """A one-colour image (quick to write and read at any size)."""
    def write(path: Path) -> None:
        Image.new("RGB", (width, height), (90, 140, 200)).save(path, compress_level=1)
    return write


def truncated_png(width: int, height: int) -> Callable[[Path], None]:
    """A noise PNG cut after half of its bytes."""
    def write(path: Path) -> None:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            buffer, format="PNG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return write


def not_an_image(path: Path) -> None:
    path.write_bytes(b"this is not an image")


class CocoBuilder:
    """Images and annotations of one dataset, written and registered by `register`."""

    def __init__(self, root: Path):
        self.root = root
        self.images: List[Dict] = []
        self.annotations: List[Dict] = []
        self.categories: List[Dict] = [dict(c) for c in CATEGORIES]
        self.writers: Dict[str, Optional[Callable]] = {}
        self.names: List[str] = []

    def image(self, writer: Optional[Callable[[Path], None]], width: int, height: int, boxes=(), category_id=1,
              **json_size) -> int:
        """Adds an image (writer None: its file is missing) with one annotation per box (x, y, w, h); json_size
        ("width", "height") overrides the size written into the json. Returns its id."""
        image_id = len(self.images) + 1
        file_name = f"{image_id:03d}.png"
        self.writers[file_name] = writer
        self.images.append({"id": image_id, "file_name": file_name, "width": json_size.get("width", width),
                            "height": json_size.get("height", height)})
        for box in boxes:
            self.annotation(image_id, box, category_id)
        return image_id

    def annotation(self, image_id: int, bbox, category_id=1) -> None:
        area = bbox[2] * bbox[3] if len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox) else 0
        self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, "bbox": list(bbox),
                                 "category_id": category_id, "area": area, "iscrowd": 0})

    def register(self) -> str:
        """Writes the files and the json, registers the dataset under a new name and returns it."""
        directory = self.root / uuid.uuid4().hex[:8]
        (directory / "images").mkdir(parents=True)
        for file_name, writer in self.writers.items():
            if writer is not None:
                writer(directory / "images" / file_name)
        coco = {"images": self.images, "annotations": self.annotations, "categories": self.categories}
        (directory / "annotations.json").write_text(json.dumps(coco))  # NaN is written as NaN, as json.dump does
        name = f"bad_data_{directory.name}"
        register_coco_instances(name, {}, str(directory / "annotations.json"), str(directory / "images"))
        self.names.append(name)
        return name

    def unregister(self) -> None:
        for name in self.names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
