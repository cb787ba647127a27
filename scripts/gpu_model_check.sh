#!/usr/bin/env bash
# The CUDA forward on a GPU machine, in two phases (the model file is too big for one device
# call, so it travels in two halves; scripts/results_device.sh does the same, see docs/results.md,
# "Reproducing"):
#   PHASE=build  copies the sources to $SRC, builds sparsa_cli and sparsa_gpu_tests in $BUILD_DIR,
#                runs the device-gemm and forward tests (tiny models) and a memcheck; copies
#                MODEL_PART (the first half of the GGUF) to /tmp.
#   PHASE=run    joins /tmp/model-part.* with MODEL_PART into /tmp/model.gguf, checks its sha256,
#                runs the SmolLM2 GPU-vs-CPU test, then `sparsa run` (dense f16, 2:4, 64:2:8,
#                magnitude-pruned; decode graph and fused products on and off through
#                SPARSA_CUDA_GRAPHS / SPARSA_CUDA_FUSE) and `sparsa eval` (first 4 windows of
#                data/eval/eval.txt). The generation records go to $OUT/forward.json (committed as
#                bench/results/decode-graphs-*.json; forward-*.json holds the older forward-test
#                records that scripts/results_render.py reads).
# Logs go to $OUT. GPU_DEPS_DEBS: folder of Debian packages of the build dependencies.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
BUILD_DIR=${BUILD_DIR:-/tmp/build-cudafwd}
SRC=${SRC:-/tmp/src-cudafwd}
mkdir -p "$OUT"
status=0
. scripts/gpu_deps_env.sh
# The run phase uses the libraries the build phase unpacked.
export LD_LIBRARY_PATH=$sparsa_deps_libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

if [ "${PHASE:-build}" = build ]; then
  step "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/device.txt"
  stage_model_part
  debs=${GPU_DEPS_DEBS:-}
  if [ -n "$debs" ]; then
    step "unpacking build dependencies from $debs"
    use_carried_deps "$debs" || status=1
  fi
  configure_cli_build "$SRC"
  step "build"
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target sparsa_gpu_tests sparsa_cli > "$OUT/build.log" 2>&1 \
    || { grep -E "error|FAILED" "$OUT/build.log" | head -40; echo "build FAILED"; exit 2; }
  step "GPU tests (device gemm, forward)"
  "$BUILD_DIR/tests/sparsa_gpu_tests" --gtest_filter="${TEST_FILTER:-GpuDeviceGemm*:GpuFusedProducts*:GpuForward*}" \
    2>&1 | tee "$OUT/gpu_tests.log" | grep -E "^\[  |Failure|error|tiny|Expected|Which|actual" | head -60
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  step "compute-sanitizer memcheck"
  compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
    "$BUILD_DIR/tests/sparsa_gpu_tests" --gtest_filter='GpuForward.CacheCarriesAcrossCallsAndResets:GpuForward.GraphFollowsStatesAndScratch:GpuDeviceGemm.BadArgumentsNameTheMatrix' \
    > "$OUT/memcheck.log" 2>&1
  mc=$?
  tail -4 "$OUT/memcheck.log"
  [ $mc -eq 0 ] || { echo "memcheck FAILED ($mc)"; status=1; }
  echo "gpu_model_check build: exit $status"
  exit $status
fi

# ---- PHASE=run ----------------------------------------------------------------------------------
bin=$BUILD_DIR/sparsa_cli
[ -x "$bin" ] || bin=$BUILD_DIR/sparsa
[ -x "$bin" ] || { echo "no build in $BUILD_DIR: run PHASE=build first"; exit 2; }
step "model"
model=/tmp/model.gguf
join_model "$model" || exit 2
prompt="The capital of France is"

step "SmolLM2 GPU vs CPU forward"
SPARSA_MODEL_GGUF=$model "$BUILD_DIR/tests/sparsa_gpu_tests" --gtest_filter='GpuForward.SmolLm2*' \
  2>&1 | tee "$OUT/smollm2_test.log" | grep -E "^\[  |Failure|SmolLM2|Expected|Which|actual" | head -30
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

records=()
gen() {  # $1 label, $2 pattern, $3 graphs (1/0), $4 fused products (1/0), $5 tokens, rest: args
  local label=$1 pattern=$2 graphs=$3 fused=$4 n=$5; shift 5
  SPARSA_CUDA_GRAPHS=$graphs SPARSA_CUDA_FUSE=$fused "$bin" run "$@" -p "$prompt" -n "$n" \
    --ignore-eos > "$OUT/run-$label.out" 2> "$OUT/run-$label.err" || status=1
  echo "--- $label (graphs $graphs, fused $fused): $(head -c 120 "$OUT/run-$label.out" | tr '\n' ' ')"
  grep -E "device|prompt|generated" "$OUT/run-$label.err"
  # "generated   64 tokens in 0.22 s (287.2 tokens/s)"
  local line dev
  line=$(grep -E "^generated" "$OUT/run-$label.err" | head -1)
  dev=cuda; case " $* " in *" --device cuda "*) ;; *) dev=cpu ;; esac
  records+=("$(echo "$line" | awk -v p="$pattern" -v d="$dev" -v g="$graphs" -v f="$fused" -v l="$label" \
    '{gsub(/[()]/, ""); printf "{\"label\": \"%s\", \"pattern\": \"%s\", \"device\": \"%s\", \"graphs\": %s, \"fused_products\": %s, \"generated\": %s, \"seconds\": %s, \"tokens_per_s\": %s}", l, p, d, (g ? "true" : "false"), (f ? "true" : "false"), $2, $5, $7}')")
}
step "prune (magnitude) 2:4 and 64:2:8"
for p in 2:4 64:2:8; do
  "$bin" prune "$model" --method magnitude -p "$p" -o "/tmp/m-${p//:/-}.gguf" > "$OUT/prune-${p//:/-}.log" 2>&1 || status=1
  tail -2 "$OUT/prune-${p//:/-}.log"
done
step "sparsa run (greedy, --ignore-eos): decode graph and fused products on / off"
for p in dense 2:4 64:2:8; do
  m=$model; [ $p = dense ] || m=/tmp/m-${p//:/-}.gguf
  t=${p//:/-}
  gen $t-warmup $p 1 1 16 "$m" --device cuda
  gen $t-graph $p 1 1 64 "$m" --device cuda
  gen $t-nograph $p 0 1 64 "$m" --device cuda
  gen $t-graph-unfused $p 1 0 64 "$m" --device cuda
  gen $t-nograph-unfused $p 0 0 64 "$m" --device cuda
  gen $t-graph-256 $p 1 1 256 "$m" --device cuda
  gen $t-nograph-256 $p 0 1 256 "$m" --device cuda
done
gen dense-cpu-f16 dense 0 0 64 "$model" --weights f16
{
  echo "{"
  echo "  \"device\": \"$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)\","
  echo "  \"driver\": \"$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)\","
  echo "  \"date\": \"$(date -u +%F)\","
  echo "  \"command\": \"SPARSA_CUDA_GRAPHS=G SPARSA_CUDA_FUSE=F sparsa run MODEL -p \\\"$prompt\\\" -n N --ignore-eos --device cuda\","
  echo "  \"pruning\": \"sparsa prune MODEL --method magnitude -p PATTERN -o OUT.gguf\","
  echo "  \"records\": ["
  for i in "${!records[@]}"; do
    sep=,; [ "$i" -eq $((${#records[@]} - 1)) ] && sep=
    echo "    ${records[$i]}$sep"
  done
  echo "  ]"
  echo "}"
} > "$OUT/forward.json"
cat "$OUT/forward.json"
step "sparsa eval (first 4 windows of 512)"
ev() {  # $1 label, rest: args
  local label=$1; shift
  "$bin" eval "$@" --text data/eval/eval.txt --ctx 512 --max-windows 4 > "$OUT/eval-$label.log" 2>&1 || status=1
  echo "--- $label"; grep -E "weights|device|perplexity|time" "$OUT/eval-$label.log"
}
ev dense-cuda "$model" --device cuda
ev 2-4-cuda /tmp/m-2-4.gguf --device cuda
ev 64-2-8-cuda /tmp/m-64-2-8.gguf --device cuda
ev dense-cpu-f16 "$model" --weights f16
echo
echo "gpu_model_check run: exit $status"
exit $status
