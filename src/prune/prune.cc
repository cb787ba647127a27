// make_mask (dispatch to the pattern families in mask_*.cc), apply_mask and prune.
#include "sparsa/prune.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "prune/mask_internal.h"
#include "sparsa/error.h"

namespace sparsa {
namespace detail {

void check_scores(std::span<const float> scores, int64_t rows, int64_t cols,
                  std::string_view what) {
  if (rows < 0 || cols < 0) fail("{}: negative matrix shape {}x{}", what, rows, cols);
  if (static_cast<int64_t>(scores.size()) != rows * cols)
    fail("{}: {} scores given for a {}x{} matrix", what, scores.size(), rows, cols);
  for (size_t i = 0; i < scores.size(); ++i)
    if (std::isnan(scores[i]))
      fail("{}: score is NaN at row {}, column {} (NaN weights cannot be ranked)", what,
           static_cast<int64_t>(i) / std::max<int64_t>(cols, 1),
           static_cast<int64_t>(i) % std::max<int64_t>(cols, 1));
}

void check_pattern(const Pattern& pattern) {
  // A Pattern built by hand must be one parse() could produce (e.g. M = 0 would never end a
  // group loop); the round trip re-runs every range check.
  if (Pattern::parse(pattern.to_string()) != pattern)
    fail("pattern '{}': inconsistent fields (unused fields must be zero)", pattern.to_string());
}

int64_t pruned_count(double sparsity, int64_t count) {
  return std::clamp<int64_t>(std::llround(sparsity * static_cast<double>(count)), 0, count);
}

}  // namespace detail

std::vector<uint8_t> make_mask(const Pattern& pattern, std::span<const float> scores, int64_t rows,
                               int64_t cols) {
  const std::string name = fmt::format("mask for pattern '{}'", pattern.to_string());
  detail::check_pattern(pattern);
  detail::check_scores(scores, rows, cols, name);
  switch (pattern.kind) {
    case PatternKind::Dense:
      return std::vector<uint8_t>(scores.size(), 1);
    case PatternKind::Unstructured:
      if (pattern.global)
        fail("{}: a global pattern ranks all tensors together; use make_global_masks", name);
      return detail::unstructured_mask(pattern.sparsity, scores);
    case PatternKind::NM:
      return detail::nm_mask(pattern.n, pattern.m, scores, rows, cols);
    case PatternKind::VNM:
      return detail::vnm_mask(pattern.v, pattern.m, scores, rows, cols);
    case PatternKind::Block:
      return detail::block_mask(pattern.block_rows, pattern.block_cols, pattern.sparsity, scores,
                                rows, cols);
    case PatternKind::Rows:
      return detail::rows_mask(pattern.sparsity, scores, rows, cols);
    case PatternKind::Columns:
      return detail::cols_mask(pattern.sparsity, scores, rows, cols);
  }
  fail("{}: unknown pattern kind", name);
}

void apply_mask(Tensor& weights, std::span<const uint8_t> mask) {
  if (!is_float_weight_dtype(weights.dtype()))
    fail("tensor '{}': cannot prune dtype {} (F32, F16 or BF16 only)", weights.name(),
         dtype_name(weights.dtype()));
  if (static_cast<int64_t>(mask.size()) != weights.numel())
    fail("tensor '{}': mask has {} entries for shape {} ({} values)", weights.name(), mask.size(),
         shape_string(weights.shape()), weights.numel());
  // Zeroing the element's bytes is +0.0 in all three dtypes and leaves kept values untouched,
  // bit for bit, with no conversion.
  const size_t width = dtype_size(weights.dtype());
  std::byte* data = weights.mutable_bytes().data();
  for (size_t i = 0; i < mask.size(); ++i)
    if (!mask[i]) std::memset(data + i * width, 0, width);
}

Tensor prune(const Tensor& weights, const Pattern& pattern, const Criterion& criterion) {
  if (pattern.kind == PatternKind::Unstructured && pattern.global)
    fail("tensor '{}': pattern '{}' is global; prune all tensors together with make_global_masks",
         weights.name(), pattern.to_string());
  const std::vector<float> scores = criterion.scores(weights);
  std::vector<uint8_t> mask;
  try {
    mask = make_mask(pattern, scores, weights.rows(), weights.cols());
  } catch (const Error& e) {
    throw Error(fmt::format("tensor '{}' {} ({} criterion): {}", weights.name(),
                            shape_string(weights.shape()), criterion.name(), e.what()));
  }
  // A fresh owned copy: copying a Tensor would share its storage.
  Tensor out(weights.name(), weights.dtype(), weights.shape());
  if (weights.nbytes())
    std::memcpy(out.mutable_bytes().data(), weights.bytes().data(), weights.nbytes());
  apply_mask(out, mask);
  return out;
}

}  // namespace sparsa
