// The scalar reference kernels: gemm(..., Backend::Reference) for every format x dtype over many
// shapes (ragged included) against a double-precision dense product of the masked weights, and
// the shape errors of sparsa::gemm().
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "sparsa/error.h"
#include "sparsa/kernels.h"
#include "sparse_matrices.h"
#include "test_util.h"

namespace sparsa {
namespace {

constexpr DType kValueDTypes[] = {DType::F32, DType::F16, DType::BF16};

// Y[i, n] = sum_k X[i, k] * W[n, k] in double, from the dense weights as f32.
std::vector<float> dense_product(const std::vector<float>& x, const std::vector<float>& w,
                                 int64_t m, int64_t n, int64_t k) {
  std::vector<float> y(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t c = 0; c < k; ++c) acc += double(x[i * k + c]) * w[j * k + c];
      y[i * n + j] = static_cast<float>(acc);
    }
  return y;
}

using test::expect_error;

TEST(CpuReference, EveryFormatAndDtypeMatchesADoubleDenseProduct) {
  std::mt19937_64 rng(21);
  const std::vector<std::pair<int64_t, int64_t>> fixed = {{1, 1},    {1, 77},  {13, 1},  {64, 64},
                                                          {33, 130}, {70, 29}, {16, 256}};
  int checked = 0;
  for (const auto& row : all_formats())
    for (DType dtype : kValueDTypes) {
      auto shapes = fixed;
      for (int s = 0; s < 4; ++s)
        shapes.push_back({int64_t(1 + rng() % 80), int64_t(1 + rng() % 200)});
      for (const auto& [n, k] : shapes) {
        const Pattern pattern = test::random_pattern_for(row.kind, rng);
        const Tensor dense = test::random_sparse_tensor("w", dtype, {n, k}, pattern, rng());
        const PackedMatrix packed = pack(dense, row.kind, pattern);
        const auto weights = dense.to_f32();
        ASSERT_EQ(unpack(packed).to_f32(), weights);  // the masked dense matrix, exactly
        for (int64_t m : {1, 3, 17, 64}) {
          SCOPED_TRACE(fmt::format("format {} dtype {} M={} N={} K={} pattern {}:{}:{} block {}x{}",
                                   row.name, dtype_name(dtype), m, n, k, pattern.v, pattern.n,
                                   pattern.m, pattern.block_rows, pattern.block_cols));
          const auto x = test::random_values(m * k, rng());
          std::vector<float> y(m * n, NAN);
          gemm(x, m, packed, y, Backend::Reference);
          EXPECT_LE(test::relative_error(y, dense_product(x, weights, m, n, k)), 1e-5);
          ++checked;
        }
      }
    }
  EXPECT_EQ(checked, 6 * 3 * 11 * 4);
}

TEST(CpuReference, KernelsHonourLeadingDimensions) {
  // Called through the table with ldx > K and ldy > N: padding columns of Y stay untouched.
  std::mt19937_64 rng(5);
  const int64_t m = 5, n = 19, k = 45, ldx = 50, ldy = 23;
  for (const auto& row : all_formats()) {
    const Pattern pattern = test::random_pattern_for(row.kind, rng);
    const Tensor dense = test::random_sparse_tensor("w", DType::BF16, {n, k}, pattern, rng());
    const PackedMatrix packed = pack(dense, row.kind, pattern);
    const auto x_strided = test::random_values(m * ldx, rng());
    std::vector<float> x(m * k);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t c = 0; c < k; ++c) x[i * k + c] = x_strided[i * ldx + c];
    std::vector<float> y_strided(m * ldy, 42.0f);
    row.gemm_reference({x_strided.data(), m, ldx, &packed, y_strided.data(), ldy});
    std::vector<float> y(m * n);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < ldy; ++j) {
        if (j < n)
          y[i * n + j] = y_strided[i * ldy + j];
        else
          EXPECT_EQ(y_strided[i * ldy + j], 42.0f) << row.name;
      }
    EXPECT_LE(test::relative_error(y, dense_product(x, dense.to_f32(), m, n, k)), 1e-5) << row.name;
  }
}

TEST(CpuReference, GemmRejectsSpansTooSmallForTheShapes) {
  const Tensor dense =
      test::random_sparse_tensor("w", DType::F32, {6, 8}, test::nm_pattern(2, 4), 3);
  const PackedMatrix packed = pack(dense, FormatKind::NM, test::nm_pattern(2, 4));
  std::vector<float> x(3 * 8 - 1, 1.0f), y(3 * 6, 0.0f);
  expect_error([&] { gemm(x, 3, packed, y, Backend::Reference); },
               {"packed nm matrix [6, 8]", "x holds 23 floats", "X[3, 8] needs 24"});
  x.resize(3 * 8);
  y.resize(3 * 6 - 1);
  expect_error([&] { gemm(x, 3, packed, y, Backend::Reference); },
               {"packed nm matrix [6, 8]", "y holds 17 floats", "Y[3, 6] needs 18"});
  expect_error([&] { gemm(x, -1, packed, y, Backend::Reference); }, {"m = -1", "negative"});
  // Larger spans than needed are fine, and m = 0 writes nothing.
  y.assign(3 * 6 + 5, -7.0f);
  x.resize(3 * 8 + 9, 0.5f);
  gemm(x, 3, packed, y, Backend::Reference);
  EXPECT_EQ(y.back(), -7.0f);
  gemm(x, 0, packed, std::span<float>(), Backend::Reference);
}

TEST(CpuReference, GemmRejectsAPackedMatrixWithMissingArrays) {
  const Tensor dense =
      test::random_sparse_tensor("w", DType::F16, {4, 8}, test::unstructured_pattern(0.5), 4);
  PackedMatrix packed = pack(dense, FormatKind::CSR, Pattern{});
  packed.array("values").bytes.resize(2);
  std::vector<float> x(8, 1.0f), y(4);
  expect_error([&] { gemm(x, 1, packed, y, Backend::Reference); },
               {"packed csr matrix [4, 8]", "'values'", "bytes"});
}

TEST(CpuReference, SimdBackendWithoutAKernelSaysSo) {
  // Until a format's SIMD kernel is in the table, Backend::Simd is an error naming the format;
  // once it is, it must agree with the reference.
  std::mt19937_64 rng(8);
  for (const auto& row : all_formats()) {
    const Pattern pattern = test::random_pattern_for(row.kind, rng);
    const Tensor dense = test::random_sparse_tensor("w", DType::F32, {9, 40}, pattern, rng());
    const PackedMatrix packed = pack(dense, row.kind, pattern);
    const auto x = test::random_values(3 * 40, rng());
    std::vector<float> y(3 * 9), y_ref(3 * 9);
    gemm(x, 3, packed, y_ref, Backend::Reference);
    if (row.gemm_simd == nullptr) {
      expect_error([&] { gemm(x, 3, packed, y, Backend::Simd); },
                   {"no SIMD kernel for format " + std::string(row.name)});
    } else {
      gemm(x, 3, packed, y, Backend::Simd);
      EXPECT_LE(test::relative_error(y, y_ref), 1e-5) << row.name;
    }
  }
}

}  // namespace
}  // namespace sparsa
