#include "sparsa/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "gguf_builder.h"
#include "model_file.h"
#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "test_util.h"

namespace sparsa {
namespace {

using Pieces = std::vector<std::string>;

// A toy byte-level vocabulary: the 256 byte symbols, then merge results.
Tokenizer toy_tokenizer(const std::vector<std::string>& merges,
                        PreTokenizer pre = PreTokenizer::Gpt2) {
  // GPT-2's byte-to-unicode spelling for the printable ASCII bytes is the byte itself, and
  // Ġ (U+0120) for the space.
  std::vector<std::string> tokens;
  for (int b = 33; b < 127; ++b) tokens.push_back(std::string(1, char(b)));
  tokens.push_back("\xC4\xA0");  // Ġ = space
  for (const auto& m : merges) {
    std::string merged = m;
    merged.erase(merged.find(' '), 1);
    tokens.push_back(merged);
  }
  tokens.push_back("<|end|>");
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 3;
  return Tokenizer(tokens, merges, types, pre, -1, int32_t(tokens.size() - 1));
}

// Expected splits below come from Hugging Face `tokenizers` 0.23 (ByteLevel with its GPT-2
// regex; for SmolLm preceded by Digits(individual_digits=True)), run on the same strings.
TEST(TokenizerPre, Gpt2PatternMatchesTheReferenceSplits) {
  const Tokenizer t = toy_tokenizer({});
  EXPECT_EQ(t.pre_tokenize("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(t.pre_tokenize("  two  spaces  "), (Pieces{" ", " two", " ", " spaces", "  "}));
  EXPECT_EQ(t.pre_tokenize("a\n\n b"), (Pieces{"a", "\n\n", " b"}));
  EXPECT_EQ(t.pre_tokenize("it's 'S 'll x'd"),
            (Pieces{"it", "'s", " '", "S", " '", "ll", " x", "'d"}));
  EXPECT_EQ(t.pre_tokenize("abc123 4.5"), (Pieces{"abc", "123", " 4", ".", "5"}));
  EXPECT_EQ(t.pre_tokenize("tab\there!!!  ok"), (Pieces{"tab", "\t", "here", "!!!", " ", " ok"}));
  EXPECT_EQ(t.pre_tokenize("Ünïcödé — 東京 😀!"), (Pieces{"Ünïcödé", " —", " 東京", " 😀!"}));
  EXPECT_EQ(t.pre_tokenize("x²+y³ ½"), (Pieces{"x", "²", "+", "y", "³", " ½"}));
  EXPECT_EQ(t.pre_tokenize("end  "), (Pieces{"end", "  "}));
  EXPECT_EQ(t.pre_tokenize(""), Pieces{});
}

TEST(TokenizerPre, SmolLmSplitsEveryDigit) {
  const Tokenizer t = toy_tokenizer({}, PreTokenizer::SmolLm);
  EXPECT_EQ(t.pre_tokenize("abc123 4.5"), (Pieces{"abc", "1", "2", "3", " ", "4", ".", "5"}));
  EXPECT_EQ(t.pre_tokenize("x²+y³ ½"), (Pieces{"x", "²", "+", "y", "³", " ", "½"}));
  EXPECT_EQ(t.pre_tokenize("Hello world"), (Pieces{"Hello", " world"}));
}

TEST(TokenizerBpe, MergesByRankNotByPosition) {
  // Ranks: "b c" (0) before "a b" (1): "abc" -> a + bc, then "a bc" (2) -> abc.
  const Tokenizer t = toy_tokenizer({"b c", "a b", "a bc", "\xC4\xA0 a"});
  const int32_t a = t.find("a"), bc = t.find("bc"), abc = t.find("abc"),
                sp_a = t.find(
                    "\xC4\xA0"
                    "a");
  ASSERT_GE(bc, 0);
  ASSERT_GE(abc, 0);
  EXPECT_EQ(t.encode("abc"), (std::vector<int32_t>{abc}));
  // "abab": only "a b" applies, twice.
  EXPECT_EQ(t.encode("abab"), (std::vector<int32_t>{t.find("ab"), t.find("ab")}));
  // " a" merges the space symbol with a; "ca" has no merge.
  EXPECT_EQ(t.encode(" a ca"), (std::vector<int32_t>{sp_a, t.find("\xC4\xA0"), t.find("c"), a}));
  EXPECT_EQ(t.decode(t.encode(" a ca")), " a ca");
}

// GPT-2's BPE as written in its encoder.py: merge the lowest-ranked adjacent pair (leftmost
// first) until none is left. The reference for the tokenizer's heap-based merge loop.
std::vector<std::string> naive_bpe(const std::string& word,
                                   const std::vector<std::string>& merges) {
  std::vector<std::string> symbols;
  for (char c : word) symbols.push_back(c == ' ' ? std::string("\xC4\xA0") : std::string(1, c));
  while (symbols.size() > 1) {
    size_t best = SIZE_MAX, best_rank = SIZE_MAX;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto it = std::find(merges.begin(), merges.end(), symbols[i] + " " + symbols[i + 1]);
      const size_t rank = size_t(it - merges.begin());
      if (it != merges.end() && rank < best_rank) best_rank = rank, best = i;
    }
    if (best == SIZE_MAX) break;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + best + 1);
  }
  return symbols;
}

TEST(TokenizerBpe, MergeLoopMatchesNaiveBpeOnRandomWords) {
  const std::vector<std::string> merges = {"a b", "b a",  "a a",   "ab a",   "aa b", "ab ab",
                                           "b b", "ba b", "aab b", "abab a", "bb a", "a ab"};
  const Tokenizer t = toy_tokenizer(merges);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    std::string word(1 + rng() % 24, 'a');
    for (auto& c : word) c = "ab"[rng() % 2];
    std::vector<int32_t> expected;
    for (const auto& symbol : naive_bpe(word, merges)) expected.push_back(t.find(symbol));
    EXPECT_EQ(t.encode(word), expected) << word;
  }
}

TEST(TokenizerBpe, LongPiecesStayFast) {
  // One 200,000-byte word and one 200,000-byte run of spaces: the merge loop is O(n log n).
  const Tokenizer t = toy_tokenizer({"a b", "ab ab", "abab abab", "\xC4\xA0 \xC4\xA0"});
  std::string word;
  for (int i = 0; i < 100000; ++i) word += "ab";
  const auto start = std::chrono::steady_clock::now();
  const auto ids = t.encode(word);
  const auto spaces = t.encode(std::string(200000, ' '));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids.size(), 100000u / 4);  // "abababab" tokens
  EXPECT_EQ(t.decode(ids), word);
  EXPECT_EQ(spaces.size(), 100000u);
  EXPECT_LT(seconds, 5.0);
}

TEST(TokenizerBpe, SpecialTokensOnlyWhenAsked) {
  const Tokenizer t = toy_tokenizer({});
  const auto plain = t.encode("x<|end|>");
  EXPECT_EQ(plain.size(), 8u);  // every byte its own token
  const auto special = t.encode("x<|end|>y", true);
  EXPECT_EQ(special, (std::vector<int32_t>{t.find("x"), t.eos_id(), t.find("y")}));
  EXPECT_TRUE(t.is_special(t.eos_id()));
  EXPECT_EQ(t.decode(special), "x<|end|>y");
}

TEST(TokenizerBpe, BadInputThrows) {
  EXPECT_THROW(Tokenizer({}, {}, {}, PreTokenizer::Gpt2, -1, -1), Error);
  try {
    Tokenizer({"a", "b"}, {"ab"}, {}, PreTokenizer::Gpt2, -1, -1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("merge #0 'ab' is not two tokens"), std::string::npos)
        << e.what();
  }
  const Tokenizer t = toy_tokenizer({});
  EXPECT_THROW(t.decode(std::vector<int32_t>{-1}), Error);
  EXPECT_THROW(t.decode(std::vector<int32_t>{t.vocab_size()}), Error);
}

// tokenizer.json as Hugging Face `tokenizers` 0.23 saves it (this toy file was written by it);
// the expected ids are what that library returns for the same strings.
constexpr const char* kToyTokenizerJson = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{"id": 8, "content": "<|end|>", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Digits", "individual_digits": true},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
  "post_processor": null,
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false,
            "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "Ġ": 5, "Ġa": 6, "1": 7},
            "merges": [["a", "b"], ["ab", "c"], ["Ġ", "a"]]}
})";

TEST(TokenizerHfJson, MatchesHuggingFaceOnAToyFile) {
  const auto dir = test::temp_dir();
  test::write_file(dir / "tokenizer.json", kToyTokenizerJson);
  const Tokenizer t = Tokenizer::from_hf_json(dir / "tokenizer.json", -1, 8);
  EXPECT_EQ(t.vocab_size(), 9);
  EXPECT_EQ(t.encode("abc ab a1"), (std::vector<int32_t>{4, 5, 3, 6, 7}));
  EXPECT_EQ(t.encode("ab<|end|>c", true), (std::vector<int32_t>{3, 8, 2}));
  EXPECT_TRUE(t.is_special(8));
  EXPECT_EQ(t.decode(std::vector<int32_t>{4, 5, 3, 6, 7}), "abc ab a1");

  // Older files spell merges as "a b" strings.
  std::string old_style = kToyTokenizerJson;
  old_style.replace(old_style.find(R"([["a", "b"], ["ab", "c"], ["Ġ", "a"]])"),
                    std::string(R"([["a", "b"], ["ab", "c"], ["Ġ", "a"]])").size(),
                    R"(["a b", "ab c", "Ġ a"])");
  test::write_file(dir / "old.json", old_style);
  EXPECT_EQ(Tokenizer::from_hf_json(dir / "old.json").encode("abc ab a1"),
            (std::vector<int32_t>{4, 5, 3, 6, 7}));

  std::string wordpiece = kToyTokenizerJson;
  wordpiece.replace(wordpiece.find(R"("type": "BPE")"), 13, R"("type": "WordPiece")");
  test::write_file(dir / "wp.json", wordpiece);
  try {
    Tokenizer::from_hf_json(dir / "wp.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find((dir / "wp.json").string()), std::string::npos) << m;
    EXPECT_NE(m.find("model.type is 'WordPiece'"), std::string::npos) << m;
  }
  test::write_file(dir / "broken.json", "{\"model\": ");
  EXPECT_THROW(Tokenizer::from_hf_json(dir / "broken.json"), Error);
  EXPECT_THROW(Tokenizer::from_hf_json(dir / "missing.json"), Error);
}

// ---- the real model's tokenizer -----------------------------------------------------------

const Tokenizer& smollm() {
  static const Tokenizer t = Tokenizer::from_gguf(GgufFile::open(*test::model_gguf_path()));
  return t;
}

// Expected ids from Hugging Face `tokenizers` 0.23: a BPE model built from this GGUF's
// tokenizer.ggml.tokens and .merges with SmolLM2's pre-tokenizer (Digits(individual) +
// ByteLevel), an implementation independent of sparsa's.
TEST(TokenizerSmolLm, KnownIds) {
  SPARSA_REQUIRE_MODEL(path);
  const Tokenizer& t = smollm();
  EXPECT_EQ(t.vocab_size(), 49152);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  const std::vector<std::pair<std::string, std::vector<int32_t>>> cases = {
      {"Hello, world!", {19556, 28, 905, 17}},
      {"The quick brown fox jumps over the lazy dog.",
       {504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30}},
      {"In 2024, GPT-2's tokenizer split   spaces\n\nand newlines.",
       {788, 216,   34,   32,  34,   36,  28,  452, 9848, 29,   34,
        506, 46119, 7074, 256, 5600, 198, 198, 397, 725,  5110, 30}},
      {"I'm sure they'll say we've done it, don't you?",
       {57, 5248, 2090, 502, 3060, 1643, 392, 3543, 2294, 357, 28, 1326, 982, 346, 47}},
      {"naïve café — 東京 😀", {3546, 46494, 37366, 1841, 17097, 247, 126, 16736, 122, 40303, 218}},
      {"x = [1, 22, 333]; // C++ code\tend",
       {104, 446, 933, 33,    28,    216, 34,    34,   28,  216,
        35,  35,  35,  26695, 13241, 340, 11444, 2909, 197, 486}},
  };
  for (const auto& [text, ids] : cases) EXPECT_EQ(t.encode(text), ids) << text;
}

TEST(TokenizerSmolLm, ChatTemplateSpecialTokens) {
  SPARSA_REQUIRE_MODEL(path);
  const Tokenizer& t = smollm();
  const int32_t im_start = t.find("<|im_start|>"), im_end = t.find("<|im_end|>");
  ASSERT_GE(im_start, 0);
  ASSERT_GE(im_end, 0);
  EXPECT_TRUE(t.is_special(im_start));
  const auto ids = t.encode("<|im_start|>user\nHi<|im_end|>\n", true);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), im_start);
  EXPECT_EQ(ids[ids.size() - 2], im_end);
  EXPECT_EQ(t.decode(ids), "<|im_start|>user\nHi<|im_end|>\n");
  // Without parse_special the markers are ordinary text.
  const auto plain = t.encode("<|im_start|>", false);
  EXPECT_GT(plain.size(), 1u);
}

TEST(TokenizerSmolLm, RoundTripsVariedText) {
  SPARSA_REQUIRE_MODEL(path);
  const Tokenizer& t = smollm();
  const std::vector<std::string> texts = {
      "",
      " leading space, trailing space ",
      "Line one.\nLine two.\r\n\ttabbed\n\n\n",
      "Numbers: 3.14159, 1e-9, -42, 1,000,000 and 0x7fff.",
      "Mixed scripts: Ελληνικά, русский, العربية, हिन्दी, 日本語, 한국어.",
      "Emoji 👩‍💻🚀 and symbols ∑∫√ ≤ ≥ → ← ©®™ «quotes» “curly”.",
      "Code: for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
      "    indented\n        more\n",
      std::string("broken utf8: \xc3 \xe2\x82 \x80\xbf"),
  };
  for (const auto& text : texts) {
    const auto ids = t.encode(text);
    EXPECT_EQ(t.decode(ids), text) << text;
    for (int32_t id : ids) EXPECT_FALSE(t.is_special(id)) << text;
  }
  // Random bytes, including control characters and broken UTF-8, from the bytes the
  // vocabulary spells (it lacks 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xc0, 0xc1, 0xf1, 0xf2,
  // 0xf5..0xff).
  std::string alphabet;
  for (int b = 0; b < 256; ++b)
    if (!t.encode(std::string(1, char(b))).empty()) alphabet += char(b);
  EXPECT_EQ(alphabet.size(), 256u - 21u);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::string s(1 + rng() % 200, '\0');
    for (auto& c : s) c = alphabet[rng() % alphabet.size()];
    EXPECT_EQ(t.decode(t.encode(s)), s);
  }
}

TEST(TokenizerSmolLm, DropsBytesTheVocabularyCannotSpell) {
  SPARSA_REQUIRE_MODEL(path);
  // Hugging Face tokenizers gives [81, 82, 265] ("a", "b", " c") for the same input.
  EXPECT_EQ(smollm().encode("a\x04"
                            "b\x06 c"),
            (std::vector<int32_t>{81, 82, 265}));
}

TEST(TokenizerGguf, ReadsATokenizerFromGgufAndRejectsOtherModels) {
  using namespace test::gguf;
  const auto dir = test::temp_dir();
  GgufBuilder g;
  g.add_string("tokenizer.ggml.model", "gpt2");
  g.add_string("tokenizer.ggml.pre", "smollm");
  g.add_raw("tokenizer.ggml.tokens", 9, string_array({"a", "b", "ab", "\xC4\xA0"}));
  g.add_raw("tokenizer.ggml.merges", 9, string_array({"a b"}));
  g.add<uint32_t>("tokenizer.ggml.eos_token_id", 4, 2);
  test::write_file(dir / "ok.gguf", g.build());
  const Tokenizer t = Tokenizer::from_gguf(GgufFile::open(dir / "ok.gguf"));
  EXPECT_EQ(t.encode("ab ab"), (std::vector<int32_t>{2, 3, 2}));
  EXPECT_EQ(t.eos_id(), 2);

  GgufBuilder spm;
  spm.add_string("tokenizer.ggml.model", "llama");
  test::write_file(dir / "spm.gguf", spm.build());
  try {
    Tokenizer::from_gguf(GgufFile::open(dir / "spm.gguf"));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find((dir / "spm.gguf").string()), std::string::npos) << m;
    EXPECT_NE(m.find("tokenizer.ggml.model 'llama' is not supported"), std::string::npos) << m;
  }
  GgufBuilder bad_merge = g;
  bad_merge.add_raw("tokenizer.ggml.merges", 9, string_array({"ab"}));
  bad_merge.kv_count = 0;
  bad_merge.kv.clear();
  bad_merge.add_string("tokenizer.ggml.model", "gpt2");
  bad_merge.add_raw("tokenizer.ggml.tokens", 9, string_array({"a", "b"}));
  bad_merge.add_raw("tokenizer.ggml.merges", 9, string_array({"ab"}));
  test::write_file(dir / "merge.gguf", bad_merge.build());
  try {
    Tokenizer::from_gguf(GgufFile::open(dir / "merge.gguf"));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find((dir / "merge.gguf").string()), std::string::npos) << m;
    EXPECT_NE(m.find("merge #0"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace sparsa
