"""Cross-cutting cases for the modified-backward family: DeepLift, DeepLiftShap,
GuidedBackprop, Deconvolution, LRP and LayerLRP.

Captum's DeepLift is only a trustworthy oracle where no two hooked modules touch
(its tensor hooks on a shared tensor interfere, e.g. ReLU -> MaxPool2d) and no
module is reused, so the oracle models below keep a linear layer between any two
nonlinearities. Reused and in-place modules (:class:`ResidualCNN`) run with
``oracle="none"``; their correctness is checked in test_deeplift.py against the
same network with one module per call.
"""
import torch
from torch import nn

from attrkit.testing import MLP, ResidualCNN, SmallCNN, TwoInputModel
from cases import Case


def oracle_cnn(seed: int = 0) -> nn.Module:
    """conv -> ReLU -> conv -> max pool -> linear -> Sigmoid -> linear, on 1x8x8 images."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(36, 6), nn.Sigmoid(), nn.Linear(6, 3),
    ).eval()


def pool1d_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 3, 3), nn.ELU(), nn.Conv1d(3, 4, 3, padding=1), nn.MaxPool1d(2),
                         nn.Flatten(), nn.Linear(20, 3))


def pool3d_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.Tanh(), nn.Conv3d(2, 2, 1), nn.MaxPool3d(2), nn.Flatten(),
                         nn.Linear(16, 3))


def softmax_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.LeakyReLU(0.1), nn.Linear(4, 3), nn.Softmax(dim=1))


class LRPNet(nn.Module):
    """A sequential CNN with every layer type LRP has a default rule for (Captum rejects nn.Flatten,
    so the reshape happens in forward)."""

    def __init__(self, bias: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 3, 3, bias=bias)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(4)
        self.relu2 = nn.ReLU()
        self.avg = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(16, 6, bias=bias)
        self.relu3 = nn.ReLU()
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(6, 3, bias=bias)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.1, 0.1)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.avg(self.relu2(self.bn(self.conv2(self.pool(self.relu1(self.conv1(x)))))))
        return self.fc2(self.drop(self.relu3(self.fc1(x.reshape(x.shape[0], -1)))))


def _img():
    return torch.randn(3, 1, 8, 8)


def _rgb():
    return torch.randn(2, 3, 16, 16)


def _pair():
    return (torch.randn(5, 4), torch.randn(5, 4))


def _squared_difference(multipliers, inputs, baselines):
    return tuple(m * (x - b) ** 2 for m, x, b in zip(multipliers, inputs, baselines))


_delta = {"return_convergence_delta": True}
CASES = [
    # DeepLift
    Case("deeplift-cnn", "DeepLift", oracle_cnn, _img,
         {"baselines": torch.full((1, 1, 8, 8), 0.2), "target": [0, 2, 1], **_delta}),
    Case("deeplift-mlp-sigmoid", "DeepLift", lambda: MLP(act=nn.Sigmoid), lambda: torch.randn(4, 10),
         {"baselines": torch.randn(4, 10), "target": 1, **_delta}),
    Case("deeplift-mlp-tanh-local", "DeepLift", lambda: MLP(act=nn.Tanh), lambda: torch.randn(4, 10),
         {"baselines": 0.5, "target": torch.tensor([0, 1, 2, 0])}, init={"multiply_by_inputs": False}),
    Case("deeplift-pool1d-elu", "DeepLift", pool1d_net, lambda: torch.randn(3, 2, 12),
         {"baselines": torch.randn(3, 2, 12) * 0.1, "target": 2, **_delta}),
    Case("deeplift-pool3d-tanh", "DeepLift", pool3d_net, lambda: torch.randn(2, 1, 6, 6, 6),
         {"target": 0, **_delta}),
    # Captum subtracts the softmax mean over the whole batch, attrkit per example: equal for one example
    Case("deeplift-softmax-one-example", "DeepLift", softmax_net, lambda: torch.randn(1, 5),
         {"baselines": torch.randn(1, 5), "target": 1, **_delta}),
    Case("deeplift-custom-func", "DeepLift", oracle_cnn, _img,
         {"baselines": 0.1, "target": 1, "custom_attribution_func": _squared_difference},
         bad_kwargs={"custom_attribution_func": lambda: None}),
    Case("deeplift-two-input-functional", "DeepLift", TwoInputModel, _pair,  # torch.relu: both use the gradient
         {"baselines": (torch.zeros(1, 4), 0.5), "target": 2, "additional_forward_args": (2.0,), **_delta}),
    Case("deeplift-residual-reused-inplace", "DeepLift", ResidualCNN, _rgb, {"target": 1, **_delta}, oracle="none"),
    # DeepLiftShap
    Case("deepliftshap-cnn", "DeepLiftShap", oracle_cnn, _img,
         {"baselines": torch.randn(4, 1, 8, 8) * 0.1, "target": [1, 0, 2], **_delta}),
    Case("deepliftshap-two-input", "DeepLiftShap", TwoInputModel, _pair,
         {"baselines": (torch.randn(3, 4), torch.randn(3, 4)), "target": 0,
          "additional_forward_args": (torch.linspace(0.5, 1.5, 5)[:, None],), **_delta}),
    # issue 15: baselines given as a function of the inputs (Captum calls it with the inputs)
    Case("deepliftshap-cnn-baselines-fn", "DeepLiftShap", oracle_cnn, _img,
         {"baselines": lambda inputs: torch.linspace(-0.2, 0.2, 4 * 64).reshape(4, 1, 8, 8), "target": 1, **_delta}),
    Case("deepliftshap-residual", "DeepLiftShap", ResidualCNN, _rgb,
         {"baselines": torch.rand(3, 3, 16, 16), "target": 2}, oracle="none"),
    # guided backpropagation and deconvolution (Captum's tensor hooks cope with reuse here)
    Case("guided-cnn", "GuidedBackprop", SmallCNN, _img, {"target": [0, 1, 2]}),
    Case("guided-mlp", "GuidedBackprop", MLP, lambda: torch.randn(4, 10), {"target": 1}),
    Case("guided-residual-reused-inplace", "GuidedBackprop", lambda: ResidualCNN().eval(), _rgb, {"target": 0}),
    Case("deconv-cnn", "Deconvolution", SmallCNN, _img, {"target": 2}),
    Case("deconv-residual-reused-inplace", "Deconvolution", lambda: ResidualCNN().eval(), _rgb, {"target": 1}),
    # LRP (default rules; rules set per layer are compared with Captum in test_lrp.py)
    Case("lrp-cnn", "LRP", lambda: LRPNet().eval(), _img, {"target": [2, 0, 1], **_delta}),
    Case("lrp-mlp", "LRP", MLP, lambda: torch.randn(4, 10), {"target": 0, **_delta}),
    Case("lrp-residual-reused-inplace", "LRP", ResidualCNN, _rgb, {"target": 0}, oracle="none"),
    Case("layer-lrp-conv2", "LayerLRP", lambda: LRPNet().eval(), _img, {"target": 1, **_delta}, layer="conv2"),
    Case("layer-lrp-fc1-input", "LayerLRP", lambda: LRPNet().eval(), _img,
         {"target": 0, "attribute_to_layer_input": True, **_delta}, layer="fc1"),
]
