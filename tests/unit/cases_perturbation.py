"""Cross-cutting cases for the perturbation family: ablation, occlusion, permutation, Shapley, LIME, KernelSHAP.

The permutation-drawing methods draw exactly as Captum does on the CPU, so FeaturePermutation and
ShapleyValueSampling are compared exactly; Lime and KernelShap agree with Captum in expectation (many samples).
"""
import torch

from attrkit.testing import MLP, SmallCNN, ToyModel, TwoInputModel
from cases import Case


def _img():
    return torch.randn(3, 1, 8, 8)


# In float64, so that the batch-size test sees our batching and not float32 convolutions, whose last bits
# depend on the batch size.
def _cnn64():
    return SmallCNN().double()


def _img64():
    return torch.randn(3, 1, 8, 8, dtype=torch.float64)


def _pair():
    return (torch.randn(5, 4), torch.randn(5, 4))


def _blocks():  # 2x2 blocks of an 8x8 image: 16 features
    return torch.arange(16).reshape(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1).reshape(1, 1, 8, 8)


def _quadrants():  # four 4x4 quadrants of an 8x8 image
    return torch.tensor([[0, 1], [2, 3]]).repeat_interleave(4, 0).repeat_interleave(4, 1).reshape(1, 1, 8, 8)


_pair_args = {"additional_forward_args": (2.0,)}
_pair_mask = (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[2, 3, 3, 4]]))  # feature 2 spans both inputs
_ppe = {"batch_arg": "perturbations_per_eval", "batch_values": (1, 3)}
_memory = {"batch_arg": "max_batch_memory_mb", "batch_values": (1e-9, 0.002)}
_bad_mask = {"feature_mask": torch.zeros(2, 3, dtype=torch.long)}

CASES = [
    # ---------------------------------------------------------------- FeatureAblation
    Case("ablation-mlp", "FeatureAblation", MLP, lambda: torch.randn(6, 10), {"target": 1}, **_ppe,
         bad_kwargs=_bad_mask),
    Case("ablation-cnn-blocks", "FeatureAblation", _cnn64, _img64,
         {"target": [2, 1, 0], "baselines": 0.5, "feature_mask": _blocks()}, **_memory,
         bad_kwargs={"baselines": torch.zeros(2, 8)}),
    Case("ablation-two-input-shared-feature", "FeatureAblation", TwoInputModel, _pair,
         {"target": 2, "feature_mask": _pair_mask, "baselines": (0.1, torch.randn(1, 4)), **_pair_args}, **_ppe),
    # issue 15: sparse feature ids (1, 3, 4, 6 and 8 name no element), as Captum allows
    Case("ablation-mlp-sparse-ids", "FeatureAblation", MLP, lambda: torch.randn(4, 10),
         {"target": 1, "feature_mask": torch.tensor([[0, 0, 5, 5, 2, 2, 9, 9, 7, 7]])}, **_ppe),
    # ---------------------------------------------------------------- Occlusion
    Case("occlusion-cnn", "Occlusion", SmallCNN, _img,
         {"target": 1, "sliding_window_shapes": (1, 3, 3), "strides": (1, 2, 2)}, **_ppe,
         bad_kwargs={"sliding_window_shapes": (1, 9, 3)}),
    Case("occlusion-cnn-per-example-baseline", "Occlusion", _cnn64, _img64,
         {"target": torch.tensor([0, 1, 2]), "sliding_window_shapes": (1, 4, 2), "strides": 2,
          "baselines": torch.randn(3, 1, 8, 8, dtype=torch.float64)}, **_memory, bad_kwargs={"strides": 0}),
    Case("occlusion-two-input", "Occlusion", TwoInputModel, _pair,
         {"target": 0, "sliding_window_shapes": ((2,), (3,)), "strides": (1, 2), **_pair_args}, **_ppe),
    # ---------------------------------------------------------------- FeaturePermutation
    Case("permutation-mlp", "FeaturePermutation", MLP, lambda: torch.randn(8, 10), {"target": 0}, **_ppe),
    Case("permutation-two-input", "FeaturePermutation", TwoInputModel, _pair,
         {"target": 1, "feature_mask": _pair_mask, **_pair_args}, **_memory, bad_kwargs=_bad_mask),
    # ---------------------------------------------------------------- Shapley values
    Case("shapley-sampling-mlp", "ShapleyValueSampling", MLP, lambda: torch.randn(4, 10),
         {"target": 2, "n_samples": 5}, batch_arg="perturbations_per_eval", batch_values=(1, 7),
         bad_kwargs={"n_samples": 0}),
    Case("shapley-sampling-cnn-blocks", "ShapleyValueSampling", _cnn64, _img64,
         {"target": 0, "n_samples": 3, "feature_mask": _blocks(), "baselines": 0.1}, **_memory),
    Case("shapley-exact-toy", "ShapleyValues", ToyModel, lambda: torch.rand(4, 3), {"target": 0}, **_ppe),
    Case("shapley-exact-two-input", "ShapleyValues", TwoInputModel, _pair,
         {"target": 1, "feature_mask": _pair_mask, **_pair_args}, **_memory, rtol=1e-4),
    # ---------------------------------------------------------------- LIME and KernelSHAP
    Case("lime-mlp", "Lime", lambda: MLP(n_features=5), lambda: torch.randn(2, 5),
         {"target": 1, "n_samples": 1000}, oracle="expectation", rtol=0.15, atol=0.01, **_ppe,
         bad_kwargs={"n_samples": 0}),
    Case("lime-two-input", "Lime", TwoInputModel, _pair,
         {"target": 0, "n_samples": 600, "feature_mask": _pair_mask, "baselines": (0.5, -0.2), **_pair_args},
         oracle="expectation", rtol=0.05, atol=0.01, **_memory),
    Case("kernel-shap-toy", "KernelShap", ToyModel, lambda: torch.rand(2, 3) * 2,
         {"target": 1, "n_samples": 300}, oracle="expectation", rtol=0.05, atol=0.01, **_ppe),
    Case("kernel-shap-cnn-quadrants", "KernelShap", SmallCNN, lambda: torch.randn(1, 1, 8, 8),
         {"target": 2, "n_samples": 150, "feature_mask": _quadrants()}, oracle="expectation", rtol=0.2, atol=0.02,
         bad_kwargs={"feature_mask": torch.zeros(1, 1, 3, dtype=torch.long)}),
]
