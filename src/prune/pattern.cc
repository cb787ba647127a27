// Pattern strings: parse, canonical form, density.
//
// The grammar is strict (no spaces, lower case) so a string names exactly one pattern:
//   dense | unstructured:S | unstructured:S:global | N:M | V:2:M | block:BHxBW:S | rows:S | cols:S
// Limits: N:M has 1 <= N < M <= 32 (the widest groups any packed format here stores);
// V:2:M has V in {16, 32, 64, 128} and 4 <= M <= 256 (M beyond 256 is no longer a useful
// structure and would not fit the 8-bit column indices of the packed format); block sides are
// at least 1; sparsities are in [0, 1).
#include "sparsa/pattern.h"

#include <fmt/format.h>

#include <charconv>
#include <string>
#include <vector>

#include "sparsa/error.h"

namespace sparsa {
namespace {

constexpr int kMaxNMGroup = 32;
constexpr int kMaxVNMGroup = 256;
constexpr std::string_view kExpected =
    "expected dense, unstructured:S, unstructured:S:global, N:M, V:2:M, block:HxW:S, rows:S or "
    "cols:S";

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

// Parses a whole field as an integer; `what` names the field in the error.
int parse_int(std::string_view text, std::string_view field, std::string_view what) {
  int value = 0;
  const auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), value);
  if (field.empty()) fail("pattern '{}': {} is missing", text, what);
  if (error == std::errc::result_out_of_range)
    fail("pattern '{}': {} '{}' is out of range", text, what, field);
  if (error != std::errc() || end != field.data() + field.size())
    fail("pattern '{}': {} '{}' is not an integer", text, what, field);
  return value;
}

double parse_sparsity(std::string_view text, std::string_view field) {
  double value = 0;
  const auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), value);
  if (field.empty()) fail("pattern '{}': the sparsity is missing", text);
  if (error != std::errc() || end != field.data() + field.size())
    fail("pattern '{}': sparsity '{}' is not a number", text, field);
  if (!(value >= 0.0 && value < 1.0))  // also rejects nan
    fail("pattern '{}': sparsity {} is outside [0, 1) (it is the fraction pruned)", text, field);
  return value + 0.0;  // -0 -> +0, so the canonical string has no sign
}

Pattern parse_nm(std::string_view text, const std::vector<std::string_view>& parts) {
  Pattern p;
  p.kind = PatternKind::NM;
  p.n = parse_int(text, parts[0], "N");
  p.m = parse_int(text, parts[1], "M");
  if (p.n < 1) fail("pattern '{}': N must be at least 1 in N:M, got {}", text, p.n);
  if (p.m > kMaxNMGroup)
    fail("pattern '{}': M must be at most {} in N:M, got {}", text, kMaxNMGroup, p.m);
  if (p.n >= p.m)
    fail("pattern '{}': N must be less than M in N:M (N of every M kept), got {} >= {}", text, p.n,
         p.m);
  return p;
}

Pattern parse_vnm(std::string_view text, const std::vector<std::string_view>& parts) {
  Pattern p;
  p.kind = PatternKind::VNM;
  p.v = parse_int(text, parts[0], "V");
  p.n = parse_int(text, parts[1], "N");
  p.m = parse_int(text, parts[2], "M");
  if (p.n != 2)
    fail("pattern '{}': V:N:M needs N = 2 (2:4 inside 4 kept columns), got N = {}", text, p.n);
  if (p.v != 16 && p.v != 32 && p.v != 64 && p.v != 128)
    fail("pattern '{}': V must be one of 16, 32, 64, 128 in V:N:M, got {}", text, p.v);
  if (p.m < 4)
    fail("pattern '{}': M must be at least 4 in V:N:M (4 columns are kept), got {}", text, p.m);
  if (p.m > kMaxVNMGroup)
    fail("pattern '{}': M must be at most {} in V:N:M, got {}", text, kMaxVNMGroup, p.m);
  return p;
}

Pattern parse_block(std::string_view text, const std::vector<std::string_view>& parts) {
  if (parts.size() != 3) fail("pattern '{}': expected block:HxW:S, e.g. block:4x4:0.5", text);
  const auto sides = split(parts[1], 'x');
  if (sides.size() != 2)
    fail("pattern '{}': block shape '{}' is not HxW, e.g. block:4x4:0.5", text, parts[1]);
  Pattern p;
  p.kind = PatternKind::Block;
  p.block_rows = parse_int(text, sides[0], "block height");
  p.block_cols = parse_int(text, sides[1], "block width");
  if (p.block_rows < 1 || p.block_cols < 1)
    fail("pattern '{}': block sides must be at least 1, got {}x{}", text, p.block_rows,
         p.block_cols);
  p.sparsity = parse_sparsity(text, parts[2]);
  return p;
}

}  // namespace

Pattern Pattern::parse(std::string_view text) {
  if (text.empty()) fail("pattern '': empty pattern string; {}", kExpected);
  const auto parts = split(text, ':');
  const std::string_view head = parts[0];
  Pattern p;
  if (head == "dense") {
    if (parts.size() != 1) fail("pattern '{}': dense takes no arguments", text);
    return p;
  }
  if (head == "unstructured") {
    if (parts.size() < 2 || parts.size() > 3)
      fail("pattern '{}': expected unstructured:S or unstructured:S:global", text);
    p.kind = PatternKind::Unstructured;
    p.sparsity = parse_sparsity(text, parts[1]);
    if (parts.size() == 3) {
      if (parts[2] != "global")
        fail("pattern '{}': expected 'global' after the sparsity, got '{}'", text, parts[2]);
      p.global = true;
    }
    return p;
  }
  if (head == "block") return parse_block(text, parts);
  if (head == "rows" || head == "cols") {
    if (parts.size() != 2) fail("pattern '{}': expected {}:S, e.g. {}:0.25", text, head, head);
    p.kind = head == "rows" ? PatternKind::Rows : PatternKind::Columns;
    p.sparsity = parse_sparsity(text, parts[1]);
    return p;
  }
  if (head.empty() || ((head[0] < '0' || head[0] > '9') && head[0] != '-'))
    fail("pattern '{}': unknown pattern; {}", text, kExpected);
  if (parts.size() == 2) return parse_nm(text, parts);
  if (parts.size() == 3) return parse_vnm(text, parts);
  fail("pattern '{}': {} numbers separated by ':'; expected N:M or V:2:M", text, parts.size());
}

std::string Pattern::to_string() const {
  // fmt's "{}" prints the shortest string that reads back as the same double.
  switch (kind) {
    case PatternKind::Dense:
      return "dense";
    case PatternKind::Unstructured:
      return fmt::format("unstructured:{}{}", sparsity, global ? ":global" : "");
    case PatternKind::NM:
      return fmt::format("{}:{}", n, m);
    case PatternKind::VNM:
      return fmt::format("{}:{}:{}", v, n, m);
    case PatternKind::Block:
      return fmt::format("block:{}x{}:{}", block_rows, block_cols, sparsity);
    case PatternKind::Rows:
      return fmt::format("rows:{}", sparsity);
    case PatternKind::Columns:
      return fmt::format("cols:{}", sparsity);
  }
  return "dense";
}

double Pattern::density() const {
  switch (kind) {
    case PatternKind::Dense:
      return 1.0;
    case PatternKind::NM:
      return double(n) / m;
    case PatternKind::VNM:
      return 2.0 / m;
    default:
      return 1.0 - sparsity;
  }
}

}  // namespace sparsa
