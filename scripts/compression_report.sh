#!/usr/bin/env bash
# Regenerates the real-model section of docs/compression.md: for each pattern {dense, 2:4,
# 64:2:8, unstructured 50% as bitmap} x codec {fp16 (none), int8, int4, codebook4, codebook8,
# lossless} on SmolLM2-135M-Instruct's block linear layers, only through the command line:
#
#   sparsa prune MODEL.gguf -p PATTERN -o pruned.gguf         (magnitude, every block linear)
#   sparsa compress IN -p PATTERN [-f bitmap] -c CODEC --only LAYERS -o X.sparsa
#   sparsa inspect X.sparsa --json                             (bits per weight by role)
#   sparsa decompress X.sparsa -o X.safetensors                (error against the dense weights)
#
# The GGUF's Q4_1 weights, dequantised and rounded to fp16, are "the dense fp16 weights"; ratios
# are against 16 bits per weight. The GEMV speed-up columns are read from measured results, not
# computed here (synthetic weights of the same pattern and codec, so the timing does not depend on
# the model):
#   CPU_JSON   bench/cpu_codec.cc: {dense, 2:4, bitmap 50%, 64:2:8} x {f16, int8, int4, codebook4}
#              against its dense f16 SIMD kernel, M = 1, 4096 x 4096; several files (space-
#              separated) give the median over the runs;
#   GPU_JSON   `sparsa bench gemm` (gpu_gemm) at M = 1 with the patterns 2:4, 64:2:8, bitmap50 and
#              each +int8 / +int4 / +codebook4, against cuBLAS fp16 in the same run, on 4096 x 4096
#              and 28672 x 8192, per call and as a graph of 20 calls;
#   RANS_JSON  bench/gpu_rans.cc: the dense lossless GEMV that decodes on the fly (lossless_gemv)
#              against cuBLAS fp16 (per call).
# Cells without a measured kernel say "—". The GPU section of the document is left as it is: only
# the text between the two report markers is replaced.
#
# Environment: SPARSA (the CLI, default build/release/sparsa), MODEL, LAYERS (regex of the GGUF
# tensors compressed, default three blocks: first, middle, last), CPU_JSON, GPU_JSON, RANS_JSON,
# WORK (scratch folder, about 2 GB; default a new temporary folder, removed at the end), DOC
# (default docs/compression.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SPARSA=${SPARSA:-build/release/sparsa}
MODEL=${MODEL:-$HOME/.cache/sparsa/SmolLM2-135M-Instruct.Q4_1.gguf}
LAYERS=${LAYERS:-'^blk\.(0|15|29)\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$'}
CPU_JSON=${CPU_JSON:-$(ls bench/results/cpu-codec-h100host-2026-11-24-run*.json 2> /dev/null | tr '\n' ' ')}
GPU_JSON=${GPU_JSON:-bench/results/gemm-gemv-h100-2026-11-25-session21-final.json}
RANS_JSON=${RANS_JSON:-bench/results/gpu-rans-h100-2026-11-24.json}
DOC=${DOC:-docs/compression.md}
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"

[ -x "$SPARSA" ] || { echo "compression_report: no CLI at $SPARSA (build it, or set SPARSA)" >&2; exit 1; }
python3 -c 'import numpy' 2> /dev/null \
  || { echo "compression_report: needs numpy (python3 -m pip install numpy)" >&2; exit 1; }
[ -f "$MODEL" ] || bash scripts/fetch_model.sh
[ -f "$MODEL" ] || { echo "compression_report: model $MODEL missing" >&2; exit 1; }

# pattern label | prune pattern (empty: the dense weights) | compress flags
PATTERNS=(
  "dense||"
  "2:4|2:4|-p 2:4"
  "64:2:8|64:2:8|-p 64:2:8"
  "unstructured 50% (bitmap)|unstructured:0.5|-p unstructured:0.5 -f bitmap"
)
# codebook8's default is a codebook per output channel: 256 fp16 entries per row cost 2.7-7 bits
# per weight on this model's 576-1536-wide rows, so the per-tensor variant is measured too.
CODECS=(none int8 int4 codebook4 codebook8 codebook8:tensor lossless)

log() { echo "compression_report: $*" >&2; }
slug() { echo "$1" | tr -c 'A-Za-z0-9\n' '_'; }

# The dense reference: the selected matrices as fp16, through the same commands.
log "dense reference ($LAYERS)"
"$SPARSA" compress "$MODEL" -c none --only "$LAYERS" -o "$WORK/reference.sparsa" > "$WORK/reference.log"
"$SPARSA" decompress "$WORK/reference.sparsa" -o "$WORK/reference.safetensors" > /dev/null

: > "$WORK/runs.tsv"
for entry in "${PATTERNS[@]}"; do
  IFS='|' read -r label prune_pattern flags <<< "$entry"
  input="$MODEL"
  if [ -n "$prune_pattern" ]; then
    input="$WORK/pruned-$(slug "$prune_pattern").gguf"
    log "prune $prune_pattern"
    "$SPARSA" prune "$MODEL" -p "$prune_pattern" -o "$input" > "$WORK/prune-$(slug "$prune_pattern").log"
  fi
  for codec in "${CODECS[@]}"; do
    name="$(slug "$label")-$(slug "$codec")"
    log "compress $label $codec"
    # shellcheck disable=SC2086  # flags are words
    "$SPARSA" compress "$input" $flags -c "$codec" --only "$LAYERS" -o "$WORK/$name.sparsa" \
      > "$WORK/$name.log"
    "$SPARSA" inspect "$WORK/$name.sparsa" --json > "$WORK/$name.json"
    "$SPARSA" decompress "$WORK/$name.sparsa" -o "$WORK/$name.safetensors" > /dev/null
    printf '%s\t%s\t%s\n' "$label" "$codec" "$name" >> "$WORK/runs.tsv"
    [ "$codec" = none ] || rm -f "$WORK/$name.sparsa"
  done
  [ -z "$prune_pattern" ] || rm -f "$input"
done

python3 - "$WORK" "$CPU_JSON" "$DOC" "$MODEL" "$LAYERS" "$GPU_JSON" "$RANS_JSON" <<'PY'
import json, math, os, re, statistics, struct, sys
import numpy as np

work, cpu_json, doc, model, layers, gpu_json, rans_json = sys.argv[1:8]

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = {"F16": np.float16, "F32": np.float32}[info["dtype"]]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).astype(np.float64)
    return out

reference = read_safetensors(os.path.join(work, "reference.safetensors"))
ref_norm2 = sum(float(np.dot(v, v)) for v in reference.values())
weights = sum(v.size for v in reference.values())

def read_results(path, key):
    """(records, device, date) of a results JSON; ([], None, None) when the file is absent."""
    if not os.path.exists(path):
        return [], None, None
    d = json.load(open(path))
    return d[key], d.get("device"), d.get("date")


# CPU_JSON: one or more cpu_codec runs (space-separated); the cell is the median over the runs,
# since a shared host's runs can differ by 1.5x on single records.
cpu_runs = {}
cpu_device = cpu_date = None
cpu_files = [f for f in cpu_json.split() if os.path.exists(f)]
for f in cpu_files:
    records, cpu_device, cpu_date = read_results(f, "records")
    for r in records:
        if r["M"] == 1 and r.get("speedup_vs_f16") is not None:
            cpu_runs.setdefault(r["pattern"], []).append(r["speedup_vs_f16"])
cpu = {k: statistics.median(v) for k, v in cpu_runs.items()}
cpu_label = {"dense": "dense", "2:4": "2:4", "64:2:8": "64:2:8",
             "unstructured 50% (bitmap)": "bitmap50"}

# GPU: cuBLAS fp16 time / ours at M = 1 per shape, per call and in the graph timing.
GPU_SHAPES = [(4096, 4096), (28672, 8192)]
records, gpu_device, gpu_date = read_results(gpu_json, "records")
gpu = {(r["pattern"], r["N"], r["K"]): (
           r["cublas_us"] / r["time_us"],
           r["graph_cublas_us"] / r["graph_time_us"] if r.get("graph_time_us") else None)
       for r in records if r["M"] == 1 and (r["N"], r["K"]) in GPU_SHAPES}
records, _, rans_date = read_results(rans_json, "results")
rans = {(r["rows"], r["cols"]): (r["fused_fraction_of_cublas_f16"], None) for r in records}
gpu_label = {"2:4": "2:4", "64:2:8": "64:2:8", "unstructured 50% (bitmap)": "bitmap50"}


def gpu_cell(label, codec, shape):
    if label == "dense" and codec == "none":
        return "1 (cuBLAS)" if gpu_device else "—"
    if label == "dense" and codec == "lossless":
        got = rans.get(shape)
    elif label in gpu_label and codec in ("none", "int8", "int4", "codebook4"):
        key = gpu_label[label] + ("" if codec == "none" else "+" + codec)
        got = gpu.get((key, *shape))
    else:
        got = None
    if got is None:
        return "—"
    call, graph = got
    return f"{call:.2f} \\| {graph:.2f}x" if graph is not None else f"{call:.2f}x (per call)"


rows = []
for line in open(os.path.join(work, "runs.tsv")):
    label, codec, name = line.rstrip("\n").split("\t")
    inspect = json.load(open(os.path.join(work, name + ".json")))
    bits = {"values": 0.0, "metadata": 0.0, "scales": 0.0}
    n = 0
    for t in inspect["tensors"]:
        w = math.prod(t["shape"])
        n += w
        for k in bits:
            bits[k] += t["bits_per_weight"][k] * w
    bits = {k: v / n for k, v in bits.items()}
    total = sum(bits.values())
    # The codec's error against the weights it was given (pruned ones for sparse patterns),
    # as `sparsa compress` prints it over all selected tensors.
    log = open(os.path.join(work, name + ".log")).read()
    m = re.search(r"relative error ([0-9.eE+-]+|nan|inf)", log)
    codec_err = float(m.group(1)) if m else float("nan")
    # Pattern + codec against the dense fp16 weights.
    got = read_safetensors(os.path.join(work, name + ".safetensors"))
    err2 = sum(float(np.sum((got[k] - v) ** 2)) for k, v in reference.items())
    total_err = math.sqrt(err2 / ref_norm2)
    key = cpu_label.get(label)
    cpu_key = None
    if key is not None:
        cpu_key = f"{key}/f16" if codec == "none" else f"{key}+{codec}"
    speedup = cpu.get(cpu_key) if cpu_key else None
    gpu_cells = [gpu_cell(label, codec, shape) for shape in GPU_SHAPES]
    rows.append((label, codec, bits, total, codec_err, total_err, speedup, gpu_cells))

def fmt_err(e):
    if e == 0:
        return "0"
    if math.isnan(e):
        return "—"
    return f"{e:.2e}" if e < 1e-2 else f"{e:.3f}"

lines = []
lines.append("<!-- compression_report.sh: begin (generated; edit the script, not this text) -->")
lines.append("## Real model: SmolLM2-135M-Instruct (generated by scripts/compression_report.sh)")
lines.append("")
lines.append(f"Weights: the block linear layers matching `{layers}` of `{os.path.basename(model)}` "
             f"({weights:,} weights: q, k, v, o, gate, up, down of blocks 0, 15 and 29 by default), "
             "Q4_1 dequantised and rounded to fp16 — the dense fp16 reference. Sparse patterns: "
             "`sparsa prune MODEL -p PATTERN` (magnitude, every block linear), then "
             "`sparsa compress` with the pattern (nm for 2:4, vnm for 64:2:8, bitmap for "
             "unstructured 50%) and the codec's default options (int8/int4: groups of 128, "
             "symmetric; codebooks per output channel, and codebook8 also per tensor). Bits per "
             "weight of the dense shape, "
             "summed over the tensors by `sparsa inspect --json`; ratio = 16 / total.")
lines.append("")
lines.append("* **codec error**: relative Frobenius error of the decoded weights against the weights "
             "the codec was given (the pruned ones), over all selected tensors, as `sparsa compress` "
             "prints it.")
lines.append("* **total error**: the same against the dense fp16 weights, pruning included "
             "(`sparsa decompress`, compared in the script).")
if cpu_device:
    lines.append(f"* **CPU GEMV**: speed-up over the dense fp16 SIMD kernel at M = 1, 4096 x 4096, "
                 f"measured by `bench/cpu_codec.cc` (median of {len(cpu_files)} run(s), "
                 f"{', '.join(os.path.basename(f) for f in cpu_files)}: {cpu_device}, "
                 f"{cpu_date}; synthetic weights of the same pattern and codec, so the timing "
                 "does not depend on the model). \"—\": no kernel for that combination is "
                 "measured there (codebook8 and lossless are storage formats on the CPU, decoded "
                 "before the product).")
if gpu_device:
    lines.append(f"* **GPU GEMV**: cuBLAS fp16 time / ours at M = 1 on {gpu_device} "
                 f"({os.path.basename(gpu_json)}, {gpu_date}; `sparsa bench gemm`, cuBLAS in the "
                 "same run, synthetic weights of the pattern and codec, weight copies rotated "
                 "past L2), per call \\| as a graph of 20 calls, on 4096 x 4096 and on "
                 "28672 x 8192. The sparse and compressed kernels are the decode kernels of "
                 "docs/kernels-gpu.md; dense + lossless is `lossless_gemv` (entropy decode inside "
                 f"the product; {os.path.basename(rans_json)}, {rans_date}, per call only). "
                 "\"—\": no GPU kernel reads that combination (dense int8 / int4 / codebook "
                 "weights and codebook8 have none; lossless with a sparse pattern is a storage "
                 "format).")
lines.append("")
lines.append("| pattern | codec | values | metadata | scales | total bits/w | ratio vs fp16 | "
             "codec error | total error | CPU GEMV vs fp16 | GPU GEMV vs cuBLAS, 4096 x 4096 | "
             "GPU, 28672 x 8192 |")
lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
for label, codec, bits, total, codec_err, total_err, speedup, gpu_cells in rows:
    shown = "fp16 (none)" if codec == "none" else codec
    sp = f"{speedup:.2f}x" if speedup is not None else "—"
    lines.append(f"| {label} | {shown} | {bits['values']:.3f} | {bits['metadata']:.3f} | "
                 f"{bits['scales']:.3f} | {total:.3f} | {16 / total:.2f}x | {fmt_err(codec_err)} | "
                 f"{fmt_err(total_err)} | {sp} | {gpu_cells[0]} | {gpu_cells[1]} |")
lines.append("")
lines.append("<!-- compression_report.sh: end -->")
block = "\n".join(lines) + "\n"

text = open(doc).read()
begin = text.find("<!-- compression_report.sh: begin")
end_marker = "<!-- compression_report.sh: end -->"
if begin >= 0:
    end = text.index(end_marker, begin) + len(end_marker) + 1
    text = text[:begin] + block + text[end:]
else:
    # First run: before the GPU section if there is one, else before "## Fused CPU kernels".
    anchor = None
    for heading in ("\n## GPU", "\n## Fused CPU kernels"):
        anchor = text.find(heading)
        if anchor >= 0:
            break
    if anchor is None or anchor < 0:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        text = text[:anchor + 1] + block + "\n" + text[anchor + 1:]
open(doc, "w").write(text)
print(block)
PY
log "updated $DOC"
