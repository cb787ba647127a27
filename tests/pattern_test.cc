// Pattern strings: parsing, canonical form, round trips and error messages.
#include "sparsa/pattern.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "sparsa/error.h"

namespace sparsa {
namespace {

TEST(PatternParse, EveryForm) {
  EXPECT_EQ(Pattern::parse("dense").kind, PatternKind::Dense);

  const auto u = Pattern::parse("unstructured:0.7");
  EXPECT_EQ(u.kind, PatternKind::Unstructured);
  EXPECT_DOUBLE_EQ(u.sparsity, 0.7);
  EXPECT_FALSE(u.global);
  EXPECT_TRUE(Pattern::parse("unstructured:0.7:global").global);

  const auto nm = Pattern::parse("2:4");
  EXPECT_EQ(nm.kind, PatternKind::NM);
  EXPECT_EQ(nm.n, 2);
  EXPECT_EQ(nm.m, 4);
  EXPECT_EQ(nm.v, 0);

  const auto vnm = Pattern::parse("64:2:8");
  EXPECT_EQ(vnm.kind, PatternKind::VNM);
  EXPECT_EQ(vnm.v, 64);
  EXPECT_EQ(vnm.n, 2);
  EXPECT_EQ(vnm.m, 8);

  const auto block = Pattern::parse("block:4x8:0.5");
  EXPECT_EQ(block.kind, PatternKind::Block);
  EXPECT_EQ(block.block_rows, 4);
  EXPECT_EQ(block.block_cols, 8);
  EXPECT_DOUBLE_EQ(block.sparsity, 0.5);

  EXPECT_EQ(Pattern::parse("rows:0.25").kind, PatternKind::Rows);
  EXPECT_EQ(Pattern::parse("cols:0.25").kind, PatternKind::Columns);
  EXPECT_DOUBLE_EQ(Pattern::parse("cols:0.25").sparsity, 0.25);
  // The edges of the ranges are accepted.
  EXPECT_EQ(Pattern::parse("31:32").n, 31);
  EXPECT_EQ(Pattern::parse("16:2:256").m, 256);
  EXPECT_EQ(Pattern::parse("128:2:4").v, 128);
  EXPECT_EQ(Pattern::parse("unstructured:0").sparsity, 0.0);
}

TEST(PatternParse, CanonicalString) {
  EXPECT_EQ(Pattern::parse("unstructured:0.70").to_string(), "unstructured:0.7");
  EXPECT_EQ(Pattern::parse("unstructured:7e-1:global").to_string(), "unstructured:0.7:global");
  EXPECT_EQ(Pattern::parse("02:04").to_string(), "2:4");
  EXPECT_EQ(Pattern::parse("block:04x4:.5").to_string(), "block:4x4:0.5");
  EXPECT_EQ(Pattern::parse("rows:-0").to_string(), "rows:0");
  for (const char* canonical :
       {"dense", "unstructured:0.7", "unstructured:0.7:global", "1:4", "16:32", "64:2:8", "128:2:5",
        "block:16x1:0.25", "rows:0.125", "cols:0.5"})
    EXPECT_EQ(Pattern::parse(canonical).to_string(), canonical);
}

TEST(PatternParse, RoundTripsMany) {
  std::vector<Pattern> patterns{Pattern{}};
  for (int m = 2; m <= 32; ++m)
    for (int n = 1; n < m; ++n) patterns.push_back({.kind = PatternKind::NM, .n = n, .m = m});
  for (int v : {16, 32, 64, 128})
    for (int m = 4; m <= 256; m += (m < 20 ? 1 : 17))
      patterns.push_back({.kind = PatternKind::VNM, .n = 2, .m = m, .v = v});
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> fraction(0.0, 1.0);
  for (int i = 0; i < 200; ++i) {
    const double s =
        i < 3 ? std::vector<double>{0.0, 0.5, std::nextafter(1.0, 0.0)}[i] : fraction(rng);
    patterns.push_back({.kind = PatternKind::Unstructured, .sparsity = s});
    patterns.push_back({.kind = PatternKind::Unstructured, .sparsity = s, .global = true});
    patterns.push_back({.kind = PatternKind::Rows, .sparsity = s});
    patterns.push_back({.kind = PatternKind::Columns, .sparsity = s});
    patterns.push_back({.kind = PatternKind::Block,
                        .sparsity = s,
                        .block_rows = 1 + i % 17,
                        .block_cols = 1 + (i * 7) % 64});
  }
  for (const auto& p : patterns) {
    const std::string text = p.to_string();
    EXPECT_EQ(Pattern::parse(text), p) << text;
    EXPECT_EQ(Pattern::parse(text).to_string(), text);
  }
}

TEST(PatternParse, Density) {
  EXPECT_DOUBLE_EQ(Pattern::parse("dense").density(), 1.0);
  EXPECT_DOUBLE_EQ(Pattern::parse("2:4").density(), 0.5);
  EXPECT_DOUBLE_EQ(Pattern::parse("3:8").density(), 3.0 / 8);
  EXPECT_DOUBLE_EQ(Pattern::parse("64:2:8").density(), 0.25);
  EXPECT_DOUBLE_EQ(Pattern::parse("128:2:5").density(), 0.4);
  EXPECT_DOUBLE_EQ(Pattern::parse("unstructured:0.7").density(), 1.0 - 0.7);
  EXPECT_DOUBLE_EQ(Pattern::parse("block:4x4:0.25").density(), 0.75);
  EXPECT_DOUBLE_EQ(Pattern::parse("rows:0.1").density(), 0.9);
}

// The message must quote the string and say what is wrong.
void expect_parse_error(const std::string& text, const std::string& problem) {
  try {
    Pattern::parse(text);
    ADD_FAILURE() << "'" << text << "' parsed without error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("'" + text + "'"), std::string::npos) << message;
    EXPECT_NE(message.find(problem), std::string::npos)
        << "'" << message << "' lacks '" << problem << "'";
  }
}

TEST(PatternParse, ErrorsNameTheStringAndTheProblem) {
  expect_parse_error("3:2", "N must be less than M");
  expect_parse_error("4:4", "N must be less than M");
  expect_parse_error("0:4", "N must be at least 1");
  expect_parse_error("-1:4", "N must be at least 1");
  expect_parse_error("2:40", "M must be at most 32");
  expect_parse_error("64:2:3", "M must be at least 4");
  expect_parse_error("64:2:257", "M must be at most 256");
  expect_parse_error("64:3:8", "needs N = 2");
  expect_parse_error("48:2:8", "V must be one of 16, 32, 64, 128");
  expect_parse_error("unstructured:1.5", "outside [0, 1)");
  expect_parse_error("unstructured:1", "outside [0, 1)");
  expect_parse_error("unstructured:-0.1", "outside [0, 1)");
  expect_parse_error("unstructured:nan", "outside [0, 1)");
  expect_parse_error("unstructured:abc", "not a number");
  expect_parse_error("unstructured:", "sparsity is missing");
  expect_parse_error("unstructured", "expected unstructured:S");
  expect_parse_error("unstructured:0.5:local", "expected 'global'");
  expect_parse_error("block:0x4:0.5", "at least 1");
  expect_parse_error("block:4x-2:0.5", "at least 1");
  expect_parse_error("block:4:0.5", "not HxW");
  expect_parse_error("block:4x4", "expected block:HxW:S");
  expect_parse_error("block:4x4:1.0", "outside [0, 1)");
  expect_parse_error("rows:2", "outside [0, 1)");
  expect_parse_error("cols", "expected cols:S");
  expect_parse_error("abc", "unknown pattern");
  expect_parse_error("Dense", "unknown pattern");
  expect_parse_error("dense:0.5", "no arguments");
  expect_parse_error("", "empty pattern");
  expect_parse_error("2:4x", "'4x' is not an integer");
  expect_parse_error("2:4 ", "'4 ' is not an integer");
  expect_parse_error(" 2:4", "unknown pattern");
  expect_parse_error("2:", "M is missing");
  expect_parse_error("2:4:8:16", "expected N:M or V:2:M");
  expect_parse_error("unstructured:0.5x", "not a number");
  expect_parse_error("rows:0.25:global", "expected rows:S");
  expect_parse_error("99999999999:4", "out of range");
}

}  // namespace
}  // namespace sparsa
