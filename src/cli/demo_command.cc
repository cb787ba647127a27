// sparsa demo: the main job of the README's setup command. Takes a model (a .safetensors file, or
// a generated Llama-style layer with Gaussian weights), prunes every weight matrix to each pattern
// by magnitude, packs it in the pattern's format, writes and re-reads the files, checks that the
// sparse product equals the dense product of the pruned weights, and prints sparsity, bytes per
// weight and kernel time against the dense SIMD kernel.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "sparsa/container.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/kernels.h"
#include "sparsa/prune.h"
#include "sparsa/safetensors.h"

namespace sparsa::cli {
namespace {

struct DemoOptions {
  std::string model;  // optional .safetensors; generated when empty
  std::string out_dir = "out/demo";
  std::string json;   // optional report path
  std::string dtype = "f32";
  std::vector<std::string> patterns = {"2:4", "64:2:8"};
  std::vector<int64_t> tokens = {1, 16};
  int hidden = 2048;
  int intermediate = 5632;
  int layers = 1;
  int repeats = 7;
};

DType parse_dtype(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "f16") return DType::F16;
  if (name == "bf16") return DType::BF16;
  fail("--dtype '{}': expected f32, f16 or bf16", name);
}

// One Llama decoder layer's projections per layer, N(0, 0.02) weights like a fresh init.
std::vector<Tensor> generate_model(const DemoOptions& options, DType dtype) {
  std::mt19937_64 rng(2026);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t h = options.hidden, f = options.intermediate;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"self_attn.q_proj", {h, h}}, {"self_attn.k_proj", {h, h}}, {"self_attn.v_proj", {h, h}},
      {"self_attn.o_proj", {h, h}}, {"mlp.gate_proj", {f, h}},     {"mlp.up_proj", {f, h}},
      {"mlp.down_proj", {h, f}}};
  std::vector<Tensor> tensors;
  for (int layer = 0; layer < options.layers; ++layer) {
    for (const auto& [name, shape] : shapes) {
      std::vector<float> values(shape[0] * shape[1]);
      for (auto& v : values) v = normal(rng);
      tensors.push_back(Tensor::from_f32(fmt::format("model.layers.{}.{}.weight", layer, name),
                                         dtype, shape, values));
    }
  }
  return tensors;
}

// Median wall time of `repeats` calls after one warm-up, in milliseconds.
template <typename F>
double median_ms(int repeats, F&& run) {
  run();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// Time of Y = X * W^T summed over the matrices, and the products themselves.
double time_matrices(const std::vector<PackedMatrix>& matrices, int64_t tokens, int repeats,
                     const std::vector<float>& x, std::vector<std::vector<float>>& outputs) {
  outputs.resize(matrices.size());
  double total = 0;
  for (size_t i = 0; i < matrices.size(); ++i) {
    const auto& w = matrices[i];
    outputs[i].assign(tokens * w.rows, 0.0f);
    std::span<const float> xs(x.data(), tokens * w.cols);
    total += median_ms(repeats, [&] { gemm(xs, tokens, w, outputs[i], Backend::Simd); });
  }
  return total;
}

double relative_error(const std::vector<std::vector<float>>& a,
                      const std::vector<std::vector<float>>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < a[i].size(); ++j) {
      diff += (double(a[i][j]) - b[i][j]) * (double(a[i][j]) - b[i][j]);
      norm += double(b[i][j]) * b[i][j];
    }
  return norm > 0 ? std::sqrt(diff / norm) : 0.0;
}

void run_demo(const DemoOptions& options) {
  const DType dtype = parse_dtype(options.dtype);
  std::vector<Pattern> patterns;
  for (const auto& text : options.patterns) patterns.push_back(Pattern::parse(text));
  for (int64_t t : options.tokens)
    if (t < 1) fail("--tokens {}: the number of tokens must be at least 1", t);
  std::filesystem::create_directories(options.out_dir);

  std::vector<Tensor> model;
  std::string source;
  if (options.model.empty()) {
    model = generate_model(options, dtype);
    source = fmt::format("generated Llama-style layer x{} (hidden {}, MLP {}, {}, N(0, 0.02))",
                         options.layers, options.hidden, options.intermediate, options.dtype);
    const auto path = std::filesystem::path(options.out_dir) / "model.safetensors";
    write_safetensors(path, model, {{"sparsa.source", "sparsa demo"}});
    model = read_safetensors(path).tensors;  // run on what was written and read back
  } else {
    for (Tensor& t : read_safetensors(options.model).tensors)
      if (t.shape().size() >= 2 && is_float_weight_dtype(t.dtype())) model.push_back(std::move(t));
    source = options.model;
    if (model.empty()) fail("'{}': no float weight matrices to prune", options.model);
  }
  int64_t weights = 0, max_cols = 0;
  for (const auto& t : model) {
    weights += t.numel();
    max_cols = std::max(max_cols, t.cols());
  }
  const int64_t max_tokens = *std::max_element(options.tokens.begin(), options.tokens.end());
  std::vector<float> x(max_tokens * max_cols);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (auto& v : x) v = uniform(rng);

  nlohmann::ordered_json report;
  report["source"] = source;
  report["weights"] = weights;
  report["rows"] = nlohmann::ordered_json::array();
  fmt::print("sparsa demo: {}, {} matrices, {:.1f} M weights, {} threads\n", source, model.size(),
             weights / 1e6, std::max(1u, std::thread::hardware_concurrency()));

  // Dense baseline on the unpruned weights.
  std::vector<PackedMatrix> dense;
  for (const auto& t : model) dense.push_back(pack(t, FormatKind::Dense, Pattern{}));
  std::map<int64_t, double> dense_ms;
  std::vector<std::vector<float>> scratch;
  for (int64_t tokens : options.tokens)
    dense_ms[tokens] = time_matrices(dense, tokens, options.repeats, x, scratch);

  std::string header = fmt::format("{:<10} {:>6} {:>9} {:>9} {:>8}", "pattern", "format",
                                   "sparsity", "B/weight", "vs dense");
  for (int64_t tokens : options.tokens)
    header += fmt::format(" {:>10} {:>10} {:>7}", fmt::format("M={} dense", tokens), "sparse",
                          "speedup");
  header += fmt::format(" {:>9}", "rel.err");
  fmt::print("\n{}\n", header);
  const double dense_bytes = static_cast<double>(dtype_size(model.front().dtype()));
  {
    std::string row = fmt::format("{:<10} {:>6} {:>8.2f}% {:>9.4f} {:>7.2f}x", "dense", "dense",
                                  0.0, dense_bytes, 1.0);
    for (int64_t tokens : options.tokens)
      row += fmt::format(" {:>8.3f}ms {:>8.3f}ms {:>6.2f}x", dense_ms[tokens], dense_ms[tokens], 1.0);
    fmt::print("{} {:>9}\n", row, "-");
  }

  for (const Pattern& pattern : patterns) {
    const auto criterion = make_criterion("magnitude");
    const FormatKind format = default_format(pattern);
    Progress progress("prune+pack " + pattern.to_string(), static_cast<int64_t>(model.size()));
    std::vector<Tensor> pruned;
    Container container;
    int64_t zeros = 0;
    size_t packed_bytes = 0;
    for (const auto& t : model) {
      pruned.push_back(prune(t, pattern, *criterion));
      zeros += static_cast<int64_t>(std::llround(sparsity(pruned.back()) * t.numel()));
      container.tensors.push_back({t.name(), t.shape(), pack(pruned.back(), format, pattern)});
      packed_bytes += container.tensors.back().packed.total_bytes();
      progress.advance(t.name());
    }
    progress.finish();
    const std::string stem = pattern.to_string();
    std::string safe_stem = stem;
    std::replace(safe_stem.begin(), safe_stem.end(), ':', '-');
    const auto dir = std::filesystem::path(options.out_dir);
    write_safetensors(dir / (safe_stem + ".safetensors"), pruned, {{"sparsa.pattern", stem}});
    write_container(dir / (safe_stem + ".sparsa"), container);
    const Container reread = read_container(dir / (safe_stem + ".sparsa"));

    std::vector<PackedMatrix> sparse, dense_pruned;
    for (size_t i = 0; i < reread.tensors.size(); ++i) {
      sparse.push_back(reread.tensors[i].packed);
      dense_pruned.push_back(pack(pruned[i], FormatKind::Dense, Pattern{}));
    }
    const double bytes_per_weight = static_cast<double>(packed_bytes) / weights;
    const double density_sparsity = static_cast<double>(zeros) / weights;
    std::string row = fmt::format("{:<10} {:>6} {:>8.2f}% {:>9.4f} {:>7.2f}x", stem,
                                  format_name(format), 100.0 * density_sparsity, bytes_per_weight,
                                  dense_bytes / bytes_per_weight);
    nlohmann::ordered_json entry = {{"pattern", stem},
                                    {"format", format_name(format)},
                                    {"sparsity", density_sparsity},
                                    {"bytes_per_weight", bytes_per_weight},
                                    {"dense_bytes_per_weight", dense_bytes}};
    double error = 0;
    for (int64_t tokens : options.tokens) {
      std::vector<std::vector<float>> sparse_out, dense_out;
      const double ms = time_matrices(sparse, tokens, options.repeats, x, sparse_out);
      time_matrices(dense_pruned, tokens, 1, x, dense_out);
      error = std::max(error, relative_error(sparse_out, dense_out));
      row += fmt::format(" {:>8.3f}ms {:>8.3f}ms {:>6.2f}x", dense_ms[tokens], ms,
                         dense_ms[tokens] / ms);
      entry["timings"].push_back(
          {{"M", tokens}, {"dense_ms", dense_ms[tokens]}, {"sparse_ms", ms},
           {"speedup", dense_ms[tokens] / ms}});
    }
    entry["relative_error_vs_dense_pruned"] = error;
    report["rows"].push_back(entry);
    fmt::print("{} {:>9.1e}\n", row, error);
  }
  fmt::print("\ntimes: median of {} runs, summed over the {} matrices; rel.err: sparse product vs "
             "the dense product of the same pruned weights (relative Frobenius)\nfiles in {}\n",
             options.repeats, model.size(), options.out_dir);
  if (!options.json.empty()) {
    std::ofstream(options.json) << report.dump(2) << "\n";
    fmt::print("report: {}\n", options.json);
  }
}

}  // namespace

void register_demo_command(CLI::App& app) {
  auto options = std::make_shared<DemoOptions>();
  auto* command = app.add_subcommand(
      "demo", "Prune a model to 2:4 and 64:2:8, pack it, and compare kernel speed with dense");
  command->add_option("--model", options->model,
                      "A .safetensors model (default: generate a Llama-style layer)");
  command->add_option("--out-dir", options->out_dir, "Where the pruned and packed files go")
      ->capture_default_str();
  command->add_option("--json", options->json, "Also write the table as JSON to this file");
  command->add_option("--dtype", options->dtype, "Generated weights: f32, f16 or bf16")
      ->capture_default_str();
  command->add_option("-p,--patterns", options->patterns, "Patterns to compare")
      ->delimiter(',')
      ->capture_default_str();
  command->add_option("--tokens", options->tokens, "Rows of X (tokens) to time")
      ->delimiter(',')
      ->capture_default_str();
  command->add_option("--hidden", options->hidden, "Generated model: hidden size")
      ->capture_default_str()
      ->check(CLI::Range(8, 65536));
  command->add_option("--intermediate", options->intermediate, "Generated model: MLP size")
      ->capture_default_str()
      ->check(CLI::Range(8, 262144));
  command->add_option("--layers", options->layers, "Generated model: layers")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  command->add_option("--repeats", options->repeats, "Timed runs per kernel")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  command->callback([options] { run_demo(*options); });
}

}  // namespace sparsa::cli
