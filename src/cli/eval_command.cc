// sparsa eval MODEL --text FILE [--ctx 512] [--max-windows N] [--weights f32|f16|bf16]:
// perplexity of a Llama model (GGUF, Hugging Face safetensors or llama2.c) over non-overlapping
// windows of a UTF-8 text file.
#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "cli/device_runner.h"
#include "cli/model_source.h"
#include "cli/progress.h"
#include "sparsa/error.h"
#include "sparsa/model.h"
#include "sparsa/model_prune.h"
#include "sparsa/tokenizer.h"

namespace sparsa::cli {
namespace {

struct EvalOptions {
  std::string model;
  std::string text;
  int64_t ctx = 512;
  int64_t max_windows = -1;
  std::string weights;  // empty: f32 on the CPU, f16 on CUDA
  std::string device = "cpu";
  bool dense_fallback = false;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the text file", path);
  std::ostringstream s;
  s << in.rdbuf();
  if (!in && !in.eof()) fail("{}: cannot read the text file", path);
  std::string text = s.str();
  // Reject files that are not UTF-8 (binary files, other encodings) with the first bad offset.
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t len = c < 0x80         ? 1
                       : (c >> 5) == 6  ? 2
                       : (c >> 4) == 14 ? 3
                       : (c >> 3) == 30 ? 4
                                        : 0;
    bool ok = len > 0 && i + len <= text.size();
    for (size_t k = 1; ok && k < len; ++k)
      ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    if (!ok) fail("{}: not UTF-8 text (invalid byte 0x{:02x} at byte offset {})", path, c, i);
    i += len;
  }
  if (text.empty()) fail("{}: the text file is empty", path);
  return text;
}

void run_eval(const EvalOptions& o) {
  if (o.ctx < 2) fail("--ctx {}: a window needs at least 2 tokens", o.ctx);
  const Device device = parse_device(o.device);
  const DType dtype = weight_dtype_for(device, o.weights);
  require_device(device);
  const std::string text = read_text(o.text);  // before the slow model load: fail fast
  const auto t0 = std::chrono::steady_clock::now();
  const LoadedModel loaded = load_model(o.model, dtype);
  const LlamaModel& model = loaded.model;
  const Tokenizer& tokenizer = loaded.tokenizer;
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.ctx > model.config().context_length)
    fail("--ctx {} exceeds the model's context length {}", o.ctx, model.config().context_length);

  const std::vector<int32_t> tokens = tokenizer.encode(text);
  const int64_t total = int64_t(tokens.size());
  int64_t windows = total / o.ctx + (total % o.ctx >= 2 ? 1 : 0);
  if (o.max_windows >= 0) windows = std::min(windows, o.max_windows);
  Progress progress("eval", windows);
  const PerplexityResult r = device_perplexity(
      model, device, tokens, o.ctx, o.max_windows, [&](int64_t, int64_t) { progress.advance(); },
      o.dense_fallback);
  progress.finish();

  fmt::print("model       {} ({})\n", o.model, loaded.description);
  const char* dtype_label = dtype == DType::F32 ? "f32" : dtype == DType::F16 ? "f16" : "bf16";
  fmt::print("weights     dense {}, loaded in {:.2f} s\n", dtype_label, load_s);
  fmt::print("device      {}\n", device_description(device));
  fmt::print("model bytes {}\n", model_bytes(model));
  fmt::print("text        {} ({} bytes, {} tokens)\n", o.text, text.size(), total);
  fmt::print("windows     {} of ctx {}, {} tokens scored\n", r.windows, o.ctx, r.scored_tokens);
  fmt::print("perplexity  {:.4f}\n", r.perplexity);
  fmt::print("nll         {:.5f} nats/token\n", r.mean_nll);
  fmt::print("time        {:.2f} s ({:.1f} tokens/s)\n", r.seconds,
             double(r.windows ? r.scored_tokens + r.windows : 0) / r.seconds);
}

}  // namespace

void register_eval_command(CLI::App& app) {
  auto options = std::make_shared<EvalOptions>();
  CLI::App* command = app.add_subcommand(
      "eval", "Perplexity of a Llama model over non-overlapping windows of a text file");
  command
      ->add_option("model", options->model,
                   "model: .gguf, Hugging Face checkpoint directory, or llama2.c .bin")
      ->required();
  command->add_option("--text", options->text, "UTF-8 text file (e.g. data/eval/eval.txt)")
      ->required();
  command->add_option("--ctx", options->ctx, "window length in tokens")->capture_default_str();
  command->add_option("--max-windows", options->max_windows, "score at most this many windows");
  command->add_option("--weights", options->weights,
                      "dense weight dtype: f32, f16 or bf16 (default f32 on cpu, f16 on cuda)");
  command->add_option("--device", options->device, "cpu or cuda")->capture_default_str();
  command->add_flag("--dense-fallback", options->dense_fallback,
                    "cuda: run layers in formats without a GPU kernel as dense f16");
  command->callback([options] { run_eval(*options); });
}

}  // namespace sparsa::cli
