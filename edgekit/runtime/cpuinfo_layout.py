"""Does ExecuTorch's XNNPACK read this CPU's features through torch's cpuinfo, in another layout?

XNNPACK picks its kernels at run time from cpuinfo's feature table, the global `cpuinfo_isa`
(`cpuinfo_has_arm_neon_dot()` is an inline read of one of its bytes). executorch 1.0.1's aarch64
`_portable_lib.so` carries no cpuinfo of its own: `cpuinfo_isa` is an undefined symbol there,
resolved from torch's `libtorch_cpu.so`. Its XNNPACK was compiled against a cpuinfo whose
`struct cpuinfo_arm_isa` has `uint32_t smelen` after `svelen`; torch 2.9.1's has not. So every
flag from `rdm` on is read 4 bytes too far: XNNPACK's `dot` is torch's `aes`, its `rdm` and
`fp16arith` are torch's `fcma` and `fhm`. On a CPU with AES but no dot product (an emulated
Cortex-A72; Cortex-A53/A57/A72 boards with the crypto extension) XNNPACK runs SDOT kernels and
the process dies with SIGILL. A Raspberry Pi 4 has no AES (its /proc/cpuinfo lists
`fp asimd evtstrm crc32 cpuid`), so it reads `dot` false, as it should.

    why = diagnosis()            # one line, or None when int8 .pte is safe here
    fix_cpuinfo_isa()            # opt-in (EDGEKIT_PTE_FIX_CPUINFO=1), after `import torch`

torch-free and cheap: the symbols come from the ELF files on disk, the CPU's features from
getauxval(AT_HWCAP) (what cpuinfo itself reads) or /proc/cpuinfo.
"""

from __future__ import annotations

import os
import struct
from importlib import metadata
from pathlib import Path

FIX_ENV = "EDGEKIT_PTE_FIX_CPUINFO"  # "1": rewrite torch's cpuinfo_isa before the first call

# The flags after `svelen` (and `smelen`, where the header has it), in struct order, with the
# Linux HWCAP name (/proc/cpuinfo "Features" word) that cpuinfo sets each one from.
TAIL = ("rdm", "fp16arith", "dot", "jscvt", "fcma", "fhm", "aes", "sha1", "sha2", "pmull",
        "crc32")
HWCAP_WORD = {"rdm": "asimdrdm", "fp16arith": "asimdhp", "dot": "asimddp", "jscvt": "jscvt",
              "fcma": "fcma", "fhm": "asimdfhm", "aes": "aes", "sha1": "sha1", "sha2": "sha2",
              "pmull": "pmull", "crc32": "crc32"}
# Linux arm64 HWCAP bits (uapi asm/hwcap.h) -> the same words.
HWCAP_BITS = {0: "fp", 1: "asimd", 2: "evtstrm", 3: "aes", 4: "pmull", 5: "sha1", 6: "sha2",
              7: "crc32", 8: "atomics", 9: "fphp", 10: "asimdhp", 11: "cpuid", 12: "asimdrdm",
              13: "jscvt", 14: "fcma", 15: "lrcpc", 16: "dcpop", 17: "sha3", 18: "sm3",
              19: "sm4", 20: "asimddp", 21: "sha512", 22: "sve", 23: "asimdfhm"}
AT_HWCAP = 16
# The flags XNNPACK chooses aarch64 kernels by (dot: the qs8/qu8 SDOT GEMMs that int8 runs on).
KERNEL_FLAGS = ("rdm", "fp16arith", "dot")

# Whether each release's cpuinfo_arm_isa has `smelen`, read from the aarch64 wheels: XNNPACK's
# hardware config loads `fp16arith` and `dot` from bytes 21 and 22 of the table (its machine
# code), torch's table is 28 bytes (no smelen: `dot` at 18) or 32 (at 22). Releases not listed
# are not judged: no diagnosis, no correction.
XNNPACK_HAS_SMELEN = {"1.0.1": True, "1.1.0": True}  # executorch's, bound to torch's cpuinfo
TORCH_HAS_SMELEN = {"2.9.1": False, "2.10.0": True}  # cpuinfo_isa: 28 and 32 bytes
# What to do instead. No PyPI pair tried runs int8 .pte on such a core as installed: the pair
# whose layouts agree (executorch 1.1.0, torch 2.10.0) has a torch that dies on Armv8.0 cores
# (pi/README.md has the pairs tried).
INSTALL_FIX = ("no PyPI executorch/torch pair tried runs it on this core (pi/README.md): set "
               "EDGEKIT_PTE_FIX_CPUINFO=1 to correct torch's table before the first call, or run "
               "model.pte (fp32) or model.int8.onnx")


def cpu_words() -> set[str] | None:
    """This CPU's feature words ("aes", "asimddp", ...), or None when they cannot be read."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        libc.getauxval.argtypes = [ctypes.c_ulong]
        hwcap = int(libc.getauxval(AT_HWCAP))
    except (OSError, AttributeError):
        hwcap = 0
    if hwcap:
        return {word for bit, word in HWCAP_BITS.items() if hwcap >> bit & 1}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Features":
            return set(value.split())
    return None


def misread(words: set[str], shift: int) -> list[tuple[str, str]]:
    """(XNNPACK's flag, the torch flag it reads) for each kernel flag that would be set although
    this CPU lacks the feature, when XNNPACK reads `shift` bytes past torch's flags."""
    wrong = []
    for i, flag in enumerate(TAIL):
        if flag not in KERNEL_FLAGS or i + shift >= len(TAIL):
            continue
        read = TAIL[i + shift]
        if HWCAP_WORD[read] in words and HWCAP_WORD[flag] not in words:
            wrong.append((flag, read))
    return wrong


def installed(dist: str) -> str | None:
    try:
        return metadata.version(dist).split("+")[0]
    except metadata.PackageNotFoundError:
        return None


def package_dir(name: str) -> Path | None:
    """A top-level package's directory, found without importing it (importing torch is slow)."""
    from importlib.util import find_spec

    try:
        spec = find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def dynamic_symbol(path: Path, name: str) -> tuple[bool, int] | None:
    """(defined here, size) of `name` in an ELF64 little-endian file's .dynsym, else None.

    Reads the section headers, .dynstr and .dynsym only (libtorch_cpu.so is ~400 MB).
    """
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:6] != b"\x7fELF\x02\x01":
            return None
        shoff, = struct.unpack_from("<Q", head, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", head, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize)
                    for i in range(shnum)]

        def read(sec) -> bytes:
            f.seek(sec[4])
            return f.read(sec[5])

        for sec in sections:
            if sec[1] != 11:  # SHT_DYNSYM
                continue
            names, key = read(sections[sec[6]]), name.encode() + b"\0"
            # every place the name ends a string: linkers share tails ("__libc_malloc")
            starts, at = set(), names.find(key)
            while at >= 0:
                starts.add(at)
                at = names.find(key, at + 1)
            for name_at, _, _, shndx, _, size in struct.iter_unpack("<IBBHQQ", read(sec)):
                if name_at in starts:
                    return shndx != 0, size
        return None


def torch_cpuinfo_copies() -> list[Path]:
    """torch's libraries that define `cpuinfo_isa` (libtorch_cpu.so, libc10.so), when executorch's
    `_portable_lib` leaves it undefined: it binds to the first in its NEEDED order, libtorch_cpu.
    Empty when executorch carries its own cpuinfo, or either package is missing."""
    et, torch = package_dir("executorch"), package_dir("torch")
    if et is None or torch is None:
        return []
    libs = sorted((et / "extension" / "pybindings").glob("_portable_lib*.so"))
    try:
        if not libs or (dynamic_symbol(libs[0], "cpuinfo_isa") or (True, 0))[0]:
            return []
        copies = [torch / "lib" / name for name in ("libtorch_cpu.so", "libc10.so")]
        return [lib for lib in copies
                if lib.is_file() and (dynamic_symbol(lib, "cpuinfo_isa") or (False, 0))[0]]
    except (OSError, struct.error, ValueError):
        return []


def layout_shift(executorch: str | None, torch: str | None) -> int | None:
    """Bytes XNNPACK reads past torch's flags for a known pair (0: they agree); None: unknown."""
    xnn, tor = XNNPACK_HAS_SMELEN.get(executorch or ""), TORCH_HAS_SMELEN.get(torch or "")
    if xnn is None or tor is None:
        return None
    return 4 * (int(xnn) - int(tor))


def diagnosis(words: set[str] | None = None) -> str | None:
    """One line when this executorch/torch pair would run XNNPACK kernels this CPU lacks, else
    None (another pair, another layout, a CPU the misread flags happen to suit, or not ARM)."""
    import platform

    if platform.machine() not in ("aarch64", "arm64"):
        return None
    et, torch = installed("executorch"), installed("torch")
    shift = layout_shift(et, torch)
    if not shift or not torch_cpuinfo_copies():
        return None
    words = cpu_words() if words is None else words
    wrong = misread(words or set(), shift)
    if not wrong:
        return None
    flags = ", ".join(f"its `{x}` from torch's `{t}`" for x, t in wrong)
    return (f"int8 .pte would die with SIGILL here: executorch {et}'s XNNPACK reads this CPU's "
            f"features from torch {torch}'s cpuinfo, whose struct layout differs by {shift} "
            f"bytes ({flags}; this CPU lacks "
            f"{', '.join(HWCAP_WORD[x] for x, _ in wrong)}); {INSTALL_FIX}")


def fix_requested() -> bool:
    return os.environ.get(FIX_ENV, "") == "1"


def fix_cpuinfo_isa() -> list[str]:
    """Rewrite torch's `cpuinfo_isa` so both readers see only features this CPU has.

    Call after `import torch`, before ExecuTorch runs a program. Each byte XNNPACK reads as one
    of its flags is set to (XNNPACK's flag present) and (torch's flag at that byte present), so
    neither library picks an instruction this CPU lacks; bytes past torch's struct are not
    touched. A no-op for pairs not known to differ.

    Returns:
        "FLAG: OLD -> NEW" per byte changed (empty when nothing changed).
    """
    import ctypes

    shift = layout_shift(installed("executorch"), installed("torch"))
    words = cpu_words()
    if not shift or words is None:
        return []
    # Each copy has its own cpuinfo_initialize and once-guard, and each writes the table the
    # dynamic linker bound first (libtorch_cpu's): run them all before rewriting, or a later
    # first call (libc10's) would write the misread flags back.
    libs = []
    for path in torch_cpuinfo_copies():
        lib = ctypes.CDLL(str(path))  # the copy torch loaded: same path, same handle
        lib.cpuinfo_initialize.restype = ctypes.c_bool
        lib.cpuinfo_initialize()
        libs.append((path, lib))
    changed = []
    for path, lib in libs:
        size = dynamic_symbol(path, "cpuinfo_isa")[1]
        table = (ctypes.c_uint8 * size).in_dll(lib, "cpuinfo_isa")
        if not any(table):  # a copy nobody filled in: the initializers wrote the other one
            continue
        # The struct ends [u32 svelen][11 flags][1 pad byte]: torch's rdm is 12 from the end.
        rdm = size - 12
        for i, flag in enumerate(TAIL[:len(TAIL) - shift]):
            want = int(HWCAP_WORD[flag] in words and HWCAP_WORD[TAIL[i + shift]] in words)
            if table[rdm + shift + i] != want:
                changed.append(f"{path.name} {flag}: {table[rdm + shift + i]} -> {want}")
                table[rdm + shift + i] = want
    return changed
