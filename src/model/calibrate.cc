// Calibration statistics: run the model over text windows and accumulate, per linear layer,
// the squared norms of its input channels (Wanda) and X^T X (SparseGPT).
#include <algorithm>
#include <cstring>

#include "sparsa/error.h"
#include "sparsa/model_prune.h"

namespace sparsa {
namespace {

// H += X^T X on the upper triangle (mirrored by the caller at the end); one thread per row
// of H block, each row's inner loop contiguous.
void accumulate_hessian(std::vector<float>& h, std::span<const float> x, int64_t rows,
                        int64_t cols) {
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < cols; ++i) {
    float* hi = h.data() + i * cols;
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data() + r * cols;
      const float xi = xr[i];
      if (xi == 0.0f) continue;
#pragma omp simd
      for (int64_t j = i; j < cols; ++j) hi[j] += xi * xr[j];
    }
  }
}

// Thrown by the observer after the last product of CalibrationOptions::block: the rest of the
// forward is not needed.
struct StopForward {};

}  // namespace

const LayerStatistics& CalibrationStatistics::at(const std::string& name) const {
  const auto it = layers.find(name);
  if (it == layers.end() || !it->second)
    fail("calibration statistics: layer '{}' was never observed", name);
  return *it->second;
}

std::vector<Linear*> block_linears(LlamaModel& model) {
  std::vector<Linear*> out;
  for (LlamaLayer& l : model.weights().layers)
    for (Linear* x : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) out.push_back(x);
  return out;
}

std::vector<Linear*> block_linears(LlamaModel& model, int64_t block) {
  auto& layers = model.weights().layers;
  if (block < 0 || block >= int64_t(layers.size()))
    fail("block {}: the model has {} transformer blocks", block, layers.size());
  LlamaLayer& l = layers[size_t(block)];
  return {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down};
}

CalibrationStatistics calibrate(LlamaModel& model, std::span<const int32_t> tokens,
                                const CalibrationOptions& options) {
  if (options.window < 2) fail("calibration: window of {} tokens (at least 2)", options.window);
  int64_t windows = int64_t(tokens.size()) / options.window;
  if (options.max_windows >= 0) windows = std::min(windows, options.max_windows);
  if (windows < 1)
    fail("calibration: {} tokens do not fill one window of {}", tokens.size(), options.window);

  std::vector<Linear*> only;  // options.block's layers; empty = every block
  if (options.block >= 0 || options.block < -1) {
    if (options.block < 0) fail("calibration: block {} (expected -1 or a block index)", options.block);
    only = block_linears(model, options.block);
  }
  const Linear* stop_after = only.empty() ? nullptr : only.back();  // ffn_down: last product

  CalibrationStatistics stats;
  const Linear* head = &model.weights().output;
  // q/k/v (and gate/up) are called back to back with the same input buffer: they share one
  // statistics object, counted once.
  const float* last_x = nullptr;
  int64_t last_rows = -1;
  bool last_permuted = false;
  std::shared_ptr<LayerStatistics> last;
  auto saved = std::move(model.observer);
  model.observer = [&](const Linear& layer, std::span<const float> x, int64_t rows) {
    if (&layer == head) return;
    if (!only.empty() && std::find(only.begin(), only.end(), &layer) == only.end()) return;
    // A layer with an input permutation reads a freshly gathered buffer whose address may
    // repeat for a different input: never shared.
    const bool same_input = x.data() == last_x && rows == last_rows && last &&
                            last->cols == layer.w.cols && layer.input_perm.empty() &&
                            !last_permuted;
    auto& slot = stats.layers[layer.name];
    if (!slot) {
      if (same_input) {
        slot = last;
      } else {
        slot = std::make_shared<LayerStatistics>();
        slot->cols = layer.w.cols;
        slot->sq_norms.assign(size_t(layer.w.cols), 0.0);
        if (options.hessian) slot->hessian.assign(size_t(layer.w.cols * layer.w.cols), 0.0f);
      }
    }
    if (same_input && slot == last) return;  // this input was already counted
    LayerStatistics& s = *slot;
    const int64_t cols = s.cols;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) {
        const double v = x[size_t(r * cols + j)];
        s.sq_norms[size_t(j)] += v * v;
      }
    if (options.hessian) accumulate_hessian(s.hessian, x, rows, cols);
    s.samples += rows;
    last_x = x.data();
    last_rows = rows;
    last_permuted = !layer.input_perm.empty();
    last = slot;
    if (&layer == stop_after) throw StopForward{};
  };
  try {
    LlamaState state(model.config(), options.window);
    for (int64_t w = 0; w < windows; ++w) {
      state.reset();
      last_x = nullptr;
      try {
        model.forward(state, tokens.subspan(size_t(w * options.window), size_t(options.window)));
      } catch (const StopForward&) {
      }
    }
  } catch (...) {
    model.observer = std::move(saved);
    throw;
  }
  model.observer = std::move(saved);
  // Mirror the upper triangles.
  std::vector<LayerStatistics*> done;
  for (auto& [name, s] : stats.layers) {
    if (std::find(done.begin(), done.end(), s.get()) != done.end()) continue;
    done.push_back(s.get());
    if (s->hessian.empty()) continue;
    const int64_t n = s->cols;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) s->hessian[size_t(i * n + j)] = s->hessian[size_t(j * n + i)];
  }
  stats.windows = windows;
  stats.tokens = windows * options.window;
  return stats;
}

}  // namespace sparsa
