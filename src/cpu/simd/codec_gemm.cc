// Fused Y = X * W^T over compressed weights (src/cpu/codec_kernels.h): codes are decoded in
// registers, next to the multiply-adds; no decoded copy of W is ever written.
//
// Per output row, per tile of MT <= 4 rows of X (the row's codes stay in L1 between tiles, so W
// is read from memory once whatever M is):
//
//   dense int8      L codes -> PromoteTo i32 -> minus zero-point -> f32; acc += w * x[k..k+L)
//   dense int4/cb4  L bytes = 2L nibbles: low nibbles are the even columns, high the odd ones.
//                   X is permuted once per call into that order (per 2L-column block: even
//                   columns, then odd), so both halves meet contiguous X. cb4 looks the nibbles
//                   up in the row's 16-entry codebook held in one register (TableLookupLanes).
//   nm 2:4          L values span 2L columns; one metadata word gives their offsets: lane
//                   column = base + ((word >> shift) & 3), then X is picked from the 2L-column
//                   window with a two-table permute (vpermt2ps), not a gather. int4/cb4 read
//                   L/2 bytes and put low nibbles (first kept value of each group) in the lower
//                   half, high nibbles in the upper; the lane constants follow that order.
//   bitmap          per L-column chunk of the bitmap: c = popcount values decoded in order,
//                   scaled per lane (a chunk may straddle two groups), expanded to their
//                   columns (vexpandps on AVX-512, a table permute elsewhere), one FMA with
//                   contiguous X.
// Int codes accumulate per group and are scaled once per group (dense, nm); two accumulator
// sets hide the FMA latency at M = 1. Scales are widened per row with one vector convert.
//
// Versions tried (AMD EPYC Zen 4 VM, 2 cores shared with other jobs; bench/cpu_codec.cc):
//   see docs/compression.md for the measured numbers of this version.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/codec_gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <algorithm>
#include <cstring>

#include "cpu/codec_kernels.h"
#include "hwy/aligned_allocator.h"
#include "sparsa/half.h"

HWY_BEFORE_NAMESPACE();
namespace sparsa::cpu::HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;
using VU = hn::Vec<DU>;
constexpr size_t kLanes = hn::MaxLanes(DF());
// The vector paths need L >= 4 and L dividing 16 (one 2:4 metadata word covers 16 values);
// HWY_SCALAR (1 lane, no Combine/TableLookupLanes) runs the scalar rows.
#undef SPARSA_CODEC_VECTOR
#if HWY_TARGET == HWY_SCALAR
#define SPARSA_CODEC_VECTOR 0
#else
#define SPARSA_CODEC_VECTOR 1
static_assert(kLanes >= 4 && kLanes <= 16, "vector paths assume 4..16 f32 lanes");
#endif
constexpr int64_t kMaxTile = 4;

HWY_INLINE float SumLanes(VF v) { return hn::GetLane(hn::SumOfLanes(DF(), v)); }

HWY_INLINE uint8_t Nibble(const uint8_t* codes, int64_t i) {
  return (codes[i >> 1] >> ((i & 1) * 4)) & 0xf;
}

#if SPARSA_CODEC_VECTOR
// ---- loads that never read past the codes array --------------------------------------------------
// L bytes at codes + i, as i32 lanes (signed or unsigned codes).
template <bool kSigned>
HWY_INLINE VI LoadCodes8(const uint8_t* codes, uint64_t size, int64_t i) {
  const DI di;
  const uint8_t* p = codes + i;
  HWY_ALIGN uint8_t spill[kLanes] = {};
  if (static_cast<uint64_t>(i) + kLanes > size) {
    std::memcpy(spill, p, size - static_cast<uint64_t>(i));
    p = spill;
  }
  if constexpr (kSigned) {
    const hn::Rebind<int8_t, DI> d8;
    return hn::PromoteTo(di, hn::LoadU(d8, reinterpret_cast<const int8_t*>(p)));
  } else {
    const hn::Rebind<uint8_t, DI> d8;
    return hn::PromoteTo(di, hn::LoadU(d8, p));
  }
}

// Lane constants of one call.
struct Consts {
  VU nib_index[2], nib_shift[2];  // L nibbles from nibble parity 0 / 1: byte and shift per lane
  VU nm8_base, nm8_shift;         // nm 2:4, natural order: column 4*(l/2), offset bits 2l
  VU nm4_base, nm4_shift;         // nm 2:4, nibble order (lo half even values, hi half odd)
  VU low4;
};

Consts MakeConsts() {
  const DU du;
  const int64_t L = static_cast<int64_t>(kLanes);
  HWY_ALIGN uint32_t t[6][kLanes];
  Consts c;
  for (int parity = 0; parity < 2; ++parity) {
    for (int64_t l = 0; l < L; ++l) {
      t[0][l] = static_cast<uint32_t>((parity + l) >> 1);
      t[1][l] = static_cast<uint32_t>(4 * ((parity + l) & 1));
    }
    c.nib_index[parity] = hn::Load(du, t[0]);
    c.nib_shift[parity] = hn::Load(du, t[1]);
  }
  for (int64_t l = 0; l < L; ++l) {
    t[2][l] = static_cast<uint32_t>(4 * (l / 2));
    t[3][l] = static_cast<uint32_t>(2 * l);
    const int64_t h = l % (L / 2);
    t[4][l] = static_cast<uint32_t>(4 * h);
    t[5][l] = static_cast<uint32_t>(4 * h + (l >= L / 2 ? 2 : 0));
  }
  c.nm8_base = hn::Load(du, t[2]);
  c.nm8_shift = hn::Load(du, t[3]);
  c.nm4_base = hn::Load(du, t[4]);
  c.nm4_shift = hn::Load(du, t[5]);
  c.low4 = hn::Set(du, 15);
  return c;
}

// L nibbles starting at nibble i (any parity), as u32 lanes.
HWY_INLINE VU LoadNibbles(const uint8_t* codes, uint64_t size, int64_t i, const Consts& c) {
  const DU du;
  const hn::Rebind<uint8_t, DU> d8;
  const uint8_t* p = codes + (i >> 1);
  HWY_ALIGN uint8_t spill[kLanes] = {};
  if (static_cast<uint64_t>(i >> 1) + kLanes > size) {
    std::memcpy(spill, p, size - static_cast<uint64_t>(i >> 1));
    p = spill;
  }
  const int parity = static_cast<int>(i & 1);
  const VU bytes = hn::PromoteTo(du, hn::LoadU(d8, p));
  const VU picked = hn::TableLookupLanes(bytes, hn::IndicesFromVec(du, c.nib_index[parity]));
  return hn::And(hn::Shr(picked, c.nib_shift[parity]), c.low4);
}

// Lanes of the 2L-float window [a, b] picked by idx < 2L.
HWY_INLINE VF TwoTables(VF a, VF b, VU idx) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  return VF{_mm512_permutex2var_ps(a.raw, hn::BitCast(DI(), idx).raw, b.raw)};
#else
  const DF df;
  const DU du;
  const auto low = hn::IndicesFromVec(df, hn::And(idx, hn::Set(du, kLanes - 1)));
  const auto high = hn::RebindMask(df, hn::Gt(idx, hn::Set(du, kLanes - 1)));
  return hn::IfThenElse(high, hn::TableLookupLanes(b, low), hn::TableLookupLanes(a, low));
#endif
}

// Lane j of the result: v's lane popcount(bits below j) where bit j of `bits` is set, else 0.
#if !(HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3)
struct ExpandTable {
  int32_t index[256][8];
  constexpr ExpandTable() : index() {
    for (int b = 0; b < 256; ++b) {
      int k = 0;
      for (int j = 0; j < 8; ++j) {
        index[b][j] = (b >> j) & 1 ? k : 0;
        k += (b >> j) & 1;
      }
    }
  }
};
constexpr ExpandTable kExpand;
#endif

HWY_INLINE VF Expand(VF v, uint32_t bits) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  return VF{_mm512_maskz_expand_ps(static_cast<__mmask16>(bits), v.raw)};
#else
  static_assert(kLanes <= 8, "the expand table covers 8 lanes");
  const DF df;
  const DI di;
  const uint8_t byte = static_cast<uint8_t>(bits);
  HWY_ALIGN int32_t index[kLanes];
  std::memcpy(index, kExpand.index[byte], sizeof index);
  const VF picked = hn::TableLookupLanes(v, hn::IndicesFromVec(df, hn::Load(di, index)));
  return hn::IfThenElseZero(hn::LoadMaskBits(df, &byte), picked);
#endif
}

// ---- register tables ----------------------------------------------------------------------------
// A 16-entry f32 table (a codebook) looked up by u32 lanes < 16.
struct Table16 {
  VF v[(16 + kLanes - 1) / kLanes];
  HWY_ALIGN float f[16];
  void Load(const uint16_t* f16) {
    const DF df;
    const hn::Rebind<hwy::float16_t, DF> dh;
    for (size_t i = 0; i < 16; i += kLanes) {
      v[i / kLanes] = hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(f16 + i)));
      hn::Store(v[i / kLanes], df, f + i);
    }
  }
  HWY_INLINE VF operator()(VU idx) const {
    const DF df;
    const DU du;
    if constexpr (kLanes == 16) {
      return hn::TableLookupLanes(v[0], hn::IndicesFromVec(df, idx));
    } else if constexpr (kLanes == 8) {
      const auto low = hn::IndicesFromVec(df, hn::And(idx, hn::Set(du, 7)));
      const auto high = hn::RebindMask(df, hn::Gt(idx, hn::Set(du, 7)));
      return hn::IfThenElse(high, hn::TableLookupLanes(v[1], low), hn::TableLookupLanes(v[0], low));
    } else {
      return hn::GatherIndex(df, f, hn::BitCast(DI(), idx));
    }
  }
};

#else
struct Consts {};
Consts MakeConsts() { return {}; }
// ---- register tables ----------------------------------------------------------------------------
// A 16-entry f32 table (a codebook); the scalar target keeps only the floats.
struct Table16 {
  HWY_ALIGN float f[16];
  void Load(const uint16_t* f16) {
    for (int i = 0; i < 16; ++i) f[i] = f32_from_f16(f16[i]);
  }
};
#endif  // SPARSA_CODEC_VECTOR

// ---- per-row scale and zero-point tables ------------------------------------------------------------
struct GroupParams {
  hwy::AlignedFreeUniquePtr<float[]> scale;
  hwy::AlignedFreeUniquePtr<int32_t[]> zero;
  int64_t capacity = 0;
  void Reserve(int64_t n) {
    if (n <= capacity) return;
    capacity = n + static_cast<int64_t>(kLanes);
    scale = hwy::AllocateAligned<float>(capacity);
    zero = hwy::AllocateAligned<int32_t>(capacity);
  }
  // Groups [g0, g0 + n) widened: fp16 scales with a vector convert, zero-points as i32.
  void Fill(const CodecKernelArgs& a, int64_t g0, int64_t n) {
    Reserve(n);
    const DF df;
    const hn::Rebind<hwy::float16_t, DF> dh;
    const auto* src = reinterpret_cast<const hwy::float16_t*>(a.scales + g0);
    int64_t i = 0;
#if SPARSA_CODEC_VECTOR
    for (; i + static_cast<int64_t>(kLanes) <= n; i += kLanes)
      hn::Store(hn::PromoteTo(df, hn::LoadU(dh, src + i)), df, scale.get() + i);
#else
    (void)df;
    (void)dh;
    (void)src;
#endif
    for (; i < n; ++i) scale[i] = f32_from_f16(a.scales[g0 + i]);
    for (i = 0; i < n; ++i) zero[i] = a.zeros ? a.zeros[g0 + i] : a.zero_point;
  }
};

// Per-thread state of one call.
struct Work {
  const CodecKernelArgs& a;
  Consts c;
  GroupParams groups;
  Table16 book;
  hwy::AlignedFreeUniquePtr<float[]> xq;  // dense 4-bit: X in even/odd order, [m, kp]
};

// Scalar weight of stored value i in group (row-relative) g, for tails.
HWY_INLINE float TailWeight(const Work& w, int64_t i, int64_t g) {
  const CodecKernelArgs& a = w.a;
  switch (a.code) {
    case CodeKind::Int8Signed:
      return w.groups.scale[g] * static_cast<float>(static_cast<int8_t>(a.codes[i]));
    case CodeKind::Int8Unsigned:
      return w.groups.scale[g] * static_cast<float>(int{a.codes[i]} - w.groups.zero[g]);
    case CodeKind::Int4:
      return w.groups.scale[g] * static_cast<float>(int{Nibble(a.codes, i)} - w.groups.zero[g]);
    case CodeKind::Codebook4:
      return w.book.f[Nibble(a.codes, i)];
  }
  return 0;
}

template <size_t MT>
HWY_INLINE void ZeroAll(VF (&v)[MT]) {
  for (size_t t = 0; t < MT; ++t) v[t] = hn::Zero(DF());
}

// Runs step(j, acc) over [j, end) in steps of S values with two accumulator sets (the FMA
// latency is what limits one chain at M = 1); returns the first value not covered.
template <size_t MT, class Step>
HWY_INLINE int64_t Steps(int64_t j, int64_t end, int64_t S, VF (&acc)[MT], const Step& step) {
  VF acc1[MT];
  ZeroAll(acc1);
  for (; j + 2 * S <= end; j += 2 * S) {
    step(j, acc);
    step(j + S, acc1);
  }
  for (; j + S <= end; j += S) step(j, acc);
  for (size_t t = 0; t < MT; ++t) acc[t] = hn::Add(acc[t], acc1[t]);
  return j;
}

#if SPARSA_CODEC_VECTOR
// ---- dense -------------------------------------------------------------------------------------
template <size_t MT, CodeKind kCode>
HWY_NOINLINE void DenseRow(Work& w, int64_t r, int64_t m0) {
  const CodecKernelArgs& a = w.a;
  const DF df;
  const DI di;
  const DU du;
  const int64_t L = static_cast<int64_t>(kLanes), K = a.cols;
  constexpr bool kBook = kCode == CodeKind::Codebook4;
  constexpr bool kNibbles = kCode == CodeKind::Int4 || kBook;
  const int64_t G = kBook ? std::max<int64_t>(K, 1) : a.group_size;
  const int64_t p0 = r * K;  // first value (nibble) of the row
  // Dense 4-bit rows that start mid-byte (odd K) take the any-parity nibble path.
  const bool split = kNibbles && (p0 & 1) == 0;
  const float* xs[MT];
  for (size_t t = 0; t < MT; ++t)
    xs[t] = (split ? w.xq.get() : a.xp) + (static_cast<int64_t>(m0) + t) * a.kp;
  const float* xn[MT];
  for (size_t t = 0; t < MT; ++t) xn[t] = a.xp + (static_cast<int64_t>(m0) + t) * a.kp;

  VF total[MT];
  ZeroAll(total);
  float tail[MT] = {};
  for (int64_t g = 0, a0 = 0; a0 < K; ++g, a0 += G) {
    const int64_t b0 = std::min(K, a0 + G);
    const VI zero = hn::Set(di, kBook ? 0 : w.groups.zero[g]);
    VF acc[MT];
    ZeroAll(acc);
    int64_t j = a0;
    if constexpr (kNibbles) {
      if (split) {
        const uint8_t* base = a.codes + p0 / 2;
        const hn::Rebind<uint8_t, DU> d8;
        j = Steps(j, b0, 2 * L, acc, [&](int64_t jj, VF(&s)[MT]) HWY_ATTR {
          const VU bytes = hn::PromoteTo(du, hn::LoadU(d8, base + jj / 2));
          const VU lo = hn::And(bytes, w.c.low4), hi = hn::ShiftRight<4>(bytes);
          VF wl, wh;
          if constexpr (kBook) {
            wl = w.book(lo);
            wh = w.book(hi);
          } else {
            wl = hn::ConvertTo(df, hn::Sub(hn::BitCast(di, lo), zero));
            wh = hn::ConvertTo(df, hn::Sub(hn::BitCast(di, hi), zero));
          }
          for (size_t t = 0; t < MT; ++t) {
            s[t] = hn::MulAdd(wl, hn::LoadU(df, xs[t] + jj), s[t]);
            s[t] = hn::MulAdd(wh, hn::LoadU(df, xs[t] + jj + L), s[t]);
          }
        });
      } else {
        j = Steps(j, b0, L, acc, [&](int64_t jj, VF(&s)[MT]) HWY_ATTR {
          const VU nib = LoadNibbles(a.codes, a.code_bytes, p0 + jj, w.c);
          const VF wv = kBook ? w.book(nib) : hn::ConvertTo(df, hn::Sub(hn::BitCast(di, nib), zero));
          for (size_t t = 0; t < MT; ++t) s[t] = hn::MulAdd(wv, hn::LoadU(df, xn[t] + jj), s[t]);
        });
      }
    } else {
      j = Steps(j, b0, L, acc, [&](int64_t jj, VF(&s)[MT]) HWY_ATTR {
        const VF wv = hn::ConvertTo(
            df, hn::Sub(LoadCodes8<kCode == CodeKind::Int8Signed>(a.codes, a.code_bytes, p0 + jj),
                        zero));
        for (size_t t = 0; t < MT; ++t) s[t] = hn::MulAdd(wv, hn::LoadU(df, xn[t] + jj), s[t]);
      });
    }
    if constexpr (kBook) {
      for (size_t t = 0; t < MT; ++t) total[t] = hn::Add(total[t], acc[t]);
    } else {
      const VF scale = hn::Set(df, w.groups.scale[g]);
      for (size_t t = 0; t < MT; ++t) total[t] = hn::MulAdd(acc[t], scale, total[t]);
    }
    for (; j < b0; ++j) {
      const float wv = TailWeight(w, p0 + j, g);
      for (size_t t = 0; t < MT; ++t) tail[t] += wv * xn[t][j];
    }
  }
  for (size_t t = 0; t < MT; ++t) a.y[(m0 + t) * a.ldy + r] = SumLanes(total[t]) + tail[t];
}

// ---- nm 2:4 ---------------------------------------------------------------------------------------
template <size_t MT, CodeKind kCode>
HWY_NOINLINE void NmRow(Work& w, int64_t r, int64_t m0) {
  const CodecKernelArgs& a = w.a;
  const DF df;
  const DI di;
  const DU du;
  const int64_t L = static_cast<int64_t>(kLanes), V = a.values_per_row;
  constexpr bool kBook = kCode == CodeKind::Codebook4;
  constexpr bool kNibbles = kCode == CodeKind::Int4 || kBook;
  const int64_t G = kBook ? std::max<int64_t>(V, 1) : a.group_size;
  const int64_t p0 = r * V;  // even: V is
  const uint32_t* meta = a.nm_meta + r * a.nm_words_per_row;
  const float* xn[MT];
  for (size_t t = 0; t < MT; ++t) xn[t] = a.xp + (static_cast<int64_t>(m0) + t) * a.kp;
  const VU three = hn::Set(du, 3);

  VF total[MT];
  ZeroAll(total);
  float tail[MT] = {};
  for (int64_t g = 0, a0 = 0; a0 < V; ++g, a0 += G) {
    const int64_t b0 = std::min(V, a0 + G);
    const VI zero = hn::Set(di, kBook ? 0 : w.groups.zero[g]);
    VF acc[MT];
    ZeroAll(acc);
    const int64_t j = Steps(a0, b0, L, acc, [&](int64_t jj, VF(&s)[MT]) HWY_ATTR {
      // The L values jj.. (jj a multiple of L) use bits [2jj, 2jj + 2L) of the row's metadata.
      const uint32_t word = meta[jj >> 4] >> ((2 * jj) & 31);
      VF wv;
      VU col;
      if constexpr (kNibbles) {
        const hn::Half<DU> dh;
        const hn::Rebind<uint8_t, decltype(dh)> d8;
        const auto bytes = hn::PromoteTo(dh, hn::LoadU(d8, a.codes + (p0 + jj) / 2));
        const VU nib = hn::Combine(du, hn::ShiftRight<4>(bytes), hn::And(bytes, hn::Set(dh, 15)));
        wv = kBook ? w.book(nib) : hn::ConvertTo(df, hn::Sub(hn::BitCast(di, nib), zero));
        col = hn::Add(hn::And(hn::Shr(hn::Set(du, word), w.c.nm4_shift), three), w.c.nm4_base);
      } else {
        wv = hn::ConvertTo(
            df, hn::Sub(LoadCodes8<kCode == CodeKind::Int8Signed>(a.codes, a.code_bytes, p0 + jj),
                        zero));
        col = hn::Add(hn::And(hn::Shr(hn::Set(du, word), w.c.nm8_shift), three), w.c.nm8_base);
      }
      const int64_t c0 = 2 * jj;  // the window's first column: group jj/2 starts at 4 * jj/2
      for (size_t t = 0; t < MT; ++t) {
        const VF x = TwoTables(hn::LoadU(df, xn[t] + c0), hn::LoadU(df, xn[t] + c0 + L), col);
        s[t] = hn::MulAdd(wv, x, s[t]);
      }
    });
    if constexpr (kBook) {
      for (size_t t = 0; t < MT; ++t) total[t] = hn::Add(total[t], acc[t]);
    } else {
      const VF scale = hn::Set(df, w.groups.scale[g]);
      for (size_t t = 0; t < MT; ++t) total[t] = hn::MulAdd(acc[t], scale, total[t]);
    }
    for (int64_t jj = j; jj < b0; ++jj) {
      const int64_t col = 4 * (jj / 2) + ((meta[jj / 16] >> (2 * (jj % 16))) & 3);
      const float wv = TailWeight(w, p0 + jj, g);
      for (size_t t = 0; t < MT; ++t) tail[t] += wv * xn[t][col];  // padded X: col < kp
    }
  }
  for (size_t t = 0; t < MT; ++t) a.y[(m0 + t) * a.ldy + r] = SumLanes(total[t]) + tail[t];
}

// ---- bitmap --------------------------------------------------------------------------------------
template <size_t MT, CodeKind kCode>
HWY_NOINLINE void BitmapRow(Work& w, int64_t r, int64_t m0) {
  const CodecKernelArgs& a = w.a;
  const DF df;
  const DI di;
  const int64_t L = static_cast<int64_t>(kLanes);
  constexpr bool kBook = kCode == CodeKind::Codebook4;
  const int64_t G = a.group_size;
  const int64_t start = a.row_ptr[r], end = a.row_ptr[r + 1];
  const uint64_t* words = a.bitmap + r * a.bitmap_words_per_row;
  const float* xn[MT];
  for (size_t t = 0; t < MT; ++t) xn[t] = a.xp + (static_cast<int64_t>(m0) + t) * a.kp;
  const uint64_t chunk_mask = (uint64_t{1} << L) - 1;

  VF total[MT];
  ZeroAll(total);
  int64_t p = start, g = 0, boundary = start + G;  // g: group of value p, row-relative
  for (int64_t wi = 0; wi < a.bitmap_words_per_row; ++wi) {
    const uint64_t word = words[wi];
    if (word == 0) continue;
    for (int64_t q = 0; q < 64; q += L) {
      const uint32_t bits = static_cast<uint32_t>((word >> q) & chunk_mask);
      if (bits == 0) continue;
      const int64_t count = hwy::PopCount(bits);
      VF wv;
      if constexpr (kBook) {
        wv = w.book(LoadNibbles(a.codes, a.code_bytes, p, w.c));
      } else {
        VI code;
        if constexpr (kCode == CodeKind::Int4)
          code = hn::BitCast(di, LoadNibbles(a.codes, a.code_bytes, p, w.c));
        else
          code = LoadCodes8<kCode == CodeKind::Int8Signed>(a.codes, a.code_bytes, p);
        VI zero = hn::Set(di, w.groups.zero[g]);
        VF scale = hn::Set(df, w.groups.scale[g]);
        if (p + count > boundary) {  // the chunk's values run into the next group
          const auto first = hn::FirstN(di, static_cast<size_t>(boundary - p));
          zero = hn::IfThenElse(first, zero, hn::Set(di, w.groups.zero[g + 1]));
          scale = hn::IfThenElse(hn::RebindMask(df, first), scale,
                                 hn::Set(df, w.groups.scale[g + 1]));
        }
        wv = hn::Mul(hn::ConvertTo(df, hn::Sub(code, zero)), scale);
      }
      wv = Expand(wv, bits);
      const int64_t col = wi * 64 + q;
      for (size_t t = 0; t < MT; ++t)
        total[t] = hn::MulAdd(wv, hn::LoadU(df, xn[t] + col), total[t]);
      p += count;
      if (p >= boundary && p < end) {
        ++g;
        boundary += G;
      }
    }
  }
  for (size_t t = 0; t < MT; ++t) a.y[(m0 + t) * a.ldy + r] = SumLanes(total[t]);
}

#endif  // SPARSA_CODEC_VECTOR

// ---- scalar fallback (targets with fewer than 4 lanes) -------------------------------------------
[[maybe_unused]] void ScalarRow(Work& w, int64_t r, int64_t m0, int64_t mt) {
  const CodecKernelArgs& a = w.a;
  const int64_t G = a.code == CodeKind::Codebook4 ? (int64_t{1} << 62) : a.group_size;
  float acc[kMaxTile] = {};
  auto add = [&](int64_t col, float wv) {
    for (int64_t t = 0; t < mt; ++t) acc[t] += wv * a.xp[(m0 + t) * a.kp + col];
  };
  if (a.format == FormatKind::Bitmap) {
    int64_t i = a.row_ptr[r];
    for (int64_t wi = 0; wi < a.bitmap_words_per_row; ++wi)
      for (uint64_t bits = a.bitmap[r * a.bitmap_words_per_row + wi]; bits; bits &= bits - 1, ++i)
        add(wi * 64 + hwy::Num0BitsBelowLS1Bit_Nonzero64(bits), TailWeight(w, i, (i - a.row_ptr[r]) / G));
  } else {
    const int64_t V = a.values_per_row;
    for (int64_t j = 0; j < V; ++j) {
      const int64_t col = a.format == FormatKind::Dense
                              ? j
                              : 4 * (j / 2) + ((a.nm_meta[r * a.nm_words_per_row + j / 16] >>
                                                (2 * (j % 16))) & 3);
      add(col, TailWeight(w, r * V + j, j / G));
    }
  }
  for (int64_t t = 0; t < mt; ++t) a.y[(m0 + t) * a.ldy + r] = acc[t];
}

// ---- driver ----------------------------------------------------------------------------------------
template <CodeKind kCode>
void RunRow(Work& w, int64_t r) {
  const CodecKernelArgs& a = w.a;
  for (int64_t m0 = 0; m0 < a.m;) {
    const int64_t mt = std::min(kMaxTile, a.m - m0);
#if !SPARSA_CODEC_VECTOR
    ScalarRow(w, r, m0, mt);
    m0 += mt;
#else
    {
      const int64_t take = mt >= 4 ? 4 : mt >= 2 ? 2 : 1;
      switch (a.format) {
        case FormatKind::Dense:
          if (take == 4) DenseRow<4, kCode>(w, r, m0);
          else if (take == 2) DenseRow<2, kCode>(w, r, m0);
          else DenseRow<1, kCode>(w, r, m0);
          break;
        case FormatKind::NM:
          if (take == 4) NmRow<4, kCode>(w, r, m0);
          else if (take == 2) NmRow<2, kCode>(w, r, m0);
          else NmRow<1, kCode>(w, r, m0);
          break;
        default:
          if (take == 4) BitmapRow<4, kCode>(w, r, m0);
          else if (take == 2) BitmapRow<2, kCode>(w, r, m0);
          else BitmapRow<1, kCode>(w, r, m0);
          break;
      }
      m0 += take;
    }
#endif
  }
}

template <CodeKind kCode>
int64_t RunRows(const CodecKernelArgs& a, int64_t n0, int64_t n1) {
  Work w{a, MakeConsts(), {}, {}, {}};
  const bool quantised = kCode != CodeKind::Codebook4;
  if (!a.per_channel && !quantised) w.book.Load(a.codebook);
  // Dense 4-bit: X reordered per 2L-column block into (even columns, odd columns).
  if (a.format == FormatKind::Dense && (kCode == CodeKind::Int4 || kCode == CodeKind::Codebook4)) {
    const int64_t L = static_cast<int64_t>(kLanes);
    w.xq = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * a.kp));
    for (int64_t m = 0; m < a.m; ++m) {
      const float* src = a.xp + m * a.kp;
      float* dst = w.xq.get() + m * a.kp;
      for (int64_t b = 0; b + 2 * L <= a.kp; b += 2 * L)
        for (int64_t l = 0; l < L; ++l) {
          dst[b + l] = src[b + 2 * l];
          dst[b + L + l] = src[b + 2 * l + 1];
        }
    }
  }
  const int64_t G = a.group_size;
  for (int64_t r = n0; r < n1; ++r) {
    int64_t groups = 0, first_group = 0;
    if (a.format == FormatKind::Bitmap) {
      int64_t set = 0;
      for (int64_t wi = 0; wi < a.bitmap_words_per_row; ++wi)
        set += hwy::PopCount(a.bitmap[r * a.bitmap_words_per_row + wi]);
      if (set != a.row_ptr[r + 1] - a.row_ptr[r]) return r;  // damaged: the caller reports it
      first_group = a.group_ptr[r];
      groups = a.group_ptr[r + 1] - first_group;
    } else {
      groups = (a.values_per_row + G - 1) / G;
      first_group = r * groups;
    }
    if (quantised) {
      w.groups.Fill(a, first_group, groups);
    } else if (a.per_channel) {
      w.book.Load(a.codebook + 16 * r);
    }
    RunRow<kCode>(w, r);
  }
  return -1;
}

}  // namespace

// Rows [n0, n1) of Y; returns -1, or the first bitmap row whose bit count disagrees with row_ptr.
int64_t CodecRows(const CodecKernelArgs& a, int64_t n0, int64_t n1) {
  switch (a.code) {
    case CodeKind::Int8Signed: return RunRows<CodeKind::Int8Signed>(a, n0, n1);
    case CodeKind::Int8Unsigned: return RunRows<CodeKind::Int8Unsigned>(a, n0, n1);
    case CodeKind::Int4: return RunRows<CodeKind::Int4>(a, n0, n1);
    case CodeKind::Codebook4: return RunRows<CodeKind::Codebook4>(a, n0, n1);
  }
  return -1;
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <atomic>

#include "cpu/simd/parallel.h"
#include "sparsa/error.h"

namespace sparsa::cpu {

HWY_EXPORT(CodecRows);

void codec_gemm_simd(const CodecKernelArgs& a) {
  if (a.m == 0 || a.rows == 0) return;
  std::atomic<int64_t> bad{-1};
  const double work = static_cast<double>(a.m) * a.rows * std::max<int64_t>(a.cols, 1);
  parallel_rows(a.rows, 4, work, [&](int64_t n0, int64_t n1) {
    const int64_t r = HWY_DYNAMIC_DISPATCH(CodecRows)(a, n0, n1);
    if (r >= 0) bad = r;
  });
  if (bad >= 0)
    fail("bitmap matrix [{}, {}]: row {} has a bit count that disagrees with row_ptr", a.rows,
         a.cols, bad.load());
}

}  // namespace sparsa::cpu
#endif  // HWY_ONCE
