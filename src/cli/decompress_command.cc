// sparsa decompress IN.sparsa -o OUT.safetensors
// Every tensor decoded (codec), unpacked (format) and written dense in its original shape and
// dtype, with the container's metadata. Bit-exact for lossless codecs (and uncompressed tensors).
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/progress.h"
#include "sparsa/codec.h"
#include "sparsa/container.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/safetensors.h"

namespace sparsa::cli {
namespace {

struct DecompressOptions {
  std::string input, output;
};

void run_decompress(const DecompressOptions& options) {
  if (!is_container_file(options.input))
    fail("'{}' is not a .sparsa container (decompress reads what compress or pack wrote)",
         options.input);
  const Container container = read_container(options.input);
  std::vector<Tensor> tensors;
  Progress progress("decompress", static_cast<int64_t>(container.tensors.size()));
  for (const ContainerTensor& t : container.tensors) {
    const Tensor matrix = t.codec ? unpack(decompress(CompressedMatrix{t.packed, *t.codec}), t.name)
                                  : unpack(t.packed, t.name);
    Tensor tensor(t.name, matrix.dtype(), t.shape);  // the original shape; same element count
    if (tensor.nbytes() != matrix.nbytes())
      fail("'{}': tensor '{}' has shape {} but its matrix is {} x {}", options.input, t.name,
           shape_string(t.shape), matrix.rows(), matrix.cols());
    if (matrix.nbytes() > 0)
      std::memcpy(tensor.mutable_bytes().data(), matrix.bytes().data(), matrix.nbytes());
    tensors.push_back(std::move(tensor));
    progress.advance(t.name);
  }
  progress.finish();
  write_safetensors(options.output, tensors, container.metadata);
  fmt::print("decompressed {} tensors; wrote {}\n", tensors.size(), options.output);
}

}  // namespace

void register_decompress_command(CLI::App& app) {
  auto options = std::make_shared<DecompressOptions>();
  auto* command = app.add_subcommand(
      "decompress", "Decode a .sparsa container back to dense .safetensors");
  command->add_option("input", options->input, "Input .sparsa file")->required();
  command->add_option("-o,--output", options->output, "Output .safetensors file")->required();
  command->callback([options] { run_decompress(*options); });
}

}  // namespace sparsa::cli
