// The Llama forward of sparsa/model.h on an NVIDIA GPU. Built from a loaded LlamaModel: every
// linear layer is uploaded as a DeviceMatrix (sparsa/cuda_gemm.h), so dense layers run through
// cuBLAS and 2:4 / V:2:M layers on the sparse tensor-core kernels. Activations are fed to the
// products in the weights' type (fp16 or bf16) and accumulated in fp32; the residual stream,
// RMSNorm, RoPE, the KV cache and the attention softmax are fp32.
//
// Single-sequence decode (one token per forward call) is captured once in a CUDA graph (at the
// second one-token step with the same cache) and replayed per token: the position and token come from a small device buffer that one copy
// updates before each replay, so the graph and the direct launches run the same kernels on
// the same arguments. q/k/v and gate/up run as one product each when their packed matrices can
// be stacked by rows (concat_rows below).
//
// Built only when CUDA is found (SPARSA_WITH_CUDA).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sparsa/cuda_gemm.h"
#include "sparsa/model.h"

namespace sparsa::cuda {

class CudaLlama;

// How the forward launches its work. The defaults come from the environment:
// SPARSA_CUDA_GRAPHS=0 turns the decode graph off, SPARSA_CUDA_FUSE=0 the fused products.
struct CudaForwardOptions {
  bool graphs = true;          // capture single-token decode in a CUDA graph
  bool fuse_products = true;   // q|k|v and gate|up as one product where the formats allow
  static CudaForwardOptions from_env();
};

// True when the packed matrices can be stacked by rows into one of the same format: dense, nm
// or vnm alike, same columns, pattern and value type, and (vnm) every part but the last a whole
// number of V-row blocks.
bool rows_concatenable(std::span<const PackedMatrix* const> parts);
// The stacked matrix [sum of rows, cols]; throws sparsa::Error naming `name` and the reason
// when rows_concatenable is false.
PackedMatrix concat_rows(std::span<const PackedMatrix* const> parts, const std::string& name);

// The KV cache of one sequence, on the device.
class CudaLlamaState {
 public:
  CudaLlamaState(const CudaLlama& model, int64_t max_tokens);
  ~CudaLlamaState();
  CudaLlamaState(CudaLlamaState&&) noexcept;
  CudaLlamaState& operator=(CudaLlamaState&&) noexcept;
  int64_t position() const { return position_; }
  int64_t capacity() const { return capacity_; }
  void reset() { position_ = 0; }

 private:
  friend class CudaLlama;
  int64_t capacity_ = 0, position_ = 0;
  const void* model_ = nullptr;  // the model it was made for
  DeviceBuffer keys_, values_;   // [layers, capacity, n_kv*hd] f32
};

class CudaLlama {
 public:
  // Uploads the weights of `model` (its linear layers f16 or bf16, all the same type; see
  // LoadOptions::weight_dtype). Layers in a format no GPU kernel serves throw sparsa::Error
  // naming the layer, unless fallback == Fallback::Dense. Requires a CUDA device.
  explicit CudaLlama(const LlamaModel& model, Fallback fallback = Fallback::Error,
                     CudaForwardOptions options = CudaForwardOptions::from_env());
  ~CudaLlama();
  CudaLlama(const CudaLlama&) = delete;
  CudaLlama& operator=(const CudaLlama&) = delete;

  const LlamaConfig& config() const;
  // Weights on the device, in bytes (linear layers, embedding, norms).
  size_t device_bytes() const;
  // Layers uploaded through the dense fallback.
  int64_t densified_layers() const;
  const CudaForwardOptions& options() const;
  // Products per layer (7 separate; 4 with q|k|v and gate|up fused) summed over the layers.
  int64_t layer_products() const;
  // Decode steps run by replaying the graph, and graph captures so far (for tests and notes).
  int64_t graph_replays() const;
  int64_t graph_captures() const;

  // As LlamaModel::forward: runs `tokens` at positions state.position() onward, appending to the
  // cache, and returns the logits of every token ([n, vocab]) or of the last one ([vocab]).
  std::vector<float> forward(CudaLlamaState& state, std::span<const int32_t> tokens,
                             bool all_logits = false);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// sparsa::perplexity (sparsa/model.h) with the forward on the GPU.
PerplexityResult perplexity(CudaLlama& model, std::span<const int32_t> tokens, int64_t ctx,
                            int64_t max_windows = -1,
                            const std::function<void(int64_t done, int64_t total)>& progress = {});

// Number of CUDA devices (0 when none or when the driver is missing).
int device_count();

}  // namespace sparsa::cuda
