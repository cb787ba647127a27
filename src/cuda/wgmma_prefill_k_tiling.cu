// The row-major device layout of 2:4 values, values_k (every 2:4 kernel can read it since
// session 7, nm24_layout.cuh; upload writes only it with SPARSA_NM24_LAYOUT=k): the compressed
// values row-major,
// [rows_padded][cols_padded / 2], i.e. K-major rows that a TMA box with the 64-byte swizzle turns
// into wgmma's canonical A layout (wgmma_prefill_ss.cu).
// Written on the device from tile_nm24's fragment tiling (docs/formats.md, "GPU tiling"): lane
// 4g + t of k-step s holds, as four 32-bit words, compressed columns 16 s + {2t, 2t + 1} of rows
// g and g + 8, then 16 s + {2t + 8, 2t + 9} of rows g and g + 8 (tiling.cc).
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

__global__ void nm24_tile_k_kernel(const uint4* __restrict__ values, uint32_t* __restrict__ out,
                                   int64_t units, int64_t ksteps, int64_t row_words) {
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint4 v = values[u];
    const int lane = static_cast<int>(u % 32), g = lane >> 2, t = lane & 3;
    const int64_t s = (u / 32) % ksteps, rt = u / (32 * ksteps);
    uint32_t* r0 = out + (rt * 16 + g) * row_words + s * 8 + t;  // word of columns 16 s + 2t, +1
    uint32_t* r8 = r0 + 8 * row_words;
    r0[0] = v.x;
    r8[0] = v.y;
    r0[4] = v.z;
    r8[4] = v.w;
  }
}

}  // namespace

Nm24Layout nm24_layout() {
  static const Nm24Layout layout = [] {
    const char* v = std::getenv("SPARSA_NM24_LAYOUT");
    return v && std::strcmp(v, "k") == 0 ? Nm24Layout::ValuesK : Nm24Layout::Fragments;
  }();
  return layout;
}

size_t nm24_values_k_bytes(const Nm24Weights& w) {
  return static_cast<size_t>(w.rows_padded) * static_cast<size_t>(w.cols_padded);  // 2 B x cols/2
}

cudaError_t nm24_tile_k(const Nm24Weights& w, void* values_k, cudaStream_t stream) {
  if (!w.values || !values_k || w.rows_padded % 16 != 0 || w.cols_padded % 32 != 0 ||
      w.rows_padded <= 0 || w.cols_padded <= 0)
    return cudaErrorInvalidValue;
  const int64_t ksteps = w.cols_padded / 32;
  const int64_t units = w.rows_padded / 16 * ksteps * 32;
  const int64_t blocks = std::min<int64_t>((units + 255) / 256, 65535);
  nm24_tile_k_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      static_cast<const uint4*>(w.values), static_cast<uint32_t*>(values_k), units, ksteps,
      w.cols_padded / 4);
  return cudaGetLastError();
}

}  // namespace sparsa::cuda
