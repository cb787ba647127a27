#include "cli/model_source.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/model_prune.h"
#include "sparsa/safetensors.h"

namespace sparsa::cli {
namespace {

namespace fs = std::filesystem;

// bos_token_id / eos_token_id from config.json (an integer, or a list whose first entry is used).
int32_t config_token_id(const fs::path& config_path, const char* key) {
  std::ifstream in(config_path);
  if (!in) return -1;
  const auto config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains(key)) return -1;
  const auto& v = config[key];
  if (v.is_number_integer()) return v.get<int32_t>();
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int32_t>();
  return -1;
}

Tokenizer tokenizer_beside(const fs::path& dir, const std::string& what) {
  const fs::path tokenizer = dir / "tokenizer.json";
  if (!fs::exists(tokenizer))
    fail("{}: {} carries no tokenizer; put the model's tokenizer.json beside it", what,
         tokenizer.string());
  const fs::path config = dir / "config.json";
  return Tokenizer::from_hf_json(tokenizer, config_token_id(config, "bos_token_id"),
                                 config_token_id(config, "eos_token_id"));
}

}  // namespace

DType parse_weight_dtype(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "f16") return DType::F16;
  if (name == "bf16") return DType::BF16;
  fail("--weights '{}': expected f32, f16 or bf16", name);
}

LoadedModel load_model(const std::string& path_text, DType weight_dtype) {
  const fs::path path(path_text);
  if (!fs::exists(path)) fail("{}: cannot open: no such file or directory", path_text);
  if (fs::is_directory(path) || path.extension() == ".safetensors") {
    const fs::path dir = fs::is_directory(path) ? path : path.parent_path();
    LlamaModel model = LlamaModel::from_safetensors(path, {weight_dtype});
    Tokenizer tokenizer = tokenizer_beside(dir.empty() ? fs::path(".") : dir, path_text);
    // A checkpoint written by `sparsa prune`: run its linear layers in the pattern's format.
    std::string packed;
    const fs::path pruned = fs::is_directory(path) ? path / "model.safetensors" : path;
    if (fs::exists(pruned)) {
      const auto meta = read_safetensors(pruned).metadata;
      if (const auto it = meta.find("sparsa.pattern"); it != meta.end()) {
        const Pattern pattern = Pattern::parse(it->second);
        try {
          pack_model(model, pattern);
        } catch (const Error& e) {
          fail("{}: sparsa.pattern '{}': {}", path_text, pattern.to_string(), e.what());
        }
        packed = fmt::format(", {} packed as {}", pattern.to_string(),
                             format_name(default_format(pattern)));
      }
    }
    return {std::move(model), std::move(tokenizer), "Hugging Face safetensors checkpoint" + packed};
  }
  if (is_gguf_file(path) || path.extension() == ".gguf") {
    const GgufFile file = GgufFile::open(path);  // a damaged file reports its bad magic here
    LlamaModel model = LlamaModel::from_gguf(file, {weight_dtype});
    Tokenizer tokenizer = Tokenizer::from_gguf(file);
    std::string packed;
    // A model written by `sparsa prune`: run its linear layers in the pattern's packed format.
    if (const GgufValue* p = file.find("sparsa.pattern"); p && p->type == GgufValueType::String) {
      const Pattern pattern = Pattern::parse(file.get_string("sparsa.pattern"));
      try {
        pack_model(model, pattern);
      } catch (const Error& e) {
        fail("{}: sparsa.pattern '{}': {}", path_text, pattern.to_string(), e.what());
      }
      packed = fmt::format(", {} packed as {}", pattern.to_string(),
                           format_name(default_format(pattern)));
    }
    const GgufValue* name = file.find("general.name");
    return {std::move(model), std::move(tokenizer),
            "GGUF" + (name && name->type == GgufValueType::String
                          ? ", " + file.get_string("general.name")
                          : "") + packed};
  }
  if (path.extension() == ".bin") {
    LlamaModel model = LlamaModel::from_llama2c(path, {weight_dtype});
    Tokenizer tokenizer = tokenizer_beside(
        path.parent_path().empty() ? fs::path(".") : path.parent_path(), path_text);
    return {std::move(model), std::move(tokenizer), "llama2.c checkpoint"};
  }
  // Unknown extension: GGUF is the default, and its magic check names the problem.
  const GgufFile file = GgufFile::open(path);
  LlamaModel model = LlamaModel::from_gguf(file, {weight_dtype});
  Tokenizer tokenizer = Tokenizer::from_gguf(file);
  return {std::move(model), std::move(tokenizer), "GGUF"};
}

}  // namespace sparsa::cli
