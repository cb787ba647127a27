// DeviceMatrix and the device gemm: one call for every packed format a GPU kernel serves.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "sparsa/codec.h"
#include "sparsa/cuda_gemm.h"
#include "sparsa/error.h"
#include "sparsa/format.h"

namespace sparsa::cuda {
namespace {

bool half_type(DType d) { return d == DType::F16 || d == DType::BF16; }

ElemType elem_type(DType d) { return d == DType::BF16 ? ElemType::BF16 : ElemType::F16; }

const char* type_name(ElemType t) {
  return t == ElemType::F32 ? "f32" : t == ElemType::F16 ? "f16" : "bf16";
}

cudaDataType_t cuda_type(ElemType t) {
  return t == ElemType::F32 ? CUDA_R_32F : t == ElemType::F16 ? CUDA_R_16F : CUDA_R_16BF;
}

std::string describe(const PackedMatrix& p) {
  std::string s = std::string(format_name(p.format));
  if (p.format != FormatKind::Dense) s += " " + p.pattern.to_string();
  return s + " " + std::string(dtype_name(p.value_dtype));
}

void check_cublas(cublasStatus_t status, const std::string& what) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: {}: status {}", what, int(status));
}

}  // namespace

bool device_supported(const PackedMatrix& p) {
  if (!half_type(p.value_dtype)) return false;
  switch (p.format) {
    case FormatKind::Dense:
      return true;
    case FormatKind::NM:
      return p.pattern.n == 2 && p.pattern.m == 4;
    case FormatKind::VNM:
      return p.pattern.n == 2 && p.pattern.v > 0 && p.pattern.m >= 4;
    default:
      return false;
  }
}

// ---- GemmContext ----------------------------------------------------------------------------
GemmContext::GemmContext(cudaStream_t stream) : stream_(stream) {
  cublasHandle_t handle = nullptr;
  check_cublas(cublasCreate(&handle), "cublasCreate");
  cublas_ = handle;
  const cublasStatus_t s = cublasSetStream(handle, stream);
  if (s != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(handle);
    check_cublas(s, "cublasSetStream");
  }
}

GemmContext::~GemmContext() {
  if (cublas_) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
}

void* GemmContext::cublas_handle() { return cublas_; }

void* GemmContext::workspace(size_t bytes) {
  if (bytes <= workspace_.bytes() && workspace_.data()) return workspace_.data();
  // Calls already queued may still use the old buffer.
  check_cuda(cudaStreamSynchronize(stream_), "gemm workspace: synchronise before growing");
  const size_t grown = std::max(bytes, std::max<size_t>(2 * workspace_.bytes(), 1 << 16));
  workspace_ = DeviceBuffer(grown);
  check_cuda(cudaMemsetAsync(workspace_.data(), 0, grown, stream_), "gemm workspace: zero");
  return workspace_.data();
}


void* GemmContext::scratch(size_t bytes) {
  if (bytes <= scratch_.bytes() && scratch_.data()) return scratch_.data();
  check_cuda(cudaStreamSynchronize(stream_), "gemm scratch: synchronise before growing");
  scratch_ = DeviceBuffer(std::max<size_t>(bytes, 1 << 16));
  return scratch_.data();
}

// ---- DeviceMatrix ---------------------------------------------------------------------------
DeviceMatrix DeviceMatrix::upload(const PackedMatrix& packed, const std::string& name,
                                  Fallback fallback) {
  DeviceMatrix d;
  d.name_ = name;
  d.rows_ = packed.rows;
  d.cols_ = packed.cols;
  if (packed.rows <= 0 || packed.cols <= 0)
    fail("{}: cannot upload an empty matrix [{}, {}] to the GPU", name, packed.rows, packed.cols);
  if (!device_supported(packed)) {
    if (fallback == Fallback::Error)
      fail(
          "{}: packed matrix [{}, {}] is {}; the GPU runs dense, nm 2:4 and vnm V:2:M with f16 "
          "or bf16 values (load the weights as f16, or allow the dense fallback)",
          name, packed.rows, packed.cols, describe(packed));
    const DType dtype = packed.value_dtype == DType::BF16 ? DType::BF16 : DType::F16;
    const Tensor dense = unpack(packed, name);
    const Tensor half = Tensor::from_f32(name, dtype, {packed.rows, packed.cols}, dense.to_f32());
    d.kind_ = DeviceKind::Dense;
    d.type_ = elem_type(dtype);
    d.densified_ = true;
    d.dense_ = DeviceBuffer(half.nbytes());
    d.dense_.upload(half.bytes().data(), half.nbytes());
    return d;
  }
  d.type_ = elem_type(packed.value_dtype);
  try {
    switch (packed.format) {
      case FormatKind::Dense: {
        const auto& values = packed.array("values").bytes;
        const size_t need = size_t(packed.rows * packed.cols) * 2;
        if (values.size() < need)
          fail("dense values hold {} bytes, expected {}", values.size(), need);
        d.kind_ = DeviceKind::Dense;
        d.dense_ = DeviceBuffer(need);
        d.dense_.upload(values.data(), need);
        break;
      }
      case FormatKind::NM:
        d.kind_ = DeviceKind::Nm24;
        d.nm24_ = cuda::upload(tile_nm24(packed));
        break;
      default:
        d.kind_ = DeviceKind::Vnm;
        d.vnm_ = cuda::upload(tile_vnm(packed));
        break;
    }
  } catch (const Error& e) {
    fail("{}: uploading {} [{}, {}] to the GPU: {}", name, describe(packed), packed.rows,
         packed.cols, e.what());
  }
  return d;
}

DeviceMatrix DeviceMatrix::upload(const CompressedMatrix& compressed, const std::string& name,
                                  Fallback fallback) {
  const PackedMatrix& packed = compressed.packed;
  if (packed.rows <= 0 || packed.cols <= 0)
    fail("{}: cannot upload an empty matrix [{}, {}] to the GPU", name, packed.rows, packed.cols);
  CompressedTiled tiled;
  try {
    tiled = tile_compressed(compressed);
  } catch (const Error& e) {
    if (fallback == Fallback::Error)
      fail("{}: no GPU kernel reads {} with codec {} [{}, {}] ({}); allow the fallback to run it "
           "decompressed",
           name, describe(packed), compressed.codec.to_string(), packed.rows, packed.cols, e.what());
    return upload(decompress(compressed), name, Fallback::Dense);
  }
  DeviceMatrix d;
  d.name_ = name;
  d.rows_ = packed.rows;
  d.cols_ = packed.cols;
  d.kind_ = DeviceKind::Compressed;
  d.type_ = ElemType::F16;
  d.compressed_ = cuda::upload(tiled);
  return d;
}

size_t DeviceMatrix::device_bytes() const {
  return dense_.bytes() + nm24_.values.bytes() + nm24_.values_k.bytes() + nm24_.meta.bytes() +
         vnm_.values.bytes() + vnm_.meta.bytes() + vnm_.columns.bytes() +
         vnm_.prefill_values.bytes() + vnm_.prefill_meta.bytes() +  // the opt-in 2:4 prefill copy
         compressed_.tiles.bytes() + compressed_.books.bytes() + compressed_.columns.bytes() +
         compressed_.offsets.bytes();
}

size_t DeviceMatrix::workspace_bytes(int64_t m) const {
  switch (kind_) {
    case DeviceKind::Nm24:
      return nm24_workspace_bytes(nm24_.weights, m);
    case DeviceKind::Vnm:
      return vnm_workspace_bytes(vnm_.weights, m);
    case DeviceKind::Compressed:  // 16 rows of X at a time, or compressed_prefill
      if (m > kDecodeMaxM && compressed_expanded_bytes(compressed_.weights) > 0)
        return compressed_prefill_workspace_bytes(compressed_.weights, m);
      return compressed_workspace_bytes(compressed_.weights, std::min<int64_t>(m, kDecodeMaxM));
    default:
      return 0;
  }
}

// ---- gemm -----------------------------------------------------------------------------------
void gemm(GemmContext& ctx, const void* x, int64_t m, int64_t ldx, const DeviceMatrix& w, void* y,
          int64_t ldy, ElemType y_type) {
  const int64_t n = w.rows(), k = w.cols();
  if (n == 0) fail("gemm: the device matrix is empty (never uploaded)");
  if (m <= 0) fail("{}: gemm with {} rows of X", w.name(), m);
  if (!x || !y) fail("{}: gemm with a null X or Y pointer", w.name());
  if (ldx < k || ldx % 8 != 0)
    fail("{}: gemm: ldx {} must be at least K = {} and a multiple of 8", w.name(), ldx, k);
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0)
    fail("{}: gemm: X must be 16-byte aligned", w.name());
  if (y_type != ElemType::F32 && y_type != w.type())
    fail("{}: gemm: Y of type {} for {} weights (f32 or the weights' type)", w.name(),
         type_name(y_type), type_name(w.type()));
  if (ldy < n || (y_type != ElemType::F32 && ldy % 2 != 0))
    fail("{}: gemm: ldy {} must be at least N = {} (and even for a {} Y)", w.name(), ldy, n,
         type_name(y_type));

  if (w.kind() == DeviceKind::Dense) {
    const float alpha = 1.0f, beta = 0.0f;
    auto* handle = static_cast<cublasHandle_t>(ctx.cublas_handle());
    // Column-major view: Y^T[n, m] = (W^T)^T[n, k] * X^T[k, m], W^T being W's row-major bytes.
    check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &alpha,
                              w.dense_values(), cuda_type(w.type()), int(k), x, cuda_type(w.type()),
                              int(ldx), &beta, y, cuda_type(y_type), int(ldy), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
                 w.name() + ": cublasGemmEx");
    return;
  }
  GemmProblem p;
  p.x = x;
  p.m = m;
  p.ldx = ldx;
  p.y = y;
  p.ldy = ldy;
  p.y_type = y_type;
  p.workspace_bytes = w.workspace_bytes(m);
  p.workspace = p.workspace_bytes ? ctx.workspace(p.workspace_bytes) : nullptr;
  if (w.kind() == DeviceKind::Compressed && m > kDecodeMaxM &&
      compressed_expanded_bytes(w.compressed()) > 0) {
    // 2:4 / V:2:M with more tokens than the decode kernels take: a prefill kernel on the codes
    // (v12, or the register-A codes kernel below v12's token counts), or the codes expanded into a
    // transient fp16 copy in the context's scratch and the prefill kernels on it.
    const CompressedWeights& cw = w.compressed();
    const size_t bytes = compressed_prefill_scratch_bytes(cw, m);
    if (const cudaError_t e =
            compressed_prefill(cw, p, bytes ? ctx.scratch(bytes) : nullptr, bytes, ctx.stream());
        e != cudaSuccess)
      fail("{}: compressed {} prefill [{}, {}] with m = {}: {}", w.name(),
           cw.vnm ? "vnm" : "nm 2:4", n, k, m, cudaGetErrorString(e));
    return;
  }
  if (w.kind() == DeviceKind::Compressed) {
    // The decode kernels take 1..16 rows of X: blocks of 16 rows, each reading the weights.
    const size_t y_elem = y_type == ElemType::F32 ? 4 : 2;
    for (int64_t r = 0; r < m; r += kDecodeMaxM) {
      p.m = std::min<int64_t>(kDecodeMaxM, m - r);
      p.x = static_cast<const char*>(x) + r * ldx * 2;
      p.y = static_cast<char*>(y) + r * ldy * static_cast<int64_t>(y_elem);
      const cudaError_t status = compressed_decode(w.compressed(), p, ctx.stream());
      if (status != cudaSuccess)
        fail("{}: compressed gemm [{}, {}] with m = {} (rows {}..{}): {}", w.name(), n, k, m, r,
             r + p.m - 1, cudaGetErrorString(status));
    }
    return;
  }
  const cudaError_t status = w.kind() == DeviceKind::Nm24 ? nm24_gemm(w.nm24(), p, ctx.stream())
                                                          : vnm_gemm(w.vnm(), p, ctx.stream());
  if (status != cudaSuccess)
    fail("{}: {} gemm [{}, {}] with m = {}: {}", w.name(),
         w.kind() == DeviceKind::Nm24 ? "nm 2:4" : "vnm", n, k, m, cudaGetErrorString(status));
}

}  // namespace sparsa::cuda
