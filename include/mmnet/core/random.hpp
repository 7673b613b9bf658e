// mmnet/core/random.hpp: the seeded generator behind initialisation, data sampling and augmentation.
// A fixed seed gives the same numbers on every platform (mt19937_64 and our own distribution maths, not
// std::uniform_real_distribution, whose algorithm is implementation-defined).
#pragma once
#include <cmath>
#include <cstdint>
#include <random>

namespace mmnet {

class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0) : engine_(seed) {}
  void seed(std::uint64_t s) { engine_.seed(s); has_spare_ = false; }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal (Marsaglia polar method).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = uniform(-1.0, 1.0);
      v = uniform(-1.0, 1.0);
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }
  double normal(double mean, double stddev) { return mean + stddev * normal(); }
  // Uniform integer in [0, n).
  std::uint64_t integer(std::uint64_t n) { return n ? static_cast<std::uint64_t>(uniform() * static_cast<double>(n)) % n : 0; }

 private:
  std::mt19937_64 engine_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// The library-wide default generator (seed with mmnet::manual_seed, as torch.manual_seed).
inline Generator& default_generator() {
  static Generator g(0);
  return g;
}
inline void manual_seed(std::uint64_t s) { default_generator().seed(s); }

}  // namespace mmnet
