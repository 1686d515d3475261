"""On a machine whose cores other processes keep busy, attribute() uses fewer intra-op threads (a descheduled
thread stalls every parallel region) and gives torch's setting back afterwards, also after an error."""
import os
import subprocess
import sys
import time

import pytest
import torch

from attrkit import FeatureAblation, Saliency, _threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _threads_seen(method_cls, monkeypatch, busy: int):
    monkeypatch.setattr(_threads, "busy_cores", lambda: busy)
    monkeypatch.setattr(_threads, "cores_available", lambda: 2)
    seen = []

    def model(x):
        seen.append(torch.get_num_threads())
        return x.sum(dim=1, keepdim=True) * 2.0

    x = torch.arange(12.0).reshape(3, 4)
    attributions = method_cls(model).attribute(x, target=0)
    return seen, attributions


@pytest.mark.parametrize("method_cls", [Saliency, FeatureAblation])
def test_busy_machine_runs_on_fewer_threads_and_restores_them(method_cls, monkeypatch, two_threads):
    seen, busy_result = _threads_seen(method_cls, monkeypatch, busy=1)
    assert set(seen) == {1} and torch.get_num_threads() == 2
    seen, idle_result = _threads_seen(method_cls, monkeypatch, busy=0)
    assert set(seen) == {2}
    torch.testing.assert_close(busy_result, idle_result)


def test_threads_restored_after_an_error(monkeypatch, two_threads):
    monkeypatch.setattr(_threads, "busy_cores", lambda: 5)

    def broken(x):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        Saliency(broken).attribute(torch.rand(2, 3), target=0)
    assert torch.get_num_threads() == 2


def test_busy_cores_counts_other_processes_only():
    assert _threads.busy_from("0.50 0.40 0.30 5/312 4242\n", own_running=2) == 3
    assert _threads.busy_from("0.50 0.40 0.30 1/312 4242\n", own_running=1) == 0
    assert _threads.busy_from("0.50 0.40 0.30 1/312 4242\n", own_running=3) == 0  # never negative


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="reads Linux's /proc")
def test_busy_cores_sees_a_spinning_process():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        seen = []
        for _ in range(50):  # the spinner is runnable at once; give the scheduler a moment to report it
            seen.append(_threads.busy_cores())
            if seen[-1] >= 1:
                break
            time.sleep(0.05)
        assert max(seen) >= 1
    finally:
        spinner.kill()
        spinner.wait()
