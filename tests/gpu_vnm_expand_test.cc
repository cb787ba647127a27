// V:2:M (M % 4 == 0) re-tiled as 2:4 over the full K on the device (src/cuda/vnm_expand.cu): the
// re-tiling equals the host twin (src/cuda/vnm_expand_tiling.cc, itself tested in
// tests/vnm_expand_tiling_test.cc) bit for bit, and on a compute capability 9.0 device the prefill
// through it matches the double reference and the mma.sp V:2:M kernel over ragged shapes.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "gpu_sparse_util.h"
#include "sparsa/error.h"
#include "vnm_expand_cases.h"

namespace sparsa::test::vnm_expand {
namespace {

TEST(GpuVnmExpand, DeviceRetilingEqualsHostTwin) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 5100;
  for (const Case& c : kCases) {
    SCOPED_TRACE(describe(c));
    const Expanded x = expand_case(c, seed += 7);
    const cuda::Nm24Tiled& twin = x.twin;
    const cuda::DeviceVnm dev = cuda::upload(x.vnm);
    const size_t vbytes = cuda::vnm_expanded_values_bytes(dev.weights);
    const size_t mbytes = cuda::vnm_expanded_meta_bytes(dev.weights);
    ASSERT_EQ(vbytes, twin.values.size() * 2);
    ASSERT_EQ(mbytes, twin.meta.size() * 4);
    cuda::DeviceBuffer values(vbytes), meta(mbytes);
    cuda::check_cuda(cudaMemset(values.data(), 0xab, vbytes), "poison");
    cuda::check_cuda(cudaMemset(meta.data(), 0xab, mbytes), "poison");
    ASSERT_EQ(cuda::vnm_expand_to_nm24(dev.weights, values.data(),
                                       static_cast<uint32_t*>(meta.data()), nullptr),
              cudaSuccess);
    cuda::check_cuda(cudaDeviceSynchronize(), "re-tiling");
    std::vector<uint16_t> got_values(twin.values.size());
    std::vector<uint32_t> got_meta(twin.meta.size());
    values.download(got_values.data(), vbytes);
    meta.download(got_meta.data(), mbytes);
    EXPECT_TRUE(got_values == twin.values) << "values differ from the host twin";
    EXPECT_TRUE(got_meta == twin.meta) << "metadata differs from the host twin";
  }
}

TEST(GpuVnmExpand, RefusesWhatItCannotRun) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Case c{64, 100, 64, 5};
  const SparseWeights w = random_vnm(c.rows, c.cols, c.v, c.mcols, c.type, 23);
  const cuda::DeviceVnm dev = cuda::upload(tiled(c, w));
  EXPECT_FALSE(cuda::vnm_expandable(dev.weights));
  EXPECT_FALSE(cuda::vnm_prefill_expands(dev.weights, 4096));
  cuda::DeviceBuffer buffer(1 << 16);
  EXPECT_EQ(cuda::vnm_expand_to_nm24(dev.weights, buffer.data(),
                                     static_cast<uint32_t*>(buffer.data()), nullptr),
            cudaErrorInvalidValue);
  cuda::GemmProblem p;
  p.m = 128;
  EXPECT_EQ(cuda::vnm_prefill_expanded(dev.weights, p, nullptr), cudaErrorInvalidValue);
  cuda::VnmWeights eight = dev.weights;
  eight.m = 8;
  EXPECT_FALSE(cuda::vnm_prefill_expands(eight, cuda::kWgmmaMinM - 1)) << "below the prefill";
  EXPECT_EQ(
      cuda::vnm_expand_to_nm24(eight, nullptr, static_cast<uint32_t*>(buffer.data()), nullptr),
      cudaErrorInvalidValue);
}

TEST(GpuVnmExpand, PrefillMatchesReferenceAndMmaKernel) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!is_sm90() || !cuda::nm24_wgmma_supported())
    GTEST_SKIP() << "the 2:4 wgmma kernel needs sm_90a";
  struct Run {
    Case c;
    int64_t m;
    ElemType y_type;
  };
  const Run runs[] = {
      {{77, 513, 64, 8}, 64, ElemType::F32},
      {{300, 2000, 128, 16}, 130, ElemType::F16},
      {{128, 1024, 64, 4}, 65, ElemType::BF16},
      {{200, 777, 16, 12, ElemType::BF16}, 200, ElemType::F32},
      {{640, 1500, 64, 8, ElemType::BF16}, 257, ElemType::BF16},
      {{520, 4096, 64, 8}, 300, ElemType::F16},
  };
  uint64_t seed = 6100;
  for (const Run& r : runs) {
    SCOPED_TRACE(describe(r.c) + fmt::format(" m={} -> {}", r.m, type_name(r.y_type)));
    const SparseWeights w = random_vnm(r.c.rows, r.c.cols, r.c.v, r.c.mcols, r.c.type, seed += 7);
    const cuda::DeviceVnm dev = cuda::upload(tiled(r.c, w));
    const Activations x = random_activations(r.m, r.c.cols, r.c.type, seed + 1);
    const size_t ws =
        cuda::nm24_prefill_workspace_bytes(cuda::vnm_expanded_shape(dev.weights), r.m);
    const DeviceRun run =
        run_on_device(x, r.c.rows, r.y_type, ws, 0, [&](const cuda::GemmProblem& p) {
          return cuda::vnm_prefill_expanded(dev.weights, p, nullptr);
        });
    EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
    EXPECT_TRUE(run.repeatable) << "second call differs";
    const double err = relative_error(run.y, reference_gemm(x, w));
    EXPECT_LE(err, 1e-2);
    EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
    const DeviceRun mma = run_on_device(
        x, r.c.rows, r.y_type, 0, 0,
        [&](const cuda::GemmProblem& p) { return cuda::vnm_prefill_mma(dev.weights, p, nullptr); });
    EXPECT_LE(relative_error(run.y, mma.y), r.y_type == ElemType::F32 ? 1e-4 : 1e-2)
        << "the 2:4 path and the mma.sp V:2:M kernel disagree";
  }
}

// The held copy (what upload writes with SPARSA_VNM_PREFILL_COPY=1, built here by hand since the
// switch is read once per process): vnm_prefill takes it from kVnmCopyMinM tokens on and matches
// the reference on both sides of that line.
TEST(GpuVnmExpand, HeldCopyPrefillMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!is_sm90() || !cuda::nm24_wgmma_supported())
    GTEST_SKIP() << "the 2:4 wgmma kernel needs sm_90a";
  const Case c{520, 1500, 64, 8};
  const SparseWeights w = random_vnm(c.rows, c.cols, c.v, c.mcols, c.type, 7100);
  const cuda::DeviceVnm dev = cuda::upload(tiled(c, w));
  cuda::DeviceBuffer values(cuda::vnm_expanded_values_bytes(dev.weights));
  cuda::DeviceBuffer meta(cuda::vnm_expanded_meta_bytes(dev.weights));
  ASSERT_EQ(cuda::vnm_expand_to_nm24(dev.weights, values.data(),
                                     static_cast<uint32_t*>(meta.data()), nullptr),
            cudaSuccess);
  cuda::VnmWeights held = dev.weights;
  held.prefill_values = values.data();
  held.prefill_meta = static_cast<const uint32_t*>(meta.data());
  for (int64_t m : {cuda::kVnmCopyMinM - 1, cuda::kVnmCopyMinM, int64_t{600}}) {
    SCOPED_TRACE(fmt::format("m = {}", m));
    EXPECT_EQ(cuda::vnm_prefill_copy_held(held, m), m >= cuda::kVnmCopyMinM);
    EXPECT_FALSE(cuda::vnm_prefill_expands(held, m)) << "re-tiling although a copy is held";
    const Activations x = random_activations(m, c.cols, c.type, 7200 + m);
    const DeviceRun run = run_on_device(
        x, c.rows, ElemType::F16, cuda::vnm_workspace_bytes(held, m), 0,
        [&](const cuda::GemmProblem& p) { return cuda::vnm_prefill(held, p, nullptr); });
    EXPECT_TRUE(run.padding_intact);
    EXPECT_TRUE(run.repeatable);
    const double err = relative_error(run.y, reference_gemm(x, w));
    EXPECT_LE(err, 1e-2);
    EXPECT_FALSE(std::isnan(err));
  }
}

// The rule as documented (only where SPARSA_VNM_EXPAND does not override it), and the workspace
// that vnm_workspace_bytes reports covering the 2:4 kernel's split partials.
TEST(GpuVnmExpand, RuleAndWorkspace) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!is_sm90() || !cuda::nm24_wgmma_supported())
    GTEST_SKIP() << "the 2:4 wgmma kernel needs sm_90a";
  if (std::getenv("SPARSA_VNM_EXPAND")) GTEST_SKIP() << "SPARSA_VNM_EXPAND overrides the rule";
  cuda::VnmWeights w;
  w.rows = 4096;
  w.cols = 4096;
  w.rows_padded = 4096;
  w.v = 64;
  w.blocks_padded = 512;
  w.row_groups_padded = 64;
  w.type = ElemType::F16;
  for (int mcols : {4, 8, 12, 16}) {
    w.m = mcols;
    w.blocks_padded = (4096 / mcols + 63) / 64 * 64;
    for (int64_t m : {int64_t{64}, int64_t{256}, cuda::kVnmExpandMinM - 1, cuda::kVnmExpandMinM,
                      int64_t{8192}}) {
      SCOPED_TRACE(fmt::format("M = {}, m = {}", mcols, m));
      const bool expect = mcols == 8 && m >= cuda::kVnmExpandMinM;
      EXPECT_EQ(cuda::vnm_prefill_expands(w, m), expect);
      if (expect)
        EXPECT_GE(cuda::vnm_workspace_bytes(w, m),
                  cuda::nm24_prefill_workspace_bytes(cuda::vnm_expanded_shape(w), m));
    }
  }
}

}  // namespace
}  // namespace sparsa::test::vnm_expand

#else
#include <gtest/gtest.h>
TEST(GpuVnmExpand, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }
#endif  // SPARSA_WITH_CUDA
