#!/usr/bin/env bash
# Installs sparsa's build dependencies from Debian packages. Safe to run again.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  libhwy-dev libcli11-dev nlohmann-json3-dev libfmt-dev libzstd-dev libxxhash-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev libopenblas-dev
  clang libclang-rt-14-dev  # the container fuzz test (libFuzzer); skipped without them
)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "setup: all Debian packages present" >&2
fi
