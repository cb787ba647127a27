// Stand-alone entry for `bench gemm` (the same subcommand as `sparsa bench gemm`), so the GPU
// script can run it from any build: gpu_gemm bench gemm [options].
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "sparsa/error.h"

int main(int argc, char** argv) {
  CLI::App app{"sparsa GPU GEMM benchmark"};
  app.require_subcommand(1);
  sparsa::cli::register_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {  // bad options: the project's bad-input code, as sparsa's
    app.exit(e);
    return 2;
  } catch (const sparsa::Error& e) {
    fmt::print(stderr, "gpu_gemm: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "gpu_gemm: {}\n", e.what());
    return 1;
  }
  return 0;
}
