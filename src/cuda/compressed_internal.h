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

// Bitmap kernels' expansion of kept values into the A fragments (session 21): kBitmapLut (byte
// permutes through a selector table per mask byte, bitmap_lut.cuh) for every code, kBitmapPositions
// (one predicated load or window shift per position, sessions 5-15) for every code, or
// kBitmapDefault: the LUT for int8 / int4 / codebook4 and the positions expansion for fp16 values
// (the faster of the two for each, measured). SPARSA_BITMAP_EXPAND=positions|lut|default at first
// use; for tests and the benchmark's A/B runs (SPARSA_BITMAP_AB).
inline constexpr int kBitmapPositions = 0, kBitmapLut = 1, kBitmapDefault = 2;
void set_bitmap_expansion(int expansion);
int bitmap_expansion();

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
// 3-stage ring), the default; 0 = v4's loop and ring depths; 7 = lean with split_fixup.cuh's
// tagged fix-up (session 6 run 3; m <= 8, int8 groups of 128 and codebook4, all CTAs resident;
// else the lean kernel); 16 = wide CTAs (session 7, second helper: codebook4 and int4 on one CTA
// of 16 warps per SM over pairs of row groups; int8 the lean kernel); 20 / 21 = session 8's pair
// joins (kPair, m <= 8, int8 groups of 128 and codebook4, clusters of 2: split row groups joined
// by their late CTA or late cluster pair instead of the counter protocol; 20 only on plans where
// every group ending at a CTA's end is joined, 21 wherever the launch allows; else the lean kernel);
// 30 / 31 / 32 = session 10's codebook4 selectors with fewer integer-pipe instructions (the high
// row's selectors moved down by fp16 adds; + sel by IMAD; + sel2 by IMAD.HI; the lean kernel,
// every m; int codes the default); 31's selectors are codebook4's default under 1 since the
// session-10 final check, 33 = session 8's selectors (for A/B runs). SPARSA_COMPRESSED_VARIANT at
// first use; other values give the default. For tests and the benchmark's A/B runs.
void set_compressed_variant(int variant);
int compressed_variant();
// Timeline words of one CTA: stamps 0..7 as %globaltimer (ns) in words 0..7 and as clock64 in
// words 8..15: 0 entry, 1 first chunk landed (after the first wait + barrier), 2 / 3 start / end of
// the first flush before the last unit, 4 last chunk landed, 5 last chunk's MMAs issued (before the
// last flush), 6 last flush done (Y written or partials published), 7 exit; word 16 the SM id, 17
// the CTA's units, 18 flags (bit 0: last group whole, bit 1: this CTA summed a split group at the
// end), 19 clock cycles spent waiting for chunks (wait + barrier, summed), 20 flushes before the
// last unit.
inline constexpr int kTimelineWords = 24;
// Session 6 run 3: one call of compressed_decode (the current variant) through its twin that
// stamps a per-CTA timeline (kTimelineWords words per CTA, layout above:
// %globaltimer and clock64 at entry, first chunk, flushes, last chunk, exit). 2:4 int8 (groups
// of 128) and codebook4 at m <= 8 with fp16 output; empty for any other case (the plain kernel
// runs then, or nothing for bitmap / V:2:M / m > 8). event_us: the call's time between two
// events; before: a plain call launched just ahead of it (the timed launch then queues as in
// the per-call timing); y is poisoned before the timed call. Benchmark only
// (SPARSA_COMPRESSED_TIMELINE).
std::vector<unsigned long long> compressed_decode_timeline(const CompressedWeights& w,
                                                           const GemmProblem& p,
                                                           cudaStream_t stream, float* event_us,
                                                           const CompressedWeights* before);

// Session 8 (variant 20, kPair; docs/compression.md, "Session 8"): how the split row groups of
// the 2:4 plan for (w, m, ctas) end under kPair — joined by one late CTA, joined by the two late
// CTAs of a cluster pair, counter protocol with every piece mid-range, counter protocol with a
// piece at a CTA's end — and whether compressed_decode takes the kPair kernels for it (variant
// 20 set, m <= 8, int8 with groups of 128 or codebook4, every CTA resident, an even count, no
// group of the last kind — variant 21 without that last condition; the launch still falls back to
// the lean kernel where clusters of 2 do not all fit). For tests and the benchmark.
struct PairGroups {
  int64_t single = 0, pair = 0, early = 0, late = 0;
  int ctas = 0;
  bool taken = false;
};
PairGroups compressed_pair_groups(const CompressedWeights& w, int64_t m, int ctas);

}  // namespace detail
}  // namespace sparsa::cuda
