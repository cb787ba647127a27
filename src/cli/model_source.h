// Loads a Llama model and its tokenizer for `sparsa run` and `sparsa eval` from any supported
// source: a GGUF file (tokenizer inside), a Hugging Face checkpoint (a directory or a
// .safetensors file with config.json and tokenizer.json beside it), or a llama2.c .bin with a
// tokenizer.json beside it.
#pragma once

#include <string>

#include "sparsa/model.h"
#include "sparsa/tokenizer.h"

namespace sparsa::cli {

struct LoadedModel {
  LlamaModel model;
  Tokenizer tokenizer;
  std::string description;  // e.g. "GGUF, Smollm2 135M ..."
};

LoadedModel load_model(const std::string& path, DType weight_dtype);

// "f32", "f16", "bf16" -> DType; anything else throws naming the --weights value.
DType parse_weight_dtype(const std::string& name);

}  // namespace sparsa::cli
