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
constexpr int kAttentionThreads = 256;

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

// One thread per (row, column) of q|k|v; the even column of a rotated pair does the pair.
__global__ void rope_store_kv_kernel(float* qkv, int64_t ld, int64_t n, int64_t q_dim,
                                     int64_t kv_dim, int64_t hd, int64_t pairs,
                                     const double* inv_freq, const int32_t* pos0,
                                     double rope_scale, float* keys, float* values) {
  const int64_t width = q_dim + 2 * kv_dim;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * width) return;
  const int64_t i = idx / width, c = idx % width, p = int64_t(*pos0) + i;
  float* row = qkv + i * ld;
  if (c >= q_dim + kv_dim) {
    values[p * kv_dim + (c - q_dim - kv_dim)] = row[c];
    return;
  }
  const bool is_k = c >= q_dim;
  const int64_t hc = (is_k ? c - q_dim : c) % hd;  // the column within its head
  float* out = is_k ? keys + p * kv_dim + (c - q_dim) : row + c;
  if (hc >= 2 * pairs) {  // past the rotated part of the head
    if (is_k) *out = row[c];
    return;
  }
  if (hc % 2 == 1) return;
  const double angle = double(p) / rope_scale * inv_freq[hc / 2];
  double s, co;
  sincos(angle, &s, &co);
  const float cf = float(co), sf = float(s);
  const float a = row[c], b = row[c + 1];
  out[0] = a * cf - b * sf;
  out[1] = a * sf + b * cf;
}

// Block (h, i). Shared memory: q [hd], reduction scratch [33], partial sums [blockDim.x],
// scores [*pos0 + i + 1]. The value sums split the keys over blockDim.x / hd thread groups
// (decode has a single query per head, so one thread per column would leave most idle).
template <typename T>
__global__ void attention_kernel(const float* q, int64_t ldq, const float* key_cache,
                                 const float* value_cache, T* out, int64_t ld_out, int64_t hd,
                                 int64_t group, int64_t kv_dim, const int32_t* pos0, float scale) {
  extern __shared__ float smem[];
  const int64_t h = blockIdx.x, i = blockIdx.y, length = int64_t(*pos0) + i + 1;
  float* qs = smem;
  float* scratch = qs + hd;
  float* partial = scratch + 33;
  float* scores = partial + blockDim.x;
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
  T* oi = out + i * ld_out + h * hd;
  const int64_t parts = hd <= int64_t(blockDim.x) ? int64_t(blockDim.x) / hd : 1;
  if (parts == 1) {
    for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
      float acc = 0;
      const float* vd = value_cache + kv_offset + d;
      for (int64_t t = 0; t < length; ++t) acc += scores[t] * vd[t * kv_dim];
      oi[d] = from_float<T>(acc * inv_sum);
    }
    return;
  }
  const int64_t d = threadIdx.x % hd, part = threadIdx.x / hd;
  if (part < parts) {
    float acc = 0;
    const float* vd = value_cache + kv_offset + d;
    for (int64_t t = part; t < length; t += parts) acc += scores[t] * vd[t * kv_dim];
    partial[threadIdx.x] = acc;
  }
  __syncthreads();
  if (threadIdx.x < hd) {
    float acc = 0;
    for (int64_t g = 0; g < parts; ++g) acc += partial[g * hd + threadIdx.x];
    oi[threadIdx.x] = from_float<T>(acc * inv_sum);
  }
}

template <typename T>
__global__ void swiglu_kernel(const float* gate, const float* up, int64_t ld_in, T* out,
                              int64_t ld_out, int64_t n, int64_t cols) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * cols) return;
  const int64_t i = idx / cols, c = idx % cols;
  const float g = gate[i * ld_in + c];
  out[i * ld_out + c] = from_float<T>(g / (1.0f + expf(-g)) * up[i * ld_in + c]);
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

cudaError_t rope_store_kv(float* qkv, int64_t ld, int64_t n, int64_t heads, int64_t kv_heads,
                          int64_t hd, int64_t pairs, const double* inv_freq, const int32_t* pos0,
                          double rope_scale, float* key_cache, float* value_cache,
                          cudaStream_t stream) {
  const int64_t q_dim = heads * hd, kv_dim = kv_heads * hd;
  if (n <= 0 || hd <= 0 || 2 * pairs > hd || ld < q_dim + 2 * kv_dim) return cudaErrorInvalidValue;
  const int64_t work = n * (q_dim + 2 * kv_dim);
  rope_store_kv_kernel<<<blocks_for(work, kThreads), kThreads, 0, stream>>>(
      qkv, ld, n, q_dim, kv_dim, hd, pairs, inv_freq, pos0, rope_scale, key_cache, value_cache);
  return cudaGetLastError();
}

namespace {

size_t attention_smem(int64_t hd, int64_t max_length) {
  return size_t(hd + 33 + kAttentionThreads + max_length) * sizeof(float);
}

// Raises the kernel's dynamic shared-memory limit when needed, once per size (not again while
// a graph is being captured).
template <typename T>
cudaError_t reserve_attention_smem(size_t smem) {
  static size_t reserved = 48 * 1024;
  if (smem <= reserved) return cudaSuccess;
  const cudaError_t s = cudaFuncSetAttribute(
      attention_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (s == cudaSuccess) reserved = smem;
  return s;
}

}  // namespace

bool attention_fits(ElemType type, int64_t hd, int64_t max_length) {
  int device = 0, optin = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const size_t smem = attention_smem(hd, max_length);
  if (smem > size_t(optin)) return false;
  const cudaError_t s = type == ElemType::BF16 ? reserve_attention_smem<__nv_bfloat16>(smem)
                                               : reserve_attention_smem<__half>(smem);
  if (s != cudaSuccess) cudaGetLastError();
  return s == cudaSuccess;
}

cudaError_t attention(const float* q, int64_t ldq, const float* key_cache, const float* value_cache,
                      void* out, int64_t ld_out, ElemType type, int64_t n, int64_t heads,
                      int64_t kv_heads, int64_t hd, const int32_t* pos0, int64_t max_length,
                      cudaStream_t stream) {
  if (n <= 0 || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || n > 65535 ||
      max_length < n)
    return cudaErrorInvalidValue;
  const size_t smem = attention_smem(hd, max_length);
  const dim3 grid{unsigned(heads), unsigned(n), 1u};
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const int64_t group = heads / kv_heads, kv_dim = kv_heads * hd;
  const auto launch = [&](auto* typed_out) {
    using T = std::remove_pointer_t<decltype(typed_out)>;
    const cudaError_t s = reserve_attention_smem<T>(smem);  // long contexts
    if (s != cudaSuccess) return s;
    attention_kernel<T><<<grid, kAttentionThreads, smem, stream>>>(
        q, ldq, key_cache, value_cache, typed_out, ld_out, hd, group, kv_dim, pos0, scale);
    return cudaGetLastError();
  };
  if (type == ElemType::F16) return launch(static_cast<__half*>(out));
  if (type == ElemType::BF16) return launch(static_cast<__nv_bfloat16*>(out));
  return cudaErrorInvalidValue;
}

cudaError_t swiglu(const float* gate, const float* up, int64_t ld_in, void* out, int64_t ld_out,
                   ElemType type, int64_t n, int64_t cols, cudaStream_t stream) {
  if (n <= 0 || cols <= 0 || ld_out < cols || ld_in < cols) return cudaErrorInvalidValue;
  const unsigned blocks = blocks_for(n * cols, kThreads);
  if (type == ElemType::F16)
    swiglu_kernel<<<blocks, kThreads, 0, stream>>>(gate, up, ld_in, static_cast<__half*>(out),
                                                   ld_out, n, cols);
  else if (type == ElemType::BF16)
    swiglu_kernel<<<blocks, kThreads, 0, stream>>>(gate, up, ld_in,
                                                   static_cast<__nv_bfloat16*>(out), ld_out, n,
                                                   cols);
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
