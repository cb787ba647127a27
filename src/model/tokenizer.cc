// Byte-level BPE (GPT-2). The pre-tokenisation regex is hand-written instead of using a regex
// library because it needs Unicode classes (\p{L}, \p{N}) and a look-ahead that std::regex
// lacks; the classes are exact for ASCII and Latin-1 and approximate elsewhere (see
// classify()): punctuation, symbols, marks and emoji blocks are "other", everything else in
// those scripts counts as a letter.
#include "sparsa/tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <queue>

#include "sparsa/error.h"
#include "sparsa/gguf.h"

namespace sparsa {
namespace {

enum class CharClass { Letter, Number, Space, Other };

bool in(uint32_t cp, uint32_t lo, uint32_t hi) { return cp >= lo && cp <= hi; }

CharClass classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::Letter;
    if (cp >= '0' && cp <= '9') return CharClass::Number;
    if (cp == ' ' || in(cp, 0x09, 0x0D)) return CharClass::Space;
    return CharClass::Other;
  }
  // \s beyond ASCII (PCRE's and Rust regex's White_Space).
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || in(cp, 0x2000, 0x200A) || cp == 0x2028 ||
      cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)
    return CharClass::Space;
  // \p{N}: Latin-1 superscripts and fractions, common decimal digit blocks, number forms.
  if (cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || in(cp, 0xBC, 0xBE) || in(cp, 0x660, 0x669) ||
      in(cp, 0x6F0, 0x6F9) || in(cp, 0x966, 0x96F) || cp == 0x2070 || in(cp, 0x2074, 0x2079) ||
      in(cp, 0x2080, 0x2089) || in(cp, 0x2150, 0x2189) || in(cp, 0x2460, 0x249B) ||
      in(cp, 0x24EA, 0x24FF) || in(cp, 0x2776, 0x2793) || cp == 0x3007 || in(cp, 0x3021, 0x3029) ||
      in(cp, 0xFF10, 0xFF19))
    return CharClass::Number;
  // Letters in Latin-1 other than the symbol block and the two operators.
  if (cp < 0x100) {
    if (cp == 0xAA || cp == 0xB5 || cp == 0xBA) return CharClass::Letter;
    if (cp < 0xC0 || cp == 0xD7 || cp == 0xF7) return CharClass::Other;
    return CharClass::Letter;
  }
  // Marks, punctuation, symbols, emoji, private use: neither letter nor number.
  if (in(cp, 0x300, 0x36F) || in(cp, 0x2000, 0x2BFF) || in(cp, 0x2E00, 0x2E7F) ||
      in(cp, 0x3000, 0x3004) || in(cp, 0x3008, 0x3020) || in(cp, 0x3030, 0x303F) ||
      in(cp, 0xD800, 0xF8FF) || in(cp, 0xFE00, 0xFE0F) || in(cp, 0xFE30, 0xFE6F) ||
      in(cp, 0xFF00, 0xFF0F) || in(cp, 0xFF1A, 0xFF20) || in(cp, 0xFF3B, 0xFF40) ||
      in(cp, 0xFF5B, 0xFF65) || in(cp, 0xFFF0, 0xFFFF) || in(cp, 0x1F000, 0x1FAFF) || cp >= 0xE0000)
    return CharClass::Other;
  return CharClass::Letter;
}

// One code point of `text` at `pos`: its value and length in bytes. An invalid byte stands for
// itself (length 1) and classifies as Other, so any byte string can be tokenised.
struct CodePoint {
  uint32_t cp;
  int len;
};

CodePoint decode_utf8(std::string_view text, size_t pos) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t c = b(pos);
  const size_t left = text.size() - pos;
  const auto cont = [&](size_t i) { return (b(i) & 0xC0) == 0x80; };
  if (c < 0x80) return {c, 1};
  if ((c & 0xE0) == 0xC0 && left >= 2 && cont(pos + 1) && c >= 0xC2)
    return {uint32_t(c & 0x1F) << 6 | (b(pos + 1) & 0x3F), 2};
  if ((c & 0xF0) == 0xE0 && left >= 3 && cont(pos + 1) && cont(pos + 2)) {
    const uint32_t cp =
        uint32_t(c & 0x0F) << 12 | uint32_t(b(pos + 1) & 0x3F) << 6 | (b(pos + 2) & 0x3F);
    if (cp >= 0x800) return {cp, 3};
  }
  if ((c & 0xF8) == 0xF0 && left >= 4 && cont(pos + 1) && cont(pos + 2) && cont(pos + 3)) {
    const uint32_t cp = uint32_t(c & 0x07) << 18 | uint32_t(b(pos + 1) & 0x3F) << 12 |
                        uint32_t(b(pos + 2) & 0x3F) << 6 | (b(pos + 3) & 0x3F);
    if (cp >= 0x10000 && cp <= 0x10FFFF) return {cp, 4};
  }
  return {0xFFFFFFFFu, 1};  // invalid: Other
}

CharClass class_of(const CodePoint& c) {
  return c.cp == 0xFFFFFFFFu ? CharClass::Other : classify(c.cp);
}

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 to 256, 257, ...
struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteMap() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = in(b, 33, 126) || in(b, 161, 172) || in(b, 174, 255);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(next++);
      to_unicode[b] = utf8_encode(cp);
      to_byte[cp] = uint8_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// The GPT-2 pattern applied to `text`, appending pieces (as string_views into text).
void split_gpt2(std::string_view text, std::vector<std::string_view>& out) {
  // Decode once: code points with their byte offsets.
  std::vector<CodePoint> cps;
  std::vector<size_t> offsets;
  for (size_t pos = 0; pos < text.size();) {
    const CodePoint c = decode_utf8(text, pos);
    cps.push_back(c);
    offsets.push_back(pos);
    pos += c.len;
  }
  offsets.push_back(text.size());
  const size_t n = cps.size();
  const auto cls = [&](size_t i) { return class_of(cps[i]); };
  const auto is_char = [&](size_t i, char ch) { return i < n && cps[i].cp == uint32_t(ch); };

  size_t i = 0;
  while (i < n) {
    size_t end = i;
    // 's|'t|'re|'ve|'m|'ll|'d
    if (is_char(i, '\'')) {
      if (is_char(i + 1, 's') || is_char(i + 1, 't') || is_char(i + 1, 'm') || is_char(i + 1, 'd'))
        end = i + 2;
      else if ((is_char(i + 1, 'r') && is_char(i + 2, 'e')) ||
               (is_char(i + 1, 'v') && is_char(i + 2, 'e')) ||
               (is_char(i + 1, 'l') && is_char(i + 2, 'l')))
        end = i + 3;
    }
    if (end == i) {
      // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional ASCII space, then a run of one
      // class (letters, numbers, or neither-nor-space).
      const size_t start = is_char(i, ' ') ? i + 1 : i;
      if (start < n && cls(start) != CharClass::Space) {
        const CharClass c = cls(start);
        end = start + 1;
        while (end < n && cls(end) == c) ++end;
      }
    }
    if (end == i) {
      // `\s+(?!\S)` then `\s+`: a whitespace run, leaving its last character to the next piece
      // when a non-space follows (and the run is longer than one).
      size_t j = i;
      while (j < n && cls(j) == CharClass::Space) ++j;
      end = (j < n && j - i > 1) ? j - 1 : j;
    }
    out.push_back(text.substr(offsets[i], offsets[end] - offsets[i]));
    i = end;
  }
}

PreTokenizer pre_tokenizer_for(const std::string& where, const std::string& pre) {
  // llama.cpp's names; those with the digit split first map to SmolLm, plain GPT-2 to Gpt2.
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" ||
      pre == "codeshell" || pre == "exaone" || pre == "minerva-7b")
    return PreTokenizer::SmolLm;
  if (pre == "gpt-2" || pre == "gpt2" || pre == "default" || pre == "olmo" || pre == "jais" ||
      pre == "poro-chat" || pre == "viking")
    return PreTokenizer::Gpt2;
  fail(
      "{}: tokenizer.ggml.pre '{}' is not supported (known: smollm, starcoder, gpt-2, default, "
      "...)",
      where, pre);
}

}  // namespace

Tokenizer::Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                     std::vector<int32_t> token_types, PreTokenizer pre, int32_t bos_id,
                     int32_t eos_id)
    : tokens_(std::move(tokens)),
      token_types_(std::move(token_types)),
      pre_(pre),
      bos_id_(bos_id),
      eos_id_(eos_id) {
  if (tokens_.empty()) fail("tokenizer: empty vocabulary");
  if (tokens_.size() > size_t(INT32_MAX))
    fail("tokenizer: vocabulary of {} tokens is too large", tokens_.size());
  if (!token_types_.empty() && token_types_.size() != tokens_.size())
    fail("tokenizer: {} token types for {} tokens", token_types_.size(), tokens_.size());
  ids_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) ids_.emplace(tokens_[i], int32_t(i));  // first wins
  merge_ranks_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const size_t space = merges[r].find(' ', 1);
    if (space == std::string::npos || space + 1 >= merges[r].size())
      fail("tokenizer: merge #{} '{}' is not two tokens separated by a space", r, merges[r]);
    merge_ranks_.emplace(merges[r], int32_t(r));
  }
  for (size_t i = 0; i < token_types_.size(); ++i)
    if ((token_types_[i] == 3 || token_types_[i] == 4) && !tokens_[i].empty())
      specials_.push_back(int32_t(i));
  std::stable_sort(specials_.begin(), specials_.end(),
                   [&](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
  for (int32_t id : {bos_id_, eos_id_})
    if (id < -1 || id >= vocab_size())
      fail("tokenizer: special token id {} outside the vocabulary of {}", id, vocab_size());
}

Tokenizer Tokenizer::from_gguf(const GgufFile& file) {
  const std::string where = file.path().string();
  const std::string model = file.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    fail("{}: tokenizer.ggml.model '{}' is not supported (sparsa reads byte-level BPE, 'gpt2')",
         where, model);
  const GgufValue* pre_value = file.find("tokenizer.ggml.pre");
  const PreTokenizer pre = pre_value
                               ? pre_tokenizer_for(where, file.get_string("tokenizer.ggml.pre"))
                               : PreTokenizer::Gpt2;
  std::vector<int32_t> types;
  if (file.find("tokenizer.ggml.token_type"))
    for (int64_t t : file.get_int_array("tokenizer.ggml.token_type")) types.push_back(int32_t(t));
  try {
    return Tokenizer(file.get_string_array("tokenizer.ggml.tokens"),
                     file.get_string_array("tokenizer.ggml.merges"), std::move(types), pre,
                     int32_t(file.get_int("tokenizer.ggml.bos_token_id", -1)),
                     int32_t(file.get_int("tokenizer.ggml.eos_token_id", -1)));
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.rfind(where, 0) == 0) throw;
    fail("{}: {}", where, message);
  }
}

Tokenizer Tokenizer::from_hf_json(const std::filesystem::path& path, int32_t bos_id,
                                  int32_t eos_id) {
  using nlohmann::json;
  const std::string where = path.string();
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", where);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", where, e.what());
  }
  try {
    const json& model = j.at("model");
    if (model.value("type", std::string()) != "BPE")
      fail("{}: model.type is '{}'; sparsa reads byte-level BPE tokenizers", where,
           model.value("type", std::string()));
    if (model.value("ignore_merges", false) || model.value("byte_fallback", false))
      fail("{}: BPE with ignore_merges or byte_fallback is not supported", where);
    // The pre-tokenizer: ByteLevel, or Sequence[Digits(individual_digits), ByteLevel].
    const json& pre = j.at("pre_tokenizer");
    PreTokenizer kind;
    const auto is_byte_level = [](const json& p) {
      return p.is_object() && p.value("type", "") == "ByteLevel";
    };
    if (is_byte_level(pre)) {
      kind = PreTokenizer::Gpt2;
    } else if (pre.is_object() && pre.value("type", "") == "Sequence" &&
               pre.at("pretokenizers").size() == 2 &&
               pre["pretokenizers"][0].value("type", "") == "Digits" &&
               pre["pretokenizers"][0].value("individual_digits", false) &&
               is_byte_level(pre["pretokenizers"][1])) {
      kind = PreTokenizer::SmolLm;
    } else {
      fail("{}: pre_tokenizer {} is not supported (ByteLevel, or Digits then ByteLevel)", where,
           pre.dump().substr(0, 200));
    }
    const json& vocab = model.at("vocab");
    std::vector<std::string> tokens(vocab.size());
    for (const auto& [text, id] : vocab.items()) {
      const int64_t i = id.get<int64_t>();
      if (i < 0 || i >= int64_t(tokens.size()))
        fail("{}: token '{}' has id {} outside 0..{}", where, text, i, tokens.size() - 1);
      tokens[i] = text;
    }
    std::vector<int32_t> types(tokens.size(), 1);
    for (const json& added : j.value("added_tokens", json::array())) {
      const int64_t i = added.at("id").get<int64_t>();
      if (i < 0) fail("{}: added token with id {}", where, i);
      if (i >= int64_t(tokens.size())) {
        tokens.resize(i + 1);
        types.resize(i + 1, 1);
      }
      tokens[i] = added.at("content").get<std::string>();
      types[i] = added.value("special", false) ? 3 : 4;
    }
    std::vector<std::string> merges;
    for (const json& m : model.at("merges"))  // "a b" (older files) or ["a", "b"]
      merges.push_back(m.is_string()
                           ? m.get<std::string>()
                           : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    return Tokenizer(std::move(tokens), merges, std::move(types), kind, bos_id, eos_id);
  } catch (const json::exception& e) {
    fail("{}: unexpected tokenizer.json structure: {}", where, e.what());
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.rfind(where, 0) == 0) throw;
    fail("{}: {}", where, message);
  }
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string_view> pieces;
  if (pre_ == PreTokenizer::Gpt2) {
    split_gpt2(text, pieces);
  } else {
    // Every \p{N} code point is a piece of its own; the GPT-2 pattern splits the text between.
    size_t start = 0;
    for (size_t pos = 0; pos < text.size();) {
      const CodePoint c = decode_utf8(text, pos);
      if (class_of(c) == CharClass::Number) {
        if (pos > start) split_gpt2(text.substr(start, pos - start), pieces);
        pieces.push_back(text.substr(pos, c.len));
        start = pos + c.len;
      }
      pos += c.len;
    }
    if (start < text.size()) split_gpt2(text.substr(start), pieces);
  }
  return {pieces.begin(), pieces.end()};
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const ByteMap& bytes = byte_map();
  // The piece in GPT-2's byte-level spelling; symbols are [begin, begin + len) ranges of it,
  // linked left to right, so merging is O(n log n) even for very long pieces.
  std::string text;
  std::vector<size_t> begin;
  for (char c : piece) {
    begin.push_back(text.size());
    text += bytes.to_unicode[static_cast<uint8_t>(c)];
  }
  const size_t n = begin.size();
  std::vector<size_t> len(n);
  std::vector<int64_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    len[i] = (i + 1 < n ? begin[i + 1] : text.size()) - begin[i];
    prev[i] = int64_t(i) - 1;
    next[i] = i + 1 < n ? int64_t(i + 1) : -1;
  }
  // Candidate merges, lowest rank first and leftmost on ties: the order in which GPT-2's BPE
  // applies them. An entry goes stale when either side has merged since; `size` detects that.
  struct Candidate {
    int32_t rank;
    size_t left, right, size;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  std::string key;
  const auto consider = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0) return;
    key.assign(text, begin[left], len[left]).append(" ").append(text, begin[right], len[right]);
    if (const auto it = merge_ranks_.find(key); it != merge_ranks_.end())
      queue.push({it->second, size_t(left), size_t(right), len[left] + len[right]});
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(int64_t(i), int64_t(i + 1));
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    if (len[c.left] == 0 || len[c.right] == 0 || next[c.left] != int64_t(c.right) ||
        len[c.left] + len[c.right] != c.size)
      continue;                   // stale
    len[c.left] += len[c.right];  // symbols are adjacent in `text`
    len[c.right] = 0;
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = int64_t(c.left);
    consider(prev[c.left], int64_t(c.left));
    consider(int64_t(c.left), next[c.left]);
  }
  std::vector<std::string> symbols;
  for (int64_t i = n ? 0 : -1; i >= 0; i = next[i])
    symbols.push_back(text.substr(begin[i], len[i]));
  for (const auto& s : symbols) {
    if (const auto it = ids_.find(s); it != ids_.end()) {
      out.push_back(it->second);
      continue;
    }
    // A symbol missing from the vocabulary: its single bytes, dropping those the vocabulary
    // cannot spell (SmolLM2 has no token for 0x04, 0xC0, 0xFF, ...), as Hugging Face
    // tokenizers and llama.cpp do.
    for (size_t pos = 0; pos < s.size();) {
      const CodePoint c = decode_utf8(s, pos);
      if (const auto it = ids_.find(s.substr(pos, c.len)); it != ids_.end())
        out.push_back(it->second);
      pos += c.len;
    }
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  const auto encode_text = [&](std::string_view part) {
    for (const auto& piece : pre_tokenize(part)) encode_piece(piece, out);
  };
  if (!parse_special || specials_.empty()) {
    encode_text(text);
    return out;
  }
  size_t start = 0, pos = 0;
  while (pos < text.size()) {
    int32_t match = -1;
    for (int32_t id : specials_)  // longest first
      if (text.substr(pos, tokens_[id].size()) == tokens_[id]) {
        match = id;
        break;
      }
    if (match < 0) {
      ++pos;
      continue;
    }
    if (pos > start) encode_text(text.substr(start, pos - start));
    out.push_back(match);
    pos += tokens_[match].size();
    start = pos;
  }
  if (start < text.size()) encode_text(text.substr(start));
  return out;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < token_types_.size() &&
         (token_types_[id] == 3 || token_types_[id] == 4);
}

int32_t Tokenizer::find(std::string_view token) const {
  const auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    fail("tokenizer: token id {} outside the vocabulary of {}", id, vocab_size());
  const std::string& text = tokens_[id];
  if (is_special(id)) return text;
  const ByteMap& bytes = byte_map();
  std::string out;
  for (size_t pos = 0; pos < text.size();) {
    const CodePoint c = decode_utf8(text, pos);
    const auto it = bytes.to_byte.find(c.cp);
    if (it != bytes.to_byte.end())
      out += char(it->second);
    else
      out.append(text, pos, c.len);  // not a byte-level character: keep its UTF-8 as is
    pos += c.len;
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

}  // namespace sparsa
