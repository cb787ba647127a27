// GPU decode of the lossless codec (`lossless:gpu`, sparsa/codec.h): the exponent field of every
// bf16/f16 value is a version-2 rANS stream (32 interleaved states per 4096-symbol chunk, 16-bit
// renormalisation; layout in docs/compression.md), the sign and mantissa bits are raw. One warp
// decodes one chunk, a lane per state; after each round of 32 symbols the lanes that need a new
// word find it with a prefix popcount of the warp's ballot. The static model's decode table
// (4096 u32) sits in shared memory.
//
// lossless_decode writes the values' bits; lossless_gemv multiplies a dense matrix by a vector
// while decoding, with no decoded copy of W in memory. Launchers return the first CUDA error and
// never synchronise (as sparsa/cuda_kernels.h). A damaged stream (a chunk whose states do not end
// at 2^16 or whose words are not all used, or that would read past its end) is reported in
// `*error` (device int, may be null; the caller zeroes it): 1 + the index of a bad chunk.
// Built only with CUDA (SPARSA_WITH_CUDA). C++17, for nvcc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "sparsa/cuda_kernels.h"

namespace sparsa {
struct CompressedMatrix;
}

namespace sparsa::cuda {

struct LosslessWeights {                   // device pointers into an uploaded `lossless:gpu` matrix
  const uint32_t* table = nullptr;         // [1 << prob_bits]
  const uint64_t* chunk_word = nullptr;    // [chunks + 1] u16-word offsets of the chunks in words
  const uint16_t* words = nullptr;         // chunk data (32 u32 states, then u16 words)
  const uint8_t* sign_mantissa = nullptr;  // raw bits: 8 per bf16 value, 11 per f16 (LSB-first)
  int64_t count = 0, chunks = 0;
  int chunk_symbols = 0, prob_bits = 0;
  ElemType type = ElemType::BF16;  // BF16 or F16
  int64_t rows = 0, cols = 0;      // the dense shape (dense format), else 0
};

struct DeviceLossless {
  DeviceBuffer table, chunk_word, words, sign_mantissa;
  LosslessWeights weights;
  // Bytes a decode reads: the stream's words and raw bits (tables excluded: 16 KB + 8/chunk).
  size_t stream_bytes() const { return words.bytes() + sign_mantissa.bytes(); }
};

// From a `lossless:gpu` matrix of bf16 or f16 values (any format: its values array in order).
// Throws sparsa::Error naming the matrix for another codec, a version-1 stream, f32 values, or
// a stream whose header and tables do not check.
DeviceLossless upload_lossless(const CompressedMatrix& w);

// out[i] = the bits of value i, i < w.count.
cudaError_t lossless_decode(const LosslessWeights& w, uint16_t* out, int* error,
                            cudaStream_t stream);

// y[rows] = W[rows, cols] x[cols] (x in W's type, fp32 accumulation, y fp32) for a dense W,
// decoding on the fly. Needs cols % 32 == 0 (a round of 32 values stays in one row); when rows
// span chunks y is first zeroed and summed with atomics, else written directly.
// cudaErrorInvalidValue when W is not dense or cols % 32 != 0.
cudaError_t lossless_gemv(const LosslessWeights& w, const uint16_t* x, float* y, int* error,
                          cudaStream_t stream);

}  // namespace sparsa::cuda
