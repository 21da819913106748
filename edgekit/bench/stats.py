"""The timing harness and the statistics every edgekit latency figure comes from.

    ms = measure(runner.run, x, runs=200, warmup=20)   # (200,) milliseconds, one per call
    latency_stats(ms, batch=8)                          # p50/p90/p99, mean, std, CV, 95% CI ...

Latencies are skewed (a preempted call can take 10x the median), so the headline figure is the
median and its 95% interval is distribution-free (order statistics, no normality assumed).
Successive calls are not independent on a busy machine, so the interval is a lower bound on
the real uncertainty: compare artifacts measured in one run, interleaved (time_interleaved).
"""

from __future__ import annotations

import math
import time

import numpy as np

NOISY_CV = 0.10  # a run whose standard deviation exceeds 10% of its mean is flagged
ROUNDS = 5  # interleaved rounds: `edgekit bench`, export's timing and `edgekit tune` alike
REWARM = 2  # untimed calls at the start of each later round (caches were evicted)


def measure(fn, *args, runs: int = 200, warmup: int = 20, seconds: float | None = None,
            min_runs: int = 5) -> np.ndarray:
    """Call `fn(*args)` `warmup` times untimed, then time each call on its own.

    Args:
        runs: how many timed calls (ignored when `seconds` is given).
        seconds: a time budget instead of a count: keep calling until `seconds` have passed,
            and at least `min_runs` times.

    Returns:
        (n,) latencies in milliseconds, in call order.
    """
    for _ in range(warmup):
        fn(*args)
    if seconds is None:
        return _timed_calls(fn, args, runs)
    parts, done = [], 0
    start = time.perf_counter()
    while True:
        spent = time.perf_counter() - start
        if spent >= seconds and done >= min_runs:
            return np.concatenate(parts)
        # As many calls as the rest of the budget holds at the pace so far (one at first).
        pace = spent / done if done else math.inf
        n = max(1, min_runs - done, min(int((seconds - spent) / pace), 10_000))
        parts.append(_timed_calls(fn, args, n))
        done += n


def _timed_calls(fn, args: tuple, n: int) -> np.ndarray:
    """(n,) milliseconds of n calls in a row, one clock reading after each.

    Each call's time runs from the previous reading to its own, so over a bare loop the
    harness adds one clock read and one list store per call, and nothing else.
    """
    clock = time.perf_counter
    stamps = [0.0] * (n + 1)
    if len(args) == 1:  # runner.run(x): a plain call, ~30 ns cheaper than a star-call
        x = args[0]
        stamps[0] = clock()
        for i in range(1, n + 1):
            fn(x)
            stamps[i] = clock()
    else:
        stamps[0] = clock()
        for i in range(1, n + 1):
            fn(*args)
            stamps[i] = clock()
    return np.diff(stamps) * 1e3


def time_interleaved(runners: list, inputs: list, threads: int, *, runs=200,
                     seconds: float | None = None, warmup: int = 2,
                     rounds: int = ROUNDS) -> list[list[np.ndarray]]:
    """The one way edgekit times artifacts against each other (bench, export, tune).

    Interleaved rounds, each starting at the next runner (A B C, B C A, ...); before its
    turn a runner is set to `threads` (process-wide pools are shared); the first round warms
    up with `warmup` calls, later rounds re-warm with up to REWARM.

    Args:
        runners: edgekit.runtime runners; inputs: one input batch per runner.
        runs: timed calls per runner in all, split evenly over the rounds (at least one a
            round): one count, or one per runner. Ignored when `seconds` is given.
        seconds: a time budget per runner instead, split evenly over the rounds.

    Returns:
        Per runner, one array of latencies (ms) per round.
    """
    counts = runs if isinstance(runs, list | tuple) else [runs] * len(runners)
    shares = [[max(1, len(a)) for a in np.array_split(np.arange(n), rounds)] for n in counts]
    times: list[list[np.ndarray]] = [[] for _ in runners]
    n = len(runners)
    for k in range(rounds):
        for i in [(k + j) % n for j in range(n)]:
            runners[i].use_threads(threads)
            times[i].append(measure(runners[i].run, inputs[i],
                                    runs=0 if seconds else shares[i][k],
                                    warmup=warmup if k == 0 else min(warmup, REWARM),
                                    min_runs=1,
                                    seconds=None if seconds is None else seconds / rounds))
    return times


def pick(results: list[dict], prefer, name: str = "file",
         tie_rule: str = "") -> tuple[dict, str]:
    """The one rule for choosing the faster of several timed results (export, tune).

    The lowest median wins when its 95% interval overlaps no other's (`verdict`); otherwise,
    among the results within noise of it, the first by `prefer` (a sort key: the documented
    layout, fewer threads, ...). `tie_rule` says that order in words, for the line.

    Returns:
        (the chosen result, one line saying why).
    """
    if len(results) == 1:
        return results[0], f"only {results[0][name]} was timed"
    v = verdict(results, name=name)
    if v["fastest"]:
        return next(r for r in results if r[name] == v["fastest"]), v["text"]
    best = min((r for r in results if r[name] in v["tied"]), key=prefer)
    return best, f"{v['text']}; chose {best[name]} by the tie rule" + (
        f" ({tie_rule})" if tie_rule else "")


def threads_text(n: int) -> str:
    """"1 thread", "2 threads"."""
    return "1 thread" if n == 1 else f"{n} threads"


def ms_text(value: float) -> str:
    """A latency for tables: 4 significant digits, whole milliseconds from a second up."""
    return f"{value:.4g}" if value < 1000 else f"{value:.0f}"


def latency_stats(ms: np.ndarray, *, batch: int = 1) -> dict:
    """Percentiles, spread, a 95% interval of the median, and throughput.

    Args:
        ms: (n,) latencies in milliseconds, one per call.
        batch: inputs per call, for throughput.

    Returns:
        runs, p50/p90/p99/mean/std/min/max in ms, cv (std / mean), ci95_ms ([low, high] of
        the median) and throughput_per_s (inputs per second: batch / mean latency).
    """
    ms = np.asarray(ms, dtype=float)
    if ms.ndim != 1 or len(ms) == 0:
        raise ValueError(f"expected a non-empty 1-D array of latencies, got shape {ms.shape}")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    low, high = median_interval(ms)
    return {"runs": len(ms), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": mean, "std_ms": std, "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "cv": std / mean if mean > 0 else 0.0, "ci95_ms": [low, high],
            "throughput_per_s": batch * 1e3 / mean if mean > 0 else math.inf}


def median_interval(ms: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: two order statistics.

    With n samples the number below the true median is Binomial(n, 1/2); the interval
    [x_(j), x_(n+1-j)] (1-based, sorted) covers the median with probability
    1 - 2 P(B <= j - 1). The largest j with coverage >= `confidence` is used. Below 6 samples
    no pair reaches 95%, and the whole range is returned.
    """
    x = np.sort(np.asarray(ms, dtype=float))
    n = len(x)
    alpha = (1 - confidence) / 2
    j = _binomial_quantile_rank(n, alpha)  # P(B <= j - 1) <= alpha, j as large as possible
    if j < 1:
        return float(x[0]), float(x[-1])
    return float(x[j - 1]), float(x[n - j])


def _binomial_quantile_rank(n: int, alpha: float) -> int:
    """The largest j with P(B <= j - 1) <= alpha for B ~ Binomial(n, 1/2); 0 if none."""
    log_p = -n * math.log(2.0)  # log P(B = 0)
    cdf = 0.0
    for i in range(n // 2 + 1):
        cdf += math.exp(log_p)
        if cdf > alpha:
            return i  # P(B <= i) > alpha, P(B <= i - 1) <= alpha: j - 1 = i - 1
        log_p += math.log((n - i) / (i + 1))
    return n // 2


def overlap(a: dict, b: dict) -> bool:
    """True when two results' 95% intervals of the median overlap (no clear difference)."""
    return a["ci95_ms"][0] <= b["ci95_ms"][1] and b["ci95_ms"][0] <= a["ci95_ms"][1]


def verdict(results: list[dict], name: str = "file") -> dict:
    """Which of several results measured under the same settings is fastest, if any is.

    The one with the lowest median is named only if its 95% interval overlaps no other's;
    otherwise the results that overlap it are reported as a tie.

    Args:
        results: latency_stats dicts, each with a `name` key identifying it.

    Returns:
        {"fastest": name or None, "tied": [names within noise of the lowest median],
         "text": one line for people}.
    """
    if len(results) < 2:
        raise ValueError("a verdict needs at least two results")
    ranked = sorted(results, key=lambda r: r["p50_ms"])
    best, rest = ranked[0], ranked[1:]
    tied = [r[name] for r in rest if overlap(best, r)]
    if tied:
        names = ", ".join([best[name], *tied])
        return {"fastest": None, "tied": [best[name], *tied],
                "text": f"no clear winner: {names} are within noise of each other "
                        "(95% intervals of the median overlap)"}
    runner_up = rest[0]
    return {"fastest": best[name], "tied": [],
            "text": f"fastest: {best[name]} ({best['p50_ms']:.4g} ms), "
                    f"{runner_up['p50_ms'] / best['p50_ms']:.2f}x faster than "
                    f"{runner_up[name]} ({runner_up['p50_ms']:.4g} ms)"}


def noise_warning(result: dict, what: str) -> str | None:
    """One line when a result's coefficient of variation exceeds NOISY_CV, else None."""
    if result["cv"] <= NOISY_CV:
        return None
    return (f"{what}: too noisy (CV {result['cv']:.0%} > {NOISY_CV:.0%}); the median is "
            "less reliable: close other programs, or raise --runs / --seconds")
