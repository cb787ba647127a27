// Compressed tensors in the .sparsa container and the `sparsa compress` / `decompress` /
// `inspect` commands: lossless codecs round-trip bit-exact through the files, lossy ones within
// their error, bits per weight reported by role, and damaged or bad input refused (exit 2).
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sparsa/codec.h"
#include "sparsa/container.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/safetensors.h"
#include "sparse_matrices.h"
#include "test_util.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

using test::expect_error;

// Two weight matrices (one ragged, one 3-D), a norm vector; values like trained weights.
fs::path write_model(const fs::path& dir, DType dtype) {
  std::vector<Tensor> tensors = {
      test::random_tensor("layers.0.mlp.up_proj.weight", dtype, {96, 70}, 1),
      test::random_tensor("layers.0.self_attn.qkv.weight", dtype, {3, 32, 64}, 2),
      test::random_tensor("layers.0.input_layernorm.weight", dtype, {64}, 3),
  };
  const auto path = dir / "model.safetensors";
  write_safetensors(path, tensors, {{"origin", "codec_cli_test"}});
  return path;
}

const Tensor& find(const SafetensorsFile& file, const std::string& name) {
  for (const auto& t : file.tensors)
    if (t.name() == name) return t;
  throw std::runtime_error("no tensor " + name);
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::equal(a.bytes().begin(), a.bytes().end(), b.bytes().begin(), b.bytes().end());
}

TEST(CodecCli, LosslessCodecsRoundTripBitExactThroughTheFiles) {
  const auto dir = test::temp_dir();
  for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
    const auto model = write_model(dir, dtype);
    for (const std::string codec : {"lossless", "lossless:gpu", "zstd:l9"}) {
      const auto packed = dir / "model.sparsa", back = dir / "back.safetensors";
      auto result = run_cli({"compress", model.string(), "-c", codec, "-o", packed.string()});
      ASSERT_EQ(result.exit_code, 0) << codec << "\n" << result.err;
      EXPECT_NE(result.out.find("bits/weight"), std::string::npos) << result.out;
      result = run_cli({"decompress", packed.string(), "-o", back.string()});
      ASSERT_EQ(result.exit_code, 0) << codec << "\n" << result.err;
      const auto original = read_safetensors(model), decoded = read_safetensors(back);
      ASSERT_EQ(decoded.tensors.size(), original.tensors.size());
      for (const auto& t : original.tensors)
        EXPECT_TRUE(same_bytes(find(decoded, t.name()), t)) << codec << " " << t.name();
      EXPECT_EQ(decoded.metadata.at("origin"), "codec_cli_test");
      EXPECT_EQ(decoded.metadata.at("sparsa.codec"), CodecParams::parse(codec).to_string());
    }
  }
}

TEST(CodecCli, LossyCodecsStayCloseAndLeaveOtherTensorsAlone) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir, DType::F16);
  const auto original = read_safetensors(model);
  // Relative Frobenius error bounds for uniform [-1, 1] weights (generous: 2-4x the expected).
  // (Per-channel codebook8 would be exact here: rows of 64-70 values fit 256 entries.)
  const std::pair<const char*, double> cases[] = {
      {"int8", 0.01}, {"int4:g64:asym", 0.15}, {"codebook4", 0.15},
      {"codebook8:tensor:rans", 0.02}};
  for (const auto& [codec, bound] : cases) {
    const auto packed = dir / "model.sparsa", back = dir / "back.safetensors";
    ASSERT_EQ(run_cli({"compress", model.string(), "-c", codec, "-o", packed.string()}).exit_code, 0);
    ASSERT_EQ(run_cli({"decompress", packed.string(), "-o", back.string()}).exit_code, 0);
    const auto decoded = read_safetensors(back);
    for (const auto& t : original.tensors) {
      const Tensor& d = find(decoded, t.name());
      EXPECT_EQ(d.shape(), t.shape());
      if (t.shape().size() < 2) {
        EXPECT_TRUE(same_bytes(d, t)) << "1-D tensors are not compressed";
        continue;
      }
      const double error = test::relative_error(d.to_f32(), t.to_f32());
      EXPECT_GT(error, 0.0) << codec << " " << t.name();
      EXPECT_LT(error, bound) << codec << " " << t.name();
    }
  }
}

TEST(CodecCli, PrunedTwoFourInt4ReportsBitsByRoleAndKeepsThePattern) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir, DType::F16);
  const auto pruned = dir / "pruned.safetensors", packed = dir / "m.sparsa",
             back = dir / "back.safetensors";
  ASSERT_EQ(run_cli({"prune", model.string(), "-p", "2:4", "-o", pruned.string()}).exit_code, 0);
  auto result =
      run_cli({"compress", pruned.string(), "-p", "2:4", "-c", "int4", "-o", packed.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;

  const Container container = read_container(packed);
  for (const auto& t : container.tensors) {
    if (t.shape.size() < 2) {
      EXPECT_FALSE(t.codec);
      continue;
    }
    ASSERT_TRUE(t.codec) << t.name;
    EXPECT_EQ(t.codec->to_string(), "int4");
    EXPECT_EQ(t.packed.format, FormatKind::NM);
  }

  result = run_cli({"inspect", packed.string(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto report = nlohmann::json::parse(result.out);
  for (const auto& t : report["tensors"]) {
    if (t["shape"].size() < 2) {
      EXPECT_EQ(t["codec"], "none");
      continue;
    }
    EXPECT_EQ(t["codec"], "int4");
    const auto& bits = t["bits_per_weight"];
    // 4-bit codes on half the columns; 2:4 metadata 4 bits per 4 columns, rounded up to whole
    // 32-bit words per row (70 columns: 96 bits); one fp16 scale per 128 kept values, up to the
    // rows' ragged ends.
    EXPECT_NEAR(bits["values"].get<double>(), 2.0, 0.1) << t["name"];
    EXPECT_GE(bits["metadata"].get<double>(), 1.0) << t["name"];
    EXPECT_LT(bits["metadata"].get<double>(), 1.4) << t["name"];
    EXPECT_GT(bits["scales"].get<double>(), 0.0);
    EXPECT_LT(bits["scales"].get<double>(), 0.6);
    EXPECT_NEAR(t["sparsity"].get<double>(), 0.5, 0.05);
  }
  // The table shows the codec and the three parts too.
  result = run_cli({"inspect", packed.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("int4"), std::string::npos);
  EXPECT_NE(result.out.find("scale b"), std::string::npos);

  // Pruned zeros stay zeros: the decompressed weights still satisfy 2:4.
  ASSERT_EQ(run_cli({"decompress", packed.string(), "-o", back.string()}).exit_code, 0);
  for (const auto& t : read_safetensors(back).tensors) {
    if (t.shape().size() < 2) continue;
    const auto check = validate(Pattern::parse("2:4"), t.to_f32(), t.rows(), t.cols());
    EXPECT_TRUE(check.ok) << t.name() << ": " << check.violation;
  }
}

TEST(CodecCli, CompressesAPackedContainer) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir, DType::BF16);
  const auto packed = dir / "packed.sparsa", compressed = dir / "c.sparsa";
  ASSERT_EQ(run_cli({"pack", model.string(), "-f", "bitmap", "-o", packed.string()}).exit_code, 0);
  auto result = run_cli({"compress", packed.string(), "-c", "lossless", "-o", compressed.string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Container before = read_container(packed), after = read_container(compressed);
  for (size_t i = 0; i < before.tensors.size(); ++i) {
    const auto& t = after.tensors[i];
    if (!t.codec) continue;
    EXPECT_EQ(t.packed.format, FormatKind::Bitmap);
    const PackedMatrix back = decompress(CompressedMatrix{t.packed, *t.codec});
    ASSERT_EQ(back.arrays.size(), before.tensors[i].packed.arrays.size());
    for (size_t a = 0; a < back.arrays.size(); ++a)
      EXPECT_EQ(back.arrays[a].bytes, before.tensors[i].packed.arrays[a].bytes);
  }
  // -p / -f make no sense for a packed input.
  result = run_cli({"compress", packed.string(), "-p", "2:4", "-c", "int8", "-o",
                    (dir / "x.sparsa").string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("already packed"), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(dir / "x.sparsa"));
}

TEST(CodecCli, BadCodecsAndInputsExitWithCodeTwo) {
  const auto dir = test::temp_dir();
  const auto model = write_model(dir, DType::F16);
  const auto out = dir / "out.sparsa";
  auto result = run_cli({"compress", model.string(), "-c", "int3", "-o", out.string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("unknown codec 'int3'"), std::string::npos) << result.err;
  result = run_cli({"compress", model.string(), "-c", "int4:g48", "-o", out.string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("group size 48"), std::string::npos) << result.err;
  // The model's weights are dense: 2:4 does not hold.
  result = run_cli({"compress", model.string(), "-p", "2:4", "-c", "int8", "-o", out.string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("layers.0.mlp.up_proj.weight"), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(out));
  result = run_cli({"decompress", model.string(), "-o", (dir / "x.safetensors").string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("not a .sparsa container"), std::string::npos) << result.err;
}

// ---- the container with compressed tensors ----------------------------------------------------

Container compressed_container(const char* codec) {
  const Pattern p = test::unstructured_pattern(0.5);
  const Tensor w = test::random_sparse_tensor("w", DType::F16, {20, 90}, p, 4);
  CompressedMatrix c = compress(pack(w, FormatKind::Bitmap, p), CodecParams::parse(codec));
  Container container;
  container.tensors.push_back({"w", {20, 90}, c.packed, c.codec});
  return container;
}

TEST(CodecContainer, CodecAndArraysRoundTripAndTheKernelAgrees) {
  const auto dir = test::temp_dir();
  for (const char* codec : {"int4:g32:asym", "codebook4:tensor", "lossless", "zstd"}) {
    const Container container = compressed_container(codec);
    write_container(dir / "c.sparsa", container);
    const Container back = read_container(dir / "c.sparsa");
    ASSERT_EQ(back.tensors.size(), 1u);
    ASSERT_TRUE(back.tensors[0].codec);
    EXPECT_EQ(*back.tensors[0].codec, *container.tensors[0].codec);
    const CompressedMatrix a{container.tensors[0].packed, *container.tensors[0].codec},
        b{back.tensors[0].packed, *back.tensors[0].codec};
    ASSERT_EQ(b.packed.arrays.size(), a.packed.arrays.size());
    for (size_t i = 0; i < a.packed.arrays.size(); ++i)
      EXPECT_EQ(b.packed.arrays[i].bytes, a.packed.arrays[i].bytes) << codec;
    const std::vector<float> x = test::random_values(2 * 90, 1);
    std::vector<float> ya(2 * 20), yb(2 * 20);
    compressed_gemm(x, 2, a, ya);
    compressed_gemm(x, 2, b, yb);
    EXPECT_EQ(ya, yb) << codec;
  }
}

TEST(CodecContainer, StructurallyDamagedCompressedTensorsAreRefused) {
  const auto dir = test::temp_dir();
  const auto path = dir / "bad.sparsa";
  // A short scales array (consistent checksums: the writer does not judge codecs).
  Container c = compressed_container("int4:g32");
  for (auto& a : c.tensors[0].packed.arrays)
    if (a.name == "scales") a.bytes.resize(a.bytes.size() - 2);
  write_container(path, c);
  expect_error([&] { read_container(path); }, {path.string(), "tensor 'w'", "'scales'"});
  // A codec the reader does not know.
  c = compressed_container("int4:g32");
  c.tensors[0].codec->group_size = 48;  // written as "int4:g48"
  write_container(path, c);
  expect_error([&] { read_container(path); }, {"tensor 'w'", "bad codec", "group size 48"});
  // Format metadata broken under the codec: a bitmap row pointer out of order.
  c = compressed_container("codebook4");
  c.tensors[0].packed.array("row_ptr").bytes[8 * 3] = std::byte{0xff};
  write_container(path, c);
  expect_error([&] { read_container(path); }, {"tensor 'w'", "row_ptr"});
  // And through the command: exit code 2, the file named.
  const auto result = run_cli({"decompress", path.string(), "-o", (dir / "x.safetensors").string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("row_ptr"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace sparsa
