// Session 8 of the compressed decode kernels (src/cuda/compressed_decode.cu): variant 20, the
// end of the stream-K split by joins instead of the counter protocol (kPair: odd CTAs rotate their
// pieces, early pieces publish tagged words, a split row group's late CTA — or the two late CTAs
// of one cluster of 2, through distributed shared memory — adds them in CTA order). Checked
// against the double product of the codec's dequantised weights and, bit for bit, against the
// counter protocol of the default kernel (variant 1: the same additions in the same order).
#ifdef SPARSA_WITH_CUDA

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

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

using cuda::check_cuda;
using cuda::ElemType;

constexpr double kTolerance = 1e-2;
constexpr int kPairVariant = 20;
constexpr int kPairAllVariant = 21;  // kPair also on plans with counter groups at CTAs' ends

struct VariantGuard {  // restores the process-wide loop variant after a test
  int variant = cuda::detail::compressed_variant();
  ~VariantGuard() { cuda::detail::set_compressed_variant(variant); }
};

struct PairCase {
  cuda::CompressedTiled tiled;
  std::vector<float> dense;
  CompressedShape shape;
};

// A random ragged 2:4 matrix of `groups` row groups (128 rows, the last one short) and about
// `chunks` K chunks of the kernel (256 columns for int8, 512 for 4-bit codes; the last one short).
PairCase make_pair_case(const char* spec, int groups, int chunks, std::mt19937_64& rng,
                        uint64_t seed) {
  const int64_t chunk = std::string(spec).rfind("int8", 0) == 0 ? 256 : 512;
  const int64_t n = 128 * int64_t{groups} - static_cast<int64_t>(rng() % 60);
  const int64_t k = chunk * chunks - static_cast<int64_t>(rng() % (chunk / 2)) - 8;
  const CompressedMatrix c =
      random_compressed(nm_pattern(2, 4), FormatKind::NM, spec, n, k, seed, 10);
  return {cuda::tile_compressed(c), dequantised(c), {n, k}};
}

// Even CTA counts whose plan variant 20 takes (joins somewhere, no counter group at a CTA's end).
std::vector<int> taken_ctas(const cuda::CompressedWeights& w, int64_t m) {
  std::vector<int> out;
  for (int c = 2; c <= 64; c += 2) {
    const cuda::detail::PairGroups g = cuda::detail::compressed_pair_groups(w, m, c);
    if (g.taken && g.ctas == c && g.single + g.pair > 0) out.push_back(c);
  }
  return out;
}

// Random ragged shapes, m = 1..8 (and m = 12 and int8 groups of 64, which run the lean kernel),
// both output types; variant 20 at a CTA count its pair plan takes, variant 21 also at a random
// even count (joins mixed with counter-protocol groups at CTAs' ends): within the tolerance of
// the double reference, a second call on the same workspace identical (no tag left behind), and
// the bits of variant 1 at the same CTA count. Across the cases, joins by one CTA and by cluster
// pairs, and mixed plans, must all have run.
TEST(GpuCompressedSession8, PairJoinMatchesCounterBits) {
  SPARSA_SKIP_WITHOUT_GPU();
  VariantGuard guard;
  std::mt19937_64 rng(81);
  uint64_t seed = 20000;
  int taken = 0, mixed = 0;
  int64_t singles = 0, pairs = 0, earlies = 0;
  for (const char* spec : {"int8", "codebook4", "codebook4:tensor", "int8:g64"}) {
    for (int trial = 0; trial < 7; ++trial) {
      const int groups = 2 + static_cast<int>(rng() % 9);
      const int chunks = 2 + static_cast<int>(rng() % 9);
      const int64_t m = trial == 6 ? 12 : 1 + static_cast<int64_t>(rng() % 8);
      const ElemType y_type = rng() % 2 ? ElemType::F32 : ElemType::F16;
      const PairCase c = make_pair_case(spec, groups, chunks, rng, seed += 10);
      const auto dev = cuda::upload(c.tiled);
      cuda::detail::set_compressed_variant(kPairVariant);
      const std::vector<int> cands = taken_ctas(dev.weights, m);
      const int ctas = cands.empty() ? 4 : cands[rng() % cands.size()];
      const cuda::detail::PairGroups plan =
          cuda::detail::compressed_pair_groups(dev.weights, m, ctas);
      if (plan.taken) {
        ++taken;
        singles += plan.single;
        pairs += plan.pair;
        earlies += plan.early;
      }
      SCOPED_TRACE(fmt::format("{} N={} K={} m={} ctas={} y={} taken={} (single {} pair {} early {})",
                               spec, c.shape.n, c.shape.k, m, ctas,
                               y_type == ElemType::F32 ? "f32" : "f16", plan.taken, plan.single,
                               plan.pair, plan.early));
      const Activations x = random_activations(m, c.shape.k, ElemType::F16, seed + 1);
      const std::vector<float> ref = reference_dense(x, c.dense, c.shape.n);
      // variant 21 also at a random even count (its plan may keep late counter groups)
      const int ctas_b = 2 * (1 + static_cast<int>(rng() % 12));
      cuda::detail::set_compressed_variant(kPairAllVariant);
      const cuda::detail::PairGroups plan_b =
          cuda::detail::compressed_pair_groups(dev.weights, m, ctas_b);
      if (plan_b.taken && plan_b.late > 0 && plan_b.single + plan_b.pair > 0) ++mixed;
      const struct {
        int ctas;
        std::vector<int> variants;
      } runs[] = {{ctas, {1, kPairVariant, kPairAllVariant}}, {ctas_b, {1, kPairAllVariant}}};
      for (const auto& r : runs) {
        std::vector<float> y1;
        for (int variant : r.variants) {
          SCOPED_TRACE(fmt::format("variant {} ctas {} (21's plan at {}: taken {} late {})",
                                   variant, r.ctas, ctas_b, plan_b.taken, plan_b.late));
          const std::vector<float> y = decode_under_variant(dev.weights, x, c.shape.n, y_type,
                                                            r.ctas, variant, ref, kTolerance);
          if (variant == 1) {
            y1 = y;
          } else {
            EXPECT_TRUE(std::memcmp(y.data(), y1.data(), y1.size() * 4) == 0)
                << "not the counter protocol's bits";
          }
        }
      }
    }
  }
  EXPECT_GE(taken, 12) << "too few cases ran the pair plan";
  EXPECT_GT(mixed, 0) << "no mixed plan (joins and late counter groups) ran";
  EXPECT_GT(singles, 0) << "no one-CTA join planned";
  EXPECT_GT(pairs, 0) << "no cluster-pair join planned";
  EXPECT_GT(earlies, 0) << "no mid-range counter group planned";
}

// The kPair timeline twin (fp16 output, m <= 8) records which CTAs joined after their loop: as
// many one-CTA joins as the host plan has such groups, and two CTAs per cluster-pair group — so
// the pair kernels really ran, in clusters — and its product matches the reference.
TEST(GpuCompressedSession8, PairJoinsHappenWherePlanned) {
  SPARSA_SKIP_WITHOUT_GPU();
  VariantGuard guard;
  std::mt19937_64 rng(83);
  uint64_t seed = 20600;
  constexpr int kW = cuda::detail::kTimelineWords;
  int checked = 0;
  for (const char* spec : {"int8", "codebook4"}) {
    for (int trial = 0; trial < 4; ++trial) {
      const int64_t m = trial % 2 == 0 ? 1 : 8;
      const PairCase c = make_pair_case(spec, 4 + static_cast<int>(rng() % 6),
                                        3 + static_cast<int>(rng() % 6), rng, seed += 10);
      const auto dev = cuda::upload(c.tiled);
      cuda::detail::set_compressed_variant(kPairVariant);
      const std::vector<int> cands = taken_ctas(dev.weights, m);
      if (cands.empty()) continue;
      const int ctas = cands[rng() % cands.size()];
      const cuda::detail::PairGroups plan =
          cuda::detail::compressed_pair_groups(dev.weights, m, ctas);
      SCOPED_TRACE(fmt::format("{} N={} K={} m={} ctas={} (single {} pair {} early {})", spec,
                               c.shape.n, c.shape.k, m, ctas, plan.single, plan.pair, plan.early));
      const Activations x = random_activations(m, c.shape.k, ElemType::F16, seed + 1);
      cuda::DeviceBuffer dx(x.bits.size() * 2), dy(m * c.shape.n * 2);
      dx.upload(x.bits.data(), x.bits.size() * 2);
      cuda::DeviceBuffer ws(cuda::compressed_workspace_bytes(dev.weights, m, ctas));
      check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
      cuda::GemmProblem p;
      p.x = dx.data();
      p.m = m;
      p.ldx = x.ldx;
      p.y = dy.data();
      p.ldy = c.shape.n;
      p.y_type = ElemType::F16;
      p.workspace = ws.data();
      p.workspace_bytes = ws.bytes();
      p.ctas = ctas;
      float us = 0;
      const std::vector<unsigned long long> tl =
          cuda::detail::compressed_decode_timeline(dev.weights, p, nullptr, &us, nullptr);
      ASSERT_EQ(tl.size(), static_cast<size_t>(ctas) * kW);
      int64_t one = 0, two = 0;
      for (int cta = 0; cta < ctas; ++cta) {
        const unsigned long long flags = tl[cta * size_t{kW} + 18];
        one += (flags & 4) != 0;
        two += (flags & 8) != 0;
        EXPECT_NE(tl[cta * size_t{kW} + 7], 0u) << "CTA " << cta << " left no exit stamp";
      }
      EXPECT_EQ(one, plan.single);
      EXPECT_EQ(two, 2 * plan.pair);
      std::vector<uint16_t> bits(m * c.shape.n);
      dy.download(bits.data(), bits.size() * 2);
      std::vector<float> y(bits.size());
      for (size_t i = 0; i < y.size(); ++i) y[i] = from_bits(bits[i], ElemType::F16);
      EXPECT_LE(relative_error(y, reference_dense(x, c.dense, c.shape.n)), kTolerance);
      ++checked;
    }
  }
  EXPECT_GE(checked, 4);
}

}  // namespace
}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
