// Scalar reference twin of the integer-activation kernels (codec_kernels.h, kXGroup): X
// quantised per 32-column block (codebook4: the codebook too, codebook_int8); the integer sum of
// (code - zero) * q over each run of values in one block and one weight group exact in int64,
// the terms float(I) * (scale_w * scale_x) summed in double. Obviously right rather than fast.
#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <vector>

#include "cpu/codec_kernels.h"
#include "sparsa/error.h"
#include "sparsa/half.h"

namespace sparsa::cpu {
namespace {

int code_minus_zero(const CodecKernelArgs& a, int64_t i, int64_t g, const int8_t* book) {
  switch (a.code) {
    case CodeKind::Int8Signed: return static_cast<int8_t>(a.codes[i]);
    case CodeKind::Int8Unsigned: return int{a.codes[i]} - a.zeros[g];
    case CodeKind::Int4: {
      const int u = (a.codes[i >> 1] >> ((i & 1) * 4)) & 0xf;
      return u - (a.zeros ? a.zeros[g] : a.zero_point);
    }
    case CodeKind::Codebook4: return book[(a.codes[i >> 1] >> ((i & 1) * 4)) & 0xf];
  }
  return 0;
}

}  // namespace

float codebook_int8(const uint16_t* f16, int8_t q[16]) {
  float c[16], amax = 0;
  for (int k = 0; k < 16; ++k) {
    c[k] = f32_from_f16(f16[k]);
    amax = std::max(amax, std::fabs(c[k]));
  }
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  for (int k = 0; k < 16; ++k) q[k] = static_cast<int8_t>(std::nearbyint(c[k] * inv));
  return amax / 127.0f;
}

void codec_gemm_x8_reference(const CodecKernelArgs& a) {
  if (a.format == FormatKind::VNM) {  // X quantised per 32 gathered columns of each row block
    std::vector<float> xsel(static_cast<size_t>(a.m * vnm_gathered_kp(a)));
    for (int64_t rb = 0; rb * a.vnm_v < a.rows; ++rb)
      codec_gemm_x8_reference(vnm_block_args(a, rb, xsel.data()));
    return;
  }
  const bool book = a.code == CodeKind::Codebook4;
  const int64_t G = book ? 128 : a.group_size, blocks = a.kp / kXGroup;
  // X quantised as codec_kernels.h defines it.
  std::vector<int> q(a.m * a.kp);
  std::vector<float> sx(a.m * blocks);
  for (int64_t m = 0; m < a.m; ++m)
    for (int64_t b = 0; b < blocks; ++b) {
      const float* x = a.xp + m * a.kp + b * kXGroup;
      float amax = 0;
      for (int64_t k = 0; k < kXGroup; ++k) amax = std::max(amax, std::fabs(x[k]));
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      sx[m * blocks + b] = amax / 127.0f;
      for (int64_t k = 0; k < kXGroup; ++k)
        q[m * a.kp + b * kXGroup + k] = static_cast<int>(std::nearbyint(x[k] * inv));
    }
  int8_t cq[16] = {};
  float book_scale = 0;
  for (int64_t r = 0; r < a.rows; ++r) {
    if (book) book_scale = codebook_int8(a.codebook + (a.per_channel ? 16 * r : 0), cq);
    // The row's values in order: (column, global value index, global group index).
    struct Value {
      int64_t col, i, g;
    };
    std::vector<Value> vals;
    if (a.format == FormatKind::Bitmap) {
      const uint64_t* words = a.bitmap + r * a.bitmap_words_per_row;
      int64_t set = 0;
      for (int64_t w = 0; w < a.bitmap_words_per_row; ++w) set += std::popcount(words[w]);
      if (set != a.row_ptr[r + 1] - a.row_ptr[r])
        fail("bitmap matrix [{}, {}]: row {} has {} bits set but row_ptr gives {} values",
             a.rows, a.cols, r, set, a.row_ptr[r + 1] - a.row_ptr[r]);
      int64_t j = 0;
      for (int64_t w = 0; w < a.bitmap_words_per_row; ++w)
        for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1, ++j)
          vals.push_back({64 * w + std::countr_zero(bits), a.row_ptr[r] + j,
                          book ? 0 : a.group_ptr[r] + j / G});
    } else {
      const int64_t V = a.values_per_row, groups = (V + G - 1) / G;
      const uint32_t* meta = a.nm_meta ? a.nm_meta + r * a.nm_words_per_row : nullptr;
      for (int64_t j = 0; j < V; ++j)
        vals.push_back({a.format == FormatKind::Dense
                             ? j
                             : 4 * (j / 2) + ((meta[j / 16] >> (2 * (j % 16))) & 3),
                         r * V + j, r * groups + j / G});
    }
    for (int64_t m = 0; m < a.m; ++m) {
      // One term per (32-column block, weight group): dense and 2:4 blocks lie in one group,
      // bitmap groups count values, so a block may hold the end of one and the start of the next.
      std::map<std::pair<int64_t, int64_t>, long long> sums;
      for (const Value& v : vals)
        sums[{v.col / kXGroup, v.g}] += static_cast<long long>(code_minus_zero(a, v.i, v.g, cq)) *
                                        q[m * a.kp + v.col];  // padded columns: q = 0
      double acc = 0;
      for (const auto& [key, sum] : sums) {
        const auto [b, g] = key;
        const float sw = book ? book_scale : f32_from_f16(a.scales[g]);
        const float scale = sw * sx[m * blocks + b];
        acc += static_cast<double>(sum) * static_cast<double>(scale);
      }
      a.y[m * a.ldy + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace sparsa::cpu
