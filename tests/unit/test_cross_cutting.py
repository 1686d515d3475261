"""Every case in cases_*.py through the same checks (see cases.py)."""
from operator import attrgetter

import pytest
import torch

import attrkit
from cases import Case, build, load_cases, make_inputs
from torch import nn
import attrkit as A
from _helpers import X

captum_attr = pytest.importorskip("captum.attr")

CASES = load_cases()


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _run(case: Case, library, inputs, **overrides):
    _, method = build(case, library)
    kwargs = {**(case.captum_kwargs if library is captum_attr and case.captum_kwargs else case.kwargs), **overrides}
    torch.manual_seed(2)
    return method.attribute(inputs, **kwargs)


def _split(case, out):
    return out if case.kwargs.get("return_convergence_delta") else (out, None)


@pytest.mark.parametrize("case", [c for c in CASES if c.oracle != "none"], ids=str)
def test_agrees_with_captum(case):
    inputs = make_inputs(case)
    ours, our_delta = _split(case, _run(case, attrkit, inputs))
    theirs, their_delta = _split(case, _run(case, captum_attr, inputs))
    assert type(ours) is type(theirs)
    for a, b in zip(_tuple(ours), _tuple(theirs)):
        assert a.shape == b.shape
        b = b.to(a.dtype)
        scale = b.abs().max().clamp_min(1e-12)
        if case.oracle == "exact":
            torch.testing.assert_close(a, b, rtol=case.rtol, atol=case.atol + case.rtol * float(scale))
        else:  # sampled methods: agree in expectation, relative to the attribution's scale
            assert float((a - b).abs().max()) <= case.atol + case.rtol * float(scale), (a, b)
    if our_delta is not None and case.oracle == "exact":
        torch.testing.assert_close(our_delta.reshape(-1).to(their_delta.dtype), their_delta.reshape(-1),
                                   rtol=1e-4, atol=1e-4)


def _state(model, inputs):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
         + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules()],
        [getattr(m, "inplace", None) for m in model.modules()],
        [x.requires_grad for x in _tuple(inputs)],
    )


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("train_mode", [False, True])
def test_model_state_restored(case, train_mode):
    model, method = build(case, attrkit)
    model.train(train_mode)
    inputs = make_inputs(case)
    before = _state(model, inputs)
    method.attribute(inputs, **case.kwargs)
    assert _state(model, inputs) == before
    bad = case.bad_kwargs or {"target": 10_000}
    with pytest.raises((ValueError, TypeError)):
        method.attribute(inputs, **{**case.kwargs, **bad})
    assert _state(model, inputs) == before


@pytest.mark.parametrize("case", [c for c in CASES if c.batch_arg], ids=str)
def test_batch_size_does_not_change_result(case):
    inputs = make_inputs(case)
    reference, _ = _split(case, _run(case, attrkit, inputs))
    for value in case.batch_values:
        out, _ = _split(case, _run(case, attrkit, inputs, **{case.batch_arg: value}))
        for a, b in zip(_tuple(out), _tuple(reference)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _layer_values(case, inputs):
    """What the case's layer produces (or receives, ``attribute_to_layer_input``) on ``inputs``."""
    model, _ = build(case, attrkit)
    layer = attrgetter(case.layer)(model)
    args = case.kwargs.get("additional_forward_args", ())
    seen = []
    if case.kwargs.get("attribute_to_layer_input"):
        handle = layer.register_forward_pre_hook(lambda m, values: seen.append(values))
    else:
        handle = layer.register_forward_hook(lambda m, _, values: seen.append(values))
    try:
        with torch.no_grad():
            model(*_tuple(inputs), *(args if isinstance(args, tuple) else (args,)))
    finally:
        handle.remove()
    return tuple(t for t in _tuple(seen[0]) if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_shapes_follow_inputs(case):
    inputs = make_inputs(case)
    out, _ = _split(case, _run(case, attrkit, inputs))
    if case.shape == "inputs":
        assert isinstance(out, tuple) == isinstance(inputs, tuple)
        for a, x in zip(_tuple(out), _tuple(inputs)):
            assert a.shape == x.shape and a.device == x.device
    else:  # layer results follow the layer: a tensor per tensor it produces (a tuple for several)
        expected = _layer_values(case, inputs)
        if case.shape == "layer-summed":
            expected = tuple(e[:, :1] for e in expected)  # one channel: the channels summed
        assert isinstance(out, tuple) == (len(expected) > 1)
        assert len(_tuple(out)) == len(expected)
        for a, e in zip(_tuple(out), expected):
            assert a.shape == e.shape and a.device == e.device


# ------------------------------------------------------------------------ Captum drop-in: dtype kept by every method
_FLOAT64 = [
    ("Saliency", lambda m: A.Saliency(m), {}),
    ("IntegratedGradients", lambda m: A.IntegratedGradients(m), {"n_steps": 8}),
    ("DeepLift", lambda m: A.DeepLift(m), {}),
    ("GuidedBackprop", lambda m: A.GuidedBackprop(m), {}),
    ("FeatureAblation", lambda m: A.FeatureAblation(m), {}),
    ("Occlusion", lambda m: A.Occlusion(m), {"sliding_window_shapes": (2,)}),
    ("ShapleyValueSampling", lambda m: A.ShapleyValueSampling(m), {"n_samples": 2}),
    ("Lime", lambda m: A.Lime(m), {"n_samples": 10}),
    ("KernelShap", lambda m: A.KernelShap(m), {"n_samples": 10}),
    ("LRP", lambda m: A.LRP(m), {}),
    ("LayerConductance", lambda m: A.LayerConductance(m, m[0]), {"n_steps": 8}),
    ("LayerIntegratedGradients", lambda m: A.LayerIntegratedGradients(m, m[0]), {"n_steps": 8}),
    ("LayerGradCam", lambda m: A.LayerGradCam(m, m[0]), {}),
    ("NoiseTunnel", lambda m: A.NoiseTunnel(A.Saliency(m)), {"nt_samples": 3}),
]


@pytest.mark.parametrize("make,kwargs", [(mk, kw) for _, mk, kw in _FLOAT64], ids=[n for n, _, _ in _FLOAT64])
def test_float64_in_float64_out(make, kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    out = make(model).attribute(X.double(), target=1, **kwargs)
    assert out.dtype == torch.float64


@pytest.mark.parametrize("name", ["NeuronGradient", "NeuronIntegratedGradients", "NeuronConductance"])
def test_float64_in_float64_out_neuron(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    kwargs = {"target": 1} if name == "NeuronConductance" else {}
    assert getattr(A, name)(model, model[0]).attribute(X.double(), 2, **kwargs).dtype == torch.float64
