// Integer-activation kernels (CompressedGemmOptions::int8_activations; codec_kernels.h defines
// the arithmetic): X quantised to int8 per 32 columns once per call, int8 / int4 codes times
// int8 X with AVX-512 VNNI (vpdpbusd: 64 u8 x s8 products into 16 i32 lanes per instruction).
//
// Every product runs on unsigned codes u (int8 sym: q ^ 0x80 = q + 128, int4: the nibble) and
// signed X, so a lane's exact integer sum is sum (u - z) x = dpbusd(u, x) - z * sum x:
//   dense    per call, the lane sums S of X (fixed columns); t = cvt(i) - z * S (exact: every
//            term is an integer below 2^24), then acc += t * (scale_w * scale_x) per lane.
//   nm 2:4   X is picked per row from a 128-byte window (vpermt2b) with indices built from the
//            metadata in 3 ops (vpermw/vpermd, vpmultishiftqb, vpternlogd); sum x of the picked
//            bytes is a second vpdpbusd with the zero-point bytes: t = cvt(i - dpbusd(z, x)).
//   bitmap   per 64-column word the next popcount codes expanded to their columns (vpexpandb),
//            absent columns = the zero-point, so dense's t = cvt(i) - z * S applies (RowBitmapX8).
//   vnm      threads split the row blocks; per block X's kept columns gathered (vpermt2ps
//            windows) and quantised into the thread's buffers, then the block's rows as nm 2:4
//            (VnmBlockX8; session 8: was a scalar f32 gather, X8Prepare and 7 allocations per block).
// A chunk is 128 columns (dense) or 64 values (nm); each lane covers 4-16 columns of one
// 32-column X block and one weight group, so one convert + one FMA per lane per chunk applies
// both scales. Dense 4-bit codes keep their byte order: low nibbles meet X's even columns, high
// nibbles the odd ones (X reordered per chunk once per call).
//
// Highway 1.0 has no VNNI op and builds AVX3_DL (VNNI, VBMI) only on request, hence
// HWY_WANT_AVX3_DL here and raw intrinsics under HWY_TARGET == HWY_AVX3_DL (plus avx512vnni,
// which Highway 1.0's AVX3_DL target string lacks). Other targets run a portable integer loop
// (same arithmetic, one value at a time).
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/codec_gemm_x8.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>

#include "cpu/codec_kernels.h"
#include "hwy/aligned_allocator.h"
#include "sparsa/half.h"

#ifndef SPARSA_CODEC_X8_SHARED
#define SPARSA_CODEC_X8_SHARED
namespace sparsa::cpu {

enum class X8Kind { DenseI8, DenseI4, NmI8, NmI4, BitmapI8, BitmapI4 };

constexpr bool x8_bitmap(X8Kind k) { return k == X8Kind::BitmapI8 || k == X8Kind::BitmapI4; }

// Per-call data shared by the threads: X quantised and laid out for the kernel.
struct X8Data {
  X8Kind kind = X8Kind::DenseI8;
  int32_t zsym = 128;  // the zero-point of sym codes: int8 and codebook4 128 (q ^ 0x80), int4 8
  int64_t blocks = 0;  // kp / 32 scales per row of X
  int64_t chunks = 0;  // kp / 128 chunk slots per row of X (bitmap: kp / 64, one per word)
  int64_t nv = 1;      // lane vectors per chunk (dense int8: 2)
  hwy::AlignedFreeUniquePtr<int8_t[]> xq;   // [m, kp] natural order
  hwy::AlignedFreeUniquePtr<int8_t[]> xq4;  // [m, kp] dense 4-bit: per chunk even, then odd columns
  hwy::AlignedFreeUniquePtr<float[]> sx;    // [m, blocks]
  hwy::AlignedFreeUniquePtr<float[]> lane_scale;  // [m, chunks, nv, 16]: X scale of each lane
  hwy::AlignedFreeUniquePtr<float[]> lane_sum;    // [m, chunks, nv, 16]: dense: sum of X per lane
  hwy::AlignedFreeUniquePtr<int32_t[]> lane_zsum;  // the same times -z, dense sym (z = 128 / 8)
  hwy::AlignedFreeUniquePtr<float[]> xf;  // vnm: one row block's gathered X as f32 (general path)
  // The first bitmap row whose bit count disagrees with row_ptr (its codes are not read past).
  mutable std::atomic<int64_t> bad_row{-1};
  void Bad(int64_t r) const {
    int64_t cur = bad_row.load();
    while ((cur < 0 || r < cur) && !bad_row.compare_exchange_weak(cur, r)) {
    }
  }
};

// codebook4 has no groups; blocks of 128 values stand in for them (one scale per row).
inline int64_t x8_group(const CodecKernelArgs& a) {
  return a.code == CodeKind::Codebook4 ? 128 : a.group_size;
}

// Groups per row, at most (bitmap rows hold at most cols values).
inline int64_t x8_row_groups(const CodecKernelArgs& a) {
  const int64_t values = a.format == FormatKind::Bitmap ? a.cols : a.values_per_row;
  return (values + x8_group(a) - 1) / x8_group(a);
}

inline X8Kind x8_kind(const CodecKernelArgs& a) {
  const bool int8 = a.code == CodeKind::Int8Signed || a.code == CodeKind::Int8Unsigned;
  if (a.format == FormatKind::Dense) return int8 ? X8Kind::DenseI8 : X8Kind::DenseI4;
  if (a.format == FormatKind::Bitmap) return int8 ? X8Kind::BitmapI8 : X8Kind::BitmapI4;
  return int8 ? X8Kind::NmI8 : X8Kind::NmI4;
}

// Column (relative to the chunk) of the first column covered by lane l of vector v, and how many
// columns it covers; lanes of 16 i32 (the AVX-512 layout; other targets do not use it).
inline int64_t x8_lane_column(X8Kind kind, int64_t v, int64_t l) {
  switch (kind) {
    case X8Kind::DenseI8: return 64 * v + 4 * l;
    case X8Kind::DenseI4: return 8 * l;
    case X8Kind::NmI8: return 8 * l;
    case X8Kind::NmI4: return 16 * (l % 8);
    case X8Kind::BitmapI8:
    case X8Kind::BitmapI4: return 4 * l;  // chunk = one 64-column bitmap word
  }
  return 0;
}
// Weight group offset (relative to the chunk's first group) of lane l of vector v.
inline int64_t x8_lane_group(X8Kind kind, int64_t v, int64_t l, int64_t G) {
  switch (kind) {
    case X8Kind::DenseI8: return (64 * v + 4 * l) / G;
    case X8Kind::DenseI4: return 8 * l / G;
    case X8Kind::NmI8: return 4 * l / G;
    case X8Kind::NmI4: return 8 * (l % 8) / G;
    default: return 0;  // bitmap: groups follow the values, not the lanes
  }
  return 0;
}

}  // namespace sparsa::cpu
#endif  // SPARSA_CODEC_X8_SHARED

HWY_BEFORE_NAMESPACE();
#if HWY_TARGET == HWY_AVX3_DL
#pragma GCC target("avx512vnni")
#endif
namespace sparsa::cpu::HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;


// ---- X quantisation (every target; the same numbers as the reference twin) ----------------------
// Into d.xq / d.sx, allocated by the caller for [m, a.kp].
void QuantizeInto(const CodecKernelArgs& a, X8Data& d) {
  const int64_t blocks = a.kp / kXGroup;
  d.blocks = blocks;
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t m = 0; m < a.m; ++m)
    for (int64_t b = 0; b < blocks; ++b) {
      const float* x = a.xp + m * a.kp + b * kXGroup;
      int8_t* q = d.xq.get() + m * a.kp + b * kXGroup;
      auto mx = hn::Zero(df);
      for (int64_t k = 0; k < kXGroup; k += N) mx = hn::Max(mx, hn::Abs(hn::LoadU(df, x + k)));
      const float amax = hn::GetLane(hn::MaxOfLanes(df, mx));
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      d.sx[m * blocks + b] = amax / 127.0f;
      const auto vinv = hn::Set(df, inv);
      for (int64_t k = 0; k < kXGroup; k += N) {
        // Round: ties to even, as the reference's nearbyint.
        const auto qi = hn::ConvertTo(di, hn::Round(hn::Mul(hn::LoadU(df, x + k), vinv)));
        hn::StoreU(hn::DemoteTo(d8, qi), d8, q + k);
      }
    }
}

void QuantizeX(const CodecKernelArgs& a, X8Data& d) {
  d.xq = hwy::AllocateAligned<int8_t>(static_cast<size_t>(a.m * a.kp));
  d.sx = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * (a.kp / kXGroup)));
  QuantizeInto(a, d);
}

// Row-relative group parameters: scales as f32, zero-points as i32, padded for 16-lane loads.
struct RowGroups {
  hwy::AlignedFreeUniquePtr<float[]> scale;
  hwy::AlignedFreeUniquePtr<int32_t[]> zero;
  int64_t groups = 0;
  int8_t book[16] = {};           // codebook4: the row's codebook as int8 (codebook_int8)
  HWY_ALIGN uint8_t lut[16] = {};  // the same + 128, for the byte lookup
  int64_t lut_row = -1;
  // codebook_int8 (the reference's numbers: same products, round-half-even) in vectors, into
  // book and lut; a scalar decode per entry cost ~10% of a dense codebook4 call at M = 1.
  float BookInt8(const uint16_t* f16) {
    const hn::ScalableTag<float> df;
    const hn::RebindToSigned<decltype(df)> di;
    const hn::Rebind<int8_t, decltype(df)> d8;
    const hn::Rebind<hwy::float16_t, decltype(df)> dh;
    constexpr size_t kN = hn::MaxLanes(df);
    if constexpr (kN < 16 || HWY_TARGET == HWY_SCALAR) {
      const float s = codebook_int8(f16, book);
      for (int k = 0; k < 16; ++k) lut[k] = static_cast<uint8_t>(book[k] + 128);
      return s;
    } else {
      const auto c = hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(f16)));
      const float amax = hn::GetLane(hn::MaxOfLanes(df, hn::Abs(c)));
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      const auto q = hn::ConvertTo(di, hn::Round(hn::Mul(c, hn::Set(df, inv))));
      const auto q8 = hn::DemoteTo(d8, q);
      hn::StoreU(q8, d8, book);
      hn::StoreU(hn::Xor(q8, hn::Set(d8, int8_t{-128})), d8,
                 reinterpret_cast<int8_t*>(lut));  // q ^ 0x80 = q + 128 as a byte
      return amax / 127.0f;
    }
  }
  explicit RowGroups(int64_t n) : groups(n) {
    scale = hwy::AllocateAligned<float>(static_cast<size_t>(n + 16));
    zero = hwy::AllocateAligned<int32_t>(static_cast<size_t>(n + 16));
    std::fill(scale.get(), scale.get() + n + 16, 0.0f);
    std::fill(zero.get(), zero.get() + n + 16, 0);
  }
  void Fill(const CodecKernelArgs& a, int64_t r) {
    if (a.code == CodeKind::Codebook4) {
      if (!a.per_channel && lut_row >= 0) return;  // one table for the tensor
      const float s = BookInt8(a.codebook + (a.per_channel ? 16 * r : 0));
      std::fill(scale.get(), scale.get() + groups, s);
      lut_row = r;
      return;
    }
    // Bitmap rows have their own group count (group_ptr); the others `groups` each.
    const bool bitmap = a.format == FormatKind::Bitmap;
    const int64_t g0 = bitmap ? a.group_ptr[r] : r * groups;
    const int64_t count = bitmap ? a.group_ptr[r + 1] - g0 : groups;
    // One vector convert per L scales (a scalar f16 decode per group cost ~10% at M = 1).
    const hn::ScalableTag<float> df;
    const hn::Rebind<hwy::float16_t, decltype(df)> dh;
    const auto* src = reinterpret_cast<const hwy::float16_t*>(a.scales + g0);
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    int64_t g = 0;
    for (; g + N <= count; g += N) hn::Store(hn::PromoteTo(df, hn::LoadU(dh, src + g)), df, scale.get() + g);
    if (g < count) {  // the rest through a zero-padded copy: short rows (a vnm 64:2:8 row of
      // 4096 columns has 8 groups) spent ~10% of their time in scalar f16 decodes here
      HWY_ALIGN hwy::float16_t rest[hn::MaxLanes(df)] = {};
      std::memcpy(rest, src + g, static_cast<size_t>(count - g) * sizeof(uint16_t));
      hn::Store(hn::PromoteTo(df, hn::Load(dh, rest)), df, scale.get() + g);
    }
    if (a.zeros)
      for (int64_t g = 0; g < count; ++g) zero[g] = a.zeros[g0 + g];
  }
};

HWY_INLINE int CodeMinusZero(const CodecKernelArgs& a, const RowGroups& rg, int64_t i, int64_t g) {
  switch (a.code) {
    case CodeKind::Int8Signed: return static_cast<int8_t>(a.codes[i]);
    case CodeKind::Int8Unsigned: return int{a.codes[i]} - rg.zero[g];
    case CodeKind::Codebook4: return rg.book[(a.codes[i >> 1] >> ((i & 1) * 4)) & 0xf];
    default: {
      const int u = (a.codes[i >> 1] >> ((i & 1) * 4)) & 0xf;
      return u - (a.zeros ? rg.zero[g] : a.zero_point);
    }
  }
}

// Values [j0, V) of row r against row t of X, one at a time: per 32-column block the exact
// integer sum, then float(I) * (scale_w * scale_x). The portable path and the vector tails.
float ScalarPart(const CodecKernelArgs& a, const X8Data& d, const RowGroups& rg, int64_t r,
                 int64_t t, int64_t j0) {
  const int64_t V = a.values_per_row, G = x8_group(a);
  const uint32_t* meta = a.nm_meta ? a.nm_meta + r * a.nm_words_per_row : nullptr;
  const int8_t* xq = d.xq.get() + t * a.kp;
  float acc = 0;
  int64_t block = -1, group = 0;
  int32_t sum = 0;
  for (int64_t j = j0; j < V; ++j) {
    const int64_t col = meta ? 4 * (j / 2) + ((meta[j / 16] >> (2 * (j % 16))) & 3) : j;
    if (col / kXGroup != block) {
      if (block >= 0) acc += static_cast<float>(sum) * (rg.scale[group] * d.sx[t * d.blocks + block]);
      block = col / kXGroup;
      group = j / G;
      sum = 0;
    }
    sum += CodeMinusZero(a, rg, r * V + j, j / G) * xq[col];
  }
  if (block >= 0) acc += static_cast<float>(sum) * (rg.scale[group] * d.sx[t * d.blocks + block]);
  return acc;
}

// A bitmap row against row t of X, one value at a time: an exact integer sum per run of values
// in one 32-column block and one weight group (bitmap groups count values, so a block can hold
// the end of one group and the start of the next).
float ScalarBitmap(const CodecKernelArgs& a, const X8Data& d, const RowGroups& rg, int64_t r,
                   int64_t t) {
  const int64_t G = x8_group(a), i0 = a.row_ptr[r];
  const uint64_t* words = a.bitmap + r * a.bitmap_words_per_row;
  const int8_t* xq = d.xq.get() + t * a.kp;
  float acc = 0;
  int64_t block = -1, group = 0, j = 0;
  int32_t sum = 0;
  for (int64_t w = 0; w < a.bitmap_words_per_row; ++w)
    for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1, ++j) {
      const int64_t col = 64 * w + std::countr_zero(bits);
      if (col / kXGroup != block || j / G != group) {
        if (block >= 0) acc += static_cast<float>(sum) * (rg.scale[group] * d.sx[t * d.blocks + block]);
        block = col / kXGroup;
        group = j / G;
        sum = 0;
      }
      sum += CodeMinusZero(a, rg, i0 + j, j / G) * xq[col];
    }
  if (block >= 0) acc += static_cast<float>(sum) * (rg.scale[group] * d.sx[t * d.blocks + block]);
  return acc;
}

// ---- vnm: one row block's X, gathered and quantised ----------------------------------------------
#if HWY_TARGET == HWY_AVX3_DL
// M <= 32: X's kept columns of row block rb gathered by vpermt2ps (per 16 gathered columns = 4
// column blocks: the kept offsets widened, plus each block's start inside a 32-float window of
// X; one window for M <= 8, two for M <= 16, four up to 32) and quantised per 32 gathered columns
// in registers, the same products and rounding as QuantizeInto, so no f32 copy is written.
// Session 7 gathered one float at a time into an f32 buffer, then quantised that.
bool VnmGatherQuantize(const CodecKernelArgs& a, int64_t rb, X8Data& d) {
  const int64_t M = a.vnm_m;
  if (M > 32) return false;
  const int64_t per = M <= 8 ? 4 : M <= 16 ? 2 : 1;  // column blocks per 32-float window
  const int parts = static_cast<int>(4 / per);
  const int64_t cbn = a.vnm_col_blocks, kp = vnm_gathered_kp(a), blocks = kp / kXGroup;
  const uint8_t* kept = a.vnm_columns + rb * cbn * 4;
  HWY_ALIGN int32_t off[16];
  for (int p = 0; p < 16; ++p) off[p] = static_cast<int32_t>(p / 4 % per * M);
  const __m512i lane_off = _mm512_load_si512(off);
  const __mmask16 part = static_cast<__mmask16>((1u << (4 * per)) - 1);  // lanes of window 0
  for (int64_t t = 0; t < a.m; ++t) {
    const float* x = a.xp + t * a.kp;
    int8_t* q = d.xq.get() + t * kp;
    float* sx = d.sx.get() + t * blocks;
    for (int64_t b = 0; b < blocks; ++b) {
      __m512 v[2];
      for (int h = 0; h < 2; ++h) {
        const int64_t cb0 = 8 * b + 4 * h;  // first column block of these 16 gathered columns
        if (cb0 + 4 <= cbn && (cb0 + 4 - per) * M + 32 <= a.kp) {  // kept bytes and windows inside
          const __m512i idx = _mm512_add_epi32(
              _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kept + 4 * cb0))),
              lane_off);
          const float* w = x + cb0 * M;
          v[h] = _mm512_permutex2var_ps(_mm512_loadu_ps(w), idx, _mm512_loadu_ps(w + 16));
          for (int j = 1; j < parts; ++j) {
            w = x + (cb0 + j * per) * M;
            v[h] = _mm512_mask_mov_ps(
                v[h], static_cast<__mmask16>(part << (4 * per * j)),
                _mm512_permutex2var_ps(_mm512_loadu_ps(w), idx, _mm512_loadu_ps(w + 16)));
          }
        } else {  // the row's end: as vnm_gather_x
          HWY_ALIGN float tmp[16];
          for (int p = 0; p < 16; ++p) {
            const int64_t cb = cb0 + p / 4;
            const int64_t col = cb < cbn ? cb * M + kept[4 * cb + p % 4] : a.cols;
            tmp[p] = col < a.cols ? x[col] : 0.0f;
          }
          v[h] = _mm512_load_ps(tmp);
        }
      }
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      sx[b] = amax / 127.0f;
      const __m512 vinv = _mm512_set1_ps(inv);
      for (int h = 0; h < 2; ++h) {  // round half to even, as QuantizeInto and the twin
        const __m512i qi = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v[h], vinv),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + kXGroup * b + 16 * h), _mm512_cvtsepi32_epi8(qi));
      }
    }
  }
  return true;
}

// nm lane scales (the only lane array the nm kernel reads): lane l of chunk c takes the scale of
// X block 4c + column(l) / 32.
void NmLaneScales(const CodecKernelArgs& b, X8Data& d) {
  HWY_ALIGN int32_t idx[16];
  for (int l = 0; l < 16; ++l) idx[l] = static_cast<int32_t>(x8_lane_column(d.kind, 0, l) / kXGroup);
  const __m512i vidx = _mm512_load_si512(idx);
  for (int64_t t = 0; t < b.m; ++t)
    for (int64_t c = 0; c < d.chunks; ++c)
      _mm512_store_ps(d.lane_scale.get() + (t * d.chunks + c) * 16,
                      _mm512_permutexvar_ps(vidx, _mm512_maskz_loadu_ps(0xF, d.sx.get() + t * d.blocks + 4 * c)));
}
#endif  // HWY_TARGET == HWY_AVX3_DL

// vnm: one thread's buffers for a row block's X, allocated once for all its blocks.
void VnmAlloc(const CodecKernelArgs& a, X8Data& d) {
  const int64_t kp = vnm_gathered_kp(a);
  d.kind = x8_kind(a);  // NmI8 / NmI4
  d.zsym = a.code == CodeKind::Int4 ? 8 : 128;
  d.blocks = kp / kXGroup;
  d.xq = hwy::AllocateAligned<int8_t>(static_cast<size_t>(a.m * kp));
  d.sx = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * d.blocks + 16));
  d.xf = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * kp));
  d.chunks = kp / 128;
  d.nv = 1;
  const size_t lanes = static_cast<size_t>(a.m * d.chunks * 16 + 16);
  d.lane_scale = hwy::AllocateAligned<float>(lanes);
  d.lane_sum = hwy::AllocateAligned<float>(lanes);  // not read by nm; allocated for the pointers
  d.lane_zsum = hwy::AllocateAligned<int32_t>(lanes);
}

// vnm row block rb: its X gathered and quantised into d, its lane scales; its 2:4 arguments.
CodecKernelArgs VnmBlockX8(const CodecKernelArgs& a, int64_t rb, X8Data& d) {
  CodecKernelArgs b = vnm_block_view(a, rb);
#if HWY_TARGET == HWY_AVX3_DL
  const bool done = VnmGatherQuantize(a, rb, d);
#else
  const bool done = false;
#endif
  if (!done) {
    vnm_gather_x(a, rb, d.xf.get());
    b.x = b.xp = d.xf.get();
    QuantizeInto(b, d);
  }
#if HWY_TARGET == HWY_AVX3_DL
  NmLaneScales(b, d);
#endif
  return b;
}

#if HWY_TARGET == HWY_AVX3_DL
// ---- AVX-512 VNNI / VBMI ------------------------------------------------------------------------
struct Lanes16 {
  __m512i gidx[2];  // lane -> weight group offset, per vector of the chunk
  __m512i nm_perm, nm_ctrl, nm_base, nm4_shift, zb_spread;
  __m512i bm_spread, bm_ctrl[2];  // bitmap 4-bit: nibbles (from an even / odd one) to bytes
};

Lanes16 MakeLanes(X8Kind kind, int64_t G) {
  Lanes16 c;
  HWY_ALIGN int32_t g[2][16];
  for (int64_t v = 0; v < 2; ++v)
    for (int64_t l = 0; l < 16; ++l) g[v][l] = static_cast<int32_t>(x8_lane_group(kind, v, l, G));
  c.gidx[0] = _mm512_load_si512(g[0]);
  c.gidx[1] = _mm512_load_si512(g[1]);
  HWY_ALIGN uint8_t ctrl[64], base[64];
  HWY_ALIGN int16_t perm16[32];
  HWY_ALIGN int32_t perm32[16];
  HWY_ALIGN int64_t shift[8];
  const bool four = kind == X8Kind::NmI4;
  for (int p = 0; p < 64; ++p) {
    const int j = p / 8, k = p % 8;
    ctrl[p] = static_cast<uint8_t>(four ? 4 * k + (j >= 4 ? 2 : 0) : 2 * k);
    base[p] = static_cast<uint8_t>(four ? 4 * (p % 32) : 4 * (p / 2));
  }
  for (int w = 0; w < 32; ++w) perm16[w] = static_cast<int16_t>(w / 4);  // word 4j <- word j
  for (int w = 0; w < 16; ++w) perm32[w] = (w / 2) % 4;                 // qword j <- dword j % 4
  for (int q = 0; q < 8; ++q) shift[q] = q >= 4 ? 4 : 0;
  c.nm_perm = four ? _mm512_load_si512(perm32) : _mm512_load_si512(perm16);
  c.nm_ctrl = _mm512_load_si512(ctrl);
  c.nm_base = _mm512_load_si512(base);
  c.nm4_shift = _mm512_load_si512(shift);
  HWY_ALIGN uint8_t spread[64];
  for (int p = 0; p < 64; ++p) spread[p] = static_cast<uint8_t>(p / 4 * 4);  // byte 0 of each lane
  c.zb_spread = _mm512_load_si512(spread);
  // Bitmap 4-bit: qword q gets code bytes 4q .. 4q + 7 (vpermb), then byte i of the qword takes
  // the 8 bits at 4 (i + odd) (vpmultishiftqb): nibble 8q + i + odd in its low half.
  HWY_ALIGN uint8_t bspread[64], bctrl[2][64];
  for (int p = 0; p < 64; ++p) {
    bspread[p] = static_cast<uint8_t>(4 * (p / 8) + p % 8);
    for (int o = 0; o < 2; ++o) bctrl[o][p] = static_cast<uint8_t>(4 * (p % 8 + o));
  }
  c.bm_spread = _mm512_load_si512(bspread);
  c.bm_ctrl[0] = _mm512_load_si512(bctrl[0]);
  c.bm_ctrl[1] = _mm512_load_si512(bctrl[1]);
  return c;
}

// Per call: the lanes' X scales and (dense) X sums, and dense 4-bit X reordered per chunk.
void PrepareLanes(const CodecKernelArgs& a, X8Data& d) {
  const bool bitmap = x8_bitmap(d.kind);
  const int64_t width = bitmap ? 64 : 128;  // columns per chunk
  d.chunks = a.kp / width;
  d.nv = d.kind == X8Kind::DenseI8 ? 2 : 1;
  const int64_t per_row = d.chunks * d.nv * 16;
  d.lane_scale = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * per_row + 16));
  d.lane_sum = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * per_row + 16));
  d.lane_zsum = hwy::AllocateAligned<int32_t>(static_cast<size_t>(a.m * per_row + 16));
  const int32_t zsym = d.zsym;
  const int64_t span = d.kind == X8Kind::DenseI8 || bitmap ? 4 : d.kind == X8Kind::NmI4 ? 16 : 8;
  for (int64_t m = 0; m < a.m; ++m)
    for (int64_t c = 0; c < d.chunks; ++c)
      for (int64_t v = 0; v < d.nv; ++v)
        for (int64_t l = 0; l < 16; ++l) {
          const int64_t col = width * c + x8_lane_column(d.kind, v, l);
          const int64_t i = ((m * d.chunks + c) * d.nv + v) * 16 + l;
          d.lane_scale[i] = d.sx[m * d.blocks + col / kXGroup];
          int32_t s = 0;
          for (int64_t k = 0; k < span; ++k) s += d.xq[m * a.kp + col + k];
          d.lane_sum[i] = static_cast<float>(s);
          d.lane_zsum[i] = -zsym * s;
        }
  if (d.kind == X8Kind::DenseI4) {
    d.xq4 = hwy::AllocateAligned<int8_t>(static_cast<size_t>(a.m * a.kp));
    for (int64_t m = 0; m < a.m; ++m) {
      const int8_t* src = d.xq.get() + m * a.kp;
      int8_t* dst = d.xq4.get() + m * a.kp;
      for (int64_t c = 0; c < d.chunks; ++c)
        for (int64_t b = 0; b < 64; ++b) {
          dst[128 * c + b] = src[128 * c + 2 * b];
          dst[128 * c + 64 + b] = src[128 * c + 2 * b + 1];
        }
    }
  }
}

// One row of W against MT rows of X (t0..). Full chunks in vectors, the rest by ScalarPart.
// kBcast: every vector of a chunk lies in one weight group (dense int8 G >= 64, dense int4
// G = 128, nm G >= 64), so its scale (and zero-point) is a broadcast, not a permute.
template <X8Kind kKind, bool kAsym, bool kBcast, bool kBook, int MT>
HWY_INLINE void RowX8(const CodecKernelArgs& a, const X8Data& d, const Lanes16& c,
                      const RowGroups& rg, int64_t r, int64_t t0) {
  constexpr bool kDense = kKind == X8Kind::DenseI8 || kKind == X8Kind::DenseI4;
  constexpr bool kInt8 = kKind == X8Kind::DenseI8 || kKind == X8Kind::NmI8;
  constexpr int64_t NV = kKind == X8Kind::DenseI8 ? 2 : 1;
  const int64_t V = a.values_per_row, G = x8_group(a);
  const int64_t p0 = r * V;  // first value of the row
  // Full chunks; dense 4-bit rows starting mid-byte go whole through ScalarPart.
  int64_t full = kDense ? V / 128 : V / 64;
  if (kKind == X8Kind::DenseI4 && (p0 & 1)) full = 0;
  const int64_t values_per_chunk = kDense ? 128 : 64;
  const int64_t chunk_groups = kDense ? 128 / G : std::max<int64_t>(1, 64 / G);
  const int gshift = hwy::Num0BitsBelowLS1Bit_Nonzero64(static_cast<uint64_t>(G));  // G = 2^gshift
  const uint8_t* codes = kInt8 ? a.codes + p0 : a.codes + (p0 >> 1);
  const uint32_t* meta = kDense ? nullptr : a.nm_meta + r * a.nm_words_per_row;
  const int8_t* xbase = (kKind == X8Kind::DenseI4 ? d.xq4.get() : d.xq.get());
  const __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const __m512i three = _mm512_set1_epi8(3);
  const int zsym = kInt8 || kBook ? 128 : 8;  // int8 sym runs on q ^ 0x80 = q + 128
  // codebook4: nibble -> (int8 codebook entry + 128) by vpshufb, the table in every 128-bit lane.
  const __m512i lut = kBook ? _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(rg.lut)))
                            : _mm512_setzero_si512();
  const __m512i zb_sym = _mm512_set1_epi8(static_cast<char>(zsym));

  // Per row of X: its bytes, lane scales and (dense) lane sums, advanced per chunk.
  const int8_t* xr[MT];
  const float* lscale[MT];
  const float* lsum[MT];
  const int32_t* lzs[MT];
  for (int t = 0; t < MT; ++t) {
    xr[t] = xbase + (t0 + t) * a.kp;
    lscale[t] = d.lane_scale.get() + (t0 + t) * d.chunks * NV * 16;
    lsum[t] = d.lane_sum.get() + (t0 + t) * d.chunks * NV * 16;
    lzs[t] = d.lane_zsum.get() + (t0 + t) * d.chunks * NV * 16;
  }
  const float* sw = rg.scale.get();
  const int32_t* zr = rg.zero.get();

  // Chunk ch into acc (dense int8: vector 1 into acc1).
  auto chunk = [&](int64_t ch, __m512(&acc)[MT], __m512(&acc1)[MT]) HWY_ATTR {
    // Group of chunk ch: dense 128 columns from group 128ch/G; nm 64 values from 64ch/G.
    const int64_t gbase = kDense ? ch * chunk_groups : (64 * ch) >> gshift;
    __m512 swl[NV];
    __m512i zl[NV];
    for (int v = 0; v < NV; ++v) {
      if constexpr (kBcast) {
        const int64_t g = gbase + (kKind == X8Kind::DenseI8 && v == 1 && G == 64 ? 1 : 0);
        swl[v] = _mm512_set1_ps(sw[g]);
        if constexpr (kAsym) zl[v] = _mm512_set1_epi32(zr[g]);
      } else {
        swl[v] = _mm512_permutexvar_ps(c.gidx[v], _mm512_loadu_ps(sw + gbase));
        if constexpr (kAsym)
          zl[v] = _mm512_permutexvar_epi32(c.gidx[v], _mm512_loadu_si512(zr + gbase));
      }
    }
    // The chunk's codes as unsigned bytes, lane order of the kind.
    __m512i u[2];
    if constexpr (kKind == X8Kind::DenseI8) {
      const uint8_t* p = codes + 128 * ch;
      u[0] = _mm512_loadu_si512(p);
      u[1] = _mm512_loadu_si512(p + 64);
      if constexpr (!kAsym) {
        u[0] = _mm512_xor_si512(u[0], sign);
        u[1] = _mm512_xor_si512(u[1], sign);
      }
    } else if constexpr (kKind == X8Kind::DenseI4) {
      const uint8_t* p = codes + 64 * ch;
      const __m512i b = _mm512_loadu_si512(p);
      u[0] = _mm512_and_si512(b, low4);
      u[1] = _mm512_and_si512(_mm512_srli_epi16(b, 4), low4);
      if constexpr (kBook) {
        u[0] = _mm512_shuffle_epi8(lut, u[0]);
        u[1] = _mm512_shuffle_epi8(lut, u[1]);
      }
    } else if constexpr (kKind == X8Kind::NmI8) {
      const uint8_t* p = codes + 64 * ch;
      u[0] = _mm512_loadu_si512(p);
      if constexpr (!kAsym) u[0] = _mm512_xor_si512(u[0], sign);
    } else {
      const uint8_t* p = codes + 32 * ch;
      const __m512i b =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      u[0] = _mm512_and_si512(_mm512_srlv_epi64(b, c.nm4_shift), low4);
      if constexpr (kBook) u[0] = _mm512_shuffle_epi8(lut, u[0]);
    }
    const int64_t li = ch * NV * 16;
    if constexpr (kDense) {
      for (int t = 0; t < MT; ++t) {
        const int8_t* x = xr[t] + 128 * ch;
        // sym: the accumulators start at -z * S (per-call integers), so no correction after.
        __m512i iv[NV];
        for (int v = 0; v < NV; ++v)
          iv[v] = kAsym ? _mm512_setzero_si512() : _mm512_load_si512(lzs[t] + li + 16 * v);
        iv[0] = _mm512_dpbusd_epi32(iv[0], u[0], _mm512_load_si512(x));
        iv[NV - 1] = _mm512_dpbusd_epi32(iv[NV - 1], u[1], _mm512_load_si512(x + 64));
        for (int v = 0; v < NV; ++v) {
          __m512 tv = _mm512_cvtepi32_ps(iv[v]);
          if constexpr (kAsym)
            tv = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(zl[v]),
                                  _mm512_load_ps(lsum[t] + li + 16 * v), tv);
          const __m512 s = _mm512_mul_ps(swl[v], _mm512_load_ps(lscale[t] + li + 16 * v));
          if (v == 0) acc[t] = _mm512_fmadd_ps(tv, s, acc[t]);
          else acc1[t] = _mm512_fmadd_ps(tv, s, acc1[t]);
        }
      }
    } else {
      // X indices from the chunk's 128 metadata bits (4 words).
      const __m512i m128 = _mm512_maskz_loadu_epi32(0xF, meta + 4 * ch);
      const __m512i src = kKind == X8Kind::NmI8 ? _mm512_permutexvar_epi16(c.nm_perm, m128)
                                                : _mm512_permutexvar_epi32(c.nm_perm, m128);
      const __m512i off = _mm512_multishift_epi64_epi8(c.nm_ctrl, src);
      const __m512i idx = _mm512_ternarylogic_epi32(off, three, c.nm_base, 0xEA);  // (o & 3) | b
      __m512i zb = zb_sym;
      if constexpr (kAsym)
        zb = kBcast ? _mm512_set1_epi8(static_cast<char>(zr[gbase]))
                    : _mm512_shuffle_epi8(zl[0], c.zb_spread);
      for (int t = 0; t < MT; ++t) {
        const int8_t* x = xr[t] + 128 * ch;
        const __m512i xs =
            _mm512_permutex2var_epi8(_mm512_load_si512(x), idx, _mm512_load_si512(x + 64));
        const __m512i i0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[0], xs);
        const __m512i corr = _mm512_dpbusd_epi32(_mm512_setzero_si512(), zb, xs);
        const __m512 tv = _mm512_cvtepi32_ps(_mm512_sub_epi32(i0, corr));
        const __m512 s = _mm512_mul_ps(swl[0], _mm512_load_ps(lscale[t] + li));
        acc[t] = _mm512_fmadd_ps(tv, s, acc[t]);
      }
    }
  };
  __m512 acc0[MT], acc1[MT];
  for (int t = 0; t < MT; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  int64_t ch = 0;
  if constexpr (NV == 2) {
    for (; ch < full; ++ch) chunk(ch, acc0, acc1);
  } else {
    for (; ch + 2 <= full; ch += 2) {  // two FMA chains
      chunk(ch, acc0, acc0);
      chunk(ch + 1, acc1, acc1);
    }
    if (ch < full) chunk(ch, acc0, acc0);
  }
  for (int t = 0; t < MT; ++t) {
    const float rest =
        full * values_per_chunk < V ? ScalarPart(a, d, rg, r, t0 + t, full * values_per_chunk) : 0.0f;
    a.y[(t0 + t) * a.ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t])) + rest;
  }
}

// Bitmap: the codes of a word's values (popcount `pc` from value v, global index) expanded to
// the word's columns `bits`, the other columns = the zero-point (zv).
template <X8Kind kKind, bool kAsym, bool kBook>
HWY_INLINE __m512i BitmapCodes(const uint8_t* codes, int64_t v, uint64_t bits, int64_t pc,
                               __m512i zv, __m512i lut, const Lanes16& c) {
  if constexpr (kKind == X8Kind::BitmapI8) {
    if constexpr (kAsym) return _mm512_mask_expandloadu_epi8(zv, bits, codes + v);
    // sym: absent bytes 0, then q ^ 0x80: present q + 128, absent 128 = z
    return _mm512_xor_si512(_mm512_maskz_expandloadu_epi8(bits, codes + v),
                            _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    const int64_t odd = v & 1;
    const __m512i b = _mm512_maskz_loadu_epi8(
        _bzhi_u64(~uint64_t{0}, static_cast<unsigned>((odd + pc + 1) >> 1)), codes + (v >> 1));
    __m512i nib = _mm512_and_si512(
        _mm512_multishift_epi64_epi8(c.bm_ctrl[odd], _mm512_permutexvar_epi8(c.bm_spread, b)),
        _mm512_set1_epi8(0x0f));
    if constexpr (kBook) nib = _mm512_shuffle_epi8(lut, nib);
    return _mm512_mask_expand_epi8(zv, bits, nib);
  }
}

// One word's 16 lanes against MT rows of X (strides xs bytes, ls lane entries): the exact lane
// sums t = dpbusd(u, x) - z S, times X's lane scales, into the group accumulators.
template <bool kAsym, int MT>
HWY_INLINE void BitmapDot(__m512i u, const int8_t* x, int64_t xs, const int32_t* lz,
                          const float* lsum, const float* lsc, int64_t ls, __m512 zf,
                          __m512 (&accg)[MT]) {
  for (int t = 0; t < MT; ++t) {
    __m512i iv = kAsym ? _mm512_setzero_si512() : _mm512_load_si512(lz + t * ls);
    iv = _mm512_dpbusd_epi32(iv, u, _mm512_load_si512(x + t * xs));
    __m512 tv = _mm512_cvtepi32_ps(iv);
    if constexpr (kAsym) tv = _mm512_fnmadd_ps(zf, _mm512_load_ps(lsum + t * ls), tv);
    accg[t] = _mm512_fmadd_ps(tv, _mm512_load_ps(lsc + t * ls), accg[t]);
  }
}

// One bitmap row against MT rows of X (t0..). Per 64-column word the row's next popcount codes
// are expanded to their columns (vpexpandb), the absent columns filled with the zero-point, so
// sum (u - z) x over the word's 64 columns is dpbusd(u, x) - z * S with S the per-call lane sums
// of X (as dense): no gather of X, no per-row correction. A word is one weight group except
// where a group ends inside it: there it is split at the group's last value (pdep) and each part
// runs with its own zero-point. Per group, accg sums t * scale_x; the weight scale multiplies
// it once when the group ends.
template <X8Kind kKind, bool kAsym, bool kBook, int MT>
HWY_INLINE void RowBitmapX8(const CodecKernelArgs& a, const X8Data& d, const Lanes16& c,
                            const RowGroups& rg, int64_t r, int64_t t0) {
  const int64_t W = a.bitmap_words_per_row;
  const uint64_t* words = a.bitmap + r * W;
  const int64_t vend = a.row_ptr[r + 1];
  // codebook4: one scale per row, so one group (no splits).
  const int64_t G = kBook ? std::max<int64_t>(vend - a.row_ptr[r], 1) : x8_group(a);
  const int zsym = kKind == X8Kind::BitmapI8 || kBook ? 128 : 8;
  const __m512i lut = kBook ? _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(rg.lut)))
                            : _mm512_setzero_si512();
  const int64_t xs = a.kp, ls = d.chunks * 16;
  const int8_t* x = d.xq.get() + t0 * xs;
  const float* lsc = d.lane_scale.get() + t0 * ls;
  const float* lsum = d.lane_sum.get() + t0 * ls;
  const int32_t* lz = d.lane_zsum.get() + t0 * ls;
  const float* sw = rg.scale.get();
  const int32_t* zr = rg.zero.get();
  __m512 acc[MT], accg[MT];
  for (int t = 0; t < MT; ++t) acc[t] = accg[t] = _mm512_setzero_ps();
  int64_t v = a.row_ptr[r], g = 0;           // next value (global index), its group in the row
  int64_t gend = std::min(v + G, vend);      // group g ends before value gend
  __m512i zv = _mm512_set1_epi8(static_cast<char>(kAsym ? zr[0] : zsym));
  __m512 zf = _mm512_set1_ps(static_cast<float>(kAsym ? zr[0] : zsym));
  for (int64_t w = 0; w < W; ++w, x += 64, lsc += 16, lsum += 16, lz += 16) {
    uint64_t bits = words[w];
    if (bits == 0) continue;
    int64_t pc = std::popcount(bits);
    if (HWY_LIKELY(v + pc < gend)) {  // inside group g
      BitmapDot<kAsym, MT>(BitmapCodes<kKind, kAsym, kBook>(a.codes, v, bits, pc, zv, lut, c), x,
                           xs, lz, lsum, lsc, ls, zf, accg);
      v += pc;
      continue;
    }
    const int64_t gend2 = std::min(gend + G, vend);
    if (HWY_LIKELY(v + pc < gend2)) {
      // Group g ends here and g + 1 goes on past the word: straight-line (the branches of the
      // general loop below mispredicted often): the word's codes once, the values of g and of
      // g + 1 picked from them by mask, the zero-point elsewhere.
      const unsigned last =
          static_cast<unsigned>(_tzcnt_u64(_pdep_u64(uint64_t{1} << (gend - v - 1), bits)));
      const uint64_t sub = _bzhi_u64(bits, last + 1);
      const __m512i all = BitmapCodes<kKind, kAsym, kBook>(a.codes, v, bits, pc, zv, lut, c);
      BitmapDot<kAsym, MT>(_mm512_mask_mov_epi8(zv, sub, all), x, xs, lz, lsum, lsc, ls, zf, accg);
      const __m512 s = _mm512_set1_ps(sw[g]);
      for (int t = 0; t < MT; ++t) {
        acc[t] = _mm512_fmadd_ps(accg[t], s, acc[t]);
        accg[t] = _mm512_setzero_ps();
      }
      ++g;
      gend = gend2;
      if constexpr (kAsym) {
        zv = _mm512_set1_epi8(static_cast<char>(zr[g]));
        zf = _mm512_set1_ps(static_cast<float>(zr[g]));
      }
      BitmapDot<kAsym, MT>(_mm512_mask_mov_epi8(zv, bits ^ sub, all), x, xs, lz, lsum, lsc, ls, zf, accg);
      v += pc;
      continue;
    }
    while (bits) {  // general: group g (and maybe g + 1) ends in this word
      const int64_t need = gend - v;
      if (need == 0) {  // more bits than row_ptr gives the row: stop before reading past its codes
        d.Bad(r);
        return;
      }
      uint64_t sub = bits;
      int64_t take = pc;
      if (take >= need) {
        const unsigned last = static_cast<unsigned>(_tzcnt_u64(_pdep_u64(uint64_t{1} << (need - 1), bits)));
        sub = _bzhi_u64(bits, last + 1);
        take = need;
      }
      BitmapDot<kAsym, MT>(BitmapCodes<kKind, kAsym, kBook>(a.codes, v, sub, take, zv, lut, c), x,
                           xs, lz, lsum, lsc, ls, zf, accg);
      v += take;
      pc -= take;
      bits ^= sub;
      if (v == gend) {
        const __m512 s = _mm512_set1_ps(sw[g]);
        for (int t = 0; t < MT; ++t) {
          acc[t] = _mm512_fmadd_ps(accg[t], s, acc[t]);
          accg[t] = _mm512_setzero_ps();
        }
        ++g;
        gend = std::min(gend + G, vend);
        if constexpr (kAsym) {
          zv = _mm512_set1_epi8(static_cast<char>(zr[g]));
          zf = _mm512_set1_ps(static_cast<float>(zr[g]));
        }
      }
    }
  }
  if (v != vend) d.Bad(r);  // fewer bits than values
  for (int t = 0; t < MT; ++t) a.y[(t0 + t) * a.ldy + r] = _mm512_reduce_add_ps(acc[t]);
}

// Rows [r0, r1) against rows t0.. t0 + MT of X; `fill`: the rows' group parameters first. One
// call for all of a thread's rows when M <= 4 keeps the constants in registers (v2: the call
// and set-up per row cost ~40 cycles, 10-15% of a 4096-column 2:4 row).
template <X8Kind kKind, bool kAsym, bool kBcast, bool kBook, int MT>
HWY_NOINLINE void TileX8(const CodecKernelArgs& a, const X8Data& d, const Lanes16& c,
                         RowGroups& rg, int64_t r0, int64_t r1, int64_t t0, bool fill) {
  for (int64_t r = r0; r < r1; ++r) {
    if (fill) rg.Fill(a, r);
    if constexpr (x8_bitmap(kKind)) RowBitmapX8<kKind, kAsym, kBook, MT>(a, d, c, rg, r, t0);
    else RowX8<kKind, kAsym, kBcast, kBook, MT>(a, d, c, rg, r, t0);
  }
}

template <X8Kind kKind, bool kAsym, bool kBcast, bool kBook>
void TilesX8(const CodecKernelArgs& a, const X8Data& d, const Lanes16& c, RowGroups& rg,
             int64_t n0, int64_t n1) {
  if (a.m == 1) return TileX8<kKind, kAsym, kBcast, kBook, 1>(a, d, c, rg, n0, n1, 0, true);
  if (a.m == 2) return TileX8<kKind, kAsym, kBcast, kBook, 2>(a, d, c, rg, n0, n1, 0, true);
  if (a.m == 4) return TileX8<kKind, kAsym, kBcast, kBook, 4>(a, d, c, rg, n0, n1, 0, true);
  for (int64_t r = n0; r < n1; ++r) {
    for (int64_t t = 0; t < a.m;) {
      const bool fill = t == 0;
      if (a.m - t >= 4) {
        TileX8<kKind, kAsym, kBcast, kBook, 4>(a, d, c, rg, r, r + 1, t, fill);
        t += 4;
      } else if (a.m - t >= 2) {
        TileX8<kKind, kAsym, kBcast, kBook, 2>(a, d, c, rg, r, r + 1, t, fill);
        t += 2;
      } else {
        TileX8<kKind, kAsym, kBcast, kBook, 1>(a, d, c, rg, r, r + 1, t, fill);
        t += 1;
      }
    }
  }
}

// Rows [n0, n1); vnm: row blocks [n0, n1), each gathered into d (the calling thread's own).
template <X8Kind kKind, bool kAsym, bool kBcast, bool kBook = false>
void RowsX8(const CodecKernelArgs& a, X8Data& d, int64_t n0, int64_t n1) {
  const Lanes16 c = MakeLanes(kKind, x8_group(a));
  RowGroups rg(x8_row_groups(a));
  if (a.format != FormatKind::VNM) return TilesX8<kKind, kAsym, kBcast, kBook>(a, d, c, rg, n0, n1);
  for (int64_t rb = n0; rb < n1; ++rb) {
    const CodecKernelArgs b = VnmBlockX8(a, rb, d);
    TilesX8<kKind, kAsym, kBcast, kBook>(b, d, c, rg, 0, b.rows);
  }
}
#endif  // HWY_TARGET == HWY_AVX3_DL

}  // namespace

// Per call, before the threads split the rows.
void X8Prepare(const CodecKernelArgs& a, X8Data& d) {
  d.kind = x8_kind(a);
  d.zsym = a.code == CodeKind::Int4 ? 8 : 128;
  QuantizeX(a, d);
#if HWY_TARGET == HWY_AVX3_DL
  PrepareLanes(a, d);
#endif
}

// Rows [n0, n1) of Y (d shared by the threads, read only); vnm: row blocks [n0, n1), d the
// calling thread's own (VnmAlloc), written per block.
void X8Rows(const CodecKernelArgs& a, X8Data& d, int64_t n0, int64_t n1) {
#if HWY_TARGET == HWY_AVX3_DL
  const bool asym = a.zeros != nullptr;
  const int64_t G = a.group_size;
  if (a.code == CodeKind::Codebook4) {  // sym, one scale per row: broadcast
    if (d.kind == X8Kind::DenseI4) return RowsX8<X8Kind::DenseI4, false, true, true>(a, d, n0, n1);
    if (d.kind == X8Kind::BitmapI4) return RowsX8<X8Kind::BitmapI4, false, false, true>(a, d, n0, n1);
    return RowsX8<X8Kind::NmI4, false, true, true>(a, d, n0, n1);
  }
  // Instantiates RowsX8<K, asym, bcast> for the runtime flags.
  auto run = [&]<X8Kind K>(bool bcast) {
    if (asym) bcast ? RowsX8<K, true, true>(a, d, n0, n1) : RowsX8<K, true, false>(a, d, n0, n1);
    else bcast ? RowsX8<K, false, true>(a, d, n0, n1) : RowsX8<K, false, false>(a, d, n0, n1);
  };
  switch (d.kind) {
    case X8Kind::DenseI8: return run.template operator()<X8Kind::DenseI8>(G >= 64);
    case X8Kind::DenseI4: return run.template operator()<X8Kind::DenseI4>(G == 128);
    case X8Kind::NmI8: return run.template operator()<X8Kind::NmI8>(G >= 64);
    case X8Kind::NmI4: return run.template operator()<X8Kind::NmI4>(G >= 64);
    case X8Kind::BitmapI8: return run.template operator()<X8Kind::BitmapI8>(false);
    case X8Kind::BitmapI4: return run.template operator()<X8Kind::BitmapI4>(false);
  }
#else
  if (a.format == FormatKind::VNM) {
    for (int64_t rb = n0; rb < n1; ++rb) {
      const CodecKernelArgs b = VnmBlockX8(a, rb, d);
      X8Rows(b, d, 0, b.rows);
    }
    return;
  }
  RowGroups rg(x8_row_groups(a));
  for (int64_t r = n0; r < n1; ++r) {
    rg.Fill(a, r);
    if (a.format == FormatKind::Bitmap) {
      int64_t set = 0;
      for (int64_t w = 0; w < a.bitmap_words_per_row; ++w)
        set += std::popcount(a.bitmap[r * a.bitmap_words_per_row + w]);
      if (set != a.row_ptr[r + 1] - a.row_ptr[r]) {
        d.Bad(r);
        continue;
      }
    }
    for (int64_t t = 0; t < a.m; ++t)
      a.y[t * a.ldy + r] = a.format == FormatKind::Bitmap ? ScalarBitmap(a, d, rg, r, t)
                                                          : ScalarPart(a, d, rg, r, t, 0);
  }
#endif
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "cpu/simd/parallel.h"
#include "sparsa/error.h"

namespace sparsa::cpu {

HWY_EXPORT(X8Prepare);
HWY_EXPORT(X8Rows);
HWY_EXPORT(VnmAlloc);

void codec_gemm_x8_simd(const CodecKernelArgs& a) {
  if (a.m == 0 || a.rows == 0) return;
  if (a.format == FormatKind::VNM) {  // threads split the row blocks; per block X gathered and
    // quantised into the thread's buffers (allocated once), then the block's 2:4 rows
    const int64_t blocks = (a.rows + a.vnm_v - 1) / a.vnm_v;
    const double work =
        static_cast<double>(a.m) * a.rows * 2 * std::max<int64_t>(a.vnm_col_blocks, 1);
    parallel_rows(blocks, 1, work, [&](int64_t b0, int64_t b1) {
      X8Data d;
      HWY_DYNAMIC_DISPATCH(VnmAlloc)(a, d);
      HWY_DYNAMIC_DISPATCH(X8Rows)(a, d, b0, b1);
    });
    return;
  }
  X8Data d;
  HWY_DYNAMIC_DISPATCH(X8Prepare)(a, d);
  const double work = static_cast<double>(a.m) * a.rows * std::max<int64_t>(a.cols, 1);
  parallel_rows(a.rows, 4, work, [&](int64_t n0, int64_t n1) {
    HWY_DYNAMIC_DISPATCH(X8Rows)(a, d, n0, n1);
  });
  if (d.bad_row >= 0)
    fail("bitmap matrix [{}, {}]: row {} has a bit count that disagrees with row_ptr", a.rows,
         a.cols, d.bad_row.load());
}

}  // namespace sparsa::cpu
#endif  // HWY_ONCE
