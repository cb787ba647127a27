// Bitmap decode, session 21: a lane's 8 positions of one MMA's A fragment expanded from its kept
// codes by byte permutes chosen through a 256-entry table, instead of one predicated load (or
// window shift) per position (bitmap_decode.cu, the positions expansion).
//
// Why: the bitmap kernels are bound by the integer pipe (SASS counts against H100 times,
// docs/compression.md "Session 21"); the positions expansion spends ~140-210 integer instructions
// per lane and 32-column step on a chain per position (4-bit codes: a window shift; int8: a load
// at a running address, its lanes colliding on banks), and ran the int / codebook bitmaps at
// 0.14-0.31 of the copy rate, slower than cuBLAS at m = 1.
//
// How, for the 8 positions p = 0..7 of one MMA (mask bits m, the lane's kept codes c0, c1, ...
// in position order):
//  - the codes sit in two PRMT source words: int8 the 8 bytes c0..c7; 4-bit codes split into
//    even codes (low nibbles, as bytes) and odd codes (high nibbles, as bytes); fp16 values as
//    two such byte streams, their low and their high bytes (not the default for fp16: measured
//    2-6% slower than the positions expansion, whose per-position work for fp16 is one load);
//  - lut[m] holds per output byte the selector of its position's code (position p kept is code
//    popc(m & ((1 << p) - 1))); two PRMT give the 8 positions' codes as bytes. Int codes keep
//    the fragment's position order; codebook4 takes row g's four positions (0, 1, 4, 5) then row
//    g + 8's (2, 3, 6, 7), the nibble order of the 2:4 code word that the lookup takes;
//  - pruned positions: their byte is any code; a per-register mask from the mask bits zeroes the
//    half after dequantisation (int) or the looked-up bytes (codebook4).
// Every kept value comes out of the same fp16 operations as in the positions expansion and the
// pruned ones are +0 in both, so the A fragments, and the products, are equal bit for bit
// (tests/gpu_bitmap_codec_test.cc).
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
    // int8 (and fp16's low / high byte streams): code k is byte k of (c0..c3, c4..c7); 4-bit:
    // even k in the first word, odd in the second, each at byte k / 2.
    const bool bytes = kCode == CodeType::Int8 || kCode == CodeType::F16;
    const int sel = bytes ? k : (k & 1) ? 4 + (k >> 1) : (k >> 1);
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
  constexpr uint32_t sel =
      (8u | kLoByte) | (8u | kLoByte) << 4 | (8u | kHiByte) << 8 | (8u | kHiByte) << 12;
  return prmt(lo, hi, sel);
}

// (a & m) | (b & ~m)
__device__ __forceinline__ uint32_t bit_select(uint32_t a, uint32_t b, uint32_t m) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xe4;\n" : "=r"(r) : "r"(a), "r"(b), "r"(m));
  return r;
}

// 8 bytes from byte address a (any alignment) as two words: three aligned 4-byte loads and two
// funnel shifts (no branch, no 64-bit shift). Reads up to 11 bytes past a.
__device__ __forceinline__ void bytes8(uint32_t a, uint32_t (&w)[2]) {
  const uint32_t wa = a & ~3u, s = 8 * (a & 3u);
  const uint32_t x0 = lds32(wa), x1 = lds32(wa + 4), x2 = lds32(wa + 8);
  w[0] = __funnelshift_r(x0, x1, s);
  w[1] = __funnelshift_r(x1, x2, s);
}

// Int8: the step's two groups of 8 codes from byte address va (the first group's first code) and
// p0 (the first group's kept count), as {c0..c3, c4..c7} words. Reads up to 19 bytes past va (the
// ring is followed by the zero X row; bytes past the run are never used).
__device__ __forceinline__ void int8_windows(uint32_t va, uint32_t p0, uint32_t (&src)[2][2]) {
  bytes8(va, src[0]);
  bytes8(va + p0, src[1]);
}

// fp16 values: 8 halves from byte address a (2-byte aligned) as four words: five aligned loads and
// four funnel shifts. Reads up to 19 bytes past a.
__device__ __forceinline__ void halves8(uint32_t a, uint32_t (&w)[4]) {
  const uint32_t wa = a & ~3u, s = 8 * (a & 3u);  // s: 0 or 16
  uint32_t x[5];
#pragma unroll
  for (int i = 0; i < 5; ++i) x[i] = lds32(wa + 4 * i);
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = __funnelshift_r(x[i], x[i + 1], s);
}

// 4-bit codes: the step's two groups of 8 codes as nibble words, from bit address va (8 x the byte
// address, + 4 for a high nibble) and p0: three aligned 4-byte loads, funnel shifts. Reads up to 11
// bytes past va's byte.
__device__ __forceinline__ void nibble_windows(uint32_t va, uint32_t p0, uint32_t (&w)[2]) {
  const uint32_t wa = (va >> 3) & ~3u, s0 = va & 31u, s1 = s0 + 4 * p0;  // s1 <= 60
  const uint32_t x0 = lds32(wa), x1 = lds32(wa + 4), x2 = lds32(wa + 8);
  w[0] = __funnelshift_r(x0, x1, s0);
  w[1] = s1 >= 32 ? __funnelshift_r(x1, x2, s1) : __funnelshift_r(x0, x1, s1);
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
  return {prmt(a, 0, 0x1010), prmt(a, 0, 0x3232),  prmt(b, 0, 0x1010),
          prmt(b, 0, 0x3232), ones_from(next + 7), ones_from(next + 6)};
}

// One MMA's 4 A registers (int8 / int4) from its 8 positions' code bytes out[0] (positions 0-3)
// and out[1] (4-7), the mask bits m of those positions, and the rows' pairs; kQ: which MMA of the
// step (columns 16 kQ .. 16 kQ + 15). Both pairs' values are computed (fp16 on the FMA pipe, which
// has room) and one taken per half by a mask (the integer pipe bounds these kernels); pruned halves
// are zeroed, as the positions expansion's zero point gives them.
template <int kQ>
__device__ __forceinline__ void expand_int(uint32_t (&a)[4], const uint32_t (&out)[2], uint32_t m,
                                           const RowPairs& r0, const RowPairs& r1) {
  const uint32_t kept[2] = {top_bits(m & 0xfu), top_bits(m >> 4)};
#pragma unroll
  for (int j = 0; j < 4; ++j) {  // register j: positions 2j, 2j + 1, row g + 8 (j % 2)
    const RowPairs& r = (j & 1) ? r1 : r0;
    const __half2 x = bits_h2(prmt(out[j >> 1], 0x64646464u, (j & 1) ? 0x4342u : 0x4140u));
    const uint32_t va = h2_bits(__hmul2(__hsub2(x, bits_h2(r.off_a)), bits_h2(r.sc_a)));
    const uint32_t vb = h2_bits(__hmul2(__hsub2(x, bits_h2(r.off_b)), bits_h2(r.sc_b)));
    const uint32_t keep =
        (j & 1) ? half_masks<2, 3>(kept[j >> 1], 0) : half_masks<0, 1>(kept[j >> 1], 0);
    // Columns 8b and 8b + 1 (b = 2 kQ + j / 2): bytes b of geq7 / geq6.
    const uint32_t after = (j >> 1) == 0 ? half_masks<2 * kQ, 4 + 2 * kQ>(r.geq7, r.geq6)
                                         : half_masks<2 * kQ + 1, 5 + 2 * kQ>(r.geq7, r.geq6);
    a[j] = bit_select(vb, va, after) & keep;
  }
}

// Codebook4: one MMA's 4 A registers from its positions' codes (out[0]: row g's positions 0, 1,
// 4, 5; out[1]: row g + 8's 2, 3, 6, 7, one code per byte): the 2:4 kernels' byte-permute lookup
// of the rows' books with session 10's selectors (sel by IMAD, row g + 8's moved down by fp16
// adds); pruned codes' looked-up bytes zeroed before the interleave.
__device__ __forceinline__ void expand_book(uint32_t (&a)[4], const uint32_t (&out)[2], uint32_t m,
                                            const Book& b0, const Book& b1, const Cb4Consts& k) {
  // Nibble-pack: byte 0 = c0 | c1 << 4, byte 2 = c2 | c3 << 4 (codes < 16).
  const uint32_t t0 = out[0] | (out[0] >> 4), t1 = out[1] | (out[1] >> 4);
  const uint32_t w = prmt(t0, t1, 0x6420);  // row g's codes in bits 0-15, row g + 8's in 16-31
  const uint32_t top = w & 0x88888888u;
  const uint32_t sel = mad_lo(top, k.minus1, w), sel2 = 0x32103210u | (top >> 1);
  const uint32_t sel_h = high_half_down(sel, k.neg0), sel2_h = high_half_down(sel2, k.neg0);
  // Byte masks of the kept codes in lookup order: row g (0, 1, 4, 5), row g + 8 (2, 3, 6, 7).
  const uint32_t k0 = top_bits(m & 0xfu), k1 = top_bits(m >> 4);
  const uint32_t keep_g = prmt(k0, k1, 0xdc98), keep_g8 = prmt(k0, k1, 0xfeba);
  const uint32_t l0 = lookup(b0.lo, sel, sel2) & keep_g, h0 = lookup(b0.hi, sel, sel2) & keep_g;
  const uint32_t l1 = lookup(b1.lo, sel_h, sel2_h) & keep_g8;
  const uint32_t h1 = lookup(b1.hi, sel_h, sel2_h) & keep_g8;
  a[0] = prmt(l0, h0, 0x5140);  // row g, positions 0, 1
  a[2] = prmt(l0, h0, 0x7362);  // row g, positions 4, 5
  a[1] = prmt(l1, h1, 0x5140);  // row g + 8, positions 2, 3
  a[3] = prmt(l1, h1, 0x7362);  // row g + 8, positions 6, 7
}

// fp16 values: one MMA's 4 A registers from its positions' kept halves w (in order, from halves8)
// and the mask byte m: the low and the high bytes of the 8 halves as two byte streams, each
// expanded like int8 codes (selectors `sel` from the table), pruned bytes zeroed, interleaved.
__device__ __forceinline__ void expand_f16(uint32_t (&a)[4], const uint32_t (&w)[4], uint32_t m,
                                           uint32_t sel) {
  const uint32_t lo0 = prmt(w[0], w[1], 0x6420), lo1 = prmt(w[2], w[3], 0x6420);
  const uint32_t hi0 = prmt(w[0], w[1], 0x7531), hi1 = prmt(w[2], w[3], 0x7531);
  const uint32_t keep0 = prmt(top_bits(m & 0xfu), 0, 0xba98);  // byte masks, positions 0-3
  const uint32_t keep1 = prmt(top_bits(m >> 4), 0, 0xba98);    // positions 4-7
  const uint32_t l0 = prmt(lo0, lo1, sel) & keep0, l1 = prmt(lo0, lo1, sel >> 16) & keep1;
  const uint32_t h0 = prmt(hi0, hi1, sel) & keep0, h1 = prmt(hi0, hi1, sel >> 16) & keep1;
  a[0] = prmt(l0, h0, 0x5140);  // positions 0, 1 (row g)
  a[1] = prmt(l0, h0, 0x7362);  // positions 2, 3 (row g + 8)
  a[2] = prmt(l1, h1, 0x5140);  // positions 4, 5
  a[3] = prmt(l1, h1, 0x7362);  // positions 6, 7
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
