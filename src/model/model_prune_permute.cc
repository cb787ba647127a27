// Input-channel permutation of a whole Llama model before N:M / V:N:M pruning (see
// permute_model in include/sparsa/model_prune.h).
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "sparsa/error.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"

namespace sparsa {
namespace {

std::vector<float> values_of(const Linear& l) { return unpack(l.w, l.name).to_f32(); }

void set_values(Linear& l, std::span<const float> values) {
  const Tensor t = Tensor::from_f32(l.name, l.w.value_dtype, {l.w.rows, l.w.cols}, values);
  l.w = pack(t, FormatKind::Dense, Pattern{});
}

// Statistics of an input whose columns are reordered: new column j is old column perm[j].
std::shared_ptr<LayerStatistics> permute_stats(const LayerStatistics& s,
                                               std::span<const int32_t> perm) {
  auto out = std::make_shared<LayerStatistics>();
  out->cols = s.cols;
  out->samples = s.samples;
  if (!s.sq_norms.empty()) {
    out->sq_norms.resize(s.sq_norms.size());
    for (int64_t j = 0; j < s.cols; ++j) out->sq_norms[j] = s.sq_norms[perm[j]];
  }
  if (!s.hessian.empty()) {
    out->hessian.resize(s.hessian.size());
    for (int64_t i = 0; i < s.cols; ++i)
      for (int64_t j = 0; j < s.cols; ++j)
        out->hessian[i * s.cols + j] = s.hessian[perm[i] * s.cols + perm[j]];
  }
  return out;
}

// Per-input-column weight of the method's score (1 for magnitude).
std::vector<float> column_weights(const std::string& method, const LayerStatistics* s,
                                  int64_t cols, const std::string& layer) {
  std::vector<float> w(static_cast<size_t>(cols), 1.0f);
  if (method == "magnitude") return w;
  if (!s) fail("--permute with --method {}: no calibration statistics for '{}'", method, layer);
  if (s->cols != cols)
    fail("--permute: layer '{}' has {} inputs but its statistics {}", layer, cols, s->cols);
  if (method == "wanda") {
    for (int64_t j = 0; j < cols; ++j) w[j] = float(std::sqrt(s->sq_norms.at(j)));
    return w;
  }
  if (s->hessian.empty())
    fail("--permute with --method sparsegpt: layer '{}' has no Hessian", layer);
  // diag(H^-1)_j = sum_i U_ij^2 with H^-1 = U^T U.
  const SparseGptHessian h = sparsegpt_prepare(s->hessian, cols);
  for (int64_t j = 0; j < cols; ++j) {
    double d = 0;
    for (int64_t i = 0; i <= j; ++i) d += double(h.hinv_upper[i * cols + j]) * h.hinv_upper[i * cols + j];
    w[j] = h.dead[j] || d <= 0 ? 0.0f : float(1.0 / std::sqrt(d));
  }
  return w;
}

// Calibration output error of layer `l` holding `values` once pruned by `method`:
// sum over rows of e^T H e with e = W - W_pruned and H = X^T X from `s` (columns in the order
// of `values`).
double pruned_output_error(const Linear& l, std::span<const float> values, const std::string& method,
                           const Pattern& pattern, const std::shared_ptr<LayerStatistics>& s) {
  const int64_t rows = l.w.rows, n = l.w.cols;
  if (s->hessian.size() != size_t(n * n))
    fail("--permute-guard: layer '{}' has no calibration Hessian ({} values for {} inputs)", l.name,
         s->hessian.size(), n);
  Linear tmp;
  tmp.name = l.name;
  tmp.w = pack(Tensor::from_f32(l.name, DType::F32, {rows, n}, values), FormatKind::Dense, Pattern{});
  CalibrationStatistics one;
  one.layers[l.name] = s;
  prune_linears({&tmp}, method, pattern, &one);
  const std::vector<float> pruned = values_of(tmp);
  const float* h = s->hessian.data();
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> e(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) e[j] = double(values[r * n + j]) - pruned[r * n + j];
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (e[i] == 0) continue;
      double hi = 0;
      for (int64_t j = 0; j < n; ++j) hi += double(h[i * n + j]) * e[j];
      acc += e[i] * hi;
    }
    total += acc;
  }
  return total;
}

std::vector<float> scores_of(std::span<const float> values, std::span<const float> colw,
                             int64_t cols) {
  std::vector<float> s(values.size());
  for (size_t i = 0; i < values.size(); ++i) s[i] = std::fabs(values[i]) * colw[i % cols];
  return s;
}

// permute_model for blocks [first, last).
CalibrationStatistics permute_blocks(LlamaModel& model, int64_t first, int64_t last,
                                     const std::string& method, const Pattern& pattern,
                                     const CalibrationStatistics* stats,
                                     const PermutationOptions& options,
                                     const std::function<void(const Linear&)>& progress,
                                     PermutationSummary* summary) {
  if (method != "magnitude" && method != "wanda" && method != "sparsegpt")
    fail("--method '{}': expected magnitude, wanda or sparsegpt", method);
  if (pattern.kind != PatternKind::NM && pattern.kind != PatternKind::VNM)
    fail("--permute: pattern '{}' has no groups of M inputs to permute; use N:M or V:N:M",
         pattern.to_string());
  if (method != "magnitude" && !stats) fail("--permute with --method {}: needs calibration", method);
  CalibrationStatistics out;
  if (stats) {
    out.windows = stats->windows;
    out.tokens = stats->tokens;
  }
  PermutationSummary sum;
  const bool energy = options.objective == PermutationObjective::OutputEnergy;
  if (energy && !stats)
    fail("--permute-objective output with --method {}: needs calibration statistics (the "
         "calibration inputs' norms)", method);
  if (options.guard && !stats)
    fail("--permute-guard with --method {}: needs calibration statistics with the Hessian", method);
  const auto stat_of = [&](const Linear& l) -> const LayerStatistics* {
    return stats ? &stats->at(l.name) : nullptr;  // magnitude uses them for OutputEnergy only
  };
  // Finds one permutation for the inputs of `group` (layers that read the same input: q/k/v,
  // gate/up, or one layer alone), each with its own scores, summed over the group; reports the
  // kept importance (or energy) and, with the guard, the group's pruned calibration error.
  const auto search = [&](const std::vector<Linear*>& group,
                          const std::vector<std::vector<float>>& values) {
    const int64_t cols = group.front()->w.cols;
    std::vector<std::vector<float>> scores(group.size()), objective(group.size());
    std::vector<ScoreMatrix> matrices;
    for (size_t k = 0; k < group.size(); ++k) {
      const Linear& l = *group[k];
      const LayerStatistics* s = stat_of(l);
      scores[k] = scores_of(values[k], column_weights(method, s, cols, l.name), cols);
      if (energy) {  // W_ij^2 * ||X_j||^2
        if (s->sq_norms.size() != size_t(cols))
          fail("--permute-objective output: layer '{}' has {} inputs but {} calibration norms",
               l.name, cols, s->sq_norms.size());
        objective[k].resize(values[k].size());
        for (size_t i = 0; i < values[k].size(); ++i)
          objective[k][i] = values[k][i] * values[k][i] * float(s->sq_norms[i % size_t(cols)]);
      }
      matrices.push_back({scores[k], l.w.rows, objective[k]});
    }
    auto perm = find_channel_permutation(pattern, matrices, cols, options);
    std::vector<int32_t> identity(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) identity[size_t(j)] = int32_t(j);
    for (size_t k = 0; k < group.size(); ++k) {
      const int64_t rows = group[k]->w.rows;
      const auto kept = [&](std::span<const int32_t> p) {
        const auto ps = permute_columns(scores[k], rows, cols, p);
        return energy ? kept_value(pattern, ps, permute_columns(objective[k], rows, cols, p), rows,
                                   cols)
                      : kept_score(pattern, ps, rows, cols);
      };
      sum.kept_identity += kept(identity);
      sum.kept_permuted += kept(perm);
    }
    if (options.guard) {  // the pruned layers' calibration output error decides
      double without = 0, with = 0;
      for (size_t k = 0; k < group.size(); ++k) {
        const Linear& l = *group[k];
        const auto& original = stats->layers.at(l.name);
        const double e0 = pruned_output_error(l, values[k], method, pattern, original);
        without += e0;
        with += perm == identity ? e0
                                 : pruned_output_error(l, permute_columns(values[k], l.w.rows, cols, perm),
                                                       method, pattern, permute_stats(*original, perm));
      }
      sum.guarded += int64_t(group.size());
      sum.error_identity += without;
      if (with < without) {
        sum.error_chosen += with;
      } else {
        sum.error_chosen += without;
        if (perm != identity) sum.reverted += int64_t(group.size());
        perm = identity;
      }
    }
    return perm;
  };
  // Permutes the inputs of `group` (one shared permutation, one shared statistics object for
  // layers that shared one).
  const auto permute_group = [&](const std::vector<Linear*>& group) {
    std::vector<std::vector<float>> values;
    for (const Linear* l : group) values.push_back(values_of(*l));
    const auto perm = search(group, values);
    std::map<const LayerStatistics*, std::shared_ptr<LayerStatistics>> permuted;
    for (size_t k = 0; k < group.size(); ++k) {
      Linear& l = *group[k];
      set_values(l, permute_columns(values[k], l.w.rows, l.w.cols, perm));
      if (!std::is_sorted(perm.begin(), perm.end())) l.input_perm = perm;  // identity: no gather
      if (const LayerStatistics* s = stat_of(l)) {
        auto& p = permuted[s];
        if (!p) p = permute_stats(*s, perm);
        out.layers[l.name] = p;
      }
      if (progress) progress(l);
    }
    return perm;
  };

  for (int64_t b = first; b < last; ++b) {
    LlamaLayer& layer = model.weights().layers[size_t(b)];
    for (const Linear* l : {&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.w_gate,
                            &layer.w_up, &layer.w_down})
      if (!l->input_perm.empty())
        fail("--permute: layer '{}' already has an input permutation (a model pruned with "
             "--permute); permute the original model instead",
             l->name);
    // ffn_down: folded into the rows of gate and up (SwiGLU is elementwise), nothing stored.
    {
      Linear& down = layer.w_down;
      const auto perm = permute_group({&down});
      down.input_perm.clear();
      for (Linear* producer : {&layer.w_gate, &layer.w_up})
        set_values(*producer,
                   permute_rows(values_of(*producer), producer->w.rows, producer->w.cols, perm));
    }
    // q/k/v read one input, gate/up another: one permutation each, so that the stacked product
    // (one gather, one fused GEMM on the GPU) still applies.
    if (options.shared) {
      permute_group({&layer.wq, &layer.wk, &layer.wv});
      permute_group({&layer.wo});
      permute_group({&layer.w_gate, &layer.w_up});
    } else {
      for (Linear* l : {&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.w_gate, &layer.w_up})
        permute_group({l});
    }
  }
  if (summary) *summary = sum;
  return out;
}

}  // namespace

CalibrationStatistics permute_model(LlamaModel& model, const std::string& method,
                                    const Pattern& pattern, const CalibrationStatistics* stats,
                                    const PermutationOptions& options,
                                    const std::function<void(const Linear&)>& progress,
                                    PermutationSummary* summary) {
  return permute_blocks(model, 0, int64_t(model.weights().layers.size()), method, pattern, stats,
                        options, progress, summary);
}

CalibrationStatistics permute_block(LlamaModel& model, int64_t block, const std::string& method,
                                    const Pattern& pattern, const CalibrationStatistics* stats,
                                    const PermutationOptions& options,
                                    const std::function<void(const Linear&)>& progress,
                                    PermutationSummary* summary) {
  block_linears(model, block);  // range check
  return permute_blocks(model, block, block + 1, method, pattern, stats, options, progress,
                        summary);
}

}  // namespace sparsa
