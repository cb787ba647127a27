#!/usr/bin/env bash
# Produces docs/results.md from committed measurements (scripts/results_render.py); every number
# in it comes from JSON files under bench/results/:
#   results-<gpu>-<date>*.json  the pruning table (dense; magnitude, Wanda, SparseGPT at
#                               unstructured 50%, 2:4, 4:8, 64:2:5, 64:2:8; the V:N:M ones also
#                               with --permute): perplexity over the whole of data/eval/eval.txt,
#                               model bytes, CPU and GPU tokens/s, measured on one GPU machine by
#                               scripts/results_table.py (through scripts/results_device.sh).
#   results-local-<date>.json   the logits check against NumPy, the auto:SPEEDUP choices and the
#                               2:4 Wanda sensitivity, measured here (MEASURE_LOCAL=1).
#   permute-shared-<machine>-<date>*.json (optional)  `prune --permute` rows with one permutation
#                               per shared input (q/k/v, gate/up) and the unpermuted rows, on one
#                               machine's CPU (scripts/results_table.py --no-gpu --rows ...).
#   permute-sequential-<machine>-<date>.json (optional)  SparseGPT rows pruned with --sequential
#                               (layer-sequential calibration), without and with --permute.
#   permute-guard-<machine>-<date>.json (optional)  `prune --permute --permute-guard` rows,
#                               measured by hand with scripts/results_table.py --rows
#                               magnitude-64:2:8-perm-guard,... (see that JSON's "commands").
#
#   bash scripts/results.sh                   render from the newest committed JSON files (seconds)
#   MEASURE_LOCAL=1 bash scripts/results.sh   first re-measure the local parts (CPU build; about 10
#                                             minutes on 2 cores; the logits check needs
#                                             `python3 -m pip install numpy gguf`)
#   MEASURE_TABLE=1 bash scripts/results.sh   first re-measure the table on this machine (needs a
#                                             CUDA GPU; builds build/release with CUDA; about 8
#                                             minutes on 16 cores + an H100); TABLE_ARGS passes
#                                             options to results_table.py (e.g. --no-gpu).
# TABLE_JSON="a.json b.json" renders those table files instead of the newest one; SPARSA_BIN
# uses an existing build (CPU for MEASURE_LOCAL, CUDA for MEASURE_TABLE unless --no-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
today="$(date -u +%Y-%m-%d)"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

if [[ "${MEASURE_TABLE:-0}" == 1 ]]; then
  model="$(bash scripts/fetch_model.sh)"
  bin="${SPARSA_BIN:-build/release/sparsa}"
  if [[ -z "${SPARSA_BIN:-}" ]]; then
    cmake --preset release >/dev/null
    cmake --build --preset release --target sparsa_cli >/dev/null
  fi
  gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
  gpu="$(grep -oiE 'h100|h200|a100|l40s|[a-z]+[0-9]+' <<<"$gpu" | head -1 | tr 'A-Z' 'a-z' || true)"
  out="bench/results/results-${gpu:-cpu}-$today.json"
  # shellcheck disable=SC2086
  python3 scripts/results_table.py --bin "$bin" --model "$model" --out "$out" \
    --logs "$(mktemp -d)" --label "commit $(git rev-parse --short HEAD)" ${TABLE_ARGS:-}
  TABLE_JSON="${TABLE_JSON:-$out}"
fi

if [[ "${MEASURE_LOCAL:-0}" == 1 ]]; then
  model="$(bash scripts/fetch_model.sh)"
  bin="${SPARSA_BIN:-}"  # an existing CPU build, or build/cpu
  if [[ -z "$bin" ]]; then
    cmake --preset cpu >/dev/null
    cmake --build --preset cpu --target sparsa_cli >/dev/null
    bin=build/cpu/sparsa
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "results: logits check ..." >&2
  if python3 -c 'import numpy, gguf' 2>/dev/null; then
    python3 scripts/check_logits.py --model "$model" --sparsa "$bin" > "$work/logits.txt" 2>&1 || true
  else
    echo "not run: python3 -m pip install numpy gguf" > "$work/logits.txt"
  fi
  echo "results: auto:SPEEDUP choices ..." >&2
  : > "$work/auto.txt"
  for target in 1.5 2 2.5 3 4 6; do
    "$bin" prune "$model" -p "auto:$target" -o "$work/auto.gguf" 2>/dev/null | grep '^pattern' >> "$work/auto.txt"
    rm -f "$work/auto.gguf"
  done
  sens_windows="${SENS_WINDOWS:-1}"
  svg=docs/sensitivity_smollm2_2-4_wanda.svg
  sens_cmd="sparsa sensitivity MODEL -p 2:4 --method wanda --max-windows $sens_windows -o $svg"
  echo "results: $sens_cmd ..." >&2
  "$bin" sensitivity "$model" -p 2:4 --method wanda --max-windows "$sens_windows" -o "$svg" \
    2>/dev/null | sed -n '/^| /p' | tail -n +3 > "$work/sens.txt"
  cpu="$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
  python3 - "$work" "bench/results/results-local-$today.json" "$cpu" "$sens_cmd" "$sens_windows" "$svg" <<'PY'
import datetime, json, re, sys
work, out, machine, sens_cmd, sens_windows, svg = sys.argv[1:]
text = open(f"{work}/logits.txt").read()
def f(name):
    m = re.search(rf"^{re.escape(name)}\s+(.*)$", text, re.M)
    return m.group(1).strip() if m else None
lc = {"note": text.strip()}
if f("max abs diff"):
    logits = f("logits")
    lc = dict(prompt=f("prompt"), logits=logits.split(",")[0],
              max_abs_logit=logits.split("=")[-1].strip(),
              max_abs_diff=f("max abs diff").split()[0], max_rel_diff=f("max rel diff").split()[0],
              rms_rel_diff=f("rms rel diff").split()[0],
              same_argmax=f("same argmax").replace(" positions", ""),
              verdict=text.strip().splitlines()[-1], output=text)
auto = []
for line in open(f"{work}/auto.txt"):
    m = re.search(r"auto:([\d.]+) -> (\S+) \(estimated ([\d.]+)x GEMM speed-up, mask diversity ([\d.]+)", line)
    if m:
        auto.append(dict(target=m.group(1), chosen=m.group(2), estimated_speedup=m.group(3), diversity=m.group(4)))
table = [l.rstrip("\n") for l in open(f"{work}/sens.txt") if l.startswith("| ")]
doc = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           machine=machine, logits_check=lc, auto_choices=auto,
           sensitivity=dict(pattern="2:4", method="wanda", windows=int(sens_windows), command=sens_cmd,
                            svg=svg, table=table))
json.dump(doc, open(out, "w"), indent=1)
print(f"results: wrote {out}", file=sys.stderr)
PY
fi

newest() { ls $1 2>/dev/null | sort | tail -1; }
# The newest table run: every results-<device>-<date>*.json of the newest device/date (a run split
# over several device calls leaves several files; rows are merged).
newest_table="$(ls bench/results/results-*.json 2>/dev/null | grep -v '/results-local-' | sort | tail -1 || true)"
[[ -n "${TABLE_JSON:-$newest_table}" ]] || { echo "results: no bench/results/results-<device>-<date>.json (run MEASURE_TABLE=1)" >&2; exit 1; }
stem="$(sed -E 's/(results-[a-z0-9]+-[0-9]{4}-[0-9]{2}-[0-9]{2}).*/\1/' <<<"$newest_table")"
# (the first call's file first: "X.json" before "X-speed.json").
table_json="${TABLE_JSON:-$(ls "$stem"*.json | sed 's/\.json$//' | sort | sed 's/$/.json/' | tr '\n' ' ')}"
local_json="$(newest 'bench/results/results-local-*.json')"
args=(--table $table_json --out docs/results.md)
[[ -n "$local_json" ]] && args+=(--local "$local_json")
forward_json="$(newest 'bench/results/forward-*.json')"
[[ -n "$forward_json" ]] && args+=(--forward "$forward_json")
guard_json="$(newest 'bench/results/permute-guard-*.json')"
[[ -n "$guard_json" ]] && args+=(--followup "$guard_json")
# One permutation per shared input (q/k/v, gate/up): the newest day's runs, merged.
shared_stem="$(ls bench/results/permute-shared-*.json 2>/dev/null | sort | tail -1 | sed -E 's/(-[0-9]{4}-[0-9]{2}-[0-9]{2}).*/\1/' || true)"
[[ -n "$shared_stem" ]] && args+=(--shared $(ls "$shared_stem"*.json | sort))
shared_speed="$(newest 'bench/results/permute-speed-*.json')"
[[ -n "$shared_speed" ]] && args+=(--shared-speed "$shared_speed")
calib_ppl="$(newest 'bench/results/permute-calib-ppl-*.log')"
[[ -n "$calib_ppl" ]] && args+=(--calib-ppl "$calib_ppl")
layer_error="$(newest 'bench/results/permute-layer-error-*.txt')"
[[ -n "$layer_error" ]] && args+=(--layer-error "$layer_error")
seq_json="$(newest 'bench/results/permute-sequential-*.json')"
[[ -n "$seq_json" ]] && args+=(--sequential "$seq_json")
python3 scripts/results_render.py "${args[@]}"
echo "results: wrote docs/results.md from $table_json${local_json:+ and $local_json}" >&2
