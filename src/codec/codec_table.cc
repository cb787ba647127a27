// The codec table (one row per codec), codec specs ("int4:g64:asym"), and the codec-independent
// entry points: compress, decompress, statistics.
#include <charconv>

#include <fmt/format.h>

#include "codec/codec_internal.h"

namespace sparsa {
namespace {

using namespace codec;

constexpr CodecTraits kCodecs[] = {
    {CodecKind::Lossless, "lossless", true, encode_lossless, decode_lossless_values,
     decode_lossless_f32, lossless_owns, lossless_role},
    {CodecKind::Zstd, "zstd", true, encode_zstd, decode_zstd_values, decode_zstd_f32, zstd_owns,
     zstd_role},
    {CodecKind::Int8, "int8", false, encode_quant, decode_quant_values, decode_quant_f32,
     quant_owns, quant_role},
    {CodecKind::Int4, "int4", false, encode_quant, decode_quant_values, decode_quant_f32,
     quant_owns, quant_role},
    {CodecKind::Codebook4, "codebook4", false, encode_codebook, decode_codebook_values,
     decode_codebook_f32, codebook_owns, codebook_role},
    {CodecKind::Codebook8, "codebook8", false, encode_codebook, decode_codebook_values,
     decode_codebook_f32, codebook_owns, codebook_role},
};

std::string codec_list() {
  std::string names;
  for (const auto& c : kCodecs) names += (names.empty() ? "" : ", ") + std::string(c.name);
  return names;
}

bool parse_int(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

bool is_quant(CodecKind k) { return k == CodecKind::Int8 || k == CodecKind::Int4; }
bool is_codebook(CodecKind k) { return k == CodecKind::Codebook4 || k == CodecKind::Codebook8; }

}  // namespace

const CodecTraits& codec_traits(CodecKind kind) {
  for (const auto& c : kCodecs)
    if (c.kind == kind) return c;
  fail("unknown codec kind {}", static_cast<int>(kind));
}

CodecKind parse_codec_name(std::string_view name) {
  for (const auto& c : kCodecs)
    if (c.name == name) return c.kind;
  fail("unknown codec '{}' (expected one of: {})", name, codec_list());
}

std::string_view codec_name(CodecKind kind) { return codec_traits(kind).name; }

std::span<const CodecTraits> all_codecs() { return kCodecs; }

CodecParams CodecParams::parse(std::string_view spec) {
  CodecParams p;
  const size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  bool known = false;
  for (const auto& c : kCodecs) known = known || c.name == name;
  if (!known)
    fail("codec '{}': unknown codec '{}' (expected one of: {})", spec, name, codec_list());
  p.kind = parse_codec_name(name);
  std::string_view rest = colon == std::string_view::npos ? "" : spec.substr(colon + 1);
  if (colon != std::string_view::npos && rest.empty())
    fail("codec '{}': empty option after ':'", spec);
  while (!rest.empty()) {
    const size_t next = rest.find(':');
    const std::string_view opt = rest.substr(0, next);
    rest = next == std::string_view::npos ? "" : rest.substr(next + 1);
    if (opt.empty() || (next != std::string_view::npos && rest.empty()))
      fail("codec '{}': empty option", spec);
    int64_t v = 0;
    if (is_quant(p.kind) && opt.size() > 1 && opt[0] == 'g' && parse_int(opt.substr(1), &v)) {
      if (v != 32 && v != 64 && v != 128)
        fail("codec '{}': group size {} is not supported (g32, g64 or g128)", spec, v);
      p.group_size = static_cast<int>(v);
    } else if (is_quant(p.kind) && (opt == "sym" || opt == "asym")) {
      p.symmetric = opt == "sym";
    } else if (is_codebook(p.kind) && (opt == "channel" || opt == "tensor")) {
      p.per_channel = opt == "channel";
    } else if (is_codebook(p.kind) && opt == "rans") {
      p.entropy = true;
    } else if (is_codebook(p.kind) && opt.starts_with("seed=")) {
      uint64_t seed = 0;
      const auto digits = opt.substr(5);
      const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), seed);
      if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size())
        fail("codec '{}': seed '{}' is not a non-negative integer", spec, digits);
      p.seed = seed;
    } else if (is_codebook(p.kind) && opt.starts_with("iters=")) {
      if (!parse_int(opt.substr(6), &v) || v < 0 || v > 100000)
        fail("codec '{}': iterations '{}' is not an integer in 0..100000", spec, opt.substr(6));
      p.iterations = static_cast<int>(v);
    } else if (p.kind == CodecKind::Lossless && opt == "gpu") {
      p.gpu_stream = true;
    } else if (p.kind == CodecKind::Zstd && opt.size() > 1 && opt[0] == 'l' &&
               parse_int(opt.substr(1), &v)) {
      if (v < 1 || v > 22) fail("codec '{}': zstd level {} is not in 1..22", spec, v);
      p.zstd_level = static_cast<int>(v);
    } else {
      const char* valid = is_quant(p.kind)      ? "g32, g64, g128, sym, asym"
                          : is_codebook(p.kind) ? "channel, tensor, rans, seed=N, iters=N"
                          : p.kind == CodecKind::Zstd ? "l1 .. l22"
                          : p.kind == CodecKind::Lossless ? "gpu"
                                                          : "none";
      fail("codec '{}': unknown option '{}' for {} (options: {})", spec, opt, name, valid);
    }
  }
  return p;
}

std::string CodecParams::to_string() const {
  const CodecParams d;
  std::string s(codec_name(kind));
  if (is_quant(kind)) {
    if (group_size != d.group_size) s += fmt::format(":g{}", group_size);
    if (!symmetric) s += ":asym";
  } else if (is_codebook(kind)) {
    if (!per_channel) s += ":tensor";
    if (entropy) s += ":rans";
    if (seed != d.seed) s += fmt::format(":seed={}", seed);
    if (iterations != d.iterations) s += fmt::format(":iters={}", iterations);
  } else if (kind == CodecKind::Lossless) {
    if (gpu_stream) s += ":gpu";
  } else if (kind == CodecKind::Zstd) {
    if (zstd_level != d.zstd_level) s += fmt::format(":l{}", zstd_level);
  }
  return s;
}

CompressedMatrix compress(const PackedMatrix& packed, const CodecParams& params,
                          const EncodeOptions& options) {
  for (const auto& a : packed.arrays)
    if (a.name != "values" && codec_traits(params.kind).owns_array(a.name))
      fail("{}: array '{}' clashes with a {} codec array", describe(packed), a.name,
           codec_name(params.kind));
  return codec_traits(params.kind).encode(packed, params, options);
}

PackedMatrix decompress(const CompressedMatrix& compressed) {
  const CodecTraits& traits = codec_traits(compressed.codec.kind);
  PackedArray values = traits.decode_values(compressed);
  PackedMatrix out;
  out.format = compressed.packed.format;
  out.rows = compressed.packed.rows;
  out.cols = compressed.packed.cols;
  out.value_dtype = compressed.packed.value_dtype;
  out.pattern = compressed.packed.pattern;
  bool placed = false;
  for (const auto& a : compressed.packed.arrays) {
    if (traits.owns_array(a.name)) {
      if (!placed) out.arrays.push_back(std::move(values));
      placed = true;
    } else {
      out.arrays.push_back(a);
    }
  }
  if (!placed) fail("{}: no codec arrays found", describe(compressed));
  return out;
}

std::vector<float> decode_values_f32(const CompressedMatrix& compressed) {
  return codec_traits(compressed.codec.kind).decode_f32(compressed);
}

CompressionStats compression_stats(const CompressedMatrix& compressed) {
  const CodecTraits& traits = codec_traits(compressed.codec.kind);
  CompressionStats st;
  st.weights = compressed.packed.rows * compressed.packed.cols;
  st.values = value_layout(compressed.packed).count();
  for (const auto& a : compressed.packed.arrays) {
    if (!traits.owns_array(a.name))
      st.metadata_bytes += a.bytes.size();
    else if (traits.role(a.name) == ArrayRole::Scales)
      st.scale_bytes += a.bytes.size();
    else
      st.value_bytes += a.bytes.size();
  }
  return st;
}

CompressionStats compression_stats(const PackedMatrix& packed) {
  CompressionStats st;
  st.weights = packed.rows * packed.cols;
  st.values = value_layout(packed).count();
  for (const auto& a : packed.arrays)
    (a.name == "values" ? st.value_bytes : st.metadata_bytes) += a.bytes.size();
  return st;
}

}  // namespace sparsa
