#!/usr/bin/env bash
# Install the torch-free edgekit runtime into a venv on a Pi (or any aarch64 Linux).
#   bash pi/install-runtime.sh [WHEEL_OR_SOURCE_DIR] [VENV_DIR]
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/.." && pwd)}
venv=${2:-$HOME/edgekit/.venv}

case "$(uname -m)" in
  aarch64|arm64|x86_64) ;;
  *) echo "error: $(uname -m) is not supported; expected aarch64 (64-bit Raspberry Pi OS) or x86_64" >&2
     exit 1 ;;
esac
python3 -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null || {
  echo "error: $(python3 --version 2>&1) is too old; expected Python 3.10 or newer" >&2; exit 1; }

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install "$src"
"$venv/bin/edgekit" --version
echo "installed: source $venv/bin/activate"
