// Writes a pruned model as GGUF: the source file's metadata and non-linear tensors unchanged,
// the block linear layers as F32 (their pruned zeros exact), so every GGUF reader loads it.
#include <cstring>
#include <string>
#include <unordered_map>

#include "core/atomic_file.h"
#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/model_prune.h"

namespace sparsa {
namespace {

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

int64_t as_int(const GgufValue& v) {
  if (const auto* i = std::get_if<int64_t>(&v.value)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&v.value)) return int64_t(*u);
  if (const auto* b = std::get_if<bool>(&v.value)) return *b;
  fail("gguf writer: integer value holds another type");
}

// The value's payload (without its type tag, which the caller writes).
void put_value(std::string& out, GgufValueType type, const GgufValue& v) {
  switch (type) {
    case GgufValueType::U8: put<uint8_t>(out, uint8_t(as_int(v))); return;
    case GgufValueType::I8: put<int8_t>(out, int8_t(as_int(v))); return;
    case GgufValueType::U16: put<uint16_t>(out, uint16_t(as_int(v))); return;
    case GgufValueType::I16: put<int16_t>(out, int16_t(as_int(v))); return;
    case GgufValueType::U32: put<uint32_t>(out, uint32_t(as_int(v))); return;
    case GgufValueType::I32: put<int32_t>(out, int32_t(as_int(v))); return;
    case GgufValueType::U64: put<uint64_t>(out, uint64_t(as_int(v))); return;
    case GgufValueType::I64: put<int64_t>(out, as_int(v)); return;
    case GgufValueType::F32: put<float>(out, float(std::get<double>(v.value))); return;
    case GgufValueType::F64: put<double>(out, std::get<double>(v.value)); return;
    case GgufValueType::Bool: put<uint8_t>(out, std::get<bool>(v.value) ? 1 : 0); return;
    case GgufValueType::String: put_string(out, std::get<std::string>(v.value)); return;
    case GgufValueType::Array: {
      const auto& items = std::get<std::vector<GgufValue>>(v.value);
      put<uint32_t>(out, uint32_t(v.element_type));
      put<uint64_t>(out, items.size());
      for (const GgufValue& item : items) put_value(out, v.element_type, item);
      return;
    }
  }
  fail("gguf writer: unknown value type {}", uint32_t(type));
}

}  // namespace

void write_pruned_gguf(const GgufFile& source, const LlamaModel& model,
                       const std::filesystem::path& out,
                       const std::map<std::string, std::string>& extra) {
  std::unordered_map<std::string, const Linear*> linears;
  for (const LlamaLayer& l : model.weights().layers)
    for (const Linear* x : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      linears[x->name] = x;

  // Input permutations (Linear::input_perm) become extra I32 tensors "<name>.input_perm".
  std::vector<const Linear*> permuted;
  for (const LlamaLayer& l : model.weights().layers)
    for (const Linear* x : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      if (!x->input_perm.empty()) permuted.push_back(x);

  std::string header = "GGUF";
  put<uint32_t>(header, 3);
  // A source's own permutations are replaced by the model's (which already hold them).
  const auto is_perm = [](const std::string& n) { return n.ends_with(".input_perm"); };
  size_t copied = 0;
  for (const GgufTensorInfo& t : source.tensors()) copied += is_perm(t.name) ? 0 : 1;
  put<uint64_t>(header, copied + permuted.size());
  size_t kv_count = extra.size();
  for (const auto& [key, value] : source.metadata()) kv_count += extra.count(key) ? 0 : 1;
  put<uint64_t>(header, kv_count);
  for (const auto& [key, value] : source.metadata()) {
    if (extra.count(key)) continue;
    put_string(header, key);
    put<uint32_t>(header, uint32_t(value.type));
    put_value(header, value.type, value);
  }
  for (const auto& [key, value] : extra) {
    put_string(header, key);
    put<uint32_t>(header, uint32_t(GgufValueType::String));
    put_string(header, value);
  }
  const uint64_t align = source.alignment();
  const auto padded = [&](uint64_t n) { return (n + align - 1) / align * align; };
  // Tensor data: linear layers as F32 values, everything else as stored.
  std::vector<std::vector<float>> f32(source.tensors().size());
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const GgufTensorInfo& t = source.tensors()[i];
    if (is_perm(t.name)) {
      sizes.push_back(0);
      continue;
    }
    const auto it = linears.find(t.name);
    GgmlType type = t.type;
    uint64_t nbytes = t.nbytes;
    if (it != linears.end()) {
      f32[i] = unpack(it->second->w, t.name).to_f32();
      if (int64_t(f32[i].size()) != t.numel())
        fail("{}: tensor '{}' has {} values in the model, {} in the source", out.string(), t.name,
             f32[i].size(), t.numel());
      type = GgmlType::F32;
      nbytes = f32[i].size() * sizeof(float);
    }
    put_string(header, t.name);
    put<uint32_t>(header, uint32_t(t.ne.size()));
    for (int64_t d : t.ne) put<uint64_t>(header, uint64_t(d));
    put<uint32_t>(header, uint32_t(type));
    put<uint64_t>(header, offset);
    sizes.push_back(nbytes);
    offset += padded(nbytes);
  }
  for (const Linear* x : permuted) {
    put_string(header, x->name + ".input_perm");
    put<uint32_t>(header, 1);
    put<uint64_t>(header, x->input_perm.size());
    put<uint32_t>(header, uint32_t(GgmlType::I32));
    put<uint64_t>(header, offset);
    offset += padded(x->input_perm.size() * sizeof(int32_t));
  }
  header.append(padded(header.size()) - header.size(), '\0');

  AtomicFile file(out);
  file.write(std::as_bytes(std::span(header)));
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const GgufTensorInfo& t = source.tensors()[i];
    if (is_perm(t.name)) continue;
    if (!f32[i].empty())
      file.write(std::as_bytes(std::span(f32[i])));
    else
      file.write(std::span(t.data, t.nbytes));
    file.write_zeros(padded(sizes[i]) - sizes[i]);
  }
  for (const Linear* x : permuted) {
    const size_t nbytes = x->input_perm.size() * sizeof(int32_t);
    file.write(std::as_bytes(std::span(x->input_perm)));
    file.write_zeros(padded(nbytes) - nbytes);
  }
  file.commit();
}

}  // namespace sparsa
