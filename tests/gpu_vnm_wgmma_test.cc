// The wgmma.sp V:2:M prefill kernel (src/cuda/wgmma_vnm_prefill.cu, sm_90a) against a double CPU
// product of the same masked weights and against the mma.sp V:2:M prefill kernel: ragged N, K
// (K not a multiple of M) and m, V = 64 and 128, several M, fp16 and bf16, every output type, Y
// poisoned with NaN and X poisoned with NaN past column K. Skipped without a GPU; on a device
// other than compute capability 9.0 the kernel must refuse with cudaErrorNotSupported.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "gpu_sparse_util.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

struct Case {
  int64_t rows, cols, m;
  int v, mcols;
  ElemType type = ElemType::F16, y_type = ElemType::F32;
};

// Wgmma: vnm_prefill_wgmma (transpose + the Xᵀ kernel); Staged: the dense-X-by-TMA kernel; Xt:
// vnm_transpose_x into a caller's buffer (ldxt past the minimum, NaN-poisoned first) and then
// vnm_prefill_wgmma_xt.
enum class Kernel { Wgmma, Mma, Dispatch, Staged, Xt };

struct Prepared {
  SparseWeights w;
  cuda::DeviceVnm dev;
  Activations x;
};

Prepared prepare(const Case& c, uint64_t seed) {
  Prepared p;
  p.w = random_vnm(c.rows, c.cols, c.v, c.mcols, c.type, seed);
  p.dev = cuda::upload(cuda::tile_vnm(p.w.columns.data(), p.w.values.data(), p.w.meta.data(),
                                      c.rows, c.cols, c.v, c.mcols, c.type));
  p.x = random_activations(c.m, c.cols, c.type, seed + 1);
  return p;
}

DeviceRun run_kernel(const Prepared& pr, int64_t rows, ElemType y_type, Kernel kernel) {
  return run_on_device(pr.x, rows, y_type, 0, 0, [&](const cuda::GemmProblem& p) {
    if (kernel == Kernel::Wgmma) return cuda::vnm_prefill_wgmma(pr.dev.weights, p, nullptr);
    if (kernel == Kernel::Mma) return cuda::vnm_prefill_mma(pr.dev.weights, p, nullptr);
    if (kernel == Kernel::Staged) return cuda::vnm_prefill_wgmma_staged(pr.dev.weights, p, nullptr);
    if (kernel == Kernel::Xt) {
      const int64_t ldxt = cuda::vnm_xt_ld(p.m) + 24;
      static cuda::DeviceBuffer xt;
      const size_t bytes = static_cast<size_t>(pr.x.cols) * ldxt * 2;
      if (xt.bytes() < bytes) xt = cuda::DeviceBuffer(bytes);
      if (cudaError_t e = cudaMemset(xt.data(), 0xff, bytes); e != cudaSuccess) return e;
      if (cudaError_t e = cuda::vnm_transpose_x(p, pr.x.cols, xt.data(), ldxt, nullptr);
          e != cudaSuccess)
        return e;
      return cuda::vnm_prefill_wgmma_xt(pr.dev.weights, xt.data(), ldxt, p, nullptr);
    }
    return cuda::vnm_prefill(pr.dev.weights, p, nullptr);
  });
}

std::string describe(const Case& c) {
  return fmt::format("{}:2:{} N={} K={} m={} {}->{}", c.v, c.mcols, c.rows, c.cols, c.m,
                     type_name(c.type), type_name(c.y_type));
}

// Against the double reference and, for the wgmma kernels, against the mma.sp kernel (and the
// default path against the staged kernel where that takes the pattern).
void check_case(const Case& c, uint64_t seed, Kernel kernel = Kernel::Wgmma) {
  SCOPED_TRACE(describe(c));
  const Prepared pr = prepare(c, seed);
  const DeviceRun run = run_kernel(pr, c.rows, c.y_type, kernel);
  EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
  EXPECT_TRUE(run.repeatable) << "second call differs";
  const double err = relative_error(run.y, reference_gemm(pr.x, pr.w));
  EXPECT_LE(err, 1e-2);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
  const double tol = c.y_type == ElemType::F32 ? 1e-4 : 1e-2;
  if (kernel == Kernel::Wgmma || kernel == Kernel::Staged || kernel == Kernel::Xt) {
    const DeviceRun mma = run_kernel(pr, c.rows, c.y_type, Kernel::Mma);
    EXPECT_LE(relative_error(run.y, mma.y), tol) << "wgmma and mma.sp kernels disagree";
  }
  if (kernel == Kernel::Wgmma && cuda::vnm_wgmma_staged_supported(pr.dev.weights)) {
    const DeviceRun staged = run_kernel(pr, c.rows, c.y_type, Kernel::Staged);
    EXPECT_LE(relative_error(run.y, staged.y), tol) << "Xᵀ and staged wgmma kernels disagree";
  }
}

// Skips off Hopper (after checking the refusal); on an H100/H200 the sm_90a image must be there.
#define SPARSA_REQUIRE_VNM_WGMMA(weights)                                               \
  SPARSA_SKIP_WITHOUT_GPU();                                                            \
  if (!is_sm90()) {                                                                     \
    EXPECT_FALSE(cuda::vnm_wgmma_supported(weights));                                   \
    GTEST_SKIP() << "wgmma.sp needs a compute capability 9.0 device";                   \
  }                                                                                     \
  ASSERT_TRUE(cuda::vnm_wgmma_supported(weights)) << "no sm_90a image of the V:2:M wgmma kernel"

cuda::VnmWeights pattern_only(int v, int m) {
  cuda::VnmWeights w;
  w.v = v;
  w.m = m;
  w.type = ElemType::F16;
  return w;
}

TEST(GpuVnmWgmma, MatchesReferenceOnRaggedShapes) {
  SPARSA_REQUIRE_VNM_WGMMA(pattern_only(64, 8));
  const Case cases[] = {
      {256, 512, 128, 64, 8},                                  // one CTA, one chunk
      {64, 256, 64, 64, 8},                                    // one row group, rows_padded < CTA
      {77, 513, 300, 64, 8},                                   // ragged everything
      {130, 100, 70, 64, 5},                                   // K < one stage, K % M != 0
      {520, 1003, 129, 64, 5, ElemType::F16, ElemType::F16},   // 3 row blocks, 2 token tiles
      {300, 2000, 200, 128, 16},                               // V = 128: one B tile per warpgroup
      {200, 777, 90, 128, 16, ElemType::BF16, ElemType::BF16},
      {384, 3001, 131, 64, 8, ElemType::BF16, ElemType::F32},
      {640, 1500, 257, 64, 12, ElemType::BF16, ElemType::F16}, // 2 dense stages of 48 KB
      {192, 900, 100, 128, 5, ElemType::F16, ElemType::BF16},
      {128, 1024, 65, 64, 4},                                  // M = 4: every column kept
      {128, 1030, 140, 128, 7, ElemType::BF16, ElemType::F32},
      {256, 4096, 300, 64, 8},                                 // K of the benchmark shapes
  };
  uint64_t seed = 9000;
  for (const Case& c : cases) check_case(c, seed += 10);
}

// The Xᵀ kernel on a caller's Xᵀ (wider than needed, padding NaN before the transpose), and M = 16
// at V = 64, which only the Xᵀ kernel takes (the staged one's dense slots do not fit).
TEST(GpuVnmWgmma, XtKernelMatchesReferenceOnRaggedShapes) {
  SPARSA_REQUIRE_VNM_WGMMA(pattern_only(64, 8));
  const Case cases[] = {
      {256, 512, 128, 64, 8},
      {77, 513, 300, 64, 8, ElemType::BF16, ElemType::F16},
      {130, 100, 70, 64, 5},
      {300, 2000, 201, 128, 16, ElemType::F16, ElemType::BF16},
      {200, 777, 90, 128, 7, ElemType::BF16, ElemType::F32},
      {256, 1000, 150, 64, 16},
      {640, 1500, 257, 64, 12, ElemType::BF16, ElemType::F16},
  };
  uint64_t seed = 9100;
  for (const Case& c : cases) check_case(c, seed += 10, Kernel::Xt);
  EXPECT_TRUE(cuda::vnm_wgmma_supported(pattern_only(64, 16)) ==
              cuda::vnm_wgmma_xt_supported(pattern_only(64, 16)));
  check_case({256, 1000, 150, 64, 16, ElemType::BF16, ElemType::BF16}, seed += 10);
}

// vnm_transpose_x against a host transpose, bit for bit, zeros past m.
TEST(GpuVnmWgmma, TransposeMatchesHost) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 9150;
  for (auto [m, cols] : {std::pair<int64_t, int64_t>{1, 8}, {70, 100}, {129, 1003}, {300, 64}}) {
    SCOPED_TRACE(fmt::format("m={} cols={}", m, cols));
    const Activations x = random_activations(m, cols, ElemType::F16, seed += 10);
    cuda::DeviceBuffer dx(x.bits.size() * 2);
    dx.upload(x.bits.data(), x.bits.size() * 2);
    const int64_t ldxt = cuda::vnm_xt_ld(m) + 8;
    cuda::DeviceBuffer xt(cols * ldxt * 2);
    cuda::check_cuda(cudaMemset(xt.data(), 0xff, xt.bytes()), "poison xt");
    cuda::GemmProblem p;
    p.x = dx.data();
    p.m = m;
    p.ldx = x.ldx;
    ASSERT_EQ(cuda::vnm_transpose_x(p, cols, xt.data(), ldxt, nullptr), cudaSuccess);
    std::vector<uint16_t> got(cols * ldxt);
    xt.download(got.data(), got.size() * 2);
    int64_t bad = 0;
    for (int64_t k = 0; k < cols; ++k)
      for (int64_t t = 0; t < ldxt; ++t)
        bad += got[k * ldxt + t] != (t < m ? x.bits[t * x.ldx + k] : uint16_t{0});
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(cuda::vnm_transpose_x(p, cols, xt.data(), cuda::vnm_xt_ld(m) - 8, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(cuda::vnm_transpose_x(p, cols, xt.data(), ldxt + 4, nullptr), cudaErrorInvalidValue);
  }
}

TEST(GpuVnmWgmma, PrefillDispatchPicksAKernelForEveryM) {
  SPARSA_REQUIRE_VNM_WGMMA(pattern_only(64, 8));
  uint64_t seed = 9200;
  for (int64_t m : {int64_t{17}, cuda::kWgmmaMinM - 1, cuda::kWgmmaMinM, int64_t{200}}) {
    check_case({256, 640, m, 64, 8}, seed += 10, Kernel::Dispatch);
    check_case({256, 640, m, 128, 16, ElemType::BF16}, seed += 10, Kernel::Dispatch);
  }
  // Patterns the wgmma kernel does not take go to the mma.sp kernel.
  check_case({256, 640, 200, 16, 4}, seed += 10, Kernel::Dispatch);
  check_case({256, 640, 200, 64, 32}, seed += 10, Kernel::Dispatch);
}

// A benchmark shape at full size: the whole output against the mma.sp kernel, 16 sampled tokens
// against the double reference.
TEST(GpuVnmWgmma, BenchmarkShapeMatchesReferenceAndMmaKernel) {
  SPARSA_REQUIRE_VNM_WGMMA(pattern_only(64, 8));
  const Case cases[] = {{4096, 4096, 2048, 64, 8}, {4096, 11008, 256, 128, 16},
                        {11008, 4096, 300, 64, 5}};
  uint64_t seed = 9400;
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const Prepared pr = prepare(c, seed += 10);
    const DeviceRun run = run_kernel(pr, c.rows, ElemType::F32, Kernel::Wgmma);
    const DeviceRun mma = run_kernel(pr, c.rows, ElemType::F32, Kernel::Mma);
    EXPECT_TRUE(run.padding_intact && run.repeatable);
    if (cuda::vnm_wgmma_staged_supported(pr.dev.weights)) {
      const DeviceRun staged = run_kernel(pr, c.rows, ElemType::F32, Kernel::Staged);
      EXPECT_LE(relative_error(run.y, staged.y), 1e-4) << "Xᵀ and staged kernels disagree";
    }
    EXPECT_LE(relative_error(run.y, mma.y), 1e-4) << "wgmma and mma.sp kernels disagree";
    expect_sampled_tokens_match_reference(run.y, pr.x, pr.w, 16, seed);
  }
}

TEST(GpuVnmWgmma, RefusesPatternsItDoesNotTake) {
  SPARSA_SKIP_WITHOUT_GPU();
  for (auto [v, m] : {std::pair{16, 8}, std::pair{32, 8}, std::pair{64, 32}, std::pair{128, 64}}) {
    SCOPED_TRACE(fmt::format("{}:2:{}", v, m));
    const Prepared pr = prepare({128, 512, 64, v, m}, 9600 + v + m);
    EXPECT_FALSE(cuda::vnm_wgmma_supported(pr.dev.weights));
    cuda::DeviceBuffer y(64 * 128 * 4);
    cuda::DeviceBuffer x(pr.x.bits.size() * 2);
    x.upload(pr.x.bits.data(), pr.x.bits.size() * 2);
    cuda::GemmProblem p;
    p.x = x.data();
    p.m = 64;
    p.ldx = pr.x.ldx;
    p.y = y.data();
    p.ldy = 128;
    EXPECT_EQ(cuda::vnm_prefill_wgmma(pr.dev.weights, p, nullptr), cudaErrorNotSupported);
  }
}

TEST(GpuVnmWgmma, RejectsBadArguments) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Prepared pr = prepare({128, 256, 64, 64, 8}, 9700);
  cuda::DeviceBuffer x(64 * 264 * 2), y(64 * 128 * 4);
  cuda::GemmProblem p;
  p.x = x.data();
  p.m = 64;
  p.ldx = 260;  // not a multiple of 8
  p.y = y.data();
  p.ldy = 128;
  EXPECT_EQ(cuda::vnm_prefill_wgmma(pr.dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.ldx = 128;  // < K
  EXPECT_EQ(cuda::vnm_prefill_wgmma(pr.dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.ldx = 264;
  p.m = 0;
  EXPECT_EQ(cuda::vnm_prefill_wgmma(pr.dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.m = 64;
  p.x = nullptr;
  EXPECT_EQ(cuda::vnm_prefill_wgmma(pr.dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.x = static_cast<const char*>(x.data()) + 2;  // not 16-byte aligned
  EXPECT_EQ(cuda::vnm_prefill_wgmma(pr.dev.weights, p, nullptr), cudaErrorInvalidValue);
  cuda::VnmWeights bad = pr.dev.weights;
  bad.blocks_padded = 40;  // not a whole number of metadata chunks
  p.x = x.data();
  EXPECT_EQ(cuda::vnm_prefill_wgmma(bad, p, nullptr), cudaErrorInvalidValue);
  bad = pr.dev.weights;
  bad.type = ElemType::F32;
  EXPECT_EQ(cuda::vnm_prefill_wgmma(bad, p, nullptr), cudaErrorInvalidValue);
  // The Xᵀ entry point: ldxt below vnm_xt_ld(m), not a multiple of 8, null or misaligned Xᵀ.
  cuda::DeviceBuffer xt(256 * 72 * 2);
  EXPECT_EQ(cuda::vnm_prefill_wgmma_xt(pr.dev.weights, xt.data(), 56, p, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cuda::vnm_prefill_wgmma_xt(pr.dev.weights, xt.data(), 68, p, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cuda::vnm_prefill_wgmma_xt(pr.dev.weights, nullptr, 72, p, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cuda::vnm_prefill_wgmma_xt(pr.dev.weights, static_cast<char*>(xt.data()) + 8, 72, p,
                                       nullptr),
            cudaErrorInvalidValue);
  const cudaError_t ok = cuda::vnm_prefill_wgmma(pr.dev.weights, p, nullptr);
  EXPECT_EQ(ok, is_sm90() ? cudaSuccess : cudaErrorNotSupported);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// Session 8: split-K of both V:2:M wgmma kernels (vnm_prefill_wgmma_split): forced splits 1..8
// (capped at one per metadata chunk of 64 blocks) on the staged kernel (M = 8 fast gather, the
// generic gather, V = 128) and the Xᵀ kernel (128:2:16, 64:2:16), ragged N, K and m, against the
// double reference and against the unsplit kernel (fp32 summation order only).
TEST(GpuVnmWgmma, SplitKMatchesReferenceAndUnsplit) {
  SPARSA_REQUIRE_VNM_WGMMA(pattern_only(64, 8));
  const Case cases[] = {
      {300, 2100, 70, 64, 8},                                   // staged, fast gather; 5 chunks
      {520, 3001, 129, 64, 6, ElemType::BF16, ElemType::F16},   // staged, generic gather
      {700, 4500, 200, 128, 8, ElemType::BF16, ElemType::F32},  // staged, V = 128
      {200, 5000, 100, 128, 16, ElemType::F16, ElemType::BF16}, // Xᵀ kernel, V = 128; 5 chunks
      {330, 4100, 150, 64, 16, ElemType::F16, ElemType::F32},   // Xᵀ kernel, V = 64
      {130, 600, 65, 128, 10},                                  // one chunk: never split
  };
  uint64_t seed = 9800;
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const Prepared pr = prepare(c, seed += 10);
    const std::vector<float> want = reference_gemm(pr.x, pr.w);
    const cuda::VnmWeights& w = pr.dev.weights;
    const int64_t kchunks = w.blocks_padded / 64;
    auto run = [&](int split, size_t bytes) {
      return run_on_device(pr.x, c.rows, c.y_type, bytes, 0, [&](const cuda::GemmProblem& p) {
        return cuda::vnm_prefill_wgmma_split(w, p, nullptr, split);
      });
    };
    const DeviceRun base = run(1, 0);
    EXPECT_LE(relative_error(base.y, want), 1e-2);
    const double tol = c.y_type == ElemType::F32 ? 1e-4 : 8e-3;
    for (int split = 1; split <= cuda::kPrefillMaxSplit; ++split) {
      SCOPED_TRACE(fmt::format("split {}", split));
      const int s = cuda::vnm_prefill_splits(w, c.m, split);
      EXPECT_EQ(s, std::min<int64_t>(split, kchunks));
      const size_t bytes = cuda::vnm_prefill_workspace_bytes(w, c.m, split);
      if (s > 1)
        EXPECT_GE(bytes, static_cast<size_t>(s) * c.m * c.rows * sizeof(float));
      else
        EXPECT_EQ(bytes, 0u);
      const DeviceRun r = run(split, bytes);
      EXPECT_TRUE(r.padding_intact) << "wrote past column N of y";
      EXPECT_TRUE(r.repeatable) << "second call differs (the reduction must be deterministic)";
      const double err = relative_error(r.y, want);
      EXPECT_LE(err, 1e-2);
      EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
      EXPECT_LE(relative_error(r.y, base.y), tol) << "split vs unsplit";
      if (s == 1) EXPECT_EQ(r.y, base.y) << "split 1 must be the unsplit kernel";
    }
  }
}

// The automatic choice through vnm_gemm with the workspace vnm_prefill_workspace_bytes asks for
// (these shapes split on an H100), the automatic choice without room (unsplit, the same bits),
// and a forced split with a short, null or misaligned workspace or out of range: refused, Y
// untouched.
TEST(GpuVnmWgmma, SplitAutoAndRefusedWorkspace) {
  SPARSA_REQUIRE_VNM_WGMMA(pattern_only(64, 8));
  const Case cases[] = {
      {1000, 4096, 64, 64, 8},                                   // 4 tiles, 8 chunks
      {900, 4096, 130, 128, 16, ElemType::BF16, ElemType::BF16}, // Xᵀ kernel, 8 tiles, 4 chunks
  };
  uint64_t seed = 9900;
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const Prepared pr = prepare(c, seed += 10);
    const std::vector<float> want = reference_gemm(pr.x, pr.w);
    const cuda::VnmWeights& w = pr.dev.weights;
    const int s = cuda::vnm_prefill_splits(w, c.m, -1);
    EXPECT_GE(s, 2) << "should split on an H100";
    const size_t bytes = cuda::vnm_prefill_workspace_bytes(w, c.m, -1);
    // The library's workspace query (GemmContext, DeviceMatrix) must cover the split's partials.
    EXPECT_GE(cuda::vnm_workspace_bytes(w, c.m), bytes);
    const DeviceRun autorun = run_on_device(pr.x, c.rows, c.y_type, bytes, 0,
                                            [&](const cuda::GemmProblem& p) {
                                              return cuda::vnm_gemm(w, p, nullptr);
                                            });
    EXPECT_TRUE(autorun.repeatable);
    EXPECT_TRUE(autorun.padding_intact);
    EXPECT_LE(relative_error(autorun.y, want), 1e-2);
    const DeviceRun base = run_on_device(pr.x, c.rows, c.y_type, 0, 0, [&](const cuda::GemmProblem& p) {
      return cuda::vnm_prefill_wgmma_split(w, p, nullptr, 1);
    });
    const DeviceRun small = run_on_device(pr.x, c.rows, c.y_type, 64, 0, [&](const cuda::GemmProblem& p) {
      return cuda::vnm_prefill_wgmma_split(w, p, nullptr, -1);
    });
    EXPECT_EQ(small.y, base.y) << "automatic split without room must run unsplit";
  }
  const Prepared pr = prepare({300, 2000, 100, 64, 8, ElemType::F16, ElemType::F16}, 9990);
  const cuda::VnmWeights& w = pr.dev.weights;
  const size_t need = cuda::vnm_prefill_workspace_bytes(w, 100, 4);
  ASSERT_GT(need, 0u);
  cuda::DeviceBuffer dx(pr.x.bits.size() * 2), dy(100 * 300 * 2), ws(need + 64);
  dx.upload(pr.x.bits.data(), pr.x.bits.size() * 2);
  char* base = static_cast<char*>(ws.data());
  struct Bad {
    const char* what;
    void* workspace;
    size_t bytes;
    int split;
  };
  const Bad bad[] = {
      {"workspace one float short", base, need - 4, 4},
      {"null workspace", nullptr, need, 4},
      {"misaligned workspace", base + 4, need, 4},
      {"split 9", base, need + 64, 9},
      {"split -2", base, need + 64, -2},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    cuda::check_cuda(cudaMemset(dy.data(), 0xff, dy.bytes()), "poison y");
    cuda::GemmProblem p;
    p.x = dx.data();
    p.m = 100;
    p.ldx = pr.x.ldx;
    p.y = dy.data();
    p.ldy = 300;
    p.y_type = ElemType::F16;
    p.workspace = b.workspace;
    p.workspace_bytes = b.bytes;
    EXPECT_EQ(cuda::vnm_prefill_wgmma_split(w, p, nullptr, b.split), cudaErrorInvalidValue);
    cuda::check_cuda(cudaDeviceSynchronize(), "after a refused call");
    std::vector<uint16_t> y(100 * 300);
    dy.download(y.data(), y.size() * 2);
    EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](uint16_t v) { return v == 0xffff; }))
        << "a refused call wrote Y";
  }
}

}  // namespace
}  // namespace sparsa::test

#else
#include <gtest/gtest.h>
TEST(GpuVnmWgmma, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }
#endif  // SPARSA_WITH_CUDA
