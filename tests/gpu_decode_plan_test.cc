// The session-7 plan switches of the V:2:M decode kernels (src/cuda/decode_tuning.h), which pick
// among existing kernels and splits, so only default plans (ctas = 0) change:
// - narrow: at m <= 8 with V >= 64, 32-row (2-warp) CTAs where 64-row CTAs would split row groups;
// - fill: all-resident stream-K where whole row groups, one CTA each, leave > 1/10 of the
//   resident CTAs idle.
// Randomized ragged shapes (N, K, m, fp16/bf16, every output type) in the ranges where each
// switch applies on a 132-SM H100/H200: on and off, every default plan matches the double
// reference, leaves Y's padding alone and repeats bit for bit; on sm_90 at least one case per
// switch must take another plan (other bits: another split of K).
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "cuda/decode_tuning.h"
#include "gpu_sparse_util.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

struct TuningRestore {
  cuda::DecodeTuning was = cuda::decode_tuning();
  ~TuningRestore() { cuda::set_decode_tuning(was); }
};

struct PlanCase {
  int v, bm;
  int64_t rows, cols, m;
  ElemType type, y_type;
};

// Runs the default plan with the switch off and on; returns whether the outputs differ.
bool check_both_ways(const PlanCase& c, bool cuda::DecodeTuning::*flag, uint64_t seed,
                     const cuda::DecodeTuning& base) {
  SCOPED_TRACE(fmt::format("{}:2:{} N={} K={} m={} {}->{}", c.v, c.bm, c.rows, c.cols, c.m,
                           type_name(c.type), type_name(c.y_type)));
  const SparseWeights w = random_vnm(c.rows, c.cols, c.v, c.bm, c.type, seed);
  const auto dev = cuda::upload(cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(),
                                               c.rows, c.cols, c.v, c.bm, c.type));
  const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
  const std::vector<float> ref = reference_gemm(x, w);
  std::vector<float> y[2];
  for (const bool on : {false, true}) {
    SCOPED_TRACE(on ? "switch on" : "switch off");
    cuda::DecodeTuning tuning = base;
    tuning.*flag = on;
    cuda::set_decode_tuning(tuning);
    const size_t ws = cuda::vnm_workspace_bytes(dev.weights, c.m, 0);
    const DeviceRun run = run_on_device(x, c.rows, c.y_type, ws, 0, [&](const auto& p) {
      return cuda::vnm_decode(dev.weights, p, nullptr);
    });
    EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
    EXPECT_TRUE(run.repeatable) << "second call differs";
    const double err = relative_error(run.y, ref);
    EXPECT_LE(err, 1e-2);
    EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
    y[on ? 1 : 0] = run.y;
  }
  return y[0].size() != y[1].size() ||
         std::memcmp(y[0].data(), y[1].data(), y[0].size() * sizeof(float)) != 0;
}

TEST(GpuDecode, NarrowPlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  cuda::DecodeTuning base = restore.was;
  base.fill = false;
  const int kinds[][2] = {{64, 8}, {128, 16}, {64, 5}, {128, 8}};
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  std::mt19937_64 rng(4100);
  uint64_t seed = 4100;
  int other = 0;
  for (int round = 0; round < 12; ++round) {
    const auto& kind = kinds[round % 4];
    // m = 1 and 2 most often (where 32-row CTAs fit 4 per SM), N up to ~9000 (row groups split
    // at 64 rows), K ragged with >= 2 chunks of 64 M columns.
    const int64_t m = round % 3 == 2 ? 1 + static_cast<int64_t>(rng() % 8) : 1 + round % 2;
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 9000);
    const int64_t cols = 128 * kind[1] + static_cast<int64_t>(rng() % 5000);
    const PlanCase c{kind[0], kind[1], rows, cols, m,
                     rng() % 2 ? ElemType::BF16 : ElemType::F16, y_types[rng() % 3]};
    other += check_both_ways(c, &cuda::DecodeTuning::narrow, seed += 10, base);
  }
  if (is_sm90()) EXPECT_GT(other, 0) << "no case took the narrow plan";
}

TEST(GpuDecode, FillPlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  cuda::DecodeTuning base = restore.was;
  base.narrow = false;
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  std::mt19937_64 rng(4300);
  uint64_t seed = 4300;
  int other = 0;
  // N 11400..15000: 89..118 row groups of 128 (m > 8) or 178..235 of 64 (m <= 8), whole groups
  // one CTA each on 132 / 264 resident CTAs; K ragged, >= 2 chunks.
  const int64_t ms[] = {1, 6, 11, 16};
  for (int round = 0; round < 4; ++round) {
    const int v = round % 2 ? 128 : 64, bm = round % 2 ? 16 : 8;
    const int64_t rows = 11400 + static_cast<int64_t>(rng() % 3600);
    const int64_t cols = 2100 + static_cast<int64_t>(rng() % 900);
    const PlanCase c{v, bm, rows, cols, ms[round], rng() % 2 ? ElemType::BF16 : ElemType::F16,
                     y_types[rng() % 3]};
    other += check_both_ways(c, &cuda::DecodeTuning::fill, seed += 10, base);
  }
  if (is_sm90()) EXPECT_GT(other, 0) << "no case took the fill plan";
}

}  // namespace
}  // namespace sparsa::test

#else  // no CUDA in this build

#include <gtest/gtest.h>
TEST(GpuDecodePlan, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }

#endif
