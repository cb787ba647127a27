// Structured masks: whole rows (output channels) or whole columns (inputs) pruned, the
// round(sparsity * rows) (or * cols) with the lowest L2 norm of their scores; ties prune the
// higher index first. Norms are sums of squares in double, summed in index order.
#include <cstdint>
#include <vector>

#include "prune/mask_internal.h"

namespace sparsa::detail {

std::vector<uint8_t> rows_mask(double sparsity, std::span<const float> scores, int64_t rows,
                               int64_t cols) {
  std::vector<double> norm2(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double s = scores[r * cols + c];
      norm2[r] += s * s;
    }
  const auto keep_row = keep_all_but_lowest<double>(norm2, pruned_count(sparsity, rows));
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    std::fill(keep.begin() + r * cols, keep.begin() + (r + 1) * cols, keep_row[r]);
  return keep;
}

std::vector<uint8_t> cols_mask(double sparsity, std::span<const float> scores, int64_t rows,
                               int64_t cols) {
  std::vector<double> norm2(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double s = scores[r * cols + c];
      norm2[c] += s * s;
    }
  const auto keep_col = keep_all_but_lowest<double>(norm2, pruned_count(sparsity, cols));
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    std::copy(keep_col.begin(), keep_col.end(), keep.begin() + r * cols);
  return keep;
}

}  // namespace sparsa::detail
