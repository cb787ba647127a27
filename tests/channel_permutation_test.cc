// V:N:M / N:M input-channel permutation: the search on random matrices, and a whole tiny Llama
// permuted (same function) and then pruned.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "sparsa/channel_permutation.h"
#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"
#include "test_util.h"
#include "tiny_llama.h"

namespace sparsa {
namespace {

using test::random_values;

bool is_permutation_of(const std::vector<int32_t>& perm, int64_t n) {
  std::vector<int32_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int32_t> iota(static_cast<size_t>(n));
  std::iota(iota.begin(), iota.end(), 0);
  return sorted == iota;
}

// |random| scores with a few heavy columns (activation outliers) and heavy rows.
std::vector<float> outlier_scores(int64_t rows, int64_t cols, uint64_t seed) {
  auto s = random_values(size_t(rows * cols), seed);
  const auto col_scale = random_values(size_t(cols), seed + 7);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float& x = s[size_t(r * cols + c)];
      x = std::fabs(x) * (0.1f + 4 * col_scale[size_t(c)] * col_scale[size_t(c)]);
    }
  return s;
}

TEST(ChannelPermutation, NeverLowersKeptImportanceAndTheMaskValidates) {
  int improved = 0, cases = 0;
  uint64_t seed = 11;
  for (const char* text : {"64:2:8", "16:2:5", "32:2:8", "16:2:4", "2:4", "4:8", "1:4"})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{64, 96}, {80, 61}, {33, 40}, {128, 13}}) {
      const Pattern p = Pattern::parse(text);
      const auto scores = outlier_scores(rows, cols, seed++);
      const auto weights = random_values(size_t(rows * cols), seed++);
      const auto perm = find_channel_permutation(p, {{scores, rows}}, cols, {.rounds = 8, .seed = seed});
      ASSERT_TRUE(is_permutation_of(perm, cols)) << text;
      const auto permuted = permute_columns(scores, rows, cols, perm);
      const double before = kept_score(p, scores, rows, cols);
      const double after = kept_score(p, permuted, rows, cols);
      EXPECT_GE(after, before) << text << " " << rows << "x" << cols;
      improved += after > before * (1 + 1e-6);
      ++cases;
      // The mask of the permuted matrix, applied to the permuted weights, satisfies the pattern.
      const auto keep = make_mask(p, permuted, rows, cols);
      auto w = permute_columns(weights, rows, cols, perm);
      for (size_t i = 0; i < w.size(); ++i)
        if (!keep[i]) w[i] = 0;
      const Validation v = validate(p, w, rows, cols);
      EXPECT_TRUE(v.ok) << text << ": " << v.violation;
    }
  // Outlier columns give the search room: most cases must gain, not just tie.
  EXPECT_GT(improved, cases * 3 / 4) << improved << " of " << cases;
}

TEST(ChannelPermutation, SpreadsClusteredHeavyColumnsForTwoFour) {
  // Columns 0..3 heavy in every row: 2:4 in identity order keeps 2 heavy per row; spread over
  // two groups it keeps all 4.
  const int64_t rows = 6, cols = 8;
  std::vector<float> s(size_t(rows * cols));
  const auto noise = random_values(s.size(), 3);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      s[size_t(r * cols + c)] = (c < 4 ? 10.0f : 1.0f) + 0.1f * std::fabs(noise[size_t(r * cols + c)]);
  const Pattern p = Pattern::parse("2:4");
  const auto perm = find_channel_permutation(p, {{s, rows}}, cols);
  const auto keep = make_mask(p, permute_columns(s, rows, cols, perm), rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      EXPECT_EQ(keep[size_t(r * cols + c)], perm[size_t(c)] < 4 ? 1 : 0) << r << "," << c;
}

TEST(ChannelPermutation, SeveralMatricesShareOnePermutation) {
  const int64_t cols = 40;
  const auto a = outlier_scores(32, cols, 5), b = outlier_scores(48, cols, 6);
  const Pattern p = Pattern::parse("16:2:8");
  const auto perm = find_channel_permutation(p, {{a, 32}, {b, 48}}, cols);
  ASSERT_TRUE(is_permutation_of(perm, cols));
  const double before = kept_score(p, a, 32, cols) + kept_score(p, b, 48, cols);
  const double after = kept_score(p, permute_columns(a, 32, cols, perm), 32, cols) +
                       kept_score(p, permute_columns(b, 48, cols, perm), 48, cols);
  EXPECT_GT(after, before);
}

TEST(ChannelPermutation, BadInputThrowsNamingTheProblem) {
  const auto s = random_values(64, 1);
  const auto expect_error = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { find_channel_permutation(Pattern::parse("unstructured:0.5"), {{s, 8}}, 8); },
               "'unstructured:0.5'");
  expect_error([&] { find_channel_permutation(Pattern::parse("2:4"), {{s, 7}}, 8); }, "7x8");
  auto nan = s;
  nan[3] = NAN;
  expect_error([&] { find_channel_permutation(Pattern::parse("2:4"), {{nan, 8}}, 8); }, "finite");
  expect_error([&] { permute_columns(s, 8, 8, std::vector<int32_t>(7)); }, "permutation of 7");
}

std::vector<int32_t> random_tokens(size_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> t(n);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (auto& x : t) x = int32_t(rng() % uint64_t(vocab));
  return t;
}

// An objective (what is kept, e.g. W^2 * ||X_j||^2) separate from the scores that choose the
// mask: the search's exact group terms must agree with kept_value over make_mask, the result
// never keeps less objective than the identity, and it keeps more than the permutation found
// for the scores alone (which ignores the objective).
TEST(ChannelPermutation, ObjectiveIsKeptUnderTheScoresMask) {
  int improved = 0, beats_importance = 0, cases = 0;
  double with_objective = 0, importance_only = 0;
  uint64_t seed = 101;
  for (const char* text : {"64:2:8", "16:2:5", "32:2:8", "2:4", "4:8"})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{64, 96}, {80, 61}, {33, 40}}) {
      const Pattern p = Pattern::parse(text);
      const auto weights = random_values(size_t(rows * cols), seed++);
      const auto act = random_values(size_t(cols), seed++);  // per-column activation scale
      std::vector<float> scores(weights.size()), objective(weights.size());
      for (size_t i = 0; i < weights.size(); ++i) {
        const float a = 0.05f + 8 * act[i % size_t(cols)] * act[i % size_t(cols)];
        scores[i] = std::fabs(weights[i]);              // magnitude mask
        objective[i] = weights[i] * weights[i] * a * a;  // output energy
      }
      // With the scores as objective, kept_value is kept_score.
      EXPECT_DOUBLE_EQ(kept_value(p, scores, scores, rows, cols), kept_score(p, scores, rows, cols));
      const auto perm = find_channel_permutation(p, {{scores, rows, objective}}, cols,
                                                 {.rounds = 6, .seed = seed});
      ASSERT_TRUE(is_permutation_of(perm, cols)) << text;
      const auto kept = [&](const std::vector<int32_t>& q) {
        return kept_value(p, permute_columns(scores, rows, cols, q),
                          permute_columns(objective, rows, cols, q), rows, cols);
      };
      std::vector<int32_t> identity(static_cast<size_t>(cols));
      std::iota(identity.begin(), identity.end(), 0);
      const double before = kept(identity), after = kept(perm);
      EXPECT_GE(after, before) << text << " " << rows << "x" << cols;
      improved += after > before * (1 + 1e-6);
      const auto plain = find_channel_permutation(p, {{scores, rows}}, cols, {.rounds = 6, .seed = seed});
      beats_importance += after >= kept(plain);
      with_objective += after;
      importance_only += kept(plain);
      ++cases;
      // The masked permuted weights still satisfy the pattern.
      const auto keep = make_mask(p, permute_columns(scores, rows, cols, perm), rows, cols);
      auto w = permute_columns(weights, rows, cols, perm);
      for (size_t i = 0; i < w.size(); ++i)
        if (!keep[i]) w[i] = 0;
      EXPECT_TRUE(validate(p, w, rows, cols).ok) << text;
    }
  EXPECT_GT(improved, cases * 3 / 4) << improved << " of " << cases;
  EXPECT_GT(beats_importance, cases * 3 / 4) << beats_importance << " of " << cases;
  EXPECT_GT(with_objective, importance_only);
}

TEST(ChannelPermutation, BadObjectiveThrowsNamingTheProblem) {
  const Pattern p = Pattern::parse("2:4");
  const auto scores = random_values(8 * 16, 3);
  const auto short_objective = random_values(8 * 15, 4);
  test::expect_error(
      [&] {
        find_channel_permutation(p, {{scores, 8, short_objective}}, 16);
      },
      {"120 objective values for a 8x16 matrix"});
  auto nan_objective = random_values(8 * 16, 5);
  nan_objective[17] = NAN;
  test::expect_error(
      [&] {
        find_channel_permutation(p, {{scores, 8, nan_objective}}, 16);
      },
      {"objective value is nan"});
  test::expect_error([&] { kept_value(p, scores, short_objective, 8, 16); },
                     {"120 objective values for 128 scores (8x16)"});
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

// The tiny Llama of the PermuteModel tests: written as GGUF, 48 random calibration tokens, the
// dense model's logits for the first 16 and its calibration statistics (3 windows of 16).
struct TinySetup {
  test::TinyLlama m;
  std::filesystem::path dir = test::temp_dir();
  GgufFile source;
  std::vector<int32_t> tokens;
  std::vector<float> reference;
  CalibrationStatistics stats;

  TinySetup(uint64_t seed, bool hessian)
      : source(GgufFile::open(write_tiny(m, dir))), tokens(random_tokens(48, m.vocab, seed)) {
    LlamaModel dense = model();
    reference = logits(dense);
    stats = calibrate(dense, tokens, {16, 3, hessian});
  }
  LlamaModel model() const { return LlamaModel::from_gguf(source); }
  std::vector<float> logits(const LlamaModel& model) const {
    LlamaState state(model.config(), 16);
    return model.forward(state, std::span(tokens).first(16), true);
  }
};

TEST(PermuteModel, PermutedUnprunedModelGivesTheSameLogits) {
  const TinySetup t(9, true);
  const GgufFile& source = t.source;
  const auto& tokens = t.tokens;
  const auto& reference = t.reference;
  const auto& dir = t.dir;
  const CalibrationStatistics& stats = t.stats;
  for (const char* method : {"magnitude", "wanda", "sparsegpt"})
    for (const char* text : {"16:2:5", "2:4"}) {
      const Pattern p = Pattern::parse(text);
      LlamaModel model = t.model();
      PermutationSummary summary;
      const CalibrationStatistics permuted = permute_model(
          model, method, p, std::string(method) == "magnitude" ? nullptr : &stats, {}, {}, &summary);
      EXPECT_GT(summary.kept_permuted, summary.kept_identity) << method << " " << text;
      int stored = 0;
      for (Linear* l : block_linears(model)) stored += !l->input_perm.empty();
      EXPECT_GT(stored, 0);
      for (const auto& l : model.weights().layers) EXPECT_TRUE(l.w_down.input_perm.empty());
      const auto logits = t.logits(model);
      // Only the summation order of the gemm changes.
      EXPECT_LT(max_abs_diff(logits, reference), 1e-4) << method << " " << text;
      EXPECT_LT(test::relative_error(logits, reference), 1e-6) << method << " " << text;
      // Statistics follow the permutation: wanda/sparsegpt calibration on the permuted model
      // sees the same (permuted) inputs.
      if (std::string(method) != "magnitude") {
        const CalibrationStatistics again = calibrate(model, tokens, {16, 3, true});
        for (const char* name : {"blk.1.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.attn_output.weight"}) {
          const auto& x = permuted.at(name).sq_norms;
          const auto& y = again.at(name).sq_norms;
          for (size_t j = 0; j < x.size(); ++j) EXPECT_NEAR(x[j], y[j], 1e-4 * y[j] + 1e-9) << name;
          EXPECT_LT(test::relative_error(permuted.at(name).hessian, again.at(name).hessian), 1e-5);
        }
      }
      // Pruned after the permutation: the stored layers satisfy the pattern, and the GGUF
      // round trip keeps the permutations (same logits after loading).
      prune_model(model, method, p, std::string(method) == "magnitude" ? nullptr : &permuted);
      for (Linear* l : block_linears(model)) {
        const auto v = unpack(l->w).to_f32();
        EXPECT_TRUE(validate(p, v, l->w.rows, l->w.cols).ok) << method << " " << text << " " << l->name;
      }
      const auto out = dir / "permuted.gguf";
      write_pruned_gguf(source, model, out, {{"sparsa.pattern", p.to_string()}});
      LlamaModel back = LlamaModel::from_gguf(GgufFile::open(out));
      pack_model(back, p);
      for (size_t i = 0; i < block_linears(back).size(); ++i)
        EXPECT_EQ(block_linears(back)[i]->input_perm, block_linears(model)[i]->input_perm);
      EXPECT_LT(test::relative_error(t.logits(model), t.logits(back)), 1e-5) << method << " " << text;
    }
}

// Layers that read one input share one permutation (q/k/v; gate/up), searched on all of them:
// one gather and one stacked product per input, one permuted statistics object (so SparseGPT
// prepares one Hessian for q/k/v), the same function before pruning; options.shared = false
// gives each layer its own. Kept importance never falls below the unpermuted model's.
TEST(PermuteModel, LayersReadingOneInputShareOnePermutation) {
  const TinySetup t(49, true);
  for (const bool shared : {true, false}) {
    SCOPED_TRACE(shared ? "shared" : "per layer");
    PermutationOptions options;
    options.shared = shared;
    options.rounds = 2;
    LlamaModel model = t.model();
    PermutationSummary summary;
    const Pattern p = Pattern::parse("2:4");
    const CalibrationStatistics permuted =
        permute_model(model, "sparsegpt", p, &t.stats, options, {}, &summary);
    EXPECT_GE(summary.kept_permuted, summary.kept_identity);
    int64_t differ = 0, stored = 0;
    for (const LlamaLayer& l : model.weights().layers) {
      for (const Linear* x : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up}) {
        stored += !x->input_perm.empty();
        if (!x->input_perm.empty()) EXPECT_TRUE(is_permutation_of(x->input_perm, x->w.cols));
      }
      differ += (l.wq.input_perm != l.wk.input_perm) + (l.wq.input_perm != l.wv.input_perm) +
                (l.w_gate.input_perm != l.w_up.input_perm);
      const auto* sq = permuted.layers.at(l.wq.name).get();
      const auto* sg = permuted.layers.at(l.w_gate.name).get();
      if (shared) {
        EXPECT_EQ(sq, permuted.layers.at(l.wk.name).get());
        EXPECT_EQ(sq, permuted.layers.at(l.wv.name).get());
        EXPECT_EQ(sg, permuted.layers.at(l.w_up.name).get());
      }
    }
    EXPECT_GT(stored, 0) << "no layer got a permutation: the test would prove nothing";
    if (shared)
      EXPECT_EQ(differ, 0);
    else
      EXPECT_GT(differ, 0) << "per-layer search found the same permutations everywhere";
    EXPECT_LT(test::relative_error(t.logits(model), t.reference), 1e-6);
    // The shared statistics are the permuted model's own: calibrating it again agrees.
    const CalibrationStatistics again = calibrate(model, t.tokens, {16, 3, true});
    for (const LlamaLayer& l : model.weights().layers)
      for (const Linear* x : {&l.wq, &l.wk, &l.wv, &l.w_gate, &l.w_up})
        EXPECT_LT(test::relative_error(permuted.at(x->name).hessian, again.at(x->name).hessian),
                  1e-5) << x->name;
    prune_model(model, "sparsegpt", p, &permuted);
    for (Linear* l : block_linears(model))
      EXPECT_TRUE(validate(p, unpack(l->w).to_f32(), l->w.rows, l->w.cols).ok) << l->name;
  }
}

// The output-energy objective (magnitude and Wanda masks): same function before pruning, more
// calibration output energy kept than the identity, and never a function of the eval text (the
// statistics come from the calibration tokens only).
TEST(PermuteModel, OutputEnergyObjectiveKeepsTheFunctionAndMoreEnergy) {
  const TinySetup t(19, false);
  const CalibrationStatistics& stats = t.stats;
  PermutationOptions energy;
  energy.objective = PermutationObjective::OutputEnergy;
  for (const char* method : {"magnitude", "wanda"})
    for (const char* text : {"16:2:5", "2:4"}) {
      const Pattern p = Pattern::parse(text);
      LlamaModel model = t.model();
      PermutationSummary summary;
      const CalibrationStatistics permuted = permute_model(model, method, p, &stats, energy, {}, &summary);
      EXPECT_GT(summary.kept_permuted, summary.kept_identity) << method << " " << text;
      EXPECT_LT(test::relative_error(t.logits(model), t.reference), 1e-6) << method << " " << text;
      // The summary's energy is the diagonal output energy kept by the method's mask: recompute
      // it for one layer from the permuted weights and statistics.
      const Linear& q = model.weights().layers[1].wq;
      const auto v = unpack(q.w).to_f32();
      const auto& n2 = permuted.at(q.name).sq_norms;
      std::vector<float> scores(v.size()), objective(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        const double x = n2[i % size_t(q.w.cols)];
        scores[i] = std::string(method) == "magnitude" ? std::fabs(v[i]) : float(std::fabs(v[i]) * std::sqrt(x));
        objective[i] = float(v[i] * v[i] * x);
      }
      EXPECT_GT(kept_value(p, scores, objective, q.w.rows, q.w.cols), 0);
      prune_model(model, method, p, std::string(method) == "magnitude" ? nullptr : &permuted);
      for (Linear* l : block_linears(model))
        EXPECT_TRUE(validate(p, unpack(l->w).to_f32(), l->w.rows, l->w.cols).ok) << method << " " << l->name;
    }
  // The objective needs the calibration inputs, for magnitude too.
  LlamaModel model = t.model();
  test::expect_error(
      [&] { permute_model(model, "magnitude", Pattern::parse("2:4"), nullptr, energy); },
      {"--permute-objective output with --method magnitude: needs calibration"});
}

// The guard keeps a layer's permutation only when the pruned layer's calibration output error
// (full X^T X) is lower with it: the summed error never exceeds the unpermuted one, and the
// model still computes the same function before pruning.
TEST(PermuteModel, GuardNeverRaisesThePrunedCalibrationError) {
  const TinySetup t(29, true);
  const CalibrationStatistics& stats = t.stats;
  PermutationOptions guarded;
  guarded.guard = true;
  for (const char* method : {"magnitude", "wanda", "sparsegpt"}) {
    LlamaModel model = t.model();
    PermutationSummary summary;
    permute_model(model, method, Pattern::parse("16:2:5"), &stats, guarded, {}, &summary);
    EXPECT_EQ(summary.guarded, int64_t(block_linears(model).size())) << method;
    EXPECT_GT(summary.error_identity, 0) << method;
    EXPECT_LE(summary.error_chosen, summary.error_identity) << method;
    EXPECT_LE(summary.reverted, summary.guarded) << method;
    // A reverted layer stores no permutation.
    int stored = 0;
    for (Linear* l : block_linears(model)) stored += !l->input_perm.empty();
    EXPECT_LE(stored, summary.guarded - summary.reverted) << method;
    EXPECT_LT(test::relative_error(t.logits(model), t.reference), 1e-6) << method;
  }
  // The guard needs the calibration Hessian, for magnitude too.
  LlamaModel model = t.model();
  test::expect_error(
      [&] { permute_model(model, "magnitude", Pattern::parse("2:4"), nullptr, guarded); },
      {"--permute-guard with --method magnitude: needs calibration"});
  LlamaModel dense = t.model();
  const CalibrationStatistics no_hessian = calibrate(dense, t.tokens, {16, 3, false});
  test::expect_error(
      [&] { permute_model(model, "wanda", Pattern::parse("2:4"), &no_hessian, guarded); },
      {"has no calibration Hessian", "blk.0."});
}

TEST(PermuteModel, BadInputThrowsNamingTheProblem) {
  TinySetup t(39, false);
  test::TinyLlama& m = t.m;
  const auto& dir = t.dir;
  const GgufFile& source = t.source;
  LlamaModel model = t.model();
  const auto message = [&](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message([&] { permute_model(model, "magnitude", Pattern::parse("unstructured:0.5"), nullptr); })
                .find("'unstructured:0.5'"),
            std::string::npos);
  EXPECT_NE(message([&] { permute_model(model, "wanda", Pattern::parse("2:4"), nullptr); })
                .find("calibration"),
            std::string::npos);
  permute_model(model, "magnitude", Pattern::parse("2:4"), nullptr);
  EXPECT_NE(message([&] { permute_model(model, "magnitude", Pattern::parse("2:4"), nullptr); })
                .find("already has an input permutation"),
            std::string::npos);
  // A broken permutation in a file is named with its tensor.
  Linear& q = model.weights().layers[1].wq;
  q.input_perm.assign(size_t(q.w.cols), 0);
  const auto out = dir / "broken.gguf";
  write_pruned_gguf(source, model, out, {});
  const std::string e = message([&] { LlamaModel::from_gguf(GgufFile::open(out)); });
  EXPECT_NE(e.find("blk.1.attn_q.weight.input_perm"), std::string::npos) << e;
  EXPECT_NE(e.find("repeated"), std::string::npos) << e;
  // A Hugging Face checkpoint cannot hold permutations.
  q.input_perm.clear();
  model.weights().layers[0].wk.input_perm.assign(size_t(m.dim), 0);
  std::iota(model.weights().layers[0].wk.input_perm.begin(), model.weights().layers[0].wk.input_perm.end(), 0);
  std::filesystem::create_directories(dir / "hf");
  const auto hf = test::write_tiny_safetensors(m, dir / "hf", true);
  EXPECT_NE(message([&] { write_pruned_hf(hf, model, dir / "hf_out", {}); }).find("cannot hold"),
            std::string::npos);
}

// CalibrationOptions::block: one block's statistics, the forward stopped after it, equal the
// one-pass statistics of that block's layers (same activations), and nothing else is collected.
TEST(SequentialPrune, BlockCalibrationEqualsOnePassStatistics) {
  const TinySetup t(61, true);
  LlamaModel model = t.model();
  const int64_t blocks = int64_t(model.weights().layers.size());
  ASSERT_GE(blocks, 2);
  for (int64_t b = 0; b < blocks; ++b) {
    CalibrationOptions options{16, 3, true};
    options.block = b;
    const CalibrationStatistics one = calibrate(model, t.tokens, options);
    EXPECT_EQ(one.layers.size(), 7u);
    EXPECT_EQ(one.windows, t.stats.windows);
    for (Linear* l : block_linears(model, b)) {
      const LayerStatistics& x = one.at(l->name);
      const LayerStatistics& y = t.stats.at(l->name);
      EXPECT_EQ(x.samples, y.samples) << l->name;
      EXPECT_EQ(x.sq_norms, y.sq_norms) << l->name;
      EXPECT_EQ(x.hessian, y.hessian) << l->name;
    }
  }
  for (const int64_t bad : {blocks, int64_t(-2)}) {
    CalibrationOptions options{16, 3, false};
    options.block = bad;
    try {
      calibrate(model, t.tokens, options);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("block " + std::to_string(bad)), std::string::npos)
          << e.what();
    }
  }
}

// Block 0 sees the dense model's inputs either way: sequential pruning of block 0 equals the
// one-pass result (permuted or not); later blocks see the pruned blocks' outputs and differ.
// Every layer keeps the pattern and the pruned model's perplexity is finite.
TEST(SequentialPrune, FirstBlockEqualsOnePassLaterBlocksCompensate) {
  const TinySetup t(67, true);
  for (const char* method : {"wanda", "sparsegpt"})
    for (const bool permute : {false, true}) {
      const char* text = permute ? "16:2:5" : "2:4";
      {
        SCOPED_TRACE(std::string(method) + " " + text + (permute ? " permuted" : ""));
        const Pattern p = Pattern::parse(text);
        PermutationOptions popt;
        popt.rounds = 2;
        LlamaModel one_pass = t.model();
        CalibrationStatistics stats = t.stats;
        if (permute) stats = permute_model(one_pass, method, p, &t.stats, popt);
        prune_model(one_pass, method, p, &stats);

        LlamaModel sequential = t.model();
        SequentialPruneOptions options;
        options.calibration = {16, 3, std::string(method) == "sparsegpt"};
        options.permute = permute;
        options.permutation = popt;
        std::vector<int64_t> seen;
        int64_t pruned = 0;
        const SequentialPruneSummary summary = prune_model_sequential(
            sequential, method, p, t.tokens, options,
            [&](int64_t b, int64_t blocks) {
              EXPECT_EQ(blocks, int64_t(sequential.weights().layers.size()));
              seen.push_back(b);
            },
            [&](const Linear&) { ++pruned; });
        EXPECT_EQ(seen, (std::vector<int64_t>{0, 1}));
        EXPECT_EQ(pruned, int64_t(block_linears(sequential).size()));
        EXPECT_EQ(summary.windows, 3);
        EXPECT_EQ(summary.tokens, 48);
        if (permute) EXPECT_GE(summary.permutation.kept_permuted, summary.permutation.kept_identity);

        int64_t differ = 0;
        for (int64_t b = 0; b < 2; ++b) {
          const auto a = block_linears(one_pass, b), s = block_linears(sequential, b);
          for (size_t k = 0; k < a.size(); ++k) {
            const auto va = unpack(a[k]->w).to_f32(), vs = unpack(s[k]->w).to_f32();
            EXPECT_TRUE(validate(p, vs, s[k]->w.rows, s[k]->w.cols).ok) << s[k]->name;
            if (b == 0) {
              EXPECT_EQ(va, vs) << s[k]->name;
              EXPECT_EQ(a[k]->input_perm, s[k]->input_perm) << s[k]->name;
            } else {
              differ += va != vs;
            }
            if (!s[k]->input_perm.empty())
              EXPECT_TRUE(is_permutation_of(s[k]->input_perm, s[k]->w.cols)) << s[k]->name;
          }
        }
        EXPECT_GT(differ, 0) << "block 1 ignored the pruned block 0";
        const PerplexityResult r = perplexity(sequential, t.tokens, 16);
        EXPECT_TRUE(std::isfinite(r.perplexity) && r.perplexity > 1) << r.perplexity;
      }
    }
}

// The per-block permutation that prune_model_sequential applies keeps the model's function:
// permuting block after block (each with its own block's statistics, taken on the model as it
// stands) gives the dense logits.
TEST(SequentialPrune, PermutedBlockByBlockComputesTheSameFunction) {
  const TinySetup t(71, true);
  for (const char* method : {"magnitude", "sparsegpt"}) {
    LlamaModel model = t.model();
    const Pattern p = Pattern::parse("16:2:5");
    int64_t stored = 0;
    for (int64_t b = 0; b < int64_t(model.weights().layers.size()); ++b) {
      CalibrationOptions options{16, 3, true};
      options.block = b;
      const CalibrationStatistics stats = calibrate(model, t.tokens, options);
      PermutationSummary summary;
      permute_block(model, b, method, p, &stats, {}, {}, &summary);
      EXPECT_GE(summary.kept_permuted, summary.kept_identity);
      for (Linear* l : block_linears(model, b)) stored += !l->input_perm.empty();
    }
    EXPECT_GT(stored, 0) << "no permutation: the test would prove nothing";
    EXPECT_LT(test::relative_error(t.logits(model), t.reference), 1e-6) << method;
  }
  LlamaModel model = t.model();
  try {
    permute_block(model, 2, "magnitude", Pattern::parse("2:4"), nullptr);
    ADD_FAILURE() << "block 2 of 2 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block 2: the model has 2 transformer blocks"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sparsa
