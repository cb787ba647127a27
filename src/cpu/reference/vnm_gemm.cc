// Scalar reference for vnm: per row and V x M block, 2 values at the block's columns that the
// row's metadata nibble selects; padding past the last column is skipped.
#include "cpu/cpu_kernels.h"
#include "format/format_internal.h"

namespace sparsa::cpu {

void vnm_gemm_reference(const GemmArgs& args) {
  const PackedMatrix& w = *args.w;
  const int64_t v = w.pattern.v, m_block = w.pattern.m;
  const int64_t col_blocks = format::ceil_div(w.cols, m_block);
  const int64_t words = format::ceil_div(col_blocks, 8);
  const uint8_t* columns = w.as<uint8_t>("columns").data();
  const uint32_t* metadata = w.as<uint32_t>("metadata").data();
  const format::ValueReader values{w.array("values").bytes.data(), w.value_dtype};
  for (int64_t i = 0; i < args.m; ++i) {
    const float* x = args.x + i * args.ldx;
    for (int64_t n = 0; n < w.rows; ++n) {
      float acc = 0.0f;
      for (int64_t cb = 0; cb < col_blocks; ++cb) {
        const uint32_t nibble = metadata[n * words + cb / 8] >> (4 * (cb % 8)) & 0xf;
        const uint8_t* block = columns + (n / v * col_blocks + cb) * 4;
        for (int j = 0; j < 2; ++j) {
          const int64_t col = cb * m_block + block[nibble >> (2 * j) & 3];
          if (col < w.cols) acc += x[col] * values[(n * col_blocks + cb) * 2 + j];
        }
      }
      args.y[i * args.ldy + n] = acc;
    }
  }
}

}  // namespace sparsa::cpu
