// The staged V:2:M wgmma kernel (vnm_prefill_wgmma_staged). vnm_prefill_wgmma takes it unless
// prefer_xt (wgmma_vnm_prefill_xt.cu) picks the kernel that copies the gathered columns from Xᵀ
// instead: 64:2:8 runs here, 128:2:16 and 64:2:16 there (session 5 measurements).
// V:2:M prefill on Hopper's warpgroup tensor cores (wgmma.mma_async.sp, sm_90a; SASS HGMMA ...
// SP). Y[m, N] = X[m, K] * W[N, K]^T, W in the V:2:M GPU tiling of tiling.cc (V = 64 or 128,
// M <= 16), X and W fp16 or bf16, fp32 accumulation.
//
// A V-row group of W is a 2:4 matrix over K' = 4 * blocks gathered columns (block b keeps the
// columns b M + columns[group][b].byte j, j < 4), and the tiling stores it exactly as tile_nm24
// stores a 2:4 matrix over K'. So the A side is the 2:4 wgmma kernel's (wgmma_prefill.cu: a
// 16-byte load per lane is one A fragment, one uint4 of metadata serves 8 k-steps); only the B
// side differs: each m64 tile (one row group at V = 64; a pair of tiles shares one at V = 128)
// needs its own B = the gathered columns of X.
//
// CTA = 1 producer + 2 consumer warpgroups (384 threads, one CTA per SM):
//   - tile 256 weight rows x 128 tokens; consumer warpgroup wg owns rows 128 wg .. +128 (two
//     m64 tiles, 2 x 64 fp32 accumulators per thread);
//   - a stage is 2 k-steps = 16 blocks = 16 M columns of K: the producer loads the dense X box
//     (128 tokens x 16 M columns, no swizzle, zero-filled past m and K) by TMA into one of
//     `stages` slots (full/empty mbarriers);
//   - each consumer warpgroup gathers its row groups' 64 kept columns of the stage from the
//     dense box into its own K-major 128-byte-swizzled B tile (the layout the 2:4 kernel's TMA
//     writes), double-buffered, then fence.proxy.async + a warpgroup barrier, then 4 wgmma.sp
//     m64n128k32 (2 k-steps x 2 m64 tiles) with W from registers (loaded a stage ahead);
//   - the gather of stage kt + 1 runs while the wgmma of stage kt is in flight.
// Gathers: generic (any M <= 16, two 2-byte loads per output word) and M = 8 (one 16-byte load
// per block for both B tiles, byte permutes). Shared memory bounds it: per m64 tile and stage the
// wgmma reads 16 KB of B (128 cycles at 128 B/clk = the sparse tensor time) and the gather
// writes 16 KB and reads its sources (docs/kernels-gpu.md has the budget). H100, fp16, median
// over the 7 benchmark shapes at m >= 2048: 64:2:8 0.98x cuBLAS, 64:2:5 0.40x, 128:2:16 1.50x
// (mma.sp: 0.29x, 0.20x, 0.63x), bench/results/gemm-h100-2026-11-23-vnm-wgmma-v1.json.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/compressed_common.cuh"
#include "cuda/mma_sp.cuh"
#include "cuda/prefill_split.cuh"
#include "cuda/slot_layout.cuh"
#include "cuda/wgmma_primitives.cuh"
#include "cuda/wgmma_vnm_params.h"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kBM = 256;          // weight rows per CTA (2 warpgroups x 2 m64 tiles)
constexpr int kBN = 128;          // tokens per CTA (the wgmma N)
constexpr int kStageBlocks = 16;  // blocks of M columns per stage (2 k-steps of 8 blocks)
constexpr int kBTileBytes = kBN * 128;  // one gathered B tile: 128 tokens x 64 virtual columns
constexpr int kMaxStages = 4;
constexpr int kMaxM = 16;  // TMA box inner dimension 16 M <= 256 elements
constexpr int kConsumerThreads = 256;
constexpr int kThreads = kConsumerThreads + 128;
[[maybe_unused]] constexpr int kGroup = 8;  // row blocks per raster group (as wgmma_prefill.cu)
constexpr int kMaxSmem = 227 * 1024;

struct VnmWgmmaParams {
  const uint4* values;      // [row_tiles][ksteps][32][16 B]
  const uint4* meta;        // [row_tiles][kchunks][32][16 B]
  const uint32_t* columns;  // [row_groups_padded][blocks_padded]
  void* y;
  int64_t ldy, m, rows;
  int64_t row_tiles, ksteps, kchunks, blocks_padded, row_groups_padded;
  int64_t row_blocks, token_tiles;
  int v, mcols, stages;
  uint32_t dense_bytes;  // one dense X slot: 128 tokens x 16 M columns
  // Split-K (kSplit kernels, session 8): blockIdx.y is the split (vnm_k_range); fp32 partials
  // [split][token][row], token stride ldp, split stride m * ldp.
  float* partials;
  int64_t ldp;
  int32_t splits;
  // Compressed codes (session 20, kernels with kCode != F16): the decode tiling's slots
  // [row groups of 64 rows][code_kchunks][4 slots][slot_bytes], chunks of 2^code_shift k-steps.
  const unsigned char* codes;
  const uint4* books;
  int64_t slot_bytes, code_kchunks;
  int32_t code_shift, spc, book_rows;
};

// B tiles per consumer warpgroup: 2 at V = 64 (one per m64 tile), 1 at V = 128.
__host__ __device__ constexpr int b_tiles(int v) { return v == 64 ? 2 : 1; }
__host__ __device__ constexpr int b_bytes(int v) { return 2 /* warpgroups */ * 2 /* buffers */ * b_tiles(v) * kBTileBytes; }

__device__ __forceinline__ void wg_barrier(int id) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(id) : "memory");
}
__device__ __forceinline__ uint32_t lds_u16(uint32_t addr) {
  unsigned short v;
  asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ void sts_u32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(v));
}

// Gather of one B tile: lane q builds virtual columns 2q, 2q + 1 (block q / 2, kept columns
// 2 (q & 1), +1) of tokens ww + 4 i, i < 32, from the dense slot (token pitch 32 M bytes) into
// the 128-byte-swizzled tile (16-byte chunk c of token t at c ^ (t & 7)). A warp instruction
// reads 32 elements of one token row and writes that row's 128 bytes.
__device__ __forceinline__ void gather_tile(uint32_t dense, uint32_t btile, uint32_t colword,
                                            int mcols, int ww, int q) {
  const uint32_t w = colword >> (16 * (q & 1));
  const uint32_t blk = static_cast<uint32_t>(q >> 1) * mcols;
  const uint32_t pitch = 32u * mcols;
  uint32_t src_a = dense + ww * pitch + 2 * (blk + (w & 0xff));
  uint32_t src_b = dense + ww * pitch + 2 * (blk + ((w >> 8) & 0xff));
  const int chunk = q >> 2;
  const uint32_t dst = btile + ww * 128 + (q & 3) * 4;
  const uint32_t swz0 = ((chunk ^ ww) << 4), swz1 = ((chunk ^ (ww | 4)) << 4);
#pragma unroll
  for (int i = 0; i < kBN / 4; ++i) {
    const uint32_t lo = lds_u16(src_a), hi = lds_u16(src_b);
    sts_u32(dst + i * 512 + ((i & 1) ? swz1 : swz0), lo | (hi << 16));
    src_a += 4 * pitch;
    src_b += 4 * pitch;
  }
}

// M = 8 gather: a block is one aligned 16-byte chunk of the dense row, so each block is read
// once with a 16-byte load and serves both of the warpgroup's B tiles; the 4 kept elements are
// picked in registers by byte permutes. Thread (lane: chunk c = lane & 7, token slot lane >> 3)
// builds output chunk c (blocks 2c, 2c + 1) of 8 tokens. Lanes c >= 4 load the odd block first
// (16-byte stagger) so that each 8-lane phase of the loads covers all 32 banks, and the two
// token rows of a 16-lane store phase differ in bit 2 of the swizzle, so stores do not conflict.
__device__ __forceinline__ uint4 lds_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr));
  return v;
}
__device__ __forceinline__ void sts_64(uint32_t addr, uint32_t a, uint32_t b) {
  asm volatile("st.shared.v2.u32 [%0], {%1, %2};\n" ::"r"(addr), "r"(a), "r"(b));
}
// Selectors of one block's column word W (kept offsets k0..k3 in its bytes): output word w takes
// elements (k_2w, k_2w+1). s picks them from a 4-element half (offset & 3), m merges the two
// halves' picks (offset >= 4: the high half).
struct Pick8 {
  uint32_t s0, m0, s1, m1;
  Pick8() = default;
  __device__ __forceinline__ explicit Pick8(uint32_t w)
      : s0((w & 0x0303u) * 0x22u + 0x1010u),
        m0(((w >> 2) & 0x0101u) * 0x44u + 0x3210u),
        s1(((w >> 16) & 0x0303u) * 0x22u + 0x1010u),
        m1(((w >> 18) & 0x0101u) * 0x44u + 0x3210u) {}
  __device__ __forceinline__ uint2 operator()(const uint4& b) const {
    const uint32_t l0 = __byte_perm(b.x, b.y, s0), h0 = __byte_perm(b.z, b.w, s0);
    const uint32_t l1 = __byte_perm(b.x, b.y, s1), h1 = __byte_perm(b.z, b.w, s1);
    return make_uint2(__byte_perm(l0, h0, m0), __byte_perm(l1, h1, m1));
  }
};

template <int kBT>
__device__ __forceinline__ void gather_tiles8(uint32_t dense, uint32_t bbuf, const uint2 (&cw)[kBT],
                                              int ww, int lane) {
  const int c = lane & 7, sw = c >> 2;
  const int tok_lane = ((lane >> 3) >> 1) + 4 * ((lane >> 3) & 1);  // 0, 4, 1, 5
  Pick8 first[kBT], second[kBT];  // the block loaded first (2c + sw) and the other one
#pragma unroll
  for (int bt = 0; bt < kBT; ++bt) {
    first[bt] = Pick8(sw ? cw[bt].y : cw[bt].x);
    second[bt] = Pick8(sw ? cw[bt].x : cw[bt].y);
  }
  const uint32_t src0 = dense + 32 * c + 16 * sw, src1 = dense + 32 * c + 16 * (1 - sw);
#pragma unroll
  for (int u = 0; u < 4; ++u) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int t = 8 * (ww + 4 * u) + 2 * h + tok_lane;
      const uint4 x = lds_v4(src0 + t * 256), y = lds_v4(src1 + t * 256);
      const uint32_t row = bbuf + t * 128 + ((c ^ (2 * h + tok_lane)) << 4);
#pragma unroll
      for (int bt = 0; bt < kBT; ++bt) {
        const uint2 o0 = first[bt](x), o1 = second[bt](y);
        sts_64(row + bt * kBTileBytes + 8 * sw, o0.x, o0.y);
        sts_64(row + bt * kBTileBytes + 8 * (1 - sw), o1.x, o1.y);
      }
    }
  }
}

// Session 20: the A side from compressed codes (tile_compressed's V:2:M tiling) instead of fp16
// fragments. Each lane loads its code words, the stage's metadata word and (int codes) its rows'
// scale pairs for the next stage by plain loads (`load`, a stage ahead, as VnmStageW loads
// fragments) and decodes them at the stage's start with the decode kernels' decode_a.
template <CodeType kCode>
struct VnmStageCodes {
  const unsigned char* slot0[2];  // [m tile]: the 16-row tile's slot of chunk 0
  uint32_t w0[2][2], w1[2][2], plo[2][2], phi[2][2], e[2];  // [m tile][k-step]: the loaded words

  __device__ __forceinline__ VnmStageCodes(const VnmWgmmaParams& p, int64_t row_block, int wg, int ww) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int64_t rt = min(row_block * 16 + wg * 8 + mt * 4 + ww, p.row_tiles - 1);
      slot0[mt] = p.codes + ((rt / 4) * p.code_kchunks * 4 + rt % 4) * p.slot_bytes;
    }
  }

  // Stage `stage` (k-steps 2 stage, 2 stage + 1) of this lane.
  __device__ __forceinline__ void load(const VnmWgmmaParams& p, int64_t stage, int lane) {
    const SlotLayout<kCode> layout{p.code_shift, p.spc};
    const int64_t kc = (2 * stage) >> p.code_shift;
    const int st0 = static_cast<int>((2 * stage) & ((1 << p.code_shift) - 1));
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const unsigned char* slot = slot0[mt] + kc * 4 * p.slot_bytes;
      auto word = [slot](uint32_t offset) { return __ldg(reinterpret_cast<const uint32_t*>(slot + offset)); };
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        const int st = st0 + ks;
        if constexpr (kCode == CodeType::Int8) {  // both words by one 8-byte load
          const uint2 v = __ldg(reinterpret_cast<const uint2*>(slot + SlotLayout<kCode>::code(st, lane)));
          w0[mt][ks] = v.x;
          w1[mt][ks] = v.y;
        } else {
          w0[mt][ks] = word(SlotLayout<kCode>::code(st, lane));
        }
        if constexpr (kCode != CodeType::Codebook4) {
          plo[mt][ks] = word(layout.pair(st, lane / 4));
          phi[mt][ks] = word(layout.pair(st, lane / 4 + 8));
        }
      }
      e[mt] = word(layout.meta(st0, lane));
    }
  }

  __device__ __forceinline__ void decode(uint32_t (&a)[2][2][4], uint32_t (&em)[2],
                                         const Book (&book)[2][2]) const {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int ks = 0; ks < 2; ++ks)
        decode_a<kCode>(a[mt][ks], w0[mt][ks], w1[mt][ks], plo[mt][ks], phi[mt][ks], book[mt][0],
                        book[mt][1]);
      em[mt] = e[mt];
    }
  }
};

template <typename Elem, typename OutT, int kV, bool kFast8, bool kSplit,
          CodeType kCode = CodeType::F16>
__global__ void __launch_bounds__(kThreads, 1)
    vnm_wgmma_kernel(const __grid_constant__ CUtensorMap x_map, const VnmWgmmaParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kCodes = kCode != CodeType::F16;
  constexpr int kBT = b_tiles(kV);
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;  // 128B swizzle: 1 KB aligned
  const uint32_t dense0 = base + b_bytes(kV);
  const uint32_t full_bar = dense0 + p.stages * p.dense_bytes;
  const uint32_t empty_bar = full_bar + kMaxStages * 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const VnmKRange kr = vnm_k_range<kSplit>(p);
  const int64_t kt_count = kr.stages;  // this CTA's stages (a multiple of 4)
  const int stages = p.stages;
  const RasterTile tile = grouped_raster_tile(blockIdx.x, kGroup, p.row_blocks, p.token_tiles, kBN);
  const int64_t row_block = tile.row_block;
  const int32_t tok0 = static_cast<int32_t>(tile.tok0);

  if (threadIdx.x == 0) init_stage_barriers(full_bar, empty_bar, stages, kConsumerThreads / 32);
  __syncthreads();

  if (warp < 4) {  // ---- producer warpgroup: dense X slots by TMA, issued by one thread
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (warp == 0 && lane == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&x_map))
                   : "memory");
      const int32_t stage_cols = kStageBlocks * p.mcols;
      for (int64_t kt = 0; kt < kt_count; ++kt) {
        const int s = static_cast<int>(kt % stages);
        if (kt >= stages)
          mbar_wait(empty_bar + 8 * s, static_cast<uint32_t>((kt / stages - 1) & 1));
        mbar_expect_tx(full_bar + 8 * s, p.dense_bytes);
        tma_load_2d(dense0 + s * p.dense_bytes, &x_map,
                    static_cast<int32_t>(kr.stage0 + kt) * stage_cols, tok0, full_bar + 8 * s);
      }
    }
    return;
  }

  // ---- consumers: warpgroup wg owns weight rows [256 rb + 128 wg, +128), two m64 tiles.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int wg = warp / 4 - 1, ww = warp % 4;
  const int bar_id = 1 + wg;
  static_assert(kBM == 256, "VnmStageW assumes 256-row tiles");
  VnmStageW w_src(p, row_block, wg, ww, lane);
  if constexpr (kSplit) w_src.advance(kr.stage0);
  VnmStageCodes<kCode> codes(p, row_block, wg, ww);
  Book book[2][2] = {};  // codebook4: [m tile][row g, row g + 8] (rows past N read the last one)
  if constexpr (kCode == CodeType::Codebook4) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int64_t row = (row_block * 16 + wg * 8 + mt * 4 + ww) * 16 + lane / 4;
      book[mt][0] = load_book(p.books, row < p.rows ? row : p.rows - 1, p.book_rows);
      book[mt][1] = load_book(p.books, row + 8 < p.rows ? row + 8 : p.rows - 1, p.book_rows);
    }
  }
  const uint32_t* c_src[kBT];
#pragma unroll
  for (int bt = 0; bt < kBT; ++bt) {
    int64_t g = (row_block * kBM + wg * 128 + bt * 64) / kV;
    g = min(g, p.row_groups_padded - 1);
    c_src[bt] = p.columns + g * p.blocks_padded + (kFast8 ? 2 * (lane & 7) : lane >> 1) +
                kr.stage0 * kStageBlocks;
  }
  const uint32_t bbase = base + wg * (2 * kBT * kBTileBytes);  // [buffer][bt][16 KB]

  float acc[2][64];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 64; ++i) asm volatile("" : "=f"(acc[mt][i]));  // see wgmma_sp_m64n128_sd

  // A and metadata of a stage are loaded one stage ahead into the other slot.
  uint32_t a[2][2][2][4];  // [slot = stage parity][m tile][k-step][word]
  uint32_t e[2][2] = {};   // [slot][m tile]: the stage's metadata word (selectors 0 and 1)
  uint2 cw[kBT], cw_next[kBT];  // this lane's column words (generic: .x only)
  auto load_cw = [&](int bt, int64_t kt) {
    const uint32_t* src = c_src[bt] + kt * kStageBlocks;
    return kFast8 ? __ldg(reinterpret_cast<const uint2*>(src)) : make_uint2(__ldg(src), 0u);
  };
  if constexpr (kCodes)
    codes.load(p, kr.stage0, lane);
  else
    w_src.load(a[0], e[0], 0);
#pragma unroll
  for (int bt = 0; bt < kBT; ++bt) {
    cw[bt] = load_cw(bt, 0);
    cw_next[bt] = load_cw(bt, 1);  // kt_count is a multiple of 4
  }

  // Two stages per iteration so that register slots are named by compile-time indices (the
  // tiling pads K to whole chunks of 4 stages).
#pragma unroll 1
  for (int64_t kt0 = 0; kt0 < kt_count; kt0 += 2) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int64_t kt = kt0 + j;  // stage
      const int slot = j;
      const int s = static_cast<int>(kt % stages);
      mbar_wait(full_bar + 8 * s, static_cast<uint32_t>((kt / stages) & 1));
      const uint32_t dense = dense0 + s * p.dense_bytes;
      const uint32_t bbuf = bbase + slot * (kBT * kBTileBytes);
      if constexpr (kFast8) {
        gather_tiles8<kBT>(dense, bbuf, cw, ww, lane);
      } else {
#pragma unroll
        for (int bt = 0; bt < kBT; ++bt)
          gather_tile(dense, bbuf + bt * kBTileBytes, cw[bt].x, p.mcols, ww, lane);
      }
      fence_proxy_async_shared();  // the generic-proxy stores above -> the wgmma's async-proxy reads
      wg_barrier(bar_id);
      if (lane == 0) mbar_arrive(empty_bar + 8 * s);  // this warp is done with the dense slot
#pragma unroll
      for (int bt = 0; bt < kBT; ++bt) {
        cw[bt] = cw_next[bt];
        if (kt + 2 < kt_count) cw_next[bt] = load_cw(bt, kt + 2);
      }
      // Codes: this stage's fragments, decoded after the gather (whose registers are free then;
      // decoding before it made ptxas wait for every wgmma, for want of registers). The slot's
      // previous wgmmas (stage kt - 2) are done.
      if constexpr (kCodes) codes.decode(a[slot], e[slot], book);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 2; ++ks)
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const uint64_t desc = b_desc(bbuf + (kBT == 2 ? mt : 0) * kBTileBytes + ks * 64);
          const uint32_t scale_d = kt > 0 || ks > 0;  // the first k-step overwrites
          if (ks == 0)
            wgmma_sp_m64n128_sd<Elem, 0, 0>(acc[mt], a[slot][mt][ks], desc, e[slot][mt], scale_d);
          else
            wgmma_sp_m64n128_sd<Elem, 1, 0>(acc[mt], a[slot][mt][ks], desc, e[slot][mt], scale_d);
        }
      wgmma_commit();
      wgmma_wait<1>();  // stage kt - 1 is done: its B buffer, A slot and metadata are free
      if constexpr (kCodes) keep_metadata(e[1 - slot]);  // its metadata registers untouched till now
      wg_barrier(bar_id);  // ... for every warp of the warpgroup before the next gather
      if (kt + 1 < kt_count) {
        if constexpr (kCodes)
          codes.load(p, kr.stage0 + kt + 1, lane);  // the next stage's words, in flight over its gather
        else
          w_src.load(a[1 - slot], e[1 - slot], kt + 1);
      }
    }
  }
  wgmma_wait<0>();

  // ---- epilogue: Y, or (kSplit) the split's fp32 partials; the reduction (launched
  // programmatically dependent) may launch now and waits for this grid's completion.
  if constexpr (kSplit) {
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    store_m64n128_pair(p.partials + blockIdx.y * p.m * p.ldp, p.ldp, acc, row_block * kBM + wg * 128,
                       tok0, p.rows, p.m, ww, lane);
  } else {
    store_m64n128_pair(static_cast<OutT*>(p.y), p.ldy, acc, row_block * kBM + wg * 128, tok0,
                       p.rows, p.m, ww, lane);
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// Dense X slots that fit next to the B tiles, at most kMaxStages; 0 when fewer than 2 fit.
int stage_count(int v, int mcols) {
  const int64_t dense = int64_t{kBN} * kStageBlocks * mcols * 2;
  const int64_t left = kMaxSmem - 1024 - b_bytes(v) - 2 * kMaxStages * 8;
  const int64_t n = std::min<int64_t>(kMaxStages, left / dense);
  return n >= 2 ? static_cast<int>(n) : 0;
}


bool device_supported() {
  return hopper_wgmma_usable([] {
    return has_sm90a_body(vnm_wgmma_kernel<F16, float, 64, true, false>) &&
           has_sm90a_body(vnm_wgmma_kernel<BF16, __nv_bfloat16, 128, false, false>) &&
           has_sm90a_body(vnm_wgmma_kernel<F16, float, 64, true, true>);
  });
}

// kCode != F16 (session 20): the A side from the compressed tiling `cw` (w: its shape, from
// expanded_vnm_shape); fp16 X.
template <typename Elem, int kV, CodeType kCode = CodeType::F16>
cudaError_t launch(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream, int splits,
                   float* partials, const CompressedWeights* cw = nullptr) {
  if (!encode_fn()) return cudaErrorNotSupported;
  const int stages = stage_count(kV, w.m);
  if (stages == 0) return cudaErrorNotSupported;
  CUtensorMap map{};
  if (!encode_x_map<Elem>(&map, pr.x, w.cols, pr.m, pr.ldx, static_cast<uint32_t>(kStageBlocks * w.m),
                          kBN, CU_TENSOR_MAP_SWIZZLE_NONE))
    return cudaErrorInvalidValue;
  VnmWgmmaParams p{};
  fill_vnm_tile_params(p, w, pr, kBM, kBN);
  p.v = w.v;
  p.stages = stages;
  p.dense_bytes = static_cast<uint32_t>(kBN * kStageBlocks * w.m * 2);
  if constexpr (kCode != CodeType::F16) {
    p.codes = static_cast<const unsigned char*>(cw->tiles);
    p.books = reinterpret_cast<const uint4*>(cw->books);
    p.slot_bytes = compressed_slot_bytes(cw->code, cw->ksteps, cw->scales_per_chunk);
    p.code_kchunks = cw->kchunks;
    p.code_shift = cw->ksteps == 16 ? 4 : 3;
    p.spc = cw->scales_per_chunk;
    p.book_rows = cw->per_tensor_book ? 0 : 1;
  }
  const int smem = 1024 + b_bytes(kV) + stages * static_cast<int>(p.dense_bytes) + 2 * kMaxStages * 8;
  // SPARSA_VNM_GATHER=generic: the 2-byte gather for M = 8 too (A/B measurements).
  static const bool generic_only = [] {
    const char* v = std::getenv("SPARSA_VNM_GATHER");
    return v && std::strcmp(v, "generic") == 0;
  }();
  const unsigned tiles = static_cast<unsigned>(p.row_blocks * p.token_tiles);
  if (splits > 1) {  // split-K: fp32 partials, then the reduction into Y
    p.partials = partials;
    p.ldp = w.rows_padded;
    p.splits = splits;
    auto kernel = w.m == 8 && !generic_only ? vnm_wgmma_kernel<Elem, float, kV, true, true, kCode>
                                            : vnm_wgmma_kernel<Elem, float, kV, false, true, kCode>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        e != cudaSuccess)
      return e;
    kernel<<<dim3(tiles, static_cast<unsigned>(splits)), kThreads, smem, stream>>>(map, p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    return launch_split_reduce(partials, splits, pr.m, w.rows, p.ldp, pr.y, pr.y_type, pr.ldy, stream);
  }
  return dispatch_out(pr.y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    auto kernel = w.m == 8 && !generic_only ? vnm_wgmma_kernel<Elem, OutT, kV, true, false, kCode>
                                            : vnm_wgmma_kernel<Elem, OutT, kV, false, false, kCode>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        e != cudaSuccess)
      return e;
    kernel<<<static_cast<unsigned>(p.row_blocks * p.token_tiles), kThreads, smem, stream>>>(map, p);
    return cudaGetLastError();
  });
}

template <int kV>
cudaError_t launch_codes(const VnmWeights& w, const CompressedWeights& cw, const GemmProblem& pr,
                         cudaStream_t stream, int splits, float* partials) {
  switch (cw.code) {
    case CodeType::Int8:
      return launch<F16, kV, CodeType::Int8>(w, pr, stream, splits, partials, &cw);
    case CodeType::Int4:
      return launch<F16, kV, CodeType::Int4>(w, pr, stream, splits, partials, &cw);
    default:
      return launch<F16, kV, CodeType::Codebook4>(w, pr, stream, splits, partials, &cw);
  }
}

}  // namespace

bool vnm_wgmma_staged_supported(const VnmWeights& w) {
  if (w.v != 64 && w.v != 128) return false;
  if (w.m < 4 || w.m > kMaxM || stage_count(w.v, w.m) == 0) return false;
  if (w.type != ElemType::F16 && w.type != ElemType::BF16) return false;
  return device_supported();
}

namespace detail {
cudaError_t vnm_staged_launch(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream,
                              int splits, float* partials) {
  if (w.type != ElemType::F16 && w.type != ElemType::BF16) return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.x || !pr.y || pr.ldx < w.cols || !w.values || !w.meta || !w.columns)
    return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (w.rows_padded % kRowTile != 0 || w.blocks_padded % 64 != 0 || w.rows < 1 || w.cols < 1)
    return cudaErrorInvalidValue;
  if (w.v != 16 && w.v != 32 && w.v != 64 && w.v != 128) return cudaErrorInvalidValue;
  if (w.m < 4 || w.m > 256 || w.row_groups_padded * w.v < w.rows_padded) return cudaErrorInvalidValue;
  if (pr.m > INT32_MAX / 2 || w.cols > INT32_MAX || w.rows_padded > INT32_MAX)
    return cudaErrorInvalidValue;
  if (splits < 1 || (splits > 1 && !partials)) return cudaErrorInvalidValue;
  if (!vnm_wgmma_staged_supported(w)) return cudaErrorNotSupported;
  if (w.type == ElemType::F16)
    return w.v == 64 ? launch<F16, 64>(w, pr, stream, splits, partials)
                     : launch<F16, 128>(w, pr, stream, splits, partials);
  return w.v == 64 ? launch<BF16, 64>(w, pr, stream, splits, partials)
                   : launch<BF16, 128>(w, pr, stream, splits, partials);
}
}  // namespace detail

cudaError_t vnm_prefill_wgmma_staged(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream) {
  return detail::vnm_staged_launch(w, pr, stream, 1, nullptr);
}

// ---- session 20: compressed V:2:M codes through the staged kernel --------------------------------
namespace {

bool vnm_codes_fit(const CompressedWeights& w) {
  if (!w.vnm || w.bitmap || w.code == CodeType::F16 || (w.ksteps != 8 && w.ksteps != 16)) return false;
  if (w.v != 64 && w.v != 128) return false;
  return w.blocks_padded == w.kchunks * w.ksteps * 8 && w.rows_padded % 64 == 0;
}

bool vnm_codes_device_supported() {
  return hopper_wgmma_usable([] {
    return has_sm90a_body(vnm_wgmma_kernel<F16, __half, 64, true, false, CodeType::Int4>) &&
           has_sm90a_body(vnm_wgmma_kernel<F16, float, 128, false, true, CodeType::Codebook4>);
  });
}

}  // namespace

bool compressed_prefill_vnm_codes_supported(const CompressedWeights& w) {
  return vnm_codes_fit(w) && vnm_wgmma_staged_supported(expanded_vnm_shape(w)) &&
         vnm_codes_device_supported();
}

int compressed_prefill_vnm_codes_splits(const CompressedWeights& w, int64_t m, int split) {
  if (m < 1 || !vnm_codes_fit(w)) return 0;
  return vnm_prefill_splits(expanded_vnm_shape(w), m, split == 0 ? -1 : split);
}

cudaError_t compressed_prefill_vnm_codes(const CompressedWeights& w, const GemmProblem& pr,
                                         cudaStream_t stream, int split) {
  if (!vnm_codes_fit(w) || !w.tiles || !w.columns || reinterpret_cast<uintptr_t>(w.tiles) % 16 != 0 ||
      (w.code == CodeType::Codebook4 && !w.books))
    return cudaErrorInvalidValue;
  if (split < 0 || split > kPrefillMaxSplit) return cudaErrorInvalidValue;
  const VnmWeights shape = expanded_vnm_shape(w);
  int splits = compressed_prefill_vnm_codes_splits(w, pr.m, split);
  if (splits < 1) return cudaErrorInvalidValue;
  float* partials = nullptr;
  if (splits > 1) {
    const size_t need = split_partials_offset(w.rows_padded) + split_partials_bytes(w.rows_padded, pr.m, splits);
    if (!pr.workspace || reinterpret_cast<uintptr_t>(pr.workspace) % 16 != 0 || pr.workspace_bytes < need) {
      if (split != 0) return cudaErrorInvalidValue;  // a forced split refuses a short workspace
      splits = 1;                                    // the automatic rule runs unsplit instead
    } else {
      partials = reinterpret_cast<float*>(static_cast<char*>(pr.workspace) + split_partials_offset(w.rows_padded));
    }
  }
  if (pr.m < 1 || !pr.x || !pr.y || pr.ldx < w.cols || pr.ldx % 8 != 0 ||
      reinterpret_cast<uintptr_t>(pr.x) % 16 != 0 || pr.m > INT32_MAX / 2 || w.cols > INT32_MAX)
    return cudaErrorInvalidValue;
  if (!compressed_prefill_vnm_codes_supported(w)) return cudaErrorNotSupported;
  return w.v == 64 ? launch_codes<64>(shape, w, pr, stream, splits, partials)
                   : launch_codes<128>(shape, w, pr, stream, splits, partials);
}

}  // namespace sparsa::cuda
