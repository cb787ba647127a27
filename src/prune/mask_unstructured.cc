// Unstructured masks: prune exactly round(sparsity * count) of the lowest scores.
//
// Local (one tensor): nth_element on a copy of the scores (keep_all_but_lowest).
// Global (many tensors, one threshold): a two-pass radix select on the scores' order-preserving
// 32-bit keys (histogram of the high 16 bits, then of the low 16 bits inside the chosen bucket).
// It is exact like nth_element but needs no copy of every tensor's scores, which for a whole
// model would double the memory of the largest buffer in the pipeline. Both rank equal scores
// the same way: across tensors the "index" is (tensor position, entry), so among entries equal
// to the threshold the last tensor's highest entries are pruned first.
#include <bit>
#include <cstdint>
#include <vector>

#include "prune/mask_internal.h"
#include "sparsa/error.h"
#include "sparsa/prune.h"

namespace sparsa {
namespace detail {

std::vector<uint8_t> unstructured_mask(double sparsity, std::span<const float> scores) {
  return keep_all_but_lowest(scores, pruned_count(sparsity, static_cast<int64_t>(scores.size())));
}

}  // namespace detail

namespace {

// Monotone map float -> uint32 (a < b  <=>  key(a) < key(b)) for non-NaN floats; -0 is folded
// into +0 first so keys compare equal exactly when the floats do.
inline uint32_t order_key(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value + 0.0f);
  return (bits >> 31) ? ~bits : (bits | 0x80000000u);
}

// The k-th smallest key (1-based) over all spans.
uint32_t kth_smallest_key(const std::vector<std::span<const float>>& scores, int64_t k) {
  std::vector<int64_t> histogram(1 << 16, 0);
  for (const auto& s : scores)
    for (float x : s) ++histogram[order_key(x) >> 16];
  int64_t before = 0;
  uint32_t high = 0;
  for (; high < (1u << 16); ++high) {
    if (before + histogram[high] >= k) break;
    before += histogram[high];
  }
  std::fill(histogram.begin(), histogram.end(), 0);
  for (const auto& s : scores)
    for (float x : s) {
      const uint32_t key = order_key(x);
      if ((key >> 16) == high) ++histogram[key & 0xffffu];
    }
  uint32_t low = 0;
  for (; low < (1u << 16); ++low) {
    if (before + histogram[low] >= k) break;
    before += histogram[low];
  }
  return (high << 16) | low;
}

}  // namespace

std::vector<std::vector<uint8_t>> make_global_masks(
    double sparsity, const std::vector<std::span<const float>>& scores) {
  if (!(sparsity >= 0.0 && sparsity < 1.0))
    fail("global unstructured pruning: sparsity {} is outside [0, 1)", sparsity);
  int64_t total = 0;
  for (size_t t = 0; t < scores.size(); ++t) {
    detail::check_scores(scores[t], 1, static_cast<int64_t>(scores[t].size()),
                         fmt::format("global pruning, tensor #{}", t));
    total += static_cast<int64_t>(scores[t].size());
  }
  std::vector<std::vector<uint8_t>> masks(scores.size());
  for (size_t t = 0; t < scores.size(); ++t) masks[t].assign(scores[t].size(), 1);
  const int64_t k = detail::pruned_count(sparsity, total);
  if (k == 0) return masks;

  const uint32_t threshold = kth_smallest_key(scores, k);
  int64_t below = 0;
  for (size_t t = 0; t < scores.size(); ++t)
    for (size_t i = 0; i < scores[t].size(); ++i)
      if (order_key(scores[t][i]) < threshold) {
        masks[t][i] = 0;
        ++below;
      }
  int64_t left = k - below;
  for (size_t t = scores.size(); t-- > 0 && left > 0;)
    for (size_t i = scores[t].size(); i-- > 0 && left > 0;)
      if (order_key(scores[t][i]) == threshold) {
        masks[t][i] = 0;
        --left;
      }
  return masks;
}

}  // namespace sparsa
