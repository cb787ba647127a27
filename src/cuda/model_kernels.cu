// Simple CUDA kernels of the Llama forward (see model_kernels.h). They are a small share of the
// time next to the products, so they favour obvious code: one block per row or per (head,
// query), fp32 arithmetic, double where the CPU forward uses double (RMSNorm sums, RoPE angles).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <type_traits>

#include "cuda/model_kernels.h"

namespace sparsa::cuda::model_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kAttentionThreads = 128;

template <typename T>
__device__ inline T from_float(float v);
template <>
__device__ inline __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Block-wide reductions over blockDim.x (a multiple of 32, at most 1024) threads; every thread
// gets the result. `scratch` holds 33 values.
template <typename V, typename Op>
__device__ V block_reduce(V v, V* scratch, Op op) {
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    V r = scratch[0];
    for (int w = 1; w < warps; ++w) r = op(r, scratch[w]);
    scratch[32] = r;
  }
  __syncthreads();
  return scratch[32];
}

struct Sum {
  template <typename V>
  __device__ V operator()(V a, V b) const {
    return a + b;
  }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__global__ void embed_kernel(const float* table, const int32_t* tokens, int64_t dim, float* x) {
  const int64_t i = blockIdx.x;
  const float* row = table + int64_t(tokens[i]) * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) x[i * dim + d] = row[d];
}

template <typename T>
__global__ void add_rmsnorm_kernel(float* x, const float* delta, const float* weight, T* out,
                                   int64_t ld_out, int64_t dim, double eps) {
  __shared__ double scratch[33];
  const int64_t r = blockIdx.x;
  float* xr = x + r * dim;
  double ss = 0;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float v = xr[d];
    if (delta) {
      v += delta[r * dim + d];
      xr[d] = v;
    }
    ss += double(v) * v;
  }
  ss = block_reduce(ss, scratch, Sum{});
  const float scale = float(1.0 / sqrt(ss / double(dim) + eps));
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    out[r * ld_out + d] = from_float<T>(xr[d] * scale * weight[d]);
}

__global__ void rope_kernel(float* t, int64_t ld, int64_t n, int64_t heads, int64_t hd,
                            int64_t pairs, const double* inv_freq, int64_t pos0,
                            double rope_scale) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * heads * pairs) return;
  const int64_t j = idx % pairs, h = (idx / pairs) % heads, i = idx / (pairs * heads);
  const double angle = double(pos0 + i) / rope_scale * inv_freq[j];
  double s, c;
  sincos(angle, &s, &c);
  const float co = float(c), si = float(s);
  float* row = t + i * ld + h * hd;
  const float a = row[2 * j], b = row[2 * j + 1];
  row[2 * j] = a * co - b * si;
  row[2 * j + 1] = a * si + b * co;
}

// Block (h, i). Shared memory: q [hd], scores [pos0 + i + 1], reduction scratch [33].
template <typename T>
__global__ void attention_kernel(const float* q, int64_t ldq, const float* key_cache,
                                 const float* value_cache, T* out, int64_t ld_out, int64_t hd,
                                 int64_t group, int64_t kv_dim, int64_t pos0, float scale) {
  extern __shared__ float smem[];
  const int64_t h = blockIdx.x, i = blockIdx.y, length = pos0 + i + 1;
  float* qs = smem;
  float* scratch = smem + hd;
  float* scores = scratch + 33;
  const float* qi = q + i * ldq + h * hd;
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = qi[d];
  __syncthreads();
  const int64_t kv_offset = (h / group) * hd;
  float local_max = -INFINITY;
  for (int64_t t = threadIdx.x; t < length; t += blockDim.x) {
    const float* kt = key_cache + t * kv_dim + kv_offset;
    float s = 0;
    for (int64_t d = 0; d < hd; ++d) s += qs[d] * kt[d];
    s *= scale;
    scores[t] = s;
    local_max = fmaxf(local_max, s);
  }
  const float max_score = block_reduce(local_max, scratch, Max{});
  float local_sum = 0;
  for (int64_t t = threadIdx.x; t < length; t += blockDim.x) {
    const float e = expf(scores[t] - max_score);
    scores[t] = e;
    local_sum += e;
  }
  const float inv_sum = 1.0f / block_reduce(local_sum, scratch, Sum{});  // also a barrier
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0;
    const float* vd = value_cache + kv_offset + d;
    for (int64_t t = 0; t < length; ++t) acc += scores[t] * vd[t * kv_dim];
    out[i * ld_out + h * hd + d] = from_float<T>(acc * inv_sum);
  }
}

template <typename T>
__global__ void swiglu_kernel(const float* gate, const float* up, T* out, int64_t ld_out, int64_t n,
                              int64_t cols) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * cols) return;
  const int64_t i = idx / cols, c = idx % cols;
  const float g = gate[idx];
  out[i * ld_out + c] = from_float<T>(g / (1.0f + expf(-g)) * up[idx]);
}

__global__ void gather_columns_kernel(const uint16_t* x, int64_t ldx, const int32_t* perm, int64_t k,
                                      uint16_t* out, int64_t ld_out, int64_t n) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * k) return;
  const int64_t i = idx / k, j = idx % k;
  out[i * ld_out + j] = x[i * ldx + perm[j]];
}

unsigned blocks_for(int64_t work, int threads) { return unsigned((work + threads - 1) / threads); }

}  // namespace

cudaError_t embed(const float* table, const int32_t* tokens, int64_t n, int64_t dim, float* x,
                  cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return cudaErrorInvalidValue;
  embed_kernel<<<unsigned(n), kThreads, 0, stream>>>(table, tokens, dim, x);
  return cudaGetLastError();
}

cudaError_t add_rmsnorm(float* x, const float* delta, const float* weight, void* out,
                        int64_t ld_out, ElemType type, int64_t rows, int64_t dim, double eps,
                        cudaStream_t stream) {
  if (rows <= 0 || dim <= 0 || ld_out < dim) return cudaErrorInvalidValue;
  if (type == ElemType::F16)
    add_rmsnorm_kernel<<<unsigned(rows), kThreads, 0, stream>>>(
        x, delta, weight, static_cast<__half*>(out), ld_out, dim, eps);
  else if (type == ElemType::BF16)
    add_rmsnorm_kernel<<<unsigned(rows), kThreads, 0, stream>>>(
        x, delta, weight, static_cast<__nv_bfloat16*>(out), ld_out, dim, eps);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t rope(float* t, int64_t ld, int64_t n, int64_t heads, int64_t hd, int64_t pairs,
                 const double* inv_freq, int64_t pos0, double rope_scale, cudaStream_t stream) {
  if (pairs == 0 || n <= 0) return cudaSuccess;
  if (2 * pairs > hd || ld < heads * hd) return cudaErrorInvalidValue;
  const int64_t work = n * heads * pairs;
  rope_kernel<<<blocks_for(work, kThreads), kThreads, 0, stream>>>(t, ld, n, heads, hd, pairs,
                                                                   inv_freq, pos0, rope_scale);
  return cudaGetLastError();
}

cudaError_t attention(const float* q, int64_t ldq, const float* key_cache, const float* value_cache,
                      void* out, int64_t ld_out, ElemType type, int64_t n, int64_t heads,
                      int64_t kv_heads, int64_t hd, int64_t pos0, cudaStream_t stream) {
  if (n <= 0 || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || n > 65535)
    return cudaErrorInvalidValue;
  const size_t smem = size_t(hd + 33 + pos0 + n) * sizeof(float);
  const dim3 grid{unsigned(heads), unsigned(n), 1u};
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const int64_t group = heads / kv_heads, kv_dim = kv_heads * hd;
  const auto launch = [&](auto* typed_out) {
    using T = std::remove_pointer_t<decltype(typed_out)>;
    if (smem > 48 * 1024) {  // long contexts: opt in to more than the default shared memory
      const cudaError_t s = cudaFuncSetAttribute(
          attention_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
      if (s != cudaSuccess) return s;
    }
    attention_kernel<T><<<grid, kAttentionThreads, smem, stream>>>(
        q, ldq, key_cache, value_cache, typed_out, ld_out, hd, group, kv_dim, pos0, scale);
    return cudaGetLastError();
  };
  if (type == ElemType::F16) return launch(static_cast<__half*>(out));
  if (type == ElemType::BF16) return launch(static_cast<__nv_bfloat16*>(out));
  return cudaErrorInvalidValue;
}

cudaError_t swiglu(const float* gate, const float* up, void* out, int64_t ld_out, ElemType type,
                   int64_t n, int64_t cols, cudaStream_t stream) {
  if (n <= 0 || cols <= 0 || ld_out < cols) return cudaErrorInvalidValue;
  const unsigned blocks = blocks_for(n * cols, kThreads);
  if (type == ElemType::F16)
    swiglu_kernel<<<blocks, kThreads, 0, stream>>>(gate, up, static_cast<__half*>(out), ld_out, n,
                                                   cols);
  else if (type == ElemType::BF16)
    swiglu_kernel<<<blocks, kThreads, 0, stream>>>(gate, up, static_cast<__nv_bfloat16*>(out),
                                                   ld_out, n, cols);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t gather_columns(const void* x, int64_t ldx, const int32_t* perm, int64_t k, void* out,
                           int64_t ld_out, int64_t n, cudaStream_t stream) {
  if (n <= 0 || k <= 0 || ldx < k || ld_out < k) return cudaErrorInvalidValue;
  gather_columns_kernel<<<blocks_for(n * k, kThreads), kThreads, 0, stream>>>(
      static_cast<const uint16_t*>(x), ldx, perm, k, static_cast<uint16_t*>(out), ld_out, n);
  return cudaGetLastError();
}

}  // namespace sparsa::cuda::model_kernels
