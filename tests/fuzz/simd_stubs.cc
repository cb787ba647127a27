// The fuzz build compiles no Highway kernels (slow to build, and the reader never calls them):
// the format table's SIMD entries and the fused codec kernels (f32 and int8 activations) are stubs that throw. The fuzz
// target runs the scalar reference kernels instead.
#include "cpu/codec_kernels.h"
#include "cpu/cpu_kernels.h"
#include "sparsa/error.h"

namespace sparsa::cpu {

[[noreturn]] static void no_simd() { fail("the fuzz build has no SIMD kernels"); }

void dense_gemm_simd(const GemmArgs&) { no_simd(); }
void csr_gemm_simd(const GemmArgs&) { no_simd(); }
void bsr_gemm_simd(const GemmArgs&) { no_simd(); }
void bitmap_gemm_simd(const GemmArgs&) { no_simd(); }
void nm_gemm_simd(const GemmArgs&) { no_simd(); }
void vnm_gemm_simd(const GemmArgs&) { no_simd(); }
void codec_gemm_simd(const CodecKernelArgs&) { no_simd(); }
void codec_gemm_x8_simd(const CodecKernelArgs&) { no_simd(); }

}  // namespace sparsa::cpu
