// Prefill path, any m: Y[m, N] = X[m, K] * W[N, K]^T on the sparse tensor cores (mma.sp.sync
// m16n8k32), W packed 2:4 or V:2:M in the GPU tiling (docs/formats.md), weight rows on the MMA's
// M side, tokens on its N side.
//
// CTA tile (BM weight rows, BN = 128 tokens, BK = 2 k-steps = 64 virtual columns), 8 warps as
// 2 x 4 (or 1 x 8 when BM = 16), each warp (BM/2) x 32 tokens. Per k-step a warp reads its A
// fragments with one 16-byte LDS per m-tile (the tiling is fragment-native), its B fragments
// with ldmatrix.x4 from an XOR-swizzled X tile, and its metadata straight from global memory
// (one u32 per m-tile per two k-steps, prefetched a stage ahead).
//   2:4:   A and X tiles through a 4-stage cp.async pipeline (BM = 128).
//   V:2:M: BM = min(V, 128), so a CTA never crosses a row group. BM <= 64 (v4): per stage the
//          A tile, the stage's 16 column words and the dense X slice its 16 blocks span go
//          through a 2-slot cp.async ring; the 4 kept columns of each block are gathered from
//          shared memory into the swizzled tile, then the ordinary 2:4 mma.sp runs on them.
//          BM = 128 (and M too large for two slots): A through cp.async, the kept columns
//          loaded from global memory to registers a stage ahead and stored into the tile.
//
// Versions (H100; measured numbers in docs/kernels-gpu.md):
//   v1  metadata loaded one stage ahead straight from global: ~2300 cycles per stage, latency
//       bound (2:4 at 0.32x cuBLAS, 4096^2 x 2048).
//   v2  metadata a whole chunk (4 stages) ahead in registers, main loop unrolled by 4 so the
//       stage index and metadata component are compile-time: 253 us, 0.37x — not the
//       bottleneck. SASS: ~10 integer instructions (64-bit address math, predicates of every
//       cp.async) per HMMA.SP; ncu: issue-bound at 8 warps/SM.
//   v3  this file: cp.async sources, destinations and predicates computed once per thread (a
//       stage adds a constant: 2400 -> 1275 SASS instructions per 128 HMMA.SP); 2:4 metadata
//       through the cp.async pipeline into shared memory; __launch_bounds__(256, 2), so two
//       CTAs (16 warps) share an SM. 4096^2 x 2048: 162 us = 0.58x cuBLAS (1.56x v2).
//   v4  V:2:M at BM <= 64: dense X staged by cp.async and gathered from shared memory instead
//       of 2-byte global loads: 64:2:8 0.17x -> 0.29x cuBLAS, 64:2:5 0.10x -> 0.20x (m >= 2048
//       medians). At BM = 128 (128:2:16) the staged 64 KB slice per stage behind one stage of
//       prefetch was slower than v3 (0.46x vs 0.63x), so BM = 128 keeps v3.
#include <algorithm>
#include <cstdlib>

#include "cuda/decode_workspace.h"
#include "cuda/mma_sp.cuh"
#include "cuda/nm24_layout.cuh"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kBN = 128;  // tokens per CTA
constexpr int kThreads = 256;
constexpr int kStageKSteps = 2;  // BK = 64 virtual columns
constexpr int kBRowBytes = 128;  // one token row of the X tile: 64 elements

struct PrefillParams {
  const uint4* values;
  const uint32_t* meta;     // tiled metadata as u32: [row_tiles][kchunks][32][4]
  const uint32_t* columns;  // V:2:M [row_groups_padded][blocks_padded]
  const void* x;
  int64_t ldx;
  int64_t m;
  int64_t cols;
  void* y;
  int64_t ldy;
  int64_t rows;
  int64_t ksteps, kchunks;  // per row tile
  int v, bm;                // V:2:M
  int64_t blocks_padded;
};

template <int BM>
struct WarpLayout {
  static constexpr int kWarpsM = BM >= 32 ? 2 : 1;
  static constexpr int kWarpsN = 8 / kWarpsM;
  static constexpr int kMT = BM / 16 / kWarpsM;  // m-tiles per warp
  static constexpr int kNT = kBN / 8 / kWarpsN;  // n-tiles per warp
  static constexpr int kABytes = BM / 16 * kStageKSteps * 512;
  static constexpr int kBBytes = kBN * kBRowBytes;
};

// One stage: kStageKSteps k-steps of MMAs for this warp. a_smem: [BM/16][2][32 lanes][16 B]
// (kRowA, 2:4 from values_k: [BM/16][2][piece][16 rows][16 B], loaded by ldmatrix.x4 at the same
// lane address, nm24_layout.cuh); b_smem: [kBN tokens][8 chunks of 16 B], chunk c of row r stored
// at c ^ (r & 7).
template <typename Elem, int BM, bool kRowA = false>
__device__ __forceinline__ void compute_stage(
    float (&acc)[WarpLayout<BM>::kMT][WarpLayout<BM>::kNT][4], uint32_t a_smem, uint32_t b_smem,
    const uint32_t (&meta)[WarpLayout<BM>::kMT], int warp_m, int warp_n, int lane) {
  using L = WarpLayout<BM>;
#pragma unroll
  for (int ks = 0; ks < kStageKSteps; ++ks) {
    uint32_t a[L::kMT][4];
#pragma unroll
    for (int mt = 0; mt < L::kMT; ++mt) {
      const uint32_t addr =
          a_smem + (((warp_m * L::kMT + mt) * kStageKSteps + ks) * 32 + lane) * 16;
      if constexpr (kRowA) {
        ldsm_a(a[mt], addr);
      } else {
        asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(a[mt][0]), "=r"(a[mt][1]), "=r"(a[mt][2]), "=r"(a[mt][3])
                     : "r"(addr));
      }
    }
#pragma unroll
    for (int nt = 0; nt < L::kNT; ++nt) {
      const int row = (warp_n * L::kNT + nt) * 8 + (lane & 7);
      const int chunk = ks * 4 + (lane >> 3);
      uint32_t b[4];
      ldmatrix_x4(b, b_smem + row * kBRowBytes + ((chunk ^ (row & 7)) * 16));
#pragma unroll
      for (int mt = 0; mt < L::kMT; ++mt) {
        if (ks == 0) {
          mma_sp<Elem, 0>(acc[mt][nt], a[mt], b, meta[mt]);
        } else {
          mma_sp<Elem, 1>(acc[mt][nt], a[mt], b, meta[mt]);
        }
      }
    }
  }
}

// A tile of stage kt (k-steps 2kt, 2kt+1 of BM/16 row tiles) -> smem by cp.async. The
// per-thread sources are computed once; a stage only adds kt * 64 uint4 (stages are contiguous
// within a row tile). kRowA (2:4 from values_k, session 7): 16-byte piece c of the stage is row
// tile c / 64, k-step (c / 32) % 2, lane c % 32's piece of values_k (nm24_layout.cuh); a stage
// adds kt * 4 uint4 along the rows.
template <int BM, bool kRowA = false>
struct ACopy {
  static constexpr int kChunks = BM / 16 * kStageKSteps * 32;
  static constexpr int kPerThread = (kChunks + kThreads - 1) / kThreads;
  static constexpr int kStageStep = kRowA ? kStageKSteps * kValuesKStep : kStageKSteps * 32;
  const uint4* src[kPerThread];
  uint32_t dst[kPerThread];

  __device__ __forceinline__ ACopy(const PrefillParams& p, int64_t row_tile0) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int c = min(static_cast<int>(threadIdx.x) + i * kThreads, kChunks - 1);
      const int rt = c / (kStageKSteps * 32), rem = c % (kStageKSteps * 32);
      if constexpr (kRowA)
        src[i] = values_k_lane(p.values, row_tile0 + rt, p.ksteps * 32, rem % 32) +
                 (rem / 32) * kValuesKStep;
      else
        src[i] = p.values + (row_tile0 + rt) * p.ksteps * 32 + rem;
      dst[i] = c * 16;
    }
  }
  __device__ __forceinline__ void issue(uint32_t a_smem, int64_t kt) const {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i)
      if (kChunks % kThreads == 0 || threadIdx.x + i * kThreads < kChunks)
        cp_async_16(a_smem + dst[i], src[i] + kt * kStageStep, 16);
  }
};

// Metadata of chunk kc (8 k-steps = 4 stages) for this warp's m-tiles: one uint4 per lane;
// component j serves stage 4kc + j (selector 0 / 1 for its two k-steps). Loaded a chunk ahead.
template <int BM>
__device__ __forceinline__ void load_meta(uint4 (&meta)[WarpLayout<BM>::kMT],
                                          const PrefillParams& p, int64_t row_tile0, int warp_m,
                                          int lane, int64_t kc) {
  using L = WarpLayout<BM>;
  const uint4* m4 = reinterpret_cast<const uint4*>(p.meta);
#pragma unroll
  for (int mt = 0; mt < L::kMT; ++mt) {
    const int64_t rt = row_tile0 + warp_m * L::kMT + mt;
    meta[mt] = __ldg(m4 + (rt * p.kchunks + kc) * 32 + lane);
  }
}

// The V:2:M kernels' metadata in registers: the current chunk and the next one (loaded a chunk
// ahead, so the 4 stages of a chunk never wait on it).
template <int BM>
struct MetaChunks {
  using L = WarpLayout<BM>;
  uint4 cur[L::kMT], nxt[L::kMT];

  __device__ __forceinline__ MetaChunks(const PrefillParams& p, int64_t row_tile0, int warp_m,
                                        int lane, int64_t chunk_count) {
    load_meta<BM>(cur, p, row_tile0, warp_m, lane, 0);
    if (chunk_count > 1) load_meta<BM>(nxt, p, row_tile0, warp_m, lane, 1);
  }
  // Selectors of stage `sub` (0..3) of the current chunk.
  __device__ __forceinline__ void stage(uint32_t (&meta)[L::kMT], int sub) const {
#pragma unroll
    for (int mt = 0; mt < L::kMT; ++mt)
      meta[mt] = sub == 0   ? cur[mt].x
                 : sub == 1 ? cur[mt].y
                 : sub == 2 ? cur[mt].z
                            : cur[mt].w;
  }
  // After chunk kc: kc + 1 becomes current and kc + 2 is loaded.
  __device__ __forceinline__ void advance(const PrefillParams& p, int64_t row_tile0, int warp_m,
                                          int lane, int64_t kc, int64_t chunk_count) {
#pragma unroll
    for (int mt = 0; mt < L::kMT; ++mt) cur[mt] = nxt[mt];
    if (kc + 2 < chunk_count) load_meta<BM>(nxt, p, row_tile0, warp_m, lane, kc + 2);
  }
};

template <typename OutT, int BM>
__device__ __forceinline__ void store_tile(
    const float (&acc)[WarpLayout<BM>::kMT][WarpLayout<BM>::kNT][4], const PrefillParams& p,
    int64_t row0, int64_t tok0, int warp_m, int warp_n, int lane) {
  using L = WarpLayout<BM>;
  OutT* y = static_cast<OutT*>(p.y);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < L::kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < L::kNT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = row0 + (warp_m * L::kMT + mt) * 16 + g + 8 * (i >> 1);
        const int64_t tok = tok0 + (warp_n * L::kNT + nt) * 8 + 2 * t + (i & 1);
        if (row < p.rows && tok < p.m) y[tok * p.ldy + row] = from_float<OutT>(acc[mt][nt][i]);
      }
}

// ---- 2:4 -------------------------------------------------------------------------------------
constexpr int kNmStages = 4;
static_assert(kNmStages == 4, "the main loop is unrolled by a chunk of 4 stages");
constexpr int kNmBM = 128;
constexpr int kNmStageBytes = WarpLayout<kNmBM>::kABytes + WarpLayout<kNmBM>::kBBytes;
constexpr int kNmMetaBytes = kNmBM / 16 * 32 * 16;  // one chunk of metadata for the CTA's rows
static_assert(kNmBM / 16 * 32 == kThreads, "one metadata uint4 per thread");

// X tile of stage kt (kBN tokens x 64 columns) -> swizzled smem by cp.async. Thread t copies
// chunk t % 8 of rows t / 8 + 32 i; sources, destinations and the token predicate are fixed per
// thread, so a stage adds kt * 64 columns; only the stage holding column K needs byte counts.
template <typename T>
struct BCopy {
  static constexpr int kPerThread = kBN * 8 / kThreads;  // 4
  const T* src[kPerThread];
  uint32_t dst[kPerThread];
  bool tok_ok[kPerThread];
  int chunk_col;  // this thread's column within a stage

  __device__ __forceinline__ BCopy(const PrefillParams& p, int64_t tok0) {
    const T* x = static_cast<const T*>(p.x);
    const int chunk = threadIdx.x % 8;
    chunk_col = chunk * 8;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int row = threadIdx.x / 8 + i * (kThreads / 8);
      const int64_t tok = tok0 + row;
      tok_ok[i] = tok < p.m;
      src[i] = x + (tok_ok[i] ? tok : 0) * p.ldx + chunk_col;
      dst[i] = row * kBRowBytes + ((chunk ^ (row & 7)) * 16);
    }
  }
  __device__ __forceinline__ void issue(uint32_t b_smem, const PrefillParams& p, int64_t kt) const {
    const int64_t col = kt * 64 + chunk_col;
    const int64_t left = p.cols - col;  // columns of this chunk inside K
    const int full = left >= 8 ? 16 : left > 0 ? static_cast<int>(left * 2) : 0;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int bytes = tok_ok[i] ? full : 0;
      cp_async_16(b_smem + dst[i], bytes ? src[i] + kt * 64 : src[i] - chunk_col, bytes);
    }
  }
};

template <typename Elem, typename OutT, bool kRowA>
__global__ void __launch_bounds__(kThreads, 2) nm24_prefill_kernel(const PrefillParams p) {
  using T = typename Elem::T;
  using L = WarpLayout<kNmBM>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp % L::kWarpsM, warp_n = warp / L::kWarpsM;
  const int64_t row_tile0 = static_cast<int64_t>(blockIdx.x) * (kNmBM / 16);
  const int64_t tok0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t kt_count = p.ksteps / kStageKSteps;
  const uint32_t base = smem_addr(smem);
  auto a_stage = [&](int s) { return base + s * kNmStageBytes; };
  auto b_stage = [&](int s) { return base + s * kNmStageBytes + L::kABytes; };

  // Metadata rides in the pipeline too: chunk kc (one uint4 per lane and row tile, 4 KB) goes
  // to buffer kc % 2 with the copies of stage 4kc, so no registers hold it across stages.
  const uint32_t meta_base = base + kNmStages * kNmStageBytes;
  const uint4* meta_src = reinterpret_cast<const uint4*>(p.meta) +
                          (row_tile0 + threadIdx.x / 32) * p.kchunks * 32 + threadIdx.x % 32;
  auto issue_meta = [&](int64_t kc) {
    cp_async_16(meta_base + static_cast<uint32_t>(kc & 1) * kNmMetaBytes + threadIdx.x * 16,
                meta_src + kc * 32, 16);
  };
  const ACopy<kNmBM, kRowA> acopy(p, row_tile0);
  const BCopy<T> bcopy(p, tok0);
#pragma unroll
  for (int s = 0; s < kNmStages - 1; ++s) {
    if (s < kt_count) {
      if (s == 0) issue_meta(0);
      acopy.issue(a_stage(s), s);
      bcopy.issue(b_stage(s), p, s);
    }
    cp_async_commit();
  }
  float acc[L::kMT][L::kNT][4] = {};
  const int64_t chunk_count = kt_count / 4;  // the tiling pads K to whole chunks

#pragma unroll 1
  for (int64_t kc = 0; kc < chunk_count; ++kc) {
#pragma unroll
    for (int sub = 0; sub < 4; ++sub) {
      const int64_t kt = kc * 4 + sub;
      cp_async_wait<kNmStages - 2>();
      __syncthreads();
      const int64_t nk = kt + kNmStages - 1;
      if (nk < kt_count) {
        if ((sub + kNmStages - 1) % 4 == 0) issue_meta(nk / 4);
        acopy.issue(a_stage((sub + kNmStages - 1) % kNmStages), nk);
        bcopy.issue(b_stage((sub + kNmStages - 1) % kNmStages), p, nk);
      }
      cp_async_commit();
      uint32_t meta[L::kMT];
      const uint32_t mbuf = meta_base + static_cast<uint32_t>(kc & 1) * kNmMetaBytes;
#pragma unroll
      for (int mt = 0; mt < L::kMT; ++mt)
        asm volatile("ld.shared.u32 %0, [%1];\n"
                     : "=r"(meta[mt])
                     : "r"(mbuf + ((warp_m * L::kMT + mt) * 32 + lane) * 16 + sub * 4));
      compute_stage<Elem, kNmBM, kRowA>(acc, a_stage(sub), b_stage(sub), meta, warp_m, warp_n,
                                        lane);
    }
  }
  cp_async_wait<0>();
  store_tile<OutT, kNmBM>(acc, p, row_tile0 * 16, tok0, warp_m, warp_n, lane);
}

// ---- V:2:M -----------------------------------------------------------------------------------
// Each thread gathers 16 token rows x one pair of virtual columns per stage: pair q = lane
// (block q/2 of the stage's 16, kept columns 2(q&1), 2(q&1)+1), tokens warp + 8i.
constexpr int kGatherRows = kBN / 8;  // 16 tokens per thread

template <typename T>
__device__ __forceinline__ void gather_b(uint32_t (&regs)[kGatherRows], const PrefillParams& p,
                                         const uint32_t* columns, int64_t tok0, int64_t kt) {
  const int q = threadIdx.x % 32, r0 = threadIdx.x / 32;
  const int64_t block = kt * 16 + (q >> 1);
  const uint32_t offsets = __ldg(columns + block) >> (16 * (q & 1));
  const int64_t c0 = block * p.bm + (offsets & 0xff), c1 = block * p.bm + ((offsets >> 8) & 0xff);
  const bool ok0 = c0 < p.cols, ok1 = c1 < p.cols;
  const T* row = static_cast<const T*>(p.x) + (tok0 + r0) * p.ldx;
  const int64_t step = 8 * p.ldx;
  const int64_t rows_left = p.m - tok0 - r0;  // this thread's token i is valid when 8i < rows_left
#pragma unroll
  for (int i = 0; i < kGatherRows; ++i, row += step) {
    alignas(4) T pair[2] = {T(0.0f), T(0.0f)};
    if (8 * i < rows_left) {
      if (ok0) pair[0] = row[c0];
      if (ok1) pair[1] = row[c1];
    }
    regs[i] = *reinterpret_cast<const uint32_t*>(pair);
  }
}

__device__ __forceinline__ void store_b(uint32_t b_smem, const uint32_t (&regs)[kGatherRows]) {
  const int q = threadIdx.x % 32, r0 = threadIdx.x / 32;
#pragma unroll
  for (int i = 0; i < kGatherRows; ++i) {
    const int row = r0 + 8 * i;
    const int chunk = q >> 2;
    const uint32_t addr = b_smem + row * kBRowBytes + ((chunk ^ (row & 7)) * 16) + (q & 3) * 4;
    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(regs[i]));
  }
}

template <typename Elem, typename OutT, int BM>
__global__ void __launch_bounds__(kThreads) vnm_prefill_kernel(const PrefillParams p) {
  using T = typename Elem::T;
  using L = WarpLayout<BM>;
  constexpr int kStageBytes = L::kABytes + L::kBBytes;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp % L::kWarpsM, warp_n = warp / L::kWarpsM;
  const int64_t row_tile0 = static_cast<int64_t>(blockIdx.x) * (BM / 16);
  const int64_t tok0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t kt_count = p.ksteps / kStageKSteps;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * BM / p.v;
  const uint32_t* columns = p.columns + group * p.blocks_padded;
  const uint32_t base = smem_addr(smem);
  auto a_stage = [&](int s) { return base + s * kStageBytes; };
  auto b_stage = [&](int s) { return base + s * kStageBytes + L::kABytes; };

  uint32_t regs[kGatherRows];
  const ACopy<BM> acopy(p, row_tile0);
  acopy.issue(a_stage(0), 0);
  cp_async_commit();
  gather_b<T>(regs, p, columns, tok0, 0);
  store_b(b_stage(0), regs);
  float acc[L::kMT][L::kNT][4] = {};
  const int64_t chunk_count = kt_count / 4;
  MetaChunks<BM> chunks(p, row_tile0, warp_m, lane, chunk_count);

#pragma unroll 1
  for (int64_t kc = 0; kc < chunk_count; ++kc) {
#pragma unroll
    for (int sub = 0; sub < 4; ++sub) {
      const int64_t kt = kc * 4 + sub;
      cp_async_wait<0>();
      __syncthreads();
      const bool more = kt + 1 < kt_count;
      const int s = sub & 1;
      if (more) {
        acopy.issue(a_stage(s ^ 1), kt + 1);
        cp_async_commit();
        gather_b<T>(regs, p, columns, tok0, kt + 1);
      }
      uint32_t meta[L::kMT];
      chunks.stage(meta, sub);
      compute_stage<Elem, BM>(acc, a_stage(s), b_stage(s), meta, warp_m, warp_n, lane);
      if (more) store_b(b_stage(s ^ 1), regs);
    }
    chunks.advance(p, row_tile0, warp_m, lane, kc, chunk_count);
  }
  store_tile<OutT, BM>(acc, p, row_tile0 * 16, tok0, warp_m, warp_n, lane);
}

// V:2:M with the dense X staged (v4): per stage the CTA copies, by cp.async, its A tile, the
// stage's 16 column words and the dense X slice the stage's 16 blocks span (128 tokens x 16 M
// columns, zero-filled past m and K) into one of two ring slots; then the 4 kept columns of each
// block are gathered from shared memory into the swizzled B tile and the ordinary mma.sp runs.
// Replaces v3's 2-byte global loads (32 per thread and stage) with 16-byte copies.
template <int BM>
struct StagedLayout {
  static constexpr int kColsBytes = 16 * 4;
  __host__ __device__ static int64_t slot_bytes(int bm) {
    return WarpLayout<BM>::kABytes + kColsBytes + int64_t{kBN} * 16 * bm * 2;
  }
  static int64_t smem_bytes(int bm) { return 2 * slot_bytes(bm) + WarpLayout<BM>::kBBytes; }
};
constexpr int64_t kPrefillMaxSmem = 225 * 1024;

template <typename Elem, typename OutT, int BM>
__global__ void __launch_bounds__(kThreads) vnm_staged_prefill_kernel(const PrefillParams p) {
  using T = typename Elem::T;
  using L = WarpLayout<BM>;
  using S = StagedLayout<BM>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp % L::kWarpsM, warp_n = warp / L::kWarpsM;
  const int64_t row_tile0 = static_cast<int64_t>(blockIdx.x) * (BM / 16);
  const int64_t tok0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t kt_count = p.ksteps / kStageKSteps;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * BM / p.v;
  const uint32_t* columns = p.columns + group * p.blocks_padded;
  const uint32_t base = smem_addr(smem);
  // Slot s: A tile, 16 column words, dense X [kBN tokens][16 M elements]; then the B tile.
  const uint32_t slot_bytes = static_cast<uint32_t>(S::slot_bytes(p.bm));
  const uint32_t b_tile = base + 2 * slot_bytes;
  const int xd_cols = 16 * p.bm;  // dense elements per token and stage
  const int pieces = 2 * p.bm;    // 16-byte pieces per token and stage
  auto a_slot = [&](int s) { return base + s * slot_bytes; };
  auto cols_off = [&](int s) { return s * slot_bytes + L::kABytes; };
  auto xd_off = [&](int s) { return s * slot_bytes + L::kABytes + S::kColsBytes; };

  const ACopy<BM> acopy(p, row_tile0);
  const T* x = static_cast<const T*>(p.x);
  auto issue = [&](int64_t kt) {
    const int s = static_cast<int>(kt & 1);
    acopy.issue(a_slot(s), kt);
    if (threadIdx.x < S::kColsBytes / 16)
      cp_async_16(base + cols_off(s) + threadIdx.x * 16, columns + kt * 16 + threadIdx.x * 4, 16);
    const int64_t col0 = kt * xd_cols;
    for (int idx = threadIdx.x; idx < kBN * pieces; idx += kThreads) {
      const int r = idx / pieces, piece = idx - r * pieces;
      const int64_t col = col0 + piece * 8, left = p.cols - col;
      const int bytes = tok0 + r >= p.m ? 0
                        : left >= 8     ? 16
                        : left > 0      ? static_cast<int>(left * 2)
                                        : 0;
      cp_async_16(base + xd_off(s) + idx * 16, bytes ? x + (tok0 + r) * p.ldx + col : x, bytes);
    }
    cp_async_commit();
  };
  // Thread (warp w, lane q) gathers pair q (block q / 2, kept columns 2 (q & 1), +1) of token
  // rows w + 8 i into the swizzled B tile, as store_b does.
  auto gather = [&](int s) {
    const uint32_t w =
        reinterpret_cast<const uint32_t*>(smem + cols_off(s))[lane >> 1] >> (16 * (lane & 1));
    const T* xd = reinterpret_cast<const T*>(smem + xd_off(s)) + (lane >> 1) * p.bm;
    const int c0 = w & 0xff, c1 = (w >> 8) & 0xff;
    const int chunk = lane >> 2;
#pragma unroll
    for (int i = 0; i < kGatherRows; ++i) {
      const int row = warp + 8 * i;
      const T* src = xd + row * xd_cols;
      alignas(4) T pair[2] = {src[c0], src[c1]};
      const uint32_t addr = b_tile + row * kBRowBytes + ((chunk ^ (row & 7)) * 16) + (lane & 3) * 4;
      asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr),
                   "r"(*reinterpret_cast<const uint32_t*>(pair)));
    }
  };

  issue(0);
  float acc[L::kMT][L::kNT][4] = {};
  const int64_t chunk_count = kt_count / 4;
  MetaChunks<BM> chunks(p, row_tile0, warp_m, lane, chunk_count);

#pragma unroll 1
  for (int64_t kc = 0; kc < chunk_count; ++kc) {
#pragma unroll
    for (int sub = 0; sub < 4; ++sub) {
      const int64_t kt = kc * 4 + sub;
      const int s = sub & 1;
      cp_async_wait<0>();
      __syncthreads();  // stage kt landed; the B tile and slot s ^ 1 are free
      if (kt + 1 < kt_count) issue(kt + 1);
      gather(s);
      __syncthreads();  // B tile complete
      uint32_t meta[L::kMT];
      chunks.stage(meta, sub);
      compute_stage<Elem, BM>(acc, a_slot(s), b_tile, meta, warp_m, warp_n, lane);
    }
    chunks.advance(p, row_tile0, warp_m, lane, kc, chunk_count);
  }
  store_tile<OutT, BM>(acc, p, row_tile0 * 16, tok0, warp_m, warp_n, lane);
}

cudaError_t check_problem(const GemmProblem& pr, ElemType type, int64_t rows_padded) {
  if (type != ElemType::F16 && type != ElemType::BF16) return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.x || !pr.y) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (rows_padded % kRowTile != 0) return cudaErrorInvalidValue;
  if (pr.m > 65535LL * kBN) return cudaErrorInvalidValue;
  return cudaSuccess;
}

PrefillParams base_params(const GemmProblem& pr, int64_t rows, int64_t cols) {
  PrefillParams p{};
  p.x = pr.x;
  p.ldx = pr.ldx;
  p.m = pr.m;
  p.cols = cols;
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.rows = rows;
  return p;
}

template <typename Kernel>
cudaError_t launch_kernel(Kernel kernel, dim3 grid, int smem_bytes, const PrefillParams& p,
                          cudaStream_t stream) {
  if (smem_bytes > 48 * 1024) {
    if (cudaError_t e =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
        e != cudaSuccess)
      return e;
  }
  kernel<<<grid, kThreads, smem_bytes, stream>>>(p);
  return cudaGetLastError();
}

template <typename Elem, bool kRowA>
cudaError_t nm24_launch(const PrefillParams& p, ElemType y_type, dim3 grid, cudaStream_t stream) {
  return dispatch_out(y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    return launch_kernel(nm24_prefill_kernel<Elem, OutT, kRowA>, grid,
                         kNmStages * kNmStageBytes + 2 * kNmMetaBytes, p, stream);
  });
}

template <typename Elem, int BM>
cudaError_t vnm_launch(const PrefillParams& p, ElemType y_type, dim3 grid, cudaStream_t stream) {
  using L = WarpLayout<BM>;
  const int64_t staged = StagedLayout<BM>::smem_bytes(p.bm);
  return dispatch_out(y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    // Staged for BM <= 64 (64:2:8 0.17x -> 0.27x cuBLAS); at BM = 128 (128:2:16) the dense slice
    // (64 KB a stage) behind one stage of prefetch measured slower than v3 (0.46x vs 0.63x).
    if (BM <= 64 && staged <= kPrefillMaxSmem)
      return launch_kernel(vnm_staged_prefill_kernel<Elem, OutT, BM>, grid,
                           static_cast<int>(staged), p, stream);
    return launch_kernel(vnm_prefill_kernel<Elem, OutT, BM>, grid, 2 * (L::kABytes + L::kBBytes), p,
                         stream);
  });
}

template <typename Elem>
cudaError_t vnm_launch_bm(const PrefillParams& p, ElemType y_type, int64_t rows_padded, int64_t m,
                          cudaStream_t stream) {
  const int bm = std::min(p.v, 128);
  const dim3 grid(static_cast<unsigned>(rows_padded / bm),
                  static_cast<unsigned>((m + kBN - 1) / kBN));
  switch (bm) {
    case 16:
      return vnm_launch<Elem, 16>(p, y_type, grid, stream);
    case 32:
      return vnm_launch<Elem, 32>(p, y_type, grid, stream);
    case 64:
      return vnm_launch<Elem, 64>(p, y_type, grid, stream);
    default:
      return vnm_launch<Elem, 128>(p, y_type, grid, stream);
  }
}

}  // namespace

cudaError_t nm24_prefill_mma(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream) {
  if (cudaError_t e = check_problem(pr, w.type, w.rows_padded); e != cudaSuccess) return e;
  if (w.cols_padded % kKChunk != 0 || (!w.values && !w.values_k)) return cudaErrorInvalidValue;
  PrefillParams p = base_params(pr, w.rows, w.cols);
  const bool row_a = nm24_reads_values_k(w);  // values_k (session 7) or the fragment tiling
  p.values = static_cast<const uint4*>(row_a ? w.values_k : w.values);
  p.meta = w.meta;
  p.ksteps = w.cols_padded / 32;
  p.kchunks = w.cols_padded / kKChunk;
  const dim3 grid(static_cast<unsigned>(w.rows_padded / kNmBM),
                  static_cast<unsigned>((pr.m + kBN - 1) / kBN));
  if (row_a)
    return w.type == ElemType::F16 ? nm24_launch<F16, true>(p, pr.y_type, grid, stream)
                                   : nm24_launch<BF16, true>(p, pr.y_type, grid, stream);
  return w.type == ElemType::F16 ? nm24_launch<F16, false>(p, pr.y_type, grid, stream)
                                 : nm24_launch<BF16, false>(p, pr.y_type, grid, stream);
}

cudaError_t vnm_prefill_mma(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream) {
  if (cudaError_t e = check_problem(pr, w.type, w.rows_padded); e != cudaSuccess) return e;
  if (w.blocks_padded % 64 != 0 || (w.v != 16 && w.v != 32 && w.v != 64 && w.v != 128) || w.m < 4 ||
      w.m > 256)
    return cudaErrorInvalidValue;
  PrefillParams p = base_params(pr, w.rows, w.cols);
  p.values = static_cast<const uint4*>(w.values);
  p.meta = w.meta;
  p.columns = w.columns;
  p.ksteps = w.blocks_padded / 8;
  p.kchunks = w.blocks_padded / 64;
  p.v = w.v;
  p.bm = w.m;
  p.blocks_padded = w.blocks_padded;
  return w.type == ElemType::F16 ? vnm_launch_bm<F16>(p, pr.y_type, w.rows_padded, pr.m, stream)
                                 : vnm_launch_bm<BF16>(p, pr.y_type, w.rows_padded, pr.m, stream);
}

// 2:4 prefill on sm_90a: from kSscMinM tokens v12 (wgmma_prefill_ssc.cu), on the fragment layout
// (session 17) or, where the weights carry the opt-in values_k and nm24_prefill_takes_ss, on
// values_k through nm24_prefill_wgmma_ss (v12, or v8 when SPARSA_PREFILL24 asks for it); below,
// and with SPARSA_PREFILL24=v5g*, the register-A kernel (wgmma_prefill.cu: v9's tiles, v10's
// split-K, v11's tail split); the mma.sp kernel below nm24_wgmma_min_m() or off sm_90a.
cudaError_t nm24_prefill(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream) {
  // v12 does not split K (bar its optional tail split): below two token tiles it fills few SMs
  // (N = 4096: 16 of 66 clusters), where v10 splits K over every tile (fragment layout, when the
  // weights carry it too). Not measured against each other (session 16).
  const bool v12_small = nm24_prefill_ssc_mode().on && p.m < kSscMinM && w.values;
  if (p.m >= kWgmmaMinM && w.values_k && nm24_prefill_takes_ss(w) && nm24_wgmma_ss_supported() &&
      !v12_small)
    return nm24_prefill_wgmma_ss(w, p, stream);
  if (nm24_prefill_takes_ssc_fragments(w, p.m)) {  // v12 on the default layout (session 17)
    const Nm24SscMode mode = nm24_prefill_ssc_mode();
    // The persistent form needs its tile counter in the workspace; without one, a cluster per tile.
    return nm24_prefill_wgmma_ssc(w, p, stream, mode.cluster, 0,
                                  mode.persistent && p.workspace &&
                                      p.workspace_bytes >= detail::kCounterRegion,
                                  Nm24SscA::Fragments);
  }
  if (p.m >= nm24_wgmma_min_m() && nm24_wgmma_supported()) return nm24_prefill_wgmma(w, p, stream);
  return nm24_prefill_mma(w, p, stream);
}

namespace {
// SPARSA_WGMMA_MIN_M: a token count >= kDecodeMaxM + 1, else 0 (the defaults).
int64_t wgmma_min_m_override() {
  static const int64_t m = [] {
    const char* v = std::getenv("SPARSA_WGMMA_MIN_M");
    const long n = v ? std::strtol(v, nullptr, 10) : 0;
    return n > kDecodeMaxM ? static_cast<int64_t>(n) : int64_t{0};
  }();
  return m;
}
}  // namespace

int64_t nm24_wgmma_min_m() {
  const int64_t m = wgmma_min_m_override();
  return m > 0 ? m : kWgmmaMinM;
}

int64_t vnm_wgmma_min_m() {
  const int64_t m = wgmma_min_m_override();
  return m > 0 ? m : kWgmmaMinM;
}

// V:2:M on Hopper: the 2:4 wgmma kernel over the full K on the held copy (opt-in) or where
// vnm_prefill_expands (M % 4 == 0, session 13: src/cuda/vnm_expand.cu), else wgmma.sp with X
// gathered per row group (src/cuda/wgmma_vnm_prefill.cu) for V = 64 / 128, M <= 16.
// SPARSA_VNM_WGMMA=0 keeps the mma.sp kernel (for A/B measurements).
cudaError_t vnm_prefill(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream) {
  static const bool wgmma_on = [] {
    const char* v = std::getenv("SPARSA_VNM_WGMMA");
    return !(v && v[0] == '0');
  }();
  if (wgmma_on && vnm_prefill_copy_held(w, p.m)) return nm24_prefill(vnm_held_copy(w), p, stream);
  if (wgmma_on && vnm_prefill_expands(w, p.m)) return vnm_prefill_expanded(w, p, stream);
  if (wgmma_on && p.m >= vnm_wgmma_min_m() && vnm_wgmma_supported(w)) return vnm_prefill_wgmma(w, p, stream);
  return vnm_prefill_mma(w, p, stream);
}

cudaError_t nm24_gemm(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream) {
  return p.m <= kDecodeMaxM ? nm24_decode(w, p, stream) : nm24_prefill(w, p, stream);
}

cudaError_t vnm_gemm(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream) {
  return p.m <= kDecodeMaxM ? vnm_decode(w, p, stream) : vnm_prefill(w, p, stream);
}

}  // namespace sparsa::cuda
