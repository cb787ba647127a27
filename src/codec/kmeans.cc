// Weighted 1-D k-means with greedy k-means++ seeding, exact and fast because the data are
// scalars.
//
// The values are sorted once and equal values merged (trained weights in f16/bf16 have at most
// 65536 distinct values). Seeding: each step draws 2 + ln k candidates with probability
// proportional to w * D^2 and keeps the one that lowers the potential most (the greedy variant
// scikit-learn uses; plain k-means++ misses a planted cluster now and then at k = 256). A new
// centre c only changes the distances of the points between the midpoints to its neighbouring
// centres, so a candidate's gain and its update touch that interval alone; per-block sums of
// w * D^2 (blocks of 1024 points) make a draw O(U / 1024 + 1024).
// Lloyd: on sorted data every cluster is a contiguous range bounded by the midpoints between
// centres, so with prefix sums of w and w*x an iteration costs O(k log U), not O(U k).
// A pinned zero centre (when the data hold exact zeros: pruned or padded entries) stays at 0 so
// that zeros decode to exactly zero.
// Hand-written because no packaged library does weighted, seeded, deterministic 1-D k-means.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "codec/codec_internal.h"

namespace sparsa::codec {
namespace {

// splitmix64: a tiny, portable, seedable generator (std distributions differ across libraries).
struct SplitMix {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

constexpr int64_t kBlock = 1024;

class Seeder {
 public:
  Seeder(const std::vector<double>& u, const std::vector<double>& w, SplitMix& rng)
      : u_(u), w_(w), rng_(rng), n_(static_cast<int64_t>(u.size())), d2_(n_, INFINITY),
        block_sum_((n_ + kBlock - 1) / kBlock, 0.0) {}

  // The first centre: `c` when given (the pinned zero), else a draw proportional to w.
  void first(const double* pinned) {
    if (pinned) {
      add(*pinned);
      return;
    }
    std::vector<double> w_block(block_sum_.size(), 0.0);
    for (int64_t i = 0; i < n_; ++i) w_block[i / kBlock] += w_[i];
    const int64_t pick = draw(w_, w_block);
    add(u_[pick >= 0 ? pick : n_ / 2]);
  }

  // One greedy k-means++ step; false when every point with weight already sits on a centre.
  bool step(int trials) {
    int64_t best = -1;
    double best_gain = -1;
    for (int t = 0; t < trials; ++t) {
      const int64_t pick = draw(d2_, block_sum_);
      if (pick < 0) return false;
      const double g = gain(u_[pick]);
      if (g > best_gain) {
        best_gain = g;
        best = pick;
      }
    }
    if (!(best_gain > 0)) return false;
    add(u_[best]);
    return true;
  }

  const std::vector<double>& centres() const { return centres_; }

 private:
  // Index range of points strictly closer to a new centre c than to its neighbours.
  std::pair<int64_t, int64_t> interval(double c) const {
    auto pos = std::lower_bound(centres_.begin(), centres_.end(), c);
    const double lo = pos == centres_.begin() ? -INFINITY : 0.5 * (*(pos - 1) + c);
    const double hi = pos == centres_.end() ? INFINITY : 0.5 * (c + *pos);
    return {std::upper_bound(u_.begin(), u_.end(), lo) - u_.begin(),
            std::lower_bound(u_.begin(), u_.end(), hi) - u_.begin()};
  }

  double gain(double c) const {
    const auto [a, b] = interval(c);
    double g = 0;
    for (int64_t i = a; i < b; ++i) g += d2_[i] - std::min(d2_[i], w_[i] * (u_[i] - c) * (u_[i] - c));
    return g;
  }

  void add(double c) {
    const auto [a, b] = interval(c);
    centres_.insert(std::lower_bound(centres_.begin(), centres_.end(), c), c);
    for (int64_t i = a; i < b; ++i) d2_[i] = std::min(d2_[i], w_[i] * (u_[i] - c) * (u_[i] - c));
    if (a < b)
      for (int64_t blk = a / kBlock; blk <= (b - 1) / kBlock; ++blk) {
        double s = 0;
        for (int64_t i = blk * kBlock, e = std::min(n_, (blk + 1) * kBlock); i < e; ++i)
          s += d2_[i];
        block_sum_[blk] = s;
      }
  }

  // Draws a point with probability proportional to mass[i]; sums are mass's per-block sums.
  // -1 when the total mass is zero.
  int64_t draw(const std::vector<double>& mass, const std::vector<double>& sums) {
    const double total = std::accumulate(sums.begin(), sums.end(), 0.0);
    if (!(total > 0)) return -1;
    double r = rng_.uniform() * total;
    int64_t block = -1;
    for (int64_t b = 0; b < static_cast<int64_t>(sums.size()); ++b) {
      if (sums[b] <= 0) continue;
      block = b;
      if (r < sums[b]) break;
      r -= sums[b];
    }
    // In the chosen block (or the last one with mass, when rounding ran r past the end).
    int64_t pick = -1;
    for (int64_t i = block * kBlock, e = std::min(n_, (block + 1) * kBlock); i < e; ++i) {
      if (mass[i] <= 0) continue;
      pick = i;
      if (r < mass[i]) break;
      r -= mass[i];
    }
    return pick;
  }

  const std::vector<double>& u_;
  const std::vector<double>& w_;
  SplitMix& rng_;
  int64_t n_;
  std::vector<double> d2_;  // w * squared distance to the nearest centre
  std::vector<double> block_sum_;
  std::vector<double> centres_;  // ascending
};

}  // namespace

std::vector<float> kmeans_1d(std::span<const float> data, std::span<const float> weights, int k,
                             int iterations, uint64_t seed, bool pin_zero) {
  std::vector<float> out(k, 0.0f);
  if (data.empty() || k < 1) return out;
  // Sort and merge equal values (+0 and -0 merge too).
  std::vector<int64_t> order(data.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return data[a] < data[b]; });
  bool any_weight = false;
  for (float w : weights) any_weight = any_weight || w > 0;
  std::vector<double> u, w;
  for (int64_t i : order) {
    const double wi = any_weight ? weights[i] : 1.0;
    if (!u.empty() && u.back() == data[i]) {
      w.back() += wi;
    } else {
      u.push_back(data[i]);
      w.push_back(wi);
    }
  }
  const int64_t n = static_cast<int64_t>(u.size());

  SplitMix rng{seed};
  Seeder seeder(u, w, rng);
  const double zero = 0.0;
  seeder.first(pin_zero ? &zero : nullptr);
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
  while (static_cast<int>(seeder.centres().size()) < k && seeder.step(trials)) {
  }
  std::vector<double> centres = seeder.centres();
  const int c = static_cast<int>(centres.size());
  const int pinned =
      pin_zero ? static_cast<int>(std::find(centres.begin(), centres.end(), 0.0) - centres.begin())
               : -1;

  // Lloyd on sorted data with prefix sums. Each cluster's mean stays inside its own cell, and
  // an empty cluster keeps its centre, so the centres stay ascending.
  std::vector<double> pw(n + 1, 0.0), pwx(n + 1, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    pw[i + 1] = pw[i] + w[i];
    pwx[i + 1] = pwx[i] + w[i] * u[i];
  }
  std::vector<int64_t> bounds(c + 1, 0), previous;
  bounds[c] = n;
  for (int it = 0; it < iterations; ++it) {
    for (int j = 0; j + 1 < c; ++j)
      bounds[j + 1] = std::upper_bound(u.begin(), u.end(), 0.5 * (centres[j] + centres[j + 1])) -
                      u.begin();
    if (bounds == previous) break;
    previous = bounds;
    for (int j = 0; j < c; ++j) {
      const double mass = pw[bounds[j + 1]] - pw[bounds[j]];
      if (j != pinned && mass > 0) centres[j] = (pwx[bounds[j + 1]] - pwx[bounds[j]]) / mass;
    }
  }
  for (int j = 0; j < k; ++j) out[j] = static_cast<float>(centres[std::min(j, c - 1)]);
  std::sort(out.begin(), out.end());
  return out;
}

int nearest_centroid(std::span<const float> codebook, float value) {
  const auto it = std::lower_bound(codebook.begin(), codebook.end(), value);
  if (it == codebook.begin()) return 0;
  if (it == codebook.end()) return static_cast<int>(codebook.size()) - 1;
  const int hi = static_cast<int>(it - codebook.begin());
  return (value - codebook[hi - 1] <= codebook[hi] - value) ? hi - 1 : hi;
}

}  // namespace sparsa::codec
