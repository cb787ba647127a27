// The launch parameters both V:2:M wgmma kernels (wgmma_vnm_prefill.cu, the staged one, and
// wgmma_vnm_prefill_xt.cu, from Xᵀ) share: W's tiling and the CTA grid of `bm` weight rows x `bn`
// tokens. Each kernel's own parameter struct has these fields plus its own.
#pragma once

#include <cstdint>

#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda::detail {

template <typename Params>
void fill_vnm_tile_params(Params& p, const VnmWeights& w, const GemmProblem& pr, int bm, int bn) {
  p.values = static_cast<const uint4*>(w.values);
  p.meta = reinterpret_cast<const uint4*>(w.meta);
  p.columns = w.columns;
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.m = pr.m;
  p.rows = w.rows;
  p.row_tiles = w.rows_padded / 16;
  p.ksteps = w.blocks_padded / 8;    // k-steps of 32 gathered columns = 8 blocks
  p.kchunks = w.blocks_padded / 64;  // one uint4 of metadata per lane serves 8 k-steps
  p.blocks_padded = w.blocks_padded;
  p.row_groups_padded = w.row_groups_padded;
  p.row_blocks = (w.rows_padded + bm - 1) / bm;
  p.token_tiles = (pr.m + bn - 1) / bn;
  p.mcols = w.m;
}

// Split-K (session 8): CTA (tile, blockIdx.y) of `splits` covers metadata chunks (4 stages of
// 16 blocks) [i kchunks / s, (i + 1) kchunks / s); its first stage.
struct VnmKRange {
  int64_t stage0, stages;
};
#if defined(__CUDACC__)
template <bool kSplit, typename Params>
__device__ __forceinline__ VnmKRange vnm_k_range(const Params& p) {
  if constexpr (kSplit) {
    const int64_t c0 = blockIdx.y * p.kchunks / p.splits;
    const int64_t c1 = (blockIdx.y + 1) * p.kchunks / p.splits;
    return {4 * c0, 4 * (c1 - c0)};
  } else {
    return {0, p.ksteps / 2};
  }
}
#endif

// The staged kernel with `splits` CTAs per tile (1: unsplit); partials at `partials` (the caller
// checked the workspace). wgmma_vnm_prefill.cu.
cudaError_t vnm_staged_launch(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream,
                              int splits, float* partials);

}  // namespace sparsa::cuda::detail
