// V:2:M compressed weights as 2:4 rows over gathered columns (used by the fused SIMD kernels,
// src/cpu/simd/codec_gemm.cc and codec_gemm_x8.cc). Within one row block (V rows) every row keeps
// values only in the block's 4 columns per M-column block, and a vnm row's values and metadata
// nibbles are laid out exactly as an nm 2:4 row over those 4 * col_blocks columns
// (sparsa/format.h). So gathering X's kept columns once per row block turns the block into a 2:4
// product that the 2:4 kernels run unchanged; the gather is m * 4 * col_blocks loads per V rows,
// against V * 2 * col_blocks codes.
#include <algorithm>

#include "cpu/codec_kernels.h"

namespace sparsa::cpu {

int64_t vnm_gathered_kp(const CodecKernelArgs& a) {
  // As the caller's padding of X for nm: 2:4 windows may reach past the last column.
  return (4 * a.vnm_col_blocks + 63) / 64 * 64 + 64;
}

void vnm_gather_x(const CodecKernelArgs& a, int64_t rb, float* xsel) {
  const int64_t cb_count = a.vnm_col_blocks, kp = vnm_gathered_kp(a);
  const uint8_t* kept = a.vnm_columns + rb * cb_count * 4;
  for (int64_t t = 0; t < a.m; ++t) {
    const float* x = a.xp + t * a.kp;
    float* dst = xsel + t * kp;
    for (int64_t cb = 0; cb < cb_count; ++cb)
      for (int j = 0; j < 4; ++j) {
        const int64_t col = cb * a.vnm_m + kept[cb * 4 + j];  // offsets < M: checked by the caller
        dst[cb * 4 + j] = col < a.cols ? x[col] : 0.0f;
      }
    std::fill(dst + 4 * cb_count, dst + kp, 0.0f);
  }
}

CodecKernelArgs vnm_block_view(const CodecKernelArgs& a, int64_t rb) {
  const int64_t cb_count = a.vnm_col_blocks, kp = vnm_gathered_kp(a);
  const int64_t r0 = rb * a.vnm_v;
  CodecKernelArgs b = a;
  b.format = FormatKind::NM;
  b.rows = std::min(a.rows, r0 + a.vnm_v) - r0;
  b.cols = 4 * cb_count;
  b.x = nullptr;
  b.ldx = kp;
  b.xp = nullptr;
  b.kp = kp;
  b.y = a.y + r0;
  const bool four = a.code == CodeKind::Int4 || a.code == CodeKind::Codebook4;
  const int64_t first_value = r0 * a.values_per_row;  // even: values_per_row = 2 * col_blocks
  b.codes = a.codes + (four ? first_value / 2 : first_value);
  b.code_bytes = a.code_bytes - (four ? first_value / 2 : first_value);
  const int64_t groups = (a.values_per_row + a.group_size - 1) / a.group_size;
  if (a.scales) b.scales = a.scales + r0 * groups;
  if (a.zeros) b.zeros = a.zeros + r0 * groups;
  if (a.codebook && a.per_channel) b.codebook = a.codebook + r0 * 16;
  b.nm_meta = a.nm_meta + r0 * a.nm_words_per_row;
  b.vnm_columns = nullptr;
  return b;
}

CodecKernelArgs vnm_block_args(const CodecKernelArgs& a, int64_t rb, float* xsel) {
  vnm_gather_x(a, rb, xsel);
  CodecKernelArgs b = vnm_block_view(a, rb);
  b.x = xsel;
  b.xp = xsel;
  return b;
}

}  // namespace sparsa::cpu
