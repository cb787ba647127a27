// A Llama-architecture language model on the CPU: RMSNorm, rotary position embeddings,
// grouped-query attention with a KV cache, SwiGLU MLP, (tied) output head. Every linear layer is
// a PackedMatrix multiplied through sparsa::gemm(), so pruned and packed weights drop in by
// replacing a layer's matrix.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "sparsa/format.h"
#include "sparsa/kernels.h"
#include "sparsa/tensor.h"

namespace sparsa {

class GgufFile;

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t dim = 0;         // hidden size (llama.embedding_length)
  int64_t hidden_dim = 0;  // MLP width (llama.feed_forward_length)
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;  // dim / n_heads
  int64_t rope_dim = 0;  // rotated dimensions per head (llama.rope.dimension_count)
  int64_t context_length = 0;
  double rope_theta = 10000.0;   // llama.rope.freq_base
  double rope_scale = 1.0;       // positions are divided by this (linear rope scaling)
  double norm_eps = 1e-5;        // llama.attention.layer_norm_rms_epsilon
  bool tied_embeddings = false;  // no output.weight: the head is the token embedding
};

// A linear layer y = x W^T with W[out, in] packed in any format.
struct Linear {
  std::string name;  // the GGUF tensor name, e.g. "blk.3.attn_q.weight"
  PackedMatrix w;
  // Optional input-channel permutation (V:N:M channel permutation, `sparsa prune --permute`):
  // the layer computes y = x[:, input_perm] W^T, i.e. its input column j is x's column
  // input_perm[j]. Empty = identity. Stored in GGUF as the I32 tensor "<name>.input_perm"
  // (e.g. "blk.3.attn_q.weight.input_perm"); every forward must gather x through it.
  std::vector<int32_t> input_perm;
};

struct LlamaLayer {
  std::vector<float> attn_norm, ffn_norm;  // [dim]
  Linear wq, wk, wv, wo;        // [n_heads*hd, dim], [n_kv*hd, dim] x2, [dim, n_heads*hd]
  Linear w_gate, w_up, w_down;  // [hidden, dim] x2, [dim, hidden]
};

struct LlamaWeights {
  std::vector<float> token_embedding;  // [vocab, dim], f32
  std::vector<LlamaLayer> layers;
  std::vector<float> output_norm;        // [dim]
  Linear output;                         // [vocab, dim]; the embedding when tied
  std::vector<float> rope_freq_factors;  // [rope_dim / 2] or empty (rope_freqs.weight)
};

struct LoadOptions {
  // Dtype of the packed dense linear weights: F32 (exact dequantised values), F16 or BF16.
  DType weight_dtype = DType::F32;
};

// The KV cache and scratch space of one sequence.
class LlamaState {
 public:
  LlamaState(const LlamaConfig& config, int64_t max_tokens);
  int64_t position() const { return position_; }
  int64_t capacity() const { return capacity_; }
  void reset() { position_ = 0; }

 private:
  friend class LlamaModel;
  int64_t capacity_ = 0;
  int64_t position_ = 0;
  std::vector<std::vector<float>> keys, values;  // per layer [capacity, n_kv*hd]
};

class LlamaModel {
 public:
  // Reads llama.* metadata and the weights (dequantised to f32, then packed dense in
  // options.weight_dtype). Throws sparsa::Error naming the file for a non-llama architecture,
  // missing or mis-shaped tensors, or unsupported rope scaling.
  static LlamaModel from_gguf(const GgufFile& file, const LoadOptions& options = {});
  // A Hugging Face Llama checkpoint: `path` is a directory (config.json and every
  // *.safetensors in it, shards included) or one .safetensors file with config.json beside it.
  // Q and K are permuted as llama.cpp's converter does, so the same forward serves all formats.
  static LlamaModel from_safetensors(const std::filesystem::path& path,
                                     const LoadOptions& options = {});
  // A llama2.c checkpoint (.bin): the legacy float32 layout (7 int32 header fields, a negative
  // vocabulary size meaning an untied classifier) or version 1 (magic "ak42", float32).
  static LlamaModel from_llama2c(const std::filesystem::path& path,
                                 const LoadOptions& options = {});
  LlamaModel(LlamaConfig config, LlamaWeights weights);

  const LlamaConfig& config() const { return config_; }
  const LlamaWeights& weights() const { return weights_; }
  LlamaWeights& weights() { return weights_; }
  // Every linear layer (the pruning targets and the output head), in file order.
  std::vector<Linear*> linears();

  // Runs `tokens` at positions state.position() onward, appending to the cache. Returns the
  // logits of every token ([n, vocab], row-major) or of the last one only ([vocab]).
  // Throws sparsa::Error when a token id is outside the vocabulary or the cache is full.
  std::vector<float> forward(LlamaState& state, std::span<const int32_t> tokens,
                             bool all_logits = false) const;

  Backend backend = Backend::Simd;  // for every gemm; Reference for the scalar twin
  // Called with every linear layer's input X [rows, layer.w.cols] just before its product
  // (calibration statistics for Wanda / SparseGPT); empty = nothing is called.
  std::function<void(const Linear& layer, std::span<const float> x, int64_t rows)> observer;

 private:
  LlamaConfig config_;
  LlamaWeights weights_;
};

// Perplexity over non-overlapping windows of `ctx` tokens (each window starts a fresh cache;
// its first token is context only, the other ctx-1 are scored). A last partial window of at
// least 2 tokens is scored too. max_windows < 0: all windows.
struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;  // nats per scored token
  int64_t scored_tokens = 0;
  int64_t windows = 0;
  double seconds = 0;
};
PerplexityResult perplexity(const LlamaModel& model, std::span<const int32_t> tokens, int64_t ctx,
                            int64_t max_windows = -1,
                            const std::function<void(int64_t done, int64_t total)>& progress = {});

// The same windows and scoring for any forward: `window_logits(window)` runs one window on a
// fresh cache and returns the logits of all its tokens ([len, vocab]). Used by both devices.
PerplexityResult windowed_perplexity(
    std::span<const int32_t> tokens, int64_t ctx, int64_t max_windows, int64_t vocab,
    const std::function<std::vector<float>(std::span<const int32_t> window)>& window_logits,
    const std::function<void(int64_t done, int64_t total)>& progress = {});

// Greedy when temperature <= 0; otherwise softmax(logits / temperature), restricted to the
// smallest set of most likely tokens whose probability reaches top_p, sampled with the seed.
class Sampler {
 public:
  Sampler(double temperature = 0.0, double top_p = 1.0, uint64_t seed = 0);
  int32_t sample(std::span<const float> logits);

 private:
  double temperature_, top_p_;
  std::mt19937_64 rng_;
};

}  // namespace sparsa
