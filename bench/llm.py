"""LLMAttribution on SmolLM2-135M over template segments: attrkit against Captum and the floor, same process.

    python bench/llm.py                       # FeatureAblation and ShapleyValueSampling, 3 timed runs each
    python bench/llm.py --repeats 1 --threads 2 --markdown out.md

Both libraries at their defaults (token-by-token scoring with the key/value cache; attrkit scores the
perturbed prompts of a forward call together, reusing the cache of the prefix they share with the prompt,
:mod:`attrkit.llm._batched`). The *floor* is one batched forward over every perturbed prompt followed by the
answer (right-padded, all positions), without the prefix reuse: attrkit can go below it. Timings are the
median of ``--repeats`` runs after a warm-up, the contenders interleaved; measured, never asserted (issue 25's
goal: attrkit / Captum ≤ 0.3). The model loads offline (``ATTRKIT_OFFLINE=1``, ``ATTRKIT_MIRROR``).

The difference column compares attrkit's ``token_attr`` with Captum's run with ``use_cached_outputs=False``
(one extra, untimed run) and, in brackets, with Captum's timed default run: Captum 0.9's cached scoring drifts
under transformers 5 (a departure attrkit documents and tests), by more than 1 in log-probability here.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import fmt_seconds, machine, ratio_cell  # noqa: E402  (fixes the thread count before torch starts)

import torch  # noqa: E402

import attrkit  # noqa: E402

TEMPLATE = "{} lives in {}, {} and is a {}. {} personal interests include"
VALUES = ["Dave", "Palm Coast", "FL", "lawyer", "His"]
TARGET = " playing golf and tennis."
CASES = {"FeatureAblation": {}, "ShapleyValueSampling": {"n_samples": 5}}
TARGET_RATIO = 0.3


def perturbed_masks(method: str, n: int, kwargs: dict) -> torch.Tensor:
    """The 0/1 masks the method evaluates (for the floor): one per unit, the unperturbed prompt first."""
    if method == "FeatureAblation":
        return torch.cat([torch.ones(1, n), 1 - torch.eye(n)])
    steps = [torch.ones(1, n)]
    for _ in range(kwargs.get("n_samples", 25)):
        mask = torch.zeros(1, n)  # Shapley value sampling: from none present, one feature added at a time
        for j in torch.randperm(n):
            mask = mask.clone()
            mask[0, j] = 1
            steps.append(mask)
    return torch.cat(steps)


def floor(model, tokenizer, inp, masks: torch.Tensor, answer: torch.Tensor):
    """One forward over every perturbed prompt + answer, right-padded, in passes of ~1024 tokens."""
    rows = [torch.cat([torch.as_tensor(tokenizer.encode(inp.to_model_input(m[None]))), answer[:-1]])
            for m in masks]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.eos_token_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    step = max(1, 1024 // width)

    def run():
        with torch.inference_mode():
            for s in range(0, len(rows), step):
                model(input_ids=ids[s:s + step], attention_mask=mask[s:s + step], use_cache=False)
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (read by bench/run.py at import)")
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import captum
    import captum.attr
    from attrkit import text_models

    model, tokenizer = text_models.smollm2()
    model.eval()
    answer = torch.as_tensor(tokenizer.encode(TARGET, add_special_tokens=False))
    lines = [f"Measured on {machine()} (CPU), torch {torch.__version__}, Captum {captum.__version__}; "
             f"{torch.get_num_threads()} torch threads; SmolLM2-135M, template {TEMPLATE!r} with {len(VALUES)} "
             f"segments, target {TARGET!r} ({len(answer)} tokens); median of {args.repeats} run(s) after a warm-up."
             + (f" Load average {os.getloadavg()[0]:.1f} at the start (a shared machine)." if hasattr(os, "getloadavg")
                else ""),
             "", "| method | attrkit | Captum (defaults) | floor | attrkit / Captum | attrkit / floor "
             "| max abs. diff, Captum uncached (cached) |",
             "|---|---|---|---|---|---|---|"]
    for method, kwargs in CASES.items():
        print(f"{method} ...", file=sys.stderr, flush=True)
        ours = attrkit.LLMAttribution(getattr(attrkit, method)(model), tokenizer)
        theirs = captum.attr.LLMAttribution(getattr(captum.attr, method)(model), tokenizer)
        inp_ours = attrkit.TextTemplateInput(TEMPLATE, values=VALUES)
        inp_theirs = captum.attr.TextTemplateInput(TEMPLATE, values=VALUES)
        torch.manual_seed(0)
        contenders = {"attrkit": lambda: ours.attribute(inp_ours, target=TARGET, **kwargs),
                      "captum": lambda: theirs.attribute(inp_theirs, target=TARGET, **kwargs),
                      "floor": floor(model, tokenizer, inp_ours, perturbed_masks(method, len(VALUES), kwargs), answer)}
        times, outputs, names = {k: [] for k in contenders}, {}, list(contenders)
        for repeat in range(1 + args.repeats):
            for name in names[repeat % 3:] + names[:repeat % 3]:
                torch.manual_seed(0)
                start = time.perf_counter()
                outputs[name] = contenders[name]()
                if repeat:
                    times[name].append(time.perf_counter() - start)
        t = {k: statistics.median(v) for k, v in times.items()}
        torch.manual_seed(0)
        exact = theirs.attribute(inp_theirs, target=TARGET, use_cached_outputs=False, **kwargs)
        diff = float((outputs["attrkit"].token_attr - exact.token_attr).abs().max())
        drift = float((outputs["attrkit"].token_attr - outputs["captum"].token_attr).abs().max())
        lines.append(f"| `{method}`{' ' + str(kwargs) if kwargs else ''} | {fmt_seconds(t['attrkit'])} "
                     f"| {fmt_seconds(t['captum'])} | {fmt_seconds(t['floor'])} "
                     f"| {ratio_cell(t['attrkit'] / t['captum'], TARGET_RATIO)} "
                     f"| {ratio_cell(t['attrkit'] / t['floor'], None)} | {diff:.1e} ({drift:.1e}) |")
        print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
