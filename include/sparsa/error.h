// sparsa::Error — the one exception type for bad input and failed I/O.
// The message names the input (file, tensor, pattern string) and what is wrong with it,
// so the CLI can print it as is and exit with code 2.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace sparsa {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws sparsa::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace sparsa
