// N:M masks: in every row, each group of M consecutive columns (along K) keeps its N highest
// scores (ties: lower column kept). A ragged last group of width w < M keeps min(N, w), i.e.
// the matrix is treated as padded with zero-score columns that are never kept.
//
// Per entry the rank inside its group is counted directly (how many group members beat it);
// with M <= 32 that is at most 32 compares per entry, branch-free, and needs no scratch.
#include <cstdint>
#include <vector>

#include "prune/mask_internal.h"

namespace sparsa::detail {

std::vector<uint8_t> nm_mask(int n, int m, std::span<const float> scores, int64_t rows,
                             int64_t cols) {
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = scores.data() + r * cols;
    uint8_t* out = keep.data() + r * cols;
    for (int64_t g = 0; g < cols; g += m) {
      const int w = static_cast<int>(std::min<int64_t>(m, cols - g));
      for (int i = 0; i < w; ++i) {
        const float s = row[g + i];
        int better = 0;
        for (int j = 0; j < w; ++j) better += (row[g + j] > s) | ((row[g + j] == s) & (j < i));
        out[g + i] = better < n;
      }
    }
  }
  return keep;
}

}  // namespace sparsa::detail
