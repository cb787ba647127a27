#!/usr/bin/env bash
# Downloads (does not install) the Debian packages sparsa needs to build, into DIR (default
# .gpu-deps), for a GPU machine that has CUDA and CMake but not these libraries and cannot reach
# a package registry: carry DIR there and scripts/gpu_check.sh unpacks it into a private prefix.
set -euo pipefail
dir=${1:-.gpu-deps}
mkdir -p "$dir"
cd "$dir"
apt-get download \
  libhwy-dev libhwy1 libcli11-dev nlohmann-json3-dev libfmt-dev libfmt9 \
  libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian \
  libzstd-dev libxxhash-dev libxxhash0 pkgconf pkgconf-bin libpkgconf3 pkg-config
ls -1 *.deb | wc -l
