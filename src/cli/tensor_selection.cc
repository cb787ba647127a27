#include "cli/tensor_selection.h"

#include "sparsa/error.h"

namespace sparsa::cli {

void TensorSelection::add_options(CLI::App& command) {
  command.add_option("--only", only, "Regex: work only on tensors whose name matches");
  command.add_option("--skip", skip, "Regex: leave tensors whose name matches unchanged");
}

void TensorSelection::compile() {
  auto build = [](const std::string& text, const char* flag) -> std::optional<std::regex> {
    if (text.empty()) return std::nullopt;
    try {
      return std::regex(text, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail("{} '{}': not a valid regular expression ({})", flag, text, e.what());
    }
  };
  only_regex_ = build(only, "--only");
  skip_regex_ = build(skip, "--skip");
}

bool TensorSelection::selects(const Tensor& tensor) const {
  if (tensor.shape().size() < 2 || !is_float_weight_dtype(tensor.dtype())) return false;
  if (only_regex_ && !std::regex_search(tensor.name(), *only_regex_)) return false;
  if (skip_regex_ && std::regex_search(tensor.name(), *skip_regex_)) return false;
  return true;
}

}  // namespace sparsa::cli
