// `sparsa eval` and `sparsa run` end to end. Option errors need no model; the rest use the real
// SmolLM2 file and are skipped without it.
#include <gtest/gtest.h>

#include "model_file.h"
#include "test_util.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

void expect_bad_input(const test::CliResult& r, const std::vector<std::string>& phrases) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  for (const auto& p : phrases) EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' not in: " << r.err;
}

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
  expect_bad_input(run_cli({"eval", missing, "--text", text.string(), "--weights", "i8"}), {"--weights 'i8'"});
  expect_bad_input(run_cli({"run", missing, "-p", "hi"}), {missing, "cannot open"});
  expect_bad_input(run_cli({"run", missing, "-p", "hi", "--temperature", "-1"}), {"temperature -1"});
  expect_bad_input(run_cli({"run", missing, "-p", "hi", "--top-p", "0"}), {"top-p 0"});
  expect_bad_input(run_cli({"run", missing, "-p", "hi", "-n", "-3"}), {"-n -3"});
  // A file that is not a GGUF model.
  expect_bad_input(run_cli({"run", text.string(), "-p", "hi"}), {text.string(), "bad magic"});
}

TEST(ModelCli, EvalPrintsPerplexity) {
  SPARSA_REQUIRE_MODEL(model);
  const std::string text = (fs::path(SPARSA_SOURCE_DIR) / "data/eval/eval.txt").string();
  const auto r = run_cli({"eval", model.string(), "--text", text, "--ctx", "64", "--max-windows", "2"});
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
  const std::vector<std::string> args = {"run", model.string(), "-p", "Once upon a time", "-n", "6",
                                         "--temperature", "0.9", "--top-p", "0.95", "--seed", "5"};
  const auto a = run_cli(args), b = run_cli(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_GT(a.out.size(), std::string("Once upon a time").size());
}

}  // namespace
}  // namespace sparsa
