"""What Conditional DETR adds to DETR: the conditional spatial query and the concatenated cross-attention
(the shared pipeline: tests/modeling/test_contract.py; equivalence with the official code: outside the
repository, ../ext/harness/conditional)."""
import math

import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from model_inputs import two_images  # noqa: E402

from sam_detr.modeling.transformer import ConditionalDETRDecoder, ConditionalDETRDecoderLayer  # noqa: E402

CONFIGS = REPO_ROOT / "configs"


def tiny_decoder(num_layers=3, d_model=32, nhead=4):
    torch.manual_seed(0)
    decoder = ConditionalDETRDecoder(ConditionalDETRDecoderLayer(d_model, nhead, 64, dropout=0.0), num_layers)
    for p in decoder.parameters():  # move the zero biases: every term must count
        torch.nn.init.normal_(p, std=0.3)
    return decoder.eval()


def official_sine(points, num_feats):
    """The official gen_sineembed_for_position: (..., 2) points (x, y) -> cat(pos_y, pos_x)."""
    dim_t = 10000 ** (2 * (torch.arange(num_feats) // 2) / num_feats)

    def embed(c):
        p = c[..., None] * 2 * math.pi / dim_t
        return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((embed(points[..., 1]), embed(points[..., 0])), dim=-1)


def run_decoder(decoder, Q=5, B=2, S=7):
    C = decoder.d_model
    memory, pos, query_pos = torch.randn(B, S, C), torch.randn(B, S, C), torch.randn(B, Q, C)
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[1, -3:] = True
    seen = []
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append((args, out))) for layer in decoder.layers]
    with torch.no_grad():
        hs, reference = decoder(memory, mask, pos, query_pos)
    for h in hooks:
        h.remove()
    return hs, reference, seen, (memory, mask, pos, query_pos)


def test_ca_qpos_proj_exists_in_the_first_layer_only():
    decoder = tiny_decoder()
    keys = [k for k in decoder.state_dict() if "ca_qpos_proj." in k]
    assert keys == ["layers.0.ca_qpos_proj.weight", "layers.0.ca_qpos_proj.bias"]
    # with self-attention blind to the learned query positions, only the first layer still reads them
    _, _, seen, _ = run_decoder(decoder)
    for i, (args, _) in enumerate(seen):
        layer = decoder.layers[i]
        for proj in (layer.sa_qpos_proj, layer.sa_kpos_proj):
            torch.nn.init.zeros_(proj.weight), torch.nn.init.zeros_(proj.bias)
        tgt, memory, mask, pos, query_pos, query_sine, _ = args
        with torch.no_grad():
            a = layer(tgt, memory, mask, pos, query_pos, query_sine)
            b = layer(tgt, memory, mask, pos, torch.randn_like(query_pos), query_sine)
        assert torch.allclose(a, b) == (i > 0)


def test_spatial_query_is_the_reference_sine_scaled_from_layer_1_on():
    decoder = tiny_decoder()
    hs, reference, seen, (_, _, _, query_pos) = run_decoder(decoder)
    C = decoder.d_model
    with torch.no_grad():
        expected_ref = decoder.ref_point_head(query_pos).sigmoid()  # (B, Q, 2), never refined
    torch.testing.assert_close(reference, expected_ref)
    sine = official_sine(expected_ref, C // 2)
    torch.testing.assert_close(seen[0][0][5], sine)  # layer 0: no transformation
    for i in range(1, len(seen)):
        previous = seen[i - 1][1]  # the un-normed output of the previous layer
        with torch.no_grad():
            torch.testing.assert_close(seen[i][0][5], sine * decoder.query_scale(previous))
    # the heads see every layer through the shared final norm
    with torch.no_grad():
        torch.testing.assert_close(hs, torch.stack([decoder.norm(o) for _, o in seen]))


def test_cross_attention_concatenates_content_and_position_per_head():
    decoder = tiny_decoder()
    _, _, seen, _ = run_decoder(decoder)
    M = decoder.layers[0].nhead
    for i in (0, 1):
        layer, (args, _) = decoder.layers[i], seen[i]
        tgt, memory, mask, pos, query_pos, query_sine, _ = args
        captured = []
        hook = layer.cross_attn.register_forward_hook(lambda m, a, out: captured.append(out))
        with torch.no_grad():
            layer(*args)
            tgt = layer.self_attention(tgt, query_pos)
            q, k, kp = layer.ca_qcontent_proj(tgt), layer.ca_kcontent_proj(memory), layer.ca_kpos_proj(pos)
            if i == 0:
                q, k = q + layer.ca_qpos_proj(query_pos), k + kp
            qs, v = layer.ca_qpos_sine_proj(query_sine), layer.ca_v_proj(memory)
        hook.remove()
        B, Q, C = q.shape
        d = C // M
        heads = []
        for h in range(M):
            part = slice(h * d, (h + 1) * d)
            logits = (torch.einsum("bqc,bsc->bqs", q[..., part], k[..., part])
                      + torch.einsum("bqc,bsc->bqs", qs[..., part], kp[..., part])) / math.sqrt(2 * d)
            logits = logits.masked_fill(mask[:, None, :], float("-inf"))
            heads.append(torch.einsum("bqs,bsc->bqc", logits.softmax(-1), v[..., part]))
        with torch.no_grad():
            expected = layer.cross_attn.out_proj(torch.cat(heads, -1))
        torch.testing.assert_close(captured[0], expected, rtol=1e-5, atol=1e-5)


def test_initial_boxes_sit_on_the_reference_points():
    """The box head starts at zero: every layer predicts (reference x, reference y, 0.5, 0.5)."""
    cfg = LazyConfig.load(str(CONFIGS / "quickstart" / "conditional_detr.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    captured = {}
    model.transformer.decoder.register_forward_hook(lambda m, a, out: captured.update(reference=out[1]))
    inputs = two_images()
    with torch.no_grad():
        images, mask = model.preprocess_image(inputs)
        out = model.forward_head(*model.extract_features(images, mask))
    boxes = torch.stack([a["pred_boxes"] for a in out["aux_outputs"]] + [out["pred_boxes"]])
    reference = captured["reference"].expand_as(boxes[..., :2])
    torch.testing.assert_close(boxes[..., :2], reference)
    assert (boxes[..., 2:] == 0.5).all()
    assert model.class_embed is not None and not isinstance(model.class_embed, torch.nn.ModuleList)
