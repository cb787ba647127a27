// Sparsity patterns: what a pruned weight matrix looks like, parsed from short strings.
//
//   dense                    nothing pruned
//   unstructured:0.7         70% of the weights of each tensor pruned (local threshold)
//   unstructured:0.7:global  70% pruned with one threshold across all selected tensors
//   2:4, 1:4, 4:8, 8:16 ...  N:M — at most N nonzeros in every M consecutive inputs (1<=N<M<=32)
//   64:2:8                   V:N:M — rows in groups of V; in each V x M block the same 4 columns
//                            are kept for all V rows, then 2:4 inside them (N = 2, density 2/M)
//   block:4x4:0.5            50% of the 4x4 blocks pruned, ranked by block norm
//   rows:0.25, cols:0.25     25% of the rows (output channels) / columns (inputs) pruned
//
// Weights are matrices W[rows, cols] with cols = K, the input dimension; N:M and V:N:M groups
// run along K. Ragged edges (rows not a multiple of V or of the block height, K not a multiple
// of M or of the block width) are handled as if W were padded with zero rows/columns.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sparsa {

enum class PatternKind { Dense, Unstructured, NM, VNM, Block, Rows, Columns };

struct Pattern {
  PatternKind kind = PatternKind::Dense;
  double sparsity = 0.0;  // Unstructured, Block, Rows, Columns: the fraction pruned, in [0, 1)
  bool global = false;    // Unstructured: one threshold across tensors
  int n = 0, m = 0;       // NM and VNM (VNM has n == 2)
  int v = 0;              // VNM: rows per group, one of 16, 32, 64, 128
  int block_rows = 0, block_cols = 0;  // Block

  // Parses a pattern string; throws sparsa::Error naming the string and the problem.
  static Pattern parse(std::string_view text);
  // The canonical string; Pattern::parse(p.to_string()) == p.
  std::string to_string() const;
  // Fraction of weights kept by the pattern's structure (N/M, 2/M, 1 - sparsity).
  double density() const;
  bool operator==(const Pattern&) const = default;
};

// Whether a dense matrix satisfies a pattern; when not, `violation` names the first violating
// row, group or block, e.g. "row 3, columns 8..11: 3 nonzeros where 2:4 allows 2".
struct Validation {
  bool ok = true;
  std::string violation;
};
Validation validate(const Pattern& pattern, std::span<const float> weights, int64_t rows,
                    int64_t cols);

// The structured patterns (N:M for common M, V:N:M for common V and M) a matrix satisfies,
// strongest first; used by `sparsa inspect`.
std::vector<Pattern> satisfied_patterns(std::span<const float> weights, int64_t rows, int64_t cols);

}  // namespace sparsa
