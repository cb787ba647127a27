// Shared pieces of the mask builders (src/prune/mask_*.cc), one function per pattern family.
//
// The tie rule, everywhere: entries are ranked by (score descending, index ascending), so of two
// equal scores the lower index is kept and the higher index is pruned first. Masks are therefore
// a pure function of the scores.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "sparsa/pattern.h"

namespace sparsa::detail {

// Scores must be rows*cols long and free of NaN (NaN has no rank); throws sparsa::Error naming
// `what` and the first bad entry.
void check_scores(std::span<const float> scores, int64_t rows, int64_t cols, std::string_view what);

// Throws sparsa::Error unless the pattern is one Pattern::parse could return.
void check_pattern(const Pattern& pattern);

// Number pruned for a fraction of `count` items: nearest integer, halves away from zero
// (std::llround), clamped to [0, count].
int64_t pruned_count(double sparsity, int64_t count);

// Keep-flags for `values` with the k lowest pruned (ties: the higher index goes first).
// nth_element on a copy finds the k-th smallest value t; everything below t is pruned, then the
// remaining quota is taken from the entries equal to t, highest index first. O(n), no sort.
template <typename T>
std::vector<uint8_t> keep_all_but_lowest(std::span<const T> values, int64_t k) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<uint8_t> keep(n, 1);
  if (k <= 0) return keep;
  if (k >= n) return std::vector<uint8_t>(n, 0);
  std::vector<T> copy(values.begin(), values.end());
  std::nth_element(copy.begin(), copy.begin() + (k - 1), copy.end());
  const T threshold = copy[k - 1];
  copy = {};
  int64_t below = 0;
  for (int64_t i = 0; i < n; ++i)
    if (values[i] < threshold) {
      keep[i] = 0;
      ++below;
    }
  for (int64_t i = n - 1, left = k - below; i >= 0 && left > 0; --i)
    if (values[i] == threshold) {
      keep[i] = 0;
      --left;
    }
  return keep;
}

std::vector<uint8_t> unstructured_mask(double sparsity, std::span<const float> scores);
std::vector<uint8_t> nm_mask(int n, int m, std::span<const float> scores, int64_t rows,
                             int64_t cols);
std::vector<uint8_t> vnm_mask(int v, int m, std::span<const float> scores, int64_t rows,
                              int64_t cols);
std::vector<uint8_t> block_mask(int block_rows, int block_cols, double sparsity,
                                std::span<const float> scores, int64_t rows, int64_t cols);
std::vector<uint8_t> rows_mask(double sparsity, std::span<const float> scores, int64_t rows,
                               int64_t cols);
std::vector<uint8_t> cols_mask(double sparsity, std::span<const float> scores, int64_t rows,
                               int64_t cols);

}  // namespace sparsa::detail
