// Host pieces shared by the compressed decode kernels (2:4 / V:2:M in compressed_decode.cu,
// bitmap in bitmap_decode.cu and bitmap_tiling.cc): workspace layout, CTA planning, and the
// bitmap entry points that compressed_decode / tile_compressed dispatch to.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cuda/decode_workspace.h"
#include "sparsa/cuda_compressed.h"

namespace sparsa::cuda {

inline constexpr int kBitmapWarps = 4;        // 64 rows per row group
inline constexpr int kBitmapChunkCols = 256;  // 8 steps of 32 columns
// Masks, then for int codes 16 bytes per row: the three-pair head (groups of 128) or the per-step
// pair words (groups of 32 / 64; CompressedTiled::scales_per_chunk == 1).
inline constexpr int bitmap_head_bytes(CodeType code) {
  return code == CodeType::Int8 || code == CodeType::Int4 ? 512 + 256 : 512;
}

CompressedTiled tile_bitmap_compressed(const CompressedMatrix& w);
// A bitmap tiling of random weights through the same builder (benchmark): each weight kept
// with probability percent / 100, random values / codes, (offset, scale) pairs per group of
// `group` values of each row (int codes), random sorted codebooks (codebook4).
CompressedTiled random_bitmap_tiled(int64_t rows, int64_t cols, int percent, CodeType code,
                                    int group, bool symmetric, bool per_tensor_book, uint64_t seed);
std::vector<float> bitmap_tiled_row(const CompressedTiled& t, int64_t row);
size_t bitmap_workspace_bytes(const CompressedWeights& w, int64_t m, int ctas);
cudaError_t bitmap_decode(const CompressedWeights& w, const GemmProblem& p, cudaStream_t stream);

namespace detail {

// CTAs: as requested, else every CTA that fits at once (stream-K over them).
inline int plan_ctas(int requested, int64_t units, int resident_ctas) {
  const int64_t c = requested > 0 ? requested : resident_ctas;
  return static_cast<int>(std::clamp<int64_t>(c, 1, units));
}

// 2:4 codebook4 kernels: how many of each chunk's 16 k-steps decode through the per-lane
// shared-memory table instead of byte permutes (0, 8 or 16; the default or the
// SPARSA_CB4_TABLE environment variable at first use). For tests and the benchmark.
void set_codebook_table_steps(int steps);
int codebook_table_steps();
// 2:4 kernels' loop variant (session 5): 1 = the lean per-chunk loop (with int8 at m <= 8 on a
// 3-stage ring), the default; 0 = v4's loop and ring depths. SPARSA_COMPRESSED_VARIANT at first
// use; other values give the default. For tests and the benchmark's A/B runs.
void set_compressed_variant(int variant);
int compressed_variant();

}  // namespace detail
}  // namespace sparsa::cuda
