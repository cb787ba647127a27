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

}  // namespace sparsa
