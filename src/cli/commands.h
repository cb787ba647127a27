// The `sparsa` subcommands. Each file src/cli/<name>_command.cc registers one subcommand on the
// CLI11 app; the callback runs it. Bad input throws sparsa::Error, which main() turns into a
// message on stderr and exit code 2.
#pragma once

#include <CLI/CLI.hpp>

namespace sparsa::cli {

void register_prune_command(CLI::App& app);
void register_inspect_command(CLI::App& app);
void register_pack_command(CLI::App& app);
void register_demo_command(CLI::App& app);
void register_compress_command(CLI::App& app);
void register_decompress_command(CLI::App& app);
void register_bench_command(CLI::App& app);
void register_eval_command(CLI::App& app);
void register_run_command(CLI::App& app);
void register_sensitivity_command(CLI::App& app);

// Exit codes shared by every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitInternal = 1;
inline constexpr int kExitBadInput = 2;

}  // namespace sparsa::cli
