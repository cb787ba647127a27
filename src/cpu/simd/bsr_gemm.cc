// BSR Y = X * W^T: block_row_ptr I64[R+1], block_col U32[nblocks] (block column index),
// values[nblocks * bh * bw] (each block row-major, zero-padded at ragged edges).
//
// Small M (gather driver): a block is processed flat, L of its bh*bw values at a time; lane e of
// the block reads X[m, c0 + e mod bw]: a LoadDup128 when bw = 4 (the 4 x-values repeat in every
// 128-bit block), a plain load when bw is a multiple of L, a gather otherwise. The per-lane
// products accumulate in block shape over the block row; row r's result is the sum of its bw
// accumulator lanes.
// Large M (transposed driver): for each block column j, the Xt row of column c0 + j is loaded
// once and multiplied by the broadcast weights of up to 4 block rows (4 x MBV accumulators).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/bsr_gemm.cc"
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
struct Bsr {
  const int64_t* block_row_ptr;
  const uint32_t* block_col;
  const WT* vals;
  int64_t bh, bw;
};

// Small M: tile of MT rows of padded X, block rows [br0, br1).
template <size_t MT, class WT>
HWY_NOINLINE void BsrGatherTile(const GemmArgs& a, const Bsr<WT>& b, const float* xp, int64_t kp,
                                int64_t m0, int64_t br0, int64_t br1) {
  const DF d;
  const DI di;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  const int64_t size = b.bh * b.bw, chunks = (size + L - 1) / L;
  const int mode = b.bw == 4 && L % 4 == 0 ? 0 : b.bw % L == 0 ? 1 : 2;
  auto acc = hwy::AllocateAligned<float>(static_cast<size_t>(MT * chunks * L));
  auto jpat = hwy::AllocateAligned<int32_t>(static_cast<size_t>(chunks * L));
  for (int64_t e = 0; e < chunks * L; ++e) jpat[e] = static_cast<int32_t>(e < size ? e % b.bw : 0);
  for (int64_t br = br0; br < br1; ++br) {
    std::fill(acc.get(), acc.get() + MT * chunks * L, 0.0f);
    for (int64_t blk = b.block_row_ptr[br]; blk < b.block_row_ptr[br + 1]; ++blk) {
      const int64_t c0 = static_cast<int64_t>(b.block_col[blk]) * b.bw;
      const WT* HWY_RESTRICT bv = b.vals + blk * size;
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t e0 = c * L;
        const VF w = e0 + L <= size ? LoadW(d, bv + e0)
                                    : LoadWTail(d, bv + e0, static_cast<size_t>(size - e0));
        for (size_t i = 0; i < MT; ++i) {
          const float* HWY_RESTRICT xr = xp + i * kp + c0;
          VF xv;
          if (mode == 0) {
            xv = hn::LoadDup128(d, xr);
          } else if (mode == 1) {
            xv = hn::LoadU(d, xr + e0 % b.bw);
          } else {
            xv = hn::GatherIndex(d, xr, hn::Load(di, jpat.get() + e0));
          }
          float* HWY_RESTRICT ac = acc.get() + (i * chunks + c) * L;
          hn::Store(hn::MulAdd(w, xv, hn::Load(d, ac)), d, ac);
        }
      }
    }
    const int64_t rows = std::min(b.bh, a.w->rows - br * b.bh);
    for (size_t i = 0; i < MT; ++i) {
      const float* ac = acc.get() + i * chunks * L;
      for (int64_t r = 0; r < rows; ++r) {
        float s = 0.0f;
        for (int64_t j = 0; j < b.bw; ++j) s += ac[r * b.bw + j];
        a.y[(m0 + i) * a.ldy + br * b.bh + r] = s;
      }
    }
  }
}

// Large M: rows [r0, r0 + RG) of every block of block row br against Xt (MBV vectors wide).
template <size_t RG, size_t MBV, class WT>
HWY_INLINE void BsrTransposedRows(const GemmArgs& a, const Bsr<WT>& b, const float* xt,
                                  float* HWY_RESTRICT wbuf, int64_t m0, int64_t mt, int64_t br,
                                  int64_t r0) {
  const DF d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  const int64_t mb = static_cast<int64_t>(MBV) * L, size = b.bh * b.bw;
  VF acc[RG][MBV];
  for (size_t r = 0; r < RG; ++r)
    for (size_t q = 0; q < MBV; ++q) acc[r][q] = hn::Zero(d);
  for (int64_t blk = b.block_row_ptr[br]; blk < b.block_row_ptr[br + 1]; ++blk) {
    const int64_t c0 = static_cast<int64_t>(b.block_col[blk]) * b.bw;
    // Rows r0.. of the block, widened to f32 once.
    const WT* HWY_RESTRICT bv = b.vals + blk * size + r0 * b.bw;
    const int64_t count = static_cast<int64_t>(RG) * b.bw;
    int64_t e = 0;
    for (; e + L <= count; e += L) hn::Store(LoadW(d, bv + e), d, wbuf + e);
    for (; e < count; ++e) wbuf[e] = ToF32(bv[e]);
    for (int64_t j = 0; j < b.bw; ++j) {
      const float* HWY_RESTRICT xr = xt + (c0 + j) * mb;
      VF xv[MBV];
      for (size_t q = 0; q < MBV; ++q) xv[q] = hn::Load(d, xr + q * L);
      for (size_t r = 0; r < RG; ++r) {
        const VF w = hn::Set(d, wbuf[r * b.bw + j]);
        for (size_t q = 0; q < MBV; ++q) acc[r][q] = hn::MulAdd(w, xv[q], acc[r][q]);
      }
    }
  }
  HWY_ALIGN float out[MBV * kMaxLanes];
  for (size_t r = 0; r < RG; ++r) {
    const int64_t n = br * b.bh + r0 + static_cast<int64_t>(r);
    if (n >= a.w->rows) break;
    for (size_t q = 0; q < MBV; ++q) hn::Store(acc[r][q], d, out + q * L);
    for (int64_t j = 0; j < mt; ++j) a.y[(m0 + j) * a.ldy + n] = out[j];
  }
}

template <size_t MBV, class WT>
HWY_NOINLINE void BsrTransposed(const GemmArgs& a, const Bsr<WT>& b, int64_t kp, int64_t br0,
                                int64_t br1) {
  const DF d;
  const int64_t mb = static_cast<int64_t>(MBV * hn::Lanes(d));
  auto xt = hwy::AllocateAligned<float>(static_cast<size_t>(kp * mb));
  auto wbuf = hwy::AllocateAligned<float>(static_cast<size_t>(4 * b.bw));
  for (int64_t m0 = 0; m0 < a.m; m0 += mb) {
    const int64_t mt = std::min(mb, a.m - m0);
    TransposeX(a, m0, mt, mb, kp, xt.get());
    for (int64_t br = br0; br < br1; ++br) {
      for (int64_t r0 = 0; r0 < b.bh; r0 += 4) {
        switch (std::min<int64_t>(4, b.bh - r0)) {
          case 1:
            BsrTransposedRows<1, MBV>(a, b, xt.get(), wbuf.get(), m0, mt, br, r0);
            break;
          case 2:
            BsrTransposedRows<2, MBV>(a, b, xt.get(), wbuf.get(), m0, mt, br, r0);
            break;
          case 3:
            BsrTransposedRows<3, MBV>(a, b, xt.get(), wbuf.get(), m0, mt, br, r0);
            break;
          default:
            BsrTransposedRows<4, MBV>(a, b, xt.get(), wbuf.get(), m0, mt, br, r0);
            break;
        }
      }
    }
  }
}

template <class WT>
void BsrRowsT(const GemmArgs& a, int64_t n0, int64_t n1) {
  const PackedMatrix& w = *a.w;
  const Bsr<WT> b{w.as<int64_t>("block_row_ptr").data(), w.as<uint32_t>("block_col").data(),
                  reinterpret_cast<const WT*>(w.array("values").bytes.data()), w.pattern.block_rows,
                  w.pattern.block_cols};
  // parallel_rows hands out whole block rows.
  const int64_t br0 = n0 / b.bh, br1 = (n1 + b.bh - 1) / b.bh;
  const int64_t kp = std::max(w.cols + 1, (w.cols + b.bw - 1) / b.bw * b.bw);
  if (a.m < kTransposeMinM) {
    const auto xp = PadX(a, 0, a.m, kp);
    for (int64_t m0 = 0; m0 < a.m; m0 += kGatherTile) {
      const float* x = xp.get() + m0 * kp;
      switch (std::min(kGatherTile, a.m - m0)) {
        case 1:
          BsrGatherTile<1>(a, b, x, kp, m0, br0, br1);
          break;
        case 2:
          BsrGatherTile<2>(a, b, x, kp, m0, br0, br1);
          break;
        case 3:
          BsrGatherTile<3>(a, b, x, kp, m0, br0, br1);
          break;
        default:
          BsrGatherTile<4>(a, b, x, kp, m0, br0, br1);
          break;
      }
    }
  } else if (a.m <= static_cast<int64_t>(hn::Lanes(DF()))) {
    BsrTransposed<1>(a, b, kp, br0, br1);
  } else {
    BsrTransposed<2>(a, b, kp, br0, br1);
  }
}

}  // namespace

void BsrRows(const GemmArgs& a, int64_t n0, int64_t n1) {
  with_value_type(a.w->value_dtype, [&]<class WT>(WT) { BsrRowsT<WT>(a, n0, n1); });
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "cpu/cpu_kernels.h"
#include "cpu/simd/check.h"
#include "cpu/simd/parallel.h"

namespace sparsa::cpu {

HWY_EXPORT(BsrRows);

void bsr_gemm_simd(const GemmArgs& a) {
  check_gemm_args(a);
  const PackedMatrix& w = *a.w;
  const int64_t bh = w.pattern.block_rows, bw = w.pattern.block_cols;
  if (bh < 1 || bw < 1 || bh > 4096 || bw > 4096) {
    fail("bsr matrix [{}, {}]: block shape {}x{} is not between 1x1 and 4096x4096", w.rows, w.cols,
         bh, bw);
  }
  const int64_t block_rows = (w.rows + bh - 1) / bh, block_cols = (w.cols + bw - 1) / bw;
  const uint64_t blocks = check_offsets(w, "block_row_ptr", block_rows);
  check_array(w, "block_col", {DType::U32}, blocks);
  for (uint32_t c : w.as<uint32_t>("block_col").first(blocks)) {
    if (c >= block_cols) {
      fail("bsr matrix [{}, {}]: block column {} is outside the {} block columns", w.rows, w.cols,
           c, block_cols);
    }
  }
  check_array(w, "values", {w.value_dtype}, blocks * static_cast<uint64_t>(bh * bw));
  if (a.m == 0) return;
  const double work = static_cast<double>(a.m) * static_cast<double>(blocks) * bh * bw * 8;
  parallel_rows(w.rows, bh, work, [&](int64_t n0, int64_t n1) {
    HWY_DYNAMIC_DISPATCH(BsrRows)(a, n0, n1);
  });
}

}  // namespace sparsa::cpu
#endif  // HWY_ONCE
