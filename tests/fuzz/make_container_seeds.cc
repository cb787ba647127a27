// Writes the seed corpus of the container fuzzer: small valid .sparsa files of every packed
// format, uncompressed and under every codec (int8/int4 sym and asym, codebook4/8 per channel,
// per tensor and rANS-coded, lossless, zstd), in f32, f16 and bf16. Built with the main
// compiler; run by CTest before the fuzzer (fixture container_fuzz_corpus).
//   make_container_seeds OUT_DIR
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "sparse_matrices.h"
#include "sparsa/codec.h"
#include "sparsa/container.h"
#include "sparsa/error.h"

namespace fs = std::filesystem;
using namespace sparsa;

namespace {

struct Case {
  FormatKind format;
  Pattern pattern;
};

ContainerTensor packed_tensor(const std::string& name, const Case& c, DType dtype,
                              std::vector<int64_t> shape, uint64_t seed) {
  const Tensor t = test::random_sparse_tensor(name, dtype, shape, c.pattern, seed);
  return {name, t.shape(), pack(t, c.format, c.pattern)};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    const fs::path dir = argv[1];
    fs::create_directories(dir);
    const std::vector<Case> cases = {
        {FormatKind::Dense, Pattern{}},
        {FormatKind::CSR, test::unstructured_pattern(0.5)},
        {FormatKind::Bitmap, test::unstructured_pattern(0.5)},
        {FormatKind::BSR, test::block_pattern(2, 4)},
        {FormatKind::NM, test::nm_pattern(2, 4)},
        {FormatKind::NM, test::nm_pattern(2, 8)},
        {FormatKind::VNM, test::vnm_pattern(16, 8)},
    };
    const std::vector<std::string> codecs = {"",          "int8",       "int8:g32:asym",
                                             "int4:g64",  "int4:asym",  "codebook4",
                                             "codebook4:tensor:rans", "codebook8:tensor",
                                             "codebook8:rans", "lossless", "zstd"};
    const DType dtypes[] = {DType::F32, DType::F16, DType::BF16};
    int written = 0;
    uint64_t seed = 1;
    for (const Case& c : cases)
      for (const std::string& spec : codecs) {
        const DType dtype = dtypes[seed % 3];
        // Ragged shapes: K not a multiple of the group or N:M width, a few groups per row.
        ContainerTensor t = packed_tensor("layers.0.w", c, dtype, {5, 70}, seed++);
        if (!spec.empty()) {
          const CodecParams params = CodecParams::parse(spec);
          t.packed = compress(t.packed, params).packed;
          t.codec = params;
        }
        Container container;
        container.metadata = {{"seed", std::to_string(seed)}};
        container.tensors.push_back(std::move(t));
        // A second, small uncompressed tensor, so entries and blob offsets vary.
        container.tensors.push_back(packed_tensor("b", c, DType::F32, {3, 9}, seed++));
        const std::string name = fmt::format("{}-{}-{}.sparsa", format_name(c.format),
                                              c.pattern.to_string(), spec.empty() ? "raw" : spec);
        std::string file = name;
        for (char& ch : file)
          if (ch == ':') ch = '_';
        write_container(dir / file, container);
        // Every seed must be one the reader accepts.
        (void)read_container(dir / file);
        ++written;
      }
    std::printf("wrote %d seed containers to %s\n", written, dir.c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "make_container_seeds: %s\n", e.what());
    return 1;
  }
}
