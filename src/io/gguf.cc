// GGUF reader (llama.cpp's ggml/docs/gguf.md). Every read is bounds-checked against the
// mapping, so a truncated or damaged file throws with the byte offset instead of reading past
// the end.
#include "sparsa/gguf.h"

#include <bit>
#include <cstring>
#include <fstream>
#include <set>

#include "core/mapped_file.h"
#include "sparsa/error.h"

namespace sparsa {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxDims = 4;              // GGML_MAX_DIMS
constexpr uint64_t kDefaultAlignment = 32;

std::string_view type_name_of(uint32_t t) {
  static constexpr std::string_view names[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                               "i32", "f32", "bool", "string", "array",
                                               "u64", "i64", "f64"};
  return t < std::size(names) ? names[t] : std::string_view("unknown");
}

// A cursor over the mapped bytes; every read checks the remaining length.
class Reader {
 public:
  Reader(const std::string& where, const std::byte* data, size_t size)
      : where_(where), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(size_t n, std::string_view what) const {
    if (n > remaining())
      fail("{}: truncated at byte offset {} while reading {} ({} bytes needed, {} left)", where_,
           pos_, what, n, remaining());
  }
  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(std::string_view what) {
    const size_t at = pos_;
    const uint64_t len = read<uint64_t>(what);
    if (len > remaining())
      fail("{}: truncated at byte offset {}: string length {} ({}) runs past the end of the file",
           where_, at, len, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const std::string& where_;
  const std::byte* data_;
  size_t size_;
  size_t pos_ = 0;
};

GgufValue read_value(Reader& r, const std::string& where, const std::string& key, uint32_t type,
                     int depth);

// The smallest encoded size of one value of `type`, to refuse absurd array counts early.
uint64_t min_encoded_size(uint32_t type) {
  switch (static_cast<GgufValueType>(type)) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::Bool:
      return 1;
    case GgufValueType::U16:
    case GgufValueType::I16:
      return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32:
      return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64:
    case GgufValueType::String:
      return 8;
    case GgufValueType::Array:
      return 12;
  }
  return 1;
}

GgufValue read_value(Reader& r, const std::string& where, const std::string& key, uint32_t type,
                     int depth) {
  const std::string what = fmt::format("the value of '{}'", key);
  GgufValue v;
  v.type = static_cast<GgufValueType>(type);
  switch (v.type) {
    case GgufValueType::U8:
      v.value = int64_t(r.read<uint8_t>(what));
      break;
    case GgufValueType::I8:
      v.value = int64_t(r.read<int8_t>(what));
      break;
    case GgufValueType::U16:
      v.value = int64_t(r.read<uint16_t>(what));
      break;
    case GgufValueType::I16:
      v.value = int64_t(r.read<int16_t>(what));
      break;
    case GgufValueType::U32:
      v.value = int64_t(r.read<uint32_t>(what));
      break;
    case GgufValueType::I32:
      v.value = int64_t(r.read<int32_t>(what));
      break;
    case GgufValueType::I64:
      v.value = r.read<int64_t>(what);
      break;
    case GgufValueType::U64: {
      const uint64_t u = r.read<uint64_t>(what);
      if (u <= uint64_t(INT64_MAX))
        v.value = int64_t(u);
      else
        v.value = u;
      break;
    }
    case GgufValueType::F32:
      v.value = double(r.read<float>(what));
      break;
    case GgufValueType::F64:
      v.value = r.read<double>(what);
      break;
    case GgufValueType::Bool: {
      const size_t at = r.pos();
      const uint8_t b = r.read<uint8_t>(what);
      if (b > 1)
        fail("{}: key '{}': bool value {} at byte offset {} is neither 0 nor 1", where, key, b, at);
      v.value = b != 0;
      break;
    }
    case GgufValueType::String:
      v.value = r.read_string(what);
      break;
    case GgufValueType::Array: {
      if (depth > 8) fail("{}: key '{}': arrays nested deeper than 8 levels", where, key);
      const size_t at = r.pos();
      const uint32_t element = r.read<uint32_t>(what);
      if (element > uint32_t(GgufValueType::F64))
        fail("{}: key '{}': unknown array element type {} at byte offset {}", where, key, element,
             at);
      const uint64_t count = r.read<uint64_t>(what);
      if (count > r.remaining() / min_encoded_size(element))
        fail(
            "{}: key '{}': array of {} {} values at byte offset {} cannot fit in the {} bytes left",
            where, key, count, type_name_of(element), at, r.remaining());
      v.element_type = static_cast<GgufValueType>(element);
      std::vector<GgufValue> items;
      items.reserve(count);
      for (uint64_t i = 0; i < count; ++i)
        items.push_back(read_value(r, where, key, element, depth + 1));
      v.value = std::move(items);
      break;
    }
    default:
      fail("{}: key '{}': unknown value type {} at byte offset {}", where, key, type, r.pos() - 4);
  }
  return v;
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType type) {
  return type_name_of(static_cast<uint32_t>(type));
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::U16:
    case GgufValueType::I16:
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::U64:
    case GgufValueType::I64:
      return true;
    default:
      return false;
  }
}

std::vector<int64_t> GgufTensorInfo::shape() const { return {ne.rbegin(), ne.rend()}; }

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufFile GgufFile::open(const std::filesystem::path& path) {
  const std::string where = path.string();
  auto file = MappedFile::open(path);
  Reader r(where, file->data(), file->size());

  GgufFile out;
  out.path_ = path;
  out.mapping_ = file;

  if (file->size() < 4) fail("{}: {} bytes, too short to be a GGUF file", where, file->size());
  const uint32_t magic = r.read<uint32_t>("the magic");
  if (magic != kMagic) {
    char shown[5] = {};
    std::memcpy(shown, &magic, 4);
    for (char& c : shown)
      if (c && (c < 32 || c > 126)) c = '?';
    fail("{}: bad magic \"{}\" (0x{:08x}), expected \"GGUF\"; not a GGUF file", where, shown,
         magic);
  }
  out.version_ = r.read<uint32_t>("the version");
  if (out.version_ == 1)
    fail("{}: GGUF version 1 is not supported (only 2 and 3); convert the file again", where);
  if (out.version_ != 2 && out.version_ != 3)
    fail("{}: unknown GGUF version {} (sparsa reads 2 and 3)", where, out.version_);
  const uint64_t tensor_count = r.read<uint64_t>("the tensor count");
  const uint64_t kv_count = r.read<uint64_t>("the metadata count");
  // Each key-value pair takes at least 13 bytes, each tensor info at least 28.
  if (kv_count > r.remaining() / 13)
    fail("{}: truncated or damaged: metadata count {} cannot fit in a {}-byte file", where,
         kv_count, file->size());
  if (tensor_count > r.remaining() / 28)
    fail("{}: truncated or damaged: tensor count {} cannot fit in a {}-byte file", where,
         tensor_count, file->size());

  for (uint64_t i = 0; i < kv_count; ++i) {
    const size_t at = r.pos();
    std::string key = r.read_string(fmt::format("metadata key #{}", i));
    const uint32_t type = r.read<uint32_t>(fmt::format("the type of '{}'", key));
    if (type > uint32_t(GgufValueType::F64))
      fail("{}: key '{}': unknown value type {} at byte offset {}", where, key, type, r.pos() - 4);
    GgufValue value = read_value(r, where, key, type, 0);
    if (out.metadata_.count(key))
      fail("{}: duplicate metadata key '{}' at byte offset {}", where, key, at);
    out.metadata_.emplace(std::move(key), std::move(value));
  }

  if (const GgufValue* a = out.find("general.alignment")) {
    if (!a->is_integer() || !std::holds_alternative<int64_t>(a->value))
      fail("{}: general.alignment is a {}, expected an integer", where,
           gguf_value_type_name(a->type));
    const int64_t alignment = std::get<int64_t>(a->value);
    if (alignment <= 0 || !std::has_single_bit(uint64_t(alignment)))
      fail("{}: general.alignment {} is not a positive power of two", where, alignment);
    out.alignment_ = uint64_t(alignment);
  } else {
    out.alignment_ = kDefaultAlignment;
  }

  std::set<std::string> names;
  out.tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    const size_t at = r.pos();
    t.name = r.read_string(fmt::format("the name of tensor #{}", i));
    const std::string what = fmt::format("tensor '{}'", t.name);
    if (!names.insert(t.name).second)
      fail("{}: duplicate tensor name '{}' at byte offset {}", where, t.name, at);
    const uint32_t n_dims = r.read<uint32_t>(what);
    if (n_dims == 0 || n_dims > kMaxDims)
      fail("{}: {}: {} dimensions (1 to {} allowed)", where, what, n_dims, kMaxDims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = r.read<uint64_t>(what);
      if (ne > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, ne, &numel) ||
          numel > uint64_t(INT64_MAX))
        fail("{}: {}: dimensions overflow (ne[{}] = {})", where, what, d, ne);
      t.ne.push_back(int64_t(ne));
    }
    const size_t type_at = r.pos();
    const uint32_t type = r.read<uint32_t>(what);
    const GgmlTypeTraits* traits = ggml_type_traits(type);
    if (!traits)
      fail("{}: {}: unknown or unsupported ggml type {} at byte offset {}", where, what, type,
           type_at);
    t.type = traits->type;
    if (t.ne[0] % traits->block_size != 0)
      fail("{}: {}: ne[0] = {} is not a multiple of the {} block size {}", where, what, t.ne[0],
           traits->name, traits->block_size);
    t.offset = r.read<uint64_t>(what);
    if (t.offset % out.alignment_ != 0)
      fail("{}: {}: data offset {} is not a multiple of the alignment {}", where, what, t.offset,
           out.alignment_);
    if (__builtin_mul_overflow(numel / traits->block_size, uint64_t(traits->type_size), &t.nbytes))
      fail("{}: {}: byte size overflows", where, what);
    out.tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the header.
  const uint64_t header_end = r.pos();
  out.data_offset_ = (header_end + out.alignment_ - 1) / out.alignment_ * out.alignment_;
  const uint64_t size = file->size();
  for (GgufTensorInfo& t : out.tensors_) {
    uint64_t end;
    if (out.data_offset_ > size ||
        __builtin_add_overflow(out.data_offset_ + t.offset, t.nbytes, &end) || end > size)
      fail(
          "{}: tensor '{}': data [{}, +{}) at file offset {} runs past the end of the file ({} "
          "bytes); truncated?",
          where, t.name, t.offset, t.nbytes, out.data_offset_ + t.offset, size);
    t.data = file->data() + out.data_offset_ + t.offset;
  }
  return out;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = metadata_.find(std::string(key));
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::at(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail("{}: metadata key '{}' is missing", path_.string(), key);
  return *v;
}

namespace {

int64_t value_to_int(const std::string& where, std::string_view key, const GgufValue& v) {
  if (v.is_integer() && std::holds_alternative<int64_t>(v.value)) return std::get<int64_t>(v.value);
  if (v.is_integer()) fail("{}: metadata key '{}': value does not fit in int64", where, key);
  fail("{}: metadata key '{}' is a {}, expected an integer", where, key,
       gguf_value_type_name(v.type));
}

double value_to_float(const std::string& where, std::string_view key, const GgufValue& v) {
  if (v.is_float()) return std::get<double>(v.value);
  if (v.is_integer())
    return std::holds_alternative<int64_t>(v.value) ? double(std::get<int64_t>(v.value))
                                                    : double(std::get<uint64_t>(v.value));
  fail("{}: metadata key '{}' is a {}, expected a number", where, key,
       gguf_value_type_name(v.type));
}

const std::vector<GgufValue>& value_array(const std::string& where, std::string_view key,
                                          const GgufValue& v, std::string_view expected) {
  if (v.type != GgufValueType::Array)
    fail("{}: metadata key '{}' is a {}, expected an array of {}", where, key,
         gguf_value_type_name(v.type), expected);
  return std::get<std::vector<GgufValue>>(v.value);
}

}  // namespace

int64_t GgufFile::get_int(std::string_view key) const {
  return value_to_int(path_.string(), key, at(key));
}

int64_t GgufFile::get_int(std::string_view key, int64_t fallback) const {
  const GgufValue* v = find(key);
  return v ? value_to_int(path_.string(), key, *v) : fallback;
}

double GgufFile::get_float(std::string_view key) const {
  return value_to_float(path_.string(), key, at(key));
}

double GgufFile::get_float(std::string_view key, double fallback) const {
  const GgufValue* v = find(key);
  return v ? value_to_float(path_.string(), key, *v) : fallback;
}

bool GgufFile::get_bool(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  if (!v) return fallback;
  if (v->type != GgufValueType::Bool)
    fail("{}: metadata key '{}' is a {}, expected a bool", path_.string(), key,
         gguf_value_type_name(v->type));
  return std::get<bool>(v->value);
}

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = at(key);
  if (v.type != GgufValueType::String)
    fail("{}: metadata key '{}' is a {}, expected a string", path_.string(), key,
         gguf_value_type_name(v.type));
  return std::get<std::string>(v.value);
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = at(key);
  const auto& items = value_array(path_.string(), key, v, "strings");
  if (!items.empty() && v.element_type != GgufValueType::String)
    fail("{}: metadata key '{}' is an array of {}, expected strings", path_.string(), key,
         gguf_value_type_name(v.element_type));
  std::vector<std::string> out;
  out.reserve(items.size());
  for (const auto& item : items) out.push_back(std::get<std::string>(item.value));
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const auto& items = value_array(path_.string(), key, at(key), "integers");
  std::vector<int64_t> out;
  out.reserve(items.size());
  for (const auto& item : items) out.push_back(value_to_int(path_.string(), key, item));
  return out;
}

std::vector<double> GgufFile::get_float_array(std::string_view key) const {
  const auto& items = value_array(path_.string(), key, at(key), "numbers");
  std::vector<double> out;
  out.reserve(items.size());
  for (const auto& item : items) out.push_back(value_to_float(path_.string(), key, item));
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const GgufTensorInfo& GgufFile::tensor(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) fail("{}: no tensor named '{}'", path_.string(), name);
  return *t;
}

Tensor GgufFile::to_f32(const GgufTensorInfo& info) const {
  const GgmlTypeTraits* traits = ggml_type_traits(static_cast<uint32_t>(info.type));
  if (!traits->to_f32)
    fail("{}: tensor '{}': ggml type {} cannot be dequantised by sparsa", path_.string(), info.name,
         traits->name);
  Tensor out(info.name, DType::F32, info.shape());
  auto bytes = out.mutable_bytes();
  if (info.numel()) traits->to_f32(info.data, reinterpret_cast<float*>(bytes.data()), info.numel());
  return out;
}

bool is_gguf_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace sparsa
