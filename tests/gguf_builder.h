// Building GGUF files byte by byte for tests (the reader's inputs, valid or damaged).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "sparsa/half.h"

namespace sparsa::test::gguf {

template <typename T>
inline void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
inline void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}
inline void put_f16(std::string& out, float v) { put<uint16_t>(out, f16_from_f32(v)); }

struct TestTensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  std::string data;
};

struct GgufBuilder {
  uint32_t version = 3;
  uint64_t alignment = 32;
  std::string kv;  // encoded key-value pairs
  uint64_t kv_count = 0;
  std::vector<TestTensor> tensors;

  void add_raw(const std::string& key, uint32_t type, const std::string& encoded) {
    put_string(kv, key);
    put<uint32_t>(kv, type);
    kv += encoded;
    ++kv_count;
  }
  template <typename T>
  void add(const std::string& key, uint32_t type, T v) {
    std::string e;
    put<T>(e, v);
    add_raw(key, type, e);
  }
  void add_string(const std::string& key, const std::string& v) {
    std::string e;
    put_string(e, v);
    add_raw(key, 8, e);
  }

  // The whole file: header, tensor infos, padding, data.
  std::string build() const {
    std::string out = "GGUF";
    put<uint32_t>(out, version);
    put<uint64_t>(out, tensors.size());
    put<uint64_t>(out, kv_count);
    out += kv;
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors) {
      put_string(out, t.name);
      put<uint32_t>(out, t.ne.size());
      for (uint64_t d : t.ne) put<uint64_t>(out, d);
      put<uint32_t>(out, t.type);
      put<uint64_t>(out, offset);
      offsets.push_back(offset);
      offset += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    out.append((alignment - out.size() % alignment) % alignment, '\0');
    for (size_t i = 0; i < tensors.size(); ++i) {
      out += tensors[i].data;
      out.append((alignment - out.size() % alignment) % alignment, '\0');
    }
    return out;
  }
};

inline std::string f32_bytes(const std::vector<float>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * 4};
}

// An array of strings, encoded as a metadata value.
inline std::string string_array(const std::vector<std::string>& items) {
  std::string e;
  put<uint32_t>(e, 8);
  put<uint64_t>(e, items.size());
  for (const auto& s : items) put_string(e, s);
  return e;
}

}  // namespace sparsa::test::gguf
