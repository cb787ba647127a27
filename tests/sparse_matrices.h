// Random sparse matrices that satisfy a format's pattern, for the format and kernel tests:
// random N:M keep sets, V:N:M masks, block masks and unstructured masks over random nonzero
// values (test::random_values), in any float weight dtype.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "sparsa/format.h"
#include "sparsa/pattern.h"
#include "sparsa/tensor.h"
#include "test_util.h"

namespace sparsa::test {

inline Pattern nm_pattern(int n, int m) {
  Pattern p;
  p.kind = PatternKind::NM;
  p.n = n;
  p.m = m;
  return p;
}

inline Pattern vnm_pattern(int v, int m) {
  Pattern p;
  p.kind = PatternKind::VNM;
  p.v = v;
  p.n = 2;
  p.m = m;
  return p;
}

inline Pattern block_pattern(int rows, int cols, double sparsity = 0.5) {
  Pattern p;
  p.kind = PatternKind::Block;
  p.block_rows = rows;
  p.block_cols = cols;
  p.sparsity = sparsity;
  return p;
}

inline Pattern unstructured_pattern(double sparsity) {
  Pattern p;
  p.kind = PatternKind::Unstructured;
  p.sparsity = sparsity;
  return p;
}

// `count` distinct values from [0, range), random order.
inline std::vector<int64_t> random_subset(int64_t range, int64_t count, std::mt19937_64& rng) {
  std::vector<int64_t> all(range);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(std::min(range, count));
  return all;
}

// A 0/1 mask [rows, cols] that satisfies `pattern` (and is a plausible one for it): N:M keeps
// 0..N random columns per group (mostly N), V:N:M picks up to 4 columns per V x M block and
// 0..2 of them per row, block keeps random blocks, anything else keeps each entry with
// probability 1 - sparsity.
inline std::vector<uint8_t> random_mask(const Pattern& pattern, int64_t rows, int64_t cols,
                                        uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> mask(rows * cols, 0);
  auto coin = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  switch (pattern.kind) {
    case PatternKind::NM:
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c0 = 0; c0 < cols; c0 += pattern.m) {
          const int64_t width = std::min<int64_t>(pattern.m, cols - c0);
          const int64_t keep = coin(0.7) ? pattern.n : int64_t(rng() % (pattern.n + 1));
          for (int64_t o : random_subset(width, keep, rng)) mask[r * cols + c0 + o] = 1;
        }
      break;
    case PatternKind::VNM:
      for (int64_t r0 = 0; r0 < rows; r0 += pattern.v)
        for (int64_t c0 = 0; c0 < cols; c0 += pattern.m) {
          const int64_t width = std::min<int64_t>(pattern.m, cols - c0);
          const auto four = random_subset(width, coin(0.8) ? 4 : int64_t(rng() % 5), rng);
          for (int64_t r = r0; r < std::min<int64_t>(rows, r0 + pattern.v); ++r) {
            const int64_t keep = coin(0.7) ? 2 : int64_t(rng() % 3);
            for (int64_t k : random_subset(four.size(), keep, rng))
              mask[r * cols + c0 + four[k]] = 1;
          }
        }
      break;
    case PatternKind::Block:
      for (int64_t r0 = 0; r0 < rows; r0 += pattern.block_rows)
        for (int64_t c0 = 0; c0 < cols; c0 += pattern.block_cols) {
          if (!coin(0.5)) continue;
          for (int64_t r = r0; r < std::min<int64_t>(rows, r0 + pattern.block_rows); ++r)
            for (int64_t c = c0; c < std::min<int64_t>(cols, c0 + pattern.block_cols); ++c)
              mask[r * cols + c] = coin(0.9);  // kept blocks may hold a few zeros
        }
      break;
    default:
      for (auto& bit : mask) bit = coin(1.0 - pattern.sparsity);
      break;
  }
  // Never an all-zero matrix: keep one entry the pattern always allows.
  if (rows * cols > 0 && std::count(mask.begin(), mask.end(), 1) == 0) mask[0] = 1;
  return mask;
}

// Random nonzero values on a random mask for `pattern`, stored in `dtype`.
inline Tensor random_sparse_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                   const Pattern& pattern, uint64_t seed) {
  const int64_t cols = shape.empty() ? 1 : shape.back();
  int64_t count = 1;
  for (auto d : shape) count *= d;
  const int64_t rows = cols == 0 ? 0 : count / cols;
  const auto mask = random_mask(pattern, rows, cols, seed);
  auto values = random_values(count, seed ^ 0x9e3779b97f4a7c15ull);
  for (int64_t i = 0; i < count; ++i)
    if (!mask[i]) values[i] = 0.0f;
  return Tensor::from_f32(name, dtype, std::move(shape), values);
}

// A pattern the given format can pack, with random parameters where it has them.
inline Pattern random_pattern_for(FormatKind format, std::mt19937_64& rng) {
  switch (format) {
    case FormatKind::NM: {
      static const int kNM[][2] = {{2, 4}, {1, 4},  {1, 2},  {3, 4},   {2, 8},  {4, 8},
                                   {1, 3}, {8, 16}, {3, 10}, {16, 32}, {5, 32}, {2, 5}};
      const auto& nm = kNM[rng() % std::size(kNM)];
      return nm_pattern(nm[0], nm[1]);
    }
    case FormatKind::VNM: {
      static const int kV[] = {1, 2, 3, 16, 32};
      static const int kM[] = {4, 5, 8, 16, 32};
      return vnm_pattern(kV[rng() % std::size(kV)], kM[rng() % std::size(kM)]);
    }
    case FormatKind::BSR: {
      static const int kB[][2] = {{1, 1}, {2, 2}, {4, 4}, {3, 5}, {8, 1}, {1, 16}, {16, 16}};
      const auto& b = kB[rng() % std::size(kB)];
      return block_pattern(b[0], b[1]);
    }
    default: {
      static const double kSparsity[] = {0.0, 0.3, 0.7, 0.95};
      return unstructured_pattern(kSparsity[rng() % std::size(kSparsity)]);
    }
  }
}

}  // namespace sparsa::test
