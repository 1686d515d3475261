"""On a machine whose cores other processes keep busy, attribute() uses fewer intra-op threads (a descheduled
thread stalls every parallel region) and gives torch's setting back afterwards, also after an error."""
import pytest
import torch

from attrkit import FeatureAblation, Saliency, _batching


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _threads_seen(method_cls, monkeypatch, busy: int):
    monkeypatch.setattr(_batching, "busy_cores", lambda: busy)
    monkeypatch.setattr(_batching.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
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
    monkeypatch.setattr(_batching, "busy_cores", lambda: 5)

    def broken(x):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        Saliency(broken).attribute(torch.rand(2, 3), target=0)
    assert torch.get_num_threads() == 2


def test_busy_cores_reads_a_number():
    assert _batching.busy_cores() >= 0
