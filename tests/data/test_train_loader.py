"""The resumable train loader: its stream is a function of its seed alone (not of the workers, nor of what came
before), continues exactly from its state, splits each global batch between processes and leaves the training
process's random generators alone."""
import itertools
import random

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from coco_builder import CocoBuilder, png  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from sam_detr.data import DetrDatasetMapper, DetrResize, RandomSizeCrop, TrainLoader  # noqa: E402
from sam_detr.data import checked_dataset_dicts  # noqa: E402
from sam_detr.data.train_loader import GlobalBatches  # noqa: E402

SIZES = [(40, 30), (30, 40), (48, 32), (32, 48), (44, 36), (36, 44), (50, 30)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    coco = CocoBuilder(tmp_path_factory.mktemp("loader"))
    for i, (w, h) in enumerate(SIZES):
        coco.image(png(w, h, seed=i), w, h, [(2, 3, 10, 12)])
    yield checked_dataset_dicts(coco.register())
    coco.unregister()


def mapper():
    # random flips, sizes and crops: a stream that is not reproduced exactly shows in the pixels
    return DetrDatasetMapper(
        is_train=True, augmentations=[T.RandomFlip(), DetrResize([24, 28, 32], 64), RandomSizeCrop(16, 30)]
    )


def take(loader, n):
    return [[(d["image_id"], d["image"]) for d in batch] for batch in itertools.islice(loader, n)]


def assert_same(a, b):
    assert [[i for i, _ in batch] for batch in a] == [[i for i, _ in batch] for batch in b]
    for batch_a, batch_b in zip(a, b):
        for (_, x), (_, y) in zip(batch_a, batch_b):
            assert torch.equal(x, y)


def test_stream_does_not_depend_on_workers(dataset):
    single = take(TrainLoader(dataset, mapper=mapper(), total_batch_size=2, seed=3), 6)
    assert_same(single, take(TrainLoader(dataset, mapper=mapper(), total_batch_size=2, seed=3,
                                                num_workers=2), 6))
    other_seed = take(TrainLoader(dataset, mapper=mapper(), total_batch_size=2, seed=4), 6)
    assert [[i for i, _ in b] for b in other_seed] != [[i for i, _ in b] for b in single]


def test_state_continues_the_stream_exactly(dataset):
    whole = take(TrainLoader(dataset, mapper=mapper(), total_batch_size=2, seed=5), 9)
    interrupted = TrainLoader(dataset, mapper=mapper(), total_batch_size=2, seed=5)
    take(interrupted, 4)
    state = interrupted.state_dict()
    assert state["batches"] == 4
    resumed = TrainLoader(dataset, mapper=mapper(), total_batch_size=2, seed=99, num_workers=1)
    resumed.load_state_dict(state)
    assert_same(take(resumed, 5), whole[4:])  # across an epoch boundary: 7 images, 2 per batch


def test_batches_are_grouped_by_aspect_ratio():
    buckets = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1])
    stream = GlobalBatches(buckets, seed=0, batch_size=3)
    batches = [next(stream) for _ in range(12)]
    positions = [p for batch in batches for p, _ in batch]
    assert len(set(positions)) == len(positions)  # each sample of the stream once
    for batch in batches:
        assert len({buckets[i] for _, i in batch}) == 1
    for epoch in range(2):  # every epoch a permutation
        assert sorted(i for p, i in sorted(sum(batches, [])) if epoch * 9 <= p < epoch * 9 + 9) == list(range(9))


def test_processes_share_each_global_batch(dataset, monkeypatch):
    one = take(TrainLoader(dataset, mapper=mapper(), total_batch_size=4, seed=1), 3)
    shares = []
    for rank in range(2):
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        shares.append(take(TrainLoader(dataset, mapper=mapper(), total_batch_size=4, seed=1), 3))
    assert_same(one, [a + b for a, b in zip(*shares)])
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        TrainLoader(dataset, mapper=mapper(), total_batch_size=3, seed=1)


def test_skipped_images_get_a_deterministic_substitute(dataset):
    class SkipFirst:
        def __init__(self):
            self.mapper = mapper()

        def __call__(self, d):
            return None if d["image_id"] == 1 else self.mapper(d)

    runs = [take(TrainLoader(dataset, mapper=SkipFirst(), total_batch_size=2, seed=2), 8) for _ in range(2)]
    assert_same(*runs)
    assert all(i != 1 for batch in runs[0] for i, _ in batch) and all(len(batch) == 2 for batch in runs[0])


def test_loading_leaves_the_training_generators_alone(dataset):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    take(TrainLoader(dataset, mapper=mapper(), total_batch_size=2, seed=0), 3)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
