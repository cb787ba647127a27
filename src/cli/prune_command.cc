// sparsa prune IN.safetensors -p PATTERN [--only REGEX] [--skip REGEX] -o OUT.safetensors
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cli/tensor_selection.h"
#include "sparsa/error.h"
#include "sparsa/prune.h"
#include "sparsa/safetensors.h"

namespace sparsa::cli {
namespace {

struct PruneOptions {
  std::string input;
  std::string output;
  std::string pattern;
  std::string criterion = "magnitude";
  TensorSelection selection;
};

void run_prune(PruneOptions& options) {
  options.selection.compile();
  const Pattern pattern = Pattern::parse(options.pattern);
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
  command->add_option("input", options->input, "Input .safetensors file")->required();
  command
      ->add_option("-p,--pattern", options->pattern,
                   "Pattern: 2:4, 64:2:8, unstructured:0.7[:global], block:4x4:0.5, rows:0.25, "
                   "cols:0.25")
      ->required();
  command->add_option("-o,--output", options->output, "Output .safetensors file")->required();
  command->add_option("--criterion", options->criterion, "Importance criterion: magnitude")
      ->capture_default_str();
  options->selection.add_options(*command);
  command->callback([options] { run_prune(*options); });
}

}  // namespace sparsa::cli
