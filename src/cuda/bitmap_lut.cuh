// Bitmap decode, session 21: a lane's 8 positions of one MMA's A fragment expanded from its kept
// codes by byte permutes chosen through a 256-entry table, instead of one predicated load (or
// window shift) per position (bitmap_decode.cu, the positions expansion).
//
// Why: the positions expansion issues a dependent chain per position (4-bit codes: a window
// shift; int8: a shared-memory load at a running address whose lanes collide on banks), ~200
// instructions per lane and 32-column step, and ran the int / codebook bitmaps at 0.14-0.31 of
// the copy rate, slower than cuBLAS at m = 1 (docs/compression.md, "Session 21").
//
// How, for the 8 positions p = 0..7 of one MMA (mask bits m, the lane's kept codes c0, c1, ...
// in position order):
//  - the codes sit in two PRMT source words: int8 the 8 bytes c0..c7; 4-bit codes split into
//    even codes (low nibbles, as bytes) and odd codes (high nibbles, as bytes);
//  - lut[m] holds per output byte the selector of its position's code (position p kept is code
//    popc(m & ((1 << p) - 1))); two PRMT give the 8 positions' codes as bytes. Int codes keep
//    the fragment's position order; codebook4 takes row g's four positions (0, 1, 4, 5) then row
//    g + 8's (2, 3, 6, 7), the nibble order of the 2:4 code word that decode_a looks up;
//  - pruned positions: their byte is any code; a per-register mask from the mask bits puts the
//    group's zero point there (int: x - offset = 0) or zeroes the looked-up half (codebook4).
// Every kept value is computed by the same fp16 operations as the positions expansion, so the
// products are equal bit for bit (tests/gpu_bitmap_codec_test.cc).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/compressed_common.cuh"
#include "sparsa/cuda_compressed.h"

namespace sparsa::cuda::detail {

// Output byte of position p: int codes keep position order; codebook4 groups the rows.
template <CodeType kCode>
__host__ __device__ constexpr int lut_slot(int p) {
  if constexpr (kCode == CodeType::Codebook4)
    return (p & 1) | (((p >> 2) & 1) << 1) | (((p >> 1) & 1) << 2);
  else
    return p;
}

// lut[m]: the 8 PRMT selector nibbles (output byte b in bits 4b..4b+3) for mask byte m.
template <CodeType kCode>
__host__ __device__ constexpr uint32_t lut_entry(uint32_t m) {
  uint32_t e = 0;
  int k = 0;
  for (int p = 0; p < 8; ++p) {
    if (!((m >> p) & 1u)) continue;
    // int8: code k is byte k of (c0..c3, c4..c7); 4-bit: even k in the first word, odd in the
    // second, each at byte k / 2.
    const int sel = kCode == CodeType::Int8 ? k : (k & 1) ? 4 + (k >> 1) : (k >> 1);
    e |= static_cast<uint32_t>(sel) << (4 * lut_slot<kCode>(p));
    ++k;
  }
  return e;
}

// Byte b (0..3) of the result has its top bit set iff bit b of m4 (< 16) is: the four shifted
// copies of m4 land on disjoint bits (7-10, 14-17, 21-24, 28-31), so no carry crosses them. Only
// the top bits are meaningful (half_masks reads nothing else).
__device__ __forceinline__ uint32_t top_bits(uint32_t m4) { return m4 * 0x10204080u; }

// A half2 mask from the top bits of two bytes of (lo, hi) (prmt's sign-replicate mode):
// selector nibbles 8 | byte index.
template <int kLoByte, int kHiByte>
__device__ __forceinline__ uint32_t half_masks(uint32_t lo, uint32_t hi) {
  constexpr uint32_t sel = (8u | kLoByte) | (8u | kLoByte) << 4 | (8u | kHiByte) << 8 |
                           (8u | kHiByte) << 12;
  return prmt(lo, hi, sel);
}

// (a & m) | (b & ~m)
__device__ __forceinline__ uint32_t bit_select(uint32_t a, uint32_t b, uint32_t m) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xe4;\n" : "=r"(r) : "r"(a), "r"(b), "r"(m));
  return r;
}

__device__ __forceinline__ uint64_t lds_u64(uint32_t addr) {
  uint64_t r;
  asm volatile("ld.shared.u64 %0, [%1];\n" : "=l"(r) : "r"(addr));
  return r;
}

// Bytes [d, d + 8) of (lo, hi) for d in 0..7.
__device__ __forceinline__ uint64_t bytes_from(uint64_t lo, uint64_t hi, uint32_t d) {
  const uint32_t sh = 8 * d;
  return sh == 0 ? lo : (lo >> sh) | (hi << (64 - sh));
}

// Int8: the step's two groups of 8 codes, from byte address va (the first group's first code)
// and p0 (the first group's kept count): 8 bytes each, as {c0..c3, c4..c7} words. Reads up to 23
// bytes past va (the ring is followed by the zero X row, and bytes past the run are never used).
__device__ __forceinline__ void int8_windows(uint32_t va, uint32_t p0, uint32_t (&src)[2][2]) {
  const uint32_t a8 = va & ~7u;
  const uint64_t x0 = lds_u64(a8), x1 = lds_u64(a8 + 8), x2 = lds_u64(a8 + 16);
  const uint32_t d0 = va & 7u, d1 = d0 + p0;  // d1 <= 15
  const uint64_t g0 = bytes_from(x0, x1, d0);
  const uint64_t g1 = d1 >= 8 ? bytes_from(x1, x2, d1 - 8) : bytes_from(x0, x1, d1);
  src[0][0] = static_cast<uint32_t>(g0);
  src[0][1] = static_cast<uint32_t>(g0 >> 32);
  src[1][0] = static_cast<uint32_t>(g1);
  src[1][1] = static_cast<uint32_t>(g1 >> 32);
}

// 4-bit codes: 8 codes as nibbles (c0 lowest) -> {even codes, odd codes} as bytes.
__device__ __forceinline__ void split_nibbles(uint32_t w, uint32_t (&src)[2]) {
  src[0] = w & 0x0f0f0f0fu;
  src[1] = (w >> 4) & 0x0f0f0f0fu;
}

// Per row and step: the int pairs as half2 (offset, offset) / (scale, scale) of the group at the
// step's start (a) and of the next (b), and where b takes over: bit c of geq (lane-relative
// column c = 0..31) set iff c >= next.
struct RowPairs {
  uint32_t off_a, sc_a, off_b, sc_b;
  uint32_t geq7, geq6;  // byte j's top bit: column 8j (geq7) / 8j + 1 (geq6) is >= next
};

// ~0 << c with c clamped to 32 (funnel shift of {~0, 0}): bit i set iff i >= c, for c >= 0.
__device__ __forceinline__ uint32_t ones_from(int c) {
  uint32_t r;
  asm("shf.l.clamp.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(0u), "r"(~0u), "r"(c));
  return r;
}

// next: the column (relative to the lane's first, 2t) where b takes over, >= -6. Bit 8j + 7 of
// ones_from(next + 7) is set iff 8j >= next (and next + 7 >= 1).
__device__ __forceinline__ RowPairs row_pairs(uint32_t a, uint32_t b, int next) {
  return {prmt(a, 0, 0x1010),         prmt(a, 0, 0x3232),        prmt(b, 0, 0x1010),
          prmt(b, 0, 0x3232),         ones_from(next + 7),       ones_from(next + 6)};
}

// One MMA's 4 A registers (int8 / int4) from its 8 positions' code bytes out[0] (positions 0-3)
// and out[1] (4-7), the mask bits m of those positions, and the rows' pairs; q: which MMA of the
// step (columns 16q..16q + 15).
template <int kQ>
__device__ __forceinline__ void expand_int(uint32_t (&a)[4], const uint32_t (&out)[2], uint32_t m,
                                           const RowPairs& r0, const RowPairs& r1) {
  const uint32_t kept[2] = {top_bits(m & 0xfu), top_bits(m >> 4)};
#pragma unroll
  for (int j = 0; j < 4; ++j) {  // register j: positions 2j, 2j + 1, row g + 8 (j % 2)
    const RowPairs& r = (j & 1) ? r1 : r0;
    const uint32_t x = prmt(out[j >> 1], 0x64646464u, (j & 1) ? 0x4342u : 0x4140u);  // 1024 + u
    const uint32_t keep = (j & 1) ? half_masks<2, 3>(kept[j >> 1], 0)
                                  : half_masks<0, 1>(kept[j >> 1], 0);
    // Columns 8b and 8b + 1 (b = 2q + j / 2): bytes b of geq7 / geq6.
    const uint32_t after = (j >> 1) == 0 ? half_masks<2 * kQ, 4 + 2 * kQ>(r.geq7, r.geq6)
                                         : half_masks<2 * kQ + 1, 5 + 2 * kQ>(r.geq7, r.geq6);
    const uint32_t off = bit_select(r.off_b, r.off_a, after);
    const uint32_t sc = bit_select(r.sc_b, r.sc_a, after);
    const uint32_t xv = bit_select(x, off, keep);  // pruned: the zero point
    a[j] = h2_bits(__hmul2(__hsub2(bits_h2(xv), bits_h2(off)), bits_h2(sc)));
  }
}

// Codebook4: one MMA's 4 A registers from its positions' codes (out[0]: row g's positions 0, 1,
// 4, 5; out[1]: row g + 8's 2, 3, 6, 7, one code per byte) through decode_a's byte-permute
// lookup of the rows' books; pruned halves zeroed.
__device__ __forceinline__ void expand_book(uint32_t (&a)[4], const uint32_t (&out)[2], uint32_t m,
                                            const Book& b0, const Book& b1) {
  // Nibble-pack: byte 0 = c0 | c1 << 4, byte 2 = c2 | c3 << 4 (codes < 16).
  const uint32_t t0 = out[0] | (out[0] >> 4), t1 = out[1] | (out[1] >> 4);
  decode_a<CodeType::Codebook4>(a, prmt(t0, t1, 0x6420), 0, 0, 0, b0, b1);
  const uint32_t k0 = top_bits(m & 0xfu), k1 = top_bits(m >> 4);
  a[0] &= half_masks<0, 1>(k0, 0);  // row g, positions 0, 1
  a[1] &= half_masks<2, 3>(k0, 0);  // row g + 8, positions 2, 3
  a[2] &= half_masks<0, 1>(k1, 0);  // row g, positions 4, 5
  a[3] &= half_masks<2, 3>(k1, 0);  // row g + 8, positions 6, 7
}

// A bitmap row's book ([16 halves]) as decode_a's low-byte / high-byte words.
__device__ __forceinline__ Book bitmap_book(const uint4* books, int64_t row) {
  const uint4 e = __ldg(books + 2 * row), f = __ldg(books + 2 * row + 1);
  const uint32_t w[8] = {e.x, e.y, e.z, e.w, f.x, f.y, f.z, f.w};
  Book b;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    b.lo[i] = prmt(w[2 * i], w[2 * i + 1], 0x6420);
    b.hi[i] = prmt(w[2 * i], w[2 * i + 1], 0x7531);
  }
  return b;
}

}  // namespace sparsa::cuda::detail
