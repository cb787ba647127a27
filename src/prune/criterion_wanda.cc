// Wanda: weight magnitude times the L2 norm of the input channel it multiplies, and the
// per-output-row masks the paper compares within.
#include <cmath>
#include <memory>
#include <vector>

#include "sparsa/error.h"
#include "sparsa/prune.h"

namespace sparsa {
namespace {

class WandaCriterion final : public Criterion {
 public:
  explicit WandaCriterion(std::vector<double> sq_norms) {
    norms_.reserve(sq_norms.size());
    for (double v : sq_norms) {
      if (!(v >= 0.0) || std::isinf(v))
        fail("wanda: input channel {} has squared norm {} (must be finite and >= 0)",
             norms_.size(), v);
      norms_.push_back(static_cast<float>(std::sqrt(v)));
    }
  }
  std::string_view name() const override { return "wanda"; }
  std::vector<float> scores(const Tensor& weights) const override {
    if (weights.cols() != static_cast<int64_t>(norms_.size()))
      fail("wanda: tensor '{}' {} has {} input columns but the calibration statistics {}",
           weights.name(), shape_string(weights.shape()), weights.cols(), norms_.size());
    std::vector<float> values = weights.to_f32();
    const size_t cols = norms_.size();
    for (size_t i = 0; i < values.size(); ++i) values[i] = std::fabs(values[i]) * norms_[i % cols];
    return values;
  }

 private:
  std::vector<float> norms_;
};

}  // namespace

std::unique_ptr<Criterion> make_wanda_criterion(std::vector<double> input_sq_norms) {
  return std::make_unique<WandaCriterion>(std::move(input_sq_norms));
}

std::vector<uint8_t> make_row_mask(const Pattern& pattern, std::span<const float> scores,
                                   int64_t rows, int64_t cols) {
  if (pattern.kind != PatternKind::Unstructured || pattern.global || rows <= 1)
    return make_mask(pattern, scores, rows, cols);
  if (static_cast<int64_t>(scores.size()) != rows * cols)
    fail("mask for pattern '{}': {} scores given for a {}x{} matrix", pattern.to_string(),
         scores.size(), rows, cols);
  std::vector<uint8_t> keep(scores.size());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const auto row = make_mask(pattern, scores.subspan(size_t(r * cols), size_t(cols)), 1, cols);
    std::copy(row.begin(), row.end(), keep.begin() + r * cols);
  }
  return keep;
}

}  // namespace sparsa
