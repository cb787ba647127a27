// Fused Y = X * W^T over compressed weights (src/cpu/codec_kernels.h): codes are decoded in
// registers, next to the multiply-adds; no decoded copy of W is ever written.
//
// Per output row, per tile of MT <= 4 rows of X (the row's codes stay in L1 between tiles, so W
// is read from memory once whatever M is):
//
//   dense int8      L codes -> PromoteTo i32 -> f32 -> times the group's scale; acc += w * x.
//                   The asym zero-point term scale * zero * sum(x) uses per-call X sums.
//   dense int4/cb4  L bytes = 2L nibbles: low nibbles are the even columns, high the odd ones.
//                   X is permuted once per call into that order (per 2L-column block: even
//                   columns, then odd), so both halves meet contiguous X. Nibbles are looked up
//                   in a 16-entry table held in one register (vpermps): the row's codebook, or
//                   for int4 the group's (q - zero) * scale, rebuilt per group in 4 ops.
//   nm 2:4          L values span 2L columns; one metadata word gives their offsets: lane
//                   column = base + ((word >> shift) & 3), then X is picked from the 2L-column
//                   window with a two-table permute (vpermt2ps), not a gather. int4/cb4 read
//                   L/2 bytes and put low nibbles (first kept value of each group) in the lower
//                   half, high nibbles in the upper; the lane constants follow that order.
//   bitmap          per L-column chunk of the bitmap: c = popcount values decoded in order,
//                   scaled per lane (a chunk may straddle two groups), expanded to their
//                   columns (vexpandps on AVX-512, a table permute elsewhere), one FMA with
//                   contiguous X.
// Two to four accumulator chains hide the FMA latency at M = 1. Scales are widened per row with
// one vector convert. Full groups run without bounds checks; the weight stream is prefetched.
//
// Versions tried (single thread, AMD EPYC Zen 4 VM; 1M-weight matrices, cache-resident unless
// said otherwise; bench/cpu_codec.cc and docs/compression.md for the full runs):
//   v1 int8 accumulated per group, then scaled; int4 nibbles converted (q - zero) to f32:
//      1024 x 1024, M = 1: int8 94 us, int4 68 us, codebook4 40 us (per-group work dominated).
//   v2+v3 int4 through a per-group 16-entry table (scale folded in), int8 scale folded into the
//      weights, whole groups without bounds checks: int8 68 us, int4 62 us, codebook4 41 us;
//      256 x 4096: int8 49 us, int4 41 us, codebook4 38 us (dense f16 kernel: 36 us).
//   v4 software prefetch 2-8 KB ahead of the weight stream (DRAM-resident, 1 thread): int4 from
//      24% to 45% of the read bandwidth; splitting a row into 4 lockstep streams was slower.
//   bitmap: X compressed to the set columns, then a dense-like dot over contiguous codes (the
//      f16 bitmap kernel's approach) measured int8 111 -> 128 us, g32 116 -> 151 us, int4
//      162 -> 149 us against the lane-expand version kept here.
//   v5/v5b (third session) a register tile of 4 W rows at M = 1 sharing each X load, and int8
//      summed per group then scaled: slower from DRAM (2 threads: 0.70x / 0.50x / 0.56x of v4 for
//      int8 / int4 / cb4), so removed again; the code is in commit 108f276, the runs in
//      docs/compression.md ("CPU decode v2").
//   v7/v8 (fourth session; static analysis first: llvm-mca 19 -mcpu=znver4 on the compiled
//      loops, cycles per 16 weights; measured in thread CPU time on the shared VM; details in
//      docs/compression.md "CPU decode v3"). Kept: dense 4-bit reads 8 nibbles per 32-bit lane
//      (one 64-byte load per 128 weights, 7 shifts, 8 lookups; X reordered to match) instead
//      of vpmovzxbd per 32: 2.26 -> 1.64 predicted; 2:4 broadcasts its metadata word from
//      memory and builds the column in one vpternlogd, 2:4 int8 sums q * x per group and
//      scales once per group: int8 5.12 -> 4.23, codebook4 5.96 -> 5.56 predicted. Dropped
//      after measuring: dense int8 as 4 codes per lane by shifts (2.07 predicted, 18% slower
//      cache-resident), dense int8 group sums in 2 chains (FMA-latency bound) and in 4 chains
//      (2.71 -> 2.38 predicted, 6% faster cache-resident but 20% slower from DRAM, as v6 was),
//      nibbles by vpmulhuw instead of shifts (1.45 predicted, not faster measured).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/codec_gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "cpu/codec_kernels.h"
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
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
// How far ahead of the decode the weight stream is prefetched.
constexpr int64_t kPrefetchBytes = 8192;

HWY_INLINE float SumLanes(VF v) { return hn::GetLane(hn::SumOfLanes(DF(), v)); }

// f(std::integral_constant<int, k>) for k = 0..N-1, unrolled.
template <int N, class F>
HWY_INLINE void Unroll(F&& f) {
  [&]<int... K>(std::integer_sequence<int, K...>) {
    (f(std::integral_constant<int, K>()), ...);
  }(std::make_integer_sequence<int, N>());
}

// Dense 4-bit full groups read n codes per 32-bit lane: one vector load of n*L/2 bytes, then
// nibble k of every lane (shift by 4k; vpermps ignores the upper bits), against X reordered
// once per call so that lookup k of a C = n*L column block meets contiguous X:
// xq[b*C + k*L + d] = x[b*C + n*d + k]. n = 2: L bytes = 2L nibbles (v4). v7 (AVX-512,
// 16 lanes): n = 8 (64 bytes -> 8 x 16 nibbles, no vpmovzxbd) for codebook4 and int4 g128,
// n = 4 for int4 g64, 2 for g32 (a block must not cross a group). int8 keeps v4's natural
// order and per-weight scale (the v7 variants measured slower: codec_gemm.cc header).
template <CodeKind kCode>
int64_t DenseLaneCodes(int64_t group) {
  constexpr bool kInt8 = kCode == CodeKind::Int8Signed || kCode == CodeKind::Int8Unsigned;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if constexpr (kLanes == 16) {
    if constexpr (kInt8) return 1;
    if constexpr (kCode == CodeKind::Codebook4) return 8;
    return std::min<int64_t>(8, group / 16);
  }
#endif
  (void)group;
  return kInt8 ? 1 : 2;
}

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
  VI iota;  // 0, 1, ..., L-1
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
  c.iota = hn::Iota(DI(), 0);
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
// A 16-entry f32 table looked up by u32 lanes < 16: a codebook, or for int4 the group's
// dequantised values (q - zero) * scale, so a nibble becomes a weight in one permute.
struct Table16 {
  VF v[(16 + kLanes - 1) / kLanes];
  HWY_ALIGN float f[16];  // for targets that gather (L < 8) and for scalar tails
  void Load(const uint16_t* f16) {
    const DF df;
    const hn::Rebind<hwy::float16_t, DF> dh;
    for (size_t i = 0; i < 16; i += kLanes) {
      v[i / kLanes] =
          hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(f16 + i)));
      hn::Store(v[i / kLanes], df, f + i);
    }
  }
  // (i - zero) * scale, as the reference computes it; 4 vector ops on 16 lanes.
  HWY_INLINE void Quant(float scale, int32_t zero, VI iota) {
    const DF df;
    const DI di;
    const VF sv = hn::Set(df, scale);
    VI q = hn::Sub(iota, hn::Set(di, zero));
    for (size_t i = 0; i < 16; i += kLanes) {
      v[i / kLanes] = hn::Mul(hn::ConvertTo(df, q), sv);
      if constexpr (kLanes < 8) hn::Store(v[i / kLanes], df, f + i);
      q = hn::Add(q, hn::Set(di, static_cast<int32_t>(kLanes)));
    }
  }
  // Lookup by the low nibble of each lane (< 256); AVX-512's permute ignores the upper bits.
  HWY_INLINE VF Low(VU bytes, VU low4) const {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
    (void)low4;
    return VF{_mm512_permutexvar_ps(hn::BitCast(DI(), bytes).raw, v[0].raw)};
#else
    return (*this)(hn::And(bytes, low4));
#endif
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
// A 16-entry f32 table; the scalar target keeps only the floats.
struct Table16 {
  HWY_ALIGN float f[16];
  void Load(const uint16_t* f16) {
    for (int i = 0; i < 16; ++i) f[i] = f32_from_f16(f16[i]);
  }
  void Quant(float scale, int32_t zero, int32_t) {
    for (int i = 0; i < 16; ++i) f[i] = static_cast<float>(i - zero) * scale;
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
    zero_filled = 0;
  }
  // Groups [g0, g0 + n) widened: fp16 scales with a vector convert, zero-points as i32.
  void Fill(const CodecKernelArgs& a, int64_t g0, int64_t n) {
    Reserve(n);
    int64_t i = 0;
#if SPARSA_CODEC_VECTOR
    const DF df;
    const hn::Rebind<hwy::float16_t, DF> dh;
    const auto* src = reinterpret_cast<const hwy::float16_t*>(a.scales + g0);
    for (; i + static_cast<int64_t>(kLanes) <= n; i += kLanes)
      hn::Store(hn::PromoteTo(df, hn::LoadU(dh, src + i)), df, scale.get() + i);
#endif
    for (; i < n; ++i) scale[i] = f32_from_f16(a.scales[g0 + i]);
    // Symmetric codes share one zero-point, written once per capacity change.
    if (a.zeros) {
      for (i = 0; i < n; ++i) zero[i] = a.zeros[g0 + i];
    } else if (n > 0 && (zero_filled < n || zero[0] != a.zero_point)) {
      for (i = 0; i < capacity; ++i) zero[i] = a.zero_point;
      zero_filled = capacity;
    }
  }
  int64_t zero_filled = 0;
};

// Per-thread state of one call.
struct Work {
  const CodecKernelArgs& a;
  Consts c;
  GroupParams groups;
  Table16 book;                           // codebook4: the row's (or the tensor's) codebook
  hwy::AlignedFreeUniquePtr<float[]> xq;  // dense 4-bit: X in even/odd order, [m, kp]
  // dense int8 asym: per row of X and group, the sum of X over the group's vector-covered
  // columns, for the zero-point term scale * zero * sum(x).
  hwy::AlignedFreeUniquePtr<float[]> xsum;
  int64_t groups_per_row = 0;
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

constexpr bool IsInt8(CodeKind k) { return k == CodeKind::Int8Signed || k == CodeKind::Int8Unsigned; }

#if SPARSA_CODEC_VECTOR
// ---- dense -------------------------------------------------------------------------------------
// L int8 codes inside the row (never past the array's end: no bounds check needed).
template <bool kSigned>
HWY_INLINE VI LoadCodes8InRow(const uint8_t* p) {
  const DI di;
  if constexpr (kSigned) {
    const hn::Rebind<int8_t, DI> d8;
    return hn::PromoteTo(di, hn::LoadU(d8, reinterpret_cast<const int8_t*>(p)));
  } else {
    const hn::Rebind<uint8_t, DI> d8;
    return hn::PromoteTo(di, hn::LoadU(d8, p));
  }
}

// Scale folded into the weights: int8 w = scale * q (one multiply per L weights; the asym
// zero-point term scale * zero * sum(x) comes from the per-call X sums), int4 / cb4 w = table
// lookup. Full groups run a loop without bounds checks or tails; the row's last, partial group
// takes the general path. Four FMA chains per row of X.
template <size_t MT, CodeKind kCode>
HWY_NOINLINE void DenseRow(Work& w, int64_t r, int64_t m0) {
  const CodecKernelArgs& a = w.a;
  const DF df;
  const DU du;
  const int64_t L = static_cast<int64_t>(kLanes), K = a.cols;
  constexpr bool kInt8 = IsInt8(kCode);
  constexpr bool kSigned = kCode == CodeKind::Int8Signed;
  // Codebooks have no groups; blocks of 128 columns give them the same loop structure.
  const int64_t G = kCode == CodeKind::Codebook4 ? 128 : a.group_size;
  const int64_t p0 = r * K;  // first value (nibble) of the row
  const bool split = !kInt8 && (p0 & 1) == 0;  // 4-bit rows starting on a byte
  const float* xn[MT];
  const float* xs[MT];
  for (size_t t = 0; t < MT; ++t) {
    xn[t] = a.xp + (m0 + static_cast<int64_t>(t)) * a.kp;
    xs[t] = w.xq ? w.xq.get() + (m0 + static_cast<int64_t>(t)) * a.kp : xn[t];
  }
  VF acc0[MT], acc1[MT], acc2[MT], acc3[MT];
  ZeroAll(acc0);
  ZeroAll(acc1);
  ZeroAll(acc2);
  ZeroAll(acc3);
  float tail[MT] = {};
  Table16 table;
  const uint8_t* codes8 = a.codes + p0;         // int8
  const uint8_t* codes4 = a.codes + (p0 >> 1);  // 4-bit, when split
  const hn::Rebind<uint8_t, DU> d8;
  // 2L weights at column j into (lo, hi) chains.
  auto step = [&](int64_t j, VF sv, const Table16& tab, VF(&lo)[MT], VF(&hi)[MT]) HWY_ATTR {
    VF w0, w1;
    if constexpr (kInt8) {
      (void)tab;
      w0 = hn::Mul(hn::ConvertTo(df, LoadCodes8InRow<kSigned>(codes8 + j)), sv);
      w1 = hn::Mul(hn::ConvertTo(df, LoadCodes8InRow<kSigned>(codes8 + j + L)), sv);
    } else {
      (void)sv;
      const VU bytes = hn::PromoteTo(du, hn::LoadU(d8, codes4 + (j >> 1)));
      w0 = tab.Low(bytes, w.c.low4);  // even columns (X reordered to match)
      w1 = tab(hn::ShiftRight<4>(bytes));
    }
    for (size_t t = 0; t < MT; ++t) {
      lo[t] = hn::MulAdd(w0, hn::LoadU(df, xs[t] + j), lo[t]);
      hi[t] = hn::MulAdd(w1, hn::LoadU(df, xs[t] + j + L), hi[t]);
    }
  };
  // Group g's scale (int8) or table (int4); the asym zero-point term goes to the tail sums.
  auto start_group = [&](int64_t g, Table16& tab) HWY_ATTR {
    if constexpr (kCode == CodeKind::Int4) tab.Quant(w.groups.scale[g], w.groups.zero[g], w.c.iota);
    if constexpr (kCode == CodeKind::Int8Unsigned) {
      const float zs = w.groups.scale[g] * static_cast<float>(w.groups.zero[g]);
      for (size_t t = 0; t < MT; ++t)
        tail[t] -= zs * w.xsum[(m0 + static_cast<int64_t>(t)) * w.groups_per_row + g];
    }
    return hn::Set(df, kInt8 ? w.groups.scale[g] : 0.0f);
  };
  const Table16& book = w.book;
  auto table_of = [&](Table16& tab) -> const Table16& {
    return kCode == CodeKind::Codebook4 ? book : tab;
  };

  // Whole groups (G: a multiple of 2L), no bounds checks or tails. One sequential stream per
  // core leaves DRAM latency exposed, so the lines ahead are prefetched (measured: 4-bit rows
  // went from 24% to 45% of the single-core read bandwidth). Splitting the row into four
  // lockstep streams instead measured slower.
  const int64_t full = (kInt8 || split) ? K / G : 0;
  const int64_t bytes_per_group = kInt8 ? G : G / 2;
  auto prefetch_group = [&](int64_t g) HWY_ATTR {
    const uint8_t* p = kInt8 ? codes8 + g * G : codes4 + ((g * G) >> 1);
    for (int64_t b = 0; b < bytes_per_group; b += 64) hwy::Prefetch(p + b + kPrefetchBytes);
  };
  // v7 blocks (4-bit): n nibbles per lane (see DenseLaneCodes), the scale folded into the table.
  auto lane_blocks = [&]<int N>() HWY_ATTR {
    constexpr int64_t C = N * static_cast<int64_t>(kLanes);
    for (int64_t g = 0; g < full; ++g) {
      start_group(g, table);
      prefetch_group(g);
      const Table16& tab = table_of(table);
      for (int64_t j = g * G; j < (g + 1) * G; j += C) {
        const uint8_t* p = codes4 + (j >> 1);
        VU v;
        if constexpr (N == 8) {
          v = hn::LoadU(du, reinterpret_cast<const uint32_t*>(p));
        } else if constexpr (N == 4) {
          const hn::Rebind<uint16_t, DU> d16;
          v = hn::PromoteTo(du, hn::LoadU(d16, reinterpret_cast<const uint16_t*>(p)));
        } else {
          v = hn::PromoteTo(du, hn::LoadU(d8, p));
        }
        Unroll<N>([&](auto kc) HWY_ATTR {
          constexpr int k = decltype(kc)::value;
          const VF wk = tab.Low(hn::ShiftRight<4 * k>(v), w.c.low4);
          VF(&chain)[MT] = k % 4 == 0 ? acc0 : k % 4 == 1 ? acc1 : k % 4 == 2 ? acc2 : acc3;
          for (size_t t = 0; t < MT; ++t)
            chain[t] = hn::MulAdd(wk, hn::LoadU(df, xs[t] + j + k * L), chain[t]);
        });
      }
    }
  };
  const int64_t lane_codes = DenseLaneCodes<kCode>(G);
  if (lane_codes == 8) {  // never for int8 (DenseLaneCodes), so not instantiated for it
    if constexpr (!kInt8) lane_blocks.template operator()<8>();
  } else if (lane_codes == 4) {
    if constexpr (!kInt8) lane_blocks.template operator()<4>();
  } else {
    for (int64_t g = 0; g < full; ++g) {
      const VF sv = start_group(g, table);
      prefetch_group(g);
      int64_t j = g * G;
      for (; j + 4 * L <= (g + 1) * G; j += 4 * L) {
        step(j, sv, table_of(table), acc0, acc1);
        step(j + 2 * L, sv, table_of(table), acc2, acc3);
      }
      if (j < (g + 1) * G) step(j, sv, table_of(table), acc0, acc1);
    }
  }
  // The rest: the last, partial group (or every group of a mid-byte 4-bit row).
  for (int64_t g = full, a0 = full * G; a0 < K; ++g, a0 += G) {
    const int64_t b0 = std::min(K, a0 + G);
    const VF sv = start_group(g, table);
    int64_t j = a0;
    // step() reads X in the v4 order; with wider lane blocks (v7) the rest takes natural X.
    const bool v4_order = lane_codes == (kInt8 ? 1 : 2);
    if (kInt8 || (split && v4_order)) {
      if (v4_order)
        for (; j + 2 * L <= b0; j += 2 * L) step(j, sv, table_of(table), acc0, acc1);
      if constexpr (kInt8) {
        for (; j + L <= b0; j += L) {
          const VF w0 = hn::Mul(hn::ConvertTo(df, LoadCodes8InRow<kSigned>(codes8 + j)), sv);
          for (size_t t = 0; t < MT; ++t) acc2[t] = hn::MulAdd(w0, hn::LoadU(df, xn[t] + j), acc2[t]);
        }
      }
    } else {  // any-parity nibbles, L per step, X in natural order
      const Table16& tab = kCode == CodeKind::Int4 ? table : w.book;
      for (; j + L <= b0; j += L) {
        const VF wv = tab(LoadNibbles(a.codes, a.code_bytes, p0 + j, w.c));
        for (size_t t = 0; t < MT; ++t) acc2[t] = hn::MulAdd(wv, hn::LoadU(df, xn[t] + j), acc2[t]);
      }
    }
    for (; j < b0; ++j) {
      const float wv = TailWeight(w, p0 + j, g);
      for (size_t t = 0; t < MT; ++t) tail[t] += wv * xn[t][j];
    }
  }
  for (size_t t = 0; t < MT; ++t)
    a.y[(m0 + t) * a.ldy + r] =
        SumLanes(hn::Add(hn::Add(acc0[t], acc1[t]), hn::Add(acc2[t], acc3[t]))) + tail[t];
}

// ---- nm 2:4 ---------------------------------------------------------------------------------------
// L values per step span 2L columns; weights as for dense (scale folded; int8 asym subtracts the
// zero-point in the integer domain, as there is no shared X sum here), columns from one metadata
// word, X from the 2L-column window by a two-table permute.
template <size_t MT, CodeKind kCode>
HWY_NOINLINE void NmRow(Work& w, int64_t r, int64_t m0) {
  const CodecKernelArgs& a = w.a;
  const DF df;
  const DI di;
  const DU du;
  const int64_t L = static_cast<int64_t>(kLanes), V = a.values_per_row;
  constexpr bool kInt8 = IsInt8(kCode);
  constexpr bool kSigned = kCode == CodeKind::Int8Signed;
  const int64_t G = kCode == CodeKind::Codebook4 ? std::max<int64_t>(V, 1) : a.group_size;
  const int64_t p0 = r * V;  // even, as V is
  const uint32_t* meta = a.nm_meta + r * a.nm_words_per_row;
  const float* xn[MT];
  for (size_t t = 0; t < MT; ++t) xn[t] = a.xp + (m0 + static_cast<int64_t>(t)) * a.kp;
  const VU three = hn::Set(du, 3);
  const VU shift = kInt8 ? w.c.nm8_shift : w.c.nm4_shift;
  const VU base = kInt8 ? w.c.nm8_base : w.c.nm4_base;
  const hn::Half<DU> dh;
  const hn::Rebind<uint8_t, decltype(dh)> d8h;

  VF acc0[MT], acc1[MT];
  ZeroAll(acc0);
  ZeroAll(acc1);
  float tail[MT] = {};
  Table16 table;
  VF sv = hn::Zero(df);
  VI zero = hn::Zero(di);
  // The L values jj.. (jj a multiple of L) span columns [2jj, 2jj + 2L) and use bits
  // [2jj, 2jj + 2L) of the row's metadata.
  auto step = [&](int64_t jj, VF(&s)[MT]) HWY_ATTR {
    VF wv;
    if constexpr (kInt8) {  // unscaled: the group's scale multiplies its sums (v8)
      VI q = LoadCodes8InRow<kSigned>(a.codes + p0 + jj);
      if constexpr (!kSigned) q = hn::Sub(q, zero);
      wv = hn::ConvertTo(df, q);
    } else {
      // L/2 bytes: low nibbles (each group's first kept value) in the lower half of the lanes,
      // high nibbles in the upper half; nm4_shift/nm4_base follow that order.
      const Table16& tab = kCode == CodeKind::Int4 ? table : w.book;
      const auto bytes = hn::PromoteTo(dh, hn::LoadU(d8h, a.codes + ((p0 + jj) >> 1)));
      wv = tab(hn::Combine(du, hn::ShiftRight<4>(bytes), hn::And(bytes, hn::Set(dh, 15))));
    }
    // 16 lanes take a whole word (shift 0: broadcast straight from memory); the column is
    // base | ((word >> shift) & 3), one vpternlogd (v8; was and + add).
    const uint32_t word = kLanes == 16 ? meta[jj >> 4] : meta[jj >> 4] >> ((2 * jj) & 31);
    const VU col = hn::OrAnd(base, hn::Shr(hn::Set(du, word), shift), three);
    for (size_t t = 0; t < MT; ++t) {
      const VF x =
          TwoTables(hn::LoadU(df, xn[t] + 2 * jj), hn::LoadU(df, xn[t] + 2 * jj + L), col);
      s[t] = hn::MulAdd(wv, x, s[t]);
    }
  };
  VF s0[MT], s1[MT];  // int8: the group's sums of q * x, two chains
  for (int64_t g = 0, a0 = 0; a0 < V; ++g, a0 += G) {
    const int64_t b0 = std::min(V, a0 + G);
    if constexpr (kCode == CodeKind::Int4) table.Quant(w.groups.scale[g], w.groups.zero[g], w.c.iota);
    if constexpr (kInt8) {
      sv = hn::Set(df, w.groups.scale[g]);
      zero = hn::Set(di, w.groups.zero[g]);
    }
    VF(&c0)[MT] = kInt8 ? s0 : acc0;
    VF(&c1)[MT] = kInt8 ? s1 : acc1;
    if constexpr (kInt8) {
      ZeroAll(s0);
      ZeroAll(s1);
    }
    int64_t j = a0;
    for (; j + 2 * L <= b0; j += 2 * L) {
      step(j, c0);
      step(j + L, c1);
    }
    for (; j + L <= b0; j += L) step(j, c0);
    if constexpr (kInt8)
      for (size_t t = 0; t < MT; ++t) acc0[t] = hn::MulAdd(hn::Add(s0[t], s1[t]), sv, acc0[t]);
    for (; j < b0; ++j) {
      const int64_t col = 4 * (j >> 1) + ((meta[j >> 4] >> (2 * (j & 15))) & 3);
      const float wv = TailWeight(w, p0 + j, g);
      for (size_t t = 0; t < MT; ++t) tail[t] += wv * xn[t][col];  // padded X: col < kp
    }
  }
  for (size_t t = 0; t < MT; ++t)
    a.y[(m0 + t) * a.ldy + r] = SumLanes(hn::Add(acc0[t], acc1[t])) + tail[t];
}

// ---- bitmap --------------------------------------------------------------------------------------
// Per L-column chunk: its c values decoded in order, weights per lane (a chunk may straddle two
// groups: lanes past the boundary take the next group's scale / table), expanded to columns.
template <size_t MT, CodeKind kCode>
HWY_NOINLINE void BitmapRow(Work& w, int64_t r, int64_t m0) {
  const CodecKernelArgs& a = w.a;
  const DF df;
  const DI di;
  const int64_t L = static_cast<int64_t>(kLanes);
  const int64_t G = a.group_size;
  const int64_t start = a.row_ptr[r], end = a.row_ptr[r + 1];
  const uint64_t* words = a.bitmap + r * a.bitmap_words_per_row;
  const float* xn[MT];
  for (size_t t = 0; t < MT; ++t) xn[t] = a.xp + (m0 + static_cast<int64_t>(t)) * a.kp;
  const uint64_t chunk_mask = (uint64_t{1} << L) - 1;

  VF acc0[MT], acc1[MT];
  ZeroAll(acc0);
  ZeroAll(acc1);
  int64_t p = start, g = 0, boundary = start + G;  // g: group of value p, row-relative
  Table16 table, next;
  if constexpr (kCode == CodeKind::Int4)
    if (end > start) table.Quant(w.groups.scale[0], w.groups.zero[0], w.c.iota);
  auto chunk = [&](uint64_t word, int64_t wi, int64_t q, VF(&s)[MT]) HWY_ATTR {
    const uint32_t bits = static_cast<uint32_t>((word >> q) & chunk_mask);
    if (bits == 0) return;
    const int64_t count = hwy::PopCount(bits);
    const bool straddle = p + count > boundary;  // the values run into the next group
    VF wv;
    if constexpr (kCode == CodeKind::Codebook4) {
      wv = w.book(LoadNibbles(a.codes, a.code_bytes, p, w.c));
    } else if constexpr (kCode == CodeKind::Int4) {
      const VU nib = LoadNibbles(a.codes, a.code_bytes, p, w.c);
      wv = table(nib);
      if (straddle) {
        next.Quant(w.groups.scale[g + 1], w.groups.zero[g + 1], w.c.iota);
        wv = hn::IfThenElse(hn::FirstN(df, static_cast<size_t>(boundary - p)), wv, next(nib));
      }
    } else {
      constexpr bool kSigned = kCode == CodeKind::Int8Signed;
      VI zero = hn::Set(di, w.groups.zero[g]);
      VF scale = hn::Set(df, w.groups.scale[g]);
      if (straddle) {
        const auto first = hn::FirstN(di, static_cast<size_t>(boundary - p));
        zero = hn::IfThenElse(first, zero, hn::Set(di, w.groups.zero[g + 1]));
        scale = hn::IfThenElse(hn::RebindMask(df, first), scale, hn::Set(df, w.groups.scale[g + 1]));
      }
      VI code = LoadCodes8<kSigned>(a.codes, a.code_bytes, p);
      if constexpr (!kSigned) code = hn::Sub(code, zero);
      wv = hn::Mul(hn::ConvertTo(df, code), scale);
    }
    wv = Expand(wv, bits);
    const int64_t col = wi * 64 + q;
    for (size_t t = 0; t < MT; ++t) s[t] = hn::MulAdd(wv, hn::LoadU(df, xn[t] + col), s[t]);
    p += count;
    if (p >= boundary && p < end) {
      ++g;
      boundary += G;
      if constexpr (kCode == CodeKind::Int4) {
        if (straddle) table = next;
        else table.Quant(w.groups.scale[g], w.groups.zero[g], w.c.iota);
      }
    }
  };
  for (int64_t wi = 0; wi < a.bitmap_words_per_row; ++wi) {
    const uint64_t word = words[wi];
    if (word == 0) continue;
    for (int64_t q = 0; q < 64; q += 2 * L) {
      chunk(word, wi, q, acc0);
      chunk(word, wi, q + L, acc1);
    }
  }
  for (size_t t = 0; t < MT; ++t) a.y[(m0 + t) * a.ldy + r] = SumLanes(hn::Add(acc0[t], acc1[t]));
}
#endif  // SPARSA_CODEC_VECTOR

// ---- scalar fallback (the 1-lane target) ------------------------------------------------------
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
        add(wi * 64 + hwy::Num0BitsBelowLS1Bit_Nonzero64(bits),
            TailWeight(w, i, (i - a.row_ptr[r]) / G));
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
#endif
  }
}

template <CodeKind kCode>
int64_t RunRows(const CodecKernelArgs& a, int64_t n0, int64_t n1) {
  Work w{a, MakeConsts(), {}, {}, {}, {}, 0};
  const bool quantised = kCode != CodeKind::Codebook4;
  const int64_t L = static_cast<int64_t>(kLanes), G = a.group_size;
  if (!a.per_channel && !quantised) w.book.Load(a.codebook);
  // Dense: X reordered per C = n*L column block for n codes per lane (DenseLaneCodes):
  // xq[b*C + k*L + d] = x[b*C + n*d + k]. Only full blocks are read reordered.
  const int64_t lane_codes = a.format == FormatKind::Dense ? DenseLaneCodes<kCode>(G) : 1;
  if (lane_codes > 1) {
    const int64_t C = lane_codes * L;
    w.xq = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * a.kp));
    for (int64_t m = 0; m < a.m; ++m) {
      const float* src = a.xp + m * a.kp;
      float* dst = w.xq.get() + m * a.kp;
      for (int64_t b = 0; b + C <= a.kp; b += C)
        for (int64_t k = 0; k < lane_codes; ++k)
          for (int64_t d = 0; d < L; ++d) dst[b + k * L + d] = src[b + lane_codes * d + k];
    }
  }
  // Dense int8 asym: sums of X over each group's vector-covered columns (all of a full group;
  // multiples of L in the last, partial one).
  if (a.format == FormatKind::Dense && kCode == CodeKind::Int8Unsigned) {
    w.groups_per_row = (a.cols + G - 1) / G;
    w.xsum = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * w.groups_per_row));
    for (int64_t m = 0; m < a.m; ++m)
      for (int64_t g = 0; g < w.groups_per_row; ++g) {
        const int64_t a0 = g * G, covered = (std::min(a.cols, a0 + G) - a0) / L * L;
        float s = 0;
        for (int64_t k = a0; k < a0 + covered; ++k) s += a.xp[m * a.kp + k];
        w.xsum[m * w.groups_per_row + g] = s;
      }
  }
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

// vnm: X's kept columns of row block rb into xsel ([m, vnm_gathered_kp(a)]), as vnm_gather_x.
// AVX-512 with M <= 32: 16 gathered columns (4 column blocks) per vpermt2ps from a 32-float
// window of X (the kept offsets widened plus each block's start; 2 windows for M <= 16, 4 up to
// 32), as codec_gemm_x8.cc's VnmGatherQuantize; one at a time ~11% of a 64:2:8 call.
void VnmGather(const CodecKernelArgs& a, int64_t rb, float* xsel) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  const int64_t M = a.vnm_m;
  if (M <= 32) {
    const int64_t per = M <= 8 ? 4 : M <= 16 ? 2 : 1;  // column blocks per 32-float window
    const int parts = static_cast<int>(4 / per);
    const int64_t cbn = a.vnm_col_blocks, kp = vnm_gathered_kp(a);
    const uint8_t* kept = a.vnm_columns + rb * cbn * 4;
    HWY_ALIGN int32_t off[16];
    for (int p = 0; p < 16; ++p) off[p] = static_cast<int32_t>(p / 4 % per * M);
    const __m512i lane_off = _mm512_load_si512(off);
    const __mmask16 part = static_cast<__mmask16>((1u << (4 * per)) - 1);  // lanes of window 0
    for (int64_t t = 0; t < a.m; ++t) {
      const float* x = a.xp + t * a.kp;
      float* dst = xsel + t * kp;
      int64_t cb0 = 0;
      for (; cb0 + 4 <= cbn && (cb0 + 4 - per) * M + 32 <= a.kp; cb0 += 4) {
        const __m512i idx = _mm512_add_epi32(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kept + 4 * cb0))),
            lane_off);
        const float* w = x + cb0 * M;
        __m512 v = _mm512_permutex2var_ps(_mm512_loadu_ps(w), idx, _mm512_loadu_ps(w + 16));
        for (int j = 1; j < parts; ++j) {
          w = x + (cb0 + j * per) * M;
          v = _mm512_mask_mov_ps(v, static_cast<__mmask16>(part << (4 * per * j)),
                                 _mm512_permutex2var_ps(_mm512_loadu_ps(w), idx, _mm512_loadu_ps(w + 16)));
        }
        _mm512_storeu_ps(dst + 4 * cb0, v);
      }
      for (; cb0 < cbn; ++cb0)  // the row's end: one at a time
        for (int j = 0; j < 4; ++j) {
          const int64_t col = cb0 * M + kept[cb0 * 4 + j];
          dst[cb0 * 4 + j] = col < a.cols ? x[col] : 0.0f;
        }
      std::fill(dst + 4 * cbn, dst + kp, 0.0f);
    }
    return;
  }
#endif
  vnm_gather_x(a, rb, xsel);
}

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
#include "hwy/aligned_allocator.h"
#include "sparsa/error.h"

namespace sparsa::cpu {

HWY_EXPORT(CodecRows);
HWY_EXPORT(VnmGather);

void codec_gemm_simd(const CodecKernelArgs& a) {
  if (a.m == 0 || a.rows == 0) return;
  if (a.format == FormatKind::VNM) {  // threads split the row blocks; each block's X gathered
    // into the thread's buffer, then the block as 2:4 rows over it
    const int64_t blocks = (a.rows + a.vnm_v - 1) / a.vnm_v;
    const double work =
        static_cast<double>(a.m) * a.rows * 2 * std::max<int64_t>(a.vnm_col_blocks, 1);
    parallel_rows(blocks, 1, work, [&](int64_t b0, int64_t b1) {
      auto xsel = hwy::AllocateAligned<float>(static_cast<size_t>(a.m * vnm_gathered_kp(a)));
      for (int64_t rb = b0; rb < b1; ++rb) {
        HWY_DYNAMIC_DISPATCH(VnmGather)(a, rb, xsel.get());
        CodecKernelArgs b = vnm_block_view(a, rb);
        b.x = b.xp = xsel.get();
        HWY_DYNAMIC_DISPATCH(CodecRows)(b, 0, b.rows);
      }
    });
    return;
  }
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
