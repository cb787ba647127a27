// Token sampling: greedy (argmax, lowest id on ties) or temperature + nucleus (top-p).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "sparsa/error.h"
#include "sparsa/model.h"

namespace sparsa {

Sampler::Sampler(double temperature, double top_p, uint64_t seed)
    : temperature_(temperature), top_p_(top_p), rng_(seed) {
  if (!std::isfinite(temperature) || temperature < 0)
    fail("sampler: temperature {} must be a finite number >= 0", temperature);
  if (!(top_p > 0 && top_p <= 1)) fail("sampler: top-p {} must be in (0, 1]", top_p);
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.empty()) fail("sampler: no logits");
  if (temperature_ <= 0)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i)
    sum += p[i] = std::exp((double(logits[i]) - max_logit) / temperature_);
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  // The nucleus: most likely first (lower id first on ties), until the mass reaches top_p.
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  double kept = 0;
  size_t count = 0;
  while (count < order.size() && (count == 0 || kept < top_p_ * sum)) kept += p[order[count++]];
  double u = std::uniform_real_distribution<double>(0.0, kept)(rng_);
  for (size_t i = 0; i < count; ++i) {
    u -= p[order[i]];
    if (u < 0) return order[i];
  }
  return order[count - 1];
}

}  // namespace sparsa
