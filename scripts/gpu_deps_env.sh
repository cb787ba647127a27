# Sourced by the GPU scripts (gpu_check.sh, gpu_rans_check.sh, gpu_model_check.sh): the GPU machine
# has CUDA and CMake but not sparsa's other build dependencies, which travel as Debian packages
# (scripts/gpu_deps.sh downloads them). gpu_batch_start holds the start every batch shares.
sparsa_deps_prefix=/tmp/sparsa-deps
sparsa_deps_libdir=$sparsa_deps_prefix/usr/lib/x86_64-linux-gnu

# use_carried_deps DIR: unpacks DIR/*.deb into a private prefix and points CMake, pkg-config and
# the loader at it. Returns non-zero when a package does not unpack.
use_carried_deps() {
  local debs=$1 rc=0 deb pc
  rm -rf "$sparsa_deps_prefix" && mkdir -p "$sparsa_deps_prefix"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$sparsa_deps_prefix" || rc=1; done
  for pc in "$sparsa_deps_libdir"/pkgconfig/*.pc "$sparsa_deps_prefix"/usr/share/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -i "s|^prefix=/usr\$|prefix=$sparsa_deps_prefix/usr|" "$pc"
  done
  export CMAKE_PREFIX_PATH=$sparsa_deps_prefix/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  export PKG_CONFIG_PATH=$sparsa_deps_libdir/pkgconfig:$sparsa_deps_prefix/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  export LD_LIBRARY_PATH=$sparsa_deps_libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  if ! command -v pkg-config >/dev/null && [ -x "$sparsa_deps_prefix/usr/bin/pkgconf" ]; then
    mkdir -p "$sparsa_deps_prefix/bin"
    printf '#!/bin/sh\nexec "%s" "$@"\n' "$sparsa_deps_prefix/usr/bin/pkgconf" > "$sparsa_deps_prefix/bin/pkg-config"
    chmod +x "$sparsa_deps_prefix/bin/pkg-config"
    export PATH=$sparsa_deps_prefix/bin:$PATH
  fi
  return $rc
}

# gpu_batch_start: the common start of a GPU batch. Sets OUT (default ./gpu-out), BUILD_DIR
# (default build/gpu) and status=0, defines step(), prints the GPU and tools, and unpacks the
# carried Debian packages (GPU_DEPS_DEBS, default .gpu-deps if present); status=1 if one fails.
gpu_batch_start() {
  OUT=${OUT:-$PWD/gpu-out}
  BUILD_DIR=${BUILD_DIR:-build/gpu}
  mkdir -p "$OUT"
  status=0
  step "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/device.txt"
  nvcc --version | tail -2
  cmake --version | head -1
  local tool debs=${GPU_DEPS_DEBS:-}
  for tool in g++ ninja pkg-config compute-sanitizer python3; do
    printf '%-18s %s\n' "$tool" "$(command -v $tool || echo missing)"
  done
  [ -z "$debs" ] && [ -d .gpu-deps ] && debs=.gpu-deps
  if [ -n "$debs" ]; then
    step "unpacking build dependencies from $debs"
    use_carried_deps "$debs" || status=1
  fi
}
step() { echo; echo "=== $* ($(date +%T))"; }
