// sparsa run MODEL -p PROMPT [-n 64] [--temperature T --top-p P --seed S] [--chat]:
// generates text with a Llama model (GGUF, Hugging Face safetensors or llama2.c) on the CPU or,
// with --device cuda, on the GPU, and reports tokens per second.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/device_runner.h"
#include "cli/model_source.h"
#include "core/atomic_file.h"
#include "sparsa/error.h"
#include "sparsa/model.h"
#include "sparsa/tokenizer.h"

namespace sparsa::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct RunOptions {
  std::string model;
  std::string prompt;
  int64_t tokens = 64;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  bool chat = false;
  bool ignore_eos = false;
  std::string weights;  // empty: f32 on the CPU, f16 on CUDA
  std::string device = "cpu";
  bool dense_fallback = false;
  std::string dump_logits;  // dev: the prompt's logits [n, vocab] f32 to FILE, ids to FILE.ids
};

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void write_raw(const std::string& path, const void* data, size_t bytes) {
  AtomicFile out(path);
  out.write(std::span(static_cast<const std::byte*>(data), bytes));
  out.commit();
}

void run_generate(const RunOptions& o) {
  if (o.tokens < 0) fail("-n {}: the number of tokens cannot be negative", o.tokens);
  const Device device = parse_device(o.device);
  const DType dtype = weight_dtype_for(device, o.weights);
  require_device(device);                           // before the slow model load: fail fast
  Sampler sampler(o.temperature, o.top_p, o.seed);  // validates the sampling options first

  const LoadedModel loaded = load_model(o.model, dtype);
  const LlamaModel& model = loaded.model;
  const Tokenizer& tokenizer = loaded.tokenizer;

  // The chat template of SmolLM2 and other ChatML models.
  const std::string text =
      o.chat ? "<|im_start|>user\n" + o.prompt + "<|im_end|>\n<|im_start|>assistant\n" : o.prompt;
  const std::vector<int32_t> prompt = tokenizer.encode(text, /*parse_special=*/true);
  if (prompt.empty()) fail("-p: the prompt is empty (it must hold at least one token)");
  const int64_t capacity = int64_t(prompt.size()) + o.tokens;
  if (capacity > model.config().context_length)
    fail("prompt ({} tokens) + -n {} exceed the model's context length {}", prompt.size(), o.tokens,
         model.config().context_length);

  // CUDA: uploads the weights here.
  const auto sequence = make_sequence(model, device, capacity, o.dense_fallback);
  const auto t_prompt = Clock::now();
  std::vector<float> logits = sequence->forward(prompt, !o.dump_logits.empty());
  const double prompt_s = seconds_since(t_prompt);
  if (!o.dump_logits.empty()) {
    write_raw(o.dump_logits, logits.data(), logits.size() * sizeof(float));
    write_raw(o.dump_logits + ".ids", prompt.data(), prompt.size() * sizeof(int32_t));
    const int64_t vocab = model.config().vocab_size;
    logits.erase(logits.begin(), logits.end() - vocab);  // keep the last row for sampling
  }

  if (!o.chat) fmt::print("{}", o.prompt);
  std::fflush(stdout);
  int64_t generated = 0;
  const auto t_gen = Clock::now();
  for (; generated < o.tokens; ++generated) {
    const int32_t token = sampler.sample(logits);
    if (token == tokenizer.eos_id() && !o.ignore_eos) break;
    fmt::print("{}", tokenizer.token_bytes(token));
    std::fflush(stdout);
    if (generated + 1 < o.tokens) logits = sequence->forward(std::span(&token, 1), false);
  }
  const double gen_s = seconds_since(t_gen);
  fmt::print("\n");
  fmt::print(stderr, "device      {}\n", device_description(device));
  fmt::print(stderr, "prompt      {} tokens in {:.2f} s ({:.1f} tokens/s)\n", prompt.size(),
             prompt_s, double(prompt.size()) / prompt_s);
  fmt::print(stderr, "generated   {} tokens in {:.2f} s ({:.1f} tokens/s)\n", generated, gen_s,
             generated ? double(generated) / gen_s : 0.0);
}

}  // namespace

void register_run_command(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* command =
      app.add_subcommand("run", "Generate text with a Llama model on the CPU or GPU");
  command
      ->add_option("model", options->model,
                   "model: .gguf, Hugging Face checkpoint directory, or llama2.c .bin")
      ->required();
  command->add_option("-p,--prompt", options->prompt, "prompt text")->required();
  command->add_option("-n,--tokens", options->tokens, "tokens to generate")->capture_default_str();
  command->add_option("--temperature", options->temperature, "0 = greedy")->capture_default_str();
  command->add_option("--top-p", options->top_p, "nucleus sampling mass")->capture_default_str();
  command->add_option("--seed", options->seed, "sampling seed")->capture_default_str();
  command->add_flag("--chat", options->chat, "wrap the prompt in the ChatML chat template");
  command->add_flag("--ignore-eos", options->ignore_eos, "keep generating after end-of-sequence");
  command->add_option("--weights", options->weights,
                      "dense weight dtype: f32, f16 or bf16 (default f32 on cpu, f16 on cuda)");
  command->add_option("--device", options->device, "cpu or cuda")->capture_default_str();
  command->add_flag("--dense-fallback", options->dense_fallback,
                    "cuda: run layers in formats without a GPU kernel as dense f16");
  command
      ->add_option("--dump-logits", options->dump_logits,
                   "write the prompt's logits (f32 [n, vocab]) and ids (FILE.ids)")
      ->group("");  // hidden: for scripts/check_logits.py
  command->callback([options] { run_generate(*options); });
}

}  // namespace sparsa::cli
