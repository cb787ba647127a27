// GPU sparse GEMMs (src/cuda) against a double-precision CPU reference of the same masked
// weights: 2:4 and V:2:M, decode (m <= 16) and prefill paths, fp16 and bf16, ragged shapes.
// Skipped where no CUDA device is present (CTest label `gpu`).
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

#include "cuda/decode_tuning.h"
#include "gpu_sparse_util.h"
#include "sparsa/error.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

constexpr double kTolerance = 1e-2;

struct Case {
  int64_t rows, cols, m;
  ElemType type = ElemType::F16, y_type = ElemType::F32;
  int ctas = 0;  // decode: CTAs sharing the work (0 = auto)
};

std::string describe(const Case& c, const char* path) {
  return fmt::format("{} N={} K={} m={} {}->{} ctas={}", path, c.rows, c.cols, c.m,
                     type_name(c.type), type_name(c.y_type), c.ctas);
}

void expect_close(const DeviceRun& run, const std::vector<float>& ref) {
  EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
  EXPECT_TRUE(run.repeatable) << "second call differs";
  const double err = relative_error(run.y, ref);
  EXPECT_LE(err, kTolerance);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
}

enum class Path { Decode, Prefill, Auto };

// Puts the decode tuning switches (cuda/decode_tuning.h) back at the end of a test.
void check_nm24(const Case& c, Path path, uint64_t seed) {
  const char* name = path == Path::Decode ? "decode" : path == Path::Prefill ? "prefill" : "auto";
  SCOPED_TRACE(describe(c, name));
  const SparseWeights w = random_nm24(c.rows, c.cols, c.type, seed);
  const auto tiled = cuda::tile_nm24(w.values.data(), w.meta.data(), c.rows, c.cols, c.type);
  const auto dev = cuda::upload(tiled);
  const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
  const size_t ws = cuda::nm24_workspace_bytes(dev.weights, c.m, c.ctas);
  const DeviceRun run = run_on_device(x, c.rows, c.y_type, ws, c.ctas, [&](const auto& p) {
    if (path == Path::Decode) return cuda::nm24_decode(dev.weights, p, nullptr);
    if (path == Path::Prefill) return cuda::nm24_prefill(dev.weights, p, nullptr);
    return cuda::nm24_gemm(dev.weights, p, nullptr);
  });
  expect_close(run, reference_gemm(x, w));
}

void check_vnm(const Case& c, int v, int m, Path path, uint64_t seed) {
  const char* name = path == Path::Decode ? "decode" : path == Path::Prefill ? "prefill" : "auto";
  SCOPED_TRACE(describe(c, name) + fmt::format(" {}:2:{}", v, m));
  const SparseWeights w = random_vnm(c.rows, c.cols, v, m, c.type, seed);
  const auto tiled = cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), c.rows,
                                    c.cols, v, m, c.type);
  const auto dev = cuda::upload(tiled);
  const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
  const size_t ws = cuda::vnm_workspace_bytes(dev.weights, c.m, c.ctas);
  const DeviceRun run = run_on_device(x, c.rows, c.y_type, ws, c.ctas, [&](const auto& p) {
    if (path == Path::Decode) return cuda::vnm_decode(dev.weights, p, nullptr);
    if (path == Path::Prefill) return cuda::vnm_prefill(dev.weights, p, nullptr);
    return cuda::vnm_gemm(dev.weights, p, nullptr);
  });
  expect_close(run, reference_gemm(x, w));
}

TEST(GpuNm24, DecodeMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Case cases[] = {
      {128, 256, 1},
      {128, 256, 16},
      {256, 1024, 8},
      {130, 100, 3},
      {77, 513, 9},
      {1000, 2050, 16},
      {512, 4096, 1, ElemType::F16, ElemType::F32, 1},
      {512, 4096, 5, ElemType::F16, ElemType::F16, 3},
      {384, 3000, 12, ElemType::F16, ElemType::F32, 7},
      {200, 777, 2, ElemType::BF16, ElemType::BF16},
      {300, 1536, 16, ElemType::BF16, ElemType::F32, 2},
  };
  uint64_t seed = 100;
  for (const Case& c : cases) check_nm24(c, Path::Decode, seed += 10);
}

TEST(GpuNm24, PrefillMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Case cases[] = {
      {128, 256, 17},
      {256, 512, 128},
      {130, 100, 1},
      {77, 513, 300},
      {520, 1000, 129},
      {256, 4096, 64, ElemType::F16, ElemType::F16},
      {300, 2000, 200, ElemType::BF16, ElemType::BF16},
      {128, 300, 40, ElemType::BF16, ElemType::F32},
  };
  uint64_t seed = 200;
  for (const Case& c : cases) check_nm24(c, Path::Prefill, seed += 10);
}

TEST(GpuNm24, GemmPicksAPathForEveryM) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 300;
  for (int64_t m : {1, 16, 17, 70}) check_nm24({256, 640, m}, Path::Auto, seed += 10);
}

struct VnmPattern {
  int v, m;
};
constexpr VnmPattern kVnmPatterns[] = {{64, 8}, {128, 16}, {64, 5}, {16, 4}, {32, 10}, {128, 8}};

TEST(GpuVnm, DecodeMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Case cases[] = {
      {128, 512, 1},
      {200, 1000, 16},
      {77, 130, 7},
      {256, 4096, 9, ElemType::F16, ElemType::F16, 3},
      {300, 2100, 4, ElemType::BF16, ElemType::BF16},
  };
  uint64_t seed = 400;
  for (const VnmPattern& pat : kVnmPatterns)
    for (const Case& c : cases) check_vnm(c, pat.v, pat.m, Path::Decode, seed += 10);
}

// The decode path stages the dense X chunk (m rows x 64 M columns, 4 ring slots) in shared
// memory for m <= 8 when two CTAs still fit on an SM (4 warps: m * M <= 57; 1 warp, V = 16:
// m * M <= 165) and gathers from global memory otherwise, with 8-warp CTAs for V = 128 at
// m > 8: all three, with K ragged and the split fix-up forced through several CTA counts.
TEST(GpuVnm, DecodeStagedAndGatherPathsWithSplits) {
  SPARSA_SKIP_WITHOUT_GPU();
  const VnmPattern patterns[] = {{64, 16}, {64, 32}, {16, 64}, {128, 12}};
  const Case cases[] = {
      {256, 3000, 1},                                   // staged for every pattern
      {300, 2222, 3, ElemType::F16, ElemType::F32, 4},  // staged for 64:2:16, 128:2:12
      {192, 2500, 8, ElemType::F16, ElemType::F16, 2},
      {256, 4100, 9, ElemType::F16, ElemType::F32, 7},  // global gather (128:2:12: 8 warps)
      {130, 2049, 16, ElemType::BF16, ElemType::F32, 3},
      {384, 5000, 16, ElemType::F16, ElemType::BF16, 1},
      {320, 1800, 5, ElemType::BF16, ElemType::F16, 5},
  };
  uint64_t seed = 700;
  for (const VnmPattern& pat : patterns)
    for (const Case& c : cases) check_vnm(c, pat.v, pat.m, Path::Decode, seed += 10);
}

// Tall matrices on the register-gather path (m > 8): more row groups than CTAs fit at once, where
// the default plan switches from whole row groups to all-resident stream-K (v9), so row groups
// are split at ragged places; fp16 and bf16, 4-warp (64:2:8) and 8-warp (128:2:16) CTAs.
TEST(GpuVnm, DecodeGatherPathTallMatrices) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Case cases[] = {
      {17000, 1100, 16},  // 266 row groups of 64 (3 chunks each), 133 of 128 (2 chunks)
      {17411, 1300, 9, ElemType::BF16, ElemType::F16},
  };
  uint64_t seed = 1100;
  for (const VnmPattern& pat : {VnmPattern{64, 8}, VnmPattern{128, 16}})
    for (const Case& c : cases) check_vnm(c, pat.v, pat.m, Path::Decode, seed += 10);
}

// V:2:M at m = 9..16 with M = 8 (4- and 8-warp CTAs; 64:2:8 on 8 warps = two column sets per
// CTA) or M = 16 (8-warp CTAs) gathers X with 16-byte loads of whole blocks and byte permutes
// (v10), else with 2-byte loads: the settings of decode_tuning(), K ragged against 8 and M (the
// block K ends in is loaded element by element), K shorter than one chunk, N ragged (an odd
// number of 64-row column sets: 130 rows), forced splits, fp16 and bf16.
TEST(GpuVnm, DecodeWideAndNarrowGather) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const VnmPattern patterns[] = {{64, 8}, {128, 16}, {128, 8}};
  const Case cases[] = {
      {200, 1003, 16},
      {130, 517, 9, ElemType::BF16, ElemType::F32, 2},
      {64, 100, 12, ElemType::F16, ElemType::F16},
      {384, 2900, 16, ElemType::F16, ElemType::F32, 5},
      {256, 1030, 13, ElemType::BF16, ElemType::BF16, 3},
      {700, 4104, 16, ElemType::F16, ElemType::F16, 7},
  };
  uint64_t seed = 1300;
  const struct {
    bool wide, two_sets;
    const char* name;
  } settings[] = {{true, true, "wide gather, 64:2:8 on 8 warps (two column sets)"},
                  {true, false, "wide gather, 64:2:8 on 4 warps"},
                  {false, false, "2-byte gather"}};
  for (const auto& st : settings) {
    SCOPED_TRACE(st.name);
    cuda::DecodeTuning tuning = restore.was;
    tuning.wide_gather = st.wide;
    tuning.two_sets = st.two_sets;
    cuda::set_decode_tuning(tuning);
    for (const VnmPattern& pat : patterns)
      for (const Case& c : cases) check_vnm(c, pat.v, pat.m, Path::Decode, seed += 10);
  }
}

TEST(GpuVnm, PrefillMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Case cases[] = {
      {128, 512, 17},
      {200, 1000, 130},
      {77, 130, 33},
      {256, 2048, 64, ElemType::F16, ElemType::F16},
      {300, 1100, 100, ElemType::BF16, ElemType::BF16},
  };
  uint64_t seed = 500;
  for (const VnmPattern& pat : kVnmPatterns)
    for (const Case& c : cases) check_vnm(c, pat.v, pat.m, Path::Prefill, seed += 10);
}

// The prefill path stages the dense X slice of each stage in shared memory for BM <= 64 when two
// slots fit (M <= 25) and gathers with 2-byte global loads otherwise: both, ragged.
TEST(GpuVnm, PrefillStagedAndGatherPaths) {
  SPARSA_SKIP_WITHOUT_GPU();
  const VnmPattern patterns[] = {{64, 16}, {64, 32}, {16, 64}, {128, 12}, {128, 24}};
  const Case cases[] = {
      {256, 3000, 17},
      {192, 2500, 130, ElemType::F16, ElemType::F16},
      {130, 2049, 40, ElemType::BF16, ElemType::F32},
      {384, 1500, 257, ElemType::F16, ElemType::BF16},
  };
  uint64_t seed = 900;
  for (const VnmPattern& pat : patterns)
    for (const Case& c : cases) check_vnm(c, pat.v, pat.m, Path::Prefill, seed += 10);
}

TEST(GpuVnm, GemmPicksAPathForEveryM) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 600;
  for (int64_t m : {1, 16, 17, 70}) check_vnm({192, 900, m}, 64, 8, Path::Auto, seed += 10);
}

// Groups with fewer than two nonzeros may name one column twice in the canonical metadata; the
// tiling must still give the right product.
TEST(GpuNm24, RepeatedIndexWithAZeroIsRepaired) {
  SPARSA_SKIP_WITHOUT_GPU();
  SparseWeights w = random_nm24(128, 256, ElemType::F16, 7);
  const int64_t groups = 64, words = 8;
  for (int64_t r = 0; r < w.rows; r += 3) {
    for (int64_t g = r % 5; g < groups; g += 7) {
      const int i = static_cast<int>((r + g) % 4);
      uint32_t& word = w.meta[r * words + g / 8];
      word &= ~(0xfu << (4 * (g % 8)));
      word |= static_cast<uint32_t>(i | (i << 2)) << (4 * (g % 8));
      for (int k = 0; k < 4; ++k) w.dense[r * w.cols + g * 4 + k] = 0.0f;
      w.dense[r * w.cols + g * 4 + i] = from_bits(w.values[(r * groups + g) * 2], ElemType::F16);
      w.values[(r * groups + g) * 2 + 1] = 0;
    }
  }
  const auto dev =
      cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), 128, 256, ElemType::F16));
  const Activations x = random_activations(4, 256, ElemType::F16, 8);
  const DeviceRun run =
      run_on_device(x, 128, ElemType::F32, cuda::nm24_workspace_bytes(dev.weights, 4), 0,
                    [&](const auto& p) { return cuda::nm24_decode(dev.weights, p, nullptr); });
  expect_close(run, reference_gemm(x, w));
}

TEST(GpuNm24, TilingRejectsTwoNonzerosOnOneColumn) {
  SparseWeights w = random_nm24(16, 64, ElemType::F16, 9);
  w.meta[3 * 2 + 1] = (w.meta[3 * 2 + 1] & ~0xf0u) | (0x5u << 4);  // row 3, group 9: (1, 1)
  try {
    cuda::tile_nm24(w.values.data(), w.meta.data(), 16, 64, ElemType::F16);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("row 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("group 9"), std::string::npos) << msg;
    EXPECT_NE(msg.find("both kept values"), std::string::npos) << msg;
  }
}

TEST(GpuVnm, TilingRejectsUnsortedColumns) {
  SparseWeights w = random_vnm(64, 64, 64, 8, ElemType::F16, 11);
  std::swap(w.columns[2 * 4 + 0], w.columns[2 * 4 + 3]);  // row group 0, block 2
  try {
    cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), 64, 64, 64, 8, ElemType::F16);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("row group 0, block 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not ascending"), std::string::npos) << msg;
  }
}

TEST(GpuVnm, TilingRejectsUnsupportedV) {
  SparseWeights w = random_vnm(48, 64, 48, 8, ElemType::F16, 12);
  try {
    cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), 48, 64, 48, 8, ElemType::F16);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("V = 48"), std::string::npos) << e.what();
  }
}

TEST(GpuNm24, LaunchersRejectBadArguments) {
  SPARSA_SKIP_WITHOUT_GPU();
  const SparseWeights w = random_nm24(128, 1024, ElemType::F16, 13);
  const auto dev =
      cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), 128, 1024, ElemType::F16));
  cuda::DeviceBuffer x(64 * 1032 * 2), y(64 * 128 * 4);
  cuda::GemmProblem p;
  p.x = x.data();
  p.m = 4;
  p.ldx = 1028;  // not a multiple of 8
  p.y = y.data();
  p.ldy = 128;
  EXPECT_EQ(cuda::nm24_decode(dev.weights, p, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::nm24_prefill(dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.ldx = 1032;
  p.m = 17;  // too many tokens for the decode path
  EXPECT_EQ(cuda::nm24_decode(dev.weights, p, nullptr), cudaErrorInvalidValue);
  p.m = 4;
  p.ctas = 2;  // needs a workspace
  EXPECT_GT(cuda::nm24_workspace_bytes(dev.weights, 4, 2), 0u);
  EXPECT_EQ(cuda::nm24_decode(dev.weights, p, nullptr), cudaErrorInvalidValue);
  cudaGetLastError();
}

// One workspace shared by two matrices of different heights (as cuda::GemmContext does): the
// last CTA of a row group resets its counter but leaves partial sums behind, and those must never
// sit where the other matrix's counters are. Splits are forced so that both use the workspace.
TEST(GpuNm24, DecodeWorkspaceSharedByTwoMatrices) {
  SPARSA_SKIP_WITHOUT_GPU();
  using cuda::check_cuda;
  const int64_t cols = 1000, m = 5;
  const int64_t heights[2] = {200, 9000};  // 4 and 141 row groups of 64
  SparseWeights w[2];
  cuda::DeviceNm24 dev[2];
  size_t ws_bytes = 0;
  for (int i = 0; i < 2; ++i) {
    w[i] = random_nm24(heights[i], cols, ElemType::F16, 40 + i);
    dev[i] = cuda::upload(
        cuda::tile_nm24(w[i].values.data(), w[i].meta.data(), heights[i], cols, ElemType::F16));
    ws_bytes = std::max(ws_bytes, cuda::nm24_workspace_bytes(dev[i].weights, m, 64));
  }
  const Activations x = random_activations(m, cols, ElemType::F16, 42);
  cuda::DeviceBuffer dx(x.bits.size() * 2), dy(m * heights[1] * 4), ws(ws_bytes);
  dx.upload(x.bits.data(), x.bits.size() * 2);
  check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
  for (int call = 0; call < 4; ++call) {  // small, large, small, large
    const int i = call % 2;
    SCOPED_TRACE(fmt::format("call {} N={}", call, heights[i]));
    cuda::GemmProblem p;
    p.x = dx.data();
    p.m = m;
    p.ldx = x.ldx;
    p.y = dy.data();
    p.ldy = heights[i];
    p.workspace = ws.data();
    p.workspace_bytes = ws.bytes();
    p.ctas = 64;
    check_cuda(cudaMemset(dy.data(), 0xff, dy.bytes()), "poison y");
    check_cuda(cuda::nm24_decode(dev[i].weights, p, nullptr), "launch");
    check_cuda(cudaDeviceSynchronize(), "kernel");
    std::vector<float> y(m * heights[i]);
    dy.download(y.data(), y.size() * 4);
    const double err = relative_error(y, reference_gemm(x, w[i]));
    EXPECT_LE(err, kTolerance);
    EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
  }
}

// A chain of decode calls on one stream, each reading the previous call's fp16 output as its X
// (two ping-pong buffers, so a call also overwrites what the call before last read), 2:4 and
// V:2:M (4-warp and 8-warp CTAs) with forced splits on one shared workspace. Run one call at a
// time (synchronized, PDL off) every layer matches the CPU reference on its device input; run back
// to back with and without programmatic dependent launch, and replayed from a CUDA graph, the
// last two outputs equal the one-at-a-time chain bit for bit (a call that read its X, or wrote Y
// or the workspace, before the previous call finished would read NaN poison or stale data).
TEST(GpuDecode, ChainedCallsMatchOneAtATime) {
  SPARSA_SKIP_WITHOUT_GPU();
  using cuda::check_cuda;
  const int64_t dim = 1000, ld = 1008;  // N = K; rows of X and Y padded to a multiple of 8
  struct Layer {
    SparseWeights w;
    bool vnm;
    cuda::DeviceNm24 nm;
    cuda::DeviceVnm vn;
    int ctas;
  };
  const struct {
    int v, m, ctas;  // v = 0: 2:4
  } specs[] = {{0, 4, 0}, {64, 8, 5}, {128, 16, 3}, {0, 4, 7}, {64, 8, 0}, {128, 16, 2}};
  std::vector<Layer> layers;
  uint64_t seed = 1200;
  for (const auto& sp : specs) {
    Layer l;
    l.vnm = sp.v != 0;
    l.ctas = sp.ctas;
    l.w = l.vnm ? random_vnm(dim, dim, sp.v, sp.m, ElemType::F16, ++seed)
                : random_nm24(dim, dim, ElemType::F16, ++seed);
    // Scaled by 1/16 (exact) so that six layers stay well inside fp16.
    for (uint16_t& b : l.w.values) b = to_bits(from_bits(b, ElemType::F16) / 16, ElemType::F16);
    for (float& v : l.w.dense) v /= 16;
    if (l.vnm)
      l.vn = cuda::upload(cuda::tile_vnm(l.w.columns.data(), l.w.values.data(), l.w.meta.data(),
                                         dim, dim, sp.v, sp.m, ElemType::F16));
    else
      l.nm = cuda::upload(
          cuda::tile_nm24(l.w.values.data(), l.w.meta.data(), dim, dim, ElemType::F16));
    layers.push_back(std::move(l));
  }
  const TuningRestore restore;
  cudaStream_t stream;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  for (int64_t m : {1, 9, 16}) {
    SCOPED_TRACE(fmt::format("m={}", m));
    size_t ws_bytes = 16;
    for (const Layer& l : layers)
      ws_bytes = std::max(ws_bytes, l.vnm ? cuda::vnm_workspace_bytes(l.vn.weights, m, l.ctas)
                                          : cuda::nm24_workspace_bytes(l.nm.weights, m, l.ctas));
    const Activations x0 = random_activations(m, dim, ElemType::F16, ++seed);
    ASSERT_EQ(x0.ldx, ld);
    cuda::DeviceBuffer dx(m * ld * 2), buf[2] = {cuda::DeviceBuffer(m * ld * 2),
                                                 cuda::DeviceBuffer(m * ld * 2)};
    cuda::DeviceBuffer ws(ws_bytes);
    dx.upload(x0.bits.data(), m * ld * 2);
    check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
    check_cuda(cudaDeviceSynchronize(), "zero workspace");  // `stream` does not wait for it
    auto call = [&](size_t i, cudaStream_t s) {
      const Layer& l = layers[i];
      cuda::GemmProblem p;
      p.x = i == 0 ? dx.data() : buf[(i - 1) % 2].data();
      p.m = m;
      p.ldx = ld;
      p.y = buf[i % 2].data();
      p.ldy = ld;
      p.y_type = ElemType::F16;
      p.workspace = ws.data();
      p.workspace_bytes = ws.bytes();
      p.ctas = l.ctas;
      return l.vnm ? cuda::vnm_decode(l.vn.weights, p, s) : cuda::nm24_decode(l.nm.weights, p, s);
    };
    auto poison = [&] {
      for (auto& b : buf)
        check_cuda(cudaMemsetAsync(b.data(), 0xff, b.bytes(), stream), "poison y");
    };
    auto download = [&](size_t i) {
      std::vector<uint16_t> out(m * ld);
      buf[i % 2].download(out.data(), out.size() * 2);
      return out;
    };
    // One call at a time; each layer against the CPU reference on the input it was given.
    cuda::DecodeTuning tuning = restore.was;
    tuning.pdl = false;
    cuda::set_decode_tuning(tuning);
    poison();
    std::vector<std::vector<uint16_t>> want(layers.size());
    Activations in = x0;
    for (size_t i = 0; i < layers.size(); ++i) {
      SCOPED_TRACE(fmt::format("layer {}", i));
      check_cuda(call(i, stream), "launch");
      check_cuda(cudaStreamSynchronize(stream), "kernel");
      want[i] = download(i);
      std::vector<float> got(m * dim);
      for (int64_t t = 0; t < m; ++t)
        for (int64_t n = 0; n < dim; ++n)
          got[t * dim + n] = from_bits(want[i][t * ld + n], ElemType::F16);
      const double err = relative_error(got, reference_gemm(in, layers[i].w));
      EXPECT_LE(err, kTolerance);
      EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
      in.values = got;  // the next layer's input
    }
    const size_t last = layers.size() - 1;
    for (bool pdl : {false, true}) {
      tuning.pdl = pdl;
      cuda::set_decode_tuning(tuning);
      SCOPED_TRACE(pdl ? "PDL on" : "PDL off");
      poison();
      for (size_t i = 0; i < layers.size(); ++i) check_cuda(call(i, stream), "launch");
      check_cuda(cudaStreamSynchronize(stream), "back-to-back calls");
      EXPECT_TRUE(download(last) == want[last]) << "back to back: last output differs";
      EXPECT_TRUE(download(last - 1) == want[last - 1]) << "back to back: output before differs";
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
      for (size_t i = 0; i < layers.size(); ++i) check_cuda(call(i, stream), "captured launch");
      check_cuda(cudaStreamEndCapture(stream, &graph), "end capture");
      check_cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
      for (int replay = 0; replay < 2; ++replay) {
        poison();
        check_cuda(cudaGraphLaunch(exec, stream), "graph launch");
        check_cuda(cudaStreamSynchronize(stream), "graph replay");
        EXPECT_TRUE(download(last) == want[last]) << "graph replay " << replay;
        EXPECT_TRUE(download(last - 1) == want[last - 1]) << "graph replay " << replay;
      }
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    }
  }
  cudaStreamDestroy(stream);
}

// Thread-block clusters (v11): when the CTAs are a whole number s = 2..8 per row group, the
// decode kernels run as clusters of s CTAs and reduce the partial sums through distributed shared
// memory instead of the workspace. With CTA counts forced to groups x s (groups = rows padded to
// 128 / rows per CTA: 2:4 and V:2:M at m <= 8 64 rows, V = 16 16 rows, V = 32 32 rows, V:2:M at
// m > 8 with V >= 128 or 64:2:8 128 rows), ragged N, K and m, fp16 and bf16, every output type:
// with clusters on the launch counter moves and the result matches the CPU reference and, bit for
// bit, the workspace fix-up of the same split (clusters off; same summation order).
TEST(GpuDecode, ClusterFixupMatchesWorkspaceFixup) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  struct ClusterCase {
    int v, bm;  // v = 0: 2:4
    Case c;
    int rows_cta, s;
  };
  const ClusterCase cases[] = {
      {0, 0, {200, 1000, 1}, 64, 2},                                      // 4 groups, 4 chunks
      {0, 0, {200, 1000, 3, ElemType::F16, ElemType::F16}, 64, 4},        // one chunk per CTA
      {0, 0, {77, 2050, 9, ElemType::BF16, ElemType::F16}, 64, 8},        // 2 groups, 9 chunks
      {0, 0, {1000, 4096, 16, ElemType::F16, ElemType::BF16}, 64, 3},     // 16 groups
      {64, 8, {200, 3000, 1}, 64, 3},                                     // staged, 6 chunks
      {64, 8, {130, 4100, 16, ElemType::F16, ElemType::F32}, 128, 8},     // two column sets
      {64, 8, {300, 2000, 12, ElemType::BF16, ElemType::BF16}, 128, 2},   // 3 groups
      {128, 16, {256, 3000, 1, ElemType::F16, ElemType::F16}, 64, 3},     // staged, 3 chunks
      {128, 16, {300, 5000, 12, ElemType::BF16, ElemType::BF16}, 128, 5}, // wide, 5 chunks
      {128, 16, {130, 4097, 16, ElemType::F16, ElemType::F32}, 128, 4},   // 2 groups
      {16, 4, {100, 2000, 4, ElemType::F16, ElemType::F16}, 16, 8},       // 1-warp CTAs
      {32, 10, {77, 1500, 3, ElemType::BF16, ElemType::F32}, 32, 3},      // 2-warp CTAs
  };
  uint64_t seed = 1500;
  for (const ClusterCase& cc : cases) {
    Case c = cc.c;
    const int64_t groups = (c.rows + 127) / 128 * 128 / cc.rows_cta;
    c.ctas = static_cast<int>(groups * cc.s);
    SCOPED_TRACE(describe(c, "decode") + fmt::format(" V={} M={} s={}", cc.v, cc.bm, cc.s));
    seed += 10;
    const SparseWeights w = cc.v == 0 ? random_nm24(c.rows, c.cols, c.type, seed)
                                      : random_vnm(c.rows, c.cols, cc.v, cc.bm, c.type, seed);
    const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
    const std::vector<float> ref = reference_gemm(x, w);
    cuda::DeviceNm24 nm;
    cuda::DeviceVnm vn;
    size_t ws = 0;
    if (cc.v == 0) {
      nm = cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), c.rows, c.cols, c.type));
      ws = cuda::nm24_workspace_bytes(nm.weights, c.m, c.ctas);
    } else {
      vn = cuda::upload(cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), c.rows,
                                       c.cols, cc.v, cc.bm, c.type));
      ws = cuda::vnm_workspace_bytes(vn.weights, c.m, c.ctas);
    }
    std::vector<float> got[2];
    for (bool cluster : {true, false}) {
      SCOPED_TRACE(cluster ? "clusters" : "workspace fix-up");
      cuda::DecodeTuning tuning = restore.was;
      tuning.cluster = cluster;
      tuning.wide_gather = tuning.two_sets = true;  // the rows per CTA assumed above
      cuda::set_decode_tuning(tuning);
      const unsigned long long before = cuda::decode_cluster_launches();
      const DeviceRun run = run_on_device(x, c.rows, c.y_type, ws, c.ctas, [&](const auto& p) {
        return cc.v == 0 ? cuda::nm24_decode(nm.weights, p, nullptr)
                         : cuda::vnm_decode(vn.weights, p, nullptr);
      });
      const unsigned long long launches = cuda::decode_cluster_launches() - before;
      if (cluster) {
        EXPECT_GT(launches, 0u) << "no launch ran as clusters";
      } else {
        EXPECT_EQ(launches, 0u);
      }
      expect_close(run, ref);
      got[cluster ? 0 : 1] = run.y;
    }
    EXPECT_TRUE(got[0] == got[1]) << "cluster and workspace fix-ups differ";
  }
}

// cluster_shrink (v11e): 4096 rows = 64 row groups of 64 take whole splits of 4 CTAs (256) by
// default, and 64 clusters of 4 at 2 CTAs per SM do not fit at once on an H100, so at m <= 8 the
// launch drops to the largest s' whose clusters fit (fewer CTAs, units re-divided; m = 16 keeps
// the workspace fix-up). The m = 1 products run as clusters with shrinking on, and every product
// matches the reference either way.
TEST(GpuDecode, ClusterShrinkMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  uint64_t seed = 1900;
  for (bool shrink : {true, false}) {
    SCOPED_TRACE(shrink ? "shrink on" : "shrink off");
    cuda::DecodeTuning tuning = restore.was;
    tuning.cluster = true;
    tuning.cluster_shrink = shrink;
    tuning.ksplit = false;  // else the m = 1 products take K-split CTAs (session 8), no clusters
    cuda::set_decode_tuning(tuning);
    const unsigned long long before = cuda::decode_cluster_launches();
    check_nm24({4096, 1024, 1}, Path::Decode, seed += 10);
    check_nm24({4096, 1030, 16, ElemType::BF16, ElemType::F16}, Path::Decode, seed += 10);
    check_vnm({4096, 4096, 1, ElemType::F16, ElemType::F32}, 64, 8, Path::Decode, seed += 10);
    if (shrink) EXPECT_GT(cuda::decode_cluster_launches(), before) << "no launch ran as clusters";
  }
}

// cap_waves (v11): on a matrix where whole splits of two CTAs per row group would need more CTAs
// than fit at once (9000 rows = 142 row groups of 64 for 2:4; 264 resident CTAs on a 132-SM
// H100/H200) and every resident CTA gets >= 4 of the 1136 units, the default plan runs
// all-resident stream-K (row groups split at ragged places): both plans match the reference
// (64:2:8 at m = 1 has 4 chunks per group, too few units to cap: the same plan both ways).
TEST(GpuDecode, WaveCapPlanMatchesReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  uint64_t seed = 1700;
  for (bool cap : {true, false}) {
    SCOPED_TRACE(cap ? "cap on" : "cap off");
    cuda::DecodeTuning tuning = restore.was;
    tuning.cap_waves = cap;
    cuda::set_decode_tuning(tuning);
    check_nm24({9000, 1800, 1}, Path::Decode, seed += 10);
    check_nm24({9000, 1800, 16, ElemType::BF16, ElemType::F16}, Path::Decode, seed += 10);
    check_vnm({9000, 1800, 1}, 64, 8, Path::Decode, seed += 10);
  }
}

// The lean wide gather (v12): randomized ragged shapes at every m = 9..16 on each wide-gather
// kernel (64:2:8 on 8 warps = two column sets and on 4 warps, 128:2:16 and 128:2:8 on 8 warps), K a
// multiple of the 64 M-column chunk or ragged (the last chunk then takes the checked load), N
// ragged, the default plan or forced splits (row groups split at ragged places, several groups
// per CTA, so the lean cursors cross row groups), fp16/bf16 and every output type. The wide and
// the 2-byte gather both match the double reference, and give the same bits where they run the
// same rows per CTA (all but 64:2:8 on two column sets, which the 2-byte gather runs on 4 warps).
TEST(GpuDecode, LeanGatherRaggedShapesM9To16) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const struct {
    int v, m;
    bool two_sets;
  } kinds[] = {{64, 8, true}, {64, 8, false}, {128, 16, true}, {128, 8, true}};
  const int ctas_choices[] = {0, 0, 1, 2, 3, 5, 7};
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  std::mt19937_64 rng(2300);
  uint64_t seed = 2300;
  for (int round = 0; round < 2; ++round)
    for (int m = 9; m <= 16; ++m) {
      const auto& kind = kinds[(m + round) % 4];
      const int64_t chunk = 64 * kind.m;
      const int64_t rows = 1 + static_cast<int64_t>(rng() % 1400);
      const int64_t cols = rng() % 2 ? chunk * static_cast<int64_t>(1 + rng() % 6)
                                     : 50 + static_cast<int64_t>(rng() % 4000);
      const Case c{rows, cols, m, (m + round) % 2 ? ElemType::BF16 : ElemType::F16,
                   y_types[(m + round) % 3], ctas_choices[rng() % 7]};
      SCOPED_TRACE(describe(c, "decode") + fmt::format(" {}:2:{} two_sets={}", kind.v, kind.m,
                                                       kind.two_sets));
      const SparseWeights w = random_vnm(c.rows, c.cols, kind.v, kind.m, c.type, seed += 10);
      const auto tiled = cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), c.rows,
                                        c.cols, kind.v, kind.m, c.type);
      const auto dev = cuda::upload(tiled);
      const Activations x = random_activations(c.m, c.cols, c.type, seed + 1);
      const std::vector<float> ref = reference_gemm(x, w);
      std::vector<float> y[2];
      for (const bool wide : {true, false}) {
        SCOPED_TRACE(wide ? "wide (lean) gather" : "2-byte gather");
        cuda::DecodeTuning tuning = restore.was;
        tuning.wide_gather = wide;
        tuning.two_sets = kind.two_sets;
        cuda::set_decode_tuning(tuning);
        const size_t ws = cuda::vnm_workspace_bytes(dev.weights, c.m, c.ctas);
        const DeviceRun run = run_on_device(x, c.rows, c.y_type, ws, c.ctas, [&](const auto& p) {
          return cuda::vnm_decode(dev.weights, p, nullptr);
        });
        expect_close(run, ref);
        y[wide ? 1 : 0] = run.y;
      }
      ASSERT_EQ(y[0].size(), y[1].size());
      if (!(kind.v == 64 && kind.two_sets)) {
        EXPECT_EQ(std::memcmp(y[0].data(), y[1].data(), y[0].size() * sizeof(float)), 0)
            << "wide and 2-byte gathers differ";
      }
    }
}

}  // namespace
}  // namespace sparsa::test

#else  // no CUDA in this build

#include <gtest/gtest.h>
TEST(GpuSparseGemm, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }

#endif
