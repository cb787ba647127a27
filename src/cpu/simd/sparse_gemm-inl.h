// Per-target pieces shared by the CPU SIMD kernels (src/cpu/simd/*_gemm.cc), compiled once per
// Highway target through foreach_target.h (the gemma.cpp pattern).
//
// Every sparse format is reduced to a *row decoder*: for output row n it emits the row's
// nonzeros in chunks of L lanes, (column vector, value vector), values already converted to f32
// in registers. Padding lanes carry value 0 and a column whose X entry is 0, so they add nothing
// even next to inf/NaN activations. Two drivers consume the chunks:
//
//   gather      (small M, decode-bound): acc[m] += vals * Gather(X[m], cols) for a tile of up
//               to 4 rows of X, so each chunk is decoded once for the tile; one horizontal sum
//               per (m, n) at the end of the row. X is first copied to a zero-padded buffer so
//               that padded and past-the-edge columns read 0.
//   transposed  (larger M, compute-bound): X block of MB = MBV*L rows transposed once into
//               Xt[K][MB]; every nonzero (col, v) then does MBV FMAs v * Xt[col] into the row's
//               MB accumulators: no gathers, contiguous loads from an L2-resident Xt.
#if defined(SPARSA_CPU_SIMD_SPARSE_GEMM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SPARSA_CPU_SIMD_SPARSE_GEMM_INL_H_
#undef SPARSA_CPU_SIMD_SPARSE_GEMM_INL_H_
#else
#define SPARSA_CPU_SIMD_SPARSE_GEMM_INL_H_
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "sparsa/half.h"
#include "sparsa/kernels.h"

HWY_BEFORE_NAMESPACE();
namespace sparsa::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;
using VU = hn::Vec<DU>;
inline constexpr size_t kMaxLanes = hn::MaxLanes(DF());

// Rows of X below which the gather driver is used; from there on the transposed one.
inline constexpr int64_t kTransposeMinM = 8;
// Rows of X that share one decode in the gather driver.
inline constexpr int64_t kGatherTile = 4;

// Software prefetch of the weight streams, two levels: into L2 4 KiB ahead and from there into L1
// 512 bytes ahead. A decode loop spends ~13 instructions per 64-byte line (the dense loop ~2), so
// the out-of-order window covers far less than a DRAM latency and the hardware prefetcher alone
// leaves the stream half-starved; a single L1 prefetch 1 KiB ahead is capped by the L1 miss
// buffers. In a stand-alone 2:8 loop on the Zen 4 VM: no prefetch 1.07 ms, L1 only 0.92-1.02 ms,
// L2 4-8 KiB + L1 512 B 0.60-0.66 ms (pure streaming of the same bytes: 0.51 ms).
template <class T>
HWY_INLINE void PrefetchAhead(const T* p) {
  const char* c = reinterpret_cast<const char*>(p);
#if HWY_ARCH_X86
  _mm_prefetch(c + 4096, _MM_HINT_T1);
  _mm_prefetch(c + 512, _MM_HINT_T0);
#else
  hwy::Prefetch(c + 512);
#endif
}

// ---- weights: f32, f16 or bf16, widened to f32 in registers
// --------------------------------------
HWY_INLINE VF LoadW(DF d, const float* HWY_RESTRICT p) { return hn::LoadU(d, p); }
HWY_INLINE VF LoadW(DF d, const hwy::float16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(d, hn::LoadU(dh, p));
}
HWY_INLINE VF LoadW(DF d, const hwy::bfloat16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::bfloat16_t, DF> dh;
  return hn::PromoteTo(d, hn::LoadU(dh, p));
}
HWY_INLINE float ToF32(float v) { return v; }
HWY_INLINE float ToF32(hwy::float16_t v) { return f32_from_f16(v.bits); }
HWY_INLINE float ToF32(hwy::bfloat16_t v) { return f32_from_bf16(v.bits); }

// The first n (< L) weights at p, the other lanes 0; never reads past p + n.
template <class WT>
HWY_INLINE VF LoadWTail(DF d, const WT* HWY_RESTRICT p, size_t n) {
  HWY_ALIGN WT buf[kMaxLanes] = {};
  std::memcpy(buf, p, n * sizeof(WT));
  return LoadW(d, buf);
}

HWY_INLINE float SumLanes(DF d, VF v) { return hn::GetLane(hn::SumOfLanes(d, v)); }

// ---- sinks: what the drivers do with each decoded chunk
// ------------------------------------------- Decoders hand chunks to a sink in one of three
// shapes:
//   sink(cols, vals)                      absolute columns (any decoder)
//   sink.Window<NV>(start, local, vals)   columns start + local with local < NV*L (NV = 1, 2, 4):
//                                         the gather driver replaces the gather by NV in-register
//                                         table lookups of X[start .. start + NV*L)
//   sink.Compressed(col0, mask, n, vals)  the n set lanes of `mask` over columns col0 .. col0+L,
//                                         values contiguous (bitmap): X is compressed, not gathered
// Gathers cost ~40 cycles per 16 lanes on the Zen4 VM this was tuned on (2.5 per element), the
// other two shapes a few cycles per chunk.
template <size_t MT>
struct GatherSink {
  static constexpr bool kGather = true;
  // Independent accumulators per row of X for Compressed<J>, so that the FMA latency of
  // back-to-back slices does not serialise (with 4 rows the rows themselves are independent).
  static constexpr size_t kSlots = MT == 1 ? 4 : MT == 2 ? 2 : 1;
  const float* HWY_RESTRICT xp;  // padded X, MT rows of stride ld
  int64_t ld;
  VF acc[MT * kSlots];

  HWY_INLINE void Zero() {
    for (size_t i = 0; i < MT * kSlots; ++i) acc[i] = hn::Zero(DF());
  }
  HWY_INLINE float Sum(size_t i) const {
    VF s = acc[i * kSlots];
    for (size_t j = 1; j < kSlots; ++j) s = hn::Add(s, acc[i * kSlots + j]);
    return SumLanes(DF(), s);
  }

  HWY_INLINE void operator()(VI cols, VF vals) {
    const DF d;
    for (size_t i = 0; i < MT; ++i) {
      acc[i * kSlots] = hn::MulAdd(vals, hn::GatherIndex(d, xp + i * ld, cols), acc[i * kSlots]);
    }
  }
  // The NV vectors X[m, start .. start + NV*L) of a window, for each of the MT rows.
  template <size_t NV>
  struct XWindow {
    VF v[MT][NV];
  };
  template <size_t NV>
  HWY_INLINE XWindow<NV> LoadWindow(int64_t start) const {
    const DF d;
    const size_t L = hn::Lanes(d);
    XWindow<NV> w;
    for (size_t i = 0; i < MT; ++i)
      for (size_t k = 0; k < NV; ++k) w.v[i][k] = hn::LoadU(d, xp + i * ld + start + k * L);
    return w;
  }
  // acc += vals * X[start + local] with the window already in registers: rows decoded in
  // lockstep share one LoadWindow (at M = 1 the X loads are what limits the chunk rate).
  template <size_t NV>
  HWY_INLINE void ApplyWindow(const XWindow<NV>& w, VI local, VF vals) {
    const DF d;
    const DI di;
    const int32_t L = static_cast<int32_t>(hn::Lanes(d));
    const auto hi2 = hn::RebindMask(d, hn::TestBit(local, hn::Set(di, 2 * L)));
#if HWY_TARGET <= HWY_AVX3
    // AVX-512 has a two-table permute (vpermt2ps: 32 entries, index bit 4 picks the table),
    // which Highway 1.0.3 does not expose: it halves the shuffles of the 2- and 4-vector windows.
    if constexpr (NV >= 2 && kMaxLanes == 16) {
      for (size_t i = 0; i < MT; ++i) {
        VF g{_mm512_permutex2var_ps(w.v[i][0].raw, local.raw, w.v[i][1].raw)};
        if constexpr (NV == 4) {
          const VF hi{_mm512_permutex2var_ps(w.v[i][2].raw, local.raw, w.v[i][3].raw)};
          g = hn::IfThenElse(hi2, hi, g);
        }
        acc[i * kSlots] = hn::MulAdd(vals, g, acc[i * kSlots]);
      }
      return;
    }
#endif
    const auto idx = hn::IndicesFromVec(d, hn::And(local, hn::Set(di, L - 1)));
    const auto hi1 = hn::RebindMask(d, hn::TestBit(local, hn::Set(di, L)));
    for (size_t i = 0; i < MT; ++i) {
      VF g = hn::TableLookupLanes(w.v[i][0], idx);
      if constexpr (NV >= 2) g = hn::IfThenElse(hi1, hn::TableLookupLanes(w.v[i][1], idx), g);
      if constexpr (NV == 4) {
        const VF t2 = hn::TableLookupLanes(w.v[i][2], idx);
        const VF t3 = hn::TableLookupLanes(w.v[i][3], idx);
        g = hn::IfThenElse(hi2, hn::IfThenElse(hi1, t3, t2), g);
      }
      acc[i * kSlots] = hn::MulAdd(vals, g, acc[i * kSlots]);
    }
  }
  template <size_t NV>
  HWY_INLINE void Window(int64_t start, VI local, VF vals) {
    ApplyWindow<NV>(LoadWindow<NV>(start), local, vals);
  }
  template <size_t J, class M>
  HWY_INLINE void Compressed(int64_t col0, M mask, size_t n, VF vals) {
    const DF d;
    for (size_t i = 0; i < MT; ++i) {
      VF xc = hn::Compress(hn::LoadU(d, xp + i * ld + col0), mask);
#if HWY_TARGET > HWY_AVX3
      // Lanes past the n compressed ones are unspecified in general; they meet other columns'
      // values, so zero them. (AVX-512's vcompressps {z} already writes zeros there.)
      xc = hn::IfThenElseZero(hn::FirstN(d, n), xc);
#else
      (void)n;
#endif
      VF& a = acc[i * kSlots + J % kSlots];
      a = hn::MulAdd(vals, xc, a);
    }
  }
};

template <size_t MBV>
struct TransposedSink {
  static constexpr bool kGather = false;
  // Nonzeros rotate over kSlots accumulator sets so that consecutive FMAs into the same
  // registers are kSlots * MBV apart (4 chains hide the FMA latency).
  static constexpr size_t kSlots = HWY_MIN(4 / MBV, kMaxLanes);
  const float* HWY_RESTRICT xt;  // Xt[kp][MBV * L]
  VF acc[kSlots * MBV];

  HWY_INLINE void Zero() {
    for (size_t i = 0; i < kSlots * MBV; ++i) acc[i] = hn::Zero(DF());
  }
  // The MBV result vectors, into out[MBV * L].
  HWY_INLINE void Store(float* HWY_RESTRICT out) const {
    const DF d;
    for (size_t q = 0; q < MBV; ++q) {
      VF s = acc[q];
      for (size_t j = 1; j < kSlots; ++j) s = hn::Add(s, acc[j * MBV + q]);
      hn::Store(s, d, out + q * hn::Lanes(d));
    }
  }

  template <size_t NV>
  HWY_INLINE void Window(int64_t start, VI local, VF vals) {
    (*this)(hn::Add(local, hn::Set(DI(), static_cast<int32_t>(start))), vals);
  }
  HWY_INLINE void operator()(VI cols, VF vals) {
    const DF d;
    const DI di;
    const size_t L = hn::Lanes(d);
    HWY_ALIGN int32_t c[kMaxLanes];
    HWY_ALIGN float v[kMaxLanes];
    hn::Store(cols, di, c);
    hn::Store(vals, d, v);
    for (size_t l = 0; l < L; l += kSlots) {
      for (size_t j = 0; j < kSlots; ++j) {
        const float* HWY_RESTRICT row = xt + static_cast<int64_t>(c[l + j]) * (MBV * L);
        const VF w = hn::Set(d, v[l + j]);
        for (size_t q = 0; q < MBV; ++q) {
          VF& a = acc[j * MBV + q];
          a = hn::MulAdd(w, hn::Load(d, row + q * L), a);
        }
      }
    }
  }
};

// ---- drivers ------------------------------------------------------------------------------------
// Rows [m0, m0 + mt) of X copied into [mt, kp] with zeros from column K on (kp > K).
inline hwy::AlignedFreeUniquePtr<float[]> PadX(const GemmArgs& a, int64_t m0, int64_t mt,
                                               int64_t kp) {
  const int64_t k = a.w->cols;
  auto xp = hwy::AllocateAligned<float>(static_cast<size_t>(mt * kp));
  for (int64_t i = 0; i < mt; ++i) {
    std::memcpy(xp.get() + i * kp, a.x + (m0 + i) * a.ldx, sizeof(float) * k);
    std::fill(xp.get() + i * kp + k, xp.get() + (i + 1) * kp, 0.0f);
  }
  return xp;
}

// A decoder either emits one row, Row(n, sink), or R rows in lockstep, RowsR<R>(rows, sinks)
// (nm and vnm: all their rows hold the same number of values, so R rows share X windows).
template <class Decoder>
concept HasRowGroups = requires(const Decoder& dec, const int64_t* rows, GatherSink<1>* sinks) {
  dec.template RowsR<1>(rows, sinks);
};

template <class Decoder, class Sink>
HWY_INLINE void DecodeRow(const Decoder& dec, int64_t n, Sink& sink) {
  if constexpr (HasRowGroups<Decoder>) {
    dec.template RowsR<1>(&n, &sink);
  } else {
    dec.Row(n, sink);
  }
}

template <size_t MT, class Decoder>
HWY_NOINLINE void GatherRowsTile(const GemmArgs& a, const Decoder& dec, const float* xp, int64_t kp,
                                 int64_t m0, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if constexpr (MT == 1 && HasRowGroups<Decoder>) {
    // 4 rows decoded in lockstep: they share X windows, and 4 weight streams are in flight.
    constexpr int64_t R = 4;
    for (; n + R <= n1; n += R) {
      GatherSink<1> sinks[R] = {{xp, kp, {}}, {xp, kp, {}}, {xp, kp, {}}, {xp, kp, {}}};
      for (auto& s : sinks) s.Zero();
      const int64_t rows[R] = {n, n + 1, n + 2, n + 3};
      dec.template RowsR<R>(rows, sinks);
      for (int64_t r = 0; r < R; ++r) a.y[m0 * a.ldy + n + r] = sinks[r].Sum(0);
    }
  }
  for (; n < n1; ++n) {
    GatherSink<MT> sink{xp, kp, {}};
    sink.Zero();
    DecodeRow(dec, n, sink);
    for (size_t i = 0; i < MT; ++i) a.y[(m0 + i) * a.ldy + n] = sink.Sum(i);
  }
}

template <class Decoder>
void GatherRows(const GemmArgs& a, const Decoder& dec, int64_t kp, int64_t n0, int64_t n1) {
  const auto xp = PadX(a, 0, a.m, kp);
  for (int64_t m0 = 0; m0 < a.m; m0 += kGatherTile) {
    const float* x = xp.get() + m0 * kp;
    switch (std::min(kGatherTile, a.m - m0)) {
      case 1:
        GatherRowsTile<1>(a, dec, x, kp, m0, n0, n1);
        break;
      case 2:
        GatherRowsTile<2>(a, dec, x, kp, m0, n0, n1);
        break;
      case 3:
        GatherRowsTile<3>(a, dec, x, kp, m0, n0, n1);
        break;
      default:
        GatherRowsTile<4>(a, dec, x, kp, m0, n0, n1);
        break;
    }
  }
}

// Xt[k][j] = X[m0 + j][k] for j < mt and k < K; 0 elsewhere. Xt is [kp][mb].
inline void TransposeX(const GemmArgs& a, int64_t m0, int64_t mt, int64_t mb, int64_t kp,
                       float* HWY_RESTRICT xt) {
  const int64_t k = a.w->cols;
  std::fill(xt, xt + kp * mb, 0.0f);
  constexpr int64_t kBlock = 64;  // columns of X per pass: the Xt lines written stay in L1
  for (int64_t k0 = 0; k0 < k; k0 += kBlock) {
    const int64_t k1 = std::min(k, k0 + kBlock);
    for (int64_t j = 0; j < mt; ++j) {
      const float* HWY_RESTRICT xr = a.x + (m0 + j) * a.ldx;
      for (int64_t kk = k0; kk < k1; ++kk) xt[kk * mb + j] = xr[kk];
    }
  }
}

template <size_t MBV, class Decoder>
HWY_NOINLINE void TransposedRowsMB(const GemmArgs& a, const Decoder& dec, int64_t kp, int64_t n0,
                                   int64_t n1) {
  const DF d;
  const int64_t mb = static_cast<int64_t>(MBV * hn::Lanes(d));
  auto xt = hwy::AllocateAligned<float>(static_cast<size_t>(kp * mb));
  HWY_ALIGN float out[MBV * kMaxLanes];
  for (int64_t m0 = 0; m0 < a.m; m0 += mb) {
    const int64_t mt = std::min(mb, a.m - m0);
    TransposeX(a, m0, mt, mb, kp, xt.get());
    for (int64_t n = n0; n < n1; ++n) {
      TransposedSink<MBV> sink{xt.get(), {}};
      sink.Zero();
      DecodeRow(dec, n, sink);
      sink.Store(out);
      for (int64_t j = 0; j < mt; ++j) a.y[(m0 + j) * a.ldy + n] = out[j];
    }
  }
}

// Y rows [n0, n1) for any row decoder; kp > K covers every column a decoder may emit.
template <class Decoder>
void SparseRows(const GemmArgs& a, const Decoder& dec, int64_t kp, int64_t n0, int64_t n1) {
  if (a.m <= 0 || n0 >= n1) return;
  if (a.m < kTransposeMinM) return GatherRows(a, dec, kp, n0, n1);
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(DF()));
  if (a.m <= lanes) return TransposedRowsMB<1>(a, dec, kp, n0, n1);
  return TransposedRowsMB<2>(a, dec, kp, n0, n1);
}

// Emits `count` nonzeros whose columns come from `cols(i)` (any integer type) and whose values
// are contiguous at `vals`; the tail chunk is padded with (zero_col, 0).
template <class WT, class ColFn, class Sink>
HWY_INLINE void EmitTail(const WT* HWY_RESTRICT vals, int64_t begin, int64_t count,
                         int32_t zero_col, const ColFn& cols, Sink& sink) {
  if (begin >= count) return;
  const DF d;
  const DI di;
  HWY_ALIGN int32_t c[kMaxLanes];
  const size_t rest = static_cast<size_t>(count - begin);
  for (size_t l = 0; l < hn::Lanes(d); ++l) {
    c[l] = l < rest ? static_cast<int32_t>(cols(begin + static_cast<int64_t>(l))) : zero_col;
  }
  sink(hn::Load(di, c), LoadWTail(d, vals + begin, rest));
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
