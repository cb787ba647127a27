// The wgmma.sp 2:4 prefill kernel (src/cuda/wgmma_prefill.cu, sm_90a) against a double CPU
// product of the same masked weights and against the mma.sp prefill kernel: ragged N, K and m,
// fp16 and bf16, every output type, Y poisoned with NaN. Skipped without a GPU; on a device other
// than compute capability 9.0 the kernel must refuse with cudaErrorNotSupported.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <utility>

#include "cuda/wgmma_prefill_tiles.h"
#include "gpu_layout24_util.h"
#include "gpu_sparse_util.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

// Skips off Hopper (after checking the refusal); on an H100/H200 the sm_90a image must be there.
#define SPARSA_REQUIRE_WGMMA()                                                          \
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

enum class Kernel {
  Wgmma, Mma, Dispatch, Ss128, Ss192, SsAuto, RegA128, RegA192, RegAAuto,
  Ssc2, Ssc1, Ssc2Unsplit,  // v12: cluster of 2 or 1 CTA; never a tail split
  Ssc2Persistent, Ssc1Persistent,  // v12's persistent form (tiles from a counter in the workspace)
  SscFrag2, SscFrag2Persistent, SscFrag1Persistent,  // v12 on the fragment layout (session 17)
  Ssc4, SscFrag4Persistent,  // clusters of 4 CTAs sharing X
  DispatchWorkspace  // nm24_prefill with the workspace nm24_prefill_workspace_bytes asks for
};

// The weights in both device layouts (gpu_layout24_util.h): the shared-memory-A kernel reads
// values_k, the others the fragments (SPARSA_NM24_LAYOUT=k: values_k; tests/gpu_layout24_test.cc
// checks every kernel on values_k against its fragment path).
using DeviceNm24K = DeviceNm24Both;
DeviceNm24K upload_with_k(const cuda::Nm24Tiled& tiled) { return upload_both(tiled); }

DeviceRun run_kernel(const DeviceNm24K& dev, const Activations& x, int64_t rows, ElemType y_type,
                     Kernel kernel) {
  const bool persistent = kernel == Kernel::Ssc2Persistent || kernel == Kernel::Ssc1Persistent ||
                          kernel == Kernel::SscFrag2Persistent || kernel == Kernel::SscFrag1Persistent ||
                          kernel == Kernel::SscFrag4Persistent;
  const size_t workspace = kernel == Kernel::DispatchWorkspace
                               ? cuda::nm24_prefill_workspace_bytes(dev.weights, x.m)
                               : persistent ? size_t{64} << 10 : 0;
  constexpr auto kFrag = cuda::Nm24SscA::Fragments;
  return run_on_device(x, rows, y_type, workspace, 0, [&](const cuda::GemmProblem& p) {
    if (kernel == Kernel::Wgmma) return cuda::nm24_prefill_wgmma(dev.weights, p, nullptr);
    if (kernel == Kernel::Mma) return cuda::nm24_prefill_mma(dev.weights, p, nullptr);
    if (kernel == Kernel::Ss128) return cuda::nm24_prefill_wgmma_ss(dev.weights, p, nullptr, 128);
    if (kernel == Kernel::Ss192) return cuda::nm24_prefill_wgmma_ss(dev.weights, p, nullptr, 192);
    if (kernel == Kernel::SsAuto) return cuda::nm24_prefill_wgmma_ss(dev.weights, p, nullptr, -1);
    if (kernel == Kernel::RegA128) return cuda::nm24_prefill_wgmma_tokens(dev.weights, p, nullptr, 128);
    if (kernel == Kernel::RegA192) return cuda::nm24_prefill_wgmma_tokens(dev.weights, p, nullptr, 192);
    if (kernel == Kernel::RegAAuto) return cuda::nm24_prefill_wgmma_tokens(dev.weights, p, nullptr, -1);
    if (kernel == Kernel::Ssc2) return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2);
    if (kernel == Kernel::Ssc1) return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 1);
    if (kernel == Kernel::Ssc2Unsplit)
      return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2, -1);
    if (kernel == Kernel::Ssc2Persistent)
      return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2, -1, true);
    if (kernel == Kernel::Ssc1Persistent)
      return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 1, -1, true);
    if (kernel == Kernel::SscFrag2) return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2, -1, false, kFrag);
    if (kernel == Kernel::SscFrag2Persistent)
      return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2, -1, true, kFrag);
    if (kernel == Kernel::SscFrag1Persistent)
      return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 1, -1, true, kFrag);
    if (kernel == Kernel::Ssc4) return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 4, -1);
    if (kernel == Kernel::SscFrag4Persistent)
      return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 4, -1, true, kFrag);
    return cuda::nm24_prefill(dev.weights, p, nullptr);
  });
}

void check_case(const Case& c, uint64_t seed, Kernel kernel = Kernel::Wgmma) {
  SCOPED_TRACE(fmt::format("N={} K={} m={} {}->{} kernel {}", c.rows, c.cols, c.m,
                           type_name(c.type), type_name(c.y_type), static_cast<int>(kernel)));
  const SparseWeights w = random_nm24(c.rows, c.cols, c.type, seed);
  const auto dev =
      upload_with_k(cuda::tile_nm24(w.values.data(), w.meta.data(), c.rows, c.cols, c.type));
  const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
  const DeviceRun run = run_kernel(dev, x, c.rows, c.y_type, kernel);
  EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
  EXPECT_TRUE(run.repeatable) << "second call differs";
  const double err = relative_error(run.y, reference_gemm(x, w));
  EXPECT_LE(err, 1e-2);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
}

TEST(GpuWgmma, MatchesReferenceOnRaggedShapes) {
  SPARSA_REQUIRE_WGMMA();
  const Case cases[] = {
      {256, 256, 128},                                // one CTA, one chunk
      {128, 512, 64},                                 // rows_padded < one CTA tile (256)
      {77, 513, 300},                                 // ragged everything
      {130, 100, 70},                                 // K < one stage, m < one token tile
      {520, 1000, 129},                               // 3 row blocks, 2 token tiles, odd chunk count
      {1000, 2050, 257, ElemType::F16, ElemType::F16},
      {300, 2000, 200, ElemType::BF16, ElemType::BF16},
      {384, 3000, 131, ElemType::BF16, ElemType::F32},
      {200, 777, 90, ElemType::F16, ElemType::BF16},
      {640, 4096, 300},                               // K of the benchmark shapes, many stages
      {256, 4352, 128, ElemType::BF16, ElemType::F16},  // 17 chunks: the W ring wraps 8 times
  };
  uint64_t seed = 7000;
  for (const Case& c : cases) check_case(c, seed += 10);
}

TEST(GpuWgmma, PrefillDispatchPicksAKernelForEveryM) {
  SPARSA_REQUIRE_WGMMA();
  uint64_t seed = 7200;
  for (int64_t m : {int64_t{17}, cuda::kWgmmaMinM - 1, cuda::kWgmmaMinM, int64_t{200}})
    check_case({256, 640, m}, seed += 10, Kernel::Dispatch);
  // Around kSscMinM, where the default dispatch moves to v12 on the fragment layout: without a
  // workspace (a cluster per tile) and with the one nm24_prefill_workspace_bytes asks for
  // (persistent v12, or v10's split where v12 is not taken). 1000 rows: 4 cluster rows, far from
  // one wave below 2048 tokens, so the register-A kernel; 5000 rows at m = 600: 20 x 3 tiles,
  // 0.91 of one wave of the H100's 66 pairs.
  for (int64_t m : {cuda::kSscMinM - 1, cuda::kSscMinM, int64_t{777}}) {
    cuda::Nm24Weights shape{.rows = 1000, .cols = 1536, .rows_padded = 1024, .cols_padded = 1536};
    const double fill = cuda::nm24_prefill_ssc_wave_fill(shape, m);
    EXPECT_EQ(cuda::nm24_prefill_takes_ssc_fragments(shape, m),
              m >= cuda::kSscMinM && fill >= cuda::kSscMinWaveFill)
        << "a shape counts as the fragment layout";
    shape.values_k = &shape;  // values_k only: not the fragment kernel
    EXPECT_FALSE(cuda::nm24_prefill_takes_ssc_fragments(shape, m));
    check_case({1000, 1536, m, ElemType::BF16, ElemType::F16}, seed += 10, Kernel::Dispatch);
    check_case({1000, 1536, m}, seed += 10, Kernel::DispatchWorkspace);
  }
  const cuda::Nm24Weights wide{.rows = 5000, .cols = 512, .rows_padded = 5120, .cols_padded = 512};
  const int64_t pairs = cuda::nm24_prefill_ssc_resident_clusters(2);
  ASSERT_GT(pairs, 0);
  const int64_t tiles = 20 * 3;
  EXPECT_DOUBLE_EQ(cuda::nm24_prefill_ssc_wave_fill(wide, 600),
                   static_cast<double>(tiles) / static_cast<double>((tiles + pairs - 1) / pairs * pairs));
  EXPECT_EQ(cuda::nm24_prefill_takes_ssc_fragments(wide, 600),
            cuda::nm24_prefill_ssc_wave_fill(wide, 600) >= cuda::kSscMinWaveFill);
  EXPECT_TRUE(cuda::nm24_prefill_takes_ssc_fragments(wide, cuda::kSscFillFreeM)) << "no fill rule from 2048";
  check_case({5000, 512, 600}, seed += 10, Kernel::DispatchWorkspace);
  check_case({5000, 512, 600, ElemType::BF16, ElemType::BF16}, seed += 10, Kernel::Dispatch);
}

// Benchmark shapes at full size: every output written and finite, 24 sampled tokens against the
// double reference, and the whole output against the mma.sp kernel.
TEST(GpuWgmma, BenchmarkShapesMatchReferenceAndMmaKernel) {
  SPARSA_REQUIRE_WGMMA();
  struct Shape {
    int64_t rows, cols, m;
  };
  const Shape shapes[] = {{4096, 4096, 256}, {11008, 4096, 300}, {4096, 11008, 2048}};
  uint64_t seed = 7400;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(fmt::format("N={} K={} m={}", s.rows, s.cols, s.m));
    const SparseWeights w = random_nm24(s.rows, s.cols, ElemType::F16, seed += 10);
    const auto dev = upload_with_k(
        cuda::tile_nm24(w.values.data(), w.meta.data(), s.rows, s.cols, ElemType::F16));
    const Activations x = random_activations(s.m, s.cols, ElemType::F16, seed + 1);
    const DeviceRun mma = run_kernel(dev, x, s.rows, ElemType::F32, Kernel::Mma);
    for (Kernel k : {Kernel::Wgmma, Kernel::RegA192, Kernel::Ss128, Kernel::Ss192, Kernel::Ssc2,
                     Kernel::Ssc1, Kernel::Ssc2Persistent, Kernel::SscFrag2Persistent,
                     Kernel::SscFrag4Persistent, Kernel::DispatchWorkspace}) {
      SCOPED_TRACE(fmt::format("kernel {}", static_cast<int>(k)));
      const DeviceRun run = run_kernel(dev, x, s.rows, ElemType::F32, k);
      EXPECT_TRUE(run.padding_intact && run.repeatable);
      EXPECT_LE(relative_error(run.y, mma.y), 1e-3) << "wgmma and mma.sp kernels disagree";
      expect_sampled_tokens_match_reference(run.y, x, w, 24, seed);
    }
  }
}

// v9: the register-A kernel with 192-token tiles (2-slot A register ring, 12-k-step cp.async ring,
// 4-chunk metadata ring) and the explicit 128-token tile, against the double reference: ragged N,
// K and m (m not a multiple of 128 or 192, N past the last full 256-row block, K < one stage,
// chunk counts that wrap both rings), fp16 and bf16, every output type.
TEST(GpuWgmma, Tile192MatchesReferenceOnRaggedShapes) {
  SPARSA_REQUIRE_WGMMA();
  const Case cases[] = {
      {256, 256, 192},                                  // one CTA, one chunk
      {128, 512, 64},                                   // rows_padded < one CTA tile, m < one tile
      {77, 513, 300},                                   // ragged everything
      {130, 100, 70},                                   // K < one stage
      {520, 1000, 193},                                 // 3 row blocks (last half empty), 2 tiles of 192
      {1000, 2050, 385, ElemType::F16, ElemType::F16},  // 3 token tiles, the last one token
      {300, 2000, 200, ElemType::BF16, ElemType::BF16},
      {384, 3000, 131, ElemType::BF16, ElemType::F32},
      {200, 777, 90, ElemType::F16, ElemType::BF16},
      {640, 4096, 577},                                 // 128 k-steps: the A ring (12) wraps 10 times
      {256, 4352, 128, ElemType::BF16, ElemType::F16},  // 17 chunks: metadata slots c % 4 wrap
      {90, 2304, 250, ElemType::F16, ElemType::F32},    // 9 chunks: odd chunk count
  };
  uint64_t seed = 8000;
  for (const Case& c : cases) {
    check_case(c, seed += 10, Kernel::RegA192);
    check_case(c, seed, Kernel::RegA128);
  }
}

// The tile chosen by wave count (tokens_per_tile -1) against a twin of the rule: fewer
// (waves x tokens per tile x relative time per token), one 256-row CTA per SM. Both choices
// occur below on a 132-SM H100 (4096 rows, m = 2048: 256 tiles of 128 = 1.94 waves against
// 176 tiles of 192 = 2 waves -> 128; 7000 rows, m = 1500: 192), and the results match the
// double reference.
TEST(GpuWgmma, TileByWavesMatchesRuleAndReference) {
  SPARSA_REQUIRE_WGMMA();
  int device = 0, sms = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  auto twin = [&](int64_t rows, int64_t m, double r) {
    const int64_t blocks = (rows + 255) / 256;
    auto cost = [&](int64_t bn, double t) {
      return static_cast<double>((blocks * ((m + bn - 1) / bn) + sms - 1) / sms) * bn * t;
    };
    return cost(192, r) < cost(128, 1.0) ? 192 : 128;
  };
  for (int64_t rows : {int64_t{256}, int64_t{4096}, int64_t{7008}, int64_t{11008}, int64_t{28672}})
    for (int64_t m : {int64_t{64}, int64_t{300}, int64_t{1500}, int64_t{2048}, int64_t{8192}})
      for (double r : {0.6, 0.87, 1.0})
        EXPECT_EQ(cuda::nm24_tokens_by_waves(rows, m, r), twin(rows, m, r))
            << "rows " << rows << " m " << m << " r " << r;
  uint64_t seed = 8200;
  for (const Case& c : {Case{4096, 256, 2048}, Case{7000, 256, 1500, ElemType::BF16, ElemType::F16}})
    check_case(c, seed += 10, Kernel::RegAAuto);
}

// nm24_tile_k against a host inversion of the fragment tiling (tiling.cc's element formula):
// every value of the row-major copy, ragged rows and columns.
TEST(GpuWgmmaSs, TileKMatchesHostLayout) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 7700;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{77, 513}, {256, 256}, {300, 1000}}) {
    SCOPED_TRACE(fmt::format("N={} K={}", rows, cols));
    const SparseWeights w = random_nm24(rows, cols, ElemType::BF16, seed += 10);
    const cuda::Nm24Tiled tiled =
        cuda::tile_nm24(w.values.data(), w.meta.data(), rows, cols, ElemType::BF16);
    const auto dev = upload_with_k(tiled);
    const int64_t half = tiled.cols_padded / 2, ksteps = tiled.cols_padded / 32;
    std::vector<uint16_t> got(static_cast<size_t>(tiled.rows_padded * half));
    dev.values_k.download(got.data(), got.size() * 2);
    std::vector<uint16_t> want(got.size(), 0xdead);
    for (int64_t rt = 0; rt < tiled.rows_padded / 16; ++rt)
      for (int64_t s = 0; s < ksteps; ++s)
        for (int lane = 0; lane < 32; ++lane)
          for (int i = 0; i < 8; ++i) {
            const int64_t row = rt * 16 + lane / 4 + 8 * ((i >> 1) & 1);
            const int64_t c = s * 16 + 2 * (lane % 4) + (i & 1) + 8 * (i >> 2);
            want[row * half + c] = tiled.values[((rt * ksteps + s) * 32 + lane) * 8 + i];
          }
    EXPECT_EQ(std::count(want.begin(), want.end(), uint16_t{0xdead}), 0) << "formula misses cells";
    EXPECT_TRUE(got == want) << "values_k differs from the fragment tiling";
  }
}

// The shared-memory-A kernel (both token tiles) against the double reference: ragged N, K and m
// (N past the last full 256-row block, m not a multiple of 128 or 192, K < one stage), fp16 and
// bf16, every output type.
TEST(GpuWgmmaSs, MatchesReferenceOnRaggedShapes) {
  SPARSA_REQUIRE_WGMMA();
  ASSERT_TRUE(cuda::nm24_wgmma_ss_supported());
  const Case cases[] = {
      {256, 256, 128},
      {128, 512, 64},                                   // one 128-row tile: second metadata box reloads
      {77, 513, 300},
      {130, 100, 70},                                   // K < one stage
      {520, 1000, 193},                                 // 3 row blocks (last half empty), 2 token tiles of 192
      {1000, 2050, 385, ElemType::F16, ElemType::F16},
      {300, 2000, 200, ElemType::BF16, ElemType::BF16},
      {384, 3000, 131, ElemType::BF16, ElemType::F32},
      {200, 777, 90, ElemType::F16, ElemType::BF16},
      {640, 4096, 300},                                 // many stages: the slot ring wraps
      {256, 4352, 128, ElemType::BF16, ElemType::F16},  // 17 chunks: metadata buffers alternate
  };
  uint64_t seed = 7800;
  for (const Case& c : cases) {
    check_case(c, seed += 10, Kernel::Ss128);
    check_case(c, seed, Kernel::Ss192);
  }
  // Tile by wave count (tokens_per_tile 0): both choices occur among these.
  // 4096 rows, m = 2048: 128 (1.94 waves against 2 waves of 192); 7000 rows, m = 1500: 192.
  for (const Case& c : {Case{4096, 256, 2048}, Case{7000, 256, 1500, ElemType::BF16, ElemType::F16}})
    check_case(c, seed += 10, Kernel::SsAuto);
}

// v12 (128 x 256 tiles, clusters of two sharing X, or single CTAs) against the double reference:
// ragged N, K and m (one row block, so the second CTA of the cluster has no rows; odd row-block
// counts; m not a multiple of 256; K < one stage), fp16 and bf16, every output type, grids of
// several waves. (These calls have no workspace, so no tail split: GpuWgmmaSsc.TailSplit*.)
TEST(GpuWgmmaSsc, MatchesReferenceOnRaggedShapes) {
  SPARSA_REQUIRE_WGMMA();
  ASSERT_TRUE(cuda::nm24_wgmma_ssc_supported());
  const Case cases[] = {
      {256, 256, 256},
      {128, 512, 64},                                   // one row block: the partner has no rows
      {77, 513, 300},
      {130, 100, 70},                                   // K < one stage
      {520, 1000, 257},                                 // 5 row blocks (odd), 2 token tiles
      {1000, 2050, 385, ElemType::F16, ElemType::F16},
      {300, 2000, 200, ElemType::BF16, ElemType::BF16},
      {384, 3000, 131, ElemType::BF16, ElemType::F32},
      {200, 777, 90, ElemType::F16, ElemType::BF16},
      {640, 4096, 300},                                 // many stages: the slot ring wraps
      {256, 4352, 128, ElemType::BF16, ElemType::F16},  // 17 chunks: metadata buffers alternate
      {4096, 512, 2100},                                // 144 cluster tiles: > 1 wave
      {3900, 300, 2500, ElemType::BF16, ElemType::BF16},  // 31 row blocks, 160 tiles, 1 chunk each
      // Y rows 16-byte aligned (run_on_device pads ldy by 3 floats / 4 halves), so one CTA per
      // tile stores through shared memory (also 77 / 300 / 3900 above, with a ragged last chunk).
      {4093, 1024, 1000},
      {2044, 768, 600, ElemType::BF16, ElemType::F16},
  };
  uint64_t seed = 8800;
  for (const Case& c : cases) {
    seed += 10;
    for (Kernel k : {Kernel::Ssc2, Kernel::Ssc1, Kernel::Ssc2Unsplit, Kernel::Ssc2Persistent,
                     Kernel::Ssc1Persistent, Kernel::SscFrag2, Kernel::SscFrag2Persistent,
                     Kernel::SscFrag1Persistent, Kernel::Ssc4, Kernel::SscFrag4Persistent})
      check_case(c, seed, k);
  }
}

// v12's streamed tail plan (ssc_tail.h), on the host: for every tile count, chunk count and
// cluster count below, the shares cover each chunk of the last tiles % clusters + clusters tiles
// exactly once, cut each tile at most once (one whole segment, or piece 0 from its first chunk
// and piece 1 to its last), are no longer than share_chunks (one per cluster at most), and end
// before the unstreamed waves would; no plan where the tiles fill their waves or there is no
// whole wave before the partial one.
TEST(GpuWgmmaSscPlan, SharesCoverTheTailOnceAndShortenTheLastWaves) {
  int planned = 0;
  for (const int clusters : {1, 2, 5, 7, 20, 66, 132})
    for (const int64_t kchunks : {1, 2, 3, 4, 8, 16, 32, 112})
      for (int64_t tiles = 1; tiles <= 4 * clusters + 3; ++tiles) {
        SCOPED_TRACE(fmt::format("tiles {} chunks {} clusters {}", tiles, kchunks, clusters));
        const cuda::Nm24SscTailPlan plan = cuda::nm24_ssc_tail_plan(tiles, kchunks, clusters);
        if (tiles <= clusters || tiles % clusters == 0) {
          EXPECT_EQ(plan.shares, 0);
          continue;
        }
        if (plan.shares == 0) {  // only where a share would take two tiles' chunks
          EXPECT_GE(((tiles % clusters + clusters) * kchunks + clusters - 1) / clusters, 2 * kchunks);
          continue;
        }
        ++planned;
        ASSERT_EQ(plan.tail_tiles, tiles % clusters + clusters);
        ASSERT_LE(plan.shares, clusters);
        ASSERT_GT(plan.share_chunks, kchunks);
        ASSERT_LT(plan.share_chunks, 2 * kchunks);
        std::vector<int> covered(static_cast<size_t>(plan.tail_tiles * kchunks), 0);
        std::vector<std::vector<int>> pieces(static_cast<size_t>(plan.tail_tiles));
        for (int64_t sh = 0; sh < plan.shares; ++sh) {
          const int64_t q_end = cuda::ssc_share_end(plan, sh, static_cast<int32_t>(kchunks));
          int64_t length = 0;
          for (int64_t q = sh * plan.share_chunks; q < q_end;) {
            const cuda::SscSegment g = cuda::ssc_segment(q, q_end, static_cast<int32_t>(kchunks));
            ASSERT_LT(g.tile, plan.tail_tiles);
            ASSERT_LT(g.chunk_begin, g.chunk_end);
            for (int32_t c = g.chunk_begin; c < g.chunk_end; ++c) ++covered[g.tile * kchunks + c];
            pieces[g.tile].push_back(g.piece);
            if (g.piece == -1) EXPECT_TRUE(g.chunk_begin == 0 && g.chunk_end == kchunks);
            if (g.piece == 0) EXPECT_TRUE(g.chunk_begin == 0 && g.chunk_end < kchunks);
            if (g.piece == 1) EXPECT_TRUE(g.chunk_begin > 0 && g.chunk_end == kchunks);
            length += g.chunk_end - g.chunk_begin;
            q = g.tile * kchunks + g.chunk_end;
          }
          EXPECT_LE(length, plan.share_chunks);
        }
        for (size_t i = 0; i < covered.size(); ++i) ASSERT_EQ(covered[i], 1) << "chunk " << i;
        for (const std::vector<int>& p : pieces)
          EXPECT_TRUE(p == std::vector<int>{-1} || p == (std::vector<int>{0, 1})) << "a tile cut twice";
        const int64_t waves = (tiles + clusters - 1) / clusters;
        EXPECT_LT((waves - 2) * kchunks + plan.share_chunks, waves * kchunks);
      }
  EXPECT_GT(planned, 100);
}

// v12's streamed tail on the GPU, planned for a few resident clusters so that small shapes have
// several waves (the launch does not depend on the count: the persistent clusters take units from
// a counter): 1000 x 2048, m = 700 (12 cluster tiles of 8 chunks) for 5 and 7 clusters; 4096 x
// 4096, m = 600 (48 tiles of 16 chunks) for 20; 2044 x 1024 and 2040 x 1024 (24 tiles of 4
// chunks) for 7, the second with 16-byte aligned rows of bf16 Y (TMA stores); 296 x 1024 (an odd
// row-block count: the partner CTA's rows do not exist) for 4. fp32 Y (direct stores) and fp16
// / bf16 Y. Against the double reference; a second call must give the same bytes (the words
// back at zero, the two pieces' sums added the same way whichever arrives last); one byte less
// workspace is refused, and so is the one-cluster-per-tile form.
TEST(GpuWgmmaSsc, StreamedTailMatchesReference) {
  SPARSA_REQUIRE_WGMMA();
  struct TailCase {
    Case c;
    int clusters;
    int64_t tail_tiles;
    int32_t share_chunks, shares;
    int64_t ldy_pad;
  };
  const TailCase cases[] = {
      {{1000, 2048, 700}, 5, 7, 12, 5, -1},
      {{1000, 2048, 700, ElemType::BF16, ElemType::F16}, 7, 12, 14, 7, -1},
      {{4096, 4096, 600}, 20, 28, 23, 20, -1},
      {{2044, 1024, 600, ElemType::BF16, ElemType::F16}, 7, 10, 6, 7, -1},
      {{2040, 1024, 600, ElemType::BF16, ElemType::BF16}, 7, 10, 6, 7, 8},
      {{296, 1024, 700, ElemType::F16, ElemType::F16}, 4, 6, 6, 4, 8},
  };
  uint64_t seed = 9100;
  for (const TailCase& tc : cases) {
    const Case& c = tc.c;
    SCOPED_TRACE(fmt::format("N={} K={} m={} clusters {}", c.rows, c.cols, c.m, tc.clusters));
    const int64_t tiles = (c.rows + 255) / 256 * ((c.m + 255) / 256);
    const cuda::Nm24SscTailPlan plan = cuda::nm24_ssc_tail_plan(tiles, (c.cols + 255) / 256, tc.clusters);
    ASSERT_EQ(plan.tail_tiles, tc.tail_tiles);
    ASSERT_EQ(plan.share_chunks, tc.share_chunks);
    ASSERT_EQ(plan.shares, tc.shares);
    const SparseWeights w = random_nm24(c.rows, c.cols, c.type, seed += 10);
    const auto dev = upload_with_k(cuda::tile_nm24(w.values.data(), w.meta.data(), c.rows, c.cols, c.type));
    const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
    const size_t bytes = (64u << 10) + static_cast<size_t>(plan.tail_tiles) * 2 * 128 * 256 * 4;
    for (const auto a : {cuda::Nm24SscA::Fragments, cuda::Nm24SscA::RowMajor}) {
      SCOPED_TRACE(a == cuda::Nm24SscA::Fragments ? "fragments" : "values_k");
      const DeviceRun run = run_on_device(
          x, c.rows, c.y_type, bytes, 0,
          [&](const cuda::GemmProblem& p) {
            return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2, tc.clusters, true, a);
          },
          tc.ldy_pad);
      EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
      EXPECT_TRUE(run.repeatable) << "second call differs";
      const double err = relative_error(run.y, reference_gemm(x, w));
      EXPECT_LE(err, 1e-2);
      EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
    }
    // A workspace one byte short of the plan, and the one-cluster-per-tile form: refused.
    run_on_device(x, c.rows, c.y_type, bytes - 1, 0, [&](const cuda::GemmProblem& p) {
      EXPECT_EQ(cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2, tc.clusters, true),
                cudaErrorInvalidValue);
      return cudaSuccess;
    });
    run_on_device(x, c.rows, c.y_type, bytes, 0, [&](const cuda::GemmProblem& p) {
      EXPECT_EQ(cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2, tc.clusters, false),
                cudaErrorInvalidValue);
      return cudaSuccess;
    });
  }
}

// v12's persistent form with TMA stores for 16-bit Y (session 18, Nm24SscStore::Tma) against the
// same form storing through shared memory (Staged): the same accumulators rounded the same way,
// so Y must match bit for bit, and the double reference. Y rows padded by 8 halves (16-byte
// aligned rows; the padding must stay untouched). Rows ending inside a warp's 16 (296, 1000,
// 2040, 4088), an odd row-block count (296: the partner CTA's rows do not exist), tokens past the
// last full 32-token pass (70, 1000, 2100), one k-step chunk (K = 100), and more cluster tiles
// than resident clusters (4088 x 2100: 144 tiles, so each warp's two store buffers carry over
// from tile to tile). Refused: fp32 Y, the one-cluster-per-tile form, unaligned Y rows, and N not
// a multiple of 8 (TMA writes whole 16-byte pieces: the first version of this test caught it
// writing the padding of N = 300).
TEST(GpuWgmmaSsc, TmaStoreEpilogueMatchesStagedBitForBit) {
  SPARSA_REQUIRE_WGMMA();
  const Case cases[] = {
      {296, 512, 70, ElemType::F16, ElemType::F16},
      {1000, 100, 1000, ElemType::BF16, ElemType::BF16},
      {2040, 768, 600, ElemType::BF16, ElemType::F16},
      {4088, 1024, 2100, ElemType::F16, ElemType::F16},
      {1000, 2048, 333, ElemType::F16, ElemType::BF16},
  };
  constexpr auto kFrag = cuda::Nm24SscA::Fragments;
  constexpr int64_t kPad = 8;
  uint64_t seed = 9300;
  for (const Case& c : cases) {
    const SparseWeights w = random_nm24(c.rows, c.cols, c.type, seed += 10);
    const auto dev =
        upload_with_k(cuda::tile_nm24(w.values.data(), w.meta.data(), c.rows, c.cols, c.type));
    const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
    const std::vector<float> want = reference_gemm(x, w);
    for (const int cluster : {2, 1}) {
      SCOPED_TRACE(fmt::format("N={} K={} m={} {}->{} cluster {}", c.rows, c.cols, c.m,
                               type_name(c.type), type_name(c.y_type), cluster));
      auto run = [&](cuda::Nm24SscStore store) {
        return run_on_device(
            x, c.rows, c.y_type, size_t{64} << 10, 0,
            [&](const cuda::GemmProblem& p) {
              return cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, cluster, -1, true,
                                                  kFrag, store);
            },
            kPad);
      };
      const DeviceRun tma = run(cuda::Nm24SscStore::Tma);
      const DeviceRun staged = run(cuda::Nm24SscStore::Staged);
      EXPECT_TRUE(tma.padding_intact) << "a TMA store wrote past column N of y";
      EXPECT_TRUE(tma.repeatable) << "second call differs";
      const double err = relative_error(tma.y, want);
      EXPECT_LE(err, 1e-2);
      EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
      ASSERT_EQ(tma.y.size(), staged.y.size());
      int64_t differ = 0;
      for (size_t i = 0; i < tma.y.size(); ++i)
        differ += std::memcmp(&tma.y[i], &staged.y[i], sizeof(float)) != 0;
      EXPECT_EQ(differ, 0) << "outputs where TMA and staged stores differ";
    }
  }
  // Where TMA stores cannot run, asking for them is refused (and nothing runs).
  auto refused = [&](int64_t rows, ElemType y_type, bool persistent, int64_t ldy_pad) {
    const SparseWeights w = random_nm24(rows, 256, ElemType::F16, seed += 10);
    const auto dev =
        upload_with_k(cuda::tile_nm24(w.values.data(), w.meta.data(), rows, 256, ElemType::F16));
    const Activations x = random_activations(70, 256, ElemType::F16, seed + 1);
    const DeviceRun run = run_on_device(
        x, rows, y_type, size_t{64} << 10, 0,
        [&](const cuda::GemmProblem& p) {
          EXPECT_EQ(cuda::nm24_prefill_wgmma_ssc(dev.weights, p, nullptr, 2, -1, persistent, kFrag,
                                                 cuda::Nm24SscStore::Tma),
                    cudaErrorInvalidValue)
              << "N " << rows << " " << type_name(y_type)
              << (persistent ? " persistent" : " a cluster per tile") << " ldy " << rows + ldy_pad;
          return cudaSuccess;
        },
        ldy_pad);
    EXPECT_TRUE(run.padding_intact);
  };
  refused(296, ElemType::F32, true, 4);    // fp32 Y (rows of 1200 bytes: aligned)
  refused(296, ElemType::F16, false, 8);   // one cluster per tile
  refused(296, ElemType::F16, true, 5);    // rows of 602 bytes: not 16-byte aligned
  refused(300, ElemType::F16, true, 4);    // N = 300: aligned rows, but N % 8 != 0
}

// The argument checks of a shared-memory-A kernel: `launch(weights, problem, option)` with
// values_k missing, with `bad_option` (an unknown token tile or cluster size) and with ldx not a
// multiple of 8 is refused; with `good_option` and good arguments it runs.
template <typename Launch>
void expect_ss_argument_checks(Launch launch, int good_option, int bad_option, uint64_t seed) {
  const SparseWeights w = random_nm24(128, 256, ElemType::F16, seed);
  const auto dev = upload_with_k(cuda::tile_nm24(w.values.data(), w.meta.data(), 128, 256, ElemType::F16));
  cuda::DeviceBuffer x(64 * 256 * 2), y(64 * 128 * 4);
  cuda::GemmProblem p;
  p.x = x.data();
  p.m = 64;
  p.ldx = 256;
  p.y = y.data();
  p.ldy = 128;
  cuda::Nm24Weights no_k = dev.weights;
  no_k.values_k = nullptr;
  EXPECT_EQ(launch(no_k, p, good_option), cudaErrorInvalidValue);
  EXPECT_EQ(launch(dev.weights, p, bad_option), cudaErrorInvalidValue);
  p.ldx = 260;  // not a multiple of 8
  EXPECT_EQ(launch(dev.weights, p, good_option), cudaErrorInvalidValue);
  p.ldx = 256;
  EXPECT_EQ(launch(dev.weights, p, good_option), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(GpuWgmmaSsc, RejectsBadArguments) {
  SPARSA_REQUIRE_WGMMA();
  expect_ss_argument_checks(
      [](const cuda::Nm24Weights& w, const cuda::GemmProblem& p, int cluster) {
        return cuda::nm24_prefill_wgmma_ssc(w, p, nullptr, cluster, 0, false, cuda::Nm24SscA::RowMajor);
      },
      2, 3, 8900);
  // On the fragment layout: the same checks with `values` missing instead of values_k.
  expect_ss_argument_checks(
      [](const cuda::Nm24Weights& w, const cuda::GemmProblem& p, int cluster) {
        cuda::Nm24Weights frag = w;
        if (!w.values_k) frag.values = nullptr;  // the harness's "layout missing" case
        frag.values_k = nullptr;                 // not read on this path
        return cuda::nm24_prefill_wgmma_ssc(frag, p, nullptr, cluster, 0, false,
                                            cuda::Nm24SscA::Fragments);
      },
      2, 3, 8910);
}

// v8 (tokens_per_tile -1: by wave count; 0 would run v12).
TEST(GpuWgmmaSs, RejectsBadArguments) {
  SPARSA_REQUIRE_WGMMA();
  expect_ss_argument_checks(
      [](const cuda::Nm24Weights& w, const cuda::GemmProblem& p, int tokens) {
        return cuda::nm24_prefill_wgmma_ss(w, p, nullptr, tokens);
      },
      -1, 100, 7900);
}

TEST(GpuWgmma, RejectsBadArguments) {
  SPARSA_SKIP_WITHOUT_GPU();
  const SparseWeights w = random_nm24(128, 256, ElemType::F16, 7600);
  const auto dev = cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), 128, 256, ElemType::F16));
  cuda::DeviceBuffer x(64 * 264 * 2), y(64 * 128 * 4);
  cuda::GemmProblem p;
  p.x = x.data();
  p.m = 64;
  p.ldx = 260;  // not a multiple of 8
  p.y = y.data();
  p.ldy = 128;
  EXPECT_EQ(cuda::nm24_prefill_wgmma(dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.ldx = 128;  // < K
  EXPECT_EQ(cuda::nm24_prefill_wgmma(dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.ldx = 264;
  p.m = 0;
  EXPECT_EQ(cuda::nm24_prefill_wgmma(dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.m = 64;
  EXPECT_EQ(cuda::nm24_prefill_wgmma_tokens(dev.weights, p, nullptr, 100), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::nm24_prefill_wgmma_tokens(dev.weights, p, nullptr, 256), cudaErrorInvalidValue);
  const cudaError_t ok = cuda::nm24_prefill_wgmma(dev.weights, p, nullptr);
  EXPECT_EQ(ok, is_sm90() ? cudaSuccess : cudaErrorNotSupported);
  const cudaError_t ok192 = cuda::nm24_prefill_wgmma_tokens(dev.weights, p, nullptr, 192);
  EXPECT_EQ(ok192, is_sm90() ? cudaSuccess : cudaErrorNotSupported);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace sparsa::test

#else
#include <gtest/gtest.h>
TEST(GpuWgmma, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }
#endif  // SPARSA_WITH_CUDA
