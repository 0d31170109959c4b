// SplitMix64 (Steele, Lea & Flood 2014): the one random stream of the C++ engines.
//
// Small, fast, seedable and identical on every platform, so that a seed passed from Python
// gives the same draws everywhere. Used for the sampled walk of the plastic memory and the
// random tie-breaking of the Hebbian graph. No Python, no torch.
#pragma once

#include <cstdint>

namespace mnemonix {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, n) for n > 0 (modulo: the tiny bias is part of the documented streams).
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace mnemonix
