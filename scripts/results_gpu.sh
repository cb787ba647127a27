#!/usr/bin/env bash
# Prints the "GPU" section of docs/results.md from the newest committed GPU forward run,
# bench/results/forward-*.json (measured by scripts/gpu_model_check.sh on a GPU machine; this
# script runs nothing on a GPU). Called by scripts/results.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
json="$(ls bench/results/forward-*.json 2>/dev/null | sort | tail -1)"
if [[ -z "$json" ]]; then
  printf '## GPU\n\nNo GPU run recorded (bench/results/forward-*.json).\n'
  exit 0
fi
python3 - "$json" <<'PY'
import json, sys
path = sys.argv[1]
r = json.load(open(path))
g, p = r["generation"], r["perplexity"]
print("## GPU (CUDA forward)\n")
print(f"One run on an **{r['device']}** (driver {r['driver']}), {r['date']}, recorded in `{path}`;")
print(f"weights {r['weights']}. Build: {r['build']}. Pruned models: {r['pruning']}.\n")
print(f"Generation, one sequence, greedy (`{g['command']}`):\n")
print("| pattern | device | generated | tokens/s |")
print("| --- | --- | --- | --- |")
for x in g["records"]:
    note = f" ({x['note']})" if "note" in x else ""
    print(f"| {x['pattern']} | {x['device']}{note} | {x['generated']} tokens in {x['seconds']:.2f} s | **{x['tokens_per_s']:.1f}** |")
ref = p["cpu_f32_reference"]
print(f"\nPerplexity on the GPU (`{p['command']}`; {p['text']}), next to the CPU values of the")
print("pruning table below (f32 weights):\n")
print("| pattern | method | device | perplexity | CPU f32 perplexity | eval time |")
print("| --- | --- | --- | --- | --- | --- |")
for x in p["records"]:
    key = x["pattern"] + (" " + x["method"] if "method" in x else "")
    cpu = ref.get(key)
    dev = x["device"] + (" (" + x["weights"] + ")" if "weights" in x else "")
    print(f"| {x['pattern']} | {x.get('method', '-')} | {dev} | {x['perplexity']:.4f} | "
          f"{cpu if cpu is not None else '-'} | {x['seconds']:.2f} s |")
fc = r["forward_check"]
print(f"\nForward check ({fc['test']}):", ", ".join(
    f"{x['pattern']} max relative error {x['max_relative_error']:.2e}, same argmax {x['same_argmax']}/{x['positions']}"
    for x in fc["records"]) + ".")
print("""
The GPU tokens/s depend only on the pattern, not on the pruning method, so the 2:4 and 64:2:8
rows hold for every method's row of the pruning table, whose "CPU tokens/s" column is the
2-core CPU machine's. Decode at this model size (576-wide layers, batch 1) looks bound by kernel
launches (13 per layer, no CUDA graph yet) rather than by weight bytes: 64:2:8 reads half the
weight bytes of 2:4 yet runs at the same speed, both about 1.4x the dense f16 (cuBLAS) forward.""")
PY
# A permuted model (prune --permute: layers gather their input through Linear::input_perm) run
# on both devices, when recorded.
perm_json=bench/results/permuted-forward-h100-2026-11-22.json
if [[ -f "$perm_json" ]]; then
  python3 - "$perm_json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
cuda = next(x for x in r["records"] if x["device"] == "cuda")
cpu = next(x for x in r["records"] if x["device"] == "cpu")
g = r["generation"]
print(f"\nPermuted layers on the GPU ({r['device']}, {r['date']}, main at {r['commit']}, "
      f"`{sys.argv[1]}`): `{r['prune']}`, then `{r['eval_command']}`: perplexity "
      f"{cuda['perplexity']:.4f} on cuda ({cuda['weights']} weights) and {cpu['perplexity']:.4f} "
      f"on the CPU ({cpu['weights']}) of the same machine, against 7056.69 in the pruning table "
      f"below (measured on the 2-core machine); generation {g['tokens_per_s']:.1f} tokens/s on cuda.")
PY
fi
