#include "sparsa/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "gguf_builder.h"
#include "sparsa/error.h"
#include "sparsa/half.h"
#include "test_util.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using namespace test::gguf;
using test::temp_dir;
using test::write_file;

fs::path write_gguf(const std::string& bytes, const std::string& name = "model.gguf") {
  const fs::path path = temp_dir() / name;
  write_file(path, bytes);
  return path;
}

void expect_open_error(const std::string& bytes, const std::vector<std::string>& phrases) {
  const fs::path path = write_gguf(bytes, "damaged.gguf");
  try {
    GgufFile::open(path);
    FAIL() << "no error for a damaged file; expected: " << phrases[0];
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    for (const auto& p : phrases)
      EXPECT_NE(message.find(p), std::string::npos) << "'" << p << "' not in: " << message;
  }
}

// ---- reading ---------------------------------------------------------------------------------

TEST(Gguf, ReadsMetadataOfEveryTypeAndTensors) {
  GgufBuilder g;
  g.add<uint8_t>("a.u8", 0, 200);
  g.add<int8_t>("a.i8", 1, -100);
  g.add<uint16_t>("a.u16", 2, 60000);
  g.add<int16_t>("a.i16", 3, -30000);
  g.add<uint32_t>("a.u32", 4, 4000000000u);
  g.add<int32_t>("a.i32", 5, -2000000000);
  g.add<float>("a.f32", 6, 1.5f);
  g.add<uint8_t>("a.bool", 7, 1);
  g.add_string("a.string", "héllo");
  g.add<uint64_t>("a.u64", 10, 1ull << 40);
  g.add<int64_t>("a.i64", 11, -(1ll << 40));
  g.add<double>("a.f64", 12, -2.25);
  {
    std::string e;
    put<uint32_t>(e, 8);
    put<uint64_t>(e, 3);
    for (const char* s : {"x", "", "zz"}) put_string(e, s);
    g.add_raw("a.strings", 9, e);
  }
  {
    std::string e;
    put<uint32_t>(e, 5);
    put<uint64_t>(e, 4);
    for (int32_t v : {7, -3, 11, 0}) put<int32_t>(e, v);
    g.add_raw("a.ints", 9, e);
  }
  {  // an array of arrays of f32
    std::string e;
    put<uint32_t>(e, 9);
    put<uint64_t>(e, 2);
    for (int i = 0; i < 2; ++i) {
      put<uint32_t>(e, 6);
      put<uint64_t>(e, 2);
      put<float>(e, 0.5f + i);
      put<float>(e, -1.0f - i);
    }
    g.add_raw("a.nested", 9, e);
  }
  const auto w = test::random_values(3 * 5, 11);
  g.tensors.push_back({"w", {5, 3}, 0, f32_bytes(w)});
  const auto b = test::random_values(7, 12);
  g.tensors.push_back({"b", {7}, 0, f32_bytes(b)});

  const GgufFile f = GgufFile::open(write_gguf(g.build()));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.metadata().size(), 15u);
  EXPECT_EQ(f.get_int("a.u8"), 200);
  EXPECT_EQ(f.get_int("a.i8"), -100);
  EXPECT_EQ(f.get_int("a.u16"), 60000);
  EXPECT_EQ(f.get_int("a.i16"), -30000);
  EXPECT_EQ(f.get_int("a.u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("a.i32"), -2000000000);
  EXPECT_EQ(f.get_float("a.f32"), 1.5);
  EXPECT_TRUE(f.get_bool("a.bool", false));
  EXPECT_EQ(f.get_string("a.string"), "héllo");
  EXPECT_EQ(f.get_int("a.u64"), 1ll << 40);
  EXPECT_EQ(f.get_int("a.i64"), -(1ll << 40));
  EXPECT_EQ(f.get_float("a.f64"), -2.25);
  EXPECT_EQ(f.get_float("a.u8"), 200.0);
  EXPECT_EQ(f.get_string_array("a.strings"), (std::vector<std::string>{"x", "", "zz"}));
  EXPECT_EQ(f.get_int_array("a.ints"), (std::vector<int64_t>{7, -3, 11, 0}));
  const auto& nested = std::get<std::vector<GgufValue>>(f.at("a.nested").value);
  ASSERT_EQ(nested.size(), 2u);
  EXPECT_EQ(f.at("a.nested").element_type, GgufValueType::Array);
  EXPECT_EQ(std::get<double>(std::get<std::vector<GgufValue>>(nested[1].value)[1].value), -2.0);
  EXPECT_EQ(f.get_int("missing", 42), 42);
  EXPECT_FALSE(f.get_bool("missing", false));

  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo& wi = f.tensor("w");
  EXPECT_EQ(wi.ne, (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(wi.shape(), (std::vector<int64_t>{3, 5}));  // ne reversed: 3 rows of 5
  const Tensor wt = f.to_f32("w");
  EXPECT_EQ(wt.shape(), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(wt.rows(), 3);
  EXPECT_EQ(wt.cols(), 5);
  EXPECT_EQ(wt.to_f32(), w);
  EXPECT_EQ(f.to_f32("b").to_f32(), b);
  EXPECT_EQ(f.tensor("b").offset % 32, 0u);
  EXPECT_TRUE(is_gguf_file(f.path()));
}

TEST(Gguf, HonoursGeneralAlignmentAndVersion2) {
  GgufBuilder g;
  g.version = 2;
  g.alignment = 64;
  g.add<uint32_t>("general.alignment", 4, 64);
  const auto a = test::random_values(3, 1), b = test::random_values(20, 2);
  g.tensors.push_back({"a", {3}, 0, f32_bytes(a)});
  g.tensors.push_back({"b", {4, 5}, 0, f32_bytes(b)});
  const GgufFile f = GgufFile::open(write_gguf(g.build()));
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.tensor("b").offset, 64u);
  EXPECT_EQ(f.to_f32("a").to_f32(), a);
  EXPECT_EQ(f.to_f32("b").to_f32(), b);
}

TEST(Gguf, TypedLookupErrorsNameFileAndKey) {
  GgufBuilder g;
  g.add_string("s", "text");
  const fs::path path = write_gguf(g.build());
  const GgufFile f = GgufFile::open(path);
  for (auto call : std::vector<std::function<void()>>{
           [&] { f.get_int("s"); }, [&] { f.get_float("s"); }, [&] { f.get_string("nope"); },
           [&] { f.get_string_array("s"); }, [&] { f.tensor("w"); }}) {
    try {
      call();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(f.get_int("s"), Error);
  try {
    f.get_int("s");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'s' is a string, expected an integer"), std::string::npos)
        << e.what();
  }
}

// ---- damaged files ---------------------------------------------------------------------------

GgufBuilder small_valid() {
  GgufBuilder g;
  g.add<uint32_t>("general.alignment", 4, 32);
  g.add_string("general.architecture", "llama");
  g.tensors.push_back({"t", {8, 2}, 0, f32_bytes(test::random_values(16, 3))});
  return g;
}

TEST(Gguf, DamagedFilesThrowNamingFileAndProblem) {
  const std::string good = small_valid().build();
  ASSERT_NO_THROW(GgufFile::open(write_gguf(good)));

  expect_open_error("", {"too short"});
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  expect_open_error(bad_magic, {"bad magic", "XGUF"});
  std::string v1 = good, v9 = good;
  v1[4] = 1;
  v9[4] = 9;
  expect_open_error(v1, {"version 1 is not supported"});
  expect_open_error(v9, {"unknown GGUF version 9"});
  // Truncation anywhere in the header reports the byte offset it stopped at.
  for (size_t cut : {size_t(10), size_t(30), size_t(60), size_t(100)}) {
    ASSERT_LT(cut, good.size());
    expect_open_error(good.substr(0, cut), {"truncated"});
  }
  // Truncated data: the tensor runs past the end of the file.
  expect_open_error(good.substr(0, good.size() - 8),
                    {"tensor 't'", "runs past the end of the file"});

  GgufBuilder huge_count = small_valid();
  std::string bytes = huge_count.build();
  uint64_t n = 1ull << 60;
  std::memcpy(bytes.data() + 8, &n, 8);
  expect_open_error(bytes, {"tensor count"});

  GgufBuilder unknown_type = small_valid();
  unknown_type.tensors[0].type = 77;
  expect_open_error(unknown_type.build(), {"tensor 't'", "unknown or unsupported ggml type 77"});

  GgufBuilder bad_block = small_valid();
  bad_block.tensors[0] = {"q", {20, 1}, 2, std::string(18, '\1')};  // Q4_0 needs ne[0] % 32 == 0
  expect_open_error(bad_block.build(), {"tensor 'q'", "not a multiple of the Q4_0 block size 32"});

  GgufBuilder bad_value_type = small_valid();
  bad_value_type.add_raw("k", 13, "");
  expect_open_error(bad_value_type.build(), {"key 'k'", "unknown value type 13"});

  GgufBuilder bad_alignment = small_valid();
  bad_alignment.kv.clear();
  bad_alignment.kv_count = 0;
  bad_alignment.add<uint32_t>("general.alignment", 4, 24);
  expect_open_error(bad_alignment.build(), {"general.alignment 24 is not a positive power of two"});

  GgufBuilder dup = small_valid();
  dup.add_string("general.architecture", "again");
  expect_open_error(dup.build(), {"duplicate metadata key 'general.architecture'"});

  GgufBuilder dup_tensor = small_valid();
  dup_tensor.tensors.push_back(dup_tensor.tensors[0]);
  expect_open_error(dup_tensor.build(), {"duplicate tensor name 't'"});

  GgufBuilder too_many_dims = small_valid();
  too_many_dims.tensors[0].ne = {2, 2, 2, 1, 1};
  expect_open_error(too_many_dims.build(), {"tensor 't'", "5 dimensions"});

  // A data offset outside the file, and one that is not aligned.
  // Rewrite the offset field directly: it is the 8 bytes after name, n_dims, ne[2], type.
  {
    std::string b = good;
    const std::string needle = std::string("\x01\x00\x00\x00\x00\x00\x00\x00t", 9);
    const size_t name_at = b.find(needle);
    ASSERT_NE(name_at, std::string::npos);
    const size_t offset_at = name_at + 9 + 4 + 16 + 4;
    uint64_t off = 1 << 20;
    std::memcpy(b.data() + offset_at, &off, 8);
    expect_open_error(b, {"tensor 't'", "runs past the end of the file"});
    off = 4;
    std::memcpy(b.data() + offset_at, &off, 8);
    expect_open_error(b, {"tensor 't'", "data offset 4 is not a multiple of the alignment 32"});
  }
  // A string whose length runs past the end.
  {
    std::string b = good;
    const size_t key_at = b.find("general.alignment") - 8;
    uint64_t len = 1ull << 40;
    std::memcpy(b.data() + key_at, &len, 8);
    expect_open_error(b, {"string length", "runs past the end of the file"});
  }
}

// ---- dequantisation: one hand-made block per type -----------------------------------------

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST(GgufDequant, F32F16BF16) {
  std::string f16, bf16, f32;
  const std::vector<float> v = {1.0f, -2.5f, 0.375f, 65504.0f, -0.000061035156f};
  for (float x : v) {
    put_f16(f16, x);
    put<uint16_t>(bf16, bf16_from_f32(x));
    put<float>(f32, x);
  }
  EXPECT_EQ(dequantize(GgmlType::F16, as_bytes(f16), 5), v);  // all exact in f16
  EXPECT_EQ(dequantize(GgmlType::F32, as_bytes(f32), 5), v);
  const auto b = dequantize(GgmlType::BF16, as_bytes(bf16), 5);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.5f);
  EXPECT_EQ(b[2], 0.375f);
  EXPECT_EQ(b[3], 65536.0f);  // 65504 rounds to 2^16 in bf16 (8-bit mantissa)
}

TEST(GgufDequant, Q4_0Block) {
  // d = 0.5; byte j holds low nibble j and high nibble 15 - j.
  std::string block;
  put_f16(block, 0.5f);
  for (int j = 0; j < 16; ++j) block += char(j | ((15 - j) << 4));
  const auto x = dequantize(GgmlType::Q4_0, as_bytes(block), 32);
  // Hand-computed: x[j] = (j - 8) / 2, x[16 + j] = (7 - j) / 2.
  EXPECT_EQ(x[0], -4.0f);
  EXPECT_EQ(x[8], 0.0f);
  EXPECT_EQ(x[15], 3.5f);
  EXPECT_EQ(x[16], 3.5f);
  EXPECT_EQ(x[31], -4.0f);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(x[j], (j - 8) * 0.5f);
    EXPECT_EQ(x[16 + j], (7 - j) * 0.5f);
  }
}

TEST(GgufDequant, Q4_1Block) {
  // d = 0.25, m = -1; byte j = (j, (3 * j) % 16).
  std::string block;
  put_f16(block, 0.25f);
  put_f16(block, -1.0f);
  for (int j = 0; j < 16; ++j) block += char(j | (((3 * j) % 16) << 4));
  const auto x = dequantize(GgmlType::Q4_1, as_bytes(block), 32);
  EXPECT_EQ(x[0], -1.0f);
  EXPECT_EQ(x[15], 2.75f);      // 15 * 0.25 - 1
  EXPECT_EQ(x[16 + 5], 2.75f);  // (15) * 0.25 - 1
  EXPECT_EQ(x[16 + 6], -0.5f);  // (18 % 16 = 2) * 0.25 - 1
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(x[j], j * 0.25f - 1.0f);
    EXPECT_EQ(x[16 + j], ((3 * j) % 16) * 0.25f - 1.0f);
  }
}

TEST(GgufDequant, Q8_0Block) {
  std::string block;
  put_f16(block, 0.125f);
  for (int j = 0; j < 32; ++j) block += char(int8_t(j * 8 - 128));
  const auto x = dequantize(GgmlType::Q8_0, as_bytes(block), 32);
  EXPECT_EQ(x[0], -16.0f);  // -128 / 8
  EXPECT_EQ(x[16], 0.0f);
  EXPECT_EQ(x[31], 15.0f);  // 120 / 8
  for (int j = 0; j < 32; ++j) EXPECT_EQ(x[j], (j * 8 - 128) * 0.125f);
}

TEST(GgufDequant, Q8_1Block) {
  std::string block;
  put_f16(block, 2.0f);
  put_f16(block, 123.0f);  // the sum field does not affect values
  for (int j = 0; j < 32; ++j) block += char(int8_t(15 - j));
  const auto x = dequantize(GgmlType::Q8_1, as_bytes(block), 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(x[j], (15 - j) * 2.0f);
}

TEST(GgufDequant, Q5_0AndQ5_1Blocks) {
  // qh = 0xF0F0F00F: 5th bits of elements 0-3 and 12-15 (low half) and 20-23 and 28-31 set...
  const uint32_t qh = 0xF0F0F00Fu;
  std::string b0, b1;
  put_f16(b0, 1.0f);
  put<uint32_t>(b0, qh);
  put_f16(b1, 0.5f);
  put_f16(b1, 3.0f);
  put<uint32_t>(b1, qh);
  for (int j = 0; j < 16; ++j) {
    b0 += char(j | ((15 - j) << 4));
    b1 += char(j | ((15 - j) << 4));
  }
  const auto x0 = dequantize(GgmlType::Q5_0, as_bytes(b0), 32);
  const auto x1 = dequantize(GgmlType::Q5_1, as_bytes(b1), 32);
  // Element 0: nibble 0, bit 0 of qh set -> 16 - 16 = 0. Element 4: nibble 4, bit clear -> -12.
  EXPECT_EQ(x0[0], 0.0f);
  EXPECT_EQ(x0[4], -12.0f);
  EXPECT_EQ(x0[12], 12.0f);  // 12 | 16 = 28 - 16
  // Element 16: nibble 15, bit 16 of qh clear (0xF00F has bits 0-3, 12-15) -> -1.
  EXPECT_EQ(x0[16], -1.0f);
  // Element 20: nibble 11, bit 20 set -> 27 - 16 = 11.
  EXPECT_EQ(x0[20], 11.0f);
  EXPECT_EQ(x1[0], 16 * 0.5f + 3.0f);
  EXPECT_EQ(x1[4], 4 * 0.5f + 3.0f);
  EXPECT_EQ(x1[20], 27 * 0.5f + 3.0f);
  for (int i = 0; i < 32; ++i) {
    const int nibble = i < 16 ? i : 15 - (i - 16);
    const int q = nibble + (((qh >> i) & 1) ? 16 : 0);
    EXPECT_EQ(x0[i], float(q - 16)) << i;
    EXPECT_EQ(x1[i], q * 0.5f + 3.0f) << i;
  }
}

// The k-quants' 6-bit scales and mins for sub-blocks 0..7, packed as ggml's
// get_scale_min_k4 unpacks them.
std::string pack_scales_k4(const int sc[8], const int mn[8]) {
  uint8_t q[12] = {};
  for (int j = 0; j < 4; ++j) {
    q[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = uint8_t((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    q[j + 8] = uint8_t((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
  return {reinterpret_cast<char*>(q), 12};
}

TEST(GgufDequant, Q4_KBlock) {
  const int sc[8] = {1, 2, 3, 63, 17, 40, 5, 33};
  const int mn[8] = {0, 7, 63, 1, 48, 2, 31, 16};
  std::string block;
  put_f16(block, 0.5f);   // d
  put_f16(block, 0.25f);  // dmin
  block += pack_scales_k4(sc, mn);
  for (int i = 0; i < 128; ++i) block += char((i % 16) | (((i * 7) % 16) << 4));
  ASSERT_EQ(block.size(), 144u);
  const auto x = dequantize(GgmlType::Q4_K, as_bytes(block), 256);
  // Element 0: sub-block 0 (sc 1, m 0), low nibble of qs[0] = 0 -> 0.
  EXPECT_EQ(x[0], 0.0f);
  // Element 33: sub-block 1 (sc 2, m 7), high nibble of qs[1] = 7 -> 0.5*2*7 - 0.25*7 = 5.25.
  EXPECT_EQ(x[33], 5.25f);
  // Element 200: sub-block 6 (sc 5, m 31), low nibble of qs[96 + 8] = 104 % 16 = 8:
  // 0.5*5*8 - 0.25*31 = 12.25.
  EXPECT_EQ(x[200], 12.25f);
  // Element 255: sub-block 7 (sc 33, m 16), high nibble of qs[127] = 889 % 16 = 9:
  // 0.5*33*9 - 0.25*16 = 144.5.
  EXPECT_EQ(x[255], 144.5f);
  for (int i = 0; i < 256; ++i) {
    const int sub = i / 32, byte = (i / 64) * 32 + i % 32;
    const int q = (sub % 2 == 0) ? byte % 16 : (byte * 7) % 16;
    EXPECT_EQ(x[i], 0.5f * sc[sub] * q - 0.25f * mn[sub]) << i;
  }
}

TEST(GgufDequant, Q5_KBlock) {
  const int sc[8] = {3, 9, 27, 60, 18, 44, 1, 36};
  const int mn[8] = {5, 0, 62, 8, 21, 3, 30, 17};
  std::string block;
  put_f16(block, 0.25f);
  put_f16(block, 0.5f);
  block += pack_scales_k4(sc, mn);
  for (int l = 0; l < 32; ++l) block += char(uint8_t(l * 37 + 11));  // qh
  for (int i = 0; i < 128; ++i) block += char((i % 16) | (((i * 5) % 16) << 4));
  ASSERT_EQ(block.size(), 176u);
  const auto x = dequantize(GgmlType::Q5_K, as_bytes(block), 256);
  // Element 0: sub-block 0, nibble 0, qh[0] = 11 has bit 0 set -> (0+16)*0.25*3 - 0.5*5 = 9.5.
  EXPECT_EQ(x[0], 9.5f);
  for (int i = 0; i < 256; ++i) {
    const int sub = i / 32, l = i % 32, byte = (i / 64) * 32 + l;
    const int nibble = (sub % 2 == 0) ? byte % 16 : (byte * 5) % 16;
    const int high = (uint8_t(l * 37 + 11) >> sub) & 1;
    EXPECT_EQ(x[i], 0.25f * sc[sub] * (nibble + 16 * high) - 0.5f * mn[sub]) << i;
  }
}

TEST(GgufDequant, Q6_KBlock) {
  // Element i (half h = i / 128, r = i % 128, quarter k = r / 32, l = r % 32) takes its low
  // 4 bits from ql[64h + l + 32 (k odd)], nibble k >= 2, and its high 2 bits from bits 2k..2k+1
  // of qh[32h + l]; scale index 8h + l/16 + 2k.
  std::string block;
  for (int i = 0; i < 128; ++i) block += char(uint8_t(i * 13 + 5));  // ql
  for (int i = 0; i < 64; ++i) block += char(uint8_t(i * 29 + 3));   // qh
  int8_t scales[16];
  for (int i = 0; i < 16; ++i) scales[i] = int8_t(i * 9 - 70);
  block.append(reinterpret_cast<char*>(scales), 16);
  put_f16(block, 0.125f);
  ASSERT_EQ(block.size(), 210u);
  const auto x = dequantize(GgmlType::Q6_K, as_bytes(block), 256);
  // Element 0: ql[0] = 5 -> low 5; qh[0] = 3 -> bits 0..1 = 3; q = 5 | 48 = 53 - 32 = 21;
  // scale[0] = -70: 0.125 * -70 * 21 = -183.75.
  EXPECT_EQ(x[0], -183.75f);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, r = i % 128, k = r / 32, l = r % 32;
    const uint8_t ql = uint8_t((64 * h + l + (k % 2) * 32) * 13 + 5);
    const uint8_t qh = uint8_t((32 * h + l) * 29 + 3);
    const int low = k >= 2 ? ql >> 4 : ql & 0xF;
    const int q = (low | (((qh >> (2 * k)) & 3) << 4)) - 32;
    EXPECT_EQ(x[i], 0.125f * scales[8 * h + l / 16 + 2 * k] * q) << i;
  }
}

TEST(GgufDequant, RejectsWrongSizesAndUndecodableTypes) {
  const std::string block(20, '\1');
  EXPECT_THROW(dequantize(GgmlType::Q4_1, as_bytes(block), 31), Error);
  EXPECT_THROW(dequantize(GgmlType::Q4_1, as_bytes(block), 64), Error);
  try {
    dequantize(GgmlType::Q2_K, as_bytes(std::string(84, '\0')), 256);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q2_K cannot be dequantised"), std::string::npos)
        << e.what();
  }
}

TEST(Gguf, QuantisedTensorsDequantiseThroughTheFile) {
  GgufBuilder g;
  std::string q;  // two Q8_0 rows of 32: [2 rows, 32 cols]
  for (int r = 0; r < 2; ++r) {
    put_f16(q, r ? 0.5f : 0.25f);
    for (int j = 0; j < 32; ++j) q += char(int8_t(j - 16 + r));
  }
  g.tensors.push_back({"q", {32, 2}, 8, q});
  const GgufFile f = GgufFile::open(write_gguf(g.build()));
  const Tensor t = f.to_f32("q");
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 32}));
  const auto v = t.to_f32();
  EXPECT_EQ(v[0], -4.0f);       // -16 * 0.25
  EXPECT_EQ(v[32 + 31], 8.0f);  // 16 * 0.5
}

}  // namespace
}  // namespace sparsa
