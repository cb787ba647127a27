// Scalar reference for csr: each output is the dot product of one CSR row with a row of X.
#include "cpu/cpu_kernels.h"
#include "format/format_internal.h"

namespace sparsa::cpu {
namespace {

template <typename Index>
void csr_gemm(const GemmArgs& args) {
  const PackedMatrix& w = *args.w;
  const int64_t* row_ptr = w.as<int64_t>("row_ptr").data();
  const Index* col_idx = w.as<Index>("col_idx").data();
  const format::ValueReader values{w.array("values").bytes.data(), w.value_dtype};
  for (int64_t i = 0; i < args.m; ++i) {
    const float* x = args.x + i * args.ldx;
    for (int64_t n = 0; n < w.rows; ++n) {
      float acc = 0.0f;
      for (int64_t p = row_ptr[n]; p < row_ptr[n + 1]; ++p) acc += x[col_idx[p]] * values[p];
      args.y[i * args.ldy + n] = acc;
    }
  }
}

}  // namespace

void csr_gemm_reference(const GemmArgs& args) {
  if (args.w->array("col_idx").dtype == DType::U16)
    csr_gemm<uint16_t>(args);
  else
    csr_gemm<uint32_t>(args);
}

}  // namespace sparsa::cpu
