// Writes a pruned model as a Hugging Face checkpoint directory: every tensor of the source
// shards (the block linear layers replaced by the pruned ones, Q/K rows back in Hugging Face
// order) in one model.safetensors, plus the source's .json files (config, tokenizer).
#include <algorithm>
#include <unordered_map>

#include "model/llama_internal.h"
#include "sparsa/error.h"
#include "sparsa/model_prune.h"
#include "sparsa/safetensors.h"

namespace sparsa {
namespace fs = std::filesystem;

void write_pruned_hf(const fs::path& source, const LlamaModel& model, const fs::path& out_dir,
                     const std::map<std::string, std::string>& extra) {
  std::vector<fs::path> files;
  fs::path dir = source;
  if (fs::is_directory(source)) {
    for (const auto& e : fs::directory_iterator(source))
      if (e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    dir = source.parent_path().empty() ? fs::path(".") : source.parent_path();
    files.push_back(source);
  }
  if (files.empty()) fail("{}: no .safetensors files", source.string());
  if (fs::exists(out_dir) && !fs::is_directory(out_dir))
    fail("{}: exists and is not a directory (a pruned Hugging Face checkpoint is a directory)",
         out_dir.string());
  if (fs::exists(out_dir) && fs::equivalent(out_dir, dir))
    fail("output '{}' is the input directory; write the pruned model to a new one",
         out_dir.string());
  fs::create_directories(out_dir);

  for (const LlamaLayer& l : model.weights().layers)
    for (const Linear* x : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      if (!x->input_perm.empty())
        fail("{}: layer '{}' has an input-channel permutation, which a Hugging Face checkpoint "
             "cannot hold; write GGUF (-o OUT.gguf) from a GGUF model instead",
             out_dir.string(), x->name);
  const LlamaConfig& c = model.config();
  std::unordered_map<std::string, std::pair<const Linear*, int64_t>> linears;  // rope heads
  for (const LlamaLayer& l : model.weights().layers) {
    linears[l.wq.name] = {&l.wq, c.n_heads};
    linears[l.wk.name] = {&l.wk, c.n_kv_heads};
    for (const Linear* x : {&l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) linears[x->name] = {x, 0};
  }
  std::vector<SafetensorsFile> shards;
  std::vector<Tensor> tensors;
  std::map<std::string, std::string> metadata;
  for (const fs::path& f : files) {
    shards.push_back(read_safetensors(f));
    metadata.insert(shards.back().metadata.begin(), shards.back().metadata.end());
    for (const Tensor& t : shards.back().tensors) {
      const auto it = linears.find(t.name());
      if (it == linears.end()) {
        tensors.push_back(t);
        continue;
      }
      std::vector<float> v = unpack(it->second.first->w, t.name()).to_f32();
      if (const int64_t heads = it->second.second) {
        // The loader's permutation took HF row h*hd + a*hd/2 + b to row h*hd + 2b + a.
        const int64_t hd = c.head_dim, cols = t.cols();
        std::vector<float> hf(v.size());
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t a = 0; a < 2; ++a)
            for (int64_t b = 0; b < hd / 2; ++b)
              std::copy_n(v.data() + (h * hd + 2 * b + a) * cols, cols,
                          hf.data() + (h * hd + a * hd / 2 + b) * cols);
        v = std::move(hf);
      }
      tensors.push_back(Tensor::from_f32(t.name(), t.dtype(), t.shape(), v));
    }
  }
  for (const auto& [k, v] : extra) metadata[k] = v;
  write_safetensors(out_dir / "model.safetensors", tensors, metadata);
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".json" && e.path().filename() != "model.safetensors.index.json")
      fs::copy_file(e.path(), out_dir / e.path().filename(), fs::copy_options::overwrite_existing);
}

}  // namespace sparsa
