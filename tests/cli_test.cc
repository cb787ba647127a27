// End-to-end tests of the `sparsa` command: prune, pack, inspect, demo, and the exit code 2
// contract for bad input (clear message, no partial output).
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sparsa/container.h"
#include "sparsa/format.h"
#include "sparsa/pattern.h"
#include "sparsa/safetensors.h"
#include "test_util.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

// A small model: two weight matrices (one ragged), a norm vector and an integer tensor.
fs::path write_model(const fs::path& dir, DType dtype = DType::F16) {
  std::vector<Tensor> tensors = {
      test::random_tensor("layers.0.mlp.up_proj.weight", dtype, {96, 70}, 1),
      test::random_tensor("layers.0.self_attn.q_proj.weight", dtype, {64, 64}, 2),
      test::random_tensor("layers.0.input_layernorm.weight", dtype, {64}, 3),
  };
  const auto path = dir / "model.safetensors";
  write_safetensors(path, tensors, {{"origin", "cli_test"}});
  return path;
}

const Tensor& find(const SafetensorsFile& file, const std::string& name) {
  for (const auto& t : file.tensors)
    if (t.name() == name) return t;
  throw std::runtime_error("no tensor " + name);
}

TEST(Cli, PruneWritesTensorsThatSatisfyThePattern) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir);
  for (const std::string pattern : {"2:4", "64:2:8", "1:8", "block:4x4:0.5", "rows:0.25"}) {
    const auto out = dir / "pruned.safetensors";
    const auto result = run_cli({"prune", model.string(), "-p", pattern, "-o", out.string()});
    ASSERT_EQ(result.exit_code, 0) << pattern << "\n" << result.err;
    const auto pruned = read_safetensors(out);
    EXPECT_EQ(pruned.metadata.at("origin"), "cli_test");  // metadata kept
    EXPECT_EQ(pruned.metadata.at("sparsa.pattern"), Pattern::parse(pattern).to_string());
    for (const auto& t : pruned.tensors) {
      if (t.shape().size() < 2) {
        EXPECT_EQ(sparsity(t), 0.0) << "1-D tensors pass through";
        continue;
      }
      const auto check = validate(Pattern::parse(pattern), t.to_f32(), t.rows(), t.cols());
      EXPECT_TRUE(check.ok) << pattern << " " << t.name() << ": " << check.violation;
      EXPECT_GT(sparsity(t), 0.2) << pattern << " " << t.name();
    }
  }
}

TEST(Cli, PruneOnlyAndSkipSelectTensors) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir);
  const auto out = dir / "pruned.safetensors";
  auto result = run_cli({"prune", model.string(), "-p", "2:4", "--only", "mlp", "-o", out.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto pruned = read_safetensors(out);
  EXPECT_NEAR(sparsity(find(pruned, "layers.0.mlp.up_proj.weight")), 0.5, 0.02);
  EXPECT_EQ(sparsity(find(pruned, "layers.0.self_attn.q_proj.weight")), 0.0);

  result = run_cli({"prune", model.string(), "-p", "2:4", "--skip", "mlp", "-o", out.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  pruned = read_safetensors(out);
  EXPECT_EQ(sparsity(find(pruned, "layers.0.mlp.up_proj.weight")), 0.0);
  EXPECT_NEAR(sparsity(find(pruned, "layers.0.self_attn.q_proj.weight")), 0.5, 1e-9);
}

TEST(Cli, GlobalUnstructuredUsesOneThresholdAcrossTensors) {
  const auto dir = test::temp_dir();
  // Two tensors of very different scale: a global threshold prunes the small one far more.
  auto big = test::random_values(64 * 64, 5);
  auto small = test::random_values(64 * 64, 6);
  for (auto& v : small) v *= 0.01f;
  const auto model = dir / "scales.safetensors";
  write_safetensors(model, {Tensor::from_f32("big", DType::F32, {64, 64}, big),
                            Tensor::from_f32("small", DType::F32, {64, 64}, small)});
  const auto out = dir / "pruned.safetensors";
  const auto result =
      run_cli({"prune", model.string(), "-p", "unstructured:0.5:global", "-o", out.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto pruned = read_safetensors(out);
  const double s_big = sparsity(find(pruned, "big")), s_small = sparsity(find(pruned, "small"));
  EXPECT_NEAR((s_big + s_small) / 2, 0.5, 1e-3);
  EXPECT_GT(s_small, 0.95);
  EXPECT_LT(s_big, 0.05);
}

TEST(Cli, InspectJsonReportsSparsityPatternsAndPackedSizes) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir);
  const auto pruned = dir / "pruned.safetensors";
  ASSERT_EQ(run_cli({"prune", model.string(), "-p", "2:4", "-o", pruned.string()}).exit_code, 0);
  const auto result = run_cli({"inspect", pruned.string(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto report = nlohmann::json::parse(result.out);
  ASSERT_EQ(report["tensors"].size(), 3u);
  for (const auto& t : report["tensors"]) {
    ASSERT_TRUE(t.contains("name"));
    ASSERT_TRUE(t.contains("sparsity"));
    if (t["shape"].size() < 2) continue;
    EXPECT_NEAR(t["sparsity"].get<double>(), 0.5, 0.02) << t["name"];
    const auto patterns = t["patterns"].get<std::vector<std::string>>();
    EXPECT_NE(std::find(patterns.begin(), patterns.end(), "2:4"), patterns.end()) << t["name"];
    EXPECT_GT(t["bytes_per_weight"]["nm 2:4"].get<double>(), 1.0);  // f16 values + metadata
    EXPECT_LT(t["bytes_per_weight"]["nm 2:4"].get<double>(), 1.3);
  }
  // The table form names every tensor.
  const auto table = run_cli({"inspect", pruned.string()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("layers.0.mlp.up_proj.weight"), std::string::npos);
}

TEST(Cli, PackThenInspectTheContainerRoundTrips) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir, DType::BF16);
  const auto pruned = dir / "pruned.safetensors";
  ASSERT_EQ(run_cli({"prune", model.string(), "-p", "64:2:8", "-o", pruned.string()}).exit_code, 0);
  for (const std::string format : {"vnm", "csr", "bitmap"}) {
    const auto packed = dir / (format + ".sparsa");
    const auto result = run_cli({"pack", pruned.string(), "-f", format, "-o", packed.string()});
    ASSERT_EQ(result.exit_code, 0) << format << "\n" << result.err;
    const Container container = read_container(packed);
    const SafetensorsFile source = read_safetensors(pruned);
    ASSERT_EQ(container.tensors.size(), source.tensors.size());
    for (const auto& entry : container.tensors) {
      const Tensor& original = find(source, entry.name);
      const Tensor back = unpack(entry.packed, entry.name);
      ASSERT_EQ(back.nbytes(), original.nbytes()) << entry.name;
      EXPECT_TRUE(std::equal(back.bytes().begin(), back.bytes().end(), original.bytes().begin()))
          << format << " " << entry.name << ": not bit-exact";
    }
    const auto inspect = run_cli({"inspect", packed.string(), "--json"});
    ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
    const auto report = nlohmann::json::parse(inspect.out);
    EXPECT_EQ(report["kind"], "sparsa");
    for (const auto& t : report["tensors"])
      if (t["shape"].size() >= 2) EXPECT_EQ(t["format"], format) << t["name"];
  }
}

TEST(Cli, DamagedInputExitsWithCodeTwoAndNoOutput) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir);
  std::string bytes = test::read_file(model);
  const auto truncated = dir / "truncated.safetensors";
  test::write_file(truncated, bytes.substr(0, bytes.size() - 10));
  const auto out = dir / "out.safetensors";
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"prune", truncated.string(), "-p", "2:4", "-o", out.string()},
           {"inspect", truncated.string()},
           {"pack", truncated.string(), "-f", "csr", "-o", out.string()}}) {
    const auto result = run_cli(args);
    EXPECT_EQ(result.exit_code, 2) << args[0];
    EXPECT_NE(result.err.find(truncated.string()), std::string::npos) << result.err;
    EXPECT_FALSE(fs::exists(out)) << args[0] << " left a partial output";
  }
}

TEST(Cli, ImpossiblePatternsAndFormatsExitWithCodeTwo) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir);
  const auto out = dir / "out.safetensors";
  for (const std::string pattern : {"3:2", "0:4", "64:2:3", "abc"}) {
    const auto result = run_cli({"prune", model.string(), "-p", pattern, "-o", out.string()});
    EXPECT_EQ(result.exit_code, 2) << pattern;
    EXPECT_NE(result.err.find(pattern), std::string::npos) << result.err;
    EXPECT_FALSE(fs::exists(out));
  }
  // Packing unpruned weights as 2:4 is refused and names the tensor.
  const auto packed = dir / "out.sparsa";
  auto result = run_cli({"pack", model.string(), "-f", "nm", "-p", "2:4", "-o", packed.string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("up_proj"), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(packed));
  result = run_cli({"pack", model.string(), "-f", "zip", "-o", packed.string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("zip"), std::string::npos) << result.err;
  result = run_cli({"prune", model.string(), "-p", "2:4", "--only", "(", "-o", out.string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--only"), std::string::npos) << result.err;
}

TEST(Cli, CorruptedContainerIsRefused) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir);
  const auto pruned = dir / "pruned.safetensors", packed = dir / "p.sparsa";
  ASSERT_EQ(run_cli({"prune", model.string(), "-p", "2:4", "-o", pruned.string()}).exit_code, 0);
  ASSERT_EQ(run_cli({"pack", pruned.string(), "-f", "nm", "-o", packed.string()}).exit_code, 0);
  std::string bytes = test::read_file(packed);
  bytes[bytes.size() - 5] ^= 0x40;  // inside the last blob
  const auto damaged = dir / "damaged.sparsa";
  test::write_file(damaged, bytes);
  const auto result = run_cli({"inspect", damaged.string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find(damaged.string()), std::string::npos) << result.err;
}

TEST(Cli, DemoRunsTheMainJobOnASmallModel) {
  const auto dir = test::temp_dir();
  const auto json = dir / "demo.json";
  const auto result =
      run_cli({"demo", "--hidden", "64", "--intermediate", "160", "--repeats", "1", "--out-dir",
               (dir / "demo").string(), "--json", json.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("2:4"), std::string::npos);
  EXPECT_NE(result.out.find("64:2:8"), std::string::npos);
  const auto report = nlohmann::json::parse(test::read_file(json));
  ASSERT_EQ(report["rows"].size(), 2u);
  for (const auto& row : report["rows"]) {
    EXPECT_LT(row["relative_error_vs_dense_pruned"].get<double>(), 1e-5) << row["pattern"];
    EXPECT_GT(row["sparsity"].get<double>(), 0.45) << row["pattern"];
  }
  EXPECT_TRUE(fs::exists(dir / "demo" / "2-4.sparsa"));
}

}  // namespace
}  // namespace sparsa

namespace sparsa {
namespace {

TEST(Cli, BenchGemmWithoutAUsableGpuExitsWithCodeTwo) {
  // CI machines have no GPU; a CPU-only build has no CUDA at all. Either way: a clear message,
  // exit code 2, no crash.
  const auto result = test::run_cli({"bench", "gemm", "--quick"});
  EXPECT_EQ(result.exit_code, 2) << result.out << result.err;
  EXPECT_TRUE(result.err.find("CUDA") != std::string::npos) << result.err;
}

TEST(Cli, BenchGemmRefusesANegativeWarmUp) {
  // --warm-ms (session 14) is checked before any device is touched: exit code 2, the option named.
  const auto result = test::run_cli({"bench", "gemm", "--warm-ms", "-1"});
  EXPECT_EQ(result.exit_code, 2) << result.out << result.err;
  EXPECT_TRUE(result.err.find("--warm-ms") != std::string::npos) << result.err;
}

}  // namespace
}  // namespace sparsa
