// sparsa inspect FILE [--json]: per tensor its shape, dtype, sparsity, the structured patterns it
// satisfies and its bytes per weight in each format it packs into. FILE is a .safetensors file or
// a .sparsa container; for a container, each tensor's format, codec and bits per weight of
// values, metadata and scales.
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "sparsa/codec.h"
#include "sparsa/container.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/safetensors.h"

namespace sparsa::cli {
namespace {

using nlohmann::ordered_json;

struct InspectOptions {
  std::string input;
  bool json = false;
};

// Bytes per weight of a pruned dense tensor in every format that can hold it: dense, csr,
// bitmap, and nm / vnm for the strongest N:M and V:N:M patterns it satisfies.
ordered_json packed_sizes(const Tensor& tensor, const std::vector<Pattern>& patterns) {
  ordered_json sizes;
  sizes["dense"] = static_cast<double>(dtype_size(tensor.dtype()));
  sizes["csr"] = pack(tensor, FormatKind::CSR, Pattern{}).bytes_per_weight();
  sizes["bitmap"] = pack(tensor, FormatKind::Bitmap, Pattern{}).bytes_per_weight();
  bool have_nm = false, have_vnm = false;
  for (const Pattern& p : patterns) {  // strongest first
    if (p.kind == PatternKind::NM && !have_nm) {
      sizes["nm " + p.to_string()] = pack(tensor, FormatKind::NM, p).bytes_per_weight();
      have_nm = true;
    } else if (p.kind == PatternKind::VNM && !have_vnm) {
      sizes["vnm " + p.to_string()] = pack(tensor, FormatKind::VNM, p).bytes_per_weight();
      have_vnm = true;
    }
  }
  return sizes;
}

ordered_json inspect_safetensors(const std::string& path) {
  const SafetensorsFile file = read_safetensors(path);
  ordered_json tensors = ordered_json::array();
  Progress progress("inspect", static_cast<int64_t>(file.tensors.size()));
  for (const Tensor& tensor : file.tensors) {
    ordered_json entry;
    entry["name"] = tensor.name();
    entry["shape"] = tensor.shape();
    entry["dtype"] = dtype_name(tensor.dtype());
    if (is_float_weight_dtype(tensor.dtype())) {
      entry["sparsity"] = sparsity(tensor);
      if (tensor.shape().size() >= 2) {
        const auto values = tensor.to_f32();
        const auto patterns = satisfied_patterns(values, tensor.rows(), tensor.cols());
        ordered_json names = ordered_json::array();
        for (const auto& p : patterns) names.push_back(p.to_string());
        entry["patterns"] = names;
        entry["bytes_per_weight"] = packed_sizes(tensor, patterns);
      }
    }
    tensors.push_back(entry);
    progress.advance(tensor.name());
  }
  progress.finish();
  ordered_json result;
  result["file"] = path;
  result["kind"] = "safetensors";
  result["metadata"] = file.metadata;
  result["tensors"] = tensors;
  return result;
}

ordered_json inspect_container(const std::string& path) {
  const Container container = read_container(path);
  ordered_json tensors = ordered_json::array();
  for (const ContainerTensor& tensor : container.tensors) {
    const PackedMatrix& packed = tensor.packed;
    ordered_json entry;
    entry["name"] = tensor.name;
    entry["shape"] = tensor.shape;
    entry["dtype"] = dtype_name(packed.value_dtype);
    // Compressed tensors (sparsa/codec.h) are decoded for their sparsity.
    const CompressionStats stats =
        tensor.codec ? compression_stats(CompressedMatrix{packed, *tensor.codec})
                     : compression_stats(packed);
    entry["sparsity"] =
        sparsity(tensor.codec ? unpack(decompress(CompressedMatrix{packed, *tensor.codec}), tensor.name)
                              : unpack(packed, tensor.name));
    entry["pattern"] = packed.pattern.to_string();
    entry["format"] = format_name(packed.format);
    entry["codec"] = tensor.codec ? tensor.codec->to_string() : "none";
    entry["bytes_per_weight"] = packed.bytes_per_weight();
    entry["bits_per_weight"] = {{"values", stats.value_bits()},
                                {"metadata", stats.metadata_bits()},
                                {"scales", stats.scale_bits()},
                                {"total", stats.total_bits()}};
    ordered_json arrays;
    for (const auto& array : packed.arrays) arrays[array.name] = array.bytes.size();
    entry["array_bytes"] = arrays;
    tensors.push_back(entry);
  }
  ordered_json result;
  result["file"] = path;
  result["kind"] = "sparsa";
  result["format_version"] = kContainerVersion;
  result["metadata"] = container.metadata;
  result["tensors"] = tensors;
  return result;
}

void print_table(const ordered_json& report) {
  const bool is_container = report["kind"] == "sparsa";
  fmt::print("{} ({} file, {} tensors)\n", report["file"].get<std::string>(),
             report["kind"].get<std::string>(), report["tensors"].size());
  if (is_container) {
    fmt::print("{:<40} {:>14} {:>5} {:>9} {:>14} {:>7} {:>16} {:>8} {:>7} {:>7} {:>7}\n",
               "tensor", "shape", "dtype", "sparsity", "pattern", "format", "codec", "B/weight",
               "value b", "meta b", "scale b");
  } else {
    fmt::print("{:<40} {:>14} {:>5} {:>9} {:>22}  {}\n", "tensor", "shape", "dtype", "sparsity",
               "best packed B/weight", "patterns satisfied");
  }
  for (const auto& t : report["tensors"]) {
    const std::string shape = shape_string(t["shape"].get<std::vector<int64_t>>());
    const std::string spars =
        t.contains("sparsity") ? fmt::format("{:.2f}%", 100.0 * t["sparsity"].get<double>()) : "-";
    if (is_container) {
      const auto& bits = t["bits_per_weight"];
      fmt::print("{:<40} {:>14} {:>5} {:>9} {:>14} {:>7} {:>16} {:>8.4f} {:>7.3f} {:>7.3f} {:>7.3f}\n",
                 t["name"].get<std::string>(), shape, t["dtype"].get<std::string>(), spars,
                 t["pattern"].get<std::string>(), t["format"].get<std::string>(),
                 t["codec"].get<std::string>(), t["bytes_per_weight"].get<double>(),
                 bits["values"].get<double>(), bits["metadata"].get<double>(),
                 bits["scales"].get<double>());
      continue;
    }
    std::string best = "-", patterns = "-";
    if (t.contains("bytes_per_weight")) {
      double best_bytes = 1e30;
      for (const auto& [format, bytes] : t["bytes_per_weight"].items()) {
        if (bytes.get<double>() < best_bytes) {
          best_bytes = bytes.get<double>();
          best = fmt::format("{:.4f} ({})", best_bytes, format);
        }
      }
      std::vector<std::string> names = t["patterns"].get<std::vector<std::string>>();
      patterns = names.empty() ? "none" : fmt::format("{}", fmt::join(names, " "));
    }
    fmt::print("{:<40} {:>14} {:>5} {:>9} {:>22}  {}\n", t["name"].get<std::string>(), shape,
               t["dtype"].get<std::string>(), spars, best, patterns);
  }
}

void run_inspect(const InspectOptions& options) {
  const ordered_json report = is_container_file(options.input) ? inspect_container(options.input)
                                                               : inspect_safetensors(options.input);
  if (options.json)
    fmt::print("{}\n", report.dump(2));
  else
    print_table(report);
}

}  // namespace

void register_inspect_command(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  auto* command =
      app.add_subcommand("inspect", "Show tensors, sparsity, patterns and packed sizes of a file");
  command->add_option("file", options->input, ".safetensors or .sparsa file")->required();
  command->add_flag("--json", options->json, "Print JSON instead of a table");
  command->callback([options] { run_inspect(*options); });
}

}  // namespace sparsa::cli
