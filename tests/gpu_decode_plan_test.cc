// The plan switches of the decode kernels (src/cuda/decode_tuning.h) that only change default
// plans (ctas = 0). Session 7, V:2:M: `fill` (whole row groups that spill a partial second wave
// of CTAs run all-resident stream-K, tagged fix-up), `trim` (stream-K plans run on the fewest
// CTAs with the same most units per CTA). Session 11, 2:4 and V:2:M: `ktail` (an owner CTA per
// row group runs its last units and adds the pieces helper CTAs computed for its first units) and
// `ktail_early` (owners load those pieces before their last unit: the same bits). Session 12:
// `prologue_one` (only unit 0's weights issued before the wait for the previous grid: the same
// bits).
// Randomized ragged shapes (N, K, m, fp16/bf16, every output type) in the ranges where each
// applies on a 132-SM H100/H200: on and off, every default plan matches the double reference,
// leaves Y's padding alone and repeats bit for bit; on sm_90 at least one case per switch must
// take the other plan (fill, trim: other bits, another split of K; ktail: its launch counter).
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

struct PlanCase {
  int v, bm;  // v = 0: 2:4
  int64_t rows, cols, m;
  ElemType type, y_type;
};

// Runs the default plan with the switch off and on; returns whether the outputs differ.
bool check_both_ways(const PlanCase& c, bool cuda::DecodeTuning::*flag, uint64_t seed,
                     const cuda::DecodeTuning& base, bool* ktail_launched = nullptr) {
  SCOPED_TRACE(fmt::format("{} N={} K={} m={} {}->{}",
                           c.v == 0 ? std::string("2:4") : fmt::format("{}:2:{}", c.v, c.bm),
                           c.rows, c.cols, c.m, type_name(c.type), type_name(c.y_type)));
  const SparseWeights w = c.v == 0 ? random_nm24(c.rows, c.cols, c.type, seed)
                                   : random_vnm(c.rows, c.cols, c.v, c.bm, c.type, seed);
  cuda::DeviceNm24 nm;
  cuda::DeviceVnm vn;
  if (c.v == 0) {
    nm = cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), c.rows, c.cols, c.type));
  } else {
    vn = cuda::upload(cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), c.rows,
                                     c.cols, c.v, c.bm, c.type));
  }
  const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
  const std::vector<float> ref = reference_gemm(x, w);
  std::vector<float> y[2];
  for (const bool on : {false, true}) {
    SCOPED_TRACE(on ? "switch on" : "switch off");
    cuda::DecodeTuning tuning = base;
    tuning.*flag = on;
    cuda::set_decode_tuning(tuning);
    const size_t ws = c.v == 0 ? cuda::nm24_workspace_bytes(nm.weights, c.m, 0)
                               : cuda::vnm_workspace_bytes(vn.weights, c.m, 0);
    const unsigned long long ktail_before = cuda::decode_ktail_launches();
    const DeviceRun run = run_on_device(x, c.rows, c.y_type, ws, 0, [&](const auto& p) {
      return c.v == 0 ? cuda::nm24_decode(nm.weights, p, nullptr)
                      : cuda::vnm_decode(vn.weights, p, nullptr);
    });
    if (!tuning.ktail) EXPECT_EQ(cuda::decode_ktail_launches(), ktail_before) << "ktail is off";
    if (ktail_launched && on) *ktail_launched = cuda::decode_ktail_launches() != ktail_before;
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

// fill and trim are compared with ktail off: it replaces both plans of a pair by the same owner
// plan where it applies.
// (Also without ksplit_multi / ksplit32_multi, which would run a K-split plan both ways at m <= 8.)
cuda::DecodeTuning no_ktail(const TuningRestore& restore) {
  cuda::DecodeTuning t = restore.was;
  t.ktail = false;
  t.ksplit_multi = false;
  t.ksplit32_multi = false;
  return t;
}

TEST(GpuDecode, FillPlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  std::mt19937_64 rng(4300);
  uint64_t seed = 4300;
  int other = 0;
  // m <= 8 on the staged path: N 8500..11200 = 134..176 row groups of 64, whole splits of 2 =
  // 268..352 CTAs on 264 resident (a partial second wave), K ragged with 3..8 chunks of 64 M
  // columns (<= 8 units per resident CTA; 64:2:8 below 7 chunks, where cap_waves does not already
  // cap the plan). One m > 8 case, where the register-gather path caps its CTAs at the resident
  // count anyway: the switch must change nothing there.
  const struct {
    int v, bm;
    int64_t m;
  } kinds[] = {{128, 16, 1}, {64, 8, 1}, {128, 16, 2}, {64, 8, 4}, {128, 16, 3}, {64, 8, 12}};
  for (const auto& kind : kinds) {
    const int64_t chunk = 64 * kind.bm;
    const int64_t max_chunks = kind.bm == 8 ? 6 : 8;
    const int64_t rows = 8500 + static_cast<int64_t>(rng() % 2700);
    const int64_t cols = 2 * chunk + 1 + static_cast<int64_t>(rng() % ((max_chunks - 2) * chunk));
    const ElemType type = rng() % 2 ? ElemType::BF16 : ElemType::F16;
    const PlanCase c{kind.v, kind.bm, rows, cols, kind.m, type, y_types[rng() % 3]};
    const bool changed = check_both_ways(c, &cuda::DecodeTuning::fill, seed += 10, no_ktail(restore));
    if (kind.m <= 8) {
      other += changed;
    } else {
      EXPECT_FALSE(changed) << "fill changed a register-gather plan";
    }
  }
  if (is_sm90()) EXPECT_GT(other, 0) << "no case took the fill plan";
}

// trim: stream-K default plans (the register-gather path at m > 8 caps its CTAs at the resident
// count; cap_waves at m = 1 with >= 7 chunks of 64 M columns; fill's plans) run on the fewest CTAs
// with the same most units per CTA: ragged shapes in those ranges, m = 1..16.
TEST(GpuDecode, TrimPlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  std::mt19937_64 rng(4500);
  uint64_t seed = 4500;
  int other = 0;
  const struct {
    int v, bm;
    int64_t m, min_chunks, max_chunks;
  } kinds[] = {{64, 8, 1, 8, 12},   {128, 16, 16, 2, 6}, {64, 8, 12, 2, 6},
               {128, 16, 1, 3, 8},  {64, 8, 9, 3, 8},   {128, 16, 10, 2, 5}};
  for (const auto& kind : kinds) {
    const int64_t chunk = 64 * kind.bm;
    const int64_t rows = 8500 + static_cast<int64_t>(rng() % 2700);
    const int64_t span = (kind.max_chunks - kind.min_chunks + 1) * chunk;
    const int64_t cols = (kind.min_chunks - 1) * chunk + 1 + static_cast<int64_t>(rng() % span);
    const ElemType type = rng() % 2 ? ElemType::BF16 : ElemType::F16;
    const PlanCase c{kind.v, kind.bm, rows, cols, kind.m, type, y_types[rng() % 3]};
    other += check_both_ways(c, &cuda::DecodeTuning::trim, seed += 10, no_ktail(restore));
  }
  if (is_sm90()) EXPECT_GT(other, 0) << "no case took the trimmed plan";
}

// ktail: on a 132-SM GPU, default plans that split row groups over CTAs, with fewer groups than
// resident CTAs: N 10650..11250 and K of 5 or 8 chunks (the last one ragged), where the plan's
// helpers fit (docs/kernels-gpu.md "Session 11"); 2:4 and V:2:M, 64-row CTAs at m <= 8 (264
// resident) and 128-row ones at m > 8 (132).
TEST(GpuDecode, KtailPlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  std::mt19937_64 rng(5100);
  uint64_t seed = 5100;
  int launched = 0;
  const struct {
    int v, bm;  // v = 0: 2:4
    int64_t m, chunks;  // chunks of 64 M (2:4: 256) columns
  } kinds[] = {{64, 8, 1, 8},  {64, 8, 16, 8}, {0, 0, 1, 8},   {0, 0, 16, 8},  {128, 16, 1, 8},
               {128, 16, 12, 5}, {64, 5, 2, 5}, {64, 8, 3, 5},  {0, 0, 4, 5},   {64, 8, 9, 5}};
  for (const auto& kind : kinds) {
    const int64_t chunk = kind.v == 0 ? 256 : 64 * kind.bm;
    const int64_t rows = 10650 + static_cast<int64_t>(rng() % 600);
    const int64_t cols = (kind.chunks - 1) * chunk + 1 + static_cast<int64_t>(rng() % chunk);
    const ElemType type = rng() % 2 ? ElemType::BF16 : ElemType::F16;
    const PlanCase c{kind.v, kind.bm, rows, cols, kind.m, type, y_types[rng() % 3]};
    bool took = false;
    check_both_ways(c, &cuda::DecodeTuning::ktail, seed += 10, restore.was, &took);
    launched += took;
    // ktail_early (owners load their helpers' words before their last unit): same plan, same sums.
    cuda::DecodeTuning with_ktail = restore.was;
    with_ktail.ktail = true;
    EXPECT_FALSE(check_both_ways(c, &cuda::DecodeTuning::ktail_early, seed += 10, with_ktail))
        << "ktail_early changed the bits";
  }
  if (is_sm90()) EXPECT_GE(launched, 4) << "too few cases took the owner / helper plan";
}

// prologue_one (session 12): only the first unit's weights before the wait for the previous
// grid; the same units and sums in the same order, so the same bits, on every kernel family:
// 2:4 and V:2:M (staged, register and wide gathers), whole groups, splits, K-split (one and
// several tiles per CTA), ktail.
TEST(GpuDecode, PrologueOneSameBits) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  std::mt19937_64 rng(5300);
  uint64_t seed = 5300;
  const struct {
    int v, bm;  // v = 0: 2:4
    int64_t m, rows_lo, rows_hi;
  } kinds[] = {{0, 0, 1, 3000, 4200},    {0, 0, 16, 3000, 12000}, {0, 0, 3, 10000, 12000},
               {64, 8, 1, 3000, 4200},   {64, 8, 1, 10600, 11300}, {64, 8, 16, 3000, 15000},
               {128, 16, 1, 10000, 15000}, {128, 16, 12, 3000, 15000}, {64, 5, 2, 3000, 9000},
               {16, 4, 3, 2000, 6000},   {64, 8, 6, 5000, 9000}};
  for (const auto& kind : kinds) {
    const int64_t chunk = kind.v == 0 ? 256 : 64 * kind.bm;
    const int64_t rows = kind.rows_lo + static_cast<int64_t>(rng() % (kind.rows_hi - kind.rows_lo));
    const int64_t chunks = 2 + static_cast<int64_t>(rng() % 10);
    const int64_t cols = (chunks - 1) * chunk + 1 + static_cast<int64_t>(rng() % chunk);
    const ElemType type = rng() % 2 ? ElemType::BF16 : ElemType::F16;
    const PlanCase c{kind.v, kind.bm, rows, cols, kind.m, type, y_types[rng() % 3]};
    EXPECT_FALSE(check_both_ways(c, &cuda::DecodeTuning::prologue_one, seed += 10, restore.was))
        << "prologue_one changed the bits";
  }
}

}  // namespace
}  // namespace sparsa::test

#else  // no CUDA in this build

#include <gtest/gtest.h>
TEST(GpuDecodePlan, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }

#endif
