// v10 (session 7): split-K of the register-A wgmma.sp 2:4 prefill (src/cuda/wgmma_prefill.cu,
// nm24_prefill_wgmma_split) against the double CPU product of the same masked weights: ragged N,
// K and m (m not a multiple of 128 or 192, N past the last full 256-row block, chunk counts not
// a multiple of the split), forced splits 1..8 on both token tiles and both A layouts, the
// automatic rule against a twin, split against unsplit (fp32 summation order only), the
// workspace shared with the decode kernels, refused workspaces, and (session 8) v10b's cluster
// reduction against v10, and (session 10) v11's split of the last partial wave only. Skipped
// without a GPU; off
// compute capability 9.0 the kernel must refuse with cudaErrorNotSupported.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/wgmma_prefill_tiles.h"
#include "gpu_layout24_util.h"
#include "gpu_sparse_util.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

#define SPARSA_REQUIRE_WGMMA_SPLIT()                                                    \
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

int sm_count() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    return 0;
  return sms;
}

// Split against unsplit: the same products summed in another order. fp32 outputs agree to fp32
// summation error; 16-bit outputs may differ by one rounding step (bf16: up to 2^-7 relative) in
// the few elements whose fp32 sums straddle a rounding boundary.
double split_tolerance(ElemType y_type) { return y_type == ElemType::F32 ? 1e-4 : 8e-3; }

struct Prepared {
  SparseWeights w;
  DeviceNm24Both dev;
  Activations x;
  std::vector<float> want;
};

Prepared prepare(const Case& c, uint64_t seed) {
  Prepared p;
  p.w = random_nm24(c.rows, c.cols, c.type, seed);
  p.dev = upload_both(cuda::tile_nm24(p.w.values.data(), p.w.meta.data(), c.rows, c.cols, c.type));
  p.x = random_activations(c.m, c.cols, c.type, seed + 1);
  p.want = reference_gemm(p.x, p.w);
  return p;
}

DeviceRun run_split(const cuda::Nm24Weights& w, const Activations& x, int64_t rows, ElemType y_type,
                    int split, int tokens, size_t workspace_bytes) {
  return run_on_device(x, rows, y_type, workspace_bytes, 0, [&](const cuda::GemmProblem& p) {
    return cuda::nm24_prefill_wgmma_split(w, p, nullptr, split, tokens);
  });
}

void expect_matches(const DeviceRun& run, const std::vector<float>& want) {
  EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
  EXPECT_TRUE(run.repeatable) << "second call differs (the reduction must be deterministic)";
  const double err = relative_error(run.y, want);
  EXPECT_LE(err, 1e-2);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
}

// The case's product on device buffers (X in dx with row stride ldx, fp16 Y in dy) with the given
// workspace, for the refusal tests' hand-made calls.
cuda::GemmProblem f16_problem(cuda::DeviceBuffer& dx, cuda::DeviceBuffer& dy, const Case& c,
                              int64_t ldx, void* workspace, size_t bytes) {
  cuda::GemmProblem pr;
  pr.x = dx.data();
  pr.m = c.m;
  pr.ldx = ldx;
  pr.y = dy.data();
  pr.ldy = c.rows;
  pr.y_type = ElemType::F16;
  pr.workspace = workspace;
  pr.workspace_bytes = bytes;
  return pr;
}

// `launch` (a call that must be refused) returns cudaErrorInvalidValue and leaves the poisoned Y
// in dy untouched.
template <typename Launch>
void expect_refused(cuda::DeviceBuffer& dy, const Case& c, Launch launch) {
  cuda::check_cuda(cudaMemset(dy.data(), 0xff, dy.bytes()), "poison y");
  EXPECT_EQ(launch(), cudaErrorInvalidValue);
  cuda::check_cuda(cudaDeviceSynchronize(), "after a refused call");
  std::vector<uint16_t> y(c.m * c.rows);
  dy.download(y.data(), y.size() * 2);
  EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](uint16_t v) { return v == 0xffff; }))
      << "a refused call wrote Y";
}

// Forced splits 1..8 (capped at one per 256-column chunk), 128- and 192-token tiles, fragment
// layout: every output against the double reference, and against the unsplit kernel.
TEST(GpuPrefillSplit, ForcedSplitsMatchReferenceAndUnsplit) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  const Case cases[] = {
      {77, 2049, 64},                                   // N < one row block; 9 chunks
      {520, 3000, 129, ElemType::BF16, ElemType::F16},  // 3 row blocks (last mostly empty); 12 chunks
      {1000, 4100, 193, ElemType::F16, ElemType::F16},  // 17 chunks; m past one 192 tile
      {300, 1800, 577, ElemType::BF16, ElemType::BF16}, // 8 chunks; 5 / 4 token tiles, last ragged
      {256, 512, 100, ElemType::F16, ElemType::F32},    // 2 chunks: every split >= 3 capped at 2
      {130, 100, 70, ElemType::BF16, ElemType::F32},    // K < one stage: 1 chunk, never split
  };
  uint64_t seed = 17000;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("N={} K={} m={} {}->{}", c.rows, c.cols, c.m, type_name(c.type),
                             type_name(c.y_type)));
    const Prepared p = prepare(c, seed += 10);
    const int64_t kchunks = p.dev.weights.cols_padded / cuda::kKChunk;
    const cuda::Nm24Weights w = p.dev.fragments_only();
    for (int tokens : {128, 192}) {
      const DeviceRun base = run_split(w, p.x, c.rows, c.y_type, 1, tokens, 0);
      expect_matches(base, p.want);
      for (int split = 1; split <= cuda::kPrefillMaxSplit; ++split) {
        SCOPED_TRACE(fmt::format("tokens {} split {}", tokens, split));
        const int s = cuda::nm24_prefill_splits(w, c.m, split, tokens);
        EXPECT_EQ(s, std::min<int64_t>(split, kchunks));
        const size_t bytes = cuda::nm24_prefill_workspace_bytes(w, c.m, split);
        if (s > 1)
          EXPECT_GE(bytes, static_cast<size_t>(s) * c.m * c.rows * sizeof(float));
        else
          EXPECT_EQ(bytes, 0u);
        const DeviceRun run = run_split(w, p.x, c.rows, c.y_type, split, tokens, bytes);
        expect_matches(run, p.want);
        EXPECT_LE(relative_error(run.y, base.y), split_tolerance(c.y_type)) << "split vs unsplit";
        if (s == 1) EXPECT_EQ(run.y, base.y) << "split 1 must be the unsplit kernel";
      }
    }
  }
}

// The same on the row-major values_k layout (ldmatrix A loads, kRowA kernels).
TEST(GpuPrefillSplit, ValuesKLayoutMatchesReference) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  const Case cases[] = {
      {200, 2300, 90, ElemType::BF16, ElemType::F32},  // 9 chunks
      {600, 3333, 260, ElemType::F16, ElemType::BF16}, // 14 chunks, 3 row blocks
  };
  uint64_t seed = 17200;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("N={} K={} m={}", c.rows, c.cols, c.m));
    const Prepared p = prepare(c, seed += 10);
    const cuda::Nm24Weights w = p.dev.values_k_only();
    for (int tokens : {128, 192})
      for (int split : {1, 3, 8}) {
        SCOPED_TRACE(fmt::format("tokens {} split {}", tokens, split));
        expect_matches(run_split(w, p.x, c.rows, c.y_type, split, tokens,
                                 cuda::nm24_prefill_workspace_bytes(w, c.m, split)),
                       p.want);
      }
  }
}

// The automatic rule against a twin (s = min(8, SMs / tiles, chunks / 2), at least 1), then real
// launches through nm24_gemm with the workspace nm24_workspace_bytes asks for (the rule splits
// them on an H100), and the automatic rule with too small a workspace: unsplit, same bits as
// split 1.
TEST(GpuPrefillSplit, AutoRuleMatchesTwinAndReference) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  const int sms = sm_count();
  ASSERT_GT(sms, 0);
  auto twin = [](int64_t tiles, int64_t kchunks, int n) {
    return static_cast<int>(std::max<int64_t>(
        1, std::min<int64_t>({cuda::kPrefillMaxSplit, n / tiles, kchunks / 2})));
  };
  for (int64_t tiles : {1, 2, 15, 16, 17, 33, 43, 56, 66, 67, 112, 132, 200})
    for (int64_t kchunks : {1, 2, 3, 5, 16, 43, 112})
      for (int n : {78, 114, 132})
        EXPECT_EQ(cuda::nm24_split_rule(tiles, kchunks, n), twin(tiles, kchunks, n))
            << "tiles " << tiles << " chunks " << kchunks << " SMs " << n;

  const Case cases[] = {
      {1000, 4096, 64},                                 // 4 row blocks x 1 tile: 8 splits
      {2100, 2500, 300, ElemType::BF16, ElemType::BF16},// 9 row blocks x 2-3 tiles; 10 chunks
      {4100, 1100, 70, ElemType::F16, ElemType::F16},   // 17 row blocks; 5 chunks: 2 splits
  };
  uint64_t seed = 17400;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("N={} K={} m={}", c.rows, c.cols, c.m));
    const Prepared p = prepare(c, seed += 10);
    const cuda::Nm24Weights w = p.dev.fragments_only();
    const int tokens = cuda::nm24_tokens_by_waves(w.rows_padded, c.m, 0.87);
    const int64_t tiles = (w.rows_padded + 255) / 256 * ((c.m + tokens - 1) / tokens);
    const int64_t kchunks = w.cols_padded / cuda::kKChunk;
    int want_s = twin(tiles, kchunks, sms);
    // Session 8: the rule keeps the unsplit kernel where its time model says the split is slower.
    const double wb = cuda::nm24_split_weight_bytes(w, c.m), pb = 4.0 * c.m * w.rows_padded;
    if (cuda::nm24_split_time_us(tiles, kchunks, want_s, wb, pb) >
        cuda::nm24_split_time_us(tiles, kchunks, 1, wb, pb))
      want_s = 1;
    EXPECT_EQ(cuda::nm24_prefill_splits(w, c.m, -1), want_s);
    if (sms >= 132) EXPECT_GE(want_s, 2) << "the case should split on an H100";
    const size_t bytes = cuda::nm24_workspace_bytes(w, c.m);
    EXPECT_GE(bytes, cuda::nm24_prefill_workspace_bytes(w, c.m, -1));
    const DeviceRun run = run_on_device(p.x, c.rows, c.y_type, bytes, 0,
                                        [&](const cuda::GemmProblem& pr) {
                                          return cuda::nm24_gemm(w, pr, nullptr);
                                        });
    expect_matches(run, p.want);
    const DeviceRun base = run_split(w, p.x, c.rows, c.y_type, 1, 0, 0);
    EXPECT_LE(relative_error(run.y, base.y), split_tolerance(c.y_type)) << "split vs unsplit";
    const DeviceRun small = run_split(w, p.x, c.rows, c.y_type, -1, 0, 64);
    expect_matches(small, p.want);
    EXPECT_EQ(small.y, base.y) << "automatic split without room must run unsplit";
  }
}

// The automatic rule on the benchmark shapes against what the session-8 H100 run measured
// (bench/results/gemm-h100-2026-11-23-prefill8-run1.json against -run1-split0.json, same run,
// graph us): the split count of every record where splitting was faster, 1 where it was slower
// (14336 x 4096 m = 128: 40.8 vs 38.7) or where the tiles fill the SMs. Host-side rule only.
TEST(GpuPrefillSplit, AutoRuleFollowsTheMeasuredRun) {
  struct Shape {
    int64_t n, k, m;
    int want;  // splits
  };
  const Shape shapes[] = {
      {4096, 4096, 64, 8},     // 33.8 -> 16.4 us
      {4096, 4096, 256, 4},    // 34.9 -> 21.9
      {4096, 4096, 512, 2},    // 35.1 -> 29.0
      {4096, 14336, 128, 8},   // 106.8 -> 42.2
      {8192, 28672, 64, 4},    // 209.4 -> 104.0
      {8192, 28672, 256, 2},   // 208.0 -> 140.1
      {11008, 4096, 64, 3},    // 41.0 -> 30.6
      {11008, 4096, 128, 3},   // 36.9 -> 34.8
      {14336, 4096, 128, 1},   // split 2 measured slower: 38.7 -> 40.8
      {14336, 4096, 256, 1},   // 112 tiles
      {28672, 8192, 64, 1},    // 112 tiles
  };
  for (const Shape& s : shapes) {
    const int64_t rows_padded = (s.n + 255) / 256 * 256, kchunks = (s.k + 255) / 256;
    const int64_t tiles = rows_padded / 256 * ((s.m + 127) / 128);
    const double wb = 1.125 * rows_padded * s.k + 2.0 * s.m * s.k, pb = 4.0 * s.m * rows_padded;
    EXPECT_EQ(cuda::nm24_split_rule(tiles, kchunks, 132, wb, pb), s.want)
        << s.n << "x" << s.k << " m=" << s.m;
  }
}

// One zeroed workspace for a split prefill and then decode calls of the same matrix: the
// partials sit past the decode counters, so the decode results stay right (and repeatable).
TEST(GpuPrefillSplit, SharesWorkspaceWithDecode) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  const Case c{1000, 3000, 64, ElemType::F16, ElemType::F32};
  const Prepared p = prepare(c, 17600);
  const cuda::Nm24Weights w = p.dev.fragments_only();
  const Activations xd = random_activations(16, c.cols, c.type, 17611);
  const std::vector<float> want_d = reference_gemm(xd, p.w);
  const size_t bytes = std::max(cuda::nm24_workspace_bytes(w, c.m), cuda::nm24_workspace_bytes(w, 16));
  ASSERT_GT(cuda::nm24_prefill_workspace_bytes(w, c.m, 8), 0u);
  cuda::DeviceBuffer ws(std::max(bytes, cuda::nm24_prefill_workspace_bytes(w, c.m, 8)));
  cuda::check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
  auto call = [&](const Activations& x, int split) {
    cuda::DeviceBuffer dx(x.bits.size() * 2), dy(x.m * c.rows * 4);
    dx.upload(x.bits.data(), x.bits.size() * 2);
    cuda::GemmProblem pr;
    pr.x = dx.data();
    pr.m = x.m;
    pr.ldx = x.ldx;
    pr.y = dy.data();
    pr.ldy = c.rows;
    pr.y_type = ElemType::F32;
    pr.workspace = ws.data();
    pr.workspace_bytes = ws.bytes();
    const cudaError_t e = x.m <= cuda::kDecodeMaxM ? cuda::nm24_decode(w, pr, nullptr)
                                                   : cuda::nm24_prefill_wgmma_split(w, pr, nullptr, split);
    cuda::check_cuda(e, "launch");
    cuda::check_cuda(cudaDeviceSynchronize(), "kernel");
    std::vector<float> y(x.m * c.rows);
    dy.download(y.data(), y.size() * 4);
    return y;
  };
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(fmt::format("round {}", round));
    EXPECT_LE(relative_error(call(p.x, 8), p.want), 1e-2);
    EXPECT_LE(relative_error(call(xd, 0), want_d), 1e-2) << "decode after a split prefill";
  }
}

// A forced split whose workspace is short, null or misaligned, and split counts out of range:
// cudaErrorInvalidValue and Y untouched.
TEST(GpuPrefillSplit, RejectsBadWorkspaceAndSplit) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  const Case c{300, 2000, 100, ElemType::F16, ElemType::F16};
  const Prepared p = prepare(c, 17800);
  const cuda::Nm24Weights w = p.dev.fragments_only();
  const size_t need = cuda::nm24_prefill_workspace_bytes(w, c.m, 4);
  ASSERT_GT(need, 0u);
  cuda::DeviceBuffer dx(p.x.bits.size() * 2), dy(c.m * c.rows * 2), ws(need + 64);
  dx.upload(p.x.bits.data(), p.x.bits.size() * 2);
  struct Bad {
    const char* what;
    void* workspace;
    size_t bytes;
    int split;
  };
  char* base = static_cast<char*>(ws.data());
  const Bad bad[] = {
      {"workspace one float short", base, need - 4, 4},
      {"null workspace", nullptr, need, 4},
      {"misaligned workspace", base + 4, need, 4},
      {"split 9", base, need + 64, 9},
      {"split -2", base, need + 64, -2},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    expect_refused(dy, c, [&] {
      return cuda::nm24_prefill_wgmma_split(
          w, f16_problem(dx, dy, c, p.x.ldx, b.workspace, b.bytes), nullptr, b.split);
    });
  }
  // The exact size is enough.
  const DeviceRun ok = run_split(w, p.x, c.rows, c.y_type, 4, 0, need);
  expect_matches(ok, p.want);
}

// v10b (session 8): the split CTAs of a tile reduce inside a cluster through distributed shared
// memory, in rank (= split) order: every output against the double reference and bit for bit
// against v10's workspace reduction (the same fp32 adds in the same order), ragged shapes, forced
// splits 2..8, both token tiles and both A layouts; the automatic rule without any workspace.
DeviceRun run_cluster(const cuda::Nm24Weights& w, const Activations& x, int64_t rows, ElemType y_type,
                      int split, int cluster, int tokens, size_t workspace_bytes) {
  return run_on_device(x, rows, y_type, workspace_bytes, 0, [&](const cuda::GemmProblem& p) {
    return cuda::nm24_prefill_wgmma_split_cluster(w, p, nullptr, split, cluster, tokens);
  });
}

TEST(GpuPrefillSplit, ClusterReduceMatchesReferenceAndV10) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  const Case cases[] = {
      {77, 2049, 64},                                    // 1 tile; 9 chunks
      {520, 3000, 129, ElemType::BF16, ElemType::F16},   // 3 row blocks x 2 token tiles; 12 chunks
      {1000, 4100, 193, ElemType::F16, ElemType::BF16},  // 4 row blocks; 17 chunks
      {300, 1800, 577, ElemType::BF16, ElemType::F32},   // 2 x 5 (128) / 2 x 4 (192) tiles; 8 chunks
  };
  uint64_t seed = 18000;
  int clustered = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("N={} K={} m={} {}->{}", c.rows, c.cols, c.m, type_name(c.type),
                             type_name(c.y_type)));
    const Prepared p = prepare(c, seed += 10);
    for (bool values_k : {false, true}) {
      const cuda::Nm24Weights w = values_k ? p.dev.values_k_only() : p.dev.fragments_only();
      for (int tokens : {128, 192})
        for (int split : {2, 3, 5, 8}) {
          if (values_k && (split == 2 || split == 5)) continue;  // A layout: 3 and 8 are enough
          SCOPED_TRACE(fmt::format("values_k {} tokens {} split {}", values_k, tokens, split));
          const int s = cuda::nm24_prefill_splits(w, c.m, split, tokens);
          const int64_t tiles = (w.rows_padded + 255) / 256 * ((c.m + tokens - 1) / tokens);
          const bool in_cluster = cuda::nm24_prefill_cluster_splits(w, c.m, split, 2, tokens) == s;
          EXPECT_EQ(cuda::nm24_prefill_cluster_splits(w, c.m, split, 1, tokens), 0) << "cluster off";
          // At most 4 clusters of <= 8 one-SM CTAs: they fit at once on an H100.
          if (sm_count() >= 132 && tiles <= 4) EXPECT_TRUE(in_cluster);
          clustered += in_cluster;
          const DeviceRun v10 = run_cluster(w, p.x, c.rows, c.y_type, split, 1, tokens,
                                            cuda::nm24_prefill_workspace_bytes(w, c.m, split));
          // No workspace at all: the cluster path needs none (a fallback to v10 would refuse).
          const DeviceRun v10b = run_cluster(w, p.x, c.rows, c.y_type, split, 2, tokens,
                                             in_cluster ? 0 : cuda::nm24_prefill_workspace_bytes(w, c.m, split));
          expect_matches(v10b, p.want);
          EXPECT_EQ(v10b.y, v10.y) << "cluster reduction differs from v10's (same order expected)";
        }
    }
  }
  EXPECT_GT(clustered, 0) << "no case took the cluster path";
  // The automatic rule with the cluster reduction and no workspace: the rule's split, no partials.
  const Case c{1000, 4096, 64};
  const Prepared p = prepare(c, 18100);
  const cuda::Nm24Weights w = p.dev.fragments_only();
  ASSERT_GE(cuda::nm24_prefill_splits(w, c.m, -1), 2);
  ASSERT_EQ(cuda::nm24_prefill_cluster_splits(w, c.m, -1, 2), cuda::nm24_prefill_splits(w, c.m, -1));
  const DeviceRun v10b = run_cluster(w, p.x, c.rows, c.y_type, -1, 2, 0, 0);
  expect_matches(v10b, p.want);
  const DeviceRun v10 = run_cluster(w, p.x, c.rows, c.y_type, -1, 1, 0,
                                    cuda::nm24_prefill_workspace_bytes(w, c.m, -1));
  EXPECT_EQ(v10b.y, v10.y);
  EXPECT_EQ(cuda::nm24_prefill_wgmma_split_cluster(w, cuda::GemmProblem{}, nullptr, -1, 4),
            cudaErrorInvalidValue)
      << "cluster mode 4";
}

// Clusters that cannot all be resident at once (18 tiles x 8 CTAs of one SM each > the SMs):
// the cluster request falls back to v10's workspace path (same bits), and refuses a forced split
// without the workspace.
TEST(GpuPrefillSplit, ClusterThatDoesNotFitFallsBackToV10) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  const Case c{77, 1800, 2200, ElemType::F16, ElemType::F16};  // 1 row block x 18 tiles; 8 chunks
  const Prepared p = prepare(c, 18200);
  const cuda::Nm24Weights w = p.dev.fragments_only();
  ASSERT_EQ(cuda::nm24_prefill_splits(w, c.m, 8, 128), 8);
  const int64_t tiles = (c.m + 127) / 128;
  ASSERT_GT(tiles * 8, sm_count()) << "the case must not fit";
  EXPECT_EQ(cuda::nm24_prefill_cluster_splits(w, c.m, 8, 2, 128), 0);
  const size_t bytes = cuda::nm24_prefill_workspace_bytes(w, c.m, 8);
  const DeviceRun fallback = run_cluster(w, p.x, c.rows, c.y_type, 8, 2, 128, bytes);
  expect_matches(fallback, p.want);
  const DeviceRun v10 = run_cluster(w, p.x, c.rows, c.y_type, 8, 1, 128, bytes);
  EXPECT_EQ(fallback.y, v10.y);
  // Smaller clusters of the same grid fit (18 x 2 CTAs): those reduce in the cluster.
  if (sm_count() >= 132) EXPECT_EQ(cuda::nm24_prefill_cluster_splits(w, c.m, 2, 2, 128), 2);
  const DeviceRun two = run_cluster(w, p.x, c.rows, c.y_type, 2, 2, 128, 0);
  expect_matches(two, p.want);
  // shrink (mode 3): the largest s' < 8 whose 18 clusters fit, bit for bit v10 forced to s'.
  const int shrunk = cuda::nm24_prefill_cluster_splits(w, c.m, 8, 3, 128);
  EXPECT_LT(shrunk, 8);
  if (sm_count() >= 132) EXPECT_GE(shrunk, 2) << "18 clusters of 2 fit on an H100";
  if (shrunk >= 2) {
    const DeviceRun s3 = run_cluster(w, p.x, c.rows, c.y_type, 8, 3, 128, 0);
    expect_matches(s3, p.want);
    const DeviceRun v10s = run_cluster(w, p.x, c.rows, c.y_type, shrunk, 1, 128,
                                       cuda::nm24_prefill_workspace_bytes(w, c.m, shrunk));
    EXPECT_EQ(s3.y, v10s.y) << "shrunk cluster " << shrunk;
  }
  cuda::DeviceBuffer dx(p.x.bits.size() * 2), dy(c.m * c.rows * 2);
  dx.upload(p.x.bits.data(), p.x.bits.size() * 2);
  cuda::GemmProblem pr;
  pr.x = dx.data();
  pr.m = c.m;
  pr.ldx = p.x.ldx;
  pr.y = dy.data();
  pr.ldy = c.rows;
  pr.y_type = ElemType::F16;
  EXPECT_EQ(cuda::nm24_prefill_wgmma_split_cluster(w, pr, nullptr, 8, 2, 128), cudaErrorInvalidValue)
      << "forced split 8 that does not fit as clusters, no workspace";
  cuda::check_cuda(cudaDeviceSynchronize(), "after a refused call");
}

// The cluster sizes v10b takes on the benchmark's shapes (modes 2 and 3) on this GPU, printed
// for the benchmark log: never more than the rule's split, shrink never less than exact.
TEST(GpuPrefillSplit, ClusterSizesOnBenchShapes) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  static const uint4 dummy[1] = {};
  for (int64_t n : {4096, 8192, 11008, 14336, 28672})
    for (int64_t k : {4096, 11008, 14336, 28672}) {
      cuda::Nm24Weights w{};
      w.type = ElemType::F16;
      w.rows = n;
      w.cols = k;
      w.rows_padded = (n + 255) / 256 * 256;
      w.cols_padded = (k + 255) / 256 * 256;
      w.values = dummy;
      w.meta = reinterpret_cast<const uint32_t*>(dummy);
      for (int64_t m : {64, 128, 256}) {
        const int s = cuda::nm24_prefill_splits(w, m, -1);
        const int exact = cuda::nm24_prefill_cluster_splits(w, m, -1, 2);
        const int shrink = cuda::nm24_prefill_cluster_splits(w, m, -1, 3);
        if (s > 1)
          std::printf("v10b %lldx%lld m=%lld: rule s=%d, cluster %d, shrink %d\n",
                      static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(m),
                      s, exact, shrink);
        EXPECT_TRUE(exact == 0 || exact == s);
        EXPECT_LE(shrink, s);
        EXPECT_GE(shrink, exact);
      }
    }
}

// ---- v11 (session 10): the last partial wave split over K (nm24_prefill_wgmma_tail) ----------

// The plan against a twin of its rule, and on the benchmark records at m >= 2048 with 132 SMs
// and the tile by wave count (the records docs/kernels-gpu.md "Session 10" predicts for).
// Host-side only.
TEST(GpuPrefillSplit, TailPlanMatchesTwinAndBenchShapes) {
  auto twin = [](int64_t tiles, int64_t kchunks, int sms) {
    if (tiles <= sms || tiles % sms == 0) return cuda::Nm24TailPlan{};
    const int64_t r = tiles % sms;
    const int64_t s = std::min<int64_t>({cuda::kPrefillMaxSplit, sms / r, kchunks / 2});
    return s >= 2 ? cuda::Nm24TailPlan{static_cast<int>(s), r} : cuda::Nm24TailPlan{};
  };
  for (int64_t tiles : {1, 16, 131, 132, 133, 150, 176, 256, 264, 265, 473, 688, 1849, 4816})
    for (int64_t kchunks : {1, 2, 3, 4, 9, 16, 43, 112})
      for (int sms : {7, 14, 114, 132}) {
        const cuda::Nm24TailPlan got = cuda::nm24_tail_plan(tiles, kchunks, sms);
        const cuda::Nm24TailPlan want = twin(tiles, kchunks, sms);
        EXPECT_EQ(got.splits, want.splits) << tiles << " tiles, " << kchunks << " chunks, " << sms;
        EXPECT_EQ(got.tiles, want.tiles) << tiles << " tiles, " << kchunks << " chunks, " << sms;
      }
  struct Shape {
    int64_t n, k, m;
    int splits;
    int64_t tail;
  };
  const Shape shapes[] = {
      {4096, 4096, 2048, 1, 0},     // 256 tiles of 128: 124 left, 1 split
      {4096, 4096, 8192, 4, 28},    // 688 of 192
      {11008, 4096, 2048, 1, 0},    // 473 of 192: 77 left
      {11008, 4096, 8192, 8, 1},    // 1849 of 192
      {4096, 11008, 8192, 4, 28},   // 688 of 192
      {14336, 4096, 2048, 1, 0},    // 616 of 192: 88 left
      {14336, 4096, 8192, 4, 32},   // 2408 of 192
      {28672, 8192, 2048, 3, 44},   // 1232 of 192
      {28672, 8192, 8192, 2, 64},   // 4816 of 192
      {8192, 28672, 2048, 1, 0},    // 352 of 192: 88 left
      {8192, 28672, 8192, 2, 56},   // 1376 of 192
  };
  for (const Shape& s : shapes) {
    const int64_t rows_padded = (s.n + 255) / 256 * 256;
    const int tokens = cuda::nm24_tokens_by_waves(rows_padded, s.m, 0.87);
    const int64_t tiles = rows_padded / 256 * ((s.m + tokens - 1) / tokens);
    const cuda::Nm24TailPlan plan = cuda::nm24_tail_plan(tiles, (s.k + 255) / 256, 132);
    EXPECT_EQ(plan.splits, s.splits) << s.n << "x" << s.k << " m=" << s.m;
    EXPECT_EQ(plan.tiles, s.tail) << s.n << "x" << s.k << " m=" << s.m;
  }
}

DeviceRun run_tail(const cuda::Nm24Weights& w, const Activations& x, int64_t rows, ElemType y_type,
                   int tokens, int sms) {
  return run_on_device(x, rows, y_type, cuda::nm24_prefill_tail_workspace_bytes(w, x.m, tokens, sms),
                       0, [&](const cuda::GemmProblem& p) {
                         return cuda::nm24_prefill_wgmma_tail(w, p, nullptr, tokens, sms);
                       });
}

// Planned for a few SMs, so that small ragged products have several waves and a partial last
// one: every output against the double reference, and bit for bit either the unsplit kernel's
// (tiles run whole) or v10's forced split at the plan's s (tail tiles: the same K ranges summed
// in the same order). Both token tiles, fp16 / bf16, every output type, tail splits 2..8, one
// and several tail tiles, and plans without a tail (the unsplit kernel). run_on_device calls
// twice on one workspace: the second call needs the counters the first one left zero.
TEST(GpuPrefillSplit, TailSplitMatchesReferenceAndPieces) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  struct TailCase {
    Case c;
    int tokens, sms;
  };
  const TailCase cases[] = {
      {{600, 4100, 577, ElemType::F16, ElemType::F32}, 128, 14},     // 15 tiles: 1 left, s = 8
      {{600, 4100, 577, ElemType::F16, ElemType::F32}, 128, 6},      // 3 left, s = 2
      {{600, 4100, 577, ElemType::BF16, ElemType::BF16}, 192, 11},   // 12 tiles: 1 left, s = 8
      {{600, 4100, 577, ElemType::F16, ElemType::F16}, 192, 5},      // 2 left, s = 2
      {{600, 4100, 577, ElemType::F16, ElemType::F32}, 128, 4},      // 3 left, s = 1: unsplit
      {{1000, 2049, 300, ElemType::BF16, ElemType::F16}, 128, 11},   // 12 tiles, 9 chunks: s = 4
      {{1000, 2049, 300, ElemType::BF16, ElemType::F32}, 192, 3},    // 8 tiles: 2 left, s = 1
      {{520, 3000, 1000, ElemType::F16, ElemType::BF16}, 128, 10},   // 24 tiles: 4 left, s = 2
      {{520, 3000, 1000, ElemType::BF16, ElemType::F32}, 192, 17},   // 18 tiles: 1 left, s = 6
      {{520, 3000, 1000, ElemType::F16, ElemType::F16}, 128, 7},     // 3 left, s = 2; ragged m
      {{300, 600, 200, ElemType::BF16, ElemType::F32}, 128, 3},      // 3 chunks: never split
  };
  uint64_t seed = 18000;
  for (const TailCase& tc : cases) {
    const Case& c = tc.c;
    SCOPED_TRACE(fmt::format("N={} K={} m={} {}->{} tokens {} SMs {}", c.rows, c.cols, c.m,
                             type_name(c.type), type_name(c.y_type), tc.tokens, tc.sms));
    const Prepared p = prepare(c, seed += 10);
    const cuda::Nm24Weights w = p.dev.fragments_only();
    const cuda::Nm24TailPlan plan = cuda::nm24_prefill_tail_plan(w, c.m, tc.tokens, tc.sms);
    const int64_t tiles = (w.rows_padded + 255) / 256 * ((c.m + tc.tokens - 1) / tc.tokens);
    const cuda::Nm24TailPlan want = cuda::nm24_tail_plan(tiles, w.cols_padded / cuda::kKChunk, tc.sms);
    EXPECT_EQ(plan.splits, want.splits);
    EXPECT_EQ(plan.tiles, want.tiles);
    const size_t bytes = cuda::nm24_prefill_tail_workspace_bytes(w, c.m, tc.tokens, tc.sms);
    if (plan.splits > 1)
      EXPECT_GE(bytes, static_cast<size_t>(plan.tiles * plan.splits * tc.tokens * 256 * 4));
    else
      EXPECT_EQ(bytes, 0u);
    const DeviceRun run = run_tail(w, p.x, c.rows, c.y_type, tc.tokens, tc.sms);
    expect_matches(run, p.want);
    const DeviceRun base = run_split(w, p.x, c.rows, c.y_type, 1, tc.tokens, 0);
    if (plan.splits < 2) {
      EXPECT_EQ(run.y, base.y) << "no tail split: the unsplit kernel";
      continue;
    }
    const DeviceRun pieces = run_split(w, p.x, c.rows, c.y_type, plan.splits, tc.tokens,
                                       cuda::nm24_prefill_workspace_bytes(w, c.m, plan.splits));
    ASSERT_EQ(run.y.size(), base.y.size());
    ASSERT_EQ(run.y.size(), pieces.y.size());
    int64_t whole = 0, split = 0, neither = 0;
    for (size_t i = 0; i < run.y.size(); ++i) {
      if (run.y[i] == base.y[i]) ++whole;
      else if (run.y[i] == pieces.y[i]) ++split;
      else ++neither;
    }
    EXPECT_EQ(neither, 0) << "outputs equal to neither the unsplit nor v10's split kernel ("
                          << whole << " / " << split << ")";
  }
}

// The forced tail path refuses a short, null or misaligned workspace, values_k-only weights and
// sms < 1, writing nothing; calls on one workspace leave its counter region zero (the decode
// kernels sharing it rely on that).
TEST(GpuPrefillSplit, TailKeepsCountersZeroAndRefusesBadCalls) {
  SPARSA_REQUIRE_WGMMA_SPLIT();
  const Case c{600, 4100, 577, ElemType::F16, ElemType::F16};
  const Prepared p = prepare(c, 18200);
  const cuda::Nm24Weights w = p.dev.fragments_only();
  const int sms = 7;  // 15 tiles of 128: 1 left, 7 pieces
  ASSERT_EQ(cuda::nm24_prefill_tail_plan(w, c.m, 128, sms).splits, 7);
  const size_t need = cuda::nm24_prefill_tail_workspace_bytes(w, c.m, 128, sms);
  ASSERT_GT(need, 0u);
  cuda::DeviceBuffer dx(p.x.bits.size() * 2), dy(c.m * c.rows * 2), ws(need + 64);
  dx.upload(p.x.bits.data(), p.x.bits.size() * 2);
  cuda::check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
  auto problem = [&](void* workspace, size_t bytes) {
    return f16_problem(dx, dy, c, p.x.ldx, workspace, bytes);
  };
  char* base = static_cast<char*>(ws.data());
  struct Bad {
    const char* what;
    cuda::Nm24Weights w;
    void* workspace;
    size_t bytes;
    int sms;
  };
  const Bad bad[] = {
      {"workspace one float short", w, base, need - 4, sms},
      {"null workspace", w, nullptr, need, sms},
      {"misaligned workspace", w, base + 4, need, sms},
      {"values_k only", p.dev.values_k_only(), base, need, sms},
      {"no SMs", w, base, need, 0},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    expect_refused(dy, c, [&] {
      return cuda::nm24_prefill_wgmma_tail(b.w, problem(b.workspace, b.bytes), nullptr, 128, b.sms);
    });
  }
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(fmt::format("round {}", round));
    cuda::check_cuda(cuda::nm24_prefill_wgmma_tail(w, problem(base, need), nullptr, 128, sms), "tail");
    cuda::check_cuda(cudaDeviceSynchronize(), "tail kernel");
    std::vector<uint16_t> y(c.m * c.rows);
    dy.download(y.data(), y.size() * 2);
    std::vector<float> yf(y.size());
    for (size_t i = 0; i < y.size(); ++i) yf[i] = from_bits(y[i], ElemType::F16);
    EXPECT_LE(relative_error(yf, p.want), 1e-2);
    std::vector<uint32_t> counters(64 * 1024 / 4);
    cuda::check_cuda(cudaMemcpy(counters.data(), base, counters.size() * 4, cudaMemcpyDeviceToHost),
                     "counters");
    EXPECT_TRUE(std::all_of(counters.begin(), counters.end(), [](uint32_t v) { return v == 0; }))
        << "a tail call left a counter set";
  }
}

}  // namespace
}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
