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

}  // namespace sparsa::cuda::detail
