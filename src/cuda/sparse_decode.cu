// Decode path, m = 1..16 tokens: Y[m, N] = X[m, K] * W[N, K]^T with W packed 2:4 or V:2:M.
//
// Memory-bound by design: the packed weights are read exactly once, with 16-byte copies (the
// GPU tiling puts each lane's A fragment for one MMA in one uint4), and the arithmetic runs on
// the sparse tensor cores with the weight rows on the MMA's M side and the tokens on its N side
// (one or two n8 tiles). A CTA is kWarps warps = 16 * kWarps weight rows (a "row group"; for
// V:2:M one column set per CTA row group, except two for 64:2:8 at m > 8): 64 rows, except V:2:M
// at m > 8 with V >= 128 (or V = 64, M = 8), which takes 128 rows (8 warps) so one gather of X
// serves twice the rows.
//
// Work is split stream-K style: the (row group, K chunk) units, row-group-major, are divided
// evenly over as many CTAs as fit on the GPU at once, so every SM streams the same number of
// bytes and there is no tail wave. A CTA that covers a whole row group writes Y directly; row
// groups shared by several CTAs are combined by the last CTA to arrive (partials in the
// workspace, one counter per row group, summed in CTA order: deterministic; the reducer resets
// the counter, so the next call needs no memset).
//
// Per warp, a cp.async ring of kStages chunks (8 k-steps of values + metadata, 4.5 KB) keeps
// three chunks in flight. X: for 2:4 each chunk's 256 columns of the m token rows ride in the
// same ring (zero-filled past m and K). For V:2:M at m <= 8 (when two CTAs still fit on an SM)
// the unit's dense X (m rows x 64 M columns) and its 64 column words ride in the ring too, one
// unit ahead of the weights, and are gathered from shared memory into a 2-slot tile; otherwise
// the 4 kept columns of each block are gathered from global memory into registers two units
// ahead (for M = 8 and 16 at m > 8 as whole blocks with 16-byte loads, v10). Shared rows of the
// tiles are padded by 16 bytes so ldmatrix is conflict-free.
//
// Versions (H100, numbers in docs/kernels-gpu.md):
//   v1  register double-buffered weights (one chunk ahead), synchronous X staging, fixed K
//       splits with a last-CTA reduction: 2:4 m=1 at 2.1-2.3 TB/s.
//   v2  per-warp cp.async ring (3 chunks ahead): no better — ncu showed 65% of DRAM peak lost
//       to the tail wave (448 CTAs over 264 slots) and per-CTA ramp-up; V:2:M m=16 stalled on
//       the global gather.
//   v3  stream-K over resident CTAs, gather prefetched a unit ahead: slower than v2 (every
//       thread's __threadfence at a partial flush drained its cp.async ring; int64 divisions
//       per unit and per reduced element).
//   v4  v3 with one release/acquire atomic per flush (after a barrier), unit indices advanced
//       incrementally, reduction slots precomputed: close to v2 at its best split.
//   v5  default CTA count = row groups x a whole split (reproduces v2's best splits inside the
//       stream-K kernel), gather column lookups hoisted. Full run: 2:4 m=1 at 2.75 TB/s on the
//       large shapes, but V:2:M m=1 at <= 2.1 TB/s: its gather, loaded one unit ahead and stored
//       right after a short unit, still exposed L2 latency.
//   v6  V:2:M gather two units ahead (3 X slots, stored after the next barrier): +0.02-0.13x on
//       the decode medians; V:2:M still <= 2.3 TB/s.
//   v7  (a) V:2:M dense X + column words staged by cp.async in the weight ring and
//       gathered from shared memory (m <= 8): 128:2:16 m=1 on 28672 x 8192 41.0 -> 28.1 us
//       (2.37 TB/s); at m = 16 the staged ring (157-222 KB) leaves one CTA per SM and measured
//       slower (87.6 vs 61.8 us), so m > 8 keeps the register gather; (b) fix-up: all partial
//       loads of up to 4 CTAs issued before the adds (v6 summed one L2 load at a time): 2:4 m=16
//       4096^2 18.3 -> 15.4 us; (c) 8-warp CTAs for V >= 128 at m > 8: 128:2:16 m=16 on
//       8192 x 28672 57.6 -> 53.2 us, on 4096 x 14336 25.2 -> 20.7 us.
//   v8  programmatic dependent launch (weights of the first chunks issued before
//       griddepcontrol.wait, X after): graph of 20 calls 1.4-5 us a call faster; split fix-up
//       moved to split_fixup.cuh. A deeper register gather (loaded a unit earlier) changed
//       nothing and was dropped.
//   v9  the register-gather path caps its default CTA count at the resident CTAs
//       (64:2:8 m=16 28672 x 8192: 108.4 -> 95.7 us per call).
//   v10 this file: (a) at m > 8 with M = 8 (or M = 16 on 8-warp CTAs) the register gather loads
//       whole blocks of X with 16-byte loads and picks the kept columns with byte permutes:
//       64:2:8 m=16 28672 x 8192 92.4 -> 60.3 us, 128:2:16 47.6 -> 37.7 us (m = 1: 50.1, 29.0);
//       (b) 64:2:8 at m > 8 on 8-warp CTAs, two column sets sharing each load: no change;
//       (c) chunks inside K load without per-load bounds checks: 128:2:16 m=16 -2..-4%.
//   v11 split fix-up through thread-block clusters, all-resident stream-K on every path, lean
//       2:4 X issue.
//   v12 lean wide gather: no per-unit division or 64-bit source math, byte-permute selectors by
//       one multiply per set; SASS per loop iteration of the 64:2:8 m=16 kernel 385 -> 300
//       instructions (v11's wide gather, kept beside it until session 6, removed).
//   v13 tagged workspace fix-up (decode_tuning().tagged_fixup, split_fixup.cuh): the CTAs after a
//       split group's first publish tagged partials and go on; the first CTA waits for the tags
//       and sums in CTA order. No fence, atomic or barrier at the end of a split CTA.
//   session 7: plans only (plan_for; the kernels are v13's): whole-group V:2:M plans that spill a
//       partial second wave run one all-resident stream-K wave (`fill`; 128:2:16 11008 x 4096
//       m=1 graph 11.0 -> 7.9 us), and stream-K plans run on the fewest CTAs with the same most
//       units per CTA (`trim`). 32-row CTAs for the N = 4096 splits and stream-K over idle SMs
//       measured slower and are not kept.
//   session 8 / 8b: K-split CTAs at m <= 8 (16 rows; 32 rows for staged V:2:M on long K).
//   session 10: 32-row K-split CTAs at m = 9..16 on the wide gather (M = 8), <= 2 units of 4
//       chunks only (`ksplit_m16`; 64:2:8 4096 x 4096 m = 16 graph 8.17 -> 6.75 us; slower on
//       long K).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "cuda/decode_tuning.h"
#include "cuda/mma_sp.cuh"
#include "cuda/nm24_layout.cuh"
#include "cuda/split_fixup.cuh"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {

namespace {
bool env_switch(const char* name, bool fallback) {
  const char* env = std::getenv(name);
  return env ? std::strcmp(env, "0") != 0 : fallback;
}
std::atomic<bool> g_pdl = env_switch("SPARSA_DECODE_PDL", DecodeTuning{}.pdl);
std::atomic<bool> g_wide = env_switch("SPARSA_DECODE_WIDE", DecodeTuning{}.wide_gather);
std::atomic<bool> g_two_sets = env_switch("SPARSA_DECODE_TWO_SETS", DecodeTuning{}.two_sets);
std::atomic<bool> g_cluster = env_switch("SPARSA_DECODE_CLUSTER", DecodeTuning{}.cluster);
std::atomic<bool> g_cap = env_switch("SPARSA_DECODE_CAP", DecodeTuning{}.cap_waves);
std::atomic<bool> g_shrink = env_switch("SPARSA_DECODE_SHRINK", DecodeTuning{}.cluster_shrink);
std::atomic<bool> g_tagged = env_switch("SPARSA_DECODE_TAGGED", DecodeTuning{}.tagged_fixup);
std::atomic<bool> g_fill = env_switch("SPARSA_DECODE_FILL", DecodeTuning{}.fill);
std::atomic<bool> g_trim = env_switch("SPARSA_DECODE_TRIM", DecodeTuning{}.trim);
std::atomic<bool> g_ksplit = env_switch("SPARSA_DECODE_KSPLIT", DecodeTuning{}.ksplit);
std::atomic<bool> g_ksplit_long =
    env_switch("SPARSA_DECODE_KSPLIT_LONG", DecodeTuning{}.ksplit_long);
std::atomic<bool> g_ksplit32 = env_switch("SPARSA_DECODE_KSPLIT32", DecodeTuning{}.ksplit32);
std::atomic<bool> g_ksplit_m16 =
    env_switch("SPARSA_DECODE_KSPLIT_M16", DecodeTuning{}.ksplit_m16);
std::atomic<bool> g_ktail = env_switch("SPARSA_DECODE_KTAIL", DecodeTuning{}.ktail);
std::atomic<bool> g_ktail_early =
    env_switch("SPARSA_DECODE_KTAIL_EARLY", DecodeTuning{}.ktail_early);
std::atomic<bool> g_ksplit_multi =
    env_switch("SPARSA_DECODE_KSPLIT_MULTI", DecodeTuning{}.ksplit_multi);
std::atomic<bool> g_prologue_one =
    env_switch("SPARSA_DECODE_PROLOGUE_ONE", DecodeTuning{}.prologue_one);
std::atomic<int> g_prologue_units{0};
std::atomic<bool> g_ksplit32_multi =
    env_switch("SPARSA_DECODE_KSPLIT32_MULTI", DecodeTuning{}.ksplit32_multi);
std::atomic<unsigned long long> g_cluster_launches{0};
std::atomic<unsigned long long> g_ktail_launches{0};
std::atomic<unsigned long long> g_ksplit_launches{0};
std::atomic<unsigned long long*> g_timeline{nullptr};
}  // namespace

void set_decode_timeline(unsigned long long* device_buffer) {
  g_timeline.store(device_buffer, std::memory_order_relaxed);
}

unsigned long long decode_cluster_launches() {
  return g_cluster_launches.load(std::memory_order_relaxed);
}

unsigned long long decode_ksplit_launches() {
  return g_ksplit_launches.load(std::memory_order_relaxed);
}

unsigned long long decode_ktail_launches() {
  return g_ktail_launches.load(std::memory_order_relaxed);
}

DecodeTuning decode_tuning() {
  DecodeTuning t;
  t.pdl = g_pdl.load(std::memory_order_relaxed);
  t.wide_gather = g_wide.load(std::memory_order_relaxed);
  t.two_sets = g_two_sets.load(std::memory_order_relaxed);
  t.cluster = g_cluster.load(std::memory_order_relaxed);
  t.cap_waves = g_cap.load(std::memory_order_relaxed);
  t.cluster_shrink = g_shrink.load(std::memory_order_relaxed);
  t.tagged_fixup = g_tagged.load(std::memory_order_relaxed);
  t.fill = g_fill.load(std::memory_order_relaxed);
  t.trim = g_trim.load(std::memory_order_relaxed);
  t.ksplit = g_ksplit.load(std::memory_order_relaxed);
  t.ksplit_long = g_ksplit_long.load(std::memory_order_relaxed);
  t.ksplit32 = g_ksplit32.load(std::memory_order_relaxed);
  t.ksplit_m16 = g_ksplit_m16.load(std::memory_order_relaxed);
  t.ktail = g_ktail.load(std::memory_order_relaxed);
  t.ktail_early = g_ktail_early.load(std::memory_order_relaxed);
  t.ksplit_multi = g_ksplit_multi.load(std::memory_order_relaxed);
  t.prologue_one = g_prologue_one.load(std::memory_order_relaxed);
  t.prologue_units = g_prologue_units.load(std::memory_order_relaxed);
  t.ksplit32_multi = g_ksplit32_multi.load(std::memory_order_relaxed);
  return t;
}
void set_decode_tuning(const DecodeTuning& tuning) {
  g_pdl.store(tuning.pdl, std::memory_order_relaxed);
  g_wide.store(tuning.wide_gather, std::memory_order_relaxed);
  g_two_sets.store(tuning.two_sets, std::memory_order_relaxed);
  g_cluster.store(tuning.cluster, std::memory_order_relaxed);
  g_cap.store(tuning.cap_waves, std::memory_order_relaxed);
  g_shrink.store(tuning.cluster_shrink, std::memory_order_relaxed);
  g_tagged.store(tuning.tagged_fixup, std::memory_order_relaxed);
  g_fill.store(tuning.fill, std::memory_order_relaxed);
  g_trim.store(tuning.trim, std::memory_order_relaxed);
  g_ksplit.store(tuning.ksplit, std::memory_order_relaxed);
  g_ksplit_long.store(tuning.ksplit_long, std::memory_order_relaxed);
  g_ksplit32.store(tuning.ksplit32, std::memory_order_relaxed);
  g_ksplit_m16.store(tuning.ksplit_m16, std::memory_order_relaxed);
  g_ktail.store(tuning.ktail, std::memory_order_relaxed);
  g_ktail_early.store(tuning.ktail_early, std::memory_order_relaxed);
  g_ksplit_multi.store(tuning.ksplit_multi, std::memory_order_relaxed);
  g_prologue_one.store(tuning.prologue_one, std::memory_order_relaxed);
  g_prologue_units.store(tuning.prologue_units, std::memory_order_relaxed);
  g_ksplit32_multi.store(tuning.ksplit32_multi, std::memory_order_relaxed);
}

namespace {

using namespace detail;

constexpr int kChunkCols = 256;                 // virtual K per chunk (8 k-steps of 32)
constexpr int kStride = kChunkCols + 8;         // smem row stride in elements (+16 B)
constexpr int kStages = 4;                      // chunks per warp in the cp.async ring
constexpr int kWarpChunkBytes = 8 * 512 + 512;  // one chunk: 8 k-steps of values + metadata

struct DecodeParams {
  const uint4* values;      // tiled values (Nm24K: values_k)
  const uint4* meta;        // tiled metadata
  const uint32_t* columns;  // V:2:M column offsets [row_groups_padded][blocks_padded]
  const void* x;
  int64_t ldx;
  int m;
  int64_t cols;  // K
  void* y;
  int64_t ldy;
  int64_t rows;
  int64_t ksteps;   // k-steps per row tile
  int64_t kchunks;  // chunks per row tile (KC); K-split CTAs: units per row group, KC / 4 rounded up
  int64_t kc_real;  // KC
  int64_t units;    // row groups * kchunks
  int ctas;         // gridDim.x
  int v, bm;        // V:2:M: V and M (block width)
  int64_t blocks_padded;
  float* partials;     // [2 * ctas][16 tokens][rows per CTA]
  unsigned* counters;  // [row groups]
  int cluster;         // > 1: clusters of this many CTAs split each row group (v11)
  bool tagged;         // workspace fix-up by tagged partials (v13; all CTAs resident)
  bool planned;        // ctas came from the default plan (a cluster launch may shrink it)
  int ksplit;          // > 1: 16-row CTAs whose ksplit warps split K (session 8)
  unsigned long long* timeline;  // diagnostics (set_decode_timeline), normally null
  int64_t kc_wrap;     // a CTA's range goes on at chunk 0 of the next group after this chunk:
                       // kchunks, or ktail_head (ktail owners start above it and never wrap)
  int ktail_head;      // > 0: owner / helper plan (session 11): units of each group's head
  int ktail_helpers;   // helper CTAs (blocks 0 .. ktail_helpers - 1; then one owner per group)
  bool ktail_early;    // owners at m <= 8 load their helpers' words before their last unit
  int pre_units;       // units whose weights are issued before the PDL wait (1..kStages - 1)
};

__device__ __forceinline__ void timeline_stamp(const DecodeParams& p, int k) {
  if (p.timeline != nullptr && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    p.timeline[blockIdx.x * kTimelineStamps + k] = t;
  }
}

// Register-gather V:2:M keeps 3 gathered X slots of kSets tiles (one per column set).
template <bool kVnm, int kWarps, int kNTiles, int kSets = 1>
constexpr int decode_smem_bytes() {
  constexpr int x_bytes = kNTiles * 8 * kStride * 2;
  return kStages * kWarps * kWarpChunkBytes + (kVnm ? 3 * kSets : kStages) * x_bytes;
}

// V:2:M with the dense X staged (v7): the weight ring, two gathered tiles, then per ring slot
// the unit's 64 column words (256 B) and its dense X chunk (m rows of 64 * M columns).
constexpr int kColsBytes = 64 * 4;
template <int kWarps, int kNTiles>
constexpr int staged_fixed_bytes() {
  return kStages * kWarps * kWarpChunkBytes + 2 * kNTiles * 8 * kStride * 2 + kStages * kColsBytes;
}
template <int kWarps, int kNTiles>
int64_t staged_smem_bytes(int64_t m, int bm) {
  return staged_fixed_bytes<kWarps, kNTiles>() + int64_t{kStages} * m * 64 * bm * 2;
}
// The dynamic shared memory a staged launch may use: sm_90's 227 KB opt-in limit less the
// kernel's static shared memory (s_last, ~1 KB) and a margin.
constexpr int kMaxSmem = 225 * 1024;

// K-split CTAs (session 8, decode_tuning().ksplit): 4 warps on one 16-row tile, warp w computing
// chunks 4 j + w. Per ring slot the 4 chunks' X (2:4) or column words and dense X (V:2:M), the
// X tiles with only m token rows (ldmatrix rows >= m alias row m - 1: those MMA columns are
// tokens >= m, never written). Weight ring as the 4-warp kernels.
// 32-row K-split CTAs (session 8b, decode_tuning().ksplit32): 8 warps, 2 row tiles x 4 K
// slices, staged V:2:M with V >= 32 (both row tiles share the column words and the gathered X).
constexpr int kKSplit = 4;
template <bool kVnm, int kWarps = kKSplit>
int64_t split_smem_bytes(int64_t m, int bm) {
  const int64_t ring = int64_t{kStages} * kWarps * kWarpChunkBytes;
  const int64_t xsub = m * kStride * 2;
  if (!kVnm) return ring + int64_t{kStages} * kKSplit * xsub;
  return ring + 2 * kKSplit * xsub + int64_t{kStages} * kKSplit * kColsBytes +
         int64_t{kStages} * m * kKSplit * 64 * bm * 2;
}
// Two CTAs per SM on sm_90 (228 KB per SM, 1 KB reserved per CTA, the static shared memory).
constexpr int64_t kSplitMaxSmem = 113 * 1024;
bool split_fits(bool vnm, int64_t m, int bm) {
  return m <= 8 && (vnm ? split_smem_bytes<true>(m, bm) : split_smem_bytes<false>(m, bm)) <=
                       kSplitMaxSmem;
}
// 32-row K-split (staged V:2:M): one CTA per SM, up to the opt-in limit.
bool split32_fits(int64_t m, int bm) {
  return m <= 8 && split_smem_bytes<true, 2 * kKSplit>(m, bm) <= kMaxSmem;
}

// 32-row K-split CTAs at m = 9..16 (session 10, decode_tuning().ksplit_m16): 8 warps (2 row
// tiles x 4 K slices) with the wide gather (M = 8); per X slot one 16-token tile per chunk of the
// unit, two slots (a unit's gather is stored one unit ahead of its MMAs; the barrier at the top
// of an iteration frees the slot of the unit before): 144 KB of weight ring + 66 KB of X tiles.
constexpr int split_wide_smem_bytes() {
  return kStages * 2 * kKSplit * kWarpChunkBytes + 2 * kKSplit * 16 * kStride * 2;
}

// 2:4: the X chunk kc of the token rows < m -> smem via cp.async (v11c). Thread t copies the 16
// bytes at column 8 (t % 32) of tokens t / 32 + r * kTokStep; rows >= m of the X ring are zeroed
// once (zero_x_rows) and never written again. Source and destination are set up once per thread
// (XIssue), so a chunk inside K costs one 64-bit add and one cp.async per copy (v10: ~48
// instructions a copy, with the bounds checks and the division of the flat index).
template <typename T, int kThreads, int kTokens>
struct XIssue {
  static constexpr int kTokStep = kThreads / 32;
  const T* src;    // token tok0, column 8 (t % 32)
  int64_t stride;  // kTokStep token rows, in elements
  uint32_t dst;    // offset of (tok0, column 8 (t % 32)) within an X slot
  int tok0, col0;
  __device__ __forceinline__ XIssue(const DecodeParams& p) {
    tok0 = static_cast<int>(threadIdx.x) / 32;
    col0 = static_cast<int>(threadIdx.x % 32) * 8;
    src = static_cast<const T*>(p.x) + tok0 * p.ldx + col0;
    stride = kTokStep * p.ldx;
    dst = static_cast<uint32_t>((tok0 * kStride + col0) * sizeof(T));
  }
  __device__ __forceinline__ void issue(uint32_t xs, const DecodeParams& p, int64_t kc) const {
    constexpr int kPer = kTokens / kTokStep;  // copies per thread and chunk
    const int64_t c0 = kc * kChunkCols;
    if (c0 + kChunkCols <= p.cols) {  // every chunk but (maybe) the last of a row
#pragma unroll
      for (int r = 0; r < kPer; ++r)
        if (tok0 + r * kTokStep < p.m)
          cp_async_16(xs + dst + r * kTokStep * kStride * sizeof(T), src + r * stride + c0, 16);
      return;
    }
    const int64_t left = p.cols - c0 - col0;  // elements of this thread's 8 left in K
    const int bytes = left >= 8 ? 16 : left > 0 ? static_cast<int>(left * 2) : 0;
#pragma unroll
    for (int r = 0; r < kPer; ++r)
      if (tok0 + r * kTokStep < p.m)
        cp_async_16(xs + dst + r * kTokStep * kStride * sizeof(T),
                    bytes ? src + r * stride + c0 : static_cast<const T*>(p.x), bytes);
  }
};

// Zeroes token rows m..kTokens-1 of `slots` X slots at xs (disjoint from what cp.async writes).
template <typename T, int kThreads, int kTokens>
__device__ __forceinline__ void zero_x_rows(unsigned char* xs, int slots, int m) {
  constexpr int kRowBytes = kStride * sizeof(T);
  constexpr int kSlotBytes = kTokens * kRowBytes;
  const int rows = kTokens - m;
  if (rows <= 0) return;
  const int per_slot = rows * kRowBytes / 16;
  for (int idx = threadIdx.x; idx < slots * per_slot; idx += kThreads) {
    const int slot = idx / per_slot, piece = idx - slot * per_slot;
    *reinterpret_cast<uint4*>(xs + slot * kSlotBytes + m * kRowBytes + piece * 16) =
        make_uint4(0, 0, 0, 0);
  }
}

// V:2:M: the gathered X of one chunk (64 blocks, 256 virtual columns; virtual column 4b + j is
// real column (block0 + b) * M + offset_j) for tokens < m, as pairs: pair idx = tok * 128 + q
// covers virtual columns 2q, 2q+1. Thread t holds pairs t + r * kThreads.
template <int kThreads, int kTokens>
struct Gather {
  static constexpr int kPairs = kTokens * 128 / kThreads;
  uint32_t v[kPairs];
};

template <typename T, int kThreads, int kTokens>
__device__ __forceinline__ void gather_load(Gather<kThreads, kTokens>& out, const DecodeParams& p,
                                            const uint32_t* columns, int64_t block0) {
  const T* x = static_cast<const T*>(p.x);
  // With 128 threads or more each thread keeps one column pair q for all its tokens.
  constexpr bool kFixedQ = kThreads % 128 == 0;
  int64_t fc0 = 0, fc1 = 0;
  if constexpr (kFixedQ) {
    const int q = threadIdx.x % 128;
    const int64_t block = block0 + (q >> 1);
    const uint32_t offsets = __ldg(columns + block) >> (16 * (q & 1));
    fc0 = block * p.bm + (offsets & 0xff);
    fc1 = block * p.bm + ((offsets >> 8) & 0xff);
  }
#pragma unroll
  for (int r = 0; r < Gather<kThreads, kTokens>::kPairs; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    const int tok = idx / 128, q = idx % 128;
    alignas(4) T pair[2] = {T(0.0f), T(0.0f)};
    if (tok < p.m) {
      int64_t c0 = fc0, c1 = fc1;
      if constexpr (!kFixedQ) {
        const int64_t block = block0 + (q >> 1);
        const uint32_t offsets = __ldg(columns + block) >> (16 * (q & 1));
        c0 = block * p.bm + (offsets & 0xff);
        c1 = block * p.bm + ((offsets >> 8) & 0xff);
      }
      const T* row = x + tok * p.ldx;
      if (c0 < p.cols) pair[0] = row[c0];
      if (c1 < p.cols) pair[1] = row[c1];
    }
    out.v[r] = *reinterpret_cast<const uint32_t*>(pair);
  }
}

template <typename T, int kThreads, int kTokens>
__device__ __forceinline__ void gather_store(T* xs, const Gather<kThreads, kTokens>& in) {
#pragma unroll
  for (int r = 0; r < Gather<kThreads, kTokens>::kPairs; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    const int tok = idx / 128, q = idx % 128;
    *reinterpret_cast<uint32_t*>(xs + tok * kStride + 2 * q) = in.v[r];
  }
}

// V:2:M with M = 8 or 16 at m > 8 (v10): the register gather loads the whole M columns of each
// (token, block) with 16-byte loads (one or two per block; no dependent load on the column word)
// and picks the 4 kept columns in registers with byte permutes when storing. Thread t owns block
// t % 64 of the chunk and tokens t / 64 + r * kTokStep. A warp's load covers 32 consecutive
// blocks of one token: 512 contiguous bytes at M = 8 (the 2-byte gather: 64 separate loads of a
// column pair per token row, each a dependent load after the column word).
// With kSets = 2 (V = 64 on 8-warp CTAs, v10b) the CTA's rows hold two column sets: each
// 16-byte load serves both, picked twice into two tiles (warps 0-3 read the first).
template <int kThreads, int kTokens, int kBm, int kSets = 1>
struct WideGather {
  static constexpr int kSegs = kBm / 8;  // 16-byte pieces per block
  static constexpr int kTokStep = kThreads / 64;
  static constexpr int kTokPer = kTokens / kTokStep;
  static_assert(kThreads % 64 == 0 && kTokens % kTokStep == 0 && (kBm == 8 || kBm == 16));
  uint4 raw[kTokPer][kSegs];
  // Per column set, the block's column word: offsets of the 4 kept columns, one byte each.
  uint32_t offsets[kSets];
};

// A chunk that ends inside K: this thread's 16-byte pieces of its token rows, row r at
// src + r * step (uint4), rows at or past m zero. No per-load bounds on K.
template <int kThreads, int kTokens, int kBm, int kSets>
__device__ __forceinline__ void load_rows_inside_k(WideGather<kThreads, kTokens, kBm, kSets>& out,
                                                   const uint4* src, int64_t step, int tok0,
                                                   int m) {
  using G = WideGather<kThreads, kTokens, kBm, kSets>;
#pragma unroll
  for (int r = 0; r < G::kTokPer; ++r) {
#pragma unroll
    for (int s = 0; s < G::kSegs; ++s) {
      out.raw[r][s] = make_uint4(0, 0, 0, 0);
      if (tok0 + r * G::kTokStep < m) out.raw[r][s] = src[r * step + s];
    }
  }
}

template <typename T, int kThreads, int kTokens, int kBm, int kSets>
__device__ __forceinline__ void gather_load(WideGather<kThreads, kTokens, kBm, kSets>& out,
                                            const DecodeParams& p, const uint32_t* columns,
                                            int64_t block0) {
  using G = WideGather<kThreads, kTokens, kBm, kSets>;
  const unsigned short* x = static_cast<const unsigned short*>(p.x);
  const int64_t block = block0 + threadIdx.x % 64;
  const int tok0 = static_cast<int>(threadIdx.x) / 64;
#pragma unroll
  for (int set = 0; set < kSets; ++set)
    out.offsets[set] = __ldg(columns + set * p.blocks_padded + block);
  // Chunks that end inside K (all but the last of a row group): one pointer, no per-load
  // bounds (v10c: the checked loop cost ~18 instructions and a branch a load).
  if ((block0 + 64) * kBm <= p.cols) {
    const uint4* src =
        reinterpret_cast<const uint4*>(x + tok0 * p.ldx + block * kBm);  // 16-byte aligned
    load_rows_inside_k(out, src, G::kTokStep * p.ldx / 8 /* in uint4 */, tok0, p.m);
    return;
  }
#pragma unroll
  for (int r = 0; r < G::kTokPer; ++r) {
    const int tok = tok0 + r * G::kTokStep;
#pragma unroll
    for (int s = 0; s < G::kSegs; ++s) {
      const int64_t col = block * kBm + s * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (tok < p.m && col < p.cols) {
        const unsigned short* src = x + tok * p.ldx + col;
        if (col + 8 <= p.cols) {
          v = *reinterpret_cast<const uint4*>(src);  // 16-byte aligned: ldx % 8 == 0, M % 8 == 0
        } else {  // the block that K ends in: element by element, zero past K
          uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
          for (int e = 0; e < 8; ++e)
            if (col + e < p.cols) w[e / 2] |= uint32_t{src[e]} << (16 * (e % 2));
          v = make_uint4(w[0], w[1], w[2], w[3]);
        }
      }
      out.raw[r][s] = v;
    }
  }
}

// Lean wide gather (v12; v11's wide gather, kept beside it as `lean_gather` off until session 6,
// is gone: measured 1-6% slower at m = 16, same bits). The SASS of v11's wide gather spent per
// unit and thread ~100 instructions in gather_load (a 64-bit division by V for the row group's
// column words, through the MUFU reciprocal, and 64-bit index math for every source; still used
// for the last chunk of a row group when it ends past K) and ~125 in its store (~25 shifts and
// masks per column set to build the byte-permute selectors), plus two 64-bit
// "i % 3" slot computations in the loop, against ~70 for the unit's 8 k-steps of MMAs. The lean
// load takes cursors advanced by one chunk per unit (set up again only at a new row group) and
// is used for chunks that end inside K; the lean store builds all four half selectors of a set
// with one multiply each (bytes of the column word in SIMD-within-a-register form).
template <int kThreads, int kTokens, int kBm, int kSets>
__device__ __forceinline__ void gather_load_lean(WideGather<kThreads, kTokens, kBm, kSets>& out,
                                                 const DecodeParams& p, const uint32_t* cols,
                                                 const unsigned short* x, int64_t step) {
#pragma unroll
  for (int set = 0; set < kSets; ++set) out.offsets[set] = __ldg(cols + set * p.blocks_padded);
  // 16-byte aligned: ldx % 8 == 0
  load_rows_inside_k(out, reinterpret_cast<const uint4*>(x), step,
                     static_cast<int>(threadIdx.x) / 64, p.m);
}

// PRMT selectors of every kept column at once. A selector that puts 16-bit half `lo` of the
// 8-byte pair (a, b) in the low half of the result and half `hi` in the high half (halves 0..3:
// a.lo, a.hi, b.lo, b.hi) is 2lo | (2lo + 1) << 4 | 2hi << 8 | (2hi + 1) << 12. Byte j of the
// column word is c_j < 16; the selector byte for half (c & 3) is 34 (c & 3) + 0x10 (nibbles
// 2(c & 3), 2(c & 3) + 1), for the level-2/3 picks 68 bit + 0x10 (low half) or 68 bit + 0x32 (high
// half). No byte carries.
__device__ __forceinline__ uint32_t swar_sel1(uint32_t offsets) {
  return (offsets & 0x03030303u) * 34u + 0x10101010u;
}
__device__ __forceinline__ uint32_t swar_sel_bit(uint32_t offsets, int bit) {
  return ((offsets >> bit) & 0x01010101u) * 68u + 0x32103210u;
}

// The 4 kept columns of block b (column word `offsets`) of token rows tok0 + r * kTokStep, picked
// from the whole block's 16-byte pieces raw[r] by the byte-permute tree, into `tile`.
template <typename T, int kTokPer, int kTokStep, int kSegs>
__device__ __forceinline__ void store_picked(T* tile, const uint4 (&raw)[kTokPer][kSegs],
                                             uint32_t offsets, int b, int tok0) {
  const uint32_t s1 = swar_sel1(offsets), s2 = swar_sel_bit(offsets, 2);
  const uint32_t s3 = kSegs == 2 ? swar_sel_bit(offsets, 3) : 0u;
  const uint32_t sel1[2] = {s1 & 0xffffu, s1 >> 16}, sel2[2] = {s2 & 0xffffu, s2 >> 16};
  const uint32_t sel3[2] = {s3 & 0xffffu, s3 >> 16};
#pragma unroll
  for (int r = 0; r < kTokPer; ++r) {
    const int tok = tok0 + r * kTokStep;
    uint32_t out[2];
#pragma unroll
    for (int o = 0; o < 2; ++o) {
      uint32_t t[2 * kSegs];
#pragma unroll
      for (int s = 0; s < kSegs; ++s) {
        const uint4 v = raw[r][s];
        t[2 * s] = __byte_perm(v.x, v.y, sel1[o]);
        t[2 * s + 1] = __byte_perm(v.z, v.w, sel1[o]);
      }
      uint32_t u[kSegs];
#pragma unroll
      for (int s = 0; s < kSegs; ++s) u[s] = __byte_perm(t[2 * s], t[2 * s + 1], sel2[o]);
      if constexpr (kSegs == 2) {
        out[o] = __byte_perm(u[0], u[1], sel3[o]);
      } else {
        out[o] = u[0];
      }
    }
    *reinterpret_cast<uint2*>(tile + tok * kStride + 4 * b) = make_uint2(out[0], out[1]);
  }
}

template <typename T, int kThreads, int kTokens, int kBm, int kSets>
__device__ __forceinline__ void gather_store_lean(
    T* xs, const WideGather<kThreads, kTokens, kBm, kSets>& in) {
  using G = WideGather<kThreads, kTokens, kBm, kSets>;
  const int b = static_cast<int>(threadIdx.x) % 64;
  const int tok0 = static_cast<int>(threadIdx.x) / 64;
#pragma unroll
  for (int set = 0; set < kSets; ++set)
    store_picked<T, G::kTokPer, G::kTokStep, G::kSegs>(xs + set * kTokens * kStride, in.raw,
                                                       in.offsets[set], b, tok0);
}

// K-split wide gather (session 10, ksplit_m16): thread t owns block t % 64 of chunk t / 64 of
// the unit, all kTokens token rows (WideGather with one thread per block: kTokStep 1). `cols`
// and `x` point at the block's column word and at its first column in token row 0; `real` is
// the chunk's index in the row, `full` the chunks that end inside K.
template <int kTokens, int kBm>
using SplitGather = WideGather<64, kTokens, kBm, 1>;

template <int kTokens, int kBm>
__device__ __forceinline__ void gather_load_split(SplitGather<kTokens, kBm>& out,
                                                  const DecodeParams& p, const uint32_t* cols,
                                                  const unsigned short* x, int64_t real,
                                                  int64_t full) {
  using G = SplitGather<kTokens, kBm>;
  if (real < full) {  // ends inside K: no bounds per load
    out.offsets[0] = __ldg(cols);
    load_rows_inside_k(out, reinterpret_cast<const uint4*>(x), p.ldx / 8, 0, p.m);
    return;
  }
  out.offsets[0] = 0;
  if (real >= p.kc_real) {  // past the row's chunks: its warp computes nothing
#pragma unroll
    for (int tok = 0; tok < G::kTokPer; ++tok)
#pragma unroll
      for (int s = 0; s < G::kSegs; ++s) out.raw[tok][s] = make_uint4(0, 0, 0, 0);
    return;
  }
  out.offsets[0] = __ldg(cols);
  const int64_t col0 = (real * 64 + static_cast<int>(threadIdx.x) % 64) * kBm;
#pragma unroll
  for (int tok = 0; tok < G::kTokPer; ++tok) {
#pragma unroll
    for (int s = 0; s < G::kSegs; ++s) {
      const int64_t col = col0 + s * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (tok < p.m && col < p.cols) {
        const unsigned short* src = x + tok * p.ldx + s * 8;
        if (col + 8 <= p.cols) {
          v = *reinterpret_cast<const uint4*>(src);
        } else {  // the block that K ends in: element by element, zero past K
          uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
          for (int e = 0; e < 8; ++e)
            if (col + e < p.cols) w[e / 2] |= uint32_t{src[e]} << (16 * (e % 2));
          v = make_uint4(w[0], w[1], w[2], w[3]);
        }
      }
      out.raw[tok][s] = v;
    }
  }
}

// Programmatic dependent launch (sm_90): no-ops when the grid was launched without the
// attribute.
__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Kernel variants: 2:4 (X chunk in the ring; Nm24K: A from the row-major values_k, session 7),
// V:2:M gathering X from global memory into
// registers (v6; kept for M * m too large to stage), V:2:M with the dense X chunk staged by
// cp.async and gathered from shared memory (v7), V:2:M register gather with 16-byte loads of
// whole blocks for M = 8 and 16 (v10).
enum class Mode { Nm24, Nm24K, VnmGather, VnmStaged, VnmWide8, VnmWide16, VnmWide8x2 };
template <Mode kMode>
constexpr bool kIsNm24 = kMode == Mode::Nm24 || kMode == Mode::Nm24K;

template <Mode kMode>
constexpr int kWideBmOf = kMode == Mode::VnmWide8 || kMode == Mode::VnmWide8x2 ? 8
                          : kMode == Mode::VnmWide16                           ? 16
                                                                               : 0;
// Column sets per CTA: 2 for V = 64 on 8-warp CTAs (v10b), else 1.
template <Mode kMode>
constexpr int kSetsOf = kMode == Mode::VnmWide8x2 ? 2 : 1;

// kKW > 1 (session 8): K-split CTAs, 16 rows, warp w computes chunks kKW j + w of unit j
// (DecodeParams::ksplit); 2:4 and staged V:2:M at one token tile only.
// K-split CTAs (kKW > 1) run alone or in pairs per SM (shared memory bound), so they say one CTA
// per SM is enough: without it ptxas capped the 32-row staged one at 64 registers with spills
// (session 11); the other kernels keep ptxas's own choice (0: no minimum).
template <typename Elem, Mode kMode, int kWarps, int kNTiles, typename OutT, int kKW = 1>
__global__ void __launch_bounds__(kWarps * 32, kKW > 1 ? 1 : 0) decode_kernel(const DecodeParams p) {
  using T = typename Elem::T;
  constexpr bool kVnm = !kIsNm24<kMode>;
  constexpr bool kStaged = kMode == Mode::VnmStaged;
  constexpr bool kSplit = kKW > 1;
  // K-split wide (session 10): 32-row CTAs at m = 9..16, M = 8.
  constexpr bool kSplitWide = kSplit && kMode == Mode::VnmWide8;
  static_assert(!kSplit ||
                ((kWarps == kKW || (kWarps == 2 * kKW && kStaged)) && kNTiles == 1 &&
                 (kIsNm24<kMode> || kStaged)) ||
                (kSplitWide && kWarps == 2 * kKW && kNTiles == 2));
  constexpr int kWideBm = kWideBmOf<kMode>;
  constexpr bool kLeanWide = kWideBm != 0;  // v12: the wide gather runs lean
  constexpr int kSets = kSetsOf<kMode>;
  constexpr int kThreads = kWarps * 32;
  constexpr int kTokens = kNTiles * 8;
  constexpr int kRows = kWarps / kKW * 16;
  constexpr int kXBytes = kTokens * kStride * sizeof(T);
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_last;

  // Under programmatic dependent launch the next grid may start its prologue now: it waits
  // (grid_dependency_wait) for this grid's completion before touching X, Y or the workspace.
  launch_dependents();
  timeline_stamp(p, 0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // K-split: this warp's K slice (chunks kKW j + kslice) and row tile within the CTA.
  const int kslice = kSplit ? warp % kKW : 0, rtile = kSplit ? warp / kKW : 0;
  // This CTA's units: row group g, chunks kc.. up to p.kc_wrap (the launch's kchunks, or the
  // head of ktail groups: owners start above it and never wrap), then chunk 0 of the next group.
  int64_t g0, kc0, n_units;
  if constexpr (kSplit) {  // whole row tiles: one per CTA, or a contiguous run (ksplit_multi)
    const int64_t tiles = p.units / p.kchunks;
    const int64_t first = blockIdx.x * tiles / p.ctas;
    g0 = first;
    kc0 = 0;
    n_units = ((blockIdx.x + 1) * tiles / p.ctas - first) * p.kchunks;
  } else {
    cta_units(p, g0, kc0, n_units);
  }
  const int64_t u_begin = g0 * p.kchunks + kc0;  // stream-K plans

  const uint32_t base = smem_addr(smem);
  const uint32_t wring = base + warp * kWarpChunkBytes;  // slot s: + s * kWarps * kWarpChunkBytes
  const uint32_t xbase = base + kStages * kWarps * kWarpChunkBytes;
  // Staged V:2:M: after the two gathered tiles, kStages slots of column words, then kStages
  // slots of dense X (m rows of 64 * M elements each).
  constexpr uint32_t kColsOff = kStages * kWarps * kWarpChunkBytes + 2 * kXBytes;
  constexpr uint32_t kXdOff = kColsOff + kStages * kColsBytes;
  // K-split (split_smem_bytes): an X tile of one chunk holds m token rows.
  const uint32_t xsub = kSplit ? static_cast<uint32_t>(p.m * kStride * sizeof(T)) : 0u;
  const uint32_t cols_off =
      kSplit ? kStages * kWarps * kWarpChunkBytes + 2 * kKW * xsub : kColsOff;
  const uint32_t xd_off = kSplit ? cols_off + kStages * kKW * kColsBytes : kXdOff;
  const int xd_cols = kKW * 64 * p.bm;
  const uint32_t xd_slot_bytes = static_cast<uint32_t>(p.m * xd_cols) * sizeof(T);
  const int64_t kc_row = kSplit ? p.kc_real : p.kchunks;  // chunks per row tile

  // Staged V:2:M: column words and dense X of unit (g, kc) -> ring slot `slot` by cp.async,
  // zero-filled past K.
  auto issue_xd = [&](int64_t g, int64_t kc, uint32_t slot) {
    const uint32_t* csrc = p.columns + (g * kRows / p.v) * p.blocks_padded + kc * kKW * 64;
    if (threadIdx.x < kKW * kColsBytes / 16 &&
        (!kSplit || kc * kKW + static_cast<int>(threadIdx.x) / 16 < p.kc_real))
      cp_async_16(base + cols_off + slot * kKW * kColsBytes + threadIdx.x * 16,
                  csrc + threadIdx.x * 4, 16);
    const T* x = static_cast<const T*>(p.x);
    const int per_row = kKW * 8 * p.bm;  // 16-byte pieces per token row
    const int64_t col0 = kc * xd_cols;
    const uint32_t dst = base + xd_off + slot * xd_slot_bytes;
    if constexpr (kSplit) {  // per token row, no division of a flat index
      for (int tok = 0; tok < p.m; ++tok)
        for (int piece = threadIdx.x; piece < per_row; piece += kThreads) {
          const int64_t col = col0 + piece * 8;
          const int64_t left = p.cols - col;
          const int bytes = left >= 8 ? 16 : left > 0 ? static_cast<int>(left * 2) : 0;
          cp_async_16(dst + (tok * per_row + piece) * 16, bytes ? x + tok * p.ldx + col : x, bytes);
        }
    } else {
      for (int idx = threadIdx.x; idx < p.m * per_row; idx += kThreads) {
        const int tok = idx / per_row, piece = idx - tok * per_row;
        const int64_t col = col0 + piece * 8;
        const int64_t left = p.cols - col;
        const int bytes = left >= 8 ? 16 : left > 0 ? static_cast<int>(left * 2) : 0;
        cp_async_16(dst + idx * 16, bytes ? x + tok * p.ldx + col : x, bytes);
      }
    }
  };
  // Staged V:2:M: gather the 4 kept columns of each block for tokens < m from ring slot `slot`
  // into gathered tile `tile` (virtual column 4b + j = dense column b * M + offset j). A thread
  // owns kQPer column pairs q and, for each, the tokens tok0 + r * kTokStep: every load of a
  // pair is issued before its stores (a loop over m with one load pair at a time serialized
  // ~16 shared-memory round trips per unit at m = 16).
  auto gather_smem = [&](uint32_t slot, int tile) {
    constexpr int kQPer = kThreads >= 128 ? 1 : 128 / kThreads;
    constexpr int kTokStep = kThreads >= 128 ? kThreads / 128 : 1;
    constexpr int kTokPer = kTokens / kTokStep;
    const uint32_t* cols = reinterpret_cast<const uint32_t*>(smem + kColsOff + slot * kColsBytes);
    const T* xd = reinterpret_cast<const T*>(smem + kXdOff + slot * xd_slot_bytes);
    T* xs = reinterpret_cast<T*>(smem + kStages * kWarps * kWarpChunkBytes + tile * kXBytes);
    const int tok0 = kThreads >= 128 ? static_cast<int>(threadIdx.x) / 128 : 0;
#pragma unroll
    for (int j = 0; j < kQPer; ++j) {
      const int q = static_cast<int>(threadIdx.x % 128) + j * kThreads;
      const uint32_t w = cols[q >> 1] >> (16 * (q & 1));
      const T* src = xd + (q >> 1) * p.bm;
      const int c0 = w & 0xff, c1 = (w >> 8) & 0xff;
      uint32_t v[kTokPer];
#pragma unroll
      for (int r = 0; r < kTokPer; ++r) {
        const int tok = tok0 + r * kTokStep;
        if (tok < p.m) {
          alignas(4) T pair[2] = {src[tok * xd_cols + c0], src[tok * xd_cols + c1]};
          v[r] = *reinterpret_cast<const uint32_t*>(pair);
        }
      }
#pragma unroll
      for (int r = 0; r < kTokPer; ++r) {
        const int tok = tok0 + r * kTokStep;
        if (tok < p.m) *reinterpret_cast<uint32_t*>(xs + tok * kStride + 2 * q) = v[r];
      }
    }
  };
  // K-split staged V:2:M: the kKW chunks of ring slot `slot` into the m-row tiles (tile, chunk).
  // Thread t owns column pair t of every chunk. Column words of chunks past K were never copied:
  // offsets clamped below M keep those reads inside the slot (their tiles are not used).
  // Every load of the kKW chunks is issued before any store (run 1 of session 8 had a load,
  // load, store chain per chunk: ~12 dependent shared-memory round trips per unit).
  // 32-row CTAs (256 threads): thread t owns column pair t % 128 of chunks t / 128 + 2 jj.
  auto gather_split = [&](uint32_t slot, int tile) {
    static_assert(!kSplit || kThreads == 128 || kThreads == 256);
    constexpr int kTS = kThreads >= 128 ? kThreads / 128 : 1;
    constexpr int kJ = kKW >= kTS ? kKW / kTS : 1;  // chunks per thread (unused unless kSplit)
    const uint32_t* cols =
        reinterpret_cast<const uint32_t*>(smem + cols_off + slot * kKW * kColsBytes);
    const T* xd = reinterpret_cast<const T*>(smem + xd_off + slot * xd_slot_bytes);
    const int q = static_cast<int>(threadIdx.x % 128), j0 = static_cast<int>(threadIdx.x / 128);
    const int top = p.bm - 1;
    uint32_t w[kJ];
#pragma unroll
    for (int jj = 0; jj < kJ; ++jj) w[jj] = cols[(j0 + jj * kTS) * 64 + (q >> 1)] >> (16 * (q & 1));
    uint32_t v[kJ][kTokens];
#pragma unroll
    for (int jj = 0; jj < kJ; ++jj) {
      const int j = j0 + jj * kTS;
      const T* src = xd + (j * 64 + (q >> 1)) * p.bm;
      const int c0 = min(static_cast<int>(w[jj] & 0xff), top);
      const int c1 = min(static_cast<int>((w[jj] >> 8) & 0xff), top);
#pragma unroll
      for (int tok = 0; tok < kTokens; ++tok)
        if (tok < p.m) {
          alignas(4) T pair[2] = {src[tok * xd_cols + c0], src[tok * xd_cols + c1]};
          v[jj][tok] = *reinterpret_cast<const uint32_t*>(pair);
        }
    }
#pragma unroll
    for (int jj = 0; jj < kJ; ++jj) {
      const int j = j0 + jj * kTS;
      T* xs = reinterpret_cast<T*>(smem + kStages * kWarps * kWarpChunkBytes +
                                   (tile * kKW + j) * xsub);
#pragma unroll
      for (int tok = 0; tok < kTokens; ++tok)
        if (tok < p.m) *reinterpret_cast<uint32_t*>(xs + tok * kStride + 2 * q) = v[jj][tok];
    }
  };

  // Unit i of this CTA: row group g, chunk kc. Ring slot i % kStages; one commit group per unit.
  // issue() is called for i = 0, 1, 2, ... in order, so (g, kc) advance without divisions.
  // Staged V:2:M: group i also carries the dense X of unit i + 1 (group 0: units 0 and 1), so
  // it can be gathered one unit ahead.
  int64_t issue_g = g0, issue_kc = kc0;
  int64_t xd_g = issue_g, xd_kc = issue_kc, xd_next = 0;
  auto issue_xd_next = [&]() {
    if (xd_next < n_units) {
      issue_xd(xd_g, xd_kc, static_cast<uint32_t>(xd_next % kStages));
      if (++xd_kc == p.kc_wrap) {
        xd_kc = 0;
        ++xd_g;
      }
    }
    ++xd_next;
  };
  // The weights of unit i (they never change, so they may be read before the previous grid
  // ends); returns the unit's chunk. The sources advance by one chunk per unit and are set up
  // again only where a new row group starts (v11c).
  // Nm24K (session 7): lane l copies row l % 16, kept columns 8 (l / 16) .. + 7 of each k-step
  // from values_k into the slot where the fragment layout has its own fragment (nm24_layout.cuh).
  constexpr int kAStep = kMode == Mode::Nm24K ? kValuesKStep : 32;  // uint4 per k-step
  // K-split: kWarps / kKW row tiles per CTA; warp w's chunk of unit kc is kKW kc + w % kKW.
  auto w_sources = [&](int64_t g, int64_t kc, const uint4*& v, const uint4*& e) {
    const int64_t row_tile = kSplit ? g * (kWarps / kKW) + rtile : g * kWarps + warp;
    const int64_t kcr = kSplit ? kc * kKW + kslice : kc;
    if constexpr (kMode == Mode::Nm24K)
      v = values_k_lane(p.values, row_tile, p.ksteps * 32, lane) + kcr * 8 * kValuesKStep;
    else
      v = p.values + (row_tile * p.ksteps + kcr * 8) * 32 + lane;
    e = p.meta + (row_tile * kc_row + kcr) * 32 + lane;
  };
  const uint4 *wv, *wm;
  w_sources(issue_g, issue_kc, wv, wm);
  auto issue_w = [&](int64_t i) -> int64_t {
    if (i >= n_units) return 0;
    const int64_t kc = issue_kc;
    const uint32_t slot = wring + static_cast<uint32_t>(i % kStages) * kWarps * kWarpChunkBytes;
    if (!kSplit || kc * kKW + kslice < p.kc_real) {
#pragma unroll
      for (int s = 0; s < 8; ++s) cp_async_16(slot + (s * 32 + lane) * 16, wv + s * kAStep, 16);
      cp_async_16(slot + 8 * 512 + lane * 16, wm, 16);
    }
    if (++issue_kc == p.kc_wrap) {
      issue_kc = 0;
      w_sources(++issue_g, 0, wv, wm);
    } else {
      wv += kKW * 8 * kAStep;
      wm += kKW * 32;
    }
    return kc;
  };
  // X of unit i (2:4: its chunk; staged V:2:M: the dense X of unit i + 1), then the commit.
  const XIssue<T, kThreads, kTokens> x_issue(p);
  auto issue_x = [&](int64_t i, int64_t kc) {
    if constexpr (kIsNm24<kMode> && kSplit) {
      // K-split 2:4: thread t copies 16 bytes (column 8 (t % 32)) of chunk kKW kc + t / 32 for
      // each of the m token rows; zero-filled past K.
      const int j = static_cast<int>(threadIdx.x) / 32, piece = static_cast<int>(threadIdx.x) % 32;
      if (i < n_units && kc * kKW + j < p.kc_real) {
        const T* x = static_cast<const T*>(p.x);
        const int64_t col = (kc * kKW + j) * kChunkCols + piece * 8;
        const int64_t left = p.cols - col;
        const int bytes = left >= 8 ? 16 : left > 0 ? static_cast<int>(left * 2) : 0;
        const uint32_t dst = xbase + (static_cast<uint32_t>(i % kStages) * kKW + j) * xsub + piece * 16;
        for (int r = 0; r < p.m; ++r)
          cp_async_16(dst + r * kStride * sizeof(T), bytes ? x + r * p.ldx + col : x, bytes);
      }
    } else if constexpr (kIsNm24<kMode>) {
      if (i < n_units) x_issue.issue(xbase + static_cast<uint32_t>(i % kStages) * kXBytes, p, kc);
    }
    if constexpr (kStaged) {
      if (i == 0) issue_xd_next();
      issue_xd_next();
    }
    cp_async_commit();
  };
  auto issue = [&](int64_t i) { issue_x(i, issue_w(i)); };
  auto group_columns = [&](int64_t g) { return p.columns + (g * kRows / p.v) * p.blocks_padded; };
  // Prologue: the weights of the first kStages - 1 units, then (under programmatic dependent
  // launch) wait for the previous grid, whose outputs may be X and which shares the workspace
  // and Y, then their X. Group 0 carries all these weights; later groups only their X.
  // (p.pre_units = 1, decode_tuning().prologue_one: only unit 0's weights before the wait, so
  // unit 0 has a commit group of its own instead of waiting for units 1 and 2, and less of this
  // grid's prefetch competes with the previous grid's last units for DRAM.)
  int64_t first_kc[kStages - 1];
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i)
    if (i < p.pre_units) first_kc[i] = issue_w(i);
  if constexpr (kIsNm24<kMode> && !kSplit)
    zero_x_rows<T, kThreads, kTokens>(smem + kStages * kWarps * kWarpChunkBytes, kStages, p.m);
  grid_dependency_wait();
  timeline_stamp(p, 1);
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i >= p.pre_units) first_kc[i] = issue_w(i);
    issue_x(i, first_kc[i]);
  }

  // V:2:M X slots: unit i uses slot i % 3. Its gather is loaded to registers two units ahead
  // (during unit i-2) and stored after unit i-1's barrier, so L2 latency hides behind a whole
  // unit. Small CTAs (V = 16, 32) hold too many pairs per thread for that: they gather in place.
  constexpr bool kPrefetch = kWideBm != 0 || Gather<kThreads, kTokens>::kPairs <= 16;
  using GatherRegs = std::conditional_t<
      kSplitWide, SplitGather<kTokens, kWideBm>,
      std::conditional_t<kWideBm != 0, WideGather<kThreads, kTokens, kWideBm, kSets>,
                         Gather<kThreads, kTokens>>>;
  auto x_slot = [&](int64_t i) {
    return reinterpret_cast<T*>(smem + kStages * kWarps * kWarpChunkBytes) +
           (i % 3) * kSets * (kXBytes / sizeof(T));
  };
  auto x_slot3 = [&](uint32_t k) {  // slot k < 3 (lean)
    return reinterpret_cast<T*>(smem + kStages * kWarps * kWarpChunkBytes) +
           k * kSets * (kXBytes / sizeof(T));
  };
  // The tile of this warp's column set within a slot.
  const uint32_t set_off = static_cast<uint32_t>(warp / (kWarps / kSets)) * kXBytes;
  GatherRegs gathered;
  int64_t gather_g = g0, gather_kc = kc0;  // next unit to gather
  // Lean wide gather (v12): this thread's column word and first X piece of the next unit to
  // gather, advanced by one chunk per unit and set up again (one division) at a new row group.
  const uint32_t* lean_cols = nullptr;
  const unsigned short* lean_x = nullptr;
  const unsigned short* lean_x0 = nullptr;  // chunk 0 of any row group
  int64_t lean_step = 0, lean_full = 0;
  // K-split wide: this thread's chunk of a unit (t / 64) and block (t % 64), all token rows.
  const int split_j = static_cast<int>(threadIdx.x) / 64;
  if constexpr (kSplitWide) {
    lean_x0 = static_cast<const unsigned short*>(p.x) + (split_j * 64 + threadIdx.x % 64) * kWideBm;
    lean_cols = group_columns(gather_g) + (gather_kc * kKW + split_j) * 64 + threadIdx.x % 64;
    lean_x = lean_x0 + gather_kc * kKW * 64 * kWideBm;
    lean_full = p.cols / (64 * kWideBm);  // chunks that end inside K
  } else if constexpr (kLeanWide) {
    lean_x0 = static_cast<const unsigned short*>(p.x) + (threadIdx.x / 64) * p.ldx +
              (threadIdx.x % 64) * kWideBm;
    lean_cols = group_columns(gather_g) + gather_kc * 64 + threadIdx.x % 64;
    lean_x = lean_x0 + gather_kc * 64 * kWideBm;
    lean_step = (kThreads / 64) * p.ldx / 8;
    lean_full = p.cols / (64 * kWideBm);  // chunks that end inside K
  }
  auto gather_next = [&]() {
    if constexpr (kSplitWide) {
      gather_load_split(gathered, p, lean_cols, lean_x, gather_kc * kKW + split_j, lean_full);
      if (++gather_kc == p.kc_wrap) {
        gather_kc = 0;
        ++gather_g;
        lean_cols = group_columns(gather_g) + split_j * 64 + threadIdx.x % 64;
        lean_x = lean_x0;
      } else {
        lean_cols += kKW * 64;
        lean_x += kKW * 64 * kWideBm;
      }
    } else if constexpr (kLeanWide) {
      if (gather_kc < lean_full) {
        gather_load_lean(gathered, p, lean_cols, lean_x, lean_step);
      } else {
        gather_load<T, kThreads, kTokens>(gathered, p, group_columns(gather_g), gather_kc * 64);
      }
      if (++gather_kc == p.kc_wrap) {
        gather_kc = 0;
        ++gather_g;
        lean_cols = group_columns(gather_g) + threadIdx.x % 64;
        lean_x = lean_x0;
      } else {
        lean_cols += 64;
        lean_x += 64 * kWideBm;
      }
    } else {
      gather_load<T, kThreads, kTokens>(gathered, p, group_columns(gather_g), gather_kc * 64);
      if (++gather_kc == p.kc_wrap) {
        gather_kc = 0;
        ++gather_g;
      }
    }
  };
  // K-split wide: the gathered unit into X slot `slot2` (0, 1): chunk j's 16-token tile.
  auto split_store = [&](uint32_t slot2) {
    if constexpr (kSplitWide)
      store_picked<T, kTokens, 1, 1>(
          x_slot3(0) + (slot2 * kKW + split_j) * (kXBytes / sizeof(T)), gathered.raw,
          gathered.offsets[0], static_cast<int>(threadIdx.x) % 64, 0);
  };
  if constexpr (kSplitWide) {
    gather_next();  // unit 0
    split_store(0);
    if (n_units > 1) gather_next();  // unit 1, stored in iteration 0
  } else if constexpr ((kMode == Mode::VnmGather || kWideBm != 0) && kPrefetch) {
    gather_next();  // unit 0
    if constexpr (kLeanWide) {
      gather_store_lean<T>(x_slot(0), gathered);
    } else {
      gather_store<T, kThreads, kTokens>(x_slot(0), gathered);
    }
    if (n_units > 1) gather_next();  // unit 1, stored in iteration 0
  }
  if constexpr (kStaged && kSplit) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    gather_split(0, 0);
  } else if constexpr (kStaged) {
    // Token rows >= m of both gathered tiles stay zero; then unit 0 is gathered into tile 0.
    uint4* tiles = reinterpret_cast<uint4*>(smem + kStages * kWarps * kWarpChunkBytes);
    for (int idx = threadIdx.x; idx < 2 * kXBytes / 16; idx += kThreads)
      tiles[idx] = make_uint4(0, 0, 0, 0);
    cp_async_wait<kStages - 2>();
    __syncthreads();
    gather_smem(0, 0);
  }

  float acc[kNTiles][4] = {};
  // ldmatrix: lane l addresses token l % 8 of the n-tile, 8-column group l / 8 of the k-step.
  // K-split tiles hold m rows: tokens >= m read row m - 1 (their MMA columns are never written).
  const int lane_tok = kSplit ? min(lane & 7, p.m - 1) : (lane & 7);
  const uint32_t lane_off = (lane_tok * kStride + (lane >> 3) * 8) * sizeof(T);

  // ktail owners with ktail_early (m <= 8): their helpers' words, loaded at the start of the last
  // unit (the helpers are done by then) so the L2 round trip overlaps its MMAs.
  constexpr int kEarly = 2;
  constexpr bool kMayEarly = !kSplit && kNTiles == 1;
  unsigned long long early[kEarly][kNTiles * 4];
  const bool early_owner = kMayEarly && p.ktail_head > 0 && p.ktail_early &&
                           static_cast<int>(blockIdx.x) >= p.ktail_helpers;
  int64_t g = g0, kc = kc0;  // the unit being computed
  uint32_t slot3 = 0;  // lean wide gather: i % 3 without a 64-bit modulo
  bool reduce_last = false;  // tagged fix-up: this CTA sums its last group's partials
#pragma unroll 1
  for (int64_t i = 0; i < n_units; ++i, ++kc) {
    if (kc == p.kc_wrap && (kSplit || i > 0)) {  // (a ktail owner starts at chunk kc_wrap)
      kc = 0;
      ++g;
    }
    cp_async_wait<kStages - 2>();
    __syncthreads();  // unit i landed for every thread; unit i-1's slots are free
    if (i == 0) timeline_stamp(p, 2);
    issue(i + kStages - 1);
    if constexpr (kMayEarly) {
      if (early_owner && i + 1 == n_units) {
        const SlotRange r = ktail_slots(g, p);
        load_tagged<kWarps, kNTiles>(p, early, r.first, r.first + min(r.n, int64_t{kEarly}));
      }
    }
    const bool last_of_group = i + 1 == n_units || kc + 1 == p.kc_wrap;
    uint32_t xs;
    if constexpr (kStaged && kSplit) {  // unit i + 1 is gathered after this unit's MMAs
      xs = xbase + (static_cast<uint32_t>(i & 1) * kKW + kslice) * xsub;
    } else if constexpr (kIsNm24<kMode> && kSplit) {
      xs = xbase + (static_cast<uint32_t>(i % kStages) * kKW + kslice) * xsub;
    } else if constexpr (kStaged) {
      if (i + 1 < n_units) gather_smem(static_cast<uint32_t>((i + 1) % kStages), (i + 1) & 1);
      xs = xbase + static_cast<uint32_t>(i & 1) * kXBytes;
    } else if constexpr (kSplitWide) {
      if (i + 1 < n_units) split_store(static_cast<uint32_t>((i + 1) & 1));
      if (i + 2 < n_units) gather_next();
      xs = xbase + (static_cast<uint32_t>(i & 1) * kKW + kslice) * kXBytes;
    } else if constexpr (kLeanWide) {
      const uint32_t next3 = slot3 == 2 ? 0 : slot3 + 1;
      if (i + 1 < n_units) gather_store_lean<T>(x_slot3(next3), gathered);
      if (i + 2 < n_units) gather_next();
      xs = xbase + slot3 * kSets * kXBytes + set_off;
      slot3 = next3;
    } else if constexpr (kVnm && kPrefetch) {
      if (i + 1 < n_units) gather_store<T, kThreads, kTokens>(x_slot(i + 1), gathered);
      if (i + 2 < n_units) gather_next();
      xs = xbase + static_cast<uint32_t>(i % 3) * kSets * kXBytes + set_off;
    } else if constexpr (kVnm) {
      gather_load<T, kThreads, kTokens>(gathered, p, group_columns(g), kc * 64);
      gather_store<T, kThreads, kTokens>(x_slot(i), gathered);
      __syncthreads();
      xs = xbase + static_cast<uint32_t>(i % 3) * kXBytes;
    } else {
      xs = xbase + static_cast<uint32_t>(i % kStages) * kXBytes;
    }
    const uint32_t slot = wring + static_cast<uint32_t>(i % kStages) * kWarps * kWarpChunkBytes;
    // K-split: a warp whose chunk lies past K (the last unit of a row) has nothing to add.
    if (!kSplit || kc * kKW + kslice < p.kc_real) {
    uint4 e4;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(e4.x), "=r"(e4.y), "=r"(e4.z), "=r"(e4.w)
                 : "r"(slot + 8 * 512 + lane * 16));
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      uint32_t a[4];
      if constexpr (kMode == Mode::Nm24K) {  // after the unit's __syncthreads
        ldsm_a(a, slot + (s * 32 + lane) * 16);
      } else {
        asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                     : "r"(slot + (s * 32 + lane) * 16));
      }
      const uint32_t e = (s >> 1) == 0 ? e4.x : (s >> 1) == 1 ? e4.y : (s >> 1) == 2 ? e4.z : e4.w;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        uint32_t b[4];
        ldmatrix_x4(b, xs + lane_off + (nt * 8 * kStride + s * 32) * sizeof(T));
        if (s & 1) {
          mma_sp<Elem, 1>(acc[nt], a, b, e);
        } else {
          mma_sp<Elem, 0>(acc[nt], a, b, e);
        }
      }
    }
    }
    // K-split staged V:2:M: the next unit's gather (into the other tile) after the MMAs were
    // issued, so its shared-memory round trips overlap them.
    if constexpr (kStaged && kSplit)
      if (i + 1 < n_units) gather_split(static_cast<uint32_t>((i + 1) % kStages), (i + 1) & 1);
    // End of a row group (or of this CTA's range): write Y or take part in the split fix-up,
    // through the cluster's shared memory when the grid runs as clusters (one flush per CTA).
    if (last_of_group) {
      if (i + 1 == n_units) timeline_stamp(p, 3);
      if constexpr (kSplit) {
        // Slices 1..kKW-1 leave their sums in their own weight slot of this unit (free: only this
        // warp reads it, and the next copy into it is issued after the next loop barrier); slice
        // 0 of each row tile adds its tile's in slice order and writes the 16 rows.
        // (kNTiles token tiles: 512 bytes of the slot each.)
        __syncwarp();
        if (kslice > 0) {
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt)
            asm volatile("st.shared.v4.f32 [%0], {%1,%2,%3,%4};\n" ::"r"(slot + nt * 512 + lane * 16),
                         "f"(acc[nt][0]), "f"(acc[nt][1]), "f"(acc[nt][2]), "f"(acc[nt][3])
                         : "memory");
        }
        __syncthreads();
        if (kslice == 0) {
#pragma unroll
          for (int w = 1; w < kKW; ++w) {
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt) {
              float o[4];
              asm volatile("ld.shared.v4.f32 {%0,%1,%2,%3}, [%4];\n"
                           : "=f"(o[0]), "=f"(o[1]), "=f"(o[2]), "=f"(o[3])
                           : "r"(slot + w * kWarpChunkBytes + nt * 512 + lane * 16)
                           : "memory");
#pragma unroll
              for (int j = 0; j < 4; ++j) acc[nt][j] += o[j];
            }
          }
          OutT* y = static_cast<OutT*>(p.y);
          const int g8 = lane >> 2, t4 = lane & 3;
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const int tok = nt * 8 + 2 * t4 + (j & 1);
              const int64_t row = (g * (kWarps / kKW) + rtile) * 16 + g8 + 8 * (j >> 1);
              if (tok < p.m && row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(acc[nt][j]);
            }
          }
        }
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[nt][j] = 0.0f;
      } else if (!kSplit && p.ktail_head > 0) {  // an owner reduces after the loop
        reduce_last = ktail_flush<kWarps, kNTiles>(p, acc, g);
      } else if (p.cluster > 1) {
        flush_cluster<kWarps, kNTiles, OutT>(p, acc, g, reinterpret_cast<float*>(smem));
      } else if (p.tagged) {
        // A split group's first CTA reduces after the loop (g is its last group).
        reduce_last = tagged_flush<kWarps, kNTiles, OutT>(p, acc, g, u_begin, n_units);
      } else {
        flush_row_group<kWarps, kNTiles, OutT>(p, acc, g, u_begin, n_units, s_last);
      }
    }
  }
  if (reduce_last) {  // g is this CTA's last group
    const SlotRange r = !kSplit && p.ktail_head > 0 ? ktail_slots(g, p) : tagged_slots(g, p);
    int64_t first = r.first, n = r.n;
    if constexpr (kMayEarly) {
      if (early_owner) {
        const int64_t k = min(n, int64_t{kEarly});
        settle_tagged<kWarps, kNTiles>(p, acc, early, first, first + k);
        first += k;
        n -= k;
      }
    }
    add_tagged_slots<kWarps, kNTiles>(p, acc, first, n);
    write_group<kWarps, kNTiles, OutT>(p, acc, g);
  }
  cp_async_wait<0>();
  timeline_stamp(p, 4);
}

// Weight rows per CTA. V:2:M: min(V, 64) rows = one column set, except at m > 8: V >= 128 takes
// 8 warps = 128 rows, so one register gather of X serves twice the weight rows (v7), and V = 64
// with M = 8 on the wide gather takes 8 warps over two column sets that share its 16-byte loads
// (v10b; decode_tuning().two_sets).
int rows_per_cta(bool vnm, int v, int bm, int64_t m) {
  if (!vnm) return 64;
  if (m > 8 && v >= 128) return 128;
  if (m > 8 && v == 64 && bm == 8) {
    const DecodeTuning t = decode_tuning();
    if (t.wide_gather && t.two_sets) return 128;
  }
  return std::min(v, 64);
}

// CTAs for a problem: the requested count, else a whole number s of CTAs per row group with
// s * groups closest to the resident count. Measured (H100, v4 sweep): splitting every row
// group into the same number of K ranges beat both "all resident CTAs" stream-K and finer
// balance, because whole groups need no partial sums. Except (v9, from the v8 CTA sweep) on
// the register-gather V:2:M path when that count exceeds the resident CTAs: a second, partial
// wave of CTAs cost more there than the partial sums of all-resident stream-K (64:2:8 m=16
// 28672 x 8192: 448 CTAs 121.9 us, 264 CTAs 102.0 us; 128:2:16 m=16: 224 CTAs 56.9, 132 48.3),
// while the staged and 2:4 paths measured no gain from it with s = 1 (64:2:8 m=1: 50.5 vs
// 54.4 us). With s >= 2 and >= 4 units per resident CTA they do (v11, decode_tuning().cap_waves;
// from the v10 sweep, 2:4 m=1 11008 x 4096: 344 CTAs 21.9 us graph, 264 CTAs 19.0).
int plan_ctas(int requested, int64_t row_groups, int64_t units, int resident, bool gather) {
  int64_t c = requested;
  if (c <= 0) {
    const int64_t s = std::max<int64_t>(1, (resident + row_groups / 2) / row_groups);
    c = row_groups * s;
    const bool cap = decode_tuning().cap_waves && s >= 2 && units >= 4 * int64_t{resident};
    if ((gather || cap) && c > resident) c = resident;
  }
  return static_cast<int>(std::clamp<int64_t>(c, 1, units));
}

// Thread-block clusters (v11): with `ctas` a whole number s = 2..8 of CTAs per row group (and
// at least s K chunks, so every CTA holds one), CTA c lies inside row group c / s and a cluster
// of s consecutive CTAs is exactly one row group. Returns s, or 0.
int cluster_size(int ctas, int64_t row_groups, int64_t kchunks) {
  if (!decode_tuning().cluster || ctas % row_groups != 0) return 0;
  const int64_t s = ctas / row_groups;
  return s >= 2 && s <= 8 && kchunks >= s ? static_cast<int>(s) : 0;
}

template <typename Elem, Mode kMode, int kWarps, int kNTiles, typename OutT, int kKW = 1>
struct DecodeKernel {
  static constexpr bool kStaged = kMode == Mode::VnmStaged;
  static auto fn() { return decode_kernel<Elem, kMode, kWarps, kNTiles, OutT, kKW>; }
  // Dynamic shared memory of a launch (staged V:2:M and K-split: depends on m and M).
  static int smem(int64_t m, int bm) {
    if constexpr (kKW > 1 && kMode == Mode::VnmWide8) return split_wide_smem_bytes();
    if constexpr (kKW > 1) return static_cast<int>(split_smem_bytes<kStaged, kWarps>(m, bm));
    if constexpr (kStaged) return static_cast<int>(staged_smem_bytes<kWarps, kNTiles>(m, bm));
    return decode_smem_bytes<!kIsNm24<kMode>, kWarps, kNTiles, kSetsOf<kMode>>();
  }
  static cudaError_t prepare() {
    static const cudaError_t e = [] {
      const cudaError_t r = cudaFuncSetAttribute(
          fn(), cudaFuncAttributeMaxDynamicSharedMemorySize,
          kStaged || kKW > 1
              ? kMaxSmem
              : decode_smem_bytes<!kIsNm24<kMode>, kWarps, kNTiles, kSetsOf<kMode>>());
      if (r != cudaSuccess) cudaGetLastError();  // report it here, not at a later launch
      return r;
    }();
    return e;
  }
  // Resident CTAs on the GPU, cached per shared-memory size (a multiple of 128 bytes).
  static int resident(int smem_bytes) {
    static std::atomic<int> cache[kMaxSmem / 128 + 1];
    const int key = std::min(smem_bytes / 128, kMaxSmem / 128);
    int r = cache[key].load(std::memory_order_relaxed);
    if (r == 0) {
      r = prepare() == cudaSuccess ? occupancy(fn(), kWarps * 32, smem_bytes) : 1;
      cache[key].store(r, std::memory_order_relaxed);
    }
    return r * sm_count();
  }
  // Whether the grid of `config` fits on the GPU at once as clusters of s CTAs (a second wave of
  // clusters would cost more than the fix-up it saves), cached per (s, shared memory).
  static bool clusters_fit(const cudaLaunchConfig_t& config, int s) {
    static std::mutex mutex;
    static std::map<std::pair<int, size_t>, int> cache;
    const std::pair<int, size_t> key{s, config.dynamicSmemBytes};
    int clusters = -1;
    {
      const std::lock_guard<std::mutex> lock(mutex);
      if (auto it = cache.find(key); it != cache.end()) clusters = it->second;
    }
    if (clusters < 0) {
      cudaLaunchConfig_t query = config;
      cudaLaunchAttribute dim{};
      dim.id = cudaLaunchAttributeClusterDimension;
      dim.val.clusterDim.x = static_cast<unsigned>(s);
      dim.val.clusterDim.y = 1;
      dim.val.clusterDim.z = 1;
      query.attrs = &dim;
      query.numAttrs = 1;
      query.gridDim = dim3(static_cast<unsigned>(s));
      if (prepare() != cudaSuccess ||
          cudaOccupancyMaxActiveClusters(&clusters, fn(), &query) != cudaSuccess) {
        cudaGetLastError();
        clusters = 0;
      }
      const std::lock_guard<std::mutex> lock(mutex);
      cache[key] = clusters;
    }
    return int64_t{clusters} * s >= config.gridDim.x;
  }
};

// Staged V:2:M where it measured faster (H100, v7): m <= 8 with two CTAs per SM (a dense X ring
// small enough). At m = 16 the staged ring allows one CTA per SM and measured slower than the
// register gather on the large shapes (128:2:16, 28672 x 8192: 87.6 vs 61.8 us).
constexpr int kTwoPerSm = 110 * 1024;
template <int kWarps>
bool staged_fits(int64_t m, int bm) {
  return m <= 8 && staged_smem_bytes<kWarps, 1>(m, bm) <= kTwoPerSm;
}

// The resident-CTA count of the instantiation a (pattern, m) launches: the workspace bound.
// Every instantiation of one mode, kWarps and kNTiles has the same shared memory and nearly the
// same registers, so one representative is queried.
template <Mode kMode, int kWarps>
int resident_ctas(int64_t m, int bm) {
  if (m <= 8) {
    using K = DecodeKernel<F16, kMode, kWarps, 1, float>;
    return K::resident(K::smem(m, bm));
  }
  using K = DecodeKernel<F16, kMode, kWarps, 2, float>;
  return K::resident(K::smem(m, bm));
}

// The same for a kernel that only runs at m = 9..16 (the wide gather).
template <Mode kMode, int kWarps>
int resident_m16() {
  using K = DecodeKernel<F16, kMode, kWarps, 2, float>;
  return K::resident(K::smem(16, 0));
}

template <int kWarps>
int resident_vnm(int64_t m, int bm) {
  return staged_fits<kWarps>(m, bm) ? resident_ctas<Mode::VnmStaged, kWarps>(m, bm)
                                    : resident_ctas<Mode::VnmGather, kWarps>(m, bm);
}

// V:2:M at m > 8 with M = 8, or M = 16 on 8-warp CTAs (16 loads of 16 bytes a thread would be
// 64 registers on 4 warps): the register gather loads whole blocks with 16-byte loads (v10).
// Returns the wide kernel's mode, or VnmGather for the 2-byte gather (also with
// decode_tuning().wide_gather off).
Mode m16_gather_mode(int v, int bm, int64_t m) {
  if (m <= 8 || !decode_tuning().wide_gather) return Mode::VnmGather;
  const int rows = rows_per_cta(true, v, bm, m);
  if (bm == 8 && rows == 128 && v == 64) return Mode::VnmWide8x2;
  if (bm == 8 && rows >= 64) return Mode::VnmWide8;
  if (bm == 16 && rows == 128) return Mode::VnmWide16;
  return Mode::VnmGather;
}

// Whether a launch of `rows`-row CTAs gathers V:2:M's X from global memory into registers (not
// staged).
bool register_gather(bool vnm, int rows, int64_t m, int bm) {
  if (!vnm) return false;
  switch (rows / 16) {
    case 8:
      return true;
    case 1:
      return !staged_fits<1>(m, bm);
    case 2:
      return !staged_fits<2>(m, bm);
    default:
      return !staged_fits<4>(m, bm);
  }
}

int resident_for(bool vnm, int v, int bm, int64_t m, int rows) {
  if (!vnm) return resident_ctas<Mode::Nm24, 4>(m, 0);
  const Mode wide = m16_gather_mode(v, bm, m);
  switch (rows / 16) {
    case 8:
      return wide == Mode::VnmWide8x2  ? resident_m16<Mode::VnmWide8x2, 8>()
             : wide == Mode::VnmWide16 ? resident_m16<Mode::VnmWide16, 8>()
             : wide == Mode::VnmWide8  ? resident_m16<Mode::VnmWide8, 8>()
                                       : resident_ctas<Mode::VnmGather, 8>(m, bm);
    case 1:
      return resident_vnm<1>(m, bm);
    case 2:
      return resident_vnm<2>(m, bm);
    default:
      return wide == Mode::VnmWide8 ? resident_m16<Mode::VnmWide8, 4>() : resident_vnm<4>(m, bm);
  }
}

// The launch plan of a problem: rows per CTA, row groups, CTAs and the resident CTAs of the
// kernel that runs it.
struct Plan {
  int rows_cta;
  int64_t row_groups;
  int ctas;
  int resident;
  bool ksplit = false;  // K-split CTAs (session 8: 16 rows; 8b: 32 rows), one per row group
  int ktail_head = 0;   // owner / helper plan (session 11): head units per group, helper CTAs
  int ktail_helpers = 0;
  // 64-bit partial slots of 16 tokens x rows_cta (stream-K: one per CTA; ktail: H per group).
  int partial_slots() const {
    return static_cast<int>(std::max<int64_t>(ctas, row_groups * ktail_head));
  }
};

// Session 11 (decode_tuning().ktail, split_fixup.cuh cta_units): a default plan that splits row
// groups over CTAs (stream-K, whole splits), with fewer groups G than resident CTAs R and all
// resident, takes one owner CTA per group for its last `tail` units and spreads the groups' heads
// over the R - G other slots (helpers): the smallest tail, at most the busiest CTA's units, whose
// helpers end a unit before their owners even at 5/4 of an owner's time per unit (H100 run 1
// timelines: a helper's units, in a new group every head, took 1.15-1.25x an owner's). Plans of
// whole groups keep them (run 1: owners of one unit fewer lost 1.7-4.8 us graph).
void plan_ktail(Plan& pl, int64_t kchunks) {
  const int64_t groups = pl.row_groups;
  if (groups >= pl.resident || pl.ctas > pl.resident || pl.ctas == groups || kchunks < 3) return;
  const int64_t busiest = (groups * kchunks + pl.ctas - 1) / pl.ctas;
  for (int64_t tail = 2; tail < kchunks && tail <= busiest; ++tail) {
    const int64_t head_units = groups * (kchunks - tail);
    const int64_t helpers = std::min<int64_t>(pl.resident - groups, head_units);
    const int64_t most = (head_units + helpers - 1) / helpers;
    if (5 * most > 4 * (tail - 1)) continue;
    pl.ktail_head = static_cast<int>(kchunks - tail);
    pl.ktail_helpers = static_cast<int>(helpers);
    pl.ctas = static_cast<int>(groups + helpers);
    return;
  }
}

// Whether plan_ktail would turn `pl` into an owner / helper plan (with ktail on): the multi-tile
// K-split plans (session 12) leave those alone.
bool ktail_applies(const Plan& pl, int64_t kchunks) {
  if (!decode_tuning().ktail) return false;
  Plan owners = pl;
  plan_ktail(owners, kchunks);
  return owners.ktail_head > 0;
}

// Resident K-split CTAs (the 2:4 fragment kernel stands for both 2:4 layouts: same shared memory).
int resident_split(bool vnm, int64_t m, int bm) {
  if (vnm) {
    using K = DecodeKernel<F16, Mode::VnmStaged, kKSplit, 1, float, kKSplit>;
    return K::resident(K::smem(m, bm));
  }
  using K = DecodeKernel<F16, Mode::Nm24, kKSplit, 1, float, kKSplit>;
  return K::resident(K::smem(m, 0));
}
int resident_split32(int64_t m, int bm) {
  using K = DecodeKernel<F16, Mode::VnmStaged, 2 * kKSplit, 1, float, kKSplit>;
  return K::resident(K::smem(m, bm));
}
int resident_split_m16() {
  using K = DecodeKernel<F16, Mode::VnmWide8, 2 * kKSplit, 2, float, kKSplit>;
  return K::resident(K::smem(16, 8));
}

Plan plan_for(bool vnm, int v, int bm, int64_t m, int64_t rows_padded, int64_t kchunks,
              int requested) {
  Plan pl{};
  pl.rows_cta = rows_per_cta(vnm, v, bm, m);
  pl.row_groups = rows_padded / pl.rows_cta;
  pl.resident = resident_for(vnm, v, bm, m, pl.rows_cta);
  const int64_t units = pl.row_groups * kchunks;
  pl.ctas = plan_ctas(requested, pl.row_groups, units, pl.resident,
                      register_gather(vnm, pl.rows_cta, m, bm));
  // Session 7 (decode_tuning().fill): a V:2:M default plan of whole row groups that spills
  // 0.1-0.9 of a second wave (128:2:16 11008 x 4096 m = 1: 344 CTAs, s = 2, on 264 slots, 2
  // units each, too few for cap_waves) runs all-resident stream-K instead where that gives <= 8
  // units per CTA, so the tagged fix-up serves it (H100 same-run A/B: 11.1 -> 7.9 us graph).
  // Filling idle SMs the same way (whole groups on < 0.9 of the slots: 14336 x 4096) measured
  // 1.5-2.7 us slower and is not done.
  if (vnm && requested <= 0 && decode_tuning().fill && pl.ctas % pl.row_groups == 0 &&
      pl.ctas > pl.resident && int64_t{pl.ctas} * 10 < int64_t{pl.resident} * 19 &&
      units <= 8 * int64_t{pl.resident})
    pl.ctas = pl.resident;
  // Session 7 (decode_tuning().trim): a V:2:M stream-K default plan whose busiest CTA has more
  // units than the prologue prefetches (kStages - 1) takes the fewest CTAs that keep that count
  // (11008 x 4096 64:2:8 m = 1: 1376 units, 264 CTAs of 5 or 6 -> 230 CTAs of 5 or 6): the kernel
  // time follows the busiest CTA, and the freed slots let the next kernel's CTAs start and
  // prefetch before this one ends. H100 same-run A/B (session 7, run 2, graph): 64:2:8 11008 x
  // 4096 m = 1 11.8 -> 11.5 us, 28672 x 8192 m = 16 53.0 -> 52.2 (128:2:16 29.9 -> 29.4), 64:2:8
  // 11008 x 4096 m = 16 14.0 -> 14.2; with <= 3 units per CTA slower (128:2:16 11008 x 4096 m = 1
  // 7.8 -> 8.2), so not there.
  if (vnm && requested <= 0 && decode_tuning().trim && pl.ctas % pl.row_groups != 0) {
    const int64_t most = (units + pl.ctas - 1) / pl.ctas;
    if (most >= kStages) pl.ctas = static_cast<int>((units + most - 1) / most);
  }
  // Session 8 (decode_tuning().ksplit): a default plan at m <= 8 that splits row groups over
  // CTAs (every N = 4096 product: s = 4, or clusters of 3 after v11e's shrink; each pays the
  // ~2-2.5 us fix-up tail) runs one 16-row K-split CTA per row group instead, where those fill
  // 3/4 to all of the resident slots: the 4 warps of a CTA split K and add in shared memory.
  // Staged V:2:M only where a CTA's units all fit in the prologue's prefetch (<= kStages - 1 units of
  // kKSplit chunks): on longer K its 16-row CTAs gather X for 4 times the weight bytes of a 64-row
  // CTA, and run 1 measured them slower there (64:2:8 4096 x 11008 m = 1 graph 12.1 -> 12.9 us;
  // decode_tuning().ksplit_long takes them anyway, for the A/B).
  const bool short_k = (kchunks + kKSplit - 1) / kKSplit <= kStages - 1;
  // Session 8b (decode_tuning().ksplit32): on that longer K, staged V:2:M with V >= 32 may run
  // 32-row K-split CTAs of 8 warps instead (one per SM at N = 4096): a gathered X chunk serves 32
  // rows, half the 16-row K-split's gather per weight byte, still with no cross-CTA fix-up.
  // H100 same-run A/B (session 8b): 64:2:8 4096 x 11008 m = 1 graph 12.2 -> 11.5 us, 4096 x 14336
  // 14.1 -> 13.1; 128:2:16 4096 x 14336 9.4 -> 8.6 (16-row K-split, session 8 run 2: 12.2, 14.2, 9.5).
  const bool multi32 = decode_tuning().ksplit32_multi;
  if (requested <= 0 && vnm && (!short_k || multi32) && v >= 32 && decode_tuning().ksplit &&
      decode_tuning().ksplit32 && pl.ctas > pl.row_groups && split32_fits(m, bm)) {
    const int64_t groups = rows_padded / 32;
    const int resident = resident_split32(m, bm);
    if (!short_k && groups <= resident && 4 * groups >= 3 * int64_t{resident})
      return Plan{32, groups, static_cast<int>(groups), resident, true};
    // Session 12 (decode_tuning().ksplit32_multi): where the 32-row tiles outnumber the resident
    // CTAs, at any K, every resident CTA takes a contiguous run of whole tiles (as ksplit_multi;
    // not where ktail plans an owner / helper split). H100 same-run A/B, graph: 128:2:16 11008 x
    // 4096 m = 1 6.9 -> 6.4 us (16-row ksplit_multi before), 8192 x 28672 m = 1 24.8 -> 23.1
    // (clusters before); 64:2:8 8192 x 28672 46.3 -> 46.1; no record slower.
    if (multi32 && groups > resident && !ktail_applies(pl, kchunks))
      return Plan{32, groups, resident, resident, true};
  }
  // Session 10 (decode_tuning().ksplit_m16): at m = 9..16 the wide-gather V:2:M plans (M = 8,
  // 128-row CTAs) of the N = 4096 products split each row group over s = 4 CTAs, which the
  // workspace fix-up joins (clusters of 4 do not fit at one CTA per SM: 30 of 32); instead one
  // 32-row K-split CTA per 32 rows (128 at N = 4096, one per SM), its 8 warps 2 row tiles x 4 K
  // slices adding in shared memory. Each 16-byte X load then serves 32 rows instead of 128, which
  // costs more per unit than the fix-up saves on longer K, so only where a CTA has <= 2 units of 4
  // chunks, as measured (ksplit_long: at any K). H100 same-run A/B (session 10, 64:2:8 m = 16,
  // graph | per call, us): 4096 x 4096 (2 units) 8.17 -> 6.75 | 12.42 -> 10.46; at any K
  // 4096 x 11008 (6 units) 14.74 -> 16.16, 4096 x 14336 (7 units) 17.30 -> 21.87.
  constexpr int64_t kM16MaxUnits = 2;
  const bool m16_short = (kchunks + kKSplit - 1) / kKSplit <= kM16MaxUnits;
  if (requested <= 0 && vnm && m > 8 && bm == 8 && v >= 32 && decode_tuning().ksplit &&
      decode_tuning().ksplit_m16 && decode_tuning().wide_gather && pl.ctas > pl.row_groups &&
      kchunks >= kKSplit && (m16_short || decode_tuning().ksplit_long)) {
    const int64_t groups = rows_padded / 32;
    const int resident = resident_split_m16();
    if (groups <= resident && 4 * groups >= 3 * int64_t{resident})
      return Plan{32, groups, static_cast<int>(groups), resident, true};
  }
  // Session 12 (decode_tuning().ksplit_multi): also where the 16-row tiles outnumber the
  // resident CTAs, each CTA a contiguous run of whole tiles, so the product needs no cross-CTA
  // fix-up; not where the owner / helper plan applies (H100 same-run A/B, graph: 64:2:8 11008 x
  // 4096 m = 1 ktail 10.2 us, K-split 11.0), nor on whole-group plans that leave slots idle
  // (14336 x 4096 m = 1: 16-row tiles there lost 1.3-2.5 us).
  if (requested <= 0 && decode_tuning().ksplit && pl.ctas > pl.row_groups && kchunks >= kKSplit &&
      (!vnm || short_k || decode_tuning().ksplit_long) && split_fits(vnm, m, bm)) {
    const int64_t groups = rows_padded / 16;
    const int resident = resident_split(vnm, m, bm);
    if (groups <= resident && 4 * groups >= 3 * int64_t{resident})
      pl = Plan{16, groups, static_cast<int>(groups), resident, true};
    else if (decode_tuning().ksplit_multi && groups > resident && !ktail_applies(pl, kchunks))
      pl = Plan{16, groups, resident, resident, true};
  }
  if (requested <= 0 && !pl.ksplit && decode_tuning().ktail) plan_ktail(pl, kchunks);
  return pl;
}

template <typename Elem, Mode kMode, int kWarps, int kNTiles, int kKW = 1>
cudaError_t launch(DecodeParams p, ElemType y_type, cudaStream_t stream) {
  return dispatch_out(y_type, [&](auto out) -> cudaError_t {
    using K = DecodeKernel<Elem, kMode, kWarps, kNTiles, decltype(out), kKW>;
    if (cudaError_t e = K::prepare(); e != cudaSuccess) return e;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(static_cast<unsigned>(p.ctas));
    config.blockDim = dim3(kWarps * 32);
    config.dynamicSmemBytes = static_cast<size_t>(K::smem(p.m, p.bm));
    config.stream = stream;
    cudaLaunchAttribute attrs[2]{};
    config.attrs = attrs;
    if (p.cluster > 1 && p.m <= 8 && !K::clusters_fit(config, p.cluster) && p.planned &&
        decode_tuning().cluster_shrink) {
      // Fewer CTAs per row group whose clusters fit (v11e), at m <= 8 only (at m = 16 the lost
      // CTAs cost more than the fix-up saves: 4096 x 11008 graph 21.8 -> 23.1 us for 2:4, 8-warp
      // V:2:M 128 -> 96 CTAs); the units are re-divided over them.
      const int groups = p.ctas / p.cluster;
      for (int s = p.cluster - 1; s >= 2; --s) {
        config.gridDim = dim3(static_cast<unsigned>(groups * s));
        if (K::clusters_fit(config, s)) {
          p.ctas = groups * s;
          p.cluster = s;
          break;
        }
      }
      config.gridDim = dim3(static_cast<unsigned>(p.ctas));
    }
    if (p.cluster > 1) {
      if (K::clusters_fit(config, p.cluster)) {
        cudaLaunchAttribute& a = attrs[config.numAttrs++];
        a.id = cudaLaunchAttributeClusterDimension;
        a.val.clusterDim.x = static_cast<unsigned>(p.cluster);
        a.val.clusterDim.y = 1;
        a.val.clusterDim.z = 1;
      } else {
        p.cluster = 0;  // the workspace fix-up
      }
    }
    if (decode_tuning().pdl) {
      cudaLaunchAttribute& a = attrs[config.numAttrs++];
      a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      a.val.programmaticStreamSerializationAllowed = 1;
    }
    const cudaError_t e = cudaLaunchKernelEx(&config, K::fn(), p);
    const cudaError_t last = cudaGetLastError();
    if (e == cudaSuccess && last == cudaSuccess && p.cluster > 1)
      g_cluster_launches.fetch_add(1, std::memory_order_relaxed);
    if (e == cudaSuccess && last == cudaSuccess && kKW > 1)
      g_ksplit_launches.fetch_add(1, std::memory_order_relaxed);
    if (e == cudaSuccess && last == cudaSuccess && p.ktail_head > 0)
      g_ktail_launches.fetch_add(1, std::memory_order_relaxed);
    return e != cudaSuccess ? e : last;
  });
}

template <Mode kMode, int kWarps>
cudaError_t launch_tiles(const DecodeParams& p, ElemType type, ElemType y_type,
                         cudaStream_t stream) {
  if (type == ElemType::F16) {
    return p.m <= 8 ? launch<F16, kMode, kWarps, 1>(p, y_type, stream)
                    : launch<F16, kMode, kWarps, 2>(p, y_type, stream);
  }
  return p.m <= 8 ? launch<BF16, kMode, kWarps, 1>(p, y_type, stream)
                  : launch<BF16, kMode, kWarps, 2>(p, y_type, stream);
}

// K-split CTAs (m <= 8 only: one token tile); kWarps = 2 kKSplit: 32-row CTAs.
template <Mode kMode, int kWarps = kKSplit>
cudaError_t launch_split(const DecodeParams& p, ElemType type, ElemType y_type,
                         cudaStream_t stream) {
  return type == ElemType::F16 ? launch<F16, kMode, kWarps, 1, kKSplit>(p, y_type, stream)
                               : launch<BF16, kMode, kWarps, 1, kKSplit>(p, y_type, stream);
}

// 32-row K-split CTAs at m = 9..16 (session 10): the wide gather, two token tiles.
cudaError_t launch_split_m16(const DecodeParams& p, ElemType type, ElemType y_type,
                             cudaStream_t stream) {
  return type == ElemType::F16
             ? launch<F16, Mode::VnmWide8, 2 * kKSplit, 2, kKSplit>(p, y_type, stream)
             : launch<BF16, Mode::VnmWide8, 2 * kKSplit, 2, kKSplit>(p, y_type, stream);
}

// m = 9..16 only: two token tiles.
template <Mode kMode, int kWarps>
cudaError_t launch_m16(const DecodeParams& p, ElemType type, ElemType y_type, cudaStream_t stream) {
  return type == ElemType::F16 ? launch<F16, kMode, kWarps, 2>(p, y_type, stream)
                               : launch<BF16, kMode, kWarps, 2>(p, y_type, stream);
}

template <int kWarps>
cudaError_t launch_vnm(const DecodeParams& p, ElemType type, ElemType y_type, cudaStream_t stream) {
  return staged_fits<kWarps>(p.m, p.bm)
             ? launch_tiles<Mode::VnmStaged, kWarps>(p, type, y_type, stream)
             : launch_tiles<Mode::VnmGather, kWarps>(p, type, y_type, stream);
}

cudaError_t check_problem(const GemmProblem& pr, ElemType type, int64_t rows_padded) {
  if (type != ElemType::F16 && type != ElemType::BF16) return cudaErrorInvalidValue;
  if (pr.m < 1 || pr.m > kDecodeMaxM || !pr.x || !pr.y) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (rows_padded % kRowTile != 0) return cudaErrorInvalidValue;
  return cudaSuccess;
}

// Session 12 (decode_tuning().prologue_one): the units whose weights a CTA issues before the wait
// for the previous grid. V:2:M at m <= 8: one on K-split plans of <= 4 units per CTA, two on the
// others; 2:4 and m > 8 keep kStages - 1 = 3. H100 same-run A/B of 1 / 2 / 3 everywhere (graph,
// us): K-split of <= 4 units 64:2:8 4096^2 5.1 / 5.7 / 5.7, 128:2:16 4096 x 11008 6.5 / 7.2 / 7.6;
// other V:2:M m = 1 plans best at 2 (128:2:16 14336 x 4096 7.5 / 7.0 / 7.7, 28672 x 8192 25.2 /
// 24.5 / 25.5; 64:2:8 8192 x 28672 47.4 / 46.5 / 46.9); 2:4 and m = 16 best at 3 (+0.3 to +2 us
// at 1).
void plan_prologue(DecodeParams& p, bool vnm) {
  if (decode_tuning().prologue_one && vnm && p.m <= 8) {
    const int64_t most = (p.units + p.ctas - 1) / p.ctas;
    p.pre_units = p.ksplit > 1 && most <= 4 ? 1 : 2;
  }
  if (const int forced = decode_tuning().prologue_units; forced > 0)
    p.pre_units = std::min(forced, kStages - 1);
}

// Fills the common fields and the plan's rows per CTA; returns false when the workspace is too
// small.
bool base_params(DecodeParams& p, int& rows_cta, const GemmProblem& pr, int64_t rows,
                 int64_t rows_padded, int64_t cols, int64_t kchunks, bool vnm, int v, int bm) {
  const Plan plan = plan_for(vnm, v, bm, pr.m, rows_padded, kchunks, pr.ctas);
  rows_cta = plan.rows_cta;
  const int64_t row_groups = plan.row_groups;
  p.x = pr.x;
  p.ldx = pr.ldx;
  p.m = static_cast<int>(pr.m);
  p.cols = cols;
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.rows = rows;
  p.kchunks = kchunks;
  p.units = row_groups * kchunks;
  const int resident = plan.resident;
  p.ctas = plan.ctas;
  if (pr.workspace_bytes < workspace_for(row_groups, plan.partial_slots(), rows_cta) ||
      !pr.workspace)
    return false;
  p.counters = static_cast<unsigned*>(pr.workspace);
  p.partials =
      reinterpret_cast<float*>(static_cast<char*>(pr.workspace) + counters_bytes(row_groups));
  p.cluster = cluster_size(p.ctas, row_groups, kchunks);
  // Tagged fix-up (v13): its first CTA of a group waits for later CTAs, so only when all fit at
  // once. Default plans take it only where it measured faster (session 6, H100, same-run A/B):
  // stream-K plans (CTA ranges cross row groups) with <= 8 units per CTA, where the counter
  // protocol's ~3 round-trip tail is a large part of a CTA's time (11008 x 4096: 64:2:8 m = 1 and
  // 16, 128:2:16 m = 16, -0.3 to -2.5 us per call, -0.4 to -2.1 graph). On whole splits (s CTAs
  // per group, all flushing at once; every N = 4096 record) the first CTA waits for the slowest
  // and its polling slows the others: +1.6 to +6.3 us graph; with many units per CTA (28672 x
  // 8192, V:2:M m = 16) +0.5 to +1.4 us graph. Forced CTA counts take it whenever it is on.
  const bool stream_k_short = p.ctas % row_groups != 0 && p.units <= 8 * int64_t{p.ctas};
  p.tagged = decode_tuning().tagged_fixup && p.ctas <= resident &&
             (pr.ctas > 0 || stream_k_short);
  p.planned = pr.ctas <= 0;
  p.timeline = g_timeline.load(std::memory_order_relaxed);
  p.kc_real = kchunks;
  p.ksplit = 1;
  p.ktail_head = plan.ktail_head;
  p.ktail_helpers = plan.ktail_helpers;
  p.kc_wrap = p.ktail_head > 0 ? p.ktail_head : p.kchunks;
  p.ktail_early = decode_tuning().ktail_early;
  p.pre_units = kStages - 1;
  if (p.ktail_head > 0) {  // owners and helpers: no cluster, counter or stream-K fix-up
    p.cluster = 0;
    p.tagged = false;
  }
  if (plan.ksplit) {  // one CTA per 16 (32) rows; a unit is kKSplit chunks
    p.ksplit = kKSplit;
    p.kchunks = (kchunks + kKSplit - 1) / kKSplit;
    p.units = row_groups * p.kchunks;
    p.kc_wrap = p.kchunks;
    p.cluster = 0;
    p.tagged = false;
  }
  plan_prologue(p, vnm);
  return true;
}

size_t workspace_bytes(int64_t rows_padded, int64_t kchunks, bool vnm, int v, int bm, int64_t m,
                       int ctas) {
  const Plan plan = plan_for(vnm, v, bm, m, rows_padded, kchunks, ctas);
  return workspace_for(plan.row_groups, plan.partial_slots(), plan.rows_cta);
}

}  // namespace

size_t nm24_workspace_bytes(const Nm24Weights& w, int64_t m, int ctas) {
  const size_t decode = workspace_bytes(w.rows_padded, w.cols_padded / kKChunk, false, 0, 0, m, ctas);
  // Prefill m: the split-K wgmma kernel's partials too (v10, wgmma_prefill.cu).
  return m > kDecodeMaxM ? std::max(decode, nm24_prefill_workspace_bytes(w, m)) : decode;
}

size_t vnm_workspace_bytes(const VnmWeights& w, int64_t m, int ctas) {
  const size_t decode = workspace_bytes(w.rows_padded, w.blocks_padded / 64, true, w.v, w.m, m, ctas);
  // Prefill m: the split-K partials of the wgmma prefill (as nm24_workspace_bytes).
  return m > kDecodeMaxM ? std::max(decode, vnm_prefill_workspace_bytes(w, m)) : decode;
}

cudaError_t nm24_decode(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream) {
  if (cudaError_t e = check_problem(pr, w.type, w.rows_padded); e != cudaSuccess) return e;
  if (w.cols_padded % kKChunk != 0 || (!w.values && !w.values_k)) return cudaErrorInvalidValue;
  DecodeParams p{};
  int rows_cta = 0;
  if (!base_params(p, rows_cta, pr, w.rows, w.rows_padded, w.cols, w.cols_padded / kKChunk, false,
                   0, 0))
    return cudaErrorInvalidValue;
  p.meta = reinterpret_cast<const uint4*>(w.meta);
  p.ksteps = w.cols_padded / 32;
  if (nm24_reads_values_k(w)) {
    p.values = static_cast<const uint4*>(w.values_k);
    return p.ksplit > 1 ? launch_split<Mode::Nm24K>(p, w.type, pr.y_type, stream)
                        : launch_tiles<Mode::Nm24K, 4>(p, w.type, pr.y_type, stream);
  }
  p.values = static_cast<const uint4*>(w.values);
  return p.ksplit > 1 ? launch_split<Mode::Nm24>(p, w.type, pr.y_type, stream)
                      : launch_tiles<Mode::Nm24, 4>(p, w.type, pr.y_type, stream);
}

cudaError_t vnm_decode(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream) {
  if (cudaError_t e = check_problem(pr, w.type, w.rows_padded); e != cudaSuccess) return e;
  if (w.blocks_padded % 64 != 0 || (w.v != 16 && w.v != 32 && w.v != 64 && w.v != 128) || w.m < 4 ||
      w.m > 256)
    return cudaErrorInvalidValue;
  DecodeParams p{};
  int rows_cta = 0;
  if (!base_params(p, rows_cta, pr, w.rows, w.rows_padded, w.cols, w.blocks_padded / 64, true,
                   w.v, w.m))
    return cudaErrorInvalidValue;
  p.values = static_cast<const uint4*>(w.values);
  p.meta = reinterpret_cast<const uint4*>(w.meta);
  p.columns = w.columns;
  p.ksteps = w.blocks_padded / 8;
  p.v = w.v;
  p.bm = w.m;
  p.blocks_padded = w.blocks_padded;
  if (p.ksplit > 1 && p.m > 8) return launch_split_m16(p, w.type, pr.y_type, stream);
  if (p.ksplit > 1)
    return rows_cta == 32 ? launch_split<Mode::VnmStaged, 2 * kKSplit>(p, w.type, pr.y_type, stream)
                          : launch_split<Mode::VnmStaged>(p, w.type, pr.y_type, stream);
  const Mode wide = m16_gather_mode(w.v, w.m, pr.m);
  switch (rows_cta / 16) {
    case 8:  // m > 8 only
      if (wide == Mode::VnmWide8x2)
        return launch_m16<Mode::VnmWide8x2, 8>(p, w.type, pr.y_type, stream);
      if (wide == Mode::VnmWide16)
        return launch_m16<Mode::VnmWide16, 8>(p, w.type, pr.y_type, stream);
      if (wide == Mode::VnmWide8)
        return launch_m16<Mode::VnmWide8, 8>(p, w.type, pr.y_type, stream);
      return launch_m16<Mode::VnmGather, 8>(p, w.type, pr.y_type, stream);
    case 1:
      return launch_vnm<1>(p, w.type, pr.y_type, stream);
    case 2:
      return launch_vnm<2>(p, w.type, pr.y_type, stream);
    default:
      if (wide == Mode::VnmWide8)
        return launch_m16<Mode::VnmWide8, 4>(p, w.type, pr.y_type, stream);
      return launch_vnm<4>(p, w.type, pr.y_type, stream);
  }
}

}  // namespace sparsa::cuda
