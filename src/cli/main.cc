// `sparsa`: prune, pack, inspect and benchmark sparse weights. See README.md.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/commands.h"
#include "sparsa/error.h"

int main(int argc, char** argv) {
  using namespace sparsa::cli;
  CLI::App app{"sparsa: prune, pack and run sparse transformer weights"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "sparsa 0.1.0");
  register_prune_command(app);
  register_inspect_command(app);
  register_pack_command(app);
  register_demo_command(app);
  register_compress_command(app);
  register_decompress_command(app);
  register_eval_command(app);
  register_run_command(app);
  register_bench_command(app);
  register_sensitivity_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitBadInput;
  } catch (const sparsa::Error& e) {
    fmt::print(stderr, "sparsa: error: {}\n", e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    fmt::print(stderr, "sparsa: internal error: {}\n", e.what());
    return kExitInternal;
  }
  return kExitOk;
}
