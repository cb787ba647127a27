// The non-GEMM kernels of the CUDA Llama forward (src/cuda/cuda_model.cc): embedding lookup,
// residual add + RMSNorm, RoPE with the KV-cache store, attention over the KV cache and SwiGLU. Plain launchers (C++17,
// no std::span, so nvcc compiles them) that return the launch's cudaError_t and never
// synchronise. `type` names the element type of the fp16/bf16 buffers (the products' inputs);
// everything else is fp32.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda::model_kernels {

// x[i, :] = table[tokens[i], :] for i < n; x is [n, dim].
cudaError_t embed(const float* table, const int32_t* tokens, int64_t n, int64_t dim, float* x,
                  cudaStream_t stream);

// Per row r < rows: x[r] += delta[r] (delta may be null), then
// out[r, :dim] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, in `type`. x, delta: [rows, dim];
// out: [rows, ld_out].
cudaError_t add_rmsnorm(float* x, const float* delta, const float* weight, void* out,
                        int64_t ld_out, ElemType type, int64_t rows, int64_t dim, double eps,
                        cudaStream_t stream);

// The step after the fused q|k|v product: row i < n of qkv ([n, ld] f32: q [heads*hd], then
// k and v [kv_heads*hd] each) is at position p = *pos0 + i. Rotates adjacent pairs (2j, 2j+1),
// j < pairs, of every q and k head by p / rope_scale * inv_freq[j] radians (q in place), and
// writes k and v to row p of the caches ([capacity, kv_heads*hd] f32). pos0 is device memory,
// so a captured graph reads the position of each replay.
cudaError_t rope_store_kv(float* qkv, int64_t ld, int64_t n, int64_t heads, int64_t kv_heads,
                          int64_t hd, int64_t pairs, const double* inv_freq, const int32_t* pos0,
                          double rope_scale, float* key_cache, float* value_cache,
                          cudaStream_t stream);

// Causal attention: query i (position *pos0 + i) of head h attends to keys 0 .. *pos0 + i of KV
// head h / (heads / kv_heads), softmax in fp32. q: [n, ldq] f32; caches [capacity, kv_heads*hd]
// f32; out: [n, ld_out] in `type`. max_length bounds *pos0 + n (it sizes the shared memory:
// the graph passes the cache capacity). pos0 is device memory.
cudaError_t attention(const float* q, int64_t ldq, const float* key_cache, const float* value_cache,
                      void* out, int64_t ld_out, ElemType type, int64_t n, int64_t heads,
                      int64_t kv_heads, int64_t hd, const int32_t* pos0, int64_t max_length,
                      cudaStream_t stream);
// Whether attention() can serve max_length keys (its scores live in shared memory), and sets the
// kernel's shared-memory limit for it ahead of a graph capture.
bool attention_fits(ElemType type, int64_t hd, int64_t max_length);

// out[i, c] = silu(gate[i, c]) * up[i, c] in `type`; gate, up: rows of ld_in f32 (the fused
// gate|up product: up = gate + hidden); out [n, ld_out].
cudaError_t swiglu(const float* gate, const float* up, int64_t ld_in, void* out, int64_t ld_out,
                   ElemType type, int64_t n, int64_t cols, cudaStream_t stream);

// out[i, j] = x[i, perm[j]] for i < n, j < k: the input of a layer pruned after an input-channel
// permutation (Linear::input_perm). x, out: 2-byte elements (fp16/bf16), rows of ldx / ld_out.
cudaError_t gather_columns(const void* x, int64_t ldx, const int32_t* perm, int64_t k, void* out,
                           int64_t ld_out, int64_t n, cudaStream_t stream);

}  // namespace sparsa::cuda::model_kernels
