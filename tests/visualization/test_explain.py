"""sam_detr.visualization on the quickstart models, randomly initialised: the pictures are the model's own
tensors (the points drawn are the points the ops sampled, the maps the weights the attention used), and a
PNG is written for every quickstart method (a method that lands with a quickstart config is covered)."""
import importlib
from pathlib import Path

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

import sam_detr.modeling.transformer.semantics_aligner as aligner_module  # noqa: E402
from sam_detr.visualization import (  # noqa: E402
    CallRecorder, Geometry, decoder_layers, explain, layer_picture, picture_of_layer, write_pictures,
)

# the module (sam_detr.layers exports a function of the same name)
msda_module = importlib.import_module("sam_detr.layers.ms_deform_attn")
QUICKSTART_CONFIGS = sorted(p.stem for p in (REPO_ROOT / "configs" / "quickstart").glob("*.py"))
# an odd-sized image, and a smaller one that its batch pads
SIZE, SMALL = (67, 93), (45, 61)


def model_of(name: str, **overrides) -> nn.Module:
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / f"{name}.py"))
    cfg.model.update(overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


def image(size=SIZE, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator)


def record_calls(monkeypatch, module, name: str):
    """Replaces module.<name> by a wrapper that records every call's arguments; returns the list of them."""
    calls, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def batch_pictures(model, layer: int, images):
    """Runs the model on a batch with the recorder of decoder layer `layer`; returns the picture maker, the
    recorder and each image's geometry."""
    kind = layer_picture(decoder_layers(model)[layer])
    with torch.no_grad(), kind.recorder() as recorder:
        batch, mask = model.preprocess_image([{"image": x} for x in images])
        features, masks = model.extract_features(batch, mask)
        model.forward_head(features, masks)
    shapes = [tuple(f.shape[-2:]) for f in features]
    return kind, recorder, [Geometry(tuple(s), shapes) for s in batch.image_sizes]


@pytest.mark.parametrize("name", QUICKSTART_CONFIGS)
def test_a_png_for_every_quickstart_method(name, tmp_path):
    model = model_of(name)
    explanation = explain(model, image(), layer=0, topk=2, threshold=0.0)
    assert len(explanation.detections) == 2 and explanation.layer == 0
    rgb = np.zeros((*SIZE, 3), dtype=np.uint8)
    paths = write_pictures(explanation, rgb, str(tmp_path / "picture.png"))
    picture = Image.open(paths[0])
    assert picture.format == "PNG" and picture.width > 2 * 200  # two detections side by side
    assert len(write_pictures(explanation, rgb, str(tmp_path / "one.png"), per_detection=True, per_head=True)) == 2


@pytest.mark.parametrize("name", ["detr", "deformable_detr", "sam_detr", "plain_detr"])
def test_detections_are_the_models_and_their_queries_scored_them(name):
    model = model_of(name)
    x = image()
    explanation = explain(model, x, topk=4, threshold=0.0)
    with torch.no_grad():
        instances = model([{"image": x}])[0]["instances"]
        batch, mask = model.preprocess_image([{"image": x}])
        logits = model.forward_head(*model.extract_features(batch, mask))["pred_logits"][0]
    order = instances.scores.argsort(descending=True)[:4]
    h, w = SIZE
    for detection, i in zip(explanation.detections, order):
        assert detection.score == pytest.approx(float(instances.scores[i]), abs=1e-6)
        assert detection.label == int(instances.pred_classes[i])
        clipped = np.clip(detection.box, 0, [w, h, w, h])  # the model's output is clipped to the image
        np.testing.assert_allclose(clipped, instances.pred_boxes.tensor[i].numpy(), atol=1e-3)
        # the query's own score for that class is the detection's
        if model.criterion.class_loss_type == "softmax":
            score = logits[detection.query].softmax(-1)[detection.label]
        else:
            score = logits[detection.query, detection.label].sigmoid()
        assert float(score) == pytest.approx(detection.score, abs=1e-6)


@pytest.mark.parametrize("name", ["deformable_detr", "ms_detr"])
@pytest.mark.parametrize("layer", [0, -1])
def test_sampling_points_are_the_points_the_op_sampled(name, layer, monkeypatch):
    model = model_of(name)
    model.size_divisibility = 32  # padding: the levels' valid ratios are below 1
    calls = record_calls(monkeypatch, msda_module, "ms_deform_attn")
    explanation = explain(model, image(), layer=layer, topk=3, threshold=0.0)
    # the encoder's calls come first, then one per decoder layer
    num_layers = len(decoder_layers(model))
    value, shapes, _, locations, weights = calls[len(calls) - num_layers + layer % num_layers][0]
    h, w = SIZE
    padded = 96  # both sides, rounded up to 32
    for detection in explanation.detections:
        picture = detection.picture
        # back to the op's coordinates: normalised over the padded level, (x + 0.5) / W_l of its pixels
        for level, (H, W) in enumerate(shapes.tolist()):
            valid_w, valid_h = -(-w * W // padded), -(-h * H // padded)  # the level's unpadded cells
            assert valid_h < H or level > 0  # the finest level's bottom is padding
            op_points = locations[0, detection.query, :, level].double()
            drawn = torch.from_numpy(picture.points[:, level]) / torch.tensor([w, h]) * torch.tensor(
                [valid_w / W, valid_h / H], dtype=torch.float64
            )
            torch.testing.assert_close(drawn, op_points, rtol=0, atol=1e-6)
        np.testing.assert_allclose(picture.weights, weights[0, detection.query].numpy(), rtol=0, atol=0)
        assert picture.level_shapes == [tuple(s) for s in shapes.tolist()]
    # sizes: the weights of a head sum to 1 over its levels and points
    np.testing.assert_allclose(explanation.detections[0].picture.weights.sum((1, 2)), 1.0, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1])
def test_salient_points_are_where_the_aligner_sampled(layer, monkeypatch):
    model = model_of("sam_detr")
    rois = record_calls(monkeypatch, aligner_module, "roi_align")
    grids = []
    original = F.grid_sample

    def grid_sample(input, grid, *args, **kwargs):
        grids.append(grid)
        return original(input, grid, *args, **kwargs)

    monkeypatch.setattr(aligner_module.F, "grid_sample", grid_sample)
    explanation = explain(model, image(), layer=layer, topk=3, threshold=0.0)
    (features, boxes), kwargs = rois[layer]
    assert kwargs["aligned"] and kwargs["spatial_scale"] == 1.0
    H, W = features.shape[-2:]
    h, w = SIZE
    to_features = torch.tensor([W / w, H / h], dtype=torch.float64)
    Q = boxes.shape[0]
    for detection in explanation.detections:
        x1y1, x2y2 = boxes[detection.query, 1:3].double(), boxes[detection.query, 3:].double()
        roi = torch.from_numpy(detection.picture.roi_box).view(2, 2) * to_features
        torch.testing.assert_close(roi, torch.stack([x1y1, x2y2]), rtol=0, atol=1e-4)
        # grid_sample (align_corners=False) on the RoIAlign output samples at x1 + (g + 1) / 2 * (x2 - x1)
        g = grids[layer].view(Q, -1, 2)[detection.query].double()  # (M, 2)
        sampled = x1y1 + (g + 1) / 2 * (x2y2 - x1y1)
        points = torch.from_numpy(detection.picture.points) * to_features
        torch.testing.assert_close(points, sampled, rtol=0, atol=1e-4)


def assert_weights_over_valid_tokens(weights: torch.Tensor, valid: torch.Tensor):
    """(..., S) attention weights: sum 1 over the valid tokens (S,) bool, exactly 0 on the others."""
    torch.testing.assert_close(weights[..., valid].sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5, rtol=0)
    assert (weights[..., ~valid] == 0).all()


@pytest.mark.parametrize("layer", [0, 2])
def test_conditional_detr_spatial_and_content_recombine_into_the_weights_used(layer):
    model = model_of("conditional_detr")
    kind, recorder, geometries = batch_pictures(model, layer, [image(), image(SMALL, seed=1)])
    weights = recorder.only("softmax").output  # (B * M, Q, S)
    weights = weights.view(2, -1, *weights.shape[1:])
    mask = recorder.only("cross_attn").inputs["key_padding_mask"]
    assert mask[1].any() and not mask[0].any()
    for b in range(2):
        assert_weights_over_valid_tokens(weights[b], ~mask[b])
        spatial, content, combined = (p.maps for p in kind.picture(recorder, b, 3, geometries[b]).parts)
        for part in (spatial, content, combined):
            np.testing.assert_allclose(part.sum((1, 2)), 1.0, atol=1e-5)  # all the weight is on the image's cells
        # softmax(spatial logits + content logits) is the layer's softmax: log-parts add up to the combined map
        recombined = torch.from_numpy(np.log(spatial) + np.log(content)).flatten(1).softmax(-1)
        torch.testing.assert_close(recombined, torch.from_numpy(combined).flatten(1), atol=1e-5, rtol=1e-4)
        # the combined map is the layer's weights on the valid cells
        h, w = combined.shape[1:]
        H, W = geometries[b].feature_shapes[0]
        used = weights[b, :, 3].view(-1, H, W)[:, :h, :w].double().numpy()
        np.testing.assert_array_equal(combined, used)


def test_detr_attention_maps_are_the_layers_weights():
    model = model_of("detr")
    x, small = image(), image(SMALL, seed=1)
    with torch.no_grad():
        plain = model([{"image": x}, {"image": small}])
    kind, recorder, geometries = batch_pictures(model, -1, [x, small])
    call = recorder.only("cross_attn")
    weights, mask = call.output[1], call.inputs["key_padding_mask"]  # (B, M, Q, S), (B, S)
    assert mask[1].any()
    for b in range(2):
        assert_weights_over_valid_tokens(weights[b], ~mask[b])
        (part,) = kind.picture(recorder, b, 1, geometries[b]).parts
        np.testing.assert_allclose(part.maps.sum((1, 2)), 1.0, atol=1e-5)
    # asking the attention for its weights changes nothing else (the hooks are gone afterwards)
    assert not decoder_layers(model)[-1].multihead_attn._forward_pre_hooks
    with torch.no_grad():
        again = model([{"image": x}, {"image": small}])
    for a, b in zip(plain, again):
        torch.testing.assert_close(a["instances"].scores, b["instances"].scores)


def test_plain_detr_boxrpb_and_attention_are_the_layers():
    model = model_of("plain_detr", batch_invariant=True)  # padded keys at -inf: weight exactly 0
    attention = decoder_layers(model)[-1].cross_attn
    projections = CallRecorder({"q": attention.q, "k": attention.k})
    with projections:
        kind, recorder, geometries = batch_pictures(model, -1, [image(), image(SMALL, seed=1)])
    call = recorder.only("cross_attn").inputs
    logits, weights = recorder.only("softmax").inputs["input"], recorder.only("softmax").output  # (B, M, Q, S)
    mask = call["padding_mask"]
    assert mask[1].any()
    B, M, Q, S = weights.shape
    # the logits the softmax saw are the scaled q . k plus the bias the layer's box_rpb gives the boxes it got
    q = projections.only("q").output.view(B, Q, M, -1).transpose(1, 2) * attention.scale
    k = projections.only("k").output.view(B, S, M, -1).transpose(1, 2)
    H, W = call["size"]
    expected = q @ k.transpose(-1, -2) + attention.box_rpb(call["boxes"], H, W).view(B, M, Q, S)
    valid = ~mask[:, None, None, :].expand_as(logits)
    torch.testing.assert_close(logits[valid], expected[valid], atol=1e-4, rtol=1e-4)
    for b in range(B):
        assert_weights_over_valid_tokens(weights[b], ~mask[b])
        bias, attn = kind.picture(recorder, b, 2, geometries[b]).parts
        assert bias.signed and not attn.signed
        np.testing.assert_allclose(attn.maps.sum((1, 2)), 1.0, atol=1e-5)


def test_recorder_leaves_no_hook_and_wants_one_call():
    layer = nn.Linear(2, 2)
    with CallRecorder({"linear": layer}) as recorder:
        layer(torch.zeros(1, 2))
        layer(torch.ones(1, 2))
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    assert [c.inputs["input"].sum().item() for c in recorder.calls("linear")] == [0.0, 2.0]
    with pytest.raises(ValueError, match="linear ran 2 times in one forward pass"):
        recorder.only("linear")


def test_errors_name_the_layer_and_the_model():
    model = model_of("detr")
    with pytest.raises(ValueError, match=r"--layer 3: DETR's decoder has layers 0..2 \(or -1 for the last\)"):
        picture_of_layer(model, 3)
    decoder_layers(model)[1] = nn.Identity()
    with pytest.raises(ValueError, match="DETR: no picture for decoder layers of type Identity"):
        picture_of_layer(model, 1)
    with pytest.raises(ValueError, match="eval mode"):
        explain(model.train(), image())


def test_no_detection_above_the_threshold_gives_no_picture(tmp_path):
    explanation = explain(model_of("detr"), image(), threshold=1.0)
    assert explanation.detections == []
    assert write_pictures(explanation, np.zeros((*SIZE, 3), np.uint8), str(tmp_path / "x.png")) == []
    assert not Path(tmp_path / "x.png").exists()
