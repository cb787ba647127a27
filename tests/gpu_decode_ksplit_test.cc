// K-split decode CTAs (session 8, decode_tuning().ksplit, src/cuda/sparse_decode.cu): at m <= 8,
// where the default plan splits row groups over CTAs and one 16-row CTA per row tile fills 3/4 to
// all of the resident slots (N = 3072..4224 on a 132-SM H100/H200), the 4 warps of a CTA split K
// and add their sums in shared memory. Randomized ragged shapes in that range (N, K with a last
// unit of 1..4 chunks, m, fp16/bf16, every output type) for 2:4 (fragment order and row-major
// values_k) and staged V:2:M (64:2:8, 128:2:16, 64:2:5, 16:4): the default plan with the switch
// off, on, and on with ksplit_long (V:2:M at any K) matches the double reference, leaves Y's padding alone and repeats bit for bit;
// the two 2:4 layouts give the same bits; on sm_90 every kind launches K-split CTAs
// (decode_ksplit_launches) with ksplit_long at least once, and with the default rule at least
// once where it applies (2:4; V:2:M with <= 12 chunks). Bits are no sign of the plan: with bf16
// products or few chunks, another order of the K sums often gives the same bits.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "cuda/decode_tuning.h"
#include "gpu_layout24_util.h"
#include "gpu_sparse_util.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

bool differ(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0;
}

void expect_good(const DeviceRun& run, const std::vector<float>& ref) {
  EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
  EXPECT_TRUE(run.repeatable) << "second call differs";
  const double err = relative_error(run.y, ref);
  EXPECT_LE(err, 1e-2);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
}

struct Kind {
  int v, bm;          // v = 0: 2:4
  int64_t chunk;      // K columns per chunk
  int64_t max_m;      // largest m whose K-split shared memory fits two CTAs per SM
};

// One random case of `kind`: N = rows, K of `chunks` chunks with a ragged last one (8 columns up
// to a whole chunk), m up to kind.max_m, fp16/bf16 inputs, any output type; its weights,
// activations and double reference.
struct RandomCase {
  int64_t rows, cols, m;
  ElemType type, y_type;
  SparseWeights w;
  Activations x;
  std::vector<float> ref;
  std::string label;

  RandomCase(const Kind& kind, int64_t rows_, int64_t chunks, std::mt19937_64& rng, uint64_t seed)
      : rows(rows_),
        cols((chunks - 1) * kind.chunk + 8 + static_cast<int64_t>(rng() % (kind.chunk - 7))),
        m(1 + static_cast<int64_t>(rng() % kind.max_m)) {
    static const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
    type = rng() % 2 ? ElemType::BF16 : ElemType::F16;
    y_type = y_types[rng() % 3];
    label = fmt::format("{} N={} K={} m={} {}->{}",
                        kind.v == 0 ? std::string("2:4") : fmt::format("{}:2:{}", kind.v, kind.bm),
                        rows, cols, m, type_name(type), type_name(y_type));
    w = kind.v == 0 ? random_nm24(rows, cols, type, seed)
                    : random_vnm(rows, cols, kind.v, kind.bm, type, seed);
    x = random_activations(m, cols, type, seed + 1);
    ref = reference_gemm(x, w);
  }
};

// The default decode plan of `c` under `tuning` (uploaded in the fragment layout for 2:4); sets
// *ksplit_launched to whether K-split CTAs ran.
DeviceRun run_default_plan(const Kind& kind, const RandomCase& c, const cuda::DecodeTuning& tuning,
                           bool* ksplit_launched) {
  cuda::set_decode_tuning(tuning);
  const unsigned long long before = cuda::decode_ksplit_launches();
  DeviceRun run;
  if (kind.v == 0) {
    const auto dev =
        cuda::upload(cuda::tile_nm24(c.w.values.data(), c.w.meta.data(), c.rows, c.cols, c.type));
    run = run_on_device(c.x, c.rows, c.y_type, cuda::nm24_workspace_bytes(dev.weights, c.m, 0), 0,
                        [&](const auto& p) { return cuda::nm24_decode(dev.weights, p, nullptr); });
  } else {
    const auto dev = cuda::upload(cuda::tile_vnm(c.w.columns.data(), c.w.values.data(),
                                                 c.w.meta.data(), c.rows, c.cols, kind.v, kind.bm,
                                                 c.type));
    run = run_on_device(c.x, c.rows, c.y_type, cuda::vnm_workspace_bytes(dev.weights, c.m, 0), 0,
                        [&](const auto& p) { return cuda::vnm_decode(dev.weights, p, nullptr); });
  }
  *ksplit_launched = cuda::decode_ksplit_launches() != before;
  return run;
}

TEST(GpuDecode, KSplitPlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const Kind kinds[] = {{0, 0, 256, 4}, {64, 8, 512, 1}, {128, 16, 1024, 1}, {64, 5, 320, 2},
                        {16, 4, 256, 3}};
  std::mt19937_64 rng(8100);
  uint64_t seed = 8100;
  for (const Kind& kind : kinds) {
    int took_long = 0, took_default = 0, eligible = 0;
    for (int round = 0; round < 3; ++round) {
      const int64_t rows = 3100 + static_cast<int64_t>(rng() % 1120);
      // 4..14 chunks, the last one ragged (or whole): the last unit holds 1..4 chunks.
      const int64_t chunks = 4 + static_cast<int64_t>(rng() % 11);
      const RandomCase c(kind, rows, chunks, rng, seed += 10);
      SCOPED_TRACE(c.label);
      const int64_t cols = c.cols, m = c.m;
      const ElemType type = c.type, y_type = c.y_type;
      const SparseWeights& w = c.w;
      const Activations& x = c.x;
      const std::vector<float>& ref = c.ref;
      // Off, the default rule (staged V:2:M only with <= 3 units of 4 chunks), and ksplit_long
      // (staged V:2:M at any K).
      std::vector<float> y[3];
      for (const int on : {0, 1, 2}) {
        SCOPED_TRACE(on == 0 ? "ksplit off" : on == 1 ? "ksplit on" : "ksplit + ksplit_long");
        cuda::DecodeTuning tuning = restore.was;
        tuning.ksplit = on > 0;
        tuning.ksplit_long = on == 2;
        tuning.ksplit32 = false;  // the 16-row CTAs at any K (32-row: the test below)
        cuda::set_decode_tuning(tuning);
        const unsigned long long before = cuda::decode_ksplit_launches();
        if (kind.v == 0) {
          const DeviceNm24Both dev =
              upload_both(cuda::tile_nm24(w.values.data(), w.meta.data(), rows, cols, type));
          DeviceRun runs[2];
          int li = 0;
          for (const cuda::Nm24Weights& dw : {dev.fragments_only(), dev.values_k_only()}) {
            SCOPED_TRACE(li == 0 ? "fragments" : "values_k");
            const size_t ws = cuda::nm24_workspace_bytes(dw, m, 0);
            runs[li] = run_on_device(x, rows, y_type, ws, 0, [&](const auto& p) {
              return cuda::nm24_decode(dw, p, nullptr);
            });
            expect_good(runs[li], ref);
            ++li;
          }
          EXPECT_FALSE(differ(runs[0].y, runs[1].y)) << "values_k and fragment runs differ";
          y[on] = runs[0].y;
        } else {
          const auto dev = cuda::upload(cuda::tile_vnm(w.columns.data(), w.values.data(),
                                                       w.meta.data(), rows, cols, kind.v, kind.bm,
                                                       type));
          const size_t ws = cuda::vnm_workspace_bytes(dev.weights, m, 0);
          const DeviceRun run = run_on_device(x, rows, y_type, ws, 0, [&](const auto& p) {
            return cuda::vnm_decode(dev.weights, p, nullptr);
          });
          expect_good(run, ref);
          y[on] = run.y;
        }
        const bool took = cuda::decode_ksplit_launches() != before;
        if (on == 0) {
          EXPECT_FALSE(took) << "K-split CTAs with the switch off";
        } else if (on == 1 && (kind.v == 0 || chunks <= 12)) {
          ++eligible;
          took_default += took;
        } else if (on == 2) {
          took_long += took;
        }
      }
    }
    if (is_sm90()) {
      EXPECT_GT(took_long, 0) << "V=" << kind.v << " M=" << kind.bm << ": no K-split launch";
      if (eligible > 0) {
        EXPECT_GT(took_default, 0) << "V=" << kind.v << " M=" << kind.bm
                                   << ": the default rule launched no K-split CTAs";
      }
    }
  }
}

// 32-row K-split CTAs (session 8b, decode_tuning().ksplit32): staged V:2:M with V >= 32 on the
// longer K the 16-row rule leaves out (> 3 units of 4 chunks), 8 warps = 2 row tiles x 4 K
// slices. Randomized ragged shapes (N 3200-4220, 13-24 chunks with a ragged last chunk and a last
// unit of 1-4 chunks, m = 1..8, fp16/bf16, every output type): with the switch off and on, the
// output matches the double reference, leaves Y's padding alone and repeats bit for bit. With it
// off no K-split CTA runs on this K; with it on, K-split launches happen exactly where the plan
// applies (N / 32 CTAs fill 3/4 to all of the SMs, one per SM; the shared memory of the 8-warp
// kernel fits: 4 x 8 weight chunks + m-row X tiles + 4 slots of column words and dense X).
TEST(GpuDecode, KSplit32PlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  const Kind kinds[] = {{64, 8, 512, 8}, {128, 16, 1024, 8}, {64, 5, 320, 8}, {32, 4, 256, 8}};
  int sms = 0, device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  std::mt19937_64 rng(8500);
  uint64_t seed = 8500;
  for (const Kind& kind : kinds) {
    int expected = 0, took_on = 0;
    for (int round = 0; round < 3; ++round) {
      const int64_t rows = 3200 + static_cast<int64_t>(rng() % 1021);
      const int64_t chunks = 13 + static_cast<int64_t>(rng() % 12);
      const int64_t cols = (chunks - 1) * kind.chunk + 8 + static_cast<int64_t>(rng() % (kind.chunk - 7));
      // Round 0 at m = 1 (fits for every kind), then m = 1..8.
      const int64_t m = round == 0 ? 1 : 1 + static_cast<int64_t>(rng() % kind.max_m);
      const ElemType type = rng() % 2 ? ElemType::BF16 : ElemType::F16;
      const ElemType y_type = y_types[(round + rng() % 2) % 3];
      SCOPED_TRACE(fmt::format("{}:2:{} N={} K={} m={} {}->{}", kind.v, kind.bm, rows, cols, m,
                               type_name(type), type_name(y_type)));
      seed += 10;
      const SparseWeights w = random_vnm(rows, cols, kind.v, kind.bm, type, seed);
      const Activations x = random_activations(m, cols, type, seed + 1);
      const std::vector<float> ref = reference_gemm(x, w);
      const auto dev = cuda::upload(cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(),
                                                   rows, cols, kind.v, kind.bm, type));
      // The plan's conditions, from sparse_decode.cu (split_smem_bytes<true, 8>, plan_for).
      const int64_t groups = dev.weights.rows_padded / 32;
      const int64_t smem = 4 * 8 * (8 * 512 + 512) + 2 * 4 * m * 264 * 2 + 4 * 4 * 256 +
                           4 * m * 4 * 64 * kind.bm * 2;
      const bool applies = smem <= 225 * 1024 && groups <= sms && 4 * groups >= 3 * sms;
      for (const bool on : {false, true}) {
        SCOPED_TRACE(on ? "ksplit32 on" : "ksplit32 off");
        cuda::DecodeTuning tuning = restore.was;
        tuning.ksplit = true;
        tuning.ksplit_long = false;
        tuning.ksplit32 = on;
        cuda::set_decode_tuning(tuning);
        const unsigned long long before = cuda::decode_ksplit_launches();
        const size_t ws = cuda::vnm_workspace_bytes(dev.weights, m, 0);
        const DeviceRun run = run_on_device(x, rows, y_type, ws, 0, [&](const auto& p) {
          return cuda::vnm_decode(dev.weights, p, nullptr);
        });
        expect_good(run, ref);
        const bool took = cuda::decode_ksplit_launches() != before;
        if (!on) {
          EXPECT_FALSE(took) << "K-split CTAs on long K without ksplit32";
        } else if (is_sm90()) {
          EXPECT_EQ(took, applies) << "32-row K-split plan taken where it should not be, or not "
                                      "taken where it applies (SMs "
                                   << sms << ", shared memory " << smem << " B)";
          expected += applies;
          took_on += took;
        }
      }
    }
    if (is_sm90()) {
      EXPECT_GT(expected, 0) << "V=" << kind.v << " M=" << kind.bm << ": no case the plan applies to";
      EXPECT_EQ(took_on, expected) << "V=" << kind.v << " M=" << kind.bm;
    }
  }
}

// 32-row K-split CTAs at m = 9..16 (session 10, decode_tuning().ksplit_m16): V:2:M with M = 8
// and V >= 32 on the wide gather, 8 warps = 2 row tiles x 4 K slices, each thread gathering one
// block of one chunk for all 16 tokens. Randomized ragged shapes (N 3200-4220, 4-24 chunks with
// a ragged last chunk, K not a multiple of M, a last unit of 1-4 chunks, m = 9..16, fp16/bf16,
// every output type): with the switch off, on (the default rule: <= 2 units of 4 chunks), and on
// with ksplit_long (any K), the output matches the double reference, leaves Y's padding alone and
// repeats bit for bit; K-split launches happen exactly where the plan applies (N / 32 CTAs fill
// 3/4 to all of the SMs, >= 4 chunks, and <= 8 chunks unless ksplit_long); forced CTA counts
// never take it.
TEST(GpuDecode, KSplitM16PlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  const int vs[] = {64, 128, 32};
  int sms = 0, device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  std::mt19937_64 rng(10100);
  uint64_t seed = 10100;
  constexpr int64_t kChunk = 64 * 8;  // K columns per chunk at M = 8
  for (const int v : vs) {
    int expected[3] = {0, 0, 0}, took_on[3] = {0, 0, 0};
    for (int round = 0; round < 4; ++round) {
      const int64_t rows = 3200 + static_cast<int64_t>(rng() % 1021);
      // Round 0 short K (4-8 chunks), round 1 long (9-24), then either.
      const int64_t chunks = round == 0   ? 4 + static_cast<int64_t>(rng() % 5)
                             : round == 1 ? 9 + static_cast<int64_t>(rng() % 16)
                                          : 4 + static_cast<int64_t>(rng() % 21);
      const int64_t cols = (chunks - 1) * kChunk + 1 + static_cast<int64_t>(rng() % kChunk);
      const int64_t m = round == 0 ? 16 : round == 1 ? 9 : 9 + static_cast<int64_t>(rng() % 8);
      const ElemType type = (round + rng() % 2) % 2 ? ElemType::BF16 : ElemType::F16;
      const ElemType y_type = y_types[(round + rng() % 2) % 3];
      const int forced = round == 3 ? 200 : 0;
      SCOPED_TRACE(fmt::format("{}:2:8 N={} K={} m={} {}->{} ctas={}", v, rows, cols, m,
                               type_name(type), type_name(y_type), forced));
      seed += 10;
      const SparseWeights w = random_vnm(rows, cols, v, 8, type, seed);
      const Activations x = random_activations(m, cols, type, seed + 1);
      const std::vector<float> ref = reference_gemm(x, w);
      const auto dev = cuda::upload(
          cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), rows, cols, v, 8, type));
      // The plan's conditions, from sparse_decode.cu (plan_for): default plans only.
      const int64_t groups = dev.weights.rows_padded / 32;
      const int64_t kchunks = dev.weights.blocks_padded / 64;
      const bool fits = forced == 0 && groups <= sms && 4 * groups >= 3 * sms && kchunks >= 4;
      std::vector<float> y[3];
      for (const int on : {0, 1, 2}) {
        SCOPED_TRACE(on == 0 ? "ksplit_m16 off" : on == 1 ? "ksplit_m16 on" : "+ ksplit_long");
        cuda::DecodeTuning tuning = restore.was;
        tuning.ksplit = true;
        tuning.ksplit_m16 = on > 0;
        tuning.ksplit_long = on == 2;
        cuda::set_decode_tuning(tuning);
        const unsigned long long before = cuda::decode_ksplit_launches();
        const size_t ws = cuda::vnm_workspace_bytes(dev.weights, m, forced);
        const DeviceRun run = run_on_device(x, rows, y_type, ws, forced, [&](const auto& p) {
          return cuda::vnm_decode(dev.weights, p, nullptr);
        });
        expect_good(run, ref);
        y[on] = run.y;
        const bool took = cuda::decode_ksplit_launches() != before;
        const bool applies = on > 0 && fits && (on == 2 || (kchunks + 3) / 4 <= 2);
        if (is_sm90() || on == 0) {
          EXPECT_EQ(took, applies) << "plan taken where it should not be, or not taken where it "
                                      "applies (SMs "
                                   << sms << ", 32-row groups " << groups << ", chunks " << kchunks
                                   << ")";
        }
        expected[on] += applies;
        took_on[on] += took;
        if (!applies) EXPECT_FALSE(differ(y[0], y[on])) << "a plan the switch must not touch changed";
      }
    }
    if (is_sm90()) {
      EXPECT_GT(expected[1], 0) << "V=" << v << ": no case the default rule applies to";
      EXPECT_GT(expected[2], expected[1]) << "V=" << v << ": no long-K case";
      for (int on = 1; on < 3; ++on) EXPECT_EQ(took_on[on], expected[on]) << "V=" << v;
    }
  }
}

// K-split CTAs over several row tiles each (session 12, decode_tuning().ksplit_multi and
// ksplit32_multi): where the 16-row (32-row) tiles outnumber the resident CTAs (N > 4224 on a
// 132-SM H100), every resident CTA takes a contiguous run of whole tiles. Randomized ragged
// shapes (N 4300-15000, K with a last unit of 1..4 chunks; V:2:M at <= 12 chunks, where 16-row
// tiles apply, and at 13-24 chunks, where only 32-row ones do; m up to each kind's limit,
// fp16/bf16, every output type): with both off, 16-row only, and both on, the output matches the
// double reference, leaves Y's padding alone and repeats bit for bit; on sm_90 every kind launches
// K-split CTAs with them on at least once.
// (V = 16 is left out: its 16-row groups already run whole, all resident, with no fix-up.)
TEST(GpuDecode, KSplitMultiTilePlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const Kind kinds[] = {{0, 0, 256, 4}, {64, 8, 512, 1}, {128, 16, 1024, 1}, {64, 5, 320, 2}};
  std::mt19937_64 rng(8400);
  uint64_t seed = 8400;
  for (const Kind& kind : kinds) {
    int took = 0;
    for (int round = 0; round < 3; ++round) {
      const int64_t rows = 4300 + static_cast<int64_t>(rng() % 10700);
      // 2:4 at any K; V:2:M at short K (the 16-row rule) or, every other round, long K (13-24
      // chunks: 32-row tiles only).
      const int64_t chunks = kind.v == 0 || round % 2 == 0 ? 4 + static_cast<int64_t>(rng() % (kind.v == 0 ? 17 : 9))
                                                           : 13 + static_cast<int64_t>(rng() % 12);
      const RandomCase c(kind, rows, chunks, rng, seed += 10);
      SCOPED_TRACE(c.label);
      // Both off; 16-row tiles only; 32-row tiles first (V:2:M with V >= 32), then 16-row.
      const char* names[] = {"multi off", "ksplit_multi", "ksplit_multi + ksplit32_multi"};
      for (int on = 0; on < 3; ++on) {
        SCOPED_TRACE(names[on]);
        cuda::DecodeTuning tuning = restore.was;
        tuning.ksplit = true;
        tuning.ksplit_multi = on > 0;
        tuning.ksplit32_multi = on == 2;
        bool launched = false;
        expect_good(run_default_plan(kind, c, tuning, &launched), c.ref);
        if (on > 0) took += launched;
      }
    }
    if (is_sm90()) {
      EXPECT_GT(took, 0) << (kind.v == 0 ? std::string("2:4") : fmt::format("{}:2:{}", kind.v, kind.bm))
                         << ": no K-split launch with ksplit_multi";
    }
  }
}

// The switch changes nothing where it must not apply: m > 8 (two token tiles), N outside the
// range (here 1000 rows: too few 16-row CTAs to fill the GPU) and forced CTA counts.
TEST(GpuDecode, KSplitLeavesOtherPlansAlone) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  struct Shape {
    int64_t rows, cols, m;
    int ctas;
  };
  const Shape shapes[] = {{4000, 2000, 12, 0}, {1000, 3000, 1, 0}, {4000, 2000, 1, 264}};
  uint64_t seed = 8300;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(fmt::format("2:4 N={} K={} m={} ctas={}", s.rows, s.cols, s.m, s.ctas));
    seed += 10;
    const SparseWeights w = random_nm24(s.rows, s.cols, ElemType::F16, seed);
    const auto dev =
        cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), s.rows, s.cols, ElemType::F16));
    const Activations x = random_activations(s.m, s.cols, ElemType::F16, seed + 1);
    const std::vector<float> ref = reference_gemm(x, w);
    std::vector<float> y[2];
    const unsigned long long launches_before = cuda::decode_ksplit_launches();
    for (const bool on : {false, true}) {
      cuda::DecodeTuning tuning = restore.was;
      tuning.ksplit = on;
      cuda::set_decode_tuning(tuning);
      const size_t ws = cuda::nm24_workspace_bytes(dev.weights, s.m, s.ctas);
      const DeviceRun run = run_on_device(x, s.rows, ElemType::F32, ws, s.ctas, [&](const auto& p) {
        return cuda::nm24_decode(dev.weights, p, nullptr);
      });
      expect_good(run, ref);
      y[on] = run.y;
    }
    EXPECT_FALSE(differ(y[0], y[1])) << "ksplit changed a plan it must not touch";
    EXPECT_EQ(cuda::decode_ksplit_launches(), launches_before) << "K-split CTAs launched";
  }
}

}  // namespace
}  // namespace sparsa::test

#else  // no CUDA in this build

#include <gtest/gtest.h>
TEST(GpuDecodeKSplit, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }

#endif
