// Hopper (sm_90a) building blocks shared by the wgmma.sp kernels: mbarriers, TMA box loads,
// shared-memory matrix descriptors, wgmma fences and the sparse m64n128k32 instruction, plus the
// host-side tensor-map encoder. Device code exists only in the sm_90a pass
// (__CUDA_ARCH_FEAT_SM90_ALL); the plain sm_90 pass sees the declarations it needs and no bodies.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>

#include <mutex>
#include <type_traits>

#include "cuda/mma_sp.cuh"

namespace sparsa::cuda::detail {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
// Initialises `stages` (full, empty) mbarrier pairs: full completes on the producer's one
// arrival plus the TMA bytes, empty on one arrival per consumer warp. Thread 0 only; the caller
// synchronises the CTA afterwards.
__device__ __forceinline__ void init_stage_barriers(uint32_t full_bar, uint32_t empty_bar,
                                                    int stages, uint32_t consumer_warps) {
  for (int s = 0; s < stages; ++s) {
    mbar_init(full_bar + 8 * s, 1);
    mbar_init(empty_bar + 8 * s, consumer_warps);
  }
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// One TMA box of a 2-D tensor at (col, row) -> shared memory, completing on `bar`.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int32_t col,
                                            int32_t row, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(col), "r"(row), "r"(bar)
      : "memory");
}

// Shared-memory matrix descriptor of a K-major B tile with 128-byte swizzle: rows of 128 bytes,
// 8-row groups 1024 bytes apart (stride byte offset), leading byte offset unused (1).
__device__ __forceinline__ uint64_t b_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// 64-byte-swizzled K-major descriptor of an m64 x 16 (compressed) A tile: rows of 64 bytes,
// 8-row groups 512 bytes apart.
__device__ __forceinline__ uint64_t a_desc_sw64(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (1ull << 16) | (32ull << 32) | (2ull << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

#define SPARSA_WGMMA_D64                                                                         \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63}"
#define SPARSA_WGMMA_D64_OPERANDS                                                              \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),          \
      "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),  \
      "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),            \
      "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),            \
      "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),            \
      "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]),            \
      "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),            \
      "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),            \
      "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),            \
      "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]),            \
      "+f"(d[62]), "+f"(d[63])

// D(64 x 128 tokens) += A(64 x 32, 2:4, registers) * B(32 x 128, shared memory), metadata e with
// sparsity selector kSel; accumulate always on (D starts at zero).
template <typename Elem, int kSel>
__device__ __forceinline__ void wgmma_sp_m64n128(float (&d)[64], const uint32_t (&a)[4],
                                                 uint64_t desc, uint32_t e) {
  if constexpr (std::is_same_v<Elem, F16>) {
    asm volatile(
        "{\n wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.f16.f16 " SPARSA_WGMMA_D64
        ", {%64, %65, %66, %67}, %68, %69, %70, 1, 1, 1, 0;\n}\n"
        : SPARSA_WGMMA_D64_OPERANDS
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "n"(kSel));
  } else {
    asm volatile(
        "{\n wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.bf16.bf16 " SPARSA_WGMMA_D64
        ", {%64, %65, %66, %67}, %68, %69, %70, 1, 1, 1, 0;\n}\n"
        : SPARSA_WGMMA_D64_OPERANDS
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "n"(kSel));
  }
}

// wgmma_sp_m64n128 with a runtime scale-d (D = A B when scale_d == 0, else D += A B) and B
// K-major (kTransB = 0) or MN-major (kTransB = 1, tokens contiguous; 16-bit types only). Zeroing
// the accumulators with ordinary moves instead made ptxas serialise every wgmma of a kernel
// (C7515: non-wgmma instructions defining accumulator registers).
template <typename Elem, int kSel, int kTransB>
__device__ __forceinline__ void wgmma_sp_m64n128_sd(float (&d)[64], const uint32_t (&a)[4],
                                                    uint64_t desc, uint32_t e, uint32_t scale_d) {
  if constexpr (std::is_same_v<Elem, F16>) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %71, 0;\n"
        " wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.f16.f16 " SPARSA_WGMMA_D64
        ", {%64, %65, %66, %67}, %68, %69, %70, p, 1, 1, %72;\n}\n"
        : SPARSA_WGMMA_D64_OPERANDS
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "n"(kSel), "r"(scale_d),
          "n"(kTransB));
  } else {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %71, 0;\n"
        " wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.bf16.bf16 " SPARSA_WGMMA_D64
        ", {%64, %65, %66, %67}, %68, %69, %70, p, 1, 1, %72;\n}\n"
        : SPARSA_WGMMA_D64_OPERANDS
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "n"(kSel), "r"(scale_d),
          "n"(kTransB));
  }
}

__device__ __forceinline__ void load_a(uint32_t (&a)[4], const uint4* p) {
  const uint4 v = ldg_stream(p);
  a[0] = v.x;
  a[1] = v.y;
  a[2] = v.z;
  a[3] = v.w;
}
__device__ __forceinline__ void load_meta(uint32_t (&e)[4], const uint4* p) {
  const uint4 v = __ldg(p);
  e[0] = v.x;
  e[1] = v.y;
  e[2] = v.z;
  e[3] = v.w;
}

// 16-byte shared-memory load into four registers (the A fragments of the ring variant).
__device__ __forceinline__ void lds_128(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// Epilogue of the m64n128 kernels: two m64 tiles of a warpgroup straight to Y[tok, row].
// Accumulator element i of tile mt is row 16 warp + g + 8 ((i >> 1) & 1) of the m64 tile
// (`row_base` + 64 mt is its first row), token 8 (i >> 2) + 2t + (i & 1); rows >= `rows` and
// tokens >= `m` are skipped.
template <typename OutT>
__device__ __forceinline__ void store_m64n128_pair(OutT* y, int64_t ldy, const float (&acc)[2][64],
                                                   int64_t row_base, int64_t tok0, int64_t rows,
                                                   int64_t m, int warp, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    const int64_t row0 = row_base + mt * 64 + warp * 16 + g;
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      const int64_t row = row0 + 8 * ((i >> 1) & 1);
      const int64_t tok = tok0 + 8 * (i >> 2) + 2 * t + (i & 1);
      if (row < rows && tok < m) y[tok * ldy + row] = from_float<OutT>(acc[mt][i]);
    }
  }
}

// The W side of the V:2:M wgmma kernels (wgmma_vnm_prefill.cu and wgmma_vnm_prefill_xt.cu, both
// 256-row CTA tiles): consumer warp ww of warpgroup wg owns two m64 tiles, i.e. 16-row device
// tiles 8 wg + 4 mt + ww of the row block, read from the 2:4 device tiling (a 16-byte A fragment
// per lane and k-step; the lane's metadata word of stage s is word 128 (s / 4) + s % 4).
struct VnmStageW {
  const uint4* a_src[2];
  const uint32_t* e_src[2];

  template <typename Params>
  __device__ __forceinline__ VnmStageW(const Params& p, int64_t row_block, int wg, int ww,
                                       int lane) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      int64_t rt = row_block * 16 + wg * 8 + mt * 4 + ww;
      rt = min(rt, p.row_tiles - 1);  // rows past the padding: any valid tile, never stored
      a_src[mt] = p.values + rt * p.ksteps * 32 + lane;
      e_src[mt] = reinterpret_cast<const uint32_t*>(p.meta + rt * p.kchunks * 32 + lane);
    }
  }

  // Split-K (session 8): the sources start at stage `stage0`, a multiple of 4 (a metadata chunk).
  __device__ __forceinline__ void advance(int64_t stage0) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      a_src[mt] += stage0 * 2 * 32;
      e_src[mt] += (stage0 / 4) * 128;
    }
  }

  // Stage `stage` (2 k-steps): A fragments [m tile][k-step] and metadata words [m tile].
  __device__ __forceinline__ void load(uint32_t (&a)[2][2][4], uint32_t (&e)[2],
                                       int64_t stage) const {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) load_a(a[mt][ks], a_src[mt] + (stage * 2 + ks) * 32);
      e[mt] = __ldg(e_src[mt] + (stage / 4) * 128 + stage % 4);
    }
  }
};

// The tile a CTA computes under the grouped raster: `group` row blocks x every token tile per
// group, row block fastest, so a wave of CTAs shares a few weight row blocks (kept in L2) instead
// of streaming all weights once per token tile (v5a measured that: DRAM-bound on the 11008- to
// 28672-row shapes).
struct RasterTile {
  int64_t row_block;
  int64_t tok0;  // first token of the tile
};
__device__ __forceinline__ RasterTile grouped_raster_tile(int64_t tile, int group, int64_t row_blocks,
                                                         int64_t token_tiles, int tokens_per_tile) {
  const int64_t group_tiles = static_cast<int64_t>(group) * token_tiles;
  const int64_t g = tile / group_tiles, in_group = tile % group_tiles;
  const int64_t first_block = g * group;
  const int64_t group_blocks = min(static_cast<int64_t>(group), row_blocks - first_block);
  return {first_block + in_group % group_blocks, (in_group / group_blocks) * tokens_per_tile};
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      ptr = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

// Tensor map of the activations X [m, cols] (row stride ldx elements, fp16 or bf16) in boxes of
// box_cols x box_rows, out-of-range elements zero-filled. False when the encoder is missing or
// refuses the layout.
template <typename Elem>
bool encode_x_map(CUtensorMap* map, const void* x, int64_t cols, int64_t m, int64_t ldx,
                  uint32_t box_cols, uint32_t box_rows, CUtensorMapSwizzle swizzle) {
  auto encode = encode_fn();
  if (!encode) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(m)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ldx) * 2};
  const cuuint32_t box[2] = {box_cols, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  return encode(map,
                std::is_same_v<Elem, F16> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                          : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                2, const_cast<void*>(x), dims, strides, box, elem_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Tensor map of a 16-bit Y [m, rows] (row stride ldy elements) for TMA stores of boxes of
// box_rows x box_tokens, no swizzle. Tokens past m are not written; columns past `rows` are up to
// the next 16-byte boundary (TMA stores whole 16-byte pieces), so callers keep rows % 8 == 0.
// False when the encoder is missing or refuses the layout (Y and ldy * 2 multiples of 16 bytes).
inline bool encode_y16_map(CUtensorMap* map, void* y, int64_t rows, int64_t m, int64_t ldy,
                           uint32_t box_rows, uint32_t box_tokens) {
  auto encode = encode_fn();
  if (!encode) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(rows), static_cast<cuuint64_t>(m)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ldy) * 2};
  const cuuint32_t box[2] = {box_rows, box_tokens};
  const cuuint32_t elem_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, y, dims, strides, box, elem_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Tensor map of an array of u32 per 16-row tile ([row_tiles][words], rows contiguous): boxes of
// box_words x 8 row tiles, no swizzle. The tiled metadata and the fragment layout `values` are
// such arrays.
inline bool encode_row_tile_map(CUtensorMap* map, const void* base, int64_t words, int64_t row_tiles,
                                uint32_t box_words) {
  auto encode = encode_fn();
  if (!encode) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(words), static_cast<cuuint64_t>(row_tiles)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(words) * 4};
  const cuuint32_t box[2] = {box_words, 8};
  const cuuint32_t elem_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 2, const_cast<void*>(base), dims, strides, box,
                elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Tensor map of the tiled metadata as u32 [row_tiles][kchunks * 128]: boxes of one chunk (512 B)
// x 8 row tiles.
inline bool encode_meta_map(CUtensorMap* map, const void* meta, int64_t kchunks, int64_t row_tiles) {
  return encode_row_tile_map(map, meta, kchunks * 128, row_tiles, 128);
}

// The tensor maps of the shared-memory-A 2:4 kernels (v8, v12): X in boxes of 64 columns x
// x_rows tokens (128-byte swizzle), w.values_k in boxes of 32 compressed columns (one stage) x
// a_rows weight rows (64-byte swizzle), the metadata in boxes of one chunk x 8 row tiles. With
// `a_fragments` (v12 on the fragment layout) A is w.values in boxes of two k-steps (1 KB) x 8 row
// tiles instead (a_rows must be 128). False when the encoder refuses one.
template <typename Elem>
bool encode_ss_maps(const Nm24Weights& w, const GemmProblem& pr, uint32_t x_rows, uint32_t a_rows,
                    CUtensorMap* x_map, CUtensorMap* a_map, CUtensorMap* e_map,
                    bool a_fragments = false) {
  const bool a_ok =
      a_fragments
          ? a_rows == 128 &&
                encode_row_tile_map(a_map, w.values, w.cols_padded / 32 * 128, w.rows_padded / 16, 256)
          : encode_x_map<Elem>(a_map, w.values_k, w.cols_padded / 2, w.rows_padded,
                               w.cols_padded / 2, 32, a_rows, CU_TENSOR_MAP_SWIZZLE_64B);
  return a_ok &&
         encode_x_map<Elem>(x_map, pr.x, w.cols, pr.m, pr.ldx, 64, x_rows,
                            CU_TENSOR_MAP_SWIZZLE_128B) &&
         encode_meta_map(e_map, w.meta, w.cols_padded / kKChunk, w.rows_padded / 16);
}

// Whether `kernel` was loaded from its sm_90a image: the .cu files are built for sm_90 and
// sm_90a and only the sm_90a pass has a body; an empty body uses < 32 registers.
template <typename Kernel>
bool has_sm90a_body(Kernel kernel) {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attr.numRegs >= 64;
}

// Per device, cached: compute capability 9.0, the tensor-map encoder present and
// `kernels_loaded()` (has_sm90a_body of the caller's kernels) true.
template <typename KernelsLoaded>
bool hopper_wgmma_usable(KernelsLoaded kernels_loaded) {
  static int cached[64] = {};  // 0 unknown, 1 yes, 2 no
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return false;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (cached[device] == 0) {
    int major = 0, minor = 0;
    bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) ==
                  cudaSuccess &&
              cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) ==
                  cudaSuccess &&
              major == 9 && minor == 0 && encode_fn() != nullptr;
    ok = ok && kernels_loaded();
    cached[device] = ok ? 1 : 2;
  }
  return cached[device] == 1;
}

// ---- session 6: 192-token tiles (the m64n192k32 instructions and their epilogue) -------------
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SPARSA_WGMMA_D96 \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}"
#define SPARSA_WGMMA_D96_OPERANDS \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), \
  "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), \
  "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), \
  "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), \
  "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), \
  "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), \
  "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), \
  "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), \
  "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), \
  "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), \
  "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), \
  "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), \
  "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])

// D(64 x 192 tokens) += A(64 x 32, 2:4, registers) * B(32 x 192, shared memory, K-major),
// metadata e with sparsity selector kSel; accumulate always on (D starts at zero). The register-A
// twin of wgmma_sp_m64n128 for 192-token tiles.
template <typename Elem, int kSel>
__device__ __forceinline__ void wgmma_sp_m64n192(float (&d)[96], const uint32_t (&a)[4],
                                                 uint64_t desc, uint32_t e) {
  if constexpr (std::is_same_v<Elem, F16>) {
    asm volatile(
        "{\n wgmma.mma_async.sp.sync.aligned.m64n192k32.f32.f16.f16 " SPARSA_WGMMA_D96
        ", {%96, %97, %98, %99}, %100, %101, %102, 1, 1, 1, 0;\n}\n"
        : SPARSA_WGMMA_D96_OPERANDS
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "n"(kSel));
  } else {
    asm volatile(
        "{\n wgmma.mma_async.sp.sync.aligned.m64n192k32.f32.bf16.bf16 " SPARSA_WGMMA_D96
        ", {%96, %97, %98, %99}, %100, %101, %102, 1, 1, 1, 0;\n}\n"
        : SPARSA_WGMMA_D96_OPERANDS
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(e), "n"(kSel));
  }
}

__device__ __forceinline__ uint32_t lds_32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}

// store_m64n128_pair for any token tile BN (128 or 192): accumulator element i of tile mt is row
// 16 warp + g + 8 ((i >> 1) & 1) of the m64 tile, token 8 (i >> 2) + 2t + (i & 1); rows >= `rows`
// and tokens >= `m` skipped.
template <typename OutT, int BN>
__device__ __forceinline__ void store_m64n_pair(OutT* y, int64_t ldy, const float (&acc)[2][BN / 2],
                                                int64_t row_base, int64_t tok0, int64_t rows,
                                                int64_t m, int warp, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    const int64_t row0 = row_base + mt * 64 + warp * 16 + g;
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) {
      const int64_t row = row0 + 8 * ((i >> 1) & 1);
      const int64_t tok = tok0 + 8 * (i >> 2) + 2 * t + (i & 1);
      if (row < rows && tok < m) y[tok * ldy + row] = from_float<OutT>(acc[mt][i]);
    }
  }
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL



// ---- session 16: 128 x 256 tiles in clusters of two CTAs (wgmma_prefill_ssc.cu) ---------------
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
// Every thread of every CTA of the cluster; releases this CTA's shared-memory writes (barrier
// initialisation included) to the other CTAs and acquires theirs.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" :::
                   "memory");
}
// One arrival on the mbarrier at the same shared-memory offset in CTA `rank` of the cluster
// (default .release.cta semantics, as CUTLASS's ClusterBarrier::arrive: the arriving warp's
// wgmma reads of the slot are complete by then, and a cluster-scope release compiled to
// MEMBAR.ALL.GPU in session 4's v5c).
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n .reg .b32 remote;\n mapa.shared::cluster.u32 remote, %0, %1;\n"
      " mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}
// tma_load_2d into the same shared-memory offset of every CTA in `cta_mask`, each completing on
// its own mbarrier at offset `bar`.
__device__ __forceinline__ void tma_load_2d_multicast(uint32_t dst, const CUtensorMap* map,
                                                      int32_t col, int32_t row, uint32_t bar,
                                                      uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(col), "r"(row), "r"(bar), "h"(cta_mask)
      : "memory");
}

// A contiguous global range into shared memory (bytes and both addresses multiples of 16),
// completing `bytes` of the transaction count of mbarrier `bar`.
__device__ __forceinline__ void bulk_load_1d(uint32_t dst, const void* src, uint32_t bytes,
                                             uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

// TMA stores (shared -> global, bulk groups of the issuing thread) and what they need: the
// generic-proxy writes of a staging buffer made visible to the async proxy before the store reads
// it (also before a wgmma reads what threads stored), and waits for a thread's earlier stores
// (.read: their reads of shared memory only).
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// The box of `map` at (col, row) from shared memory at `src`; elements outside the tensor are not
// written, except within the last 16-byte piece of a row (whole pieces are written).
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, uint32_t src, int32_t col,
                                             int32_t row) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n"
               ::"l"(reinterpret_cast<uint64_t>(map)), "r"(src), "r"(col), "r"(row)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait() {
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8 x 8 16-bit matrices in the mma accumulator layout (lane: row lane / 4, columns
// 2 (lane % 4) and + 1, packed low first), stored transposed: lanes 8q..8q+7 give the addresses
// of matrix q's 8 columns, 16 bytes each.
__device__ __forceinline__ void stmatrix_x4_trans(uint32_t addr, uint32_t r0, uint32_t r1,
                                                  uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n"
               ::"r"(addr), "r"(r0), "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}

#define SPARSA_WGMMA_D128 \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define SPARSA_WGMMA_D128_OPERANDS \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), \
  "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), \
  "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), \
  "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), \
  "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), \
  "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), \
  "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), \
  "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), \
  "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), \
  "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
  "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), \
  "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), \
  "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), \
  "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
  "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), \
  "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), \
  "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), \
  "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
  "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), \
  "+f"(d[126]), "+f"(d[127])

// D(64 x 256 tokens) (+)= A(64 x 32, 2:4, shared memory by descriptor) * B(32 x 256, shared
// memory, K-major), metadata e with sparsity selector kSel; D = A B when scale_d == 0 (the first
// k-step of a tile: zeroing accumulators with moves would serialise the wgmmas, see
// wgmma_sp_m64n128_sd).
template <typename Elem, int kSel>
__device__ __forceinline__ void wgmma_sp_ss_m64n256(float (&d)[128], uint64_t adesc, uint64_t bdesc,
                                                    uint32_t e, uint32_t scale_d) {
  if constexpr (std::is_same_v<Elem, F16>)
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %132, 0;\n"
                 " wgmma.mma_async.sp.sync.aligned.m64n256k32.f32.f16.f16 " SPARSA_WGMMA_D128
                 ", %128, %129, %130, %131, p, 1, 1, 0, 0;\n}\n"
                 : SPARSA_WGMMA_D128_OPERANDS
                 : "l"(adesc), "l"(bdesc), "r"(e), "n"(kSel), "r"(scale_d));
  else
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %132, 0;\n"
                 " wgmma.mma_async.sp.sync.aligned.m64n256k32.f32.bf16.bf16 " SPARSA_WGMMA_D128
                 ", %128, %129, %130, %131, p, 1, 1, 0, 0;\n}\n"
                 : SPARSA_WGMMA_D128_OPERANDS
                 : "l"(adesc), "l"(bdesc), "r"(e), "n"(kSel), "r"(scale_d));
}

// wgmma_sp_ss_m64n256 with A from registers: the four registers of the warp's m16 slice, in the
// sparse m16n8k32 A fragment order (the fragment layout `values` holds; v12 on fragments).
template <typename Elem, int kSel>
__device__ __forceinline__ void wgmma_sp_rs_m64n256(float (&d)[128], const uint32_t (&a)[4],
                                                    uint64_t bdesc, uint32_t e, uint32_t scale_d) {
  if constexpr (std::is_same_v<Elem, F16>)
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %135, 0;\n"
                 " wgmma.mma_async.sp.sync.aligned.m64n256k32.f32.f16.f16 " SPARSA_WGMMA_D128
                 ", {%128, %129, %130, %131}, %132, %133, %134, p, 1, 1, 0;\n}\n"
                 : SPARSA_WGMMA_D128_OPERANDS
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "r"(e), "n"(kSel),
                   "r"(scale_d));
  else
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %135, 0;\n"
                 " wgmma.mma_async.sp.sync.aligned.m64n256k32.f32.bf16.bf16 " SPARSA_WGMMA_D128
                 ", {%128, %129, %130, %131}, %132, %133, %134, p, 1, 1, 0;\n}\n"
                 : SPARSA_WGMMA_D128_OPERANDS
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "r"(e), "n"(kSel),
                   "r"(scale_d));
}

// An empty asm that reads the sparsity metadata words of wgmmas a wait has just retired, so that
// their registers hold those words until then: ptxas protects the A registers of an in-flight
// wgmma.sp but not its metadata register, which it reused for other values (address arithmetic,
// the next stage's loads) while the wgmma still ran, giving wrong and varying products (session
// 20, the V:2:M codes kernel; scripts/sass_metadata_hazards.py finds such reuse in the SASS).
template <int N>
__device__ __forceinline__ void keep_metadata(const uint32_t (&e)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" ::"r"(e[i]));
}

// An empty asm that reads and writes every accumulator: the compiler cannot move a read of
// them (a spill, an epilogue store) above the wgmma wait it follows (CUTLASS's
// warpgroup_fence_operand).
template <int N>
__device__ __forceinline__ void fence_accumulators(float (&acc)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(acc[i])::"memory");
}

// One m64 x BN accumulator tile of a warpgroup straight to Y[tok, row]: element i is row
// `row_base` + 16 warp + g + 8 ((i >> 1) & 1), token `tok0` + 8 (i >> 2) + 2t + (i & 1); rows >=
// `rows` and tokens >= `m` skipped.
template <typename OutT, int BN>
__device__ __forceinline__ void store_m64n(OutT* y, int64_t ldy, const float (&acc)[BN / 2],
                                           int64_t row_base, int64_t tok0, int64_t rows, int64_t m,
                                           int warp, int lane) {
  const int g = lane >> 2, t = lane & 3;
  const int64_t row0 = row_base + warp * 16 + g;
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) {
    const int64_t row = row0 + 8 * ((i >> 1) & 1);
    const int64_t tok = tok0 + 8 * (i >> 2) + 2 * t + (i & 1);
    if (row < rows && tok < m) y[tok * ldy + row] = from_float<OutT>(acc[i]);
  }
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace sparsa::cuda::detail
