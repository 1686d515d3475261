"""Cross-cutting cases for the layer and neuron methods.

Models: SmallCNN (conv, ReLU, max pooling, linear), BranchCNN (its `split` layer returns a
tuple of two tensors) and TinyTextModel (an nn.Embedding fed integer token ids).
Tuple-layer cases pass their image as a 1-tuple, because the shared shape check compares
the tuple-ness of the result with that of the inputs (a layer method follows the layer).

DeepLift cases use DeepLiftCNN below: Captum's DeepLift is not a trustworthy oracle where two
nonlinearities with rules follow each other directly (SmallCNN's ReLU -> MaxPool2d), so a
convolution separates them here; completeness on the other models is checked in
test_layer.py / test_neuron.py. Captum's LayerFeaturePermutation applies `target` twice (it
fails for any target), so its cases use one-output models and no target.
"""
import torch
from torch import nn

from attrkit.testing import BranchCNN, SmallCNN, TinyTextModel
from cases import Case


class DeepLiftCNN(nn.Module):
    """On 1x8x8 images: conv -> ReLU -> conv -> max pool 2 -> linear -> Sigmoid -> linear (3 classes)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1, self.relu1 = nn.Conv2d(1, 3, 3), nn.ReLU()
        self.conv2, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2)
        self.fc1, self.sigmoid, self.fc2 = nn.Linear(36, 6), nn.Sigmoid(), nn.Linear(6, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        x = self.pool(self.conv2(self.relu1(self.conv1(x))))
        return self.fc2(self.sigmoid(self.fc1(x.flatten(1))))


def _img():
    return torch.randn(3, 1, 8, 8)


def _img_tuple():
    return (torch.randn(3, 1, 8, 8),)


def _tokens():
    return torch.randint(1, 12, (4, 7))


def _second_half_neuron(outputs):  # a callable selector on a layer that returns a tuple
    return outputs[1][:, 0, 1, 2]


def _pool_neuron(output):  # a callable selector on a plain tensor output
    return output[:, 1, 2, 0] - output[:, 3, 0, 1]


_extra_arg = {"additional_forward_args": (1.0,)}  # the models take no extra argument: forward() raises
_bad_neuron = {"neuron_selector": (99, 0, 0)}
_ibs = {"batch_arg": "internal_batch_size", "batch_values": (3, 8, 1000)}  # 1, 2 and all steps at a time
_cnn, _branch, _dl = SmallCNN, BranchCNN, DeepLiftCNN
_delta = {"return_convergence_delta": True}
_ppe = {"batch_arg": "perturbations_per_eval", "batch_values": (1, 4)}  # None (the default) runs all at once
_channels = torch.arange(6).reshape(1, 6, 1, 1)  # a layer mask: one feature per channel of SmallCNN.conv2
_halves = (torch.tensor([0, 1]).reshape(1, 2, 1, 1), torch.tensor([2, 3]).reshape(1, 2, 1, 1))  # BranchCNN.split
_fc_inputs = (torch.arange(54) // 6)[None]  # SmallCNN.fc's input: 9 groups of 6
_blocks = torch.arange(16).reshape(1, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)  # 2x2 pixel blocks
_dl_baselines = torch.linspace(-0.3, 0.3, 64).reshape(1, 1, 8, 8)
_dl_distribution = torch.linspace(-1, 1, 4 * 64).reshape(4, 1, 8, 8).flip(-1) * 0.4


# Perturbation cases run in float64, so that the batch-size test sees our batching and not float32
# convolutions, whose last bits depend on the batch size.
def _double(model_cls, **kwargs):
    return lambda: model_cls(**kwargs).double()


def _img64():
    return torch.randn(3, 1, 8, 8, dtype=torch.float64)


def _img64_tuple():
    return (_img64(),)


def _squared_difference(multipliers, inputs, baselines):
    return tuple(m * (x - b) ** 2 for m, x, b in zip(multipliers, inputs, baselines))


def _four_arguments(a, b, c, d):
    return a

LAYER_CASES = [
    # LayerActivation
    Case("layer-act-conv2", "LayerActivation", _cnn, _img, layer="conv2", bad_kwargs=_extra_arg),
    Case("layer-act-split-tuple", "LayerActivation", _branch, _img_tuple, layer="split", bad_kwargs=_extra_arg),
    Case("layer-act-fc-input", "LayerActivation", _cnn, _img, {"attribute_to_layer_input": True}, layer="fc",
         bad_kwargs=_extra_arg),
    # LayerGradientXActivation
    Case("lgxa-pool", "LayerGradientXActivation", _cnn, _img, {"target": torch.tensor([0, 1, 2])}, layer="pool"),
    Case("lgxa-split-tuple", "LayerGradientXActivation", _branch, _img_tuple, {"target": 1}, layer="split"),
    Case("lgxa-conv1-input-grad-only", "LayerGradientXActivation", _cnn, _img,
         {"target": 2, "attribute_to_layer_input": True}, init={"multiply_by_inputs": False}, layer="conv1"),
    # InternalInfluence
    Case("internal-influence-pool", "InternalInfluence", _cnn, _img,
         {"target": 0, "n_steps": 15, "method": "riemann_middle"}, layer="pool", **_ibs),
    Case("internal-influence-fc-input", "InternalInfluence", _cnn, _img,
         {"target": 1, "n_steps": 12, "baselines": 0.2, "attribute_to_layer_input": True}, layer="fc", **_ibs),
    Case("internal-influence-split-tuple", "InternalInfluence", _branch, _img_tuple,
         {"target": 2, "n_steps": 10}, layer="split"),
    # LayerConductance
    Case("conductance-conv2", "LayerConductance", _cnn, _img,
         {"target": 1, "n_steps": 20, "return_convergence_delta": True}, layer="conv2", **_ibs),
    Case("conductance-split-tuple-trapezoid", "LayerConductance", _branch, _img_tuple,
         {"target": 0, "n_steps": 16, "method": "riemann_trapezoid", "baselines": 0.1,
          "return_convergence_delta": True}, layer="split", **_ibs),
    Case("conductance-pool-input-left", "LayerConductance", _cnn, _img,
         {"target": [2, 1, 0], "n_steps": 10, "method": "riemann_left", "attribute_to_layer_input": True},
         layer="pool", **_ibs),
    # LayerGradCam
    Case("gradcam-conv2-relu", "LayerGradCam", _cnn, _img, {"target": [2, 0, 1], "relu_attributions": True},
         layer="conv2", shape="layer-summed"),
    Case("gradcam-conv1-per-channel", "LayerGradCam", _cnn, _img, {"target": 1, "attr_dim_summation": False},
         layer="conv1"),
    Case("gradcam-split-tuple", "LayerGradCam", _branch, _img_tuple, {"target": 0}, layer="split",
         shape="layer-summed"),
    Case("gradcam-fc-no-spatial", "LayerGradCam", _cnn, _img, {"target": 1}, layer="fc", shape="layer-summed"),
    # LayerIntegratedGradients
    Case("lig-conv1", "LayerIntegratedGradients", _cnn, _img,
         {"target": 1, "n_steps": 20, "return_convergence_delta": True}, layer="conv1", **_ibs),
    Case("lig-text-embedding", "LayerIntegratedGradients", TinyTextModel, _tokens,
         {"target": 1, "baselines": 0, "n_steps": 25, "return_convergence_delta": True}, layer="embedding", **_ibs),
    Case("lig-split-tuple-local", "LayerIntegratedGradients", _branch, _img_tuple,
         {"target": 2, "n_steps": 12, "method": "riemann_right"}, init={"multiply_by_inputs": False},
         layer="split"),
    Case("lig-fc-input", "LayerIntegratedGradients", _cnn, _img,
         {"target": 0, "n_steps": 10, "baselines": 0.3, "attribute_to_layer_input": True}, layer="fc"),
    # GuidedGradCam
    Case("guided-gradcam-conv2", "GuidedGradCam", _cnn, _img, {"target": [0, 1, 2]}, layer="conv2", shape="inputs"),
    Case("guided-gradcam-pool-input-bilinear", "GuidedGradCam", _branch, _img,
         {"target": 2, "interpolate_mode": "bilinear", "attribute_to_layer_input": True}, layer="pool", shape="inputs"),
    # LayerGradientShap (sampled: agreement in expectation)
    Case("layer-gradshap-conv2", "LayerGradientShap", _cnn, _img,
         {"baselines": torch.randn(8, 1, 8, 8), "n_samples": 3000, "target": 1}, layer="conv2",
         oracle="expectation", rtol=0.1, atol=0.05),
    # LayerDeepLift
    Case("layer-deeplift-conv2", "LayerDeepLift", _dl, _img,
         {"baselines": _dl_baselines, "target": [0, 2, 1], **_delta}, layer="conv2"),
    Case("layer-deeplift-fc1-input-local", "LayerDeepLift", _dl, _img,
         {"baselines": 0.1, "target": 1, "attribute_to_layer_input": True}, init={"multiply_by_inputs": False},
         layer="fc1"),
    Case("layer-deeplift-split-tuple", "LayerDeepLift", _branch, _img_tuple, {"target": 2, **_delta}, layer="split"),
    Case("layer-deeplift-relu1-custom", "LayerDeepLift", _dl, _img,
         {"baselines": 0.2, "target": 0, "custom_attribution_func": _squared_difference}, layer="relu1",
         bad_kwargs={"custom_attribution_func": _four_arguments}),
    # LayerDeepLiftShap
    Case("layer-deepliftshap-conv2", "LayerDeepLiftShap", _dl, _img,
         {"baselines": _dl_distribution, "target": [1, 0, 2], **_delta}, layer="conv2"),
    # issue 15: baselines given as a function of the inputs
    Case("layer-deepliftshap-conv2-baselines-fn", "LayerDeepLiftShap", _dl, _img,
         {"baselines": lambda inputs: _dl_distribution, "target": 2, **_delta}, layer="conv2"),
    Case("layer-deepliftshap-split-tuple", "LayerDeepLiftShap", _branch, _img_tuple,
         {"baselines": (_dl_distribution,), "target": 0}, layer="split"),
    # LayerFeatureAblation
    Case("layer-ablation-conv2-channels", "LayerFeatureAblation", _double(SmallCNN), _img64,
         {"target": [0, 1, 2], "layer_mask": _channels, "layer_baselines": 0.5}, layer="conv2", **_ppe),
    Case("layer-ablation-fc", "LayerFeatureAblation", _double(SmallCNN), _img64, {"target": 1}, layer="fc", **_ppe),
    Case("layer-ablation-fc-input", "LayerFeatureAblation", _double(SmallCNN), _img64,
         {"target": 2, "attribute_to_layer_input": True, "layer_baselines": torch.linspace(0, 1, 54)[None],
          "layer_mask": _fc_inputs},
         layer="fc", **_ppe),
    Case("layer-ablation-split-tuple", "LayerFeatureAblation", _double(BranchCNN), _img64_tuple,
         {"target": 0, "layer_mask": _halves}, layer="split", **_ppe),
    Case("layer-ablation-text-embedding", "LayerFeatureAblation", _double(TinyTextModel), _tokens, {"target": 1},
         layer="embedding", **_ppe),
    # LayerFeaturePermutation (random: both draw the same permutations from the same seed)
    Case("layer-permutation-conv2-channels", "LayerFeaturePermutation", _double(SmallCNN, n_classes=1), _img64,
         {"layer_mask": _channels}, layer="conv2", **_ppe),
    Case("layer-permutation-split-tuple", "LayerFeaturePermutation", _double(BranchCNN, n_classes=1), _img64_tuple,
         {"layer_mask": _halves}, layer="split", **_ppe),
]

NEURON_CASES = [
    # NeuronGradient
    Case("neuron-grad-conv2-index", "NeuronGradient", _cnn, _img, {"neuron_selector": (1, 0, 2)}, layer="conv2",
         bad_kwargs=_bad_neuron,
         shape="inputs"),
    Case("neuron-grad-fc-int", "NeuronGradient", _cnn, _img, {"neuron_selector": 2}, layer="fc",
         bad_kwargs={"neuron_selector": 3}, shape="inputs"),
    Case("neuron-grad-slice", "NeuronGradient", _cnn, _img, {"neuron_selector": (slice(0, 3), 1, slice(None))},
         layer="conv2", bad_kwargs=_bad_neuron,
         shape="inputs"),
    Case("neuron-grad-callable-split-tuple", "NeuronGradient", _branch, _img,
         {"neuron_selector": _second_half_neuron}, layer="split", bad_kwargs=_bad_neuron,
         shape="inputs"),
    Case("neuron-grad-fc-input", "NeuronGradient", _cnn, _img,
         {"neuron_selector": 40, "attribute_to_neuron_input": True}, layer="fc", bad_kwargs={"neuron_selector": 54},
         shape="inputs"),
    # NeuronIntegratedGradients
    Case("neuron-ig-conv2", "NeuronIntegratedGradients", _cnn, _img,
         {"neuron_selector": (2, 1, 0), "n_steps": 20, "baselines": 0.1}, layer="conv2", bad_kwargs=_bad_neuron,
         **_ibs, shape="inputs"),
    Case("neuron-ig-callable-pool-local", "NeuronIntegratedGradients", _cnn, _img,
         {"neuron_selector": _pool_neuron, "n_steps": 16, "method": "riemann_left"},
         init={"multiply_by_inputs": False}, layer="pool", bad_kwargs=_bad_neuron, **_ibs, shape="inputs"),
    # NeuronConductance
    Case("neuron-conductance-conv2", "NeuronConductance", _cnn, _img,
         {"neuron_selector": (0, 1, 1), "target": 1, "n_steps": 20, "method": "riemann_middle"}, layer="conv2",
         **_ibs, shape="inputs"),  # the default trapezoid rule differs from Captum's by n/(n-1): see test_neuron.py
    Case("neuron-conductance-callable-split-tuple", "NeuronConductance", _branch, _img,
         {"neuron_selector": _second_half_neuron, "target": [0, 2, 1], "n_steps": 12, "method": "gausslegendre"},
         layer="split", **_ibs, shape="inputs"),
    Case("neuron-conductance-fc-input-local", "NeuronConductance", _cnn, _img,
         {"neuron_selector": 7, "target": 2, "n_steps": 10, "method": "gausslegendre", "attribute_to_neuron_input": True,
          "baselines": 0.2},
         init={"multiply_by_inputs": False}, layer="fc", **_ibs, shape="inputs"),
    # NeuronGradientShap (sampled)
    Case("neuron-gradshap-conv1", "NeuronGradientShap", _cnn, _img,
         {"neuron_selector": (3, 2, 2), "baselines": torch.randn(8, 1, 8, 8), "n_samples": 3000}, layer="conv1",
         oracle="expectation", rtol=0.1, atol=0.05, bad_kwargs=_bad_neuron,
         shape="inputs"),
    # NeuronDeepLift
    Case("neuron-deeplift-conv2", "NeuronDeepLift", _dl, _img, {"neuron_selector": (1, 2, 3), "baselines": 0.2},
         layer="conv2", bad_kwargs=_bad_neuron,
         shape="inputs"),
    Case("neuron-deeplift-callable-fc1-local", "NeuronDeepLift", _dl, _img,  # through the max pool
         {"neuron_selector": lambda out: out[:, 2] - out[:, 4], "baselines": _dl_baselines},
         init={"multiply_by_inputs": False}, layer="fc1", bad_kwargs=_bad_neuron,
         shape="inputs"),
    Case("neuron-deeplift-conv2-input-custom", "NeuronDeepLift", _dl, _img,
         {"neuron_selector": (2, 1, 1), "attribute_to_neuron_input": True,
          "custom_attribution_func": _squared_difference}, layer="conv2", bad_kwargs=_bad_neuron,
         shape="inputs"),
    # NeuronDeepLiftShap
    Case("neuron-deepliftshap-pool", "NeuronDeepLiftShap", _dl, _img,
         {"neuron_selector": (3, 1, 2), "baselines": _dl_distribution}, layer="pool", bad_kwargs=_bad_neuron,
         shape="inputs"),
    # NeuronGuidedBackprop, NeuronDeconvolution
    Case("neuron-guided-conv2", "NeuronGuidedBackprop", _cnn, _img, {"neuron_selector": (1, 2, 0)}, layer="conv2",
         bad_kwargs=_bad_neuron,
         shape="inputs"),
    Case("neuron-guided-callable-split-tuple", "NeuronGuidedBackprop", _branch, _img,
         {"neuron_selector": _second_half_neuron}, layer="split", bad_kwargs=_bad_neuron,
         shape="inputs"),
    Case("neuron-deconv-fc-input", "NeuronDeconvolution", _cnn, _img,
         {"neuron_selector": 10, "attribute_to_neuron_input": True}, layer="fc", bad_kwargs={"neuron_selector": 54},
         shape="inputs"),
    Case("neuron-deconv-pool", "NeuronDeconvolution", _cnn, _img, {"neuron_selector": _pool_neuron}, layer="pool",
         bad_kwargs=_bad_neuron,
         shape="inputs"),
    # NeuronFeatureAblation
    Case("neuron-ablation-conv2-blocks", "NeuronFeatureAblation", _double(SmallCNN), _img64,
         {"neuron_selector": (2, 1, 0), "feature_mask": _blocks, "baselines": 0.3}, layer="conv2",
         bad_kwargs=_bad_neuron, **_ppe, shape="inputs"),
    Case("neuron-ablation-callable-split-tuple", "NeuronFeatureAblation", _double(BranchCNN), _img64,
         {"neuron_selector": _second_half_neuron, "feature_mask": _blocks}, layer="split", bad_kwargs=_bad_neuron,
         **_ppe, shape="inputs"),
]

CASES = LAYER_CASES + NEURON_CASES
