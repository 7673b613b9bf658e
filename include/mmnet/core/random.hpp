// mmnet/core/random.hpp: the seeded generator behind initialisation, data sampling and augmentation.
// A fixed seed gives the same numbers on every platform (mt19937_64 and our own distribution maths, not
// std::uniform_real_distribution, whose algorithm is implementation-defined).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <locale>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "error.hpp"

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

  // The complete state as words, for exact resumption (train/trainer.hpp stores it in checkpoints): the
  // engine's state in the standard's textual order (313 words with libstdc++'s mt19937_64: 312 state words
  // and the position), then the bit pattern of the cached normal deviate and whether it is valid (0/1).
  // set_state(state()) continues the exact sequence. The engine part's length is the standard library's, so
  // a state moves between builds that use the same standard library.
  std::vector<std::uint64_t> state() const {
    std::ostringstream os;
    os.imbue(std::locale::classic());
    os << engine_;
    std::istringstream is(os.str());
    is.imbue(std::locale::classic());
    std::vector<std::uint64_t> s;
    for (std::uint64_t w; is >> w;) s.push_back(w);
    std::uint64_t bits = 0;
    std::memcpy(&bits, &spare_, sizeof bits);
    s.push_back(bits);
    s.push_back(has_spare_ ? 1 : 0);
    return s;
  }
  // Restores a state() result; throws value_error (and changes nothing) for words that are not one.
  void set_state(const std::vector<std::uint64_t>& s) {
    const char* who = "mmnet::Generator::set_state";
    if (s.size() < 3)
      fail<value_error>(who, "state words", "the engine's words, the spare deviate and its flag", s.size());
    if (s.back() > 1) fail<value_error>(who, "last state word (spare-deviate flag)", "0 or 1", s.back());
    std::ostringstream os;
    os.imbue(std::locale::classic());
    for (std::size_t i = 0; i + 2 < s.size(); ++i) os << (i ? " " : "") << s[i];
    std::istringstream is(os.str());
    is.imbue(std::locale::classic());
    std::mt19937_64 engine;
    is >> engine;
    if (is.fail() || !(is >> std::ws).eof())
      fail<value_error>(who, "engine words", "a std::mt19937_64 state from Generator::state() of this build",
                        std::to_string(s.size() - 2) + " words that do not form one");
    engine_ = engine;
    std::memcpy(&spare_, &s[s.size() - 2], sizeof spare_);
    has_spare_ = s.back() == 1;
  }

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
