// Initialisers (mmnet/init/init.hpp) against PyTorch's formulas: fan_in (with the ConvTranspose quirk),
// kaiming-uniform and default-init bounds, coverage of the range, and seeding. The expected fan_in values were
// read from torch 1.13's nn.init._calculate_fan_in_and_fan_out on the modules named below; fans, gains and
// the kaiming / xavier standard deviations are also checked against tests/reference/init_ref.py, and the
// sample statistics of large draws against those formulas.
#include <mmnet/init/init.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
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

TEST_CASE("fans, gains and init standard deviations equal torch.nn.init's") {
  Fixture fx("init");
  const char* shapes[] = {"conv3d", "conv3d_odd", "conv_transpose3d", "linear", "conv1d", "matrix_wide"};
  struct K {
    double a;
    init::FanMode mode;
    const char* mode_name;
    const char* nl;
  };
  const K kaiming[] = {{0.0, init::FanMode::fan_in, "fan_in", "leaky_relu"},
                       {0.01, init::FanMode::fan_in, "fan_in", "leaky_relu"},
                       {std::sqrt(5.0), init::FanMode::fan_in, "fan_in", "leaky_relu"},
                       {0.0, init::FanMode::fan_out, "fan_out", "relu"},
                       {0.2, init::FanMode::fan_out, "fan_out", "leaky_relu"},
                       {0.0, init::FanMode::fan_in, "fan_in", "linear"},
                       {0.0, init::FanMode::fan_out, "fan_out", "tanh"},
                       {0.0, init::FanMode::fan_in, "fan_in", "selu"}};
  for (const char* k : shapes) {
    const auto& dims = fx.array(std::string("shapes/") + k).data;
    const Shape s(std::vector<index_t>(dims.begin(), dims.end()));
    const auto& f = fx.array(std::string("fans/") + k).data;
    CHECK_MESSAGE(init::fan_in(s) == static_cast<index_t>(f[0]), k);
    CHECK_MESSAGE(init::fan_out(s) == static_cast<index_t>(f[1]), k);
    for (const K& c : kaiming) {
      char name[128];
      std::snprintf(name, sizeof(name), "kaiming/%s/a%.4f_%s_%s", k, c.a, c.mode_name, c.nl);
      check_close_scalar(init::detail::kaiming_std(s, c.a, c.mode, c.nl), fx.scalar(name), 1e-15, name);
    }
    for (double g : {1.0, std::sqrt(2.0), 5.0 / 3}) {
      char name[128];
      std::snprintf(name, sizeof(name), "xavier/%s/%.4f", k, g);
      check_close_scalar(init::detail::xavier_std(s, g), fx.scalar(name), 1e-15, name);
    }
  }
  const char* gains[] = {"linear", "conv3d", "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "leaky_relu",
                         "leaky_relu", "leaky_relu", "selu", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"};
  for (int i = 0; i < 15; ++i) {
    const std::string g = "gain/" + std::to_string(i) + "/";
    const double param = fx.scalar(g + "param");
    const double gain = param < 0 ? init::calculate_gain(gains[i]) : init::calculate_gain(gains[i], param);
    check_close_scalar(gain, fx.scalar(g + "value"), 1e-15, std::string("calculate_gain ") + gains[i]);
  }
  CHECK_THROWS_WITH_AS(init::calculate_gain("gelu"), doctest::Contains("'gelu'"), value_error);
  CHECK_THROWS_AS(init::calculate_gain("leaky_relu", NAN), value_error);
  CHECK_THROWS_AS(init::fan_out({4}), value_error);
}

namespace {
// Sample mean and standard deviation of N(0, sd^2) over n elements: a 5-sigma band on the mean and 3% on the
// standard deviation (n >= 40000 puts the 3% at more than 8 sigma).
void check_normal(const InitStats& s, double sd, double n, const char* what) {
  INFO(what << ": sd " << sd << ", sample sd " << std::sqrt(s.var) << ", mean " << s.mean);
  CHECK(std::abs(s.mean) < 5 * sd / std::sqrt(n));
  CHECK(std::abs(std::sqrt(s.var) / sd - 1) < 0.03);
  CHECK(s.max > 3 * sd);  // unbounded tails (a uniform draw of this sd stops at 1.73 sd)
  CHECK(s.min < -3 * sd);
}
}  // namespace

TEST_CASE_TEMPLATE("kaiming and xavier draws have torch's bounds and standard deviations", T, float, double) {
  Generator g(11);
  TestTensor<T> conv({64, 48, 3, 3, 3});  // fan_in 1296, fan_out 1728
  const double n = static_cast<double>(conv.numel());
  const double fi = 1296, fo = 1728;
  init::kaiming_uniform_(conv, 0.0, init::FanMode::fan_out, "relu", g);
  check_uniform(init_stats(conv), std::sqrt(3.0) * std::sqrt(2.0) / std::sqrt(fo), n, "kaiming_uniform fan_out relu");
  init::kaiming_uniform_(conv, 0.2, init::FanMode::fan_in, "leaky_relu", g);
  check_uniform(init_stats(conv), std::sqrt(3.0) * std::sqrt(2.0 / 1.04) / std::sqrt(fi), n, "kaiming_uniform a=0.2");
  init::kaiming_uniform_(conv);  // torch's defaults: a = 0, fan_in, leaky_relu -> He uniform
  check_uniform(init_stats(conv), std::sqrt(6.0 / fi), n, "kaiming_uniform defaults");
  init::kaiming_normal_(conv, 0.0, g);  // He normal: sqrt(2 / fan_in)
  check_normal(init_stats(conv), std::sqrt(2.0 / fi), n, "kaiming_normal a=0");
  init::kaiming_normal_(conv, 1e-2, init::FanMode::fan_in, "leaky_relu", g);  // nnU-Net's InitWeights_He(1e-2)
  check_normal(init_stats(conv), std::sqrt(2.0 / (1 + 1e-4)) / std::sqrt(fi), n, "kaiming_normal nnU-Net");
  init::kaiming_normal_(conv, 0.0, init::FanMode::fan_out, "tanh", g);
  check_normal(init_stats(conv), 5.0 / 3 / std::sqrt(fo), n, "kaiming_normal fan_out tanh");
  init::xavier_uniform_(conv, 1.0, g);
  check_uniform(init_stats(conv), std::sqrt(6.0 / (fi + fo)), n, "xavier_uniform");
  init::xavier_uniform_(conv, init::calculate_gain("relu"), g);
  check_uniform(init_stats(conv), std::sqrt(2.0) * std::sqrt(6.0 / (fi + fo)), n, "xavier_uniform relu gain");
  init::xavier_normal_(conv, 0.5, g);
  check_normal(init_stats(conv), 0.5 * std::sqrt(2.0 / (fi + fo)), n, "xavier_normal");

  // ConvTranspose3d(in 200, out 3, 2): fan_in = 3 * 8 = 24, fan_out = 200 * 8 = 1600 (torch's convention)
  TestTensor<T> up({200, 3, 2, 2, 2});
  init::kaiming_normal_(up, 0.0, g);
  const auto us = init_stats(up);
  CHECK(std::abs(std::sqrt(us.var) / std::sqrt(2.0 / 24) - 1) < 0.05);
  init::kaiming_normal_(up, 0.0, init::FanMode::fan_out, "relu", g);
  CHECK(std::abs(std::sqrt(init_stats(up).var) / std::sqrt(2.0 / 1600) - 1) < 0.05);
}

TEST_CASE_TEMPLATE("constant_, zeros_, ones_, empty tensors and seeded draws", T, float, double) {
  TestTensor<T> t({2, 3, 4});
  init::constant_(t, 0.25);
  for (auto v : t.to_vector()) CHECK(v == T(0.25));
  init::ones_(t);
  for (auto v : t.to_vector()) CHECK(v == T(1));
  init::zeros_(t);
  for (auto v : t.to_vector()) CHECK(v == T(0));
  TestTensor<T> empty({0, 3, 2});  // torch: a no-op on zero-element tensors
  Generator g(1);
  CHECK_NOTHROW(init::kaiming_uniform_(empty, 0.0, g));
  CHECK_NOTHROW(init::kaiming_normal_(empty, 0.0, g));
  CHECK_NOTHROW(init::xavier_uniform_(empty, 1.0, g));
  CHECK_NOTHROW(init::xavier_normal_(empty, 1.0, g));
  CHECK_NOTHROW(init::zeros_(empty));
  TestTensor<T> vec({5});
  CHECK_THROWS_WITH_AS(init::kaiming_normal_(vec, 0.0, g), doctest::Contains("rank"), value_error);
  CHECK_THROWS_AS(init::xavier_uniform_(vec, 1.0, g), value_error);
  CHECK_THROWS_AS(init::kaiming_uniform_(t, 0.0, init::FanMode::fan_in, "softplus", g), value_error);
  // same seed, same numbers; the two precisions share one stream
  TestTensor<T> a({6, 5, 3}), b({6, 5, 3});
  TestTensor<double> d({6, 5, 3});
  Generator g1(9), g2(9), g3(9);
  init::kaiming_normal_(a, 0.0, init::FanMode::fan_out, "relu", g1);
  init::kaiming_normal_(b, 0.0, init::FanMode::fan_out, "relu", g2);
  init::kaiming_normal_(d, 0.0, init::FanMode::fan_out, "relu", g3);
  CHECK(a.to_vector() == b.to_vector());
  const auto va = a.to_vector();
  const auto vd = d.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i) CHECK(va[i] == static_cast<T>(vd[i]));
  manual_seed(4);
  init::xavier_normal_(a);
  manual_seed(4);
  init::xavier_normal_(b);
  CHECK(a.to_vector() == b.to_vector());
}
