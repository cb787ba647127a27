// `--device` of `sparsa run` and `sparsa eval`: bad values and a CUDA device that is not there
// (sparsa built without CUDA, or no GPU) are bad input, exit 2 with a message saying why. The
// GPU path itself is tested in tests/gpu_model_test.cc.
#include <gtest/gtest.h>

#include "test_util.h"
#include "tiny_llama.h"

#ifdef SPARSA_WITH_CUDA
#include "sparsa/cuda_model.h"
#endif

namespace sparsa {
namespace {

bool cuda_usable() {
#ifdef SPARSA_WITH_CUDA
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

using test::expect_bad_input;

TEST(CliDevice, BadDeviceAndWeightsExitWith2) {
  const auto dir = test::temp_dir();
  test::write_file(dir / "t.txt", "Some text.\n");
  const std::string model = (dir / "m.gguf").string(), text = (dir / "t.txt").string();
  expect_bad_input(test::run_cli({"run", model, "-p", "hi", "--device", "tpu"}),
                   {"--device 'tpu'", "cpu or cuda"});
  expect_bad_input(test::run_cli({"eval", model, "--text", text, "--device", "gpu"}),
                   {"--device 'gpu'"});
  expect_bad_input(
      test::run_cli({"run", model, "-p", "hi", "--device", "cuda", "--weights", "f32"}),
      {"--weights f32", "f16 or bf16"});
}

TEST(CliDevice, CudaUnavailableExitsWith2BeforeLoading) {
  if (cuda_usable()) GTEST_SKIP() << "a CUDA GPU is present; tests/gpu_model_test.cc covers it";
  test::TinyLlama m;
  const auto dir = test::temp_dir();
  const std::string model = test::write_tiny(m, dir, true, 1, true).string();
  test::write_file(dir / "t.txt", "abcabcabc\n");
#ifdef SPARSA_WITH_CUDA
  const std::vector<std::string> why = {"--device cuda", "no CUDA GPU"};
#else
  const std::vector<std::string> why = {"--device cuda", "built without CUDA"};
#endif
  expect_bad_input(test::run_cli({"run", model, "-p", "abc", "-n", "2", "--device", "cuda"}), why);
  expect_bad_input(
      test::run_cli({"eval", model, "--text", (dir / "t.txt").string(), "--device", "cuda"}), why);
  expect_bad_input(
      test::run_cli({"run", model, "-p", "abc", "-n", "2", "--device", "cuda", "--dense-fallback"}),
      why);
  // The same model runs on the CPU (where --dense-fallback changes nothing).
  const auto cpu =
      test::run_cli({"run", model, "-p", "abc", "-n", "2", "--device", "cpu", "--dense-fallback"});
  EXPECT_EQ(cpu.exit_code, 0) << cpu.err;
  EXPECT_NE(cpu.err.find("device      cpu"), std::string::npos) << cpu.err;
}

}  // namespace
}  // namespace sparsa
