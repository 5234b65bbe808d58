"""The DETR augmentations against the official rules (datasets/transforms.py of facebookresearch/detr)."""
import collections

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torchvision.transforms.functional as TF  # noqa: E402
from fvcore.transforms.transform import CropTransform  # noqa: E402
from PIL import Image  # noqa: E402

from detectron2.data import transforms as T  # noqa: E402

from sam_detr.data import DetrResize, RandomSelect, RandomSizeCrop, detr_train_augmentation  # noqa: E402


def official_output_shape(h, w, size, max_size):
    """The official `get_size_with_aspect_ratio`, restated: (w, h) image size in, (h, w) out."""
    if max_size is not None:
        short, long = float(min(w, h)), float(max(w, h))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


@pytest.mark.parametrize(
    "h, w, size, max_size, expected",
    [
        (480, 640, 800, 1333, (800, 1066)),  # long side floored: 1066.67 -> 1066
        (640, 480, 800, 1333, (1066, 800)),
        (500, 2000, 800, 1333, (333, 1332)),  # clamped: round(1333 * 500 / 2000) = 333
        (500, 1000, 800, 1333, (666, 1332)),  # round(666.5) = 666 (half to even), not 667
        (400, 1000, 800, 1000, (400, 1000)),  # clamped to the short side itself: the size is kept
        (800, 1201, 800, None, (800, 1201)),  # short side already at the target
        (375, 500, 512, 1333, (512, 682)),  # 682.67 floored; ResizeShortestEdge rounds it to 683
    ],
)
def test_resize_rule_examples(h, w, size, max_size, expected):
    assert DetrResize.get_output_shape(h, w, size, max_size) == expected
    assert official_output_shape(h, w, size, max_size) == expected


def test_resize_rule_matches_official_on_many_sizes():
    rng = np.random.RandomState(0)
    sizes = list(range(480, 801, 32)) + [400, 500, 600, 128, 160, 192]
    differs_from_d2 = 0
    for _ in range(3000):
        h, w = (int(v) for v in rng.randint(1, 2500, size=2))
        size = sizes[rng.randint(len(sizes))]
        for max_size in (None, 1333, 320):
            ours = DetrResize.get_output_shape(h, w, size, max_size)
            assert ours == official_output_shape(h, w, size, max_size), (h, w, size, max_size)
        d2 = T.ResizeShortestEdge.get_output_shape(h, w, size, 1333)
        differs_from_d2 += d2 != DetrResize.get_output_shape(h, w, size, 1333)
    assert differs_from_d2 > 0  # the reason for DetrResize


def test_resize_pixels_identical_to_torchvision_pil_resize():
    rng = np.random.RandomState(1)
    for h, w, size, max_size in [(480, 640, 800, 1333), (375, 500, 512, 1333), (203, 1111, 600, 1333),
                                 (640, 427, 400, None), (161, 137, 128, 320), (97, 131, 192, 320)]:
        image = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
        out = DetrResize(size, max_size).get_transform(image).apply_image(image)
        expected = np.asarray(TF.resize(Image.fromarray(image), list(official_output_shape(h, w, size, max_size))))
        assert out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)


def test_resize_draws_every_size():
    np.random.seed(0)
    sizes = [480, 512, 544, 800]
    aug = DetrResize(sizes, None)
    image = np.zeros((100, 150, 3), dtype=np.uint8)
    drawn = collections.Counter(aug.get_transform(image).new_h for _ in range(400))
    assert set(drawn) == set(sizes)
    assert min(drawn.values()) > 60


def test_random_size_crop_bounds():
    np.random.seed(0)
    aug = RandomSizeCrop(384, 600)
    for h, w in [(500, 700), (800, 420), (384, 1000), (600, 600)]:
        image = np.zeros((h, w, 3), dtype=np.uint8)
        widths, heights, positions = set(), set(), []
        for _ in range(600):
            tfm = aug.get_transform(image)
            assert isinstance(tfm, CropTransform)
            assert 384 <= tfm.w <= min(w, 600) and 384 <= tfm.h <= min(h, 600)
            assert 0 <= tfm.x0 <= w - tfm.w and 0 <= tfm.y0 <= h - tfm.h
            assert tfm.apply_image(image).shape == (tfm.h, tfm.w, 3)
            widths.add(tfm.w)
            heights.add(tfm.h)
            if tfm.w < w:
                positions.append(tfm.x0 / (w - tfm.w))
        # both ends of the size ranges are drawn, and positions spread over the free space
        assert {384, min(w, 600)} <= widths and {384, min(h, 600)} <= heights
        assert min(positions) < 0.05 and max(positions) > 0.95


def test_random_size_crop_keeps_a_side_shorter_than_min_size():
    np.random.seed(0)
    image = np.zeros((50, 300, 3), dtype=np.uint8)
    for _ in range(50):
        tfm = RandomSizeCrop(64, 100).get_transform(image)
        assert tfm.h == 50 and tfm.y0 == 0
        assert 64 <= tfm.w <= 100


@pytest.mark.parametrize("prob, expected_a", [(0.5, 0.5), (0.8, 0.8), (1.0, 1.0), (0.0, 0.0)])
def test_random_select_picks_both_branches(prob, expected_a):
    np.random.seed(0)
    select = RandomSelect([T.Resize((10, 10))], [T.Resize((20, 30)), T.RandomFlip(prob=1.0)], prob=prob)
    picks = collections.Counter()
    for _ in range(1000):
        aug_input = T.AugInput(np.zeros((40, 50, 3), dtype=np.uint8))
        tfm = select(aug_input)
        picks[aug_input.image.shape[:2]] += 1
        # the returned transform is the one applied, so that boxes can follow the image
        assert tfm.apply_image(np.zeros((40, 50, 3), dtype=np.uint8)).shape == aug_input.image.shape
    assert picks[(10, 10)] + picks[(20, 30)] == 1000
    assert abs(picks[(10, 10)] / 1000 - expected_a) < 0.05


def test_detr_train_augmentation_structure_and_outputs():
    augs = detr_train_augmentation()
    assert isinstance(augs[0], T.RandomFlip) and augs[0].prob == 0.5
    select = augs[1]
    assert isinstance(select, RandomSelect) and select.prob == 0.5
    (resize,) = select.augs_a.augs
    assert resize.short_edge_length == tuple(range(480, 801, 32)) and resize.max_size == 1333
    pre, crop, post = select.augs_b.augs
    assert pre.short_edge_length == (400, 500, 600) and pre.max_size is None
    assert (crop.min_size, crop.max_size) == (384, 600)
    assert post.short_edge_length == resize.short_edge_length and post.max_size == 1333

    np.random.seed(0)
    shapes = set()
    for _ in range(40):
        aug_input = T.AugInput(np.zeros((480, 640, 3), dtype=np.uint8))
        T.AugmentationList(augs)(aug_input)
        h, w = aug_input.image.shape[:2]
        assert min(h, w) in range(480, 801, 32) and max(h, w) <= 1333
        shapes.add((h, w))
    # the crop branch gives aspect ratios other than 4:3
    assert any(abs(w / h - 4 / 3) > 0.05 for h, w in shapes)
