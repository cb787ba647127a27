// The Highway SIMD kernels (src/cpu/simd) against their scalar reference twins: every format x
// value dtype x many shapes (M from 1 to 130, N and K ragged against lanes, M, V and blocks),
// on every SIMD target this CPU supports (hwy::SetSupportedTargetsForTest), for both kernel
// drivers (gather below M = 8, transposed from there on).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/kernels.h"
#include "sparsa/pattern.h"
#include "sparsa/tensor.h"
#include "test_util.h"

namespace sparsa {
namespace {

// ---- random matrices that satisfy each pattern -------------------------------------------------
// Dense f32 [rows, cols] with the pruned entries exactly 0 and the kept ones random nonzeros.
using Mask = std::vector<uint8_t>;

std::vector<float> apply_mask(const Mask& keep, uint64_t seed) {
  std::vector<float> values = test::random_values(keep.size(), seed);
  for (size_t i = 0; i < keep.size(); ++i)
    if (!keep[i]) values[i] = 0.0f;
  return values;
}

// Each entry kept with probability `density`; every 5th row empty, to cover empty rows.
Mask unstructured_mask(int64_t rows, int64_t cols, double density, std::mt19937_64& rng) {
  Mask keep(rows * cols);
  std::bernoulli_distribution coin(density);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) keep[r * cols + c] = r % 5 != 4 && coin(rng);
  return keep;
}

// `count` distinct values from [0, range) in random order.
std::vector<int64_t> subset(int64_t range, int64_t count, std::mt19937_64& rng) {
  std::vector<int64_t> all(range);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(std::min(range, count));
  return all;
}

// At most n kept in each group of m columns (sometimes fewer, to exercise filler slots).
Mask nm_mask(int64_t rows, int64_t cols, int n, int m, std::mt19937_64& rng) {
  Mask keep(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g * m < cols; ++g) {
      const int64_t width = std::min<int64_t>(m, cols - g * m);
      const int64_t count = std::uniform_int_distribution<int64_t>(0, 3)(rng) == 0
                                ? std::uniform_int_distribution<int64_t>(0, n)(rng)
                                : n;
      for (int64_t c : subset(width, count, rng)) keep[r * cols + g * m + c] = 1;
    }
  return keep;
}

// In each v x m block the same <= 4 columns, and <= 2 of them per row.
Mask vnm_mask(int64_t rows, int64_t cols, int v, int m, std::mt19937_64& rng) {
  Mask keep(rows * cols);
  for (int64_t r0 = 0; r0 < rows; r0 += v)
    for (int64_t c0 = 0; c0 < cols; c0 += m) {
      const auto columns = subset(std::min<int64_t>(m, cols - c0), 4, rng);
      for (int64_t r = r0; r < std::min<int64_t>(rows, r0 + v); ++r)
        for (int64_t j : subset(static_cast<int64_t>(columns.size()), 2, rng))
          if (std::uniform_int_distribution<int>(0, 7)(rng) != 0)
            keep[r * cols + c0 + columns[j]] = 1;
    }
  return keep;
}

// Whole bh x bw blocks kept with probability `density`.
Mask block_mask(int64_t rows, int64_t cols, int bh, int bw, double density, std::mt19937_64& rng) {
  Mask keep(rows * cols);
  std::bernoulli_distribution coin(density);
  for (int64_t r0 = 0; r0 < rows; r0 += bh)
    for (int64_t c0 = 0; c0 < cols; c0 += bw) {
      if (!coin(rng)) continue;
      for (int64_t r = r0; r < std::min<int64_t>(rows, r0 + bh); ++r)
        for (int64_t c = c0; c < std::min<int64_t>(cols, c0 + bw); ++c) keep[r * cols + c] = 1;
    }
  return keep;
}

struct Config {
  std::string label;
  FormatKind format;
  Pattern pattern;
  double density = 1.0;  // unstructured and block masks
};

Pattern make_pattern(PatternKind kind, int n = 0, int m = 0, int v = 0, int bh = 0, int bw = 0) {
  Pattern p;
  p.kind = kind;
  p.n = n;
  p.m = m;
  p.v = v;
  p.block_rows = bh;
  p.block_cols = bw;
  return p;
}

std::vector<Config> configs() {
  const Pattern unstructured = make_pattern(PatternKind::Unstructured);
  return {
      {"dense", FormatKind::Dense, make_pattern(PatternKind::Dense)},
      {"csr-90%", FormatKind::CSR, unstructured, 0.1},
      {"csr-50%", FormatKind::CSR, unstructured, 0.5},
      {"bitmap-90%", FormatKind::Bitmap, unstructured, 0.1},
      {"bitmap-30%", FormatKind::Bitmap, unstructured, 0.7},  // compress path for dense words
      {"nm-2:4", FormatKind::NM, make_pattern(PatternKind::NM, 2, 4)},
      {"nm-1:4", FormatKind::NM, make_pattern(PatternKind::NM, 1, 4)},
      {"nm-2:8", FormatKind::NM, make_pattern(PatternKind::NM, 2, 8)},
      {"nm-3:7", FormatKind::NM, make_pattern(PatternKind::NM, 3, 7)},
      {"nm-5:32", FormatKind::NM, make_pattern(PatternKind::NM, 5, 32)},
      {"vnm-64:2:8", FormatKind::VNM, make_pattern(PatternKind::VNM, 2, 8, 64)},
      {"vnm-16:2:4", FormatKind::VNM, make_pattern(PatternKind::VNM, 2, 4, 16)},
      {"vnm-3:2:5", FormatKind::VNM, make_pattern(PatternKind::VNM, 2, 5, 3)},
      {"bsr-4x4", FormatKind::BSR, make_pattern(PatternKind::Block, 0, 0, 0, 4, 4), 0.3},
      {"bsr-3x5", FormatKind::BSR, make_pattern(PatternKind::Block, 0, 0, 0, 3, 5), 0.4},
      {"bsr-1x16", FormatKind::BSR, make_pattern(PatternKind::Block, 0, 0, 0, 1, 16), 0.4},
      {"bsr-8x8", FormatKind::BSR, make_pattern(PatternKind::Block, 0, 0, 0, 8, 8), 0.5},
  };
}

std::vector<float> random_weights(const Config& config, int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Mask keep;
  switch (config.format) {
    case FormatKind::Dense:
      keep.assign(rows * cols, 1);
      break;
    case FormatKind::CSR:
    case FormatKind::Bitmap:
      keep = unstructured_mask(rows, cols, config.density, rng);
      break;
    case FormatKind::NM:
      keep = nm_mask(rows, cols, config.pattern.n, config.pattern.m, rng);
      break;
    case FormatKind::VNM:
      keep = vnm_mask(rows, cols, config.pattern.v, config.pattern.m, rng);
      break;
    case FormatKind::BSR:
      keep = block_mask(rows, cols, config.pattern.block_rows, config.pattern.block_cols,
                        config.density, rng);
      break;
  }
  return apply_mask(keep, seed + 1);
}

struct Shape {
  int64_t m, n, k;
};

// Every M of {1, 2, 5, 16, 33, 130}; N and K ragged against 4/8/16 lanes, M = 4..32, V and the
// block shapes; large K only with small M or N so the scalar reference stays quick.
const Shape kShapes[] = {
    {1, 1, 1},
    {1, 7, 63},
    {1, 257, 1000},
    {1, 100, 4100},
    {2, 63, 100},
    {2, 1, 257},
    {5, 100, 257},
    {5, 7, 1},
    {5, 130, 64},
    {16, 63, 100},
    {16, 257, 7},
    {33, 100, 63},
    {33, 7, 257},
    {130, 33, 100},
    {130, 1, 63},
    {3, 65, 1000},
    // K above the dense kernel's 1024-column block with M > 4 (accumulation across K blocks),
    // and M above its 64-row block.
    {5, 33, 2100},
    {70, 20, 1500},
};

const char* dtype_label(DType dtype) {
  return dtype == DType::F32 ? "f32" : dtype == DType::F16 ? "f16" : "bf16";
}

// Runs gemm(Simd) against gemm(Reference) on every supported SIMD target.
void check_all_targets(const Config& config, DType dtype, const Shape& shape, uint64_t seed) {
  const std::vector<float> dense = random_weights(config, shape.n, shape.k, seed);
  const Tensor tensor = Tensor::from_f32("w", dtype, {shape.n, shape.k}, dense);
  const PackedMatrix packed = pack(tensor, config.format, config.pattern);
  const std::vector<float> x = test::random_values(shape.m * shape.k, seed + 7);
  std::vector<float> expected(shape.m * shape.n, -1.0f);
  gemm(x, shape.m, packed, expected, Backend::Reference);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    std::vector<float> got(shape.m * shape.n, 12345.0f);  // every entry must be overwritten
    gemm(x, shape.m, packed, got, Backend::Simd);
    const double error = test::relative_error(got, expected);
    EXPECT_LE(error, 1e-5) << config.label << " " << dtype_label(dtype) << " M=" << shape.m
                           << " N=" << shape.n << " K=" << shape.k << " on "
                           << hwy::TargetName(target);
  }
  hwy::SetSupportedTargetsForTest(0);
}

class SimdGemm : public ::testing::TestWithParam<Config> {};

TEST_P(SimdGemm, MatchesReferenceOnEveryTargetDtypeAndShape) {
  const Config& config = GetParam();
  uint64_t seed = std::hash<std::string>{}(config.label);
  for (DType dtype : {DType::F32, DType::F16, DType::BF16})
    for (const Shape& shape : kShapes) check_all_targets(config, dtype, shape, ++seed);
}

INSTANTIATE_TEST_SUITE_P(AllFormats, SimdGemm, ::testing::ValuesIn(configs()),
                         [](const auto& info) {
                           std::string name = info.param.label;
                           for (char& c : name)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Strided X and Y (ldx > K, ldy > N), through the table's kernel pointers directly: the entries
// between rows must be left alone.
TEST(SimdGemmStrides, StridedXAndYMatchReference) {
  for (const Config& config : configs()) {
    const int64_t m = 11, n = 37, k = 70, ldx = 75, ldy = 41;
    const std::vector<float> dense = random_weights(config, n, k, 99);
    const PackedMatrix packed =
        pack(Tensor::from_f32("w", DType::F32, {n, k}, dense), config.format, config.pattern);
    const std::vector<float> x = test::random_values(m * ldx, 5);
    std::vector<float> expected(m * ldy, 7.0f), got(m * ldy, 7.0f);
    const FormatTraits& traits = format_traits(config.format);
    ASSERT_NE(traits.gemm_simd, nullptr) << config.label;
    traits.gemm_reference({x.data(), m, ldx, &packed, expected.data(), ldy});
    traits.gemm_simd({x.data(), m, ldx, &packed, got.data(), ldy});
    EXPECT_LE(test::relative_error(got, expected), 1e-5) << config.label;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = n; j < ldy; ++j) ASSERT_EQ(got[i * ldy + j], 7.0f) << config.label;
  }
}

// The SIMD kernels check array sizes themselves (they can be called without sparsa::gemm()).
TEST(SimdGemmErrors, TruncatedValuesArrayIsRejectedWithItsName) {
  const Config config{"csr", FormatKind::CSR, make_pattern(PatternKind::Unstructured), 0.5};
  PackedMatrix packed =
      pack(Tensor::from_f32("w", DType::F32, {16, 40}, random_weights(config, 16, 40, 3)),
           FormatKind::CSR, config.pattern);
  packed.array("values").bytes.resize(8);
  const std::vector<float> x = test::random_values(40, 1);
  std::vector<float> y(16);
  try {
    format_traits(FormatKind::CSR).gemm_simd({x.data(), 1, 40, &packed, y.data(), 16});
    FAIL() << "expected sparsa::Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("csr matrix [16, 40]"), std::string::npos) << message;
    EXPECT_NE(message.find("'values' holds 2 items"), std::string::npos) << message;
  }
}

TEST(SimdGemmErrors, BadNmPatternIsRejectedWithThePattern) {
  const Config config{"nm", FormatKind::NM, make_pattern(PatternKind::NM, 2, 4)};
  PackedMatrix packed =
      pack(Tensor::from_f32("w", DType::F32, {8, 16}, random_weights(config, 8, 16, 4)),
           FormatKind::NM, config.pattern);
  packed.pattern.n = 4;  // N = M
  const std::vector<float> x = test::random_values(16, 1);
  std::vector<float> y(8);
  try {
    format_traits(FormatKind::NM).gemm_simd({x.data(), 1, 16, &packed, y.data(), 8});
    FAIL() << "expected sparsa::Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("nm matrix [8, 16]"), std::string::npos) << message;
    EXPECT_NE(message.find("pattern 4:4"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace sparsa
