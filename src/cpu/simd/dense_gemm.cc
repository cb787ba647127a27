// Dense Y = X * W^T, the baseline every sparse kernel is measured against.
//
// Both X [M, K] and W [N, K] are K-contiguous, so the kernel is a grid of dot products: an
// (MR, NR) tile of MR rows of X by NR rows of W keeps MR*NR vector accumulators over a K block
// and reduces each one horizontally at the end. W is widened to f32 in registers (f16/bf16), once
// per tile, i.e. once per MR rows of X.
//
// Blocking: (MB = 64 rows of X, Kc = 1024 columns) blocks keep X's block (256 KiB) in L2 while all
// of the thread's W rows stream past it; each W tile (NR x Kc) stays in L1 across the MB/MR tiles.
// W is read from memory ceil(M / MB) times. For M <= 4 the K block is all of K: one pass, one
// reduction per output.
//
// Measured (AMD EPYC Zen 4 VM, 2 threads, docs/kernels.md): M = 1, 4096 x 4096 f32 1.4-2.2 ms
// (32-47 GB/s, with the DRAM bandwidth of the moment), on par with OpenBLAS sgemv; M = 16 1.9x
// faster than OpenBLAS sgemm; M = 256 0.75x of it (no packing of W, dot-product tiles).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/dense_gemm.cc"
// clang-format off
#include "hwy/foreach_target.h"  // IWYU pragma: keep  (re-includes this file once per target)
#include "hwy/highway.h"
#include "cpu/simd/value_type.h"
#include "cpu/simd/sparse_gemm-inl.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace sparsa::cpu::HWY_NAMESPACE {
namespace {

// 16 accumulators + NR weights + 1 activation must fit the register file: 32 on AVX-512,
// 16 on AVX2 and below.
#if HWY_TARGET <= HWY_AVX3
constexpr int64_t kNR = 4;
#else
constexpr int64_t kNR = 2;
#endif
constexpr int64_t kMR = 4;
constexpr int64_t kMB = 64;
constexpr int64_t kKc = 1024;

// y[i, j] (+)= sum_{k in [k0, k1)} x[i, k] * w[j, k] for i < MR, j < NR.
template <size_t MR, size_t NR, class WT>
HWY_NOINLINE void DenseTile(const float* HWY_RESTRICT x, int64_t ldx, const WT* HWY_RESTRICT w,
                            int64_t ldw, int64_t k0, int64_t k1, float* HWY_RESTRICT y, int64_t ldy,
                            bool add) {
  const DF d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  VF acc[MR][NR];
  for (size_t i = 0; i < MR; ++i)
    for (size_t j = 0; j < NR; ++j) acc[i][j] = hn::Zero(d);
  int64_t k = k0;
  for (; k + L <= k1; k += L) {
    VF wv[NR];
    for (size_t j = 0; j < NR; ++j) wv[j] = LoadW(d, w + j * ldw + k);
    for (size_t i = 0; i < MR; ++i) {
      const VF xv = hn::LoadU(d, x + i * ldx + k);
      for (size_t j = 0; j < NR; ++j) acc[i][j] = hn::MulAdd(xv, wv[j], acc[i][j]);
    }
  }
  for (size_t i = 0; i < MR; ++i) {
    for (size_t j = 0; j < NR; ++j) {
      float s = SumLanes(d, acc[i][j]);
      for (int64_t kk = k; kk < k1; ++kk) s += x[i * ldx + kk] * ToF32(w[j * ldw + kk]);
      float& out = y[i * ldy + j];
      out = add ? out + s : s;
    }
  }
}

template <size_t MR, class WT>
HWY_INLINE void TileNR(int64_t nr, const float* x, int64_t ldx, const WT* w, int64_t ldw,
                       int64_t k0, int64_t k1, float* y, int64_t ldy, bool add) {
  switch (nr) {
    case 1:
      return DenseTile<MR, 1>(x, ldx, w, ldw, k0, k1, y, ldy, add);
#if HWY_TARGET <= HWY_AVX3
    case 2:
      return DenseTile<MR, 2>(x, ldx, w, ldw, k0, k1, y, ldy, add);
    case 3:
      return DenseTile<MR, 3>(x, ldx, w, ldw, k0, k1, y, ldy, add);
    default:
      return DenseTile<MR, 4>(x, ldx, w, ldw, k0, k1, y, ldy, add);
#else
    default:
      return DenseTile<MR, 2>(x, ldx, w, ldw, k0, k1, y, ldy, add);
#endif
  }
}

template <class WT>
void DenseRowsT(const GemmArgs& a, const WT* w, int64_t n0, int64_t n1) {
  const int64_t k = a.w->cols;
  if (k == 0) {
    for (int64_t m = 0; m < a.m; ++m) std::fill(a.y + m * a.ldy + n0, a.y + m * a.ldy + n1, 0.0f);
    return;
  }
  const int64_t kc = a.m <= kMR ? k : kKc;
  for (int64_t mb = 0; mb < a.m; mb += kMB) {
    const int64_t mb1 = std::min(a.m, mb + kMB);
    for (int64_t kb = 0; kb < k; kb += kc) {
      const int64_t kb1 = std::min(k, kb + kc);
      for (int64_t n = n0; n < n1; n += kNR) {
        const int64_t nr = std::min(kNR, n1 - n);
        const WT* wt = w + n * k;
        for (int64_t m = mb; m < mb1; m += kMR) {
          const float* x = a.x + m * a.ldx;
          float* y = a.y + m * a.ldy + n;
          switch (std::min(kMR, mb1 - m)) {
            case 1:
              TileNR<1>(nr, x, a.ldx, wt, k, kb, kb1, y, a.ldy, kb > 0);
              break;
            case 2:
              TileNR<2>(nr, x, a.ldx, wt, k, kb, kb1, y, a.ldy, kb > 0);
              break;
            case 3:
              TileNR<3>(nr, x, a.ldx, wt, k, kb, kb1, y, a.ldy, kb > 0);
              break;
            default:
              TileNR<4>(nr, x, a.ldx, wt, k, kb, kb1, y, a.ldy, kb > 0);
              break;
          }
        }
      }
    }
  }
}

}  // namespace

void DenseRows(const GemmArgs& a, int64_t n0, int64_t n1) {
  const auto* values = a.w->array("values").bytes.data();
  with_value_type(a.w->value_dtype, [&]<class WT>(WT) {
    DenseRowsT(a, reinterpret_cast<const WT*>(values), n0, n1);
  });
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "cpu/cpu_kernels.h"
#include "cpu/simd/check.h"
#include "cpu/simd/parallel.h"

namespace sparsa::cpu {

HWY_EXPORT(DenseRows);

void dense_gemm_simd(const GemmArgs& a) {
  check_gemm_args(a);
  const PackedMatrix& w = *a.w;
  check_array(w, "values", {w.value_dtype}, static_cast<uint64_t>(w.rows * w.cols));
  if (a.m == 0) return;
  const double work = static_cast<double>(a.m) * w.rows * w.cols;
  parallel_rows(w.rows, 4, work, [&](int64_t n0, int64_t n1) {
    HWY_DYNAMIC_DISPATCH(DenseRows)(a, n0, n1);
  });
}

}  // namespace sparsa::cpu
#endif  // HWY_ONCE
