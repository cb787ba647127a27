#!/usr/bin/env bash
# Builds the GPU tests and the GEMM benchmark on this machine (nvcc, no GPU needed; only the
# sm_90a pass, for H100 / H200) and packs them for scripts/gpu_prebuilt_check.sh, which runs them
# on the GPU machine without spending its time on a build. cuSPARSELt (the benchmark's baseline)
# is linked from its pip wheel, downloaded once into .dev/cusparselt.
#
# Usage: bash scripts/gpu_prebuild.sh      -> .dev/prebuilt.tgz (~25 MB), build folder build-gpu
# Then:  run(carry=[".dev/prebuilt.tgz", ".gpu-deps"], command="... bash scripts/gpu_prebuilt_check.sh")
# (.gpu-deps from scripts/gpu_deps.sh; .dev/ is in .gitignore, so it travels only when carried.)
#
# Environment: CUSPARSELT_WHEEL (default nvidia-cusparselt-cu13==0.8.0, the version PyTorch's
# environment on the GPU machine holds), BUILD_DIR (default build-gpu), JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-gpu}
cslt=.dev/cusparselt
if [ ! -f "$cslt/nvidia/cusparselt/include/cusparseLt.h" ]; then
  echo "downloading ${CUSPARSELT_WHEEL:-nvidia-cusparselt-cu13==0.8.0} into $cslt"
  mkdir -p "$cslt"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
    -d "$cslt" "${CUSPARSELT_WHEEL:-nvidia-cusparselt-cu13==0.8.0}" \
    || { echo "cuSPARSELt wheel not available: building without the cuSPARSELt baseline"; }
  for whl in "$cslt"/*.whl; do [ -f "$whl" ] && (cd "$cslt" && python3 -m zipfile -e "${whl##*/}" .); done
fi
cslt_root=
[ -f "$cslt/nvidia/cusparselt/include/cusparseLt.h" ] && cslt_root=$PWD/$cslt/nvidia/cusparselt
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARSA_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=OFF ${cslt_root:+-DSPARSA_CUSPARSELT_ROOT=$cslt_root} > /dev/null
# gpu_rans (entropy decode) and cpu_codec (the CPU GEMV column of docs/compression.md, timed on
# the GPU machine's host CPU) travel too, so one device call can run every benchmark.
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target sparsa_gpu_tests gpu_gemm gpu_rans cpu_codec
# ptxas does not guard the metadata register of an in-flight wgmma.sp (docs/kernels-gpu.md,
# "Session 20"): scan the wgmma objects' SASS for it before packing. cuobjdump (and nvdisasm, which
# its -sass needs) are not in the CUDA toolkit here; their pip wheels are downloaded once into
# .dev/cuobjdump.
cuobjdump_bin=$(command -v cuobjdump || true)
if [ -z "$cuobjdump_bin" ]; then
  cod=.dev/cuobjdump
  if [ ! -x "$cod/nvidia/cu13/bin/cuobjdump" ]; then
    mkdir -p "$cod"
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      --platform manylinux_2_27_x86_64 -d "$cod" "${CUOBJDUMP_WHEEL:-nvidia-cuda-cuobjdump==13.2.51}" \
      "${NVDISASM_WHEEL:-nvidia-cuda-nvdisasm==13.2.51}" \
      && for whl in "$cod"/*.whl; do (cd "$cod" && python3 -m zipfile -e "${whl##*/}" .); done \
      && chmod +x "$cod"/nvidia/cu13/bin/* \
      || echo "cuobjdump wheel not available"
  fi
  [ -x "$cod/nvidia/cu13/bin/cuobjdump" ] && cuobjdump_bin=$PWD/$cod/nvidia/cu13/bin/cuobjdump
fi
if [ -n "$cuobjdump_bin" ]; then
  scan=$(mktemp)
  if ! PATH="$(dirname "$cuobjdump_bin"):$PATH" python3 scripts/sass_metadata_hazards.py \
      "$build"/CMakeFiles/sparsa_cuda.dir/src/cuda/wgmma_*.cu.o > "$scan"; then
    cat "$scan"; rm -f "$scan"
    echo "wgmma.sp metadata registers reused in flight: not packing"; exit 1
  fi
  echo "SASS scan: $(tail -1 "$scan")"; rm -f "$scan"
else
  echo "NOT CHECKED: no cuobjdump, the wgmma.sp metadata-register scan did not run"
fi
stage=$(mktemp -d)
cp "$build/tests/sparsa_gpu_tests" "$build/bench/gpu_gemm" "$build/bench/gpu_rans" \
  "$build/bench/cpu_codec" "$stage/"
strip "$stage"/*
mkdir -p .dev
tar czf .dev/prebuilt.tgz -C "$stage" .
rm -r "$stage"
echo "wrote .dev/prebuilt.tgz ($(du -h .dev/prebuilt.tgz | cut -f1); cuSPARSELt: ${cslt_root:-none})"
