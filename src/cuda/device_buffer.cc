// Owning device buffers and uploads of tiled sparse weights (checked wrappers over the raw
// launchers' world of pointers).
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <utility>

#include "sparsa/cuda_kernels.h"
#include "sparsa/error.h"

namespace sparsa::cuda {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail("CUDA: {}: {}", what, cudaGetErrorString(status));
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t status = cudaMalloc(&data_, bytes);
  if (status != cudaSuccess) {
    data_ = nullptr;
    fail("CUDA: cudaMalloc of {} bytes: {}", bytes, cudaGetErrorString(status));
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (data_) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(const void* host, size_t bytes) {
  if (bytes > bytes_) fail("CUDA: upload of {} bytes into a buffer of {}", bytes, bytes_);
  check_cuda(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice), "upload");
}

void DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes > bytes_) fail("CUDA: download of {} bytes from a buffer of {}", bytes, bytes_);
  check_cuda(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost), "download");
}

namespace {
template <typename T>
DeviceBuffer to_device(const std::vector<T>& host) {
  DeviceBuffer buffer(host.size() * sizeof(T));
  buffer.upload(host.data(), host.size() * sizeof(T));
  return buffer;
}
}  // namespace

DeviceNm24 upload(const Nm24Tiled& tiled) { return upload(tiled, nm24_layout()); }

DeviceNm24 upload(const Nm24Tiled& tiled, Nm24Layout layout) {
  DeviceNm24 d;
  DeviceBuffer fragments = to_device(tiled.values);
  d.meta = to_device(tiled.meta);
  d.weights.values = fragments.data();
  d.weights.meta = static_cast<const uint32_t*>(d.meta.data());
  d.weights.rows = tiled.rows;
  d.weights.cols = tiled.cols;
  d.weights.rows_padded = tiled.rows_padded;
  d.weights.cols_padded = tiled.cols_padded;
  d.weights.type = tiled.type;
  // ValuesK (session 7): one layout on the device, the row-major values_k that every 2:4 kernel
  // can read (1.125 bytes per weight with the metadata); the fragment copy is only the source of
  // the re-tiling and is freed here. Fragments (default): `values`, plus values_k on sm_90a with
  // the opt-in SPARSA_PREFILL24=ss* for the shared-memory-A prefill kernel (2.125 bytes per
  // weight).
  const bool keep_fragments = layout == Nm24Layout::Fragments;
  if (!keep_fragments || (nm24_prefill_ss_tokens() != 0 && nm24_wgmma_ss_supported())) {
    d.values_k = DeviceBuffer(nm24_values_k_bytes(d.weights));
    check_cuda(nm24_tile_k(d.weights, d.values_k.data(), nullptr), "nm24_tile_k");
    check_cuda(cudaDeviceSynchronize(), "nm24_tile_k");
    d.weights.values_k = d.values_k.data();
  }
  if (keep_fragments) {
    d.values = std::move(fragments);
  } else {
    d.weights.values = nullptr;
  }
  return d;
}

DeviceVnm upload(const VnmTiled& tiled) {
  DeviceVnm d;
  d.values = to_device(tiled.values);
  d.meta = to_device(tiled.meta);
  d.columns = to_device(tiled.columns);
  d.weights.values = d.values.data();
  d.weights.meta = static_cast<const uint32_t*>(d.meta.data());
  d.weights.columns = static_cast<const uint32_t*>(d.columns.data());
  d.weights.rows = tiled.rows;
  d.weights.cols = tiled.cols;
  d.weights.rows_padded = tiled.rows_padded;
  d.weights.blocks_padded = tiled.blocks_padded;
  d.weights.row_groups_padded = tiled.row_groups_padded;
  d.weights.v = tiled.v;
  d.weights.m = tiled.m;
  d.weights.type = tiled.type;
  if (vnm_prefill_copy_wanted(d.weights)) {
    d.prefill_values = DeviceBuffer(vnm_expanded_values_bytes(d.weights));
    d.prefill_meta = DeviceBuffer(vnm_expanded_meta_bytes(d.weights));
    check_cuda(vnm_expand_to_nm24(d.weights, d.prefill_values.data(),
                                  static_cast<uint32_t*>(d.prefill_meta.data()), nullptr),
               "V:2:M prefill copy (vnm_expand_to_nm24)");
    check_cuda(cudaStreamSynchronize(nullptr), "V:2:M prefill copy");
    d.weights.prefill_values = d.prefill_values.data();
    d.weights.prefill_meta = static_cast<const uint32_t*>(d.prefill_meta.data());
  }
  return d;
}

bool vnm_prefill_copy_wanted(const VnmWeights& w) {
  static const bool wanted = [] {
    const char* v = std::getenv("SPARSA_VNM_PREFILL_COPY");
    return v && v[0] == '1';
  }();
  return wanted && vnm_expandable(w) && nm24_wgmma_supported();
}

}  // namespace sparsa::cuda
