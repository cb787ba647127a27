// CSR Y = X * W^T: row_ptr I64[N+1], col_idx U16 (U32 when K > 65536) [nnz], values[nnz].
//
// Row decoder: L column indices are widened u16 -> i32 and L values -> f32 in registers; the
// drivers in sparse_gemm-inl.h then gather X[m, col] (small M) or broadcast each value against
// the transposed X row Xt[col] (M >= 8). At 90% sparsity with u16 indices the kernel reads
// 0.6 bytes per weight of the dense shape against 4 for dense f32.
//
// Versions (M = 1, 4096 x 4096 f32 at 90%, AMD EPYC Zen 4 VM): gathers without prefetch 1.5 ms on
// one thread; with a 1 KiB software prefetch of both streams 0.8 ms; two threads with the
// two-level prefetch 0.41-0.53 ms, 3.4-4.1x the dense kernel. A scalar loop and 8-lane gathers
// were not faster than 16-lane ones.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/csr_gemm.cc"
// clang-format off
#include "hwy/foreach_target.h"  // IWYU pragma: keep  (re-includes this file once per target)
#include "hwy/highway.h"
#include "cpu/simd/value_type.h"
#include "cpu/simd/sparse_gemm-inl.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace sparsa::cpu::HWY_NAMESPACE {
namespace {

// Indices are clamped to the zero column K: a corrupt index cannot read outside padded X.
HWY_INLINE VI LoadCols(const uint16_t* HWY_RESTRICT p, VU limit) {
  const DU du;
  const hn::Rebind<uint16_t, DU> d16;
  return hn::BitCast(DI(), hn::Min(hn::PromoteTo(du, hn::LoadU(d16, p)), limit));
}
HWY_INLINE VI LoadCols(const uint32_t* HWY_RESTRICT p, VU limit) {
  return hn::BitCast(DI(), hn::Min(hn::LoadU(DU(), p), limit));
}

template <class WT, class IT>
struct CsrDecoder {
  const int64_t* row_ptr;
  const IT* cols;
  const WT* vals;
  int32_t zero_col;

  template <class Sink>
  HWY_INLINE void Row(int64_t n, Sink& sink) const {
    const DF d;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    const int64_t begin = row_ptr[n], count = row_ptr[n + 1] - begin;
    const IT* HWY_RESTRICT c = cols + begin;
    const WT* HWY_RESTRICT v = vals + begin;
    const VU limit = hn::Set(DU(), static_cast<uint32_t>(zero_col));
    int64_t i = 0;
    for (; i + L <= count; i += L) {
      PrefetchAhead(v + i);
      PrefetchAhead(c + i);
      sink(LoadCols(c + i, limit), LoadW(d, v + i));
    }
    const uint32_t zero = static_cast<uint32_t>(zero_col);
    EmitTail(
        v, i, count, zero_col, [c, zero](int64_t j) { return std::min<uint32_t>(c[j], zero); },
        sink);
  }
};

template <class WT, class IT>
void CsrRowsT(const GemmArgs& a, int64_t n0, int64_t n1) {
  const PackedMatrix& w = *a.w;
  const CsrDecoder<WT, IT> dec{
      w.as<int64_t>("row_ptr").data(), reinterpret_cast<const IT*>(w.array("col_idx").bytes.data()),
      reinterpret_cast<const WT*>(w.array("values").bytes.data()), static_cast<int32_t>(w.cols)};
  SparseRows(a, dec, w.cols + 1, n0, n1);
}

template <class WT>
void CsrRowsW(const GemmArgs& a, int64_t n0, int64_t n1) {
  if (a.w->array("col_idx").dtype == DType::U16) return CsrRowsT<WT, uint16_t>(a, n0, n1);
  return CsrRowsT<WT, uint32_t>(a, n0, n1);
}

}  // namespace

void CsrRows(const GemmArgs& a, int64_t n0, int64_t n1) {
  with_value_type(a.w->value_dtype, [&]<class WT>(WT) { CsrRowsW<WT>(a, n0, n1); });
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "cpu/cpu_kernels.h"
#include "cpu/simd/check.h"
#include "cpu/simd/parallel.h"

namespace sparsa::cpu {

HWY_EXPORT(CsrRows);

void csr_gemm_simd(const GemmArgs& a) {
  check_gemm_args(a);
  const PackedMatrix& w = *a.w;
  const uint64_t nnz = check_offsets(w, "row_ptr", w.rows);
  check_array(w, "col_idx", {DType::U16, DType::U32}, nnz);
  check_array(w, "values", {w.value_dtype}, nnz);
  if (a.m == 0) return;
  const double work = static_cast<double>(a.m) * static_cast<double>(nnz) * 8;
  parallel_rows(w.rows, 1, work, [&](int64_t n0, int64_t n1) {
    HWY_DYNAMIC_DISPATCH(CsrRows)(a, n0, n1);
  });
}

}  // namespace sparsa::cpu
#endif  // HWY_ONCE
