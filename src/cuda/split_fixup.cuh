// Stream-K split of the decode kernels and its fix-up, shared by the kernels that split K over
// CTAs (src/cuda/sparse_decode.cu; compressed_decode.cu and bitmap_decode.cu through
// compressed_common.cuh).
//
// Units (row group, K chunk), row-group-major, are divided evenly over the CTAs: CTA c owns
// [unit_begin(c), unit_begin(c + 1)). A CTA that covers a whole row group writes Y directly; a
// row group shared by several CTAs is combined by the last CTA to arrive: every CTA stores its
// partial sums in the workspace (slot 2c for the row group its range starts in, 2c + 1 for a
// later one), counts its arrival on the group's counter (one release/acquire atomic after a
// barrier), and the last one sums the partials in CTA order (deterministic) and resets the
// counter, so the next call needs no memset.
//
// The parameter struct P needs: units, kchunks, ctas, m, rows, y, ldy, partials, counters.
#pragma once

#include <cooperative_groups.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "cuda/decode_workspace.h"
#include "cuda/mma_sp.cuh"

namespace sparsa::cuda::detail {

template <typename P>
__device__ __forceinline__ int64_t unit_begin(int64_t c, const P& p) {
  return c * p.units / p.ctas;
}
// The CTA whose range holds unit u: the largest c with unit_begin(c) <= u.
template <typename P>
__device__ __forceinline__ int64_t cta_of(int64_t u, const P& p) {
  return ((u + 1) * p.ctas - 1) / p.units;
}
// Partial slot of CTA c for row group g: 2c for the group its range starts in, else 2c + 1.
template <typename P>
__device__ __forceinline__ int64_t slot_of(int64_t c, int64_t g, const P& p) {
  return 2 * c + (g == unit_begin(c, p) / p.kchunks ? 0 : 1);
}

// The end of row group g in this CTA (units [u_begin, u_begin + n_units)): writes the kWarps x
// 16 rows x (8 * kNTiles) tokens of accumulators to Y, or takes part in the fix-up of a split
// group, and zeroes `acc`. acc[nt][j] of lane (g8 = lane / 4, t4 = lane % 4) of warp w holds row
// 16 * (g * kWarps + w) + g8 + 8 * (j / 2), token 8 * nt + 2 * t4 + j % 2 (mma.sp's C fragment).
// Every thread of the CTA must call it (it holds barriers); s_last is a __shared__ int.
template <int kWarps, int kNTiles, typename OutT, typename P>
__device__ __forceinline__ void flush_row_group(const P& p, float (&acc)[kNTiles][4], int64_t g,
                                                int64_t u_begin, int64_t n_units, int& s_last) {
  constexpr int kThreads = kWarps * 32;
  constexpr int kRows = kWarps * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
  OutT* y = static_cast<OutT*>(p.y);
  const bool whole = u_begin <= g * p.kchunks && (g + 1) * p.kchunks <= u_begin + n_units;
  if (whole) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int tok = nt * 8 + 2 * t4 + (j & 1);
        const int64_t row = (g * kWarps + warp) * 16 + g8 + 8 * (j >> 1);
        if (tok < p.m && row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(acc[nt][j]);
        acc[nt][j] = 0.0f;
      }
    return;
  }
  const int64_t my_slot = 2 * static_cast<int64_t>(blockIdx.x) + (g * p.kchunks > u_begin ? 1 : 0);
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int tok = nt * 8 + 2 * t4 + (j & 1);
      const int local = warp * 16 + g8 + 8 * (j >> 1);
      if (tok < p.m) p.partials[(my_slot * 16 + tok) * kRows + local] = acc[nt][j];
      acc[nt][j] = 0.0f;
    }
  // Release the partials (the barrier makes every thread's stores part of thread 0's release),
  // count arrivals, and let the last CTA (acquire) sum them in CTA order. A per-thread
  // __threadfence here drained every thread's cp.async ring (v3).
  __syncthreads();
  const int64_t c_first = cta_of(g * p.kchunks, p), c_last = cta_of((g + 1) * p.kchunks - 1, p);
  if (threadIdx.x == 0) {
    unsigned prev;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;\n"
                 : "=r"(prev)
                 : "l"(p.counters + g)
                 : "memory");
    s_last = prev == static_cast<unsigned>(c_last - c_first);
  }
  __syncthreads();
  if (!s_last) return;
  // Every CTA after c_first starts inside g (slot 2c); c_first uses slot 1 unless it too starts
  // in g. Each thread sums kPer elements (idx = tok * kRows + local) over the CTAs in order,
  // with all loads of up to 4 CTAs issued before the adds (one dependent L2 load per add was a
  // chain of CTAs x elements round trips).
  const int64_t first_slot = slot_of(c_first, g, p);
  constexpr int kPer = 16 * kRows / kThreads;  // 8
  const int count = p.m * kRows;
  float sum[kPer];
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    sum[r] = idx < count ? __ldcg(p.partials + first_slot * 16 * kRows + idx) : 0.0f;
  }
  for (int64_t c = c_first + 1; c <= c_last; c += 4) {
    float v[4][kPer];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int r = 0; r < kPer; ++r) {
        const int idx = threadIdx.x + r * kThreads;
        v[u][r] = c + u <= c_last && idx < count
                      ? __ldcg(p.partials + 2 * (c + u) * 16 * kRows + idx)
                      : 0.0f;
      }
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int r = 0; r < kPer; ++r)
        if (c + u <= c_last) sum[r] += v[u][r];
  }
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    const int tok = idx / kRows, local = idx % kRows;
    const int64_t row = g * kRows + local;
    if (idx < count && row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(sum[r]);
  }
  if (threadIdx.x == 0) p.counters[g] = 0;
}

// The end of a CTA's range when the grid runs as clusters of s = 2..8 CTAs that split one row
// group g between them (CTA rank r holds K chunks [r kchunks / s, (r + 1) kchunks / s), so every
// CTA flushes exactly once, and all CTAs of the cluster do). The partial sums go to this CTA's
// shared memory (`scratch`: 16 * kRows floats, free once every warp is done with its last unit),
// one cluster barrier publishes them, and rank r sums elements r * kThreads + t, stepping by
// s * kThreads, over the ranks in order (deterministic, and the same order as flush_row_group's
// CTA order, so the same bits) with all s loads issued before the adds, then writes Y; a second
// barrier keeps every CTA's shared memory alive until the others have read it. No workspace,
// counter or L2 round trip (v11).
template <int kWarps, int kNTiles, typename OutT, typename P>
__device__ __forceinline__ void flush_cluster(const P& p, float (&acc)[kNTiles][4], int64_t g,
                                              float* scratch) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  constexpr int kThreads = kWarps * 32;
  constexpr int kRows = kWarps * 16;
  constexpr int kMaxCluster = 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
  __syncthreads();  // every warp is done with the shared memory that scratch overlaps
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int tok = nt * 8 + 2 * t4 + (j & 1);
      const int local = warp * 16 + g8 + 8 * (j >> 1);
      if (tok < p.m) scratch[tok * kRows + local] = acc[nt][j];
      acc[nt][j] = 0.0f;
    }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // release this CTA's partials, acquire the others'
  const int s = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int count = p.m * kRows;
  OutT* y = static_cast<OutT*>(p.y);
  for (int idx = rank * kThreads + static_cast<int>(threadIdx.x); idx < count;
       idx += s * kThreads) {
    float v[kMaxCluster];
#pragma unroll
    for (int q = 0; q < kMaxCluster; ++q)
      v[q] = q < s ? *cluster.map_shared_rank(scratch + idx, q) : 0.0f;
    float sum = v[0];
#pragma unroll
    for (int q = 1; q < kMaxCluster; ++q)
      if (q < s) sum += v[q];
    const int tok = idx / kRows, local = idx % kRows;
    const int64_t row = g * kRows + local;
    if (row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(sum);
  }
  cluster.sync();  // the other ranks may still read this CTA's scratch
#endif
}

}  // namespace sparsa::cuda::detail
