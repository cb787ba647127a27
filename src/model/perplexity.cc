// Perplexity over non-overlapping windows: exp(mean negative log-likelihood of each token given
// the tokens before it in its window).
#include <algorithm>
#include <chrono>
#include <cmath>

#include "sparsa/error.h"
#include "sparsa/model.h"

namespace sparsa {

PerplexityResult windowed_perplexity(
    std::span<const int32_t> tokens, int64_t ctx, int64_t max_windows, int64_t vocab,
    const std::function<std::vector<float>(std::span<const int32_t> window)>& window_logits,
    const std::function<void(int64_t, int64_t)>& progress) {
  if (ctx < 2) fail("perplexity: context {} is too short (at least 2 tokens)", ctx);
  const int64_t total = int64_t(tokens.size());
  int64_t windows = total / ctx + (total % ctx >= 2 ? 1 : 0);
  if (max_windows >= 0) windows = std::min(windows, max_windows);
  if (windows == 0) fail("perplexity: {} tokens are too few to score (at least 2 needed)", total);

  const auto start = std::chrono::steady_clock::now();
  double nll = 0;
  int64_t scored = 0;
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t begin = w * ctx, len = std::min(ctx, total - begin);
    const auto window = tokens.subspan(begin, len);
    const std::vector<float> logits = window_logits(window);
    if (int64_t(logits.size()) != len * vocab)
      fail("perplexity: the forward returned {} logits for a window of {} tokens x {} classes",
           logits.size(), len, vocab);
    double window_nll = 0;
#pragma omp parallel for reduction(+ : window_nll)
    for (int64_t t = 0; t < len - 1; ++t) {
      const float* row = logits.data() + t * vocab;
      float max_logit = row[0];
      for (int64_t j = 1; j < vocab; ++j) max_logit = std::max(max_logit, row[j]);
      double sum = 0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - max_logit);
      window_nll += std::log(sum) + max_logit - row[window[t + 1]];
    }
    nll += window_nll;
    scored += len - 1;
    if (progress) progress(w + 1, windows);
  }
  PerplexityResult r;
  r.scored_tokens = scored;
  r.windows = windows;
  r.mean_nll = nll / double(scored);
  r.perplexity = std::exp(r.mean_nll);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

PerplexityResult perplexity(const LlamaModel& model, std::span<const int32_t> tokens, int64_t ctx,
                            int64_t max_windows,
                            const std::function<void(int64_t, int64_t)>& progress) {
  LlamaState state(model.config(), std::max<int64_t>(ctx, 1));
  return windowed_perplexity(
      tokens, ctx, max_windows, model.config().vocab_size,
      [&](std::span<const int32_t> window) {
        state.reset();
        return model.forward(state, window, true);
      },
      progress);
}

}  // namespace sparsa
