"""ExecuTorch runner: a `.pte` program on ExecuTorch's Python runtime (XNNPACK on the CPU).

ExecuTorch's Python runtime links libtorch, so `.pte` needs torch and executorch on the machine
(`pip install 'edgekit[pte]'`); the .onnx artifacts need neither. The program carries its
manifest as the constant method `edgekit_manifest`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, one_line
from edgekit.runtime import cpuinfo_layout
from edgekit.runtime.runner import Runner, embedded_or_listed

MANIFEST_METHOD = "edgekit_manifest"  # edgekit.exporting.formats.pte writes it
NEEDS = ("`.pte` needs torch and executorch on this machine: pip install 'edgekit[pte]'; the "
         ".onnx artifacts need neither")


class PteRunner(Runner):
    backend = "executorch"

    def __init__(self, path: Path, listed: dict | None, threads: int | None = None,
                 device: str = "cpu", index: int | None = None):
        if device != "cpu":
            raise EdgekitError(f"{path.name} runs on the CPU (ExecuTorch XNNPACK); use "
                               "--device cpu, or the ONNX model on CUDA")
        try:
            import torch

            quiet_torchao_registration()
            if cpuinfo_layout.fix_requested():  # before XNNPACK reads the table
                fix_cpuinfo()
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError:
            raise EdgekitError(f"{path.name}: {NEEDS}") from None
        try:
            with _quiet_stderr():  # the runtime logs its CPU probing and threadpool resets
                if threads:
                    portable_lib._unsafe_reset_threadpool(threads)
                program = Runtime.get().load_program(path)
                embedded = (program.load_method(MANIFEST_METHOD).execute([])[0]
                            if MANIFEST_METHOD in program.method_names else None)
        except Exception as e:  # ExecuTorch raises RuntimeError/ValueError variants
            raise EdgekitError(f"{str(path)!r} is not a valid ExecuTorch program: "
                               f"{one_line(e)}") from None
        manifest = embedded_or_listed(path, embedded, listed)
        refuse_if_it_would_die(path, manifest)  # before XNNPACK sets up the int8 kernels
        try:
            with _quiet_stderr():
                self.method = program.load_method("forward")
        except Exception as e:
            raise EdgekitError(f"{str(path)!r} is not a valid ExecuTorch program: "
                               f"{one_line(e)}") from None
        super().__init__(path, manifest, "cpu")
        if self.manifest is None:
            raise EdgekitError(f"{str(path)!r} carries no input shape (no edgekit manifest)")
        self._torch = torch
        self.input_name = self.manifest["input"]["name"]
        self.input_shape = self.manifest["input"]["shape"]
        self.input_dtype = self.manifest["input"]["dtype"]
        self.output_shape = []  # a .pte does not declare it; checked on first use
        # The program's memory is planned for batches up to its inputs' recorded sizes.
        self.max_batch = int(self.method.metadata.input_tensor_meta(0).sizes()[0])
        self._ready()

    def use_threads(self, threads: int) -> None:
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != threads:  # process-wide
            with _quiet_stderr():  # it logs every reset
                portable_lib._unsafe_reset_threadpool(threads)

    def _execute(self, *arrays: np.ndarray) -> list:
        inputs = [self._torch.from_numpy(a) for a in arrays]
        try:
            return self.method.execute(inputs)
        except Exception as e:
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise EdgekitError(f"{self.path.name}: inference failed on input {shapes}: "
                               f"{self._failed_operator(inputs)}{one_line(e)}") from None

    def _failed_operator(self, inputs: list) -> str:
        """Which kernel failed, from ExecuTorch's log of a second try ("operator full: ...").

        The runtime names the failing kernel only in its C++ log on stderr, so the failed call
        is repeated once with that log captured.
        """
        import re
        import tempfile

        with tempfile.TemporaryFile() as log:
            with _quiet_stderr(log.fileno()), suppress(Exception):
                self.method.execute(inputs)
            log.seek(0)
            text = log.read().decode(errors="replace")
        found = re.search(r"\[op_(\w+)\.cpp:\d+\][^\n]*?:\s*([^\n]*)", text)
        return f"operator {found.group(1)}: {one_line(found.group(2), 120)}; " if found else ""

    def _run(self, x: np.ndarray) -> np.ndarray:
        parts = [self._execute(x[i:i + self.max_batch])[0].numpy()
                 for i in range(0, len(x), self.max_batch)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_state(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs, states = [], []
        for i in range(0, len(x), self.max_batch):  # state (L, B, H): its batch is dim 1
            out, new = self._execute(x[i:i + self.max_batch],
                                     np.ascontiguousarray(state[:, i:i + self.max_batch]))
            outs.append(out.numpy())
            states.append(new.numpy())
        return np.concatenate(outs), np.concatenate(states, axis=1)


def is_int8(path: Path, manifest: dict | None) -> bool:
    """Whether a .pte holds an int8 program: its manifest says so, else its file name."""
    precision = ((manifest or {}).get("artifact") or {}).get("precision")
    return precision == "int8" if precision else ".int8." in path.name


def refusal(path: Path, manifest: dict | None) -> str | None:
    """Why this machine must not run `path`: an int8 program whose XNNPACK kernels would be
    chosen from a misread CPU feature table (edgekit.runtime.cpuinfo_layout), else None."""
    if not is_int8(path, manifest) or cpuinfo_layout.fix_requested():
        return None
    return cpuinfo_layout.diagnosis()


def refuse_if_it_would_die(path: Path, manifest: dict | None) -> None:
    why = refusal(path, manifest)
    if why:
        raise EdgekitError(f"{path.name}: {why}")


def fix_cpuinfo() -> None:
    """EDGEKIT_PTE_FIX_CPUINFO=1: correct torch's cpuinfo table for XNNPACK (after import torch)."""
    try:
        cpuinfo_layout.fix_cpuinfo_isa()
    except (OSError, ValueError, KeyError) as e:
        raise EdgekitError(f"{cpuinfo_layout.FIX_ENV}=1: could not correct torch's cpuinfo "
                           f"table: {one_line(e)}; unset it") from None


def quiet_torchao_registration() -> None:
    """torchao (imported by executorch) registers an Enum with torch's pytree, and torch >= 2.14
    logs a deprecation warning about it on every import: noise for users, not theirs to fix."""
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


@contextmanager
def _quiet_stderr(into: int | None = None):
    """Send file descriptor 2 to /dev/null (or the descriptor `into`) inside the block: the
    runtime's C++ log, which Python's warning and logging filters never see."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno() if into is None else into, 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
