// Calibration statistics, Wanda, SparseGPT and whole-model pruning (tiny random models).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"
#include "test_util.h"
#include "tiny_llama.h"

namespace sparsa {
namespace {

using test::random_values;

// Inputs with correlated channels of different scales, as real activations have.
std::vector<float> correlated_inputs(int64_t n, int64_t k, uint64_t seed) {
  const auto base = random_values(size_t(n * k), seed);
  const auto scale = random_values(size_t(k), seed + 1);
  std::vector<float> x(size_t(n * k));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) {
      const float shared = base[size_t(r * k + (j / 4) * 4)];  // channels in fours share a part
      x[size_t(r * k + j)] = (0.6f * shared + base[size_t(r * k + j)]) * (0.2f + 3 * std::fabs(scale[size_t(j)]));
    }
  return x;
}

std::vector<float> gram(const std::vector<float>& x, int64_t n, int64_t k) {
  std::vector<float> h(size_t(k * k), 0.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) h[size_t(i * k + j)] += x[size_t(r * k + i)] * x[size_t(r * k + j)];
  return h;
}

// ||X W^T - X Wp^T||_F / ||X W^T||_F.
double output_error(const std::vector<float>& x, int64_t n, int64_t k, const std::vector<float>& w,
                    const std::vector<float>& wp, int64_t rows) {
  double num = 0, den = 0;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < rows; ++o) {
      double a = 0, b = 0;
      for (int64_t j = 0; j < k; ++j) {
        a += double(x[size_t(r * k + j)]) * w[size_t(o * k + j)];
        b += double(x[size_t(r * k + j)]) * wp[size_t(o * k + j)];
      }
      num += (a - b) * (a - b);
      den += a * a;
    }
  return std::sqrt(num / den);
}

TEST(SparseGpt, PrepareGivesTheUpperCholeskyFactorOfTheDampedInverse) {
  for (int64_t k : {1, 7, 40, 97}) {
    const int64_t n = 3 * k + 5;
    const auto x = correlated_inputs(n, k, 10 + k);
    const auto h = gram(x, n, k);
    const SparseGptHessian p = sparsegpt_prepare(h, k, 0.01);
    double mean = 0;
    for (int64_t j = 0; j < k; ++j) mean += h[size_t(j * k + j)] / double(k);
    // (U^T U) (H + damp I) = I
    double worst = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double s = 0;
        for (int64_t a = 0; a < k; ++a) {
          double hinv = 0;  // (U^T U)[i][a]
          for (int64_t b = 0; b <= std::min(i, a); ++b)
            hinv += double(p.hinv_upper[size_t(b * k + i)]) * p.hinv_upper[size_t(b * k + a)];
          s += hinv * (h[size_t(a * k + j)] + (a == j ? 0.01 * mean : 0.0));
        }
        worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_LT(worst, 2e-3) << "k = " << k;
    for (int64_t j = 0; j < k; ++j) EXPECT_GT(p.hinv_upper[size_t(j * k + j)], 0.0f);
  }
}

TEST(SparseGpt, ReconstructsBetterThanMagnitudeAndWandaAndSatisfiesThePattern) {
  const int64_t rows = 48, k = 101, n = 300;  // K ragged for every M
  const auto x = correlated_inputs(n, k, 3);
  const auto h = gram(x, n, k);
  std::vector<double> sq(size_t(k), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) sq[size_t(j)] += double(x[size_t(r * k + j)]) * x[size_t(r * k + j)];
  const auto wv = random_values(size_t(rows * k), 4);
  const Tensor w = Tensor::from_f32("layer", DType::F32, {rows, k}, wv);
  const SparseGptHessian prepared = sparsegpt_prepare(h, k);
  const auto magnitude = make_criterion("magnitude");
  const auto wanda = make_wanda_criterion(sq);
  for (const char* text : {"unstructured:0.5", "2:4", "4:8", "16:2:5", "16:2:8", "1:4"}) {
    const Pattern p = Pattern::parse(text);
    for (int64_t block : {128, 16, 1}) {
      // A one-column block makes the unstructured mask per column: not SparseGPT's choice.
      if (block == 1 && p.kind == PatternKind::Unstructured) continue;
      const Tensor sg = sparsegpt_prune(w, p, prepared, block);
      const auto sgv = sg.to_f32();
      const auto v = validate(p, sgv, rows, k);
      EXPECT_TRUE(v.ok) << text << " block " << block << ": " << v.violation;
      const Tensor mg = prune(w, p, *magnitude);
      Tensor wd = Tensor::from_f32("layer", DType::F32, {rows, k}, wv);
      apply_mask(wd, make_row_mask(p, wanda->scores(w), rows, k));
      const double e_sg = output_error(x, n, k, wv, sgv, rows);
      const double e_mg = output_error(x, n, k, wv, mg.to_f32(), rows);
      const double e_wd = output_error(x, n, k, wv, wd.to_f32(), rows);
      EXPECT_LT(e_sg, e_wd) << text << " block " << block;
      EXPECT_LT(e_wd, e_mg * 1.05) << text;
      EXPECT_LT(e_sg, 0.8 * e_mg) << text << " block " << block << ": sparsegpt " << e_sg
                                  << ", magnitude " << e_mg << ", wanda " << e_wd;
    }
  }
}

TEST(SparseGpt, LazyBlocksGiveTheSameResultForNM) {
  // For N:M the masks are chosen per group, so the block size only changes the order of the
  // floating-point updates.
  const int64_t rows = 20, k = 64, n = 150;
  const auto x = correlated_inputs(n, k, 8);
  const SparseGptHessian prepared = sparsegpt_prepare(gram(x, n, k), k);
  const Tensor w = Tensor::from_f32("w", DType::F32, {rows, k}, random_values(size_t(rows * k), 9));
  const auto a = sparsegpt_prune(w, Pattern::parse("2:4"), prepared, 4).to_f32();
  const auto b = sparsegpt_prune(w, Pattern::parse("2:4"), prepared, 64).to_f32();
  EXPECT_LT(test::relative_error(a, b), 1e-4);
}

TEST(SparseGpt, DeadInputsAreZeroedAndBadInputThrows) {
  const int64_t rows = 8, k = 16, n = 40;
  auto x = correlated_inputs(n, k, 12);
  for (int64_t r = 0; r < n; ++r) x[size_t(r * k + 5)] = 0.0f;  // input 5 never active
  const SparseGptHessian prepared = sparsegpt_prepare(gram(x, n, k), k);
  EXPECT_EQ(prepared.dead[5], 1);
  const Tensor w = Tensor::from_f32("w", DType::F32, {rows, k}, random_values(size_t(rows * k), 13));
  const auto out = sparsegpt_prune(w, Pattern::parse("2:4"), prepared).to_f32();
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(out[size_t(r * k + 5)], 0.0f);

  const auto expect_throw = [](auto&& f, const std::vector<std::string>& phrases) {
    try {
      f();
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      for (const auto& p : phrases) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  expect_throw([&] { sparsegpt_prepare(std::vector<float>(10, 1.0f), 4); }, {"10 entries", "4x4"});
  expect_throw([&] { sparsegpt_prune(w, Pattern::parse("block:4x4:0.5"), prepared); },
               {"'w'", "block:4x4:0.5", "unstructured, N:M and V:N:M"});
  const Tensor narrow = Tensor::from_f32("narrow", DType::F32, {rows, 8}, random_values(size_t(rows * 8), 1));
  expect_throw([&] { sparsegpt_prune(narrow, Pattern::parse("2:4"), prepared); },
               {"'narrow'", "8 input columns", "Hessian has 16"});
  expect_throw([&] { make_wanda_criterion(std::vector<double>(3, 1.0))->scores(narrow); },
               {"'narrow'", "8 input columns", "3"});
}

TEST(Wanda, ScoresAndPerRowMasks) {
  const int64_t rows = 6, k = 20;
  const auto wv = random_values(size_t(rows * k), 21);
  std::vector<double> sq(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) sq[size_t(j)] = 0.5 + j * j;
  const Tensor w = Tensor::from_f32("w", DType::F32, {rows, k}, wv);
  const auto s = make_wanda_criterion(sq)->scores(w);
  for (int64_t i = 0; i < rows * k; ++i)
    EXPECT_FLOAT_EQ(s[size_t(i)], std::fabs(wv[size_t(i)]) * float(std::sqrt(sq[size_t(i % k)])));
  const auto keep = make_row_mask(Pattern::parse("unstructured:0.3"), s, rows, k);
  for (int64_t r = 0; r < rows; ++r) {
    int kept = 0;
    float min_kept = 1e30f, max_pruned = -1;
    for (int64_t j = 0; j < k; ++j) {
      const float v = s[size_t(r * k + j)];
      if (keep[size_t(r * k + j)]) ++kept, min_kept = std::min(min_kept, v);
      else max_pruned = std::max(max_pruned, v);
    }
    EXPECT_EQ(kept, 14) << "row " << r;  // 30% of 20 pruned in every row
    EXPECT_GE(min_kept, max_pruned) << "row " << r;
  }
  // Other patterns: make_mask's own groups.
  EXPECT_EQ(make_row_mask(Pattern::parse("2:4"), s, rows, k), make_mask(Pattern::parse("2:4"), s, rows, k));
}

TEST(Calibration, StatisticsMatchTheObservedInputs) {
  test::TinyLlama m;
  LlamaModel model = LlamaModel::from_gguf(GgufFile::open(write_tiny(m, test::temp_dir())));
  std::vector<int32_t> tokens(40);
  std::mt19937 rng(3);
  for (auto& t : tokens) t = int32_t(rng() % m.vocab);
  // Reference: collect the inputs ourselves.
  std::map<std::string, std::vector<float>> seen;
  model.observer = [&](const Linear& l, std::span<const float> x, int64_t) {
    seen[l.name].insert(seen[l.name].end(), x.begin(), x.end());
  };
  for (int w = 0; w < 2; ++w) {
    LlamaState state(model.config(), 16);
    model.forward(state, std::span(tokens).subspan(size_t(w * 16), 16));
  }
  model.observer = nullptr;
  const CalibrationStatistics stats = calibrate(model, tokens, {16, 2, true});
  EXPECT_EQ(stats.windows, 2);
  EXPECT_EQ(stats.tokens, 32);
  EXPECT_FALSE(model.observer);  // restored
  EXPECT_EQ(stats.layers.size(), size_t(7 * m.layers));  // not the head
  EXPECT_EQ(stats.layers.count("token_embd.weight"), 0u);
  EXPECT_EQ(stats.layers.at("blk.1.attn_q.weight"), stats.layers.at("blk.1.attn_v.weight"));
  EXPECT_EQ(stats.layers.at("blk.1.ffn_gate.weight"), stats.layers.at("blk.1.ffn_up.weight"));
  EXPECT_NE(stats.layers.at("blk.1.attn_q.weight"), stats.layers.at("blk.1.attn_output.weight"));
  for (const char* name : {"blk.0.attn_k.weight", "blk.1.attn_output.weight", "blk.1.ffn_down.weight"}) {
    const LayerStatistics& s = stats.at(name);
    const auto& x = seen[name];
    const int64_t k = s.cols, n = int64_t(x.size()) / k;
    EXPECT_EQ(s.samples, n) << name;
    const auto h = gram(x, n, k);
    for (int64_t j = 0; j < k; ++j) {
      double sq = 0;
      for (int64_t r = 0; r < n; ++r) sq += double(x[size_t(r * k + j)]) * x[size_t(r * k + j)];
      EXPECT_NEAR(s.sq_norms[size_t(j)], sq, 1e-6 * sq + 1e-9) << name;
    }
    EXPECT_LT(test::relative_error(s.hessian, h), 1e-5) << name;
  }
  try {
    (void)stats.at("nope");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'nope'"), std::string::npos);
  }
  EXPECT_THROW(calibrate(model, std::span(tokens).first(10), {16, 2, false}), Error);
}

TEST(PruneModel, EveryMethodAndPatternWritesALoadableModel) {
  test::TinyLlama m;
  const auto dir = test::temp_dir();
  const auto path = write_tiny(m, dir);
  const GgufFile source = GgufFile::open(path);
  std::vector<int32_t> tokens(48);
  std::mt19937 rng(5);
  for (auto& t : tokens) t = int32_t(rng() % m.vocab);
  LlamaModel dense = LlamaModel::from_gguf(source);
  const CalibrationStatistics stats = calibrate(dense, tokens, {16, 3, true});
  for (const char* method : {"magnitude", "wanda", "sparsegpt"})
    for (const char* text : {"unstructured:0.5", "2:4", "16:2:8"}) {
      const Pattern p = Pattern::parse(text);
      LlamaModel model = LlamaModel::from_gguf(source);
      prune_model(model, method, p, &stats);
      for (Linear* l : block_linears(model)) {
        const auto v = unpack(l->w).to_f32();
        EXPECT_TRUE(validate(p, v, l->w.rows, l->w.cols).ok) << method << " " << text << " " << l->name;
      }
      const auto out = dir / "pruned.gguf";
      write_pruned_gguf(source, model, out, {{"sparsa.pattern", p.to_string()}});
      const GgufFile written = GgufFile::open(out);
      EXPECT_EQ(written.get_string("sparsa.pattern"), p.to_string());
      EXPECT_EQ(written.get_int("llama.block_count"), m.layers);
      LlamaModel back = LlamaModel::from_gguf(written);
      pack_model(back, p);
      EXPECT_LT(model_bytes(back), model_bytes(dense)) << method << " " << text;
      LlamaState s1(model.config(), 16), s2(model.config(), 16);
      const auto a = model.forward(s1, std::span(tokens).first(16), true);
      const auto b = back.forward(s2, std::span(tokens).first(16), true);
      EXPECT_LT(test::relative_error(a, b), 1e-5) << method << " " << text;
    }
  LlamaModel model = LlamaModel::from_gguf(source);
  EXPECT_THROW(prune_model(model, "obs", Pattern::parse("2:4"), &stats), Error);
  EXPECT_THROW(prune_model(model, "wanda", Pattern::parse("2:4"), nullptr), Error);
  EXPECT_THROW(prune_model(model, "magnitude", Pattern::parse("unstructured:0.5:global"), nullptr), Error);
}

}  // namespace
}  // namespace sparsa
