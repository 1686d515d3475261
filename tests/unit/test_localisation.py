"""attrkit.metrics.localisation: hand-computed cases, ties, random expectations against simulation, shapes,
bad input."""
import math

import pytest
import torch

from attrkit.metrics import (
    Localisation, energy_pointing_game, localisation, pointing_game, relevance_mass_accuracy,
    relevance_rank_accuracy, top_k_iou,
)

# two 3x3 maps; the mask is the left column of the first and the centre pixel of the second
MAPS = torch.tensor([[[9., 0., 0.], [1., 2., 0.], [0., -5., 3.]],
                     [[1., 1., 1.], [1., 4., 1.], [1., 1., 1.]]])
MASK = torch.tensor([[[1, 0, 0], [1, 0, 0], [1, 0, 0]],
                     [[0, 0, 0], [0, 1, 0], [0, 0, 0]]], dtype=torch.bool)


def test_pointing_game_by_hand():
    score, random = pointing_game(MAPS, MASK)
    assert score.tolist() == [1.0, 1.0]                       # 9 at (0, 0) is on the mask; 4 at the centre
    torch.testing.assert_close(random, torch.tensor([3 / 9, 1 / 9]))
    assert pointing_game(-MAPS, MASK).score.tolist() == [0.0, 0.0]   # -5 at (2, 1) and a 1 off the centre


def test_pointing_game_shares_ties():
    maps = torch.tensor([[2., 2., 2., 0.], [1., 1., 1., 1.]])
    mask = torch.tensor([[1, 0, 0, 1], [1, 1, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(pointing_game(maps, mask).score, torch.tensor([1 / 3, 3 / 4]))


def test_relevance_mass_accuracy_by_hand():
    score, random = relevance_mass_accuracy(MAPS, MASK)
    # positive relevance: 9 + 1 + 2 + 3 = 15, of which 9 + 1 on the left column; 12 in all, 4 at the centre
    torch.testing.assert_close(score, torch.tensor([10 / 15, 4 / 12]))
    torch.testing.assert_close(random, torch.tensor([3 / 9, 1 / 9]))
    assert energy_pointing_game is relevance_mass_accuracy
    assert relevance_mass_accuracy(-torch.ones(1, 4), torch.ones(1, 4, dtype=torch.bool)).score.item() == 0.0


def test_relevance_rank_accuracy_by_hand():
    score, _ = relevance_rank_accuracy(MAPS, MASK)
    # first: K = 3, top three 9, 3, 2 -> only 9 on the mask; second: K = 1, top 4 -> on the mask
    torch.testing.assert_close(score, torch.tensor([1 / 3, 1.0]))
    # ties at the K-th value: [5, 1, 1, 1], mask {0, 1}: K = 2 -> 5 plus one of three 1s (one of them masked)
    s = relevance_rank_accuracy(torch.tensor([[5., 1., 1., 1.]]), torch.tensor([[1, 1, 0, 0]], dtype=torch.bool))
    torch.testing.assert_close(s.score, torch.tensor([(1 + 1 / 3) / 2]))


def test_top_k_iou_by_hand():
    score, _ = top_k_iou(MAPS, MASK, k=2)
    # first: top two {9 at (0,0), 3 at (2,2)} vs 3 masked -> I = 1, U = 4; second: {4, one of eight 1s} vs 1 -> 1/2
    torch.testing.assert_close(score, torch.tensor([1 / 4, 1 / 2]))
    torch.testing.assert_close(top_k_iou(MAPS, MASK, k=2 / 9).score, score)     # a fraction of the pixels
    own = top_k_iou(MAPS, MASK)                                                  # k = |mask|
    rank = relevance_rank_accuracy(MAPS, MASK).score
    k = MASK.flatten(1).sum(1)
    torch.testing.assert_close(own.score, rank * k / (2 * k - rank * k))


def test_random_iou_is_the_exact_hypergeometric_expectation():
    n, k, m = 9, 2, 3
    expected = sum(math.comb(m, i) * math.comb(n - m, k - i) / math.comb(n, k) * i / (k + m - i)
                   for i in range(0, min(k, m) + 1))
    assert top_k_iou(MAPS, MASK, k=2).random[0].item() == pytest.approx(expected, rel=1e-6)


def test_random_expectations_match_random_maps():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1:4, 2:5] = True                                    # 9 of 36 pixels
    maps = torch.rand(4000, 6, 6, generator=g) - 0.3
    masks = mask.expand(4000, 6, 6)
    for name, result in localisation(maps, masks, k=5).items():
        assert result.score.mean().item() == pytest.approx(result.random[0].item(), abs=0.02), name
    assert relevance_rank_accuracy(maps, masks).random[0].item() == pytest.approx(0.25)


def test_constant_map_scores_its_random_expectation():
    mask = torch.tensor([[1, 1, 0, 0, 0]], dtype=torch.bool)
    flat = torch.ones(1, 5)
    for name, result in localisation(flat, mask, k=2).items():
        if name != "top_k_iou":              # IoU of the expected intersection is not the expected IoU
            torch.testing.assert_close(result.score, result.random, msg=name)


def test_perfect_map_scores_one():
    mask = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.6
    perfect = mask.float() * (1 + 0.01 * torch.rand(3, 8, 8)) - 0.5 * ~mask     # positive on the mask only
    for name, result in localisation(perfect, mask).items():
        torch.testing.assert_close(result.score, torch.ones(3), msg=name)


def test_image_attributions_sum_channels_and_take_any_mask_layout():
    a = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    mask = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(3)) > 0.5
    ref = localisation(a.sum(1), mask, k=4)
    for m in (mask, mask[:, None], mask.long()):
        got = localisation(a, m, k=4)
        for name in ref:
            torch.testing.assert_close(got[name].score, ref[name].score)
    shared = localisation(a, mask[0], k=4)                      # one (H, W) mask for the whole batch
    torch.testing.assert_close(shared["pointing_game"].score, localisation(a, mask[0].expand(2, 5, 5))[
        "pointing_game"].score)
    assert isinstance(ref["top_k_iou"], Localisation) and ref["top_k_iou"].score.shape == (2,)


def test_maps_are_detached_and_stay_on_their_device_and_dtype():
    a = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    r = relevance_mass_accuracy(a, torch.ones(4, 4, dtype=torch.bool))
    assert r.score.dtype == torch.float64 and not r.score.requires_grad and r.score.device == a.device


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="attributions"):
        pointing_game([1.0, 2.0], MASK)
    with pytest.raises(TypeError, match="mask"):
        pointing_game(MAPS, [[1, 0]])
    with pytest.raises(ValueError, match="mask"):
        pointing_game(MAPS, torch.full((2, 3, 3), 2))
    with pytest.raises(ValueError, match="mask"):
        pointing_game(MAPS, torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="k"):
        top_k_iou(MAPS, MASK, k=0)
    with pytest.raises(ValueError, match="k"):
        top_k_iou(MAPS, MASK, k=1.5)
    with pytest.raises(TypeError, match="k"):
        top_k_iou(MAPS, MASK, k="2")
