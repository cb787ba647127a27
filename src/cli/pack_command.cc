// sparsa pack IN.safetensors -f FORMAT [-p PATTERN] [--only REGEX] [--skip REGEX] -o OUT.sparsa
// Selected weight matrices are packed into FORMAT; every other tensor is stored dense, so the
// container holds the whole file.
#include <memory>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cli/tensor_selection.h"
#include "sparsa/container.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/safetensors.h"

namespace sparsa::cli {
namespace {

struct PackOptions {
  std::string input;
  std::string output;
  std::string format;
  std::string pattern;  // optional: otherwise detected per tensor
  TensorSelection selection;
};

// The pattern a tensor is packed with: the one given, or the strongest structured pattern the
// tensor satisfies that the format can use.
Pattern choose_pattern(const Tensor& tensor, FormatKind format, const std::optional<Pattern>& given) {
  if (given) return *given;
  if (format == FormatKind::BSR)
    fail("tensor '{}': format bsr needs the block shape, e.g. -p block:4x4:0.5", tensor.name());
  const auto values = tensor.to_f32();
  const auto satisfied = satisfied_patterns(values, tensor.rows(), tensor.cols());
  const PatternKind wanted = format == FormatKind::NM    ? PatternKind::NM
                             : format == FormatKind::VNM ? PatternKind::VNM
                                                         : PatternKind::Dense;
  for (const Pattern& p : satisfied)  // strongest first
    if (p.kind == wanted || wanted == PatternKind::Dense) return p;
  if (wanted == PatternKind::Dense) return Pattern{};
  fail("tensor '{}' {} satisfies no {} pattern; prune it first (sparsa prune -p ...) or pack it "
       "as csr or bitmap",
       tensor.name(), shape_string(tensor.shape()), wanted == PatternKind::NM ? "N:M" : "V:N:M");
}

void run_pack(PackOptions& options) {
  options.selection.compile();
  const FormatKind format = parse_format(options.format);
  std::optional<Pattern> given;
  if (!options.pattern.empty()) given = Pattern::parse(options.pattern);

  const SafetensorsFile file = read_safetensors(options.input);
  Container container;
  container.metadata = file.metadata;
  container.metadata["sparsa.source"] = options.input;
  Progress progress("pack", static_cast<int64_t>(file.tensors.size()));
  fmt::print("{:<48} {:>7} {:>14} {:>10} {:>10}\n", "tensor", "format", "pattern", "B/weight",
             "vs source");
  size_t source_bytes = 0, packed_bytes = 0;
  for (const Tensor& tensor : file.tensors) {
    if (!is_float_weight_dtype(tensor.dtype()))
      fail("'{}': tensor '{}' has dtype {}; .sparsa containers hold F32, F16 and BF16 tensors",
           options.input, tensor.name(), dtype_name(tensor.dtype()));
    const bool selected = options.selection.selects(tensor);
    const FormatKind kind = selected ? format : FormatKind::Dense;
    const Pattern pattern = selected ? choose_pattern(tensor, kind, given) : Pattern{};
    ContainerTensor entry{tensor.name(), tensor.shape(), sparsa::pack(tensor, kind, pattern)};
    source_bytes += tensor.nbytes();
    packed_bytes += entry.packed.total_bytes();
    if (selected)
      fmt::print("{:<48} {:>7} {:>14} {:>10.4f} {:>9.2f}x\n", tensor.name(), format_name(kind),
                 pattern.to_string(), entry.packed.bytes_per_weight(),
                 static_cast<double>(tensor.nbytes()) / std::max<size_t>(entry.packed.total_bytes(), 1));
    container.tensors.push_back(std::move(entry));
    progress.advance(tensor.name());
  }
  progress.finish();
  write_container(options.output, container);
  fmt::print("packed {} tensors: {:.2f} MB -> {:.2f} MB, wrote {}\n", container.tensors.size(),
             source_bytes / 1e6, packed_bytes / 1e6, options.output);
}

}  // namespace

void register_pack_command(CLI::App& app) {
  auto options = std::make_shared<PackOptions>();
  auto* command = app.add_subcommand("pack", "Pack pruned weights into a .sparsa container");
  command->add_option("input", options->input, "Input .safetensors file")->required();
  command->add_option("-f,--format", options->format, "dense, csr, bsr, bitmap, nm or vnm")
      ->required();
  command->add_option("-p,--pattern", options->pattern,
                      "Pattern the weights satisfy (default: detected per tensor)");
  command->add_option("-o,--output", options->output, "Output .sparsa file")->required();
  options->selection.add_options(*command);
  command->callback([options] { run_pack(*options); });
}

}  // namespace sparsa::cli
