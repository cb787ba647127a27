#!/usr/bin/env python3
"""Checks sparsa's dense Llama forward against an independent NumPy re-implementation.

Reads the same GGUF with the `gguf` package (its own parser and dequantisation), undoes
llama.cpp's Q/K row permutation to get Hugging Face's layout, and runs the Hugging Face Llama
formulation (rotate_half RoPE, GQA, RMSNorm, SwiGLU, tied head) in float64 on a fixed prompt.
sparsa computes the same prompt's logits with `sparsa run --dump-logits`; the script prints the
max absolute and relative difference and the top tokens of both.

Run by hand (not in CI):
    python3 -m pip install numpy gguf
    python3 scripts/check_logits.py [--model GGUF] [--sparsa build/release/sparsa] [--prompt TEXT]
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog. In 2024, the capital of France was"


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def tensors(reader):
    """name -> float64 array in our [rows, cols] layout (GGUF's ne reversed)."""
    out = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        out[t.name] = np.asarray(values, dtype=np.float64).reshape(shape)
    return out


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py's permute(): GGUF row 2b + a -> HF row a*(hd/2) + b."""
    rows, cols = w.shape
    hd = rows // n_head
    return w.reshape(n_head, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def forward(reader, w, ids):
    dim = int(field(reader, "llama.embedding_length"))
    n_layers = int(field(reader, "llama.block_count"))
    n_head = int(field(reader, "llama.attention.head_count"))
    n_kv = int(field(reader, "llama.attention.head_count_kv"))
    eps = float(field(reader, "llama.attention.layer_norm_rms_epsilon"))
    theta = float(field(reader, "llama.rope.freq_base"))
    hd = dim // n_head
    n = len(ids)

    inv_freq = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    angles = np.outer(np.arange(n, dtype=np.float64), inv_freq)  # [n, hd/2]
    cos = np.cos(np.concatenate([angles, angles], axis=-1))[:, None, :]  # [n, 1, hd]
    sin = np.sin(np.concatenate([angles, angles], axis=-1))[:, None, :]
    mask = np.triu(np.full((n, n), -np.inf), k=1)

    x = w["token_embd.weight"][ids]
    for l in range(n_layers):
        p = f"blk.{l}."
        h = rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = (h @ unpermute(w[p + "attn_q.weight"], n_head).T).reshape(n, n_head, hd)
        k = (h @ unpermute(w[p + "attn_k.weight"], n_kv).T).reshape(n, n_kv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, n_kv, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, n_head // n_kv, axis=1)
        v = np.repeat(v, n_head // n_kv, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", probs, v).reshape(n, dim)
        x = x + att @ w[p + "attn_output.weight"].T
        h = rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = rms_norm(x, w["output_norm.weight"], eps)
    head = w.get("output.weight", w["token_embd.weight"])
    return x @ head.T


def main():
    default_model = os.environ.get("SPARSA_MODEL_GGUF") or str(
        pathlib.Path(os.environ.get("SPARSA_MODEL_CACHE", pathlib.Path.home() / ".cache/sparsa"))
        / "SmolLM2-135M-Instruct.Q4_1.gguf")
    root = pathlib.Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--sparsa", default=str(root / "build/release/sparsa"))
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        dump = pathlib.Path(tmp) / "logits"
        subprocess.run([args.sparsa, "run", args.model, "-p", args.prompt, "-n", "0",
                        "--dump-logits", str(dump)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ids = np.fromfile(str(dump) + ".ids", dtype=np.int32)
        ours = np.fromfile(dump, dtype=np.float32).reshape(len(ids), -1).astype(np.float64)

    reader = GGUFReader(args.model)
    ref = forward(reader, tensors(reader), ids)
    diff = np.abs(ours - ref)
    scale = np.abs(ref).max()
    print(f"model   {args.model}")
    print(f"prompt  {args.prompt!r} ({len(ids)} tokens)")
    print(f"logits  {ours.shape[0]} x {ours.shape[1]}, max |ref| = {scale:.4f}")
    print(f"max abs diff        {diff.max():.3e}")
    print(f"max rel diff        {diff.max() / scale:.3e}  (max abs diff / max |ref logit|)")
    print(f"rms rel diff        {np.sqrt((diff ** 2).mean() / (ref ** 2).mean()):.3e}")
    same_top = int((ours.argmax(-1) == ref.argmax(-1)).sum())
    print(f"same argmax         {same_top} / {len(ids)} positions")
    ok = diff.max() / scale < 1e-4 and same_top == len(ids)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
