"""Test-suite wide settings: a non-interactive matplotlib, no figures left open between tests."""
import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("ATTRKIT_MIRROR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")))

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")
