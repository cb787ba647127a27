// One 2:4 device layout (session 7): every 2:4 kernel reads the row-major values_k (cp.async of
// row pieces + ldmatrix.x4, src/cuda/nm24_layout.cuh) as well as tile_nm24's fragment order.
// Each kernel on values_k only is checked against the double CPU product AND bit for bit
// against the same kernel on the fragments only (the MMAs get the same registers in the same
// order): the decode kernel (m = 1..16, with and without forced split-K), the mma.sp prefill
// kernel and both register-A wgmma.sp kernels (128- and 192-token tiles), on ragged N, K and m,
// fp16 / bf16, every output type. upload(..., ValuesK) must write values_k only, equal to the
// canonical values row by row. Skipped without a GPU.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "cuda/wgmma_prefill_tiles.h"
#include "gpu_layout24_util.h"
#include "gpu_sparse_util.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

struct Case {
  int64_t rows, cols, m;
  ElemType type = ElemType::F16, y_type = ElemType::F32;
  int ctas = 0;  // decode: forced CTA count (split fix-up), 0 = the plan
};

enum class Kernel { Decode, Mma, RegA128, RegA192 };

const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::Decode:
      return "decode";
    case Kernel::Mma:
      return "mma.sp prefill";
    case Kernel::RegA128:
      return "wgmma register-A 128";
    default:
      return "wgmma register-A 192";
  }
}

DeviceRun run(const cuda::Nm24Weights& w, const Activations& x, const Case& c, Kernel kernel) {
  const size_t ws = kernel == Kernel::Decode ? cuda::nm24_workspace_bytes(w, c.m, c.ctas) : 0;
  return run_on_device(x, c.rows, c.y_type, ws, c.ctas, [&](const cuda::GemmProblem& p) {
    switch (kernel) {
      case Kernel::Decode:
        return cuda::nm24_decode(w, p, nullptr);
      case Kernel::Mma:
        return cuda::nm24_prefill_mma(w, p, nullptr);
      case Kernel::RegA128:
        return cuda::nm24_prefill_wgmma_tokens(w, p, nullptr, 128);
      default:
        return cuda::nm24_prefill_wgmma_tokens(w, p, nullptr, 192);
    }
  });
}

// The kernel on values_k only against the double reference and bit for bit against the
// fragments-only run.
void check_both_layouts(const Case& c, uint64_t seed, Kernel kernel) {
  SCOPED_TRACE(fmt::format("{}: N={} K={} m={} {}->{} ctas {}", kernel_name(kernel), c.rows,
                           c.cols, c.m, type_name(c.type), type_name(c.y_type), c.ctas));
  const SparseWeights w = random_nm24(c.rows, c.cols, c.type, seed);
  const DeviceNm24Both dev =
      upload_both(cuda::tile_nm24(w.values.data(), w.meta.data(), c.rows, c.cols, c.type));
  const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
  const DeviceRun frag = run(dev.fragments_only(), x, c, kernel);
  const DeviceRun rowk = run(dev.values_k_only(), x, c, kernel);
  EXPECT_TRUE(rowk.padding_intact) << "values_k: wrote past column N of y";
  EXPECT_TRUE(rowk.repeatable) << "values_k: second call differs";
  const double err = relative_error(rowk.y, reference_gemm(x, w));
  EXPECT_LE(err, 1e-2);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
  ASSERT_EQ(frag.y.size(), rowk.y.size());
  EXPECT_EQ(std::memcmp(frag.y.data(), rowk.y.data(), frag.y.size() * sizeof(float)), 0)
      << "values_k and fragment runs differ (max abs "
      << [&] {
           double d = 0;
           for (size_t i = 0; i < frag.y.size(); ++i)
             d = std::max(d, std::abs(double(frag.y[i]) - rowk.y[i]));
           return d;
         }()
      << ")";
}

TEST(GpuLayout24, DecodeReadsValuesKLikeFragments) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 17000;
  for (int64_t m = 1; m <= 16; ++m)  // every token count, ragged N and K
    check_both_layouts({77, 513, m, m % 2 ? ElemType::F16 : ElemType::BF16}, seed += 10,
                       Kernel::Decode);
  const Case cases[] = {
      {130, 100, 3},                                      // K < one chunk
      {200, 1000, 16, ElemType::F16, ElemType::F16},      // 4 chunks, two token tiles
      {1000, 2050, 9, ElemType::BF16, ElemType::BF16},    // 9 chunks (the ring wraps), 16 groups
      {384, 4096, 1, ElemType::F16, ElemType::BF16, 3},   // split fix-up, 3 CTAs
      {384, 4096, 16, ElemType::F16, ElemType::F32, 7},   // split fix-up, 7 CTAs
      {1000, 2050, 5, ElemType::BF16, ElemType::F32, 2},  // stream-K across row groups
      {4096, 4096, 1},                                    // a benchmark shape (the plan)
      {4096, 4096, 16, ElemType::F16, ElemType::F16},
  };
  for (const Case& c : cases) check_both_layouts(c, seed += 10, Kernel::Decode);
}

TEST(GpuLayout24, MmaPrefillReadsValuesKLikeFragments) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Case cases[] = {
      {77, 513, 17},                                    // ragged, m just above decode
      {130, 100, 40, ElemType::BF16, ElemType::BF16},   // K < one stage
      {256, 1000, 63, ElemType::F16, ElemType::F16},    // m just below wgmma
      {520, 2050, 130, ElemType::BF16, ElemType::F32},  // 2 token tiles, 9 chunks
      {384, 4096, 300, ElemType::F16, ElemType::BF16},  // 3 token tiles, 16 chunks
  };
  uint64_t seed = 17400;
  for (const Case& c : cases) check_both_layouts(c, seed += 10, Kernel::Mma);
}

TEST(GpuLayout24, RegisterAWgmmaReadsValuesKLikeFragments) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!is_sm90()) GTEST_SKIP() << "wgmma.sp needs a compute capability 9.0 device";
  ASSERT_TRUE(cuda::nm24_wgmma_supported()) << "no sm_90a image of the wgmma kernel loaded";
  const Case cases[] = {
      {256, 256, 128},                                  // one CTA, one chunk
      {77, 513, 300},                                   // ragged everything
      {130, 100, 70, ElemType::BF16, ElemType::BF16},   // K < one stage
      {520, 1000, 193, ElemType::F16, ElemType::F16},   // 3 row blocks, 2 tiles of 192
      {256, 4352, 129, ElemType::BF16, ElemType::F32},  // 17 chunks: both A rings wrap
      {640, 4096, 577, ElemType::F16, ElemType::BF16},  // 128 k-steps
  };
  uint64_t seed = 17800;
  for (const Case& c : cases) {
    check_both_layouts(c, seed += 10, Kernel::RegA128);
    check_both_layouts(c, seed, Kernel::RegA192);
  }
}

// upload(..., ValuesK) (the default with SPARSA_NM24_LAYOUT=k) writes one layout: values_k
// only, equal to the canonical kept values row by row (zero past the last group and in the
// padding rows), and nm24_gemm runs every path on it: decode, mma.sp prefill (m < kWgmmaMinM)
// and, on sm_90a, the shared-memory-A wgmma kernel. upload(..., Fragments) keeps the fragments.
TEST(GpuLayout24, UploadWritesOnlyValuesK) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 18200;
  for (const Case& shape : {Case{77, 513, 0, ElemType::F16}, Case{300, 1000, 0, ElemType::BF16}}) {
    SCOPED_TRACE(fmt::format("N={} K={} {}", shape.rows, shape.cols, type_name(shape.type)));
    const SparseWeights w = random_nm24(shape.rows, shape.cols, shape.type, seed += 10);
    const cuda::Nm24Tiled tiled =
        cuda::tile_nm24(w.values.data(), w.meta.data(), shape.rows, shape.cols, shape.type);
    EXPECT_NE(cuda::upload(tiled, cuda::Nm24Layout::Fragments).weights.values, nullptr);
    const cuda::DeviceNm24 dev = cuda::upload(tiled, cuda::Nm24Layout::ValuesK);
    EXPECT_EQ(dev.weights.values, nullptr);
    EXPECT_EQ(dev.values.bytes(), 0u);
    ASSERT_NE(dev.weights.values_k, nullptr);
    const int64_t half = tiled.cols_padded / 2, groups = (shape.cols + 3) / 4;
    ASSERT_EQ(dev.values_k.bytes(), static_cast<size_t>(tiled.rows_padded * half * 2));
    std::vector<uint16_t> got(static_cast<size_t>(tiled.rows_padded * half));
    dev.values_k.download(got.data(), got.size() * 2);
    std::vector<uint16_t> want(got.size(), 0);
    for (int64_t r = 0; r < shape.rows; ++r)
      for (int64_t c = 0; c < groups * 2; ++c) want[r * half + c] = w.values[r * groups * 2 + c];
    EXPECT_TRUE(got == want) << "values_k differs from the canonical values";
    for (int64_t m : {int64_t{1}, int64_t{9}, int64_t{16}, int64_t{17}, cuda::kWgmmaMinM - 1,
                      cuda::kWgmmaMinM, int64_t{200}}) {
      SCOPED_TRACE(fmt::format("m={}", m));
      const Activations x = random_activations(m, shape.cols, shape.type, seed + m);
      const DeviceRun r = run_on_device(
          x, shape.rows, ElemType::F32, cuda::nm24_workspace_bytes(dev.weights, m), 0,
          [&](const cuda::GemmProblem& p) { return cuda::nm24_gemm(dev.weights, p, nullptr); });
      EXPECT_TRUE(r.padding_intact && r.repeatable);
      EXPECT_LE(relative_error(r.y, reference_gemm(x, w)), 1e-2);
    }
  }
}

// Weights with neither layout are refused by every 2:4 launcher, not dereferenced.
TEST(GpuLayout24, RejectsWeightsWithoutValues) {
  SPARSA_SKIP_WITHOUT_GPU();
  const SparseWeights w = random_nm24(128, 256, ElemType::F16, 18600);
  const DeviceNm24Both dev =
      upload_both(cuda::tile_nm24(w.values.data(), w.meta.data(), 128, 256, ElemType::F16));
  cuda::Nm24Weights none = dev.weights;
  none.values = nullptr;
  none.values_k = nullptr;
  cuda::DeviceBuffer x(64 * 256 * 2), y(64 * 128 * 4), ws(1 << 20);
  ASSERT_EQ(cudaMemset(ws.data(), 0, ws.bytes()), cudaSuccess);
  cuda::GemmProblem p;
  p.x = x.data();
  p.ldx = 256;
  p.y = y.data();
  p.ldy = 128;
  p.workspace = ws.data();
  p.workspace_bytes = ws.bytes();
  p.m = 4;
  EXPECT_EQ(cuda::nm24_decode(none, p, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::nm24_gemm(none, p, nullptr), cudaErrorInvalidValue);
  p.m = 64;
  EXPECT_EQ(cuda::nm24_prefill_mma(none, p, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::nm24_prefill_wgmma(none, p, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::nm24_prefill_wgmma_ss(none, p, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::nm24_gemm(none, p, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace sparsa::test

#else
#include <gtest/gtest.h>
TEST(GpuLayout24, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }
#endif  // SPARSA_WITH_CUDA
