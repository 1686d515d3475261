"""AttnLRP: conservation error and time against one plain forward+backward (issue 25), same run.

    python bench/attnlrp.py                    # tiny random ViT, GPT-2, BERT, Llama
    python bench/attnlrp.py --real             # + torchvision vit_b_16 (random weights), MiniLM, SmolLM2 (offline)

For each model: the relevance at the embedding output (after position embeddings, where a model adds them)
against the explained logit, ``|sum(R) - logit| / |logit|`` per example (with AttnLRP's softmax rule, and
with the attention weights held constant, ``softmax_relevance=False``: CP-LRP, where only biases absorb
relevance, so the difference is what softmax's bias term absorbs), and the best of ``--repeats`` timings of
AttnLRP and of one plain forward+backward to the same input (one thread). Figures are measured, never asserted
here (tests/unit/test_attnlrp.py pins the conservation on the tiny models).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "unit"))
from test_attnlrp import BUILDERS, Logits  # noqa: E402  (the tiny models the tests use)

from attrkit import AttnLRP  # noqa: E402


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name, model, f, x, embedding_output, repeats):
    model.eval()
    logits = f(x).detach()
    target = logits.argmax(-1).tolist()
    explained = logits.gather(1, torch.tensor(target)[:, None]).squeeze(1)
    errors = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for rule in (True, False):
            relevance = AttnLRP(f, model, softmax_relevance=rule).attribute(x, target=target, layer=embedding_output)
            errors[rule] = ((relevance.flatten(1).sum(1) - explained).abs() / explained.abs()).tolist()

    def plain():
        leaf = x.detach().requires_grad_()
        out = f(leaf)
        torch.autograd.grad(out[torch.arange(len(target)), target].sum(), leaf)

    t_plain = best_time(plain, repeats)
    t_lrp = best_time(lambda: AttnLRP(f, model).attribute(x, target=target), repeats)
    print(f"{name:28s} conservation error {', '.join(f'{e:.4f}' for e in errors[True]):16s} "
          f"(CP-LRP {', '.join(f'{e:.4f}' for e in errors[False]):16s}) "
          f"plain {t_plain * 1e3:8.1f} ms  AttnLRP {t_lrp * 1e3:8.1f} ms  ratio {t_lrp / t_plain:5.2f}"
          + (f"  warnings: {[str(w.message)[:120] for w in caught]}" if caught else ""), flush=True)


def real_models():
    os.environ.setdefault("ATTRKIT_OFFLINE", "1")
    from torchvision.models import vit_b_16

    from attrkit import text_models

    torch.manual_seed(0)
    vit = vit_b_16()
    nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision starts the head at zero
    yield "vit_b_16 (random weights)", vit, vit, torch.rand(1, 3, 224, 224), vit.encoder.dropout

    model, tokenizer = text_models.minilm()

    class MeanPooled(nn.Module):  # the sentence embedding, one dimension of it explained
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, e):
            return self.m(inputs_embeds=e).last_hidden_state.mean(1)

    ids = tokenizer(["A man is playing a guitar on the stage."], return_tensors="pt").input_ids
    yield ("MiniLM (sentence embedding)", model, MeanPooled(model),
           model.embeddings.word_embeddings(ids).detach(), model.embeddings)

    model, tokenizer = text_models.smollm2()
    ids = tokenizer("Dave lives in Palm Coast, FL and is a lawyer. His personal interests include",
                    return_tensors="pt").input_ids
    yield "SmolLM2-135M (next token)", model, Logits(model), model.model.embed_tokens(ids).detach(), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also vit_b_16, MiniLM and SmolLM2")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    torch.set_num_threads(1)
    for name in ("vit", "gpt2", "bert", "llama"):
        torch.manual_seed(0)
        measure(f"tiny {name}", *BUILDERS[name](), options.repeats)
    if options.real:
        for case in real_models():
            measure(*case, options.repeats)


if __name__ == "__main__":
    main()
