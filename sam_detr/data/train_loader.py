"""The training data of one process as a stream that a checkpoint can stop and continue exactly.

Detectron2's `build_detection_train_loader` cannot be resumed: its sampler restarts at the beginning of its
permutation, its data workers' random states start afresh, and its aspect-ratio buckets are lost, so a
resumed run sees other images, differently augmented, than the run it continues. `TrainLoader` takes the
same arguments and yields the same kind of batches, but its stream is a function of its seed alone:

* The global stream: epoch e is a permutation of the images drawn from (seed, e); the images are grouped
  into global batches of `total_batch_size` images of one aspect-ratio bucket (wider than high, or not),
  as d2's grouping does, from the dataset dicts' width and height. Sample k of the stream (its position)
  is augmented with every random generator seeded from (seed, k), so its augmentation does not depend on
  which worker maps it, on the number of workers, or on what was mapped before.
* Process r of W takes images [r * B / W, (r + 1) * B / W) of each global batch: with the same total
  batch, one process and several see the same images, augmented the same way.
* Its state (`state_dict`) is the position in the global stream after the last batch handed out, the
  images waiting in the buckets and the seed; `load_state_dict` continues from there.

A mapper that returns None for an image (e.g. `DetrDatasetMapper(bad_images="skip")`) gets in its place
an image of the same bucket drawn from (seed, position, attempt).
"""
import logging
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..utils.rng import preserved_rng, seed_all_from

__all__ = ["TrainLoader", "GlobalBatches"]

logger = logging.getLogger(__name__)

# substitutes tried for an image the mapper skips
_SUBSTITUTES = 10


class GlobalBatches:
    """The global batches of a stream: lists of (position, dataset index), `batch_size` of one bucket each.

    Args:
        buckets: (N,) the aspect-ratio bucket of each image (all 0: no grouping).
        seed: of the permutations.
        batch_size: images per global batch.
        state: from `state()`, to continue a stream; None starts it.
    """

    def __init__(self, buckets: np.ndarray, seed: int, batch_size: int, state: Optional[Dict] = None):
        self.buckets, self.seed, self.batch_size = buckets, seed, batch_size
        state = state or {"epoch": 0, "offset": 0, "pending": [[], []]}
        self.epoch, self.offset = state["epoch"], state["offset"]
        self.pending = [[tuple(entry) for entry in bucket] for bucket in state["pending"]]
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(_mix(self.seed, epoch))
        return torch.randperm(len(self.buckets), generator=generator).numpy()

    def state(self) -> Dict:
        return {"epoch": self.epoch, "offset": self.offset, "pending": [[list(e) for e in b] for b in self.pending]}

    def __next__(self) -> List[Tuple[int, int]]:
        while True:
            if self.offset == len(self._order):
                self.epoch, self.offset = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            index = int(self._order[self.offset])
            position = self.epoch * len(self._order) + self.offset
            self.offset += 1
            bucket = self.pending[self.buckets[index]]
            bucket.append((position, index))
            if len(bucket) == self.batch_size:
                batch, bucket[:] = list(bucket), []
                return batch

    def __iter__(self):
        return self


def _mix(*entropy: int) -> int:
    """One 63-bit seed from several integers."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _MappedBatches(IterableDataset):
    """This process's share of the global batches, mapped; worker w of W maps global batches w, w + W, ..."""

    def __init__(self, loader: "TrainLoader", state: Dict):
        self.loader, self.state = loader, state

    def __iter__(self) -> Iterator[List[Dict]]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        loader = self.loader
        per_rank = loader.total_batch_size // loader.world_size
        first = loader.rank * per_rank
        for b, batch in enumerate(GlobalBatches(loader.buckets, loader.seed, loader.total_batch_size, self.state)):
            if b % num_workers == worker:
                yield [loader.map_sample(position, index) for position, index in batch[first : first + per_rank]]


def _identity(batch):
    return batch


class TrainLoader:
    """Iterable over this process's training batches (lists of mapped dicts), resumable exactly; see the module
    docstring. It takes the arguments of d2's `build_detection_train_loader` (but sampler and collate_fn:
    the stream is its own sampler).

    Args:
        dataset: Detectron2 dataset dicts (each with "width" and "height" when grouping).
        mapper: dataset dict -> model input, or None to skip the image.
        total_batch_size: images per iteration over all processes; a multiple of their number.
        num_workers: data loading processes (0: this process).
        aspect_ratio_grouping: batches of images that are all wider than high, or all not.
        seed: of the stream; None: drawn by the first process and shared (d2's `shared_random_seed`),
            which depends on train.seed where that is set.
    """

    def __init__(
        self,
        dataset: List[Dict],
        *,
        mapper: Callable[[Dict], Optional[Dict]],
        total_batch_size: int,
        num_workers: int = 0,
        aspect_ratio_grouping: bool = True,
        seed: Optional[int] = None,
    ):
        self.world_size, self.rank = comm.get_world_size(), comm.get_rank()
        if total_batch_size <= 0 or total_batch_size % self.world_size:
            raise ValueError(
                f"total_batch_size {total_batch_size} must be a positive multiple of the {self.world_size} processes"
            )
        if not len(dataset):
            raise ValueError("the training dataset is empty")
        if aspect_ratio_grouping:
            self.buckets = np.array([0 if d["width"] > d["height"] else 1 for d in dataset], dtype=np.int64)
        else:
            self.buckets = np.zeros(len(dataset), dtype=np.int64)
        self.dataset = DatasetFromList(dataset, copy=False)
        self.mapper = mapper
        self.total_batch_size = total_batch_size
        self.num_workers = num_workers
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self._stream = GlobalBatches(self.buckets, self.seed, total_batch_size)
        self._handed_out = 0

    def map_sample(self, position: int, index: int) -> Dict:
        """The mapped sample at `position` of the stream, dataset image `index` (or its substitute)."""
        if get_worker_info() is not None:
            return self._map(position, index)
        with preserved_rng():  # in the training process, the model's random draws must not depend on the data
            return self._map(position, index)

    def _map(self, position: int, index: int) -> Dict:
        for attempt in range(_SUBSTITUTES + 1):
            seed_all_from(self.seed, position, attempt)
            mapped = self.mapper(self.dataset[index])
            if mapped is not None:
                return mapped
            same_bucket = np.flatnonzero(self.buckets == self.buckets[index])
            draw = np.random.default_rng(_mix(self.seed, position, attempt)).integers(len(same_bucket))
            index = int(same_bucket[draw])
        raise RuntimeError(f"the mapper skipped sample {position} of the stream and {_SUBSTITUTES} substitutes")

    def __iter__(self) -> Iterator[List[Dict]]:
        loader = DataLoader(
            _MappedBatches(self, self._stream.state()),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,
            # its own generator: creating the loader must not draw from the global one
            generator=torch.Generator().manual_seed(self.seed),
        )
        for batch in loader:
            next(self._stream)  # the main process's copy of the stream, for state_dict
            self._handed_out += 1
            yield batch

    def state_dict(self) -> Dict:
        return {
            "seed": self.seed,
            "num_images": len(self.buckets),
            "total_batch_size": self.total_batch_size,
            "aspect_ratio_grouping": self.aspect_ratio_grouping,
            "batches": self._handed_out,
            "stream": self._stream.state(),
        }

    def load_state_dict(self, state: Dict) -> None:
        """Continues the stream of `state`: from the next iterator on, batches follow those handed out before."""
        this = {
            "num_images": len(self.buckets),
            "total_batch_size": self.total_batch_size,
            "aspect_ratio_grouping": self.aspect_ratio_grouping,
        }
        saved = {k: state[k] for k in this}
        if saved != this:
            logger.warning(
                f"the checkpoint's data stream was of {saved}, this one is of {this}: the stream restarts, so the "
                "resumed training does not see the images the interrupted one would have seen"
            )
            return
        self.seed = state["seed"]
        self._handed_out = state["batches"]
        self._stream = GlobalBatches(self.buckets, self.seed, self.total_batch_size, state["stream"])
        logger.info(
            f"The data stream continues after its batch {self._handed_out} (epoch {self._stream.epoch}, "
            f"image {self._stream.offset} of {len(self.buckets)})"
        )

