// Prefill v12 ("ssc", session 16): 2:4 sparse GEMM with wgmma.mma_async.sp, both operands from
// shared memory loaded by TMA, 128 x 256 tiles, X shared by a cluster of two CTAs (sm_90a).
// Y[m, N] = X[m, K] * W[N, K]^T, X and W fp16 or bf16, fp32 accumulation, any output type.
//
// Why: under ncu (session 14) cuSPARSELt's Hopper kernel (128 x 256 x 64 tiles, two consumer
// warpgroups of m64n256, clusters of 2) kept the tensor pipe active 71.5% of the cycles against
// 57.9% for our register-A kernel (v9) and moved 12x fewer shared-memory bytes by instructions.
// v8 (wgmma_prefill_ss.cu) already reads W from shared memory; v12 takes the rest of that design:
// one m64n256k32 per warpgroup and k-step (v8: two m64n192k32 over 128 rows). With 128-row tiles
// the X tile (256 tokens x 64 columns, 32 KB a stage) would double the L2 -> SM bytes per MAC, so
// the two CTAs of a cluster (adjacent row blocks, the same tokens) each load half of it and
// multicast it into both (without: 1.25x the time, session 16 run 1).
//
// Reads the fragment layout `values` (the default since session 17: each consumer warp loads its
// A fragments from the stage and runs the register-A wgmma) or values_k (the row-major layout of
// v8, 64-byte swizzle, by descriptor), and tile_nm24's metadata.
// CTA = 1 producer warpgroup (one thread issues TMA) + 2 consumer warpgroups (setmaxnreg 40 /
// 232); consumer warpgroup wg owns rows [128 rb + 64 wg, +64), 128 fp32 accumulators a thread.
// Per stage (64 columns of K, two k-steps) one mbarrier of each CTA completes on: X (both
// halves, 2 x 16 KB, 128-byte swizzle; with a cluster half from each CTA), W (128 rows x 64 B),
// and at each 256-column chunk's first stage the chunk's metadata (8 row tiles x 512 B) into
// one of two chunk buffers by chunk parity. A slot is reused once every consumer warp of the
// cluster released it (each arrives on its own CTA's empty barrier and, with a cluster, on the
// other CTA's), since both CTAs write into both.
// Grid: persistent by default, one cluster per resident CTA pair, each taking its next tile from
// a counter in the workspace (rank 0 hands it to its partner through distributed shared memory),
// so the producer loads the next tile while the consumers store; for 16-bit Y (N % 8 == 0) each
// consumer warp hands its rows to TMA stores 32 tokens at a time and moves on (store_tma, session
// 18: 0.97 of the time of the staged form in the median), otherwise the epilogue stages 32 tokens
// at a time in a small buffer and stores 16-byte runs of Y's rows (store_passes). Session 16
// run 7: 0.95 of the one-cluster-per-tile form's time in the median; a fixed stride instead of
// the counter had been 1.07-1.21x slower than v9 on the two largest shapes (run 2: the clusters
// drift apart along K). Without a workspace, or with SPARSA_PREFILL24=sscnp, one cluster per
// tile, whose epilogue stages the whole tile in the then idle slots. Where the tiles do not fill
// their last wave, the streamed tail (ssc_tail.h, session 19) cuts the last two waves' tiles
// along K into one share per cluster (SPARSA_PREFILL24_SSC_TAIL=1).
// Switches for A/B runs: SPARSA_PREFILL24=ssc1 / ssc4 or SPARSA_PREFILL24_SSC_CLUSTER=1|4 (single
// CTAs; clusters of 4 sharing X, session 17: 1.09x the time of pairs), sscnp (a cluster per
// tile), SPARSA_PREFILL24_EPILOGUE=direct or passes (the persistent form without TMA stores),
// SPARSA_PREFILL24_GROUP_ROWS=N (raster group), SPARSA_PREFILL24_SSC_TAIL=1.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/decode_workspace.h"
#include "cuda/compressed_common.cuh"
#include "cuda/slot_layout.cuh"
#include "cuda/mma_sp.cuh"
#include "cuda/ssc_tail.h"
#include "cuda/wgmma_prefill_tiles.h"
#include "cuda/wgmma_primitives.cuh"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kBM = 128;                  // weight rows per CTA
constexpr int kBN = 256;                  // tokens per tile
constexpr int kStageCols = 64;            // columns of K per stage (2 k-steps)
constexpr int kXHalfTokens = 128;         // tokens per X box alone (a TMA box holds at most 256 rows)
constexpr int kXHalfBytes = kXHalfTokens * 128;
constexpr int kXBytes = 2 * kXHalfBytes;  // 256 tokens x 64 columns, 32 KB
// In a cluster of kCluster CTAs each loads 1 / kCluster of the stage's tokens for all of them.
constexpr int x_part_tokens(int cluster) { return cluster == 1 ? kXHalfTokens : kBN / cluster; }
constexpr int kABytes = kBM * 64;         // 128 rows x 32 compressed columns, 8 KB
constexpr int kStageBytes = kXBytes + kABytes;
constexpr int kStages = 5;
constexpr int kMetaBytes = 8 * 512;       // one chunk of metadata for the CTA's 8 row tiles
constexpr int kConsumerWarps = 8;
constexpr int kThreads = kConsumerWarps * 32 + 128;
constexpr int kGroupRows = 2048;          // weight rows per raster group
constexpr int kSmemBytes = kStages * kStageBytes + 2 * kMetaBytes + 1024 /* alignment */ +
                           2 * kStages * 8 + 16 /* the tail pieces' first-arriver flag */;
static_assert(kSmemBytes <= 227 * 1024, "over the 227 KB of shared memory per CTA");
// The metadata of chunk c + 2 goes into chunk c's buffer with stage 4c + 8, issued once stage
// 4c + 8 - kStages is released; a consumer releases stage j after reading stage j + 1's words
// (or at the end of its tile), so chunk c's last read (stage 4c + 3) is behind it when
// 4c + 9 - kStages >= 4c + 3. (A tail piece starts at a chunk boundary: its chunks count from 0.)
static_assert(kStages <= 6, "two metadata buffers");

struct SscParams {
  void* y;
  int64_t ldy, m, rows;
  int32_t kt_count;     // stages of 64 columns (cols_padded / 64, a multiple of 4)
  int32_t row_blocks;   // 128-row blocks (rows_padded / 128)
  int32_t row_units;    // clusters along the rows: row_blocks / cluster, rounded up
  int32_t token_tiles;  // 256-token tiles
  int64_t tiles;        // row_units x token_tiles
  int32_t group;        // row units per raster group
  int32_t staged;       // one tile per CTA and 16-byte stores possible: epilogue through the idle slots
  // Streamed tail (ssc_tail.h; SPARSA_PREFILL24_SSC_TAIL=1 or forced by a test): units [0, whole)
  // are raster tiles over all of K, units whole + s the shares of the last tail_tiles tiles
  // (share_chunks K-chunks each, crossing tile ends). `partials`: the workspace, two words per
  // (tail tile, CTA rank) at its start (arrivals, ready), the first piece's fp32 sums from
  // kCounterRegion on ([tail tile][rank], kBM x kBN floats each).
  float* partials;
  int64_t whole, tail_tiles;
  int32_t share_chunks;
  // Persistent form: the tile counter and the count of clusters done, in the workspace
  // (kCounterRegion - 16; zero before the first call, zeroed again by the last cluster).
  unsigned long long* counter;
  int32_t tma_store;  // persistent form, 16-bit Y: the epilogue by TMA stores (store_tma)
  // kACodes (session 19): compressed 2:4 codes in the decode tiling (sparsa/cuda_compressed.h):
  // its row groups of 8 tiles are this kernel's 128-row blocks, so each K chunk of a row block's
  // codes, metadata and scale pairs (8 slots of slot_bytes) is one contiguous bulk copy.
  const unsigned char* codes;
  const uint4* books;  // codebook4: [rows or 1][2 uint4]
  int32_t slot_bytes, spc, book_rows, code_kchunks;
};

// The staged epilogue: a warpgroup's m64 x 256 tile as [token][row] in shared memory (rows
// padded by one 16-byte chunk against bank conflicts), then 16-byte stores of whole 64-row
// runs of Y[token, ...] (direct stores write 16-byte pieces of four token rows per instruction).
template <typename OutT>
struct StagedTile {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(OutT));  // elements per 16 bytes
  static constexpr int kStride = 64 + kVec;                          // elements per token row
  static constexpr int kBytes = kBN * kStride * static_cast<int>(sizeof(OutT));
};
static_assert(2 * StagedTile<float>::kBytes <= kStages * kStageBytes, "staged tiles fit the slots");

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Epilogue of a CTA with one tile (p.staged): every stage is consumed, so the slots are idle
// once both consumer warpgroups finished their wgmmas. Warpgroup wg stages its tile at
// base + wg * StagedTile::kBytes, then its 128 threads store 16-byte chunks (8 consecutive threads
// cover one token's 64 rows for fp16 / bf16, 16 for fp32); chunks past `rows` element by element.
template <typename OutT>
__device__ __forceinline__ void store_staged(const float (&acc)[kBN / 2], uint32_t base,
                                             const SscParams& p, int64_t row_block, int64_t tok0,
                                             int wg, int wwarp, int lane) {
  using T = StagedTile<OutT>;
  named_barrier(1, kConsumerWarps * 32);  // both warpgroups' wgmmas are done with the slots
  const uint32_t tile = base + static_cast<uint32_t>(wg * T::kBytes);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < kBN / 2; ++i) {
    const int row = wwarp * 16 + g + 8 * ((i >> 1) & 1);
    const int tok = 8 * (i >> 2) + 2 * t + (i & 1);
    const uint32_t addr = tile + static_cast<uint32_t>((tok * T::kStride + row) * sizeof(OutT));
    if constexpr (sizeof(OutT) == 4) {
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(__float_as_uint(acc[i])) : "memory");
    } else {
      const OutT v = from_float<OutT>(acc[i]);
      asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(addr), "h"(*reinterpret_cast<const uint16_t*>(&v))
                   : "memory");
    }
  }
  named_barrier(2 + wg, 128);
  if (row_block >= p.row_blocks) return;
  constexpr int kChunks = 64 / T::kVec;  // 16-byte chunks per token row
  const int64_t row0 = row_block * kBM + wg * 64;
  const int tid = wwarp * 32 + lane;
  OutT* y = static_cast<OutT*>(p.y);
#pragma unroll 4
  for (int idx = tid; idx < kBN * kChunks; idx += 128) {
    const int tok = idx / kChunks, c = idx % kChunks;
    if (tok0 + tok >= p.m) break;  // tokens grow with idx
    uint4 v;
    const uint32_t addr = tile + static_cast<uint32_t>((tok * T::kStride + c * T::kVec) * sizeof(OutT));
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(addr)
                 : "memory");
    const int64_t row = row0 + c * T::kVec;
    OutT* dst = y + (tok0 + tok) * p.ldy + row;
    if (row + T::kVec <= p.rows) {
      *reinterpret_cast<uint4*>(dst) = v;
    } else {
      const OutT* e = reinterpret_cast<const OutT*>(&v);
      for (int j = 0; j < T::kVec && row + j < p.rows; ++j) dst[j] = e[j];
    }
  }
}

// A cluster's unit of work: a raster tile over stages [kt_begin, kt_end), piece >= 0 for one of
// the two pieces of a tail tile cut by a share's end.
struct WorkUnit {
  int64_t tile;
  int32_t kt_begin, kt_end, piece;
};
// Unit t's work as segments: a whole tile, or the 1-3 segments of share t - whole (ssc_tail.h).
// Producer and consumers walk the same segments, so their stage and chunk counts agree. A cursor
// rather than a callback, so that each loop body is inlined once.
struct SegmentCursor {
  int32_t q, q_end;  // chunks of the concatenated tail; q = -1: a whole tile not yet given
  int64_t tile;      // the whole tile
};
__device__ __forceinline__ SegmentCursor segments_of(const SscParams& p, int64_t t) {
  if (t < p.whole) return {-1, 0, t};
  const int32_t s = static_cast<int32_t>(t - p.whole);
  const Nm24SscTailPlan plan{p.tail_tiles, p.share_chunks, 0};
  return {s * p.share_chunks, ssc_share_end(plan, s, p.kt_count / 4), 0};
}
__device__ __forceinline__ bool next_segment(const SscParams& p, SegmentCursor& c, WorkUnit& w) {
  if (c.q < 0) {
    w = {c.tile, 0, p.kt_count, -1};
    c.q = c.q_end = 0;
    return true;
  }
  if (c.q >= c.q_end) return false;
  const int32_t kchunks = p.kt_count / 4;
  const SscSegment g = ssc_segment(c.q, c.q_end, kchunks);
  w = {p.whole + g.tile, 4 * g.chunk_begin, 4 * g.chunk_end, g.piece};
  c.q = g.tile * kchunks + g.chunk_end;
  return true;
}

// The end of a piece of a cut tail tile (per CTA rank: its own 128 rows). The first of the two
// pieces to arrive hands its sums over (float4 q of consumer thread ctid at q * 256 + ctid:
// coalesced 16-byte stores), publishes them (fence, then `ready`) and returns false; the second
// waits for `ready` (the first is already past its arrival, so the wait is short and cannot
// deadlock), adds the first's sums to its own (a + b = b + a: the same bits whichever piece
// arrives last), zeroes both words for the next call and returns true. `flag`: a free
// shared-memory word.
__device__ __forceinline__ bool stream_piece_reduce(float (&acc)[kBN / 2], const SscParams& p,
                                                    const WorkUnit& w, int cluster, uint32_t rank,
                                                    int ctid, uint32_t flag) {
  constexpr int kQuads = kBN / 8;  // float4 per consumer thread
  constexpr int64_t kSlot4 = int64_t{kBM} * kBN / 4;
  const int64_t t = (w.tile - p.whole) * cluster + rank;  // words and slot of this CTA's piece
  unsigned* arrivals = reinterpret_cast<unsigned*>(p.partials) + 2 * t;
  unsigned* ready = arrivals + 1;
  float4* slot = reinterpret_cast<float4*>(p.partials + kCounterRegion / 4) + t * kSlot4 + ctid;
  if (ctid == 0) {
    const uint32_t first = atomicAdd(arrivals, 1u) == 0;
    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(flag), "r"(first) : "memory");
  }
  named_barrier(1, kConsumerWarps * 32);
  if (lds_32(flag) != 0) {
#pragma unroll
    for (int q = 0; q < kQuads; ++q)
      __stcg(slot + q * 256, make_float4(acc[4 * q], acc[4 * q + 1], acc[4 * q + 2], acc[4 * q + 3]));
    __threadfence();
    named_barrier(1, kConsumerWarps * 32);  // the 8 consumer warps' sums are out
    if (ctid == 0) atomicExch(ready, 1u);
    return false;
  }
  if (ctid == 0) {
    while (atomicAdd(ready, 0u) == 0) __nanosleep(64);
    *arrivals = 0;
    *ready = 0;
  }
  named_barrier(1, kConsumerWarps * 32);
  __threadfence();  // acquire: the first piece's sums
#pragma unroll
  for (int q = 0; q < kQuads; ++q) {
    const float4 v = __ldcg(slot + q * 256);
    acc[4 * q] += v.x;
    acc[4 * q + 1] += v.y;
    acc[4 * q + 2] += v.z;
    acc[4 * q + 3] += v.w;
  }
  return true;
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// The persistent form's tile hand-out (kPersistent): rank 0's producer takes the next raster tile
// from a counter in global memory and writes it into a 2-deep ring of both CTAs (its own
// shared memory and, through distributed shared memory, its partner's), completing `tile_full`
// there; every reader (the partner's producer, all 16 consumer warps) arrives on rank 0's
// `tile_empty` once it has read its copy. A tile >= p.tiles ends the loop. Tiles are handed out
// in raster order as clusters free up, so the clusters in flight stay together along the raster
// (a fixed stride let them drift apart on long K and lose L2 reuse, session 16 run 2).
struct TileRing {
  uint32_t full, empty, ids;  // shared-memory addresses: 2 mbarriers, 2 mbarriers, 2 u32
};

// The persistent form's epilogue: the slots hold the next tile's stages, so each warpgroup
// stages its tile through its own small buffer in 8 passes of 32 tokens, 16-byte stores of
// whole 64-row runs as store_staged.
template <typename OutT>
struct PassTile {
  static constexpr int kTokens = 32;
  static constexpr int kBytes = kTokens * StagedTile<OutT>::kStride * static_cast<int>(sizeof(OutT));
};
constexpr int kPassBufferBytes = 2 * PassTile<float>::kBytes;  // both warpgroups, the widest type
// store_tma: passes of 32 tokens, a warp's 16 rows x 32 tokens of 16-bit Y a buffer. (Four
// buffers of 16 tokens instead measured level, session 18 rounds 3-4.)
constexpr int kTmaStoreTokens = 32;
constexpr int kTmaStoreBytes = kTmaStoreTokens * 16 * 2;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ void mbar_wait_cluster(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// Rank 0's producer: the next tile into use j's ring entry of both CTAs.
template <int kCluster>
__device__ __forceinline__ uint32_t hand_out_tile(const TileRing& ring, uint32_t j,
                                                  unsigned long long* counter) {
  const uint32_t r = j & 1, use = j >> 1;
  if (use > 0) mbar_wait(ring.empty + 8 * r, (use - 1) & 1);
  const uint32_t t = static_cast<uint32_t>(atomicAdd(counter, 1ull));
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(ring.ids + 4 * r), "r"(t) : "memory");
  mbar_arrive(ring.full + 8 * r);
#pragma unroll
  for (uint32_t partner = 1; partner < kCluster; ++partner)
    asm volatile(
        "{\n .reg .b32 rid, rbar;\n mapa.shared::cluster.u32 rid, %0, %3;\n"
        " mapa.shared::cluster.u32 rbar, %1, %3;\n st.shared::cluster.u32 [rid], %2;\n"
        " mbarrier.arrive.release.cluster.shared::cluster.b64 _, [rbar];\n}\n" ::"r"(ring.ids + 4 * r),
        "r"(ring.full + 8 * r), "r"(t), "r"(partner)
        : "memory");
  return t;
}

// Everyone else: use j's tile, then (one arrival per consumer warp, `whole_warp`, or the
// partner's producer thread alone) the entry is free again for rank 0.
template <int kCluster>
__device__ __forceinline__ uint32_t read_tile(const TileRing& ring, uint32_t j, uint32_t rank,
                                              bool whole_warp) {
  const uint32_t r = j & 1;
  mbar_wait_cluster(ring.full + 8 * r, (j >> 1) & 1);
  const uint32_t t = lds_32(ring.ids + 4 * r);
  if (whole_warp) __syncwarp();  // every lane has its copy before lane 0 frees the entry
  if (!whole_warp || (threadIdx.x & 31) == 0) {
    if (kCluster > 1 && rank != 0)
      mbar_arrive_cluster(ring.empty + 8 * r, 0);
    else
      mbar_arrive(ring.empty + 8 * r);
  }
  return t;
}

template <typename OutT>
__device__ __forceinline__ void store_passes(const float (&acc)[kBN / 2], uint32_t buffer,
                                             const SscParams& p, int64_t row_block, int64_t tok0,
                                             int wg, int wwarp, int lane) {
  using T = StagedTile<OutT>;
  constexpr int kChunks = 64 / T::kVec;
  const uint32_t tile = buffer + static_cast<uint32_t>(wg * PassTile<OutT>::kBytes);
  const int g = lane >> 2, t = lane & 3, tid = wwarp * 32 + lane;
  const int64_t row0 = row_block * kBM + wg * 64;
  OutT* y = static_cast<OutT*>(p.y);
#pragma unroll
  for (int q = 0; q < kBN / PassTile<OutT>::kTokens; ++q) {
    named_barrier(2 + wg, 128);  // the previous pass (or tile) is out of the buffer
#pragma unroll
    for (int i = q * 16; i < q * 16 + 16; ++i) {  // tokens [32 q, 32 q + 32) of the tile
      const int row = wwarp * 16 + g + 8 * ((i >> 1) & 1);
      const int tok = 8 * (i >> 2) + 2 * t + (i & 1) - q * PassTile<OutT>::kTokens;
      const uint32_t addr = tile + static_cast<uint32_t>((tok * T::kStride + row) * sizeof(OutT));
      if constexpr (sizeof(OutT) == 4) {
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(__float_as_uint(acc[i])) : "memory");
      } else {
        const OutT v = from_float<OutT>(acc[i]);
        asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(addr), "h"(*reinterpret_cast<const uint16_t*>(&v))
                     : "memory");
      }
    }
    named_barrier(2 + wg, 128);
    if (row_block >= p.row_blocks) continue;
#pragma unroll
    for (int idx = tid; idx < PassTile<OutT>::kTokens * kChunks; idx += 128) {
      const int tok = idx / kChunks, c = idx % kChunks;
      const int64_t gtok = tok0 + q * PassTile<OutT>::kTokens + tok;
      if (gtok >= p.m) continue;
      uint4 v;
      const uint32_t addr = tile + static_cast<uint32_t>((tok * T::kStride + c * T::kVec) * sizeof(OutT));
      asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "r"(addr)
                   : "memory");
      const int64_t row = row0 + c * T::kVec;
      OutT* dst = y + gtok * p.ldy + row;
      if (row + T::kVec <= p.rows) {
        *reinterpret_cast<uint4*>(dst) = v;
      } else {
        const OutT* e = reinterpret_cast<const OutT*>(&v);
        for (int k = 0; k < T::kVec && row + k < p.rows; ++k) dst[k] = e[k];
      }
    }
  }
}

// Two outputs of the accumulator layout as one 16-bit pair, the first in the low half.
template <typename OutT>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<OutT, __half>) {
    const __half2 h = __floats2half2_rn(lo, hi);
    std::memcpy(&r, &h, 4);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    std::memcpy(&r, &h, 4);
  }
  return r;
}

// The persistent form's epilogue for 16-bit Y (session 18, p.tma_store): each consumer warp
// sends its 16 rows x 256 tokens to Y through two 1 KB buffers of its own, 32 tokens a pass:
// two stmatrix.trans turn the accumulators into [token][16 rows] (32 bytes a token) and one TMA
// store takes the box, while the warp goes on (the next pass, the next tile's wgmmas) instead of
// storing through its registers as store_passes does. A buffer is written again once the store
// two passes back has read it; TMA leaves tokens >= p.m and rows >= p.rows unwritten (it writes
// whole 16-byte pieces, so the launch takes this path only where N is a multiple of 8). No
// barrier between warps.
template <typename OutT>
__device__ __forceinline__ void store_tma(const float (&acc)[kBN / 2], uint32_t buffer,
                                          const CUtensorMap* y_map, const SscParams& p,
                                          int64_t row_block, int64_t tok0, int wg, int wwarp,
                                          int lane) {
  static_assert(sizeof(OutT) == 2, "stmatrix moves 16-bit elements");
  const int64_t row = row_block * kBM + wg * 64 + wwarp * 16;
  if (row >= p.rows) return;  // warp-uniform: nothing of this warp's rows exists
  const uint32_t mine = buffer + static_cast<uint32_t>((wg * 4 + wwarp) * 2 * kTmaStoreBytes);
  // Matrix q = lane / 8 of an x4 is token block q / 2 (8 tokens) and row half q % 2; lane gives
  // the address of its token lane % 8 there.
  const int q = lane >> 3;
  const uint32_t lane_off = static_cast<uint32_t>((8 * (q >> 1) + (lane & 7)) * 32 + (q & 1) * 16);
#pragma unroll
  for (int pass = 0; pass < kBN / kTmaStoreTokens; ++pass) {
    const uint32_t buf = mine + static_cast<uint32_t>((pass & 1) * kTmaStoreBytes);
    if (lane == 0) bulk_wait_read<1>();  // the store two passes back (maybe last tile's) read it
    __syncwarp();
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // token blocks j, j + 1: elements 4j .. 4j + 7
      const int j = pass * 4 + 2 * h;
      stmatrix_x4_trans(buf + static_cast<uint32_t>(h * 512) + lane_off,
                        pack_pair<OutT>(acc[4 * j], acc[4 * j + 1]),
                        pack_pair<OutT>(acc[4 * j + 2], acc[4 * j + 3]),
                        pack_pair<OutT>(acc[4 * j + 4], acc[4 * j + 5]),
                        pack_pair<OutT>(acc[4 * j + 6], acc[4 * j + 7]));
    }
    fence_proxy_async_shared();
    __syncwarp();
    if (lane == 0) {
      tma_store_2d(y_map, buf, static_cast<int32_t>(row),
                   static_cast<int32_t>(tok0 + pass * kTmaStoreTokens));
      bulk_commit();
    }
  }
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Shared memory: kStages slots (X | W) | 2 metadata chunk buffers | full and empty mbarriers |
// the tail flag | the tile ring | the persistent form's epilogue buffer.
constexpr int kRingBytes = 48;
constexpr int kKernelSmemBytes =
    kSmemBytes + kRingBytes + 128 /* buffer alignment */ + kPassBufferBytes;
static_assert(kConsumerWarps * 2 * kTmaStoreBytes <= kPassBufferBytes, "store_tma's buffers fit");
static_assert(kKernelSmemBytes <= 227 * 1024, "over the 227 KB of shared memory per CTA");

// Where the consumers get A (the weights) from: kADesc, values_k in the stage by descriptor
// (shared-memory A); kASmem, the fragments in the stage, one 16-byte shared load per warp, k-step
// and lane (register A). (Fragments straight from global memory into a 4-stage register ring
// instead measured 1.12x cuSPARSELt's time against 0.98, session 17: ptxas sank the loads to
// one stage ahead.)
constexpr int kADesc = 0, kASmem = 1;
// kACodes (session 19): each consumer warp decodes its A fragments from compressed codes in a
// per-chunk buffer (decode_a, as the decode kernels) and runs the register-A wgmma. Four X stages
// of 32 KB and two chunk buffers fit in the slots of the other layouts' five stages.
constexpr int kACodes = 2;
constexpr int kCodeChunkBytes = 29 * 1024;  // 8 slots: 2 KB codes, <= 1 KB metadata, scales
constexpr int kCodeStages = 4;
static_assert(kCodeStages * kXBytes + 2 * kCodeChunkBytes <= kStages * kStageBytes,
              "the code chunks fit the stage slots");
// Stages (of 2 k-steps) per K chunk of the codes: int8 chunks of 8 k-steps, 4-bit ones of 16.
constexpr int code_chunk_stages(CodeType c) { return c == CodeType::Int8 ? 4 : 8; }

template <typename Elem, typename OutT, int kCluster, bool kPersistent, int kA,
          CodeType kCode = CodeType::F16>
__global__ void __launch_bounds__(kThreads, 1)
    nm24_wgmma_ssc_kernel(const __grid_constant__ CUtensorMap x_map,
                          const __grid_constant__ CUtensorMap a_map,
                          const __grid_constant__ CUtensorMap e_map,
                          const __grid_constant__ CUtensorMap y_map, const SscParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kCodes = kA == kACodes;
  constexpr int kS = kCodes ? kCodeStages : kStages;              // stages in the ring
  constexpr uint32_t kSB = kCodes ? kXBytes : kStageBytes;         // bytes a stage
  constexpr int kChunkStages = kCodes ? code_chunk_stages(kCode) : 4;
  constexpr uint32_t kChunkBuf = kCodes ? kCodeChunkBytes : kMetaBytes;
  extern __shared__ unsigned char smem_raw[];
  // The same offset in every CTA (multicast writes and remote arrivals address it by offset).
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  // The two chunk buffers (metadata, or the codes' chunks), by chunk parity.
  const uint32_t meta_base = kCodes ? base + kS * kSB : base + kStages * kStageBytes;
  const uint32_t full_bar = base + kStages * kStageBytes + 2 * kMetaBytes;
  const uint32_t empty_bar = full_bar + kStages * 8;
  const uint32_t flag = empty_bar + kStages * 8;
  const TileRing ring{flag + 16, flag + 32, flag + 48};
  const uint32_t pass_buffer = (flag + 16 + kRingBytes + 127) & ~127u;  // TMA stores read it
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t rank = kCluster == 1 ? 0 : cluster_ctarank();

  if (threadIdx.x == 0) {
    init_stage_barriers(full_bar, empty_bar, kS, kConsumerWarps * kCluster);
    if constexpr (kPersistent)
      for (int r = 0; r < 2; ++r) {
        mbar_init(ring.full + 8 * r, 1);
        mbar_init(ring.empty + 8 * r, kConsumerWarps * kCluster + (kCluster - 1));
      }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if constexpr (kCluster == 1)
    __syncthreads();
  else
    cluster_sync();

  // Pipeline state carried from one unit of work to the next (persistent form).
  int slot = 0;
  uint32_t round = 0, chunk = 0;

  if (warp < 4) {  // ---- producer warpgroup: X, W and metadata by TMA, issued by one thread
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (warp == 0 && lane == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&x_map)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&a_map)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&e_map)) : "memory");
      auto produce = [&](const WorkUnit& w) {
        const RasterTile tile = grouped_raster_tile(w.tile, p.group, p.row_units, p.token_tiles, kBN);
        // A CTA past the last row block (odd row_blocks, cluster of 2) still loads its half of X
        // for its partner; it reads the last block's W and metadata and stores nothing.
        const int32_t row_block =
            min(static_cast<int32_t>(tile.row_block) * kCluster + static_cast<int32_t>(rank),
                p.row_blocks - 1);
        const int32_t tok0 = static_cast<int32_t>(tile.tok0);
        const uint32_t chunk_bytes = kCodes ? 8u * static_cast<uint32_t>(p.slot_bytes) : kMetaBytes;
        for (int32_t kt = w.kt_begin; kt < w.kt_end; ++kt) {
          if (round > 0) mbar_wait(empty_bar + 8 * slot, (round - 1) & 1);
          const uint32_t full = full_bar + 8 * slot;
          const bool chunk_start = kCodes ? kt % kChunkStages == 0 : (kt & 3) == 0;
          mbar_expect_tx(full, kSB + (chunk_start ? chunk_bytes : 0));
          const uint32_t dst = base + slot * kSB;
          if constexpr (kCluster > 1) {
            constexpr int kPart = x_part_tokens(kCluster);
            tma_load_2d_multicast(dst + rank * kPart * 128, &x_map, kt * kStageCols,
                                  tok0 + static_cast<int32_t>(rank) * kPart, full,
                                  (1u << kCluster) - 1);
          } else {
            tma_load_2d(dst, &x_map, kt * kStageCols, tok0, full);
            tma_load_2d(dst + kXHalfBytes, &x_map, kt * kStageCols, tok0 + kXHalfTokens, full);
          }
          if constexpr (kA == kASmem)  // the 8 row tiles' fragments of the stage's 2 k-steps, 1 KB each
            tma_load_2d(dst + kXBytes, &a_map, kt * 256, row_block * (kBM / 16), full);
          else if constexpr (kA == kADesc)
            tma_load_2d(dst + kXBytes, &a_map, kt * (kStageCols / 2), row_block * kBM, full);
          if (chunk_start) {
            if constexpr (kCodes)  // the row block's 8 slots of this chunk, contiguous
              bulk_load_1d(meta_base + (chunk & 1) * kChunkBuf,
                           p.codes + (static_cast<int64_t>(row_block) * p.code_kchunks + kt / kChunkStages) *
                                         8 * p.slot_bytes,
                           chunk_bytes, full);
            else
              tma_load_2d(meta_base + (chunk & 1) * kMetaBytes, &e_map, (kt >> 2) * 128,
                          row_block * (kBM / 16), full);
            ++chunk;
          }
          if (++slot == kS) {
            slot = 0;
            ++round;
          }
        }
      };
      if constexpr (kPersistent) {
        for (uint32_t j = 0;; ++j) {
          const uint32_t t = rank == 0 ? hand_out_tile<kCluster>(ring, j, p.counter)
                                       : read_tile<kCluster>(ring, j, rank, false);
          if (t >= p.tiles) break;
          SegmentCursor c = segments_of(p, t);
          for (WorkUnit w; next_segment(p, c, w);) produce(w);
        }
        // The last cluster to finish zeroes the counters for the next call.
        if (rank == 0 && atomicAdd(p.counter + 1, 1ull) == gridDim.x / kCluster - 1) {
          p.counter[0] = 0;
          p.counter[1] = 0;
        }
      } else {
        produce(WorkUnit{blockIdx.x / kCluster, 0, p.kt_count, -1});  // no streamed tail here
      }
    }
  } else {  // ---- consumers: warpgroup wg owns weight rows [128 rb + 64 wg, +64)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int wg = warp / 4 - 1, wwarp = warp % 4;
    // This warp's metadata: row tile 4 wg + wwarp of the chunk buffer, the lane's 16 bytes.
    const uint32_t e_off = static_cast<uint32_t>((wg * 4 + wwarp) * 512 + lane * 16);
    const uint32_t a_off = static_cast<uint32_t>(kXBytes + wg * 4096);  // m64 tile: 4 KB
    // kASmem: this warp's row tile, k-step 0 of the stage; k-step 1 512 bytes on.
    const uint32_t frag_off = static_cast<uint32_t>(kXBytes + (wg * 4 + wwarp) * 1024 + lane * 16);
    uint32_t a[2][2][4];  // [stage parity][k-step]: registers a wgmma still in flight may read
    float acc[kBN / 2];
    uint32_t e[2];  // [stage parity]: a stage's word while the previous stage's wgmma may run
    uint32_t& phase = round;  // the consumers' count of ring wraps, as a parity
    auto release = [&](int s) {
      if (lane == 0) {
        mbar_arrive(empty_bar + 8 * s);
#pragma unroll
        for (uint32_t q = 1; q < kCluster; ++q) mbar_arrive_cluster(empty_bar + 8 * s, rank ^ q);
      }
    };
    auto consume = [&](const WorkUnit& w) {
      const RasterTile tile = grouped_raster_tile(w.tile, p.group, p.row_units, p.token_tiles, kBN);
      const int64_t row_block = tile.row_block * kCluster + rank;
      // kCodes, codebook4: this lane's two rows' codebooks (rows past N read the last one).
      Book book0{}, book1{};
      if constexpr (kCodes && kCode == CodeType::Codebook4) {
        const int64_t row = row_block * kBM + (wg * 4 + wwarp) * 16 + lane / 4;
        book0 = load_book(p.books, row < p.rows ? row : p.rows - 1, p.book_rows);
        book1 = load_book(p.books, row + 8 < p.rows ? row + 8 : p.rows - 1, p.book_rows);
      }
      int prev_slot = 0;
#pragma unroll 1
      for (int32_t kt0 = w.kt_begin; kt0 < w.kt_end; kt0 += 2) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int32_t kt = kt0 + h;
          mbar_wait(full_bar + 8 * slot, phase & 1);
          if constexpr (kCodes) {  // this warp's slot of the chunk: metadata, codes, scale pairs
            const SlotLayout<kCode> layout{SlotLayout<kCode>::shift_of(2 * kChunkStages), p.spc};
            const uint32_t cs = meta_base + (chunk & 1) * kChunkBuf +
                                static_cast<uint32_t>((wg * 4 + wwarp) * p.slot_bytes);
            const int s0 = 2 * (kt % kChunkStages);  // the stage's first k-step in the chunk
            e[h] = lds_32(cs + layout.meta(s0, lane));
#pragma unroll
            for (int ks = 0; ks < 2; ++ks)
              decode_slot_kstep<kCode>(a[h][ks], layout, [cs](uint32_t o) { return lds_32(cs + o); },
                                       s0 + ks, lane, book0, book1);
            if (kt % kChunkStages == kChunkStages - 1) ++chunk;
          } else {
            e[h] = lds_32(meta_base + (chunk & 1) * kMetaBytes + e_off + static_cast<uint32_t>(kt & 3) * 4);
            if ((kt & 3) == 3) ++chunk;
          }
          const uint32_t xs = base + slot * kSB;
          if constexpr (kA == kASmem) {
            lds_128(a[h][0], xs + frag_off);
            lds_128(a[h][1], xs + frag_off + 512);
          }
          wgmma_fence();
          if constexpr (kA != kADesc) {
            wgmma_sp_rs_m64n256<Elem, 0>(acc, a[h][0], b_desc(xs), e[h], kt != w.kt_begin ? 1u : 0u);
            wgmma_sp_rs_m64n256<Elem, 1>(acc, a[h][1], b_desc(xs + 64), e[h], 1u);
          } else {
            wgmma_sp_ss_m64n256<Elem, 0>(acc, a_desc_sw64(xs + a_off), b_desc(xs), e[h],
                                         kt != w.kt_begin ? 1u : 0u);
            wgmma_sp_ss_m64n256<Elem, 1>(acc, a_desc_sw64(xs + a_off + 32), b_desc(xs + 64), e[h],
                                         1u);
          }
          wgmma_commit();
          wgmma_wait<1>();  // stage kt - 1 done: its slot and registers (metadata, A) are free
          if (kt > w.kt_begin) release(prev_slot);
          prev_slot = slot;
          if (++slot == kS) {
            slot = 0;
            ++phase;
          }
        }
      }
      wgmma_wait<0>();
      // The accumulators are final only now: keep every read of them (spill code included: the
      // fp32-output epilogues spill) behind the wait. Without this ptxas stored the registers
      // right after the last wgmma was issued, before it had written them.
      fence_accumulators(acc);
      // The partner's producer may still wait for this last slot (its stage count is the same).
      release(prev_slot);
      const bool store =
          w.piece < 0 || stream_piece_reduce(acc, p, w, kCluster, rank, wg * 128 + wwarp * 32 + lane, flag);
      if constexpr (kPersistent && sizeof(OutT) == 2) {
        if (store && p.tma_store) {
          store_tma<OutT>(acc, pass_buffer, &y_map, p, row_block, tile.tok0, wg, wwarp, lane);
          return;
        }
      }
      if (store && p.staged && kPersistent)
        store_passes<OutT>(acc, pass_buffer, p, row_block, tile.tok0, wg, wwarp, lane);
      else if (store && p.staged)
        store_staged<OutT>(acc, base, p, row_block, tile.tok0, wg, wwarp, lane);
      else if (store && row_block < p.row_blocks)
        store_m64n<OutT, kBN>(static_cast<OutT*>(p.y), p.ldy, acc, row_block * kBM + wg * 64,
                              tile.tok0, p.rows, p.m, wwarp, lane);
    };
    if constexpr (kPersistent) {
#pragma unroll 1
      for (uint32_t j = 0;; ++j) {
        const uint32_t t = read_tile<kCluster>(ring, j, rank, true);
        if (t >= p.tiles) break;
        SegmentCursor c = segments_of(p, t);
        for (WorkUnit w; next_segment(p, c, w);) consume(w);
      }
      // Y complete, and the buffers read, before the CTA's shared memory goes.
      if (sizeof(OutT) == 2 && p.tma_store && lane == 0) bulk_wait<0>();
    } else {
      consume(WorkUnit{blockIdx.x / kCluster, 0, p.kt_count, -1});
    }
  }
  // No CTA may leave while its partner can still arrive on its barriers or write into its slots.
  if constexpr (kCluster > 1) {
    __syncwarp();
    cluster_sync();
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

int sm_count() {
  static const int sms = [] {
    int device = 0, n = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0)
      n = 132;
    return n;
  }();
  return sms;
}

// Weight rows per raster group: kGroupRows, or SPARSA_PREFILL24_GROUP_ROWS (for A/B runs).
int group_rows() {
  static const int rows = [] {
    const char* v = std::getenv("SPARSA_PREFILL24_GROUP_ROWS");
    const int r = v ? std::atoi(v) : 0;
    return r >= kBM ? r : kGroupRows;
  }();
  return rows;
}

// SPARSA_PREFILL24_EPILOGUE=direct: accumulators straight to Y even with one tile per CTA (A/B).
bool staged_epilogue_on() {
  static const bool on = [] {
    const char* v = std::getenv("SPARSA_PREFILL24_EPILOGUE");
    return !(v && std::strcmp(v, "direct") == 0);
  }();
  return on;
}
// SPARSA_PREFILL24_EPILOGUE=passes or direct: no TMA stores in the persistent form (A/B).
bool tma_epilogue_on() {
  static const bool on = [] {
    const char* v = std::getenv("SPARSA_PREFILL24_EPILOGUE");
    return !(v && (std::strcmp(v, "direct") == 0 || std::strcmp(v, "passes") == 0));
  }();
  return on;
}

// A launch of `clusters` clusters of kCluster CTAs of the kernel on `stream` (attr: the storage
// of the one launch attribute, the cluster shape).
template <int kCluster>
cudaLaunchConfig_t ssc_launch_config(int64_t clusters, cudaStream_t stream, cudaLaunchAttribute& attr) {
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = kCluster;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(clusters * kCluster));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = kKernelSmemBytes;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cfg;
}

// Clusters of kCluster CTAs resident at once (cached per cluster size; every instantiation has
// the same registers and shared memory). GPCs need not split into pairs evenly.
template <int kCluster>
int resident_clusters() {
  static const int n = [] {
    if (kCluster == 1) return sm_count();
    auto kernel = nm24_wgmma_ssc_kernel<F16, float, kCluster, false, kADesc>;
    int r = 0;
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg =
        ssc_launch_config<kCluster>(std::max(1, sm_count() / kCluster), nullptr, attr);
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kKernelSmemBytes) !=
            cudaSuccess ||
        cudaOccupancyMaxActiveClusters(&r, kernel, &cfg) != cudaSuccess || r < 1) {
      cudaGetLastError();
      r = sm_count() / kCluster;
    }
    return r;
  }();
  return n;
}
int resident_clusters(int cluster) {
  return cluster == 4 ? resident_clusters<4>() : cluster == 2 ? resident_clusters<2>() : resident_clusters<1>();
}

// The streamed tail of v12 for w and m (ssc_tail.h) over cluster tiles on `clusters` resident
// clusters (0: the device's), and the workspace it needs: the counter region (two words per tail
// tile and CTA rank, then the tile counter) and one fp32 tile per tail tile and rank.
struct SscTail {
  Nm24SscTailPlan plan;
  size_t bytes = 0;
};
SscTail ssc_tail(const Nm24Weights& w, int64_t m, int cluster, int clusters) {
  const int64_t row_units = (w.rows_padded / kBM + cluster - 1) / cluster;
  const int64_t tiles = row_units * ((m + kBN - 1) / kBN);
  SscTail t;
  t.plan = nm24_ssc_tail_plan(tiles, w.cols_padded / kKChunk,
                              clusters > 0 ? clusters : resident_clusters(cluster));
  if (t.plan.tail_tiles * cluster * 8 > static_cast<int64_t>(kCounterRegion) - 16) t.plan = {};
  if (t.plan.shares > 0)
    t.bytes = kCounterRegion + static_cast<size_t>(t.plan.tail_tiles) * cluster * kBM * kBN * sizeof(float);
  return t;
}

template <typename Elem, typename OutT, int kCluster, bool kPersistent, int kA,
          CodeType kCode = CodeType::F16>
cudaError_t launch_kernel(const CUtensorMap& x_map, const CUtensorMap& a_map,
                          const CUtensorMap& e_map, const SscParams& p, Nm24SscStore store,
                          cudaStream_t stream) {
  auto kernel = nm24_wgmma_ssc_kernel<Elem, OutT, kCluster, kPersistent, kA, kCode>;
  if (cudaError_t e =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kKernelSmemBytes);
      e != cudaSuccess)
    return e;
  cudaLaunchAttribute attr;
  const int64_t clusters =
      kPersistent ? std::min<int64_t>(p.tiles, resident_clusters<kCluster>()) : p.tiles;
  const cudaLaunchConfig_t cfg = ssc_launch_config<kCluster>(clusters, stream, attr);
  SscParams q = p;
  // 16-byte stores need Y and every token row 16-byte aligned (row blocks start at multiples of 64).
  const bool aligned = reinterpret_cast<uintptr_t>(p.y) % 16 == 0 &&
                       (p.ldy * static_cast<int64_t>(sizeof(OutT))) % 16 == 0;
  q.staged = staged_epilogue_on() && aligned;
  // TMA stores: the persistent form with a 16-bit Y, boxes of one warp's 16 rows x 32 tokens.
  // TMA writes whole 16-byte pieces of a row, so rows past N up to the next 8 would be written
  // too (session 18, measured): N must be a multiple of 8. The map is encoded only when used.
  CUtensorMap y_map{};
  const bool tma_fits = kPersistent && sizeof(OutT) == 2 && aligned && p.rows % 8 == 0;
  const bool tma_wanted =
      store == Nm24SscStore::Tma || (store == Nm24SscStore::Auto && tma_epilogue_on());
  q.tma_store = tma_fits && tma_wanted &&
                encode_y16_map(&y_map, p.y, p.rows, p.m, p.ldy, 16, kTmaStoreTokens);
  if (store == Nm24SscStore::Tma && !q.tma_store) return cudaErrorInvalidValue;
  if (cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, x_map, a_map, e_map, y_map, q);
      e != cudaSuccess)
    return e;
  return cudaGetLastError();
}

// A launch of the kernel for Elem, the output type, cluster size, form and A layout.
template <typename Elem, int kA>
cudaError_t launch_form(const CUtensorMap& x_map, const CUtensorMap& a_map, const CUtensorMap& e_map,
                        const SscParams& p, ElemType y_type, int cluster, bool persistent,
                        Nm24SscStore store, cudaStream_t stream) {
  return dispatch_out(y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    auto run = [&](auto kernel_cluster, auto kernel_persistent) {
      return launch_kernel<Elem, OutT, decltype(kernel_cluster)::value,
                           decltype(kernel_persistent)::value, kA>(x_map, a_map, e_map, p, store,
                                                                   stream);
    };
    using Yes = std::true_type;
    using No = std::false_type;
    using C1 = std::integral_constant<int, 1>;
    using C2 = std::integral_constant<int, 2>;
    using C4 = std::integral_constant<int, 4>;
    if (persistent)
      return cluster == 4 ? run(C4{}, Yes{}) : cluster == 2 ? run(C2{}, Yes{}) : run(C1{}, Yes{});
    return cluster == 4 ? run(C4{}, No{}) : cluster == 2 ? run(C2{}, No{}) : run(C1{}, No{});
  });
}

template <typename Elem>
cudaError_t launch(const Nm24Weights& w, const GemmProblem& pr, int cluster, int tail_clusters,
                   bool persistent, Nm24SscA a, Nm24SscStore store, cudaStream_t stream) {
  const bool fragments = a == Nm24SscA::Fragments;
  if (!encode_fn()) return cudaErrorNotSupported;
  CUtensorMap x_map{}, a_map{}, e_map{};
  static_assert(kStageCols == 64, "encode_ss_maps loads stages of 64 columns");
  if (!encode_ss_maps<Elem>(w, pr, x_part_tokens(cluster), kBM, &x_map, &a_map, &e_map, fragments))
    return cudaErrorInvalidValue;
  SscParams p{};
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.m = pr.m;
  p.rows = w.rows;
  p.kt_count = static_cast<int32_t>(w.cols_padded / kStageCols);
  p.row_blocks = static_cast<int32_t>(w.rows_padded / kBM);
  p.row_units = (p.row_blocks + cluster - 1) / cluster;
  p.token_tiles = static_cast<int32_t>((pr.m + kBN - 1) / kBN);
  p.tiles = static_cast<int64_t>(p.row_units) * p.token_tiles;
  p.group = std::max(1, group_rows() / (kBM * cluster));
  p.whole = p.tiles;
  if (persistent) {  // the tile counter at the end of the workspace's counter region
    if (!pr.workspace || pr.workspace_bytes < kCounterRegion ||
        reinterpret_cast<uintptr_t>(pr.workspace) % 16 != 0 ||
        w.rows_padded / 16 * 4 > static_cast<int64_t>(kCounterRegion) - 16 || p.tiles >= INT32_MAX)
      return cudaErrorInvalidValue;
    p.counter = reinterpret_cast<unsigned long long*>(static_cast<char*>(pr.workspace) +
                                                      kCounterRegion - 16);
  }
  // The streamed tail of the waves of its resident clusters, in the persistent form only (a
  // share's segments follow each other in one CTA, so the one-cluster-per-tile form's epilogue,
  // staged in the slots the next segment is loaded into, cannot take them).
  if (tail_clusters >= 0) {
    const SscTail tail = ssc_tail(w, pr.m, cluster, tail_clusters);
    const bool fits = persistent && tail.plan.shares > 0 && pr.workspace && pr.workspace_bytes >= tail.bytes &&
                      reinterpret_cast<uintptr_t>(pr.workspace) % 16 == 0;
    if (tail_clusters > 0 && !fits) return cudaErrorInvalidValue;  // forced: say so
    if (fits) {
      p.partials = static_cast<float*>(pr.workspace);
      p.tail_tiles = tail.plan.tail_tiles;
      p.share_chunks = tail.plan.share_chunks;
      p.whole = p.tiles - tail.plan.tail_tiles;
      p.tiles = p.whole + tail.plan.shares;
    }
  }
  if (a == Nm24SscA::Fragments)
    return launch_form<Elem, kASmem>(x_map, a_map, e_map, p, pr.y_type, cluster, persistent, store,
                                     stream);
  return launch_form<Elem, kADesc>(x_map, a_map, e_map, p, pr.y_type, cluster, persistent, store,
                                   stream);
}

// SPARSA_PREFILL24_SSC_TAIL=1 turns v12's streamed tail on (ssc_tail.h; session 16's tail split
// into equal pieces, which it replaced, had measured no gain: 11008 x 4096 m = 2048, 230.5 |
// 236.5 us per call | graph against 230.8 | 233.6 unsplit).
bool ssc_tail_on() {
  static const bool on = [] {
    const char* v = std::getenv("SPARSA_PREFILL24_SSC_TAIL");
    return v && std::strcmp(v, "1") == 0;
  }();
  return on;
}

}  // namespace

Nm24SscMode nm24_prefill_ssc_mode() {
  static const Nm24SscMode mode = [] {
    Nm24SscMode m;
    m.persistent = true;  // session 16 run 7: 0.95 of one-cluster-per-tile's time in the median
    // v12 unless v8 is asked for (ss128, ss192, ssv8) or the register-A kernel (v5g*).
    const char* v = std::getenv("SPARSA_PREFILL24");
    m.on = !v || std::strcmp(v, "ss") == 0 || std::strncmp(v, "ssc", 3) == 0;
    if (m.on && v) {
      m.cluster = std::strncmp(v, "ssc1", 4) == 0 ? 1 : std::strncmp(v, "ssc4", 4) == 0 ? 4 : 2;
      m.persistent = std::strstr(v, "np") == nullptr;  // ssc*np: one cluster per tile
    }
    // SPARSA_PREFILL24_SSC_CLUSTER=1|2|4: the cluster size on either layout (A/B runs, session 17).
    const char* c = std::getenv("SPARSA_PREFILL24_SSC_CLUSTER");
    if (c && (std::strcmp(c, "1") == 0 || std::strcmp(c, "2") == 0 || std::strcmp(c, "4") == 0))
      m.cluster = c[0] - '0';
    return m;
  }();
  return mode;
}

double nm24_prefill_ssc_wave_fill(const Nm24Weights& w, int64_t m) {
  if (m < 1 || w.rows_padded < 1 || !nm24_wgmma_ssc_supported()) return 0;
  const int cluster = nm24_prefill_ssc_mode().cluster;
  const int64_t units = (w.rows_padded / kBM + cluster - 1) / cluster;
  const int64_t tiles = units * ((m + kBN - 1) / kBN), clusters = resident_clusters(cluster);
  const int64_t waves = (tiles + clusters - 1) / clusters;
  return static_cast<double>(tiles) / static_cast<double>(waves * clusters);
}

bool nm24_prefill_takes_ssc_fragments(const Nm24Weights& w, int64_t m) {
  // A shape without pointers (workspace queries) counts as the default layout, fragments.
  return m >= kSscMinM && (w.values || !w.values_k) && !(w.values_k && nm24_prefill_takes_ss(w)) &&
         nm24_prefill_ssc_mode().on && nm24_wgmma_ssc_supported() &&
         (m >= kSscFillFreeM || nm24_prefill_ssc_wave_fill(w, m) >= kSscMinWaveFill);
}

bool nm24_wgmma_ssc_supported() {
  return hopper_wgmma_usable([] {
    return has_sm90a_body(nm24_wgmma_ssc_kernel<F16, float, 2, false, kADesc>) &&
           has_sm90a_body(nm24_wgmma_ssc_kernel<BF16, __nv_bfloat16, 1, true, kASmem>);
  });
}

Nm24SscTailPlan nm24_prefill_ssc_tail_plan(const Nm24Weights& w, int64_t m, int cluster) {
  if (m < 1 || (cluster != 1 && cluster != 2 && cluster != 4) || !ssc_tail_on() ||
      !nm24_wgmma_ssc_supported())
    return {};
  return ssc_tail(w, m, cluster, 0).plan;
}
int nm24_prefill_ssc_resident_clusters(int cluster) {
  return nm24_wgmma_ssc_supported() && (cluster == 1 || cluster == 2 || cluster == 4)
             ? resident_clusters(cluster)
             : 0;
}

size_t nm24_prefill_ssc_workspace_bytes(const Nm24Weights& w, int64_t m, int cluster,
                                        bool persistent) {
  if (m < 1 || (cluster != 1 && cluster != 2 && cluster != 4) || !nm24_wgmma_ssc_supported()) return 0;
  if (!persistent) return 0;  // the streamed tail runs in the persistent form only
  const size_t tail = ssc_tail_on() ? ssc_tail(w, m, cluster, 0).bytes : 0;
  return std::max(kCounterRegion, tail);
}

cudaError_t nm24_prefill_wgmma_ssc(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream,
                                   int cluster, int tail_clusters, bool persistent, Nm24SscA a,
                                   Nm24SscStore store) {
  if (w.type != ElemType::F16 && w.type != ElemType::BF16) return cudaErrorInvalidValue;
  if (cluster != 1 && cluster != 2 && cluster != 4) return cudaErrorInvalidValue;
  if (a == Nm24SscA::Auto) a = w.values_k ? Nm24SscA::RowMajor : Nm24SscA::Fragments;
  const void* values = a == Nm24SscA::RowMajor ? w.values_k : w.values;
  if (!values || !w.meta || reinterpret_cast<uintptr_t>(values) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w.meta) % 16 != 0)
    return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.x || !pr.y || pr.ldx < w.cols) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (w.rows_padded % kRowTile != 0 || w.cols_padded % kKChunk != 0) return cudaErrorInvalidValue;
  if (pr.m > INT32_MAX / 2 || w.cols_padded > INT32_MAX / 2 || w.rows_padded > INT32_MAX / 2)
    return cudaErrorInvalidValue;
  if (!nm24_wgmma_ssc_supported()) return cudaErrorNotSupported;
  if (tail_clusters == 0 && !ssc_tail_on()) tail_clusters = -1;
  return w.type == ElemType::F16
             ? launch<F16>(w, pr, cluster, tail_clusters, persistent, a, store, stream)
             : launch<BF16>(w, pr, cluster, tail_clusters, persistent, a, store, stream);
}

namespace {

// The parameters every v12 launch shares: Y, the tile grid, the raster group and the persistent
// form's counter at the end of the workspace's counter region (false: a missing or short
// workspace).
bool persistent_params(SscParams& p, const GemmProblem& pr, int64_t rows, int64_t rows_padded,
                       int64_t kt_count, int cluster) {
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.m = pr.m;
  p.rows = rows;
  p.kt_count = static_cast<int32_t>(kt_count);
  p.row_blocks = static_cast<int32_t>(rows_padded / kBM);
  p.row_units = (p.row_blocks + cluster - 1) / cluster;
  p.token_tiles = static_cast<int32_t>((pr.m + kBN - 1) / kBN);
  p.tiles = static_cast<int64_t>(p.row_units) * p.token_tiles;
  p.group = std::max(1, group_rows() / (kBM * cluster));
  p.whole = p.tiles;
  if (!pr.workspace || pr.workspace_bytes < kCounterRegion ||
      reinterpret_cast<uintptr_t>(pr.workspace) % 16 != 0 || p.tiles >= INT32_MAX)
    return false;
  p.counter = reinterpret_cast<unsigned long long*>(static_cast<char*>(pr.workspace) +
                                                    kCounterRegion - 16);
  return true;
}

template <CodeType kCode>
cudaError_t launch_codes(const CUtensorMap& x_map, const SscParams& p, ElemType y_type,
                         cudaStream_t stream) {
  if (y_type == ElemType::F32)
    return launch_kernel<F16, float, 2, true, kACodes, kCode>(x_map, x_map, x_map, p,
                                                             Nm24SscStore::Auto, stream);
  return launch_kernel<F16, __half, 2, true, kACodes, kCode>(x_map, x_map, x_map, p,
                                                            Nm24SscStore::Auto, stream);
}

}  // namespace

bool compressed_prefill_ssc_supported() {
  return nm24_wgmma_ssc_supported() && hopper_wgmma_usable([] {
           return has_sm90a_body(
               nm24_wgmma_ssc_kernel<F16, __half, 2, true, kACodes, CodeType::Codebook4>);
         });
}

size_t compressed_prefill_ssc_workspace_bytes() { return kCounterRegion; }

bool compressed_prefill_reads_codes(const CompressedWeights& w, int64_t m) {
  static const bool expand = [] {
    const char* v = std::getenv("SPARSA_COMPRESSED_PREFILL");
    return v && std::strcmp(v, "expand") == 0;
  }();
  return !expand && !w.vnm && !w.bitmap && w.code != CodeType::F16 &&
         w.ksteps == 2 * code_chunk_stages(w.code) && compressed_prefill_ssc_supported() &&
         nm24_prefill_takes_ssc_fragments(expanded_nm24_shape(w), m);
}

cudaError_t compressed_prefill_ssc(const CompressedWeights& w, const GemmProblem& pr,
                                   cudaStream_t stream) {
  if (w.vnm || w.bitmap || w.code == CodeType::F16 || !w.tiles ||
      (w.code == CodeType::Codebook4 && !w.books))
    return cudaErrorInvalidValue;
  if (w.ksteps != 2 * code_chunk_stages(w.code)) return cudaErrorInvalidValue;
  const int64_t slot = compressed_slot_bytes(w.code, w.ksteps, w.scales_per_chunk);
  const int code_words = w.code == CodeType::Int8 ? w.ksteps / 2 : w.ksteps / 4;
  if (code_words * 512 != 2048 || 8 * slot > kCodeChunkBytes) return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.x || !pr.y || pr.ldx < w.cols || pr.ldx % 8 != 0 ||
      reinterpret_cast<uintptr_t>(pr.x) % 16 != 0 || reinterpret_cast<uintptr_t>(w.tiles) % 16 != 0)
    return cudaErrorInvalidValue;
  if (pr.y_type != ElemType::F32 && pr.y_type != ElemType::F16) return cudaErrorInvalidValue;
  if (w.rows_padded % kBM != 0 || pr.m > INT32_MAX / 2 || w.kchunks * w.ksteps * 32 > INT32_MAX / 2)
    return cudaErrorInvalidValue;
  if (!compressed_prefill_ssc_supported() || !encode_fn()) return cudaErrorNotSupported;
  CUtensorMap x_map{};
  if (!encode_x_map<F16>(&x_map, pr.x, w.cols, pr.m, pr.ldx, 64, x_part_tokens(2),
                         CU_TENSOR_MAP_SWIZZLE_128B))
    return cudaErrorInvalidValue;
  SscParams p{};
  if (!persistent_params(p, pr, w.rows, w.rows_padded, w.kchunks * w.ksteps / 2, 2))
    return cudaErrorInvalidValue;
  p.codes = static_cast<const unsigned char*>(w.tiles);
  p.books = reinterpret_cast<const uint4*>(w.books);
  p.slot_bytes = static_cast<int32_t>(slot);
  p.spc = w.scales_per_chunk;
  p.book_rows = w.per_tensor_book ? 0 : 1;
  p.code_kchunks = static_cast<int32_t>(w.kchunks);
  switch (w.code) {
    case CodeType::Int8:
      return launch_codes<CodeType::Int8>(x_map, p, pr.y_type, stream);
    case CodeType::Int4:
      return launch_codes<CodeType::Int4>(x_map, p, pr.y_type, stream);
    default:
      return launch_codes<CodeType::Codebook4>(x_map, p, pr.y_type, stream);
  }
}

}  // namespace sparsa::cuda
