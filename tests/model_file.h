// Where the tests find the real model (SmolLM2-135M-Instruct GGUF, fetched by
// scripts/fetch_model.sh): $SPARSA_MODEL_GGUF, else the fetch script's cache folder.
// Tests that need it call SPARSA_REQUIRE_MODEL(path) and are skipped with a message otherwise.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

namespace sparsa::test {

inline std::optional<std::filesystem::path> model_gguf_path() {
  if (const char* env = std::getenv("SPARSA_MODEL_GGUF"); env && *env)
    return std::filesystem::exists(env) ? std::optional<std::filesystem::path>(env) : std::nullopt;
  std::filesystem::path cache;
  if (const char* c = std::getenv("SPARSA_MODEL_CACHE"); c && *c)
    cache = c;
  else if (const char* home = std::getenv("HOME"); home && *home)
    cache = std::filesystem::path(home) / ".cache/sparsa";
  else
    return std::nullopt;
  const auto path = cache / "SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(path) ? std::optional<std::filesystem::path>(path) : std::nullopt;
}

}  // namespace sparsa::test

#define SPARSA_REQUIRE_MODEL(var)                                                              \
  const auto var##_found = ::sparsa::test::model_gguf_path();                                  \
  if (!var##_found)                                                                            \
    GTEST_SKIP() << "SmolLM2-135M-Instruct GGUF not found: run scripts/fetch_model.sh or set " \
                    "SPARSA_MODEL_GGUF";                                                       \
  const std::filesystem::path var = *var##_found
