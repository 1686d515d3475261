"""LLM attribution (attrkit.llm): against Captum on a tiny Llama, axioms on a plain nn.Embedding model,
the interpretable inputs, the result and its plots, and bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

import attrkit as A
from attrkit.llm.testing import TinyCausalLM, WordTokenizer

WORDS = "the cat sat on a mat dog ran in park Paris is capital of France um".split()


# --------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def hf():
    """A randomly initialised 2-layer Llama (hidden 32) and a word-level fast tokenizer, built offline."""
    try:
        import tokenizers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    except ImportError as e:  # the `llm` extra is not installed
        pytest.skip(f"transformers/tokenizers unavailable: {e}")

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", *WORDS])}
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tk.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tk.decoder = tokenizers.decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return LlamaForCausalLM(config).eval(), tok


@pytest.fixture(scope="module")
def plain():
    """A plain nn.Embedding causal LM (no transformers) whose "um" token has a zero embedding."""
    tok = WordTokenizer(WORDS)
    return TinyCausalLM(len(tok), dead_ids=[tok.convert_tokens_to_ids("um")], max_position_embeddings=24), tok


def captum():
    return pytest.importorskip("captum.attr")


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- Captum oracle (tiny Llama)
@pytest.mark.parametrize("forward_in_tokens", [True, False])
@pytest.mark.parametrize("attr_target", ["log_prob", "prob"])
def test_feature_ablation_template_matches_captum(hf, forward_in_tokens, attr_target):
    model, tok = hf
    C = captum()
    kw = dict(target="the mat", use_cached_outputs=False, forward_in_tokens=forward_in_tokens)
    theirs = C.LLMAttribution(C.FeatureAblation(model), tok, attr_target).attribute(
        C.TextTemplateInput("{} {} sat on {}", values=["the", "cat", "a"]), **kw)
    ours = A.LLMAttribution(A.FeatureAblation(model), tok, attr_target).attribute(
        A.TextTemplateInput("{} {} sat on {}", values=["the", "cat", "a"]), **kw)
    _close(ours.seq_attr, theirs.seq_attr)
    _close(ours.token_attr, theirs.token_attr)
    assert ours.input_tokens == theirs.input_tokens and ours.output_tokens == theirs.output_tokens


def test_feature_ablation_grouped_dict_template_matches_captum(hf):
    model, tok = hf
    C = captum()
    args = dict(template="{a} {b} sat on {c} {d}", values={"a": "the", "b": "cat", "c": "a", "d": "mat"},
                baselines={"a": "a", "b": "dog", "c": "the", "d": "park"}, mask={"a": 7, "b": 7, "c": 2, "d": 5})
    kw = dict(target="in Paris", use_cached_outputs=False)
    theirs = C.LLMAttribution(C.FeatureAblation(model), tok).attribute(C.TextTemplateInput(**args), **kw)
    ours = A.LLMAttribution(A.FeatureAblation(model), tok).attribute(A.TextTemplateInput(**args), **kw)
    _close(ours.seq_attr, theirs.seq_attr)
    _close(ours.token_attr, theirs.token_attr)
    assert ours.seq_attr[0] == ours.seq_attr[1]  # grouped values share their group's attribution


def test_product_baselines_and_trials_match_captum(hf):
    """Random baselines drawn per forward pass (same seed, same order of passes) and averaged over trials."""
    import random
    model, tok = hf
    C = captum()
    vals = {"who": "the cat", "where": "a mat"}
    base = {"who": ["a dog", "the dog", "Paris"], "where": ["the park", "France", "a park"]}
    kw = dict(target="in Paris", num_trials=3, use_cached_outputs=False)
    random.seed(0)
    theirs = C.LLMAttribution(C.FeatureAblation(model), tok).attribute(
        C.TextTemplateInput("{who} sat on {where}", vals, baselines=C.ProductBaselines(base)), **kw)
    random.seed(0)
    ours = A.LLMAttribution(A.FeatureAblation(model), tok).attribute(
        A.TextTemplateInput("{who} sat on {where}", vals, baselines=A.ProductBaselines(base)), **kw)
    _close(ours.token_attr, theirs.token_attr)


def test_feature_ablation_tokens_matches_captum(hf):
    model, tok = hf
    C = captum()
    kw = dict(target=torch.tensor(tok.encode("is capital", add_special_tokens=False)), use_cached_outputs=False)
    theirs = C.LLMAttribution(C.FeatureAblation(model), tok).attribute(
        C.TextTokenInput("Paris of France", tok, baselines="<pad>", skip_tokens=["<s>"]), **kw)
    ours = A.LLMAttribution(A.FeatureAblation(model), tok).attribute(
        A.TextTokenInput("Paris of France", tok, baselines="<pad>", skip_tokens=["<s>"]), **kw)
    _close(ours.token_attr, theirs.token_attr)
    assert ours.input_tokens == theirs.input_tokens == ["Paris", "of", "France"]


def test_shapley_values_matches_captum(hf):  # exact Shapley values are deterministic too
    model, tok = hf
    C = captum()
    kw = dict(target="the mat", use_cached_outputs=False, forward_in_tokens=False)
    theirs = C.LLMAttribution(C.ShapleyValues(model), tok).attribute(
        C.TextTemplateInput("{} {} sat on {}", values=["the", "cat", "a"]), **kw)
    ours = A.LLMAttribution(A.ShapleyValues(model), tok).attribute(
        A.TextTemplateInput("{} {} sat on {}", values=["the", "cat", "a"]), **kw)
    _close(ours.token_attr, theirs.token_attr)


@pytest.mark.parametrize("method", ["LayerIntegratedGradients", "LayerGradientXActivation"])
def test_gradient_attribution_matches_captum(hf, method):
    model, tok = hf
    C = captum()
    kw = dict(n_steps=20) if method == "LayerIntegratedGradients" else {}
    theirs = C.LLMGradientAttribution(getattr(C, method)(model, model.model.embed_tokens), tok).attribute(
        C.TextTokenInput("the cat sat on", tok, baselines="<pad>", skip_tokens=["<s>"]), target="a mat", **kw)
    ours = A.LLMGradientAttribution.for_model(model, tok, getattr(A, method)).attribute(
        A.TextTokenInput("the cat sat on", tok, baselines="<pad>", skip_tokens=["<s>"]), target="a mat", **kw)
    _close(ours.token_attr, theirs.token_attr)
    _close(ours.seq_attr, theirs.seq_attr)
    assert ours.output_tokens == theirs.output_tokens == ["a", "mat"]


def test_generated_target_matches_captum(hf):
    model, tok = hf
    C = captum()
    gen = {"max_new_tokens": 3, "do_sample": False}
    theirs = C.LLMAttribution(C.FeatureAblation(model), tok).attribute(
        C.TextTemplateInput("{} {} sat", values=["the", "cat"]), gen_args=gen, use_cached_outputs=False)
    ours = A.LLMAttribution(A.FeatureAblation(model), tok).attribute(
        A.TextTemplateInput("{} {} sat", values=["the", "cat"]), gen_args=dict(gen), use_cached_outputs=False)
    assert ours.output_tokens == theirs.output_tokens and 1 <= len(ours.output_tokens) <= 3
    _close(ours.token_attr, theirs.token_attr)


def test_cached_scoring_equals_uncached(hf):
    """Departure, pinned: our key/value-cache scoring equals the exact uncached numbers (Captum 0.9's cached
    path differs from its own uncached one from the second target token on, under transformers 5)."""
    model, tok = hf
    llm = A.LLMAttribution(A.FeatureAblation(model), tok)
    inp = A.TextTemplateInput("{} {} sat on {}", values=["the", "cat", "a"])
    cached = llm.attribute(inp, target="the mat dog", use_cached_outputs=True)
    exact = llm.attribute(inp, target="the mat dog", use_cached_outputs=False)
    one_pass = llm.attribute(inp, target="the mat dog", forward_in_tokens=False)
    _close(cached.token_attr, exact.token_attr, 1e-4)
    _close(one_pass.token_attr, exact.token_attr, 1e-4)


def test_output_probs_are_the_unperturbed_probabilities(hf):
    model, tok = hf
    res = A.LLMAttribution(A.FeatureAblation(model), tok).attribute(
        A.TextTemplateInput("{} {}", values=["the", "cat"]), target="sat on", forward_in_tokens=False)
    ids = torch.tensor([tok.encode("the cat sat on")])
    logp = torch.log_softmax(model(ids).logits[0, 2:4], -1)
    _close(res.output_probs, logp.gather(1, ids[0, 3:5, None]).squeeze(1).exp().detach())


def test_remote_provider_wrapping_the_local_model_agrees(hf):
    model, tok = hf

    class Local:
        def generate(self, prompt, **gen_args):
            out = model.generate(**tok(prompt, return_tensors="pt"), **gen_args)
            return tok.decode(out[0, len(tok.encode(prompt)):])

        def get_logprobs(self, input_prompt, target_str, tokenizer=None):
            p, t = tok.encode(input_prompt), tok.encode(target_str, add_special_tokens=False)
            with torch.no_grad():
                logits = model(torch.tensor([p + t])).logits[0, len(p) - 1:-1]
            return torch.log_softmax(logits, -1).gather(1, torch.tensor(t)[:, None]).squeeze(1).tolist()

    inp = A.TextTemplateInput("{} {} sat on {}", values=["the", "cat", "a"])
    remote = A.RemoteLLMAttribution(A.FeatureAblation(lambda *a: 0), tok, Local()).attribute(inp, target="the mat")
    local = A.LLMAttribution(A.FeatureAblation(model), tok).attribute(inp, target="the mat", forward_in_tokens=False)
    _close(remote.token_attr, local.token_attr)
    generated = A.RemoteLLMAttribution(A.FeatureAblation(lambda *a: 0), tok, Local()).attribute(
        inp, gen_args={"max_new_tokens": 2, "do_sample": False, "pad_token_id": 3})
    assert len(generated.output_tokens) == 2


# --------------------------------------------------------------------------- axioms (plain model)
def test_ignored_segment_gets_zero(plain):
    model, tok = plain
    for method in (A.FeatureAblation(model), A.ShapleyValues(model)):
        res = A.LLMAttribution(method, tok).attribute(
            A.TextTemplateInput("{} {} {} on", values=["the", "um", "cat"]), target="a mat")
        assert res.seq_attr[1].abs().item() < 1e-6 and res.token_attr[:, 1].abs().max().item() < 1e-6
        assert res.seq_attr[0].abs().item() > 1e-3


def test_shapley_sampling_is_efficient(plain):
    model, tok = plain
    torch.manual_seed(0)
    llm = A.LLMAttribution(A.ShapleyValueSampling(model), tok)
    inp = A.TextTemplateInput("{} {} sat {}", values=["the", "cat", "on"])
    res = llm.attribute(inp, target="a mat", n_samples=3)
    full = llm._forward_func(None, inp, torch.tensor(tok.encode("a mat", add_special_tokens=False)))
    empty = llm._forward_func(torch.zeros(1, 3), inp, torch.tensor(tok.encode("a mat", add_special_tokens=False)))
    _close(res.seq_attr.sum(), full[0] - empty[0], 1e-4)
    _close(res.token_attr.sum(1), full[1:] - empty[1:], 1e-4)
    _close(res.seq_attr, res.token_attr.sum(0), 1e-4)  # log-probs add up over the answer


def test_layer_ig_completeness(plain):
    model, tok = plain
    inp = A.TextTokenInput("the cat sat on", tok, baselines="<pad>", skip_tokens=["<s>"])
    res = A.LLMGradientAttribution.for_model(model, tok).attribute(inp, target="a mat", n_steps=40,
                                                                   return_convergence_delta=True)
    assert res.convergence_delta.abs().max() < 1e-4
    target = torch.tensor(tok.encode("a mat", add_special_tokens=False))
    llm = A.LLMAttribution(A.FeatureAblation(model), tok)
    full = llm._forward_func(None, inp, target)[1:]
    none = llm._forward_func(torch.zeros(1, 4, dtype=torch.long), inp, target)[1:]
    _close(res.token_attr.sum(1), full - none, 1e-4)


@pytest.mark.parametrize("method", ["Lime", "KernelShap", "ShapleyValueSampling"])
def test_sampling_methods_run_and_average_trials(plain, method):
    model, tok = plain
    torch.manual_seed(0)
    res = A.LLMAttribution(getattr(A, method)(model), tok, "prob").attribute(
        A.TextTemplateInput("{} {} sat", values=["the", "cat"]), target="on a", num_trials=2, n_samples=8)
    assert res.seq_attr.shape == (2,) and torch.isfinite(res.seq_attr).all()
    assert (res.token_attr is None) == (method != "ShapleyValueSampling")
    assert res.output_probs.shape == (2,)


def test_plain_model_greedy_generation_and_attention_mask(plain):
    model, tok = plain
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a, k: seen.append("attention_mask" in k), with_kwargs=True)
    try:
        res = A.LLMAttribution(A.FeatureAblation(model), tok).attribute(
            A.TextTokenInput("the cat", tok), gen_args={"max_new_tokens": 3})
    finally:
        handle.remove()
    ids = torch.tensor([tok.encode("the cat")])
    expected = []
    for _ in range(3):
        nxt = int(model(ids)[0, -1].argmax())
        expected.append(tok.decode([nxt]))
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    assert res.output_tokens == expected and all(seen)


def test_token_input_batches_for_gradients(plain):
    _, tok = plain
    inp = A.TextTokenInput("the cat sat", tok, baselines=3, skip_tokens=[1])
    rows = inp.to_model_input(torch.tensor([[1, 0, 1], [0, 0, 0]]))
    assert rows.tolist() == [[1, 4, 3, 6], [1, 3, 3, 3]]


# --------------------------------------------------------------------------- inputs, result, plots
def test_image_mask_input_and_heatmap(plain):
    image = Image.new("RGB", (4, 2), (200, 100, 50))
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    def processor(im):
        pixels = torch.tensor(np.asarray(im)).reshape(1, -1, 3).float()
        return {"input_ids": torch.tensor([[1, 4]]), "pixel_values": pixels}

    inp = A.ImageMaskInput(image, mask=mask, baseline=(0, 0, 0), processor_fn=processor)

    class Seeing(torch.nn.Module):  # next-token logits grow with the red of the right half
        def forward(self, input_ids, pixel_values, attention_mask=None):
            red = pixel_values[0, [2, 3, 6, 7], 0].mean() / 255
            logits = torch.zeros(1, input_ids.shape[1], 8)
            logits[..., 5] = 3 * red
            return logits

    res = A.LLMAttribution(A.FeatureAblation(Seeing()), WordTokenizer(WORDS)).attribute(
        inp, target=torch.tensor([5]), forward_in_tokens=False)
    assert res.seq_attr[0].abs() < 1e-6 < res.seq_attr[1]
    pixels = inp.format_pixel_attr(res.seq_attr.unsqueeze(0))
    assert pixels.shape == (1, 2, 4) and torch.equal(pixels[0, :, 2:], res.seq_attr[1].expand(2, 2))
    fig, ax = res.plot_image_heatmap()
    fig, ax = res.plot_image_heatmap(target_token_pos=0, border_width=0, show_legends=False)
    fig, ax = inp.plot_mask_overlay(border_width=2)
    overlap = A.ImageMaskInput(image, mask_list=[mask == 0, torch.ones(2, 4, dtype=torch.bool)])
    assert overlap.format_pixel_attr(torch.tensor([[1.0, 2.0]]))[0, 0].tolist() == [3.0, 3.0, 2.0, 2.0]


def test_result_plots_and_dict():
    res = A.LLMAttributionResult(input_tokens=["a", "b"], output_tokens=["x", "y"], seq_attr=[1.0, -1.0],
                                 token_attr=[[0.5, -0.5], [0.5, -0.5]])
    assert res.seq_attr_dict == {"a": 1.0, "b": -1.0}
    for plot in (res.plot_seq_attr, res.plot_token_attr):
        fig, ax = plot()
        assert fig.axes
    with pytest.raises(ValueError, match="token_attr"):
        A.LLMAttributionResult(input_tokens=["a"], output_tokens=["x"], seq_attr=[1.0]).plot_token_attr()
    with pytest.raises(ValueError, match="ImageMaskInput"):
        res.plot_image_heatmap()


@pytest.mark.parametrize("tokens,words", [
    (["<s>", "▁Par", "is", "▁is", "▁big", "."], ["<s>", "Paris", "is", "big."]),
    (["Hello", "Ġwor", "ld", "!"], ["Hello", "world!"]),
    (["[CLS]", "play", "##ing", "ball", "[SEP]"], ["[CLS]", "playing", "ball", "[SEP]"]),
    (["the", "cat"], ["the", "cat"]),
])
def test_merge_subword_tokens(tokens, words):
    merged, attr = A.merge_subword_tokens(tokens, torch.ones(2, len(tokens)))
    assert merged == words and attr.sum().item() == 2 * len(tokens) and attr.shape == (2, len(words))


def test_result_merge_subwords():
    res = A.LLMAttributionResult(input_tokens=["▁Par", "is", "▁big"], output_tokens=["x"], seq_attr=[1.0, 2.0, 3.0],
                                 token_attr=[[1.0, 2.0, 3.0]]).merge_subwords()
    assert res.input_tokens == ["Paris", "big"] and res.seq_attr.tolist() == [3.0, 3.0]
    assert res.token_attr.tolist() == [[3.0, 3.0]]


def test_template_callable_and_product_baselines():
    import random
    random.seed(0)
    inp = A.TextTemplateInput(lambda a, b: f"{a}+{b}", ["x", "y"], baselines=A.ProductBaselines([["p"], ["q", "r"]]))
    assert inp.to_model_input() == "x+y"
    assert inp.to_model_input(torch.tensor([[1.0, 0.0]])) in ("x+q", "x+r")


# --------------------------------------------------------------------------- bad input
def test_prompt_longer_than_context(plain):
    model, tok = plain
    long = " ".join(["cat"] * 40)
    with pytest.raises(ValueError, match="inp.*context of 24"):
        A.LLMAttribution(A.FeatureAblation(model), tok).attribute(A.TextTemplateInput("{}", [long]), target="a")


def test_prompt_longer_than_a_transformers_context(hf):
    long = " ".join(["cat"] * 40)
    hmodel, htok = hf
    with pytest.raises(ValueError, match="inp.*context of 32"):
        A.LLMGradientAttribution.for_model(hmodel, htok).attribute(A.TextTokenInput(long, htok), target="a")


@pytest.mark.parametrize("target", ["", "   "])
def test_target_that_tokenizes_to_nothing(plain, target):
    model, tok = plain
    with pytest.raises(ValueError, match="target"):
        A.LLMAttribution(A.FeatureAblation(model), tok).attribute(A.TextTemplateInput("{}", ["cat"]), target=target)


def test_baseline_from_a_tokenizer_without_pad_token():
    tok = WordTokenizer(WORDS, pad=False)
    with pytest.raises(ValueError, match="baselines.*pad token"):
        A.TextTokenInput("the cat", tok, baselines=tok.pad_token)


@pytest.mark.parametrize("kwargs,match", [
    (dict(template="{} and {}", values=["a"]), "values.*2 positional"),
    (dict(template="{x} and {y}", values={"x": "a"}), "values.*keys"),
    (dict(template="{x}", values=["a"]), "values"),
    (dict(template="{} {}", values=["a", "b"], baselines=["c"]), "baselines"),
    (dict(template="{} {}", values=["a", "b"], mask=[0]), "mask"),
    (dict(template="{x}", values={"x": "a"}, baselines=["b"]), "baselines"),
    (dict(template=3, values=["a"]), "template"),
    (dict(template="{}", values="a"), "values"),
])
def test_template_values_must_match_fields(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        A.TextTemplateInput(**kwargs)


def test_bad_arguments_are_named(plain):
    model, tok = plain
    inp = A.TextTemplateInput("{} sat", ["cat"])
    with pytest.raises(TypeError, match="attr_method"):
        A.LLMAttribution(A.IntegratedGradients(model), tok)
    with pytest.raises(TypeError, match="attr_method"):
        A.LLMGradientAttribution(A.FeatureAblation(model), tok)
    with pytest.raises(ValueError, match="attr_target"):
        A.LLMAttribution(A.FeatureAblation(model), tok, attr_target="logit")
    llm = A.LLMAttribution(A.FeatureAblation(model), tok)
    with pytest.raises(ValueError, match="gen_args"):
        llm.attribute(inp, target="a", gen_args={"max_new_tokens": 2})
    with pytest.raises(ValueError, match="num_trials"):
        llm.attribute(inp, target="a", num_trials=0)
    with pytest.raises(TypeError, match="target"):
        llm.attribute(inp, target=torch.tensor([0.5]))
    with pytest.raises(TypeError, match="inp"):
        llm.attribute("the cat", target="a")
    with pytest.raises(TypeError, match="inp"):
        A.LLMGradientAttribution.for_model(model, tok).attribute(inp, target="a")
    with pytest.raises(ValueError, match="baselines"):
        A.TextTokenInput("the cat", WordTokenizer(WORDS, pad=False), baselines="<pad>").baselines  # noqa: B018
    with pytest.raises(TypeError, match="provider"):
        A.RemoteLLMAttribution(A.FeatureAblation(model), tok, provider=object())
    with pytest.raises(ValueError, match="mask"):
        A.ImageMaskInput(Image.new("RGB", (3, 2)), mask=torch.zeros(3, 2))
    with pytest.raises(NotImplementedError):
        llm.attribute_future()


def test_layer_gradient_shap_and_embedding_lookup(plain):
    model, tok = plain
    from attrkit.llm import find_embedding_layer
    assert find_embedding_layer(model) is model.embedding
    torch.manual_seed(0)
    inp = A.TextTokenInput("the cat sat", tok, baselines="<pad>", skip_tokens=["<s>"])
    res = A.LLMGradientAttribution.for_model(model, tok, A.LayerGradientShap).attribute(
        inp, target="on a", baselines=torch.zeros(1, 3, dtype=torch.long), n_samples=4)
    assert res.token_attr.shape == (2, 3) and torch.isfinite(res.token_attr).all()


def test_pretty_tokens_fall_back_to_decoding_each_id():
    from attrkit.llm import pretty_tokens

    class NoOffsets(WordTokenizer):
        def __call__(self, *args, **kwargs):
            raise NotImplementedError

    tok = NoOffsets(["hello", "world"])
    assert pretty_tokens(torch.tensor([4, 5]), tok) == ["hello", "world"]


def test_interpretable_input_is_abstract():
    with pytest.raises(TypeError):
        A.InterpretableInput()


@pytest.mark.parametrize("forward_in_tokens,cached", [(True, False), (False, False), (True, True)])
def test_a_given_attention_mask_is_passed_through(plain, forward_in_tokens, cached):
    """A processor's mask (0 = padding) reaches the model, extended by ones over the answer."""
    model, tok = plain

    class Padded(A.InterpretableInput):
        values, n_itp_features = ["prompt"], 1

        def to_tensor(self):
            return torch.ones(1, 1)

        def to_model_input(self, perturbed_tensor=None):
            return {"input_ids": torch.tensor([[1, 4, 5, 6]]), "attention_mask": torch.tensor([[1, 1, 0, 1]])}

    llm = A.LLMAttribution(A.FeatureAblation(model), tok)
    target = torch.tensor(tok.encode("on a", add_special_tokens=False))
    padded = llm._forward_func(None, Padded(), target, cached, None, forward_in_tokens)
    um = tok.convert_tokens_to_ids("um")  # a token with a zero embedding: the same as masking it out here
    dead = llm._forward_func(None, A.TextTokenInput("the um sat", tok), target, cached, None, forward_in_tokens)
    _close(padded, dead)
    assert um in A.TextTokenInput("the um sat", tok).inp_tensor[0].tolist()


# --------------------------------------------------------------------------- one scoring function, per-call state
def test_interleaved_attributions_equal_separate_calls(plain):
    """Two attribute() calls on one object, the second started inside the first, give what separate calls give."""
    model, tok = plain
    llm = A.LLMAttribution(A.FeatureAblation(model), tok)
    first, second = A.TextTemplateInput("{} {} sat", ["the", "cat"]), A.TextTemplateInput("{} {} ran in", ["a", "dog"])
    alone_1, alone_2 = llm.attribute(first, target="on a"), llm.attribute(second, target="park")
    inner = []

    def start_the_second(prompt, answer, probs):
        if not inner:
            inner.append(llm.attribute(second, target="park"))

    outer = llm.attribute(first, target="on a", _inspect_forward=start_the_second)
    for a, b in ((outer, alone_1), (inner[0], alone_2)):
        _close(a.output_probs, b.output_probs)
        _close(a.token_attr, b.token_attr)


def test_named_scores_and_a_user_callable(plain):
    model, tok = plain
    from attrkit.llm import SCORES
    inp, kw = A.TextTemplateInput("{} {} sat", ["the", "cat"]), dict(target="on a")
    log_prob = A.LLMAttribution(A.FeatureAblation(model), tok).attribute(inp, **kw)
    surprisal = A.LLMAttribution(A.FeatureAblation(model), tok, attr_target=lambda lp: -lp).attribute(inp, **kw)
    _close(surprisal.token_attr, -log_prob.token_attr)
    _close(surprisal.output_probs, log_prob.output_probs)  # output_probs stay the answer's probabilities
    SCORES["surprisal"] = lambda lp: -lp
    try:
        named = A.LLMAttribution(A.FeatureAblation(model), tok, attr_target="surprisal").attribute(inp, **kw)
    finally:
        del SCORES["surprisal"]
    _close(named.token_attr, surprisal.token_attr)
    with pytest.raises(ValueError, match="attr_target.*log_prob.*prob"):
        A.LLMAttribution(A.FeatureAblation(model), tok, attr_target="surprisal")
    with pytest.raises(TypeError, match="attr_target"):
        A.LLMAttribution(A.FeatureAblation(model), tok, attr_target=3)
    with pytest.raises(ValueError, match="attr_target"):
        A.LLMAttribution(A.FeatureAblation(model), tok, attr_target=lambda lp: lp.sum()).attribute(inp, **kw)


def test_llm_package_structure():
    """llm/ imports the submodules it needs (not the package root), and stays small."""
    import ast
    import pathlib
    root = pathlib.Path(A.__file__).parent / "llm"
    for path in sorted(root.glob("*.py")):
        source = path.read_text()
        assert len(source.splitlines()) <= 450, path.name
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.level == 2 and node.module is None), f"{path.name} imports from the package root"
                assert node.module != "attrkit", path.name
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = node.body[0] if ast.get_docstring(node) else None  # code lines: the docstring not counted
                doc_lines = doc.end_lineno - doc.lineno + 1 if doc else 0
                assert node.end_lineno - node.lineno + 1 - doc_lines <= 60, f"{path.name}:{node.name}"


# --------------------------------------------------------------------------- issue 23: targets, cache, GradientShap
def test_a_batch_of_targets_is_refused(plain):
    model, tok = plain
    with pytest.raises(ValueError, match="target.*1-D"):
        A.LLMAttribution(A.FeatureAblation(model), tok).attribute(
            A.TextTemplateInput("{} sat", ["cat"]), target=torch.tensor([[4, 5], [6, 7]]))
    with pytest.raises(ValueError, match="target.*1-D"):
        A.LLMGradientAttribution.for_model(model, tok).attribute(
            A.TextTokenInput("the cat", tok), target=torch.tensor([[4, 5], [6, 7]]))


class _CachingLM(torch.nn.Module):
    """A causal LM with a key/value-style cache (the running sum of embeddings) and an extra input,
    ``style``, added at every position — as image features are in some multimodal models."""

    def __init__(self, vocab, dim=8):
        super().__init__()
        torch.manual_seed(1)
        self.embedding, self.head = torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab)
        self.max_position_embeddings = 64

    def forward(self, input_ids, attention_mask=None, style=None, past_key_values=None, use_cache=False):
        from types import SimpleNamespace
        e = self.embedding(input_ids)
        state = e.cumsum(1) + (0 if past_key_values is None else past_key_values[:, None])
        hidden = torch.tanh(state + (0 if style is None else style[:, None]))
        return SimpleNamespace(logits=self.head(hidden), past_key_values=state[:, -1] if use_cache else None)


class _Styled(A.InterpretableInput):
    def __init__(self, tok):
        self.tok, self.values, self.n_itp_features = tok, ["the", "cat"], 2

    def to_tensor(self):
        return torch.ones(1, 2)

    def to_model_input(self, perturbed_tensor=None):
        keep = [1, 1] if perturbed_tensor is None else perturbed_tensor[0].tolist()
        words = [w if k else "um" for w, k in zip(self.values, keep)]
        return {"input_ids": torch.tensor([self.tok.encode(" ".join(words))]), "style": torch.full((1, 8), 0.7)}


def test_cached_scoring_passes_extra_inputs_at_every_position(plain):
    _, tok = plain
    llm = A.LLMAttribution(A.FeatureAblation(_CachingLM(len(tok))), tok)
    cached = llm.attribute(_Styled(tok), target="sat on a", use_cached_outputs=True)
    uncached = llm.attribute(_Styled(tok), target="sat on a", use_cached_outputs=False)
    one_pass = llm.attribute(_Styled(tok), target="sat on a", forward_in_tokens=False)
    _close(cached.token_attr, uncached.token_attr)
    _close(cached.output_probs, uncached.output_probs)
    _close(one_pass.token_attr, uncached.token_attr)


def test_cached_scoring_of_a_model_without_a_cache(plain):
    """A model that takes **kwargs but returns plain logits: the cached path falls back to full passes."""
    model, tok = plain

    class Loose(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, **kwargs):
            return self.inner(input_ids)

    llm = A.LLMAttribution(A.FeatureAblation(Loose()), tok)
    inp = A.TextTemplateInput("{} {} sat", ["the", "cat"])
    _close(llm.attribute(inp, target="on a", use_cached_outputs=True).token_attr,
           llm.attribute(inp, target="on a", use_cached_outputs=False).token_attr)


def test_layer_gradient_shap_samples_in_embedding_space(plain):
    """Departure, pinned: random points lie between the baseline's and the prompt's embeddings (Captum
    interpolates the 0/1 token mask, which maps every point to the all-baseline prompt), so the samples
    matter and their mean tends to Integrated Gradients on the embeddings."""
    model, tok = plain
    inp = A.TextTokenInput("the cat sat", tok, baselines="<pad>", skip_tokens=["<s>"])
    shap = A.LLMGradientAttribution.for_model(model, tok, A.LayerGradientShap)
    base = torch.zeros(1, 3, dtype=torch.long)
    torch.manual_seed(0)
    one = shap.attribute(inp, target="on a", baselines=base, n_samples=1)
    torch.manual_seed(1)
    other = shap.attribute(inp, target="on a", baselines=base, n_samples=1)
    assert (one.token_attr - other.token_attr).abs().max() > 1e-4
    torch.manual_seed(0)
    many = shap.attribute(inp, target="on a", baselines=base, n_samples=3000)
    ig = A.LLMGradientAttribution.for_model(model, tok).attribute(inp, target="on a", n_steps=64)
    _close(many.token_attr, ig.token_attr, 0.05)


# --------------------------------------------------------------------------- issue 23.7: skip_tokens, pad, placeholder
@pytest.mark.parametrize("cls", ["LLMAttribution", "LLMGradientAttribution"])
def test_skip_tokens_in_attribute(plain, cls):
    model, tok = plain
    llm = A.LLMAttribution(A.FeatureAblation(model), tok) if cls == "LLMAttribution" \
        else A.LLMGradientAttribution.for_model(model, tok)
    inp = A.TextTokenInput("the cat sat", tok, skip_tokens=[1])
    skipped = llm.attribute(inp, target="on a mat", skip_tokens=["mat"])
    short = llm.attribute(inp, target="on a")
    assert skipped.output_tokens == ["on", "a"]
    _close(skipped.token_attr, short.token_attr)
    assert llm.attribute(inp, target="on a", skip_tokens=[1]).output_tokens == ["on", "a"]  # Captum's tutorial
    with pytest.raises(ValueError, match="skip_tokens.*<nope>"):
        llm.attribute(inp, target="on a", skip_tokens=["<nope>"])
    with pytest.raises(ValueError, match="skip_tokens"):
        llm.attribute(inp, target="on", skip_tokens=["on"])


def test_unknown_skip_token_of_an_input_is_refused(plain):
    _, tok = plain
    with pytest.raises(ValueError, match="skip_tokens.*<nope>"):
        A.TextTokenInput("the cat", tok, skip_tokens=["<nope>"])
    with pytest.raises(ValueError, match="skip_tokens.*no token"):  # nothing left to attribute, or to plot
        A.TextTokenInput("the", tok, skip_tokens=["<s>", "the"])


def test_generation_with_a_tokenizer_without_pad_token(hf):
    model, tok = hf

    class NoPad:  # neither a pad nor an end-of-sequence token
        pad_token_id = eos_token_id = None

        def __getattr__(self, name):
            return getattr(tok, name)

    saved = (model.generation_config.pad_token_id, model.generation_config.eos_token_id)
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = None
    try:
        res = A.LLMAttribution(A.FeatureAblation(model), NoPad()).attribute(
            A.TextTemplateInput("{} sat", ["cat"]), gen_args={"max_new_tokens": 2, "do_sample": False})
    finally:
        model.generation_config.pad_token_id, model.generation_config.eos_token_id = saved
    assert len(res.output_tokens) == 2


def test_remote_placeholder_model(hf):
    model, tok = hf
    C = captum()
    assert hasattr(C.RemoteLLMAttribution, "placeholder_model")

    class Fixed:
        def generate(self, prompt, **gen_args):
            return "the mat"

        def get_logprobs(self, input_prompt, target_str, tokenizer=None):
            return [-0.1 * len(input_prompt.split())] * len(target_str.split())

    placeholder = A.RemoteLLMAttribution.placeholder_model
    assert torch.device(placeholder.device).type == "cpu" and placeholder() == 0
    res = A.RemoteLLMAttribution(A.FeatureAblation(placeholder), tok, Fixed()).attribute(
        A.TextTemplateInput("{} {}", ["a", "b"]), target="the mat")
    assert res.token_attr.shape == (2, 2)


# --------------------------------------------------------------------------- issue 23.15: clear errors
def test_bad_targets_are_named(plain):
    model, tok = plain
    llm = A.LLMAttribution(A.FeatureAblation(model), tok)
    inp = A.TextTemplateInput("{} sat", ["cat"])
    with pytest.raises(TypeError, match="target.*list of strings"):
        llm.attribute(inp, target=["on", "a"])
    for bad in (torch.tensor([len(tok) + 5]), torch.tensor([-1]), [4, len(tok)]):
        with pytest.raises(ValueError, match="target"):
            llm.attribute(inp, target=bad)
    with pytest.raises(ValueError, match="target"):
        A.LLMGradientAttribution.for_model(model, tok).attribute(A.TextTokenInput("the", tok), target=[-3])


@pytest.mark.parametrize("bad", [-1, 10_000])
def test_bad_baseline_ids_are_named(plain, bad):
    _, tok = plain
    with pytest.raises(ValueError, match="baselines"):
        A.TextTokenInput("the cat", tok, baselines=bad)


def test_token_input_accepts_numpy_and_0d_tensor_baselines(plain):
    _, tok = plain
    assert A.TextTokenInput("the", tok, baselines=np.int64(3)).baselines == 3
    assert A.TextTokenInput("the", tok, baselines=torch.tensor(3)).baselines == 3


def test_bad_methods_and_models_are_named(plain):
    model, tok = plain
    with pytest.raises(TypeError, match="attr_method.*nn.Module"):
        A.LLMAttribution(A.FeatureAblation(lambda x: x), tok)
    with pytest.raises(TypeError, match="attr_method.*Occlusion"):
        A.LLMAttribution(A.Occlusion(model), tok)
    with pytest.raises(TypeError, match="attr_method.*FeaturePermutation"):
        A.LLMAttribution(A.FeaturePermutation(model), tok)


def test_generation_past_the_context_is_named(plain):
    model, tok = plain
    with pytest.raises(ValueError, match="gen_args.*max_new_tokens.*context of 24"):
        A.LLMAttribution(A.FeatureAblation(model), tok).attribute(
            A.TextTemplateInput("{} sat on", ["the cat"]), gen_args={"max_new_tokens": 30})
    with pytest.raises(ValueError, match="gen_args.*context of 24"):
        A.LLMAttribution(A.FeatureAblation(model), tok).attribute(
            A.TextTemplateInput("{} sat on", ["the cat"]), gen_args={"max_length": 30})


def test_layer_input_of_an_embedding_is_named():
    from attrkit.testing import TinyTextModel
    model, tokens = TinyTextModel(), torch.tensor([[3, 1, 4]])
    with pytest.raises(TypeError, match="attribute_to_layer_input.*integer"):
        A.LayerIntegratedGradients(model, model.embedding).attribute(
            tokens, torch.zeros_like(tokens), target=0, attribute_to_layer_input=True)

    class ByKeyword(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = torch.nn.Embedding(10, 3), torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.out(self.emb(input=x).sum(1))

    kw = ByKeyword()
    with pytest.raises(ValueError, match="attribute_to_layer_input.*keyword"):
        A.LayerIntegratedGradients(kw, kw.emb).attribute(tokens, target=0, attribute_to_layer_input=True)


def test_empty_token_lists_get_clear_errors():
    words, attr = A.merge_subword_tokens([], torch.zeros(2, 0))
    assert words == [] and attr.shape == (2, 0)
    empty = A.LLMAttributionResult(input_tokens=[], output_tokens=["x"], seq_attr=torch.zeros(0),
                                   token_attr=torch.zeros(1, 0))
    with pytest.raises(ValueError, match="input_tokens"):
        empty.plot_token_attr()


# --------------------------------------------------------------------------- AttnLRP in the LLM API (issue 25)
def _gpt2_like(hf):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = hf
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=32,
                                      bos_token_id=1, eos_token_id=2)).eval(), tok


def _model_state(model):
    return ([p.requires_grad for p in model.parameters()], [m.training for m in model.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()])


def _lrp_by_hand(model, prompt_ids, answer, i):
    """AttnLRP run directly on the embeddings of prompt + answer[:i], explaining answer[i]'s logit."""
    ids = torch.cat([prompt_ids, answer[:i].reshape(1, -1)], dim=1)
    embeds = model.get_input_embeddings()(ids).detach()

    def last_logits(e):
        return model(inputs_embeds=e, use_cache=False).logits[:, -1]

    relevance = A.AttnLRP(last_logits, model).attribute(embeds, target=int(answer[i]))
    return relevance.sum(-1)[0]  # every position: the prompt's, then the first i target tokens


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_attnlrp_rows_are_attnlrp_on_each_prefix_one_pass_per_token(hf, arch):
    """``LLMGradientAttribution(AttnLRP(model), tok)``: row i is AttnLRP on the prompt followed by the first i
    target tokens (its logit for target token i), in one forward and one backward pass per target token, and
    the model is left as found."""
    model, tok = hf if arch == "llama" else _gpt2_like(hf)
    inp = A.TextTokenInput("the cat sat on", tok, baselines="<pad>", skip_tokens=["<s>"])
    answer = torch.tensor(tok.encode("a mat dog", add_special_tokens=False))
    before = _model_state(model)
    counts = {"forward": 0, "backward": 0}
    handles = [model.register_forward_pre_hook(lambda *_: counts.__setitem__("forward", counts["forward"] + 1)),
               model.lm_head.register_full_backward_hook(
                   lambda *_: counts.__setitem__("backward", counts["backward"] + 1))]
    try:
        res = A.LLMGradientAttribution(A.AttnLRP(model), tok).attribute(inp, target="a mat dog")
    finally:
        for h in handles:
            h.remove()
    assert counts == {"forward": 3, "backward": 3}
    assert _model_state(model) == before
    assert res.token_attr.shape == (3, 4) and res.output_tokens == ["a", "mat", "dog"]
    keep = inp.itp_mask[0]
    expected = torch.stack([_lrp_by_hand(model, inp.inp_tensor, answer, i)[:len(keep)][keep] for i in range(3)])
    _close(res.token_attr, expected)
    _close(res.seq_attr, expected.sum(0))


def test_attnlrp_for_model_delta_and_layer(hf):
    """``for_model(..., AttnLRP)`` is the same; the delta is each logit minus all its relevance (prompt and
    earlier target tokens), small on this tiny Llama (only softmax's bias term absorbs relevance)."""
    model, tok = hf
    inp = A.TextTokenInput("the cat sat on", tok, baselines="<pad>")
    direct = A.LLMGradientAttribution(A.AttnLRP(model), tok).attribute(inp, target="a mat")
    made = A.LLMGradientAttribution.for_model(model, tok, A.AttnLRP)
    res = made.attribute(inp, target="a mat", return_convergence_delta=True)
    _close(res.token_attr, direct.token_attr)
    answer = torch.tensor(tok.encode("a mat", add_special_tokens=False))
    ids = torch.cat([inp.inp_tensor, answer[:1].reshape(1, -1)], dim=1)
    with torch.no_grad():
        logit = model(ids).logits[0, -1, answer[1]]
    total = _lrp_by_hand(model, inp.inp_tensor, answer, 1).sum()
    _close(res.convergence_delta[1], logit - total, 1e-4)
    assert res.convergence_delta.shape == (2,) and bool((res.convergence_delta.abs() < 0.5 * logit.abs()).all())


# --------------------------------------------------------------------------- batched scoring (issue 25 speed)
@pytest.mark.parametrize("arch", ["llama", "gpt2", "plain"])
def test_batched_scores_equal_the_uncached_path(hf, plain, arch):
    """Prompts of different lengths scored together (right padding, the cache of the prefix they share with
    the reference, logits at the answer positions only) equal one uncached pass per prompt; the shared prefix
    runs once, and the rows in one pass."""
    from attrkit.llm._batched import batched_log_probs, shared_prefix
    from attrkit.llm._model import ModelCaller, answer_log_probs

    model, tok = {"llama": hf, "gpt2": _gpt2_like(hf) if arch == "gpt2" else None, "plain": plain}[arch]
    call = ModelCaller(model)
    reference = torch.tensor(tok.encode("the cat sat on a mat in Paris"))
    rows = [reference, torch.cat([reference[:4], reference[5:]]), torch.cat([reference[:5], torch.tensor(
        tok.encode("dog ran in the park", add_special_tokens=False)), reference[6:]]), reference[:6]]
    answer = torch.tensor(tok.encode("is capital of France", add_special_tokens=False))
    widths = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: widths.append(
        tuple((kw.get("input_ids") if "input_ids" in kw else a[0]).shape)), with_kwargs=True)
    try:
        with torch.no_grad():
            fast = batched_log_probs(call, rows, answer, reference, pad_id=3)
    finally:
        handle.remove()
    with torch.no_grad():
        exact = torch.cat([answer_log_probs(call, {"input_ids": r[None]}, answer, forward_in_tokens=True)
                           for r in rows])
    _close(fast, exact, 1e-5)
    assert shared_prefix(rows, reference) == 4
    p = 4 if arch != "plain" else 0  # the plain model has no cache: every row runs from its first token
    width = max(len(r) for r in rows) + len(answer) - 1 - p
    assert widths == ([(1, p), (4, width)] if p else [(4, width)])


@pytest.mark.parametrize("method", ["FeatureAblation", "ShapleyValueSampling"])
def test_batched_attribution_equals_one_prompt_at_a_time(hf, method):
    """``batch_prompts`` (the default) changes nothing but float rounding: template segments whose baselines
    tokenize to other lengths, so the rows are padded."""
    model, tok = hf
    inp = A.TextTemplateInput("{} {} sat on {} in {}", values=["the cat", "um", "a mat", "Paris"],
                              baselines=["a", "the dog ran", "", "France"])
    llm = A.LLMAttribution(getattr(A, method)(model), tok)
    kw = dict(target="is capital of France", **({"n_samples": 3} if method == "ShapleyValueSampling" else {}))
    torch.manual_seed(0)
    fast = llm.attribute(inp, **kw)
    torch.manual_seed(0)
    slow = llm.attribute(inp, batch_prompts=False, use_cached_outputs=False, **kw)
    _close(fast.token_attr, slow.token_attr, 1e-5)
    _close(fast.seq_attr, slow.seq_attr, 1e-5)
    _close(fast.output_probs, slow.output_probs, 1e-5)
