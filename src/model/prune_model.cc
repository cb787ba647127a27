// Whole-model pruning: every transformer-block linear layer through magnitude, Wanda or
// SparseGPT, then (optionally) repacked into the pattern's packed format.
#include <memory>

#include "sparsa/error.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"

namespace sparsa {

void prune_model(LlamaModel& model, const std::string& method, const Pattern& pattern,
                 const CalibrationStatistics* stats,
                 const std::function<void(const Linear&)>& progress) {
  prune_linears(block_linears(model), method, pattern, stats, progress);
}

void prune_linears(const std::vector<Linear*>& layers, const std::string& method,
                   const Pattern& pattern, const CalibrationStatistics* stats,
                   const std::function<void(const Linear&)>& progress) {
  if (method != "magnitude" && method != "wanda" && method != "sparsegpt")
    fail("--method '{}': expected magnitude, wanda or sparsegpt", method);
  if (pattern.kind == PatternKind::Unstructured && pattern.global)
    fail("pattern '{}': global patterns are not supported for models; use unstructured:{}",
         pattern.to_string(), pattern.sparsity);
  if (method != "magnitude" && !stats) fail("--method {}: needs calibration statistics", method);
  const auto magnitude = make_criterion("magnitude");
  // Layers that share an input (q/k/v, gate/up) share the prepared Hessian.
  const LayerStatistics* prepared_for = nullptr;
  SparseGptHessian prepared;
  for (Linear* layer : layers) {
    const DType dtype = layer->w.value_dtype;
    Tensor dense = unpack(layer->w, layer->name);
    Tensor pruned;
    if (method == "magnitude") {
      pruned = prune(dense, pattern, *magnitude);
    } else if (method == "wanda") {
      const LayerStatistics& s = stats->at(layer->name);
      const auto criterion = make_wanda_criterion(s.sq_norms);
      const std::vector<float> scores = criterion->scores(dense);
      const auto keep = make_row_mask(pattern, scores, dense.rows(), dense.cols());
      pruned = Tensor::from_f32(layer->name, dtype, dense.shape(), dense.to_f32());
      apply_mask(pruned, keep);
    } else {
      const LayerStatistics& s = stats->at(layer->name);
      if (s.hessian.empty())
        fail("--method sparsegpt: layer '{}' has no Hessian in the calibration statistics",
             layer->name);
      if (prepared_for != &s) {
        prepared = sparsegpt_prepare(s.hessian, s.cols);
        prepared_for = &s;
      }
      const Tensor f32 = sparsegpt_prune(dense, pattern, prepared);
      // Back to the layer's dtype; rounding keeps zeros zero.
      pruned = Tensor::from_f32(layer->name, dtype, dense.shape(), f32.to_f32());
    }
    layer->w = pack(pruned, FormatKind::Dense, Pattern{});
    if (progress) progress(*layer);
  }
}

SequentialPruneSummary prune_model_sequential(
    LlamaModel& model, const std::string& method, const Pattern& pattern,
    std::span<const int32_t> tokens, const SequentialPruneOptions& options,
    const std::function<void(int64_t block, int64_t blocks)>& block_progress,
    const std::function<void(const Linear&)>& progress) {
  if (method != "magnitude" && method != "wanda" && method != "sparsegpt")
    fail("--method '{}': expected magnitude, wanda or sparsegpt", method);
  if (method != "magnitude" && !options.calibrated)
    fail("--sequential with --method {}: needs calibration statistics", method);
  if (options.permute && pattern.kind != PatternKind::NM && pattern.kind != PatternKind::VNM)
    fail("--permute: pattern '{}' has no groups of M inputs to permute; use N:M or V:N:M",
         pattern.to_string());
  SequentialPruneSummary summary;
  const int64_t blocks = int64_t(model.weights().layers.size());
  for (int64_t b = 0; b < blocks; ++b) {
    if (block_progress) block_progress(b, blocks);
    // Block b's inputs as the model stands now: blocks < b already permuted and pruned.
    CalibrationStatistics stats;
    if (options.calibrated) {
      CalibrationOptions copt = options.calibration;
      copt.block = b;
      stats = calibrate(model, tokens, copt);
      summary.windows = stats.windows;
      summary.tokens = stats.tokens;
    }
    const CalibrationStatistics* calibrated = options.calibrated ? &stats : nullptr;
    CalibrationStatistics permuted;
    const CalibrationStatistics* prune_stats = method == "magnitude" ? nullptr : calibrated;
    if (options.permute) {
      PermutationSummary s;
      permuted = permute_block(model, b, method, pattern, calibrated, options.permutation, {}, &s);
      summary.permutation.kept_identity += s.kept_identity;
      summary.permutation.kept_permuted += s.kept_permuted;
      summary.permutation.error_identity += s.error_identity;
      summary.permutation.error_chosen += s.error_chosen;
      summary.permutation.guarded += s.guarded;
      summary.permutation.reverted += s.reverted;
      if (prune_stats) prune_stats = &permuted;
    }
    prune_linears(block_linears(model, b), method, pattern, prune_stats, progress);
  }
  return summary;
}

void pack_model(LlamaModel& model, const Pattern& pattern) {
  const FormatKind format = default_format(pattern);
  for (Linear* layer : block_linears(model)) {
    if (layer->w.format == format) continue;
    const Tensor dense = unpack(layer->w, layer->name);
    layer->w = pack(dense, format, pattern);
  }
}

int64_t model_bytes(const LlamaModel& model) {
  const LlamaWeights& w = model.weights();
  int64_t bytes = 0;
  for (const LlamaLayer& l : w.layers) {
    for (const Linear* x : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      bytes += int64_t(x->w.total_bytes());
    bytes += int64_t((l.attn_norm.size() + l.ffn_norm.size()) * sizeof(float));
  }
  bytes += int64_t((w.token_embedding.size() + w.output_norm.size() +
                    w.rope_freq_factors.size()) * sizeof(float));
  if (!model.config().tied_embeddings) bytes += int64_t(w.output.w.total_bytes());
  return bytes;
}

}  // namespace sparsa
