// Pruning criteria: weights (and later calibration statistics) -> importance scores.
#include <cmath>
#include <memory>
#include <string_view>
#include <vector>

#include "sparsa/error.h"
#include "sparsa/prune.h"

namespace sparsa {
namespace {

// |w|: the classic magnitude criterion (Han et al.); needs no calibration data.
class MagnitudeCriterion final : public Criterion {
 public:
  std::string_view name() const override { return "magnitude"; }
  std::vector<float> scores(const Tensor& weights) const override {
    std::vector<float> values = weights.to_f32();
    for (float& v : values) v = std::fabs(v);
    return values;
  }
};

}  // namespace

std::unique_ptr<Criterion> make_criterion(std::string_view name) {
  if (name == "magnitude") return std::make_unique<MagnitudeCriterion>();
  fail("unknown pruning criterion '{}'; known: magnitude (wanda and sparsegpt need calibration: "
       "give a model, not a tensor file)", name);
}

}  // namespace sparsa
