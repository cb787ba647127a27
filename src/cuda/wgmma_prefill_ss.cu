// Prefill v8 ("ss"): 2:4 sparse GEMM with wgmma.mma_async.sp reading the sparse W from shared
// memory through a matrix descriptor (sm_90a). Y[m, N] = X[m, K] * W[N, K]^T, X and W fp16 or
// bf16, fp32 accumulation, any output type.
//
// Why a second device layout: wgmma.sp with A in shared memory wants the compressed rows in the
// canonical K-major layout (8-row core matrices, rows of 8 consecutive compressed elements, here
// with the 64-byte swizzle), i.e. the packed values simply row-major [rows_padded][cols_padded/2]
// (compressed column c of a row = value c & 1 of its 4-column group c >> 1, the order mma.sp and
// the metadata use). tile_nm24's fragment order interleaves rows g and g + 8 within 16 bytes, which
// no descriptor can describe, so nm24_tile_k (wgmma_prefill_k_tiling.cu) writes this copy on the
// device from the fragment tiling. The metadata is tile_nm24's unchanged (register layout of
// wgmma.sp m64nNk32 per warp = mma.sp m16n8k32).
//
// CTA = 1 producer warpgroup (one thread issues TMA) + 2 consumer warpgroups (setmaxnreg 40 / 232).
// Tile 256 weight rows x BN tokens (BN = 128 or 192); consumer warpgroup wg owns rows
// [128 wg, +128) as two m64 tiles and issues two m64nBNk32 wgmma.sp per k-step. Per stage of two
// k-steps (64 columns of K) the producer loads by TMA, into one stage slot completing one mbarrier:
//   X: BN tokens x 64 columns, 128-byte swizzle (as v5g);
//   W: 256 rows x 32 compressed columns (64 B), 64-byte swizzle, rows past rows_padded zero-filled;
//   metadata, at the first stage of each 256-column chunk: 16 row tiles x 512 B into one of two
//   chunk buffers (its 8 + 8 row tiles by two boxes; a second box past the last row tile reloads
//   the first, so unused rows never see invalid metadata).
// Consumers read their metadata word per stage by LDS (2 per thread), double-buffered by stage
// parity so that no register an in-flight wgmma reads is overwritten; one commit group of 4
// wgmma.sp per stage, and a stage slot is released (one arrival per consumer warp) once
// wgmma.wait_group 1 after the next stage's group shows it done.
// Token tile 128 or 192 by wave count (nm24_tokens_by_waves). H100, fp16: median 1.41x cuBLAS
// over the 7 benchmark shapes at m >= 2048 against 1.29x for v5g in the same run (0.91 of its
// time; cuSPARSELt 1.40-1.43x), bench/results/gemm-h100-2026-11-23-prefill-s6-run2-*.json.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/decode_workspace.h"
#include "cuda/mma_sp.cuh"
#include "cuda/wgmma_prefill_tiles.h"
#include "cuda/wgmma_primitives.cuh"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kBM = 256;                 // weight rows per CTA
constexpr int kStageCols = 64;           // columns of K per stage (2 k-steps)
constexpr int kABytes = kBM * 64;        // 256 rows x 32 compressed columns, 16 KB
constexpr int kMetaBytes = 16 * 512;     // one chunk of metadata for the CTA's 16 row tiles
constexpr int kConsumerThreads = 256;
constexpr int kThreads = kConsumerThreads + 128;
constexpr int kGroup = 8;                // row blocks per raster group
// Time per token of a 192-token tile relative to a 128-token one on full waves (tile choice).
constexpr double kSs192PerToken = 0.87;

template <int BN>
struct SsConfig {
  static constexpr int kXBytes = BN * 128;  // BN tokens x 64 columns
  static constexpr int kStageBytes = kXBytes + kABytes;
  static constexpr int kStages = BN == 128 ? 6 : 5;
  static constexpr int kSmemBytes =
      kStages * kStageBytes + 2 * kMetaBytes + 1024 /* alignment */ + 2 * kStages * 8;
  static_assert(kSmemBytes <= 227 * 1024, "over the 227 KB of shared memory per CTA");
  // The metadata of chunk c + 2 goes into chunk c's buffer with stage 4c + 8, issued once the
  // consumers released stage 4c + 8 - kStages. A consumer releases stage j during stage j + 1,
  // after reading stage j + 1's words, so chunk c's last read (stage 4c + 3) is behind it when
  // 4c + 9 - kStages >= 4c + 3.
  static_assert(kStages <= 6, "two metadata buffers");
};

struct SsParams {
  void* y;
  int64_t ldy, m, rows;
  int32_t kt_count;     // stages of 64 columns (cols_padded / 64, a multiple of 4)
  int32_t row_tiles;    // 16-row tiles (rows_padded / 16, a multiple of 8)
  int64_t row_blocks, token_tiles;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// D(64 x BN) += A(64 x 32, 2:4, shared memory by descriptor) * B(32 x BN, shared memory, K-major),
// metadata e with sparsity selector kSel; scale-d 1 (D starts at zero).
template <typename Elem, int BN, int kSel>
__device__ __forceinline__ void wgmma_sp_ss(float (&d)[BN / 2], uint64_t adesc, uint64_t bdesc,
                                            uint32_t e) {
  constexpr bool kF16 = std::is_same_v<Elem, F16>;
  if constexpr (BN == 128) {
    if constexpr (kF16)
      asm volatile("{\n wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.f16.f16 " SPARSA_WGMMA_D64
                   ", %64, %65, %66, %67, 1, 1, 1, 0, 0;\n}\n"
                   : SPARSA_WGMMA_D64_OPERANDS
                   : "l"(adesc), "l"(bdesc), "r"(e), "n"(kSel));
    else
      asm volatile("{\n wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.bf16.bf16 " SPARSA_WGMMA_D64
                   ", %64, %65, %66, %67, 1, 1, 1, 0, 0;\n}\n"
                   : SPARSA_WGMMA_D64_OPERANDS
                   : "l"(adesc), "l"(bdesc), "r"(e), "n"(kSel));
  } else {
    static_assert(BN == 192, "BN 128 or 192");
    if constexpr (kF16)
      asm volatile("{\n wgmma.mma_async.sp.sync.aligned.m64n192k32.f32.f16.f16 " SPARSA_WGMMA_D96
                   ", %96, %97, %98, %99, 1, 1, 1, 0, 0;\n}\n"
                   : SPARSA_WGMMA_D96_OPERANDS
                   : "l"(adesc), "l"(bdesc), "r"(e), "n"(kSel));
    else
      asm volatile("{\n wgmma.mma_async.sp.sync.aligned.m64n192k32.f32.bf16.bf16 " SPARSA_WGMMA_D96
                   ", %96, %97, %98, %99, 1, 1, 1, 0, 0;\n}\n"
                   : SPARSA_WGMMA_D96_OPERANDS
                   : "l"(adesc), "l"(bdesc), "r"(e), "n"(kSel));
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <typename Elem, typename OutT, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    nm24_wgmma_ss_kernel(const __grid_constant__ CUtensorMap x_map,
                         const __grid_constant__ CUtensorMap a_map,
                         const __grid_constant__ CUtensorMap e_map, const SsParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = SsConfig<BN>;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;  // swizzled tiles: 1 KB aligned
  // shared memory: kStages slots (X | W) | 2 metadata chunk buffers | full and empty mbarriers
  const uint32_t meta_base = base + C::kStages * C::kStageBytes;
  const uint32_t full_bar = meta_base + 2 * kMetaBytes;
  const uint32_t empty_bar = full_bar + C::kStages * 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const RasterTile tile = grouped_raster_tile(blockIdx.x, kGroup, p.row_blocks, p.token_tiles, BN);
  const int32_t row_block = static_cast<int32_t>(tile.row_block);
  const int32_t tok0 = static_cast<int32_t>(tile.tok0);

  if (threadIdx.x == 0) init_stage_barriers(full_bar, empty_bar, C::kStages, kConsumerThreads / 32);
  __syncthreads();

  if (warp < 4) {  // ---- producer warpgroup: X, W and metadata by TMA, issued by one thread
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (warp == 0 && lane == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&x_map)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&a_map)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&e_map)) : "memory");
      const int32_t rt0 = row_block * (kBM / 16);
      const int32_t rt1 = rt0 + 8 < p.row_tiles ? rt0 + 8 : rt0;  // past the last tile: any valid one
      int slot = 0;
      uint32_t round = 0;
      for (int32_t kt = 0; kt < p.kt_count; ++kt) {
        if (round > 0) mbar_wait(empty_bar + 8 * slot, (round - 1) & 1);
        const uint32_t full = full_bar + 8 * slot;
        const bool chunk_start = (kt & 3) == 0;
        mbar_expect_tx(full, C::kStageBytes + (chunk_start ? kMetaBytes : 0));
        const uint32_t dst = base + slot * C::kStageBytes;
        tma_load_2d(dst, &x_map, kt * kStageCols, tok0, full);
        tma_load_2d(dst + C::kXBytes, &a_map, kt * (kStageCols / 2), row_block * kBM, full);
        if (chunk_start) {
          const uint32_t mdst = meta_base + static_cast<uint32_t>((kt >> 2) & 1) * kMetaBytes;
          tma_load_2d(mdst, &e_map, (kt >> 2) * 128, rt0, full);
          tma_load_2d(mdst + kMetaBytes / 2, &e_map, (kt >> 2) * 128, rt1, full);
        }
        if (++slot == C::kStages) {
          slot = 0;
          ++round;
        }
      }
    }
    return;
  }

  // ---- consumers: warpgroup wg owns weight rows [256 rb + 128 wg, +128), two m64 tiles.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int wg = warp / 4 - 1, wwarp = warp % 4;
  // This warp's metadata: row tile 8 wg + 4 mt + wwarp of the chunk buffer, the lane's 16 bytes.
  const uint32_t e_off = static_cast<uint32_t>((wg * 8 + wwarp) * 512 + lane * 16);
  const uint32_t a_off = static_cast<uint32_t>(C::kXBytes + wg * 2 * 4096);  // m64 tile: 4 KB
  float acc[2][BN / 2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[mt][i] = 0.0f;

  uint32_t e[2][2];  // [stage parity][m tile]: a stage's words while the previous one may run
  int slot = 0, prev_slot = 0;
  uint32_t phase = 0;
#pragma unroll 1
  for (int32_t kt0 = 0; kt0 < p.kt_count; kt0 += 2) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int32_t kt = kt0 + h;
      mbar_wait(full_bar + 8 * slot, phase);
      const uint32_t mw = meta_base + static_cast<uint32_t>((kt >> 2) & 1) * kMetaBytes + e_off +
                          static_cast<uint32_t>(kt & 3) * 4;
      e[h][0] = lds_32(mw);
      e[h][1] = lds_32(mw + 4 * 512);
      const uint32_t xs = base + slot * C::kStageBytes;
      // One commit group per stage (4 wgmma): with A in shared memory no register has to be
      // freed, so the wait only has to leave the previous stage's slot reusable.
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        const uint64_t bd = b_desc(xs + ks * 64);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const uint64_t ad = a_desc_sw64(xs + a_off + mt * 4096 + ks * 32);
          if (ks == 0)
            wgmma_sp_ss<Elem, BN, 0>(acc[mt], ad, bd, e[h][mt]);
          else
            wgmma_sp_ss<Elem, BN, 1>(acc[mt], ad, bd, e[h][mt]);
        }
      }
      wgmma_commit();
      wgmma_wait<1>();  // stage kt - 1 done (its metadata registers e[1 - h] free again)
      if (kt > 0 && lane == 0) mbar_arrive(empty_bar + 8 * prev_slot);
      prev_slot = slot;
      if (++slot == C::kStages) {
        slot = 0;
        phase ^= 1;
      }
    }
  }
  wgmma_wait<0>();

  // ---- epilogue
  store_m64n_pair<OutT, BN>(static_cast<OutT*>(p.y), p.ldy, acc,
                            static_cast<int64_t>(row_block) * kBM + wg * 128, tok0, p.rows, p.m,
                            wwarp, lane);
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

template <typename Elem, int BN>
cudaError_t launch(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream) {
  using C = SsConfig<BN>;
  if (!encode_fn()) return cudaErrorNotSupported;
  CUtensorMap x_map{}, a_map{}, e_map{};
  static_assert(kStageCols == 64, "encode_ss_maps loads stages of 64 columns");
  if (!encode_ss_maps<Elem>(w, pr, BN, kBM, &x_map, &a_map, &e_map)) return cudaErrorInvalidValue;
  SsParams p{};
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.m = pr.m;
  p.rows = w.rows;
  p.kt_count = static_cast<int32_t>(w.cols_padded / kStageCols);
  p.row_tiles = static_cast<int32_t>(w.rows_padded / 16);
  p.row_blocks = (w.rows_padded + kBM - 1) / kBM;
  p.token_tiles = (pr.m + BN - 1) / BN;
  return dispatch_out(pr.y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    auto kernel = nm24_wgmma_ss_kernel<Elem, OutT, BN>;
    if (cudaError_t e =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
        e != cudaSuccess)
      return e;
    kernel<<<static_cast<unsigned>(p.row_blocks * p.token_tiles), kThreads, C::kSmemBytes, stream>>>(
        x_map, a_map, e_map, p);
    return cudaGetLastError();
  });
}

}  // namespace

int nm24_prefill_ss_tokens() {
  static const int tokens = [] {
    const char* v = std::getenv("SPARSA_PREFILL24");
    if (!v) return 0;  // the default choice (nm24_prefill_takes_ss)
    if (std::strcmp(v, "ss") == 0 || std::strncmp(v, "ssc", 3) == 0 || std::strcmp(v, "ssv8") == 0)
      return -1;  // by wave count
    if (std::strcmp(v, "ss128") == 0) return 128;
    if (std::strcmp(v, "ss192") == 0) return 192;
    return 0;  // "v5g..." (or anything else)
  }();
  return tokens;
}

// v8 is the fastest kernel on values_k (session 7: the cp.async + ldmatrix readers of the
// row-major layout run 1.3-1.7x slower than on fragments), so it is taken wherever the other
// kernels would read values_k; SPARSA_PREFILL24=ss* / v5g* force it / the register-A kernel.
bool nm24_prefill_takes_ss(const Nm24Weights& w) {
  static const int forced = [] {
    const char* v = std::getenv("SPARSA_PREFILL24");
    if (v && std::strncmp(v, "ss", 2) == 0) return 1;
    if (v && std::strncmp(v, "v5g", 3) == 0) return 0;
    return -1;
  }();
  return forced >= 0 ? forced == 1 : nm24_reads_values_k(w);
}

// Token tile by waves (one CTA per SM): 192-token tiles move ~10% fewer shared-memory bytes per
// MAC (session-6 run 1: ~0.83 of the 128-token time per token on full waves), but round m up
// to 192 and change the wave count; e.g. N = 4096, m = 2048: 176 tiles of 192 are 2 waves on 132
// SMs (the second a third full), 256 tiles of 128 are 1.94 waves.
int nm24_tokens_by_waves(int64_t rows_padded, int64_t m, double per_token_192) {
  static const int sms = [] {
    int device = 0, n = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0)
      n = 132;
    return n;
  }();
  const int64_t row_blocks = (rows_padded + kBM - 1) / kBM;
  auto cost = [&](int64_t bn, double per_token) {
    const int64_t ctas = row_blocks * ((m + bn - 1) / bn);
    return static_cast<double>((ctas + sms - 1) / sms) * static_cast<double>(bn) * per_token;
  };
  return cost(192, per_token_192) < cost(128, 1.0) ? 192 : 128;
}

bool nm24_wgmma_ss_supported() {
  return hopper_wgmma_usable([] {
    return has_sm90a_body(nm24_wgmma_ss_kernel<F16, float, 128>) &&
           has_sm90a_body(nm24_wgmma_ss_kernel<BF16, __nv_bfloat16, 192>);
  });
}

cudaError_t nm24_prefill_wgmma_ss(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream,
                                  int tokens_per_tile) {
  if (w.type != ElemType::F16 && w.type != ElemType::BF16) return cudaErrorInvalidValue;
  if (!w.values_k || reinterpret_cast<uintptr_t>(w.values_k) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w.meta) % 16 != 0)
    return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.x || !pr.y || pr.ldx < w.cols) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (w.rows_padded % kRowTile != 0 || w.cols_padded % kKChunk != 0) return cudaErrorInvalidValue;
  if (pr.m > INT32_MAX / 2 || w.cols_padded > INT32_MAX / 2 || w.rows_padded > INT32_MAX / 2)
    return cudaErrorInvalidValue;
  if (tokens_per_tile == 0 && nm24_prefill_ssc_mode().on)  // v12, wgmma_prefill_ssc.cu
    // The persistent form needs its tile counter in the workspace; without one, a cluster per tile.
    return nm24_prefill_wgmma_ssc(w, pr, stream, nm24_prefill_ssc_mode().cluster, 0,
                                  nm24_prefill_ssc_mode().persistent && pr.workspace &&
                                      pr.workspace_bytes >= detail::kCounterRegion);
  if (tokens_per_tile == 0) tokens_per_tile = nm24_prefill_ss_tokens();
  if (tokens_per_tile <= 0) tokens_per_tile = nm24_tokens_by_waves(w.rows_padded, pr.m, kSs192PerToken);
  if (tokens_per_tile != 128 && tokens_per_tile != 192) return cudaErrorInvalidValue;
  if (!nm24_wgmma_ss_supported()) return cudaErrorNotSupported;
  if (tokens_per_tile == 128)
    return w.type == ElemType::F16 ? launch<F16, 128>(w, pr, stream) : launch<BF16, 128>(w, pr, stream);
  return w.type == ElemType::F16 ? launch<F16, 192>(w, pr, stream) : launch<BF16, 192>(w, pr, stream);
}

}  // namespace sparsa::cuda
