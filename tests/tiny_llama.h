// A tiny random Llama written as GGUF, as a Hugging Face safetensors checkpoint and as llama2.c
// .bin files, for the model and CLI tests. TinyLlama::hf keeps the weights in Hugging Face
// layout (Q/K rows in rotate_half order) for reference computations.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "sparsa/safetensors.h"
#include "sparsa/tensor.h"
#include "test_util.h"

namespace sparsa::test {

namespace tiny_fs = std::filesystem;
using namespace gguf;

struct TinyLlama {
  int64_t vocab = 50, dim = 64, hidden = 96, layers = 2, heads = 4, kv_heads = 2;
  int64_t hd() const { return dim / heads; }
  double theta = 500.0, eps = 1e-5;
  // Hugging Face layout: W[out, in] row-major, Q/K rows in rotate_half order.
  std::map<std::string, std::vector<float>> hf;
};

// llama.cpp's converter permutation: within each head, HF row a*(hd/2) + b becomes row 2b + a.
inline std::vector<float> permute_rows(const std::vector<float>& w, int64_t heads, int64_t hd,
                                       int64_t cols) {
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t a = 0; a < 2; ++a)
      for (int64_t b = 0; b < hd / 2; ++b)
        std::copy_n(w.data() + (h * hd + a * hd / 2 + b) * cols, cols,
                    out.data() + (h * hd + 2 * b + a) * cols);
  return out;
}

// Q8_0 blocks for values that are exactly representable (q * d with d a power of two).
inline std::string q8_0_exact(std::vector<float>& values, uint64_t seed) {
  std::string out;
  std::mt19937 rng(seed);
  for (size_t b = 0; b < values.size() / 32; ++b) {
    put_f16(out, 1.0f / 64);
    for (int j = 0; j < 32; ++j) {
      int q = int(rng() % 255) - 127;
      if (q == 0) q = 1;
      out += char(int8_t(q));
      values[b * 32 + j] = q / 64.0f;
    }
  }
  return out;
}

inline tiny_fs::path write_tiny(TinyLlama& m, const tiny_fs::path& dir, bool tied = true,
                                uint64_t seed = 1, bool with_tokenizer = false) {
  GgufBuilder g;
  g.add_string("general.architecture", "llama");
  if (with_tokenizer) {  // byte-level BPE over the letters a-z, A-X (one per token), no merges
    std::vector<std::string> letters;
    for (char c = 'a'; c <= 'z'; ++c) letters.push_back(std::string(1, c));
    for (char c = 'A'; letters.size() < size_t(m.vocab); ++c) letters.push_back(std::string(1, c));
    g.add_string("tokenizer.ggml.model", "gpt2");
    g.add_raw("tokenizer.ggml.tokens", 9, string_array(letters));
    g.add_raw("tokenizer.ggml.merges", 9, string_array({}));
  }
  g.add<uint32_t>("llama.embedding_length", 4, uint32_t(m.dim));
  g.add<uint32_t>("llama.feed_forward_length", 4, uint32_t(m.hidden));
  g.add<uint32_t>("llama.block_count", 4, uint32_t(m.layers));
  g.add<uint32_t>("llama.attention.head_count", 4, uint32_t(m.heads));
  g.add<uint32_t>("llama.attention.head_count_kv", 4, uint32_t(m.kv_heads));
  g.add<uint32_t>("llama.context_length", 4, 256);
  g.add<float>("llama.rope.freq_base", 6, float(m.theta));
  g.add<float>("llama.attention.layer_norm_rms_epsilon", 6, float(m.eps));
  const auto add_f32 = [&](const std::string& name, std::vector<uint64_t> ne,
                           const std::vector<float>& v) {
    g.tensors.push_back({name, std::move(ne), 0, f32_bytes(v)});
  };
  const auto rnd = [&](size_t n, double scale) {
    auto v = random_values(n, seed++);
    for (auto& x : v) x *= float(scale);
    return v;
  };
  std::vector<float> embd(m.vocab * m.dim);
  g.tensors.push_back(
      {"token_embd.weight", {uint64_t(m.dim), uint64_t(m.vocab)}, 8, q8_0_exact(embd, seed++)});
  m.hf["embd"] = embd;
  auto norm = rnd(m.dim, 0.5);
  for (auto& x : norm) x += 1.0f;
  m.hf["output_norm"] = norm;
  add_f32("output_norm.weight", {uint64_t(m.dim)}, norm);
  if (!tied) {
    m.hf["output"] = rnd(m.vocab * m.dim, 0.3);
    add_f32("output.weight", {uint64_t(m.dim), uint64_t(m.vocab)}, m.hf["output"]);
  }
  const int64_t kv = m.kv_heads * m.hd();
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_norm", "ffn_norm"}) {
      auto v = rnd(m.dim, 0.5);
      for (auto& x : v) x += 1.0f;
      m.hf[p + n] = v;
      add_f32(p + n + ".weight", {uint64_t(m.dim)}, v);
    }
    const auto mat = [&](const std::string& n, int64_t rows, int64_t cols, int64_t permute_heads) {
      auto v = rnd(rows * cols, 1.0 / std::sqrt(double(cols)) * 1.5);
      m.hf[p + n] = v;
      add_f32(p + n + ".weight", {uint64_t(cols), uint64_t(rows)},
              permute_heads ? permute_rows(v, permute_heads, m.hd(), cols) : v);
    };
    mat("attn_q", m.dim, m.dim, m.heads);
    mat("attn_k", kv, m.dim, m.kv_heads);
    mat("attn_v", kv, m.dim, 0);
    mat("attn_output", m.dim, m.dim, 0);
    mat("ffn_gate", m.hidden, m.dim, 0);
    mat("ffn_up", m.hidden, m.dim, 0);
    mat("ffn_down", m.dim, m.hidden, 0);
  }
  const tiny_fs::path path = dir / (tied ? "tiny.gguf" : "tiny_untied.gguf");
  write_file(path, g.build());
  return path;
}

inline tiny_fs::path write_tiny_safetensors(TinyLlama& m, const tiny_fs::path& dir, bool tied) {
  std::vector<Tensor> tensors;
  const auto add = [&](const std::string& name, std::vector<int64_t> shape,
                       const std::vector<float>& v, DType dtype = DType::F32) {
    tensors.push_back(Tensor::from_f32(name, dtype, std::move(shape), v));
  };
  add("model.embed_tokens.weight", {m.vocab, m.dim}, m.hf["embd"]);
  add("model.norm.weight", {m.dim}, m.hf["output_norm"]);
  if (!tied) add("lm_head.weight", {m.vocab, m.dim}, m.hf["output"]);
  const int64_t kv = m.kv_heads * m.hd();
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".",
                      h = "model.layers." + std::to_string(l) + ".";
    add(h + "input_layernorm.weight", {m.dim}, m.hf[g + "attn_norm"]);
    add(h + "post_attention_layernorm.weight", {m.dim}, m.hf[g + "ffn_norm"]);
    add(h + "self_attn.q_proj.weight", {m.dim, m.dim}, m.hf[g + "attn_q"]);
    add(h + "self_attn.k_proj.weight", {kv, m.dim}, m.hf[g + "attn_k"]);
    add(h + "self_attn.v_proj.weight", {kv, m.dim}, m.hf[g + "attn_v"]);
    add(h + "self_attn.o_proj.weight", {m.dim, m.dim}, m.hf[g + "attn_output"]);
    add(h + "mlp.gate_proj.weight", {m.hidden, m.dim}, m.hf[g + "ffn_gate"]);
    add(h + "mlp.up_proj.weight", {m.hidden, m.dim}, m.hf[g + "ffn_up"]);
    add(h + "mlp.down_proj.weight", {m.dim, m.hidden}, m.hf[g + "ffn_down"]);
  }
  // Two shards, as large checkpoints come.
  const size_t half = tensors.size() / 2;
  write_safetensors(dir / "model-00001-of-00002.safetensors",
                    {tensors.begin(), tensors.begin() + half});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {tensors.begin() + half, tensors.end()});
  write_file(dir / "config.json",
             fmt::format(R"({{"model_type": "llama", "hidden_size": {}, "intermediate_size": {},
                     "num_hidden_layers": {}, "num_attention_heads": {}, "num_key_value_heads": {},
                     "vocab_size": {}, "max_position_embeddings": 256, "rms_norm_eps": {},
                     "rope_theta": {}, "tie_word_embeddings": {}, "rope_scaling": null}})",
                         m.dim, m.hidden, m.layers, m.heads, m.kv_heads, m.vocab, m.eps, m.theta,
                         tied ? "true" : "false"));
  return dir;
}

// llama2.c's export.py layouts, with Q/K in the interleaved (GGUF) row order llama2.c expects.
inline tiny_fs::path write_tiny_llama2c(TinyLlama& m, const tiny_fs::path& path, bool v1,
                                        bool tied) {
  std::string out;
  const auto floats = [&](const std::vector<float>& v) { out += f32_bytes(v); };
  const int32_t vocab = (v1 || tied) ? int32_t(m.vocab) : -int32_t(m.vocab);
  if (v1) {
    put<uint32_t>(out, 0x616b3432);
    put<int32_t>(out, 1);
  }
  for (int64_t v : {m.dim, m.hidden, m.layers, m.heads, m.kv_heads, int64_t(vocab), int64_t(16)})
    put<int32_t>(out, int32_t(v));
  if (v1) {
    out += char(tied ? 1 : 0);
    out.append(256 - out.size(), '\0');
  }
  const auto each = [&](const std::string& n, int64_t permute_heads = 0) {
    for (int64_t l = 0; l < m.layers; ++l) {
      const auto& w = m.hf["blk." + std::to_string(l) + "." + n];
      floats(permute_heads ? permute_rows(w, permute_heads, m.hd(), m.dim) : w);
    }
  };
  const auto linears = [&] {
    each("attn_q", m.heads);
    each("attn_k", m.kv_heads);
    each("attn_v");
    each("attn_output");
  };
  const auto mlp = [&] {
    each("ffn_gate");
    each("ffn_down");
    each("ffn_up");
  };
  if (v1) {
    each("attn_norm");
    each("ffn_norm");
    floats(m.hf["output_norm"]);
    floats(m.hf["embd"]);
    linears();
    mlp();
  } else {
    floats(m.hf["embd"]);
    each("attn_norm");
    linears();
    each("ffn_norm");
    mlp();
    floats(m.hf["output_norm"]);
    floats(random_values(16 * m.hd(), 99));  // the unused freq_cis tables
  }
  if (!tied) floats(m.hf["output"]);
  write_file(path, out);
  return path;
}

}  // namespace sparsa::test
