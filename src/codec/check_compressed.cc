// check_compressed(): the deep structural check of a compressed matrix read from a file.
#include <zstd.h>

#include "codec/codec_internal.h"
#include "format/format_internal.h"

namespace sparsa {

void check_compressed(const CompressedMatrix& c) {
  using namespace codec;
  const CodecParams& p = c.codec;
  const CodecTraits& traits = codec_traits(p.kind);
  // Options a spec cannot express are still checked: the struct may come from code.
  if ((p.kind == CodecKind::Int8 || p.kind == CodecKind::Int4) && p.group_size != 32 &&
      p.group_size != 64 && p.group_size != 128)
    fail("{}: group size {} is not supported (32, 64 or 128)", describe(c), p.group_size);

  // The format's metadata, checked deeply on a stand-in whose values are all zero (so the
  // format's "padding carries 0" rule holds; decoded padding is checked when unpacked).
  const ValueLayout layout = value_layout(c.packed);
  const int64_t n = layout.count();
  PackedMatrix view;
  view.format = c.packed.format;
  view.rows = c.packed.rows;
  view.cols = c.packed.cols;
  view.value_dtype = c.packed.value_dtype;
  view.pattern = c.packed.pattern;
  bool placed = false;
  for (const auto& a : c.packed.arrays) {
    if (!traits.owns_array(a.name)) {
      view.arrays.push_back(a);
    } else if (!placed) {
      if (!is_float_weight_dtype(view.value_dtype))
        fail("{}: value dtype {} is not F32, F16 or BF16", describe(c),
             dtype_name(view.value_dtype));
      view.arrays.push_back(make_array("values", view.value_dtype, n));
      placed = true;
    }
  }
  if (!placed) fail("{}: none of the codec's arrays is present", describe(c));
  format::check_packed(view, true);

  // The codec's arrays.
  switch (p.kind) {
    case CodecKind::Int8:
    case CodecKind::Int4: {
      const int64_t groups = group_ptr(layout, p.group_size).back();
      if (p.kind == CodecKind::Int4)
        expect_array(c, "codes", DType::U8, (n + 1) / 2);
      else
        expect_array(c, "codes", p.symmetric ? DType::I8 : DType::U8, n);
      expect_array(c, "scales", DType::F16, groups);
      if (!p.symmetric) expect_array(c, "zeros", DType::U8, groups);
      break;
    }
    case CodecKind::Codebook4:
    case CodecKind::Codebook8: {
      const int k = p.kind == CodecKind::Codebook4 ? 16 : 256;
      if (p.entropy)
        expect_blob(c, "codes_rans", DType::U8);
      else
        expect_array(c, "codes", DType::U8, k == 16 ? (n + 1) / 2 : n);
      expect_array(c, "codebook", DType::F16, (p.per_channel ? layout.segments() : 1) * k);
      break;
    }
    case CodecKind::Lossless: {
      expect_blob(c, "exponents", DType::U8);
      const int raw_bits = view.value_dtype == DType::BF16 ? 8 : view.value_dtype == DType::F16 ? 11 : 24;
      expect_array(c, "sign_mantissa", DType::U8, (n * raw_bits + 7) / 8);
      break;
    }
    case CodecKind::Zstd: {
      const PackedArray& blob = expect_blob(c, "values_zstd", DType::U8);
      const unsigned long long size = ZSTD_getFrameContentSize(blob.bytes.data(), blob.bytes.size());
      if (size != static_cast<unsigned long long>(n) * dtype_size(view.value_dtype))
        fail("{}: array 'values_zstd' is not a zstd frame of {} values", describe(c), n);
      break;
    }
  }
}

}  // namespace sparsa
