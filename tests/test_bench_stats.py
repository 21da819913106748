"""The statistics behind every bench figure, on inputs whose answers are known exactly."""

import numpy as np
import pytest

from edgekit.bench import stats


class FakeClock:
    """time.perf_counter for the harness: only the timed function moves it."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(stats.time, "perf_counter", fake)
    return fake


def test_measure_times_each_call_after_the_warm_up(clock):
    calls = []

    def fn(x):  # call k takes k ms
        calls.append(x)
        clock.now += len(calls) * 1e-3

    ms = stats.measure(fn, "x", runs=4, warmup=2)
    assert calls == ["x"] * 6
    assert ms == pytest.approx([3, 4, 5, 6])  # the two warm-up calls are not in the result


def test_measure_with_a_time_budget_stops_once_it_is_spent(clock):
    tick = 2.0 ** -9  # ~2 ms a call, a binary fraction so the clock adds up exactly

    def fn():  # no arguments: the general call path
        clock.now += tick

    ms = stats.measure(fn, warmup=0, seconds=25 * tick)
    assert len(ms) == 25 and ms == pytest.approx(np.full(25, tick * 1e3))
    # A budget shorter than one call still gives min_runs calls.
    assert len(stats.measure(fn, warmup=0, seconds=1e-9, min_runs=5)) == 5


def test_percentiles_spread_interval_and_throughput_of_1_to_100():
    s = stats.latency_stats(np.arange(1, 101, dtype=float), batch=8)
    assert s["runs"] == 100
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"]) == pytest.approx((50.5, 90.1, 99.01))
    assert (s["mean_ms"], s["min_ms"], s["max_ms"]) == (50.5, 1.0, 100.0)
    assert s["std_ms"] == pytest.approx(29.011492, rel=1e-6)  # sample std (n - 1)
    assert s["cv"] == pytest.approx(29.011492 / 50.5, rel=1e-6)
    # 95% interval of the median for n = 100: the 40th and 61st smallest (binomial tables).
    assert s["ci95_ms"] == [40.0, 61.0]
    assert s["throughput_per_s"] == pytest.approx(8 * 1000 / 50.5)  # inputs per second


def test_one_sample_has_no_spread():
    s = stats.latency_stats(np.array([2.0]))
    assert s["std_ms"] == 0.0 and s["cv"] == 0.0 and s["ci95_ms"] == [2.0, 2.0]
    with pytest.raises(ValueError):
        stats.latency_stats(np.array([]))


@pytest.mark.parametrize("n", [6, 7, 10, 25, 100, 101, 1000, 5001])
def test_median_interval_covers_at_least_95_percent_and_no_more_than_needed(n):
    binom = pytest.importorskip("scipy.stats").binom
    x = np.arange(1, n + 1, dtype=float)  # the sorted sample is its own ranks
    low, high = stats.median_interval(np.random.default_rng(n).permutation(x))
    j = int(low)
    assert high == n + 1 - j  # symmetric order statistics
    coverage = 1 - 2 * binom.cdf(j - 1, n, 0.5)
    tighter = 1 - 2 * binom.cdf(j, n, 0.5)
    assert coverage >= 0.95 > tighter


def test_median_interval_of_too_few_samples_is_the_whole_range():
    assert stats.median_interval(np.array([3.0, 1.0, 2.0, 5.0, 4.0])) == (1.0, 5.0)


def result(file, p50, low, high):
    return {"file": file, "p50_ms": p50, "ci95_ms": [low, high]}


def test_a_winner_is_named_only_when_its_interval_overlaps_no_other():
    clear = stats.verdict([result("model.onnx", 2.0, 1.9, 2.1),
                           result("model.int8.onnx", 1.0, 0.9, 1.1)])
    assert clear["fastest"] == "model.int8.onnx" and clear["tied"] == []
    assert clear["text"] == ("fastest: model.int8.onnx (1 ms), 2.00x faster than model.onnx "
                             "(2 ms)")

    tie = stats.verdict([result("model.onnx", 1.05, 0.95, 1.2),
                         result("model.int8.onnx", 1.0, 0.9, 1.1),
                         result("model.ts", 3.0, 2.9, 3.1)])
    assert tie["fastest"] is None
    assert tie["tied"] == ["model.int8.onnx", "model.onnx"]  # model.ts is clearly slower
    assert tie["text"].startswith("no clear winner: model.int8.onnx, model.onnx are within "
                                  "noise")


def test_intervals_that_only_touch_overlap():
    assert stats.overlap(result("a", 1, 1.0, 2.0), result("b", 3, 2.0, 3.0))
    assert not stats.overlap(result("a", 1, 1.0, 1.99), result("b", 3, 2.0, 3.0))


def test_noise_warning_above_ten_percent_cv():
    assert stats.noise_warning({"cv": 0.10}, "model.onnx") is None
    line = stats.noise_warning({"cv": 0.137}, "model.onnx (batch 1, 2 threads)")
    assert line.startswith("model.onnx (batch 1, 2 threads): too noisy (CV 14% > 10%)")


def test_pick_names_a_clear_winner_and_otherwise_follows_the_preference():
    rows = [result("documented.onnx", 2.0, 1.9, 2.1), result("other.onnx", 1.0, 0.9, 1.1)]
    best, line = stats.pick(rows, prefer=rows.index)
    assert best["file"] == "other.onnx" and line.startswith("fastest: other.onnx")
    rows = [result("documented.onnx", 1.05, 0.95, 1.2), result("other.onnx", 1.0, 0.9, 1.1)]
    best, line = stats.pick(rows, prefer=rows.index, tie_rule="documented first")
    assert best["file"] == "documented.onnx"
    assert line.endswith("; chose documented.onnx by the tie rule (documented first)")
    assert stats.pick(rows[:1], prefer=rows.index)[0] is rows[0]


class Runner:
    """A runner that records its calls and the thread count it was set to."""

    def __init__(self, name, log):
        self.name, self.log, self.threads = name, log, None

    def use_threads(self, threads):
        self.threads = threads

    def run(self, x):
        self.log.append((self.name, self.threads, x))


def test_time_interleaved_rotates_sets_threads_and_splits_the_runs(clock):
    log = []
    runners = [Runner("a", log), Runner("b", log)]
    times = stats.time_interleaved(runners, ["xa", "xb"], 3, runs=[4, 2], warmup=1, rounds=2)
    assert [len(r) for r in times] == [2, 2]  # per runner, one array per round
    assert [len(ms) for ms in times[0]] == [2, 2] and [len(ms) for ms in times[1]] == [1, 1]
    # round 1: a (1 warm-up + 2), b (1 + 1); round 2 starts at b: b (1 + 1), a (1 + 2)
    assert [name for name, _, _ in log] == list("aaabbbbaaa")
    assert {(name, t, x) for name, t, x in log} == {("a", 3, "xa"), ("b", 3, "xb")}
