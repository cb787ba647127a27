#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace sparsa::cli {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)),
      total_(total),
      enabled_(::isatty(STDERR_FILENO) == 1 && total > 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::seconds(1)) {}

Progress::~Progress() { finish(); }

void Progress::advance(const std::string& item, int64_t count) {
  done_ += count;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done_ < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(item);
}

void Progress::draw(const std::string& item) {
  constexpr int kWidth = 30;
  const double fraction = total_ ? static_cast<double>(done_) / total_ : 1.0;
  const int filled = static_cast<int>(fraction * kWidth);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string shown = item.size() > 40 ? "..." + item.substr(item.size() - 37) : item;
  fmt::print(stderr, "\r{} [{}{}] {}/{} {:.1f} s {:<40}", label_, std::string(filled, '#'),
             std::string(kWidth - filled, ' '), done_, total_, seconds, shown);
  std::fflush(stderr);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  draw("done");
  fmt::print(stderr, "\n");
}

}  // namespace sparsa::cli
