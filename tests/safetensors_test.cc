#include "sparsa/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "sparsa/error.h"
#include "test_util.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using test::read_file;
using test::temp_dir;
using test::write_file;

std::string le64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char((v >> (8 * i)) & 0xff);
  return out;
}

// A file from the spec's three parts: u64 LE header length, header text, data.
std::string make_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = char(1 + rng() % 255);  // never zero
  return out;
}

Tensor random_i32(const std::string& name, std::vector<int64_t> shape, uint64_t seed) {
  Tensor t(name, DType::I32, std::move(shape));
  std::mt19937 rng(seed);
  auto bytes = t.mutable_bytes();
  for (size_t i = 0; i < bytes.size(); i += 4) {
    const int32_t v = int32_t(rng()) | 1;
    std::memcpy(bytes.data() + i, &v, 4);
  }
  return t;
}

std::string tensor_bytes(const Tensor& t) {
  return {reinterpret_cast<const char*>(t.bytes().data()), t.bytes().size()};
}

std::vector<fs::path> dir_entries(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path());
  return out;
}

// Reads a damaged file and checks the error names the file and the problem.
void expect_read_error(const std::string& bytes, const std::string& phrase) {
  const fs::path path = temp_dir() / "damaged.safetensors";
  write_file(path, bytes);
  try {
    read_safetensors(path);
    ADD_FAILURE() << "no error for a file that should give: " << phrase;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(phrase), std::string::npos)
        << "wanted '" << phrase << "' in: " << message;
  }
}

// A header holding one tensor entry (JSON text) named "w" with `data_size` bytes of data.
void expect_entry_error(const std::string& entry, size_t data_size, const std::string& phrase) {
  expect_read_error(make_file("{\"w\":" + entry + "}", random_bytes(data_size, 7)), phrase);
}

TEST(Safetensors, RoundTripIsBitExact) {
  const fs::path path = temp_dir() / "model.safetensors";
  std::vector<Tensor> tensors = {
      test::random_tensor("layers.0.weight", DType::F32, {7, 13}, 1),
      test::random_tensor("layers.0.bias", DType::F16, {13}, 2),
      test::random_tensor("embed", DType::BF16, {5, 3, 4}, 3),
      random_i32("positions", {11}, 4),
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"note", "caf\xc3\xa9 \"q\"\n"}};
  write_safetensors(path, tensors, metadata);

  const SafetensorsFile file = read_safetensors(path);
  EXPECT_EQ(file.metadata, metadata);
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {  // written in order, so read back in order
    EXPECT_EQ(file.tensors[i].name(), tensors[i].name());
    EXPECT_EQ(file.tensors[i].dtype(), tensors[i].dtype());
    EXPECT_EQ(file.tensors[i].shape(), tensors[i].shape());
    EXPECT_EQ(tensor_bytes(file.tensors[i]), tensor_bytes(tensors[i])) << tensors[i].name();
  }
  // The header is padded to a multiple of 8 and the data follows it contiguously.
  const std::string raw = read_file(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  size_t total = 0;
  for (const auto& t : tensors) total += t.nbytes();
  EXPECT_EQ(raw.size(), 8 + header_len + total);
}

TEST(Safetensors, WriterMatchesBytesBuiltFromTheSpec) {
  const fs::path path = temp_dir() / "small.safetensors";
  const std::vector<float> a = {1.5f, -2.25f};
  Tensor ta = Tensor::from_f32("a", DType::F32, {2}, a);
  Tensor tb("b", DType::U8, {1, 3});
  const uint8_t b[3] = {9, 200, 17};
  std::memcpy(tb.mutable_bytes().data(), b, 3);
  write_safetensors(path, {ta, tb}, {{"format", "pt"}});

  // By hand: compact JSON, __metadata__ first, entries as dtype/shape/data_offsets, padded
  // with spaces to a multiple of 8, then the data little-endian.
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"U8","shape":[1,3],"data_offsets":[8,11]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string data;
  for (float v : a) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int i = 0; i < 4; ++i) data += char((bits >> (8 * i)) & 0xff);
  }
  data += std::string(reinterpret_cast<const char*>(b), 3);
  const std::string expected = make_file(header, data);
  EXPECT_EQ(read_file(path), expected);

  // And the reader takes the hand-built bytes.
  const fs::path by_hand = temp_dir() / "by_hand.safetensors";
  write_file(by_hand, expected);
  const SafetensorsFile file = read_safetensors(by_hand);
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.tensors[0].to_f32(), a);
  EXPECT_EQ(tensor_bytes(file.tensors[1]), std::string(reinterpret_cast<const char*>(b), 3));
  EXPECT_EQ(file.metadata.at("format"), "pt");
}

TEST(Safetensors, ReaderSortsByDataOffsetAndAcceptsUnpaddedHeaders) {
  // Entries listed out of order, header not padded, and a gap is fine; the result is in data order.
  const std::string header = R"({"second":{"dtype":"I16","shape":[2],"data_offsets":[6,10]},)"
                             R"("first":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})";
  const std::string data = random_bytes(10, 3);
  const fs::path path = temp_dir() / "order.safetensors";
  write_file(path, make_file(header, data));
  const SafetensorsFile file = read_safetensors(path);
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.tensors[0].name(), "first");
  EXPECT_EQ(file.tensors[1].name(), "second");
  EXPECT_EQ(tensor_bytes(file.tensors[0]), data.substr(0, 3));
  EXPECT_EQ(tensor_bytes(file.tensors[1]), data.substr(6, 4));
  EXPECT_TRUE(file.metadata.empty());
}

TEST(Safetensors, EmptyAndScalarTensorsRoundTrip) {
  const fs::path path = temp_dir() / "empty.safetensors";
  std::vector<Tensor> tensors = {
      Tensor("none", DType::F32, {0, 4}), test::random_tensor("scalar", DType::F32, {}, 5),
      Tensor("also_none", DType::BF16, {3, 0}), test::random_tensor("tail", DType::F16, {3}, 6)};
  write_safetensors(path, tensors);
  const SafetensorsFile file = read_safetensors(path);
  ASSERT_EQ(file.tensors.size(), 4u);
  for (const Tensor& t : tensors) {
    auto it = std::find_if(file.tensors.begin(), file.tensors.end(),
                           [&](const Tensor& r) { return r.name() == t.name(); });
    ASSERT_NE(it, file.tensors.end()) << t.name();
    EXPECT_EQ(it->shape(), t.shape());
    EXPECT_EQ(tensor_bytes(*it), tensor_bytes(t));
  }
}

TEST(Safetensors, NoTensorsRoundTrip) {
  const fs::path path = temp_dir() / "nothing.safetensors";
  write_safetensors(path, {}, {{"k", "v"}});
  const SafetensorsFile file = read_safetensors(path);
  EXPECT_TRUE(file.tensors.empty());
  EXPECT_EQ(file.metadata.at("k"), "v");
}

TEST(Safetensors, ViewsOutliveTheFileAndItsReplacement) {
  const fs::path path = temp_dir() / "m.safetensors";
  Tensor original = test::random_tensor("w", DType::F32, {4, 9}, 8);
  write_safetensors(path, {original});
  Tensor view = read_safetensors(path).tensors.at(0);  // the SafetensorsFile is gone
  // The atomic writer replaces the file by rename; the old mapping keeps the old bytes.
  write_safetensors(path, {test::random_tensor("w", DType::F32, {4, 9}, 9)});
  EXPECT_EQ(tensor_bytes(view), tensor_bytes(original));
  EXPECT_NE(tensor_bytes(read_safetensors(path).tensors.at(0)), tensor_bytes(original));
}

// ---- damaged files: one test per problem -------------------------------------------------------

TEST(SafetensorsDamaged, MissingFile) {
  const fs::path path = temp_dir() / "absent.safetensors";
  try {
    read_safetensors(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsDamaged, ShorterThanEightBytes) {
  expect_read_error("\x10\0\0\0", "shorter than the 8-byte header length");
  expect_read_error("", "shorter than the 8-byte header length");
}

TEST(SafetensorsDamaged, HeaderLengthPastEndOfFile) {
  expect_read_error(le64(64) + "{}", "runs past the end of the file");
}

TEST(SafetensorsDamaged, HeaderLengthAbsurdlyLarge) {
  expect_read_error(le64(uint64_t(1) << 62) + "{}", "is too large");
  expect_read_error(le64(~uint64_t(0)) + "{}", "is too large");
}

TEST(SafetensorsDamaged, InvalidJson) {
  expect_read_error(make_file(R"({"w":{"dtype":"F32",)", ""), "not valid JSON");
}

TEST(SafetensorsDamaged, HeaderNotAnObject) {
  expect_read_error(make_file(R"([1,2,3])", ""), "header is not a JSON object");
}

TEST(SafetensorsDamaged, EntryMissingDtype) {
  expect_entry_error(R"({"shape":[2],"data_offsets":[0,8]})", 8, "missing \"dtype\"");
}

TEST(SafetensorsDamaged, EntryMissingShape) {
  expect_entry_error(R"({"dtype":"F32","data_offsets":[0,8]})", 8, "missing \"shape\"");
}

TEST(SafetensorsDamaged, EntryMissingDataOffsets) {
  expect_entry_error(R"({"dtype":"F32","shape":[2]})", 8, "missing \"data_offsets\"");
}

TEST(SafetensorsDamaged, EntryNotAnObject) {
  expect_entry_error(R"([0,8])", 8, "tensor 'w': entry is not a JSON object");
}

TEST(SafetensorsDamaged, DtypeNotAString) {
  expect_entry_error(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})", 8,
                     "\"dtype\" is not a string");
}

TEST(SafetensorsDamaged, ShapeNotAnArray) {
  expect_entry_error(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})", 8,
                     "\"shape\" is not an array");
}

TEST(SafetensorsDamaged, ShapeHoldsNonIntegers) {
  expect_entry_error(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})", 8,
                     "where integers belong");
}

TEST(SafetensorsDamaged, DataOffsetsWrongType) {
  expect_entry_error(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,16]})", 16,
                     "\"data_offsets\" is not an array of two integers");
  expect_entry_error(R"({"dtype":"F32","shape":[2],"data_offsets":{"begin":0}})", 8,
                     "\"data_offsets\" is not an array of two integers");
}

TEST(SafetensorsDamaged, NegativeDataOffset) {
  expect_entry_error(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})", 8,
                     "negative data offset");
}

TEST(SafetensorsDamaged, UnknownDtype) {
  expect_entry_error(R"({"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]})", 2,
                     "unknown dtype 'F8_E4M3'");
}

TEST(SafetensorsDamaged, NegativeDimension) {
  expect_entry_error(R"({"dtype":"F32","shape":[-2,2],"data_offsets":[0,0]})", 8,
                     "negative dimension");
}

TEST(SafetensorsDamaged, ShapeDoesNotMatchByteSpan) {
  expect_entry_error(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 12,
                     "needs 12 bytes but data_offsets [0, 8] span 8 bytes");
}

TEST(SafetensorsDamaged, ShapeByteSizeOverflows) {
  expect_entry_error(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})", 8,
                     "too large");
}

TEST(SafetensorsDamaged, OffsetsPastEndOfData) {
  expect_entry_error(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})", 12,
                     "run past the end of the data (12 bytes)");
}

TEST(SafetensorsDamaged, BeginAfterEnd) {
  expect_entry_error(R"({"dtype":"F32","shape":[0],"data_offsets":[8,4]})", 8, "begin 8 > end 4");
}

TEST(SafetensorsDamaged, OverlappingTensors) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_read_error(make_file(header, random_bytes(12, 1)), "'a' [0, 8] and 'b' [4, 12] overlap");
}

TEST(SafetensorsDamaged, DuplicateTensorNames) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  expect_read_error(make_file(header, random_bytes(8, 1)), "duplicate tensor name 'a'");
}

TEST(SafetensorsDamaged, MetadataValueNotAString) {
  const std::string header =
      R"({"__metadata__":{"epochs":3},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  expect_read_error(make_file(header, random_bytes(1, 1)),
                    "\"__metadata__\" value for 'epochs' is not a string");
}

TEST(SafetensorsDamaged, MetadataNotAnObject) {
  expect_read_error(make_file(R"({"__metadata__":"pt"})", ""),
                    "\"__metadata__\" is not a JSON object");
}

// ---- the writer refuses bad input and leaves nothing behind ------------------------------------

TEST(SafetensorsWrite, RefusesDuplicateNamesAndLeavesNoFile) {
  const fs::path dir = temp_dir();
  const fs::path path = dir / "dup.safetensors";
  std::vector<Tensor> tensors = {test::random_tensor("w", DType::F32, {2}, 1),
                                 test::random_tensor("w", DType::F32, {3}, 2)};
  try {
    write_safetensors(path, tensors);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("duplicate tensor name 'w'"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(SafetensorsWrite, RefusesMetadataAsATensorName) {
  const fs::path dir = temp_dir();
  try {
    write_safetensors(dir / "m.safetensors",
                      {test::random_tensor("__metadata__", DType::F32, {2}, 1)});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be named \"__metadata__\""), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(SafetensorsWrite, MissingDirectoryThrowsAndLeavesNoFile) {
  const fs::path dir = temp_dir();
  const fs::path path = dir / "no_such_dir" / "m.safetensors";
  try {
    write_safetensors(path, {test::random_tensor("w", DType::F32, {2}, 1)});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot create temporary file"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(SafetensorsWrite, RefusesNamesThatAreNotUtf8) {
  const fs::path dir = temp_dir();
  try {
    write_safetensors(dir / "m.safetensors", {test::random_tensor("bad\xff", DType::F32, {2}, 1)});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "m.safetensors").string()), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("valid UTF-8"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(SafetensorsWrite, FailedRenameRemovesTheTemporaryFile) {
  // The target is a directory: the data is written, then the rename fails.
  const fs::path dir = temp_dir();
  const fs::path path = dir / "taken";
  fs::create_directory(path);
  try {
    write_safetensors(path, {test::random_tensor("w", DType::F32, {64}, 1)});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot rename"), std::string::npos) << e.what();
  }
  EXPECT_EQ(dir_entries(dir), std::vector<fs::path>{path});
}

TEST(SafetensorsWrite, FailureKeepsThePreviousFile) {
  const fs::path dir = temp_dir();
  const fs::path path = dir / "m.safetensors";
  Tensor first = test::random_tensor("w", DType::F32, {5}, 1);
  write_safetensors(path, {first});
  const std::string before = read_file(path);
  EXPECT_THROW(write_safetensors(path, {first, first}), Error);
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(dir_entries(dir).size(), 1u);  // no temporary file left beside it
}

}  // namespace
}  // namespace sparsa
