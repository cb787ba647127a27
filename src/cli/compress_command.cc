// sparsa compress IN [-p PATTERN] [-f FORMAT] -c CODEC [--only REGEX] [--skip REGEX] -o OUT.sparsa
// IN is a .safetensors file (selected weight matrices are packed into FORMAT with PATTERN, then
// compressed; other tensors are stored dense, uncompressed), a GGUF model (its selected weight
// matrices, dequantised and rounded to f16, are packed and compressed the same way; the others
// are not stored: the container holds weights, not a loadable model), or a .sparsa container
// (its selected, not yet compressed matrices are compressed as they are packed). CODEC `none`
// packs without compressing (the uncompressed baseline of the same pattern). Prints per tensor
// the bits per weight of values, metadata and scales and the reconstruction error, and the
// totals over every compressed tensor.
#include <cmath>
#include <memory>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cli/tensor_selection.h"
#include "sparsa/codec.h"
#include "sparsa/container.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/gguf.h"
#include "sparsa/safetensors.h"

namespace sparsa::cli {
namespace {

struct CompressOptions {
  std::string input, output, format, pattern, codec;
  TensorSelection selection;
};

// The pattern a safetensors tensor is packed with: the one given, else for nm/vnm the strongest
// pattern of that kind the tensor satisfies, else none (dense, csr, bitmap need none).
Pattern choose_pattern(const Tensor& tensor, FormatKind format, const std::optional<Pattern>& given) {
  if (given) return *given;
  if (format == FormatKind::BSR)
    fail("tensor '{}': format bsr needs the block shape, e.g. -p block:4x4:0.5", tensor.name());
  if (format != FormatKind::NM && format != FormatKind::VNM) return Pattern{};
  const PatternKind wanted = format == FormatKind::NM ? PatternKind::NM : PatternKind::VNM;
  for (const Pattern& p : satisfied_patterns(tensor.to_f32(), tensor.rows(), tensor.cols()))
    if (p.kind == wanted) return p;
  fail("tensor '{}' {} satisfies no {} pattern; prune it first (sparsa prune -p ...)",
       tensor.name(), shape_string(tensor.shape()), wanted == PatternKind::NM ? "N:M" : "V:N:M");
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return norm > 0 ? std::sqrt(diff / norm) : (diff > 0 ? INFINITY : 0.0);
}

double squared_norm(const std::vector<float>& v) {
  double sum = 0;
  for (float x : v) sum += double(x) * x;
  return sum;
}

struct Totals {
  double weights = 0, value_bits = 0, metadata_bits = 0, scale_bits = 0;
  double squared_error = 0, squared_norm = 0;  // over every compressed tensor
};

// Compresses one packed matrix (or only packs it: no codec) and prints its line; `original` is
// its dense f32 values.
ContainerTensor compress_one(const std::string& name, const std::vector<int64_t>& shape,
                             const PackedMatrix& packed, const std::optional<CodecParams>& params,
                             const std::vector<float>& original, Totals& totals) {
  std::optional<CompressedMatrix> c;
  if (params) c = compress(packed, *params);
  const CompressionStats st = c ? compression_stats(*c) : compression_stats(packed);
  const double error = !c || codec_traits(params->kind).lossless
                           ? 0.0
                           : relative_error(unpack(decompress(*c), name).to_f32(), original);
  fmt::print("{:<44} {:>7} {:>10} {:>18} {:>7.3f} {:>7.3f} {:>7.3f} {:>8.3f} {:>9.2e}\n", name,
             format_name(packed.format), packed.pattern.to_string(),
             params ? params->to_string() : "none", st.value_bits(), st.metadata_bits(),
             st.scale_bits(), st.total_bits(), error);
  totals.weights += st.weights;
  totals.value_bits += st.value_bits() * st.weights;
  totals.metadata_bits += st.metadata_bits() * st.weights;
  totals.scale_bits += st.scale_bits() * st.weights;
  const double norm = squared_norm(original);
  totals.squared_norm += norm;
  totals.squared_error += error * error * norm;
  if (!c) return ContainerTensor{name, shape, packed, std::nullopt};
  return ContainerTensor{name, shape, std::move(c->packed), params};
}

void run_compress(CompressOptions& options) {
  options.selection.compile();
  std::optional<CodecParams> params;  // none: pack only
  if (options.codec != "none") params = CodecParams::parse(options.codec);
  std::optional<Pattern> given;
  if (!options.pattern.empty()) given = Pattern::parse(options.pattern);
  Container out;
  Totals totals;
  fmt::print("{:<44} {:>7} {:>10} {:>18} {:>7} {:>7} {:>7} {:>8} {:>9}\n", "tensor", "format",
             "pattern", "codec", "value b", "meta b", "scale b", "bits/w", "rel err");

  if (is_container_file(options.input)) {
    if (given || !options.format.empty())
      fail("'{}' is a .sparsa container, already packed: -p and -f apply to .safetensors input",
           options.input);
    Container in = read_container(options.input);
    out.metadata = in.metadata;
    Progress progress("compress", static_cast<int64_t>(in.tensors.size()));
    for (ContainerTensor& t : in.tensors) {
      const Tensor probe = Tensor::view(t.name, t.packed.value_dtype, t.shape, nullptr, nullptr);
      if (!t.codec && options.selection.selects(probe)) {
        const std::vector<float> original = unpack(t.packed, t.name).to_f32();
        out.tensors.push_back(compress_one(t.name, t.shape, t.packed, params, original, totals));
      } else {
        out.tensors.push_back(std::move(t));
      }
      progress.advance(out.tensors.back().name);
    }
    progress.finish();
  } else {
    const FormatKind format = !options.format.empty() ? parse_format(options.format)
                              : given                 ? default_format(*given)
                                                      : FormatKind::Dense;
    auto add = [&](const Tensor& tensor) {
      const Pattern pattern = choose_pattern(tensor, format, given);
      const PackedMatrix packed = pack(tensor, format, pattern);
      out.tensors.push_back(
          compress_one(tensor.name(), tensor.shape(), packed, params, tensor.to_f32(), totals));
    };
    if (is_gguf_file(options.input)) {
      const GgufFile file = GgufFile::open(options.input);
      out.metadata["sparsa.source"] = options.input;
      Progress progress("compress", static_cast<int64_t>(file.tensors().size()));
      int64_t skipped = 0;
      for (const GgufTensorInfo& info : file.tensors()) {
        // Selection by name and shape first: dequantising every tensor would cost seconds.
        const Tensor probe = Tensor::view(info.name, DType::F16, info.shape(), nullptr, nullptr);
        if (options.selection.selects(probe)) {
          const Tensor f32 = file.to_f32(info);
          add(Tensor::from_f32(info.name, DType::F16, f32.shape(), f32.to_f32()));
        } else {
          ++skipped;
        }
        progress.advance(info.name);
      }
      progress.finish();
      fmt::print("{} tensors of the GGUF model not selected, not stored\n", skipped);
    } else {
      const SafetensorsFile file = read_safetensors(options.input);
      out.metadata = file.metadata;
      out.metadata["sparsa.source"] = options.input;
      Progress progress("compress", static_cast<int64_t>(file.tensors.size()));
      for (const Tensor& tensor : file.tensors) {
        if (!is_float_weight_dtype(tensor.dtype()))
          fail("'{}': tensor '{}' has dtype {}; .sparsa containers hold F32, F16 and BF16 tensors",
               options.input, tensor.name(), dtype_name(tensor.dtype()));
        if (options.selection.selects(tensor))
          add(tensor);
        else
          out.tensors.push_back(ContainerTensor{tensor.name(), tensor.shape(),
                                                pack(tensor, FormatKind::Dense, {}), {}});
        progress.advance(tensor.name());
      }
      progress.finish();
    }
  }
  out.metadata["sparsa.codec"] = params ? params->to_string() : "none";
  write_container(options.output, out);
  if (totals.weights > 0)
    fmt::print("compressed {:.0f} weights: {:.3f} bits/weight (values {:.3f}, metadata {:.3f}, "
               "scales {:.3f}), relative error {:.3e}; wrote {}\n",
               totals.weights,
               (totals.value_bits + totals.metadata_bits + totals.scale_bits) / totals.weights,
               totals.value_bits / totals.weights, totals.metadata_bits / totals.weights,
               totals.scale_bits / totals.weights,
               totals.squared_norm > 0 ? std::sqrt(totals.squared_error / totals.squared_norm)
                                       : 0.0,
               options.output);
  else
    fmt::print("no tensor selected for compression; wrote {}\n", options.output);
}

}  // namespace

void register_compress_command(CLI::App& app) {
  auto options = std::make_shared<CompressOptions>();
  auto* command = app.add_subcommand(
      "compress", "Pack and compress weights (int8, int4, codebook4/8, lossless, zstd)");
  command->add_option("input", options->input,
                      "Input .safetensors file, GGUF model (selected matrices only, as f16) or "
                      ".sparsa file")
      ->required();
  command->add_option("-p,--pattern", options->pattern,
                      "Pattern the weights satisfy (safetensors input; default: none, or "
                      "detected for nm/vnm)");
  command->add_option("-f,--format", options->format,
                      "dense, csr, bsr, bitmap, nm or vnm (safetensors/GGUF input; default: the "
                      "pattern's format, else dense)");
  command->add_option("-c,--codec", options->codec,
                      "lossless, zstd, int8, int4, codebook4, codebook8, with options, e.g. "
                      "int4:g64:asym, codebook4:tensor, codebook8:rans, zstd:l19; none: pack only")
      ->required();
  command->add_option("-o,--output", options->output, "Output .sparsa file")->required();
  options->selection.add_options(*command);
  command->callback([options] { run_compress(*options); });
}

}  // namespace sparsa::cli
