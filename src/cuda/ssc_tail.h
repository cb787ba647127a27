// v12's streamed tail (wgmma_prefill_ssc.cu, session 19): the plan and the segments of a share,
// shared by the kernel (device), its launch and the tests (host).
//
// Why: v12 runs one 128 x 256 tile per resident CTA pair ("cluster") at a time, so where the
// tiles do not fill their last wave (tiles % clusters = r > 0) that wave keeps only r of the
// clusters busy for a whole tile's time. The plan takes the last R = r + clusters tiles of the
// raster order (the partial wave and the whole wave before it), lays their K-chunks (256
// columns) end to end and cuts them into runs of share_chunks, one run ("share") per cluster:
// every cluster then does (R / clusters) tiles' work there instead of 1 or 2. A share is longer
// than a tile, so each tile is cut at most once: 2 pieces, the second to finish adds the first's
// partial sums (one fp32 tile read, not one per piece as in session 16's equal-pieces split,
// which measured no gain). Makespan: (waves - 2) tiles + share_chunks chunks instead of waves
// tiles. Measured slower on the H100 (session 19: 1.06x the time in the median, up to 1.62x):
// shares start at staggered K, so the clusters lose the L2 reuse of X and W k-slices that
// tiles running in step along K share (docs/kernels-gpu.md, "Session 19"); opt-in for A/B runs.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SPARSA_HOST_DEVICE __host__ __device__
#else
#define SPARSA_HOST_DEVICE
#endif

namespace sparsa::cuda {

struct Nm24SscTailPlan {
  int64_t tail_tiles = 0;    // R: the last tiles of the raster order, handed out as shares
  int32_t share_chunks = 0;  // K-chunks per share (the last share may be shorter)
  int32_t shares = 0;        // 0: no streamed tail
};

// The plan for `tiles` cluster tiles of `kchunks` K-chunks on `clusters` resident clusters:
// none where the tiles fill their waves, there is no whole wave before the partial one, or the
// shares would not be shorter than two tiles (r close to clusters).
inline Nm24SscTailPlan nm24_ssc_tail_plan(int64_t tiles, int64_t kchunks, int clusters) {
  if (clusters < 1 || kchunks < 1 || tiles <= clusters || tiles % clusters == 0) return {};
  const int64_t tail = tiles % clusters + clusters;
  const int64_t share = (tail * kchunks + clusters - 1) / clusters;
  if (share >= 2 * kchunks || tail * kchunks >= INT32_MAX / 2) return {};
  return {tail, static_cast<int32_t>(share),
          static_cast<int32_t>((tail * kchunks + share - 1) / share)};
}

// One segment of a share: tail tile `tile` (0 .. R - 1) over chunks [chunk_begin, chunk_end);
// piece -1 when that is the whole tile, else 0 (the tile's first chunks) or 1 (its last).
struct SscSegment {
  int32_t tile, chunk_begin, chunk_end, piece;
};

// The segment that starts at chunk q of the concatenated tail, in a share ending at q_end; the
// next segment starts at tile * kchunks + chunk_end. 32-bit: the plan keeps R * kchunks below
// 2^31 (one division per segment, no 64-bit division routine in the kernel).
SPARSA_HOST_DEVICE inline SscSegment ssc_segment(int32_t q, int32_t q_end, int32_t kchunks) {
  const int32_t tile = q / kchunks, first = tile * kchunks;
  const int32_t begin = q - first, end = q_end - first < kchunks ? q_end - first : kchunks;
  const int32_t piece = begin == 0 && end == kchunks ? -1 : begin == 0 ? 0 : 1;
  return {tile, begin, end, piece};
}

// Share s covers chunks [s * share_chunks, min((s + 1) * share_chunks, R * kchunks)).
SPARSA_HOST_DEVICE inline int32_t ssc_share_end(const Nm24SscTailPlan& plan, int32_t s,
                                                int32_t kchunks) {
  const int32_t end = (s + 1) * plan.share_chunks,
                total = static_cast<int32_t>(plan.tail_tiles) * kchunks;
  return end < total ? end : total;
}

}  // namespace sparsa::cuda
