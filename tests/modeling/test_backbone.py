import copy

import pytest
import torch
import torchvision

pytest.importorskip("detectron2", reason="sam_detr.modeling needs detectron2")

from sam_detr.checkpoint.resnet import convert_torchvision_resnet  # noqa: E402
from sam_detr.modeling import build_resnet_backbone  # noqa: E402


def _torchvision(depth, dc5):
    kwargs = {"replace_stride_with_dilation": [False, False, True]} if dc5 else {}
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None, **kwargs).eval()
    g = torch.Generator().manual_seed(depth)
    with torch.no_grad():  # BN statistics far from identity, so that a wrong mapping shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("depth,dc5", [(18, False), (50, False), (50, True), (101, False), (101, True)])
def test_equals_torchvision_with_converted_weights(depth, dc5, fast):
    tv = _torchvision(depth, dc5)
    ours = build_resnet_backbone(depth, out_features=["res3", "res4", "res5"], dc5=dc5, fast=fast).eval()
    incompatible = ours.load_state_dict(convert_torchvision_resnet(tv.state_dict()), strict=False)
    assert not incompatible.unexpected_keys and not incompatible.missing_keys
    x = torch.randn(1, 3, 75, 99)
    with torch.no_grad():
        feats = ours(x)
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        t = tv.layer1(t)
        expected = {}
        expected["res3"] = t = tv.layer2(t)
        expected["res4"] = t = tv.layer3(t)
        expected["res5"] = tv.layer4(t)
    for name, value in expected.items():
        # the fast path rounds differently (about 3e-6 of the largest feature, which reaches 1e3 here)
        atol = 1e-5 * value.abs().max().item() if fast else 1e-4
        torch.testing.assert_close(feats[name], value, rtol=1e-4, atol=atol)
        assert feats[name].is_contiguous()
    strides = {k: v.stride for k, v in ours.output_shape().items()}
    assert strides == {"res3": 8, "res4": 16, "res5": 16 if dc5 else 32}


def test_official_frozen_stages():
    model = build_resnet_backbone(50, freeze_at=2)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable == {"res3", "res4", "res5"} and frozen == {"stem", "res2"}
    # the conv weights of layer2-4 only: FrozenBN affine terms are buffers, as in the official models
    tv = torchvision.models.resnet50(weights=None)
    expected = sum(
        p.numel() for n, p in tv.named_parameters() if n.startswith(("layer2", "layer3", "layer4")) and p.dim() == 4
    )
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected == 23_232_512


def test_converter_names_unknown_keys():
    with pytest.raises(KeyError, match="layer1.0.foo"):
        convert_torchvision_resnet({"layer1.0.foo.weight": torch.zeros(1)})
    assert convert_torchvision_resnet({"fc.weight": torch.zeros(1), "bn1.num_batches_tracked": torch.zeros(1)}) == {}


def test_builder_dc5_and_errors():
    with torch.device("meta"):
        assert build_resnet_backbone(50, dc5=True).output_shape()["res5"].stride == 16
    with pytest.raises(ValueError, match="depth"):
        build_resnet_backbone(depth=42)
    with pytest.raises(ValueError, match="DC5"):
        build_resnet_backbone(depth=18, dc5=True)


@pytest.mark.parametrize("norm,freeze_at", [("FrozenBN", 2), ("BN", 0), ("BN", 2)])
@pytest.mark.parametrize("dc5", [False, True])
def test_fast_path_same_outputs_and_gradients(norm, freeze_at, dc5):
    """fast=True (channels-last, frozen BN folded into its convolution) against d2's plain ResNet with the
    same weights, on an odd size: the same state dict, and features (and, in training, gradients) as
    close to the float64 computation as the plain path's (rounding differs, nothing else). Training with
    trainable BN is left out: the batch statistics of a random ResNet on so small a batch are so
    ill-conditioned that the plain path's own float32 gradients are 0.2% off float64."""
    torch.manual_seed(0)
    kwargs = dict(out_features=["res4", "res5"], freeze_at=freeze_at, norm=norm, dc5=dc5)
    plain = build_resnet_backbone(50, fast=False, **kwargs)
    fast = build_resnet_backbone(50, fast=True, **kwargs)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, value in plain.state_dict().items():  # BN statistics far from identity
            if value.is_floating_point():
                positive = "var" in name or "norm.weight" in name
                value.copy_(torch.rand(value.shape, generator=g) * 0.5 + 0.5 if positive
                            else torch.randn(value.shape, generator=g) * (0.1 if "norm" in name else value.std()))
    assert list(fast.state_dict()) == list(plain.state_dict())
    fast.load_state_dict(plain.state_dict())
    reference = copy.deepcopy(plain).double()
    folded = [n for n, m in fast.named_modules() if type(m).__name__ == "FrozenBNConv2d"]
    assert len(folded) == (53 if norm == "FrozenBN" else 0 if freeze_at == 0 else 11)  # stem + res2: 1 + 10
    assert (type(fast).__name__ == "FastResNet") == (norm == "FrozenBN")  # channels-last only then
    x = torch.randn(2, 3, 61, 83)
    for training in (False, True) if norm == "FrozenBN" else (False,):
        results = []
        for model in (reference, plain, fast):
            model.train(training).zero_grad()
            with torch.set_grad_enabled(training):
                features = model(x.to(model.stem.conv1.weight.dtype))
                if training:
                    sum((f * torch.linspace(-1, 1, f.numel(), dtype=f.dtype).view_as(f)).sum()
                        for f in features.values()).backward()
            grads = {n: p.grad for n, p in model.named_parameters() if training and p.requires_grad}
            results.append({**{f"feature {k}": v.detach() for k, v in features.items()}, **grads})
            if model is fast:
                assert all(f.is_contiguous() for f in features.values())
        exact, plain_out, fast_out = results
        assert list(fast_out) == list(plain_out)
        for name, value in exact.items():
            plain_error = (plain_out[name].double() - value).abs().max().item()
            fast_error = (fast_out[name].double() - value).abs().max().item()
            assert fast_error <= 4 * plain_error + 1e-6 * value.abs().max().item(), (
                name, training, fast_error, plain_error, value.abs().max().item())
