// `sparsa eval` and `sparsa run` end to end. Option errors need no model; the rest use the real
// SmolLM2 file and are skipped without it.
#include <cstdlib>

#include <gtest/gtest.h>

#include "model_file.h"
#include "sparsa/gguf.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"
#include "test_util.h"
#include "tiny_llama.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

// The CLI runs beside other tests on few cores: OpenMP threads that spin while waiting (libgomp's
// default) then slow each other down tenfold. Children inherit this.
const bool kPassiveOpenMp = [] { return ::setenv("OMP_WAIT_POLICY", "passive", 0) == 0; }();

using test::expect_bad_input;

TEST(ModelCli, OptionErrorsExitWith2) {
  const fs::path dir = test::temp_dir();
  const fs::path text = dir / "t.txt";
  test::write_file(text, "Some text.\n");
  const std::string missing = (dir / "missing.gguf").string();
  expect_bad_input(run_cli({"eval", missing, "--text", text.string()}), {missing, "cannot open"});
  expect_bad_input(run_cli({"eval", missing, "--text", text.string(), "--ctx", "1"}), {"--ctx 1"});
  expect_bad_input(run_cli({"eval", missing, "--text", (dir / "none.txt").string()}),
                   {(dir / "none.txt").string(), "cannot open"});
  test::write_file(dir / "bin.txt", std::string("abc\xff\xfe", 5));
  expect_bad_input(run_cli({"eval", missing, "--text", (dir / "bin.txt").string()}),
                   {(dir / "bin.txt").string(), "not UTF-8", "byte offset 3"});
  expect_bad_input(run_cli({"eval", missing, "--text", text.string(), "--weights", "i8"}),
                   {"--weights 'i8'"});
  expect_bad_input(run_cli({"run", missing, "-p", "hi"}), {missing, "cannot open"});
  expect_bad_input(run_cli({"run", missing, "-p", "hi", "--temperature", "-1"}),
                   {"temperature -1"});
  expect_bad_input(run_cli({"run", missing, "-p", "hi", "--top-p", "0"}), {"top-p 0"});
  expect_bad_input(run_cli({"run", missing, "-p", "hi", "-n", "-3"}), {"-n -3"});
  // A file that is not a GGUF model.
  expect_bad_input(run_cli({"run", text.string(), "-p", "hi"}), {text.string(), "bad magic"});
}

// A tokenizer.json for the tiny model's 50 tokens: the letters a-z and A-X, no merges.
std::string letters_tokenizer_json() {
  std::string vocab;
  int id = 0;
  for (char c = 'a'; c <= 'z'; ++c)
    vocab += fmt::format("{}\"{}\": {}", id ? ", " : "", c, id), ++id;
  for (char c = 'A'; c <= 'X'; ++c) vocab += fmt::format(", \"{}\": {}", c, id++);
  return fmt::format(
      R"({{"added_tokens": [], "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false}},
    "model": {{"type": "BPE", "vocab": {{{}}}, "merges": []}}}})",
      vocab);
}

TEST(ModelCli, RunsHuggingFaceAndLlama2cCheckpoints) {
  const fs::path dir = test::temp_dir();
  test::TinyLlama m;
  m.theta = 10000.0;
  test::write_tiny(m, dir);
  fs::create_directories(dir / "hf");
  test::write_tiny_safetensors(m, dir / "hf", true);
  test::write_file(dir / "hf/tokenizer.json", letters_tokenizer_json());
  fs::create_directories(dir / "l2c");
  const fs::path bin = test::write_tiny_llama2c(m, dir / "l2c/model.bin", true, true);
  const fs::path text = dir / "text.txt";
  test::write_file(text, "theQuickBrownFoxJumpsOverTheLazyDog andSomeMoreLettersToFillTwoWindows");

  const auto hf = run_cli({"eval", (dir / "hf").string(), "--text", text.string(), "--ctx", "16"});
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_NE(hf.out.find("Hugging Face safetensors checkpoint"), std::string::npos) << hf.out;
  EXPECT_NE(hf.out.find("perplexity  "), std::string::npos) << hf.out;
  const auto run = run_cli({"run", (dir / "hf").string(), "-p", "abc", "-n", "4"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out.rfind("abc", 0), 0u) << run.out;
  EXPECT_NE(run.err.find("generated   4 tokens"), std::string::npos) << run.err;

  // llama2.c: the tokenizer must sit beside the .bin.
  const auto no_tok = run_cli({"run", bin.string(), "-p", "abc", "-n", "2"});
  EXPECT_EQ(no_tok.exit_code, 2);
  EXPECT_NE(no_tok.err.find("carries no tokenizer"), std::string::npos) << no_tok.err;
  test::write_file(dir / "l2c/tokenizer.json", letters_tokenizer_json());
  const auto l2c = run_cli({"eval", bin.string(), "--text", text.string(), "--ctx", "16"});
  ASSERT_EQ(l2c.exit_code, 0) << l2c.err;
  EXPECT_NE(l2c.out.find("llama2.c checkpoint"), std::string::npos) << l2c.out;
  // The same weights in both files score the same perplexity (the RoPE bases agree).
  const auto ppl = [](const std::string& out) { return out.substr(out.find("perplexity  "), 24); };
  EXPECT_EQ(ppl(hf.out), ppl(l2c.out));
}

// `sparsa prune MODEL.gguf --method ...`: a tiny GGUF with a letters tokenizer, calibrated on
// letter text; the written model satisfies the pattern and `eval` runs it packed.
TEST(ModelCli, PruneModelWithEveryMethod) {
  const fs::path dir = test::temp_dir();
  test::TinyLlama m;
  const fs::path model = test::write_tiny(m, dir, true, 1, /*with_tokenizer=*/true);
  std::string letters;
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) letters += char('a' + rng() % 26);
  test::write_file(dir / "calib.txt", letters);
  const std::string calib = (dir / "calib.txt").string();
  for (const char* method : {"magnitude", "wanda", "sparsegpt"})
    for (const char* pattern : {"2:4", "16:2:8", "unstructured:0.5"}) {
      const fs::path out = dir / "pruned.gguf";
      const auto r = run_cli({"prune", model.string(), "--method", method, "-p", pattern, "--calib",
                              calib, "--calib-window", "32", "--calib-windows", "3", "-o",
                              out.string()});
      ASSERT_EQ(r.exit_code, 0) << method << " " << pattern << ": " << r.err;
      EXPECT_NE(r.out.find("model bytes"), std::string::npos) << r.out;
      const GgufFile file = GgufFile::open(out);
      EXPECT_EQ(file.get_string("sparsa.method"), method);
      LlamaModel pruned = LlamaModel::from_gguf(file);
      for (Linear* l : block_linears(pruned))
        EXPECT_TRUE(validate(Pattern::parse(pattern), unpack(l->w).to_f32(), l->w.rows, l->w.cols).ok)
            << method << " " << pattern << " " << l->name;
      const auto e = run_cli({"eval", out.string(), "--text", calib, "--ctx", "64"});
      ASSERT_EQ(e.exit_code, 0) << e.err;
      EXPECT_NE(e.out.find("packed as"), std::string::npos) << e.out;
      EXPECT_NE(e.out.find("perplexity"), std::string::npos) << e.out;
    }
  const std::string out = (dir / "x.gguf").string();
  expect_bad_input(run_cli({"prune", model.string(), "--method", "obs", "-p", "2:4", "-o", out}),
                   {"--method 'obs'", "magnitude, wanda or sparsegpt"});
  expect_bad_input(run_cli({"prune", model.string(), "--method", "wanda", "-p", "2:4", "--calib",
                            (dir / "none.txt").string(), "-o", out}),
                   {(dir / "none.txt").string(), "cannot open"});
  expect_bad_input(run_cli({"prune", model.string(), "--method", "sparsegpt", "-p", "rows:0.5",
                            "-o", out}),
                   {"rows:0.5", "unstructured, N:M and V:N:M"});
  expect_bad_input(run_cli({"prune", model.string(), "--method", "wanda", "-p", "2:4", "--calib",
                            calib, "--calib-window", "400", "-o", out}),
                   {calib, "do not fill one window of 400"});
  const fs::path tensors = dir / "t.safetensors";
  write_safetensors(tensors, {Tensor::from_f32("w", DType::F32, {4, 8}, test::random_values(32, 1))});
  expect_bad_input(run_cli({"prune", tensors.string(), "--method", "wanda", "-p", "2:4", "-o", out}),
                   {tensors.string(), "not a model"});
}

// A Hugging Face checkpoint directory in, a pruned checkpoint directory out: the same weights as
// pruning the same model read from GGUF (Q/K rows go back to Hugging Face order on writing).
TEST(ModelCli, PruneHuggingFaceCheckpoint) {
  const fs::path dir = test::temp_dir();
  test::TinyLlama m;
  const fs::path gguf = test::write_tiny(m, dir, true, 1, /*with_tokenizer=*/true);
  fs::create_directories(dir / "hf");
  test::write_tiny_safetensors(m, dir / "hf", true);
  test::write_file(dir / "hf/tokenizer.json", letters_tokenizer_json());
  std::string letters;
  std::mt19937 rng(9);
  for (int i = 0; i < 200; ++i) letters += char('a' + rng() % 26);
  test::write_file(dir / "calib.txt", letters);
  const std::vector<std::string> common = {"--method", "sparsegpt", "-p", "2:4", "--calib",
                                           (dir / "calib.txt").string(), "--calib-window", "32",
                                           "--calib-windows", "2", "-o"};
  auto args = std::vector<std::string>{"prune", (dir / "hf").string()};
  args.insert(args.end(), common.begin(), common.end());
  args.push_back((dir / "hf_pruned").string());
  const auto r = run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  args = {"prune", gguf.string()};
  args.insert(args.end(), common.begin(), common.end());
  args.push_back((dir / "pruned.gguf").string());
  ASSERT_EQ(run_cli(args).exit_code, 0);
  EXPECT_TRUE(fs::exists(dir / "hf_pruned/config.json"));
  EXPECT_TRUE(fs::exists(dir / "hf_pruned/tokenizer.json"));
  const LlamaModel a = LlamaModel::from_safetensors(dir / "hf_pruned");
  const LlamaModel b = LlamaModel::from_gguf(GgufFile::open(dir / "pruned.gguf"));
  for (size_t l = 0; l < a.weights().layers.size(); ++l) {
    const auto& la = a.weights().layers[l];
    const auto& lb = b.weights().layers[l];
    for (auto [x, y] : {std::pair{&la.wq, &lb.wq}, {&la.wk, &lb.wk}, {&la.w_down, &lb.w_down}}) {
      const auto va = unpack(x->w).to_f32(), vb = unpack(y->w).to_f32();
      EXPECT_LT(test::relative_error(va, vb), 1e-4) << x->name;
      EXPECT_TRUE(validate(Pattern::parse("2:4"), va, x->w.rows, x->w.cols).ok) << x->name;
    }
  }
  const auto e = run_cli({"eval", (dir / "hf_pruned").string(), "--text",
                          (dir / "calib.txt").string(), "--ctx", "64"});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_NE(e.out.find("2:4 packed as nm"), std::string::npos) << e.out;
}

TEST(ModelCli, EvalPrintsPerplexity) {
  SPARSA_REQUIRE_MODEL(model);
  const std::string text = (fs::path(SPARSA_SOURCE_DIR) / "data/eval/eval.txt").string();
  const auto r =
      run_cli({"eval", model.string(), "--text", text, "--ctx", "64", "--max-windows", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("windows     2 of ctx 64, 126 tokens scored"), std::string::npos) << r.out;
  const size_t at = r.out.find("perplexity  ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double ppl = std::stod(r.out.substr(at + 12));
  EXPECT_GT(ppl, 1.5);
  EXPECT_LT(ppl, 200.0);  // short windows of licence text; a broken model scores in the thousands
  EXPECT_NE(r.out.find("tokens/s"), std::string::npos);
}

TEST(ModelCli, RunGeneratesAndDumpsLogits) {
  SPARSA_REQUIRE_MODEL(model);
  const fs::path dump = test::temp_dir() / "logits";
  const auto r = run_cli({"run", model.string(), "-p", "The capital of France is", "-n", "2",
                          "--dump-logits", dump.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("The capital of France is Paris", 0), 0u) << r.out;
  EXPECT_NE(r.err.find("generated   2 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tokens/s"), std::string::npos) << r.err;
  // 5 prompt tokens ("The", " capital", " of", " France", " is") x 49152 logits.
  EXPECT_EQ(fs::file_size(dump.string() + ".ids"), 5u * 4);
  EXPECT_EQ(fs::file_size(dump), 5u * 49152 * 4);
  // Sampling with a seed is reproducible.
  const std::vector<std::string> args = {
      "run", model.string(), "-p",   "Once upon a time", "-n", "6", "--temperature",
      "0.9", "--top-p",      "0.95", "--seed",           "5"};
  const auto a = run_cli(args), b = run_cli(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_GT(a.out.size(), std::string("Once upon a time").size());
}

}  // namespace
}  // namespace sparsa
