// The Llama forward on CUDA (sparsa/cuda_model.h): the steps of LlamaModel::forward
// (src/model/llama.cc) with every product through the device gemm and the rest in
// src/cuda/model_kernels.cu. One stream; the only synchronisation is the copy of the logits.
//
// Every kernel reads the position (and the tokens) from one small device buffer, filled by one
// copy per call, so the launches of a one-token step do not depend on the step: the first
// decode step with a given cache runs them directly, the second captures them (all layers and
// the logits product) in a CUDA graph and replays it, and later steps replay it. The graph holds device pointers: the cache of the state, the scratch buffers and
// the gemm workspace; when any of them changes it is captured again.
#include "sparsa/cuda_model.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
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

// cuBLAS's own workspace, fixed so that its calls can be captured (no allocation inside).
constexpr size_t kCublasWorkspace = size_t(32) << 20;

struct DeviceLayer {
  DeviceBuffer attn_norm, ffn_norm;
  // One fused product [q|k|v] ([gate|up]) or the separate ones, in that order: each writes the
  // columns after the previous one's of the same output rows.
  std::vector<DeviceMatrix> qkv, gate_up;
  DeviceMatrix wo, down;
};

// Page-locked host memory: the per-call copies stay asynchronous and cheap.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (p_) cudaFreeHost(p_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void resize(size_t bytes) {
    if (bytes <= bytes_) return;
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    bytes_ = 0;
    check_cuda(cudaMallocHost(&p_, bytes), "forward: allocate page-locked host memory");
    bytes_ = bytes;
  }
  void* data() const { return p_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

bool env_off(const char* name) {
  const char* v = std::getenv(name);
  return v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0 ||
               std::strcmp(v, "false") == 0);
}

}  // namespace

CudaForwardOptions CudaForwardOptions::from_env() {
  CudaForwardOptions o;
  o.graphs = !env_off("SPARSA_CUDA_GRAPHS");
  o.fuse_products = !env_off("SPARSA_CUDA_FUSE");
  return o;
}

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
  CudaForwardOptions options;
  ElemType type = ElemType::F16;
  cudaStream_t stream = nullptr;
  std::unique_ptr<GemmContext> ctx;
  DeviceBuffer cublas_workspace;
  DeviceBuffer embedding, output_norm, inv_freq;
  std::vector<DeviceLayer> layers;
  DeviceMatrix output;
  int64_t densified = 0, products = 0;
  size_t decode_workspace = 0;  // the largest gemm workspace of a one-row product
  // Input permutations (Linear::input_perm) by layer name: the product gathers its input first.
  std::map<std::string, DeviceBuffer> input_perms;
  int64_t ld_widest = 0;  // the widest product input's leading dimension

  // Scratch for up to `rows` tokens. f32: x, delta [rows, dim], qkv [rows, qkv_width],
  // gate_up [rows, 2 * hidden], logits [rows, ld_vocab]; in `type`: xb [rows, ld_dim],
  // att [rows, ld_q], h [rows, ld_hidden] (leading dimensions multiples of 8 for the sparse
  // kernels). args: int32 [1 + rows], the position then the tokens (host copy: host_args).
  int64_t rows = 0, ld_dim = 0, ld_q = 0, ld_hidden = 0, ld_vocab = 0, qkv_width = 0;
  int64_t scratch_generation = 0;  // counts reallocations: a captured graph holds the pointers
  DeviceBuffer args, x, delta, xb, qkv, att, gate_up, h, logits, gathered;
  PinnedBuffer host_args, host_logits;

  // The decode graph and what it was captured for.
  struct GraphKey {
    const void* keys = nullptr;
    const void* values = nullptr;
    int64_t capacity = 0, scratch_generation = -1;
    const void* workspace = nullptr;
    bool operator==(const GraphKey&) const = default;
  };
  cudaGraphExec_t graph = nullptr;
  GraphKey graph_key, warm_key;
  int64_t replays = 0, captures = 0;

  ~Impl() {
    if (graph) cudaGraphExecDestroy(graph);
    ctx.reset();
    if (stream) cudaStreamDestroy(stream);
  }

  void reserve(int64_t n) {
    if (n <= rows) return;
    check_cuda(cudaStreamSynchronize(stream), "forward: synchronise before growing scratch");
    const size_t e = elem_bytes(type);
    args = DeviceBuffer((n + 1) * sizeof(int32_t));
    host_args.resize((n + 1) * sizeof(int32_t));
    x = DeviceBuffer(n * c.dim * 4);
    delta = DeviceBuffer(n * c.dim * 4);
    qkv = DeviceBuffer(n * qkv_width * 4);
    gate_up = DeviceBuffer(n * 2 * c.hidden_dim * 4);
    logits = DeviceBuffer(n * ld_vocab * 4);
    xb = DeviceBuffer(n * ld_dim * e);
    att = DeviceBuffer(n * ld_q * e);
    h = DeviceBuffer(n * ld_hidden * e);
    gathered = DeviceBuffer(input_perms.empty() ? 0 : n * ld_widest * e);
    // Padding columns past K are never read for results; keep them finite all the same.
    for (DeviceBuffer* b : {&xb, &att, &h, &gathered})
      check_cuda(cudaMemsetAsync(b->data(), 0, b->bytes(), stream), "forward: zero scratch");
    rows = n;
    ++scratch_generation;
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

  // Products that stack their outputs side by side in rows of ldy.
  void gemm_stacked(const void* x_in, int64_t m, int64_t ldx, const std::vector<DeviceMatrix>& ws,
                    float* y, int64_t ldy) {
    int64_t column = 0;
    for (const DeviceMatrix& w : ws) {
      gemm(x_in, m, ldx, w, y + column, ldy);
      column += w.rows();
    }
  }

  // Every launch of a forward over n tokens at the position in args[0] (tokens in args[1..]),
  // into the cache (keys, values) of `capacity` rows, leaving the logits of the last rows_out
  // tokens in `logits`. max_length bounds position + n (attention's shared memory). Launches
  // only: no copies from the host and no synchronisation, so that it can be captured.
  void enqueue(float* keys, float* values, int64_t capacity, int64_t n, int64_t max_length,
               int64_t rows_out) {
    namespace k = model_kernels;
    cudaStream_t s = stream;
    const int64_t dim = c.dim, hd = c.head_dim, kv_dim = c.n_kv_heads * hd;
    const int64_t hidden = c.hidden_dim, pairs = c.rope_dim / 2;
    const size_t layer_cache = size_t(capacity * kv_dim);
    const auto* inv = static_cast<const double*>(inv_freq.data());
    const auto* pos = static_cast<const int32_t*>(args.data());
    check_cuda(k::embed(f32(embedding), pos + 1, n, dim, f32m(x), s), "forward: embedding");
    const float* pending = nullptr;  // the last sub-layer's output, not yet added to x
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const DeviceLayer& layer = layers[l];
      float* layer_keys = keys + l * layer_cache;
      float* layer_values = values + l * layer_cache;
      check_cuda(k::add_rmsnorm(f32m(x), pending, f32(layer.attn_norm), xb.data(), ld_dim, type,
                                n, dim, c.norm_eps, s),
                 "forward: attention RMSNorm");
      gemm_stacked(xb.data(), n, ld_dim, layer.qkv, f32m(qkv), qkv_width);
      check_cuda(k::rope_store_kv(f32m(qkv), qkv_width, n, c.n_heads, c.n_kv_heads, hd, pairs, inv,
                                  pos, c.rope_scale, layer_keys, layer_values, s),
                 "forward: RoPE and KV cache store");
      check_cuda(k::attention(f32(qkv), qkv_width, layer_keys, layer_values, att.data(), ld_q, type,
                              n, c.n_heads, c.n_kv_heads, hd, pos, max_length, s),
                 "forward: attention");
      gemm(att.data(), n, ld_q, layer.wo, f32m(delta), dim);
      check_cuda(k::add_rmsnorm(f32m(x), f32(delta), f32(layer.ffn_norm), xb.data(), ld_dim, type,
                                n, dim, c.norm_eps, s),
                 "forward: MLP RMSNorm");
      gemm_stacked(xb.data(), n, ld_dim, layer.gate_up, f32m(gate_up), 2 * hidden);
      check_cuda(k::swiglu(f32(gate_up), f32(gate_up) + hidden, 2 * hidden, h.data(), ld_hidden,
                           type, n, hidden, s),
                 "forward: SwiGLU");
      gemm(h.data(), n, ld_hidden, layer.down, f32m(delta), dim);
      pending = f32(delta);
    }
    const int64_t first = n - rows_out;
    check_cuda(k::add_rmsnorm(f32m(x) + first * dim, pending ? pending + first * dim : nullptr,
                              f32(output_norm), xb.data(), ld_dim, type, rows_out, dim, c.norm_eps,
                              s),
               "forward: output RMSNorm");
    gemm(xb.data(), rows_out, ld_dim, output, f32m(logits), ld_vocab);
  }

  // The decode graph for this cache, captured now if it is missing or stale. False for the first
  // step with new buffers, and when the cache is too long for attention's shared memory (that
  // state decodes without a graph).
  bool decode_graph(float* keys, float* values, int64_t capacity) {
    GraphKey key{keys, values, capacity, scratch_generation, nullptr};
    // Grown before the capture (growing synchronises); the pointer is part of the key.
    key.workspace = decode_workspace ? ctx->workspace(decode_workspace) : nullptr;
    if (graph && key == graph_key) return true;
    // The first step with these buffers runs the direct launches (so every kernel is loaded and
    // every one-time setup done outside the capture); the second captures.
    if (!(key == warm_key)) {
      warm_key = key;
      return false;
    }
    if (!model_kernels::attention_fits(type, c.head_dim, capacity)) return false;
    if (graph) {
      cudaGraphExecDestroy(graph);
      graph = nullptr;
    }
    check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed),
               "forward: begin the decode graph capture");
    cudaGraph_t captured = nullptr;
    try {
      enqueue(keys, values, capacity, 1, capacity, 1);
    } catch (...) {
      cudaStreamEndCapture(stream, &captured);
      if (captured) cudaGraphDestroy(captured);
      cudaGetLastError();
      throw;
    }
    check_cuda(cudaStreamEndCapture(stream, &captured), "forward: end the decode graph capture");
    const cudaError_t made = cudaGraphInstantiate(&graph, captured, 0);
    cudaGraphDestroy(captured);
    if (made != cudaSuccess) graph = nullptr;
    check_cuda(made, "forward: instantiate the decode graph");
    graph_key = key;
    ++captures;
    return true;
  }
};

CudaLlama::CudaLlama(const LlamaModel& model, Fallback fallback, CudaForwardOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.c = model.config();
  d.options = options;
  const LlamaConfig& c = d.c;
  const LlamaWeights& w = model.weights();
  if (device_count() == 0) fail("CUDA: no GPU found (cudaGetDeviceCount reports none)");
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  check_cuda(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  d.ctx = std::make_unique<GemmContext>(d.stream);
  d.cublas_workspace = DeviceBuffer(kCublasWorkspace);
  if (cublasSetWorkspace(static_cast<cublasHandle_t>(d.ctx->cublas_handle()),
                         d.cublas_workspace.data(), kCublasWorkspace) != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS: cublasSetWorkspace of {} bytes failed", kCublasWorkspace);

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
    ++d.products;
    return m;
  };
  // Layers that read the same input: one product over their stacked rows when their packed
  // matrices stack (same format, pattern and input permutation; sparsa/cuda_model.h).
  const auto upload_stacked = [&](std::initializer_list<const Linear*> parts) {
    std::vector<const PackedMatrix*> packed;
    bool fuse = options.fuse_products && parts.size() > 1;
    for (const Linear* l : parts) {
      packed.push_back(&l->w);
      fuse = fuse && device_supported(l->w) && l->input_perm == (*parts.begin())->input_perm;
    }
    std::vector<DeviceMatrix> out;
    if (fuse && rows_concatenable(packed)) {
      Linear fused;
      for (const Linear* l : parts) fused.name += (fused.name.empty() ? "" : "+") + l->name;
      fused.w = concat_rows(packed, fused.name);
      fused.input_perm = (*parts.begin())->input_perm;
      out.push_back(upload(fused));
    } else {
      for (const Linear* l : parts) out.push_back(upload(*l));
    }
    return out;
  };
  d.output = upload(w.output);
  d.products = 0;  // counts the layers' products only
  d.type = d.output.type();
  const auto check_type = [&](const DeviceMatrix& m) {
    if (m.type() != d.type)
      fail(
          "CUDA forward: layer '{}' holds {} values but '{}' holds {}; every linear layer "
          "must have the same type",
          m.name(), m.type() == ElemType::BF16 ? "bf16" : "f16", d.output.name(),
          d.type == ElemType::BF16 ? "bf16" : "f16");
    d.decode_workspace = std::max(d.decode_workspace, m.workspace_bytes(1));
  };
  check_type(d.output);
  for (const LlamaLayer& l : w.layers) {
    DeviceLayer dl;
    dl.attn_norm = floats_to_device(l.attn_norm);
    dl.ffn_norm = floats_to_device(l.ffn_norm);
    dl.qkv = upload_stacked({&l.wq, &l.wk, &l.wv});
    dl.wo = upload(l.wo);
    dl.gate_up = upload_stacked({&l.w_gate, &l.w_up});
    dl.down = upload(l.w_down);
    for (const auto* group : {&dl.qkv, &dl.gate_up})
      for (const DeviceMatrix& m : *group) check_type(m);
    check_type(dl.wo);
    check_type(dl.down);
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
  d.qkv_width = q_dim + 2 * kv_dim;
  d.host_logits.resize(size_t(d.ld_vocab) * sizeof(float));
}

CudaLlama::~CudaLlama() = default;

const LlamaConfig& CudaLlama::config() const { return impl_->c; }

int64_t CudaLlama::densified_layers() const { return impl_->densified; }

const CudaForwardOptions& CudaLlama::options() const { return impl_->options; }

int64_t CudaLlama::layer_products() const { return impl_->products; }

int64_t CudaLlama::graph_replays() const { return impl_->replays; }

int64_t CudaLlama::graph_captures() const { return impl_->captures; }

size_t CudaLlama::device_bytes() const {
  const Impl& d = *impl_;
  size_t bytes = d.embedding.bytes() + d.output_norm.bytes() + d.output.device_bytes();
  for (const DeviceLayer& l : d.layers) {
    bytes += l.attn_norm.bytes() + l.ffn_norm.bytes();
    for (const auto* group : {&l.qkv, &l.gate_up})
      for (const DeviceMatrix& m : *group) bytes += m.device_bytes();
    bytes += l.wo.device_bytes() + l.down.device_bytes();
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
  Impl& d = *impl_;
  const LlamaConfig& c = d.c;
  const int64_t n = int64_t(tokens.size());
  if (n == 0) fail("forward: no tokens");
  if (state.model_ != this) fail("forward: the KV cache was made for another model");
  if (state.position_ + n > state.capacity_)
    fail("forward: {} tokens at position {} overflow the KV cache of {} tokens", n, state.position_,
         state.capacity_);
  if (state.position_ + n > std::numeric_limits<int32_t>::max())
    fail("forward: position {} is past the 32-bit positions of the CUDA forward",
         state.position_ + n);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      fail("forward: token id {} at index {} is outside the vocabulary of {}", tokens[i], i,
           c.vocab_size);

  d.reserve(n);
  cudaStream_t s = d.stream;
  float* keys = f32m(state.keys_);
  float* values = f32m(state.values_);
  const int64_t rows = all_logits ? n : 1;
  const bool replay = n == 1 && d.options.graphs && d.decode_graph(keys, values, state.capacity_);

  auto* host_args = static_cast<int32_t*>(d.host_args.data());
  host_args[0] = int32_t(state.position_);
  std::copy(tokens.begin(), tokens.end(), host_args + 1);
  check_cuda(cudaMemcpyAsync(d.args.data(), host_args, (n + 1) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, s),
             "forward: upload the position and tokens");
  if (replay) {
    check_cuda(cudaGraphLaunch(d.graph, s), "forward: replay the decode graph");
    ++d.replays;
  } else {
    d.enqueue(keys, values, state.capacity_, n, state.position_ + n, rows);
  }
  std::vector<float> logits(size_t(rows * c.vocab_size));
  if (rows == 1) {  // decode: through page-locked memory
    check_cuda(cudaMemcpyAsync(d.host_logits.data(), d.logits.data(), c.vocab_size * sizeof(float),
                               cudaMemcpyDeviceToHost, s),
               "forward: download logits");
    check_cuda(cudaStreamSynchronize(s), "forward");
    std::memcpy(logits.data(), d.host_logits.data(), c.vocab_size * sizeof(float));
  } else {
    check_cuda(cudaMemcpy2DAsync(logits.data(), c.vocab_size * sizeof(float), d.logits.data(),
                                 d.ld_vocab * sizeof(float), c.vocab_size * sizeof(float),
                                 size_t(rows), cudaMemcpyDeviceToHost, s),
               "forward: download logits");
    check_cuda(cudaStreamSynchronize(s), "forward");
  }
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
