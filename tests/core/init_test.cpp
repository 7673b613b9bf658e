// Initialisers (mmnet/init/init.hpp) against PyTorch's formulas: fan_in (with the ConvTranspose quirk),
// kaiming-uniform and default-init bounds, coverage of the range, and seeding. The expected fan_in values were
// read from torch 1.13's nn.init._calculate_fan_in_and_fan_out on the modules named below.
#include <mmnet/init/init.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

struct InitStats {
  double min = 0, max = 0, mean = 0, var = 0;
};

template <class T>
InitStats init_stats(const TestTensor<T>& t) {
  const auto v = t.to_vector();
  InitStats s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  for (T x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (T x : v) s.var += (x - s.mean) * (x - s.mean);
  s.var /= static_cast<double>(v.size());
  return s;
}

// Values of U(-bound, bound) over n elements: inside the bounds, reaching to within 0.5% of both ends, with
// the mean and variance (bound^2 / 3) of the distribution. n >= 5000 makes a false failure astronomically rare.
void check_uniform(const InitStats& s, double bound, double n, const char* what) {
  INFO(what << ": bound " << bound << ", min " << s.min << ", max " << s.max);
  CHECK(s.min >= -bound);
  CHECK(s.max <= bound);
  CHECK(s.min < -bound * 0.995);
  CHECK(s.max > bound * 0.995);
  const double sd = bound / std::sqrt(3.0);
  CHECK(std::abs(s.mean) < 5 * sd / std::sqrt(n));
  CHECK(std::abs(s.var / (sd * sd) - 1) < 0.05);
}

}  // namespace

TEST_CASE("fan_in follows torch.nn.init._calculate_fan_in_and_fan_out") {
  CHECK(init::fan_in({16, 4, 1, 3, 3}) == 36);  // Conv3d(4, 16, (1, 3, 3))
  CHECK(init::fan_in({1, 3, 3, 3, 3}) == 81);   // Conv3d(3, 1, 3)
  CHECK(init::fan_in({5, 7}) == 7);             // Linear(7, 5)
  CHECK(init::fan_in({8, 3, 2, 2, 2}) == 24);   // ConvTranspose3d(8, 3, 2): dim 1 (out) x receptive field
  CHECK_THROWS_AS(init::fan_in({6}), value_error);
}

TEST_CASE_TEMPLATE("kaiming_uniform_ and the default init lie within PyTorch's bounds and cover them", T, float,
                   double) {
  Generator g(1);
  // kaiming_uniform_(a = sqrt(5)): bound = sqrt(2 / 6) sqrt(3 / fan_in) = 1 / sqrt(fan_in)
  TestTensor<T> w({64, 32, 3, 3, 3});
  init::kaiming_uniform_(w, std::sqrt(5.0), g);
  check_uniform(init_stats(w), 1 / std::sqrt(864.0), w.numel(), "kaiming a=sqrt(5)");
  // a = 0 (He uniform): bound = sqrt(6 / fan_in)
  init::kaiming_uniform_(w, 0.0, g);
  check_uniform(init_stats(w), std::sqrt(6.0 / 864.0), w.numel(), "kaiming a=0");

  // PyTorch's default for Conv / Linear: weight as above, bias U(+-1/sqrt(fan_in))
  Parameter<T, Backend> weight, bias;
  weight.reset({6000, 8});
  bias.reset({6000});
  init::pytorch_default_(weight, &bias, g);
  check_uniform(init_stats(weight.value), 1 / std::sqrt(8.0), weight.value.numel(), "default weight");
  check_uniform(init_stats(bias.value), 1 / std::sqrt(8.0), bias.value.numel(), "default bias");
  Parameter<T, Backend> no_bias;
  CHECK_NOTHROW(init::pytorch_default_(weight, &no_bias, g));  // an absent bias is left alone
  CHECK_NOTHROW(init::pytorch_default_(weight, static_cast<Parameter<T, Backend>*>(nullptr), g));

  // ConvTranspose3d(256, 3, 2): weight (in, out, k, k, k), fan_in = out * 8 = 24, not in * 8 = 2048
  Parameter<T, Backend> tw, tb;
  tw.reset({256, 3, 2, 2, 2});
  tb.reset({3});
  init::pytorch_default_(tw, &tb, g);
  const double t_bound = 1 / std::sqrt(24.0);
  check_uniform(init_stats(tw.value), t_bound, tw.value.numel(), "conv-transpose weight");
  const auto tbs = init_stats(tb.value);
  CHECK(tbs.min >= -t_bound);
  CHECK(tbs.max <= t_bound);
  CHECK(std::max(std::abs(tbs.min), std::abs(tbs.max)) > 1 / std::sqrt(2048.0));  // would fail with dim 0's fan
}

TEST_CASE_TEMPLATE("initialisers are reproducible from a seed", T, float, double) {
  const Shape s{16, 8, 3, 3, 3};
  TestTensor<T> a(s), b(s), c(s);
  Generator g1(42), g2(42), g3(43);
  init::kaiming_uniform_(a, std::sqrt(5.0), g1);
  init::kaiming_uniform_(b, std::sqrt(5.0), g2);
  init::kaiming_uniform_(c, std::sqrt(5.0), g3);
  const auto va = a.to_vector(), vb = b.to_vector(), vc = c.to_vector();
  CHECK(va == vb);
  std::size_t same = 0;
  for (std::size_t i = 0; i < va.size(); ++i) same += va[i] == vc[i];
  CHECK(same < va.size() / 100);

  // the library's default generator, seeded as torch.manual_seed
  Parameter<T, Backend> w1, b1, w2, b2;
  for (auto* p : {&w1, &w2}) p->reset({12, 5, 3});
  for (auto* p : {&b1, &b2}) p->reset({12});
  manual_seed(7);
  init::pytorch_default_(w1, &b1);
  manual_seed(7);
  init::pytorch_default_(w2, &b2);
  CHECK(w1.value.to_vector() == w2.value.to_vector());
  CHECK(b1.value.to_vector() == b2.value.to_vector());

  // float values are the double values rounded: one stream for both precisions
  TestTensor<double> d(s);
  Generator g4(42);
  init::kaiming_uniform_(d, std::sqrt(5.0), g4);
  const auto vd = d.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i) CHECK(va[i] == static_cast<T>(vd[i]));

  // normal_: mean and standard deviation of the distribution
  TestTensor<T> n({100, 100});
  Generator g5(3);
  init::normal_(n, 0.5, 2.0, g5);
  const auto ns = init_stats(n);
  CHECK(std::abs(ns.mean - 0.5) < 5 * 2.0 / 100);
  CHECK(std::abs(std::sqrt(ns.var) / 2.0 - 1) < 0.03);
}

TEST_CASE("Generator is std::mt19937_64, identical on every platform") {
  // The C++ standard fixes mt19937_64's 10000th output for the default seed 5489: 9981545732273789042.
  Generator g(5489);
  for (int i = 0; i < 9999; ++i) g.uniform();
  CHECK(g.uniform() == static_cast<double>(9981545732273789042ull >> 11) / 9007199254740992.0);
}
