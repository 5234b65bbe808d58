"""The image files a tool is pointed at (tools/demo.py, tools/visualize.py): files, folders and glob patterns,
or images of a registered dataset."""
import difflib
import glob
import os
from typing import List, Optional, Sequence, Tuple

__all__ = ["IMAGE_EXTENSIONS", "find_images", "dataset_image_files"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def find_images(inputs: List[str]) -> List[str]:
    """The image files named by `inputs` (files, folders, glob patterns), in order, each once. An input that
    names nothing raises FileNotFoundError (it may be a key=value override placed after --input)."""
    paths = []
    for pattern in inputs:
        pattern = os.path.expanduser(pattern)
        if os.path.isdir(pattern):
            names = sorted(os.listdir(pattern))
            found = [os.path.join(pattern, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not found:
            hint = " (key=value overrides go before --input, or after another option)" if "=" in pattern else ""
            raise FileNotFoundError(f"--input {pattern}: no image file, folder of images or matching file{hint}")
        paths += found
    return list(dict.fromkeys(paths))


def dataset_image_files(dataset: str, image_ids: Optional[Sequence[int]] = None) -> List[Tuple[int, str]]:
    """(image_id, file name) of images of a registered dataset: those of `image_ids`, in that order, or (None)
    its first image. A KeyError names an unregistered dataset or an image id it lacks."""
    from detectron2.data import DatasetCatalog

    if dataset not in DatasetCatalog.list():
        names = sorted(DatasetCatalog.list())
        like = difflib.get_close_matches(dataset, names, 5) or names[:5]
        raise KeyError(
            f"--dataset {dataset}: not a registered dataset (of the {len(names)} there are: {', '.join(like)}, ...)"
        )
    records = DatasetCatalog.get(dataset)
    if not records:
        raise ValueError(f"--dataset {dataset} has no images")
    files = {r["image_id"]: r["file_name"] for r in records}
    if image_ids is None:
        return [(records[0]["image_id"], records[0]["file_name"])]
    missing = [i for i in image_ids if i not in files]
    if missing:
        some = ", ".join(str(i) for i in list(files)[:5])
        raise KeyError(f"--dataset {dataset} has no image with image_id {missing[0]} (its ids include {some}, ...)")
    return [(i, files[i]) for i in image_ids]
