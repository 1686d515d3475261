"""Text helpers (attrkit.text) against Captum, their axioms, and bad input."""
import random
import warnings

import numpy as np
import pytest
import torch

import attrkit
from attrkit import (IntegratedGradients, LayerIntegratedGradients, ProductBaselines, TokenReferenceBase,
                     configure_interpretable_embedding_layer, remove_interpretable_embedding_layer)
from attrkit.testing import TinyTextModel
from torch import nn
from _helpers import close

captum_attr = pytest.importorskip("captum.attr")
C = captum_attr


def _configure(model, name="embedding"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return configure_interpretable_embedding_layer(model, name)


def test_token_reference_matches_captum():
    ours = TokenReferenceBase(reference_token_idx=7).generate_reference(5, device=torch.device("cpu"))
    theirs = captum_attr.TokenReferenceBase(reference_token_idx=7).generate_reference(5, torch.device("cpu"))
    assert torch.equal(ours, theirs) and ours.dtype == torch.long


def test_interpretable_embedding_ig_matches_captum_and_layer_ig():
    model = TinyTextModel()
    tokens = torch.tensor([[3, 1, 4, 1, 5], [2, 7, 1, 8, 2]])
    reference = TokenReferenceBase(0).generate_reference(5, "cpu").unsqueeze(0).expand(2, -1)
    emb = _configure(model)
    try:
        x, b = emb.indices_to_embeddings(tokens), emb.indices_to_embeddings(reference)
        ours = IntegratedGradients(model).attribute(x, b, target=1, n_steps=20)
        theirs = captum_attr.IntegratedGradients(model).attribute(x, b, target=1, n_steps=20)
    finally:
        remove_interpretable_embedding_layer(model, emb)
    assert isinstance(model.embedding, torch.nn.Embedding)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # the same numbers without touching the model: LayerIntegratedGradients on the embedding layer
    layer = LayerIntegratedGradients(model, model.embedding).attribute(tokens, reference, target=1, n_steps=20)
    torch.testing.assert_close(ours, layer, rtol=1e-5, atol=1e-6)


def test_captum_wrapper_and_ours_restore_the_same_model():
    model = TinyTextModel()
    tokens = torch.tensor([[3, 1, 4]])
    before = model(tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = captum_attr.configure_interpretable_embedding_layer(model, "embedding")
        theirs = model(emb.indices_to_embeddings(tokens))
        captum_attr.remove_interpretable_embedding_layer(model, emb)
    emb = _configure(model)
    ours = model(emb.indices_to_embeddings(tokens))
    remove_interpretable_embedding_layer(model, emb)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(model(tokens), before)


def test_configure_warns_like_captum():
    model = TinyTextModel()
    with pytest.warns(UserWarning, match="interpretable embedding"):
        emb = configure_interpretable_embedding_layer(model)
    remove_interpretable_embedding_layer(model, emb)


def test_interpretable_embedding_passes_keyword_input_through():
    emb = _configure(TinyTextModel())
    v = torch.randn(1, 2, 6)
    assert emb(inputs_embeds=v) is v


@pytest.mark.parametrize("values", [
    [["a", "b"], ["c"], ["d", "e", "f"]],
    {"x": ["a", "b"], ("y", "z"): [("c", "d"), ("e", "f")], "w": ["g", "h", "i"]},
])
def test_product_baselines_draw_like_captum(values):
    random.seed(3)
    theirs = [captum_attr.ProductBaselines(values)() for _ in range(10)]
    random.seed(3)
    ours = [ProductBaselines(values)() for _ in range(10)]
    assert ours == theirs


def test_product_baselines_cover_the_product():
    pb = ProductBaselines([["a", "b"], ["c", "d"]])
    random.seed(0)
    seen = {tuple(pb.sample()) for _ in range(200)}
    assert seen == {("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")}


def test_public_names_exported():
    for name in ("TokenReferenceBase", "InterpretableEmbeddingBase", "configure_interpretable_embedding_layer",
                 "remove_interpretable_embedding_layer", "ProductBaselines"):
        assert name in attrkit.__all__ and hasattr(attrkit, name)


# --------------------------------------------------------------------------- bad input
def test_configure_twice_is_a_value_error():  # departure: Captum asserts
    model = TinyTextModel()
    emb = _configure(model)
    with pytest.raises(ValueError, match="embedding_layer_name"):
        _configure(model)
    remove_interpretable_embedding_layer(model, emb)


def test_missing_layer_is_named():
    with pytest.raises(ValueError, match="embedding_layer_name.*encoder.embed"):
        _configure(TinyTextModel(), "encoder.embed")


def test_remove_needs_the_wrapper():
    model = TinyTextModel()
    with pytest.raises(TypeError, match="interpretable_emb"):
        remove_interpretable_embedding_layer(model, model.embedding)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_reference_length_must_be_a_count(bad):
    with pytest.raises(ValueError, match="sequence_length"):
        TokenReferenceBase().generate_reference(bad, "cpu")


def test_reference_token_from_a_tokenizer_without_pad():
    with pytest.raises(ValueError, match="reference_token_idx.*pad token"):
        TokenReferenceBase(reference_token_idx=None)
    with pytest.raises(TypeError, match="reference_token_idx"):
        TokenReferenceBase(reference_token_idx="<pad>")


@pytest.mark.parametrize("bad", [[["a"], []], "abc", {"x": "a"}])
def test_product_baselines_bad_values(bad):
    with pytest.raises((ValueError, TypeError), match="baseline_values"):
        ProductBaselines(bad)


def test_product_baselines_grouped_key_needs_tuples():
    with pytest.raises(ValueError, match="baseline_values"):
        ProductBaselines({("a", "b"): [("x",)]})()


@pytest.mark.parametrize("index", [np.int64(3), torch.tensor(3), np.int32(3)])
def test_reference_accepts_numpy_and_0d_tensor_integers(index):
    ours = TokenReferenceBase(reference_token_idx=index).generate_reference(np.int64(4), device="cpu")
    theirs = captum_attr.TokenReferenceBase(reference_token_idx=index).generate_reference(np.int64(4), "cpu")
    assert torch.equal(ours, theirs) and ours.dtype == torch.long
    assert torch.equal(TokenReferenceBase(index).generate_reference(torch.tensor(4), "cpu"), ours)


# ----------------------------------------------------------------------------------------- Captum drop-in: token ids
class _Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


def test_token_ids_to_integrated_gradients_point_to_the_layer_form():
    model, ids = _Tokens(), torch.tensor([[1, 2, 3]])
    with pytest.raises((TypeError, ValueError), match="LayerIntegratedGradients"):
        IntegratedGradients(model).attribute(ids, target=0)


def test_token_ids_work_with_layer_integrated_gradients():  # the way the error should point to
    model, ids = _Tokens(), torch.tensor([[1, 2, 3]])
    base = torch.zeros_like(ids)
    expected = C.LayerIntegratedGradients(model, model.emb).attribute(ids, base, target=0, n_steps=10)
    close(LayerIntegratedGradients(model, model.emb).attribute(ids, base, target=0, n_steps=10), expected)
