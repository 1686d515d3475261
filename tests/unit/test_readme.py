"""The README's quick start runs, and gives what Captum gives for the same code."""
import pathlib
import re

import torch

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _quick_start() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run(code: str) -> dict:
    scope: dict = {}
    exec(compile(code, "README quick start", "exec"), scope)
    return scope


def test_quick_start_runs_and_is_complete():
    code = _quick_start()
    assert "from attrkit import" in code and "captum" not in code
    scope = _run(code)
    attributions, delta = scope["attributions"], scope["delta"]
    assert attributions.shape == (2, 3) and delta.abs().max() < 1e-4
    gain = scope["model"](scope["inputs"])[:, 0] - scope["model"](scope["baselines"])[:, 0]
    torch.testing.assert_close(attributions.sum(1), gain.detach(), rtol=1e-4, atol=1e-4)


def test_quick_start_matches_captum_by_changing_the_import():
    ours = _run(_quick_start())
    theirs = _run(_quick_start().replace("from attrkit import", "from captum.attr import"))
    torch.testing.assert_close(ours["attributions"], theirs["attributions"], rtol=1e-5, atol=1e-6)
