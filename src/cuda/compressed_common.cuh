// Device pieces shared by the compressed decode kernels (compressed_decode.cu: 2:4 and V:2:M;
// bitmap_decode.cu: bitmap; compressed_expand.cu: 2:4 codes to fp16 fragments): launch
// parameters (the stream-K split and the end of a row group come from split_fixup.cuh), X
// staging and code helpers (a k-step's A fragment from its codes: decode_a).
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

// A codebook as 4 words of low bytes and 4 of high bytes.
struct Book {
  uint32_t lo[4], hi[4];
};

__device__ __forceinline__ Book load_book(const uint4* books, int64_t row, int book_rows) {
  const uint4* b = books + 2 * row * book_rows;
  const uint4 l = __ldg(b), h = __ldg(b + 1);
  return {{l.x, l.y, l.z, l.w}, {h.x, h.y, h.z, h.w}};
}

// Four codes (sel: nibbles with the top bit cleared, sel2: byte choice by the top bit) -> the
// four entries' low or high bytes.
__device__ __forceinline__ uint32_t lookup(const uint32_t (&t)[4], uint32_t sel, uint32_t sel2) {
  return prmt(prmt(t[0], t[1], sel), prmt(t[2], t[3], sel), sel2);
}

// codebook4: rows g and g + 8 looked up (row g by the selectors' low halves, row g + 8 by their
// high halves moved down) and interleaved into the MMA's four A registers.
__device__ __forceinline__ void lookup_rows(uint32_t (&a)[4], const Book& b0, const Book& b1,
                                            uint32_t sel, uint32_t sel2, uint32_t sel_h,
                                            uint32_t sel2_h) {
  const uint32_t l0 = lookup(b0.lo, sel, sel2), h0 = lookup(b0.hi, sel, sel2);
  const uint32_t l1 = lookup(b1.lo, sel_h, sel2_h), h1 = lookup(b1.hi, sel_h, sel2_h);
  a[0] = prmt(l0, h0, 0x5140);
  a[2] = prmt(l0, h0, 0x7362);
  a[1] = prmt(l1, h1, 0x5140);
  a[3] = prmt(l1, h1, 0x7362);
}

// Codebook4 selectors off the integer pipe (session 10: compressed_decode.cu's kCb4Bits; also
// the bitmap LUT expansion). Operands the compiler must not fold (built from p.one): -0.0 in both
// fp16 halves, -1, 2^31, 1 and sel2's base 0x32103210.
struct Cb4Consts {
  uint32_t neg0, minus1, half, one, sel2_base;
};

// The high half of x in the low half (both halves, in fact), as the fp16 add x.hi + (-0) on the
// FMA pipe (HADD2 with the .H1_H1 operand swizzle) instead of a shift on the integer pipe. Exact
// for every pattern that is not a NaN (x + (-0) = x, +0 stays +0, subnormals kept: no .ftz); the
// selectors moved here have bit 11 clear (bit 3 of nibble 6: 0 in sel = w & 0x77777777 and in
// sel2's nibbles 0..7 + 4 * top), so their exponent field is never all ones.
__device__ __forceinline__ uint32_t high_half_down(uint32_t x, uint32_t neg0) {
  uint32_t r;
  asm("{\n .reg .b16 lo, hi;\n .reg .b32 hh;\n mov.b32 {lo, hi}, %1;\n mov.b32 hh, {hi, hi};\n"
      " add.rn.f16x2 %0, hh, %2;\n}\n"
      : "=r"(r)
      : "r"(x), "r"(neg0));
  return r;
}
__device__ __forceinline__ uint32_t hi_mul(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("mul.hi.u32 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ uint32_t mad_lo(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t r;
  asm("mad.lo.u32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// The A fragment of one k-step from its code word(s).
template <CodeType kCode>
__device__ __forceinline__ void decode_a(uint32_t (&a)[4], uint32_t w0, uint32_t w1,
                                         uint32_t pair_lo_row, uint32_t pair_hi_row, const Book& b0,
                                         const Book& b1) {
  if constexpr (kCode == CodeType::Int4) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const uint32_t x = ((w0 >> (4 * r)) & 0x000f000fu) | 0x64006400u;
      a[r] = dequant(x, (r & 1) ? pair_hi_row : pair_lo_row);
    }
  } else if constexpr (kCode == CodeType::Int8) {
    a[0] = dequant(prmt(w0, 0x64646464u, 0x4140), pair_lo_row);
    a[1] = dequant(prmt(w0, 0x64646464u, 0x4342), pair_hi_row);
    a[2] = dequant(prmt(w1, 0x64646464u, 0x4140), pair_lo_row);
    a[3] = dequant(prmt(w1, 0x64646464u, 0x4342), pair_hi_row);
  } else {
    const uint32_t sel = w0 & 0x77777777u;
    const uint32_t sel2 = 0x32103210u | ((w0 & 0x88888888u) >> 1);
    lookup_rows(a, b0, b1, sel, sel2, sel >> 16, sel2 >> 16);
  }
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
