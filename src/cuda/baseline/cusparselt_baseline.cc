// cuSPARSELt 2:4 baseline (see cusparselt_baseline.h). Orientation as PyTorch's
// to_sparse_semi_structured linear: A = W [n, k] row-major structured, B = X^T [k, m]
// column-major, D = Y^T [n, m] column-major (= Y [m, n] row-major).
#include "cuda/baseline/cusparselt_baseline.h"

#include <cusparseLt.h>
#include <fmt/format.h>

#include "sparsa/cuda_kernels.h"
#include "sparsa/error.h"

namespace sparsa::cuda::bench {
namespace {

void check_lt(cusparseStatus_t status, const char* what) {
  if (status != CUSPARSE_STATUS_SUCCESS)
    fail("cuSPARSELt: {}: status {}", what, static_cast<int>(status));
}

}  // namespace

struct CusparseltGemm::State {
  cusparseLtHandle_t handle{};
  cusparseLtMatDescriptor_t a{}, b{}, c{};
  cusparseLtMatmulDescriptor_t matmul{};
  cusparseLtMatmulAlgSelection_t alg{};
  cusparseLtMatmulPlan_t plan{};
  bool have_handle = false, have_desc = false, have_alg = false, have_plan = false;
  std::vector<DeviceBuffer> compressed;
  DeviceBuffer workspace;
  const void* x = nullptr;
  void* y = nullptr;
  cudaStream_t stream = nullptr;
  float alpha = 1.0f, beta = 0.0f;
};

CusparseltGemm::CusparseltGemm(int64_t n, int64_t k, int64_t m,
                               const std::vector<const void*>& dense_w, const void* x, void* y,
                               cudaStream_t stream)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.x = x;
  s.y = y;
  s.stream = stream;
  check_lt(cusparseLtInit(&s.handle), "init");
  s.have_handle = true;
  check_lt(cusparseLtStructuredDescriptorInit(&s.handle, &s.a, n, k, k, 16, CUDA_R_16F,
                                              CUSPARSE_ORDER_ROW, CUSPARSELT_SPARSITY_50_PERCENT),
           "structured descriptor");
  check_lt(
      cusparseLtDenseDescriptorInit(&s.handle, &s.b, k, m, k, 16, CUDA_R_16F, CUSPARSE_ORDER_COL),
      "dense descriptor B");
  check_lt(
      cusparseLtDenseDescriptorInit(&s.handle, &s.c, n, m, n, 16, CUDA_R_16F, CUSPARSE_ORDER_COL),
      "dense descriptor C");
  s.have_desc = true;
  check_lt(cusparseLtMatmulDescriptorInit(&s.handle, &s.matmul, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                          CUSPARSE_OPERATION_NON_TRANSPOSE, &s.a, &s.b, &s.c, &s.c,
                                          CUSPARSE_COMPUTE_32F),
           "matmul descriptor");
  check_lt(
      cusparseLtMatmulAlgSelectionInit(&s.handle, &s.alg, &s.matmul, CUSPARSELT_MATMUL_ALG_DEFAULT),
      "algorithm selection");
  s.have_alg = true;
  check_lt(cusparseLtMatmulPlanInit(&s.handle, &s.plan, &s.matmul, &s.alg), "plan");
  s.have_plan = true;

  size_t compressed_bytes = 0, compress_buffer_bytes = 0;
  check_lt(
      cusparseLtSpMMACompressedSize(&s.handle, &s.plan, &compressed_bytes, &compress_buffer_bytes),
      "compressed size");
  DeviceBuffer pruned(static_cast<size_t>(n * k * 2));
  DeviceBuffer compress_buffer(std::max<size_t>(compress_buffer_bytes, 16));
  for (const void* w : dense_w) {
    check_lt(cusparseLtSpMMAPrune(&s.handle, &s.matmul, w, pruned.data(),
                                  CUSPARSELT_PRUNE_SPMMA_STRIP, stream),
             "prune");
    DeviceBuffer out(compressed_bytes);
    check_lt(cusparseLtSpMMACompress(&s.handle, &s.plan, pruned.data(), out.data(),
                                     compress_buffer.data(), stream),
             "compress");
    s.compressed.push_back(std::move(out));
  }
  size_t ws = 0;
  check_lt(cusparseLtMatmulGetWorkspace(&s.handle, &s.plan, &ws), "workspace size");
  s.workspace = DeviceBuffer(std::max<size_t>(ws, 16));
  check_lt(cusparseLtMatmulSearch(&s.handle, &s.plan, &s.alpha, s.compressed[0].data(), x, &s.beta,
                                  y, y, s.workspace.data(), &s.stream, 1),
           "algorithm search");
  check_lt(cusparseLtMatmulGetWorkspace(&s.handle, &s.plan, &ws), "workspace size");
  if (ws > s.workspace.bytes()) s.workspace = DeviceBuffer(ws);
  check_cuda(cudaStreamSynchronize(stream), "cuSPARSELt setup");
}

CusparseltGemm::~CusparseltGemm() {
  State& s = *state_;
  if (s.have_plan) cusparseLtMatmulPlanDestroy(&s.plan);
  if (s.have_alg) cusparseLtMatmulAlgSelectionDestroy(&s.alg);
  if (s.have_desc) {
    cusparseLtMatDescriptorDestroy(&s.a);
    cusparseLtMatDescriptorDestroy(&s.b);
    cusparseLtMatDescriptorDestroy(&s.c);
  }
  if (s.have_handle) cusparseLtDestroy(&s.handle);
}

cudaError_t CusparseltGemm::run(int copy) {
  State& s = *state_;
  const void* a = s.compressed[copy % s.compressed.size()].data();
  const cusparseStatus_t status = cusparseLtMatmul(&s.handle, &s.plan, &s.alpha, a, s.x, &s.beta,
                                                   s.y, s.y, s.workspace.data(), &s.stream, 1);
  return status == CUSPARSE_STATUS_SUCCESS ? cudaGetLastError() : cudaErrorUnknown;
}

std::string CusparseltGemm::version() {
  int major = 0, minor = 0, patch = 0;
  cusparseLtGetProperty(MAJOR_VERSION, &major);
  cusparseLtGetProperty(MINOR_VERSION, &minor);
  cusparseLtGetProperty(PATCH_LEVEL, &patch);
  return fmt::format("{}.{}.{}", major, minor, patch);
}

}  // namespace sparsa::cuda::bench
