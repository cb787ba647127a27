// `sparsa compress` reading a GGUF model: its selected weight matrices, dequantised and rounded
// to f16, are packed and compressed; the others are not stored. Also `-c none` (pack only) and
// the totals line, which scripts/compression_report.sh reads.
#include <gtest/gtest.h>

#include "gguf_builder.h"
#include "sparsa/codec.h"
#include "sparsa/container.h"
#include "sparsa/format.h"
#include "test_util.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;

struct Model {
  fs::path path;
  std::vector<float> w, q;  // blk.0.w [5, 70] F32, blk.0.q [4, 64] F16 (values as f32)
};

Model tiny_gguf(const fs::path& dir) {
  Model m;
  m.w = test::random_values(5 * 70, 1);
  m.q = test::random_values(4 * 64, 2);
  test::gguf::GgufBuilder b;
  b.add_string("general.architecture", "llama");
  b.tensors.push_back({"blk.0.w", {70, 5}, 0, test::gguf::f32_bytes(m.w)});
  std::string q16;
  for (float& v : m.q) {
    test::gguf::put_f16(q16, v);
    v = f32_from_f16(f16_from_f32(v));
  }
  b.tensors.push_back({"blk.0.q", {64, 4}, 1, q16});
  b.tensors.push_back({"blk.0.norm", {70}, 0, test::gguf::f32_bytes(test::random_values(70, 3))});
  m.path = dir / "tiny.gguf";
  test::write_file(m.path, b.build());
  return m;
}

std::vector<float> as_f16(std::vector<float> v) {
  for (float& x : v) x = f32_from_f16(f16_from_f32(x));
  return v;
}

TEST(CompressGguf, SelectedMatricesAreCompressedAsF16AndOthersAreLeftOut) {
  const fs::path dir = test::temp_dir();
  const Model m = tiny_gguf(dir);
  const fs::path out = dir / "out.sparsa";
  const auto r = test::run_cli({"compress", m.path.string(), "-c", "int8", "-o", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 tensors of the GGUF model not selected"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("relative error"), std::string::npos) << r.out;
  const Container c = read_container(out);
  ASSERT_EQ(c.tensors.size(), 2u);  // the 1-D norm is not a weight matrix
  const std::vector<std::vector<float>> want = {as_f16(m.w), m.q};
  const std::vector<std::vector<int64_t>> shapes = {{5, 70}, {4, 64}};
  for (size_t i = 0; i < 2; ++i) {
    const ContainerTensor& t = c.tensors[i];
    EXPECT_EQ(t.shape, shapes[i]);
    EXPECT_EQ(t.packed.value_dtype, DType::F16);
    ASSERT_TRUE(t.codec.has_value());
    EXPECT_EQ(t.codec->kind, CodecKind::Int8);
    const std::vector<float> got = unpack(decompress({t.packed, *t.codec})).to_f32();
    const double err = test::relative_error(got, want[i]);
    EXPECT_GT(err, 0.0) << t.name;  // int8 is lossy on random values
    EXPECT_LT(err, 1e-2) << t.name;
  }
}

TEST(CompressGguf, CodecNonePacksWithoutCompressing) {
  const fs::path dir = test::temp_dir();
  const Model m = tiny_gguf(dir);
  const fs::path out = dir / "out.sparsa";
  const auto r = test::run_cli({"compress", m.path.string(), "-c", "none", "--only",
                                "^blk\\.0\\.q", "-o", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("relative error 0.000e+00"), std::string::npos) << r.out;
  const Container c = read_container(out);
  ASSERT_EQ(c.tensors.size(), 1u);
  EXPECT_EQ(c.tensors[0].name, "blk.0.q");
  EXPECT_FALSE(c.tensors[0].codec.has_value());
  EXPECT_EQ(unpack(c.tensors[0].packed).to_f32(), m.q);  // f16 values kept exactly
  EXPECT_EQ(c.metadata.at("sparsa.codec"), "none");
}

TEST(CompressGguf, PatternTheWeightsDoNotSatisfyIsRefused) {
  const fs::path dir = test::temp_dir();
  const Model m = tiny_gguf(dir);
  const auto r = test::run_cli({"compress", m.path.string(), "-p", "2:4", "-c", "int4", "-o",
                                (dir / "out.sparsa").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("blk.0.w"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sparsa
