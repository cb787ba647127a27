// Random fills for the GEMM benchmark (see bench_fill.h): a counter-based hash, so each element
// depends only on (seed, index).
#include <cuda_fp16.h>

#include "cuda/bench_fill.h"

namespace sparsa::cuda::bench {
namespace {

__device__ __forceinline__ uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void fill_f16_kernel(uint16_t* data, size_t count, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count;
       i += size_t(gridDim.x) * blockDim.x) {
    const uint64_t h = mix(seed ^ mix(i));
    float v = static_cast<float>(h >> 40) * (2.0f / 16777216.0f) - 1.0f;
    if (fabsf(v) < 1e-3f) v = 0.5f;
    data[i] = __half_as_ushort(__float2half_rn(v));
  }
}

__global__ void fill_meta_kernel(uint32_t* data, size_t count, uint64_t seed) {
  constexpr uint32_t kPairs[6] = {0x4, 0x8, 0xC,
                                  0x9, 0xD, 0xE};  // (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count;
       i += size_t(gridDim.x) * blockDim.x) {
    uint64_t h = mix(seed ^ mix(i));
    uint32_t word = 0;
    for (int n = 0; n < 8; ++n) {
      word |= kPairs[h % 6] << (4 * n);
      h /= 6;
    }
    data[i] = word;
  }
}

unsigned grid_for(size_t count) {
  const size_t blocks = (count + 255) / 256;
  return static_cast<unsigned>(blocks < 65536 ? (blocks ? blocks : 1) : 65536);
}

}  // namespace

cudaError_t fill_random_f16(uint16_t* data, size_t count, uint64_t seed, cudaStream_t stream) {
  fill_f16_kernel<<<grid_for(count), 256, 0, stream>>>(data, count, seed);
  return cudaGetLastError();
}

cudaError_t fill_random_meta(uint32_t* data, size_t count, uint64_t seed, cudaStream_t stream) {
  fill_meta_kernel<<<grid_for(count), 256, 0, stream>>>(data, count, seed);
  return cudaGetLastError();
}

}  // namespace sparsa::cuda::bench
