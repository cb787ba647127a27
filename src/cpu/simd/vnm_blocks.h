// The row-block loop of the fused V:2:M compressed kernels (codec_gemm.cc, codec_gemm_x8.cc):
// threads split the row blocks; each gathers a block's X into its own buffer and runs the block
// as 2:4 rows (sparsa::cpu::vnm_block_args).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/codec_kernels.h"
#include "cpu/simd/parallel.h"
#include "hwy/aligned_allocator.h"

namespace sparsa::cpu {

// Calls run(block_args) for every row block of the vnm product `a`.
template <class Run>
void for_each_vnm_block(const CodecKernelArgs& a, Run&& run) {
  const int64_t blocks = (a.rows + a.vnm_v - 1) / a.vnm_v;
  const double work =
      static_cast<double>(a.m) * a.rows * 2 * std::max<int64_t>(a.vnm_col_blocks, 1);
  parallel_rows(blocks, 1, work, [&](int64_t b0, int64_t b1) {
    auto xsel = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * vnm_gathered_kp(a)));
    for (int64_t rb = b0; rb < b1; ++rb) run(vnm_block_args(a, rb, xsel.get()));
  });
}

}  // namespace sparsa::cpu
