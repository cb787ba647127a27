// Session 10 of the compressed decode kernels (src/cuda/compressed_decode.cu): variants 30-32,
// codebook4's selectors built with fewer integer-pipe instructions (the high row's selectors moved
// down by fp16 adds, sel by IMAD, sel2 by IMAD.HI) and the same byte-permute lookups; 31's are the
// default (variant 1) since the session-10 final check, 33 keeps session 8's. The selectors are
// the same values, so every product must be variant 33's bit for bit, and within the tolerance of
// the double product of the codec's dequantised weights.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/compressed_internal.h"
#include "gpu_compressed_util.h"
#include "gpu_sparse_util.h"
#include "sparsa/cuda_compressed.h"
#include "sparse_matrices.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

constexpr double kTolerance = 1e-2;
constexpr int kSession10Variants[] = {30, 31, 32, 33};

struct VariantGuard {  // restores the process-wide loop variant after a test
  int variant = cuda::detail::compressed_variant();
  ~VariantGuard() { cuda::detail::set_compressed_variant(variant); }
};

// Random ragged 2:4 shapes (N not a multiple of 16 or 128, K not of the 512-column chunk), m =
// 1..16 (one and two token tiles), both output types, resident or few CTAs (split row groups):
// per-channel and per-tensor codebooks under variants 1 (the default) and 30-32 give variant 33's
// (session 8's selectors) bits; int4 (which runs the lean kernel under these variants) too.
TEST(GpuCompressedSession10, SelectorVariantsMatchDefaultBits) {
  SPARSA_SKIP_WITHOUT_GPU();
  VariantGuard guard;
  std::mt19937_64 rng(101);
  uint64_t seed = 30000;
  for (const char* spec : {"codebook4", "codebook4:tensor", "int4"}) {
    const int trials = std::string(spec) == "int4" ? 2 : 8;
    for (int trial = 0; trial < trials; ++trial) {
      const int64_t n = 16 + static_cast<int64_t>(rng() % 600);
      const int64_t k = 64 + static_cast<int64_t>(rng() % 4500);
      const int64_t m = trial == 0 ? 1 : trial == 1 ? 16 : 1 + static_cast<int64_t>(rng() % 16);
      const ElemType y_type = rng() % 2 ? ElemType::F32 : ElemType::F16;
      const int ctas = rng() % 2 ? 0 : 1 + static_cast<int>(rng() % 7);
      const CompressedMatrix c =
          random_compressed(nm_pattern(2, 4), FormatKind::NM, spec, n, k, seed += 10, 10);
      const auto dev = cuda::upload(cuda::tile_compressed(c));
      const Activations x = random_activations(m, k, ElemType::F16, seed + 1);
      const std::vector<float> ref = reference_dense(x, dequantised(c), n);
      std::vector<float> y1;
      for (int variant : {33, 1, 30, 31, 32}) {
        SCOPED_TRACE(fmt::format("{} N={} K={} m={} y={} ctas={} variant {}", spec, n, k, m,
                                 y_type == ElemType::F32 ? "f32" : "f16", ctas, variant));
        const std::vector<float> y =
            decode_under_variant(dev.weights, x, n, y_type, ctas, variant, ref, kTolerance);
        if (variant == 33) {
          y1 = y;
        } else {
          ASSERT_EQ(y.size(), y1.size());
          EXPECT_TRUE(std::memcmp(y.data(), y1.data(), y1.size() * sizeof(float)) == 0)
              << "not the session-8 selectors' bits";
        }
      }
    }
  }
}

// One small ragged case per variant (per-channel codebook, m = 3, f16 output, split row groups):
// the case compute-sanitizer's memcheck runs.
TEST(GpuCompressedSession10, SmallCaseEachVariant) {
  SPARSA_SKIP_WITHOUT_GPU();
  VariantGuard guard;
  const int64_t n = 300, k = 1100, m = 3;
  const CompressedMatrix c =
      random_compressed(nm_pattern(2, 4), FormatKind::NM, "codebook4", n, k, 31000, 10);
  const auto dev = cuda::upload(cuda::tile_compressed(c));
  const Activations x = random_activations(m, k, ElemType::F16, 31001);
  const std::vector<float> ref = reference_dense(x, dequantised(c), n);
  for (int variant : kSession10Variants) {
    SCOPED_TRACE(fmt::format("variant {}", variant));
    cuda::detail::set_compressed_variant(variant);
    const size_t ws = cuda::compressed_workspace_bytes(dev.weights, m, 3);
    const DeviceRun run = run_on_device(x, n, ElemType::F16, ws, 3, [&](const auto& pr) {
      return cuda::compressed_decode(dev.weights, pr, nullptr);
    });
    EXPECT_TRUE(run.padding_intact);
    EXPECT_TRUE(run.repeatable);
    EXPECT_LE(relative_error(run.y, ref), kTolerance);
  }
}

// The variant numbers are known to the switch (an unknown number falls back to the default).
TEST(GpuCompressedSession10, VariantNumbersAreKnown) {
  VariantGuard guard;
  for (int variant : kSession10Variants) {
    cuda::detail::set_compressed_variant(variant);
    EXPECT_EQ(cuda::detail::compressed_variant(), variant);
  }
}

}  // namespace
}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
