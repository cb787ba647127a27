#!/usr/bin/env bash
# The pruning section of docs/results.md (called by scripts/results.sh; prints Markdown).
# Usage: scripts/results_pruning.sh SPARSA_BIN MODEL.gguf
# Every row: `sparsa prune MODEL --method M -p P -o OUT.gguf` (calibration: data/eval/calibration.txt,
# 4 windows of 256 tokens), then `sparsa eval OUT --ctx 512 --max-windows $WINDOWS` and
# `sparsa run OUT -n 32` for CPU tokens/s. WINDOWS (default 4) limits the eval to a prefix of
# data/eval/eval.txt so that all 16 rows fit in about 25 minutes on 2 cores.
# The V:N:M rows are repeated "with permutation" (`prune --permute`, 6 more rows, about 18 more
# minutes on a busy 2-core machine), then the auto:SPEEDUP choices and the 2:4 Wanda sensitivity
# (`sparsa sensitivity`, SENS_WINDOWS=1 window, about 4 minutes) are appended.
# ONLY_PERMUTED=1: run only those 6 rows and print them as table rows (no dense row, no section),
# for adding them to an existing docs/results.md without re-running the other 16.
set -euo pipefail
bin="$1"
model="$2"
windows="${WINDOWS:-4}"
rounds="${PERMUTE_ROUNDS:-2}"  # --permute-rounds: 2 keeps each permutation search near 1.5 min here
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prompt="The capital of France is"

eval_row() {  # $1 = model file; prints "ppl|scored|bytes|tok/s"
  local out ppl scored bytes speed
  out="$("$bin" eval "$1" --text data/eval/eval.txt --ctx 512 --max-windows "$windows" 2>/dev/null)"
  ppl="$(sed -n 's/^perplexity *//p' <<<"$out")"
  scored="$(sed -n 's/^windows.*, \([0-9]*\) tokens scored/\1/p' <<<"$out")"
  bytes="$(sed -n 's/^model bytes *//p' <<<"$out")"
  speed="$("$bin" run "$1" -p "$prompt" -n 32 --ignore-eos 2>&1 >/dev/null |
           sed -n 's/^generated.*(\([0-9.]*\) tokens\/s)/\1/p')"
  echo "$ppl|$scored|$bytes|$speed"
}

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# One row: prune ($3 = extra prune flags), evaluate, append to $rows.
prune_row() {  # $1 = method, $2 = pattern, $3 = label suffix, $4... = extra prune flags
  local method="$1" pattern="$2" label="$3" out t0 t1 ppl bytes speed delta
  shift 3
  out="$work/$method.gguf"
  t0=$(date +%s)
  "$bin" prune "$model" --method "$method" -p "$pattern" "$@" -o "$out" >/dev/null 2>"$work/err" ||
    { cat "$work/err" >&2; exit 1; }
  t1=$(date +%s)
  IFS='|' read -r ppl _ bytes speed <<<"$(eval_row "$out")"
  ppl_of["$method $pattern$label"]="$ppl"
  delta="$(awk -v p="$ppl" -v d="$dppl" 'BEGIN { printf "%+.2f", p - d }')"
  rows+="| $pattern$label | $method | $ppl | $delta | $(mb "$bytes") | $speed | $((t1 - t0)) s |"$'\n'
  echo "results: $method $pattern$label $ppl" >&2
  rm -f "$out"
}

declare -A ppl_of
rows=""
if [ "${ONLY_PERMUTED:-0}" = 1 ]; then
  dppl="${DENSE_PPL:-23.7366}"  # the dense row of docs/results.md (same prefix)
  for pattern in 64:2:5 64:2:8; do
    for method in magnitude wanda sparsegpt; do
      prune_row "$method" "$pattern" " + permutation" --permute --permute-rounds "$rounds"
    done
  done
  printf '%s' "$rows"
  exit 0
fi

dense="$(eval_row "$model")"
IFS='|' read -r dppl scored dbytes dspeed <<<"$dense"
echo "results: dense $dppl" >&2
rows="| dense | - | **$dppl** | - | $(mb "$dbytes") | $dspeed | - |"$'\n'
for pattern in unstructured:0.5 2:4 4:8 64:2:5 64:2:8; do
  for method in magnitude wanda sparsegpt; do
    out="$work/$method.gguf"
    t0=$(date +%s)
    "$bin" prune "$model" --method "$method" -p "$pattern" -o "$out" >/dev/null 2>"$work/err" ||
      { cat "$work/err" >&2; exit 1; }
    t1=$(date +%s)
    IFS='|' read -r ppl _ bytes speed <<<"$(eval_row "$out")"
    ppl_of["$method $pattern"]="$ppl"
    delta="$(awk -v p="$ppl" -v d="$dppl" 'BEGIN { printf "%+.2f", p - d }')"
    rows+="| $pattern | $method | $ppl | $delta | $(mb "$bytes") | $speed | $((t1 - t0)) s |"$'\n'
    echo "results: $method $pattern $ppl" >&2
    rm -f "$out"
  done
done
for pattern in 64:2:5 64:2:8; do
  for method in magnitude wanda sparsegpt; do
    prune_row "$method" "$pattern" " + permutation" --permute --permute-rounds "$rounds"
  done
done
perm_goal=""
for pattern in 64:2:5 64:2:8; do
  for method in magnitude wanda sparsegpt; do
    perm_goal+="$(awk -v a="${ppl_of[$method $pattern]}" -v b="${ppl_of[$method $pattern + permutation]}" \
      -v what="$method $pattern" 'BEGIN { printf "%s: %.2f -> %.2f %s; ", what, a, b, (b < a ? "(met)" : "(**not met**)") }')"
  done
done
mag="${ppl_of[magnitude 2:4]}"
sgpt="${ppl_of[sparsegpt 2:4]}"
goal="$(awk -v m="$mag" -v s="$sgpt" -v d="$dppl" 'BEGIN {
  rm = m - d; rs = s - d;
  printf "magnitude 2:4 raises perplexity by %.2f (%.2f -> %.2f), SparseGPT 2:4 by %.2f (-> %.2f): ", rm, d, m, rs, s;
  if (rs <= rm / 2) printf "%.2f <= %.2f / 2 = %.2f: **met**", rs, rm, rm / 2;
  else printf "%.2f > %.2f / 2 = %.2f: **not met**", rs, rm, rm / 2 }')"

cat <<EOF2
## Pruning: magnitude, Wanda, SparseGPT

Each row prunes every linear layer of the 30 transformer blocks (q, k, v, o, gate, up, down; not
the tied embedding/head) with \`sparsa prune MODEL --method METHOD -p PATTERN -o OUT.gguf\`, then
evaluates OUT. **Perplexity here is over a fixed prefix of data/eval/eval.txt: the first
$windows windows of 512 tokens ($scored tokens scored)**, not the whole text (the full-text dense
value is in the table above), so that all 16 rows fit in the session's time on 2 cores; the
dense row is measured on the same prefix.

- Wanda and SparseGPT calibrate on data/eval/calibration.txt (4 windows of 256 tokens, the
  default \`--calib\`), with the dense model's activations for every layer (one pass, not the
  layer-by-layer sequential variant). Wanda compares within each output row (unstructured) or
  within the pattern's groups; SparseGPT damps H by 1% of its mean diagonal and uses lazy
  blocks of 128 columns (a multiple of M for N:M / V:N:M), adaptive masks per block for
  unstructured and per group of M columns for N:M and V:N:M.
- Model bytes: the weights as held in memory with every pruned linear layer packed in its
  pattern's default format (docs/formats.md: unstructured -> csr, N:M -> nm, V:N:M -> vnm; f32
  values), plus the f32 token embedding (113 MB of the total) and norms. Dense: all f32.
- CPU tokens/s: \`sparsa run OUT -p "$prompt" -n 32 --ignore-eos\`, one sequence, greedy, the
  linear layers through the packed format's SIMD kernel, on a shared 2-core machine (noisy).
- "+ permutation" rows: \`sparsa prune ... --permute\` (docs/architecture.md, "Channel
  permutation"): every layer's input channels permuted to keep the most importance under the
  V:N:M mask, then pruned; the prune time includes the permutation search.

| pattern | method | perplexity | vs dense | model MB | CPU tokens/s | prune time |
| --- | --- | --- | --- | --- | --- | --- |
${rows}
Goal "SparseGPT 2:4 raises perplexity by at most half of what magnitude 2:4 does": $goal.

Goal "V:N:M with permutation beats V:N:M without at every M" (perplexity without -> with): $perm_goal
EOF2

# V and M for a target speed-up: the choices `prune -p auto:SPEEDUP` makes (no model needed).
echo
echo '### V and M for a target speed-up (`sparsa prune ... -p auto:SPEEDUP`)'
echo
echo 'The rule and its source: src/prune/vnm_choice.cc and include/sparsa/vnm_choice.h.'
echo
echo '| target | chosen |'
echo '| --- | --- |'
for target in 1.5 2 2.5 3 4 6; do
  chosen="$("$bin" prune "$model" -p "auto:$target" -o "$work/auto.gguf" 2>/dev/null |
            sed -n 's/^pattern *auto:[0-9.]* -> \([0-9:]*\).*/\1/p')"
  echo "| $target | $chosen |"
  rm -f "$work/auto.gguf"
done

# Sensitivity: one block at a time pruned to 2:4 with Wanda, first window only (~4 min).
sens_windows="${SENS_WINDOWS:-1}"
echo
echo "### Sensitivity: one transformer block at a time pruned to 2:4 (Wanda)"
echo
echo "\`sparsa sensitivity MODEL -p 2:4 --method wanda --max-windows $sens_windows -o docs/sensitivity_smollm2_2-4_wanda.svg\`"
echo "(first $sens_windows window(s) of 512 tokens of data/eval/eval.txt; every other block dense)."
echo
"$bin" sensitivity "$model" -p 2:4 --method wanda --max-windows "$sens_windows" \
  -o docs/sensitivity_smollm2_2-4_wanda.svg 2>/dev/null | sed -n '/^| /p'
