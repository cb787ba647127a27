// llama2.c checkpoints (karpathy/llama2.c, export.py): float32 weights after a small header.
//
//   legacy: int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (< 0: untied
//           classifier), seq_len; then token_embedding, rms_att[L], wq[L], wk[L], wv[L], wo[L],
//           rms_ffn[L], w1[L], w2[L], w3[L], rms_final, freq_cis_real and _imag
//           ([seq_len, head_size/2] each, unused), wcls when untied.
//   v1:     uint32 magic 0x616b3432 ("ak42"), int32 version 1, the 7 fields (vocab_size > 0),
//           uint8 shared_classifier, zero padding to 256 bytes; then rms_att[L], rms_ffn[L],
//           rms_final, token_embedding, wq[L], wk[L], wv[L], wo[L], w1[L], w2[L], w3[L], wcls
//           when not shared.
// w1 is the gate, w3 the up projection, w2 the down projection. llama2.c rotates adjacent
// pairs with base 10000 and uses eps 1e-5, as the forward here does for GGUF.
#include <cstring>

#include "core/mapped_file.h"
#include "model/llama_internal.h"
#include "sparsa/error.h"

namespace sparsa {

LlamaModel LlamaModel::from_llama2c(const std::filesystem::path& path, const LoadOptions& options) {
  const std::string where = path.string();
  if (!is_float_weight_dtype(options.weight_dtype))
    fail("{}: weights can be kept as F32, F16 or BF16, not {}", where,
         dtype_name(options.weight_dtype));
  const auto file = MappedFile::open(path);
  const std::byte* base = file->data();
  const size_t size = file->size();
  const auto i32_at = [&](size_t offset) {
    if (offset + 4 > size) fail("{}: truncated header ({} bytes)", where, size);
    int32_t v;
    std::memcpy(&v, base + offset, 4);
    return v;
  };

  constexpr uint32_t kMagic = 0x616b3432;
  const bool v1 = size >= 4 && uint32_t(i32_at(0)) == kMagic;
  size_t header = 28, fields = 0;
  bool shared = true;
  if (v1) {
    const int32_t version = i32_at(4);
    if (version != 1)
      fail("{}: llama2.c checkpoint version {} is not supported (legacy and version 1 float32 are)",
           where, version);
    fields = 8;
    header = 256;
    if (size < header) fail("{}: truncated header ({} bytes, version 1 needs 256)", where, size);
    shared = std::to_integer<uint8_t>(base[36]) != 0;
  }
  int32_t p[7];
  for (int i = 0; i < 7; ++i) p[i] = i32_at(fields + 4 * i);
  if (!v1) {
    shared = p[5] > 0;
    p[5] = p[5] < 0 ? -p[5] : p[5];
  }

  LlamaConfig c;
  c.dim = p[0];
  c.hidden_dim = p[1];
  c.n_layers = p[2];
  c.n_heads = p[3];
  c.n_kv_heads = p[4];
  c.vocab_size = p[5];
  c.context_length = p[6];
  for (int i = 0; i < 7; ++i)
    if (p[i] <= 0 || p[i] > (1 << 24))
      fail("{}: header field {} = {} is out of range; not a llama2.c checkpoint?", where, i, p[i]);
  if (c.dim % c.n_heads != 0)
    fail("{}: dim {} is not a multiple of {} heads", where, c.dim, c.n_heads);
  c.head_dim = c.rope_dim = c.dim / c.n_heads;
  c.rope_theta = 10000.0;
  c.norm_eps = 1e-5;
  c.tied_embeddings = shared;

  const int64_t L = c.n_layers, D = c.dim, H = c.hidden_dim, hd = c.head_dim;
  const int64_t q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd;
  // In 128 bits: the header fields are untrusted and their products can pass 2^64.
  using u128 = unsigned __int128;
  const u128 floats = u128(c.vocab_size) * D + u128(2 * L + 1) * D +
                      u128(L) * D * (q_dim + 2 * kv_dim) + u128(L) * q_dim * D +
                      u128(3 * L) * D * H + (v1 ? 0 : u128(c.context_length) * hd) +
                      (shared ? 0 : u128(c.vocab_size) * D);
  if (u128(size) != header + floats * 4)
    fail(
        "{}: {} bytes, but a llama2.c {} checkpoint of dim {}, {} layers, vocabulary {} holds {} "
        "bytes",
        where, size, v1 ? "version 1" : "legacy", D, L, c.vocab_size, double(header + floats * 4));

  size_t offset = header;
  const auto take = [&](int64_t count) {
    std::vector<float> v(count);
    std::memcpy(v.data(), base + offset, count * 4);
    offset += count * 4;
    return v;
  };
  const DType dtype = options.weight_dtype;
  LlamaWeights w;
  w.layers.resize(L);
  // Per-layer stacks: `count` floats per layer.
  const auto norms = [&](auto member) {
    for (int64_t l = 0; l < L; ++l) w.layers[l].*member = take(D);
  };
  const auto mats = [&](Linear LlamaLayer::*member, const char* name, int64_t rows, int64_t cols) {
    for (int64_t l = 0; l < L; ++l)
      w.layers[l].*member = model::make_linear(fmt::format("layers.{}.{}", l, name),
                                               take(rows * cols), rows, cols, dtype);
  };
  const auto linears = [&] {
    mats(&LlamaLayer::wq, "attention.wq.weight", q_dim, D);
    mats(&LlamaLayer::wk, "attention.wk.weight", kv_dim, D);
    mats(&LlamaLayer::wv, "attention.wv.weight", kv_dim, D);
    mats(&LlamaLayer::wo, "attention.wo.weight", D, q_dim);
  };
  const auto mlp = [&] {
    mats(&LlamaLayer::w_gate, "feed_forward.w1.weight", H, D);
    mats(&LlamaLayer::w_down, "feed_forward.w2.weight", D, H);
    mats(&LlamaLayer::w_up, "feed_forward.w3.weight", H, D);
  };
  if (v1) {
    norms(&LlamaLayer::attn_norm);
    norms(&LlamaLayer::ffn_norm);
    w.output_norm = take(D);
    w.token_embedding = take(c.vocab_size * D);
    linears();
    mlp();
  } else {
    w.token_embedding = take(c.vocab_size * D);
    norms(&LlamaLayer::attn_norm);
    linears();
    norms(&LlamaLayer::ffn_norm);
    mlp();
    w.output_norm = take(D);
    offset += size_t(c.context_length) * hd * 4;  // freq_cis_real, freq_cis_imag
  }
  w.output =
      shared
          ? model::make_linear("tok_embeddings.weight", w.token_embedding, c.vocab_size, D, dtype)
          : model::make_linear("output.weight", take(c.vocab_size * D), c.vocab_size, D, dtype);
  try {
    return LlamaModel(std::move(c), std::move(w));
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
}

}  // namespace sparsa
