// Compressed decode GEMMs (src/cuda/compressed_decode.cu, bitmap_decode.cu) against a
// double-precision CPU product of the dequantised weights (the codec's own decode, rounded to
// fp16 like the packed values): {2:4, 64:2:8, 128:2:16} x {int8, int4 (sym/asym, groups
// 32/64/128), codebook4 (per channel and per tensor)} and bitmap x {fp16 values, int8 / int4
// sym/asym (g128)}
// at several densities, ragged N and K, m = 1..16, fp32 and fp16 outputs, NaN-poisoned y.
// The host tiling is also checked without a GPU: its host decode must give the codec's values
// bit for bit.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "cuda/compressed_internal.h"
#include "gpu_compressed_util.h"
#include "gpu_sparse_util.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_compressed.h"
#include "sparsa/cuda_kernels.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparse_matrices.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

constexpr double kTolerance = 1e-2;

const char* kCodecs[] = {"int8",          "int8:g32:asym", "int8:g64",  "int4",
                         "int4:g64:asym", "int4:g32",      "codebook4", "codebook4:tensor"};

using Shape = CompressedShape;

FormatKind format_of(const Pattern& pattern) {
  return pattern.kind == PatternKind::NM    ? FormatKind::NM
         : pattern.kind == PatternKind::VNM ? FormatKind::VNM
                                            : FormatKind::Bitmap;
}

CompressedMatrix make(const Pattern& pattern, const char* spec, int64_t n, int64_t k,
                      uint64_t seed) {
  return random_compressed(pattern, format_of(pattern), spec, n, k, seed, 20);
}

// A GPU tiling and the dense weights it stands for: spec "f16" is an uncompressed bitmap
// (tile_bitmap), anything else a codec (tile_compressed of the compressed matrix).
struct Case {
  cuda::CompressedTiled tiled;
  std::vector<float> dense;
};

// chunk_steps: tile_compressed's (0 = its rule by shape).
Case make_case(const Pattern& pattern, const char* spec, int64_t n, int64_t k, uint64_t seed,
               int chunk_steps = 0) {
  if (std::string(spec) == "f16") {
    const Tensor w = random_sparse_tensor("w", DType::F16, {n, k}, pattern, seed);
    const PackedMatrix pk = pack(w, FormatKind::Bitmap, pattern);
    return {cuda::tile_bitmap(pk), unpack(pk).to_f32()};
  }
  const CompressedMatrix c = make(pattern, spec, n, k, seed);
  return {cuda::tile_compressed(c, chunk_steps), dequantised(c)};
}

void check(const Pattern& pattern, const char* spec, Shape s, int64_t m, ElemType y_type, int ctas,
           uint64_t seed, int chunk_steps = 0) {
  SCOPED_TRACE(fmt::format("{} {} N={} K={} m={} y={} ctas={} chunk_steps={}", pattern.to_string(),
                           spec, s.n, s.k, m, y_type == ElemType::F32 ? "f32" : "f16", ctas,
                           chunk_steps));
  const Case c = make_case(pattern, spec, s.n, s.k, seed, chunk_steps);
  expect_decode_matches(c.tiled, c.dense, s, m, y_type, ctas, seed, kTolerance);
}

const Shape kShapes[] = {{128, 256}, {100, 300}, {257, 1000}, {384, 2049}, {64, 4100}};

TEST(GpuCompressed, Nm24MatchesDequantisedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(41);
  uint64_t seed = 1000;
  const Pattern p = nm_pattern(2, 4);
  for (const char* spec : kCodecs) {
    for (const Shape& s : kShapes) {
      const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
      check(p, spec, s, m, rng() % 2 ? ElemType::F32 : ElemType::F16, 0, seed += 10);
    }
    check(p, spec, {512, 3000}, 16, ElemType::F32, 7, seed += 10);  // shared row groups
    check(p, spec, {256, 1024}, 1, ElemType::F16, 1, seed += 10);   // one CTA, every unit
  }
}

TEST(GpuCompressed, VnmMatchesDequantisedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(43);
  uint64_t seed = 2000;
  for (const Pattern& p : {vnm_pattern(64, 8), vnm_pattern(128, 16), vnm_pattern(64, 5)})
    for (const char* spec : kCodecs) {
      for (const Shape& s : kShapes) {
        const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
        check(p, spec, s, m, rng() % 2 ? ElemType::F32 : ElemType::F16, 0, seed += 10);
      }
      check(p, spec, {320, 2500}, 9, ElemType::F32, 5, seed += 10);
    }
}

// 16-step chunks where the default is 8 (V:2:M with every code: the tiling's choice for 4-bit
// codes from 8192 rows up; 2:4 with int8 codes), forced here on small, ragged matrices, with
// split row groups, one CTA and every m, against the reference.
TEST(GpuCompressed, SixteenStepChunksMatchDequantisedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(53);
  uint64_t seed = 7000;
  for (const Pattern& p :
       {vnm_pattern(64, 8), vnm_pattern(128, 16), vnm_pattern(64, 5), nm_pattern(2, 4)})
    for (const char* spec : kCodecs) {
      if (p.kind == PatternKind::NM && std::string(spec).rfind("int8", 0) != 0) continue;
      for (const Shape& s : kShapes) {
        const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
        check(p, spec, s, m, rng() % 2 ? ElemType::F32 : ElemType::F16, 0, seed += 10, 16);
      }
      check(p, spec, {320, 2500}, 9, ElemType::F32, 5, seed += 10, 16);   // split row groups
      check(p, spec, {192, 4100}, 1, ElemType::F16, 1, seed += 10, 16);   // one CTA, every unit
      check(p, spec, {130, 9000}, 16, ElemType::F16, 3, seed += 10, 16);  // long K, m = 16
    }
  for (int64_t m = 1; m <= 16; ++m) {
    check(vnm_pattern(64, 8), m % 2 ? "codebook4" : "int4:g64:asym", {200, 1700}, m,
          m % 3 ? ElemType::F16 : ElemType::F32, 0, seed += 10, 16);
    check(m % 2 ? vnm_pattern(128, 16) : nm_pattern(2, 4), "int8", {136, 1500}, m,
          m % 3 ? ElemType::F32 : ElemType::F16, 0, seed += 10, 16);
  }
}

const char* kBitmapSpecs[] = {"f16", "int8", "int8:asym", "int4", "int4:asym"};

TEST(GpuCompressed, BitmapMatchesDequantisedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(47);
  uint64_t seed = 5000;
  // 50% (the case), sparse (90% pruned) and nearly dense (10% pruned: the largest slots).
  for (double sparsity : {0.5, 0.9, 0.1})
    for (const char* spec : kBitmapSpecs) {
      const Pattern p = unstructured_pattern(sparsity);
      for (const Shape& s : kShapes) {
        const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
        check(p, spec, s, m, rng() % 2 ? ElemType::F32 : ElemType::F16, 0, seed += 10);
      }
      check(p, spec, {512, 3000}, 16, ElemType::F32, 7, seed += 10);  // shared row groups
      check(p, spec, {256, 1100}, 1, ElemType::F16, 1, seed += 10);   // one CTA, every unit
      check(p, spec, {300, 777}, 9, ElemType::F16, 5, seed += 10);
    }
}

TEST(GpuCompressed, EveryTokenCount) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 3000;
  for (int64_t m = 1; m <= 16; ++m) {
    check(nm_pattern(2, 4), "codebook4", {200, 700}, m, ElemType::F32, 0, seed += 10);
    check(nm_pattern(2, 4), "int4:g32:asym", {136, 1500}, m, ElemType::F16, 3, seed += 10);
    check(vnm_pattern(64, 8), "int4", {200, 700}, m, ElemType::F16, 0, seed += 10);
    check(unstructured_pattern(0.5), "f16", {200, 700}, m, ElemType::F32, 0, seed += 10);
    check(unstructured_pattern(0.5), "int8", {130, 900}, m, ElemType::F16, 4, seed += 10);
  }
}

// The 2:4 codebook4 kernel variants (through the shared-memory table for 0, 8 or 16 of 16
// k-steps) against the same reference: ragged shapes, m = 1 and m on both sides of 8, shared
// row groups, both output types, per-channel and per-tensor codebooks.
TEST(GpuCompressed, Nm24VariantsMatchDequantisedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  const int saved_table = cuda::detail::codebook_table_steps();
  const Pattern p = nm_pattern(2, 4);
  uint64_t seed = 7000;
  for (int steps : {0, 8, 16}) {
    SCOPED_TRACE(fmt::format("codebook4 table steps {}", steps));
    cuda::detail::set_codebook_table_steps(steps);
    ASSERT_EQ(cuda::detail::codebook_table_steps(), steps);
    for (const char* spec : {"codebook4", "codebook4:tensor"}) {
      check(p, spec, {100, 300}, 1, ElemType::F32, 0, seed += 10);
      check(p, spec, {257, 1000}, 1, ElemType::F16, 0, seed += 10);
      check(p, spec, {384, 2049}, 5, ElemType::F32, 0, seed += 10);
      check(p, spec, {200, 1500}, 12, ElemType::F16, 0, seed += 10);
      check(p, spec, {512, 3000}, 1, ElemType::F32, 7, seed += 10);  // shared row groups
      check(p, spec, {300, 4100}, 1, ElemType::F16, 3, seed += 10);
    }
  }
  cuda::detail::set_codebook_table_steps(saved_table);
}

// The 2:4 loop variants of session 5 (0: v4's loop; 1, the default: lean per-chunk work —
// incremental ring stages, 32-bit counters, X copies from per-thread pointers with the last chunk
// zero-filled past K, int8 at m <= 8 on a 3-stage ring) against the same reference for every
// codec: ragged K (a single partial chunk, partial last chunks of 1 and 4 columns), m on both
// sides of 8 (one and two token tiles; X rows spread over several copy passes), split row groups,
// one CTA, both output types.
TEST(GpuCompressed, Nm24LoopVariantsMatchDequantisedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  const int saved = cuda::detail::compressed_variant();
  const Pattern p = nm_pattern(2, 4);
  uint64_t seed = 9000;
  for (int variant : {0, 1, 16}) {  // 16: wide CTAs (codebook4 / int4; int8 runs the lean loop)
    SCOPED_TRACE(fmt::format("loop variant {}", variant));
    cuda::detail::set_compressed_variant(variant);
    ASSERT_EQ(cuda::detail::compressed_variant(), variant);
    for (const char* spec : kCodecs) {
      check(p, spec, {100, 300}, 1, ElemType::F32, 0, seed += 10);
      check(p, spec, {257, 1000}, 3, ElemType::F16, 0, seed += 10);
      check(p, spec, {384, 2049}, 9, ElemType::F32, 0, seed += 10);
      check(p, spec, {200, 1540}, 5, ElemType::F16, 0, seed += 10);
      check(p, spec, {512, 3000}, 1, ElemType::F32, 7, seed += 10);  // shared row groups
      check(p, spec, {300, 4100}, 16, ElemType::F16, 3, seed += 10);
      check(p, spec, {256, 2048}, 8, ElemType::F32, 1, seed += 10);  // one CTA, every unit
    }
  }
  cuda::detail::set_compressed_variant(saved);
}

// Session 6 run 3: variant 7 (the tagged fix-up: split CTAs publish tagged partials, the group's
// first CTA sums them after its loop) against the double reference over random ragged shapes, m
// = 1..8 (and m = 12 and int8 groups of 64, which fall back to the lean kernel), forced CTA counts
// that split row groups over 2..7 CTAs (a CTA that both publishes for one group and sums another
// included), both output types; every product bit-identical to the counter protocol's (variant 1:
// the same additions in the same order), and a second call on the same workspace identical (no tag
// left).
TEST(GpuCompressed, Nm24TaggedFixup) {
  SPARSA_SKIP_WITHOUT_GPU();
  const int saved = cuda::detail::compressed_variant();
  const Pattern p = nm_pattern(2, 4);
  std::mt19937_64 rng(61);
  uint64_t seed = 9500;
  const int kCtas[] = {0, 1, 2, 3, 5, 7, 13};
  for (const char* spec : {"int8", "codebook4", "codebook4:tensor", "int8:g64"}) {
    for (int trial = 0; trial < 6; ++trial) {
      const Shape s{60 + static_cast<int64_t>(rng() % 700),
                    100 + static_cast<int64_t>(rng() % 5000)};
      const int64_t m = trial == 5 ? 12 : 1 + static_cast<int64_t>(rng() % 8);
      const int ctas = trial == 0 ? 3 : kCtas[rng() % 7];
      const ElemType y_type = rng() % 2 ? ElemType::F32 : ElemType::F16;
      SCOPED_TRACE(fmt::format("{} N={} K={} m={} ctas={} y={}", spec, s.n, s.k, m, ctas,
                               y_type == ElemType::F32 ? "f32" : "f16"));
      const Case c = make_case(p, spec, s.n, s.k, seed += 10);
      const auto dev = cuda::upload(c.tiled);
      const Activations x = random_activations(m, s.k, ElemType::F16, seed + 1);
      const std::vector<float> ref = reference_dense(x, c.dense, s.n);
      std::vector<float> y1;
      for (int variant : {1, 7}) {
        SCOPED_TRACE(fmt::format("variant {}", variant));
        const std::vector<float> y =
            decode_under_variant(dev.weights, x, s.n, y_type, ctas, variant, ref, kTolerance);
        if (variant == 1) {
          y1 = y;
        } else {
          EXPECT_TRUE(std::memcmp(y.data(), y1.data(), y1.size() * 4) == 0)
              << "not the counter protocol's bits";
        }
      }
    }
  }
  cuda::detail::set_compressed_variant(saved);
}

// Session 7, second helper: variant 16 (wide CTAs: one CTA of 16 warps per SM over pairs of row
// groups, the stream-K split over (pair, K chunk) units; codebook4 and int4, int8 the lean loop)
// against the double reference over random ragged shapes — odd row-group counts, whose last pair
// has no second half, and pairs split over several CTAs — m = 1..16, forced CTA counts, both
// output types, a second call identical. The plan is checked too: the wide kernels' workspace
// holds partials of 256 rows per CTA slot, so for the same forced CTA count it is larger than the
// default's (and equal for int8, which keeps the default plan).
TEST(GpuCompressed, Nm24WideCtasMatchDequantisedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  const int saved = cuda::detail::compressed_variant();
  const Pattern p = nm_pattern(2, 4);
  std::mt19937_64 rng(67);
  uint64_t seed = 19000;
  const int kCtas[] = {0, 1, 2, 3, 5, 7, 13};
  for (const char* spec :
       {"codebook4", "codebook4:tensor", "int4", "int4:g64:asym", "int4:g32", "int8"}) {
    {
      const Case c = make_case(p, spec, 300, 1000, seed += 10);
      const auto dev = cuda::upload(c.tiled);
      cuda::detail::set_compressed_variant(1);
      const size_t ws1 = cuda::compressed_workspace_bytes(dev.weights, 1, 5);
      cuda::detail::set_compressed_variant(16);
      ASSERT_EQ(cuda::detail::compressed_variant(), 16);
      const size_t ws16 = cuda::compressed_workspace_bytes(dev.weights, 1, 5);
      if (std::string(spec) == "int8") {
        EXPECT_EQ(ws16, ws1) << spec;
      } else {
        EXPECT_GT(ws16, ws1) << spec << ": the wide plan is not taken";
      }
    }
    cuda::detail::set_compressed_variant(16);
    for (int trial = 0; trial < 7; ++trial) {
      const Shape s{60 + static_cast<int64_t>(rng() % 900),
                    100 + static_cast<int64_t>(rng() % 5000)};
      const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
      const int ctas = trial == 0 ? 3 : kCtas[rng() % 7];
      check(p, spec, s, m, rng() % 2 ? ElemType::F32 : ElemType::F16, ctas, seed += 10);
    }
    check(p, spec, {300, 2100}, 1, ElemType::F32, 5, seed += 10);   // 3 groups: half a last pair
    check(p, spec, {640, 4100}, 8, ElemType::F16, 7, seed += 10);   // 5 groups, pairs split
    check(p, spec, {129, 1000}, 16, ElemType::F16, 2, seed += 10);  // 2 groups, 129 rows
  }
  cuda::detail::set_compressed_variant(16);
  for (int64_t m = 1; m <= 16; ++m)
    check(p, m % 2 ? "codebook4" : "int4", {200 + 37 * m, 700 + 50 * m}, m,
          m % 3 ? ElemType::F32 : ElemType::F16, static_cast<int>(m % 4), seed += 10);
  cuda::detail::set_compressed_variant(saved);
}

// The timeline twin (compressed_decode_timeline, the benchmark's SPARSA_COMPRESSED_TIMELINE) of
// the default, of variant 7 and of variant 16 (wide CTAs, codebook4; int8 the default's twin): one
// word block per CTA, each CTA's clock stamps in program order, the units adding up to the
// matrix's, flags consistent, its product the reference's; no timeline for the cases without a twin
// (m > 8, int8 groups of 64).
TEST(GpuCompressed, Nm24TimelineStampsInOrder) {
  SPARSA_SKIP_WITHOUT_GPU();
  using cuda::check_cuda;
  constexpr int kW = cuda::detail::kTimelineWords;
  const int saved = cuda::detail::compressed_variant();
  uint64_t seed = 9900;
  for (const char* spec : {"int8", "codebook4", "int8:g64"}) {
    const Shape s{700, 3000};
    const Case c = make_case(nm_pattern(2, 4), spec, s.n, s.k, seed += 10);
    const auto dev = cuda::upload(c.tiled);
    const int64_t groups = c.tiled.rows_padded / 128;
    for (int variant : {1, 7, 16})
      for (int ctas : {0, 5})
        for (int64_t m : {int64_t{1}, int64_t{6}, int64_t{9}}) {
          SCOPED_TRACE(fmt::format("{} variant {} ctas {} m {}", spec, variant, ctas, m));
          cuda::detail::set_compressed_variant(variant);
          const Activations x = random_activations(m, s.k, ElemType::F16, seed + m);
          cuda::DeviceBuffer dx(x.bits.size() * 2), dy(m * s.n * 2),
              ws(cuda::compressed_workspace_bytes(dev.weights, m, ctas));
          dx.upload(x.bits.data(), x.bits.size() * 2);
          check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
          cuda::GemmProblem pr;
          pr.x = dx.data();
          pr.m = m;
          pr.ldx = x.ldx;
          pr.y = dy.data();
          pr.ldy = s.n;
          pr.y_type = ElemType::F16;
          pr.workspace = ws.data();
          pr.workspace_bytes = ws.bytes();
          pr.ctas = ctas;
          float event_us = -1;
          const std::vector<unsigned long long> tl = cuda::detail::compressed_decode_timeline(
              dev.weights, pr, nullptr, &event_us, &dev.weights);
          std::vector<uint16_t> yb(m * s.n);
          dy.download(yb.data(), yb.size() * 2);
          std::vector<float> y(yb.size());
          for (size_t i = 0; i < y.size(); ++i) y[i] = f32_from_f16(yb[i]);
          const double err = relative_error(y, reference_dense(x, c.dense, s.n));
          EXPECT_LE(err, kTolerance);
          EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
          EXPECT_GT(event_us, 0.0f);
          const bool twin = std::string(spec) != "int8:g64";
          if (m > 8) {  // no twin at m > 8: the plain kernel ran
            EXPECT_TRUE(tl.empty());
            continue;
          }
          ASSERT_EQ(tl.size() % kW, 0u);
          const size_t n_ctas = tl.size() / kW;
          if (ctas > 0) {
            EXPECT_EQ(n_ctas, static_cast<size_t>(ctas));
          }
          unsigned long long sum_units = 0;
          for (size_t b = 0; b < n_ctas; ++b) {
            const unsigned long long* w = tl.data() + b * kW;
            if (!twin) {
              EXPECT_EQ(w[0], 0u) << "a timeline where no twin runs";
              continue;
            }
            SCOPED_TRACE(fmt::format("CTA {}", b));
            EXPECT_GT(w[0], 0u);
            EXPECT_LE(w[0], w[7]);
            // clock64 words 8 + stamp: entry, first chunk, last chunk, MMAs, flush, exit in order
            const std::pair<int, int> order[] = {{0, 1}, {1, 4}, {4, 5}, {5, 6}, {6, 7}};
            for (const auto& [a, b2] : order) EXPECT_LE(w[8 + a], w[8 + b2]) << a << " " << b2;
            if (w[20] > 0) {
              EXPECT_LE(w[9], w[10]);
              EXPECT_LE(w[10], w[11]);
              EXPECT_LE(w[11], w[12]);
            }
            EXPECT_LE(w[19], w[15] - w[8]) << "waits longer than the CTA";
            EXPECT_FALSE((w[18] & 1) && (w[18] & 2)) << "a whole group summed";
            EXPECT_LT(w[16], 1024u) << "SM id";
            sum_units += w[17];
          }
          if (twin) {  // variant 16 (wide CTAs, codebook4): units of pairs of row groups
            const bool wide = variant == 16 && std::string(spec) == "codebook4";
            const int64_t units = (wide ? (groups + 1) / 2 : groups) * c.tiled.kchunks;
            EXPECT_EQ(sum_units, static_cast<unsigned long long>(units));
          }
        }
  }
  cuda::detail::set_compressed_variant(saved);
}

// No GPU needed: decoding the tiling on the host gives the codec's dequantised fp16 values.
// One workspace shared by two matrices of different heights: partial sums left by one call
// must never sit where the other matrix's counters are (splits forced).
// Also across kernels: a 2:4 int4 matrix and a bitmap one on the same workspace.
TEST(GpuCompressed, WorkspaceSharedByTwoMatrices) {
  SPARSA_SKIP_WITHOUT_GPU();
  using cuda::check_cuda;
  const int64_t k = 1000, m = 3;
  const int64_t heights[2] = {200, 9000};
  const Pattern patterns[3][2] = {{nm_pattern(2, 4), nm_pattern(2, 4)},
                                  {unstructured_pattern(0.5), nm_pattern(2, 4)},
                                  {unstructured_pattern(0.5), unstructured_pattern(0.3)}};
  const char* specs[3][2] = {{"int4", "int4"}, {"f16", "int4"}, {"int8:asym", "f16"}};
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(fmt::format("{} {} + {} {}", patterns[variant][0].to_string(), specs[variant][0],
                             patterns[variant][1].to_string(), specs[variant][1]));
    std::vector<float> dense[2];
    std::vector<cuda::DeviceCompressed> dev;
    size_t ws_bytes = 0;
    for (int i = 0; i < 2; ++i) {
      Case c = make_case(patterns[variant][i], specs[variant][i], heights[i], k, 50 + i);
      dense[i] = std::move(c.dense);
      dev.push_back(cuda::upload(c.tiled));
      ws_bytes = std::max(ws_bytes, cuda::compressed_workspace_bytes(dev[i].weights, m, 64));
    }
    const Activations x = random_activations(m, k, ElemType::F16, 52);
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
      check_cuda(cuda::compressed_decode(dev[i].weights, p, nullptr), "launch");
      check_cuda(cudaDeviceSynchronize(), "kernel");
      std::vector<float> y(m * heights[i]);
      dy.download(y.data(), y.size() * 4);
      const double err = relative_error(y, reference_dense(x, dense[i], heights[i]));
      EXPECT_LE(err, kTolerance);
      EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
    }
  }
}

TEST(GpuCompressed, TilingDecodesToTheCodecValues) {
  uint64_t seed = 4000;
  for (const Pattern& p : {nm_pattern(2, 4), vnm_pattern(64, 8), vnm_pattern(128, 5)})
    for (const char* spec : kCodecs)
      for (const Shape& s : {Shape{130, 300}, Shape{16, 37}, Shape{64, 1030}})
        for (int steps : {0, 16}) {  // V:2:M and 2:4 int8: both chunk lengths
          const bool int8 = std::string(spec).rfind("int8", 0) == 0;
          if (steps == 16 && p.kind != PatternKind::VNM && !int8) continue;  // 2:4 4-bit: 16 anyway
          SCOPED_TRACE(
              fmt::format("{} {} N={} K={} chunk_steps={}", p.to_string(), spec, s.n, s.k, steps));
          const CompressedMatrix c = make(p, spec, s.n, s.k, seed += 10);
          const auto tiled = cuda::tile_compressed(c, steps);
          if (steps != 0) EXPECT_EQ(tiled.ksteps, steps);
          const auto want = dequantised(c);
          expect_tiling_decodes_to(tiled, want, s);
          EXPECT_EQ(static_cast<int64_t>(tiled.tiles.size()),
                    tiled.rows_padded / 16 * tiled.kchunks * tiled.slot_bytes());
        }
}

TEST(GpuCompressed, BitmapTilingDecodesToTheValues) {
  uint64_t seed = 6000;
  for (double sparsity : {0.5, 0.9, 0.0})
    for (const char* spec : kBitmapSpecs)
      for (const Shape& s : {Shape{130, 300}, Shape{16, 37}, Shape{64, 1030}}) {
        SCOPED_TRACE(fmt::format("{} {} N={} K={}", sparsity, spec, s.n, s.k));
        const Case c = make_case(unstructured_pattern(sparsity), spec, s.n, s.k, seed += 10);
        expect_tiling_decodes_to(c.tiled, c.dense, s);
        EXPECT_EQ(c.tiled.offsets.size(),
                  static_cast<size_t>(c.tiled.rows_padded / 16 * c.tiled.kchunks + 1));
        EXPECT_EQ(int64_t{c.tiled.offsets.back()} * 16, static_cast<int64_t>(c.tiled.tiles.size()));
      }
}

TEST(GpuCompressed, TilingRejectsWhatNoKernelRuns) {
  const Tensor dense = random_sparse_tensor("w", DType::F16, {32, 64}, nm_pattern(2, 4), 5);
  const PackedMatrix nm = pack(dense, FormatKind::NM, nm_pattern(2, 4));
  expect_error([&] { cuda::tile_compressed(compress(nm, CodecParams::parse("codebook8"))); },
               {"nm", "[32, 64]", "int8, int4 or codebook4"});
  expect_error([&] { cuda::tile_compressed(compress(nm, CodecParams::parse("lossless"))); },
               {"[32, 64]", "int8, int4 or codebook4"});
  const Tensor unstructured =
      random_sparse_tensor("w", DType::F16, {32, 64}, unstructured_pattern(0.5), 6);
  const PackedMatrix bm = pack(unstructured, FormatKind::Bitmap, unstructured_pattern(0.5));
  // Bitmap + codebook4 and groups of 32 / 64 run since session 5 (tests/gpu_bitmap_codec_test.cc).
  expect_error([&] { cuda::tile_compressed(compress(bm, CodecParams::parse("codebook8"))); },
               {"bitmap", "[32, 64]", "int8, int4 or codebook4 codes"});
  const Tensor bf = random_sparse_tensor("w", DType::BF16, {32, 64}, unstructured_pattern(0.5), 8);
  expect_error([&] { cuda::tile_bitmap(pack(bf, FormatKind::Bitmap, unstructured_pattern(0.5))); },
               {"bitmap", "[32, 64]", "f16 values"});
  expect_error([&] { cuda::tile_bitmap(nm); }, {"nm", "[32, 64]", "not a bitmap"});
  const PackedMatrix csr = pack(unstructured, FormatKind::CSR, unstructured_pattern(0.5));
  expect_error([&] { cuda::tile_compressed(compress(csr, CodecParams::parse("int8"))); },
               {"csr", "[32, 64]", "nm 2:4, vnm V:2:M or bitmap"});
  const Tensor v16 = random_sparse_tensor("w", DType::F16, {32, 64}, vnm_pattern(16, 8), 7);
  const PackedMatrix vnm = pack(v16, FormatKind::VNM, vnm_pattern(16, 8));
  expect_error([&] { cuda::tile_compressed(compress(vnm, CodecParams::parse("int8"))); },
               {"[32, 64]", "V = 16", "64 or 128"});
  // Chunk lengths no kernel takes: 8 for 2:4 with 4-bit codes, 12.
  const Tensor v64 = random_sparse_tensor("w", DType::F16, {64, 256}, vnm_pattern(64, 8), 9);
  const PackedMatrix vnm64 = pack(v64, FormatKind::VNM, vnm_pattern(64, 8));
  expect_error([&] { cuda::tile_compressed(compress(nm, CodecParams::parse("int4")), 8); },
               {"[32, 64]", "chunks of 8 k-steps", "take 16)"});
  expect_error([&] { cuda::tile_compressed(compress(vnm64, CodecParams::parse("codebook4")), 12); },
               {"[64, 256]", "chunks of 12 k-steps", "take 8 or 16"});
  expect_error([&] { cuda::tile_compressed(compress(bm, CodecParams::parse("int8")), 16); },
               {"bitmap", "[32, 64]", "8 k-steps, not 16"});
}

TEST(GpuCompressed, ChunkLengthByMatrixSize) {
  using cuda::CodeType;
  EXPECT_EQ(cuda::compressed_chunk_steps(true, CodeType::Int4, 8192, 8), 16);
  EXPECT_EQ(cuda::compressed_chunk_steps(true, CodeType::Codebook4, 28672, 16), 16);
  EXPECT_EQ(cuda::compressed_chunk_steps(true, CodeType::Codebook4, 4096, 8), 8);
  EXPECT_EQ(cuda::compressed_chunk_steps(true, CodeType::Int4, 8191, 8), 8);
  EXPECT_EQ(cuda::compressed_chunk_steps(true, CodeType::Int8, 28672, 16), 16);
  EXPECT_EQ(cuda::compressed_chunk_steps(true, CodeType::Int8, 4096, 8), 16);
  EXPECT_EQ(cuda::compressed_chunk_steps(true, CodeType::Int8, 4096, 5), 16);
  EXPECT_EQ(cuda::compressed_chunk_steps(true, CodeType::Int8, 4096, 16), 8);
  EXPECT_EQ(cuda::compressed_chunk_steps(false, CodeType::Int4, 64, 4), 16);
  EXPECT_EQ(cuda::compressed_chunk_steps(false, CodeType::Int8, 28672, 4), 8);
  EXPECT_EQ(cuda::compressed_chunk_steps(false, CodeType::Codebook4, 28672, 4), 16);
}

// v12 reading compressed 2:4 codes itself (compressed_prefill_ssc, session 19) against v12 on
// the device expansion of the same codes (expand_nm24, then the persistent v12 on fragments):
// the same fp16 fragments through the same wgmmas in the same order, so Y must match bit for
// bit; and sampled outputs against the double product of the dequantised weights. 2:4 x every
// codec of kCodecs, N not a multiple of 128 (300, 1000) or of 8 (1004: no TMA stores), K ragged
// (1000, 2049), m past a tile (300, 700), fp16 and fp32 Y, and more cluster tiles than resident
// clusters (4096 x 512, m = 2100). Refused: V:2:M codes, int8 in 16-step chunks, bf16 Y.
TEST(GpuCompressed, PrefillReadingCodesMatchesTheExpansion) {
  SPARSA_SKIP_WITHOUT_GPU();
  if (!cuda::compressed_prefill_ssc_supported()) GTEST_SKIP() << "v12 needs an sm_90a device";
  struct PrefillCase {
    int64_t n, k, m;
    ElemType y_type;
  };
  const PrefillCase cases[] = {{300, 1000, 700, ElemType::F16},
                               {1004, 2049, 300, ElemType::F16},
                               {1000, 1000, 700, ElemType::F32},
                               {4096, 512, 2100, ElemType::F16}};
  const Pattern p24 = Pattern::parse("2:4");
  uint64_t seed = 9900;
  for (const PrefillCase& pc : cases)
    for (const char* spec : kCodecs) {
      if (pc.n == 4096 && std::string(spec) != "int4" && std::string(spec) != "codebook4") continue;
      SCOPED_TRACE(fmt::format("{} N={} K={} m={} y={}", spec, pc.n, pc.k, pc.m,
                               pc.y_type == ElemType::F32 ? "f32" : "f16"));
      const Case c = make_case(p24, spec, pc.n, pc.k, ++seed);
      const cuda::DeviceCompressed dev = cuda::upload(c.tiled);
      const Activations x = random_activations(pc.m, pc.k, ElemType::F16, seed + 7);
      const size_t ws = cuda::compressed_prefill_ssc_workspace_bytes();
      const DeviceRun codes = run_on_device(x, pc.n, pc.y_type, ws, 0, [&](const cuda::GemmProblem& p) {
        return cuda::compressed_prefill_ssc(dev.weights, p, nullptr);
      });
      cuda::DeviceBuffer scratch(cuda::compressed_expanded_bytes(dev.weights));
      const DeviceRun expanded = run_on_device(x, pc.n, pc.y_type, ws, 0, [&](const cuda::GemmProblem& p) {
        cuda::Nm24Weights e;
        const cudaError_t s = cuda::expand_nm24(dev.weights, scratch.data(), scratch.bytes(), &e, nullptr);
        return s != cudaSuccess ? s
                                : cuda::nm24_prefill_wgmma_ssc(e, p, nullptr, 2, -1, true,
                                                               cuda::Nm24SscA::Fragments);
      });
      EXPECT_TRUE(codes.padding_intact);
      EXPECT_TRUE(codes.repeatable);
      ASSERT_EQ(codes.y.size(), expanded.y.size());
      EXPECT_EQ(differing_outputs(codes.y, expanded.y), 0) << "outputs differing from v12 on the expansion";
      // Sampled outputs against the double product of the dequantised weights.
      EXPECT_LE(sampled_product_error(x, c.dense, pc.n, pc.k, codes.y, seed), 1e-2);
    }
  // Refusals.
  const Case vnm = make_case(Pattern::parse("64:2:8"), "int4", 128, 512, 1);
  const Case steps16 = make_case(p24, "int8", 128, 512, 2, 16);  // int8 in 16-step chunks
  const Case ok = make_case(p24, "int4", 128, 512, 3);
  const Activations x = random_activations(600, 512, ElemType::F16, 4);
  for (const auto* t : {&vnm.tiled, &steps16.tiled, &ok.tiled}) {
    const cuda::DeviceCompressed d = cuda::upload(*t);
    const ElemType y_type = t == &ok.tiled ? ElemType::BF16 : ElemType::F16;
    run_on_device(x, 128, y_type, cuda::compressed_prefill_ssc_workspace_bytes(), 0,
                  [&](const cuda::GemmProblem& p) {
                    EXPECT_EQ(cuda::compressed_prefill_ssc(d.weights, p, nullptr), cudaErrorInvalidValue);
                    return cudaSuccess;
                  });
  }
}

TEST(GpuCompressed, LauncherRejectsBadArguments) {
  SPARSA_SKIP_WITHOUT_GPU();
  for (const char* spec : {"int4", "f16"}) {
    SCOPED_TRACE(spec);
    const Pattern pattern =
        std::string(spec) == "f16" ? unstructured_pattern(0.5) : nm_pattern(2, 4);
    const auto dev = cuda::upload(make_case(pattern, spec, 128, 256, 9).tiled);
    cuda::DeviceBuffer x(16 * 256 * 2), y(17 * 128 * 4),
        ws(cuda::compressed_workspace_bytes(dev.weights, 16));
    cuda::GemmProblem p;
    p.x = x.data();
    p.ldx = 256;
    p.y = y.data();
    p.ldy = 128;
    p.workspace = ws.data();
    p.workspace_bytes = ws.bytes();
    p.m = 17;
    EXPECT_EQ(cuda::compressed_decode(dev.weights, p, nullptr), cudaErrorInvalidValue);
    p.m = 4;
    p.y_type = ElemType::BF16;
    EXPECT_EQ(cuda::compressed_decode(dev.weights, p, nullptr), cudaErrorInvalidValue);
    p.y_type = ElemType::F32;
    p.ldx = 250;
    EXPECT_EQ(cuda::compressed_decode(dev.weights, p, nullptr), cudaErrorInvalidValue);
    p.ldx = 256;
    p.workspace_bytes = 8;
    EXPECT_EQ(cuda::compressed_decode(dev.weights, p, nullptr), cudaErrorInvalidValue);
  }
}

}  // namespace
}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
