// The Llama forward on CUDA (sparsa/cuda_model.h): the steps of LlamaModel::forward
// (src/model/llama.cc) with every product through the device gemm and the rest in
// src/cuda/model_kernels.cu. One stream; the only synchronisation is the copy of the logits.
#include "sparsa/cuda_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "cuda/model_kernels.h"
#include "sparsa/error.h"

namespace sparsa::cuda {
namespace {

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

size_t elem_bytes(ElemType t) { return t == ElemType::F32 ? 4 : 2; }

DeviceBuffer floats_to_device(const std::vector<float>& host) {
  DeviceBuffer b(host.size() * sizeof(float));
  b.upload(host.data(), host.size() * sizeof(float));
  return b;
}

const float* f32(const DeviceBuffer& b) { return static_cast<const float*>(b.data()); }
float* f32m(const DeviceBuffer& b) { return static_cast<float*>(b.data()); }

struct DeviceLayer {
  DeviceBuffer attn_norm, ffn_norm;
  DeviceMatrix wq, wk, wv, wo, gate, up, down;
};

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return count;
}

struct CudaLlama::Impl {
  LlamaConfig c;
  ElemType type = ElemType::F16;
  cudaStream_t stream = nullptr;
  std::unique_ptr<GemmContext> ctx;
  DeviceBuffer embedding, output_norm, inv_freq;
  std::vector<DeviceLayer> layers;
  DeviceMatrix output;
  int64_t densified = 0;
  // Input permutations (Linear::input_perm) by layer name: the product gathers its input first.
  std::map<std::string, DeviceBuffer> input_perms;
  int64_t ld_widest = 0;  // the widest product input's leading dimension

  // Scratch for up to `rows` tokens. f32: x, delta [rows, dim], q [rows, q_dim], gate/up
  // [rows, hidden], logits [rows, ld_vocab]; in `type`: xb [rows, ld_dim], att [rows, ld_q],
  // h [rows, ld_hidden] (leading dimensions multiples of 8 for the sparse kernels).
  int64_t rows = 0, ld_dim = 0, ld_q = 0, ld_hidden = 0, ld_vocab = 0;
  DeviceBuffer tokens, x, delta, xb, q, att, gate, up, h, logits, gathered;

  ~Impl() {
    ctx.reset();
    if (stream) cudaStreamDestroy(stream);
  }

  void reserve(int64_t n) {
    if (n <= rows) return;
    check_cuda(cudaStreamSynchronize(stream), "forward: synchronise before growing scratch");
    const size_t e = elem_bytes(type);
    const int64_t q_dim = c.n_heads * c.head_dim;
    tokens = DeviceBuffer(n * sizeof(int32_t));
    x = DeviceBuffer(n * c.dim * 4);
    delta = DeviceBuffer(n * c.dim * 4);
    q = DeviceBuffer(n * q_dim * 4);
    gate = DeviceBuffer(n * c.hidden_dim * 4);
    up = DeviceBuffer(n * c.hidden_dim * 4);
    logits = DeviceBuffer(n * ld_vocab * 4);
    xb = DeviceBuffer(n * ld_dim * e);
    att = DeviceBuffer(n * ld_q * e);
    h = DeviceBuffer(n * ld_hidden * e);
    gathered = DeviceBuffer(input_perms.empty() ? 0 : n * ld_widest * e);
    // Padding columns past K are never read for results; keep them finite all the same.
    for (DeviceBuffer* b : {&xb, &att, &h, &gathered})
      check_cuda(cudaMemsetAsync(b->data(), 0, b->bytes(), stream), "forward: zero scratch");
    rows = n;
  }

  void gemm(const void* x_in, int64_t m, int64_t ldx, const DeviceMatrix& w, float* y,
            int64_t ldy) {
    if (!input_perms.empty()) {
      const auto perm = input_perms.find(w.name());
      if (perm != input_perms.end()) {
        check_cuda(model_kernels::gather_columns(x_in, ldx, static_cast<const int32_t*>(perm->second.data()),
                                                 w.cols(), gathered.data(), ldx, m, stream),
                   "forward: gather the permuted input");
        x_in = gathered.data();
      }
    }
    cuda::gemm(*ctx, x_in, m, ldx, w, y, ldy, ElemType::F32);
  }
};

CudaLlama::CudaLlama(const LlamaModel& model, Fallback fallback) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.c = model.config();
  const LlamaConfig& c = d.c;
  const LlamaWeights& w = model.weights();
  if (device_count() == 0) fail("CUDA: no GPU found (cudaGetDeviceCount reports none)");
  const int64_t q_dim = c.n_heads * c.head_dim;
  check_cuda(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  d.ctx = std::make_unique<GemmContext>(d.stream);

  const auto upload = [&](const Linear& l) {
    DeviceMatrix m = DeviceMatrix::upload(l.w, l.name, fallback);
    if (m.densified()) ++d.densified;
    if (!l.input_perm.empty()) {
      if (int64_t(l.input_perm.size()) != l.w.cols)
        fail("CUDA forward: layer '{}' has an input permutation of {} entries for {} columns",
             l.name, l.input_perm.size(), l.w.cols);
      DeviceBuffer perm(l.input_perm.size() * sizeof(int32_t));
      perm.upload(l.input_perm.data(), perm.bytes());
      d.input_perms.emplace(m.name(), std::move(perm));
    }
    return m;
  };
  d.output = upload(w.output);
  d.type = d.output.type();
  for (const LlamaLayer& l : w.layers) {
    DeviceLayer dl;
    dl.attn_norm = floats_to_device(l.attn_norm);
    dl.ffn_norm = floats_to_device(l.ffn_norm);
    dl.wq = upload(l.wq);
    dl.wk = upload(l.wk);
    dl.wv = upload(l.wv);
    dl.wo = upload(l.wo);
    dl.gate = upload(l.w_gate);
    dl.up = upload(l.w_up);
    dl.down = upload(l.w_down);
    for (const DeviceMatrix* m : {&dl.wq, &dl.wk, &dl.wv, &dl.wo, &dl.gate, &dl.up, &dl.down})
      if (m->type() != d.type)
        fail(
            "CUDA forward: layer '{}' holds {} values but '{}' holds {}; every linear layer "
            "must have the same type",
            m->name(), m->type() == ElemType::BF16 ? "bf16" : "f16", d.output.name(),
            d.type == ElemType::BF16 ? "bf16" : "f16");
    d.layers.push_back(std::move(dl));
  }
  d.embedding = floats_to_device(w.token_embedding);
  d.output_norm = floats_to_device(w.output_norm);
  // RoPE inverse frequencies in double, as the CPU forward computes them.
  const int64_t pairs = c.rope_dim / 2;
  std::vector<double> inv_freq(std::max<int64_t>(pairs, 1), 0.0);
  for (int64_t j = 0; j < pairs; ++j) {
    inv_freq[j] = std::pow(c.rope_theta, -2.0 * double(j) / double(c.rope_dim));
    if (!w.rope_freq_factors.empty()) inv_freq[j] /= w.rope_freq_factors[j];
  }
  d.inv_freq = DeviceBuffer(inv_freq.size() * sizeof(double));
  d.inv_freq.upload(inv_freq.data(), inv_freq.size() * sizeof(double));

  d.ld_dim = round_up(c.dim, 8);
  d.ld_q = round_up(q_dim, 8);
  d.ld_hidden = round_up(c.hidden_dim, 8);
  d.ld_widest = std::max({d.ld_dim, d.ld_q, d.ld_hidden});
  d.ld_vocab = c.vocab_size;
}

CudaLlama::~CudaLlama() = default;

const LlamaConfig& CudaLlama::config() const { return impl_->c; }

int64_t CudaLlama::densified_layers() const { return impl_->densified; }

size_t CudaLlama::device_bytes() const {
  const Impl& d = *impl_;
  size_t bytes = d.embedding.bytes() + d.output_norm.bytes() + d.output.device_bytes();
  for (const DeviceLayer& l : d.layers) {
    bytes += l.attn_norm.bytes() + l.ffn_norm.bytes();
    for (const DeviceMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down})
      bytes += m->device_bytes();
  }
  return bytes;
}

CudaLlamaState::CudaLlamaState(const CudaLlama& model, int64_t max_tokens)
    : capacity_(max_tokens), model_(&model) {
  if (max_tokens <= 0) fail("KV cache: capacity {} must be positive", max_tokens);
  const LlamaConfig& c = model.config();
  const size_t bytes = size_t(c.n_layers * max_tokens * c.n_kv_heads * c.head_dim) * 4;
  keys_ = DeviceBuffer(bytes);
  values_ = DeviceBuffer(bytes);
}

CudaLlamaState::~CudaLlamaState() = default;
CudaLlamaState::CudaLlamaState(CudaLlamaState&&) noexcept = default;
CudaLlamaState& CudaLlamaState::operator=(CudaLlamaState&&) noexcept = default;

std::vector<float> CudaLlama::forward(CudaLlamaState& state, std::span<const int32_t> tokens,
                                      bool all_logits) {
  namespace k = model_kernels;
  Impl& d = *impl_;
  const LlamaConfig& c = d.c;
  const int64_t n = int64_t(tokens.size());
  if (n == 0) fail("forward: no tokens");
  if (state.model_ != this) fail("forward: the KV cache was made for another model");
  if (state.position_ + n > state.capacity_)
    fail("forward: {} tokens at position {} overflow the KV cache of {} tokens", n, state.position_,
         state.capacity_);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      fail("forward: token id {} at index {} is outside the vocabulary of {}", tokens[i], i,
           c.vocab_size);

  d.reserve(n);
  cudaStream_t s = d.stream;
  const int64_t dim = c.dim, hd = c.head_dim, q_dim = c.n_heads * hd;
  const int64_t kv_dim = c.n_kv_heads * hd, pos0 = state.position_, pairs = c.rope_dim / 2;
  const size_t layer_cache = size_t(state.capacity_ * kv_dim);
  const auto* inv_freq = static_cast<const double*>(d.inv_freq.data());

  check_cuda(cudaMemcpyAsync(d.tokens.data(), tokens.data(), n * sizeof(int32_t),
                             cudaMemcpyHostToDevice, s),
             "forward: upload tokens");
  check_cuda(k::embed(f32(d.embedding), static_cast<const int32_t*>(d.tokens.data()), n, dim,
                      f32m(d.x), s),
             "forward: embedding");
  const float* pending = nullptr;  // the last sub-layer's output, not yet added to x
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const DeviceLayer& layer = d.layers[l];
    check_cuda(k::add_rmsnorm(f32m(d.x), pending, f32(layer.attn_norm), d.xb.data(), d.ld_dim,
                              d.type, n, dim, c.norm_eps, s),
               "forward: attention RMSNorm");
    // K and V go straight into the cache rows of these positions.
    float* key_rows = f32m(state.keys_) + l * layer_cache + pos0 * kv_dim;
    float* value_rows = f32m(state.values_) + l * layer_cache + pos0 * kv_dim;
    d.gemm(d.xb.data(), n, d.ld_dim, layer.wq, f32m(d.q), q_dim);
    d.gemm(d.xb.data(), n, d.ld_dim, layer.wk, key_rows, kv_dim);
    d.gemm(d.xb.data(), n, d.ld_dim, layer.wv, value_rows, kv_dim);
    check_cuda(k::rope(f32m(d.q), q_dim, n, c.n_heads, hd, pairs, inv_freq, pos0, c.rope_scale, s),
               "forward: RoPE (queries)");
    check_cuda(
        k::rope(key_rows, kv_dim, n, c.n_kv_heads, hd, pairs, inv_freq, pos0, c.rope_scale, s),
        "forward: RoPE (keys)");
    check_cuda(k::attention(f32(d.q), q_dim, f32m(state.keys_) + l * layer_cache,
                            f32m(state.values_) + l * layer_cache, d.att.data(), d.ld_q, d.type, n,
                            c.n_heads, c.n_kv_heads, hd, pos0, s),
               "forward: attention");
    d.gemm(d.att.data(), n, d.ld_q, layer.wo, f32m(d.delta), dim);
    check_cuda(k::add_rmsnorm(f32m(d.x), f32(d.delta), f32(layer.ffn_norm), d.xb.data(), d.ld_dim,
                              d.type, n, dim, c.norm_eps, s),
               "forward: MLP RMSNorm");
    d.gemm(d.xb.data(), n, d.ld_dim, layer.gate, f32m(d.gate), c.hidden_dim);
    d.gemm(d.xb.data(), n, d.ld_dim, layer.up, f32m(d.up), c.hidden_dim);
    check_cuda(
        k::swiglu(f32(d.gate), f32(d.up), d.h.data(), d.ld_hidden, d.type, n, c.hidden_dim, s),
        "forward: SwiGLU");
    d.gemm(d.h.data(), n, d.ld_hidden, layer.down, f32m(d.delta), dim);
    pending = f32(d.delta);
  }
  const int64_t rows = all_logits ? n : 1, first = n - rows;
  check_cuda(
      k::add_rmsnorm(f32m(d.x) + first * dim, pending ? pending + first * dim : nullptr,
                     f32(d.output_norm), d.xb.data(), d.ld_dim, d.type, rows, dim, c.norm_eps, s),
      "forward: output RMSNorm");
  d.gemm(d.xb.data(), rows, d.ld_dim, d.output, f32m(d.logits), d.ld_vocab);
  std::vector<float> logits(size_t(rows * c.vocab_size));
  check_cuda(cudaMemcpy2DAsync(logits.data(), c.vocab_size * sizeof(float), d.logits.data(),
                               d.ld_vocab * sizeof(float), c.vocab_size * sizeof(float),
                               size_t(rows), cudaMemcpyDeviceToHost, s),
             "forward: download logits");
  check_cuda(cudaStreamSynchronize(s), "forward");
  state.position_ += n;
  return logits;
}

PerplexityResult perplexity(CudaLlama& model, std::span<const int32_t> tokens, int64_t ctx,
                            int64_t max_windows,
                            const std::function<void(int64_t, int64_t)>& progress) {
  if (ctx < 2) fail("perplexity: context {} is too short (at least 2 tokens)", ctx);
  CudaLlamaState state(model, ctx);
  return windowed_perplexity(
      tokens, ctx, max_windows, model.config().vocab_size,
      [&](std::span<const int32_t> window) {
        state.reset();
        return model.forward(state, window, true);
      },
      progress);
}

}  // namespace sparsa::cuda
