// A progress bar on stderr for long runs, drawn only when stderr is a terminal (so logs and
// pipes stay clean). Not thread-safe: advance it from one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace sparsa::cli {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  // Marks `count` more items done; `item` (e.g. a tensor name) is shown beside the bar.
  void advance(const std::string& item = {}, int64_t count = 1);
  void finish();

 private:
  void draw(const std::string& item);
  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace sparsa::cli
