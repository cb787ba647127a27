// Shared helpers for the tests: seeded random data (never all-zero or constant), error norms,
// temporary files and running the `sparsa` command.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "sparsa/error.h"
#include "sparsa/tensor.h"

namespace sparsa::test {

// Uniform values in [-1, 1] with no exact zeros, reproducible from the seed.
std::vector<float> random_values(size_t count, uint64_t seed);
Tensor random_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                     uint64_t seed);

// ||a - b||_F / ||b||_F (0 when both are zero).
double relative_error(std::span<const float> a, std::span<const float> b);

// A fresh, empty directory for one test, removed by the OS's tmp cleaning.
std::filesystem::path temp_dir();

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built `sparsa` binary with the given arguments (shell-quoted here).
CliResult run_cli(const std::vector<std::string>& args);

// Runs `body` and expects a sparsa::Error whose message contains every one of `parts` (the
// input it names and the problem).
template <typename Body>
void expect_error(Body&& body, std::initializer_list<std::string> parts) {
  try {
    body();
    ADD_FAILURE() << "no sparsa::Error thrown";
  } catch (const Error& e) {
    for (const auto& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message '" << e.what() << "' lacks '" << part << "'";
  }
}

// Expects a CLI run refused as bad input: exit code 2 and every phrase in its stderr.
inline void expect_bad_input(const CliResult& r, const std::vector<std::string>& phrases) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  for (const auto& p : phrases)
    EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' not in: " << r.err;
}

void write_file(const std::filesystem::path& path, const std::string& bytes);
std::string read_file(const std::filesystem::path& path);

}  // namespace sparsa::test
