// The wgmma.sp 2:4 prefill kernel (src/cuda/wgmma_prefill.cu, sm_90a) against a double CPU
// product of the same masked weights and against the mma.sp prefill kernel: ragged N, K and m,
// fp16 and bf16, every output type, Y poisoned with NaN. Skipped without a GPU; on a device other
// than compute capability 9.0 the kernel must refuse with cudaErrorNotSupported.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "gpu_sparse_util.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

// Skips off Hopper (after checking the refusal); on an H100/H200 the sm_90a image must be there.
#define SPARSA_REQUIRE_WGMMA()                                                          \
  SPARSA_SKIP_WITHOUT_GPU();                                                            \
  if (!is_sm90()) {                                                                     \
    EXPECT_FALSE(cuda::nm24_wgmma_supported());                                         \
    GTEST_SKIP() << "wgmma.sp needs a compute capability 9.0 device";                   \
  }                                                                                     \
  ASSERT_TRUE(cuda::nm24_wgmma_supported()) << "no sm_90a image of the wgmma kernel loaded"

struct Case {
  int64_t rows, cols, m;
  ElemType type = ElemType::F16, y_type = ElemType::F32;
};

enum class Kernel { Wgmma, Mma, Dispatch };

DeviceRun run_kernel(const cuda::DeviceNm24& dev, const Activations& x, int64_t rows,
                     ElemType y_type, Kernel kernel) {
  return run_on_device(x, rows, y_type, 0, 0, [&](const cuda::GemmProblem& p) {
    if (kernel == Kernel::Wgmma) return cuda::nm24_prefill_wgmma(dev.weights, p, nullptr);
    if (kernel == Kernel::Mma) return cuda::nm24_prefill_mma(dev.weights, p, nullptr);
    return cuda::nm24_prefill(dev.weights, p, nullptr);
  });
}

void check_case(const Case& c, uint64_t seed, Kernel kernel = Kernel::Wgmma) {
  SCOPED_TRACE(fmt::format("N={} K={} m={} {}->{}", c.rows, c.cols, c.m, type_name(c.type),
                           type_name(c.y_type)));
  const SparseWeights w = random_nm24(c.rows, c.cols, c.type, seed);
  const auto dev = cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), c.rows, c.cols, c.type));
  const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
  const DeviceRun run = run_kernel(dev, x, c.rows, c.y_type, kernel);
  EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
  EXPECT_TRUE(run.repeatable) << "second call differs";
  const double err = relative_error(run.y, reference_gemm(x, w));
  EXPECT_LE(err, 1e-2);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
}

TEST(GpuWgmma, MatchesReferenceOnRaggedShapes) {
  SPARSA_REQUIRE_WGMMA();
  const Case cases[] = {
      {256, 256, 128},                                // one CTA, one chunk
      {128, 512, 64},                                 // rows_padded < one CTA tile (256)
      {77, 513, 300},                                 // ragged everything
      {130, 100, 70},                                 // K < one stage, m < one token tile
      {520, 1000, 129},                               // 3 row blocks, 2 token tiles, odd chunk count
      {1000, 2050, 257, ElemType::F16, ElemType::F16},
      {300, 2000, 200, ElemType::BF16, ElemType::BF16},
      {384, 3000, 131, ElemType::BF16, ElemType::F32},
      {200, 777, 90, ElemType::F16, ElemType::BF16},
      {640, 4096, 300},                               // K of the benchmark shapes, many stages
      {256, 4352, 128, ElemType::BF16, ElemType::F16},  // 17 chunks: the W ring wraps 8 times
  };
  uint64_t seed = 7000;
  for (const Case& c : cases) check_case(c, seed += 10);
}

TEST(GpuWgmma, PrefillDispatchPicksAKernelForEveryM) {
  SPARSA_REQUIRE_WGMMA();
  uint64_t seed = 7200;
  for (int64_t m : {int64_t{17}, cuda::kWgmmaMinM - 1, cuda::kWgmmaMinM, int64_t{200}})
    check_case({256, 640, m}, seed += 10, Kernel::Dispatch);
}

// Benchmark shapes at full size: every output written and finite, 24 sampled tokens against the
// double reference, and the whole output against the mma.sp kernel.
TEST(GpuWgmma, BenchmarkShapesMatchReferenceAndMmaKernel) {
  SPARSA_REQUIRE_WGMMA();
  struct Shape {
    int64_t rows, cols, m;
  };
  const Shape shapes[] = {{4096, 4096, 256}, {11008, 4096, 300}, {4096, 11008, 2048}};
  uint64_t seed = 7400;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(fmt::format("N={} K={} m={}", s.rows, s.cols, s.m));
    const SparseWeights w = random_nm24(s.rows, s.cols, ElemType::F16, seed += 10);
    const auto dev = cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), s.rows, s.cols, ElemType::F16));
    const Activations x = random_activations(s.m, s.cols, ElemType::F16, seed + 1);
    const DeviceRun run = run_kernel(dev, x, s.rows, ElemType::F32, Kernel::Wgmma);
    const DeviceRun mma = run_kernel(dev, x, s.rows, ElemType::F32, Kernel::Mma);
    EXPECT_TRUE(run.padding_intact && run.repeatable);
    EXPECT_LE(relative_error(run.y, mma.y), 1e-3) << "wgmma and mma.sp kernels disagree";
    expect_sampled_tokens_match_reference(run.y, x, w, 24, seed);
  }
}

TEST(GpuWgmma, RejectsBadArguments) {
  SPARSA_SKIP_WITHOUT_GPU();
  const SparseWeights w = random_nm24(128, 256, ElemType::F16, 7600);
  const auto dev = cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), 128, 256, ElemType::F16));
  cuda::DeviceBuffer x(64 * 264 * 2), y(64 * 128 * 4);
  cuda::GemmProblem p;
  p.x = x.data();
  p.m = 64;
  p.ldx = 260;  // not a multiple of 8
  p.y = y.data();
  p.ldy = 128;
  EXPECT_EQ(cuda::nm24_prefill_wgmma(dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.ldx = 128;  // < K
  EXPECT_EQ(cuda::nm24_prefill_wgmma(dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.ldx = 264;
  p.m = 0;
  EXPECT_EQ(cuda::nm24_prefill_wgmma(dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.m = 64;
  const cudaError_t ok = cuda::nm24_prefill_wgmma(dev.weights, p, nullptr);
  EXPECT_EQ(ok, is_sm90() ? cudaSuccess : cudaErrorNotSupported);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace sparsa::test

#else
#include <gtest/gtest.h>
TEST(GpuWgmma, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }
#endif  // SPARSA_WITH_CUDA
