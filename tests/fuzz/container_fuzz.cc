// libFuzzer target for the .sparsa container reader (read_container) and what reads the tensors
// it accepts: every input must either be refused with sparsa::Error or give tensors that unpack,
// decompress and multiply (scalar reference kernels) without a sanitizer report. Any other
// exception, crash, leak, hang or out-of-bounds access is a bug.
//
// Each input is read twice: as given, and "re-signed" — the header's blob checksums and its
// header_xxh64 recomputed after the mutation, as a crafted file would have them — so mutations
// get past the checksums into the structural checks and the codecs' decoders.
#include <unistd.h>
#include <xxhash.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sparsa/codec.h"
#include "sparsa/container.h"
#include "sparsa/error.h"
#include "sparsa/kernels.h"

namespace {

using Json = nlohmann::ordered_json;
using namespace sparsa;

// Matrices up to this many weights are decoded and multiplied; the reader itself sees any size.
constexpr int64_t kMaxDecodedWeights = int64_t{1} << 20;

uint64_t load_le64(std::string_view s, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint8_t(s[at + i]);
  return v;
}

void store_le64(std::string& s, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) s[at + i] = char(uint8_t(v >> (8 * i)));
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// For every blob entry of a header, calls f(blob).
template <typename F>
void for_each_blob(Json& header, F f) {
  if (!header.contains("tensors") || !header["tensors"].is_array()) return;
  for (Json& entry : header["tensors"]) {
    if (!entry.is_object() || !entry.contains("blobs") || !entry["blobs"].is_array()) continue;
    for (Json& blob : entry["blobs"])
      if (blob.is_object()) f(blob);
  }
}

// The input with its header re-serialized and every checksum made to match; nullopt when the
// header is not a JSON object. Blobs keep their absolute offsets where the header still fits.
std::optional<std::string> resign(std::string_view file) {
  if (file.size() < 16) return std::nullopt;
  const uint64_t len = load_le64(file, 8);
  if (len > file.size() - 16) return std::nullopt;
  Json header;
  std::string text;
  try {
    // As deep as the reader accepts at most (it refuses deeper headers before serializing them;
    // this harness must not overflow its own stack on them either).
    bool too_deep = false;
    header = Json::parse(file.substr(16, len), [&](int depth, Json::parse_event_t, Json&) {
      if (depth > 16) too_deep = true;
      return !too_deep;
    });
    if (too_deep || !header.is_object()) return std::nullopt;
    // Placeholders first, so the header's length does not depend on the checksums.
    header.erase("header_xxh64");
    for_each_blob(header, [](Json& blob) { blob["xxh64"] = hex64(0); });
    header["header_xxh64"] = hex64(0);
    text = header.dump();
  } catch (const Json::exception&) {
    return std::nullopt;  // not JSON, or strings that are not UTF-8
  }
  std::string out(file.substr(0, 8));
  out.resize(16);
  store_le64(out, 8, text.size());
  out += text;
  std::string_view tail = file.substr(16 + len);
  if (text.size() <= len) {
    out.append(len - text.size(), '\0');
  } else {
    const size_t grow = text.size() - len;
    if (tail.find_first_not_of('\0') >= grow) tail.remove_prefix(std::min(grow, tail.size()));
  }
  out += tail;
  for_each_blob(header, [&](Json& blob) {
    const Json* offset = blob.contains("offset") ? &blob["offset"] : nullptr;
    const Json* size = blob.contains("size") ? &blob["size"] : nullptr;
    if (!offset || !size || !offset->is_number_unsigned() || !size->is_number_unsigned()) return;
    const uint64_t o = offset->get<uint64_t>(), n = size->get<uint64_t>();
    if (o > out.size() || n > out.size() - o) return;
    blob["xxh64"] = hex64(XXH64(out.data() + o, n, 0));
  });
  header.erase("header_xxh64");
  const std::string unsigned_text = header.dump();
  header["header_xxh64"] = hex64(XXH64(unsigned_text.data(), unsigned_text.size(), 0));
  const std::string signed_text = header.dump();
  if (signed_text.size() != text.size()) return std::nullopt;  // cannot happen: fixed-width hex
  out.replace(16, signed_text.size(), signed_text);
  return out;
}

// What a user of the reader does with an accepted tensor: statistics, decode, unpack, multiply.
void use_tensor(const ContainerTensor& t) {
  const PackedMatrix& p = t.packed;
  // The reader checked that rows * cols fits in 64 bits (unsigned); X and Y below need rows and
  // cols each bounded too.
  if (p.rows > kMaxDecodedWeights || p.cols > kMaxDecodedWeights ||
      uint64_t(p.rows) * uint64_t(p.cols) > uint64_t(kMaxDecodedWeights))
    return;
  const int64_t m = 2;
  std::vector<float> x(size_t(m * p.cols), 0.5f), y(size_t(m * p.rows));
  if (t.codec) {
    const CompressedMatrix c{p, *t.codec};
    (void)compression_stats(c);
    const PackedMatrix back = decompress(c);
    (void)unpack(back);
    (void)decode_values_f32(c);
    compressed_gemm(x, m, c, y, Backend::Reference);
  } else {
    (void)compression_stats(p);
    (void)unpack(p);
    gemm(x, m, p, y, Backend::Reference);
  }
}

// SPARSA_FUZZ_VERBOSE=1: print why each input was refused (to read a reproducer).
bool verbose() {
  static const bool on = std::getenv("SPARSA_FUZZ_VERBOSE") != nullptr;
  return on;
}

void read_one(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size())
    __builtin_trap();
  std::fclose(f);
  Container container;
  try {
    container = read_container(path);
    std::remove(path.c_str());  // the reader copied what it kept; libFuzzer may _Exit
  } catch (const Error& e) {
    std::remove(path.c_str());
    if (verbose()) std::fprintf(stderr, "refused: %s\n", e.what());
    return;  // refused: fine
  }
  if (verbose()) std::fprintf(stderr, "accepted: %zu tensors\n", container.tensors.size());
  for (const ContainerTensor& t : container.tensors) {
    try {
      use_tensor(t);
    } catch (const Error& e) {
      // Decoders check their streams as they go (rANS states, zstd frames): refusing is fine.
      if (verbose()) std::fprintf(stderr, "decode refused: %s\n", e.what());
    }
  }
}

const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/sparsa_container_fuzz_" +
           std::to_string(getpid()) + ".sparsa";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  read_one(scratch_path(), bytes);
  if (const auto resigned = resign(bytes)) read_one(scratch_path(), *resigned);
  return 0;
}
