"""attrkit.visualization: every panel draws, degenerate maps draw quietly, pixels are right,
and the API and normalisation match Captum's (Captum is the oracle here, never imported by attrkit)."""
import doctest
import html
import inspect
import io
import re
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from attrkit import visualization as viz  # noqa: E402
from _helpers import close

METHODS = ["heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling"]
SIGNS = ["all", "positive", "negative", "absolute_value"]
SERIES_METHODS = ["overlay_individual", "overlay_combined", "colored_graph"]
RNG = np.random.default_rng(0)
IMAGE = RNG.random((8, 8, 3))
ATTR = RNG.normal(size=(8, 8, 3))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def png(fig, dpi=64):
    """Render a figure to PNG at a fixed DPI and read it back as RGB floats in [0, 1]."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    return plt.imread(buf)[..., :3]


def full_axes(size_in=2.0):
    """A figure whose single axes fill it, so pixel (r, c) maps straight onto the image."""
    fig = Figure(figsize=(size_in, size_in))
    return fig, fig.add_axes([0, 0, 1, 1])


def block_centres(pixels, n):
    """The colour at the centre of each of the n x n image cells of a full-axes render."""
    step = pixels.shape[0] / n
    idx = (np.arange(n) * step + step / 2).astype(int)
    return pixels[np.ix_(idx, idx)]


def quietly(fn, *args, **kwargs):
    """Call and render with every warning (matplotlib's, numpy's) raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            fig, ax = fn(*args, use_pyplot=False, **kwargs)
            png(fig, dpi=20)
    return fig, ax


# ------------------------------------------------------------------ every combination
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sign", SIGNS)
def test_every_method_and_sign_draws(method, sign):
    fig, ax = quietly(viz.visualize_image_attr, ATTR, IMAGE, method, sign, show_colorbar=True,
                      title=f"{method} {sign}")
    assert ax in fig.axes and ax.images, "the panel shows an image"
    assert ax.get_title() == f"{method} {sign}"


@pytest.mark.parametrize("method", SERIES_METHODS)
@pytest.mark.parametrize("sign", SIGNS)
def test_every_timeseries_method_and_sign_draws(method, sign):
    attr, data = RNG.normal(size=(40, 3)), RNG.normal(size=(40, 3))
    fig, axes = quietly(viz.visualize_timeseries_attr, attr, data, method=method, sign=sign,
                        channel_labels=["a", "b", "c"], show_colorbar=True, title="t")
    axs = np.ravel(axes)
    assert len(axs) == (1 if method == "overlay_combined" else 3)
    assert axs[0].get_xlim() == (0, 39)


# ---------------------------------------------------------------- degenerate inputs
def _hot():
    a = np.zeros((8, 8))
    a[3, 5] = 7.0
    return a


def _outlier():
    a = RNG.normal(size=(8, 8)) * 1e-3
    a[0, 0] = 1e12
    return a


DEGENERATE = {
    "zeros": np.zeros((8, 8, 3)), "constant": np.full((8, 8), 0.3),
    "negative_constant": np.full((8, 8), -2.0), "hot_pixel": _hot(), "outlier": _outlier(),
    "tiny": np.full((8, 8), 1e-300), "nan": np.where(_hot() > 0, np.nan, 1.0),
    "float32_huge": np.full((8, 8), 3e38, dtype=np.float32),
    "infinite": np.where(_hot() > 0, np.inf, -np.inf),
}


@pytest.mark.parametrize("case", DEGENERATE)
@pytest.mark.parametrize("method", METHODS)
def test_degenerate_maps_draw_without_warnings(case, method):
    for sign in SIGNS:
        quietly(viz.visualize_image_attr, DEGENERATE[case], IMAGE, method, sign, show_colorbar=True)


@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_timeseries_draw_without_warnings(case):
    attr = DEGENERATE[case].reshape(-1, 1)
    data = np.zeros_like(attr, dtype=np.float64)  # a flat line is degenerate too
    for method in SERIES_METHODS:
        for sign in SIGNS:
            quietly(viz.visualize_timeseries_attr, attr, data, method=method, sign=sign)


def test_degenerate_normalisation_values():
    assert not viz.normalize_attr(np.zeros((4, 4)), "all").any()
    assert np.all(viz.normalize_attr(np.full((4, 4), 0.3), "positive") == 1)
    assert not viz.normalize_attr(np.full((4, 4), 0.3), "negative").any()
    hot = viz.normalize_attr(_hot(), "absolute_value")
    assert hot[3, 5] == 1 and hot.sum() == 1
    out = viz.normalize_attr(_outlier(), "absolute_value")
    assert out[0, 0] == 1 and np.all(np.isfinite(out)) and out.max() <= 1
    # outlier_perc=100 leaves a zero scale: nonzero values saturate instead of failing
    np.testing.assert_array_equal(viz.normalize_attr(np.array([0.0, 2, -3]), "all", 100), [0, 1, -1])


# ----------------------------------------------------------- layouts and image kinds
def _heat(attr, **kwargs):
    fig, ax = viz.visualize_image_attr(attr, use_pyplot=False, sign="all", **kwargs)
    return np.asarray(ax.images[-1].get_array())


def test_tensor_and_array_layouts_agree():
    chw = torch.from_numpy(ATTR.transpose(2, 0, 1).copy())
    reference = _heat(ATTR)
    for attr in (chw, chw[None], ATTR.transpose(2, 0, 1), ATTR.sum(axis=2),
                 torch.from_numpy(ATTR.sum(axis=2))[None, None], chw.float().requires_grad_()):
        np.testing.assert_allclose(_heat(attr), reference, atol=1e-6)


def test_image_kinds_show_the_same_picture():
    rgb8 = (IMAGE * 255).round().astype(np.uint8)
    ref = viz.to_hwc_image(rgb8)
    np.testing.assert_allclose(viz.to_hwc_image(rgb8 / 255.0), ref, atol=1e-9)
    np.testing.assert_allclose(viz.to_hwc_image(rgb8.astype(np.float32)), ref, atol=1e-6)
    np.testing.assert_allclose(viz.to_hwc_image(torch.from_numpy(rgb8).permute(2, 0, 1)[None]), ref)
    grey = IMAGE[..., 0]
    for g in (grey, grey[..., None], torch.from_numpy(grey)[None], (grey * 255).astype(np.uint8)):
        assert viz.to_hwc_image(g).shape == (8, 8)
        for method in METHODS:
            quietly(viz.visualize_image_attr, ATTR, g, method, "positive")


@pytest.mark.parametrize("value", [300.0, -1.0, 0.5, 0])
def test_constant_images_draw_quietly(value):
    for method in METHODS:
        quietly(viz.visualize_image_attr, ATTR, np.full((8, 8, 3), value), method, "positive")


def test_normalised_image_with_its_statistics_shows_the_original():
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(IMAGE.transpose(2, 0, 1)).float()
    z = (x - torch.from_numpy(mean).float()[:, None, None]) / torch.from_numpy(std).float()[:, None, None]
    np.testing.assert_allclose(viz.to_hwc_image(z, mean=mean, std=std), IMAGE, atol=1e-6)
    fig, ax = quietly(viz.visualize_image_attr, ATTR, z[None], "original_image", mean=mean, std=std)
    np.testing.assert_allclose(ax.images[0].get_array(), IMAGE, atol=1e-6)
    # without the statistics it still draws (rescaled into range), without clipping warnings
    quietly(viz.visualize_image_attr, ATTR, z, "original_image")
    assert viz.to_hwc_image(z).min() == 0 and viz.to_hwc_image(z).max() == 1


# ------------------------------------------------------------------------- pixels
def _red_white_green(v):
    """Tiny reference for the sign='all' colormap: red at -1, white at 0, green at +1."""
    v = np.asarray(v)[..., None]
    red, white, green = np.array([1.0, 0, 0]), np.ones(3), np.array([0, 128 / 255, 0])
    return np.where(v < 0, white + (white - red) * v, white + (green - white) * v)


def _panel(attr, image=None, method="heat_map", sign="all", **kwargs):
    fig, ax = full_axes()
    viz.visualize_image_attr(attr, image, method, sign, plt_fig_axis=(fig, ax), use_pyplot=False,
                             **kwargs)
    return block_centres(png(fig), attr.shape[0])


ATTR4 = np.array([[-4.0, -2, 0, 1], [2, 3, 4, -1], [0, 0, 0.5, -0.5], [1, 1, -3, 2]])
IMAGE4 = RNG.random((4, 4, 3))


def test_heat_map_pixels_signed():
    expected = _red_white_green(viz.normalize_attr(ATTR4, "all", 0))
    np.testing.assert_allclose(_panel(ATTR4, outlier_perc=0), expected, atol=0.02)
    # and the extreme cells really are pure red and green
    np.testing.assert_allclose(_panel(ATTR4, outlier_perc=0)[0, 0], [1, 0, 0], atol=0.01)


def test_heat_map_pixels_absolute_value_is_blue():
    norm = np.abs(ATTR4) / 4
    expected = plt.get_cmap("Blues")(norm)[..., :3]
    got = _panel(ATTR4, sign="absolute_value", outlier_perc=0)
    np.testing.assert_allclose(got, expected, atol=0.02)
    assert np.all(got[..., 2] >= got[..., 0]), "blue dominates"


def test_blended_heat_map_pixels():
    norm = np.maximum(ATTR4, 0) / 4
    heat = plt.get_cmap("Greens")(norm)[..., :3]
    grey = IMAGE4.mean(axis=2, keepdims=True)
    grey = (grey - grey.min()) / (grey.max() - grey.min())  # contrast-stretched, as Captum shows it
    got = _panel(ATTR4, IMAGE4, "blended_heat_map", "positive", outlier_perc=0, alpha_overlay=0.3)
    np.testing.assert_allclose(got, 0.3 * heat + 0.7 * grey, atol=0.02)


def test_masked_image_and_alpha_scaling_pixels():
    w = np.maximum(-ATTR4, 0) / 4  # sign="negative" -> magnitudes of the negative part
    got = _panel(ATTR4, IMAGE4, "masked_image", "negative", outlier_perc=0)
    np.testing.assert_allclose(got, IMAGE4 * w[..., None], atol=0.02)
    got = _panel(ATTR4, IMAGE4, "alpha_scaling", "negative", outlier_perc=0)
    np.testing.assert_allclose(got, IMAGE4 * w[..., None] + (1 - w[..., None]), atol=0.02)


def test_original_image_pixels_from_uint8():
    got = _panel(ATTR4, (IMAGE4 * 255).astype(np.uint8), "original_image")
    np.testing.assert_allclose(got, IMAGE4, atol=0.01)


def test_hot_pixel_statistics():
    attr = np.zeros((16, 16))
    attr[5, 9] = 3.0
    cells = _panel(attr, sign="positive")
    coloured = np.argwhere(np.any(cells < 0.95, axis=2))
    assert coloured.tolist() == [[5, 9]]
    assert cells[5, 9, 1] > cells[5, 9, 0], "the hot pixel is green"


def test_white_black_colormap_is_registered():
    cmap = plt.get_cmap("attrkit_white_black")
    np.testing.assert_allclose(cmap(0.0)[:3], [1, 1, 1])
    np.testing.assert_allclose(cmap(0.3)[:3], [0, 0, 0])
    cells = _panel(ATTR4, sign="absolute_value", cmap="attrkit_white_black", outlier_perc=0)
    assert cells[2, 0].min() > 0.98 and cells[0, 0].max() < 0.02  # 0 -> white, 1 -> black


# ---------------------------------------------------------------- composite figures
def test_multiple_panels_and_existing_axes():
    fig, axes = viz.visualize_image_attr_multiple(
        torch.from_numpy(ATTR).permute(2, 0, 1), IMAGE, METHODS, ["absolute_value"] * 5,
        titles=METHODS, use_pyplot=False, show_colorbar=True, outlier_perc=1)
    assert isinstance(axes, list) and [a.get_title() for a in axes] == METHODS
    fig, ax = viz.visualize_image_attr_multiple(ATTR, None, ["heat_map"], ["all"], use_pyplot=False)
    assert ax in fig.axes
    fig, ax = plt.subplots()
    assert viz.visualize_image_attr(ATTR, plt_fig_axis=(fig, ax), use_pyplot=False) == (fig, ax)


def test_use_pyplot_registers_the_figure():
    fig, ax = viz.visualize_image_attr(ATTR, IMAGE, "blended_heat_map")
    assert plt.fignum_exists(fig.number)
    fig, axes = viz.visualize_timeseries_attr(RNG.normal(size=(10, 2)), RNG.normal(size=(10, 2)))
    assert plt.fignum_exists(fig.number)


def test_timeseries_colours_follow_the_normalised_map():
    attr, data = RNG.normal(size=(30, 2)), RNG.normal(size=(30, 2))
    norm = viz.normalize_attr(attr.T, "all")
    fig, axes = viz.visualize_timeseries_attr(attr, data, method="colored_graph", sign="all",
                                              use_pyplot=False)
    for c, ax in enumerate(axes):
        (line,) = [a for a in ax.collections if isinstance(a, LineCollection)]
        np.testing.assert_allclose(line.get_array(), (norm[c, :-1] + norm[c, 1:]) / 2)
        assert ax.get_ylim()[0] <= data[:, c].min() and ax.get_ylim()[1] >= data[:, c].max()
    fig, ax = viz.visualize_timeseries_attr(attr.T, data.T, method="overlay_combined", sign="all",
                                            channels_last=False, use_pyplot=False)
    (spans,) = [a for a in ax.collections if isinstance(a, PolyCollection)]
    summed = viz.normalize_attr(attr.sum(axis=1), "all")
    expected = plt.get_cmap("attrkit_red_white_green")((summed + 1) / 2)
    np.testing.assert_allclose(spans.get_facecolors()[:, :3], expected[:, :3], atol=1e-6)
    # spans do not stretch the y-axis; a 1-D series and x_values work
    assert ax.get_ylim()[0] > data.min() - 1
    x = np.linspace(0, 1, 30) ** 2
    fig, ax = viz.visualize_timeseries_attr(attr[:, 0], data[:, 0], x_values=x, use_pyplot=False)
    assert ax.get_xlim() == (0, 1)


# ------------------------------------------------------------------------------ text
def test_text_words_are_coloured_by_sign():
    words = ["the", "<b>best</b>", "&", "dull", "film", "ever"]
    scores = torch.tensor([0.0, 0.9, 0.05, -0.7, -3.0, 0.4])
    rec = viz.VisualizationDataRecord(scores, torch.tensor(0.87), torch.tensor(1), 1, 1, 2.5,
                                      words, 0.01)
    page = viz.visualize_text([rec, rec], legend=True)
    markup = page.data
    marks = re.findall(r'<mark style="background-color: hsl\((\d+), 75%, (\d+)%\)[^>]*>(.*?)</mark>',
                       markup)
    assert len(marks) == 2 * len(words)
    for (hue, light, shown), word, s in zip(marks, words, scores.tolist()):
        assert shown == html.escape(word)
        if s > 0:
            assert hue == "120" and int(light) < 100
        elif s < 0:
            assert hue == "0" and int(light) < 100
        else:
            assert light == "100"
    assert "<b>1 (0.87)</b>" in markup and "Legend" in markup
    assert "Legend" not in viz.visualize_text([rec], legend=False).data


# -------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: viz.visualize_image_attr(ATTR, IMAGE, method="heatmap"), "method="),
    (lambda: viz.visualize_image_attr(ATTR, IMAGE, sign="pos"), "sign="),
    (lambda: viz.visualize_image_attr(ATTR, IMAGE[:4]), "original_image"),
    (lambda: viz.visualize_image_attr(ATTR, None, "masked_image"), "original_image"),
    (lambda: viz.visualize_image_attr(np.zeros((2, 3, 8, 8)), None), "attr"),
    (lambda: viz.visualize_image_attr(np.zeros(8), None), "attr"),
    (lambda: viz.visualize_image_attr(ATTR, IMAGE, "original_image", mean=[0, 0]), "mean"),
    (lambda: viz.normalize_attr(ATTR, outlier_perc=150), "outlier_perc"),
    (lambda: viz.visualize_image_attr_multiple(ATTR, IMAGE, ["heat_map"], ["all", "all"]), "signs"),
    (lambda: viz.visualize_image_attr_multiple(ATTR, IMAGE, ["heat_map"], ["all"], ["a", "b"]),
     "titles"),
    (lambda: viz.visualize_timeseries_attr(np.zeros((5, 2)), np.zeros((5, 3))), "attr and data"),
    (lambda: viz.visualize_timeseries_attr(np.zeros((5, 2)), np.zeros((5, 2)), method="x"), "method"),
    (lambda: viz.visualize_timeseries_attr(np.zeros((5, 2)), np.zeros((5, 2)), np.arange(4)),
     "x_values"),
    (lambda: viz.visualize_timeseries_attr(np.zeros((5, 2)), np.zeros((5, 2)),
                                           channel_labels=["a"]), "channel_labels"),
    (lambda: viz.visualize_timeseries_attr(np.zeros((5, 2)), np.zeros((5, 2)),
                                           plt_fig_axis=plt.subplots()), "plt_fig_axis"),
    (lambda: viz.visualize_text([viz.VisualizationDataRecord([0.1], 1, 1, 1, 1, 1, ["a", "b"], 0)]),
     "word_attributions"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------ Captum compatibility
@pytest.fixture(scope="module")
def captum_viz():
    return pytest.importorskip("captum.attr._utils.visualization")


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("outlier_perc", [0, 2, 10.5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normalisation_matches_captum(captum_viz, sign, outlier_perc, dtype):
    attr = RNG.normal(size=(12, 10)).astype(dtype)
    expected = captum_viz._normalize_attr(attr, sign, outlier_perc)
    np.testing.assert_allclose(viz.normalize_attr(attr, sign, outlier_perc), expected,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sign", SIGNS)
def test_heat_map_render_matches_captum(captum_viz, sign):
    renders = []
    for fn in (captum_viz.visualize_image_attr, viz.visualize_image_attr):
        fig, ax = full_axes()
        fn(ATTR, IMAGE, "heat_map", sign, plt_fig_axis=(fig, ax), use_pyplot=False)
        renders.append(png(fig))
    np.testing.assert_allclose(renders[0], renders[1], atol=1 / 255)


@pytest.mark.parametrize("name", ["visualize_image_attr", "visualize_image_attr_multiple",
                                  "visualize_timeseries_attr", "visualize_text",
                                  "VisualizationDataRecord"])
def test_signatures_accept_captums_keywords(captum_viz, name):
    theirs = inspect.signature(getattr(captum_viz, name)).parameters
    ours = inspect.signature(getattr(viz, name)).parameters
    assert list(ours)[: len(theirs)] == list(theirs), "same names in the same positional order"
    for p in theirs.values():
        if p.default is not inspect.Parameter.empty:
            assert ours[p.name].default == p.default, p.name
        assert ours[p.name].kind == p.kind, p.name


# ------------------------------------------------------------------------- odds and ends
@pytest.mark.parametrize("part", ["colors", "image", "timeseries", "text"])
def test_docstring_examples_run(part):
    module = getattr(viz, part)
    result = doctest.testmod(module, globs={**vars(module), "np": np, "torch": torch},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_draw():
    attr = torch.randn(1, 3, 8, 8, device="cuda")
    fig, ax = quietly(viz.visualize_image_attr, attr, torch.rand(3, 8, 8, device="cuda"),
                      "blended_heat_map", "all")
    rec = viz.VisualizationDataRecord(torch.tensor([0.5, -0.5], device="cuda"),
                                      torch.tensor(0.5, device="cuda"), 1, 1, 1, 0.1, ["a", "b"], 0)
    assert "hsl(120" in viz.visualize_text([rec]).data
    quietly(viz.visualize_timeseries_attr, attr[0, 0], attr[0, 1])


# ------------------------------------------------------- the package: names and one source of colours
PUBLIC_BEFORE_THE_PACKAGE = [  # every public name the module attrkit/visualization.py defined
    "ImageVisualizationMethod", "TimeseriesVisualizationMethod", "VisualizeSign", "to_hwc_image",
    "normalize_attr", "visualize_image_attr", "visualize_image_attr_multiple", "visualize_timeseries_attr",
    "VisualizationDataRecord", "format_special_tokens", "format_word_importances", "visualize_text"]


def test_the_package_keeps_every_public_name_and_captums_enums():
    assert [n for n in PUBLIC_BEFORE_THE_PACKAGE if not hasattr(viz, n)] == []
    assert set(PUBLIC_BEFORE_THE_PACKAGE) <= set(viz.__all__)
    cviz = pytest.importorskip("captum.attr._utils.visualization")  # captum.attr.visualization
    for name in ("ImageVisualizationMethod", "TimeseriesVisualizationMethod", "VisualizeSign"):
        ours, theirs = getattr(viz, name), getattr(cviz, name)
        assert [(m.name, m.value) for m in ours] == [(m.name, m.value) for m in theirs], name
    ours_only = {"to_hwc_image", "normalize_attr"}  # Captum's normalisation is private (_normalize_attr)
    assert [n for n in PUBLIC_BEFORE_THE_PACKAGE if n not in ours_only and not hasattr(cviz, n)] == []


def test_colours_live_in_one_module():
    """No module but visualization/colors.py defines a colormap, a sign list or its colours."""
    import pathlib

    import attrkit
    root = pathlib.Path(attrkit.__file__).parent
    patterns = re.compile(r"LinearSegmentedColormap|\"Greens\"|\"Blues\"|_SIGNS\b|\"#2a9d4b\"|hsl\(\{")
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "colors.py" and patterns.search(p.read_text())]
    assert offenders == []


def test_explorer_blend_is_the_blended_heat_map():
    from attrkit.insights import _render
    attr = torch.from_numpy(ATTR4)[None, None]
    image = 0.3 + 0.2 * IMAGE4  # dim and flat: both stretch its grey
    rgb = _render.blend(attr, image, "all", alpha=0.4, outlier_perc=0)
    got = _panel(ATTR4, image, "blended_heat_map", "all", outlier_perc=0, alpha_overlay=0.4)
    np.testing.assert_allclose(rgb / 255, got, atol=2 / 255)


# ------------------------------------------------------ visual parity with Captum 0.9 (issue 23, item 13)
@pytest.mark.parametrize("sign", SIGNS)
def test_blended_heat_map_render_matches_captum(captum_viz, sign):
    """Captum shows the photo's grey contrast-stretched (darkest black, brightest white); so do we."""
    dim = (60 + 50 * IMAGE).round().astype(np.uint8)  # a dim, low-contrast photo
    renders = []
    for fn in (captum_viz.visualize_image_attr, viz.visualize_image_attr):
        fig, ax = full_axes()
        fn(ATTR, dim, "blended_heat_map", sign, plt_fig_axis=(fig, ax), alpha_overlay=0.4, use_pyplot=False)
        renders.append(png(fig))
    np.testing.assert_allclose(renders[0], renders[1], atol=1.5 / 255)
    assert renders[1].min() < 0.1, "the darkest pixel of the dim photo is shown near black"


def test_flat_photo_keeps_its_grey_under_the_heat_map():
    grey = viz.colors.grey_underlay(np.full((4, 4, 3), 0.7))
    np.testing.assert_allclose(grey, 0.7)


def _hsl(markup, tag):
    return re.findall(rf'<{tag} style="[^"]*?background-color:\s*(hsl\([^)]*\))', markup)


def test_text_colours_match_captum_and_tensors_that_require_grad_print_quietly(captum_viz):
    # float32 values where the rounding of 50 * v decides the colour (0.58 -> 28.999998 in float32)
    scores = torch.tensor([0.0, 0.58, 0.05, -0.7, -3.0, 0.4, 1e-3, -0.0125, 0.999, 0.22, -0.57])
    words = [f"w{i}" for i in range(len(scores))]
    leaf = torch.tensor(2.0, requires_grad=True)
    prob, score = torch.sigmoid(leaf), (scores * leaf).sum()  # as a tutorial's record holds them
    ours_rec = viz.VisualizationDataRecord(scores.clone().requires_grad_(), prob, 1, 1, 1, score, words, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = viz.visualize_text([ours_rec]).data
    theirs_rec = captum_viz.VisualizationDataRecord(scores, 0.88, 1, 1, 1, 2.5, words, 0.0)
    theirs = captum_viz.visualize_text([theirs_rec]).data
    assert _hsl(ours, "mark") == _hsl(theirs, "mark") and len(_hsl(ours, "mark")) == len(words)
    assert _hsl(ours, "span") == _hsl(theirs, "span")  # the legend
    assert f"<b>1 ({prob.item():.2f})</b>" in ours and f"<b>{score.item():.2f}</b>" in ours
    cells = viz.format_word_importances(words, scores), captum_viz.format_word_importances(words, scores)
    assert _hsl(cells[0], "mark") == _hsl(cells[1], "mark")


def _result(token_attr, n_in=None):
    from attrkit import LLMAttributionResult
    token_attr = torch.as_tensor(token_attr, dtype=torch.float32)
    n_out, n_in = token_attr.shape
    return LLMAttributionResult(input_tokens=[f"in{i}" for i in range(n_in)],
                                output_tokens=[f"out{i}" for i in range(n_out)],
                                seq_attr=token_attr.sum(0), token_attr=token_attr)


def test_plot_token_attr_writes_small_values_with_significant_digits():
    fig, ax = _result([[0.5, -0.0012, 3e-5, 0.0], [12.5, 0.25, -0.004, 1.0]]).plot_token_attr()
    assert [t.get_text() for t in ax.texts] == ["0.5", "-0.0012", "3e-05", "0", "12", "0.25", "-0.004", "1"]


def test_plot_token_attr_stays_within_a_screen_for_a_long_prompt():
    small = _result(torch.randn(3, 4)).plot_token_attr()[0].get_size_inches()
    medium = _result(torch.randn(3, 12)).plot_token_attr()[0].get_size_inches()
    assert medium[0] > small[0], "short prompts still get room per token"
    fig, ax = _result(torch.randn(60, 700)).plot_token_attr()  # was 840 x 31.5 inches
    width, height = fig.get_size_inches()
    assert width <= 6.8 and height <= 9  # a book's column (~680 px at 100 dpi): the page never shrinks it
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # as Jupyter shows it
    buf.seek(0)
    pixels = plt.imread(buf)
    assert pixels.shape[1] <= 1.2 * 6.8 * fig.dpi and pixels.shape[0] <= 1.2 * 9 * fig.dpi
    for ticks, inches, n, room in ((ax.get_xticks(), ax.get_window_extent().width / fig.dpi, 700, 0.17),
                                   (ax.get_yticks(), ax.get_window_extent().height / fig.dpi, 60, 0.17)):
        assert 5 < len(ticks) < n and (ticks[1] - ticks[0]) * inches / n >= room, "every k-th label, apart"
    assert len(ax.texts) == 0, "cells too small for numbers get none"
    with pytest.raises(ValueError, match="values"):
        viz.text.token_heatmap(np.zeros((1, 0)), ["a"], [])


def test_channel_broadcast_masks_give_no_searchsorted_warning(monkeypatch):
    """A mask shared by the channels is an expanded (non-contiguous) view; torch.searchsorted warned on it
    ("input value tensor is non-contiguous"), once per process, so the spy makes the test fail every time."""
    import attrkit
    real = torch.searchsorted

    def contiguous_only(sorted_sequence, values, *args, **kwargs):
        assert values.is_contiguous(), "torch.searchsorted got a non-contiguous tensor (it warns and copies)"
        return real(sorted_sequence, values, *args, **kwargs)

    monkeypatch.setattr(torch, "searchsorted", contiguous_only)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.Linear(32, 2)).eval()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.arange(36).reshape(1, 1, 6, 6) // 9  # four features, each over all three channels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = attrkit.FeatureAblation(model).attribute(x, target=0, feature_mask=mask)
    expected = attrkit.FeatureAblation(model).attribute(x, target=0, feature_mask=mask.expand(1, 3, 6, 6).clone())
    torch.testing.assert_close(got, expected)


# ------------------------------------------------------------- Captum drop-in: the enums and format_word_importances
def test_visualization_enums_match_captum():
    from captum.attr import visualization as cviz
    for name in ("ImageVisualizationMethod", "VisualizeSign", "TimeseriesVisualizationMethod"):
        ours, theirs = getattr(viz, name), getattr(cviz, name)
        assert [(m.name, m.value) for m in ours] == [(m.name, m.value) for m in theirs]


def test_visualization_functions_take_enum_members_and_names():
    attr, img = np.random.default_rng(0).random((4, 4, 3)), np.random.default_rng(1).random((4, 4, 3))
    for method in viz.ImageVisualizationMethod:
        fig, ax = viz.visualize_image_attr(attr, img, method, viz.VisualizeSign.absolute_value, use_pyplot=False)
        assert fig is not None
    close(torch.as_tensor(viz.normalize_attr(attr, viz.VisualizeSign.all, 2)),
           torch.as_tensor(viz.normalize_attr(attr, viz.VisualizeSign["all"].name, 2)))
    series = np.random.default_rng(2).random((2, 10))
    for method in viz.TimeseriesVisualizationMethod:
        viz.visualize_timeseries_attr(series, series, method=method, sign=viz.VisualizeSign.positive,
                                      use_pyplot=False)
    with pytest.raises(ValueError, match="method"):
        viz.visualize_image_attr(attr, img, "heatmap", use_pyplot=False)


def test_format_word_importances_like_captum():
    from captum.attr import visualization as cviz
    words, scores = ["<s>", "a", "good", "film"], torch.tensor([0.0, 0.2, 0.9, -0.4])
    ours, theirs = viz.format_word_importances(words, scores), cviz.format_word_importances(words, scores)
    assert ours.startswith("<td>") and ours.endswith("</td>")
    assert ours.count("<mark") == theirs.count("<mark") == 4
    assert "#s" in ours and "#s" in theirs  # special tokens shown the same way
    assert "hsl(120" in ours and "hsl(0" in ours  # green positive, red negative
    assert viz.format_word_importances([], []) == cviz.format_word_importances([], []) == "<td></td>"
    assert viz.format_word_importances(["x"], None) == "<td></td>"
    assert "&lt;b" in viz.format_word_importances(["<b"], [0.1])  # escaped (Captum does not escape)
    with pytest.raises(ValueError, match="importances"):
        viz.format_word_importances(["a", "b"], [0.1])


# ------------------------------------------------------------- readable in a book's column (issue 24)
def test_token_labels_lose_the_tokenizers_word_markers():
    from attrkit import LLMAttributionResult
    result = LLMAttributionResult(input_tokens=["<s>", "ĠThe", "▁cat", "Ċ", "Ġ"], output_tokens=["Ġsat"],
                                  seq_attr=torch.ones(5), token_attr=torch.ones(1, 5))
    fig, ax = result.plot_token_attr()
    shown = [t.get_text() for t in ax.get_xticklabels()] + [t.get_text() for t in ax.get_yticklabels()]
    assert shown == ["<s>", "The", "cat", "\\n", "␣", "sat"]
    fig, ax = result.plot_seq_attr()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["<s>", "The", "cat", "\\n", "␣"]
    assert fig.get_figwidth() <= 6.8
    plt.close("all")


@pytest.mark.parametrize("sign, meaning", [("absolute_value", "|attribution|"), ("all", "attribution")])
def test_heat_map_colour_bars_say_what_they_show(sign, meaning):
    fig, ax = viz.visualize_image_attr(ATTR, IMAGE, "blended_heat_map", sign, show_colorbar=True, use_pyplot=False)
    bar = [a for a in fig.axes if a is not ax][0]
    assert bar.get_xlabel().startswith(meaning) and "scaled" in bar.get_xlabel()


def test_long_titles_wrap_over_their_panel():
    title = "deletion AUC 0.405 (random 0.347) · insertion AUC 0.385 (random 0.501)"
    fig, axes = viz.visualize_image_attr_multiple(ATTR, IMAGE, ["heat_map", "blended_heat_map"], ["all", "all"],
                                                  titles=["IG: penguin", title], fig_size=(6.8, 4), use_pyplot=False)
    assert axes[0].get_title() == "IG: penguin"
    assert axes[1].get_title().replace("\n", " ") == title and axes[1].get_title().count("\n") >= 1


def test_visualize_text_wraps_words_instead_of_a_wide_table():
    rec = viz.VisualizationDataRecord(torch.linspace(-1, 1, 40), 0.9, "pos", "pos", "pos", 0.3,
                                      [f"word{i}" for i in range(40)], 0.0)
    markup = viz.visualize_text([rec]).data
    assert "<table" not in markup and "overflow-wrap" in markup
    assert markup.count("<mark") == 40 and "True Label: <b>pos</b>" in markup
