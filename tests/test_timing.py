"""The one clock: warm-up not timed, device synchronised around every sample, medians, paired ratios."""

import pytest
import torch
import torch.nn.functional as F

from earlyprune.core import timing


class FakeClock:
    """perf_counter / process_time that only move when a timed function says so."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(timing.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(timing.time, "process_time", lambda: self.now / 2)

    def takes(self, durations):
        it = iter(durations)

        def fn():
            self.now += next(it)
        return fn


def test_measure_skips_warmup_and_takes_the_median(monkeypatch):
    clock = FakeClock(monkeypatch)
    fn = clock.takes([100, 100, 3, 1, 2, 50, 2])           # two warm-up calls, then five samples
    t = timing.measure(fn, repeats=5, warmup=2, cpu=True)
    assert t.samples == [3, 1, 2, 50, 2] and t.seconds == 2 and t.minimum == 1 and t.cpu_seconds == 1
    fn = clock.takes([4, 6, 10, 20])                       # number=2: seconds per call of each pair
    assert timing.measure(fn, repeats=2, warmup=0, number=2).samples == [5, 15]
    with pytest.raises(ValueError):
        timing.measure(fn, repeats=0)


def test_every_sample_is_synchronised_on_the_device(monkeypatch):
    calls = []
    monkeypatch.setattr(timing, "sync", lambda device: calls.append(device))
    timing.measure(lambda: calls.append("run"), repeats=2, warmup=1, device="cuda")
    # warm-up, one sync before the samples, then sync / run / sync per sample
    assert calls == ["run", "cuda", "cuda", "run", "cuda", "cuda", "run", "cuda"]


def test_sync_is_a_no_op_on_the_cpu():
    timing.sync(None)
    timing.sync("cpu")
    timing.sync(torch.device("cpu"))


def test_paired_ratio_is_the_median_of_interleaved_pairs(monkeypatch):
    clock = FakeClock(monkeypatch)
    order = []

    def a():
        order.append("a")
        clock.now += 2.0 * (10 if len(order) == 7 else 1)  # one disturbed round: the median ignores it

    def b():
        order.append("b")
        clock.now += 1.0

    res = timing.paired_ratio(a, b, rounds=3, warmup=1)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a-first, b-first, a-first
    assert res.ratios == [2.0, 2.0, 20.0] and res.ratio == 2.0 and res.b_seconds == 1.0
    assert res.to_dict()["ratio"] == 2.0


def test_stopwatch_and_train_step():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    step = timing.train_step(model, opt, x, y)
    before = F.cross_entropy(model(x), y).item()
    with timing.Stopwatch("cpu") as clock:
        for _ in range(5):
            loss = step()
    assert clock.seconds > 0 and clock.elapsed() >= clock.seconds
    assert loss.item() < before                                        # it trains
    assert timing.device_of(model).type == "cpu" and timing.device_of(x).type == "cpu"
