// Hugging Face Llama checkpoints: config.json + *.safetensors (model.layers.N.self_attn.q_proj...).
#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "model/llama_internal.h"
#include "sparsa/error.h"
#include "sparsa/safetensors.h"

namespace sparsa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_config(const fs::path& path) {
  std::ifstream in(path);
  if (!in)
    fail("{}: cannot open (a Hugging Face checkpoint needs config.json beside its weights)",
         path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

int64_t config_int(const fs::path& path, const json& config, const char* key,
                   std::optional<int64_t> fallback = {}) {
  if (!config.contains(key) || config[key].is_null()) {
    if (fallback) return *fallback;
    fail("{}: \"{}\" is missing", path.string(), key);
  }
  if (!config[key].is_number_integer())
    fail("{}: \"{}\" is not an integer: {}", path.string(), key, config[key].dump());
  const int64_t v = config[key].get<int64_t>();
  if (v <= 0 || v > (int64_t(1) << 24))
    fail("{}: \"{}\" = {} is out of range", path.string(), key, v);
  return v;
}

double config_float(const fs::path& path, const json& config, const char* key, double fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  if (!config[key].is_number())
    fail("{}: \"{}\" is not a number: {}", path.string(), key, config[key].dump());
  return config[key].get<double>();
}

}  // namespace

LlamaModel LlamaModel::from_safetensors(const fs::path& path, const LoadOptions& options) {
  const std::string where = path.string();
  if (!is_float_weight_dtype(options.weight_dtype))
    fail("{}: weights can be kept as F32, F16 or BF16, not {}", where,
         dtype_name(options.weight_dtype));
  std::vector<fs::path> files;
  fs::path dir;
  if (fs::is_directory(path)) {
    dir = path;
    for (const auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) fail("{}: no .safetensors files in the directory", where);
  } else {
    dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    files.push_back(path);
  }
  const fs::path config_path = dir / "config.json";
  const json config = read_config(config_path);
  const std::string cfg = config_path.string();
  if (!config.is_object()) fail("{}: not a JSON object", cfg);
  const std::string model_type = config.value("model_type", std::string());
  if (model_type != "llama")
    fail("{}: model_type is '{}'; sparsa runs 'llama' checkpoints", cfg, model_type);

  LlamaConfig c;
  c.dim = config_int(config_path, config, "hidden_size");
  c.hidden_dim = config_int(config_path, config, "intermediate_size");
  c.n_layers = config_int(config_path, config, "num_hidden_layers");
  c.n_heads = config_int(config_path, config, "num_attention_heads");
  c.n_kv_heads = config_int(config_path, config, "num_key_value_heads", c.n_heads);
  c.vocab_size = config_int(config_path, config, "vocab_size");
  c.context_length = config_int(config_path, config, "max_position_embeddings", 2048);
  c.norm_eps = config_float(config_path, config, "rms_norm_eps", 1e-6);
  c.rope_theta = config_float(config_path, config, "rope_theta", 10000.0);
  c.tied_embeddings = config.value("tie_word_embeddings", false);
  if (c.dim % c.n_heads != 0)
    fail("{}: hidden_size {} is not a multiple of {} heads", cfg, c.dim, c.n_heads);
  c.head_dim = c.dim / c.n_heads;
  if (config_int(config_path, config, "head_dim", c.head_dim) != c.head_dim)
    fail("{}: head_dim {} differs from hidden_size / num_attention_heads = {} (not supported)", cfg,
         config["head_dim"].dump(), c.head_dim);
  c.rope_dim = c.head_dim;
  if (config.contains("rope_scaling") && !config["rope_scaling"].is_null()) {
    const json& rs = config["rope_scaling"];
    const std::string type =
        rs.is_object() ? rs.value("rope_type", rs.value("type", std::string())) : "";
    if (type != "linear")
      fail("{}: rope_scaling {} is not supported (only linear)", cfg, rs.dump());
    c.rope_scale = config_float(config_path, rs, "factor", 1.0);
  }

  std::vector<SafetensorsFile> shards;
  std::map<std::string, const Tensor*> tensors;
  shards.reserve(files.size());
  for (const auto& f : files) {
    shards.push_back(read_safetensors(f));
    for (const Tensor& t : shards.back().tensors) tensors[t.name()] = &t;
  }
  const auto get = [&](const std::string& name, std::vector<int64_t> shape) -> std::vector<float> {
    const auto it = tensors.find(name);
    if (it == tensors.end()) fail("{}: no tensor named '{}'", where, name);
    const Tensor& t = *it->second;
    if (t.shape() != shape)
      fail("{}: tensor '{}' has shape {}, expected {}", where, name, shape_string(t.shape()),
           shape_string(shape));
    if (!is_float_weight_dtype(t.dtype()))
      fail("{}: tensor '{}' is {}, expected F32, F16 or BF16", where, name, dtype_name(t.dtype()));
    return t.to_f32();
  };

  const int64_t hd = c.head_dim, q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd;
  const DType dtype = options.weight_dtype;
  LlamaWeights w;
  w.token_embedding = get("model.embed_tokens.weight", {c.vocab_size, c.dim});
  w.output_norm = get("model.norm.weight", {c.dim});
  if (!c.tied_embeddings && tensors.count("lm_head.weight") == 0)
    fail("{}: no tensor named 'lm_head.weight' and tie_word_embeddings is false", where);
  w.output = c.tied_embeddings ? model::make_linear("model.embed_tokens.weight", w.token_embedding,
                                                    c.vocab_size, c.dim, dtype)
                               : model::make_linear("lm_head.weight",
                                                    get("lm_head.weight", {c.vocab_size, c.dim}),
                                                    c.vocab_size, c.dim, dtype);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto mat = [&](const std::string& n, int64_t rows, int64_t cols, int64_t rope_heads = 0) {
      std::vector<float> v = get(p + n, {rows, cols});
      if (rope_heads) v = model::permute_rope_rows(v, rope_heads, hd, cols);
      return model::make_linear(p + n, v, rows, cols, dtype);
    };
    LlamaLayer layer;
    layer.attn_norm = get(p + "input_layernorm.weight", {c.dim});
    layer.ffn_norm = get(p + "post_attention_layernorm.weight", {c.dim});
    layer.wq = mat("self_attn.q_proj.weight", q_dim, c.dim, c.n_heads);
    layer.wk = mat("self_attn.k_proj.weight", kv_dim, c.dim, c.n_kv_heads);
    layer.wv = mat("self_attn.v_proj.weight", kv_dim, c.dim);
    layer.wo = mat("self_attn.o_proj.weight", c.dim, q_dim);
    layer.w_gate = mat("mlp.gate_proj.weight", c.hidden_dim, c.dim);
    layer.w_up = mat("mlp.up_proj.weight", c.hidden_dim, c.dim);
    layer.w_down = mat("mlp.down_proj.weight", c.dim, c.hidden_dim);
    w.layers.push_back(std::move(layer));
  }
  try {
    return LlamaModel(std::move(c), std::move(w));
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
}

}  // namespace sparsa
