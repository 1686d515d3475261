"""Cross-cutting cases for the gradient family and NoiseTunnel."""
import torch

from attrkit.testing import MLP, SmallCNN, ToyModel, TwoInputModel
from cases import Case


def _toy_x():
    return torch.rand(4, 3)


def _img():
    return torch.randn(3, 1, 8, 8)


def _pair():
    return (torch.randn(5, 4), torch.randn(5, 4))


_pair_args = {"additional_forward_args": (2.0,)}
CASES = [
    Case("saliency-mlp", "Saliency", lambda: MLP(), lambda: torch.randn(6, 10), {"target": 1}),
    Case("saliency-cnn-signed", "Saliency", SmallCNN, _img, {"target": torch.tensor([0, 1, 2]), "abs": False}),
    Case("saliency-two-input", "Saliency", TwoInputModel, _pair, {"target": 2, **_pair_args}),
    Case("ixg-cnn", "InputXGradient", SmallCNN, _img, {"target": [2, 1, 0]}),
    Case("ixg-two-input", "InputXGradient", TwoInputModel, _pair, {"target": 0, **_pair_args}),
    Case("ig-toy", "IntegratedGradients", ToyModel, _toy_x, {"target": 0, "return_convergence_delta": True},
         batch_arg="internal_batch_size", batch_values=(4, 12, 50)),
    Case("ig-cnn-riemann", "IntegratedGradients", SmallCNN, _img,
         {"target": 1, "n_steps": 20, "method": "riemann_left", "baselines": 0.5},
         batch_arg="internal_batch_size", batch_values=(3, 7, 1000)),
    Case("ig-two-input-local", "IntegratedGradients", TwoInputModel, _pair,
         {"target": torch.tensor([0, 1, 2, 0, 1]), "n_steps": 16, "method": "riemann_middle",
          "additional_forward_args": (torch.linspace(0.5, 1.5, 5)[:, None],)},
         init={"multiply_by_inputs": False}, batch_arg="internal_batch_size", batch_values=(5, 15)),
    Case("ig-mlp-left-right", "IntegratedGradients", lambda: MLP(act=torch.nn.Tanh), lambda: torch.randn(3, 10),
         {"target": 0, "method": "riemann_right", "n_steps": 10, "baselines": torch.randn(1, 10),
          "return_convergence_delta": True}),
    Case("nt-ig-smoothgrad", "IntegratedGradients", ToyModel, _toy_x,
         {"nt_type": "smoothgrad", "nt_samples": 300, "stdevs": 0.2, "target": 0, "n_steps": 10},
         wrapper="NoiseTunnel", oracle="expectation", rtol=0.15, atol=0.15,
         batch_arg="nt_samples_batch_size", batch_values=(7, 300)),
    Case("nt-saliency-vargrad", "Saliency", lambda: MLP(act=torch.nn.Tanh), lambda: torch.randn(2, 10),
         {"nt_type": "vargrad", "nt_samples": 400, "stdevs": 0.3, "target": 1},
         wrapper="NoiseTunnel", oracle="expectation", rtol=0.3, atol=0.01, batch_arg="nt_samples_batch_size",
         batch_values=(3, 64)),
    Case("nt-ixg-sq-cnn", "InputXGradient", SmallCNN, _img,
         {"nt_type": "smoothgrad_sq", "nt_samples": 200, "stdevs": 0.1, "target": 2},
         wrapper="NoiseTunnel", oracle="expectation", rtol=0.3, atol=0.3, batch_arg="nt_samples_batch_size",
         batch_values=(7, 64)),
    Case("gradshap-toy", "GradientShap", ToyModel, _toy_x,
         {"baselines": torch.rand(20, 3), "n_samples": 2000, "target": 1},
         oracle="expectation", rtol=0.1, atol=0.1),
    Case("gradshap-two-input", "GradientShap", TwoInputModel, _pair,
         {"baselines": (torch.randn(10, 4), torch.randn(10, 4)), "n_samples": 1500, "stdevs": 0.05, "target": 1,
          **_pair_args}, oracle="expectation", rtol=0.15, atol=0.15),
]
