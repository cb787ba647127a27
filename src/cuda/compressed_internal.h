// Host pieces shared by the compressed decode kernels (2:4 / V:2:M in compressed_decode.cu,
// bitmap in bitmap_decode.cu and bitmap_tiling.cc): workspace layout, CTA planning, and the
// bitmap entry points that compressed_decode / tile_compressed dispatch to.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparsa/cuda_compressed.h"

namespace sparsa::cuda {

inline constexpr int kBitmapWarps = 4;                   // 64 rows per row group
inline constexpr int kBitmapChunkCols = 256;             // 8 steps of 32 columns
inline constexpr int bitmap_head_bytes(CodeType code) {  // masks (+ int8 pairs) per slot
  return code == CodeType::Int8 ? 512 + 256 : 512;
}

CompressedTiled tile_bitmap_compressed(const CompressedMatrix& w);
std::vector<float> bitmap_tiled_row(const CompressedTiled& t, int64_t row);
size_t bitmap_workspace_bytes(const CompressedWeights& w, int64_t m, int ctas);
cudaError_t bitmap_decode(const CompressedWeights& w, const GemmProblem& p, cudaStream_t stream);

namespace detail {

// The last CTA of a row group resets its counter but leaves partials behind, so the counter
// region has one fixed size (64 KB: up to 16384 row groups) for every matrix and m, as in
// sparse_decode.cu: partials of one call never land on the counters of a later call that shares
// the workspace with another matrix.
inline constexpr size_t kCounterRegion = size_t{64} << 10;
inline size_t counters_bytes(int64_t row_groups) {
  return std::max(kCounterRegion,
                  static_cast<size_t>(row_groups * sizeof(unsigned) + 255) / 256 * 256);
}
inline size_t workspace_for(int64_t row_groups, int ctas, int rows) {
  return counters_bytes(row_groups) + static_cast<size_t>(2 * ctas) * 16 * rows * sizeof(float);
}

// CTAs: as requested, else every CTA that fits at once (stream-K over them).
inline int plan_ctas(int requested, int64_t units, int resident_ctas) {
  const int64_t c = requested > 0 ? requested : resident_ctas;
  return static_cast<int>(std::clamp<int64_t>(c, 1, units));
}

template <typename Kernel>
int occupancy(Kernel kernel, int threads, int smem) {
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem) != cudaSuccess)
    return 1;
  return std::max(blocks, 1);
}

}  // namespace detail
}  // namespace sparsa::cuda
