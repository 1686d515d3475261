"""attrkit.segmentation: the (N, C, H, W) -> (N, C) wrapper by hand, LayerGradCam on a decoder layer and
FeatureAblation over grid and segment masks through it against Captum on the same wrapper, bad input."""
import pytest
import torch
from torch import nn

from attrkit import FeatureAblation, IntegratedGradients, LayerGradCam
from attrkit.segmentation import SegmentationWrapper, grid_feature_mask, segment_feature_mask


class TinySegNet(nn.Module):
    """Encoder (stride 2) -> decoder conv -> upsample -> 3-class head; returns {"out": logits} like torchvision."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        z = self.decoder(self.encoder(x))
        return {"out": nn.functional.interpolate(self.head(z), size=x.shape[2:], mode="bilinear",
                                                 align_corners=False)}


@pytest.fixture
def captum_attr():
    return pytest.importorskip("captum.attr")


@pytest.fixture
def setup():
    model = TinySegNet().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    return model, x, SegmentationWrapper(model).fix(x)


def _close(a, b, rtol=1e-5):
    a, b = a.detach(), b.detach()
    torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=rtol * float(b.abs().max().clamp_min(1e-12)))


def test_wrapper_sums_each_class_over_its_predicted_pixels(setup):
    model, x, wrapper = setup
    logits = model(x)["out"]
    pred = logits.argmax(1)
    expected = torch.stack([(logits[:, c] * (pred == c)).sum((1, 2)) for c in range(3)], dim=1)
    _close(wrapper(x), expected)
    assert torch.equal(wrapper.predicted, pred)


def test_fixed_reference_is_repeated_over_copies_and_kept_under_perturbation(setup):
    model, x, wrapper = setup
    both = wrapper(torch.cat([x, x]))
    _close(both, torch.cat([wrapper(x), wrapper(x)]))
    noisy = x + 3 * torch.randn_like(x)
    unfixed = SegmentationWrapper(model)(noisy)
    fixed = wrapper(noisy)
    logits, pred = model(noisy)["out"], wrapper.predicted
    _close(fixed, torch.stack([(logits[:, c] * (pred == c)).sum((1, 2)) for c in range(3)], dim=1))
    assert not torch.allclose(fixed, unfixed)
    assert wrapper.release().predicted is None


def test_layer_grad_cam_on_the_decoder_matches_captum(setup, captum_attr):
    model, x, wrapper = setup
    for target in (0, 2):
        ours = LayerGradCam(wrapper, model.decoder[0]).attribute(x, target=target)
        theirs = captum_attr.LayerGradCam(wrapper, model.decoder[0]).attribute(x, target=target)
        assert ours.shape == (2, 1, 6, 6)
        _close(ours, theirs)


def test_feature_ablation_over_grid_and_segments_matches_captum(setup, captum_attr):
    model, x, wrapper = setup
    for mask in (grid_feature_mask(12, 12, 4), segment_feature_mask(wrapper.predicted, cell=6)):
        for per_eval in (1, 3):
            ours = FeatureAblation(wrapper).attribute(x, target=1, feature_mask=mask, perturbations_per_eval=per_eval)
            theirs = captum_attr.FeatureAblation(wrapper).attribute(x, target=1, feature_mask=mask,
                                                                    perturbations_per_eval=per_eval)
            _close(ours, theirs)


def test_integrated_gradients_is_complete_through_the_wrapper(setup):
    _, x, wrapper = setup
    attr, delta = IntegratedGradients(wrapper).attribute(x, target=1, n_steps=64, return_convergence_delta=True)
    assert attr.shape == x.shape
    assert float(delta.abs().max()) < 0.05 * float(wrapper(x)[:, 1].abs().max())


def test_feature_masks():
    g = grid_feature_mask(5, 7, (2, 3))
    assert g.shape == (1, 1, 5, 7) and int(g.max()) == 3 * 3 - 1
    assert g[0, 0, 4, 6] == 8 and g[0, 0, 1, 2] == 0 and g[0, 0, 0, 3] == 1
    labels = torch.tensor([[[1, 1], [2, 2]], [[2, 2], [2, 7]]])
    s = segment_feature_mask(labels)
    assert s.shape == (2, 1, 2, 2) and s.unique().tolist() == [0, 1, 2]
    assert s[0, 0, 1, 0] == s[1, 0, 0, 0]                       # the same label is the same feature


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="output_key"):
        SegmentationWrapper(lambda x: {"logits": x}, output_key="out")(torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        SegmentationWrapper(nn.Identity())(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="predicted"):
        SegmentationWrapper(nn.Identity(), predicted=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="multiple"):
        SegmentationWrapper(nn.Identity(), predicted=torch.zeros(2, 3, 3, dtype=torch.long))(torch.zeros(3, 2, 3, 3))
    with pytest.raises(ValueError, match="cell"):
        grid_feature_mask(4, 4, 0)
    with pytest.raises(ValueError, match="labels"):
        segment_feature_mask(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="model"):
        SegmentationWrapper(3)
