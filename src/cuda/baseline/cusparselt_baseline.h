// cuSPARSELt 2:4 baseline for `sparsa bench gemm` (compiled only when cuSPARSELt's header and
// library are found; SPARSA_HAVE_CUSPARSELT). fp16 in, fp32 compute, fp16 out:
// Y[m, n] = X[m, k] * W[n, k]^T with W pruned 2:4 by cuSPARSELt and compressed once per copy;
// the plan is made once per (shape, m) and its algorithm chosen by cusparseLtMatmulSearch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sparsa::cuda::bench {

class CusparseltGemm {
 public:
  // dense_w: device fp16 [n, k] row-major copies (left untouched; pruned into scratch).
  // x: device fp16 [m, k] row-major; y: device fp16 [m, n] row-major.
  CusparseltGemm(int64_t n, int64_t k, int64_t m, const std::vector<const void*>& dense_w,
                 const void* x, void* y, cudaStream_t stream);
  ~CusparseltGemm();
  CusparseltGemm(const CusparseltGemm&) = delete;
  CusparseltGemm& operator=(const CusparseltGemm&) = delete;

  // One product with weight copy `copy`.
  cudaError_t run(int copy);
  static std::string version();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace sparsa::cuda::bench
