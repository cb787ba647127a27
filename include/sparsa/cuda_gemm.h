// The GPU side of sparsa::gemm (sparsa/kernels.h): a packed matrix uploaded to the device once,
// then Y[m, N] = X[m, K] * W[N, K]^T through one call whatever its format:
//
//   dense f16/bf16      -> cuBLAS (cublasGemmEx, fp32 accumulation)
//   nm 2:4 f16/bf16     -> tile_nm24 + nm24_gemm (sparse tensor cores)
//   vnm V:2:M f16/bf16  -> tile_vnm + vnm_gemm
//
// Anything else (csr, bsr, bitmap, other N:M, f32 values) is refused with a sparsa::Error naming
// the matrix and its format, unless the caller asks for Fallback::Dense: then the matrix is
// unpacked to dense f16 (bf16 when its values are bf16) and runs through cuBLAS; it computes the
// same product, but without the sparse speed-up or memory saving.
//
// A compressed matrix (sparsa/codec.h; the device twin of sparsa::compressed_gemm) whose codes a
// decode kernel reads — nm 2:4, vnm V:2:M (V = 64, 128) and bitmap with int8, int4 or codebook4
// codes (tile_compressed, sparsa/cuda_compressed.h) — stays compressed on the device and every
// product with 1..16 rows of X reads the codes directly (compressed_decode), fp16 X. With more
// rows, 2:4 and V:2:M expand their codes on the device into a transient fp16 copy in the
// context's scratch (expand_nm24 / expand_vnm: one pass over the weights, 2 bytes per kept value
// written) and run their prefill kernels on it; bitmap runs the decode kernels once per 16 rows,
// reading the weights again each time (about m / 16 decode calls: fine for short prompts, slow
// for hundreds of tokens). Other codecs are refused naming the matrix and codec, or with Fallback::Dense
// decompressed on the host and uploaded as the packed matrix it was (its own kernel where it has
// one, else dense).
//
// Built only when CUDA is found (SPARSA_WITH_CUDA).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "sparsa/cuda_kernels.h"

#include "sparsa/cuda_compressed.h"

namespace sparsa {
struct PackedMatrix;
struct CompressedMatrix;
}

namespace sparsa::cuda {

// How the product of a DeviceMatrix runs.
enum class DeviceKind { Dense, Nm24, Vnm, Compressed };

enum class Fallback {
  Error,  // unsupported format or dtype: throw
  Dense,  // unsupported format or dtype: unpack and run dense through cuBLAS
};

// True when `packed` runs on its own kernel (dense, nm 2:4 or vnm V:2:M with f16/bf16 values).
bool device_supported(const PackedMatrix& packed);

// A cuBLAS handle, the stream every call of this context runs on, and the zeroed workspace the
// sparse decode path needs (grown on demand). One per stream; not thread-safe.
class GemmContext {
 public:
  explicit GemmContext(cudaStream_t stream = nullptr);
  ~GemmContext();
  GemmContext(const GemmContext&) = delete;
  GemmContext& operator=(const GemmContext&) = delete;
  cudaStream_t stream() const { return stream_; }
  // At least `bytes` of workspace, zero where no call has left it dirty (the launchers restore
  // their counters). Growing synchronises the stream first.
  void* workspace(size_t bytes);
  void* cublas_handle();  // cublasHandle_t, bound to stream()
  // At least `bytes` of scratch, contents undefined (compressed 2:4 products with m > 16 expand
  // their codes into it). Growing synchronises the stream first.
  void* scratch(size_t bytes);

 private:
  cudaStream_t stream_ = nullptr;
  void* cublas_ = nullptr;
  DeviceBuffer workspace_;
  DeviceBuffer scratch_;
};

// A packed matrix on the device, in the layout its kernel reads. Move-only.
class DeviceMatrix {
 public:
  DeviceMatrix() = default;
  // `name` (e.g. the tensor name) is used in error messages. Throws sparsa::Error for an
  // unsupported format/dtype unless fallback == Fallback::Dense.
  static DeviceMatrix upload(const PackedMatrix& packed, const std::string& name,
                             Fallback fallback = Fallback::Error);
  // A compressed matrix (see the top of this file): DeviceKind::Compressed, type F16 (the
  // kernels dequantise into fp16 fragments and take fp16 X, whatever the value dtype was).
  static DeviceMatrix upload(const CompressedMatrix& compressed, const std::string& name,
                             Fallback fallback = Fallback::Error);

  const std::string& name() const { return name_; }
  int64_t rows() const { return rows_; }  // N
  int64_t cols() const { return cols_; }  // K
  DeviceKind kind() const { return kind_; }
  ElemType type() const { return type_; }        // of the values, and of the X a gemm takes
  bool densified() const { return densified_; }  // uploaded through Fallback::Dense
  size_t device_bytes() const;                   // weights held on the device
  size_t workspace_bytes(int64_t m) const;       // what a product with m rows of X needs
  const void* dense_values() const { return dense_.data(); }
  const Nm24Weights& nm24() const { return nm24_.weights; }
  const VnmWeights& vnm() const { return vnm_.weights; }
  const CompressedWeights& compressed() const { return compressed_.weights; }

 private:
  std::string name_;
  int64_t rows_ = 0, cols_ = 0;
  DeviceKind kind_ = DeviceKind::Dense;
  ElemType type_ = ElemType::F16;
  bool densified_ = false;
  DeviceBuffer dense_;  // [rows, cols] row-major
  DeviceNm24 nm24_;
  DeviceVnm vnm_;
  DeviceCompressed compressed_;
};

// Y[m, N] = X[m, K] * W^T on ctx's stream, asynchronous. x: device [m, ldx] row-major of
// w.type(), 16-byte aligned, ldx >= K and a multiple of 8; y: device [m, ldy] of y_type (F32 or
// w.type()), ldy >= N (even for an fp16/bf16 Y). Throws sparsa::Error naming the matrix for bad
// arguments or a failed launch.
void gemm(GemmContext& ctx, const void* x, int64_t m, int64_t ldx, const DeviceMatrix& w, void* y,
          int64_t ldy, ElemType y_type = ElemType::F32);

}  // namespace sparsa::cuda
