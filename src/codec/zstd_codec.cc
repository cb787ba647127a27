// zstd: the general lossless fallback, one zstd frame of the values array's bytes (libzstd).
#include <zstd.h>

#include "codec/codec_internal.h"

namespace sparsa::codec {

CompressedMatrix encode_zstd(const PackedMatrix& packed, const CodecParams& params,
                             const EncodeOptions&) {
  if (params.zstd_level < 1 || params.zstd_level > ZSTD_maxCLevel())
    fail("{}: zstd level {} is not in 1..{}", describe(packed), params.zstd_level,
         ZSTD_maxCLevel());
  const ValueLayout layout = value_layout(packed);
  const PackedArray& values = packed.array("values");
  if (values.dtype != packed.value_dtype ||
      values.bytes.size() != static_cast<size_t>(layout.count()) * dtype_size(values.dtype))
    fail("{}: values must be {} x {}, found {} bytes of {}", describe(packed), layout.count(),
         dtype_name(packed.value_dtype), values.bytes.size(), dtype_name(values.dtype));
  PackedArray out = make_array("values_zstd", DType::U8, ZSTD_compressBound(values.bytes.size()));
  const size_t size = ZSTD_compress(out.bytes.data(), out.bytes.size(), values.bytes.data(),
                                    values.bytes.size(), params.zstd_level);
  if (ZSTD_isError(size)) fail("{}: zstd failed: {}", describe(packed), ZSTD_getErrorName(size));
  out.bytes.resize(size);
  std::vector<PackedArray> arrays;
  arrays.push_back(std::move(out));
  return replace_values(packed, params, std::move(arrays));
}

PackedArray decode_zstd_values(const CompressedMatrix& compressed) {
  const ValueLayout layout = value_layout(compressed.packed);
  const DType dtype = compressed.packed.value_dtype;
  const size_t expected = static_cast<size_t>(layout.count()) * dtype_size(dtype);
  const PackedArray& blob = expect_blob(compressed, "values_zstd", DType::U8);
  const unsigned long long content = ZSTD_getFrameContentSize(blob.bytes.data(), blob.bytes.size());
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN)
    fail("{}: array 'values_zstd' is not a zstd frame with a known size", describe(compressed));
  if (content != expected)
    fail("{}: zstd frame holds {} bytes, expected {} ({} values of {})", describe(compressed),
         content, expected, layout.count(), dtype_name(dtype));
  PackedArray values = make_array("values", dtype, layout.count());
  const size_t size =
      ZSTD_decompress(values.bytes.data(), values.bytes.size(), blob.bytes.data(), blob.bytes.size());
  if (ZSTD_isError(size))
    fail("{}: zstd frame does not decode: {}", describe(compressed), ZSTD_getErrorName(size));
  if (size != expected)
    fail("{}: zstd frame decoded to {} bytes, expected {}", describe(compressed), size, expected);
  return values;
}

std::vector<float> decode_zstd_f32(const CompressedMatrix& compressed) {
  return array_f32(decode_zstd_values(compressed));
}

bool zstd_owns(std::string_view name) { return name == "values_zstd"; }

ArrayRole zstd_role(std::string_view) { return ArrayRole::Values; }

}  // namespace sparsa::codec
