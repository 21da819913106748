#!/usr/bin/env bash
# Path A in one command: the torch-free edgekit runtime (numpy, onnxruntime, click, PyYAML,
# Pillow) in a venv on a Raspberry Pi 4/5 with 64-bit Raspberry Pi OS, then `edgekit doctor`.
#
#   bash install.sh                    # the edgekit wheel beside this script, or this checkout
#   bash install.sh edgekit-0.1.0-py3-none-any.whl
#   bash install.sh --venv ~/ek/.venv --yes
#
# Options:
#   SOURCE         an edgekit wheel or source folder (default: an edgekit-*.whl beside this
#                  script, else the checkout this script is in)
#   --venv DIR     the venv to create or update (default ~/edgekit/.venv)
#   --yes          install python3-venv with apt without asking, if it is missing
#   --no-doctor    skip the `edgekit doctor` check at the end
#   --torch        also install torch for TorchScript (.ts) artifacts: PyTorch's CPU-only
#                  aarch64 wheel (TORCH_VERSION, default 2.9.1, the newest that ran on both a
#                  Pi 4 and a Pi 5 core; see pi/README.md, path B). Never `pip install torch`
#                  from PyPI on a Pi: its aarch64 torch >= 2.11 is a CUDA build (gigabytes).
#   --pte          also install ExecuTorch for .pte artifacts (implies --torch): executorch
#                  EXECUTORCH_VERSION (default 1.0.1, the aarch64 release built against torch
#                  2.9.1) with --no-deps and the four pure-Python modules its runtime imports.
#                  Its int8 .pte runs on a Pi 4/5; on a board whose CPU has AES but no dot product
#                  edgekit refuses it (doctor says why; EDGEKIT_PTE_FIX_CPUINFO=1, pi/README.md)
# Re-running it upgrades edgekit in place. Without --torch it never installs torch (the .onnx
# artifacts need none); path C, pi/build_pytorch.sh, builds it from source.
# onnxruntime 1.21.0 is excluded: it dies with "Illegal instruction" on a Pi 4 (#23957).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=$HOME/edgekit/.venv
src=""
yes=0
doctor=1
torch=0
torch_version=${TORCH_VERSION:-2.9.1}
torch_index=https://download.pytorch.org/whl/cpu
pte=0
executorch_version=${EXECUTORCH_VERSION:-1.0.1}

die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --venv) venv=${2:?--venv needs a value}; shift ;;
    --yes|-y) yes=1 ;;
    --no-doctor) doctor=0 ;;
    --torch) torch=1 ;;
    --pte) pte=1; torch=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1'; see --help" ;;
    *) [ -z "$src" ] || die "one SOURCE only, got '$src' and '$1'"; src=$1 ;;
  esac
  shift
done

if [ -z "$src" ]; then
  wheels=("$here"/edgekit-*.whl)
  if [ -f "${wheels[-1]}" ]; then
    src=${wheels[-1]}  # the newest by name, when several were copied over
  elif [ -f "$here/../pyproject.toml" ]; then
    src=$(cd "$here/.." && pwd)
  else
    die "no edgekit wheel beside $0 and no checkout around it: pass SOURCE (a .whl or folder)"
  fi
fi
[ -e "$src" ] || die "SOURCE '$src' does not exist; expected an edgekit .whl or source folder"

arch=$(uname -m)
case $arch in
  aarch64|arm64) ;;
  x86_64) echo "note: $arch, not a Pi: installing the same runtime anyway" ;;
  armv7l|armv6l) die "$arch is a 32-bit OS: onnxruntime publishes no 32-bit ARM wheels; install the 64-bit Raspberry Pi OS" ;;
  *) die "$arch is not supported; expected aarch64 (64-bit Raspberry Pi OS) or x86_64" ;;
esac
command -v python3 >/dev/null || die "python3 not found; Raspberry Pi OS ships it: sudo apt install python3"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$(python3 --version 2>&1) is too old; edgekit needs Python 3.10 or newer (Bookworm has 3.11)"

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "python3-venv is missing (needed to create $venv)"
  if [ "$yes" != 1 ]; then
    [ -t 0 ] || die "python3-venv is missing: install it (sudo apt install python3-venv) or pass --yes"
    read -r -p "Install it with apt now? [y/N] " answer
    [[ $answer =~ ^[Yy] ]] || die "cancelled: sudo apt install python3-venv, then rerun"
  fi
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# pip picks onnxruntime's and numpy's aarch64 wheels from PyPI: nothing is compiled.
"$venv/bin/python" -m pip install --upgrade "$src" 'onnxruntime>=1.20,!=1.21.0'
if [ "$torch" = 1 ]; then
  # --index-url: the CPU-only wheel; PyPI's aarch64 torch >= 2.11 pulls in CUDA 13.
  "$venv/bin/python" -m pip install "torch==$torch_version" --index-url "$torch_index"
fi
if [ "$pte" = 1 ]; then
  # --no-deps: executorch's requirements are its export toolchain (coremltools, pandas, ...).
  "$venv/bin/python" -m pip install --no-deps "executorch==$executorch_version" ruamel.yaml \
    flatbuffers tabulate packaging
fi
"$venv/bin/edgekit" --version
if [ "$doctor" = 1 ]; then
  "$venv/bin/edgekit" doctor || echo "install.sh: edgekit is installed, but doctor found problems (above)" >&2
fi
echo "installed: source $venv/bin/activate"
