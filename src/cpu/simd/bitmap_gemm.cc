// Bitmap Y = X * W^T: row_ptr I64[N+1], bitmap U64[N * ceil(K/64)] (bit j of word w = column
// 64w + j), values[nnz] row-major.
//
// Row decoder: the row's bitmap is first turned into a list of column positions (i32) in a
// per-thread buffer, then consumed exactly like CSR (contiguous values, gathered X). Each 64-bit
// word is expanded one of two ways, chosen by its population count:
//   sparse word (<= kScalarBits set): tzcnt / clear-lowest-bit loop, one store per set bit;
//   dense word: per L columns, Compress(iota, mask bits) + one unaligned store of L lanes.
// At 90% sparsity a word holds ~6 bits and the scalar loop wins; at 50% (~32 bits) the
// compress path does. Bytes read at 90%: 0.125 (bitmap) + 0.4 (f32 values) per weight.
//
// Versions (M = 1, 4096 x 4096 f32 at 90%, AMD EPYC Zen 4 VM, one thread):
//   v1 positions list + gather for every M: 5.1 ms (Highway 1.0.3's Iota went through the stack).
//   v2 small M: Compress of X per slice with a running value offset: 2.1 ms.
//   v3 prefix-popcount slice offsets, 4 accumulators, no lane masking on AVX-512: 1.9-2.0 ms;
//      0.94-1.0 ms on two threads (1.5-2.4x the dense kernel, which is memory-bound).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/simd/bitmap_gemm.cc"
#include <utility>

// clang-format off
#include "hwy/foreach_target.h"  // IWYU pragma: keep  (re-includes this file once per target)
#include "hwy/highway.h"
#include "cpu/simd/value_type.h"
#include "cpu/simd/sparse_gemm-inl.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace sparsa::cpu::HWY_NAMESPACE {
namespace {

// Words with more set bits than this are expanded with Compress (when L >= 8).
constexpr int kScalarBits = 12;

template <class WT>
struct BitmapDecoder {
  const int64_t* row_ptr;
  const uint64_t* bits;
  const WT* vals;
  int64_t words_per_row;
  int32_t zero_col;
  int32_t* pos;         // per thread: words_per_row * 64 + L entries
  int64_t values_size;  // entries in the values array
  WT* tail_vals;        // per thread: words_per_row * 64 + L entries

  // Column positions of row n's set bits, in order, into pos; returns their count.
  HWY_INLINE int64_t Positions(int64_t n) const {
    const uint64_t* HWY_RESTRICT words = bits + n * words_per_row;
    int32_t* HWY_RESTRICT out = pos;
    const DI di;
    const VI iota = hn::Iota(di, 0);  // hoisted: Highway 1.0.3 builds Iota through the stack
    for (int64_t wi = 0; wi < words_per_row; ++wi) {
      uint64_t word = words[wi];
      const int32_t base = static_cast<int32_t>(wi * 64);
      if constexpr (kMaxLanes >= 8 && kMaxLanes <= 64) {
        if (hwy::PopCount(word) > kScalarBits) {
          const int32_t L = static_cast<int32_t>(hn::Lanes(di));
          const auto* bytes = reinterpret_cast<const uint8_t*>(words + wi);
          for (int32_t q = 0; q < 64; q += L) {
            const auto mask = hn::LoadMaskBits(di, bytes + q / 8);
            hn::StoreU(hn::Compress(hn::Add(iota, hn::Set(di, base + q)), mask), di, out);
            out += hn::CountTrue(di, mask);
          }
          continue;
        }
      }
      while (word != 0) {
        *out++ = base + static_cast<int32_t>(hwy::Num0BitsBelowLS1Bit_Nonzero64(word));
        word &= word - 1;
      }
    }
    return out - pos;
  }

  // Gather driver: X compressed by each L-column slice of the bitmap, multiplied with the next
  // popcount values; no positions, no gathers. Slice offsets come from prefix popcounts of the
  // word, so the slices of one word are independent (only the word offset is a carried chain).
  template <class Sink>
  HWY_INLINE void RowCompressed(int64_t n, Sink& sink) const {
    const DF d;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    const int64_t begin = row_ptr[n];
    const int64_t count = std::min(row_ptr[n + 1] - begin, words_per_row * 64);
    // Slices load L values at offsets up to the row's bit count (<= words_per_row * 64, even for
    // a bitmap that disagrees with row_ptr): rows that close to the end of the array go through
    // a zero-padded copy so no load leaves it.
    const WT* HWY_RESTRICT v = vals + begin;
    if (begin + words_per_row * 64 + L > values_size) {
      std::fill(tail_vals, tail_vals + words_per_row * 64 + L, WT{});
      std::memcpy(tail_vals, v, sizeof(WT) * static_cast<size_t>(count));
      v = tail_vals;
    }
    const uint64_t* HWY_RESTRICT words = bits + n * words_per_row;
    int64_t p = 0;
    for (int64_t wi = 0; wi < words_per_row; ++wi) {
      const uint64_t word = words[wi];
      PrefetchAhead(v + p);
      PrefetchAhead(words + wi);
      [&]<size_t... J>(std::index_sequence<J...>) {
        (Slice<J>(words + wi, wi * 64, v + p, sink), ...);
      }
      (std::make_index_sequence<64 / kMaxLanes>());
      p += static_cast<int64_t>(hwy::PopCount(word));
    }
  }

  // Slice J (columns col0 + J*L ..) of one bitmap word; its values start at v + the number of
  // bits below the slice.
  template <size_t J, class Sink>
  HWY_INLINE void Slice(const uint64_t* word, int64_t col0, const WT* HWY_RESTRICT v,
                        Sink& sink) const {
    const DF d;
    constexpr size_t q = J * kMaxLanes;
    const auto mask = hn::LoadMaskBits(d, reinterpret_cast<const uint8_t*>(word) + q / 8);
    size_t below = 0;
    if constexpr (q > 0) below = hwy::PopCount(*word & ((uint64_t{1} << q) - 1));
    sink.template Compressed<J>(col0 + static_cast<int64_t>(q), mask, hn::CountTrue(d, mask),
                                LoadW(d, v + below));
  }

  template <class Sink>
  HWY_INLINE void Row(int64_t n, Sink& sink) const {
    if constexpr (Sink::kGather && kMaxLanes >= 8 && 64 % kMaxLanes == 0) {
      if (hn::Lanes(DF()) == kMaxLanes) return RowCompressed(n, sink);
    }
    const DF d;
    const DI di;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    // A bitmap whose popcount disagrees with row_ptr must not make us read past the values.
    const int64_t count = std::min(Positions(n), row_ptr[n + 1] - row_ptr[n]);
    const WT* HWY_RESTRICT v = vals + row_ptr[n];
    const int32_t* HWY_RESTRICT p = pos;
    int64_t i = 0;
    for (; i + L <= count; i += L) sink(hn::LoadU(di, p + i), LoadW(d, v + i));
    EmitTail(
        v, i, count, zero_col, [p](int64_t j) { return p[j]; }, sink);
  }
};

template <class WT>
void BitmapRowsT(const GemmArgs& a, int64_t n0, int64_t n1) {
  const PackedMatrix& w = *a.w;
  const int64_t words_per_row = (w.cols + 63) / 64;
  auto pos = hwy::AllocateAligned<int32_t>(static_cast<size_t>(words_per_row * 64 + kMaxLanes));
  auto tail_vals = hwy::AllocateAligned<WT>(static_cast<size_t>(words_per_row * 64 + kMaxLanes));
  const auto& values = w.array("values").bytes;
  const BitmapDecoder<WT> dec{w.as<int64_t>("row_ptr").data(),
                              w.as<uint64_t>("bitmap").data(),
                              reinterpret_cast<const WT*>(values.data()),
                              words_per_row,
                              static_cast<int32_t>(w.cols),
                              pos.get(),
                              static_cast<int64_t>(values.size() / sizeof(WT)),
                              tail_vals.get()};
  // Bits past K (zero in a valid bitmap) still land on zero-padded columns.
  SparseRows(a, dec, std::max(w.cols + 1, words_per_row * 64), n0, n1);
}

}  // namespace

void BitmapRows(const GemmArgs& a, int64_t n0, int64_t n1) {
  with_value_type(a.w->value_dtype, [&]<class WT>(WT) { BitmapRowsT<WT>(a, n0, n1); });
}

}  // namespace sparsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "cpu/cpu_kernels.h"
#include "cpu/simd/check.h"
#include "cpu/simd/parallel.h"

namespace sparsa::cpu {

HWY_EXPORT(BitmapRows);

void bitmap_gemm_simd(const GemmArgs& a) {
  check_gemm_args(a);
  const PackedMatrix& w = *a.w;
  const uint64_t nnz = check_offsets(w, "row_ptr", w.rows);
  check_array(w, "bitmap", {DType::U64}, static_cast<uint64_t>(w.rows * ((w.cols + 63) / 64)));
  check_array(w, "values", {w.value_dtype}, nnz);
  if (a.m == 0) return;
  const double work = static_cast<double>(a.m) * static_cast<double>(nnz) * 8;
  parallel_rows(w.rows, 1, work, [&](int64_t n0, int64_t n1) {
    HWY_DYNAMIC_DISPATCH(BitmapRows)(a, n0, n1);
  });
}

}  // namespace sparsa::cpu
#endif  // HWY_ONCE
