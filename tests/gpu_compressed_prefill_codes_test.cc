// The register-A prefill reading compressed 2:4 codes (compressed_prefill_codes, session 20:
// src/cuda/wgmma_prefill_codes.cu) against the register-A prefill on the device expansion of the
// same codes (expand_nm24, then nm24_prefill_wgmma_split with 128-token tiles): the same fp16
// fragments through the same wgmmas in the same order, so unsplit Y must match bit for bit. Split
// runs (their K shares are codes chunks, v10's are 256-column chunks) against the double product of
// the dequantised weights and the unsplit run; the dispatch of compressed_prefill; refusals.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "gpu_compressed_util.h"
#include "gpu_sparse_util.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_compressed.h"
#include "sparsa/cuda_kernels.h"
#include "sparsa/format.h"
#include "sparse_matrices.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

const char* kCodes[] = {"int8",      "int8:g32:asym", "int4", "int4:g64:asym", "int4:g32",
                        "codebook4", "codebook4:tensor"};

struct CodesCase {
  cuda::CompressedTiled tiled;
  std::vector<float> dense;  // the dequantised weights [n, k]
};

CodesCase make_codes_case(const char* spec, int64_t n, int64_t k, uint64_t seed, int chunk_steps = 0) {
  const CompressedMatrix c =
      random_compressed(Pattern::parse("2:4"), FormatKind::NM, spec, n, k, seed, 20);
  return {cuda::tile_compressed(c, chunk_steps), dequantised(c)};
}

double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double d2 = 0, r2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d2 += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    r2 += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(d2 / r2);
}

// N not a multiple of 256 (an odd number of row groups: the last CTA's second group is padding)
// or of 128 (300, 1004), K ragged (1000, 2049, 777), m from 17 to past two token tiles, every
// output type.
TEST(GpuCompressedPrefillCodes, MatchesTheRegisterAPrefillOnTheExpansion) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!cuda::compressed_prefill_codes_supported()) GTEST_SKIP() << "needs an sm_90a device";
  struct PrefillCase {
    int64_t n, k, m;
    ElemType y_type;
  };
  const PrefillCase cases[] = {{300, 1000, 100, ElemType::F16},
                               {1004, 2049, 17, ElemType::F32},
                               {640, 777, 300, ElemType::BF16},
                               {384, 4096, 64, ElemType::F16}};
  uint64_t seed = 12000;
  for (const PrefillCase& pc : cases)
    for (const char* spec : kCodes) {
      SCOPED_TRACE(fmt::format("{} N={} K={} m={}", spec, pc.n, pc.k, pc.m));
      const CodesCase c = make_codes_case(spec, pc.n, pc.k, ++seed);
      const cuda::DeviceCompressed dev = cuda::upload(c.tiled);
      const Activations x = random_activations(pc.m, pc.k, ElemType::F16, seed + 7);
      const DeviceRun codes = run_on_device(x, pc.n, pc.y_type, 0, 0, [&](const cuda::GemmProblem& p) {
        return cuda::compressed_prefill_codes(dev.weights, p, nullptr, 1);
      });
      cuda::DeviceBuffer scratch(cuda::compressed_expanded_bytes(dev.weights));
      const DeviceRun expanded = run_on_device(x, pc.n, pc.y_type, 0, 0, [&](const cuda::GemmProblem& p) {
        cuda::Nm24Weights e;
        const cudaError_t s = cuda::expand_nm24(dev.weights, scratch.data(), scratch.bytes(), &e, nullptr);
        return s != cudaSuccess ? s : cuda::nm24_prefill_wgmma_split(e, p, nullptr, 1, 128);
      });
      EXPECT_TRUE(codes.padding_intact);
      EXPECT_TRUE(codes.repeatable);
      ASSERT_EQ(codes.y.size(), expanded.y.size());
      EXPECT_EQ(differing_outputs(codes.y, expanded.y), 0)
          << "outputs differing from the register-A prefill on the expansion";
      EXPECT_LE(sampled_product_error(x, c.dense, pc.n, pc.k, codes.y, seed), 1e-2);

      // Split-K: 2 and 3 forced (K shares of whole codes chunks), fp32 partials reduced in order.
      for (int split : {2, 3}) {
        SCOPED_TRACE(fmt::format("split {}", split));
        const int s = cuda::compressed_prefill_codes_splits(dev.weights, pc.m, split);
        EXPECT_EQ(s, std::min<int64_t>(split, c.tiled.kchunks));
        const size_t ws = cuda::compressed_prefill_codes_workspace_bytes(dev.weights, pc.m, split);
        EXPECT_EQ(ws > 0, s > 1);
        const DeviceRun parts = run_on_device(x, pc.n, pc.y_type, ws, 0, [&](const cuda::GemmProblem& p) {
          return cuda::compressed_prefill_codes(dev.weights, p, nullptr, split);
        });
        EXPECT_TRUE(parts.padding_intact);
        EXPECT_TRUE(parts.repeatable);
        EXPECT_LE(sampled_product_error(x, c.dense, pc.n, pc.k, parts.y, seed), 1e-2);
        // Only the fp32 summation order differs from the unsplit run (bf16 / fp16 rounding of Y).
        EXPECT_LE(relative_difference(parts.y, codes.y), pc.y_type == ElemType::F32 ? 1e-5 : 1e-2);
      }
    }
}

// V:2:M codes through the staged gathered kernel (compressed_prefill_vnm_codes) against the same
// kernel on the device expansion of the codes (expand_vnm, then vnm_prefill_wgmma_staged): the
// same fp16 fragments and gathers through the same wgmmas, so unsplit Y must match bit for bit.
// 64:2:8 (the M = 8 gather), 64:2:5 and 128:2:16 (the generic one, V = 128), both chunk lengths,
// ragged N / K, m from 17 to past a token tile; forced splits against the double product.
TEST(GpuCompressedPrefillCodes, VnmMatchesTheStagedKernelOnTheExpansion) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!cuda::compressed_prefill_codes_supported()) GTEST_SKIP() << "needs an sm_90a device";
  struct VnmCase {
    const char* pattern;
    const char* spec;
    int chunk_steps;
    int64_t n, k, m;
    ElemType y_type;
  };
  const VnmCase cases[] = {{"64:2:8", "int4", 16, 300, 1000, 100, ElemType::F16},
                           {"64:2:8", "codebook4", 8, 640, 2049, 17, ElemType::F32},
                           {"64:2:8", "int8:g32:asym", 16, 200, 777, 300, ElemType::BF16},
                           {"64:2:8", "codebook4:tensor", 16, 1004, 1536, 64, ElemType::F16},
                           {"64:2:5", "int4:g64:asym", 8, 260, 1003, 130, ElemType::F16},
                           {"64:2:5", "codebook4", 16, 128, 640, 40, ElemType::F32},
                           {"128:2:16", "int8", 8, 384, 2000, 100, ElemType::F16},
                           {"128:2:16", "int4:g32", 16, 250, 1100, 200, ElemType::F32}};
  uint64_t seed = 13000;
  for (const VnmCase& vc : cases) {
    SCOPED_TRACE(fmt::format("{} {} steps {} N={} K={} m={}", vc.pattern, vc.spec, vc.chunk_steps,
                             vc.n, vc.k, vc.m));
    const CompressedMatrix c = random_compressed(Pattern::parse(vc.pattern), FormatKind::VNM, vc.spec,
                                                 vc.n, vc.k, ++seed, 20);
    const cuda::CompressedTiled tiled = cuda::tile_compressed(c, vc.chunk_steps);
    const std::vector<float> dense = dequantised(c);
    const cuda::DeviceCompressed dev = cuda::upload(tiled);
    ASSERT_TRUE(cuda::compressed_prefill_vnm_codes_supported(dev.weights));
    const Activations x = random_activations(vc.m, vc.k, ElemType::F16, seed + 7);
    const DeviceRun codes = run_on_device(x, vc.n, vc.y_type, 0, 0, [&](const cuda::GemmProblem& p) {
      return cuda::compressed_prefill_codes(dev.weights, p, nullptr, 1);
    });
    cuda::DeviceBuffer scratch(cuda::compressed_expanded_bytes(dev.weights));
    const DeviceRun expanded = run_on_device(x, vc.n, vc.y_type, 0, 0, [&](const cuda::GemmProblem& p) {
      cuda::VnmWeights e;
      const cudaError_t s = cuda::expand_vnm(dev.weights, scratch.data(), scratch.bytes(), &e, nullptr);
      return s != cudaSuccess ? s : cuda::vnm_prefill_wgmma_staged(e, p, nullptr);
    });
    EXPECT_TRUE(codes.padding_intact);
    EXPECT_TRUE(codes.repeatable);
    ASSERT_EQ(codes.y.size(), expanded.y.size());
    EXPECT_EQ(differing_outputs(codes.y, expanded.y), 0)
        << "outputs differing from the staged kernel on the expansion";
    EXPECT_LE(sampled_product_error(x, dense, vc.n, vc.k, codes.y, seed), 1e-2);
    for (int split : {2, 3}) {
      SCOPED_TRACE(fmt::format("split {}", split));
      const size_t ws = cuda::compressed_prefill_codes_workspace_bytes(dev.weights, vc.m, split);
      const DeviceRun parts = run_on_device(x, vc.n, vc.y_type, ws, 0, [&](const cuda::GemmProblem& p) {
        return cuda::compressed_prefill_codes(dev.weights, p, nullptr, split);
      });
      EXPECT_TRUE(parts.padding_intact);
      EXPECT_TRUE(parts.repeatable);
      EXPECT_LE(sampled_product_error(x, dense, vc.n, vc.k, parts.y, seed), 1e-2);
      EXPECT_LE(relative_difference(parts.y, codes.y), vc.y_type == ElemType::F32 ? 1e-5 : 1e-2);
    }
  }
  // Dispatch: 64:2:8 from 2048 tokens runs as 2:4 over the full K on the expansion (faster than
  // any gathered kernel there), 64:2:5 (not expandable) keeps the codes kernel.
  const CompressedMatrix m8 = random_compressed(Pattern::parse("64:2:8"), FormatKind::VNM, "int4", 256, 512, 1, 20);
  const CompressedMatrix m5 = random_compressed(Pattern::parse("64:2:5"), FormatKind::VNM, "int4", 256, 640, 2, 20);
  const cuda::DeviceCompressed d8 = cuda::upload(cuda::tile_compressed(m8));
  const cuda::DeviceCompressed d5 = cuda::upload(cuda::tile_compressed(m5));
  EXPECT_TRUE(cuda::compressed_prefill_takes_codes(d8.weights, 100));
  EXPECT_EQ(cuda::compressed_prefill_takes_codes(d8.weights, 4096),
            !cuda::vnm_prefill_expands(cuda::expanded_vnm_shape(d8.weights), 4096));
  EXPECT_TRUE(cuda::compressed_prefill_takes_codes(d5.weights, 4096));
  EXPECT_FALSE(cuda::compressed_prefill_takes_codes(d5.weights, 16));
}

// compressed_prefill takes the 2:4 codes kernel from 17 tokens to where v12 starts (the scratch it
// needs is then 0), not for int8 in 16-step chunks; its result equals the kernel's.
TEST(GpuCompressedPrefillCodes, CompressedPrefillDispatch) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!cuda::compressed_prefill_codes_supported()) GTEST_SKIP() << "needs an sm_90a device";
  const CodesCase c = make_codes_case("int4", 2048, 1024, 77);
  const cuda::DeviceCompressed dev = cuda::upload(c.tiled);
  EXPECT_FALSE(cuda::compressed_prefill_takes_codes(dev.weights, 16));  // the decode kernels
  for (int64_t m : {17, 64, 200, 511}) {
    SCOPED_TRACE(m);
    const bool v12 = cuda::compressed_prefill_reads_codes(dev.weights, m);
    EXPECT_TRUE(v12 || cuda::compressed_prefill_takes_codes(dev.weights, m));
    EXPECT_EQ(cuda::compressed_prefill_scratch_bytes(dev.weights, m), 0u);
    if (v12) continue;
    const Activations x = random_activations(m, 1024, ElemType::F16, m);
    const size_t ws = cuda::compressed_prefill_workspace_bytes(dev.weights, m);
    EXPECT_EQ(ws, cuda::compressed_prefill_codes_workspace_bytes(dev.weights, m));
    const DeviceRun via = run_on_device(x, 2048, ElemType::F16, ws, 0, [&](const cuda::GemmProblem& p) {
      return cuda::compressed_prefill(dev.weights, p, nullptr, 0, nullptr);
    });
    const DeviceRun direct = run_on_device(x, 2048, ElemType::F16, ws, 0, [&](const cuda::GemmProblem& p) {
      return cuda::compressed_prefill_codes(dev.weights, p, nullptr);
    });
    EXPECT_EQ(via.y, direct.y);
    EXPECT_LE(sampled_product_error(x, c.dense, 2048, 1024, via.y, m), 1e-2);
  }
  const cuda::DeviceCompressed d16 = cuda::upload(make_codes_case("int8", 256, 512, 6, 16).tiled);
  EXPECT_FALSE(cuda::compressed_prefill_takes_codes(d16.weights, 100));
}

TEST(GpuCompressedPrefillCodes, RefusesWhatItCannotRun) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!cuda::compressed_prefill_codes_supported()) GTEST_SKIP() << "needs an sm_90a device";
  const CompressedMatrix bitmap = random_compressed(unstructured_pattern(0.5), FormatKind::Bitmap,
                                                    "int4", 128, 512, 1, 20);
  const cuda::DeviceCompressed dv = cuda::upload(cuda::tile_compressed(bitmap));
  const cuda::DeviceCompressed d16 = cuda::upload(make_codes_case("int8", 128, 512, 2, 16).tiled);
  const cuda::DeviceCompressed ok = cuda::upload(make_codes_case("int4", 128, 2048, 3).tiled);
  const Activations x = random_activations(100, 2048, ElemType::F16, 4);
  run_on_device(x, 128, ElemType::F16, 0, 0, [&](cuda::GemmProblem p) {
    EXPECT_EQ(cuda::compressed_prefill_codes(dv.weights, p, nullptr), cudaErrorInvalidValue);
    EXPECT_EQ(cuda::compressed_prefill_codes(d16.weights, p, nullptr), cudaErrorInvalidValue);
    EXPECT_EQ(cuda::compressed_prefill_codes(ok.weights, p, nullptr, 9), cudaErrorInvalidValue);
    EXPECT_EQ(cuda::compressed_prefill_codes(ok.weights, p, nullptr, -1), cudaErrorInvalidValue);
    // A forced split needs the partials' workspace (16 bytes here): refused, nothing launched.
    EXPECT_EQ(cuda::compressed_prefill_codes(ok.weights, p, nullptr, 2), cudaErrorInvalidValue);
    cuda::GemmProblem bad = p;
    bad.ldx = 2047;  // shorter than K
    EXPECT_EQ(cuda::compressed_prefill_codes(ok.weights, bad, nullptr), cudaErrorInvalidValue);
    bad = p;
    bad.m = 0;
    EXPECT_EQ(cuda::compressed_prefill_codes(ok.weights, bad, nullptr), cudaErrorInvalidValue);
    // The automatic rule with the short workspace runs unsplit.
    return cuda::compressed_prefill_codes(ok.weights, p, nullptr);
  });
}

}  // namespace
}  // namespace sparsa::test
