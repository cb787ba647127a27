// Llama forward on the CPU, one sequence, with a KV cache.
//
// RoPE: GGUF llama files hold Q and K with the rows of each head permuted by llama.cpp's
// converter (convert_hf_to_gguf.py, LlamaModel.permute) so that the rotated pairs are adjacent
// dimensions (2i, 2i+1) — ggml's "normal" rope mode — instead of Hugging Face's rotate_half
// pairs (i, i + d/2). The forward therefore rotates adjacent pairs; scripts/check_logits.py
// undoes the permutation and uses rotate_half, checking this independently.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/llama_internal.h"
#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/model.h"

namespace sparsa {
namespace {

void rmsnorm(const float* x, const float* weight, float* out, int64_t dim, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < dim; ++i) ss += double(x[i]) * x[i];
  const float scale = float(1.0 / std::sqrt(ss / double(dim) + eps));
  for (int64_t i = 0; i < dim; ++i) out[i] = x[i] * scale * weight[i];
}

void linear(const Linear& layer, const std::vector<float>& x, int64_t m, std::vector<float>& y,
            Backend backend,
            const std::function<void(const Linear&, std::span<const float>, int64_t)>& observer) {
  const int64_t k = layer.w.cols;
  std::span<const float> in(x.data(), size_t(m * k));
  std::vector<float> gathered;  // the permuted input (see Linear::input_perm)
  if (!layer.input_perm.empty()) {
    if (int64_t(layer.input_perm.size()) != k)
      fail("forward: layer '{}' has an input permutation of {} entries for {} inputs", layer.name,
           layer.input_perm.size(), k);
    gathered.resize(size_t(m * k));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < k; ++j) gathered[i * k + j] = x[i * k + layer.input_perm[j]];
    in = gathered;
  }
  if (observer) observer(layer, in, m);
  gemm(in, m, layer.w, std::span<float>(y.data(), size_t(m * layer.w.rows)), backend);
}

// "<name>.input_perm" (I32, [cols]) when present: a permutation of 0 .. cols-1.
std::vector<int32_t> read_input_perm(const GgufFile& file, const std::string& name, int64_t cols) {
  const std::string perm_name = name + ".input_perm";
  const GgufTensorInfo* info = file.find_tensor(perm_name);
  if (!info) return {};
  if (info->type != GgmlType::I32 || info->shape() != std::vector<int64_t>{cols})
    fail("{}: tensor '{}' must be I32 of shape [{}], not ggml type {} of shape {}",
         file.path().string(), perm_name,
         cols, uint32_t(info->type), shape_string(info->shape()));
  std::vector<int32_t> perm(static_cast<size_t>(cols));
  std::memcpy(perm.data(), info->data, size_t(cols) * sizeof(int32_t));
  try {
    model::check_permutation(perm, cols, perm_name);
  } catch (const Error& e) {
    fail("{}: {}", file.path().string(), e.what());
  }
  return perm;
}

std::vector<float> read_vector(const GgufFile& file, const std::string& name, int64_t dim) {
  const GgufTensorInfo& info = file.tensor(name);
  if (info.shape() != std::vector<int64_t>{dim})
    fail("{}: tensor '{}' has shape {}, expected [{}]", file.path().string(), name,
         shape_string(info.shape()), dim);
  return file.to_f32(info).to_f32();
}

Tensor read_matrix(const GgufFile& file, const std::string& name, int64_t rows, int64_t cols) {
  const GgufTensorInfo& info = file.tensor(name);
  if (info.shape() != std::vector<int64_t>{rows, cols})
    fail("{}: tensor '{}' has shape {}, expected [{}, {}]", file.path().string(), name,
         shape_string(info.shape()), rows, cols);
  return file.to_f32(info);
}

Linear make_linear(const std::string& name, const Tensor& f32, DType dtype) {
  return model::make_linear(name, f32.to_f32(), f32.rows(), f32.cols(), dtype);
}

}  // namespace

namespace model {

Linear make_linear(const std::string& name, std::span<const float> values, int64_t rows,
                   int64_t cols, DType dtype) {
  const Tensor t = Tensor::from_f32(name, dtype, {rows, cols}, values);
  return {name, pack(t, FormatKind::Dense, Pattern{}), {}};
}

void check_permutation(std::span<const int32_t> perm, int64_t n, const std::string& what) {
  if (int64_t(perm.size()) != n)
    fail("'{}': {} entries, expected a permutation of {} columns", what, perm.size(), n);
  std::vector<uint8_t> seen(size_t(n), 0);
  for (int64_t j = 0; j < n; ++j) {
    if (perm[j] < 0 || perm[j] >= n || seen[perm[j]])
      fail("'{}': entry {} = {} is {}; expected a permutation of 0..{}", what, j, perm[j],
           perm[j] < 0 || perm[j] >= n ? "out of range" : "repeated", n - 1);
    seen[perm[j]] = 1;
  }
}

std::vector<float> permute_rope_rows(std::span<const float> w, int64_t heads, int64_t hd,
                                     int64_t cols) {
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t a = 0; a < 2; ++a)
      for (int64_t b = 0; b < hd / 2; ++b)
        std::copy_n(w.data() + (h * hd + a * hd / 2 + b) * cols, cols,
                    out.data() + (h * hd + 2 * b + a) * cols);
  return out;
}

}  // namespace model

LlamaState::LlamaState(const LlamaConfig& config, int64_t max_tokens) : capacity_(max_tokens) {
  if (max_tokens <= 0) fail("KV cache: capacity {} must be positive", max_tokens);
  const size_t per_layer = size_t(max_tokens * config.n_kv_heads * config.head_dim);
  keys.assign(config.n_layers, std::vector<float>(per_layer));
  values.assign(config.n_layers, std::vector<float>(per_layer));
}

LlamaModel::LlamaModel(LlamaConfig config, LlamaWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  const auto& c = config_;
  if (c.n_heads <= 0 || c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0)
    fail("llama: {} query heads cannot share {} KV heads", c.n_heads, c.n_kv_heads);
  if (c.rope_dim % 2 != 0 || c.rope_dim > c.head_dim)
    fail("llama: rope dimension {} must be even and at most the head dimension {}", c.rope_dim,
         c.head_dim);
  if (int64_t(weights_.layers.size()) != c.n_layers)
    fail("llama: {} layers of weights for {} in the config", weights_.layers.size(), c.n_layers);
  for (Linear* l : linears())
    if (!l->input_perm.empty()) model::check_permutation(l->input_perm, l->w.cols, l->name);
}

LlamaModel LlamaModel::from_gguf(const GgufFile& file, const LoadOptions& options) {
  const std::string where = file.path().string();
  const std::string arch = file.get_string("general.architecture");
  if (arch != "llama")
    fail("{}: general.architecture is '{}'; sparsa runs 'llama' models", where, arch);
  if (!is_float_weight_dtype(options.weight_dtype))
    fail("{}: weights can be kept as F32, F16 or BF16, not {}", where,
         dtype_name(options.weight_dtype));

  LlamaConfig c;
  c.dim = file.get_int("llama.embedding_length");
  c.hidden_dim = file.get_int("llama.feed_forward_length");
  c.n_layers = file.get_int("llama.block_count");
  c.n_heads = file.get_int("llama.attention.head_count");
  c.n_kv_heads = file.get_int("llama.attention.head_count_kv", c.n_heads);
  c.context_length = file.get_int("llama.context_length", 2048);
  c.norm_eps = file.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5);
  c.rope_theta = file.get_float("llama.rope.freq_base", 10000.0);
  for (int64_t v : {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads})
    if (v <= 0 || v > (int64_t(1) << 24))
      fail("{}: llama hyper-parameter {} is out of range", where, v);
  if (c.dim % c.n_heads != 0)
    fail("{}: embedding length {} is not a multiple of the {} heads", where, c.dim, c.n_heads);
  c.head_dim = c.dim / c.n_heads;
  c.rope_dim = file.get_int("llama.rope.dimension_count", c.head_dim);
  if (file.find("llama.rope.scaling.type")) {
    const std::string type = file.get_string("llama.rope.scaling.type");
    if (type == "linear")
      c.rope_scale = file.get_float("llama.rope.scaling.factor", 1.0);
    else if (type != "none")
      fail("{}: rope scaling '{}' is not supported (none, linear)", where, type);
  }

  const GgufTensorInfo& embd = file.tensor("token_embd.weight");
  if (embd.shape().size() != 2 || embd.shape()[1] != c.dim)
    fail("{}: token_embd.weight has shape {}, expected [vocab, {}]", where,
         shape_string(embd.shape()), c.dim);
  c.vocab_size = embd.shape()[0];
  if (const GgufValue* v = file.find("llama.vocab_size");
      v && file.get_int("llama.vocab_size") != c.vocab_size)
    fail("{}: llama.vocab_size {} disagrees with token_embd.weight's {} rows", where,
         file.get_int("llama.vocab_size"), c.vocab_size);

  LlamaWeights w;
  const Tensor embedding = read_matrix(file, "token_embd.weight", c.vocab_size, c.dim);
  w.token_embedding = embedding.to_f32();
  w.output_norm = read_vector(file, "output_norm.weight", c.dim);
  c.tied_embeddings = file.find_tensor("output.weight") == nullptr;
  w.output =
      c.tied_embeddings
          ? make_linear("token_embd.weight", embedding, options.weight_dtype)
          : make_linear("output.weight", read_matrix(file, "output.weight", c.vocab_size, c.dim),
                        options.weight_dtype);
  if (file.find_tensor("rope_freqs.weight"))
    w.rope_freq_factors = read_vector(file, "rope_freqs.weight", c.rope_dim / 2);

  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const auto mat = [&](const std::string& n, int64_t rows, int64_t cols) {
      Linear linear =
          make_linear(p + n, read_matrix(file, p + n, rows, cols), options.weight_dtype);
      linear.input_perm = read_input_perm(file, p + n, cols);
      return linear;
    };
    LlamaLayer layer;
    layer.attn_norm = read_vector(file, p + "attn_norm.weight", c.dim);
    layer.ffn_norm = read_vector(file, p + "ffn_norm.weight", c.dim);
    layer.wq = mat("attn_q.weight", q_dim, c.dim);
    layer.wk = mat("attn_k.weight", kv_dim, c.dim);
    layer.wv = mat("attn_v.weight", kv_dim, c.dim);
    layer.wo = mat("attn_output.weight", c.dim, q_dim);
    layer.w_gate = mat("ffn_gate.weight", c.hidden_dim, c.dim);
    layer.w_up = mat("ffn_up.weight", c.hidden_dim, c.dim);
    layer.w_down = mat("ffn_down.weight", c.dim, c.hidden_dim);
    w.layers.push_back(std::move(layer));
  }
  try {
    return LlamaModel(std::move(c), std::move(w));
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
}

std::vector<Linear*> LlamaModel::linears() {
  std::vector<Linear*> out;
  for (auto& l : weights_.layers)
    for (Linear* p : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) out.push_back(p);
  out.push_back(&weights_.output);
  return out;
}

std::vector<float> LlamaModel::forward(LlamaState& state, std::span<const int32_t> tokens,
                                       bool all_logits) const {
  const LlamaConfig& c = config_;
  const int64_t n = int64_t(tokens.size());
  if (n == 0) fail("forward: no tokens");
  if (state.keys.size() != size_t(c.n_layers) ||
      state.keys[0].size() != size_t(state.capacity_ * c.n_kv_heads * c.head_dim))
    fail("forward: the KV cache was made for another model");
  if (state.position_ + n > state.capacity_)
    fail("forward: {} tokens at position {} overflow the KV cache of {} tokens", n, state.position_,
         state.capacity_);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      fail("forward: token id {} at index {} is outside the vocabulary of {}", tokens[i], i,
           c.vocab_size);

  const int64_t dim = c.dim, hd = c.head_dim, q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd;
  const int64_t pos0 = state.position_, group = c.n_heads / c.n_kv_heads;
  std::vector<float> x(n * dim), xb(n * dim), q(n * q_dim), k(n * kv_dim), v(n * kv_dim),
      att(n * q_dim), tmp(n * dim), gate(n * c.hidden_dim), up(n * c.hidden_dim);

  for (int64_t i = 0; i < n; ++i)
    std::copy_n(weights_.token_embedding.data() + int64_t(tokens[i]) * dim, dim,
                x.data() + i * dim);

  // RoPE angles for these positions: pair j of a head turns by (pos / scale) * theta^(-2j/d).
  const int64_t pairs = c.rope_dim / 2;
  std::vector<float> cos_table(n * pairs), sin_table(n * pairs);
  for (int64_t j = 0; j < pairs; ++j) {
    double inv_freq = std::pow(c.rope_theta, -2.0 * double(j) / double(c.rope_dim));
    if (!weights_.rope_freq_factors.empty()) inv_freq /= weights_.rope_freq_factors[j];
    for (int64_t i = 0; i < n; ++i) {
      const double angle = double(pos0 + i) / c.rope_scale * inv_freq;
      cos_table[i * pairs + j] = float(std::cos(angle));
      sin_table[i * pairs + j] = float(std::sin(angle));
    }
  }
  const auto rope = [&](std::vector<float>& t, int64_t heads) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        float* row = t.data() + i * heads * hd + h * hd;
        for (int64_t j = 0; j < pairs; ++j) {
          const float co = cos_table[i * pairs + j], si = sin_table[i * pairs + j];
          const float a = row[2 * j], b = row[2 * j + 1];
          row[2 * j] = a * co - b * si;
          row[2 * j + 1] = a * si + b * co;
        }
      }
  };

  const float scale = float(1.0 / std::sqrt(double(hd)));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LlamaLayer& layer = weights_.layers[l];
    for (int64_t i = 0; i < n; ++i)
      rmsnorm(x.data() + i * dim, layer.attn_norm.data(), xb.data() + i * dim, dim, c.norm_eps);
    linear(layer.wq, xb, n, q, backend, observer);
    linear(layer.wk, xb, n, k, backend, observer);
    linear(layer.wv, xb, n, v, backend, observer);
    rope(q, c.n_heads);
    rope(k, c.n_kv_heads);
    float* key_cache = state.keys[l].data();
    float* value_cache = state.values[l].data();
    std::copy(k.begin(), k.end(), key_cache + pos0 * kv_dim);
    std::copy(v.begin(), v.end(), value_cache + pos0 * kv_dim);

    // Causal attention: query i (position pos0 + i) sees keys 0 .. pos0 + i; query head h reads
    // KV head h / group. Parallel over (head, query).
#pragma omp parallel
    {
      std::vector<float> scores(pos0 + n);
#pragma omp for collapse(2) schedule(dynamic, 4)
      for (int64_t h = 0; h < c.n_heads; ++h)
        for (int64_t i = 0; i < n; ++i) {
          const float* qi = q.data() + i * q_dim + h * hd;
          const int64_t kv_head = h / group, length = pos0 + i + 1;
          float max_score = -INFINITY;
          for (int64_t t = 0; t < length; ++t) {
            const float* kt = key_cache + t * kv_dim + kv_head * hd;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t d = 0; d < hd; ++d) s += qi[d] * kt[d];
            scores[t] = s * scale;
            max_score = std::max(max_score, scores[t]);
          }
          float sum = 0;
          for (int64_t t = 0; t < length; ++t) sum += scores[t] = std::exp(scores[t] - max_score);
          float* out = att.data() + i * q_dim + h * hd;
          std::fill_n(out, hd, 0.0f);
          for (int64_t t = 0; t < length; ++t) {
            const float p = scores[t] / sum;
            const float* vt = value_cache + t * kv_dim + kv_head * hd;
#pragma omp simd
            for (int64_t d = 0; d < hd; ++d) out[d] += p * vt[d];
          }
        }
    }
    linear(layer.wo, att, n, tmp, backend, observer);
    for (int64_t i = 0; i < n * dim; ++i) x[i] += tmp[i];

    for (int64_t i = 0; i < n; ++i)
      rmsnorm(x.data() + i * dim, layer.ffn_norm.data(), xb.data() + i * dim, dim, c.norm_eps);
    linear(layer.w_gate, xb, n, gate, backend, observer);
    linear(layer.w_up, xb, n, up, backend, observer);
    for (int64_t i = 0; i < n * c.hidden_dim; ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];  // SiLU(gate) * up
    }
    linear(layer.w_down, gate, n, tmp, backend, observer);
    for (int64_t i = 0; i < n * dim; ++i) x[i] += tmp[i];
  }
  state.position_ += n;

  const int64_t rows = all_logits ? n : 1, first = n - rows;
  for (int64_t i = 0; i < rows; ++i)
    rmsnorm(x.data() + (first + i) * dim, weights_.output_norm.data(), xb.data() + i * dim, dim,
            c.norm_eps);
  std::vector<float> logits(rows * c.vocab_size);
  linear(weights_.output, xb, rows, logits, backend, observer);
  return logits;
}

}  // namespace sparsa
