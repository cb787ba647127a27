// V and M for a target speed-up (include/sparsa/vnm_choice.h).
#include "sparsa/vnm_choice.h"

#include <cmath>

#include "sparsa/error.h"

namespace sparsa {
namespace {

constexpr int kMinM = 5, kMaxM = 32;  // M = 4 is plain 2:4 (no column pruning)

}  // namespace

double vnm_estimated_speedup(int v, int m) {
  if (m < 4) return 0;
  const double efficiency = v == 64 ? 0.68 : v == 128 ? 0.85 : 0.0;
  return efficiency * m / 2.0;
}

double vnm_mask_diversity_bits(int v, int m) {
  if (v <= 0 || m < 4) return 0;
  const double choose4 = double(m) * (m - 1) * (m - 2) * (m - 3) / 24.0;
  return std::log2(choose4) / (double(v) * m) + std::log2(6.0) / m;
}

VnmChoice choose_vnm(double target) {
  if (!(target > 1.0) || !std::isfinite(target))
    fail("speed-up target '{}': expected a number > 1 (e.g. auto:2.5)", target);
  VnmChoice best;
  bool found = false;
  for (int m = kMinM; m <= kMaxM; ++m)
    for (int v : {64, 128}) {
      const double speedup = vnm_estimated_speedup(v, m);
      if (speedup < target) continue;
      const double bits = vnm_mask_diversity_bits(v, m);
      if (!found || bits > best.diversity_bits) {  // loops run M, V ascending: ties keep the first
        best.pattern = Pattern::parse(std::to_string(v) + ":2:" + std::to_string(m));
        best.estimated_speedup = speedup;
        best.diversity_bits = bits;
        found = true;
      }
    }
  if (!found)
    fail("speed-up target {}: no V:2:M with V in {{64, 128}} and M <= {} reaches it (at most "
         "{:.2f}x, 128:2:{})",
         target, kMaxM, vnm_estimated_speedup(128, kMaxM), kMaxM);
  return best;
}

}  // namespace sparsa
