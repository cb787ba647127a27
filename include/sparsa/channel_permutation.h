// Input-channel permutation for N:M and V:N:M masks ("Beyond 2:4", VENOM; NVIDIA ASP's channel
// permutation for 2:4): which columns land in the same group of M decides how much importance
// the mask can keep. A permutation perm of a matrix's cols reorders its columns so that new
// column j is old column perm[j]; the layer then reads its input through the same perm
// (Linear::input_perm), so the network computes the same function before pruning.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sparsa/pattern.h"

namespace sparsa {

// Sum of the scores the pattern's mask (make_mask) keeps.
double kept_score(const Pattern& pattern, std::span<const float> scores, int64_t rows,
                  int64_t cols);
// Sum of `objective` (same shape) over the entries that the mask chosen by `scores` keeps.
double kept_value(const Pattern& pattern, std::span<const float> scores,
                  std::span<const float> objective, int64_t rows, int64_t cols);

// values [rows, cols] with column j taken from column perm[j] (a permutation of 0..cols-1).
std::vector<float> permute_columns(std::span<const float> values, int64_t rows, int64_t cols,
                                   std::span<const int32_t> perm);
// values [rows, cols] with row i taken from row perm[i].
std::vector<float> permute_rows(std::span<const float> values, int64_t rows, int64_t cols,
                                std::span<const int32_t> perm);

// What permute_model keeps the most of under the mask (the mask itself is always the method's):
//   Importance   the method's own score (|W|, Wanda's |W|*||X_j||, SparseGPT's saliency root);
//   OutputEnergy sum of W_ij^2 * ||X_j||^2 over kept weights, X the calibration inputs: the
//                pruned weights' squared output error on the calibration text is the rest of
//                that sum when input channels are uncorrelated (diagonal of X^T X). Needs
//                calibration statistics for every method, magnitude included.
enum class PermutationObjective { Importance, OutputEnergy };

struct PermutationOptions {
  // Local-search rounds (each pairs every group with a random partner) and improving swaps
  // tried per pair and round. Each swap candidate re-scores two groups over all rows: on
  // SmolLM2-135M's 210 layers at 64:2:8 a round takes about 40 s on 2 busy cores (6 rounds:
  // kept magnitude importance +1.9%, the snake deal alone +0.8%).
  int rounds = 6;
  int swaps_per_pair = 2;
  uint64_t seed = 0x5eed;
  PermutationObjective objective = PermutationObjective::Importance;  // read by permute_model
  // permute_model: keep a layer's permutation only when the layer, pruned by the method, has a
  // lower calibration output error ||(W - W_pruned) X||^2 (full X^T X) with it than without.
  bool guard = false;
  // permute_model: layers that read the same input (q/k/v; gate/up) share one permutation,
  // searched on all of them at once, so they keep one gather and their stacked (fused) product.
  // false: one permutation per layer (each its own gather, no stacking on the GPU).
  bool shared = true;
};

// A column permutation that keeps at least as much importance (or objective, where a matrix has
// one) under `pattern` (N:M or V:N:M) as the identity, summed over every matrix in `scores` (all [rows_t, cols], e.g. one layer, or
// several layers that must share a permutation). Search: columns sorted by their L2 norm and
// dealt to the groups of M in snake order (every group gets its share of strong columns), then
// rounds of swaps: each group paired with a random other group, the best improving swap of one
// column between them applied, up to swaps_per_pair times (the change is exact: only those two
// groups' kept score moves). The result is compared with the identity by kept_score and the better one
// returned. Throws sparsa::Error for other patterns or mismatched sizes.
struct ScoreMatrix {
  std::span<const float> scores;  // chooses the mask, as make_mask does
  int64_t rows = 0;
  // What the search maximises under that mask (same shape); empty: the scores themselves.
  std::span<const float> objective = {};
};
std::vector<int32_t> find_channel_permutation(const Pattern& pattern,
                                              const std::vector<ScoreMatrix>& scores,
                                              int64_t cols, const PermutationOptions& options = {});

}  // namespace sparsa
