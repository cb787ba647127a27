// safetensors, byte-exact with the reference implementation (huggingface/safetensors):
//   u64 LE header length N | N bytes of JSON, padded with spaces to a multiple of 8 | data.
#include "sparsa/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/mapped_file.h"
#include "sparsa/error.h"

namespace sparsa {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr std::string_view kMetadataKey = "__metadata__";
// The reference reader refuses headers above 100 MB; a larger length means a damaged file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

uint64_t load_u64_le(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(p[i]);
  return v;
}

void store_u64_le(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = std::byte(v >> (8 * i));
}

struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

// Parses the JSON header; nlohmann keeps the last of duplicate keys silently, so the top-level
// keys are collected through the parser callback to catch duplicated tensor names.
json parse_header(const std::string& where, std::string_view text) {
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty() &&
        !seen.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", where, e.what());
  }
  if (!header.is_object())
    fail("{}: header is not a JSON object but {}", where, header.type_name());
  if (!duplicate.empty()) fail("{}: duplicate tensor name '{}' in the header", where, duplicate);
  return header;
}

bool is_integer(const json& value) {
  return value.is_number_integer() || value.is_number_unsigned();
}

Entry parse_entry(const std::string& where, const std::string& name, const json& info) {
  const std::string at = fmt::format("{}: tensor '{}'", where, name);
  if (!info.is_object()) fail("{}: entry is not a JSON object but {}", at, info.type_name());
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!info.contains(key)) fail("{}: entry is missing \"{}\"", at, key);

  const json& dtype = info["dtype"];
  if (!dtype.is_string()) fail("{}: \"dtype\" is not a string but {}", at, dtype.type_name());
  const auto parsed_dtype = dtype_from_name(dtype.get<std::string>());
  if (!parsed_dtype) fail("{}: unknown dtype '{}'", at, dtype.get<std::string>());

  const json& shape = info["shape"];
  if (!shape.is_array()) fail("{}: \"shape\" is not an array but {}", at, shape.type_name());
  std::vector<int64_t> dims;
  for (const json& d : shape) {
    if (!is_integer(d))
      fail("{}: \"shape\" holds {} where integers belong: {}", at, d.type_name(), shape.dump());
    if (d.is_number_integer() && d.get<int64_t>() < 0)
      fail("{}: negative dimension in shape {}", at, shape.dump());
    if (d.is_number_unsigned() && d.get<uint64_t>() > uint64_t(INT64_MAX))
      fail("{}: dimension too large in shape {}", at, shape.dump());
    dims.push_back(d.get<int64_t>());
  }

  const json& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !is_integer(offsets[0]) ||
      !is_integer(offsets[1]))
    fail("{}: \"data_offsets\" is not an array of two integers: {}", at, offsets.dump());
  if (offsets[0].is_number_integer() && offsets[0].get<int64_t>() < 0)
    fail("{}: negative data offset in {}", at, offsets.dump());
  if (offsets[1].is_number_integer() && offsets[1].get<int64_t>() < 0)
    fail("{}: negative data offset in {}", at, offsets.dump());
  const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
  if (begin > end) fail("{}: data_offsets begin {} > end {}", at, begin, end);

  // shape x dtype size must be exactly the byte span (overflow-checked: the shape is untrusted).
  uint64_t nbytes = dtype_size(*parsed_dtype);
  for (int64_t d : dims)
    if (__builtin_mul_overflow(nbytes, uint64_t(d), &nbytes))
      fail("{}: shape {} is too large (byte size overflows)", at, shape_string(dims));
  if (nbytes != end - begin)
    fail("{}: shape {} of {} needs {} bytes but data_offsets [{}, {}] span {} bytes", at,
         shape_string(dims), dtype_name(*parsed_dtype), nbytes, begin, end, end - begin);
  return {name, *parsed_dtype, std::move(dims), begin, end};
}

std::map<std::string, std::string> parse_metadata(const std::string& where, const json& metadata) {
  if (!metadata.is_object())
    fail("{}: \"__metadata__\" is not a JSON object but {}", where, metadata.type_name());
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string())
      fail("{}: \"__metadata__\" value for '{}' is not a string but {}", where, key,
           value.type_name());
    out[key] = value.get<std::string>();
  }
  return out;
}

}  // namespace

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  const std::string where = path.string();
  auto file = MappedFile::open(path);
  const size_t size = file->size();
  if (size < 8) fail("{}: file is {} bytes, shorter than the 8-byte header length", where, size);
  const uint64_t header_len = load_u64_le(file->data());
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} is too large (limit {} bytes); not a safetensors file?", where,
         header_len, kMaxHeaderBytes);
  if (header_len > size - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes)", where, header_len, size);

  const auto* header_begin = reinterpret_cast<const char*>(file->data() + 8);
  const json header = parse_header(where, {header_begin, header_len});

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey)
      out.metadata = parse_metadata(where, value);
    else
      entries.push_back(parse_entry(where, key, value));
  }

  const uint64_t data_size = size - 8 - header_len;
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const Entry* previous = nullptr;  // the last non-empty tensor; empty ones occupy no bytes
  for (const Entry& e : entries) {
    if (e.end > data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}] run past the end of the data ({} bytes)", where,
           e.name, e.begin, e.end, data_size);
    if (e.begin == e.end) continue;
    if (previous && e.begin < previous->end)
      fail("{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", where, previous->name,
           previous->begin, previous->end, e.name, e.begin, e.end);
    previous = &e;
  }

  const std::byte* data = file->data() + 8 + header_len;
  out.tensors.reserve(entries.size());
  for (Entry& e : entries)
    out.tensors.push_back(
        Tensor::view(std::move(e.name), e.dtype, std::move(e.shape), file, data + e.begin));
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string where = path.string();
  // ordered_json keeps "__metadata__" first and the tensors in the given order, as the
  // reference writer does; within an entry: dtype, shape, data_offsets.
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json& meta = header[std::string(kMetadataKey)] = ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
  }
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const Tensor& t : tensors) {
    if (t.name() == kMetadataKey) fail("{}: a tensor cannot be named \"__metadata__\"", where);
    if (!names.insert(t.name()).second) fail("{}: duplicate tensor name '{}'", where, t.name());
    for (int64_t d : t.shape())
      if (d < 0)
        fail("{}: tensor '{}': negative dimension in shape {}", where, t.name(),
             shape_string(t.shape()));
    ordered_json entry = ordered_json::object();
    entry["dtype"] = dtype_name(t.dtype());
    entry["shape"] = t.shape();
    entry["data_offsets"] = {offset, offset + t.nbytes()};
    header[t.name()] = std::move(entry);
    offset += t.nbytes();
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const ordered_json::exception& e) {  // nlohmann refuses strings that are not UTF-8
    fail("{}: cannot write the header (names and metadata must be valid UTF-8): {}", where,
         e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::byte length[8];
  store_u64_le(length, text.size());

  AtomicFile out(path);
  out.write(length);
  out.write(std::as_bytes(std::span(text)));
  for (const Tensor& t : tensors) out.write(t.bytes());
  out.commit();
}

}  // namespace sparsa
