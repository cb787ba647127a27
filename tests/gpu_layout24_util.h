// 2:4 weights on the device in both layouts (fragment-order `values` and row-major `values_k`),
// for tests that compare the kernels' two A loads or need both (the shared-memory-A prefill
// kernel reads only values_k; cuda::upload writes only values_k by default since session 7).
#pragma once

#ifdef SPARSA_WITH_CUDA

#include "gpu_sparse_util.h"

namespace sparsa::test {

struct DeviceNm24Both {
  cuda::DeviceBuffer values, meta, values_k;
  cuda::Nm24Weights weights;  // both pointers set
  // The same weights with only one layout (the kernels must read that one).
  cuda::Nm24Weights fragments_only() const {
    cuda::Nm24Weights w = weights;
    w.values_k = nullptr;
    return w;
  }
  cuda::Nm24Weights values_k_only() const {
    cuda::Nm24Weights w = weights;
    w.values = nullptr;
    return w;
  }
};

// Uploads tile_nm24's arrays and writes values_k from them on the device (nm24_tile_k).
inline DeviceNm24Both upload_both(const cuda::Nm24Tiled& tiled) {
  DeviceNm24Both d;
  d.values = cuda::DeviceBuffer(tiled.values.size() * 2);
  d.values.upload(tiled.values.data(), tiled.values.size() * 2);
  d.meta = cuda::DeviceBuffer(tiled.meta.size() * 4);
  d.meta.upload(tiled.meta.data(), tiled.meta.size() * 4);
  d.weights.values = d.values.data();
  d.weights.meta = static_cast<const uint32_t*>(d.meta.data());
  d.weights.rows = tiled.rows;
  d.weights.cols = tiled.cols;
  d.weights.rows_padded = tiled.rows_padded;
  d.weights.cols_padded = tiled.cols_padded;
  d.weights.type = tiled.type;
  d.values_k = cuda::DeviceBuffer(cuda::nm24_values_k_bytes(d.weights));
  cuda::check_cuda(cuda::nm24_tile_k(d.weights, d.values_k.data(), nullptr), "nm24_tile_k");
  cuda::check_cuda(cudaDeviceSynchronize(), "nm24_tile_k");
  d.weights.values_k = d.values_k.data();
  return d;
}

}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
