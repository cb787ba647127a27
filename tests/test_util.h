// Shared helpers for the tests: seeded random data (never all-zero or constant), error norms,
// temporary files and running the `sparsa` command.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

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

void write_file(const std::filesystem::path& path, const std::string& bytes);
std::string read_file(const std::filesystem::path& path);

}  // namespace sparsa::test
