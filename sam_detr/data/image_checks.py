"""What an image file must be for its dataset dict: readable, and the size of the dict's width and height once
oriented by its EXIF tag as Detectron2's `read_image` orients it. Shared by `DetrDatasetMapper`, which reads
the whole image, and tools/check_dataset.py, which reads the header only (`image_header`), or decodes every
image where asked to (a truncated file shows only then): `check_image_files`."""
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple, Union

import tqdm
from PIL import Image

from detectron2.utils.file_io import PathManager

from .dataset_checks import describe_image
from .dataset_policies import Findings

__all__ = ["BadImageError", "check_image_files", "image_header", "oriented_size", "size_mismatch", "unreadable"]

# images read by one task of the thread pool
_CHUNK = 64

_EXIF_ORIENTATION = 0x0112
# EXIF orientations that Detectron2's read_image applies by transposing: width and height swap
_TRANSPOSED = (5, 6, 7, 8)


class BadImageError(ValueError):
    """An image that cannot be used: unreadable, corrupt, truncated, or not the size its dataset says."""


def oriented_size(pil: Image.Image) -> Tuple[int, int]:
    """(width, height) of `pil` once its EXIF orientation is applied, as d2's read_image applies it, from the
    header alone."""
    try:
        orientation = pil.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block: d2 then leaves the image as it is
        orientation = None
    width, height = pil.size
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def image_header(file_name: str, decode: bool = False) -> Tuple[int, int, str]:
    """(width, height, PIL mode) of an image file, oriented (see `oriented_size`), reading its header only, or
    decoding it with decode=True. Raises BadImageError naming the error (the caller names the image)."""
    try:
        with PathManager.open(file_name, "rb") as f:
            pil = Image.open(f)
            if decode:
                pil.load()
            return (*oriented_size(pil), pil.mode)
    # PIL raises many types (OSError, SyntaxError, ValueError, struct.error, ...), none naming the file
    except Exception as e:
        raise BadImageError(unreadable(e)) from e


def unreadable(error: Exception) -> str:
    """What is wrong with an image file that PIL could not read."""
    return f"cannot read the image: {type(error).__name__}: {error}"


def size_mismatch(dataset_dict: Dict, width: int, height: int) -> Optional[str]:
    """What is wrong when an image file of `width` x `height` is not the size of its dataset dict (None when
    it is, or the dict has no size)."""
    expected = (dataset_dict.get("width", width), dataset_dict.get("height", height))
    if (width, height) == expected:
        return None
    return (f"the file is {width}x{height} (width x height), its dataset's width/height say "
            f"{expected[0]}x{expected[1]}")


def check_image_files(records: List[Dict], findings: Findings, *, decode: bool = False, workers: int = 8,
                      progress: bool = True) -> int:
    """Opens the image file of every dataset dict once, in `workers` threads, with a progress bar: records the
    unreadable ones, those whose size is not the dict's width and height, and those that are not RGB (read
    as RGB, as the configs read them) in `findings`. Headers only, unless `decode`. A missing file is left to
    the dataset checks (`check_records`). Returns the number of files read."""
    chunks = [records[i : i + _CHUNK] for i in range(0, len(records), _CHUNK)]
    read = 0
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm.tqdm(
        total=len(records), desc="images", unit="img", disable=not progress, mininterval=0.5
    ) as bar:
        for chunk, results in zip(chunks, pool.map(lambda c: [_header(r["file_name"], decode) for r in c], chunks)):
            for record, result in zip(chunk, results):
                if result is None:
                    continue
                read += 1
                image = describe_image(record)
                if isinstance(result, str):
                    findings.add("unreadable_image", image, result)
                    continue
                width, height, mode = result
                mismatch = size_mismatch(record, width, height)
                if mismatch:
                    findings.add("size_mismatch", image, mismatch)
                if mode != "RGB":
                    findings.add("converted", image, f"PIL mode {mode!r}")
            bar.update(len(chunk))
    return read


def _header(file_name: str, decode: bool) -> Union[None, str, Tuple[int, int, str]]:
    """image_header's answer, what is wrong with the file, or None for a missing file."""
    try:
        return image_header(file_name, decode)
    except BadImageError as e:
        return None if isinstance(e.__cause__, FileNotFoundError) else str(e)
