"""The mixed-precision search's cost: what a format whose variants are whole re-exports skips."""

from __future__ import annotations

from pathlib import Path

from edgekit.exporting.int8.mixed import CHEAP_VARIANTS, fewest_fp32_layers, ranked_layers


class FakeVariants:
    """A model that passes once layer "b" is kept fp32; counts the variants it "exports"."""

    def __init__(self):
        self.made: list[tuple] = []

    def get(self, method, fp32=()):
        self.made.append(tuple(fp32))
        passed = "b" in fp32
        return Path("m.pte"), {"passed": passed, "accuracy_drop_points": 0.1 if passed else 3.0}

    def sqnr(self, method, path):
        return [{"node": n, "sqnr_db": db} for n, db in (("a", 5.0), ("b", 9.0), ("c", 20.0))]


def test_cheap_formats_prune_the_passing_prefix_and_costly_ones_only_a_short_one():
    v = FakeVariants()
    assert fewest_fp32_layers(v, "m", list("abcde"))[0] == ("b",)  # [a, b] passed, a pruned
    pruned = set(v.made)  # distinct variants: Variants.get writes each once
    v = FakeVariants()
    kept, steps = fewest_fp32_layers(v, "m", list("abcde"), prune_max=1)  # 2 found: kept
    assert kept == ("a", "b") and set(v.made) == {("a",), ("a", "b")} < pruned
    assert all(s["passed"] for s in steps[1:]) and not steps[0]["passed"]
    assert "onnx-int8" in CHEAP_VARIANTS and "pte-int8" not in CHEAP_VARIANTS
    v = FakeVariants()
    assert fewest_fp32_layers(v, "m", list("abcde"), prune_max=2)[0] == ("b",)  # short: pruned


def test_ranking_by_sqnr_alone_exports_nothing():
    v = FakeVariants()
    rows = ranked_layers(v, "m", Path("m.pte"), top_k=0)
    assert v.made == [] and [r["node"] for r in rows] == ["a", "b", "c"]
    assert [r["rank"] for r in rows] == [1, 2, 3] and "drop_if_fp32" not in rows[0]
    v = FakeVariants()
    rows = ranked_layers(v, "m", Path("m.pte"), top_k=2)  # the full int8 and one per layer
    assert sorted(v.made) == [(), ("a",), ("b",)] and rows[0]["node"] == "b"


class NeedsPrefix(FakeVariants):
    """A model that passes once layer "n26" is kept fp32 (rank 27 of 40)."""

    def get(self, method, fp32=()):
        self.made.append(tuple(fp32))
        passed = "n26" in fp32
        return Path("m.pte"), {"passed": passed, "accuracy_drop_points": 0.1 if passed else 3.0}


def test_costly_formats_bisect_a_long_prefix_only_to_an_eighth():
    order = [f"n{i}" for i in range(40)]
    kept, steps = fewest_fp32_layers(NeedsPrefix(), "m", order, prune_max=8)
    assert [s["fp32_layers"] for s in steps] == [1, 2, 4, 8, 16, 32, 24, 28]
    assert kept == tuple(order[:28])  # within 32 // 8 of the shortest, 27
    kept, steps = fewest_fp32_layers(NeedsPrefix(), "m", order)  # cheap: exact, then pruned
    assert kept == ("n26",) and [s["fp32_layers"] for s in steps][:10] == [
        1, 2, 4, 8, 16, 32, 24, 28, 26, 27]  # then each of the 27 dropped again
