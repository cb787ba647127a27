// Decode path over compressed 2:4 / V:2:M weights, m = 1..16 (sparsa/cuda_compressed.h; bitmap:
// bitmap_decode.cu): the structure of
// sparse_decode.cu (stream-K over resident CTAs, a per-warp cp.async ring of K chunks, X of
// 2:4 riding in the same ring, V:2:M's gathered X prefetched two units ahead, last-CTA
// reduction of shared row groups) with its 16-byte fp16 A-fragment loads replaced by 4-byte
// (4-bit codes) or 8-byte (int8) code words per lane and k-step, decoded to fp16 A fragments
// in registers right before each mma.sp:
//   int4       a = lop3(w >> 4r, 0x000f000f, 0x64006400) = (1024 + u) as half2;
//              (a - offset) * scale: HSUB2 (exact) + HMUL2
//   int8       a = prmt(w, 0x64646464) = (1024 + u) as half2; the same HSUB2 + HMUL2
//   codebook4  per row, 4 codes -> 4 low and 4 high bytes by two-level byte permutes of the
//              row's codebook held in 8 registers (16 entries: prmt picks among 8 bytes by
//              the code's low 3 bits, a third prmt by its top bit), then 2 prmt to interleave.
// Nothing decoded is stored: the bytes read are the codes, metadata, scales and codebooks.
//
// Versions (H100, numbers in docs/kernels-gpu.md):
//   v1  8-step chunks, codes/metadata/scales in separate arrays: 2:4+codebook4 m=1 28672x8192
//       49.4 us = 1.80 TB/s; int8 2.43 TB/s. Contiguous per-unit blocks: no change (47.9 us);
//       a CTA sweep (1-3 per SM) is flat. Suspected instruction overhead: ~200 of the ~360
//       instructions per warp and chunk were not decode or MMA (issue address math, X
//       zero-fill copies for rows >= m, per-k-step scale loads).
//   v2  X rows >= m zeroed once and never copied, incremental source pointers,
//       scale pairs loaded once per chunk for groups of 128 (kSpc = 1), largest carveout:
//       codebook4 46.2 us (3.69x cuBLAS, 0.64 of the copy rate), int4 42.0 us, int8 59.8 us
//       (0.84). ncu: latency-bound (0.48 issue/scheduler, ~30% of stalls at the CTA barrier);
//       next: 16-step chunks for 4-bit codes, warp-private mbarrier rings.
//   v3  this file: 2:4 with 4-bit codes in 16-step chunks (3 KB per warp, 3-stage ring), X
//       tiles of m rows (rows >= m read one zero row), two alternating accumulators at m <= 8:
//       ~30% fewer instructions per byte, no measurable change (codebook4 45.4 us, int4 42.0
//       us): the per-chunk overhead was not the limit.
//   v3b 2-stage ring for int4 (3 CTAs = 24 warps per SM instead of 2): int4 42.0 -> 39.6 us
//       (4.12-4.18x); codebook4 with 2 stages (4 CTAs, 32 warps) 45.4 -> 46.3 us, so codebook4
//       keeps 3 (both are 2 CTAs = 16 warps per SM in fact: 114-128 registers per thread).
//   v4  codebook4 through a per-lane bank-private shared-memory table (kAlt = 8 or 16 of 16
//       k-steps; SPARSA_CB4_TABLE): PRMT out of the loop, no gain (16: 2-8% slower, 8: within
//       the run-to-run spread), so the default stays the PRMT path; int4 without shifts and a
//       3-CTA register cap were measured and removed (no gain). ncu: no single limit (integer
//       pipe 66%, CTA barrier ~14% of stalls, SM idle 14% in ramp / tail).
//   v5  (session 5) 2:4 "lean" loop, the default: ring stages and chunk index kept incrementally
//       (no i % 3), 32-bit counters, X copied from per-thread pointers (bounds only in the last
//       chunk), int8's filler in a register: ~20-25% fewer instructions per chunk, codebook4
//       -2 to -5%, int4 / int8 within ~1%. IMAD-built codebook4 selectors (22% fewer integer-
//       pipe ops) were slower and were removed. Variants (SPARSA_COMPRESSED_VARIANT): int8 ring
//       depth, codebook4 ring depth, 4-warp CTAs (docs/compression.md, "Session 5").
//   (session 6: no kernel change kept) measured and removed: free-running warps (X in its own
//       mbarrier ring, no CTA barrier per chunk), int8 on 3 CTAs per SM, an end fix-up without
//       the arrival atomic — none faster. A K sweep showed why: at m = 1 the kernels stream at
//       ~3.07 TB/s once running; a call loses ~10 us (int8) / ~15 us (codebook4) of fixed cost
//       (launch, first chunk, fix-ups, stream-K tail, codebook loads), which is where the
//       targets are missed (docs/compression.md, "Session 6").
//   (session 6 run 3: no default change) a per-CTA timeline twin (%globaltimer / clock64 stamps,
//       compressed_decode_timeline) attributes the fixed cost: ~3.2 us outside the CTAs, the first
//       chunk after a median 4.2-4.4 us, ~3 us end fix-up of the summing CTAs; codebook4 is
//       decode-bound per SM (7% of its time in chunk waits) and the two CTAs of an SM share it
//       unevenly, so the slowest SM ends ~5 us after the median one. Variant 7 (tagged fix-up)
//       kept opt-in: -8% on 4096^2 int8, large shapes equal, 8192x28672 codebook4 +8.5%.
//   (session 7) programmatic dependent launch (decode_tuning().pdl): launch_dependents first, the
//       first unit's weights before griddepcontrol.wait, X after. Graph of 20 calls (bench gemm's
//       graph timing, now also for these records) 4.5-5.5 us a call faster than per call on the
//       large shapes (PDL off: 2-3 us); per call unchanged. Measured and removed: a one-chunk
//       first request (codebook4 +1-2 us per call) and a dynamic tail (the last 30-45% of each
//       CTA's share handed out by an atomic work counter: 1.4-5x slower; docs/compression.md,
//       "Session 7").
//   (session 7, second helper: no default change) wide CTAs (kWide, variant 16, opt-in): one CTA of
//       16 warps per SM over pairs of row groups for codebook4 / int4, so an SM's halves step
//       together. The SMs' ends did not move (an SM streams ~0.8 units/us either way): codebook4
//       large shapes -2% to +3%, int4 3-4% slower, 14336x4096 codebook4 3-6% faster
//       (docs/compression.md, "Session 7, second helper").
//   (session 8) pair joins (kPair, variants 20 / 21, docs/compression.md "Session 8"): launched in
//       clusters of 2, odd CTAs take their last group's head first, so that a split row group's
//       pieces at CTAs' ends belong to one CTA or one cluster pair, which join them (tagged words
//       of the early pieces, distributed shared memory between the pair) without the counter
//       protocol's release, atomic and loads at the end of the kernel. Measured slower and kept
//       opt-in: a join still costs ~4 us under load (one-CTA joins an L2 round trip, pair joins the
//       cluster barrier's MEMBAR.GPU), and the pair kernels stream codebook4 ~2 us slower
//       (int8 28672x8192 +1.5 us, codebook4 +4 us per call).
//   session 10: codebook4 selectors with fewer integer-pipe instructions (variants 30-32,
//       decode_cb4_v10; docs/compression.md "Session 10"): the same 16 PRMT per k-step (their
//       floor for 8-register tables), the 5 selector ops 21 -> 19 / 18 / 17 integer by moving the
//       high row's selectors down with fp16 adds (HADD2 .H1_H1), sel by IMAD, sel2 by IMAD.HI +
//       IMAD. 31's are the default (H100 same run: 2-4% faster on every codebook4 record, same
//       bits); 33 keeps the previous selectors.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "cuda/compressed_common.cuh"
#include "cuda/compressed_internal.h"
#include "cuda/decode_tuning.h"
#include "cuda/mma_sp.cuh"
#include "sparsa/cuda_compressed.h"
#include "sparsa/error.h"

namespace sparsa::cuda {
namespace {

using namespace detail;
using Params = CompressedParams;

constexpr int kDefaultTableSteps = 0;  // 2:4 codebook4: k-steps of 16 through the table
constexpr int kDefaultVariant = 1;     // 2:4: the session-5 loop variants (below); 1 = lean

// kAlt bits above the table steps (session 5, 2:4 only): kLean = the per-chunk work without
// divisions or 64-bit loop counters (ring stages and K-chunk index kept incrementally, X copies
// from per-thread pointers fixed at the start; int8's filler in a register); kInt8Stages3 =
// int8's ring of 3 stages instead of 4 (taken at m <= 8: 2 chunks in flight per warp instead of
// 3 measured 1-3% faster there, 2-4% slower at m = 16).
constexpr int kTableMask = 31, kLean = 32, kInt8Stages3 = 128;
// Session 6 run 3 (2:4 lean kernels at m <= 8, int8 with groups of 128 and codebook4; see
// docs/compression.md, "Session 6, run 3"): kTagged = split_fixup.cuh's tagged fix-up in place of
// the counter protocol (a CTA whose range starts inside a split group publishes its partials and
// goes on, no barrier or atomic; the group's first CTA sums them after its loop: one L2 round
// trip at the end instead of barrier + atomic + barrier + loads), only when every CTA is
// resident; kTimeline = per-CTA %globaltimer / clock64 stamps (CompressedParams::timeline,
// compressed_decode_timeline). (Run 3's variant 8, codebook4's books copied into shared memory
// with the chunk that starts a row group, measured no gain over 7 and was removed: source in the
// commit before the one that adds -s6-run3.log.)
constexpr int kTagged = 256, kTimeline = 1024;
constexpr int kVariantBits = kTagged | kTimeline | 4096;  // 4096: kPair (session 8)
// Session 7, second helper (docs/compression.md, "Session 7, second helper"): kWide = one CTA of
// 16 warps per SM instead of two of 8 (2:4 codebook4 and int4, lean loop): the CTA covers a
// pair of row groups (256 rows; warps 0-7 the even group, 8-15 the odd one, each reading the
// tiling's 128-row units as before) and the stream-K split runs over (pair, K chunk) units, so
// both halves step through the same chunks behind one barrier and no half of an SM runs alone
// at the end. SPARSA_COMPRESSED_VARIANT=16.
constexpr int kWide = 2048;
constexpr int kWideVariant = 16;
// Session 8 (docs/compression.md, "Session 8"): kPair = the end of the stream-K split without the
// counter protocol on the critical path (2:4 lean kernels at m <= 8, int8 groups of 128 and
// codebook4; launched as clusters of 2 CTAs, (2j, 2j + 1)). Odd CTAs whose range ends inside a
// row group it does not start in process that group's head first (pp_rot), so that every CTA's
// last-processed piece of a split row group meets at most its cluster partner's at the end: a
// split group whose last-processed pieces ("late") are one CTA, or the two CTAs of one cluster,
// is joined without atomics — the other ("early") pieces are published as tagged words mid-range,
// the late CTA(s) add them and each other's partial sums (distributed shared memory) in CTA order
// (the counter protocol's order: the same bits). Other split groups keep the counter protocol.
// SPARSA_COMPRESSED_VARIANT=20; taken only where the plan has no counter-protocol group at a
// CTA's end (host rule in pair_plan_ok), else the lean kernel. Opt-in: measured slower (session 8).
constexpr int kPair = 4096;
constexpr int kPairVariant = 20;
// 21: kPair wherever the launch allows it (even count, every CTA resident, clusters fit), also on
// plans that keep counter-protocol groups at CTAs' ends (for A/B runs: what the rotation and the
// cluster launch cost where few or no groups are joined).
constexpr int kPairAllVariant = 21;
static_assert((kVariantBits & kPair) != 0, "kPair is a run-time variant bit");
// Session 10 (docs/compression.md, "Session 10"): codebook4's per-k-step selector work with the
// integer pipe relieved, the lookups unchanged (2:4 lean kernels, every m; int codes run the lean
// kernel). kCb4HalfMoves: the high row's two selectors (sel >> 16, sel2 >> 16, two SHF) as fp16
// adds on the FMA pipe; kCb4ImadSel: sel = w - top by IMAD instead of a LOP3; kCb4ImadHi: sel2 =
// hi(top * 2^31) + 0x32103210 by IMAD.HI instead of LEA.HI. Integer-pipe instructions per k-step
// 21 -> 19 / 18 / 17. SPARSA_COMPRESSED_VARIANT=30 / 31 / 32. 31's selectors are codebook4's
// default since the session-10 final check (H100, same run, same bits: 2-4% faster on every
// codebook4 record, e.g. 28672 x 8192 m = 1 graph 40.5 -> 39.3 µs); 33 keeps session 8's shifts
// and LOP3s for A/B runs.
constexpr int kCb4HalfMoves = 8192, kCb4ImadSel = 16384, kCb4ImadHi = 32768;
constexpr int kCb4Bits = kCb4HalfMoves | kCb4ImadSel | kCb4ImadHi;
constexpr int kCb4MovesVariant = 30, kCb4ImadVariant = 31, kCb4ImadHiVariant = 32;
constexpr int kCb4ShiftsVariant = 33;
constexpr int kCb4DefaultBits = kCb4HalfMoves | kCb4ImadSel;  // variant 31's
// Session 15: chunks of 16 k-steps where the default is 8 (V:2:M: 128 blocks; 2:4 with int8
// codes: 512 columns), for the matrices tiled so (compressed_chunk_steps).
constexpr int kSteps16 = 65536;

// The kPair plan, on the host and the device alike (32-bit: the host takes kPair only when
// units * (ctas + 1) < 2^31). Units [pp_begin(c), pp_begin(c + 1)) of CTA c as in split_fixup.cuh.
struct PairPlan {
  uint32_t units, kchunks, ctas;
};
__host__ __device__ __forceinline__ uint32_t pp_begin(const PairPlan& q, uint32_t c) {
  return c * q.units / q.ctas;
}
__host__ __device__ __forceinline__ uint32_t pp_cta_of(const PairPlan& q, uint32_t u) {
  return ((u + 1) * q.ctas - 1) / q.units;
}
// Odd CTA c whose last row group is split and not its first: it processes that group's head
// [s, b) first, then [a, s). Returns b - s (the first run's length), else 0 (natural order).
__host__ __device__ __forceinline__ uint32_t pp_rot(const PairPlan& q, uint32_t c) {
  if ((c & 1) == 0) return 0;
  const uint32_t a = pp_begin(q, c), b = pp_begin(q, c + 1);
  const uint32_t s = (b - 1) / q.kchunks * q.kchunks;
  return (b % q.kchunks != 0 && s > a) ? b - s : 0;
}
// The row group of the last unit CTA c processes.
__host__ __device__ __forceinline__ uint32_t pp_last_group(const PairPlan& q, uint32_t c) {
  const uint32_t gl = (pp_begin(q, c + 1) - 1) / q.kchunks;
  return pp_rot(q, c) > 0 ? gl - 1 : gl;
}
// How split row group g ends: 0 = counter protocol (flush_row_group), 1 = one late CTA sums
// (the others published early), 2 = the two CTAs of one cluster are late and join (ditto).
// Whole groups (one CTA) also give 0 (they never reach a fix-up).
__host__ __device__ __forceinline__ int pp_kind(const PairPlan& q, uint32_t g) {
  const uint32_t c0 = pp_cta_of(q, g * q.kchunks), c1 = pp_cta_of(q, (g + 1) * q.kchunks - 1);
  if (c0 == c1 || c1 - c0 > 3) return 0;
  uint32_t first = 0, second = 0;
  int n = 0;
  for (uint32_t d = c0; d <= c1; ++d)
    if (pp_last_group(q, d) == g) {
      if (n == 0) first = d;
      if (n == 1) second = d;
      ++n;
    }
  if (n == 1) return 1;
  if (n == 2 && first % 2 == 0 && second == first + 1) return 2;
  return 0;
}

// Split row groups of a plan by how they end under kPair: joined by one CTA / by a cluster pair,
// counter protocol with every piece mid-range, counter protocol with a piece at a CTA's end.
struct PairCounts {
  int64_t single = 0, pair = 0, early = 0, late = 0;
};
PairCounts pair_counts(const PairPlan& q) {
  PairCounts n;
  for (uint32_t g = 0; g < q.units / q.kchunks; ++g) {
    const uint32_t c0 = pp_cta_of(q, g * q.kchunks), c1 = pp_cta_of(q, (g + 1) * q.kchunks - 1);
    if (c0 == c1) continue;
    const int kind = pp_kind(q, g);
    bool any_late = false;
    for (uint32_t d = c0; d <= c1 && !any_late; ++d) any_late = pp_last_group(q, d) == g;
    if (kind == 1) ++n.single;
    else if (kind == 2) ++n.pair;
    else if (any_late) ++n.late;
    else ++n.early;
  }
  return n;
}
// What every kPair launch needs: an even CTA count and a plan in 32 bits.
bool pair_plan_fits(int64_t units, int ctas) {
  return ctas >= 2 && ctas % 2 == 0 && units >= ctas &&
         units * (int64_t{ctas} + 1) < (int64_t{1} << 31);
}
// Host rule for kPair (variant 20): pair_plan_fits and no counter-protocol group at a CTA's end
// (elsewhere the lean kernel runs). Cached for the last few plans.
bool pair_plan_ok(int64_t units, int64_t kchunks, int ctas) {
  if (!pair_plan_fits(units, ctas)) return false;
  struct Entry {
    int64_t units = 0, kchunks = 0;
    int ctas = 0;
    bool ok = false;
  };
  static Entry cache[8];
  static int next = 0;
  for (const Entry& e : cache)
    if (e.units == units && e.kchunks == kchunks && e.ctas == ctas) return e.ok;
  const PairCounts n = pair_counts(PairPlan{static_cast<uint32_t>(units),
                                            static_cast<uint32_t>(kchunks),
                                            static_cast<uint32_t>(ctas)});
  const bool ok = n.late == 0;
  cache[next] = Entry{units, kchunks, ctas, ok};
  next = (next + 1) % 8;
  return ok;
}

// kAlt (2:4 codebook4 only; 0 = the default kernel): the k-steps of 16 decoded through the
// shared-memory table (0, 8 or 16).

// Per (code, pattern, token tiles): the chunk and shared-memory geometry.
template <CodeType kCode, bool kVnm, int kNTiles, int kAlt = 0>
struct Geo {
  static constexpr int kSteps = (kAlt & kSteps16) ? 16 : compressed_ksteps(kVnm, kCode);
  static constexpr int kChunkCols = kSteps * 32;
  static constexpr int kRowBytes = (kChunkCols + 8) * 2;  // X row, +16 B: no bank conflicts
  static constexpr int kWords = kCode == CodeType::Int8 ? kSteps / 2 : kSteps / 4;
  static constexpr int kCodeBytes = kWords * 512;
  static constexpr int kMetaBytes = kSteps / 8 * 512;
  // At most 16 rows x (16 * kSteps / 32) (offset, scale) pairs (groups of 32).
  static constexpr int kScaleBytes = kCode == CodeType::Codebook4 ? 0 : 16 * kSteps / 2 * 4;
  static constexpr int kSlotBytes = kCodeBytes + kMetaBytes + kScaleBytes;
  // 16-step chunks: codebook4 at m <= 8 keeps 3 stages (2 chunks, 6 KB, in flight per warp; 2
  // CTAs per SM); int4, and every code at m > 8, 2 stages (one chunk in flight while one is
  // decoded), so 3 int4 CTAs fit on an SM. Measured (v3 / v3b runs): int4 m = 1 42.0 -> 39.6 us
  // with 2 stages, codebook4 45.4 -> 46.3 us (it is not short of warps).
  static constexpr int kStages =
      kSteps == 8 ? ((kAlt & kInt8Stages3) ? 3 : 4)
      : (kCode == CodeType::Codebook4 && kNTiles == 1) ? 3
                                                       : 2;
  // V:2:M: the gathered X tiles (unit i in slot i % kXSlots). Two suffice (a unit's tile is
  // written after the CTA barrier that ends every read of the tile two units back); 16-step
  // chunks use two to keep m = 16's 1 KB rows in shared memory, 8-step ones keep their three.
  // int8 in 16-step chunks at m > 8 uses one (the next unit's tile is stored behind a second
  // barrier after the MMAs), so that 3 CTAs fit per SM instead of 2 (session 15).
  static constexpr bool kOneXSlot =
      kVnm && kSteps == 16 && kCode == CodeType::Int8 && kNTiles == 2;
  static constexpr int kXSlots = kVnm ? (kOneXSlot ? 1 : kSteps == 16 ? 2 : 3) : kStages;
  static constexpr int kVnmRowHalves = kChunkCols + 8;  // V:2:M X row stride (== kRowBytes / 2)
};

// Codebook4 table path (kTable k-steps of every 16 decoded through shared memory, the rest by
// byte permutes): per lane 16 words, word c = (row g8's entry c, row g8 + 8's entry c) as two
// halves, at table + c * 128 + lane * 4, so every lane reads only its own bank (no conflicts
// whatever the codes) and a code c at bits 7..10 of a word ORs straight into the address.
constexpr int kTableWarpBytes = 16 * 128;

// Shared memory: the weight rings, one zero X row, kXSlots X tiles of m rows, then (table
// path) the per-warp tables, 2 KB aligned (up to 2 KB of padding).
template <CodeType kCode, bool kVnm, int kWarps, int kNTiles, int kAlt>
constexpr int smem_bytes_no_table(int m) {
  using G = Geo<kCode, kVnm, kNTiles, kAlt>;
  return G::kStages * kWarps * G::kSlotBytes + G::kRowBytes * (1 + G::kXSlots * m);
}
template <CodeType kCode, bool kVnm, int kWarps, int kNTiles, int kAlt>
constexpr int smem_bytes(int m) {
  constexpr int kTable = kCode == CodeType::Codebook4 ? (kAlt & kTableMask) : 0;
  return smem_bytes_no_table<kCode, kVnm, kWarps, kNTiles, kAlt>(m) +
         (kTable > 0 ? kWarps * kTableWarpBytes + kTableWarpBytes : 0);
}

// V:2:M gathered X of one chunk, as pairs (see sparse_decode.cu): thread t gathers column pair
// q = t % 128 of the chunk (block q / 2, its two selected columns) for tokens
// t / 128 + r * kThreads / 128. With one token tile (m <= 8) the pair's columns and row pointers
// are computed once per chunk and the token loops stop at m (session 14: the per-token index
// arithmetic and the guards of tokens >= m were about a third of a V:2:M unit's instructions at
// m = 1; 12-15% faster with 4-bit codes on the large shapes). With two tiles that form measured
// up to 55% slower (ptxas then used 96 instead of 165 registers: more CTAs per SM, another
// stream-K plan), so m > 8 keeps the previous per-token form.
template <int kThreads, int kTokens, int kSteps>
struct Gather {
  static constexpr int kPairsPerToken = kSteps * 16;  // 8 blocks of 2 pairs per k-step
  static constexpr int kPairs = kTokens * kPairsPerToken / kThreads;
  uint32_t v[kPairs];
};

// The two X columns that column pair q (of 2 per block) of the chunk starting at block block0
// selects: a V:2:M block's kept positions from its row group's column table.
struct PairColumns {
  int64_t c0, c1;
};
__device__ __forceinline__ PairColumns pair_columns(const Params& p, const uint32_t* columns,
                                                    int64_t block0, int q) {
  const int64_t block = block0 + (q >> 1);
  const uint32_t offsets = __ldg(columns + block) >> (16 * (q & 1));
  return {block * p.bm + (offsets & 0xff), block * p.bm + ((offsets >> 8) & 0xff)};
}

template <int kThreads, int kTokens, int kSteps>
__device__ __forceinline__ void gather_load(Gather<kThreads, kTokens, kSteps>& out,
                                            const Params& p, const uint32_t* columns,
                                            int64_t block0) {
  using G = Gather<kThreads, kTokens, kSteps>;
  static_assert(kThreads % 128 == 0, "one column pair per thread");
  const __half* x = static_cast<const __half*>(p.x);
  if constexpr (kSteps == 16) {
    // 16-step chunks (sessions 14-15): 256 pairs per token, so each of the 128 threads
    // gathers pairs q and q + 128 (kJ of them) for every token.
    static_assert(kThreads == 128, "16-step V:2:M chunks: 4-warp CTAs");
    constexpr int kJ = G::kPairsPerToken / kThreads;
    const int q0 = threadIdx.x;
    bool in0[kJ], in1[kJ];
    const __half* x0[kJ];
    const __half* x1[kJ];
#pragma unroll
    for (int j = 0; j < kJ; ++j) {
      const auto [c0, c1] = pair_columns(p, columns, block0, q0 + j * kThreads);
      in0[j] = c0 < p.cols;  // columns past K read as zero
      in1[j] = c1 < p.cols;
      x0[j] = x + (in0[j] ? c0 : 0);
      x1[j] = x + (in1[j] ? c1 : 0);
    }
#pragma unroll
    for (int tok = 0; tok < kTokens; ++tok) {
      if (kTokens == 8 && tok >= p.m) break;  // pairs of tokens >= m are never stored
#pragma unroll
      for (int j = 0; j < kJ; ++j) {
        __half2 pair = __half2half2(__float2half_rn(0.0f));
        if (tok < p.m) {
          if (in0[j]) pair.x = x0[j][tok * p.ldx];
          if (in1[j]) pair.y = x1[j][tok * p.ldx];
        }
        out.v[tok * kJ + j] = *reinterpret_cast<const uint32_t*>(&pair);
      }
    }
    return;
  }
  const auto [c0, c1] = pair_columns(p, columns, block0, threadIdx.x % 128);
  if constexpr (kTokens == 8) {
    constexpr int kTokStep = kThreads / 128;  // tokens between a thread's pairs
    const int tok0 = threadIdx.x / 128;
    const bool in0 = c0 < p.cols, in1 = c1 < p.cols;  // columns past K read as zero
    const __half* x0 = x + tok0 * p.ldx + (in0 ? c0 : 0);
    const __half* x1 = x + tok0 * p.ldx + (in1 ? c1 : 0);
    const int64_t step = kTokStep * p.ldx;
#pragma unroll
    for (int r = 0; r < G::kPairs; ++r) {
      if (tok0 + r * kTokStep >= p.m) break;  // pairs of tokens >= m are never stored
      __half2 pair = __half2half2(__float2half_rn(0.0f));
      if (in0) pair.x = x0[r * step];
      if (in1) pair.y = x1[r * step];
      out.v[r] = *reinterpret_cast<const uint32_t*>(&pair);
    }
  } else {
#pragma unroll
    for (int r = 0; r < G::kPairs; ++r) {
      const int tok = (threadIdx.x + r * kThreads) / 128;
      __half2 pair = __half2half2(__float2half_rn(0.0f));
      if (tok < p.m) {
        const __half* row = x + tok * p.ldx;
        if (c0 < p.cols) pair.x = row[c0];
        if (c1 < p.cols) pair.y = row[c1];
      }
      out.v[r] = *reinterpret_cast<const uint32_t*>(&pair);
    }
  }
}

// Rows >= m are skipped: they stay as zeroed at the start.
template <int kThreads, int kTokens, int kSteps>
__device__ __forceinline__ void gather_store(__half* xs, const Gather<kThreads, kTokens, kSteps>& in,
                                             int m) {
  using G = Gather<kThreads, kTokens, kSteps>;
  constexpr int kRow = kSteps * 32 + 8;  // X row stride in halves (Geo::kVnmRowHalves)
  if constexpr (kSteps == 16) {
    constexpr int kJ = G::kPairsPerToken / kThreads;
    uint32_t* dst = reinterpret_cast<uint32_t*>(xs + 2 * threadIdx.x);
#pragma unroll
    for (int tok = 0; tok < kTokens; ++tok) {
      if (kTokens == 8 && tok >= m) break;
#pragma unroll
      for (int j = 0; j < kJ; ++j)
        if (tok < m) dst[tok * (kRow / 2) + j * kThreads] = in.v[tok * kJ + j];
    }
  } else if constexpr (kTokens == 8) {
    constexpr int kTokStep = kThreads / 128;
    const int q = threadIdx.x % 128, tok0 = threadIdx.x / 128;
    uint32_t* dst = reinterpret_cast<uint32_t*>(xs + tok0 * kRow + 2 * q);
#pragma unroll
    for (int r = 0; r < G::kPairs; ++r) {
      if (tok0 + r * kTokStep >= m) break;
      dst[r * kTokStep * (kRow / 2)] = in.v[r];
    }
  } else {
#pragma unroll
    for (int r = 0; r < G::kPairs; ++r) {
      const int idx = threadIdx.x + r * kThreads;
      const int tok = idx / 128, q = idx % 128;
      if (tok < m) *reinterpret_cast<uint32_t*>(xs + tok * kRow + 2 * q) = in.v[r];
    }
  }
}


// decode_a's codebook4 branch with the same 16 byte permutes (12 lookups, 4 interleaves) and
// the same selector values, built with fewer integer-pipe instructions (kCb4Bits of kAlt).
template <int kAlt>
__device__ __forceinline__ void decode_cb4_v10(uint32_t (&a)[4], uint32_t w, const Book& b0,
                                               const Book& b1, const Cb4Consts& k) {
  const uint32_t top = w & 0x88888888u;
  const uint32_t sel = (kAlt & kCb4ImadSel) ? mad_lo(top, k.minus1, w) : (w & 0x77777777u);
  const uint32_t sel2 =
      (kAlt & kCb4ImadHi) ? mad_lo(hi_mul(top, k.half), k.one, k.sel2_base)  // IMAD.HI + IMAD
                          : 0x32103210u | (top >> 1);
  lookup_rows(a, b0, b1, sel, sel2, high_half_down(sel, k.neg0), high_half_down(sel2, k.neg0));
}

// decode_a's int8 branch with the 0x64646464 filler in a register (`magic`, built from p.one),
// so that the byte-permute selectors are the immediates: the compiler otherwise keeps the filler
// as the immediate and rebuilds each selector in a register (4 IMAD.MOV per k-step).
__device__ __forceinline__ void decode_int8_reg(uint32_t (&a)[4], uint32_t w0, uint32_t w1,
                                                uint32_t pair_lo, uint32_t pair_hi,
                                                uint32_t magic) {
  a[0] = dequant(prmt(w0, magic, 0x4140), pair_lo);
  a[1] = dequant(prmt(w0, magic, 0x4342), pair_hi);
  a[2] = dequant(prmt(w1, magic, 0x4140), pair_lo);
  a[3] = dequant(prmt(w1, magic, 0x4342), pair_hi);
}

// Table path helpers. Shifts by IMAD (multipliers in registers the compiler cannot fold into
// a shift), so that the integer pipe is left the one LOP3 per code that builds the address.
__device__ __forceinline__ uint32_t mul_lo(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("mul.lo.u32 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ uint32_t mul_hi(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("mul.hi.u32 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ uint32_t pack_halves(uint32_t lo, uint32_t hi) {  // lo | hi << 16
  uint32_t r;
  asm("mad.lo.u32 %0, %1, 65536, %2;\n" : "=r"(r) : "r"(hi), "r"(lo));
  return r;
}
template <int kOffset>
__device__ __forceinline__ uint32_t lds16(uint32_t addr) {
  uint32_t r;
  asm volatile("ld.shared.u16 %0, [%1+%2];\n" : "=r"(r) : "r"(addr), "n"(kOffset));
  return r;
}
__device__ __forceinline__ void sts32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(v));
}

// Multipliers that bring nibble i of a code word to bits 7..10: << 7, << 3 (mul.lo), then
// >> 1, >> 5, ..., >> 21 (mul.hi by 2^(32 - k)). `one` is 1 at run time.
struct TableShifts {
  uint32_t m[8];
};
__device__ __forceinline__ TableShifts table_shifts(uint32_t one) {
  TableShifts t;
  t.m[0] = one << 7;
  t.m[1] = one << 3;
#pragma unroll
  for (int i = 2; i < 8; ++i) t.m[i] = one << (32 - (4 * i - 7));
  return t;
}

// Write this lane's 16 table words from its two rows' codebooks.
__device__ __forceinline__ void fill_table(uint32_t tlane, const Book& b0, const Book& b1) {
#pragma unroll
  for (int c = 0; c < 16; ++c) {
    const int j = c / 4, q = c % 4;
    const uint32_t sel = q | (4 + q) << 4;
    sts32(tlane + c * 128, prmt(prmt(b0.lo[j], b0.hi[j], sel), prmt(b1.lo[j], b1.hi[j], sel), 0x5410));
  }
}

// The codebook4 A fragment of one k-step through the table: per code one IMAD (shift), one
// LOP3 (address), one ld.shared.u16; per register one IMAD to pack the two halves.
__device__ __forceinline__ void decode_table(uint32_t (&a)[4], uint32_t w, uint32_t tlane,
                                             const TableShifts& t) {
  uint32_t h[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const uint32_t sh = i < 2 ? mul_lo(w, t.m[i]) : mul_hi(w, t.m[i]);
    const uint32_t addr = (sh & 0x780u) | tlane;
    h[i] = i < 4 ? lds16<0>(addr) : lds16<2>(addr);
  }
  a[0] = pack_halves(h[0], h[1]);
  a[2] = pack_halves(h[2], h[3]);
  a[1] = pack_halves(h[4], h[5]);
  a[3] = pack_halves(h[6], h[7]);
}

// k-step s of kSteps goes through the table when (s * kTable) % kSteps < kTable: kTable of
// them, spread evenly.
template <int kTable, int kSteps>
constexpr bool table_step(int s) {
  return kTable > 0 && (s * kTable) % kSteps < kTable;
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}
__device__ __forceinline__ unsigned sm_id() {
  unsigned r;
  asm volatile("mov.u32 %0, %%smid;\n" : "=r"(r));
  return r;
}

// kPair: an early piece of a joined split group g (pp_kind 1 or 2): this CTA's partial sums as
// tagged 64-bit words (split_fixup.cuh's format) in its workspace slot for g (slot_of: 8 tokens x
// kRows words fit one float slot), no fence, atomic or barrier; `acc` zeroed. acc[j] of lane
// (g8, t4) of warp w: token 2 t4 + (j & 1), local row 16 w + g8 + 8 (j >> 1) (m <= 8).
template <int kWarps>
__device__ __forceinline__ void pair_publish(const Params& p, float (&acc)[4], int64_t g) {
  constexpr int kRows = kWarps * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
  unsigned long long* w = reinterpret_cast<unsigned long long*>(p.partials) +
                          slot_of(static_cast<int64_t>(blockIdx.x), g, p) * (8 * kRows);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int tok = 2 * t4 + (j & 1), local = warp * 16 + g8 + 8 * (j >> 1);
    if (tok < p.m)
      st_relaxed_u64(w + tok * kRows + local,
                     uint64_t{kPartialTag} << 32 | __float_as_uint(acc[j]));
    acc[j] = 0.0f;
  }
}

// kPair: the late CTA(s) of joined split group g after the loop (every thread of the CTA; the
// ring is drained). One late CTA (pair = false) adds the early pieces' tagged words to its own
// sums; a late cluster pair (pair = true) also exchanges its sums through distributed shared
// memory (scratch = the first 4 KB of the ring), rank 0 writing rows g8 and rank 1 rows g8 + 8 of
// each warp. Each value is taken in CTA order c0..c1, as flush_row_group adds them (the same
// bits). The early words are loaded before the cluster barrier (they were published mid-range),
// re-loaded until tagged, and cleared once read. Needs every CTA resident (early CTAs publish
// before any wait of their own) and, for pairs, a launch in clusters of 2. Clusters exist from
// sm_90 on, and the pair kernels launch only there (compressed_pair_groups checks that clusters
// fit), so the sm_80 image leaves this empty.
template <int kWarps, typename OutT>
__device__ __forceinline__ void pair_join(const Params& p, float (&acc)[4], int64_t g, bool pair,
                                          unsigned char* smem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int kRows = kWarps * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
  const int64_t c0 = cta_of(g * p.kchunks, p), c1 = cta_of((g + 1) * p.kchunks - 1, p);
  const int64_t me = blockIdx.x, partner = me ^ 1;
  const int rank = static_cast<int>(me & 1);
  unsigned long long* words = reinterpret_cast<unsigned long long*>(p.partials);
  auto tok_of = [&](int j) { return 2 * t4 + (j & 1); };
  auto local_of = [&](int j) { return warp * 16 + g8 + 8 * (j >> 1); };
  auto mine = [&](int j) { return tok_of(j) < p.m && (!pair || (j >> 1) == rank); };
  auto early = [&](int q) {
    const int64_t d = c0 + q;
    return d <= c1 && d != me && !(pair && d == partner);
  };
  auto word = [&](int q, int j) {
    return words + slot_of(c0 + q, g, p) * (8 * kRows) + tok_of(j) * kRows + local_of(j);
  };
  float* scratch = reinterpret_cast<float*>(smem);
  if (pair) {
    __syncthreads();  // every warp is done with the ring, which the scratch overlaps
#pragma unroll
    for (int j = 0; j < 4; ++j) scratch[threadIdx.x * 4 + j] = acc[j];
  }
  unsigned long long v[4][4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int q = 0; q < 4; ++q) v[j][q] = mine(j) && early(q) ? ld_relaxed_u64(word(q, j)) : 0ull;
  const float* other = scratch;
  if (pair) {
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    cluster.sync();  // release this CTA's scratch, acquire the partner's
    other = cluster.map_shared_rank(scratch, static_cast<int>(cluster.block_rank()) ^ 1);
  }
  OutT* y = static_cast<OutT*>(p.y);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (!mine(j)) continue;
    float sum = 0.0f;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t d = c0 + q;
      if (d > c1) break;
      float val;
      if (d == me) {
        val = acc[j];
      } else if (pair && d == partner) {
        val = other[threadIdx.x * 4 + j];
      } else {
        while (static_cast<uint32_t>(v[j][q] >> 32) != kPartialTag)
          v[j][q] = ld_relaxed_u64(word(q, j));
        val = __uint_as_float(static_cast<uint32_t>(v[j][q]));
        st_relaxed_u64(word(q, j), 0ull);
      }
      sum = q == 0 ? val : sum + val;
    }
    const int64_t row = g * kRows + local_of(j);
    if (row < p.rows) y[tok_of(j) * p.ldy + row] = from_float<OutT>(sum);
  }
  if (pair) cooperative_groups::this_cluster().sync();  // the partner may still read the scratch
#else
  __trap();  // unreachable: no cluster launch below sm_90
#endif
}

// kFixedSpc: groups of 128 (the default), so the chunk's scale pairs per row are
// kSteps / 8, known at compile time and loaded once per chunk; otherwise p.spc, per k-step.
template <CodeType kCode, bool kVnm, int kWarps, int kNTiles, bool kFixedSpc, typename OutT,
          int kAlt>
__device__ __forceinline__ void compressed_body(const Params& p) {
  static_assert(kAlt == 0 || kAlt == kSteps16 || !kVnm, "variants: 2:4 only");
  static_assert((kAlt & kSteps16) == 0 || compressed_ksteps(kVnm, kCode) == 8,
                "kSteps16: where the default chunk is 8 k-steps");
  constexpr int kTable = kCode == CodeType::Codebook4 ? (kAlt & kTableMask) : 0;
  constexpr bool kLeanLoop = (kAlt & kLean) != 0;
  constexpr bool kTaggedFix = (kAlt & kTagged) != 0;
  constexpr bool kTl = (kAlt & kTimeline) != 0;
  static_assert(!(kTaggedFix || kTl) || (kLeanLoop && kTable == 0),
                "run-3 variants: lean loop only");
  constexpr bool kWideCta = (kAlt & kWide) != 0;
  static_assert(!kWideCta || (kLeanLoop && kTable == 0 && !kVnm && kWarps == 16 && !kTaggedFix),
                "wide CTAs: 2:4 lean loop, 16 warps");
  constexpr bool kPairOn = (kAlt & kPair) != 0;
  static_assert(!kPairOn || (kLeanLoop && kTable == 0 && !kVnm && kNTiles == 1 && !kTaggedFix &&
                             !kWideCta),
                "pair joins: 2:4 lean loop, m <= 8");
  using G = Geo<kCode, kVnm, kNTiles, kAlt>;
  constexpr int kSteps = G::kSteps;
  constexpr int kThreads = kWarps * 32;
  constexpr int kTokens = kNTiles * 8;
  constexpr int kRows = kWarps * 16;
  constexpr int kSlot = G::kSlotBytes;
  constexpr int kStages = G::kStages;
  constexpr int kRowBytes = kVnm ? G::kVnmRowHalves * 2 : G::kRowBytes;
  // One k-step's MMAs per token tile into alternating accumulator sets when there is one
  // token tile, so consecutive mma.sp do not wait on each other.
  constexpr int kAcc = kNTiles == 1 ? 2 : 1;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_last;
  __shared__ unsigned long long s_tl[kTl ? kTimelineWords : 1];
  // kTimeline: thread 0 stamps %globaltimer and clock64.
  auto stamp = [&](int k) {
    if constexpr (kTl) {
      if (threadIdx.x == 0) {
        s_tl[k] = global_ns();
        s_tl[8 + k] = clock64();
      }
    }
  };
  // Programmatic dependent launch (session 7): the next grid may start its prologue (it waits
  // for this grid before touching X, Y or the workspace).
  pdl_launch_dependents();
  stamp(0);
  if constexpr (kTl) {
    if (threadIdx.x == 0)
      for (int k = 1; k < kTimelineWords; ++k)
        if (k != 8) s_tl[k] = 0;
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t u_begin = unit_begin(blockIdx.x, p);
  const int64_t n_units = unit_begin(blockIdx.x + 1, p) - u_begin;

  const uint32_t base = smem_addr(smem);
  const uint32_t wring = base + warp * kSlot;  // stage s: + s * kWarps * kSlot
  const uint32_t zrow = base + kStages * kWarps * kSlot;
  const uint32_t x_bytes = static_cast<uint32_t>(p.m) * kRowBytes;  // one X tile
  const uint32_t xbase = zrow + kRowBytes;
  constexpr int kSpcFixed = kSteps / 8;
  const int spc = kFixedSpc ? kSpcFixed : p.spc;
  const int scale_lanes = spc * 4;  // 16-byte pieces of a warp's scale block
  // Table path: this lane's table words (2 KB aligned, so bits 7..10 of tlane are zero).
  const uint32_t tlane =
      ((base + smem_bytes_no_table<kCode, kVnm, kWarps, kNTiles, kAlt>(p.m) + kTableWarpBytes - 1) &
       ~uint32_t{kTableWarpBytes - 1}) +
      warp * kTableWarpBytes + lane * 4;
  TableShifts tshift{};
  if constexpr (kTable > 0) tshift = table_shifts(p.one);

  // X rows >= m are never loaded: their ldmatrix lanes read the zero row (ordered before its
  // first read by the first iteration's barrier).
  for (int j = threadIdx.x; j < kRowBytes / 16; j += kThreads)
    reinterpret_cast<uint4*>(smem + kStages * kWarps * kSlot)[j] = make_uint4(0, 0, 0, 0);

  // kPair: an odd CTA may process its last group's head [u_begin + n_units - n_rot, end) first
  // (pp_rot), then [u_begin, ...): u_first is the first unit it processes.
  PairPlan pq{};
  int n_rot = -1;  // loop index at which the second run starts (never when -1)
  int64_t u_first = u_begin;
  if constexpr (kPairOn) {
    pq = PairPlan{static_cast<uint32_t>(p.units), static_cast<uint32_t>(p.kchunks),
                  static_cast<uint32_t>(p.ctas)};
    const uint32_t r = pp_rot(pq, blockIdx.x);
    if (r > 0) {
      n_rot = static_cast<int>(r);
      u_first = u_begin + n_units - r;
    }
  }
  // Units are consecutive in memory: this warp's slot of unit u is at
  // (u * kWarps + warp) * slot_bytes (codes, metadata, scales, contiguous).
  int64_t issue_kc = u_first % p.kchunks;
  // kWide: a unit is (pair of row groups, K chunk); this warp reads the tiling's unit of row group
  // 2 * pair + half (8 warps of 16 rows each), whose slots are at (unit * 8 + warp % 8).
  constexpr int kTileWarps = kWideCta ? 8 : kWarps;
  const int half = kWideCta ? warp / 8 : 0;
  int64_t issue_g = u_begin / p.kchunks;  // kWide: the pair of the next issue
  const unsigned char* wsrc =
      kWideCta ? p.tiles + (((2 * issue_g + half) * p.kchunks + issue_kc) * 8 + warp % 8) *
                               p.slot_bytes
               : p.tiles + (u_first * kWarps + warp) * p.slot_bytes;
  const int64_t unit_bytes = kTileWarps * p.slot_bytes;
  // kLean: the ring stage of the next issue, kept incrementally; this thread's X pieces: token
  // rows x_tok0 + r * kXRowStep (r < kXR) at piece x_piece of the chunk, read from x_cur (the
  // current chunk's columns of row x_tok0, advanced by one chunk per issue).
  constexpr int kXRowPieces = G::kChunkCols / 8;
  constexpr int kXRowStep = kThreads / kXRowPieces;
  constexpr int kXR = (kTokens + kXRowStep - 1) / kXRowStep;
  static_assert(kThreads % kXRowPieces == 0, "whole X rows per thread pass");
  int issue_stage = 0;
  const int x_tok0 = threadIdx.x / kXRowPieces, x_piece = threadIdx.x % kXRowPieces;
  const __half* x_row0 = static_cast<const __half*>(p.x) + x_tok0 * p.ldx + x_piece * 8;
  const __half* x_cur = x_row0 + issue_kc * G::kChunkCols;
  const uint32_t x_dst0 = static_cast<uint32_t>(x_tok0 * kRowBytes + x_piece * 16);
  const int last_kc = static_cast<int>(p.kchunks) - 1;
  // One unit of this warp's codes, metadata and scales into its ring slot; advances wsrc.
  auto copy_weight_unit = [&](uint32_t slot) {
    const uint4* src = reinterpret_cast<const uint4*>(wsrc) + lane;
    int bytes = 16;
    if constexpr (kWideCta) {
      // The odd half of an odd count's last pair has no tiles: zero-filled (its rows are past
      // p.rows, never stored). After a pair's last K chunk, skip the other half's row group.
      if (half != 0 && 2 * issue_g + 1 >= p.tile_groups) {
        bytes = 0;
        src = reinterpret_cast<const uint4*>(p.tiles) + lane;
      }
      if (issue_kc == last_kc) {
        wsrc += (p.kchunks + 1) * unit_bytes;
        ++issue_g;
      } else {
        wsrc += unit_bytes;
      }
    } else {
      wsrc += unit_bytes;
    }
#pragma unroll
    for (int s = 0; s < G::kWords + kSteps / 8; ++s)
      cp_async_16(slot + (s * 32 + lane) * 16, src + s * 32, bytes);
    if constexpr (G::kScaleBytes > 0) {
      if (lane < scale_lanes)
        cp_async_16(slot + G::kCodeBytes + G::kMetaBytes + lane * 16,
                    src + (G::kWords + kSteps / 8) * 32, bytes);
    }
  };
  // kLean: the X chunk of the next issue into ring stage `stage`; advances the chunk.
  auto issue_x_lean = [&](int stage) {
    {
      const int kc = static_cast<int>(issue_kc);
      const uint32_t xdst = xbase + static_cast<uint32_t>(stage) * x_bytes + x_dst0;
      if (kc != last_kc) {  // a whole chunk inside K
#pragma unroll
        for (int r = 0; r < kXR; ++r)
          if (x_tok0 + r * kXRowStep < p.m)
            cp_async_16(xdst + r * kXRowStep * kRowBytes, x_cur + r * kXRowStep * p.ldx, 16);
        x_cur += G::kChunkCols;
        issue_kc = kc + 1;
      } else {  // the last chunk: columns past K zero-filled
        const int64_t col = static_cast<int64_t>(kc) * G::kChunkCols + x_piece * 8;
        const int bytes =
            col >= p.cols ? 0 : (p.cols - col >= 8 ? 16 : static_cast<int>((p.cols - col) * 2));
#pragma unroll
        for (int r = 0; r < kXR; ++r)
          if (x_tok0 + r * kXRowStep < p.m)
            cp_async_16(xdst + r * kXRowStep * kRowBytes,
                        bytes > 0 ? x_cur + r * kXRowStep * p.ldx : p.x, bytes);
        x_cur = x_row0;
        issue_kc = 0;
      }
    }
  };
  auto issue_lean = [&](bool live) {
    if (live) {
      copy_weight_unit(wring + static_cast<uint32_t>(issue_stage) * (kWarps * kSlot));
      issue_x_lean(issue_stage);
    }
    cp_async_commit();
    if (++issue_stage == kStages) issue_stage = 0;
  };
  auto issue = [&](int64_t i) {
    if constexpr (kLeanLoop) {
      if constexpr (kPairOn) {
        if (i == n_rot) {  // the second run of a rotated CTA: back to u_begin
          wsrc = p.tiles + (u_begin * kWarps + warp) * p.slot_bytes;
          issue_kc = u_begin % p.kchunks;
          x_cur = x_row0 + issue_kc * G::kChunkCols;
        }
      }
      issue_lean(i < n_units);
    } else {
      if (i < n_units) {
        const int64_t kc = issue_kc;
        if (++issue_kc == p.kchunks) issue_kc = 0;
        copy_weight_unit(wring + static_cast<uint32_t>(i % kStages) * kWarps * kSlot);
        if constexpr (!kVnm)
          issue_x_dense<kThreads, G::kChunkCols, kRowBytes>(
              xbase + static_cast<uint32_t>(i % kStages) * x_bytes, p, kc);
      }
      cp_async_commit();
    }
  };
  auto group_columns = [&](int64_t g) { return p.columns + (g * kRows / p.v) * p.blocks_padded; };
  if constexpr (kLeanLoop) {
    // Programmatic dependent launch (session 7): the first unit's weights (constant) before
    // waiting for the previous grid, in a commit group of their own, then its X; the other ring
    // stages as before (one group per unit). The loop's waits count one group per unit, so at
    // first they also wait for that extra group, which is older than the one they need.
    if (n_units > 0) copy_weight_unit(wring);
    cp_async_commit();
    pdl_wait();
    if (n_units > 0) issue_x_lean(0);
    cp_async_commit();
    issue_stage = kStages > 1 ? 1 : 0;
#pragma unroll
    for (int i = 1; i < kStages - 1; ++i) issue(i);
  } else {  // v4 loop, table path, V:2:M: everything after the wait
    pdl_wait();
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) issue(i);
  }

  // V:2:M: X slot s of the kXSlots (unit i uses slot i % kXSlots; at m <= 8 kept incrementally
  // in x_use).
  auto x_slot = [&](int s) {
    return reinterpret_cast<__half*>(smem + kStages * kWarps * kSlot + kRowBytes) +
           s * (x_bytes / 2);
  };
  int x_use = 0;
  Gather<kThreads, kTokens, kSteps> gathered;
  int64_t gather_g = u_begin / p.kchunks, gather_kc = u_begin % p.kchunks;
  // m <= 8: the row group's column selections found once per group (a 64-bit division by V),
  // not per unit (m > 8 keeps the per-unit form: see Gather).
  constexpr bool kLeanGather = kTokens == 8;
  const uint32_t* gather_cols = kVnm && kLeanGather ? group_columns(gather_g) : nullptr;
  auto gather_next = [&]() {
    if constexpr (kVnm) {
      gather_load<kThreads, kTokens, kSteps>(
          gathered, p, kLeanGather ? gather_cols : group_columns(gather_g),
          gather_kc * (8 * kSteps));
      if (++gather_kc == p.kchunks) {
        gather_kc = 0;
        ++gather_g;
        if constexpr (kLeanGather) gather_cols = group_columns(gather_g);
      }
    }
  };
  if constexpr (kVnm) {
    gather_next();
    gather_store<kThreads, kTokens, kSteps>(x_slot(0), gathered, p.m);
    if (n_units > 1) gather_next();
  }

  float acc[kAcc][kNTiles][4] = {};
  // ldmatrix row addresses: token nt * 8 + (lane & 7) of the X tile, or the zero row.
  uint32_t lane_row[kNTiles];
  bool lane_tok[kNTiles];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    const int tok = nt * 8 + (lane & 7);
    lane_tok[nt] = tok < p.m;
    lane_row[nt] = static_cast<uint32_t>(tok) * kRowBytes + (lane >> 3) * 16;
  }
  const uint32_t zlane = zrow + (lane >> 3) * 16;
  const int g8 = lane >> 2;

  Book book0{}, book1{};
  int64_t book_g = -1;

  // kLean: 32-bit unit and chunk counters (a CTA's units and the chunks of a row fit easily), the
  // ring stage kept incrementally instead of i % kStages.
  using Idx = std::conditional_t<kLeanLoop, int, int64_t>;
  const Idx n_loop = static_cast<Idx>(n_units), kchunks = static_cast<Idx>(p.kchunks);
  int64_t g = u_first / p.kchunks;
  Idx kc = static_cast<Idx>(u_first % p.kchunks);
  int use_stage = 0;
  // kPair: how the split group the range starts in (bits 0-1) and the one it ends in (bits 2-3)
  // end (pp_kind); computed after the prologue's copies are in flight. join_g / join_kind: the
  // group this CTA joins after its loop.
  int pair_kinds = 0;
  if constexpr (kPairOn) {
    const uint32_t kch = static_cast<uint32_t>(p.kchunks);
    const uint32_t ga = static_cast<uint32_t>(u_begin) / kch;
    const uint32_t gb = static_cast<uint32_t>(u_begin + n_units - 1) / kch;
    pair_kinds = pp_kind(pq, ga) | pp_kind(pq, gb) << 2;
  }
  int64_t join_g = -1;
  int join_kind = 0;
  const uint32_t int8_magic = 0x64646464u * p.one;
  [[maybe_unused]] const Cb4Consts cb4k{0x80008000u * p.one, 0xffffffffu * p.one,
                                        0x80000000u * p.one, p.one, 0x32103210u * p.one};
  int64_t reduce_g = -1;  // kTagged: the split group this CTA sums after its loop
  [[maybe_unused]] unsigned long long wait_cycles = 0;
  [[maybe_unused]] int n_mid = 0;
#pragma unroll 1
  for (Idx i = 0; i < n_loop; ++i, ++kc) {
    if (kc == kchunks) {
      kc = 0;
      ++g;
    }
    if constexpr (kPairOn) {
      if (i == n_rot) {  // a rotated CTA's second run starts at u_begin
        g = u_begin / p.kchunks;
        kc = static_cast<Idx>(u_begin % p.kchunks);
      }
    }
    if constexpr (kCode == CodeType::Codebook4) {
      if (g != book_g) {  // a new row group: this lane's two rows' codebooks
        book_g = g;
        const int64_t row = (g * kWarps + warp) * 16 + g8;
        if constexpr (kWideCta) {  // the missing half of a last pair: rows past the books
          book0 = load_book(p.books, std::min<int64_t>(row, p.rows - 1), p.book_rows);
          book1 = load_book(p.books, std::min<int64_t>(row + 8, p.rows - 1), p.book_rows);
        } else {
          book0 = load_book(p.books, row, p.book_rows);
          book1 = load_book(p.books, row + 8, p.book_rows);
        }
        // Only this lane reads its words, after these stores in program order.
        if constexpr (kTable > 0) fill_table(tlane, book0, book1);
      }
    }
    [[maybe_unused]] long long w0 = 0;
    if constexpr (kTl) w0 = clock64();
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if constexpr (kTl) {
      wait_cycles += clock64() - w0;
      if (i == 0) stamp(1);
      if (i + 1 == n_loop) stamp(4);
    }
    issue(i + kStages - 1);
    const bool last_of_group = i + 1 == n_loop || kc + 1 == kchunks || (kPairOn && i + 1 == n_rot);
    const int cur_stage = use_stage;
    if constexpr (kLeanLoop) {
      if (++use_stage == kStages) use_stage = 0;
    }
    uint32_t xs;
    if constexpr (kVnm) {
      constexpr int kXS = G::kXSlots;
      const int x_next =
          kLeanGather ? (x_use == kXS - 1 ? 0 : x_use + 1) : static_cast<int>((i + 1) % kXS);
      if constexpr (!G::kOneXSlot) {  // one slot: stored after this unit's MMAs, below
        if (i + 1 < n_units)
          gather_store<kThreads, kTokens, kSteps>(x_slot(x_next), gathered, p.m);
        if (i + 2 < n_units) gather_next();
      }
      xs = xbase + static_cast<uint32_t>(kLeanGather ? x_use : static_cast<int>(i % kXS)) * x_bytes;
      x_use = x_next;
    } else if constexpr (kLeanLoop) {
      xs = xbase + static_cast<uint32_t>(cur_stage) * x_bytes;
    } else {
      xs = xbase + static_cast<uint32_t>(i % kStages) * x_bytes;
    }
    uint32_t xrow[kNTiles];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) xrow[nt] = lane_tok[nt] ? xs + lane_row[nt] : zlane;
    const uint32_t slot =
        wring + static_cast<uint32_t>(kLeanLoop ? cur_stage : static_cast<int>(i % kStages)) *
                    (kWarps * kSlot);
    uint32_t e[kSteps / 2];
#pragma unroll
    for (int j = 0; j < kSteps / 8; ++j) {
      const uint4 q = lds128(slot + G::kCodeBytes + j * 512 + lane * 16);
      e[4 * j] = q.x;
      e[4 * j + 1] = q.y;
      e[4 * j + 2] = q.z;
      e[4 * j + 3] = q.w;
    }
    uint32_t w[G::kWords * 4];
#pragma unroll
    for (int j = 0; j < G::kWords; ++j) {
      const uint4 q = lds128(slot + (j * 32 + lane) * 16);
      w[4 * j] = q.x;
      w[4 * j + 1] = q.y;
      w[4 * j + 2] = q.z;
      w[4 * j + 3] = q.w;
    }
    const uint32_t sbase = slot + G::kCodeBytes + G::kMetaBytes;
    uint32_t pairs_lo[kSpcFixed], pairs_hi[kSpcFixed];
    if constexpr (G::kScaleBytes > 0 && kFixedSpc) {
#pragma unroll
      for (int q = 0; q < kSpcFixed; ++q) {
        pairs_lo[q] = lds32(sbase + (g8 * kSpcFixed + q) * 4);
        pairs_hi[q] = lds32(sbase + ((g8 + 8) * kSpcFixed + q) * 4);
      }
    }
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      uint32_t pair_lo = 0, pair_hi = 0;
      if constexpr (G::kScaleBytes > 0) {
        if constexpr (kFixedSpc) {
          pair_lo = pairs_lo[s / 8];
          pair_hi = pairs_hi[s / 8];
        } else {
          const int q = (s * spc) / kSteps;
          pair_lo = lds32(sbase + (g8 * spc + q) * 4);
          pair_hi = lds32(sbase + ((g8 + 8) * spc + q) * 4);
        }
      }
      uint32_t a[4];
      if constexpr (kCode == CodeType::Int8 && kLeanLoop)
        decode_int8_reg(a, w[2 * s], w[2 * s + 1], pair_lo, pair_hi, int8_magic);
      else if constexpr (kCode == CodeType::Int8)
        decode_a<kCode>(a, w[2 * s], w[2 * s + 1], pair_lo, pair_hi, book0, book1);
      else if constexpr (kCode == CodeType::Codebook4 && (kAlt & kCb4Bits) != 0)
        decode_cb4_v10<kAlt>(a, w[s], book0, book1, cb4k);
      else if (table_step<kTable, kSteps>(s))
        decode_table(a, w[s], tlane, tshift);
      else
        decode_a<kCode>(a, w[s], 0, pair_lo, pair_hi, book0, book1);
      const uint32_t ew = e[(s / 8) * 4 + ((s % 8) >> 1)];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        uint32_t b[4];
        ldmatrix_x4(b, xrow[nt] + s * 64);
        if (s & 1) {
          mma_sp<F16, 1>(acc[s % kAcc][nt], a, b, ew);
        } else {
          mma_sp<F16, 0>(acc[s % kAcc][nt], a, b, ew);
        }
      }
    }
    if constexpr (G::kOneXSlot) {  // every read of the slot done, then the next unit's tile
      __syncthreads();
      if (i + 1 < n_units) gather_store<kThreads, kTokens, kSteps>(x_slot(0), gathered, p.m);
      if (i + 2 < n_units) gather_next();
    }
    if (!last_of_group) continue;
    if constexpr (kAcc == 2) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[0][nt][j] += acc[1][nt][j];
          acc[1][nt][j] = 0.0f;
        }
    }
    if constexpr (kTl) {
      if (i + 1 == n_loop) {
        stamp(5);
      } else if (n_mid++ == 0) {
        stamp(2);
      }
    }
    if constexpr (kTaggedFix) {
      if (tagged_flush<kWarps, kNTiles, OutT>(p, acc[0], g, u_begin, n_units)) reduce_g = g;
    } else if constexpr (kPairOn) {
      const int64_t gs = g * p.kchunks;
      const bool whole = u_begin <= gs && gs + p.kchunks <= u_begin + n_units;
      // a split group is the one the range starts in (gs <= u_begin) or the one it ends in
      const int kind = whole ? 0 : (gs <= u_begin ? pair_kinds & 3 : pair_kinds >> 2);
      if (kind == 0) {
        flush_row_group<kWarps, kNTiles, OutT>(p, acc[0], g, u_begin, n_units, s_last);
      } else if (i + 1 == n_loop) {  // late: joined after the loop, acc kept
        join_g = g;
        join_kind = kind;
      } else {  // early: published as tagged words
        pair_publish<kWarps>(p, acc[0][0], g);
      }
    } else {
      flush_row_group<kWarps, kNTiles, OutT>(p, acc[0], g, u_begin, n_units, s_last);
    }
    if constexpr (kTl) {
      if (i + 1 != n_loop && n_mid == 1) stamp(3);
    }
  }
  cp_async_wait<0>();
  if constexpr (kTaggedFix) {
    if (reduce_g >= 0) tagged_reduce<kWarps, kNTiles, OutT>(p, acc[0], reduce_g);
  }
  if constexpr (kPairOn) {
    if (join_g >= 0) pair_join<kWarps, OutT>(p, acc[0][0], join_g, join_kind == 2, smem);
  }
  if constexpr (kTl) {
    stamp(6);
    __syncthreads();
    stamp(7);
    if (threadIdx.x == 0) {
      const int64_t g_last = (u_begin + n_units - 1) / p.kchunks;
      const bool whole =
          u_begin <= g_last * p.kchunks && (g_last + 1) * p.kchunks <= u_begin + n_units;
      const bool summed = kTaggedFix ? reduce_g >= 0 : (!whole && s_last != 0);
      s_tl[16] = sm_id();
      s_tl[17] = static_cast<unsigned long long>(n_units);
      // kPair: bit 2 a one-CTA join, bit 3 a cluster-pair join after the loop
      s_tl[18] = (whole ? 1u : 0u) | (summed ? 2u : 0u) |
                 (join_kind == 1 ? 4u : 0u) | (join_kind == 2 ? 8u : 0u);
      s_tl[19] = wait_cycles;
      s_tl[20] = static_cast<unsigned long long>(n_mid);
      for (int k = 0; k < kTimelineWords; ++k)
        p.timeline[blockIdx.x * int64_t{kTimelineWords} + k] = s_tl[k];
    }
  }
}

// The timeline twins are held to 2 CTAs per SM (ptxas gave one 149 registers): they launch with
// the plain kernel's CTA count, and the tagged fix-up needs every CTA resident. The wide kernels'
// twins (16 warps): 1 CTA per SM, as the plain ones.
template <CodeType kCode, bool kVnm, int kWarps, int kNTiles, bool kFixedSpc, typename OutT,
          int kAlt>
__global__ void __launch_bounds__(kWarps * 32, kWarps == 16 ? 1 : 2)
    compressed_timeline_kernel(const Params p) {
  compressed_body<kCode, kVnm, kWarps, kNTiles, kFixedSpc, OutT, kAlt>(p);
}
template <CodeType kCode, bool kVnm, int kWarps, int kNTiles, bool kFixedSpc, typename OutT,
          int kAlt>
__global__ void __launch_bounds__(kWarps * 32) compressed_kernel(const Params p) {
  compressed_body<kCode, kVnm, kWarps, kNTiles, kFixedSpc, OutT, kAlt>(p);
}
// kPair kernels: held to 2 CTAs per SM (the lean kernels' occupancy, which the plan assumes).
template <CodeType kCode, bool kVnm, int kWarps, int kNTiles, bool kFixedSpc, typename OutT,
          int kAlt>
__global__ void __launch_bounds__(kWarps * 32, 2) compressed_pair_kernel(const Params p) {
  compressed_body<kCode, kVnm, kWarps, kNTiles, kFixedSpc, OutT, kAlt>(p);
}

// 2:4: 8 warps (128 rows) per CTA, so each X chunk staged in shared memory serves twice the
// (now small) weight bytes; V:2:M: 4 warps (one column set per CTA needs rows <= V = 64).
constexpr int warps_for(bool vnm) { return vnm ? 4 : 8; }

template <CodeType kCode, bool kVnm, int kNTiles, typename OutT, bool kFixedSpc = false,
          int kAlt = 0>
struct Kernel {
  static constexpr int kWarps = (kAlt & kWide) != 0 ? 16 : warps_for(kVnm);
  static constexpr int kMaxM = kNTiles * 8;
  static constexpr int kAltBits = kAlt;
  static int smem(int m) {
    return smem_bytes<kCode, kVnm, kWarps, kNTiles, kAlt>(m);
  }
  static auto fn() {
    if constexpr ((kAlt & kTimeline) != 0)
      return compressed_timeline_kernel<kCode, kVnm, kWarps, kNTiles, kFixedSpc, OutT, kAlt>;
    else if constexpr ((kAlt & kPair) != 0)
      return compressed_pair_kernel<kCode, kVnm, kWarps, kNTiles, kFixedSpc, OutT, kAlt>;
    else
      return compressed_kernel<kCode, kVnm, kWarps, kNTiles, kFixedSpc, OutT, kAlt>;
  }
  static cudaError_t prepare() {
    // The largest shared-memory carveout, so that as many CTAs as the occupancy calculation
    // counts on (the stream-K split assumes them all resident) really fit.
    static const cudaError_t e = [] {
      const cudaError_t a =
          cudaFuncSetAttribute(fn(), cudaFuncAttributeMaxDynamicSharedMemorySize, smem(kMaxM));
      return a != cudaSuccess
                 ? a
                 : cudaFuncSetAttribute(fn(), cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    }();
    return e;
  }
  static int resident(int64_t m) {  // X tiles are m rows: occupancy depends on m
    static int cache[kMaxM + 1] = {};
    const int mi = static_cast<int>(std::clamp<int64_t>(m, 1, kMaxM));
    if (cache[mi] == 0)
      cache[mi] = prepare() == cudaSuccess ? occupancy(fn(), kWarps * 32, smem(mi)) : 1;
    return cache[mi] * sm_count();
  }
};

// 2:4 codebook4: k-steps of 16 decoded through the shared-memory table (0, 8 or 16;
// SPARSA_CB4_TABLE at first use, detail::set_codebook_table_steps for tests).
int& table_steps() {
  static int steps = [] {
    const char* env = std::getenv("SPARSA_CB4_TABLE");
    const int v = env ? std::atoi(env) : kDefaultTableSteps;
    return v == 0 || v == 8 || v == 16 ? v : kDefaultTableSteps;
  }();
  return steps;
}

// 2:4 loop variant (session 5): 1 = kLean (+ kInt8Stages3 for int8 at m <= 8), the default; 0 =
// v4's loop and ring depths, for A/B runs. SPARSA_COMPRESSED_VARIANT at first use,
// detail::set_compressed_variant for tests. The table path (SPARSA_CB4_TABLE) takes precedence
// and runs the v4 loop.
// Session 6 run 3: 7 = lean + tagged fix-up, at m <= 8 for int8 (groups of 128) and codebook4
// when every CTA is resident; elsewhere the lean default.
// Session 7, second helper: 16 = wide CTAs (kWide) for codebook4 and int4, every m; the lean
// default for int8.
// Session 8: 20 = lean + kPair at m <= 8 for int8 (groups of 128) and codebook4 where the plan
// allows it (pair_plan_ok, all CTAs resident, an even count, clusters of 2 fit); else the lean
// default.
bool known_variant(int v) {
  return v == 0 || v == 1 || v == 7 || v == kWideVariant || v == kPairVariant ||
         v == kPairAllVariant || v == kCb4MovesVariant || v == kCb4ImadVariant ||
         v == kCb4ImadHiVariant || v == kCb4ShiftsVariant;
}
int& loop_variant() {
  static int v = [] {
    const char* env = std::getenv("SPARSA_COMPRESSED_VARIANT");
    const int x = env ? std::atoi(env) : kDefaultVariant;
    return known_variant(x) ? x : kDefaultVariant;
  }();
  return v;
}

// Calls f with the variant constant (kAlt) of the current choice for kNTiles token tiles and
// weights tiled in chunks of `ksteps` (V:2:M: kSteps16 for 16, else 0; 2:4 int8 in 16-step
// chunks: the lean loop with kSteps16).
template <CodeType kCode, bool kVnm, int kNTiles, typename F>
decltype(auto) with_alt(F&& f, int ksteps, bool all_resident = true) {
  if constexpr (kVnm) {
    if (ksteps == 16) return f(std::integral_constant<int, kSteps16>{});
  } else if constexpr (kCode == CodeType::Int8) {  // the lean loop only (no run-3 / pair variants)
    if (ksteps == 16) return f(std::integral_constant<int, kLean | kSteps16>{});
  }
  if constexpr (!kVnm) {
    if constexpr (kCode == CodeType::Codebook4) {
      switch (table_steps()) {
        case 8:
          return f(std::integral_constant<int, 8>{});
        case 16:
          return f(std::integral_constant<int, 16>{});
        default:
          break;
      }
    }
    if (loop_variant() != 0) {
      if constexpr (kCode == CodeType::Codebook4) {  // session 10: every m
        if (loop_variant() == kCb4MovesVariant)
          return f(std::integral_constant<int, kLean | kCb4HalfMoves>{});
        if (loop_variant() == kCb4ImadHiVariant)
          return f(std::integral_constant<int, kLean | kCb4HalfMoves | kCb4ImadSel | kCb4ImadHi>{});
        if (loop_variant() == kCb4ShiftsVariant) return f(std::integral_constant<int, kLean>{});
        if (loop_variant() == 1 || loop_variant() == kCb4ImadVariant)  // the default
          return f(std::integral_constant<int, kLean | kCb4DefaultBits>{});
      }
      if constexpr (kCode != CodeType::Int8) {
        if (loop_variant() == kWideVariant) return f(std::integral_constant<int, kLean | kWide>{});
      }
      if constexpr (kNTiles == 1 && kCode != CodeType::Int4) {
        constexpr int kBase = kCode == CodeType::Int8 ? (kLean | kInt8Stages3) : kLean;
        if (loop_variant() == 7 && all_resident)
          return f(std::integral_constant<int, kBase | kTagged>{});
        if ((loop_variant() == kPairVariant || loop_variant() == kPairAllVariant) && all_resident)
          return f(std::integral_constant<int, kBase | kPair>{});
      }
      if constexpr (kCode == CodeType::Int8 && kNTiles == 1)
        return f(std::integral_constant<int, kLean | kInt8Stages3>{});
      return f(std::integral_constant<int, kLean>{});
    }
  }
  return f(std::integral_constant<int, 0>{});
}

// Resident CTAs of the largest instantiation a (code, pattern, m) can use (the workspace bound
// does not depend on the output type beyond registers).
template <CodeType kCode, bool kVnm, int kNTiles>
int resident_tiles(int64_t m, int ksteps) {
  return with_alt<kCode, kVnm, kNTiles>([&](auto alt) {
    // int codes: the run-3 variants run only with groups of 128 (kFixedSpc), whose occupancy
    // the lean kernel's stands for (no instances of the variants without kFixedSpc)
    constexpr int kAlt = decltype(alt)::value;
    constexpr int kA = kCode == CodeType::Codebook4 ? kAlt : (kAlt & ~kVariantBits);
    return std::max(Kernel<kCode, kVnm, kNTiles, float, false, kA>::resident(m),
                    Kernel<kCode, kVnm, kNTiles, __half, false, kA>::resident(m));
  }, ksteps);
}
template <CodeType kCode, bool kVnm>
int resident_for(int64_t m, int ksteps) {
  return m <= 8 ? resident_tiles<kCode, kVnm, 1>(m, ksteps)
                : resident_tiles<kCode, kVnm, 2>(m, ksteps);
}

// ksteps: the weights' chunk length (V:2:M with 4-bit codes has kernels for 8 and 16).
int resident(CodeType code, bool vnm, int ksteps, int64_t m) {
  switch (code) {
    case CodeType::Int8:
      return vnm ? resident_for<CodeType::Int8, true>(m, ksteps)
                 : resident_for<CodeType::Int8, false>(m, ksteps);
    case CodeType::Int4:
      return vnm ? resident_for<CodeType::Int4, true>(m, ksteps)
                 : resident_for<CodeType::Int4, false>(m, ksteps);
    case CodeType::Codebook4:
      return vnm ? resident_for<CodeType::Codebook4, true>(m, ksteps)
                 : resident_for<CodeType::Codebook4, false>(m, ksteps);
    case CodeType::F16:
      break;
  }
  return sm_count();
}

// kPair kernels: whether p.ctas / 2 clusters of 2 CTAs fit on the GPU at once
// (cudaOccupancyMaxActiveClusters at this m's shared memory; cached per kernel and m).
template <typename K>
bool clusters_fit(const Params& p) {
  static int cache[K::kMaxM + 1] = {};
  const int mi = std::clamp(p.m, 1, K::kMaxM);
  if (cache[mi] == 0) {
    int n = 0;
    if (K::prepare() == cudaSuccess) {
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(static_cast<unsigned>(2 * sm_count()));
      config.blockDim = dim3(K::kWarps * 32);
      config.dynamicSmemBytes = static_cast<size_t>(K::smem(mi));
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = 2;
      attr.val.clusterDim.y = 1;
      attr.val.clusterDim.z = 1;
      config.attrs = &attr;
      config.numAttrs = 1;
      if (cudaOccupancyMaxActiveClusters(&n, K::fn(), &config) != cudaSuccess) {
        cudaGetLastError();
        n = 0;
      }
    }
    cache[mi] = n > 0 ? n : -1;
  }
  return cache[mi] > 0 && 2 * cache[mi] >= p.ctas;
}

template <CodeType kCode, bool kVnm, int kNTiles, bool kFixedSpc, int kTable>
cudaError_t launch_spc(const Params& p, ElemType y_type, cudaStream_t stream) {
  auto go = [&](auto out) -> cudaError_t {
    using O = decltype(out);
    auto run = [&](auto kernel) -> cudaError_t {
      using K = decltype(kernel);
      if (cudaError_t e = K::prepare(); e != cudaSuccess) return e;
      // Session 7: with programmatic dependent launch when decode_tuning().pdl (the sparse decode
      // kernels' switch, SPARSA_DECODE_PDL), so that in a CUDA graph a call's prologue (launch,
      // first unit's weights) overlaps the previous call's tail.
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(static_cast<unsigned>(p.ctas));
      config.blockDim = dim3(K::kWarps * 32);
      config.dynamicSmemBytes = static_cast<size_t>(K::smem(p.m));
      config.stream = stream;
      cudaLaunchAttribute attrs[2]{};
      config.attrs = attrs;
      config.numAttrs = 0;
      if (decode_tuning().pdl) {
        attrs[config.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attrs[config.numAttrs].val.programmaticStreamSerializationAllowed = 1;
        ++config.numAttrs;
      }
      if constexpr ((K::kAltBits & kPair) != 0) {  // session 8: clusters of 2 CTAs
        attrs[config.numAttrs].id = cudaLaunchAttributeClusterDimension;
        attrs[config.numAttrs].val.clusterDim.x = 2;
        attrs[config.numAttrs].val.clusterDim.y = 1;
        attrs[config.numAttrs].val.clusterDim.z = 1;
        ++config.numAttrs;
      }
      const cudaError_t e = cudaLaunchKernelEx(&config, K::fn(), p);
      const cudaError_t last = cudaGetLastError();
      return e != cudaSuccess ? e : last;
    };
    // kPair (session 8): only with an even CTA count whose clusters of 2 all fit at once (the
    // joins wait for early CTAs); else the lean kernel, the same plan.
    if constexpr ((kTable & kPair) != 0) {
      using KP = Kernel<kCode, kVnm, kNTiles, O, kFixedSpc, kTable>;
      if (p.ctas % 2 != 0 || !clusters_fit<KP>(p)) {
        constexpr int kLeanAlt = kTable & ~kPair;
        if constexpr (std::is_same_v<O, __half> && kNTiles == 1 &&
                      (kCode == CodeType::Codebook4 || (kCode == CodeType::Int8 && kFixedSpc))) {
          if (p.timeline)
            return run(Kernel<kCode, kVnm, kNTiles, O, kFixedSpc, kLeanAlt | kTimeline>{});
        }
        return run(Kernel<kCode, kVnm, kNTiles, O, kFixedSpc, kLeanAlt>{});
      }
    }
    // The timeline twin (compressed_decode_timeline): fp16 output, m <= 8, the lean kernels of
    // int8 (groups of 128) and codebook4 only (codebook4 with the default selectors or 33's).
    constexpr int kCb4 = kTable & kCb4Bits;
    if constexpr (std::is_same_v<O, __half> && !kVnm && kNTiles == 1 && (kTable & kLean) != 0 &&
                  (kTable & (kTableMask | kSteps16)) == 0 &&
                  (kCb4 == 0 || kCb4 == kCb4DefaultBits) &&
                  (kCode == CodeType::Codebook4 || (kCode == CodeType::Int8 && kFixedSpc))) {
      if (p.timeline)
        return run(Kernel<kCode, kVnm, kNTiles, O, kFixedSpc, kTable | kTimeline>{});
    }
    return run(Kernel<kCode, kVnm, kNTiles, O, kFixedSpc, kTable>{});
  };
  if (y_type == ElemType::F32) return go(float{});
  if (y_type == ElemType::F16) return go(__half{});
  return cudaErrorInvalidValue;
}

// all_resident: every CTA of the launch fits at once (the tagged fix-up needs it); ksteps: the
// weights' chunk length.
template <CodeType kCode, bool kVnm, int kNTiles>
cudaError_t launch(const Params& p, ElemType y_type, cudaStream_t stream, int ksteps,
                   bool all_resident) {
  if constexpr (kCode == CodeType::Codebook4) {  // no scales
    return with_alt<kCode, kVnm, kNTiles>(
        [&](auto alt) {
          return launch_spc<kCode, kVnm, kNTiles, false, decltype(alt)::value>(p, y_type, stream);
        },
        ksteps, all_resident);
  } else {
    return with_alt<kCode, kVnm, kNTiles>(
        [&](auto alt) {
          constexpr int kA = decltype(alt)::value;
          if (p.spc == Geo<kCode, kVnm, kNTiles, kA>::kSteps / 8)  // groups of 128
            return launch_spc<kCode, kVnm, kNTiles, true, kA>(p, y_type, stream);
          // the run-3 variants only for groups of 128: the lean kernel otherwise
          return launch_spc<kCode, kVnm, kNTiles, false, (kA & ~kVariantBits)>(p, y_type, stream);
        },
        ksteps, all_resident);
  }
}

template <CodeType kCode>
cudaError_t launch_code(const Params& p, bool vnm, ElemType y_type, cudaStream_t stream,
                        int ksteps, bool all_resident) {
  if (vnm)
    return p.m <= 8 ? launch<kCode, true, 1>(p, y_type, stream, ksteps, all_resident)
                    : launch<kCode, true, 2>(p, y_type, stream, ksteps, all_resident);
  return p.m <= 8 ? launch<kCode, false, 1>(p, y_type, stream, ksteps, all_resident)
                  : launch<kCode, false, 2>(p, y_type, stream, ksteps, all_resident);
}

// compressed_decode_timeline: where the next launch writes its per-CTA stamps (nullptr: none).
unsigned long long*& timeline_out() {
  static unsigned long long* out = nullptr;
  return out;
}

bool valid(const CompressedWeights& w) {
  if (w.rows <= 0 || w.cols <= 0 || w.rows_padded % kRowTile != 0 || w.kchunks <= 0) return false;
  if (!w.tiles) return false;
  if (w.code == CodeType::F16 || !compressed_ksteps_supported(w.vnm, w.code, w.ksteps))
    return false;
  if (w.code == CodeType::Codebook4) {
    if (!w.books) return false;
  } else if (w.scales_per_chunk * 8 != w.ksteps && w.scales_per_chunk * 4 != w.ksteps &&
             w.scales_per_chunk * 2 != w.ksteps) {  // groups of 128, 64, 32
    return false;
  }
  if (w.vnm && ((w.v != 64 && w.v != 128) || w.m < 4 || w.m > 256 || !w.columns ||
                w.blocks_padded != w.kchunks * 8 * w.ksteps))
    return false;
  if (!w.vnm && w.kchunks * w.ksteps * 32 < w.cols) return false;
  return true;
}

int64_t row_groups_of(const CompressedWeights& w) {
  return w.rows_padded / (warps_for(w.vnm) * 16);
}

// Whether with_alt picks the wide kernels (kWide) for these weights.
bool wide_plan(const CompressedWeights& w) {
  return !w.vnm && loop_variant() == kWideVariant &&
         (w.code == CodeType::Int4 || (w.code == CodeType::Codebook4 && table_steps() == 0));
}
// The stream-K plan's row groups and rows per group: pairs of 256 rows for the wide kernels.
int64_t plan_groups(const CompressedWeights& w) {
  const int64_t g = row_groups_of(w);
  return wide_plan(w) ? (g + 1) / 2 : g;
}
int plan_rows(const CompressedWeights& w) { return wide_plan(w) ? 256 : warps_for(w.vnm) * 16; }

}  // namespace

namespace detail {
void set_codebook_table_steps(int steps) { table_steps() = steps; }
int codebook_table_steps() { return table_steps(); }
void set_compressed_variant(int variant) {
  loop_variant() = known_variant(variant) ? variant : kDefaultVariant;
}
int compressed_variant() { return loop_variant(); }

PairGroups compressed_pair_groups(const CompressedWeights& w, int64_t m, int ctas) {
  PairGroups out;
  if (w.bitmap || w.vnm || !valid(w) || m < 1 || m > kDecodeMaxM) return out;
  const int64_t units = plan_groups(w) * w.kchunks;
  const int resident_ctas = resident(w.code, w.vnm, w.ksteps, m);
  out.ctas = plan_ctas(ctas, units, resident_ctas);
  if (units * (int64_t{out.ctas} + 1) < (int64_t{1} << 31)) {
    const PairCounts n = pair_counts(PairPlan{static_cast<uint32_t>(units),
                                              static_cast<uint32_t>(w.kchunks),
                                              static_cast<uint32_t>(out.ctas)});
    out.single = n.single;
    out.pair = n.pair;
    out.early = n.early;
    out.late = n.late;
  }
  const bool codes = w.ksteps != compressed_ksteps(w.vnm, w.code) ? false  // no pair variant
                     : w.code == CodeType::Codebook4               ? table_steps() == 0
                     : w.code == CodeType::Int8    ? w.scales_per_chunk * 8 == w.ksteps
                                                   : false;
  out.taken = m <= 8 && codes && out.ctas <= resident_ctas &&
              ((loop_variant() == kPairVariant && pair_plan_ok(units, w.kchunks, out.ctas)) ||
               (loop_variant() == kPairAllVariant && pair_plan_fits(units, out.ctas)));
  if (out.taken) {  // the launch's own check: p.ctas / 2 clusters of 2 fit at once
    Params p{};
    p.m = static_cast<int>(m);
    p.ctas = out.ctas;
    out.taken = w.code == CodeType::Int8
                    ? clusters_fit<Kernel<CodeType::Int8, false, 1, __half, true,
                                          kLean | kInt8Stages3 | kPair>>(p)
                    : clusters_fit<Kernel<CodeType::Codebook4, false, 1, __half, false,
                                          kLean | kPair>>(p);
  }
  return out;
}

std::vector<unsigned long long> compressed_decode_timeline(const CompressedWeights& w,
                                                           const GemmProblem& pr,
                                                           cudaStream_t stream, float* event_us,
                                                           const CompressedWeights* before) {
  const bool twin = !w.bitmap && !w.vnm && valid(w) && pr.m >= 1 && pr.m <= 8 &&
                    w.ksteps == compressed_ksteps(w.vnm, w.code);  // no 16-step int8 twin
  const int64_t units = twin ? plan_groups(w) * w.kchunks : 1;
  const int ctas = twin ? plan_ctas(pr.ctas, units, resident(w.code, w.vnm, w.ksteps, pr.m)) : 0;
  const size_t words = static_cast<size_t>(ctas) * kTimelineWords;
  DeviceBuffer buf(std::max<size_t>(words, 1) * sizeof(unsigned long long));
  check_cuda(cudaMemsetAsync(buf.data(), 0, buf.bytes(), stream), "timeline: zero");
  cudaEvent_t ev[2];
  for (cudaEvent_t& x : ev) check_cuda(cudaEventCreate(&x), "timeline: event");
  check_cuda(cudaStreamSynchronize(stream), "timeline: idle stream");
  // As in the benchmark's per-call timing, the timed launch queues behind another call; y is
  // poisoned in between, so that what it holds afterwards is the timeline call's own product.
  if (before) check_cuda(compressed_decode(*before, pr, stream), "timeline: call before");
  const size_t y_elem = pr.y_type == ElemType::F32 ? 4 : 2;
  check_cuda(cudaMemsetAsync(pr.y, 0xff, static_cast<size_t>(pr.m) * pr.ldy * y_elem, stream),
             "timeline: poison y");
  timeline_out() = twin ? static_cast<unsigned long long*>(buf.data()) : nullptr;
  check_cuda(cudaEventRecord(ev[0], stream), "timeline: event");
  const cudaError_t e = compressed_decode(w, pr, stream);
  timeline_out() = nullptr;
  check_cuda(e, "timeline: compressed decode");
  check_cuda(cudaEventRecord(ev[1], stream), "timeline: event");
  check_cuda(cudaStreamSynchronize(stream), "timeline: compressed decode");
  float ms = 0;
  check_cuda(cudaEventElapsedTime(&ms, ev[0], ev[1]), "timeline: event");
  if (event_us) *event_us = ms * 1000.0f;
  for (cudaEvent_t& x : ev) cudaEventDestroy(x);
  std::vector<unsigned long long> out(words);
  if (words > 0)
    check_cuda(cudaMemcpy(out.data(), buf.data(), words * sizeof(unsigned long long),
                          cudaMemcpyDeviceToHost),
               "timeline: download");
  return out;
}
}  // namespace detail

size_t compressed_workspace_bytes(const CompressedWeights& w, int64_t m, int ctas) {
  if (w.bitmap) return bitmap_workspace_bytes(w, m, ctas);
  const int64_t groups = plan_groups(w);
  const int c = plan_ctas(ctas, groups * w.kchunks, resident(w.code, w.vnm, w.ksteps, m));
  return workspace_for(groups, c, plan_rows(w));
}

cudaError_t compressed_decode(const CompressedWeights& w, const GemmProblem& pr,
                              cudaStream_t stream) {
  if (w.bitmap) return bitmap_decode(w, pr, stream);
  if (!valid(w)) return cudaErrorInvalidValue;
  if (pr.m < 1 || pr.m > kDecodeMaxM || !pr.x || !pr.y) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (pr.y_type != ElemType::F32 && pr.y_type != ElemType::F16) return cudaErrorInvalidValue;
  Params p{};
  p.tiles = static_cast<const unsigned char*>(w.tiles);
  p.spc = w.code == CodeType::Codebook4 ? 0 : w.scales_per_chunk;
  p.slot_bytes = compressed_slot_bytes(w.code, w.ksteps, p.spc);
  p.books = reinterpret_cast<const uint4*>(w.books);
  p.columns = w.columns;
  p.x = pr.x;
  p.ldx = pr.ldx;
  p.m = static_cast<int>(pr.m);
  p.cols = w.cols;
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.rows = w.rows;
  p.kchunks = w.kchunks;
  const int64_t groups = plan_groups(w);
  p.units = groups * w.kchunks;
  p.tile_groups = row_groups_of(w);
  const int resident_ctas = resident(w.code, w.vnm, w.ksteps, pr.m);
  p.ctas = plan_ctas(pr.ctas, p.units, resident_ctas);
  // variant 7 needs every CTA resident; variant 20 (kPair) also a plan pair_plan_ok accepts,
  // variant 21 one that pair_plan_fits
  const bool all_resident =
      p.ctas <= resident_ctas &&
      (loop_variant() != kPairVariant || pair_plan_ok(p.units, p.kchunks, p.ctas)) &&
      (loop_variant() != kPairAllVariant || pair_plan_fits(p.units, p.ctas));
  p.timeline = timeline_out();
  p.book_rows = w.per_tensor_book ? 0 : 1;
  p.v = w.vnm ? w.v : 0;
  p.bm = w.m;
  p.blocks_padded = w.blocks_padded;
  const int rows_cta = plan_rows(w);
  if (!pr.workspace || pr.workspace_bytes < workspace_for(groups, p.ctas, rows_cta))
    return cudaErrorInvalidValue;
  p.counters = static_cast<unsigned*>(pr.workspace);
  p.partials = reinterpret_cast<float*>(static_cast<char*>(pr.workspace) + counters_bytes(groups));
  switch (w.code) {
    case CodeType::Int8:
      return launch_code<CodeType::Int8>(p, w.vnm, pr.y_type, stream, w.ksteps, all_resident);
    case CodeType::Int4:
      return launch_code<CodeType::Int4>(p, w.vnm, pr.y_type, stream, w.ksteps, all_resident);
    case CodeType::Codebook4:
      return launch_code<CodeType::Codebook4>(p, w.vnm, pr.y_type, stream, w.ksteps, all_resident);
    case CodeType::F16:
      break;
  }
  return cudaErrorInvalidValue;
}

DeviceCompressed upload(const CompressedTiled& t) {
  const bool ok =
      t.bitmap ? t.warps == kBitmapWarps &&
                     static_cast<int64_t>(t.offsets.size()) == t.rows_padded / 16 * t.kchunks + 1 &&
                     int64_t{t.offsets.back()} * 16 == static_cast<int64_t>(t.tiles.size())
               : t.warps == warps_for(t.vnm) && compressed_ksteps_supported(t.vnm, t.code, t.ksteps) &&
                     static_cast<int64_t>(t.tiles.size()) ==
                         t.rows_padded / 16 * t.kchunks * t.slot_bytes();
  if (!ok)
    fail("upload: compressed tiling [{}, {}] does not match the kernels' layout", t.rows, t.cols);
  DeviceCompressed d;
  auto put = [](DeviceBuffer& buf, const void* data, size_t bytes) {
    if (bytes == 0) return;
    buf = DeviceBuffer(bytes);
    buf.upload(data, bytes);
  };
  put(d.tiles, t.tiles.data(), t.tiles.size());
  put(d.books, t.books.data(), t.books.size());
  put(d.columns, t.columns.data(), t.columns.size() * 4);
  put(d.offsets, t.offsets.data(), t.offsets.size() * 4);
  CompressedWeights& w = d.weights;
  w.tiles = d.tiles.data();
  w.books = static_cast<const uint8_t*>(d.books.data());
  w.columns = static_cast<const uint32_t*>(d.columns.data());
  w.offsets = static_cast<const uint32_t*>(d.offsets.data());
  w.max_slot_bytes = t.max_slot_bytes;
  w.bitmap = t.bitmap;
  w.ksteps = t.ksteps;
  w.rows = t.rows;
  w.cols = t.cols;
  w.rows_padded = t.rows_padded;
  w.kchunks = t.kchunks;
  w.blocks_padded = t.blocks_padded;
  w.vnm = t.vnm;
  w.v = t.v;
  w.m = t.m;
  w.code = t.code;
  w.scales_per_chunk = t.scales_per_chunk;
  w.per_tensor_book = t.per_tensor_book;
  return d;
}

}  // namespace sparsa::cuda
