// Byte-level BPE as GPT-2 and the Llama-family GGUF files with tokenizer.ggml.model = "gpt2"
// use it: text is split into pieces by a pre-tokenisation regex, each piece's bytes are mapped
// to printable code points (GPT-2's bytes_to_unicode), then merged by rank from
// tokenizer.ggml.merges into tokens of tokenizer.ggml.tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sparsa {

class GgufFile;

// How text is split before BPE (tokenizer.ggml.pre).
enum class PreTokenizer {
  Gpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  SmolLm,  // every digit alone (\p{N}), then the GPT-2 pattern ("smollm", "starcoder", ...)
};

class Tokenizer {
 public:
  // tokens[i] is token i's text in GPT-2's byte-to-unicode spelling; merges are "left right".
  // token_types follow GGUF (1 normal, 3 control, 4 user-defined ...); control and
  // user-defined tokens are matched as whole strings when encode() parses special tokens.
  Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
            std::vector<int32_t> token_types, PreTokenizer pre, int32_t bos_id, int32_t eos_id);
  // Reads tokenizer.ggml.{model, pre, tokens, merges, token_type, bos_token_id, eos_token_id};
  // throws sparsa::Error naming the file for a tokenizer model other than "gpt2".
  static Tokenizer from_gguf(const GgufFile& file);
  // Hugging Face tokenizer.json with a byte-level BPE model (ByteLevel pre-tokenizer, optionally
  // after Digits(individual_digits)). Added tokens marked special become control tokens.
  // bos_id / eos_id: from the checkpoint's config.json (-1 when unknown).
  static Tokenizer from_hf_json(const std::filesystem::path& path, int32_t bos_id = -1,
                                int32_t eos_id = -1);

  // With parse_special, occurrences of control/user-defined token texts (e.g. "<|im_start|>")
  // become those tokens; otherwise all text is ordinary bytes. Bytes the vocabulary has no
  // token for are dropped, as Hugging Face tokenizers and llama.cpp do.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const;
  // Concatenated bytes of the tokens (special tokens as their text).
  std::string decode(std::span<const int32_t> ids) const;
  // One token's bytes.
  std::string token_bytes(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool is_special(int32_t id) const;
  // Token id of an exact token text (byte-level spelling), or -1.
  int32_t find(std::string_view token) const;

  // The pre-tokenisation split alone (pieces of the raw text), for tests.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;
  std::vector<int32_t> token_types_;
  std::unordered_map<std::string, int32_t> ids_;
  std::unordered_map<std::string, int32_t> merge_ranks_;  // "left right" -> rank
  std::vector<int32_t> specials_;  // control + user-defined ids, longest text first
  PreTokenizer pre_;
  int32_t bos_id_, eos_id_;
};

}  // namespace sparsa
