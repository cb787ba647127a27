// The CPU kernels behind the format table (src/format/format_table.cc): for every format a
// scalar reference twin (src/cpu/reference) and a Highway SIMD kernel (src/cpu/simd).
// All compute Y = X * W^T as described in sparsa/kernels.h.
#pragma once

#include "sparsa/kernels.h"

namespace sparsa::cpu {

void dense_gemm_reference(const GemmArgs& args);
void csr_gemm_reference(const GemmArgs& args);
void bsr_gemm_reference(const GemmArgs& args);
void bitmap_gemm_reference(const GemmArgs& args);
void nm_gemm_reference(const GemmArgs& args);
void vnm_gemm_reference(const GemmArgs& args);

void dense_gemm_simd(const GemmArgs& args);
void csr_gemm_simd(const GemmArgs& args);
void bsr_gemm_simd(const GemmArgs& args);
void bitmap_gemm_simd(const GemmArgs& args);
void nm_gemm_simd(const GemmArgs& args);
void vnm_gemm_simd(const GemmArgs& args);

}  // namespace sparsa::cpu
