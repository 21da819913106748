#!/usr/bin/env bash
# `make bench-arm`: `edgekit bench` of the same artifacts on this machine and on an emulated
# Raspberry Pi 4 (cortex-a72) and Pi 5 (cortex-a76), then `edgekit bench compare` of the three.
#
#   tools/bench-arm.sh RUN/export/model.int8.onnx RUN/export/model.onnx
#   BENCH_ARGS="--runs 10 --warmup 2" CPUS="cortex-a76" tools/bench-arm.sh ARTIFACT...
#
# The aarch64 side is the base install (no torch): ONNX artifacts only. Writes
# build/arm-bench/bench-<machine>.json, compare.md and compare.png. Emulated latencies are
# qemu-user's, not a Pi's: the JSON says `"emulated": true` and the table and chart say so.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${OUT:-build/arm-bench}
cpus=${CPUS:-cortex-a72 cortex-a76}
read -r -a bench_args <<< "${BENCH_ARGS:---runs 20 --warmup 3}"
[ "$#" -gt 0 ] || { echo "usage: tools/bench-arm.sh ARTIFACT.onnx..." >&2; exit 2; }
for a in "$@"; do
  case "$a" in
    *.onnx) [ -f "$a" ] || { echo "bench-arm: no such artifact: $a" >&2; exit 2; } ;;
    *) echo "bench-arm: expected .onnx artifacts (the emulated Pi has no torch), got $a" >&2
       exit 2 ;;
  esac
done

env_dir=$(bash tools/arm-env.sh | tail -n 1)
rm -rf "$out" && mkdir -p "$out"
"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$out/dist" . >&2
"$python" -m pip install -q --no-deps --target "$out/edgekit" "$out"/dist/edgekit-*.whl >&2

"$python" -m edgekit bench "$@" --threads 1 "${bench_args[@]}" --out "$out/bench-x86_64.json"
files=("$out/bench-x86_64.json")
for cpu in $cpus; do
  echo "bench-arm: $cpu (emulated)" >&2
  QEMU_CPU=$cpu PYTHONPATH=$PWD/$out/edgekit "$env_dir/bin/python3" -m edgekit bench "$@" \
    --threads 1 "${bench_args[@]}" --out "$out/bench-$cpu.json"
  files+=("$out/bench-$cpu.json")
done
"$python" -m edgekit bench compare "${files[@]}" --chart "$out/compare.png" | tee "$out/compare.md"
