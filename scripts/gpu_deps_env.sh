# Sourced by the GPU scripts (gpu_check.sh, gpu_rans_check.sh, gpu_model_check.sh, results_device.sh): the GPU machine
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

# The model-carrying scripts (gpu_model_check.sh, results_device.sh): the GGUF travels in two
# halves, one per device call (each call carries at most 64 MiB).
# stage_model_part: copies MODEL_PART's files (the first half) to /tmp/model-part.*, if set.
stage_model_part() {
  [ -n "${MODEL_PART:-}" ] || return 0
  local f
  for f in "$MODEL_PART"/*; do cp "$f" "/tmp/model-part.$(basename "$f")"; done
  ls -l /tmp/model-part.*
}
# join_model FILE: joins /tmp/model-part.* with MODEL_PART's files (the second half) into FILE
# (kept as it is when MODEL_PART is unset) and checks its sha256 against scripts/fetch_model.sh.
# Returns 2 on a mismatch.
join_model() {
  local model=$1 sum expected
  if [ -n "${MODEL_PART:-}" ]; then cat /tmp/model-part.* "$MODEL_PART"/* > "$model"; fi
  sum=$(sha256sum "$model" | cut -d' ' -f1)
  expected=$(sed -n 's/^expected_sha256=//p' scripts/fetch_model.sh)
  echo "sha256 $sum (expected $expected)"
  [ "$sum" = "$expected" ] || { echo "model sha256 mismatch"; return 2; }
}
# configure_cli_build SRC: copies the sources to SRC and configures a CUDA build of the command
# line (no benchmarks) in $BUILD_DIR; exits 2 when configure fails.
configure_cli_build() {
  local src=$1
  rm -rf "$src" && mkdir -p "$src" && cp -r CMakeLists.txt CMakePresets.json include src tests bench scripts data "$src"/
  step "configure"
  cmake -S "$src" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARSA_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90-real -DSPARSA_BUILD_BENCH=OFF > "$OUT/configure.log" 2>&1 \
    || { tail -40 "$OUT/configure.log"; echo "configure FAILED"; exit 2; }
  grep -E "sparsa:" "$OUT/configure.log"
}
