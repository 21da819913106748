"""How fast a prediction run went: counts and times, for the line `edgekit predict` ends with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Throughput:
    """Counts and times of one prediction run, filled in by predict_files()."""

    batch: int
    inputs: int = 0
    failed: int = 0
    seconds: float = 0.0  # wall time, first decode to last result (loading and warm-up before)
    prepare_seconds: float = 0.0  # decoding + preprocessing (overlaps inference)
    infer_seconds: float = 0.0  # runner.infer: the model plus decoding its outputs (per lane)
    lanes: int = 1  # model calls at once (edgekit.runtime.batch.lanes_for)
    bytes_read: int = 0  # of the tables streamed (predict_rows), for a progress bar

    def line(self) -> str:
        """One line for the end of `edgekit predict`."""
        done = self.inputs - self.failed
        rate = done / self.seconds if self.seconds > 0 else float("inf")
        model_rate = done / self.infer_seconds if self.infer_seconds > 0 else float("inf")
        skipped = f", {self.failed} skipped" if self.failed else ""
        lanes = f" in {self.lanes} lanes" if self.lanes > 1 else ""
        return (f"{done} input(s){skipped} in {self.seconds:.2f} s: {rate:.1f} inputs/s end to "
                f"end, batch {self.batch}{lanes} (model {self.infer_seconds:.2f} s, "
                f"{model_rate:.1f} inputs/s; preprocessing {self.prepare_seconds:.2f} s)")

    def as_dict(self) -> dict:
        done = self.inputs - self.failed
        return {"inputs": self.inputs, "failed": self.failed, "batch": self.batch,
                "seconds": self.seconds, "inputs_per_second": done / self.seconds
                if self.seconds > 0 else None, "model_seconds": self.infer_seconds,
                "lanes": self.lanes, "preprocess_seconds": self.prepare_seconds}
