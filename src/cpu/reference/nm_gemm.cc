// Scalar reference for nm: each row's N values per group of M columns, at the offsets its index
// words give; padding past the last column is skipped.
#include "cpu/cpu_kernels.h"
#include "format/format_internal.h"

namespace sparsa::cpu {

void nm_gemm_reference(const GemmArgs& args) {
  const PackedMatrix& w = *args.w;
  const int n_keep = w.pattern.n, m_group = w.pattern.m, b = format::nm_index_bits(m_group);
  const int64_t groups = format::ceil_div(w.cols, m_group);
  const int64_t words = format::nm_words_per_row(w.cols, n_keep, m_group);
  const uint32_t* indices = w.as<uint32_t>("indices").data();
  const format::ValueReader values{w.array("values").bytes.data(), w.value_dtype};
  const uint32_t mask = (1u << b) - 1;
  for (int64_t i = 0; i < args.m; ++i) {
    const float* x = args.x + i * args.ldx;
    for (int64_t n = 0; n < w.rows; ++n) {
      float acc = 0.0f;
      for (int64_t v = 0; v < groups * n_keep; ++v) {
        const uint32_t offset = indices[n * words + v * b / 32] >> (v * b % 32) & mask;
        const int64_t col = v / n_keep * m_group + offset;
        if (col < w.cols) acc += x[col] * values[n * groups * n_keep + v];
      }
      args.y[i * args.ldy + n] = acc;
    }
  }
}

}  // namespace sparsa::cpu
