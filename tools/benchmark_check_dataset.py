#!/usr/bin/env python
"""Speed of the dataset checks on a large generated COCO json, side by side with Detectron2's loader alone.

    python tools/benchmark_check_dataset.py                                      # 100k annotations
    python tools/benchmark_check_dataset.py --images 118287 --annotations 860001 # COCO train2017's size

It writes (into --output, default a temporary folder, removed at the end) a COCO-format json of that size:
80 categories with COCO's ids, each image a symbolic link of its own to one of the real images of
--image-source (the COCO mini set by default), with that image's size, and boxes drawn inside the images.
Then it times, one after the other in this process:

    d2 load_coco_json           Detectron2's loader alone: what loading costs without any check (the peer)
    checked_dataset_dicts       the training path: the json checks, Detectron2's loader, the dataset checks
    check_dataset, json only    tools/check_dataset.py --skip-images: the report without opening an image
    check_dataset               tools/check_dataset.py: the report, every image header read (--workers)

and prints each as wall-clock and CPU seconds (sam_detr/utils/benchmark.py's clock; CPU: the whole
process, all its threads: on a machine that other jobs load, compare CPU seconds), with the rise of the
process's resident memory.
"""
import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
from detectron2.data.datasets import load_coco_json, register_coco_instances

from sam_detr.data import Policies, checked_dataset_dicts
from sam_detr.data.dataset_report import inspect_dataset
from sam_detr.data.image_checks import image_header
from sam_detr.utils.benchmark import time_calls

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO_MINI_IMAGES = REPO_ROOT.parent / "shared" / "data" / "coco_val2017_mini" / "val2017"
# COCO's 80 category ids (1..90 with gaps)
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def write_large_coco_json(folder: Path, num_images: int, num_annotations: int, image_source: Path,
                          seed: int = 0) -> Tuple[Path, Path]:
    """Writes folder/annotations.json and folder/images/ (symbolic links); returns their paths."""
    sources = sorted(p for p in image_source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not sources:
        raise FileNotFoundError(f"--image-source {image_source}: no .jpg or .png image")
    sizes = [image_header(str(p))[:2] for p in sources]
    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    images = []
    for i in range(num_images):
        source = i % len(sources)
        file_name = f"{i + 1:012d}{sources[source].suffix}"
        os.symlink(sources[source].resolve(), images_dir / file_name)
        images.append({"id": i + 1, "file_name": file_name, "width": sizes[source][0], "height": sizes[source][1]})
    rng = np.random.default_rng(seed)
    image_index = rng.integers(num_images, size=num_annotations)
    wh = np.array([(images[i]["width"], images[i]["height"]) for i in image_index], dtype=np.float64)
    corner = rng.uniform(0, 0.9, size=(num_annotations, 2)) * wh
    extent = np.maximum(rng.uniform(0.02, 1.0, size=(num_annotations, 2)) * (wh - corner), 1.0)
    boxes = np.round(np.concatenate([corner, extent], axis=1), 2).tolist()
    categories = rng.choice(COCO_CATEGORY_IDS, size=num_annotations).tolist()
    annotations = [
        {"id": j + 1, "image_id": int(image_index[j]) + 1, "bbox": boxes[j], "category_id": categories[j],
         "area": round(boxes[j][2] * boxes[j][3], 2), "iscrowd": 0}
        for j in range(num_annotations)
    ]
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": f"class_{c}"} for c in COCO_CATEGORY_IDS]}
    json_file = folder / "annotations.json"
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return json_file, images_dir


def timed(step: Callable[[], object]) -> Tuple[float, float, float, object]:
    """One call of `step`: its wall and CPU seconds, the resident memory it added (MiB), its result."""
    results = []
    timing = time_calls(lambda: results.append(step()), iters=1, warmup=0)
    rise = timing.memory.rise_mib
    return timing.seconds("wall"), timing.seconds("cpu"), float("nan") if rise is None else rise, results[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--images", type=int, default=15000, help="image entries (default 15000)")
    parser.add_argument("--annotations", type=int, default=100000, help="annotations (default 100000)")
    parser.add_argument("--image-source", type=Path, default=COCO_MINI_IMAGES, help="real images to link to")
    parser.add_argument("--workers", type=int, default=8, help="threads that open the images (default 8)")
    parser.add_argument("--output", type=Path, help="folder for the json and the links (kept); default: temporary")
    args = parser.parse_args(argv)
    if args.images < 1 or args.annotations < 0:
        parser.error("--images must be at least 1 and --annotations at least 0")
    if not args.image_source.is_dir():
        parser.error(f"--image-source {args.image_source}: no such folder")
    logging.basicConfig(level=logging.ERROR)

    folder = args.output or Path(tempfile.mkdtemp(prefix="coco_large_"))
    try:
        wall, _, _, (json_file, images_dir) = timed(
            lambda: write_large_coco_json(folder, args.images, args.annotations, args.image_source))
        size_mb = json_file.stat().st_size / 2**20
        print(f"wrote {json_file} ({size_mb:.0f} MiB: {args.images} images, {args.annotations} annotations) in "
              f"{wall:.1f} s", flush=True)
        name = "coco_benchmark_check_dataset"  # "coco" in the name: d2 does not warn about COCO's category ids
        register_coco_instances(name, {}, str(json_file), str(images_dir))
        rows: List[Tuple[str, float, float, float, str]] = []
        steps = [
            ("d2 load_coco_json", lambda: load_coco_json(str(json_file), str(images_dir), name), len),
            ("checked_dataset_dicts", lambda: checked_dataset_dicts(name), len),
            ("check_dataset, json only", lambda: inspect_dataset(name, Policies(), read_images=False, progress=False),
             lambda r: "refused" if r.refused else "accepted"),
            (f"check_dataset, {args.workers} threads",
             lambda: inspect_dataset(name, Policies(), workers=args.workers, progress=False),
             lambda r: f"{r.files_read} headers read, " + ("refused" if r.refused else "accepted")),
        ]
        for label, step, describe in steps:
            wall, cpu, rise, result = timed(step)
            rows.append((label, wall, cpu, rise, str(describe(result))))
            print(f"  {label}: {wall:.1f} s", flush=True)
        print(f"\n| {args.images} images, {args.annotations} annotations | wall s | CPU s | memory rise MiB | result |")
        print("|---|---|---|---|---|")
        for label, wall, cpu, rise, result in rows:
            print(f"| {label} | {wall:.1f} | {cpu:.1f} | {rise:.0f} | {result} |")
    finally:
        if args.output is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
