// Pruning: a criterion turns weights (and, later, calibration statistics) into importance
// scores; a pattern turns scores into a keep-mask; applying the mask zeroes the pruned weights.
// The result is the pipeline's hand-off: a dense tensor whose pruned entries are exactly 0.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "sparsa/pattern.h"
#include "sparsa/tensor.h"

namespace sparsa {

// Importance scores, one per weight, larger = more important. Swappable: magnitude now,
// calibration-based criteria (Wanda, SparseGPT) later.
class Criterion {
 public:
  virtual ~Criterion() = default;
  virtual std::string_view name() const = 0;
  virtual std::vector<float> scores(const Tensor& weights) const = 0;
};

// "magnitude"; throws sparsa::Error for an unknown name.
std::unique_ptr<Criterion> make_criterion(std::string_view name);

// Keep-mask (1 = keep, 0 = prune) of rows*cols entries for a pattern, from scores.
// Ties are broken towards the lower index so masks are deterministic.
// Global unstructured patterns are handled by make_global_masks.
std::vector<uint8_t> make_mask(const Pattern& pattern, std::span<const float> scores, int64_t rows,
                               int64_t cols);

// One threshold across all tensors: prunes `sparsity` of all scores together.
std::vector<std::vector<uint8_t>> make_global_masks(double sparsity,
                                                    const std::vector<std::span<const float>>& scores);

// Zeroes the weights whose mask entry is 0 (exact zeros in the tensor's own dtype).
void apply_mask(Tensor& weights, std::span<const uint8_t> mask);

// Scores, masks and applies: the returned tensor satisfies `pattern` (local patterns only).
Tensor prune(const Tensor& weights, const Pattern& pattern, const Criterion& criterion);


// Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, X the layer's calibration inputs;
// input_sq_norms[j] = sum over calibration rows of X_j^2 (one entry per input column).
// scores() throws sparsa::Error naming the tensor when its column count differs.
std::unique_ptr<Criterion> make_wanda_criterion(std::vector<double> input_sq_norms);

// make_mask, except that an unstructured (local) pattern prunes `sparsity` of each output row
// separately (Wanda's comparison group); other patterns compare within their own groups.
std::vector<uint8_t> make_row_mask(const Pattern& pattern, std::span<const float> scores,
                                   int64_t rows, int64_t cols);

// SparseGPT (Frantar & Alistarh 2023). The Hessian H = X^T X [cols, cols] of the layer's
// calibration inputs, prepared once per input (layers sharing an input share it): dead
// inputs (H_jj = 0) noted, H damped by `damping` times its mean diagonal, and the upper
// Cholesky factor U of H^-1 (H^-1 = U^T U). Throws sparsa::Error when H is not square.
struct SparseGptHessian {
  int64_t cols = 0;
  std::vector<float> hinv_upper;  // [cols*cols], row-major, upper triangle used
  std::vector<uint8_t> dead;      // [cols]: 1 where the input never varied
};
SparseGptHessian sparsegpt_prepare(std::span<const float> hessian, int64_t cols,
                                   double damping = 0.01);

// Prunes W [rows, cols] to a local unstructured, N:M or V:N:M pattern column by column with
// optimal-brain-surgeon updates of the remaining weights, in lazy blocks of `block_size`
// columns (rounded to a multiple of M). Unstructured: the mask of each block is chosen
// adaptively (lowest w^2 / [H^-1]_jj^2 of the block); N:M and V:N:M: per group of M columns by
// the same score through make_mask. Returns an F32 tensor that satisfies the pattern.
Tensor sparsegpt_prune(const Tensor& weights, const Pattern& pattern, const SparseGptHessian& h,
                       int64_t block_size = 128);

}  // namespace sparsa
