// Scalar reference twin of the fused compressed kernels: for every stored value, its column from
// the format's metadata and its weight from the codec's arrays, one at a time, summed in double.
// Obviously right rather than fast; the SIMD kernels are tested against it.
#include <bit>
#include <vector>

#include "cpu/codec_kernels.h"
#include "sparsa/error.h"
#include "sparsa/half.h"

namespace sparsa::cpu {
namespace {

uint8_t nibble(const uint8_t* codes, int64_t i) { return (codes[i >> 1] >> ((i & 1) * 4)) & 0xf; }

// The weight of stored value i (row-relative position j, group index g when quantised).
float weight(const CodecKernelArgs& a, int64_t row, int64_t i, int64_t g) {
  switch (a.code) {
    case CodeKind::Int8Signed:
      return f32_from_f16(a.scales[g]) * static_cast<float>(static_cast<int8_t>(a.codes[i]));
    case CodeKind::Int8Unsigned:
      return f32_from_f16(a.scales[g]) * static_cast<float>(int{a.codes[i]} - a.zeros[g]);
    case CodeKind::Int4: {
      const int zero = a.zeros ? a.zeros[g] : a.zero_point;
      return f32_from_f16(a.scales[g]) * static_cast<float>(int{nibble(a.codes, i)} - zero);
    }
    case CodeKind::Codebook4:
      return f32_from_f16(a.codebook[(a.per_channel ? row * 16 : 0) + nibble(a.codes, i)]);
  }
  return 0;
}

}  // namespace

void codec_gemm_reference(const CodecKernelArgs& a) {
  const int64_t G = a.group_size;
  for (int64_t r = 0; r < a.rows; ++r) {
    std::vector<double> acc(a.m, 0.0);
    auto add = [&](int64_t col, float w) {
      if (col >= a.cols) return;  // padding: its value is 0 and there is no such input
      for (int64_t m = 0; m < a.m; ++m) acc[m] += double(a.x[m * a.ldx + col]) * w;
    };
    switch (a.format) {
      case FormatKind::Dense: {
        const int64_t groups = (a.cols + G - 1) / G;
        for (int64_t j = 0; j < a.cols; ++j)
          add(j, weight(a, r, r * a.cols + j, r * groups + j / G));
        break;
      }
      case FormatKind::NM: {  // 2:4: value j sits in group j/2 at offset bits [2j, 2j+2)
        const int64_t groups = (a.values_per_row + G - 1) / G;
        const uint32_t* meta = a.nm_meta + r * a.nm_words_per_row;
        for (int64_t j = 0; j < a.values_per_row; ++j) {
          const int64_t col = 4 * (j / 2) + ((meta[j / 16] >> (2 * (j % 16))) & 3);
          add(col, weight(a, r, r * a.values_per_row + j, r * groups + j / G));
        }
        break;
      }
      case FormatKind::VNM: {  // value j: column block j/2, offset kept[nibble bits of j]
        const int64_t groups = (a.values_per_row + G - 1) / G;
        const uint32_t* meta = a.nm_meta + r * a.nm_words_per_row;
        const uint8_t* kept = a.vnm_columns + (r / a.vnm_v) * a.vnm_col_blocks * 4;
        for (int64_t j = 0; j < a.values_per_row; ++j) {
          const int64_t cb = j / 2;
          const int64_t col = cb * a.vnm_m + kept[cb * 4 + ((meta[j / 16] >> (2 * (j % 16))) & 3)];
          add(col, weight(a, r, r * a.values_per_row + j, r * groups + j / G));
        }
        break;
      }
      case FormatKind::Bitmap: {
        int64_t i = a.row_ptr[r];
        const uint64_t* words = a.bitmap + r * a.bitmap_words_per_row;
        int64_t bits_set = 0;
        for (int64_t w = 0; w < a.bitmap_words_per_row; ++w) bits_set += std::popcount(words[w]);
        if (bits_set != a.row_ptr[r + 1] - a.row_ptr[r])
          fail("bitmap matrix [{}, {}]: row {} has {} bits set but row_ptr gives {} values",
               a.rows, a.cols, r, bits_set, a.row_ptr[r + 1] - a.row_ptr[r]);
        for (int64_t w = 0; w < a.bitmap_words_per_row; ++w)
          for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1, ++i) {
            const int64_t col = 64 * w + std::countr_zero(bits);
            add(col, weight(a, r, i, a.group_ptr[r] + (i - a.row_ptr[r]) / G));
          }
        break;
      }
      default:
        break;
    }
    for (int64_t m = 0; m < a.m; ++m) a.y[m * a.ldy + r] = static_cast<float>(acc[m]);
  }
}

}  // namespace sparsa::cpu
