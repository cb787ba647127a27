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

  // The codec's arrays first, against the number of values the format's metadata implies
  // (value_layout checks the row pointers it reads): they bound that number by bytes present in
  // the file, before the stand-in below allocates it. Entropy-coded arrays (rANS, zstd) are
  // bounded by their maximal expansion: a crafted header could otherwise claim 2^40 values in a
  // few bytes (found with the container fuzzer's harness).
  // Rows of dense, nm and vnm hold at least one value each, and no codec stores a value in less
  // than 1/32768 byte (zstd's largest expansion; rANS's is smaller): so the codec's bytes bound
  // the rows before value_layout allocates a pointer per row.
  uint64_t codec_bytes = 0;
  for (const auto& a : c.packed.arrays)
    if (traits.owns_array(a.name)) codec_bytes += a.bytes.size();
  const bool uniform = c.packed.format == FormatKind::Dense || c.packed.format == FormatKind::NM ||
                       c.packed.format == FormatKind::VNM;
  if (uniform && c.packed.cols > 0 && static_cast<uint64_t>(c.packed.rows) / 32768 > codec_bytes)
    fail("{}: {} bytes of codec arrays cannot hold {} rows", describe(c), codec_bytes,
         c.packed.rows);
  const ValueLayout layout = value_layout(c.packed);
  const int64_t n = layout.count();
  if (!is_float_weight_dtype(c.packed.value_dtype))
    fail("{}: value dtype {} is not F32, F16 or BF16", describe(c),
         dtype_name(c.packed.value_dtype));
  switch (p.kind) {
    case CodecKind::Int8:
    case CodecKind::Int4: {
      if (p.kind == CodecKind::Int4)
        expect_array(c, "codes", DType::U8, (n + 1) / 2);
      else
        expect_array(c, "codes", p.symmetric ? DType::I8 : DType::U8, n);
      const int64_t groups = group_ptr(layout, p.group_size).back();
      expect_array(c, "scales", DType::F16, groups);
      if (!p.symmetric) expect_array(c, "zeros", DType::U8, groups);
      break;
    }
    case CodecKind::Codebook4:
    case CodecKind::Codebook8: {
      const int k = p.kind == CodecKind::Codebook4 ? 16 : 256;
      if (p.entropy)
        check_rans_header(expect_blob(c, "codes_rans", DType::U8).bytes, n, k,
                          describe(c) + ", array 'codes_rans'");
      else
        expect_array(c, "codes", DType::U8, k == 16 ? (n + 1) / 2 : n);
      expect_array(c, "codebook", DType::F16, (p.per_channel ? layout.segments() : 1) * k);
      break;
    }
    case CodecKind::Lossless: {
      const bool f16 = c.packed.value_dtype == DType::F16;
      check_rans_header(expect_blob(c, "exponents", DType::U8).bytes, n, f16 ? 32 : 256,
                        describe(c) + ", array 'exponents'");
      const int raw_bits = c.packed.value_dtype == DType::BF16 ? 8 : f16 ? 11 : 24;
      expect_array(c, "sign_mantissa", DType::U8, (n * raw_bits + 7) / 8);
      break;
    }
    case CodecKind::Zstd: {
      const PackedArray& blob = expect_blob(c, "values_zstd", DType::U8);
      const unsigned long long size = ZSTD_getFrameContentSize(blob.bytes.data(), blob.bytes.size());
      const uint64_t want = static_cast<uint64_t>(n) * dtype_size(c.packed.value_dtype);
      if (size != want)
        fail("{}: array 'values_zstd' is not a zstd frame of {} values", describe(c), n);
      // A zstd block of at least 4 bytes decodes to at most 128 KiB.
      if (want / 32768 > blob.bytes.size())
        fail("{}: array 'values_zstd' of {} bytes cannot decode to {} bytes (more than 32768x)",
             describe(c), blob.bytes.size(), want);
      break;
    }
  }

  // The format's metadata, checked deeply on a stand-in whose values are all zero (so the
  // format's "padding carries 0" rule holds; decoded padding is checked when unpacked).
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
      view.arrays.push_back(make_array("values", view.value_dtype, n));
      placed = true;
    }
  }
  if (!placed) fail("{}: none of the codec's arrays is present", describe(c));
  format::check_packed(view, true);
}

}  // namespace sparsa
