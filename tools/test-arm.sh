#!/usr/bin/env bash
# `make test-arm`: edgekit on an emulated Raspberry Pi 4 (cortex-a72) and Pi 5 (cortex-a76).
# Builds or reuses the cached aarch64 environment (tools/arm-env.sh), installs this checkout's
# edgekit wheel for it (the base install: no torch), then runs the tests marked `arm`.
# Extra arguments go to pytest, e.g. tools/test-arm.sh -k doctor.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=build/arm

env_dir=$(bash tools/arm-env.sh | tail -n 1)

# The wheel, not the source tree: the Pi gets what `pip install edgekit` would give it.
rm -rf "$out/dist" "$out/edgekit"
mkdir -p "$out"
"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$out/dist" . >&2
"$python" -m pip install -q --no-deps --target "$out/edgekit" "$out"/dist/edgekit-*.whl >&2

rm -f "$out"/bench-*.json "$out"/logits-*.npz "$out"/report.md
export EDGEKIT_ARM_ENV=$env_dir EDGEKIT_ARM_SITE=$PWD/$out/edgekit EDGEKIT_ARM_OUT=$PWD/$out
status=0
"$python" -m pytest -m arm -p no:cacheprovider tests "$@" | tee "$out/pytest.log" || status=$?
# x86 vs emulated Pi 4 / Pi 5 on the same artifacts (what the tests measured and compared).
if ls "$out"/bench-*.json >/dev/null 2>&1; then
  "$python" tools/arm_report.py "$out" || status=1
fi
# pytest's summary last, where CI reads it.
tail -n 1 "$out/pytest.log"
exit "$status"
