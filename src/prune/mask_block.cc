// Block masks: the matrix is tiled into block_rows x block_cols blocks (row-major block order);
// blocks are ranked by the L2 norm of their scores (sums of squares in double) and the
// round(sparsity * blocks) lowest are pruned whole, ties pruning the later block first.
// Ragged edge blocks are partial blocks: their norm is over their real entries only.
#include <cstdint>
#include <vector>

#include "prune/mask_internal.h"

namespace sparsa::detail {

std::vector<uint8_t> block_mask(int block_rows, int block_cols, double sparsity,
                                std::span<const float> scores, int64_t rows, int64_t cols) {
  const int64_t grid_rows = (rows + block_rows - 1) / block_rows;
  const int64_t grid_cols = (cols + block_cols - 1) / block_cols;
  std::vector<double> norm2(static_cast<size_t>(grid_rows * grid_cols), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double* block_row = norm2.data() + (r / block_rows) * grid_cols;
    for (int64_t c = 0; c < cols; ++c) {
      const double s = scores[r * cols + c];
      block_row[c / block_cols] += s * s;
    }
  }
  const auto keep_block =
      keep_all_but_lowest<double>(norm2, pruned_count(sparsity, grid_rows * grid_cols));
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      keep[r * cols + c] = keep_block[(r / block_rows) * grid_cols + c / block_cols];
  return keep;
}

}  // namespace sparsa::detail
