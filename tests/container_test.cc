#include "sparsa/container.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "sparsa/error.h"
#include "sparsa/safetensors.h"
#include "sparse_matrices.h"
#include "test_util.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;
using test::read_file;
using test::temp_dir;
using test::write_file;

PackedArray random_array(const std::string& name, DType dtype, size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  PackedArray a{name, dtype, std::vector<std::byte>(count * dtype_size(dtype))};
  for (auto& b : a.bytes) b = std::byte(1 + rng() % 255);  // never zero
  return a;
}

// Real packed matrices of random sparse weights (the reader checks that the arrays form a valid
// packed matrix), plus an empty tensor whose blob has zero bytes.
Container sample_container() {
  Container c;
  c.metadata = {{"model", "tiny"},
                {"note", "caf\xc3\xa9 \"q\"\n"},
                {"pad", "room-for-header-edits-0123456789"}};

  const Pattern unstructured = test::unstructured_pattern(0.5);
  const Tensor q = test::random_sparse_tensor("layers.0.q_proj", DType::F16, {5, 7}, unstructured, 1);
  ContainerTensor csr{q.name(), q.shape(), pack(q, FormatKind::CSR, unstructured)};

  const Pattern two_four = test::nm_pattern(2, 4);
  const Tensor up = test::random_sparse_tensor("layers.0.up_proj", DType::BF16, {2, 3, 8}, two_four, 2);
  ContainerTensor nm{up.name(), up.shape(), pack(up, FormatKind::NM, two_four)};

  ContainerTensor empty{"empty", {0, 4}, {}};  // zero rows: empty blobs are fine
  empty.packed.format = FormatKind::Dense;
  empty.packed.rows = 0;
  empty.packed.cols = 4;
  empty.packed.value_dtype = DType::F32;
  empty.packed.arrays = {PackedArray{"values", DType::F32, {}}};

  c.tensors = {csr, nm, empty};
  return c;
}

void expect_same(const Container& got, const Container& want) {
  EXPECT_EQ(got.metadata, want.metadata);
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (size_t i = 0; i < want.tensors.size(); ++i) {
    const ContainerTensor &g = got.tensors[i], &w = want.tensors[i];
    EXPECT_EQ(g.name, w.name);
    EXPECT_EQ(g.shape, w.shape);
    EXPECT_EQ(g.packed.format, w.packed.format) << w.name;
    EXPECT_EQ(g.packed.rows, w.packed.rows) << w.name;
    EXPECT_EQ(g.packed.cols, w.packed.cols) << w.name;
    EXPECT_EQ(g.packed.value_dtype, w.packed.value_dtype) << w.name;
    EXPECT_EQ(g.packed.pattern, w.packed.pattern) << w.name;
    ASSERT_EQ(g.packed.arrays.size(), w.packed.arrays.size()) << w.name;
    for (size_t j = 0; j < w.packed.arrays.size(); ++j) {
      EXPECT_EQ(g.packed.arrays[j].name, w.packed.arrays[j].name);
      EXPECT_EQ(g.packed.arrays[j].dtype, w.packed.arrays[j].dtype);
      EXPECT_TRUE(g.packed.arrays[j].bytes == w.packed.arrays[j].bytes)
          << w.name << " " << w.packed.arrays[j].name;
    }
  }
}

uint64_t le64_at(const std::string& s, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint8_t(s[at + i]);
  return v;
}

Json header_of(const std::string& file) { return Json::parse(file.substr(16, le64_at(file, 8))); }

std::string signed_header(Json header) {
  const std::string unsigned_text = header.dump();
  header["header_xxh64"] =
      fmt::format("{:016x}", XXH64(unsigned_text.data(), unsigned_text.size(), 0));
  return header.dump();
}

// Edits the header and signs it again as the writer would. The blobs stay where they are: the
// metadata entry "pad" is lengthened or shortened so that the header keeps its length.
std::string resign(const std::string& file, const std::function<void(Json&)>& edit) {
  const size_t old_len = le64_at(file, 8);
  Json header = header_of(file);
  header.erase("header_xxh64");
  edit(header);
  const long grown = long(signed_header(header).size()) - long(old_len);
  std::string pad = header["metadata"]["pad"];
  EXPECT_LT(grown, long(pad.size())) << "the edit grew the header more than the pad can absorb";
  pad.resize(size_t(long(pad.size()) - grown), 'p');
  header["metadata"]["pad"] = pad;
  const std::string text = signed_header(header);
  EXPECT_EQ(text.size(), old_len);
  return file.substr(0, 16) + text + file.substr(16 + old_len);
}

void expect_read_error(const fs::path& path, const std::vector<std::string>& phrases) {
  try {
    read_container(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    for (const auto& phrase : phrases)
      EXPECT_NE(message.find(phrase), std::string::npos)
          << "wanted '" << phrase << "' in: " << message;
  }
}

// Writes the sample, lets `damage` change the bytes, and checks the error.
void expect_damage_error(const std::function<std::string(std::string)>& damage,
                         const std::vector<std::string>& phrases) {
  const fs::path dir = temp_dir();
  write_container(dir / "good.sparsa", sample_container());
  const fs::path path = dir / "damaged.sparsa";
  write_file(path, damage(read_file(dir / "good.sparsa")));
  expect_read_error(path, phrases);
}

// Replaces a file's bytes. Removing it first matters: ext4 flushes a file that is truncated and
// rewritten (auto_da_alloc), which costs milliseconds per call in the loops below.
void rewrite_file(const fs::path& path, const std::string& bytes) {
  fs::remove(path);
  write_file(path, bytes);
}

std::vector<fs::path> dir_entries(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path());
  return out;
}

TEST(Container, RoundTripIsBitExact) {
  const fs::path path = temp_dir() / "model.sparsa";
  const Container original = sample_container();
  write_container(path, original);
  EXPECT_TRUE(is_container_file(path));
  expect_same(read_container(path), original);
}

TEST(Container, LayoutFollowsTheSpec) {
  const fs::path path = temp_dir() / "model.sparsa";
  const Container original = sample_container();
  write_container(path, original);
  const std::string file = read_file(path);
  EXPECT_EQ(file.substr(0, 8), std::string("SPARSA\0\0", 8));
  const Json header = header_of(file);
  EXPECT_EQ(header["format_version"], 1);
  EXPECT_EQ(header["metadata"]["model"], "tiny");
  // header_xxh64 covers the compact serialization without itself.
  Json unsigned_header = header;
  unsigned_header.erase("header_xxh64");
  const std::string text = unsigned_header.dump();
  EXPECT_EQ(header["header_xxh64"], fmt::format("{:016x}", XXH64(text.data(), text.size(), 0)));

  const uint64_t header_end = 16 + le64_at(file, 8);
  ASSERT_EQ(header["tensors"].size(), original.tensors.size());
  for (size_t i = 0; i < original.tensors.size(); ++i) {
    const Json& entry = header["tensors"][i];
    EXPECT_EQ(entry["name"], original.tensors[i].name);
    EXPECT_EQ(entry["rows"], original.tensors[i].packed.rows);
    ASSERT_EQ(entry["blobs"].size(), original.tensors[i].packed.arrays.size());
    for (size_t j = 0; j < entry["blobs"].size(); ++j) {
      const Json& blob = entry["blobs"][j];
      const auto& array = original.tensors[i].packed.arrays[j];
      const uint64_t offset = blob["offset"], size = blob["size"];
      EXPECT_EQ(offset % 64, 0u) << array.name;
      EXPECT_GE(offset, header_end);
      ASSERT_EQ(size, array.bytes.size());
      ASSERT_LE(offset + size, file.size());
      EXPECT_EQ(0, std::memcmp(file.data() + offset, array.bytes.data(), size)) << array.name;
      EXPECT_EQ(blob["xxh64"], fmt::format("{:016x}", XXH64(array.bytes.data(), size, 0)));
    }
  }
}

TEST(Container, WritingIsDeterministic) {
  const fs::path dir = temp_dir();
  write_container(dir / "a.sparsa", sample_container());
  write_container(dir / "b.sparsa", sample_container());
  EXPECT_EQ(read_file(dir / "a.sparsa"), read_file(dir / "b.sparsa"));
}

TEST(Container, ManyTensorsPushTheDataStartOut) {
  // Enough entries that the header spans many 64-byte blocks; offsets gain digits as it grows.
  Container c;
  for (int i = 0; i < 300; ++i) {
    ContainerTensor t{fmt::format("t{}", i), {1, 3 + i % 5}, {}};
    t.packed.rows = 1;
    t.packed.cols = 3 + i % 5;
    t.packed.arrays = {random_array("values", DType::F32, size_t(3 + i % 5), uint64_t(i))};
    c.tensors.push_back(std::move(t));
  }
  const fs::path path = temp_dir() / "many.sparsa";
  write_container(path, c);
  expect_same(read_container(path), c);
}

TEST(Container, PackedMatricesOfEveryFormatRoundTrip) {
  // Real packs, through the file and back to the same dense weights.
  struct Case {
    FormatKind format;
    Pattern pattern;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Case> cases = {
      {FormatKind::Dense, Pattern{}, DType::F32, {3, 5}},
      {FormatKind::CSR, test::unstructured_pattern(0.7), DType::F16, {9, 70}},
      {FormatKind::Bitmap, test::unstructured_pattern(0.5), DType::BF16, {2, 3, 67}},
      {FormatKind::BSR, test::block_pattern(4, 4), DType::F32, {10, 13}},
      {FormatKind::NM, test::nm_pattern(2, 4), DType::F16, {8, 30}},
      {FormatKind::VNM, test::vnm_pattern(16, 8), DType::BF16, {33, 40}},
  };
  Container c;
  std::vector<Tensor> dense;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& k = cases[i];
    const std::string name = fmt::format("w{}.{}", i, format_name(k.format));
    dense.push_back(test::random_sparse_tensor(name, k.dtype, k.shape, k.pattern, 100 + i));
    c.tensors.push_back({name, k.shape, pack(dense.back(), k.format, k.pattern)});
  }
  const fs::path path = temp_dir() / "packed.sparsa";
  write_container(path, c);
  const Container back = read_container(path);
  expect_same(back, c);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Tensor unpacked = unpack(back.tensors[i].packed);
    EXPECT_EQ(unpacked.dtype(), dense[i].dtype());
    ASSERT_EQ(unpacked.nbytes(), dense[i].nbytes());
    EXPECT_EQ(0, std::memcmp(unpacked.bytes().data(), dense[i].bytes().data(), dense[i].nbytes()))
        << back.tensors[i].name;
  }
}

TEST(ContainerDamaged, FlippedBlobByteNamesTheTensor) {
  expect_damage_error(
      [](std::string file) {
        const Json blob = header_of(file)["tensors"][1]["blobs"][0];
        file[size_t(blob["offset"]) + 5] ^= 0x10;
        return file;
      },
      {"tensor 'layers.0.up_proj'", "blob 'values'", "checksum mismatch"});
}

TEST(ContainerDamaged, FlippedHeaderByteIsCaught) {
  expect_damage_error(
      [](std::string file) {
        const size_t at = file.find("tiny");
        file[at] ^= 0x01;  // "tiny" -> "uiny": still valid JSON, only the checksum can tell
        return file;
      },
      {"header is corrupted", "checksum mismatch"});
}

TEST(ContainerDamaged, EveryHeaderByteIsCovered) {
  const fs::path dir = temp_dir();
  write_container(dir / "good.sparsa", sample_container());
  const std::string good = read_file(dir / "good.sparsa");
  const size_t header_end = 16 + le64_at(good, 8);
  const fs::path path = dir / "damaged.sparsa";
  for (size_t at = 8; at < header_end; ++at)
    for (uint8_t mask : {0x01, 0x20, 0x80}) {
      std::string bad = good;
      bad[at] ^= char(mask);
      rewrite_file(path, bad);
      try {
        read_container(path);
        ADD_FAILURE() << "byte " << at << " ^ " << int(mask) << " went unnoticed";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
      }
    }
}

TEST(ContainerDamaged, TruncatedFile) {
  expect_damage_error(
      [](std::string file) {
        const Json blob = header_of(file)["tensors"][1]["blobs"][1];
        return file.substr(0, size_t(blob["offset"]) + 10);
      },
      {"tensor 'layers.0.up_proj'", "blob 'indices'", "past the end of the file", "truncated"});
  expect_damage_error([](std::string file) { return file.substr(0, file.size() - 1); },
                      {"past the end of the file", "truncated"});
  expect_damage_error([](std::string file) { return file.substr(0, 12); },
                      {"too short", "truncated"});
  expect_damage_error([](std::string file) { return file.substr(0, 40); },
                      {"header length", "runs past the end of the file", "truncated"});
}

TEST(ContainerDamaged, EveryTruncationIsCaught) {
  const fs::path dir = temp_dir();
  write_container(dir / "good.sparsa", sample_container());
  const std::string good = read_file(dir / "good.sparsa");
  const fs::path path = dir / "damaged.sparsa";
  for (size_t size = 0; size < good.size(); ++size) {
    rewrite_file(path, good.substr(0, size));
    EXPECT_THROW(read_container(path), Error) << "truncated to " << size << " bytes";
  }
}

TEST(ContainerDamaged, WrongMagic) {
  const fs::path dir = temp_dir();
  const fs::path path = dir / "model.safetensors";
  write_safetensors(path, {test::random_tensor("w", DType::F32, {4}, 1)});
  EXPECT_FALSE(is_container_file(path));
  EXPECT_FALSE(is_container_file(dir / "absent.sparsa"));
  expect_read_error(path, {"not a .sparsa container", "magic"});
  expect_damage_error(
      [](std::string file) {
        file[6] = 'X';
        return file;
      },
      {"not a .sparsa container"});
}

TEST(ContainerDamaged, NewerFormatVersionIsRefused) {
  expect_damage_error(
      [](std::string file) { return resign(file, [](Json& h) { h["format_version"] = 2; }); },
      {"format_version 2 is newer", "upgrade"});
}

TEST(ContainerDamaged, UnknownFormatName) {
  expect_damage_error(
      [](std::string file) {
        return resign(file, [](Json& h) { h["tensors"][0]["format"] = "zzz"; });
      },
      {"tensor 'layers.0.q_proj'", "unknown format 'zzz'"});
}

TEST(ContainerDamaged, BadPattern) {
  expect_damage_error(
      [](std::string file) {
        return resign(file, [](Json& h) { h["tensors"][1]["pattern"] = "5:4"; });
      },
      {"tensor 'layers.0.up_proj'", "bad pattern", "5:4"});
}

TEST(ContainerDamaged, UnknownValueDtype) {
  expect_damage_error(
      [](std::string file) {
        return resign(file, [](Json& h) { h["tensors"][1]["dtype"] = "F99"; });
      },
      {"tensor 'layers.0.up_proj'", "unknown dtype 'F99'"});
}

TEST(ContainerDamaged, UnknownBlobDtype) {
  expect_damage_error(
      [](std::string file) {
        return resign(file, [](Json& h) { h["tensors"][0]["blobs"][1]["dtype"] = "Q4"; });
      },
      {"tensor 'layers.0.q_proj'", "blob 'col_idx'", "unknown dtype 'Q4'"});
}

TEST(ContainerDamaged, MisalignedBlob) {
  expect_damage_error(
      [](std::string file) {
        return resign(file, [](Json& h) {
          Json& blob = h["tensors"][1]["blobs"][1];
          blob["offset"] = uint64_t(blob["offset"]) - 8;
        });
      },
      {"tensor 'layers.0.up_proj'", "blob 'indices'", "not a multiple of 64"});
}

TEST(ContainerDamaged, BlobPastTheEnd) {
  expect_damage_error(
      [](std::string file) {
        return resign(file, [](Json& h) { h["tensors"][0]["blobs"][2]["size"] = 9999; });
      },
      {"tensor 'layers.0.q_proj'", "blob 'values'", "past the end of the file"});
}

TEST(ContainerDamaged, BlobInsideTheHeader) {
  expect_damage_error(
      [](std::string file) {
        return resign(file, [](Json& h) { h["tensors"][0]["blobs"][0]["offset"] = 0; });
      },
      {"tensor 'layers.0.q_proj'", "blob 'row_ptr'", "inside the header"});
}

TEST(ContainerDamaged, OverlappingBlobs) {
  expect_damage_error(
      [](std::string file) {
        return resign(file, [](Json& h) {
          // Point a blob at another blob's bytes, with that blob's size and checksum.
          h["tensors"][1]["blobs"][0] = h["tensors"][0]["blobs"][2];
          h["tensors"][1]["blobs"][0]["name"] = "values";
        });
      },
      {"tensor 'layers.0.up_proj' blob 'values' overlaps tensor 'layers.0.q_proj' blob 'values'"});
}

TEST(ContainerDamaged, ShapeDoesNotMatchRowsAndCols) {
  expect_damage_error(
      [](std::string file) { return resign(file, [](Json& h) { h["tensors"][1]["rows"] = 7; }); },
      {"tensor 'layers.0.up_proj'", "matrix 7 x 8 does not match shape [2,3,8]"});
}

TEST(ContainerWrite, RefusesDuplicateNamesAndLeavesNoFile) {
  const fs::path dir = temp_dir();
  Container c = sample_container();
  c.tensors.push_back(c.tensors[0]);
  try {
    write_container(dir / "dup.sparsa", c);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "dup.sparsa").string()), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("duplicate tensor name 'layers.0.q_proj'"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(ContainerWrite, RefusesRaggedArrays) {
  const fs::path dir = temp_dir();
  Container c = sample_container();
  c.tensors[1].packed.arrays[1].bytes.pop_back();
  try {
    write_container(dir / "ragged.sparsa", c);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("tensor 'layers.0.up_proj': array 'indices' holds 23 bytes"),
        std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(ContainerWrite, FailuresLeaveNoFileAndKeepThePreviousOne) {
  const fs::path dir = temp_dir();
  EXPECT_THROW(write_container(dir / "missing" / "m.sparsa", sample_container()), Error);
  fs::create_directory(dir /
                       "taken");  // the rename over a directory fails after the data is written
  EXPECT_THROW(write_container(dir / "taken", sample_container()), Error);
  EXPECT_EQ(dir_entries(dir), std::vector<fs::path>{dir / "taken"});

  write_container(dir / "m.sparsa", sample_container());
  const std::string before = read_file(dir / "m.sparsa");
  Container bad = sample_container();
  bad.tensors[0].name = "bad\xff";  // not UTF-8: the header cannot be written
  try {
    write_container(dir / "m.sparsa", bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid UTF-8"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(dir / "m.sparsa"), before);
  EXPECT_EQ(dir_entries(dir).size(), 2u);
}

}  // namespace
}  // namespace sparsa

namespace sparsa {
namespace {

TEST(ContainerDamaged, ValidChecksumsButBrokenStructureIsRefused) {
  // A crafted file: checksums match, but a CSR column index points past the matrix. The reader
  // must refuse it, or a kernel would read out of bounds.
  const Pattern unstructured = test::unstructured_pattern(0.5);
  const Tensor w = test::random_sparse_tensor("w", DType::F32, {4, 9}, unstructured, 11);
  Container c;
  c.tensors.push_back({w.name(), w.shape(), pack(w, FormatKind::CSR, unstructured)});
  auto& col_idx = c.tensors[0].packed.array("col_idx");
  ASSERT_EQ(col_idx.dtype, DType::U16);
  ASSERT_GE(col_idx.bytes.size(), 2u);
  const uint16_t bad = 40;
  std::memcpy(col_idx.bytes.data(), &bad, 2);
  const fs::path path = temp_dir() / "crafted.sparsa";
  write_container(path, c);  // the writer stores arrays as given
  try {
    read_container(path);
    FAIL() << "a CSR column index past the matrix was accepted";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find("tensor 'w'"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace sparsa

// Regressions from fuzzing the reader (tests/fuzz/container_fuzz.cc): inputs that crashed it,
// made it allocate terabytes or loop for hours, each now refused with sparsa::Error.
namespace sparsa {
namespace {

// A container of one tensor `w` whose arrays are given as they are (the writer checksums them
// without judging them), so only the reader's structural checks stand between them and a kernel.
fs::path crafted(const std::string& file, FormatKind format, const Pattern& pattern, int64_t rows,
                 int64_t cols, std::vector<PackedArray> arrays,
                 std::optional<CodecParams> codec = std::nullopt) {
  ContainerTensor t{"w", {rows, cols}, {}, codec};
  t.packed.format = format;
  t.packed.pattern = pattern;
  t.packed.rows = rows;
  t.packed.cols = cols;
  t.packed.value_dtype = DType::F16;
  t.packed.arrays = std::move(arrays);
  Container c;
  c.tensors.push_back(std::move(t));
  const fs::path path = temp_dir() / file;
  write_container(path, c);
  return path;
}

PackedArray bytes_array(const std::string& name, DType dtype, std::vector<uint8_t> bytes) {
  PackedArray a{name, dtype, {}};
  for (uint8_t b : bytes) a.bytes.push_back(std::byte{b});
  return a;
}

std::vector<uint8_t> le_bytes(uint64_t v, int count) {
  std::vector<uint8_t> out;
  for (int i = 0; i < count; ++i) out.push_back(uint8_t(v >> (8 * i)));
  return out;
}

TEST(ContainerFuzzed, DeeplyNestedHeaderIsRefusedWithoutOverflowingTheStack) {
  // 100 000 nested arrays in a 200 KB header: serializing it again (the canonical-form check)
  // recursed once per level and overflowed the stack.
  const std::string text = "{\"format_version\":1,\"metadata\":{},\"tensors\":" +
                           std::string(100000, '[') + std::string(100000, ']') +
                           ",\"header_xxh64\":\"0000000000000000\"}";
  std::string file = std::string("SPARSA\0\0", 8) + std::string(8, '\0') + text;
  for (int i = 0; i < 8; ++i) file[8 + i] = char(uint8_t(uint64_t(text.size()) >> (8 * i)));
  const fs::path path = temp_dir() / "deep.sparsa";
  write_file(path, file);
  expect_read_error(path, {"header is corrupted", "nested more than 16 levels"});
}

TEST(ContainerFuzzed, EmptyMatrixWithHugeRowCountIsRefused) {
  // 2^40 rows x 0 columns: no bytes back the rows, but the nm check walked every one (hours) and
  // a codec's layout allocated a pointer per row (8 TB).
  const int64_t rows = int64_t{1} << 40;
  expect_read_error(crafted("nm.sparsa", FormatKind::NM, test::nm_pattern(2, 4), rows, 0,
                            {bytes_array("values", DType::F16, {}),
                             bytes_array("indices", DType::U32, {})}),
                    {"tensor 'w'", "x 0 has more than 1048576 rows"});
  expect_read_error(crafted("int8.sparsa", FormatKind::Dense, Pattern{}, rows, 0,
                            {bytes_array("codes", DType::I8, {}),
                             bytes_array("scales", DType::F16, {})},
                            CodecParams::parse("int8")),
                    {"tensor 'w'", "x 0 has more than 1048576 rows"});
  // A few empty rows are still a valid (empty) matrix.
  const Container ok = read_container(
      crafted("few.sparsa", FormatKind::NM, test::nm_pattern(2, 4), 3, 0,
              {bytes_array("values", DType::F16, {}), bytes_array("indices", DType::U32, {})}));
  ASSERT_EQ(ok.tensors.size(), 1u);
  EXPECT_EQ(ok.tensors[0].packed.rows, 3);
}

// A zstd frame header (single segment, 8-byte content size) and one empty raw block.
std::vector<uint8_t> zstd_frame_claiming(uint64_t content_size) {
  std::vector<uint8_t> f = le_bytes(0xFD2FB528u, 4);
  f.push_back(0xE0);
  for (uint8_t b : le_bytes(content_size, 8)) f.push_back(b);
  for (uint8_t b : {0x01, 0x00, 0x00}) f.push_back(b);
  return f;
}

TEST(ContainerFuzzed, ZstdFrameClaimingMoreThanItCanHoldIsRefused) {
  // 17 bytes claiming 2 TB of values: the check allocated a stand-in values array of that size.
  const int64_t n = int64_t{1} << 20;
  expect_read_error(crafted("rows.sparsa", FormatKind::Dense, Pattern{}, n, n,
                            {bytes_array("values_zstd", DType::U8, zstd_frame_claiming(2 * n * n))},
                            CodecParams::parse("zstd")),
                    {"tensor 'w'", "zstd", "cannot hold 1048576 rows"});
  // Few rows, long ones: 128 MiB claimed by 16 bytes, beyond zstd's largest expansion.
  expect_read_error(crafted("ratio.sparsa", FormatKind::Dense, Pattern{}, 64, n,
                            {bytes_array("values_zstd", DType::U8, zstd_frame_claiming(2 * 64 * n))},
                            CodecParams::parse("zstd")),
                    {"tensor 'w'", "'values_zstd'", "cannot decode to 134217728 bytes"});
}

TEST(ContainerFuzzed, ShapeWhoseValueCountOverflowsIsRefused) {
  // 2^23 x 2^40 (2^63 values; the reader's 64-bit unsigned element count does not overflow) under
  // zstd: the codec layout computed row offsets past INT64_MAX (UBSan: signed overflow).
  const int64_t rows = int64_t{1} << 23, cols = int64_t{1} << 40;
  expect_read_error(crafted("overflow.sparsa", FormatKind::Dense, Pattern{}, rows, cols,
                            {bytes_array("values_zstd", DType::U8, std::vector<uint8_t>(300, 0))},
                            CodecParams::parse("zstd")),
                    {"tensor 'w'", "more than 2^56 elements"});
  // Uncompressed, the dense check's byte count overflowed the same way.
  expect_read_error(crafted("overflow-dense.sparsa", FormatKind::Dense, Pattern{}, rows, cols,
                            {bytes_array("values", DType::F16, {})}),
                    {"tensor 'w'", "more than 2^56 elements"});
  // The codec layout refuses such shapes itself too (check_compressed is public API).
  PackedMatrix huge;
  huge.rows = rows;
  huge.cols = cols;
  huge.value_dtype = DType::F16;
  huge.arrays = {bytes_array("values_zstd", DType::U8, std::vector<uint8_t>(300, 0))};
  test::expect_error([&] { check_compressed({huge, CodecParams::parse("zstd")}); },
                     {"packed dense matrix [8388608, 1099511627776]",
                      "shape too large"});
}

TEST(ContainerFuzzed, RansStreamTooShortForItsCountIsRefusedBeforeDecoding) {
  // A 528-byte codebook8 rANS stream whose header claims 2^26 symbols (and a codebook): the
  // check allocated the values, the decoder the symbols, before finding the chunks missing.
  const int64_t rows = 65536, cols = 1024;
  std::vector<uint8_t> stream = {1, 14};
  for (uint8_t b : le_bytes(256, 2)) stream.push_back(b);
  for (uint8_t b : le_bytes(65536, 4)) stream.push_back(b);
  for (uint8_t b : le_bytes(uint64_t(rows * cols), 8)) stream.push_back(b);
  stream.resize(stream.size() + 512, 0);
  expect_read_error(
      crafted("rans.sparsa", FormatKind::Dense, Pattern{}, rows, cols,
              {bytes_array("codes_rans", DType::U8, stream),
               bytes_array("codebook", DType::F16, std::vector<uint8_t>(512, 1))},
              CodecParams::parse("codebook8:tensor:rans")),
      {"tensor 'w'", "'codes_rans'", "too short for 67108864 symbols"});
  // The same header check guards the lossless codec's exponent stream (smaller: its raw bits
  // array must be present in full).
  const int64_t small_rows = 512;
  std::vector<uint8_t> exps = {1, 14};
  for (uint8_t b : le_bytes(32, 2)) exps.push_back(b);
  for (uint8_t b : le_bytes(65536, 4)) exps.push_back(b);
  for (uint8_t b : le_bytes(uint64_t(small_rows * cols), 8)) exps.push_back(b);
  exps.resize(exps.size() + 64, 0);
  expect_read_error(
      crafted("lossless.sparsa", FormatKind::Dense, Pattern{}, small_rows, cols,
              {bytes_array("exponents", DType::U8, exps),
               bytes_array("sign_mantissa", DType::U8,
                           std::vector<uint8_t>(size_t(small_rows * cols * 11 + 7) / 8, 1))},
              CodecParams::parse("lossless")),
      {"tensor 'w'", "'exponents'", "too short for 524288 symbols"});
}

}  // namespace
}  // namespace sparsa
