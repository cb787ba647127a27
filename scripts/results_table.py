#!/usr/bin/env python3
"""Measures the pruning table of docs/results.md on one machine and writes it as JSON.

Called by scripts/results_device.sh on a GPU machine (or by hand on any machine with a sparsa
build; --no-gpu measures perplexity on the CPU instead). For every row (dense, then magnitude,
Wanda and SparseGPT at each pattern, then the V:N:M patterns with --permute):

  busy phase  `sparsa prune` on the CPU (several prunes at a time), then `sparsa eval` over the
              whole text on the GPU as soon as a row's model is written; for the --check rows
              also `sparsa eval --max-windows CHECK_WINDOWS` on both the CPU and the GPU;
  quiet phase one row at a time, nothing else running: `sparsa run -n TOKENS` on the CPU (all
              threads), then on the GPU, for the tokens/s columns.

Every finished measurement is written to --out at once, so a run stopped by --deadline still
leaves the rows it finished. --rows picks a subset by id (e.g. to finish a stopped run; the
renderer merges JSON files row by row).
"""
import argparse
import collections
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time

PATTERNS = ["unstructured:0.5", "2:4", "4:8", "64:2:5", "64:2:8"]
METHODS = ["magnitude", "wanda", "sparsegpt"]
PERMUTED_PATTERNS = ["64:2:5", "64:2:8"]
PROMPT = "The capital of France is"
TEXT = "data/eval/eval.txt"
CALIB = "data/eval/calibration.txt"


def all_rows():
    rows = [dict(id="dense", method=None, pattern="dense", permute=False)]
    for p in PATTERNS:
        for m in METHODS:
            rows.append(dict(id=f"{m}-{p}", method=m, pattern=p, permute=False))
    for p in PERMUTED_PATTERNS:
        for m in METHODS:
            rows.append(dict(id=f"{m}-{p}-perm", method=m, pattern=p, permute=True))
    # Magnitude's mask with the permutation chosen for the calibration output energy
    # (--permute-objective output) instead of for kept |W|.
    for p in PERMUTED_PATTERNS:
        rows.append(dict(id=f"magnitude-{p}-perm-output", method="magnitude", pattern=p, permute=True,
                         objective="output"))
    # --permute-guard: a layer keeps its permutation only if that lowers its pruned calibration
    # output error. Not in the default run (--rows picks them).
    return rows


def guard_rows():
    return [dict(id=f"{m}-{p}-perm-guard", method=m, pattern=p, permute=True, guard=True)
            for p in PERMUTED_PATTERNS for m in METHODS]


# Rough relative cost of a prune, for ordering the work (longest first on most workers).
def prune_cost(row):
    if row["method"] is None:
        return 0
    base = {"magnitude": 1, "wanda": 2, "sparsegpt": 12}[row["method"]]
    return base + (10 if row["permute"] else 0) + (1 if row.get("objective") else 0) + (
        base if row.get("guard") else 0)


def field(text, name):
    m = re.search(rf"^{re.escape(name)}\s+(.*)$", text, re.M)
    return m.group(1).strip() if m else None


def parse_eval(text):
    out = {}
    if (v := field(text, "perplexity")) is not None:
        out["perplexity"] = float(v)
    if (v := field(text, "windows")) and (m := re.match(r"(\d+) of ctx (\d+), (\d+) tokens scored", v)):
        out["windows"], out["ctx"], out["scored_tokens"] = map(int, m.groups())
    if (v := field(text, "model bytes")) is not None:
        out["model_bytes"] = int(v.split()[0])
    if (v := field(text, "time")) and (m := re.match(r"([\d.]+) s", v)):
        out["seconds"] = float(m.group(1))
    if (v := field(text, "weights")) is not None:
        out["weights"] = v
    if (v := field(text, "device")) is not None:
        out["device"] = v
    if (v := field(text, "text")) is not None:
        out["text"] = v
    if (m := re.search(r"^note: (.*)$", text, re.M)):
        out["note"] = m.group(1)
    return out


def parse_run(text):
    out = {}
    m = re.search(r"^generated\s+(\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s\)", text, re.M)
    if m:
        out["generated"], out["seconds"], out["tokens_per_s"] = int(m.group(1)), float(m.group(2)), float(m.group(3))
    m = re.search(r"^prompt\s+(\d+) tokens in ([\d.]+) s", text, re.M)
    if m:
        out["prompt_tokens"], out["prompt_seconds"] = int(m.group(1)), float(m.group(2))
    if (v := field(text, "device")) is not None:
        out["device"] = v
    if (m := re.search(r"^note: (.*)$", text, re.M)):
        out["note"] = m.group(1)
    return out


def parse_prune(text):
    out = {}
    if (v := field(text, "model bytes")) is not None:
        out["model_bytes"] = int(v.split()[0])
        out["format"] = v.split("(", 1)[1].rstrip(")") if "(" in v else v
    for key in ("calibration", "permuted", "guard", "pruned"):
        if (v := field(text, key)) is not None:
            out[key] = v
    if (v := out.get("permuted")) and (m := re.search(r"\(([+-][\d.]+)%\)", v)):
        out["kept_importance_change_percent"] = float(m.group(1))
    return out


class Runner:
    def __init__(self, args):
        self.args = args
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.children = set()
        self.stopped = False
        self.doc = None

    def elapsed(self):
        return time.monotonic() - self.t0

    def left(self):
        return self.args.deadline - self.elapsed()

    def log(self, msg):
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def run(self, cmd, threads, label, wait_policy="passive"):
        """Runs cmd; returns (rc, stdout+stderr, seconds). Killed at the deadline (rc None)."""
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if wait_policy:
            env["OMP_WAIT_POLICY"] = wait_policy
        else:
            env.pop("OMP_WAIT_POLICY", None)
        start = time.monotonic()
        with self.lock:
            if self.stopped:
                return None, "not started: deadline", 0.0
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                 encoding="utf-8", errors="replace")  # a broken model prints any bytes
            self.children.add(p)
        try:
            out, _ = p.communicate(timeout=max(1.0, self.left()))
            rc = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            rc = None
            out += "\nkilled: deadline"
        finally:
            with self.lock:
                self.children.discard(p)
        secs = time.monotonic() - start
        with open(os.path.join(self.args.logs, label + ".log"), "w") as f:
            f.write(" ".join(shlex.quote(c) for c in cmd) + "\n" + out)
        return rc, out, secs

    def save(self):
        with self.lock:
            self.doc["elapsed_s"] = round(self.elapsed(), 1)
            tmp = self.args.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.doc, f, indent=1)
            os.replace(tmp, self.args.out)

    def set(self, row, key, value):
        with self.lock:
            row[key] = value
        self.save()


def machine_info():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return dict(cpu=cpu, cpu_threads=os.cpu_count(), gpu=gpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="sparsa executable")
    ap.add_argument("--model", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True, help="JSON to write")
    ap.add_argument("--work", default="/tmp/results-models", help="folder for the pruned models")
    ap.add_argument("--logs", default=None, help="folder for per-command logs (default: beside --out)")
    ap.add_argument("--rows", default="", help="comma-separated row ids (default: all)")
    ap.add_argument("--windows", type=int, default=-1, help="--max-windows of the main eval (-1: whole text)")
    ap.add_argument("--check", default="dense,sparsegpt-2:4,wanda-64:2:8-perm",
                    help="rows also evaluated on the CPU and GPU over a prefix, to compare the devices")
    ap.add_argument("--check-windows", type=int, default=4)
    ap.add_argument("--permute-rounds", type=int, default=2)
    ap.add_argument("--prune-workers", type=int, default=3)
    ap.add_argument("--prune-threads", type=int, default=4)
    ap.add_argument("--eval-workers", type=int, default=2)
    ap.add_argument("--eval-threads", type=int, default=2)
    ap.add_argument("--speed-tokens", type=int, default=64)
    ap.add_argument("--speed-threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-gpu", action="store_true", help="evaluate and time on the CPU only")
    ap.add_argument("--no-speed", action="store_true", help="skip the tokens/s phase")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the tokens/s phase, on the models an earlier run left in --work")
    ap.add_argument("--deadline", type=float, default=560, help="seconds; work past it is stopped")
    ap.add_argument("--speed-reserve", type=float, default=120,
                    help="seconds kept for the tokens/s phase: evals are not started after deadline - reserve")
    ap.add_argument("--label", default="", help="free text stored in the JSON (e.g. the commit)")
    args = ap.parse_args()
    args.logs = args.logs or os.path.join(os.path.dirname(os.path.abspath(args.out)), "logs")
    os.makedirs(args.logs, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    gpu = not args.no_gpu
    eval_device = ["--device", "cuda", "--dense-fallback"] if gpu else []

    rows = all_rows()
    if args.rows:
        rows += guard_rows()
        wanted = args.rows.split(",")
        unknown = [w for w in wanted if w not in {r["id"] for r in rows}]
        if unknown:
            sys.exit(f"results_table: unknown row ids {unknown}; known: {[r['id'] for r in rows]}")
        rows = [r for r in rows if r["id"] in wanted]
    checks = set(filter(None, args.check.split(",")))

    R = Runner(args)
    R.doc = dict(
        schema=1,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        label=args.label,
        machine=machine_info(),
        model=os.path.basename(args.model),
        text=TEXT,
        calibration=CALIB,
        settings=dict(
            ctx=512, eval_windows=args.windows, check_windows=args.check_windows,
            permute_rounds=args.permute_rounds, prompt=PROMPT, speed_tokens=args.speed_tokens,
            speed_threads=args.speed_threads, prune_workers=args.prune_workers,
            prune_threads=args.prune_threads, eval_workers=args.eval_workers,
            eval_threads=args.eval_threads, eval_device="cuda" if gpu else "cpu"),
        commands=dict(
            prune="sparsa prune MODEL --method METHOD -p PATTERN [--permute --permute-rounds "
                  f"{args.permute_rounds} [--permute-objective output]] -o OUT.gguf "
                  f"(calibration: {CALIB}, 4 windows of 256 tokens)",
            eval=f"sparsa eval OUT.gguf --text {TEXT} --ctx 512"
                 + (f" --max-windows {args.windows}" if args.windows >= 0 else "")
                 + (" --device cuda --dense-fallback" if gpu else ""),
            check=f"sparsa eval OUT.gguf --text {TEXT} --ctx 512 --max-windows {args.check_windows} "
                  "[--device cuda --dense-fallback]",
            speed_cpu=f'sparsa run OUT.gguf -p "{PROMPT}" -n {args.speed_tokens} --ignore-eos '
                      f"(OMP_NUM_THREADS={args.speed_threads})",
            speed_gpu=f'sparsa run OUT.gguf -p "{PROMPT}" -n {args.speed_tokens} --ignore-eos '
                      "--device cuda --dense-fallback"),
        rows=rows,
        phases={},
    )
    R.save()

    def model_path(row):
        return args.model if row["method"] is None else os.path.join(args.work, row["id"].replace(":", "-") + ".gguf")

    # ---- busy phase ---------------------------------------------------------------------------
    gpu_queue = collections.deque()
    cpu_checks = collections.deque()
    cond = threading.Condition()
    pending_prunes = [len([r for r in rows if r["method"] is not None])]
    eval_cutoff = args.deadline - (0 if args.no_speed else args.speed_reserve)

    def prune(row):
        cmd = [args.bin, "prune", args.model, "--method", row["method"], "-p", row["pattern"],
               "-o", model_path(row)]
        if row["permute"]:
            cmd += ["--permute", "--permute-rounds", str(args.permute_rounds)]
        if row.get("objective"):
            cmd += ["--permute-objective", row["objective"]]
        if row.get("guard"):
            cmd += ["--permute-guard"]
        rc, out, secs = R.run(cmd, args.prune_threads, "prune-" + row["id"])
        info = parse_prune(out)
        info.update(seconds=round(secs, 2), threads=args.prune_threads, rc=rc)
        R.set(row, "prune", info)
        R.log(f"pruned {row['id']} in {secs:.1f} s (rc {rc})")
        return rc == 0

    def evaluate(row, windows, device_args, threads, key):
        cmd = [args.bin, "eval", model_path(row), "--text", TEXT, "--ctx", "512"] + device_args
        if windows >= 0:
            cmd += ["--max-windows", str(windows)]
        rc, out, secs = R.run(cmd, threads, f"{key}-{row['id']}")
        info = parse_eval(out)
        info.update(wall_seconds=round(secs, 2), rc=rc)
        R.set(row, key, info)
        R.log(f"{key} {row['id']}: {info.get('perplexity')} ({secs:.1f} s, rc {rc})")

    def enqueue_after_prune(row):
        with cond:
            gpu_queue.append((row, args.windows, eval_device, "eval"))
            if row["id"] in checks:
                if gpu:
                    gpu_queue.append((row, args.check_windows, eval_device, "check_gpu"))
                cpu_checks.append(row)
            cond.notify_all()

    prune_jobs = collections.deque(sorted([r for r in rows if r["method"] is not None],
                                          key=prune_cost, reverse=True))

    def prune_worker(from_short_end):
        while True:
            with cond:
                if cpu_checks:
                    row = cpu_checks.popleft()
                    job = "check"
                elif prune_jobs:
                    row = prune_jobs.pop() if from_short_end else prune_jobs.popleft()
                    job = "prune"
                else:
                    return
            if R.left() < 5 or (job == "prune" and R.elapsed() > eval_cutoff):
                R.log(f"skipped {job} {row['id']}: past the cutoff")
                if job == "prune":
                    with cond:
                        pending_prunes[0] -= 1
                        cond.notify_all()
                continue
            if job == "check":
                evaluate(row, args.check_windows, [], args.prune_threads, "check_cpu")
                continue
            ok = prune(row)
            with cond:
                pending_prunes[0] -= 1
                cond.notify_all()
            if ok:
                enqueue_after_prune(row)

    def eval_worker():
        while True:
            with cond:
                while not gpu_queue and pending_prunes[0] > 0 and not R.stopped:
                    cond.wait(timeout=1.0)
                if not gpu_queue:
                    return
                item = gpu_queue.popleft()
            if R.elapsed() > eval_cutoff:
                R.log(f"skipped {item[3]} {item[0]['id']}: past the eval cutoff")
                continue
            evaluate(*item[:2], item[2], args.eval_threads, item[3])

    R.log(f"busy phase: {len(prune_jobs)} prunes, {args.prune_workers} workers x {args.prune_threads} "
          f"threads; evals {args.eval_workers} x {args.eval_threads} threads on {'cuda' if gpu else 'cpu'}")
    for row in rows:
        if row["method"] is None:
            enqueue_after_prune(row)
    if args.speed_only:
        prune_jobs.clear()
        gpu_queue.clear()
        cpu_checks.clear()
        pending_prunes[0] = 0
    threads = [threading.Thread(target=prune_worker, args=(i == args.prune_workers - 1 and args.prune_workers > 1,))
               for i in range(args.prune_workers)]
    threads += [threading.Thread(target=eval_worker) for _ in range(args.eval_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # CPU checks that were queued after the prune workers finished.
    while cpu_checks and R.left() > 5:
        evaluate(cpu_checks.popleft(), args.check_windows, [], os.cpu_count(), "check_cpu")
    R.doc["phases"]["busy_s"] = round(R.elapsed(), 1)
    R.log("busy phase done")

    # ---- quiet phase: tokens/s, one process at a time ----------------------------------------
    if not args.no_speed:
        # One row of each packed format first (tokens/s depend on the format, not on the values),
        # then the others, so that a run cut short by the deadline still covers every format.
        seen, first, rest = set(), [], []
        for row in rows:
            config = (row["pattern"], row["permute"])
            (rest if config in seen else first).append(row)
            seen.add(config)
        for row in first + rest:
            if not os.path.exists(model_path(row)):
                continue
            for device, key in [("cpu", "speed_cpu")] + ([("cuda", "speed_gpu")] if gpu else []):
                if R.left() < 8:
                    R.log(f"skipped {key} {row['id']}: deadline")
                    continue
                cmd = [args.bin, "run", model_path(row), "-p", PROMPT, "-n", str(args.speed_tokens), "--ignore-eos"]
                if device == "cuda":
                    cmd += ["--device", "cuda", "--dense-fallback"]
                rc, out, secs = R.run(cmd, args.speed_threads, f"{key}-{row['id']}", wait_policy=None)
                info = parse_run(out)
                info.update(rc=rc, wall_seconds=round(secs, 2))
                if device == "cpu":
                    info["threads"] = args.speed_threads
                R.set(row, key, info)
                R.log(f"{key} {row['id']}: {info.get('tokens_per_s')} tokens/s")
    R.doc["phases"]["total_s"] = round(R.elapsed(), 1)
    R.save()
    missing = [r["id"] for r in rows if "eval" not in r or r["eval"].get("rc") != 0]
    R.log(f"done; rows without a full eval: {missing or 'none'}")


if __name__ == "__main__":
    main()
