// The .sparsa container (layout in include/sparsa/container.h).
//
// Header integrity: "header_xxh64" (16 lowercase hex digits, always the last top-level field) is
// the XXH64 (seed 0) of the header's compact JSON serialization (nlohmann dump(), keys in the
// written order: format_version, metadata, tensors) WITHOUT that field. The reader re-serializes
// the parsed header and requires it to equal the stored bytes exactly (the header is in that
// canonical form), then recomputes the hash over the serialization without the field. Together
// these catch any changed byte in the header: a change either breaks the JSON, breaks the
// canonical form, or changes a value and so the hash. Each blob carries its own XXH64.
#include "sparsa/container.h"

#include "format/format_internal.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/mapped_file.h"
#include "sparsa/error.h"

namespace sparsa {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::byte kMagic[8] = {std::byte{'S'}, std::byte{'P'}, std::byte{'A'}, std::byte{'R'},
                                 std::byte{'S'}, std::byte{'A'}, std::byte{0},   std::byte{0}};
constexpr uint64_t kPreambleBytes = 16;  // magic + header length
constexpr uint64_t kBlobAlignment = 64;
constexpr uint64_t kMaxHeaderBytes = uint64_t(1) << 30;  // beyond this the length is damage
// A written header nests 4 deep (header, tensors, entry, blobs/shape, blob). Deeper nesting is
// damage, and refusing it while parsing keeps the recursive serializer (the canonical-form
// check) off a crafted header like [[[[...]]]], which would overflow the stack (found with the
// fuzz harness: 100 000 levels in a 200 KB file).
constexpr int kMaxHeaderDepth = 16;
constexpr uint64_t kMaxEmptyRows = uint64_t(1) << 20;
constexpr uint64_t kMaxElements = uint64_t(1) << 56;

uint64_t align_up(uint64_t offset) {
  return (offset + kBlobAlignment - 1) / kBlobAlignment * kBlobAlignment;
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

uint64_t xxh64(const void* data, size_t size) { return XXH64(data, size, 0); }

uint64_t load_u64_le(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(p[i]);
  return v;
}

// ---- writing
// ---------------------------------------------------------------------------------------

void check_for_writing(const std::string& where, const Container& container) {
  std::set<std::string_view> names;
  for (const ContainerTensor& t : container.tensors) {
    if (t.name.empty()) fail("{}: a tensor has an empty name", where);
    if (!names.insert(t.name).second) fail("{}: duplicate tensor name '{}'", where, t.name);
    const std::string at = fmt::format("{}: tensor '{}'", where, t.name);
    for (int64_t d : t.shape)
      if (d < 0) fail("{}: negative dimension in shape {}", at, shape_string(t.shape));
    if (t.packed.rows < 0 || t.packed.cols < 0)
      fail("{}: negative matrix size {} x {}", at, t.packed.rows, t.packed.cols);
    std::set<std::string_view> arrays;
    for (const PackedArray& a : t.packed.arrays) {
      if (a.name.empty()) fail("{}: an array has an empty name", at);
      if (!arrays.insert(a.name).second) fail("{}: duplicate array name '{}'", at, a.name);
      if (a.bytes.size() % dtype_size(a.dtype) != 0)
        fail("{}: array '{}' holds {} bytes, not a whole number of {} values", at, a.name,
             a.bytes.size(), dtype_name(a.dtype));
    }
  }
}

struct BlobPlacement {
  const PackedArray* array;
  uint64_t offset;
};

// The header (unsigned) for blobs placed from `data_start` on; fills `placements` in write order.
Json make_header(const Container& container, uint64_t data_start,
                 const std::vector<uint64_t>& hashes, std::vector<BlobPlacement>& placements) {
  placements.clear();
  Json header = Json::object();
  header["format_version"] = kContainerVersion;
  Json& metadata = header["metadata"] = Json::object();
  for (const auto& [key, value] : container.metadata) metadata[key] = value;
  Json& tensors = header["tensors"] = Json::array();
  uint64_t offset = data_start;
  size_t blob_index = 0;
  for (const ContainerTensor& t : container.tensors) {
    Json entry = Json::object();
    entry["name"] = t.name;
    entry["shape"] = t.shape;
    entry["dtype"] = dtype_name(t.packed.value_dtype);
    entry["pattern"] = t.packed.pattern.to_string();
    entry["format"] = format_name(t.packed.format);
    if (t.codec) entry["codec"] = t.codec->to_string();
    entry["rows"] = t.packed.rows;
    entry["cols"] = t.packed.cols;
    Json& blobs = entry["blobs"] = Json::array();
    for (const PackedArray& a : t.packed.arrays) {
      offset = align_up(offset);
      blobs.push_back(Json{{"name", a.name},
                           {"dtype", dtype_name(a.dtype)},
                           {"offset", offset},
                           {"size", a.bytes.size()},
                           {"xxh64", hex64(hashes[blob_index++])}});
      placements.push_back({&a, offset});
      offset += a.bytes.size();
    }
    tensors.push_back(std::move(entry));
  }
  return header;
}

// Signs and serializes the header; nlohmann refuses strings that are not UTF-8.
std::string sign_header(const std::string& where, Json header) {
  try {
    const std::string unsigned_text = header.dump();
    header["header_xxh64"] = hex64(xxh64(unsigned_text.data(), unsigned_text.size()));
    return header.dump();
  } catch (const Json::exception& e) {
    fail("{}: cannot write the header (names and metadata must be valid UTF-8): {}", where,
         e.what());
  }
}

// ---- reading
// ---------------------------------------------------------------------------------------

bool is_integer(const Json& v) { return v.is_number_integer() || v.is_number_unsigned(); }

const Json& field(const std::string& at, const Json& object, const char* key) {
  if (!object.contains(key)) fail("{}: missing \"{}\"", at, key);
  return object[key];
}

std::string string_field(const std::string& at, const Json& object, const char* key) {
  const Json& v = field(at, object, key);
  if (!v.is_string()) fail("{}: \"{}\" is not a string but {}", at, key, v.type_name());
  return v.get<std::string>();
}

uint64_t unsigned_field(const std::string& at, const Json& object, const char* key) {
  const Json& v = field(at, object, key);
  if (!is_integer(v) || (v.is_number_integer() && v.get<int64_t>() < 0))
    fail("{}: \"{}\" is not a non-negative integer: {}", at, key, v.dump());
  return v.get<uint64_t>();
}

DType dtype_field(const std::string& at, const Json& object, const char* key) {
  const std::string name = string_field(at, object, key);
  const auto dtype = dtype_from_name(name);
  if (!dtype) fail("{}: unknown dtype '{}'", at, name);
  return *dtype;
}

// The header after the magic/length checks: JSON, version, then integrity.
Json parse_header(const std::string& where, std::string_view text) {
  Json header;
  bool too_deep = false;
  try {
    header = Json::parse(text, [&](int depth, Json::parse_event_t, Json&) {
      if (depth > kMaxHeaderDepth) too_deep = true;
      return !too_deep;  // once too deep, keep nothing more: the result is refused below
    });
  } catch (const Json::exception& e) {
    fail("{}: header is corrupted: not valid JSON: {}", where, e.what());
  }
  if (too_deep)
    fail("{}: header is corrupted: JSON nested more than {} levels deep", where, kMaxHeaderDepth);
  if (!header.is_object())
    fail("{}: header is corrupted: not a JSON object but {}", where, header.type_name());
  // The version first: a newer writer may have changed everything after it.
  const Json& version = field(where + ": header", header, "format_version");
  if (!is_integer(version) || (version.is_number_integer() && version.get<int64_t>() < 1))
    fail("{}: invalid format_version {}", where, version.dump());
  if (version.get<uint64_t>() > uint64_t(kContainerVersion))
    fail("{}: format_version {} is newer than this sparsa reads (up to {}); upgrade sparsa", where,
         version.dump(), kContainerVersion);

  const std::string stored = string_field(where + ": header", header, "header_xxh64");
  if (header.dump() != text)
    fail("{}: header is corrupted: its bytes are not the writer's serialization", where);
  header.erase("header_xxh64");
  const std::string unsigned_text = header.dump();
  const std::string computed = hex64(xxh64(unsigned_text.data(), unsigned_text.size()));
  if (computed != stored)
    fail("{}: header is corrupted: checksum mismatch (stored {}, computed {})", where, stored,
         computed);
  return header;
}

struct BlobSpan {
  uint64_t begin, end;
  std::string owner;  // "tensor 't' blob 'b'"
};

ContainerTensor read_tensor(const std::string& where, const Json& entry, const MappedFile& file,
                            uint64_t data_start, std::vector<BlobSpan>& spans) {
  if (!entry.is_object())
    fail("{}: a \"tensors\" entry is not a JSON object but {}", where, entry.type_name());
  ContainerTensor t;
  t.name = string_field(where + ": tensor entry", entry, "name");
  const std::string at = fmt::format("{}: tensor '{}'", where, t.name);

  const Json& shape = field(at, entry, "shape");
  if (!shape.is_array()) fail("{}: \"shape\" is not an array but {}", at, shape.type_name());
  uint64_t numel = 1;
  for (const Json& d : shape) {
    if (!is_integer(d) || (d.is_number_integer() && d.get<int64_t>() < 0) ||
        (d.is_number_unsigned() && d.get<uint64_t>() > uint64_t(INT64_MAX)))
      fail("{}: \"shape\" {} is not a list of non-negative integers", at, shape.dump());
    t.shape.push_back(d.get<int64_t>());
    if (__builtin_mul_overflow(numel, d.get<uint64_t>(), &numel))
      fail("{}: shape {} is too large", at, shape.dump());
  }

  PackedMatrix& p = t.packed;
  p.value_dtype = dtype_field(at, entry, "dtype");
  const std::string format = string_field(at, entry, "format");
  try {
    p.format = parse_format(format);
  } catch (const Error& e) {
    fail("{}: {}", at, e.what());  // "unknown format '...' (expected one of ...)"
  }
  const std::string pattern = string_field(at, entry, "pattern");
  try {
    p.pattern = Pattern::parse(pattern);
  } catch (const Error& e) {
    fail("{}: bad pattern: {}", at, e.what());
  }
  if (entry.contains("codec")) {
    const std::string codec = string_field(at, entry, "codec");
    try {
      t.codec = CodecParams::parse(codec);
    } catch (const Error& e) {
      fail("{}: bad codec: {}", at, e.what());
    }
  }
  const uint64_t rows = unsigned_field(at, entry, "rows"), cols = unsigned_field(at, entry, "cols");
  uint64_t elements = 0;
  if (rows > uint64_t(INT64_MAX) || cols > uint64_t(INT64_MAX) ||
      __builtin_mul_overflow(rows, cols, &elements) || elements != numel)
    fail("{}: matrix {} x {} does not match shape {}", at, rows, cols, shape.dump());
  // Formats and codecs count values and bytes in int64: far larger shapes than any model's keep
  // those counts from overflowing (a 300-byte file with 2^23 x 2^40 did, in the fuzz harness).
  if (elements > kMaxElements)
    fail("{}: matrix {} x {} has more than 2^56 elements", at, rows, cols);
  // A matrix without columns has no bytes that back its rows, yet the structural checks walk
  // every row and a codec's layout holds a pointer per row: 2^40 rows x 0 columns made the nm
  // check loop for hours and a compressed tensor's check allocate 8 TB (in the fuzz harness).
  if (cols == 0 && rows > kMaxEmptyRows)
    fail("{}: matrix {} x 0 has more than {} rows", at, rows, kMaxEmptyRows);
  p.rows = int64_t(rows);
  p.cols = int64_t(cols);

  const Json& blobs = field(at, entry, "blobs");
  if (!blobs.is_array()) fail("{}: \"blobs\" is not an array but {}", at, blobs.type_name());
  std::set<std::string> names;
  for (const Json& blob : blobs) {
    if (!blob.is_object())
      fail("{}: a blob entry is not a JSON object but {}", at, blob.type_name());
    PackedArray a;
    a.name = string_field(at + ": blob entry", blob, "name");
    const std::string bat = fmt::format("{}: blob '{}'", at, a.name);
    if (!names.insert(a.name).second) fail("{}: duplicate blob name", bat);
    a.dtype = dtype_field(bat, blob, "dtype");
    const uint64_t offset = unsigned_field(bat, blob, "offset"),
                   size = unsigned_field(bat, blob, "size");
    const std::string stored = string_field(bat, blob, "xxh64");
    if (offset % kBlobAlignment != 0)
      fail("{}: offset {} is not a multiple of {}", bat, offset, kBlobAlignment);
    if (offset < data_start)
      fail("{}: offset {} lies inside the header (data starts at {})", bat, offset, data_start);
    if (offset > file.size() || size > file.size() - offset)
      fail("{}: bytes [{}, {}) run past the end of the file ({} bytes); truncated?", bat, offset,
           offset + size, file.size());
    if (size % dtype_size(a.dtype) != 0)
      fail("{}: {} bytes are not a whole number of {} values", bat, size, dtype_name(a.dtype));
    const std::byte* data = file.data() + offset;
    const std::string computed = hex64(xxh64(data, size));
    if (computed != stored)
      fail("{}: checksum mismatch (stored {}, computed {}): the data is corrupted", bat, stored,
           computed);
    a.bytes.assign(data, data + size);
    spans.push_back({offset, offset + size, fmt::format("tensor '{}' blob '{}'", t.name, a.name)});
    p.arrays.push_back(std::move(a));
  }
  return t;
}

}  // namespace

void write_container(const std::filesystem::path& path, const Container& container) {
  const std::string where = path.string();
  check_for_writing(where, container);
  std::vector<uint64_t> hashes;
  for (const ContainerTensor& t : container.tensors)
    for (const PackedArray& a : t.packed.arrays)
      hashes.push_back(xxh64(a.bytes.data(), a.bytes.size()));

  // Blob offsets are written in the header, so the header length depends on where the data
  // starts: grow the start until the header fits before it (offsets only gain digits, so this
  // settles in a step or two).
  std::vector<BlobPlacement> placements;
  uint64_t data_start = align_up(kPreambleBytes);
  std::string header = sign_header(where, make_header(container, data_start, hashes, placements));
  while (kPreambleBytes + header.size() > data_start) {
    data_start = align_up(kPreambleBytes + header.size());
    header = sign_header(where, make_header(container, data_start, hashes, placements));
  }

  std::byte length[8];
  for (int i = 0; i < 8; ++i) length[i] = std::byte(uint64_t(header.size()) >> (8 * i));
  AtomicFile out(path);
  out.write(kMagic);
  out.write(length);
  out.write(std::as_bytes(std::span(header)));
  for (const BlobPlacement& b : placements) {
    out.write_zeros(b.offset - out.bytes_written());
    out.write(b.array->bytes);
  }
  out.commit();
}

Container read_container(const std::filesystem::path& path) {
  const std::string where = path.string();
  auto file = MappedFile::open(path);
  const size_t size = file->size();
  if (size < sizeof(kMagic) || std::memcmp(file->data(), kMagic, sizeof(kMagic)) != 0)
    fail("{}: not a .sparsa container (the file does not start with the magic \"SPARSA\\0\\0\")",
         where);
  if (size < kPreambleBytes)
    fail("{}: file is {} bytes, too short for the {}-byte preamble; truncated?", where, size,
         kPreambleBytes);
  const uint64_t header_len = load_u64_le(file->data() + sizeof(kMagic));
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} is too large (limit {} bytes); corrupted?", where, header_len,
         kMaxHeaderBytes);
  if (header_len > size - kPreambleBytes)
    fail("{}: header length {} runs past the end of the file ({} bytes); truncated?", where,
         header_len, size);

  const auto* text = reinterpret_cast<const char*>(file->data() + kPreambleBytes);
  const Json header = parse_header(where, {text, header_len});

  Container out;
  const Json& metadata = field(where + ": header", header, "metadata");
  if (!metadata.is_object())
    fail("{}: \"metadata\" is not a JSON object but {}", where, metadata.type_name());
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string())
      fail("{}: metadata value for '{}' is not a string but {}", where, key, value.type_name());
    out.metadata[key] = value.get<std::string>();
  }

  const Json& tensors = field(where + ": header", header, "tensors");
  if (!tensors.is_array())
    fail("{}: \"tensors\" is not an array but {}", where, tensors.type_name());
  std::vector<BlobSpan> spans;
  std::set<std::string> names;
  for (const Json& entry : tensors) {
    out.tensors.push_back(read_tensor(where, entry, *file, kPreambleBytes + header_len, spans));
    if (!names.insert(out.tensors.back().name).second)
      fail("{}: duplicate tensor name '{}'", where, out.tensors.back().name);
  }
  std::sort(spans.begin(), spans.end(), [](const BlobSpan& a, const BlobSpan& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  const BlobSpan* previous = nullptr;  // the last non-empty blob; empty ones occupy no bytes
  for (const BlobSpan& span : spans) {
    if (span.begin == span.end) continue;
    if (previous && span.begin < previous->end)
      fail("{}: {} overlaps {}", where, span.owner, previous->owner);
    previous = &span;
  }
  // Checksums only prove the bytes are the ones written; the structural check proves the arrays
  // make a valid packed matrix, so no kernel ever indexes out of bounds on a crafted file.
  for (const ContainerTensor& t : out.tensors) {
    try {
      if (t.codec)
        check_compressed(CompressedMatrix{t.packed, *t.codec});
      else
        format::check_packed(t.packed, true);
    } catch (const Error& e) {
      fail("{}: tensor '{}': {}", where, t.name, e.what());
    }
  }
  return out;
}

bool is_container_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[sizeof(kMagic)];
  if (!in.read(magic, sizeof(magic))) return false;
  return std::memcmp(magic, kMagic, sizeof(kMagic)) == 0;
}

}  // namespace sparsa
