// Which tensors of a file a command works on: float weight matrices (rank >= 2, f32/f16/bf16)
// whose name matches --only (if given) and does not match --skip (if given). Others pass through
// unchanged.
#pragma once

#include <optional>
#include <regex>
#include <string>

#include <CLI/CLI.hpp>

#include "sparsa/tensor.h"

namespace sparsa::cli {

struct TensorSelection {
  std::string only;  // ECMAScript regex, searched anywhere in the name; empty = all
  std::string skip;  // ECMAScript regex; empty = none

  // Adds --only and --skip to a subcommand.
  void add_options(CLI::App& command);
  // Compiles the regexes; throws sparsa::Error naming a malformed one.
  void compile();
  bool selects(const Tensor& tensor) const;

 private:
  std::optional<std::regex> only_regex_, skip_regex_;
};

}  // namespace sparsa::cli
