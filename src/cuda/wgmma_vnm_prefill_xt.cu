// V:2:M prefill on wgmma.sp (sm_90a) from X transposed: the gathered B tiles are copied straight
// from global memory (L2) into shared memory by cp.async, with no dense X staging.
//
// Xᵀ [cols, ldxt] (tokens contiguous) makes each kept column of X a contiguous run of tokens, so
// one 16-byte cp.async moves 8 tokens of one kept column into the B tile. The B tile is stored
// MN-major (tokens contiguous, wgmma's transposed B for 16-bit types) in the 128-byte swizzle:
// per k-step 4 groups of 8 virtual columns x 2 atoms of 64 tokens, 1 KB each (a 128-byte row is
// 64 tokens of one virtual column, 16-byte chunk c of row r at c ^ r). Shared-memory traffic per
// B tile is its cp.async write plus the wgmma's read (the staged kernel, wgmma_vnm_prefill.cu,
// also writes the dense X box and reads it back in its gather). The A side (W in registers, one
// stage ahead, metadata word per stage) and the tile (256 weight rows x 128 tokens, two consumer
// warpgroups of two m64 tiles) are the staged kernel's; there is no producer warpgroup: each
// consumer warpgroup copies its own B tiles `kStages - 1` stages ahead (cp.async groups), then
// fence.proxy.async + a warpgroup barrier before the wgmma reads them.
//
// vnm_prefill_wgmma takes this path where it moves fewer L2 bytes than the staged kernel (V = 128
// with M > 8) or where the staged kernel does not fit (prefer_xt); it transposes X into a
// stream-ordered temporary (cudaMallocAsync) first, and that pass is part of the call's time.
// vnm_prefill_wgmma_xt takes a caller's Xᵀ.
#include <algorithm>
#include <cstdlib>

#include "cuda/mma_sp.cuh"
#include "cuda/prefill_split.cuh"
#include "cuda/wgmma_primitives.cuh"
#include "cuda/wgmma_vnm_params.h"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kBM = 256;
constexpr int kBN = 128;
[[maybe_unused]] constexpr int kStageBlocks = 16;        // 2 k-steps of 8 blocks
constexpr int kTileBytes = kBN * 128;   // one stage's B tile: 64 virtual columns x 128 tokens
constexpr int kThreads = 256;           // two consumer warpgroups
[[maybe_unused]] constexpr int kGroup = 8;               // row blocks per raster group
constexpr int kMaxM = 16;

// B tiles per warpgroup (2 at V = 64: one per m64 tile; 1 at V = 128) and ring depth.
__host__ __device__ constexpr int xt_b_tiles(int v) { return v == 64 ? 2 : 1; }
__host__ __device__ constexpr int xt_stages(int v) { return v == 64 ? 3 : 4; }
__host__ __device__ constexpr int xt_smem(int v) {
  return 1024 + 2 * xt_stages(v) * xt_b_tiles(v) * kTileBytes;
}

struct XtParams {
  const uint4* values;
  const uint4* meta;
  const uint32_t* columns;
  const uint16_t* xt;
  int64_t ldxt;
  void* y;
  int64_t ldy, m, rows, cols;
  int64_t row_tiles, ksteps, kchunks, blocks_padded, row_groups_padded;
  int64_t row_blocks, token_tiles;
  int64_t m8;  // tokens rounded up to 8: chunks at or past it are zero-filled
  int mcols;
  int cache_l1;      // cp.async.ca (1) or .cg (0): whether the CTA's row groups share L1 copies
  // Split-K (kSplit kernels, session 8), as in the staged kernel's parameters.
  float* partials;
  int64_t ldp;
  int32_t splits;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Descriptor of an N-major, 128-byte-swizzled B operand: 64-token atoms 1 KB apart (leading
// byte offset), 8-column groups 2 KB apart (stride byte offset).
__device__ __forceinline__ uint64_t bt_desc(uint32_t addr) {
  constexpr uint64_t lbo = 1024, sbo = 2048;
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | ((lbo >> 4) << 16) | ((sbo >> 4) << 32) |
         (1ull << 62);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, uint32_t bytes, bool l1) {
  if (l1)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void wg_bar(int id) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(id) : "memory");
}

// One stage's B tile: thread (warp ww of the warpgroup, lane) copies token chunk c = lane & 15
// (8 tokens) of virtual columns vs = 16 ww + 2 i + (lane >> 4), i < 8 (blocks 4 ww .. 4 ww + 3 of
// the stage, whose 4 column words are `cw`). A warp instruction writes two 128-byte rows of the
// tile per 16 lanes: no bank conflicts.
__device__ __forceinline__ void copy_tile(uint32_t tile, const uint4& cw, const XtParams& p,
                                          int64_t col0, int64_t tok, int ww, int lane) {
  const int c = lane & 15, h = lane >> 4;
  const bool tok_ok = tok < p.m8;
  const uint32_t words[4] = {cw.x, cw.y, cw.z, cw.w};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int vs = 16 * ww + 2 * i + h;  // virtual column of the stage
    const uint32_t off = (words[i >> 1] >> (8 * (vs & 3))) & 0xffu;
    const int64_t col = col0 + static_cast<int64_t>(4 * ww + (i >> 1)) * p.mcols + off;
    const bool ok = tok_ok && col < p.cols;
    const uint16_t* src = ok ? p.xt + col * p.ldxt + tok : p.xt;
    const int r = vs & 7;
    const uint32_t dst = tile + (vs >> 3) * 2048 + (c >> 3) * 1024 + r * 128 + (((c & 7) ^ r) << 4);
    cp_async16(dst, src, ok ? 16u : 0u, p.cache_l1 != 0);
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <typename Elem, typename OutT, int kV, bool kSplit>
__global__ void __launch_bounds__(kThreads, 1) vnm_wgmma_xt_kernel(const XtParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kBT = xt_b_tiles(kV);
  constexpr int kS = xt_stages(kV);
  constexpr int kSlot = kBT * kTileBytes;  // one warpgroup's B tiles of one stage
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wg = warp / 4, ww = warp % 4;
  const int bar_id = 1 + wg;
  const VnmKRange kr = vnm_k_range<kSplit>(p);
  const int64_t kt_count = kr.stages;  // this CTA's stages (a multiple of 4)
  const RasterTile tile = grouped_raster_tile(blockIdx.x, kGroup, p.row_blocks, p.token_tiles, kBN);
  const int64_t row_block = tile.row_block;
  const int64_t tok0 = tile.tok0;
  const int64_t tok = tok0 + 8 * (lane & 15);

  static_assert(kBM == 256, "VnmStageW assumes 256-row tiles");
  VnmStageW w_src(p, row_block, wg, ww, lane);
  if constexpr (kSplit) w_src.advance(kr.stage0);
  const uint4* c_src[kBT];  // this warp's 4 column words of stage kt: c_src + 4 kt
#pragma unroll
  for (int bt = 0; bt < kBT; ++bt) {
    int64_t g = (row_block * kBM + wg * 128 + bt * 64) / kV;
    g = min(g, p.row_groups_padded - 1);
    c_src[bt] = reinterpret_cast<const uint4*>(p.columns + g * p.blocks_padded) + ww + 4 * kr.stage0;
  }
  const uint32_t bbase = base + wg * (kS * kSlot);

  auto issue = [&](int64_t kt, const uint4 (&cw)[kBT]) {
    const uint32_t slot = bbase + static_cast<uint32_t>(kt % kS) * kSlot;
    const int64_t col0 = (kr.stage0 + kt) * kStageBlocks * p.mcols;
#pragma unroll
    for (int bt = 0; bt < kBT; ++bt) copy_tile(slot + bt * kTileBytes, cw[bt], p, col0, tok, ww, lane);
  };
  uint4 cw[kBT];
  auto load_cw = [&](int64_t kt) {
#pragma unroll
    for (int bt = 0; bt < kBT; ++bt) cw[bt] = __ldg(c_src[bt] + 4 * kt);
  };

  float acc[2][64];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 64; ++i) asm volatile("" : "=f"(acc[mt][i]));

  uint32_t a[2][2][2][4];
  uint32_t e[2][2];
  w_src.load(a[0], e[0], 0);

  // Prologue: stages 0 .. kS - 2 in flight (kt_count is a multiple of 4 >= kS - 1).
  for (int s = 0; s < kS - 1; ++s) {
    load_cw(s);
    issue(s, cw);
    cp_async_commit();
  }
  load_cw(kS - 1);

#pragma unroll 1
  for (int64_t kt0 = 0; kt0 < kt_count; kt0 += 2) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int64_t kt = kt0 + j;
      const int slot = j;
      cp_async_wait<kS - 2>();  // this thread's copies of stage kt have landed
      fence_proxy_async_shared();  // generic-proxy writes -> the wgmma's async-proxy reads
      wg_bar(bar_id);
      const uint32_t bslot = bbase + static_cast<uint32_t>(kt % kS) * kSlot;
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 2; ++ks)
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const uint64_t desc = bt_desc(bslot + (kBT == 2 ? mt : 0) * kTileBytes + ks * 8192);
          const uint32_t scale_d = kt > 0 || ks > 0;
          if (ks == 0)
            wgmma_sp_m64n128_sd<Elem, 0, 1>(acc[mt], a[slot][mt][ks], desc, e[slot][mt], scale_d);
          else
            wgmma_sp_m64n128_sd<Elem, 1, 1>(acc[mt], a[slot][mt][ks], desc, e[slot][mt], scale_d);
        }
      wgmma_commit();
      wgmma_wait<1>();   // stage kt - 1's wgmma is done: its slot is free ...
      wg_bar(bar_id);    // ... for every warp of the warpgroup
      if (kt + kS - 1 < kt_count) {
        issue(kt + kS - 1, cw);  // into stage kt - 1's slot
        if (kt + kS < kt_count) load_cw(kt + kS);
      }
      cp_async_commit();  // possibly empty: keeps one group per stage for wait_group
      if (kt + 1 < kt_count) w_src.load(a[1 - slot], e[1 - slot], kt + 1);
    }
  }
  wgmma_wait<0>();
  cp_async_wait<0>();

  if constexpr (kSplit) {  // the split's fp32 partials; the reduction may launch now
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    store_m64n128_pair(p.partials + blockIdx.y * p.m * p.ldp, p.ldp, acc, row_block * kBM + wg * 128,
                       tok0, p.rows, p.m, ww, lane);
  } else {
    store_m64n128_pair(static_cast<OutT*>(p.y), p.ldy, acc, row_block * kBM + wg * 128, tok0,
                       p.rows, p.m, ww, lane);
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// X [m, ldx] -> Xᵀ [cols, ldxt] in 64 x 64 tiles through shared memory; tokens m .. ldxt - 1 of
// Xᵀ are written as zeros. A warp loads 16-byte chunks of 32 token rows (lane = token) and
// stores them as 2-byte columns of the tile (consecutive lanes, no conflicts); then each thread
// writes 16-byte chunks of Xᵀ rows.
__global__ void __launch_bounds__(256) transpose_x_kernel(const uint16_t* __restrict__ x, int64_t ldx,
                                                          int64_t m, int64_t cols,
                                                          uint16_t* __restrict__ xt, int64_t ldxt) {
  __shared__ alignas(16) uint16_t s[64][72];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 64, t0 = static_cast<int64_t>(blockIdx.y) * 64;
  {
    const int tl = (warp & 1) * 32 + lane;
    const int64_t t = t0 + tl;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int cl = 16 * (warp >> 1) + 8 * h;
      const int64_t col = c0 + cl;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (t < m && col < cols) v = __ldg(reinterpret_cast<const uint4*>(x + t * ldx + col));
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[cl + 2 * e][tl] = static_cast<uint16_t>(w[e] & 0xffffu);
        s[cl + 2 * e + 1][tl] = static_cast<uint16_t>(w[e] >> 16);
      }
    }
  }
  __syncthreads();
  const int r = threadIdx.x >> 2, q = threadIdx.x & 3;
  const int64_t col = c0 + r;
  if (col >= cols) return;
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    const int tl = 8 * (q + 4 * u);
    const int64_t t = t0 + tl;
    if (t < ldxt)
      *reinterpret_cast<uint4*>(xt + col * ldxt + t) = *reinterpret_cast<const uint4*>(&s[r][tl]);
  }
}

bool xt_device_supported() {
  return hopper_wgmma_usable([] {
    return has_sm90a_body(vnm_wgmma_xt_kernel<F16, float, 64, false>) &&
           has_sm90a_body(vnm_wgmma_xt_kernel<BF16, __nv_bfloat16, 128, false>) &&
           has_sm90a_body(vnm_wgmma_xt_kernel<BF16, float, 128, true>);
  });
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

template <typename Elem, int kV>
cudaError_t launch_xt(const VnmWeights& w, const void* xt, int64_t ldxt, const GemmProblem& pr,
                      cudaStream_t stream, int splits, float* partials) {
  XtParams p{};
  fill_vnm_tile_params(p, w, pr, kBM, kBN);
  p.xt = static_cast<const uint16_t*>(xt);
  p.ldxt = ldxt;
  p.cols = w.cols;
  p.m8 = (pr.m + 7) / 8 * 8;
  // SPARSA_VNM_XT_L1=0: cp.async.cg (L2 only) instead of .ca (A/B measurements).
  static const int cache_l1 = env_int("SPARSA_VNM_XT_L1", 1);
  p.cache_l1 = cache_l1;
  constexpr int smem = xt_smem(kV);
  const unsigned tiles = static_cast<unsigned>(p.row_blocks * p.token_tiles);
  if (splits > 1) {  // split-K: fp32 partials, then the reduction into Y
    p.partials = partials;
    p.ldp = w.rows_padded;
    p.splits = splits;
    auto kernel = vnm_wgmma_xt_kernel<Elem, float, kV, true>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        e != cudaSuccess)
      return e;
    kernel<<<dim3(tiles, static_cast<unsigned>(splits)), kThreads, smem, stream>>>(p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    return launch_split_reduce(partials, splits, pr.m, w.rows, p.ldp, pr.y, pr.y_type, pr.ldy, stream);
  }
  return dispatch_out(pr.y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    auto kernel = vnm_wgmma_xt_kernel<Elem, OutT, kV, false>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        e != cudaSuccess)
      return e;
    kernel<<<tiles, kThreads, smem, stream>>>(p);
    return cudaGetLastError();
  });
}

bool weights_ok(const VnmWeights& w) {
  if (w.type != ElemType::F16 && w.type != ElemType::BF16) return false;
  if (!w.values || !w.meta || !w.columns) return false;
  if (w.rows_padded % kRowTile != 0 || w.blocks_padded % 64 != 0 || w.rows < 1 || w.cols < 1)
    return false;
  if (w.v != 16 && w.v != 32 && w.v != 64 && w.v != 128) return false;
  if (w.m < 4 || w.m > 256 || w.row_groups_padded * w.v < w.rows_padded) return false;
  return w.cols <= INT32_MAX && w.rows_padded <= INT32_MAX;
}

bool xt_pattern_ok(const VnmWeights& w) {
  return (w.v == 64 || w.v == 128) && w.m >= 4 && w.m <= kMaxM &&
         (w.type == ElemType::F16 || w.type == ElemType::BF16);
}

}  // namespace

int64_t vnm_xt_ld(int64_t m) { return (m + 7) / 8 * 8; }

size_t vnm_xt_bytes(const VnmWeights& w, int64_t m) {
  return static_cast<size_t>(w.cols) * static_cast<size_t>(vnm_xt_ld(m)) * 2;
}

cudaError_t vnm_transpose_x(const GemmProblem& pr, int64_t cols, void* xt, int64_t ldxt,
                            cudaStream_t stream) {
  if (!pr.x || !xt || pr.m < 1 || cols < 1 || pr.ldx < cols || pr.ldx % 8 != 0 ||
      ldxt < vnm_xt_ld(pr.m) || ldxt % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(xt) % 16 != 0)
    return cudaErrorInvalidValue;
  if ((ldxt + 63) / 64 > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((cols + 63) / 64), static_cast<unsigned>((ldxt + 63) / 64));
  transpose_x_kernel<<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(pr.x), pr.ldx, pr.m, cols,
                                               static_cast<uint16_t*>(xt), ldxt);
  return cudaGetLastError();
}

bool vnm_wgmma_xt_supported(const VnmWeights& w) { return xt_pattern_ok(w) && xt_device_supported(); }

namespace {
cudaError_t xt_launch(const VnmWeights& w, const void* xt, int64_t ldxt, const GemmProblem& pr,
                      cudaStream_t stream, int splits, float* partials) {
  if (!weights_ok(w)) return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.y || !xt || ldxt < vnm_xt_ld(pr.m) || ldxt % 8 != 0 ||
      reinterpret_cast<uintptr_t>(xt) % 16 != 0 || pr.m > INT32_MAX / 2)
    return cudaErrorInvalidValue;
  if (!vnm_wgmma_xt_supported(w)) return cudaErrorNotSupported;
  if (w.type == ElemType::F16)
    return w.v == 64 ? launch_xt<F16, 64>(w, xt, ldxt, pr, stream, splits, partials)
                     : launch_xt<F16, 128>(w, xt, ldxt, pr, stream, splits, partials);
  return w.v == 64 ? launch_xt<BF16, 64>(w, xt, ldxt, pr, stream, splits, partials)
                   : launch_xt<BF16, 128>(w, xt, ldxt, pr, stream, splits, partials);
}
}  // namespace

cudaError_t vnm_prefill_wgmma_xt(const VnmWeights& w, const void* xt, int64_t ldxt,
                                 const GemmProblem& pr, cudaStream_t stream) {
  return xt_launch(w, xt, ldxt, pr, stream, 1, nullptr);
}

// SPARSA_VNM_XT: unset = by pattern (below); 0 = always the staged kernel; 1 = always the Xᵀ
// path where it takes the pattern. (The kernel's time without its transpose is measured through
// vnm_prefill_wgmma_xt with a caller's Xᵀ.)
int xt_mode() {
  static const int mode = [] {
    const char* v = std::getenv("SPARSA_VNM_XT");
    if (!v || !*v) return -1;
    return std::atoi(v) != 0 ? 1 : 0;
  }();
  return mode;
}

// By pattern (session 5 run, H100, same binary): the Xᵀ path reads only the kept columns from L2
// (row groups x 16 KB per stage) where the staged kernel reads the dense box (4 KB x M), and L2
// -> SM bandwidth is what binds both. So Xᵀ where its L2 bytes are lower — V = 128 with M > 8
// (128:2:16: 1.66x against 1.54x cuBLAS, median of 14) — or where the staged kernel does not fit
// (V = 64, M > 12); the staged kernel elsewhere (64:2:8: 1.01x against 0.76x).
bool prefer_xt(const VnmWeights& w) {
  const int mode = xt_mode();
  if (mode == 0) return false;
  if (!xt_pattern_ok(w)) return false;
  if (mode == 1) return true;
  return (w.v == 128 && w.m > 8) || !vnm_wgmma_staged_supported(w);
}

bool vnm_wgmma_supported(const VnmWeights& w) {
  if (xt_mode() != 0 && vnm_wgmma_xt_supported(w)) return true;
  return vnm_wgmma_staged_supported(w);
}

// ---- split-K (session 8) -------------------------------------------------------------------
// Why: 256-row x 128-token CTA tiles at m <= 512 on N <= 8192 are far fewer than the SMs (N =
// 4096, m = 64: 16 CTAs) and each runs the whole K at ~1.5 us per stage of 16 blocks (4096 x
// 4096 64:2:8: 51 us against cuBLAS's 15). s CTAs per tile over even shares of the metadata
// chunks (4 stages), fp32 partials in the workspace, a reduction in split order (prefill_split.cuh).
namespace {

int vnm_prefill_split_mode() {
  static const int mode = split_mode_from_env("SPARSA_VNM_PREFILL_SPLIT", kPrefillMaxSplit);
  return mode;
}

// The 2:4 kernel's time model (nm24_split_time_us) with V:2:M's chunk time: 4 stages at ~1.47 us
// (session-7 final run: 4096 x 4096 .. 8192 x 28672, m = 64, 64:2:8 1.41-1.47, 128:2:16
// 1.44-1.65 us per stage), the values and metadata 1.125 B per gathered weight.
int vnm_split_rule(int64_t tiles, int64_t kchunks, int sms, double weight_bytes, double partial_bytes) {
  constexpr double kChunkUs = 4 * 1.47, kCtaBytesPerUs = 40e3, kDramBytesPerUs = 2.6e6;
  constexpr double kReduceUs = 1.2, kPartialBytesPerUs = 2.47e6;
  auto time = [&](int s) {
    const double ctas = static_cast<double>(tiles) * s;
    const double t = std::max(kChunkUs * static_cast<double>((kchunks + s - 1) / s),
                              weight_bytes / std::min(kDramBytesPerUs, ctas * kCtaBytesPerUs));
    return s > 1 ? t + kReduceUs + s * partial_bytes / kPartialBytesPerUs : t;
  };
  int s = 1;
  for (int c = 2; c <= kPrefillMaxSplit; ++c)
    if (tiles * c <= sms && kchunks >= c) s = c;
  return s > 1 && time(s) > time(1) ? 1 : s;
}

int vnm_tiles(const VnmWeights& w, int64_t m) { return static_cast<int>((w.rows_padded + kBM - 1) / kBM * ((m + kBN - 1) / kBN)); }

}  // namespace

int vnm_prefill_splits(const VnmWeights& w, int64_t m, int split) {
  if (m < 1 || w.rows_padded < 1 || w.blocks_padded < 64) return 0;
  if (split == 0) split = vnm_prefill_split_mode();
  const int64_t kchunks = w.blocks_padded / 64;
  if (split == -1) {
    const double wb = 1.125 * 4.0 * static_cast<double>(w.rows_padded) * static_cast<double>(w.blocks_padded) +
                      2.0 * static_cast<double>(m) * static_cast<double>(w.cols);
    return vnm_split_rule(vnm_tiles(w, m), kchunks, sm_count(), wb,
                          static_cast<double>(split_partials_bytes(w.rows_padded, m, 1)));
  }
  if (split < 1 || split > kPrefillMaxSplit) return 0;
  return static_cast<int>(std::min<int64_t>(split, kchunks));
}

size_t vnm_prefill_workspace_bytes(const VnmWeights& w, int64_t m, int split) {
  // vnm_prefill's 2:4 path (session 13) passes the workspace on to nm24_prefill.
  const size_t expanded =
      split == 0 && (vnm_prefill_expands(w, m) || vnm_prefill_copy_held(w, m))
          ? nm24_prefill_workspace_bytes(vnm_expanded_shape(w), m)
          : 0;
  if (!vnm_wgmma_supported(w)) return expanded;
  if ((split == 0 ? vnm_prefill_split_mode() : split) == -1 && m < vnm_wgmma_min_m()) return 0;
  const int s = vnm_prefill_splits(w, m, split);
  return std::max(expanded, s > 1 ? split_partials_offset(w.rows_padded) +
                                        split_partials_bytes(w.rows_padded, m, s)
                                  : size_t{0});
}

// The default V:2:M wgmma path (see prefer_xt): the staged kernel, or X transposed into a
// stream-ordered temporary and then the Xᵀ kernel (both kernels counted in the call); split-K
// by vnm_prefill_splits when the workspace holds the partials.
cudaError_t vnm_prefill_wgmma_split(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream,
                                    int split) {
  const int mode = split == 0 ? vnm_prefill_split_mode() : split;
  int splits = vnm_prefill_splits(w, pr.m, mode);
  if (splits < 1) return cudaErrorInvalidValue;
  float* partials = nullptr;
  if (splits > 1) {
    const size_t need = split_partials_offset(w.rows_padded) + split_partials_bytes(w.rows_padded, pr.m, splits);
    const bool fits = pr.workspace && reinterpret_cast<uintptr_t>(pr.workspace) % 16 == 0 &&
                      pr.workspace_bytes >= need;
    if (!fits) {
      if (mode != -1) return cudaErrorInvalidValue;
      splits = 1;
    } else {
      partials = reinterpret_cast<float*>(static_cast<char*>(pr.workspace) +
                                          split_partials_offset(w.rows_padded));
    }
  }
  if (!prefer_xt(w)) return detail::vnm_staged_launch(w, pr, stream, splits, partials);
  if (!weights_ok(w)) return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.x || !pr.y || pr.ldx < w.cols || pr.ldx % 8 != 0 ||
      reinterpret_cast<uintptr_t>(pr.x) % 16 != 0 || pr.m > INT32_MAX / 2)
    return cudaErrorInvalidValue;
  if (!xt_device_supported()) return cudaErrorNotSupported;
  const int64_t ldxt = vnm_xt_ld(pr.m);
  const size_t bytes = vnm_xt_bytes(w, pr.m);
  void* xt = nullptr;
  if (cudaError_t e = cudaMallocAsync(&xt, bytes, stream); e != cudaSuccess) return e;
  cudaError_t e = vnm_transpose_x(pr, w.cols, xt, ldxt, stream);
  if (e == cudaSuccess) e = xt_launch(w, xt, ldxt, pr, stream, splits, partials);
  const cudaError_t f = cudaFreeAsync(xt, stream);
  return e != cudaSuccess ? e : f;
}

cudaError_t vnm_prefill_wgmma(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream) {
  return vnm_prefill_wgmma_split(w, pr, stream, 0);
}

}  // namespace sparsa::cuda
