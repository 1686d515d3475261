"""Vision-transformer methods: the token-grid reshape for Grad-CAM (Captum as oracle), attention rollout
(hand-computed cases), gradient-weighted attention (an independent reference computation), shapes on
vit_b_16, bad input by name, and the model left exactly as found."""
import copy
import doctest

import pytest
import torch
from torch import nn

import attrkit
import attrkit.attention
from attrkit import AttentionRollout, GradientWeightedAttention, LayerGradCam, vit_token_grid

torchvision = pytest.importorskip("torchvision")
from torchvision.models import VisionTransformer  # noqa: E402


def _tiny_vit(num_layers=2, seed=0):
    torch.manual_seed(seed)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=num_layers, num_heads=2, hidden_dim=32,
                            mlp_dim=64, num_classes=5).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision zeroes the head: every gradient would be 0
    return vit


def _images(n=2, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def test_docstring_examples_run():
    assert doctest.testmod(attrkit.attention, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


def test_exported_from_attrkit():
    for name in attrkit.attention.__all__:
        assert getattr(attrkit, name) is getattr(attrkit.attention, name) and name in attrkit.__all__


# --------------------------------------------------------------------------- token grid and Grad-CAM
def test_vit_token_grid_drops_the_class_token_and_lays_patches_out_row_by_row():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float).reshape(2, 7, 3)  # 1 class token + 6 patches, D=3
    grid = vit_token_grid(tokens, grid_size=(2, 3))
    assert grid.shape == (2, 3, 2, 3)
    for r in range(2):
        for c in range(3):
            torch.testing.assert_close(grid[:, :, r, c], tokens[:, 1 + 3 * r + c])
    torch.testing.assert_close(vit_token_grid(tokens[:, 1:], (2, 3), num_prefix_tokens=0), grid)


@pytest.mark.parametrize("kwargs, match", [({"grid_size": (4, 4)}, "grid_size"), ({}, "grid_size"),
                                           ({"num_prefix_tokens": -1}, "num_prefix_tokens")])
def test_vit_token_grid_bad_input_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vit_token_grid(torch.rand(1, 7, 3), **kwargs)
    with pytest.raises(ValueError, match="tokens"):
        vit_token_grid(torch.rand(7, 3))


class _GridProbe(nn.Module):
    """An encoder block whose patch tokens pass through ``probe`` as a grid: Captum's layer sees the grid."""

    def __init__(self, block):
        super().__init__()
        self.block, self.probe = block, nn.Identity()

    def forward(self, x):
        tokens = self.block(x)
        grid = self.probe(vit_token_grid(tokens))
        return torch.cat([tokens[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


def _block_layer(vit, where):
    return vit.encoder.layers[0] if where == "block 0" else vit.encoder.layers[-1].ln_1


def _probe_layer(model, where):
    """In the oracle's own copy, wrap the layer so that its patch tokens pass through a grid-shaped module."""
    if where == "block 0":
        model.encoder.layers[0] = _GridProbe(model.encoder.layers[0])
        return model.encoder.layers[0].probe
    model.encoder.layers[-1].ln_1 = _GridProbe(model.encoder.layers[-1].ln_1)
    return model.encoder.layers[-1].ln_1.probe


# the last block's output reaches the head only through the class token (patch gradients are 0), so
# Grad-CAM on a ViT uses the last block's first LayerNorm, as pytorch-grad-cam's documentation advises
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("where", ["block 0", "last ln_1"])
def test_layer_grad_cam_on_vit_tokens_matches_captum_on_the_grid(where, relu):
    captum_attr = pytest.importorskip("captum.attr")
    vit, x = _tiny_vit(), _images(3)
    probed = copy.deepcopy(vit)
    expected = captum_attr.LayerGradCam(probed, _probe_layer(probed, where)).attribute(
        x, target=[0, 3, 4], relu_attributions=relu)
    ours = LayerGradCam(vit, _block_layer(vit, where)).attribute(x, target=[0, 3, 4], relu_attributions=relu,
                                                                  reshape_transform=vit_token_grid)
    assert ours.shape == (3, 1, 4, 4)
    assert expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["LayerGradientXActivation", "LayerActivation"])
def test_other_layer_methods_give_token_maps_that_vit_token_grid_lays_out(method):
    captum_attr = pytest.importorskip("captum.attr")
    vit, x = _tiny_vit(), _images()
    probed = copy.deepcopy(vit)
    kwargs = {} if method == "LayerActivation" else {"target": 3}
    expected = getattr(captum_attr, method)(probed, _probe_layer(probed, "last ln_1")).attribute(x, **kwargs)
    tokens = getattr(attrkit, method)(vit, _block_layer(vit, "last ln_1")).attribute(x, **kwargs)
    torch.testing.assert_close(vit_token_grid(tokens), expected, rtol=1e-5, atol=1e-7)


def test_layer_grad_cam_default_is_unchanged_and_bad_transform_is_named():
    vit, x = _tiny_vit(), _images()
    layer = vit.encoder.layers[1]
    captum_attr = pytest.importorskip("captum.attr")
    plain = LayerGradCam(vit, layer).attribute(x, target=1)  # tokens taken as they are, as Captum takes them
    torch.testing.assert_close(plain, captum_attr.LayerGradCam(vit, layer).attribute(x, target=1), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(TypeError, match="reshape_transform"):
        LayerGradCam(vit, layer).attribute(x, target=1, reshape_transform="grid")


# --------------------------------------------------------------------------- capture leaves the model as it was
def test_captured_attention_is_the_modules_own_and_the_output_unchanged():
    vit, x = _tiny_vit(), _images()
    reference_output = vit(x)
    inputs, weights = [], []
    handles = [b.self_attention.register_forward_hook(
        lambda m, args, out: inputs.append(args[0])) for b in vit.encoder.layers]
    vit(x)
    for h in handles:
        h.remove()
    for b, q in zip(vit.encoder.layers, inputs):
        weights.append(b.self_attention(q, q, q, need_weights=True, average_attn_weights=False)[1])
    method = AttentionRollout(vit)
    with attrkit.attention._torch_attention(method._mha) as record:
        output = vit(x)
    torch.testing.assert_close(output, reference_output, rtol=1e-5, atol=1e-6)
    assert len(record) == 2
    for ours, theirs in zip(record, weights):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_model_state_restored(train):
    vit, x = _tiny_vit(), _images()
    vit.train(train)
    vit.conv_proj.weight.requires_grad_(False)
    flags = [p.requires_grad for p in vit.parameters()]
    modes = [m.training for m in vit.modules()]
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    before = _hook_count(vit)
    for method in (AttentionRollout(vit), GradientWeightedAttention(vit)):
        method.attribute(x) if isinstance(method, AttentionRollout) else method.attribute(x, target=2)
        with pytest.raises(ValueError):
            method.attribute(x, token_index=99)
    assert _hook_count(vit) == before
    assert [p.requires_grad for p in vit.parameters()] == flags
    assert [m.training for m in vit.modules()] == modes
    assert all(p.grad is None for p in vit.parameters())
    for k, v in vit.state_dict().items():
        assert torch.equal(v, state[k])
    assert "forward" not in vit.encoder.layers[0].self_attention.__dict__


# --------------------------------------------------------------------------- rollout with known answers
def _uniform_attention_vit(num_layers):
    """Query and key projections zeroed: every score is 0, so every attention row is uniform, 1/T."""
    vit = _tiny_vit(num_layers)
    with torch.no_grad():
        for block in vit.encoder.layers:
            block.self_attention.in_proj_weight[:64].zero_()
            block.self_attention.in_proj_bias[:64].zero_()
    return vit


@pytest.mark.parametrize("num_layers, share", [(1, 0.5), (2, 0.75), (3, 0.875)])
def test_rollout_of_uniform_attention(num_layers, share):
    # one layer: 0.5 U + 0.5 I; U @ U = U, so L layers give (1 - 0.5**L) U + 0.5**L I; T = 17 tokens
    vit = _uniform_attention_vit(num_layers)
    rollout = AttentionRollout(vit).attribute(_images())
    torch.testing.assert_close(rollout, torch.full((2, 1, 4, 4), share / 17))
    no_residual = AttentionRollout(vit).attribute(_images(), add_residual=False, as_grid=False)
    torch.testing.assert_close(no_residual, torch.full((2, 16), 1 / 17))


@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
def test_rollout_of_two_layers_by_hand(head_fusion):
    vit, x = _tiny_vit(), _images()
    with attrkit.attention._torch_attention(AttentionRollout(vit)._mha) as record, torch.no_grad():
        vit(x)
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.max(1).values, "min": lambda a: a.min(1).values}
    eye = torch.eye(17)
    mixing = []
    for a in record:
        m = 0.5 * fuse[head_fusion](a) + 0.5 * eye
        mixing.append(m / m.sum(-1, keepdim=True))
    expected = (mixing[1] @ mixing[0])[:, 0, 1:].reshape(2, 1, 4, 4)
    rollout = AttentionRollout(vit).attribute(x, head_fusion=head_fusion)
    torch.testing.assert_close(rollout, expected)
    up = AttentionRollout(vit).attribute(x, head_fusion=head_fusion, interpolate_dims=(32, 32))
    assert up.shape == (2, 1, 32, 32)


# --------------------------------------------------------------------------- Chefer against a reference
def _reference_chefer(vit, x, target):
    """Chefer's rule with dy/dA computed another way: out_h = A_h V_h, so dy/dA_h = (dy/dout_h) V_h^T, with
    dy/dout from the gradient at the attention module's output through its output projection, and A from
    nn.MultiheadAttention's own need_weights=True path."""
    queries, outputs = [], []

    def keep(module, args, out):
        queries.append(args[0])
        out[0].retain_grad()
        outputs.append(out[0])

    handles = [b.self_attention.register_forward_hook(keep) for b in vit.encoder.layers]
    try:
        y = vit(x)
        y[torch.arange(len(x)), target].sum().backward()
    finally:
        for h in handles:
            h.remove()
    vit.zero_grad(set_to_none=True)
    relevance = torch.eye(17).expand(len(x), 17, 17)
    for block, q, out in zip(vit.encoder.layers, queries, outputs):
        mha = block.self_attention
        n, t, e = q.shape
        heads = lambda z: z.reshape(n, t, mha.num_heads, e // mha.num_heads).transpose(1, 2)  # noqa: E731
        grad_ctx = heads(out.grad @ mha.out_proj.weight)
        value = heads(q @ mha.in_proj_weight[2 * e:].T + mha.in_proj_bias[2 * e:])
        grad_a = grad_ctx @ value.transpose(-2, -1)
        with torch.no_grad():
            a = mha(q, q, q, need_weights=True, average_attn_weights=False)[1]
        weighted = (grad_a * a).clamp(min=0).mean(1)
        relevance = relevance + weighted @ relevance
    return relevance[:, 0, 1:].reshape(len(x), 1, 4, 4)


def test_gradient_weighted_attention_matches_a_reference_computation():
    vit, x, target = _tiny_vit(), _images(3), [1, 4, 0]
    expected = _reference_chefer(vit, x, torch.tensor(target))
    ours = GradientWeightedAttention(vit).attribute(x, target=target)
    assert expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    one = GradientWeightedAttention(vit).attribute(x[1:2], target=4)
    torch.testing.assert_close(one, expected[1:2], rtol=1e-5, atol=1e-6)  # examples do not mix


def test_gradient_weighted_attention_works_with_a_frozen_model():
    vit, x = _tiny_vit(), _images()
    expected = GradientWeightedAttention(vit).attribute(x, target=2)
    vit.requires_grad_(False)
    torch.testing.assert_close(GradientWeightedAttention(vit).attribute(x, target=2), expected)
    assert not any(p.requires_grad for p in vit.parameters())


# --------------------------------------------------------------------------- the real size
def test_vit_b_16_with_random_weights():
    vit = torchvision.models.vit_b_16(weights=None).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.01)
    x = _images(1, seed=3).repeat(1, 1, 7, 7)  # 224 x 224
    cam = LayerGradCam(vit, vit.encoder.layers[-1].ln_1).attribute(x, target=7, reshape_transform=vit_token_grid)
    assert cam.shape == (1, 1, 14, 14) and cam.abs().max() > 0
    assert AttentionRollout(vit).attribute(x).shape == (1, 1, 14, 14)
    chefer = GradientWeightedAttention(vit).attribute(x, target=7, interpolate_dims=(224, 224))
    assert chefer.shape == (1, 1, 224, 224) and torch.isfinite(chefer).all()
    assert _hook_count(vit) == 0


# --------------------------------------------------------------------------- bad input
def test_model_without_attention_is_named():
    with pytest.raises(ValueError, match="`model`"):
        AttentionRollout(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(TypeError, match="`model`"):
        GradientWeightedAttention(lambda x: x)


@pytest.mark.parametrize("kwargs, match", [({"head_fusion": "median"}, "head_fusion"),
                                           ({"grid_size": (2, 2)}, "grid_size"),
                                           ({"token_index": 17}, "token_index"),
                                           ({"num_prefix_tokens": 17}, "num_prefix_tokens")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionRollout(_tiny_vit()).attribute(_images(), **kwargs)


def test_bad_target_is_named():
    with pytest.raises(ValueError, match="target"):
        GradientWeightedAttention(_tiny_vit()).attribute(_images(), target=9)


# --------------------------------------------------------------------------- Hugging Face models
def test_hugging_face_vit_and_bert_config_restored():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2, hidden_size=32,
        intermediate_size=64, num_labels=3)).eval()
    before = vit.config._attn_implementation
    x = _images()
    rollout = AttentionRollout(vit).attribute(x, add_residual=False)
    chefer = GradientWeightedAttention(vit).attribute(x, target=2)
    assert rollout.shape == chefer.shape == (2, 1, 4, 4) and chefer.abs().max() > 0
    assert vit.config._attn_implementation == before
    vit.config._attn_implementation = "eager"  # the test's own call, to get the attentions by hand
    with torch.no_grad():
        first, second = (a.mean(1) for a in vit(x, output_attentions=True).attentions)
    vit.config._attn_implementation = before
    torch.testing.assert_close(rollout, (second @ first)[:, 0, 1:].reshape(2, 1, 4, 4))
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=2)).eval()
    before = bert.config._attn_implementation
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    scores = GradientWeightedAttention(bert).attribute(ids, target=1, as_grid=False)
    assert scores.shape == (2, 5)
    assert AttentionRollout(bert).attribute(ids, as_grid=False, num_prefix_tokens=0).shape == (2, 6)
    assert bert.config._attn_implementation == before
