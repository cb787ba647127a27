// Device pieces shared by the compressed decode kernels (compressed_decode.cu: 2:4 and V:2:M;
// bitmap_decode.cu: bitmap): launch parameters (the stream-K split and the end of a row group
// come from split_fixup.cuh), X staging and code helpers.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/mma_sp.cuh"
#include "cuda/split_fixup.cuh"
#include "sparsa/cuda_compressed.h"

namespace sparsa::cuda::detail {

struct CompressedParams {
  const unsigned char* tiles;  // [row groups][kchunks][warps][slot_bytes] (bitmap: variable)
  int64_t slot_bytes;
  const uint4* books;       // [rows or 1][2 uint4]
  const uint32_t* columns;  // V:2:M
  const uint32_t* offsets;  // bitmap: slot starts in 16-byte units, [units * warps + 1]
  const void* x;
  int64_t ldx;
  int m;
  int64_t cols;
  void* y;
  int64_t ldy;
  int64_t rows;
  int64_t kchunks;
  int64_t units;
  int ctas;
  int spc;        // scale pairs per row and chunk
  int book_rows;  // 1: a codebook per row, 0: one for the tensor
  int v, bm;
  int64_t blocks_padded;
  float* partials;
  unsigned* counters;
  uint32_t one = 1;  // 1, opaque to the compiler (codebook4 table path: shift multipliers)
  // Session 6 run 3: per-CTA timeline stamps (kTimelineWords words per CTA, compressed_internal.h),
  // set only by detail::compressed_decode_timeline; nullptr otherwise.
  unsigned long long* timeline = nullptr;
  // Session 7, second helper: the tiling's row groups of 128 rows (the wide kernels plan over
  // pairs of them; the second half of an odd count's last pair has no tiles).
  int64_t tile_groups = 0;
};

// Programmatic dependent launch (sm_90; no-ops when the grid was launched without the
// attribute): let the next grid on the stream start its prologue, and wait for the previous
// grid's completion (and memory) before touching X, Y or the workspace.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// X chunk kc (kCols columns) -> shared memory rows of kRowBytes via cp.async, rows < m only
// (rows >= m are never read: their ldmatrix lanes point at a zero row); columns past K
// zero-filled. Thread t copies 16-byte pieces t + r * kThreads.
template <int kThreads, int kCols, int kRowBytes>
__device__ __forceinline__ void issue_x_dense(uint32_t xs, const CompressedParams& p, int64_t kc) {
  const __half* x = static_cast<const __half*>(p.x);
  constexpr int kRowPieces = kCols / 8;
  constexpr int kPieces = 16 * kRowPieces;
#pragma unroll
  for (int r = 0; r < (kPieces + kThreads - 1) / kThreads; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    const int tok = idx / kRowPieces, piece = idx % kRowPieces;
    if (idx >= kPieces || tok >= p.m) break;
    const int64_t col = kc * kCols + piece * 8;
    int bytes = 0;
    const __half* src = x;
    if (col < p.cols) {
      bytes = p.cols - col >= 8 ? 16 : static_cast<int>((p.cols - col) * 2);
      src = x + tok * p.ldx + col;
    }
    cp_async_16(xs + tok * kRowBytes + piece * 16, src, bytes);
  }
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_h2(uint32_t b) { return *reinterpret_cast<__half2*>(&b); }

// (x - offset) * scale for x = 1024 + u as half2; pair = (offset, scale).
__device__ __forceinline__ uint32_t dequant(uint32_t x, uint32_t pair) {
  const __half2 off = bits_h2(prmt(pair, 0, 0x1010)), sc = bits_h2(prmt(pair, 0, 0x3232));
  return h2_bits(__hmul2(__hsub2(bits_h2(x), off), sc));
}

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "r"(addr));
  return r;
}
__device__ __forceinline__ uint32_t lds32(uint32_t addr) {
  uint32_t r;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(r) : "r"(addr));
  return r;
}

// Dense f16 MMA m16n8k16 (f32 accumulators): the bitmap kernels' product after expansion.
__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                        uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

}  // namespace sparsa::cuda::detail
