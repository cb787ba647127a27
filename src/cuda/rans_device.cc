// Upload of a `lossless:gpu` matrix for the CUDA decoder (sparsa/cuda_rans.h): the stream's
// header and tables are checked on the host (codec::rans_gpu_tables, the CPU decoder's own
// checks), the decode table and chunk offsets built there, the words and raw bits copied as
// they are.
#include <fmt/format.h>

#include "codec/codec_internal.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_rans.h"
#include "sparsa/error.h"
#include "sparsa/format.h"

namespace sparsa::cuda {

DeviceLossless upload_lossless(const CompressedMatrix& w) {
  const std::string what = codec::describe(w);
  if (w.codec.kind != CodecKind::Lossless)
    fail("{}: the GPU entropy decoder reads the lossless codec only", what);
  const DType dtype = w.packed.value_dtype;
  if (dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: the GPU entropy decoder takes BF16 or F16 values, not {}", what, dtype_name(dtype));
  const int64_t n = codec::value_layout(w.packed).count();
  const PackedArray& exponents = codec::expect_blob(w, "exponents", DType::U8);
  const int alphabet = dtype == DType::BF16 ? 256 : 32;
  const codec::RansGpuTables t =
      codec::rans_gpu_tables(exponents.bytes, n, alphabet, what + ", array 'exponents'");
  const int raw_bits = dtype == DType::BF16 ? 8 : 11;
  const PackedArray& raw =
      codec::expect_array(w, "sign_mantissa", DType::U8, (n * raw_bits + 7) / 8);

  DeviceLossless d;
  d.table = DeviceBuffer(4 * t.table.size());
  d.table.upload(t.table.data(), 4 * t.table.size());
  d.chunk_word = DeviceBuffer(8 * t.chunk_word.size());
  d.chunk_word.upload(t.chunk_word.data(), 8 * t.chunk_word.size());
  const size_t word_bytes = exponents.bytes.size() - t.data_offset;
  d.words = DeviceBuffer(std::max<size_t>(word_bytes, 2));
  if (word_bytes) d.words.upload(exponents.bytes.data() + t.data_offset, word_bytes);
  d.sign_mantissa = DeviceBuffer(std::max<size_t>(raw.bytes.size(), 1));
  if (!raw.bytes.empty()) d.sign_mantissa.upload(raw.bytes.data(), raw.bytes.size());

  LosslessWeights& v = d.weights;
  v.table = static_cast<const uint32_t*>(d.table.data());
  v.chunk_word = static_cast<const uint64_t*>(d.chunk_word.data());
  v.words = static_cast<const uint16_t*>(d.words.data());
  v.sign_mantissa = static_cast<const uint8_t*>(d.sign_mantissa.data());
  v.count = n;
  v.chunks = static_cast<int64_t>(t.chunk_word.size()) - 1;
  v.chunk_symbols = t.chunk_symbols;
  v.prob_bits = t.prob_bits;
  v.type = dtype == DType::BF16 ? ElemType::BF16 : ElemType::F16;
  if (w.packed.format == FormatKind::Dense) {
    v.rows = w.packed.rows;
    v.cols = w.packed.cols;
  }
  return d;
}

}  // namespace sparsa::cuda
