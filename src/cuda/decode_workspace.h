// Host side of the split decode kernels' workspace and launch planning, shared by
// sparse_decode.cu (2:4, V:2:M) and the compressed decode kernels (compressed_decode.cu,
// bitmap_decode.cu); the device side of the split fix-up is src/cuda/split_fixup.cuh.
//
// The workspace holds the arrival counters, then the partial sums. Reducers reset their counters
// but leave partials behind, so the counter region has one fixed size (64 KB: up to 16384 row
// groups) for every matrix and m: partials of one call never land on the counters of a later
// call that shares the workspace with another matrix or another CTA width.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace sparsa::cuda::detail {

inline constexpr size_t kCounterRegion = size_t{64} << 10;
inline size_t counters_bytes(int64_t row_groups) {
  return std::max(kCounterRegion,
                  static_cast<size_t>(row_groups * sizeof(unsigned) + 255) / 256 * 256);
}
// Counters plus two partial slots of 16 tokens x `rows` per CTA (sparse_decode.cu's owner / helper
// plans pass their slot count, one 64-bit slot = two float slots, as `ctas`).
inline size_t workspace_for(int64_t row_groups, int ctas, int rows) {
  return counters_bytes(row_groups) + static_cast<size_t>(2 * ctas) * 16 * rows * sizeof(float);
}

// Tagged fix-up (decode_tuning().tagged_fixup, split_fixup.cuh): a partial sum is published as
// one 64-bit word, float bits in the low half and this tag in the high half; the reducer clears
// every word it consumed, so no word of the partial region holds the tag between calls. A
// signalling-NaN pattern: no arithmetic result (nor the counter protocol's float partials, nor
// the zeroed workspace) has these bits.
inline constexpr uint32_t kPartialTag = 0x7fbada55u;

// Resident CTAs per SM of one kernel instantiation (at least 1; callers cache it).
template <typename Kernel>
int occupancy(Kernel kernel, int threads, int smem) {
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem) != cudaSuccess)
    return 1;
  return std::max(blocks, 1);
}

}  // namespace sparsa::cuda::detail
