// Checking a dense matrix (zeros = pruned) against a pattern, and listing the structured
// patterns it satisfies.
//
// What each pattern requires (counts round exactly as the mask builders do, see pruned_count):
//   unstructured:S  at least round(S * numel) zeros. A global pattern constrains the set of
//                   tensors, not one tensor, so any single matrix satisfies it.
//   N:M             every group of M consecutive columns of a row (ragged last group included)
//                   has at most N nonzeros.
//   V:2:M           every V x M block (ragged edges included) has nonzeros in at most 4 columns
//                   and at most 2 nonzeros in each of its rows.
//   block:HxW:S     at least round(S * blocks) blocks are all zero.
//   rows:S, cols:S  at least round(S * rows) rows (columns) are all zero.
// The first violation is reported in row-major order of rows, groups and blocks; for V:N:M a
// block's column count is checked before its rows.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "prune/mask_internal.h"
#include "sparsa/error.h"
#include "sparsa/pattern.h"

namespace sparsa {
namespace {

std::string column_range(int64_t first, int64_t width) {
  return width == 1 ? fmt::format("column {}", first)
                    : fmt::format("columns {}..{}", first, first + width - 1);
}

Validation failed(std::string violation) { return {false, std::move(violation)}; }

// At least round(S * total) of the things (entries, blocks, rows, columns) must be zero.
Validation check_zero_count(const Pattern& p, int64_t zero, int64_t total, std::string_view label,
                            std::string_view things) {
  const int64_t needed = detail::pruned_count(p.sparsity, total);
  if (zero >= needed) return {};
  return failed(fmt::format("{} {:.4g} < {} ({} of {} {} are zero; {} needs {})", label,
                            double(zero) / double(total), p.sparsity, zero, total, things,
                            p.to_string(), needed));
}

Validation validate_nm(const Pattern& p, const float* w, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < cols; g += p.m) {
      const int64_t width = std::min<int64_t>(p.m, cols - g);
      int64_t nonzero = 0;
      for (int64_t c = g; c < g + width; ++c) nonzero += w[r * cols + c] != 0.0f;
      if (nonzero > p.n)
        return failed(fmt::format("row {}, {}: {} nonzeros where {} allows {}", r,
                                  column_range(g, width), nonzero, p.to_string(), p.n));
    }
  return {};
}

Validation validate_vnm(const Pattern& p, const float* w, int64_t rows, int64_t cols) {
  std::vector<uint8_t> used(static_cast<size_t>(cols));
  for (int64_t r0 = 0; r0 < rows; r0 += p.v) {
    const int64_t r1 = std::min<int64_t>(rows, r0 + p.v);
    std::fill(used.begin(), used.end(), 0);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) used[c] |= w[r * cols + c] != 0.0f;
    for (int64_t c0 = 0; c0 < cols; c0 += p.m) {
      const int64_t width = std::min<int64_t>(p.m, cols - c0);
      const int64_t columns = std::count(used.begin() + c0, used.begin() + c0 + width, 1);
      if (columns > 4)
        return failed(fmt::format("rows {}..{}, {}: {} columns hold nonzeros where {} allows 4", r0,
                                  r1 - 1, column_range(c0, width), columns, p.to_string()));
      for (int64_t r = r0; r < r1; ++r) {
        int64_t nonzero = 0;
        for (int64_t c = c0; c < c0 + width; ++c) nonzero += w[r * cols + c] != 0.0f;
        if (nonzero > 2)
          return failed(fmt::format("row {}, {}: {} nonzeros where {} allows 2 per row", r,
                                    column_range(c0, width), nonzero, p.to_string()));
      }
    }
  }
  return {};
}

Validation validate_block(const Pattern& p, const float* w, int64_t rows, int64_t cols) {
  const int64_t grid_rows = (rows + p.block_rows - 1) / p.block_rows;
  const int64_t grid_cols = (cols + p.block_cols - 1) / p.block_cols;
  std::vector<uint8_t> nonzero(static_cast<size_t>(grid_rows * grid_cols), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      nonzero[(r / p.block_rows) * grid_cols + c / p.block_cols] |= w[r * cols + c] != 0.0f;
  const int64_t zero = std::count(nonzero.begin(), nonzero.end(), 0);
  return check_zero_count(p, zero, grid_rows * grid_cols, "zero-block fraction",
                          fmt::format("{}x{} blocks", p.block_rows, p.block_cols));
}

Validation validate_lines(const Pattern& p, const float* w, int64_t rows, int64_t cols) {
  const bool by_row = p.kind == PatternKind::Rows;
  std::vector<uint8_t> nonzero(static_cast<size_t>(by_row ? rows : cols), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) nonzero[by_row ? r : c] |= w[r * cols + c] != 0.0f;
  const int64_t zero = std::count(nonzero.begin(), nonzero.end(), 0);
  return check_zero_count(p, zero, static_cast<int64_t>(nonzero.size()),
                          by_row ? "zero-row fraction" : "zero-column fraction",
                          by_row ? "rows" : "columns");
}

void check_matrix(std::string_view what, std::span<const float> weights, int64_t rows,
                  int64_t cols) {
  if (rows < 0 || cols < 0) fail("{}: negative matrix shape {}x{}", what, rows, cols);
  if (static_cast<int64_t>(weights.size()) != rows * cols)
    fail("{}: {} values given for a {}x{} matrix", what, weights.size(), rows, cols);
}

// Smallest N such that every M-group of every row has at most N nonzeros (at least 1).
int smallest_n(const float* w, int64_t rows, int64_t cols, int m) {
  int most = 1;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < cols; g += m) {
      const int64_t end = std::min<int64_t>(cols, g + m);
      int nonzero = 0;
      for (int64_t c = g; c < end; ++c) nonzero += w[r * cols + c] != 0.0f;
      most = std::max(most, nonzero);
    }
  return most;
}

// Largest V in {16, 32, 64, 128} for which the matrix satisfies V:2:M, or 0 for none. One pass:
// per row, a bitmask of the occupied columns of each M-block; ORed over 16-row groups, then
// pairwise up to 128 rows (the groups nest, so V:2:M at 128 implies it at 64, 32, 16).
int largest_v(const float* w, int64_t rows, int64_t cols, int m) {
  const int64_t blocks = (cols + m - 1) / m;
  std::vector<uint32_t> group_masks(static_cast<size_t>(8 * blocks));  // 8 groups of 16 rows
  bool holds[4] = {true, true, true, true};                            // V = 16, 32, 64, 128
  for (int64_t r0 = 0; r0 < rows; r0 += 128) {
    std::fill(group_masks.begin(), group_masks.end(), 0u);
    const int64_t r1 = std::min<int64_t>(rows, r0 + 128);
    for (int64_t r = r0; r < r1; ++r) {
      uint32_t* masks = group_masks.data() + ((r - r0) / 16) * blocks;
      for (int64_t b = 0; b < blocks; ++b) {
        uint32_t bits = 0;
        const int64_t c0 = b * m, width = std::min<int64_t>(m, cols - c0);
        for (int64_t i = 0; i < width; ++i) bits |= uint32_t{w[r * cols + c0 + i] != 0.0f} << i;
        if (std::popcount(bits) > 2) return 0;  // no V helps a row with 3 nonzeros in a block
        masks[b] |= bits;
      }
    }
    // Level 0 (V = 16) checks the 8 groups; each next level ORs neighbouring pairs in place.
    for (int level = 0, count = 8; level < 4; ++level, count /= 2) {
      if (level > 0)
        for (int g = 0; g < count; ++g)
          for (int64_t b = 0; b < blocks; ++b)
            group_masks[g * blocks + b] =
                group_masks[2 * g * blocks + b] | group_masks[(2 * g + 1) * blocks + b];
      for (int64_t i = 0; i < count * blocks; ++i)
        if (std::popcount(group_masks[i]) > 4) holds[level] = false;
    }
  }
  for (int level = 3; level >= 0; --level)
    if (holds[level]) return 16 << level;
  return 0;
}

}  // namespace

Validation validate(const Pattern& pattern, std::span<const float> weights, int64_t rows,
                    int64_t cols) {
  detail::check_pattern(pattern);
  check_matrix(fmt::format("validate against pattern '{}'", pattern.to_string()), weights, rows,
               cols);
  const float* w = weights.data();
  switch (pattern.kind) {
    case PatternKind::Dense:
      return {};
    case PatternKind::Unstructured: {
      if (pattern.global) return {};
      const int64_t zero = std::count(weights.begin(), weights.end(), 0.0f);
      return check_zero_count(pattern, zero, rows * cols, "zero fraction", "entries");
    }
    case PatternKind::NM:
      return validate_nm(pattern, w, rows, cols);
    case PatternKind::VNM:
      return validate_vnm(pattern, w, rows, cols);
    case PatternKind::Block:
      return validate_block(pattern, w, rows, cols);
    case PatternKind::Rows:
    case PatternKind::Columns:
      return validate_lines(pattern, w, rows, cols);
  }
  return {};
}

std::vector<Pattern> satisfied_patterns(std::span<const float> weights, int64_t rows,
                                        int64_t cols) {
  check_matrix("satisfied_patterns", weights, rows, cols);
  std::vector<Pattern> found;
  for (int m : {4, 8, 16, 32}) {
    const int n = smallest_n(weights.data(), rows, cols, m);
    if (n < m) found.push_back(Pattern{.kind = PatternKind::NM, .n = n, .m = m});
  }
  for (int m : {4, 5, 6, 8, 10, 16}) {
    const int v = largest_v(weights.data(), rows, cols, m);
    if (v) found.push_back(Pattern{.kind = PatternKind::VNM, .n = 2, .m = m, .v = v});
  }
  // Strongest first: lowest density; at equal density V:N:M (which implies N:M at the same
  // density) before N:M, larger V first, then finer groups.
  std::stable_sort(found.begin(), found.end(), [](const Pattern& a, const Pattern& b) {
    if (a.density() != b.density()) return a.density() < b.density();
    if (a.kind != b.kind) return a.kind == PatternKind::VNM;
    if (a.v != b.v) return a.v > b.v;
    return a.m < b.m;
  });
  return found;
}

}  // namespace sparsa
