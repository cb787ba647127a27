// V:N:M masks (N = 2), the greedy selection of "Beyond 2:4" / VENOM:
//   1. Rows are taken in groups of V; each group is cut along K into blocks of M columns.
//   2. In each V x M block, every column's norm is the L2 norm of its scores over the block's
//      rows (compared as sums of squares in double, summed in row order); the 4 columns with
//      the largest norm are chosen, ties towards the lower column.
//   3. In each row of the block, the 2 highest scores among the chosen columns are kept, ties
//      towards the lower column.
// Ragged edges: the last row group may have fewer than V rows — its norms use only those rows.
// A last column block of width w < M chooses min(4, w) of its w real columns, and each row
// keeps min(2, chosen) of them, so for w <= 2 every row keeps all w. Both match the matrix
// padded with zero columns/rows that are never chosen.
// (VENOM's exact search over all C(M,4) column sets is far slower; the greedy choice is what
// "Beyond 2:4" uses at scale.)
#include <cstdint>
#include <vector>

#include "prune/mask_internal.h"

namespace sparsa::detail {
namespace {

constexpr int kKeptColumns = 4;
constexpr int kKeptPerRow = 2;

}  // namespace

std::vector<uint8_t> vnm_mask(int v, int m, std::span<const float> scores, int64_t rows,
                              int64_t cols) {
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
  const int64_t groups = (rows + v - 1) / v;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t group = 0; group < groups; ++group) {
    const int64_t r0 = group * v, r1 = std::min<int64_t>(rows, r0 + v);
    std::vector<double> norm2(cols, 0.0);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const double s = scores[r * cols + c];
        norm2[c] += s * s;
      }
    int chosen[kKeptColumns];
    for (int64_t c0 = 0; c0 < cols; c0 += m) {
      const int w = static_cast<int>(std::min<int64_t>(m, cols - c0));
      // Chosen columns in ascending order (a column's rank = how many block columns beat it).
      int count = 0;
      for (int i = 0; i < w; ++i) {
        int better = 0;
        for (int j = 0; j < w; ++j)
          better += norm2[c0 + j] > norm2[c0 + i] || (norm2[c0 + j] == norm2[c0 + i] && j < i);
        if (better < kKeptColumns) chosen[count++] = i;
      }
      for (int64_t r = r0; r < r1; ++r) {
        const float* row = scores.data() + r * cols + c0;
        for (int a = 0; a < count; ++a) {
          int better = 0;
          for (int b = 0; b < count; ++b)
            better +=
                row[chosen[b]] > row[chosen[a]] || (row[chosen[b]] == row[chosen[a]] && b < a);
          keep[r * cols + c0 + chosen[a]] = better < kKeptPerRow;
        }
      }
    }
  }
  return keep;
}

}  // namespace sparsa::detail
