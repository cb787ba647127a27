// `sparsa prune --permute`, `-p auto:SPEEDUP` (choose_vnm) and `sparsa sensitivity`, on the tiny
// GGUF with a letters tokenizer.
#include <cstdlib>
#include <random>

#include <gtest/gtest.h>

#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"
#include "sparsa/vnm_choice.h"
#include "test_util.h"
#include "tiny_llama.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

const bool kPassiveOpenMp = [] { return ::setenv("OMP_WAIT_POLICY", "passive", 0) == 0; }();

using test::expect_bad_input;

TEST(VnmChoice, PicksTheMostDiverseCandidateThatReachesTheTarget) {
  for (double target : {1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0}) {
    const VnmChoice c = choose_vnm(target);
    EXPECT_EQ(c.pattern.kind, PatternKind::VNM);
    EXPECT_EQ(c.pattern.n, 2);
    EXPECT_GE(c.estimated_speedup, target);
    EXPECT_DOUBLE_EQ(c.estimated_speedup, vnm_estimated_speedup(c.pattern.v, c.pattern.m));
    // No candidate that also reaches the target is more diverse.
    for (int v : {64, 128})
      for (int m = 5; m <= 32; ++m)
        if (vnm_estimated_speedup(v, m) >= target)
          EXPECT_LE(vnm_mask_diversity_bits(v, m), c.diversity_bits) << target << " " << v << ":2:" << m;
  }
  // A higher target never gives a denser pattern.
  EXPECT_LE(choose_vnm(2.0).pattern.m, choose_vnm(4.0).pattern.m);
  // Diversity falls with M and with V (fewer independent choices per weight).
  EXPECT_GT(vnm_mask_diversity_bits(64, 5), vnm_mask_diversity_bits(64, 8));
  EXPECT_GT(vnm_mask_diversity_bits(64, 8), vnm_mask_diversity_bits(128, 8));
  for (double bad : {1.0, 0.5, -2.0, 1e6})
    try {
      choose_vnm(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("speed-up target"), std::string::npos) << e.what();
    }
}

struct TinyCli {
  fs::path dir = test::temp_dir();
  test::TinyLlama m;
  fs::path model;
  std::string calib;
  TinyCli() {
    model = test::write_tiny(m, dir, true, 1, /*with_tokenizer=*/true);
    std::string letters;
    std::mt19937 rng(7);
    for (int i = 0; i < 300; ++i) letters += char('a' + rng() % 26);
    test::write_file(dir / "calib.txt", letters);
    calib = (dir / "calib.txt").string();
  }
};

TEST(PruneCli, PermuteWritesPermutationsAndTheModelRuns) {
  TinyCli t;
  for (const char* method : {"magnitude", "wanda", "sparsegpt", "magnitude-output", "sparsegpt-guard",
                             "wanda-per-layer"}) {
    const fs::path out = t.dir / "permuted.gguf";
    const bool energy = std::string(method) == "magnitude-output";  // --permute-objective output
    const bool guard = std::string(method) == "sparsegpt-guard";    // --permute-guard
    const bool per_layer = std::string(method) == "wanda-per-layer";  // --permute-per-layer
    std::vector<std::string> args = {"prune", t.model.string(), "--method",
                                     energy ? "magnitude" : guard ? "sparsegpt" : per_layer ? "wanda" : method,
                                     "-p", "16:2:5", "--permute", "--calib", t.calib, "--calib-window",
                                     "32", "--calib-windows", "3", "-o", out.string()};
    if (energy) args.insert(args.end(), {"--permute-objective", "output"});
    if (guard) args.push_back("--permute-guard");
    if (per_layer) args.push_back("--permute-per-layer");
    const auto r = run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << method << ": " << r.err;
    EXPECT_NE(r.out.find("permuted    input channels"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(per_layer ? "one permutation per layer" : "q/k/v share one, gate/up share one"),
              std::string::npos) << r.out;
    if (energy) EXPECT_NE(r.out.find("kept calibration output energy"), std::string::npos) << r.out;
    if (guard) EXPECT_NE(r.out.find("guard       kept the permutation of"), std::string::npos) << r.out;
    const GgufFile file = GgufFile::open(out);
    EXPECT_NE(file.find_tensor("blk.0.attn_q.weight.input_perm"), nullptr);
    EXPECT_EQ(file.find_tensor("blk.0.ffn_down.weight.input_perm"), nullptr);  // folded
    LlamaModel pruned = LlamaModel::from_gguf(file);
    if (!per_layer)
      for (const LlamaLayer& l : pruned.weights().layers) {
        EXPECT_EQ(l.wk.input_perm, l.wq.input_perm) << method;
        EXPECT_EQ(l.wv.input_perm, l.wq.input_perm) << method;
        EXPECT_EQ(l.w_up.input_perm, l.w_gate.input_perm) << method;
      }
    for (Linear* l : block_linears(pruned))
      EXPECT_TRUE(validate(Pattern::parse("16:2:5"), unpack(l->w).to_f32(), l->w.rows, l->w.cols).ok)
          << method << " " << l->name;
    const auto e = run_cli({"eval", out.string(), "--text", t.calib, "--ctx", "64"});
    ASSERT_EQ(e.exit_code, 0) << e.err;
    EXPECT_NE(e.out.find("packed as vnm"), std::string::npos) << e.out;
  }
}

TEST(PruneCli, AutoPatternAndPermuteErrors) {
  TinyCli t;
  const fs::path out = t.dir / "auto.gguf";
  const auto r = run_cli({"prune", t.model.string(), "-p", "auto:2.5", "-o", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string chosen = choose_vnm(2.5).pattern.to_string();
  EXPECT_NE(r.out.find("auto:2.5 -> " + chosen), std::string::npos) << r.out;
  EXPECT_EQ(GgufFile::open(out).get_string("sparsa.pattern"), chosen);

  const std::string o = (t.dir / "x.gguf").string();
  expect_bad_input(run_cli({"prune", t.model.string(), "-p", "auto:fast", "-o", o}),
                   {"auto:fast", "auto:SPEEDUP"});
  expect_bad_input(run_cli({"prune", t.model.string(), "-p", "auto:500", "-o", o}),
                   {"speed-up target 500"});
  expect_bad_input(run_cli({"prune", t.model.string(), "-p", "unstructured:0.5", "--permute", "-o", o}),
                   {"--permute", "'unstructured:0.5'", "N:M or V:N:M"});
  expect_bad_input(run_cli({"prune", t.model.string(), "-p", "2:4", "--permute", "--permute-rounds",
                            "-1", "-o", o}),
                   {"--permute-rounds -1"});
  expect_bad_input(run_cli({"prune", t.model.string(), "-p", "2:4", "--permute",
                            "--permute-objective", "loss", "-o", o}),
                   {"--permute-objective 'loss'", "importance or output"});
  expect_bad_input(run_cli({"prune", t.model.string(), "-p", "2:4", "--permute-guard", "-o", o}),
                   {"--permute-guard", "needs --permute"});
  expect_bad_input(run_cli({"prune", t.model.string(), "-p", "2:4", "--permute-per-layer", "-o", o}),
                   {"--permute-per-layer", "needs --permute"});
  fs::create_directories(t.dir / "hf");
  test::write_tiny_safetensors(t.m, t.dir / "hf", true);
  expect_bad_input(run_cli({"prune", (t.dir / "hf").string(), "-p", "2:4", "--permute", "-o",
                            (t.dir / "hf_out").string()}),
                   {"--permute", "Hugging Face"});
  const fs::path tensors = t.dir / "t.safetensors";
  write_safetensors(tensors, {Tensor::from_f32("w", DType::F32, {4, 8}, test::random_values(32, 1))});
  expect_bad_input(run_cli({"prune", tensors.string(), "-p", "2:4", "--permute", "-o", o}),
                   {tensors.string(), "not a model"});
}

TEST(PruneCli, SequentialCalibrationPrunesBlockByBlock) {
  TinyCli t;
  for (const bool permute : {false, true}) {
    SCOPED_TRACE(permute ? "permuted" : "not permuted");
    const fs::path out = t.dir / "sequential.gguf";
    std::vector<std::string> args = {"prune", t.model.string(), "--method", "sparsegpt", "-p",
                                     "16:2:5", "--sequential", "--calib", t.calib,
                                     "--calib-window", "32", "--calib-windows", "3", "-o",
                                     out.string()};
    if (permute) args.insert(args.end(), {"--permute", "--permute-rounds", "2"});
    const auto r = run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (int b = 1; b <= t.m.layers; ++b)  // progress on stderr
      EXPECT_NE(r.err.find("sequential  block " + std::to_string(b) + " of " +
                           std::to_string(t.m.layers)),
                std::string::npos) << r.err;
    EXPECT_NE(r.out.find("3 windows of 32 tokens per block, layer-sequential"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("(sparsegpt, layer-sequential)"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("permuted    input channels") != std::string::npos, permute) << r.out;
    const GgufFile file = GgufFile::open(out);
    EXPECT_EQ(file.get_string("sparsa.calibration"), "layer-sequential");
    EXPECT_EQ(file.find_tensor("blk.1.attn_q.weight.input_perm") != nullptr, permute);
    LlamaModel pruned = LlamaModel::from_gguf(file);
    for (Linear* l : block_linears(pruned))
      EXPECT_TRUE(validate(Pattern::parse("16:2:5"), unpack(l->w).to_f32(), l->w.rows, l->w.cols).ok)
          << l->name;
    const auto e = run_cli({"eval", out.string(), "--text", t.calib, "--ctx", "64"});
    ASSERT_EQ(e.exit_code, 0) << e.err;
    EXPECT_NE(e.out.find("perplexity  "), std::string::npos) << e.out;
  }
  // Bad combinations: nothing to calibrate for magnitude, a tensor file, a short text.
  const std::string o = (t.dir / "x.gguf").string();
  expect_bad_input(run_cli({"prune", t.model.string(), "-p", "2:4", "--sequential", "-o", o}),
                   {"--sequential with --method magnitude", "would change nothing"});
  const fs::path tensors = t.dir / "t.safetensors";
  write_safetensors(tensors, {Tensor::from_f32("w", DType::F32, {4, 8}, test::random_values(32, 1))});
  expect_bad_input(run_cli({"prune", tensors.string(), "-p", "2:4", "--sequential", "-o", o}),
                   {"--sequential", tensors.string(), "not a model"});
  expect_bad_input(run_cli({"prune", t.model.string(), "--method", "wanda", "-p", "2:4",
                            "--sequential", "--calib", t.calib, "--calib-window", "1000", "-o", o}),
                   {"--sequential", t.calib, "do not fill one window of 1000"});
  EXPECT_FALSE(fs::exists(o));
}

TEST(SensitivityCli, TableAndPlot) {
  TinyCli t;
  const fs::path svg = t.dir / "sens.svg";
  const auto r = run_cli({"sensitivity", t.model.string(), "-p", "2:4", "--method", "wanda",
                          "--text", t.calib, "--calib", t.calib, "--ctx", "64", "--max-windows",
                          "2", "-o", svg.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| none (dense) |"), std::string::npos) << r.out;
  for (int b = 0; b < t.m.layers; ++b)
    EXPECT_NE(r.out.find("| " + std::to_string(b) + " | "), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("block 2/2 pruned"), std::string::npos) << r.err;  // progress on stderr
  const std::string plot = test::read_file(svg);
  EXPECT_EQ(plot.rfind("<svg", 0), 0u);
  EXPECT_NE(plot.find("</svg>"), std::string::npos);
  EXPECT_NE(plot.find("perplexity (exp of mean NLL in nats/token"), std::string::npos);
  EXPECT_NE(plot.find("pruned transformer block"), std::string::npos);
  EXPECT_NE(plot.find(">dense "), std::string::npos);
  EXPECT_NE(plot.find("<polyline"), std::string::npos);
}

TEST(SensitivityCli, BadInputExitsWith2) {
  TinyCli t;
  const std::string model = t.model.string(), svg = (t.dir / "s.svg").string();
  const auto base = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"sensitivity", model, "--text", t.calib};
    a.insert(a.end(), extra.begin(), extra.end());
    return run_cli(a);
  };
  expect_bad_input(base({"-p", "2:5:9:1", "-o", svg}), {"2:5:9:1"});
  expect_bad_input(base({"-p", "2:4", "--method", "obs", "-o", svg}), {"--method 'obs'"});
  expect_bad_input(base({"-p", "2:4", "--max-windows", "0", "-o", svg}), {"--max-windows 0"});
  expect_bad_input(base({"-p", "2:4", "--ctx", "1", "-o", svg}), {"--ctx 1"});
  expect_bad_input(base({"-p", "2:4", "-o", (t.dir / "s.png").string()}), {"s.png", "SVG"});
  expect_bad_input(base({"-p", "2:4", "-o", (t.dir / "nodir/s.svg").string()}),
                   {"nodir", "does not exist"});
  expect_bad_input(base({"-p", "unstructured:0.5:global", "-o", svg}), {"global"});
  expect_bad_input(base({"-p", "2:4", "--method", "wanda", "--calib", (t.dir / "no.txt").string(),
                         "-o", svg}),
                   {"no.txt", "cannot open"});
  expect_bad_input(run_cli({"sensitivity", (t.dir / "missing.gguf").string(), "--text", t.calib,
                            "-p", "2:4", "-o", svg}),
                   {"missing.gguf", "cannot open"});
  EXPECT_FALSE(fs::exists(svg));
}

}  // namespace
}  // namespace sparsa
