// Split-K pieces shared by the wgmma prefills (2:4 v10 in wgmma_prefill.cu, V:2:M in
// wgmma_vnm_prefill*.cu; session 8): the CTAs of a split store fp32 partials
// [split][token][row] after the decode counters' region of the workspace, then
// split_reduce_kernel sums the splits in split order (deterministic) into Y, launched
// programmatically dependent on the split kernel (SPARSA_DECODE_PDL=0: plain stream order).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda/decode_tuning.h"
#include "cuda/decode_workspace.h"
#include "cuda/mma_sp.cuh"

namespace sparsa::cuda::detail {

// Sums partials [splits][m][ldp] in split order into Y[m, rows] (ldy); 4 rows per thread (ldp a
// multiple of 4, partials 16-byte aligned).
template <typename OutT>
__global__ void __launch_bounds__(256) split_reduce_kernel(const float* __restrict__ partials,
                                                           int splits, int64_t m, int64_t rows,
                                                           int64_t ldp, OutT* __restrict__ y,
                                                           int64_t ldy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // the split kernel's partials
#endif
  const int64_t quads = (rows + 3) / 4, total = m * quads;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t tok = i / quads, r0 = (i % quads) * 4;
    const float* src = partials + tok * ldp + r0;
    float4 sum = __ldcs(reinterpret_cast<const float4*>(src));
    for (int k = 1; k < splits; ++k) {
      const float4 v = __ldcs(reinterpret_cast<const float4*>(src + k * m * ldp));
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    OutT* out = y + tok * ldy + r0;
    const float vals[4] = {sum.x, sum.y, sum.z, sum.w};
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (r0 + j < rows) out[j] = from_float<OutT>(vals[j]);
  }
}

inline cudaError_t launch_split_reduce(const float* partials, int splits, int64_t m, int64_t rows,
                                       int64_t ldp, void* y, ElemType y_type, int64_t ldy,
                                       cudaStream_t stream) {
  return dispatch_out(y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    const int64_t quads = m * ((rows + 3) / 4);
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(static_cast<unsigned>(std::min<int64_t>((quads + 255) / 256, int64_t{sm_count()} * 8)));
    config.blockDim = dim3(256);
    config.stream = stream;
    cudaLaunchAttribute attr{};
    if (decode_tuning().pdl) {
      attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr.val.programmaticStreamSerializationAllowed = 1;
      config.attrs = &attr;
      config.numAttrs = 1;
    }
    const cudaError_t e = cudaLaunchKernelEx(&config, split_reduce_kernel<OutT>, partials, splits, m,
                                             rows, ldp, static_cast<OutT*>(y), ldy);
    const cudaError_t last = cudaGetLastError();
    return e != cudaSuccess ? e : last;
  });
}

// Where the partials start: after the decode counter region of rows_padded / 16 row groups, so a
// workspace shared with decode calls keeps its counters zero.
inline size_t split_partials_offset(int64_t rows_padded) { return counters_bytes(rows_padded / 16); }
inline size_t split_partials_bytes(int64_t rows_padded, int64_t m, int splits) {
  return static_cast<size_t>(splits) * static_cast<size_t>(m) * static_cast<size_t>(rows_padded) *
         sizeof(float);
}

// An environment switch of the split count: unset / "auto" -> -1 (automatic), "0" / "1" / "off"
// -> 1 (unsplit), "2".."max_split" -> forced; anything else -> automatic.
inline int split_mode_from_env(const char* name, int max_split) {
  const char* v = std::getenv(name);
  if (!v || !*v || std::strcmp(v, "auto") == 0) return -1;
  if (std::strcmp(v, "off") == 0) return 1;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0') return -1;
  if (n == 0 || n == 1) return 1;
  if (n >= 2 && n <= max_split) return static_cast<int>(n);
  return -1;
}

}  // namespace sparsa::cuda::detail
