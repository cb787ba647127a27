// V:N:M Y = X * W^T (N = 2): columns U8[RB * CB * 4] (the 4 kept column offsets of each V x M
// block), values[N_rows * CB * 2] (per row and block the 2 kept values) and metadata
// U32[N_rows * ceil(CB/8)] (per row and block one nibble idx0 | idx1 << 2 choosing among the
// block's 4 columns: the 2:4 metadata layout).
//
// Row decoder, per chunk of L values (L/2 blocks) starting at value i (a multiple of L <= 16,
// so one metadata word covers the chunk):
//   sel  = (meta_word >> 2*(i mod 16 + lane)) & 3            which of the block's 4 columns
//   word = the block's 4 column bytes as one u32, lane l taking block l/2 (TableLookupLanes)
//   cols = (i + lane) / 2 * M + ((word >> 8*sel) & 0xff)
// then the same drivers as CSR. Bytes read for 64:2:8 f32: 1 (values) + 0.0625 (metadata) +
// 0.0078 (column bytes) per weight of the dense shape.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/vnm_gemm.cc"
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
struct VnmDecoder {
  const WT* vals;
  const uint8_t* columns;
  const uint32_t* meta;
  const int32_t* base;  // base[j] = (j / 2) * M
  int64_t blocks, v, meta_per_row;
  int32_t zero_col;
  bool fast;   // L is even and divides 16
  int window;  // X vectors a chunk's columns span (1, 2, 4), or 0: use absolute columns
  VI half_lane, two_lane;

  HWY_INLINE int32_t Col(const uint8_t* cw, const uint32_t* mr, int64_t j) const {
    const int64_t block = j >> 1;
    const uint32_t sel = (mr[block >> 3] >> (4 * (block & 7) + 2 * (j & 1))) & 3;
    return base[j] + cw[block * 4 + sel];
  }

  // Full chunks from value 0 on; NV > 0 emits them as windows of NV vectors of X (a chunk of L
  // values spans L/2 blocks = L/2*M columns), NV = 0 as absolute columns. R rows advance in
  // lockstep and share each X window (gather driver at M = 1).
  template <size_t NV, size_t R, class Sink>
  HWY_INLINE int64_t FastChunks(const WT* const* vr, const uint32_t* const* mr,
                                const uint8_t* const* cw, Sink* sinks) const {
#if HWY_TARGET == HWY_SCALAR
    return 0;  // one lane: never `fast`
#else
    const DF d;
    const DI di;
    const DU du;
    const hn::Half<DU> dh;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    const int64_t values_per_row = 2 * blocks;
    const auto pick_block = hn::IndicesFromVec(du, half_lane);
    const VU two = hn::BitCast(du, two_lane);
    const VI local_base = hn::LoadU(di, base);  // (lane / 2) * M
    int64_t i = 0;
    for (; i + L <= values_per_row; i += L) {
      [[maybe_unused]] auto win = [&] {
        if constexpr (NV > 0 && R > 1 && Sink::kGather) {
          return sinks[0].template LoadWindow<NV>(base[i]);
        } else {
          return 0;
        }
      }();
      for (size_t r = 0; r < R; ++r) {
        PrefetchAhead(vr[r] + i);
        const VU sel = hn::And(hn::Set(du, mr[r][i >> 4]) >>
                                   hn::Add(hn::Set(du, static_cast<uint32_t>(2 * (i & 15))), two),
                               hn::Set(du, 3));
        // The chunk's L/2 blocks' column bytes, one u32 per block, moved to lanes 2b and 2b+1.
        const auto* p = reinterpret_cast<const uint32_t*>(cw[r] + (i >> 1) * 4);
        const VU words =
            hn::TableLookupLanes(hn::ZeroExtendVector(du, hn::LoadU(dh, p)), pick_block);
        const VI offs = hn::BitCast(di, hn::And(words >> hn::ShiftLeft<3>(sel), hn::Set(du, 0xff)));
        const VF v = LoadW(d, vr[r] + i);
        if constexpr (NV == 0) {
          sinks[r](hn::Add(hn::LoadU(di, base + i), offs), v);
        } else if constexpr (R > 1 && Sink::kGather) {
          sinks[r].template ApplyWindow<NV>(win, hn::Add(local_base, offs), v);
        } else {
          sinks[r].template Window<NV>(base[i], hn::Add(local_base, offs), v);
        }
      }
    }
    return i;
#endif
  }

  // Rows n[0..R) into sinks[0..R).
  template <size_t R, class Sink>
  HWY_INLINE void RowsR(const int64_t* n, Sink* sinks) const {
    const DF d;
    const DI di;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    const int64_t values_per_row = 2 * blocks;
    const WT* vr[R];
    const uint32_t* mr[R];
    const uint8_t* cw[R];
    for (size_t r = 0; r < R; ++r) {
      vr[r] = vals + n[r] * values_per_row;
      mr[r] = meta + n[r] * meta_per_row;
      cw[r] = columns + (n[r] / v) * blocks * 4;
    }
    int64_t start = 0;
    if (fast) {
      switch (window) {
        case 1:
          start = FastChunks<1, R>(vr, mr, cw, sinks);
          break;
        case 2:
          start = FastChunks<2, R>(vr, mr, cw, sinks);
          break;
        case 4:
          start = FastChunks<4, R>(vr, mr, cw, sinks);
          break;
        default:
          start = FastChunks<0, R>(vr, mr, cw, sinks);
          break;
      }
    }
    for (size_t r = 0; r < R; ++r) {
      HWY_ALIGN int32_t c[kMaxLanes];
      int64_t i = start;
      for (; i + L <= values_per_row; i += L) {
        for (int64_t l = 0; l < L; ++l) c[l] = Col(cw[r], mr[r], i + l);
        sinks[r](hn::Load(di, c), LoadW(d, vr[r] + i));
      }
      EmitTail(
          vr[r], i, values_per_row, zero_col, [&](int64_t j) { return Col(cw[r], mr[r], j); },
          sinks[r]);
    }
  }

};

// The gather driver decodes 4 rows in lockstep at M = 1 through RowsR.
static_assert(HasRowGroups<VnmDecoder<float>>);

template <class WT>
void VnmRowsT(const GemmArgs& a, int64_t n0, int64_t n1) {
  const PackedMatrix& w = *a.w;
  const DI di;
  const int64_t L = static_cast<int64_t>(hn::Lanes(di));
  const int m = w.pattern.m;
  const int64_t blocks = (w.cols + m - 1) / m;
  auto base = hwy::AllocateAligned<int32_t>(static_cast<size_t>(2 * blocks + L));
  for (int64_t j = 0; j < 2 * blocks + L; ++j) base[j] = static_cast<int32_t>(j / 2 * m);
  const auto& columns = w.array("columns").bytes;
  HWY_ALIGN int32_t half_lane[kMaxLanes], two_lane[kMaxLanes];
  for (int64_t l = 0; l < L; ++l) {
    half_lane[l] = static_cast<int32_t>(l / 2);
    two_lane[l] = static_cast<int32_t>(2 * l);
  }
  const auto* col_bytes = reinterpret_cast<const uint8_t*>(columns.data());
  const VnmDecoder<WT> dec{reinterpret_cast<const WT*>(w.array("values").bytes.data()),
                           col_bytes,
                           w.as<uint32_t>("metadata").data(),
                           base.get(),
                           blocks,
                           w.pattern.v,
                           (blocks + 7) / 8,
                           static_cast<int32_t>(w.cols),
                           L % 2 == 0 && 16 % L == 0,
                           m <= 2   ? 1
                           : m <= 4 ? 2
                           : m <= 8 ? 4
                                    : 0,
                           hn::Load(di, half_lane),
                           hn::Load(di, two_lane)};
  // Column offsets are bytes: even a corrupt one stays inside blocks * m + 256 padded columns.
  // Window loads reach up to 4 vectors past a chunk's first column.
  SparseRows(a, dec, std::max(w.cols + 1, blocks * m + 256 + 4 * L), n0, n1);
}

}  // namespace

void VnmRows(const GemmArgs& a, int64_t n0, int64_t n1) {
  with_value_type(a.w->value_dtype, [&]<class WT>(WT) { VnmRowsT<WT>(a, n0, n1); });
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "cpu/cpu_kernels.h"
#include "cpu/simd/check.h"
#include "cpu/simd/parallel.h"

namespace sparsa::cpu {

HWY_EXPORT(VnmRows);

void vnm_gemm_simd(const GemmArgs& a) {
  check_gemm_args(a);
  const PackedMatrix& w = *a.w;
  const int v = w.pattern.v, m = w.pattern.m;
  if (v < 1 || m < 4 || m > 256 || w.pattern.n != 2) {
    fail("vnm matrix [{}, {}]: pattern {}:{}:{} is not V:2:M with V >= 1 and 4 <= M <= 256", w.rows,
         w.cols, v, w.pattern.n, m);
  }
  const uint64_t blocks = static_cast<uint64_t>((w.cols + m - 1) / m);
  const uint64_t block_rows = static_cast<uint64_t>((w.rows + v - 1) / v);
  check_array(w, "columns", {DType::U8}, block_rows * blocks * 4);
  check_array(w, "values", {w.value_dtype}, w.rows * blocks * 2);
  check_array(w, "metadata", {DType::U32}, w.rows * ((blocks + 7) / 8));
  if (a.m == 0) return;
  const double work = static_cast<double>(a.m) * w.rows * blocks * 2 * 8;
  parallel_rows(w.rows, 1, work, [&](int64_t n0, int64_t n1) {
    HWY_DYNAMIC_DISPATCH(VnmRows)(a, n0, n1);
  });
}

}  // namespace sparsa::cpu
#endif  // HWY_ONCE
