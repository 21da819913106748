#!/usr/bin/env bash
# Build, once, an aarch64 Python 3.11 environment that runs on this x86_64 machine under
# qemu-user, and print its directory. Nothing is installed on the host: Debian packages are
# downloaded with a private apt configuration and unpacked with `dpkg -x`.
#
#   tools/arm-env.sh            # builds (or reuses) the environment; last stdout line = its dir
#   ENV/bin/python3 -c '...'    # aarch64 python, Pi 4 core by default
#   QEMU_CPU=cortex-a76 ENV/bin/python3 ...     # Pi 5 core
#
# What it holds (ENV = $EDGEKIT_ARM_CACHE/env-KEY, default ~/.cache/edgekit/arm/env-KEY):
#   qemu-aarch64     static qemu-user 10 from Debian trixie (bookworm's 7.2 segfaults on
#                    onnxruntime >= 1.28)
#   root/            Debian bookworm arm64 python3.11 and the C libraries it and the wheels need
#   site/            edgekit's base install dependencies (numpy, onnxruntime, ...) for aarch64
#   torch/           torch 2.9.1 aarch64 CPU wheel + deps (TorchScript on both Pi cores)
#   torch-sigill/    torch 2.10.0, which dies with "Illegal instruction" on a Cortex-A72
#   env.json         what was installed, with versions
# KEY hashes this script, tools/arm-requirements.txt and edgekit's declared dependencies:
# changing any of them builds a new environment (and removes the old ones).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}   # a host python with pip, for `pip download`
cache=${EDGEKIT_ARM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgekit/arm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
requirements=$here/arm-requirements.txt

# Debian bookworm arm64: python3.11 and every shared library it, numpy, onnxruntime, Pillow
# and torch load (libstdc++/libgomp for the wheels; krb5 for the ssl module's libssl users).
DEBS="libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0
liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libdb5.3 libnsl2
libtirpc3 libcrypt1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
libkeyutils1 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11"
PLATFORM=(--platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp
          --abi cp311 --only-binary=:all:)

log() { echo "arm-env: $*" >&2; }
die() { echo "arm-env: error: $*" >&2; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "builds an emulated aarch64 environment on x86_64; this is $(uname -m)"
for tool in apt-get dpkg sha256sum; do
  command -v "$tool" >/dev/null || die "needs $tool (a Debian or Ubuntu host)"
done
[ -x "$python" ] || die "no host python at $python (run make install first, or set PYTHON)"

deps=$("$python" -c 'import tomllib, sys
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
  "$repo/pyproject.toml")
key=$( { cat "${BASH_SOURCE[0]}" "$requirements"; echo "$deps"; } | sha256sum | cut -c1-16)
env_dir=$cache/env-$key
if [ -f "$env_dir/env.json" ]; then
  log "cached: $env_dir"
  echo "$env_dir"
  exit 0
fi

mkdir -p "$cache"
build=$(mktemp -d "$cache/.build-$key.XXXXXX")
trap 'rm -rf "$build"' EXIT
log "building $env_dir (a few minutes; cached afterwards)"

# --- Debian packages, through apt with private configuration and state: the host's apt
# sources, lists and dpkg database are not touched.
apt=$build/apt
mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/debs"
: > "$apt/status"
cat > "$apt/sources.list" <<EOF
deb [arch=arm64] $mirror bookworm main
deb [arch=arm64] $mirror bookworm-updates main
deb [arch=arm64] $security bookworm-security main
deb [arch=amd64] $mirror trixie main
EOF
apt_opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/none"
          -o "Dir::Etc::Preferences=$apt/none" -o "Dir::Etc::PreferencesParts=$apt/none"
          -o "Dir::State=$apt" -o "Dir::State::Lists=$apt/lists"
          -o "Dir::State::status=$apt/status" -o "Dir::Cache=$apt"
          -o "Dir::Cache::Archives=$apt/archives" -o "APT::Architecture=amd64"
          -o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64"
          -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
mkdir -p "$apt/none"
log "apt: bookworm arm64 + trixie amd64 package lists"
apt-get "${apt_opts[@]}" -qq update
arm_debs=()
for deb in $DEBS; do arm_debs+=("$deb:arm64"); done
(cd "$apt/debs" && apt-get "${apt_opts[@]}" -qq download "${arm_debs[@]}" media-types \
  qemu-user:amd64)

stage=$build/env
mkdir -p "$stage/root" "$stage/bin"
for deb in "$apt/debs"/*_arm64.deb "$apt/debs"/*_all.deb; do dpkg -x "$deb" "$stage/root"; done
dpkg -x "$apt/debs"/qemu-user_*_amd64.deb "$build/qemu"
cp "$build/qemu/usr/bin/qemu-aarch64" "$stage/qemu-aarch64"
qemu_version=$(LC_ALL=C dpkg-deb -f "$apt/debs"/qemu-user_*_amd64.deb Version)

# --- aarch64 wheels. pip resolves edgekit's own dependencies (pinned by the runtime group);
# torch is installed with --no-deps because pip evaluates its CUDA markers for the host.
group() { awk -v g="$1" '$1 == g { print $2 }' "$requirements"; }
pip_q() { "$python" -m pip --disable-pip-version-check -q "$@" 2>&1 \
            | { grep -v "^WARNING: Location" || true; } >&2; }
log "pip: aarch64 wheels"
group runtime > "$build/constraints.txt"
mapfile -t runtime_deps <<< "$deps"
pip_q download -d "$build/wheels/runtime" "${PLATFORM[@]}" -c "$build/constraints.txt" \
  "${runtime_deps[@]}"
mapfile -t torch_reqs < <(group torch)
pip_q download --no-deps -d "$build/wheels/torch" "${PLATFORM[@]}" "${torch_reqs[@]}"
mapfile -t sigill_reqs < <(group sigill)
pip_q download --no-deps -d "$build/wheels/sigill" "${PLATFORM[@]}" "${sigill_reqs[@]}"
mapfile -t pte_reqs < <(group pte)
pip_q download --no-deps -d "$build/wheels/pte" "${PLATFORM[@]}" "${pte_reqs[@]}"
for dir in runtime:site torch:torch sigill:torch-sigill pte:pte; do
  pip_q install --no-deps --no-index --target "$stage/${dir#*:}" "${PLATFORM[@]}" \
    "$build/wheels/${dir%%:*}"/*.whl
done

# --- bin/python3: the aarch64 interpreter under qemu. `-0 "$0"` makes this wrapper
# sys.executable, so child processes (edgekit doctor's self-tests) run emulated too: the
# host kernel runs this /bin/sh script natively and it starts qemu again.
cat > "$stage/bin/python3" <<'EOF'
#!/bin/sh
# aarch64 Python 3.11 under qemu-user. QEMU_CPU picks the core: cortex-a72 (Pi 4, default)
# or cortex-a76 (Pi 5). PYTHONPATH may put edgekit and torch/ (or torch-sigill/) first.
env=$(cd "$(dirname "$0")/.." && pwd)
export QEMU_CPU="${QEMU_CPU:-cortex-a72}" PYTHONHOME="$env/root/usr"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$env/site"
exec "$env/qemu-aarch64" -L "$env/root" -0 "$0" "$env/root/usr/bin/python3.11" "$@"
EOF
chmod +x "$stage/bin/python3"

log "checking: aarch64 python imports numpy and onnxruntime under -cpu cortex-a72"
check=$("$stage/bin/python3" -c 'import platform, numpy, onnxruntime
print(platform.machine(), numpy.__version__, onnxruntime.__version__)') \
  || die "the emulated python does not start; see the output above"
[ "${check%% *}" = aarch64 ] || die "expected an aarch64 python, got: $check"

pkgs=$(for deb in "$apt/debs"/*.deb; do basename "$deb" .deb; done | paste -sd' ')
wheels=$(cd "$build/wheels" && find . -name '*.whl' | sed 's|^\./||' | sort | paste -sd' ')
"$python" - "$stage/env.json" "$key" "$qemu_version" "$check" "$pkgs" "$wheels" <<'EOF'
import json, sys
path, key, qemu, check, pkgs, wheels = sys.argv[1:]
json.dump({"key": key, "qemu_user": qemu, "python_check": check, "debs": pkgs.split(),
           "wheels": wheels.split()}, open(path, "w"), indent=2)
EOF

# Publish atomically, then drop environments built from older inputs.
rm -rf "$env_dir"
mv "$stage" "$env_dir"
for old in "$cache"/env-*; do
  [ "$old" = "$env_dir" ] || rm -rf "$old"
done
log "ready: $env_dir ($(du -sh "$env_dir" | cut -f1))"
echo "$env_dir"
