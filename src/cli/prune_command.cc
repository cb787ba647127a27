// sparsa prune IN.safetensors -p PATTERN [--only REGEX] [--skip REGEX] -o OUT.safetensors
// sparsa prune MODEL.gguf|HF_DIR --method magnitude|wanda|sparsegpt [--calib FILE] -p PATTERN
//              [--permute] [--sequential] -o OUT.gguf|OUT_DIR
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cli/tensor_selection.h"
#include "cli/model_source.h"
#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"
#include "sparsa/safetensors.h"
#include "sparsa/vnm_choice.h"

namespace sparsa::cli {
namespace {

struct PruneOptions {
  std::string input;
  std::string output;
  std::string pattern;
  std::string criterion = "magnitude";
  TensorSelection selection;
  std::string method;  // models only; empty = magnitude
  std::string calib = "data/eval/calibration.txt";
  int64_t calib_window = 256;
  int64_t calib_windows = 4;
  bool permute = false;  // models, N:M / V:N:M: input-channel permutation before pruning
  int permute_rounds = PermutationOptions{}.rounds;
  std::string permute_objective = "importance";  // or "output" (PermutationObjective)
  bool permute_guard = false;
  bool permute_per_layer = false;
  bool sequential = false;  // layer-sequential calibration (prune_model_sequential)
};

bool is_model_input(const std::filesystem::path& path) {
  return std::filesystem::is_directory(path) || path.extension() == ".gguf" ||
         (std::filesystem::exists(path) && path.extension() != ".safetensors" && is_gguf_file(path));
}

std::string read_calibration_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("--calib {}: cannot open the calibration text", path);
  std::ostringstream s;
  s << in.rdbuf();
  if (s.str().empty()) fail("--calib {}: the calibration text is empty", path);
  return s.str();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "auto:SPEEDUP" -> the V:2:M that choose_vnm picks for that target; anything else as parsed.
Pattern resolve_pattern(const std::string& text) {
  if (!text.starts_with("auto:")) return Pattern::parse(text);
  const std::string target = text.substr(5);
  double speedup = 0;
  size_t used = 0;
  try {
    speedup = std::stod(target, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != target.size())
    fail("pattern '{}': expected auto:SPEEDUP with a number, e.g. auto:2.5", text);
  const VnmChoice choice = choose_vnm(speedup);
  fmt::print("pattern     {} -> {} (estimated {:.2f}x GEMM speed-up, mask diversity {:.4f} "
             "bits/weight; docs/results.md)\n",
             text, choice.pattern.to_string(), choice.estimated_speedup, choice.diversity_bits);
  return choice.pattern;
}

// The "pruned" summary line, the pruned model written as GGUF (or HF), and its packed size.
void report_pruned_and_write(LlamaModel& model, const Pattern& pattern, const std::string& method,
                             const PruneOptions& options, const std::optional<GgufFile>& file,
                             const std::filesystem::path& in, bool hf, double seconds) {
  double zeros = 0, total = 0;
  for (Linear* l : block_linears(model)) {
    const Tensor t = unpack(l->w, l->name);
    zeros += sparsity(t) * double(t.numel());
    total += double(t.numel());
  }
  fmt::print("pruned      {} block linear layers to {} ({}{}) in {:.2f} s, {:.2f}% zeros\n",
             block_linears(model).size(), pattern.to_string(), method,
             options.sequential ? ", layer-sequential" : "", seconds, 100.0 * zeros / total);
  std::map<std::string, std::string> extra = {{"sparsa.pattern", pattern.to_string()},
                                              {"sparsa.method", method}};
  if (options.permute)
    extra["sparsa.permuted"] = fmt::format(
        "input channels (<layer>.input_perm), objective {}{}{}", options.permute_objective,
        options.permute_guard ? ", guard" : "",
        options.permute_per_layer ? ", per layer" : ", shared per input");
  if (options.sequential) extra["sparsa.calibration"] = "layer-sequential";
  if (hf)
    write_pruned_hf(in, model, options.output, extra);
  else
    write_pruned_gguf(*file, model, options.output, extra);
  pack_model(model, pattern);
  fmt::print("model bytes {} ({} packed linear layers, f32 values)\n", model_bytes(model),
             format_name(default_format(pattern)));
  fmt::print("wrote       {}\n", options.output);
}

// A Llama model: calibrate when the method needs it, prune every block linear layer, write GGUF.
void run_prune_model(const PruneOptions& options) {
  const std::string method = options.method.empty() ? "magnitude" : options.method;
  if (method != "magnitude" && method != "wanda" && method != "sparsegpt")
    fail("--method '{}': expected magnitude, wanda or sparsegpt", method);
  const Pattern pattern = resolve_pattern(options.pattern);
  if (pattern.kind == PatternKind::Unstructured && pattern.global)
    fail("pattern '{}': global patterns are not supported for models; use unstructured:{}",
         pattern.to_string(), pattern.sparsity);
  if (method == "sparsegpt" && pattern.kind != PatternKind::Unstructured &&
      pattern.kind != PatternKind::NM && pattern.kind != PatternKind::VNM)
    fail("pattern '{}': --method sparsegpt supports unstructured, N:M and V:N:M patterns",
         pattern.to_string());
  if (options.permute && pattern.kind != PatternKind::NM && pattern.kind != PatternKind::VNM)
    fail("--permute: pattern '{}' has no groups of M inputs to permute; use an N:M or V:N:M "
         "pattern", pattern.to_string());
  if (options.permute_rounds < 0)
    fail("--permute-rounds {}: must be >= 0", options.permute_rounds);
  if (options.permute_objective != "importance" && options.permute_objective != "output")
    fail("--permute-objective '{}': expected importance or output", options.permute_objective);
  const bool energy = options.permute && options.permute_objective == "output";
  const bool guard = options.permute && options.permute_guard;
  if (options.permute_guard && !options.permute)
    fail("--permute-guard: needs --permute");
  if (options.permute_per_layer && !options.permute)
    fail("--permute-per-layer: needs --permute");
  if (options.sequential && method == "magnitude" && !energy && !guard)
    fail("--sequential with --method magnitude: magnitude pruning reads no calibration "
         "statistics, so sequential calibration would change nothing; use --method wanda or "
         "sparsegpt (or --permute --permute-objective output)");
  const std::filesystem::path in(options.input);
  const bool hf = std::filesystem::is_directory(in);
  if (options.permute && hf)
    fail("--permute: '{}' is a Hugging Face checkpoint, which cannot hold input permutations; "
         "prune a GGUF model", options.input);
  if (std::filesystem::exists(options.output) &&
      std::filesystem::weakly_canonical(options.input) ==
          std::filesystem::weakly_canonical(options.output))
    fail("output '{}' is the input file; write the pruned model to a new file", options.output);
  const bool calibrated = method != "magnitude" || energy || guard;
  const std::string calib_text = calibrated ? read_calibration_text(options.calib) : std::string();

  auto t0 = std::chrono::steady_clock::now();
  std::optional<GgufFile> file;
  if (!hf) file = GgufFile::open(in);
  LoadedModel loaded = load_model(options.input, DType::F32);
  LlamaModel& model = loaded.model;
  fmt::print("model       {} ({}), loaded in {:.2f} s\n", options.input, loaded.description,
             seconds_since(t0));

  PermutationOptions popt;
  popt.rounds = options.permute_rounds;
  if (energy) popt.objective = PermutationObjective::OutputEnergy;
  popt.guard = guard;
  popt.shared = !options.permute_per_layer;
  CalibrationOptions copt;
  copt.window = options.calib_window;
  copt.max_windows = options.calib_windows;
  copt.hessian = method == "sparsegpt" || guard;
  const auto print_permuted = [&](const PermutationSummary& summary, double seconds) {
    if (guard)
      fmt::print("guard       kept the permutation of {} of {} layers; calibration output error of "
                 "the pruned layers {:.6g} without -> {:.6g} ({:+.2f}%)\n",
                 summary.guarded - summary.reverted, summary.guarded, summary.error_identity,
                 summary.error_chosen,
                 100.0 * (summary.error_chosen / summary.error_identity - 1.0));
    fmt::print("permuted    input channels for {} ({}) in {:.2f} s: kept {} {:.6g} -> "
               "{:.6g} ({:+.2f}%)\n",
               pattern.to_string(),
               popt.shared ? "one permutation per input: q/k/v share one, gate/up share one"
                           : "one permutation per layer",
               seconds, energy ? "calibration output energy" : method + " importance",
               summary.kept_identity, summary.kept_permuted,
               100.0 * (summary.kept_permuted / summary.kept_identity - 1.0));
  };

  if (options.sequential) {
    t0 = std::chrono::steady_clock::now();
    std::vector<int32_t> tokens;
    if (calibrated) tokens = loaded.tokenizer.encode(calib_text);
    SequentialPruneOptions sopt;
    sopt.calibration = copt;
    sopt.calibrated = calibrated;
    sopt.permute = options.permute;
    sopt.permutation = popt;
    SequentialPruneSummary summary;
    try {
      summary = prune_model_sequential(
          model, method, pattern, tokens, sopt,
          [&](int64_t b, int64_t blocks) {
            fmt::print(stderr, "sequential  block {} of {} ({:.1f} s)\n", b + 1, blocks,
                       seconds_since(t0));
            std::fflush(stderr);
          });
    } catch (const Error& e) {
      fail("--sequential (--calib {}): {}", options.calib, e.what());
    }
    const double seconds = seconds_since(t0);
    fmt::print("calibration {}: {} windows of {} tokens per block, layer-sequential (blocks < b "
               "pruned{}), {} blocks\n",
               options.calib, summary.windows, options.calib_window,
               options.permute ? " and permuted" : "", model.weights().layers.size());
    if (options.permute) print_permuted(summary.permutation, seconds);
    report_pruned_and_write(model, pattern, method, options, file, in, hf, seconds);
    return;
  }

  CalibrationStatistics stats;
  if (calibrated) {
    t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> tokens = loaded.tokenizer.encode(calib_text);
    try {
      stats = calibrate(model, tokens, copt);
    } catch (const Error& e) {
      fail("--calib {}: {}", options.calib, e.what());
    }
    fmt::print("calibration {}: {} windows of {} tokens in {:.2f} s\n", options.calib,
               stats.windows, options.calib_window, seconds_since(t0));
  }
  const CalibrationStatistics* prune_stats = method == "magnitude" ? nullptr : &stats;
  CalibrationStatistics permuted_stats;
  if (options.permute) {
    t0 = std::chrono::steady_clock::now();
    Progress permute_progress("permute", int64_t(block_linears(model).size()));
    PermutationSummary summary;
    permuted_stats = permute_model(model, method, pattern, calibrated ? &stats : nullptr, popt,
                                   [&](const Linear& l) { permute_progress.advance(l.name); },
                                   &summary);
    permute_progress.finish();
    if (prune_stats) prune_stats = &permuted_stats;
    print_permuted(summary, seconds_since(t0));
  }
  t0 = std::chrono::steady_clock::now();
  Progress progress("prune", int64_t(block_linears(model).size()));
  prune_model(model, method, pattern, prune_stats,
              [&](const Linear& l) { progress.advance(l.name); });
  progress.finish();
  report_pruned_and_write(model, pattern, method, options, file, in, hf, seconds_since(t0));
}

void run_prune(PruneOptions& options) {
  if (is_model_input(options.input)) return run_prune_model(options);
  if (options.sequential)
    fail("--sequential: '{}' is a tensor file, not a model; layer-sequential calibration needs a "
         "GGUF model", options.input);
  if (options.permute)
    fail("--permute: '{}' is a tensor file, not a model; the permutation must be applied to the "
         "layer inputs, so it needs a GGUF model", options.input);
  if (!options.method.empty() && options.method != "magnitude")
    fail("--method {}: '{}' is a tensor file, not a model; calibration needs a GGUF model",
         options.method, options.input);
  options.selection.compile();
  const Pattern pattern = resolve_pattern(options.pattern);
  const auto criterion = make_criterion(options.criterion);
  if (std::filesystem::weakly_canonical(options.input) ==
      std::filesystem::weakly_canonical(options.output))
    fail("output '{}' is the input file; write the pruned model to a new file", options.output);

  SafetensorsFile file = read_safetensors(options.input);
  std::vector<size_t> selected;
  for (size_t i = 0; i < file.tensors.size(); ++i)
    if (options.selection.selects(file.tensors[i])) selected.push_back(i);
  if (selected.empty())
    fail("'{}': no tensor selected (float tensors of rank >= 2 matching --only/--skip)",
         options.input);

  Progress progress("prune", static_cast<int64_t>(selected.size()));
  if (pattern.kind == PatternKind::Unstructured && pattern.global) {
    // One threshold across every selected tensor.
    std::vector<std::vector<float>> scores;
    for (size_t i : selected) scores.push_back(criterion->scores(file.tensors[i]));
    std::vector<std::span<const float>> views(scores.begin(), scores.end());
    const auto masks = make_global_masks(pattern.sparsity, views);
    for (size_t j = 0; j < selected.size(); ++j) {
      apply_mask(file.tensors[selected[j]], masks[j]);
      progress.advance(file.tensors[selected[j]].name());
    }
  } else {
    for (size_t i : selected) {
      Tensor& tensor = file.tensors[i];
      tensor = prune(tensor, pattern, *criterion);
      progress.advance(tensor.name());
    }
  }
  progress.finish();

  fmt::print("{:<48} {:>16} {:>6} {:>9}\n", "tensor", "shape", "dtype", "sparsity");
  for (size_t i : selected) {
    const Tensor& tensor = file.tensors[i];
    fmt::print("{:<48} {:>16} {:>6} {:>8.2f}%\n", tensor.name(), shape_string(tensor.shape()),
               dtype_name(tensor.dtype()), 100.0 * sparsity(tensor));
  }
  auto metadata = file.metadata;
  metadata["sparsa.pattern"] = pattern.to_string();
  metadata["sparsa.criterion"] = std::string(criterion->name());
  write_safetensors(options.output, file.tensors, metadata);
  fmt::print("pruned {} of {} tensors to {} ({}), wrote {}\n", selected.size(),
             file.tensors.size(), pattern.to_string(), criterion->name(), options.output);
}

}  // namespace

void register_prune_command(CLI::App& app) {
  auto options = std::make_shared<PruneOptions>();
  auto* command = app.add_subcommand("prune", "Prune weight matrices to a sparsity pattern");
  command->add_option("input", options->input, "Input .safetensors file, or a GGUF model")
      ->required();
  command
      ->add_option("-p,--pattern", options->pattern,
                   "Pattern: 2:4, 64:2:8, unstructured:0.7[:global], block:4x4:0.5, rows:0.25, "
                   "cols:0.25, or auto:SPEEDUP (the V:2:M chosen for a GEMM speed-up target)")
      ->required();
  command->add_option("-o,--output", options->output, "Output .safetensors file")->required();
  command->add_option("--criterion", options->criterion, "Importance criterion: magnitude")
      ->capture_default_str();
  command->add_option("--method", options->method,
                      "Models: magnitude, wanda or sparsegpt (default magnitude)");
  command->add_option("--calib", options->calib, "Models: calibration text (UTF-8)")
      ->capture_default_str();
  command->add_option("--calib-window", options->calib_window, "Models: tokens per window")
      ->capture_default_str();
  command->add_option("--calib-windows", options->calib_windows,
                      "Models: calibration windows (-1 = all)")
      ->capture_default_str();
  command->add_flag("--permute", options->permute,
                    "Models, N:M and V:N:M: permute each layer's input channels to keep more "
                    "importance (stored as <layer>.input_perm in the GGUF)");
  command->add_option("--permute-rounds", options->permute_rounds,
                      "Models: local-search rounds of --permute")
      ->capture_default_str();
  command->add_option("--permute-objective", options->permute_objective,
                      "Models: what --permute keeps most of under the method's mask: importance "
                      "(the method's score) or output (sum of W^2 ||X_j||^2 on the calibration "
                      "text; calibrates magnitude too)")
      ->capture_default_str();
  command->add_flag("--permute-per-layer", options->permute_per_layer,
                    "Models: one permutation per layer instead of one per shared input (q/k/v, "
                    "gate/up); those layers then lose their stacked product on the GPU");
  command->add_flag("--permute-guard", options->permute_guard,
                    "Models: keep a layer's permutation only if the layer, pruned, has a lower "
                    "calibration output error ||(W - W_pruned) X||^2 with it than without");
  command->add_flag("--sequential", options->sequential,
                    "Models: layer-sequential calibration (SparseGPT's variant): each block's "
                    "statistics are collected with the blocks before it already pruned (and "
                    "permuted), so it compensates for their error; one calibration pass per block");
  options->selection.add_options(*command);
  command->callback([options] { run_prune(*options); });
}

}  // namespace sparsa::cli
