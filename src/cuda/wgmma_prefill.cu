// Prefill v5: 2:4 sparse GEMM on Hopper's warpgroup tensor cores (wgmma.mma_async.sp, sm_90a;
// SASS HGMMA ... SP). Y[m, N] = X[m, K] * W[N, K]^T, W in the 2:4 GPU tiling of tiling.cc, X and
// W fp16 or bf16, fp32 accumulation.
//
// Why the existing tiling is enough: for .f16/.bf16, wgmma.sp m64nNk32 with A in registers gives
// each warp w of the warpgroup rows 16w..16w+15 of the 64-row A tile, and a warp's four A
// registers and its metadata register have exactly the layout of mma.sp m16n8k32 (register r:
// row g + 8(r&1), groups t + 4(r>>1); metadata: lanes t in {2s, 2s+1} of sparsity selector s,
// low half row g, high half row g+8). So a 16-byte load per lane from tile_nm24's values is one
// A fragment, and one uint4 of its metadata serves 8 k-steps, as in the mma.sp kernels.
//
// CTA = 1 producer + 2 consumer warpgroups (384 threads, one CTA per SM; setmaxnreg moves the
// producer's registers to the consumers: 40 / 232 per thread):
//   - tile 256 weight rows x 128 tokens; each consumer warpgroup owns 128 rows (two m64 tiles,
//     2 x 64 fp32 accumulators per thread) and issues two m64n128k32 wgmma per k-step;
//   - W (the sparse A operand) and its metadata go global -> shared memory by cp.async into a
//     per-warp ring kRing (16) k-steps deep, one commit group per k-step (cp.async.wait_group
//     waits for one group; a register load would make the next wgmma wait for every load in
//     flight, see v5f in docs/kernels-gpu.md), and from there into registers by one 16-byte LDS
//     per m tile a k-step ahead; metadata likewise, one LDS per chunk (8 k-steps);
//   - X (the B operand, K-major) goes global -> shared memory by TMA (one 64-column x 128-token
//     box, 16 KB, 128-byte swizzle, per stage of 2 k-steps), kStages (4) deep, full/empty
//     mbarriers; TMA zero-fills tokens >= m and columns >= K, so ragged shapes need no predicates;
//   - CTAs are rastered in groups of 8 row blocks x all token tiles (weights stay in L2);
//   - the epilogue stores the accumulators straight to Y (rows >= N, tokens >= m skipped).
// H100, fp16: median 1.30x cuBLAS over the 7 benchmark shapes at m >= 2048 (v5b, W loaded
// straight into registers: 1.03x in the same binary; cuSPARSELt 1.41x),
// bench/results/gemm-h100-2026-11-22-prefill-v5g.json. v9 (session 6, below): the same kernel
// with 192-token tiles, the tile picked per problem by wave count (the default; 0.963 of the
// 128-token time in the median, 1.27 -> 1.35x cuBLAS in the same run; SPARSA_PREFILL24=v5g128
// keeps 128 tokens). Since session 6
// nm24_prefill takes wgmma_prefill_ss.cu instead (W from shared memory by descriptor, 0.91 of
// this kernel's time) where the weights carry its second layout (opt-in: SPARSA_PREFILL24=ss).
// v10 (written in session 7, measured in session 8): split-K of both tiles when the CTA tiles
// are far fewer than the SMs (m <= 512 at N <= 8192), see "v10" below and
// nm24_prefill_wgmma_split. H100 same run against v9: 0.34-0.94x its time where it splits (e.g.
// 4096 x 14336 m = 64 107.3 -> 36.6 us graph, 1.27x cuBLAS; 4096 x 4096 m = 64 33.8 -> 16.4).
// v11 (session 10, default; SPARSA_PREFILL24_TAIL=0 turns it off): above one wave, only the last
// partial wave's tiles are split over K (nm24_tail_plan), in the same launch as the whole tiles;
// H100 same run: 0.894-0.999 of v9's time per call where it applies (4096 x 14336 m = 8192: 964
// -> 905 us), see "v11" below and docs/kernels-gpu.md "Session 10".
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/decode_tuning.h"
#include "cuda/decode_workspace.h"
#include "cuda/mma_sp.cuh"
#include "cuda/nm24_layout.cuh"
#include "cuda/prefill_split.cuh"
#include "cuda/wgmma_prefill_tiles.h"
#include "cuda/wgmma_primitives.cuh"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kBM = 256;             // weight rows per CTA (2 warpgroups x 2 m64 tiles)
constexpr int kBN = 128;             // tokens per CTA (the wgmma N)
constexpr int kStageCols = 64;       // columns of K per stage (2 k-steps of 32)
[[maybe_unused]] constexpr int kGroup = 8;            // row blocks per raster group (even: clusters never straddle)
constexpr int kStageBytes = kBN * kStageCols * 2;  // 16 KB, one TMA box
constexpr int kConsumerThreads = 256;
constexpr int kStages = 4;           // X stages in flight (8 k-steps)
constexpr int kRing = 16;            // k-steps of A (and metadata) in flight per warp
constexpr int kRingSlotBytes = 8 * 1024;  // a k-step of A for the 8 consumer warps, 2 x 512 B each
constexpr int kThreads = kConsumerThreads + 128;  // + one producer warpgroup (one thread works)

struct WgmmaParams {
  const uint4* values;  // tile_nm24 values: [row_tiles][ksteps][32][16 B]; kRowA: values_k
  const uint4* meta;    // tile_nm24 metadata: [row_tiles][kchunks][32][16 B]
  void* y;
  int64_t ldy, m, rows;
  int64_t row_tiles, ksteps, kchunks;
  int64_t row_blocks, token_tiles;  // CTA tiles (row_blocks a multiple of the cluster size)
  // v10 split-K (kSplit kernels only): blockIdx.y is the split; split i of s covers metadata
  // chunks [i kchunks / s, (i + 1) kchunks / s) and stores fp32 partials to
  // partials[i][token][row] (token stride ldp, split stride m * ldp).
  float* partials;
  int64_t ldp;
  int32_t splits;
  // v11 tail split (session 10, kTail kernels only; the struct keeps its 112 bytes, a larger one
  // changes how nvcc reads the parameters of every kernel): CTAs [0, tail_ctas) are the pieces of
  // the last tail_ctas / splits raster tiles, piece b = split b % splits of tail tile b / splits;
  // CTAs from tail_ctas on run raster tiles 0..ldp - 1 whole (ldp = the first tail tile).
  // `partials` is then the workspace: counters (one per tail tile) at its start, the pieces'
  // slots (BN x 256 floats in fragment order, [tail tile][split]) from tail_slots_offset on.
  int32_t tail_ctas;
};

// Where a tail split's slots start (bytes into the workspace): past the decode counter region
// (decode_workspace.h's counters_bytes for row_tiles row groups), so a workspace shared with
// decode calls keeps its counters zero.
__host__ __device__ constexpr int64_t tail_slots_offset(int64_t row_tiles) {
  const int64_t bytes = (row_tiles * 4 + 255) / 256 * 256;
  return bytes > static_cast<int64_t>(kCounterRegion) ? bytes : static_cast<int64_t>(kCounterRegion);
}

// The K range of this CTA: the whole K, or (kSplit) its split's chunks. The kernels count stages
// and k-steps from the range's first chunk (split_sources moves the A and metadata sources there).
struct KRange {
  int64_t chunk0, kchunks, ksteps;
};
[[maybe_unused]] __device__ __forceinline__ bool is_tail_piece(const WgmmaParams& p) {
  return static_cast<int64_t>(blockIdx.x) < p.tail_ctas;
}
template <bool kSplit, bool kTail = false>
__device__ __forceinline__ KRange cta_k_range(const WgmmaParams& p) {
  if constexpr (kTail) {  // a piece: split blockIdx.x % s of its tile, as v10 splits; else all of K
    if (!is_tail_piece(p)) return {0, p.kchunks, p.ksteps};
    const int64_t i = static_cast<int64_t>(blockIdx.x) % p.splits;
    const int64_t c0 = i * p.kchunks / p.splits;
    const int64_t n = (i + 1) * p.kchunks / p.splits - c0;
    return {c0, n, n * (kKChunk / 32)};
  } else if constexpr (kSplit) {  // split i: chunks [i K / s, (i + 1) K / s), as even as possible
    const int64_t c0 = blockIdx.y * p.kchunks / p.splits;
    const int64_t n = (blockIdx.y + 1) * p.kchunks / p.splits - c0;
    return {c0, n, n * (kKChunk / 32)};
  } else {
    return {0, p.kchunks, p.ksteps};
  }
}

// The CTA's tile in the grouped raster order: blockIdx.x, or (kTail) a piece's tail tile, which
// come after the tiles run whole.
template <bool kTail>
__device__ __forceinline__ int64_t cta_raster_index(const WgmmaParams& p) {
  if constexpr (kTail)
    return is_tail_piece(p) ? p.ldp + static_cast<int64_t>(blockIdx.x) / p.splits
                            : static_cast<int64_t>(blockIdx.x) - p.tail_ctas;
  else
    return blockIdx.x;
}

// A consumer warp's sources: its two m64 tiles' A fragments and metadata (warpgroup wg owns
// weight rows [256 row_block + 128 wg, +128)). kRowA (session 7): A from values_k, the lane's
// row piece of k-step 0 (nm24_layout.cuh); k-step s is then at a_src + s * kAStep<kRowA>.
template <bool kRowA>
constexpr int kAStep = kRowA ? kValuesKStep : 32;  // uint4 per k-step of a lane's source
template <bool kRowA>
__device__ __forceinline__ void consumer_sources(const WgmmaParams& p, int64_t row_block, int wg,
                                                 int wwarp, int lane, const uint4* (&a_src)[2],
                                                 const uint4* (&e_src)[2]) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    int64_t rt = row_block * (kBM / 16) + wg * 8 + mt * 4 + wwarp;
    rt = min(rt, p.row_tiles - 1);  // rows past the padding: any valid tile, never stored
    if constexpr (kRowA)
      a_src[mt] = values_k_lane(p.values, rt, p.ksteps * 32, lane);
    else
      a_src[mt] = p.values + rt * p.ksteps * 32 + lane;
    e_src[mt] = p.meta + rt * p.kchunks * 32 + lane;
  }
}

// v10: a split's sources start at its first chunk (8 k-steps of A, one uint4 of metadata per lane).
template <bool kRowA>
__device__ __forceinline__ void split_sources(const KRange& kr, const uint4* (&a_src)[2],
                                              const uint4* (&e_src)[2]) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    a_src[mt] += kr.chunk0 * (kKChunk / 32) * kAStep<kRowA>;
    e_src[mt] += kr.chunk0 * 32;
  }
}

// Variants measured and dropped (docs/kernels-gpu.md, v5c-v5i): W through shared memory by bulk
// copies with an LDS right before each wgmma (0.62x cuBLAS vs 1.00x), a 2-CTA cluster sharing X
// by TMA multicast (0.91x), W straight into registers with an L2 prefetch (1.11x vs 1.30x), half
// of W by registers (0.97x).
// A fragment of one m tile from the ring: LDS.128 of the lane's own copy, or (kRowA) ldmatrix.x4
// of the warp's [piece][row] block after a warp barrier (the lanes' cp.async waits are their own).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <bool kRowA>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], uint32_t addr) {
  if constexpr (kRowA)
    ldsm_a(a, addr);
  else
    lds_128(a, addr);
}
#endif

// v10b (session 8): the s split CTAs of a tile form one cluster (dims (1, s, 1), rank = split).
// After the K loop each CTA's consumers write their fp32 accumulators to their own shared memory
// (the X stages and A ring are free then: every TMA stage and cp.async group was waited for),
// in fragment order: 8-token column block q of (tile mt, block cb), q = mt BN/8 + cb, at
// buf + (q * 256 + consumer thread) * 16 (one 16-byte store per lane, conflict-free). One
// cluster barrier; then CTA rank r sums the column blocks q with q % s == r over the s CTAs in
// rank order through distributed shared memory (the same order and fp32 adds as v10's
// reduction kernel: the same bits) and writes Y; a second cluster barrier keeps every CTA's
// shared memory alive until the others have read it. The producer warpgroup has exited by then:
// barrier.cluster waits for the non-exited threads only.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void cluster_barrier() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::
                   : "memory");
}
template <typename OutT, int BN>
__device__ __forceinline__ void cluster_reduce_store(uint32_t buf, const float (&acc)[2][BN / 2],
                                                     OutT* y, int64_t ldy, int64_t row_base,
                                                     int64_t tok0, int64_t rows, int64_t m,
                                                     int warp, int lane, int ctid, int rank,
                                                     int splits) {
  constexpr int kBlocks = BN / 8;  // column blocks per m64 tile
  asm volatile("bar.sync 1, 256;\n" ::: "memory");  // every consumer warp done with the rings
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int cb = 0; cb < kBlocks; ++cb)
      asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(
                       buf + static_cast<uint32_t>(((mt * kBlocks + cb) * 256 + ctid) * 16)),
                   "f"(acc[mt][4 * cb]), "f"(acc[mt][4 * cb + 1]), "f"(acc[mt][4 * cb + 2]),
                   "f"(acc[mt][4 * cb + 3])
                   : "memory");
  cluster_barrier();
  const int g = lane >> 2, t = lane & 3;
#pragma unroll 1
  for (int q = rank; q < 2 * kBlocks; q += splits) {
    const int mt = q / kBlocks, cb = q % kBlocks;
    const int64_t tok = tok0 + 8 * cb + 2 * t;
    if (tok0 + 8 * cb >= m) continue;  // the whole block past m (warp-uniform)
    const uint32_t local = buf + static_cast<uint32_t>((q * 256 + ctid) * 16);
    float sum[4] = {0.f, 0.f, 0.f, 0.f};
    for (int k = 0; k < splits; ++k) {
      uint32_t remote;
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(k));
      float v[4];
      asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                   : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3])
                   : "r"(remote)
                   : "memory");
#pragma unroll
      for (int j = 0; j < 4; ++j) sum[j] = k == 0 ? v[j] : sum[j] + v[j];
    }
    const int64_t row0 = row_base + mt * 64 + warp * 16 + g;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t row = row0 + 8 * ((j >> 1) & 1), tk = tok + (j & 1);
      if (row < rows && tk < m) y[tk * ldy + row] = from_float<OutT>(sum[j]);
    }
  }
  cluster_barrier();
}
#endif

// v11 (session 10): the epilogue of a tail piece. Store the accumulators to the piece's slot
// (fragment order: column block q = mt BN/8 + cb of consumer thread ctid at float4 q * 256 +
// ctid, one coalesced 16-byte store per lane), release them (fence), count the arrival; the
// last piece of the tile to arrive resets the counter, sums the s slots in split order (the same
// fp32 adds in the same order as v10's reduction kernel: deterministic whoever arrives last)
// and stores Y as the unsplit epilogue does. `flag` is a free shared-memory word.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <typename OutT, int BN>
__device__ __forceinline__ void tail_piece_store(float (&acc)[2][BN / 2], const WgmmaParams& p,
                                                 int64_t row_base, int64_t tok0, int warp, int lane,
                                                 int ctid, uint32_t flag) {
  constexpr int kBlocks = BN / 8;                // column blocks per m64 tile
  constexpr int64_t kSlot4 = int64_t{BN} * 64;   // float4 per slot (BN x 256 floats)
  const int splits = p.splits;
  const int64_t t = static_cast<int64_t>(blockIdx.x) / splits;
  unsigned* counters = reinterpret_cast<unsigned*>(p.partials);
  float4* slots = reinterpret_cast<float4*>(p.partials + tail_slots_offset(p.row_tiles) / 4) +
                  t * splits * kSlot4 + ctid;
  float4* mine = slots + (static_cast<int64_t>(blockIdx.x) % splits) * kSlot4;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int cb = 0; cb < kBlocks; ++cb)
      __stcg(mine + (mt * kBlocks + cb) * 256,
             make_float4(acc[mt][4 * cb], acc[mt][4 * cb + 1], acc[mt][4 * cb + 2], acc[mt][4 * cb + 3]));
  __threadfence();
  asm volatile("bar.sync 1, 256;\n" ::: "memory");  // the 8 consumer warps' slots are out
  if (ctid == 0) {
    const uint32_t last = atomicAdd(counters + t, 1u) == static_cast<unsigned>(splits - 1);
    if (last) counters[t] = 0;  // every piece of t has counted: zero again for the next call
    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(flag), "r"(last) : "memory");
  }
  asm volatile("bar.sync 1, 256;\n" ::: "memory");
  if (lds_32(flag) == 0) return;
  __threadfence();  // acquire: the other pieces' slots
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int cb = 0; cb < kBlocks; ++cb) {
      const float4 v = __ldcg(slots + (mt * kBlocks + cb) * 256);
      acc[mt][4 * cb] = v.x;
      acc[mt][4 * cb + 1] = v.y;
      acc[mt][4 * cb + 2] = v.z;
      acc[mt][4 * cb + 3] = v.w;
    }
#pragma unroll 1
  for (int k = 1; k < splits; ++k) {
    const float4* src = slots + k * kSlot4;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int cb = 0; cb < kBlocks; ++cb) {
        const float4 v = __ldcg(src + (mt * kBlocks + cb) * 256);
        acc[mt][4 * cb] += v.x;
        acc[mt][4 * cb + 1] += v.y;
        acc[mt][4 * cb + 2] += v.z;
        acc[mt][4 * cb + 3] += v.w;
      }
  }
  store_m64n_pair<OutT, BN>(static_cast<OutT*>(p.y), p.ldy, acc, row_base, tok0, p.rows, p.m, warp,
                            lane);
}
#endif

template <typename Elem, typename OutT, bool kRowA, bool kSplit, bool kCluster = false,
          bool kTail = false>
__global__ void __launch_bounds__(kThreads, 1)
    nm24_wgmma_kernel(const __grid_constant__ CUtensorMap x_map, const WgmmaParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;  // 128B swizzle: 1 KB aligned
  // shared memory: X stages | A ring (kRing slots) | metadata ring (2 slots) | mbarriers
  const uint32_t full_bar = base + kStages * kStageBytes + (kRing + 2) * kRingSlotBytes;
  const uint32_t empty_bar = full_bar + kStages * 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KRange kr = cta_k_range<kSplit, kTail>(p);
  const int64_t kt_count = kr.ksteps / 2;  // stages of 64 columns
  const RasterTile tile =
      grouped_raster_tile(cta_raster_index<kTail>(p), kGroup, p.row_blocks, p.token_tiles, kBN);
  const int64_t row_block = tile.row_block;
  const int32_t tok0 = static_cast<int32_t>(tile.tok0);

  if (threadIdx.x == 0) init_stage_barriers(full_bar, empty_bar, kStages, kConsumerThreads / 32);
  __syncthreads();

  if (warp < 4) {  // ---- producer warpgroup: X tiles by TMA, issued by one thread
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (warp == 0 && lane == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&x_map))
                   : "memory");
      for (int64_t kt = 0; kt < kt_count; ++kt) {
        const int s = static_cast<int>(kt % kStages);
        if (kt >= kStages) mbar_wait(empty_bar + 8 * s, static_cast<uint32_t>((kt / kStages - 1) & 1));
        mbar_expect_tx(full_bar + 8 * s, kStageBytes);
        tma_load_2d(base + s * kStageBytes, &x_map,
                    static_cast<int32_t>((kr.chunk0 * (kKChunk / kStageCols) + kt) * kStageCols), tok0,
                    full_bar + 8 * s);
      }
    }
    return;
  }

  // ---- consumers: warpgroup wg owns weight rows [256 rb + 128 wg, +128), two m64 tiles.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int wg = warp / 4 - 1, wwarp = warp % 4;
  const uint4* a_src[2];
  const uint4* e_src[2];
  consumer_sources<kRowA>(p, row_block, wg, wwarp, lane, a_src, e_src);
  if constexpr (kSplit || kTail) split_sources<kRowA>(kr, a_src, e_src);
  const int64_t ksteps = kr.ksteps, kchunks = kr.kchunks;
  float acc[2][64];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[mt][i] = 0.0f;

  // A and metadata through a per-warp shared-memory ring filled by cp.async kRing k-steps
  // ahead (cp.async.wait_group waits for one group, not for every load in flight), then one
  // LDS per m tile a k-step ahead into registers. Each lane reads back only the 16 bytes it
  // copied, so no barrier between lanes is needed.
  const int cw = warp - 4;  // consumer warp 0..7
  const uint32_t a_ring = base + kStages * kStageBytes + cw * 1024 + lane * 16;
  const uint32_t e_ring = a_ring + kRing * kRingSlotBytes;
  uint32_t a[4][2][4];  // [k-step & 3][m tile][word]
  uint32_t e[2][2][4];  // [chunk parity][m tile][word]
  auto issue = [&](int64_t s) {  // one commit group per k-step, empty past the end
    if (s < ksteps) {
      const uint32_t slot = static_cast<uint32_t>(s % kRing) * kRingSlotBytes;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
        cp_async_16(a_ring + slot + mt * 512, a_src[mt] + s * kAStep<kRowA>, 16);
      if (s % 8 == 0) {
        const int64_t c = s / 8;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
          cp_async_16(e_ring + static_cast<uint32_t>(c & 1) * kRingSlotBytes + mt * 512,
                      e_src[mt] + c * 32, 16);
      }
    }
    cp_async_commit();
  };
#pragma unroll 1
  for (int s = 0; s < kRing; ++s) issue(s);
  cp_async_wait<kRing - 1>();
  if constexpr (kRowA) __syncwarp();
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    load_a<kRowA>(a[0][mt], a_ring + mt * 512);
    lds_128(e[0][mt], e_ring + mt * 512);
  }
#pragma unroll 1
  for (int64_t kc0 = 0; kc0 < kchunks; kc0 += 2) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int64_t kc = kc0 + j / 8;
      if (j == 8 && kc >= kchunks) break;
      const int64_t s = kc * 8 + j % 8;
      const int64_t kt = s / 2;
      const int stage = static_cast<int>(kt % kStages);
      if (j % 2 == 0) mbar_wait(full_bar + 8 * stage, static_cast<uint32_t>((kt / kStages) & 1));
      const uint64_t desc = b_desc(base + stage * kStageBytes + (j % 2) * 64);
      const int par = j / 8, word = (j % 8) / 2, slot = j % 4;
      wgmma_fence();
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        if (j % 2 == 0)
          wgmma_sp_m64n128<Elem, 0>(acc[mt], a[slot][mt], desc, e[par][mt][word]);
        else
          wgmma_sp_m64n128<Elem, 1>(acc[mt], a[slot][mt], desc, e[par][mt][word]);
      }
      wgmma_commit();
      if (s + 1 < ksteps) {
        // groups 0..s+kRing-1 issued: the wait leaves kRing-2 pending, so k-step s+1 landed.
        // Its slot (s+1)&3 was last read by k-step s-3, long finished.
        cp_async_wait<kRing - 2>();
        if constexpr (kRowA) __syncwarp();
        const uint32_t nslot = static_cast<uint32_t>((s + 1) % kRing) * kRingSlotBytes;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
          load_a<kRowA>(a[(j + 1) % 4][mt], a_ring + nslot + mt * 512);
        if (j % 8 == 7) {
          const uint32_t eslot = static_cast<uint32_t>(((s + 1) / 8) & 1) * kRingSlotBytes;
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) lds_128(e[1 - par][mt], e_ring + eslot + mt * 512);
        }
      }
      wgmma_wait<1>();
      if (j % 2 == 0 && s > 0 && lane == 0)
        mbar_arrive(empty_bar + 8 * ((kt + kStages - 1) % kStages));
      // Ring slot s % kRing was read into registers for this k-step: it takes k-step s + kRing.
      issue(s + kRing);
    }
  }
  cp_async_wait<0>();
  wgmma_wait<0>();

  // ---- epilogue: Y, or (kSplit) the split's fp32 partials; the reduction kernel (launched
  // programmatically dependent) may start its launch now and waits for this grid's completion.
  if constexpr (kCluster)
    cluster_reduce_store<OutT, kBN>(base, acc, static_cast<OutT*>(p.y), p.ldy,
                                    row_block * kBM + wg * 128, tok0, p.rows, p.m, wwarp, lane,
                                    threadIdx.x - 128, static_cast<int>(blockIdx.y), p.splits);
  else if constexpr (kSplit) {
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    store_m64n128_pair(p.partials + blockIdx.y * p.m * p.ldp, p.ldp, acc, row_block * kBM + wg * 128,
                       tok0, p.rows, p.m, wwarp, lane);
  } else if constexpr (kTail) {
    if (is_tail_piece(p))
      tail_piece_store<OutT, kBN>(acc, p, row_block * kBM + wg * 128, tok0, wwarp, lane,
                                  threadIdx.x - 128, base);
    else
      store_m64n128_pair(static_cast<OutT*>(p.y), p.ldy, acc, row_block * kBM + wg * 128, tok0,
                         p.rows, p.m, wwarp, lane);
  } else
    store_m64n128_pair(static_cast<OutT*>(p.y), p.ldy, acc, row_block * kBM + wg * 128, tok0,
                       p.rows, p.m, wwarp, lane);
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

constexpr int kSmemBytes =
    kStages * kStageBytes + (kRing + 2) * kRingSlotBytes + 1024 /* alignment */ + 2 * kStages * 8;
static_assert(kSmemBytes <= 227 * 1024, "over the 227 KB of shared memory per CTA");
// The metadata ring has 2 slots: chunk c + 2 is copied at k-step 8c + 16 - kRing, after chunk c
// was read into registers (k-step 8c - 1).
static_assert(kRing <= 16 && kRing >= 2, "metadata ring of 2 chunks");
static_assert(kBN * 1024 <= kStages * kStageBytes + (kRing + 2) * kRingSlotBytes,
              "v10b's reduction buffer overlaps the mbarriers");


// ---- v9 (session 6): the same kernel with 192-token tiles ---------------------------------------
// Why: 192-token tiles move fewer shared-memory bytes per MAC (B reads 48 KB, A write + read 16 KB,
// X write 12 KB, metadata 2 KB = 78 KB per 1.5 M MACs: 52 KB per M against 58 at 128 tokens), and
// each wgmma queues 1.5x the tensor work behind the same fence / commit / wait (v8 in
// docs/kernels-gpu.md measured both on the shared-memory-A kernel). To fit 2 x 96 fp32
// accumulators in the consumers' 232 registers, the A register ring has 2 slots instead of 4 (the
// LDS of k-step s + 1 goes after wgmma.wait_group 1 at k-step s, which frees k-step s - 1's
// registers) and the metadata is read by one 32-bit LDS per stage and m tile (double-buffered by
// stage parity) instead of one uint4 per chunk. Shared memory: X 4 stages of 24 KB, the A ring
// 12 k-steps deep (~1.5x v5g's 16 in time per k-step), the metadata ring 4 chunks deep (a
// chunk's last word is read at its k-step 5, and with 12 k-steps of lead chunk c + 2 would be
// copied over it at k-step 8c + 4).
constexpr int kBN192 = 192;
constexpr int kStageBytes192 = kBN192 * kStageCols * 2;  // 24 KB
constexpr int kStages192 = 4;
constexpr int kRing192 = 12;
constexpr int kMetaSlots192 = 4;

template <typename Elem, typename OutT, bool kRowA, bool kSplit, bool kCluster = false,
          bool kTail = false>
__global__ void __launch_bounds__(kThreads, 1)
    nm24_wgmma192_kernel(const __grid_constant__ CUtensorMap x_map, const WgmmaParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;  // 128B swizzle: 1 KB aligned
  // shared memory: X stages | A ring (kRing192 slots) | metadata ring (kMetaSlots192) | mbarriers
  const uint32_t full_bar =
      base + kStages192 * kStageBytes192 + (kRing192 + kMetaSlots192) * kRingSlotBytes;
  const uint32_t empty_bar = full_bar + kStages192 * 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KRange kr = cta_k_range<kSplit, kTail>(p);
  const int32_t kt_count = static_cast<int32_t>(kr.ksteps / 2);  // stages of 64 columns
  const int32_t col0 = static_cast<int32_t>(kr.chunk0 * kKChunk);
  const RasterTile tile =
      grouped_raster_tile(cta_raster_index<kTail>(p), kGroup, p.row_blocks, p.token_tiles, kBN192);
  const int64_t row_block = tile.row_block;
  const int32_t tok0 = static_cast<int32_t>(tile.tok0);

  if (threadIdx.x == 0) init_stage_barriers(full_bar, empty_bar, kStages192, kConsumerThreads / 32);
  __syncthreads();

  if (warp < 4) {  // ---- producer warpgroup: X tiles by TMA, issued by one thread
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
    if (warp == 0 && lane == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&x_map))
                   : "memory");
      for (int32_t kt = 0; kt < kt_count; ++kt) {
        const int s = kt % kStages192;
        if (kt >= kStages192) mbar_wait(empty_bar + 8 * s, static_cast<uint32_t>((kt / kStages192 - 1) & 1));
        mbar_expect_tx(full_bar + 8 * s, kStageBytes192);
        tma_load_2d(base + s * kStageBytes192, &x_map, col0 + kt * kStageCols, tok0,
                    full_bar + 8 * s);
      }
    }
    return;
  }

  // ---- consumers: warpgroup wg owns weight rows [256 rb + 128 wg, +128), two m64 tiles.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
  const int wg = warp / 4 - 1, wwarp = warp % 4;
  const uint4* a_src[2];
  const uint4* e_src[2];
  consumer_sources<kRowA>(p, row_block, wg, wwarp, lane, a_src, e_src);
  if constexpr (kSplit || kTail) split_sources<kRowA>(kr, a_src, e_src);
  float acc[2][96];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 96; ++i) acc[mt][i] = 0.0f;

  const int cw = warp - 4;  // consumer warp 0..7
  const uint32_t a_ring = base + kStages192 * kStageBytes192 + cw * 1024 + lane * 16;
  const uint32_t e_ring = a_ring + kRing192 * kRingSlotBytes;
  const int32_t ksteps = static_cast<int32_t>(kr.ksteps);
  uint32_t a[2][2][4];  // [k-step & 1][m tile][word]
  uint32_t e[2][2];     // [stage & 1][m tile]: the stage's metadata word
  // A slot of k-step s is s % kRing192, kept as a byte offset (no division in the loop).
  uint32_t wr_off = 0;  // slot that the next issue() fills
  auto issue = [&](int32_t s) {  // one commit group per k-step, empty past the end
    if (s < ksteps) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
        cp_async_16(a_ring + wr_off + mt * 512, a_src[mt] + s * kAStep<kRowA>, 16);
      if (s % 8 == 0) {
        const int32_t c = s / 8;
        const uint32_t eslot = static_cast<uint32_t>(c % kMetaSlots192) * kRingSlotBytes;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) cp_async_16(e_ring + eslot + mt * 512, e_src[mt] + c * 32, 16);
      }
    }
    cp_async_commit();
    wr_off = wr_off + kRingSlotBytes == kRing192 * kRingSlotBytes ? 0 : wr_off + kRingSlotBytes;
  };
#pragma unroll 1
  for (int32_t s = 0; s < kRing192; ++s) issue(s);
  cp_async_wait<kRing192 - 1>();
  if constexpr (kRowA) __syncwarp();
  uint32_t rd_off = 0;  // slot of the k-step whose fragments are loaded next
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    load_a<kRowA>(a[0][mt], a_ring + mt * 512);
    e[0][mt] = lds_32(e_ring + mt * 512);
  }
  rd_off = kRingSlotBytes;
#pragma unroll 1
  for (int32_t kc = 0; kc < static_cast<int32_t>(kr.kchunks); ++kc) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int32_t s = kc * 8 + j;
      const int32_t kt = s / 2;
      const int stage = kt % kStages192;
      if (j % 2 == 0) mbar_wait(full_bar + 8 * stage, static_cast<uint32_t>((kt / kStages192) & 1));
      const uint64_t desc = b_desc(base + stage * kStageBytes192 + (j % 2) * 64);
      wgmma_fence();
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        if (j % 2 == 0)
          wgmma_sp_m64n192<Elem, 0>(acc[mt], a[j % 2][mt], desc, e[(j / 2) % 2][mt]);
        else
          wgmma_sp_m64n192<Elem, 1>(acc[mt], a[j % 2][mt], desc, e[(j / 2) % 2][mt]);
      }
      wgmma_commit();
      // groups 0..s+kRing192-1 issued: the wait leaves kRing192-2 pending, so k-step s+1 landed.
      if (s + 1 < ksteps) cp_async_wait<kRing192 - 2>();
      wgmma_wait<1>();  // k-step s - 1 done: its A registers (slot (s + 1) & 1) and, at a stage's
                        // second k-step, the previous stage's metadata registers are free
      if (s + 1 < ksteps) {
        if constexpr (kRowA) __syncwarp();
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
          load_a<kRowA>(a[(j + 1) % 2][mt], a_ring + rd_off + mt * 512);
        if (j % 2 == 1) {  // next k-step starts stage kt + 1: word (kt + 1) % 4 of its chunk
          const uint32_t ew = e_ring +
                              static_cast<uint32_t>(((kt + 1) / 4) % kMetaSlots192) * kRingSlotBytes +
                              static_cast<uint32_t>((kt + 1) % 4) * 4;
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) e[((j + 1) / 2) % 2][mt] = lds_32(ew + mt * 512);
        }
      }
      rd_off = rd_off + kRingSlotBytes == kRing192 * kRingSlotBytes ? 0 : rd_off + kRingSlotBytes;
      if (j % 2 == 0 && s > 0 && lane == 0)
        mbar_arrive(empty_bar + 8 * ((kt + kStages192 - 1) % kStages192));
      // Ring slot s % kRing192 was read into registers at k-step s - 1: it takes k-step s + kRing192.
      issue(s + kRing192);
    }
  }
  cp_async_wait<0>();
  wgmma_wait<0>();

  // ---- epilogue: Y, or (kSplit) the split's fp32 partials (see the 128-token kernel)
  if constexpr (kCluster)
    cluster_reduce_store<OutT, kBN192>(base, acc, static_cast<OutT*>(p.y), p.ldy,
                                       row_block * kBM + wg * 128, tok0, p.rows, p.m, wwarp, lane,
                                       threadIdx.x - 128, static_cast<int>(blockIdx.y), p.splits);
  else if constexpr (kSplit) {
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    store_m64n_pair<float, kBN192>(p.partials + blockIdx.y * p.m * p.ldp, p.ldp, acc,
                                   row_block * kBM + wg * 128, tok0, p.rows, p.m, wwarp, lane);
  } else if constexpr (kTail) {
    if (is_tail_piece(p))
      tail_piece_store<OutT, kBN192>(acc, p, row_block * kBM + wg * 128, tok0, wwarp, lane,
                                     threadIdx.x - 128, base);
    else
      store_m64n_pair<OutT, kBN192>(static_cast<OutT*>(p.y), p.ldy, acc, row_block * kBM + wg * 128,
                                    tok0, p.rows, p.m, wwarp, lane);
  } else
    store_m64n_pair<OutT, kBN192>(static_cast<OutT*>(p.y), p.ldy, acc, row_block * kBM + wg * 128,
                                  tok0, p.rows, p.m, wwarp, lane);
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

constexpr int kSmemBytes192 = kStages192 * kStageBytes192 +
                              (kRing192 + kMetaSlots192) * kRingSlotBytes + 1024 /* alignment */ +
                              2 * kStages192 * 8;
static_assert(kSmemBytes192 <= 227 * 1024, "over the 227 KB of shared memory per CTA");
// Metadata: chunk c + kMetaSlots192 is copied at k-step 8c + 8 kMetaSlots192 - kRing192, after
// chunk c's last word was read (k-step 8c + 5).
static_assert(8 * kMetaSlots192 - kRing192 > 5 && kRing192 >= 2, "metadata ring too short");
static_assert(kBN192 * 1024 <= kStages192 * kStageBytes192 + (kRing192 + kMetaSlots192) * kRingSlotBytes,
              "v10b's reduction buffer overlaps the mbarriers");
// Time per token of a 192-token tile relative to v5g's 128 on full waves, for the tile choice
// by wave count: v8's 0.87 (the same shared-memory bytes per MAC argument); the v9 run's 14
// records fit 0.83-0.94 under the same wave model (median 0.89), and 0.90 would have moved two
// records to the 128 tile that ran 0.95 / 0.99 of its time with 192.
constexpr double kRegA192PerToken = 0.87;

// ---- v10 (session 7): split-K for few CTA tiles ----------------------------------------------
// Why: at m <= 256 on N <= 8192 the 256-row x 128/192-token CTA tiles are far fewer than the 132
// SMs (N = 4096, m = 64: 16 CTAs), and each runs at v9's per-SM rate over the whole K
// (4096 x 4096 m = 64: 36.8 us against cuBLAS's 17.5 on the H100). The weights (1.125 B per
// weight) then stream from 16 SMs only. Split-K runs s CTAs per tile, each over an even share of
// K's metadata chunks (256 columns; v9's loop unchanged, its sources and TMA coordinates moved
// to the range), each storing fp32 partials [split][token][row]; a second kernel on the same
// stream sums the splits in split order (deterministic) into Y. s = 1 launches v9's kernels
// (kSplit = false: same code as before).
constexpr int kMinSplitChunks = 2;  // >= 8 stages of 64 columns per split


// Where the partials start in the workspace: after the decode kernels' counter region
// (decode_workspace.h) of any matrix with at most rows_padded / 16 row groups, so that a split
// prefill never writes over counters that a later decode call on a shared workspace relies on.
size_t partials_offset(const Nm24Weights& w) { return detail::split_partials_offset(w.rows_padded); }
size_t partials_bytes(const Nm24Weights& w, int64_t m, int splits) {
  return detail::split_partials_bytes(w.rows_padded, m, splits);
}

}  // namespace

// What the split rule's model streams: the 2:4 values and metadata (9/8 B per weight) and X.
double nm24_split_weight_bytes(const Nm24Weights& w, int64_t m) {
  return 1.125 * static_cast<double>(w.rows_padded) * static_cast<double>(w.cols_padded) +
         2.0 * static_cast<double>(m) * static_cast<double>(w.cols_padded);
}

namespace {

int resolved_tokens(const Nm24Weights& w, int64_t m, int tokens_per_tile) {
  if (tokens_per_tile == 0) tokens_per_tile = nm24_prefill_regA_tokens();
  if (tokens_per_tile == -1) tokens_per_tile = nm24_tokens_by_waves(w.rows_padded, m, kRegA192PerToken);
  return tokens_per_tile;
}

// The split count for a request (0: SPARSA_PREFILL24_SPLIT; -1 auto; 1 off; 2..kPrefillMaxSplit
// forced, at most one split per chunk), or 0 for an invalid request.
int resolved_splits(const Nm24Weights& w, int64_t m, int tokens, int split) {
  if (split == 0) split = nm24_prefill_split_mode();
  const int64_t kchunks = w.cols_padded / kKChunk;
  if (split == -1) {
    const int64_t tiles = (w.rows_padded + kBM - 1) / kBM * ((m + tokens - 1) / tokens);
    return nm24_split_rule(tiles, kchunks, sm_count(), nm24_split_weight_bytes(w, m),
                           static_cast<double>(partials_bytes(w, m, 1)));
  }
  if (split < 1 || split > kPrefillMaxSplit) return 0;
  return static_cast<int>(std::min<int64_t>(split, std::max<int64_t>(kchunks, 1)));
}

// v10b: the cluster launch config of a tile grid with s splits, and whether all its clusters fit
// at once (cudaOccupancyMaxActiveClusters >= tiles; cached per kernel and s).
template <typename Elem, int BN, bool kRowA, typename OutT>
bool cluster_fits(unsigned tiles, int splits) {
  static int cache[kPrefillMaxSplit + 1] = {};  // 0 unknown, else max active clusters + 1
  auto kernel = BN == 128 ? nm24_wgmma_kernel<Elem, OutT, kRowA, true, true>
                          : nm24_wgmma192_kernel<Elem, OutT, kRowA, true, true>;
  if (cache[splits] == 0) {
    const int smem = BN == 128 ? kSmemBytes : kSmemBytes192;
    int n = 0;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess) {
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(tiles, static_cast<unsigned>(splits));
      config.blockDim = dim3(kThreads);
      config.dynamicSmemBytes = static_cast<size_t>(smem);
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = 1;
      attr.val.clusterDim.y = static_cast<unsigned>(splits);
      attr.val.clusterDim.z = 1;
      config.attrs = &attr;
      config.numAttrs = 1;
      if (cudaOccupancyMaxActiveClusters(&n, kernel, &config) != cudaSuccess) n = 0;
    }
    (void)cudaGetLastError();  // a refused query only means: no cluster path
    cache[splits] = n + 1;
  }
  return static_cast<unsigned>(cache[splits] - 1) >= tiles;
}

template <typename Elem, int BN, bool kRowA>
cudaError_t launch_cluster(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream,
                           int splits, WgmmaParams p, const CUtensorMap& map, unsigned tiles) {
  return dispatch_out(pr.y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    auto kernel = BN == 128 ? nm24_wgmma_kernel<Elem, OutT, kRowA, true, true>
                            : nm24_wgmma192_kernel<Elem, OutT, kRowA, true, true>;
    const int smem = BN == 128 ? kSmemBytes : kSmemBytes192;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        e != cudaSuccess)
      return e;
    p.splits = splits;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(tiles, static_cast<unsigned>(splits));
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = static_cast<size_t>(smem);
    config.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = 1;
    attr.val.clusterDim.y = static_cast<unsigned>(splits);
    attr.val.clusterDim.z = 1;
    config.attrs = &attr;
    config.numAttrs = 1;
    (void)w;
    const cudaError_t e = cudaLaunchKernelEx(&config, kernel, map, p);
    const cudaError_t last = cudaGetLastError();
    return e != cudaSuccess ? e : last;
  });
}

// v11 (session 10): the unsplit grid with its last partial wave's tiles split over K (kTail
// kernels, fragment layout only): tail.tiles pieces of tail.splits each first, then the other
// tiles whole. The counters sit at the start of the workspace (the decode counter region: zero
// between calls, and the last piece of a tile zeroes its counter again), the partials after it.
template <typename Elem, int BN>
cudaError_t launch_tail(const GemmProblem& pr, cudaStream_t stream, WgmmaParams p,
                        const CUtensorMap& map, unsigned tiles, const Nm24TailPlan& tail) {
  return dispatch_out(pr.y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    auto kernel = BN == 128 ? nm24_wgmma_kernel<Elem, OutT, false, false, false, true>
                            : nm24_wgmma192_kernel<Elem, OutT, false, false, false, true>;
    const int smem = BN == 128 ? kSmemBytes : kSmemBytes192;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        e != cudaSuccess)
      return e;
    p.splits = tail.splits;
    p.tail_ctas = static_cast<int32_t>(tail.tiles * tail.splits);
    p.ldp = tiles - tail.tiles;  // the first tail tile
    p.partials = static_cast<float*>(pr.workspace);
    const unsigned grid = static_cast<unsigned>(p.tail_ctas + p.ldp);
    kernel<<<grid, kThreads, smem, stream>>>(map, p);
    return cudaGetLastError();
  });
}

template <typename Elem, int BN, bool kRowA>
cudaError_t launch(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream, int splits,
                   bool cluster = false, const Nm24TailPlan* tail = nullptr) {
  if (!encode_fn()) return cudaErrorNotSupported;
  CUtensorMap map{};
  if (!encode_x_map<Elem>(&map, pr.x, w.cols, pr.m, pr.ldx, kStageCols, BN, CU_TENSOR_MAP_SWIZZLE_128B))
    return cudaErrorInvalidValue;
  WgmmaParams p{};
  p.values = static_cast<const uint4*>(kRowA ? w.values_k : w.values);
  p.meta = reinterpret_cast<const uint4*>(w.meta);
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.m = pr.m;
  p.rows = w.rows;
  p.row_tiles = w.rows_padded / 16;
  p.ksteps = w.cols_padded / 32;
  p.kchunks = w.cols_padded / kKChunk;
  p.row_blocks = (w.rows_padded + kBM - 1) / kBM;
  p.token_tiles = (pr.m + BN - 1) / BN;
  const int smem = BN == 128 ? kSmemBytes : kSmemBytes192;
  const unsigned tiles = static_cast<unsigned>(p.row_blocks * p.token_tiles);
  if (splits > 1 && cluster) return launch_cluster<Elem, BN, kRowA>(w, pr, stream, splits, p, map, tiles);
  if constexpr (!kRowA)
    if (splits == 1 && tail && tail->splits > 1)
      return launch_tail<Elem, BN>(pr, stream, p, map, tiles, *tail);
  if (splits > 1) {  // v10: the split kernel (fp32 partials), then the reduction into Y
    p.partials = reinterpret_cast<float*>(static_cast<char*>(pr.workspace) + partials_offset(w));
    p.ldp = w.rows_padded;
    p.splits = splits;
    auto kernel = BN == 128 ? nm24_wgmma_kernel<Elem, float, kRowA, true>
                            : nm24_wgmma192_kernel<Elem, float, kRowA, true>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        e != cudaSuccess)
      return e;
    kernel<<<dim3(tiles, static_cast<unsigned>(splits)), kThreads, smem, stream>>>(map, p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    // Programmatic dependent launch (SPARSA_DECODE_PDL): the reduction's launch overlaps the
    // split kernel's epilogue; its griddepcontrol.wait keeps the order.
    return detail::launch_split_reduce(static_cast<const float*>(p.partials), splits, pr.m, w.rows, p.ldp,
                                       pr.y, pr.y_type, pr.ldy, stream);
  }
  return dispatch_out(pr.y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    auto kernel = BN == 128 ? nm24_wgmma_kernel<Elem, OutT, kRowA, false>
                            : nm24_wgmma192_kernel<Elem, OutT, kRowA, false>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        e != cudaSuccess)
      return e;
    kernel<<<tiles, kThreads, smem, stream>>>(map, p);
    return cudaGetLastError();
  });
}

}  // namespace

bool nm24_wgmma_supported() {
  return hopper_wgmma_usable([] {
    return has_sm90a_body(nm24_wgmma_kernel<F16, float, false, false>) &&
           has_sm90a_body(nm24_wgmma_kernel<BF16, __nv_bfloat16, true, false>) &&
           has_sm90a_body(nm24_wgmma192_kernel<F16, float, true, false>) &&
           has_sm90a_body(nm24_wgmma192_kernel<BF16, __nv_bfloat16, false, false>) &&
           has_sm90a_body(nm24_wgmma_kernel<BF16, float, false, true>) &&
           has_sm90a_body(nm24_wgmma192_kernel<F16, float, true, true>);
  });
}

int nm24_prefill_regA_tokens() {
  static const int tokens = [] {
    const char* v = std::getenv("SPARSA_PREFILL24");
    if (v && std::strcmp(v, "v5g128") == 0) return 128;
    if (v && std::strcmp(v, "v5g192") == 0) return 192;
    if (v && std::strcmp(v, "v5gauto") == 0) return -1;
    return kNm24RegADefaultTokens;
  }();
  return tokens;
}

int nm24_prefill_split_mode() {
  static const int mode = detail::split_mode_from_env("SPARSA_PREFILL24_SPLIT", kPrefillMaxSplit);
  return mode;
}

// v10's time model in µs, fit to the session-8 H100 run (bench/results/
// gemm-h100-2026-11-23-prefill8-run1*.json): a CTA runs a 256-column chunk in 1.83 µs (73.7 KB
// of 2:4 weights: ~40 GB/s per CTA) unless DRAM (2.6 TB/s) binds; a split adds the reduction's
// launch gap (1.2 µs) and the partials' store and re-read (2.47 TB/s per byte written). The
// start both variants share (~4.5 µs) is left out; with it the 19 split/unsplit ratios of the run
// come within -0.10 / +0.09 of the measured ones.
double nm24_split_time_us(int64_t tiles, int64_t kchunks, int s, double weight_bytes,
                          double partial_bytes) {
  constexpr double kChunkUs = 1.83, kCtaBytesPerUs = 40e3, kDramBytesPerUs = 2.6e6;
  constexpr double kReduceUs = 1.2, kPartialBytesPerUs = 2.47e6;
  const double ctas = static_cast<double>(tiles) * s;
  const double chunks = static_cast<double>((kchunks + s - 1) / s);
  const double t = std::max(kChunkUs * chunks, weight_bytes / std::min(kDramBytesPerUs, ctas * kCtaBytesPerUs));
  return s > 1 ? t + kReduceUs + s * partial_bytes / kPartialBytesPerUs : t;
}

int nm24_split_rule(int64_t tiles, int64_t kchunks, int sms, double weight_bytes,
                    double partial_bytes) {
  int s = 1;
  for (int c = 2; c <= kPrefillMaxSplit; ++c)
    if (tiles * c <= sms && kchunks >= int64_t{c} * kMinSplitChunks) s = c;
  // Measured (session 8): where one wave of unsplit CTAs already streams the weights near the
  // DRAM rate (14336 x 4096, m = 128: 56 tiles), the partials cost more than the split gains.
  if (s > 1 && nm24_split_time_us(tiles, kchunks, s, weight_bytes, partial_bytes) >
                   nm24_split_time_us(tiles, kchunks, 1, weight_bytes, partial_bytes))
    s = 1;
  return s;
}

int nm24_prefill_splits(const Nm24Weights& w, int64_t m, int split, int tokens_per_tile) {
  if (m < 1 || w.rows_padded < 1 || w.cols_padded < 1) return 0;
  const int tokens = resolved_tokens(w, m, tokens_per_tile);
  if (tokens != 128 && tokens != 192) return 0;
  return resolved_splits(w, m, tokens, split);
}

size_t nm24_prefill_workspace_bytes(const Nm24Weights& w, int64_t m, int split) {
  if (!nm24_wgmma_supported()) return 0;
  // nm24_prefill runs the mma.sp kernel below nm24_wgmma_min_m(): the automatic split needs nothing there.
  if ((split == 0 ? nm24_prefill_split_mode() : split) == -1 && m < nm24_wgmma_min_m()) return 0;
  const int s = nm24_prefill_splits(w, m, split, 0);
  const size_t need = s > 1 ? partials_offset(w) + partials_bytes(w, m, s) : 0;
  // v11: the tail pieces' partials, where SPARSA_PREFILL24_TAIL turns them on.
  // v12 where nm24_prefill takes it (split 0: the default dispatch): its tile counter (persistent
  // form) or its tail pieces' partials.
  const size_t ssc = split == 0 && ((w.values_k && nm24_prefill_ssc_mode().on && nm24_prefill_takes_ss(w)) ||
                                    nm24_prefill_takes_ssc_fragments(w, m))
                         ? nm24_prefill_ssc_workspace_bytes(w, m, nm24_prefill_ssc_mode().cluster,
                                                            nm24_prefill_ssc_mode().persistent)
                         : 0;
  if (split == 0 && s == 1 && nm24_prefill_split_mode() == -1 && nm24_prefill_tail_mode())
    return std::max({need, ssc, nm24_prefill_tail_workspace_bytes(w, m, 0, 0)});
  return std::max(need, ssc);
}

// ---- v11 (session 10): split-K of the last partial wave only ---------------------------------
// Why: at m >= 2048 the unsplit grid is several waves of one CTA per SM, and the last wave is
// partial (4096 x 4096, m = 8192: 688 tiles of 192 tokens = 5 waves + 28 tiles, so the 6th wave
// runs 28 CTAs on 132 SMs). Splitting those r tail tiles s ways over K (s r <= SMs) makes the
// tail 1/s of a tile long; the pieces go first in the grid so their partial stores and the
// last-arriver's reduction overlap the other SMs' whole tiles. docs/kernels-gpu.md "Session 10".
Nm24TailPlan nm24_tail_plan(int64_t tiles, int64_t kchunks, int sms) {
  if (sms < 1 || tiles <= sms || tiles % sms == 0) return {};
  const int64_t r = tiles % sms;
  const int64_t s = std::min<int64_t>({kPrefillMaxSplit, sms / r, kchunks / kMinSplitChunks});
  return s >= 2 ? Nm24TailPlan{static_cast<int>(s), r} : Nm24TailPlan{};
}

bool nm24_prefill_tail_mode() {
  static const bool on = [] {
    const char* v = std::getenv("SPARSA_PREFILL24_TAIL");
    if (v && std::strcmp(v, "1") == 0) return true;
    if (v && std::strcmp(v, "0") == 0) return false;
    return kNm24TailDefault;
  }();
  return on;
}

Nm24TailPlan nm24_prefill_tail_plan(const Nm24Weights& w, int64_t m, int tokens_per_tile, int sms) {
  if (m < 1 || w.rows_padded < 1 || w.cols_padded < kKChunk) return {};
  const int tokens = resolved_tokens(w, m, tokens_per_tile);
  if (tokens != 128 && tokens != 192) return {};
  const int64_t tiles = (w.rows_padded + kBM - 1) / kBM * ((m + tokens - 1) / tokens);
  return nm24_tail_plan(tiles, w.cols_padded / kKChunk, sms > 0 ? sms : sm_count());
}

size_t nm24_prefill_tail_workspace_bytes(const Nm24Weights& w, int64_t m, int tokens_per_tile,
                                         int sms) {
  if (nm24_reads_values_k(w)) return 0;  // the tail kernels read the fragment layout only
  const Nm24TailPlan plan = nm24_prefill_tail_plan(w, m, tokens_per_tile, sms);
  if (plan.splits < 2) return 0;
  const int tokens = resolved_tokens(w, m, tokens_per_tile);
  return static_cast<size_t>(tail_slots_offset(w.rows_padded / 16)) +
         static_cast<size_t>(plan.tiles) * plan.splits * tokens * kBM * sizeof(float);
}

namespace {

// SPARSA_PREFILL24_SPLIT_CLUSTER: "1" -> 2 (v10b, v10 where the clusters do not fit), "shrink"
// -> 3 (v10b with the largest s' <= s whose clusters fit), anything else -> 1 (off, the default).
int split_cluster_mode() {
  static const int mode = [] {
    const char* v = std::getenv("SPARSA_PREFILL24_SPLIT_CLUSTER");
    if (v && std::strcmp(v, "1") == 0) return 2;
    if (v && std::strcmp(v, "shrink") == 0) return 3;
    return 1;
  }();
  return mode;
}

template <typename Elem, int BN, bool kRowA>
int fitting_cluster(unsigned tiles, int splits, bool shrink) {
  for (int c = splits; c >= 2; --c) {
    if (cluster_fits<Elem, BN, kRowA, float>(tiles, c)) return c;
    if (!shrink) break;
  }
  return 0;
}

// The cluster size a launch with `splits` (> 1) reduces in (0: v10's workspace path): asked for,
// and every cluster of the grid resident at once (the split rule's one wave), at s or (shrink)
// the largest s' < s that fits.
int cluster_path(const Nm24Weights& w, int64_t m, int tokens, int splits, int cluster) {
  const int mode = cluster == 0 ? split_cluster_mode() : cluster;
  if (splits < 2 || mode < 2) return 0;
  const unsigned tiles =
      static_cast<unsigned>((w.rows_padded + kBM - 1) / kBM * ((m + tokens - 1) / tokens));
  const bool f16 = w.type == ElemType::F16, row_a = nm24_reads_values_k(w), shrink = mode == 3;
  if (tokens == 128) {
    if (row_a)
      return f16 ? fitting_cluster<F16, 128, true>(tiles, splits, shrink)
                 : fitting_cluster<BF16, 128, true>(tiles, splits, shrink);
    return f16 ? fitting_cluster<F16, 128, false>(tiles, splits, shrink)
               : fitting_cluster<BF16, 128, false>(tiles, splits, shrink);
  }
  if (row_a)
    return f16 ? fitting_cluster<F16, 192, true>(tiles, splits, shrink)
               : fitting_cluster<BF16, 192, true>(tiles, splits, shrink);
  return f16 ? fitting_cluster<F16, 192, false>(tiles, splits, shrink)
             : fitting_cluster<BF16, 192, false>(tiles, splits, shrink);
}

}  // namespace

int nm24_prefill_cluster_splits(const Nm24Weights& w, int64_t m, int split, int cluster,
                                int tokens_per_tile) {
  if (cluster < 0 || cluster > 3 || !nm24_wgmma_supported()) return 0;
  if (w.type != ElemType::F16 && w.type != ElemType::BF16) return 0;
  const int s = nm24_prefill_splits(w, m, split, tokens_per_tile);
  return s > 1 ? cluster_path(w, m, resolved_tokens(w, m, tokens_per_tile), s, cluster) : 0;
}

cudaError_t nm24_prefill_wgmma_split(const Nm24Weights& w, const GemmProblem& pr,
                                     cudaStream_t stream, int split, int tokens_per_tile) {
  return nm24_prefill_wgmma_split_cluster(w, pr, stream, split, 0, tokens_per_tile);
}

namespace {

bool workspace_holds(const GemmProblem& pr, size_t need) {
  return pr.workspace && reinterpret_cast<uintptr_t>(pr.workspace) % 16 == 0 &&
         pr.workspace_bytes >= need;
}

// The register-A prefill with every option: split (0 env, -1 auto, 1 off, 2..8), cluster (0 env,
// 1 off, 2 exact, 3 shrink), tile (0 env, -1 by waves, 128, 192), tail_sms: -1 the v11 tail where
// SPARSA_PREFILL24_TAIL and the automatic split allow it (planned for the device's SMs), 0 never,
// > 0 forced, planned for that many SMs (a short workspace is then an error).
cudaError_t prefill_wgmma(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream,
                          int split, int cluster, int tokens_per_tile, int tail_sms) {
  if (cluster < 0 || cluster > 3) return cudaErrorInvalidValue;
  if (w.type != ElemType::F16 && w.type != ElemType::BF16) return cudaErrorInvalidValue;
  if (!w.values && !w.values_k) return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.x || !pr.y || pr.ldx < w.cols) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (w.rows_padded % kRowTile != 0 || w.cols_padded % kKChunk != 0) return cudaErrorInvalidValue;
  if (pr.m > INT32_MAX / 2 || w.cols > INT32_MAX || w.rows_padded > INT32_MAX) return cudaErrorInvalidValue;
  if (w.cols_padded / 32 > INT32_MAX / 2) return cudaErrorInvalidValue;  // v9 counts k-steps in 32 bits
  const int tokens = resolved_tokens(w, pr.m, tokens_per_tile);
  if (tokens != 128 && tokens != 192) return cudaErrorInvalidValue;
  if (!nm24_wgmma_supported()) return cudaErrorNotSupported;
  const int mode = split == 0 ? nm24_prefill_split_mode() : split;
  int splits = resolved_splits(w, pr.m, tokens, mode);
  if (splits < 1) return cudaErrorInvalidValue;
  const int cluster_splits = cluster_path(w, pr.m, tokens, splits, cluster);  // v10b: no workspace
  const bool in_cluster = cluster_splits > 0;
  if (in_cluster) splits = cluster_splits;
  if (splits > 1 && !in_cluster) {
    // The partials must fit the caller's workspace: a forced split refuses a short or
    // misaligned one (nothing is written), the automatic rule runs unsplit instead.
    const size_t need = partials_offset(w) + partials_bytes(w, pr.m, splits);
    if (!workspace_holds(pr, need)) {
      if (mode != -1) return cudaErrorInvalidValue;
      splits = 1;
    }
  }
  // v11: the last partial wave split over K (fragment layout; the unsplit grid only).
  Nm24TailPlan tail{};
  const bool want_tail = tail_sms > 0 || (tail_sms < 0 && mode == -1 && nm24_prefill_tail_mode());
  if (want_tail && splits == 1 && !nm24_reads_values_k(w)) {
    tail = nm24_prefill_tail_plan(w, pr.m, tokens, tail_sms > 0 ? tail_sms : 0);
    if (tail.splits > 1 &&
        !workspace_holds(pr, nm24_prefill_tail_workspace_bytes(w, pr.m, tokens, tail_sms > 0 ? tail_sms : 0))) {
      if (tail_sms > 0) return cudaErrorInvalidValue;
      tail = {};
    }
  }
  const bool f16 = w.type == ElemType::F16;
  if (nm24_reads_values_k(w)) {  // session 7: A from the row-major values_k
    if (tokens == 128)
      return f16 ? launch<F16, 128, true>(w, pr, stream, splits, in_cluster)
                 : launch<BF16, 128, true>(w, pr, stream, splits, in_cluster);
    return f16 ? launch<F16, 192, true>(w, pr, stream, splits, in_cluster)
               : launch<BF16, 192, true>(w, pr, stream, splits, in_cluster);
  }
  if (tokens == 128)
    return f16 ? launch<F16, 128, false>(w, pr, stream, splits, in_cluster, &tail)
               : launch<BF16, 128, false>(w, pr, stream, splits, in_cluster, &tail);
  return f16 ? launch<F16, 192, false>(w, pr, stream, splits, in_cluster, &tail)
             : launch<BF16, 192, false>(w, pr, stream, splits, in_cluster, &tail);
}

}  // namespace

cudaError_t nm24_prefill_wgmma_split_cluster(const Nm24Weights& w, const GemmProblem& pr,
                                             cudaStream_t stream, int split, int cluster,
                                             int tokens_per_tile) {
  return prefill_wgmma(w, pr, stream, split, cluster, tokens_per_tile, -1);
}

cudaError_t nm24_prefill_wgmma_tail(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream,
                                    int tokens_per_tile, int sms) {
  if (sms < 1 || nm24_reads_values_k(w)) return cudaErrorInvalidValue;
  return prefill_wgmma(w, pr, stream, 1, 1, tokens_per_tile, sms);
}

cudaError_t nm24_prefill_wgmma_tokens(const Nm24Weights& w, const GemmProblem& pr,
                                      cudaStream_t stream, int tokens_per_tile) {
  return nm24_prefill_wgmma_split(w, pr, stream, 0, tokens_per_tile);
}

cudaError_t nm24_prefill_wgmma(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream) {
  return nm24_prefill_wgmma_split(w, pr, stream, 0, 0);
}

}  // namespace sparsa::cuda
