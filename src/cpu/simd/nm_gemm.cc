// N:M Y = X * W^T: values[N_rows * G * n] (G = ceil(K/M), the n kept values of each group in
// ascending column order) and indices U32[N_rows * words_per_row], each value's offset inside its
// group in b bits (2 for M = 4, 4 for M <= 16, 8 for M <= 32), packed LSB first.
//
// Row decoder, per chunk of L values starting at value i (a multiple of L):
//   cols = base[i + lane] + offset(i + lane),   base[j] = (j / n) * M (one table per call)
// When L*b is a multiple of 32 bits (L = 16: every b; L = 8: b >= 4; L = 4: b = 8), the chunk's
// offsets sit in <= 4 whole words: LoadDup128 them, pick each lane's word with TableLookupLanes,
// shift by (lane*b mod 32) and mask. Otherwise (narrow targets) a scalar decode fills the lanes.
// Values stream contiguously; at M = 1 four rows advance in lockstep and share the X window.
// Bytes read for 2:8 f32: 1 (values) + 0.125 (4-bit offsets) per weight of the dense shape.
//
// Versions (M = 1, 4096 x 4096 f32, AMD EPYC Zen 4 VM; docs/kernels.md has the details):
//   v1 gather of X[cols]: 3.3 ms on one thread, ~90% of it in vgatherdps.
//   v2 window lookups (4 x vpermps / 2 x vpermt2ps + blend): 1.6 ms on one thread.
//   v3 4 rows in lockstep sharing the window, word broadcasts for the offsets: 2.0 ns per chunk
//      in cache (was 2.9); 0.78-0.85 ms on two threads from DRAM, 1.7-2.5x the dense kernel.
//   v4 two-level prefetch (sparse_gemm-inl.h): 0.70-0.71 ms, 2.5-2.9x the dense kernel.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/nm_gemm.cc"
// clang-format off
#include "hwy/foreach_target.h"  // IWYU pragma: keep  (re-includes this file once per target)
#include "hwy/highway.h"
#include "cpu/simd/value_type.h"
#include "cpu/simd/sparse_gemm-inl.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace sparsa::cpu::HWY_NAMESPACE {
namespace {

template <class WT>
struct NmDecoder {
  const WT* vals;
  const uint32_t* words;
  const int32_t* base;  // base[j] = (j / n) * M for j < values_per_row
  int64_t values_per_row, words_per_row;
  uint32_t bits, mask;
  int32_t zero_col;
  bool fast;   // L * bits is a multiple of 32 and at most 128: a chunk is 1, 2 or 4 whole words
  int window;  // X vectors a chunk's columns span (1, 2, 4), or 0: use absolute columns
  VI word_of_lane, shift_of_lane;

  HWY_INLINE uint32_t Offset(const uint32_t* HWY_RESTRICT row_words, int64_t j) const {
    const uint64_t bit = static_cast<uint64_t>(j) * bits;
    return (row_words[bit >> 5] >> (bit & 31)) & mask;
  }

  // Full chunks from value 0 on, their offsets taken from the WPC = L*b/32 words that hold them
  // (exactly those words are read): WPC = 1 and 2 by broadcasting each word (and one blend);
  // WPC = 4 by LoadDup128 + TableLookupLanes. NV > 0 emits chunks as windows of NV vectors of X
  // (needs n | L, so a chunk starts on a group), NV = 0 as absolute columns. R rows advance in
  // lockstep (R = 2 at M = 1: two weight streams per thread in flight instead of one).
  template <size_t NV, size_t WPC, size_t R, class Sink>
  HWY_INLINE int64_t FastChunks(const WT* const* v, const uint32_t* const* w, Sink* sinks) const {
    const DF d;
    const DI di;
    const DU du;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    const auto lookup = hn::IndicesFromVec(du, word_of_lane);
    const auto lower_half = hn::FirstN(du, static_cast<size_t>(L / 2));
    const VU field = hn::Set(du, mask);
    const VU shifts = hn::BitCast(du, shift_of_lane);
    const VI local_base = hn::LoadU(di, base);  // (lane / n) * M
    int64_t i = 0;
    for (; i + L <= values_per_row; i += L) {
      // Rows in lockstep share the X window (gather driver; the transposed one has no window).
      [[maybe_unused]] auto win = [&] {
        if constexpr (NV > 0 && R > 1 && Sink::kGather) {
          return sinks[0].template LoadWindow<NV>(base[i]);
        } else {
          return 0;
        }
      }();
      for (size_t r = 0; r < R; ++r) {
        PrefetchAhead(v[r] + i);
        const uint32_t* HWY_RESTRICT p = w[r] + static_cast<int64_t>(WPC) * (i / L);
        VU lanes;
        if constexpr (WPC == 1) {
          lanes = hn::Set(du, p[0]);
        } else if constexpr (WPC == 2) {
          PrefetchAhead(p);
          lanes = hn::IfThenElse(lower_half, hn::Set(du, p[0]), hn::Set(du, p[1]));
        } else {
          PrefetchAhead(p);
          lanes = hn::TableLookupLanes(hn::LoadDup128(du, p), lookup);
        }
        const VI offs = hn::BitCast(di, hn::And(lanes >> shifts, field));
        if constexpr (NV == 0) {
          sinks[r](hn::Add(hn::LoadU(di, base + i), offs), LoadW(d, v[r] + i));
        } else if constexpr (R > 1 && Sink::kGather) {
          sinks[r].template ApplyWindow<NV>(win, hn::Add(local_base, offs), LoadW(d, v[r] + i));
        } else {
          sinks[r].template Window<NV>(base[i], hn::Add(local_base, offs), LoadW(d, v[r] + i));
        }
      }
    }
    return i;
  }

  template <size_t NV, size_t R, class Sink>
  HWY_INLINE int64_t FastChunksW(const WT* const* v, const uint32_t* const* w, Sink* sinks) const {
    const int64_t words = static_cast<int64_t>(hn::Lanes(DF())) * bits / 32;
    if (words == 1) return FastChunks<NV, 1, R>(v, w, sinks);
    if (words == 2) return FastChunks<NV, 2, R>(v, w, sinks);
    return FastChunks<NV, 4, R>(v, w, sinks);
  }

  // Rows n[0..R) into sinks[0..R).
  template <size_t R, class Sink>
  HWY_INLINE void RowsR(const int64_t* n, Sink* sinks) const {
    const DF d;
    const DI di;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    const WT* v[R];
    const uint32_t* w[R];
    for (size_t r = 0; r < R; ++r) {
      v[r] = vals + n[r] * values_per_row;
      w[r] = words + n[r] * words_per_row;
    }
    int64_t start = 0;
    if (fast) {
      switch (window) {
        case 1:
          start = FastChunksW<1, R>(v, w, sinks);
          break;
        case 2:
          start = FastChunksW<2, R>(v, w, sinks);
          break;
        case 4:
          start = FastChunksW<4, R>(v, w, sinks);
          break;
        default:
          start = FastChunksW<0, R>(v, w, sinks);
          break;
      }
    }
    for (size_t r = 0; r < R; ++r) {
      HWY_ALIGN int32_t c[kMaxLanes];
      int64_t i = start;
      for (; i + L <= values_per_row; i += L) {
        for (int64_t l = 0; l < L; ++l) {
          c[l] = base[i + l] + static_cast<int32_t>(Offset(w[r], i + l));
        }
        sinks[r](hn::Load(di, c), LoadW(d, v[r] + i));
      }
      EmitTail(
          v[r], i, values_per_row, zero_col,
          [&](int64_t j) { return base[j] + static_cast<int32_t>(Offset(w[r], j)); }, sinks[r]);
    }
  }

};

// The gather driver decodes 4 rows in lockstep at M = 1 through RowsR.
static_assert(HasRowGroups<NmDecoder<float>>);

template <class WT>
void NmRowsT(const GemmArgs& a, int64_t n0, int64_t n1) {
  const PackedMatrix& w = *a.w;
  const DI di;
  const int64_t L = static_cast<int64_t>(hn::Lanes(di));
  const int n = w.pattern.n, m = w.pattern.m;
  const uint32_t bits = m <= 4 ? 2 : m <= 16 ? 4 : 8;
  const int64_t groups = (w.cols + m - 1) / m;
  const int64_t values_per_row = groups * n;
  const int64_t words_per_row = (values_per_row * bits + 31) / 32;
  auto base = hwy::AllocateAligned<int32_t>(static_cast<size_t>(values_per_row + L));
  for (int64_t j = 0; j < values_per_row + L; ++j) base[j] = static_cast<int32_t>(j / n * m);
  const auto indices = w.as<uint32_t>("indices");
  HWY_ALIGN int32_t word_of_lane[kMaxLanes], shift_of_lane[kMaxLanes];
  for (int64_t l = 0; l < L; ++l) {
    word_of_lane[l] = static_cast<int32_t>((l * bits) >> 5);
    shift_of_lane[l] = static_cast<int32_t>((l * bits) & 31);
  }
  // A chunk of L values covers L/n groups = L/n*M columns: NV = ceil(M/n) vectors of X.
  const int64_t nv = L % n == 0 ? (m + n - 1) / n : 0;
  const int window = nv == 1 ? 1 : nv == 2 ? 2 : (nv == 3 || nv == 4) ? 4 : 0;
  const NmDecoder<WT> dec{reinterpret_cast<const WT*>(w.array("values").bytes.data()),
                          indices.data(),
                          base.get(),
                          values_per_row,
                          words_per_row,
                          bits,
                          (1u << bits) - 1,
                          static_cast<int32_t>(w.cols),
                          (L * bits) % 32 == 0 && L * bits <= 128,
                          window,
                          hn::Load(di, word_of_lane),
                          hn::Load(di, shift_of_lane)};
  // Offsets are b-bit fields: even a corrupt one stays inside groups * m + 2^b padded columns.
  // Window loads reach up to 4 vectors past a chunk's first column.
  SparseRows(a, dec, std::max(w.cols + 1, groups * m + (int64_t{1} << bits) + 4 * L), n0, n1);
}

}  // namespace

void NmRows(const GemmArgs& a, int64_t n0, int64_t n1) {
  with_value_type(a.w->value_dtype, [&]<class WT>(WT) { NmRowsT<WT>(a, n0, n1); });
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "cpu/cpu_kernels.h"
#include "cpu/simd/check.h"
#include "cpu/simd/parallel.h"

namespace sparsa::cpu {

HWY_EXPORT(NmRows);

void nm_gemm_simd(const GemmArgs& a) {
  check_gemm_args(a);
  const PackedMatrix& w = *a.w;
  const int n = w.pattern.n, m = w.pattern.m;
  if (!(1 <= n && n < m && m <= 32)) {
    fail("nm matrix [{}, {}]: pattern {}:{} is not N:M with 1 <= N < M <= 32", w.rows, w.cols, n,
         m);
  }
  const uint64_t bits = m <= 4 ? 2 : m <= 16 ? 4 : 8;
  const uint64_t values_per_row = static_cast<uint64_t>((w.cols + m - 1) / m * n);
  check_array(w, "values", {w.value_dtype}, w.rows * values_per_row);
  check_array(w, "indices", {DType::U32}, w.rows * ((values_per_row * bits + 31) / 32));
  if (a.m == 0) return;
  const double work = static_cast<double>(a.m) * w.rows * values_per_row * 8;
  parallel_rows(w.rows, 1, work, [&](int64_t n0, int64_t n1) {
    HWY_DYNAMIC_DISPATCH(NmRows)(a, n0, n1);
  });
}

}  // namespace sparsa::cpu
#endif  // HWY_ONCE
