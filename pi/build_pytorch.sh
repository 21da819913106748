#!/usr/bin/env bash
# Build PyTorch (and the matching torchvision) from source into wheels on a Raspberry Pi 4 or 5,
# for when the published aarch64 wheels die with "Illegal instruction" on your CPU or pull in
# CUDA packages. Takes hours; resumable; every step is logged.
#
#   bash pi/build_pytorch.sh                      # torch 2.9.1 + torchvision 0.24.1, asks first
#   bash pi/build_pytorch.sh --dry-run            # print every step, change nothing
#   bash pi/build_pytorch.sh --yes                # unattended (e.g. under nohup or tmux)
#   bash pi/build_pytorch.sh --restore-swap       # undo the swap change of an interrupted run
#
# Steps (each one is skipped on a rerun once it has finished, so an interrupted build resumes):
#   preflight  aarch64, OS and glibc, Python, free disk, RAM + swap (>= 8 GB together)
#   swap       raise swap if RAM + swap is short (dphys-swapfile incl. CONF_MAXSWAP; on images
#              with rpi-swap, whose config needs a reboot, a temporary swap file); restored at
#              the end, or by --restore-swap after an interruption
#   apt        compilers, OpenBLAS, image libraries, python3-venv
#   venv       a build venv in WORKDIR
#   clone      shallow clone of the release tag, submodules included
#   requirements  PyTorch's pip requirements, CMake >= 3.27 and ninja from pip
#   build      the torch wheel (Pi settings: no CUDA/MKLDNN/FBGEMM/distributed, QNNPACK + XNNPACK
#              + NNPACK, OpenBLAS, MAX_JOBS from memory, USE_MIMALLOC=0 on a Pi 4)
#   vision     the torchvision wheel from the matching tag
#   install    both wheels into the target venv (default ~/edgekit/.venv)
#   verify     qnnpack among the quantized engines; a TorchScript int8 model runs
#
# Options:
#   --version V      PyTorch release (default 2.9.1)     --vision V   torchvision (default: matching)
#   --workdir DIR    sources, wheels, log, state (default ~/pytorch-build)
#   --venv DIR       where to install the wheels (default ~/edgekit/.venv)
#   --jobs N         compile jobs (default: one per 2.5 GB of RAM, at most one per core)
#   --no-swap        leave swap alone (containers, or you manage it yourself)
#   --verify-model F also run this edgekit TorchScript int8 model (model.int8.ts) at the end
#   --log FILE       log file (default WORKDIR/build.log)
#   --dry-run        print the plan and every command; run nothing, write nothing
#   --yes            do not ask before changing the system
#   --any-arch       with --dry-run only: plan on a machine that is not aarch64 (e.g. to review
#                    the plan on a workstation); a real build always runs on the Pi itself
# With --dry-run, PLAN_RAM_MB, PLAN_SWAP_MB, PLAN_SWAP_TOOL (dphys-swapfile|rpi-swap|swapfile)
# and PLAN_CPU_PART (0xd08 Pi 4, 0xd0b Pi 5) stand in for this machine's facts, to preview the
# plan for a given Pi.
set -euo pipefail

VERSION=2.9.1
VISION=""
WORKDIR=$HOME/pytorch-build
VENV=$HOME/edgekit/.venv
JOBS=""
NO_SWAP=0
VERIFY_MODEL=""
LOG=""
DRY_RUN=0
YES=0
ANY_ARCH=0
RESTORE_ONLY=0
MIN_MEMORY_MB=8192    # RAM + swap the build needs (the largest translation units take ~2 GB)
MIN_DISK_GB=20        # sources with submodules ~4 GB, build tree ~10 GB, wheels, venv
MB_PER_JOB=2560

# torch release -> the torchvision release built against it (pytorch/vision's release table).
vision_for() {
  case $1 in
    2.10.0) echo 0.25.0 ;; 2.9.1) echo 0.24.1 ;; 2.9.0) echo 0.24.0 ;; 2.8.0) echo 0.23.0 ;;
    2.7.1) echo 0.22.1 ;; 2.7.0) echo 0.22.0 ;; 2.6.0) echo 0.21.0 ;; 2.5.1) echo 0.20.1 ;;
    *) return 1 ;;
  esac
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
say() { printf '%s\n' "$*"; }
step() { printf '\n== %s: %s\n' "$1" "$2"; }
die() { printf 'build_pytorch.sh: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --version) VERSION=${2:?--version needs a value}; shift ;;
    --vision) VISION=${2:?--vision needs a value}; shift ;;
    --workdir) WORKDIR=${2:?--workdir needs a value}; shift ;;
    --venv) VENV=${2:?--venv needs a value}; shift ;;
    --jobs) JOBS=${2:?--jobs needs a value}; shift ;;
    --verify-model) VERIFY_MODEL=${2:?--verify-model needs a value}; shift ;;
    --log) LOG=${2:?--log needs a value}; shift ;;
    --no-swap) NO_SWAP=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --yes|-y) YES=1 ;;
    --any-arch) ANY_ARCH=1 ;;
    --restore-swap) RESTORE_ONLY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1'; see --help" ;;
  esac
  shift
done

[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--version '$VERSION': expected a release like 2.9.1"
if [ -z "$VISION" ]; then
  VISION=$(vision_for "$VERSION") \
    || die "no known torchvision for torch $VERSION: pass --vision (see pytorch/vision's README)"
fi
[[ $VISION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--vision '$VISION': expected a release like 0.24.1"
if [ -n "$JOBS" ] && ! [[ $JOBS =~ ^[1-9][0-9]*$ ]]; then
  die "--jobs '$JOBS': expected a positive integer"
fi
if [ -n "$VERIFY_MODEL" ] && [ "$DRY_RUN" = 0 ] && [ ! -f "$VERIFY_MODEL" ]; then
  die "--verify-model '$VERIFY_MODEL' does not exist; expected an edgekit model.int8.ts file"
fi

STATE=$WORKDIR/.state
LOG=${LOG:-$WORKDIR/build.log}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# run CMD...: print it, and run it unless --dry-run.
run() {
  printf '+ %s\n' "$*"
  [ "$DRY_RUN" = 1 ] || "$@"
}
# done_step NAME / mark NAME: resumability, one marker file per finished step.
done_step() { [ -f "$STATE/$1.done" ]; }
mark() { [ "$DRY_RUN" = 1 ] || { mkdir -p "$STATE"; date -u +%FT%TZ > "$STATE/$1.done"; }; }
skip_if_done() {
  if done_step "$1"; then say "skip: finished on $(cat "$STATE/$1.done") (delete $STATE/$1.done to redo)"; return 0; fi
  return 1
}

# --- facts -------------------------------------------------------------------------------
ARCH=$(uname -m)
CPU_PART=$(awk -F': *' '/^CPU part/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
BOARD=$( { tr -d '\0' < /proc/device-tree/model; } 2>/dev/null || echo "not a Raspberry Pi")
RAM_MB=$(awk '/^MemTotal/ { print int($2 / 1024) }' /proc/meminfo)
SWAP_MB=$(awk '/^SwapTotal/ { print int($2 / 1024) }' /proc/meminfo)
NPROC=$(nproc)
OS_ID=$(awk -F= '$1 == "ID" || $1 == "VERSION_CODENAME" { gsub(/"/, "", $2); v[$1] = $2 }
  END { print (v["ID"] ? v["ID"] : "unknown") " " v["VERSION_CODENAME"] }' /etc/os-release 2>/dev/null || echo unknown)
GLIBC=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }' || true)
PYTHON_VERSION=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
mkdir_probe=$WORKDIR
while [ ! -d "$mkdir_probe" ]; do mkdir_probe=$(dirname "$mkdir_probe"); done
DISK_GB=$(df -Pk "$mkdir_probe" | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "$DRY_RUN" = 1 ]; then
  RAM_MB=${PLAN_RAM_MB:-$RAM_MB}
  SWAP_MB=${PLAN_SWAP_MB:-$SWAP_MB}
  CPU_PART=${PLAN_CPU_PART:-$CPU_PART}
fi
case $CPU_PART in
  0xd08) CORE="Cortex-A72 (Raspberry Pi 4)" ;;
  0xd0b) CORE="Cortex-A76 (Raspberry Pi 5)" ;;
  0xd03) CORE="Cortex-A53 (Raspberry Pi 3 / Zero 2)" ;;
  *) CORE="${CPU_PART:-unknown core}" ;;
esac
if [ -z "$JOBS" ]; then
  JOBS=$(( RAM_MB / MB_PER_JOB ))
  [ "$JOBS" -ge 1 ] || JOBS=1
  [ "$JOBS" -le "$NPROC" ] || JOBS=$NPROC
fi
if [ -f /etc/dphys-swapfile ] && command -v dphys-swapfile >/dev/null; then
  SWAP_TOOL=dphys-swapfile
elif [ -e /etc/rpi/swap.conf ] || command -v rpi-swap >/dev/null \
     || [ -e /usr/lib/systemd/system-generators/rpi-swap-generator ]; then
  SWAP_TOOL=rpi-swap
else
  SWAP_TOOL=swapfile
fi
if [ "$DRY_RUN" = 1 ] && [ -n "${PLAN_SWAP_TOOL:-}" ]; then
  case $PLAN_SWAP_TOOL in
    dphys-swapfile|rpi-swap|swapfile) SWAP_TOOL=$PLAN_SWAP_TOOL ;;
    *) die "PLAN_SWAP_TOOL '$PLAN_SWAP_TOOL': expected dphys-swapfile, rpi-swap or swapfile" ;;
  esac
fi
SWAP_SHORT_MB=$(( MIN_MEMORY_MB - RAM_MB - SWAP_MB ))
# Raise to the minimum plus 1 GB of headroom, rounded up to whole GB.
SWAP_TARGET_MB=$(( ( (MIN_MEMORY_MB + 1024 - RAM_MB + 1023) / 1024 ) * 1024 ))

SWAP_RAISED=""  # how this run (or an interrupted earlier one) raised swap
[ ! -f "$STATE/dphys-swapfile.orig" ] || SWAP_RAISED=dphys-swapfile
[ ! -f "$STATE/swapfile.added" ] || SWAP_RAISED=swapfile
restore_swap() {
  if [ "$SWAP_RAISED" = dphys-swapfile ]; then
    step swap "restoring /etc/dphys-swapfile"
    run $SUDO dphys-swapfile swapoff
    run $SUDO cp "$STATE/dphys-swapfile.orig" /etc/dphys-swapfile
    run $SUDO dphys-swapfile setup
    run $SUDO dphys-swapfile swapon
    run rm -f "$STATE/dphys-swapfile.orig"
  fi
  if [ "$SWAP_RAISED" = swapfile ]; then
    step swap "removing the temporary swap file $WORKDIR/swapfile"
    run $SUDO swapoff "$WORKDIR/swapfile"
    run $SUDO rm -f "$WORKDIR/swapfile"
    run rm -f "$STATE/swapfile.added"
  fi
  SWAP_RAISED=""
}

if [ "$RESTORE_ONLY" = 1 ]; then
  restore_swap
  say "swap: $(awk '/^SwapTotal/ { print int($2 / 1024) " MB" }' /proc/meminfo)"
  exit 0
fi

# --- preflight ----------------------------------------------------------------------------
step preflight "can this machine build torch $VERSION + torchvision $VISION?"
say "machine: $ARCH, $CORE, $NPROC cores, board: $BOARD"
say "os: $OS_ID, glibc ${GLIBC:-unknown}, python3 $PYTHON_VERSION"
say "memory: ${RAM_MB} MB RAM + ${SWAP_MB} MB swap (need >= ${MIN_MEMORY_MB} MB together); swap managed by $SWAP_TOOL"
say "disk: ${DISK_GB} GB free under $mkdir_probe (need >= ${MIN_DISK_GB} GB)"
say "jobs: MAX_JOBS=$JOBS"

if [ "$ARCH" != aarch64 ]; then
  if [ "$ANY_ARCH" = 1 ] && [ "$DRY_RUN" = 1 ]; then
    say "warning: this is $ARCH, not aarch64: printing the plan only (--any-arch --dry-run)"
  elif [ "$ANY_ARCH" = 1 ]; then
    die "--any-arch only plans (add --dry-run); the build itself must run on the Pi (aarch64), and this is $ARCH"
  else
    die "this is $ARCH; this script builds PyTorch on a 64-bit Raspberry Pi OS (aarch64). To review the plan elsewhere: bash pi/build_pytorch.sh --dry-run --any-arch"
  fi
fi
problems=()
case $OS_ID in
  debian\ bookworm|debian\ trixie|raspbian\ bookworm|raspbian\ trixie) ;;
  *) problems+=("OS '$OS_ID': tested on Raspberry Pi OS / Debian bookworm and trixie (64-bit)") ;;
esac
if [ -z "$GLIBC" ] || [ "$(printf '%s\n2.28\n' "$GLIBC" | sort -V | head -n1)" != 2.28 ]; then
  problems+=("glibc ${GLIBC:-unknown}: need 2.28 or newer (manylinux_2_28)")
fi
case $PYTHON_VERSION in
  3.10|3.11|3.12|3.13) ;;
  *) problems+=("python3 $PYTHON_VERSION: torch $VERSION builds for Python 3.10 to 3.13") ;;
esac
[ "$DISK_GB" -ge "$MIN_DISK_GB" ] || problems+=("only ${DISK_GB} GB free under $mkdir_probe: need ${MIN_DISK_GB} GB (use --workdir on a bigger disk, e.g. a USB SSD)")
if [ "$SWAP_SHORT_MB" -gt 0 ] && [ "$NO_SWAP" = 1 ]; then
  problems+=("RAM + swap is ${SWAP_SHORT_MB} MB short of ${MIN_MEMORY_MB} MB and --no-swap was given")
fi
if [ "${#problems[@]}" -gt 0 ]; then
  for p in "${problems[@]}"; do
    if [ "$DRY_RUN" = 1 ]; then say "would stop here: $p"; else say "error: $p" >&2; fi
  done
  [ "$DRY_RUN" = 1 ] || exit 1
fi

if [ "$DRY_RUN" = 1 ]; then
  say "dry run: nothing below is executed; a real run logs to $LOG"
else
  if [ "$YES" != 1 ]; then
    [ -t 0 ] || die "standard input is not a terminal: pass --yes for an unattended run"
    printf 'Build torch %s + torchvision %s in %s (hours), install into %s? [y/N] ' \
      "$VERSION" "$VISION" "$WORKDIR" "$VENV"
    read -r answer
    [[ $answer =~ ^[Yy] ]] || die "cancelled"
  fi
  mkdir -p "$WORKDIR" "$STATE"
  exec > >(tee -a "$LOG") 2>&1
  say "log: $LOG ($(date -u +%FT%TZ))"
fi

# --- swap ---------------------------------------------------------------------------------
step swap "RAM + swap >= ${MIN_MEMORY_MB} MB"
if [ "$NO_SWAP" = 1 ]; then
  say "skip: --no-swap"
elif [ -n "$SWAP_RAISED" ]; then
  say "already raised by an earlier run (restored at the end)"
elif [ "$SWAP_SHORT_MB" -le 0 ]; then
  say "enough: ${RAM_MB} MB RAM + ${SWAP_MB} MB swap"
else
  say "raising swap to ${SWAP_TARGET_MB} MB with $SWAP_TOOL (restored at the end)"
  case $SWAP_TOOL in
    dphys-swapfile)
      # CONF_MAXSWAP (default 2048) caps CONF_SWAPSIZE: raise both.
      [ -f "$STATE/dphys-swapfile.orig" ] || run cp /etc/dphys-swapfile "$STATE/dphys-swapfile.orig"
      run $SUDO dphys-swapfile swapoff
      run $SUDO sed -i -E -e "/^#?CONF_SWAPSIZE=/d" -e "/^#?CONF_MAXSWAP=/d" /etc/dphys-swapfile
      run $SUDO sh -c "printf 'CONF_SWAPSIZE=%s\nCONF_MAXSWAP=%s\n' $SWAP_TARGET_MB $SWAP_TARGET_MB >> /etc/dphys-swapfile"
      run $SUDO dphys-swapfile setup
      run $SUDO dphys-swapfile swapon
      SWAP_RAISED=dphys-swapfile
      ;;
    rpi-swap|swapfile)
      # rpi-swap (newer images) applies /etc/rpi/swap.conf only at boot: add a swap file now.
      file=$WORKDIR/swapfile
      extra_mb=$(( SWAP_TARGET_MB - SWAP_MB ))
      run $SUDO fallocate -l "${extra_mb}M" "$file"
      run $SUDO chmod 600 "$file"
      run $SUDO mkswap "$file"
      run $SUDO swapon "$file"
      [ "$DRY_RUN" = 1 ] || echo "$file" > "$STATE/swapfile.added"
      SWAP_RAISED=swapfile
      ;;
  esac
fi
# A failed or interrupted build leaves swap raised for the rerun: say how to undo it.
on_exit() {
  local status=$?
  if [ "$status" != 0 ] && [ -n "$SWAP_RAISED" ] && [ "$DRY_RUN" = 0 ]; then
    echo "build_pytorch.sh: stopped (exit $status); swap stays raised: rerun to resume, or undo it with: bash pi/build_pytorch.sh --restore-swap" >&2
  fi
}
trap on_exit EXIT

# --- apt ----------------------------------------------------------------------------------
step apt "build tools and libraries"
APT_PACKAGES=(build-essential git ninja-build ccache pkg-config libopenblas-dev libomp-dev
              libjpeg-dev libpng-dev zlib1g-dev libffi-dev libssl-dev
              python3-dev python3-venv python3-pip)
if ! skip_if_done apt; then
  run $SUDO apt-get update
  run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
  mark apt
fi

# --- venv ---------------------------------------------------------------------------------
step venv "build venv $WORKDIR/venv"
PY=$WORKDIR/venv/bin/python
if ! skip_if_done venv; then
  run python3 -m venv "$WORKDIR/venv"
  run "$PY" -m pip install --upgrade pip setuptools wheel
  mark venv
fi
export PATH="$WORKDIR/venv/bin:$PATH"  # cmake and ninja from pip, for the builds below
say "PATH: $WORKDIR/venv/bin first"

# --- clone --------------------------------------------------------------------------------
clone() {  # clone NAME URL TAG DIR: shallow, submodules too; an interrupted clone is repaired
  local name=$1 url=$2 tag=$3 dir=$4
  if [ -d "$dir/.git" ] && [ "$DRY_RUN" = 0 ]; then
    say "$dir exists: fetching missing submodules"
  else
    run rm -rf "$dir"
    run git clone --depth 1 --branch "$tag" --recurse-submodules --shallow-submodules --jobs 4 "$url" "$dir"
  fi
  run git -C "$dir" submodule update --init --recursive --depth 1 --jobs 4
  say "$name source: $dir at $tag"
}
step clone "pytorch v$VERSION (shallow, with submodules)"
if ! skip_if_done clone; then
  clone pytorch https://github.com/pytorch/pytorch "v$VERSION" "$WORKDIR/pytorch"
  mark clone
fi

# --- requirements -------------------------------------------------------------------------
step requirements "pip: PyTorch's requirements, CMake >= 3.27, ninja"
if ! skip_if_done requirements; then
  run "$PY" -m pip install -r "$WORKDIR/pytorch/requirements.txt"
  run "$PY" -m pip install "cmake>=3.27" ninja
  mark requirements
fi

# --- build --------------------------------------------------------------------------------
# The Pi build: CPU only, no x86 back ends (MKLDNN/FBGEMM), QNNPACK for int8 TorchScript,
# XNNPACK/NNPACK for fp32, OpenBLAS. No -march flags: the compiler's default armv8-a code runs
# on every Pi 4 and Pi 5 (an "Illegal instruction" is what this build exists to avoid).
build_env=(USE_CUDA=0 USE_ROCM=0 USE_XPU=0 USE_DISTRIBUTED=0 USE_MKLDNN=0 USE_FBGEMM=0
           USE_KINETO=0 BUILD_TEST=0 USE_PYTORCH_QNNPACK=1 USE_XNNPACK=1 USE_NNPACK=1
           BLAS=OpenBLAS MAX_JOBS="$JOBS" PYTORCH_BUILD_VERSION="$VERSION"
           PYTORCH_BUILD_NUMBER=1
           # CMake 4 refuses projects that declare cmake_minimum_required < 3.5 (some of
           # PyTorch's third_party submodules still do): let it configure them.
           CMAKE_POLICY_VERSION_MINIMUM=3.5)
if [ "$CPU_PART" = 0xd08 ]; then
  # Pi 4: PyTorch turns mimalloc on for aarch64; this build keeps glibc's allocator there.
  build_env+=(USE_MIMALLOC=0)
fi
step build "torch $VERSION wheel, MAX_JOBS=$JOBS (hours; rerun to resume: the build tree is kept)"
if ! skip_if_done build; then
  say "environment: ${build_env[*]}"
  run env -C "$WORKDIR/pytorch" "${build_env[@]}" \
    "$PY" -m pip wheel --no-build-isolation --no-deps -v -w "$WORKDIR/wheels" .
  mark build
fi

# --- torchvision --------------------------------------------------------------------------
step vision "torchvision $VISION wheel against the new torch"
if ! skip_if_done vision; then
  run "$PY" -m pip install "$WORKDIR"/wheels/torch-"$VERSION"-*.whl
  clone vision https://github.com/pytorch/vision "v$VISION" "$WORKDIR/vision"
  run env -C "$WORKDIR/vision" FORCE_CUDA=0 BUILD_VERSION="$VISION" MAX_JOBS="$JOBS" \
    "$PY" -m pip wheel --no-build-isolation --no-deps -v \
    -w "$WORKDIR/wheels" .
  mark vision
fi

# --- install ------------------------------------------------------------------------------
step install "torch + torchvision into $VENV"
if ! skip_if_done install; then
  [ -x "$VENV/bin/python" ] || run python3 -m venv "$VENV"
  run "$VENV/bin/python" -m pip install "$WORKDIR"/wheels/torch-"$VERSION"-*.whl \
    "$WORKDIR"/wheels/torchvision-"$VISION"-*.whl
  mark install
fi

# --- verify -------------------------------------------------------------------------------
step verify "qnnpack engine and a TorchScript int8 model"
VERIFY_PY='
import io, torch
engines = torch.backends.quantized.supported_engines
assert "qnnpack" in engines, f"qnnpack missing from {engines}"
torch.backends.quantized.engine = "qnnpack"
m = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.Conv2d(3, 8, 3),
                        torch.nn.ReLU(), torch.ao.quantization.DeQuantStub()).eval()
m.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
m = torch.ao.quantization.prepare(m)
m(torch.randn(4, 3, 16, 16))
m = torch.ao.quantization.convert(m)
buf = io.BytesIO()
torch.jit.save(torch.jit.script(m), buf)
buf.seek(0)
y = torch.jit.load(buf)(torch.randn(1, 3, 16, 16))
assert y.shape == (1, 8, 14, 14)
print(f"torch {torch.__version__}: engines {engines}; TorchScript int8 (qnnpack) conv runs")
'
run "$VENV/bin/python" -c "$VERIFY_PY"
if [ -n "$VERIFY_MODEL" ]; then
  run "$VENV/bin/edgekit" bench "$VERIFY_MODEL" --runs 20 --warmup 5 --out "$WORKDIR/verify-bench.json"
fi
if [ "$DRY_RUN" = 1 ] || [ -x "$VENV/bin/edgekit" ]; then
  run "$VENV/bin/edgekit" doctor
fi

restore_swap
step finished "wheels in $WORKDIR/wheels (copy them to other Pis with the same OS and Python)"
