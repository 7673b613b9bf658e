// LeakyReLU: PyTorch fixtures (tests/reference/leaky_relu_ref.py) for several slopes incl. the gradient at 0,
// central-difference checks and bad inputs.
#include <cmath>

#include <mmnet/layers/activation.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("LeakyReLU matches PyTorch", T, float, double) {
  Fixture fx("leaky_relu");
  const auto x = fx.tensor<T>("input");
  const auto dy = fx.tensor<T>("grad_output");
  const std::pair<const char*, nn::LeakyReLUOptions> cases[] = {
      {"default", nn::LeakyReLUOptions()},
      {"slope02", nn::LeakyReLUOptions().negative_slope(0.2)},
      {"slope0", nn::LeakyReLUOptions().negative_slope(0.0)},
      {"negative", nn::LeakyReLUOptions().negative_slope(-0.5)},
  };
  for (const auto& c : cases) {
    const std::string name = c.first;
    nn::LeakyReLU<T, Backend> m(c.second);
    check_close(m.forward(x), fx.array(name + "/output"), tol_output<T>(), "leaky_relu " + name + " output");
    check_close(m.backward(dy), fx.array(name + "/grad_input"), tol_grad<T>(), "leaky_relu " + name + " grad_input");
  }
}

TEST_CASE_TEMPLATE("LeakyReLU: default slope 0.01, gradient at 0 is the slope", T, float, double) {
  nn::LeakyReLU<T, Backend> m;
  CHECK(m.options().negative_slope() == 0.01);
  const auto x = Tensor<T, Backend>::from_vector({1, 4}, std::vector<double>{-2, 0, 3, -0.0});
  CHECK(m.forward(x).to_vector() == std::vector<T>{T(-2) * T(0.01), T(0), T(3), T(0)});
  const auto dx = m.backward(Tensor<T, Backend>::full({1, 4}, T(2))).to_vector();
  CHECK(dx == std::vector<T>{T(2) * T(0.01), T(2) * T(0.01), T(2), T(2) * T(0.01)});
}

TEST_CASE("LeakyReLU passes the central-difference gradient check (double)") {
  const auto x = randn<double>({2, 3, 3, 4, 2}, 11);
  nn::LeakyReLU<double, Backend> m;
  gradcheck_module(m, x);
  nn::LeakyReLU<double, Backend> neg(nn::LeakyReLUOptions().negative_slope(-0.3));
  gradcheck_module(neg, x);
}

TEST_CASE("LeakyReLU rejects bad options and inputs") {
  using L = nn::LeakyReLU<double, Backend>;
  CHECK_THROWS_AS(L(nn::LeakyReLUOptions().negative_slope(NAN)), value_error);
  CHECK_THROWS_AS(L(nn::LeakyReLUOptions().negative_slope(INFINITY)), value_error);
  L m;
  CHECK_THROWS_AS(m.backward(randn<double>({1, 2, 3}, 1)), value_error);  // no forward yet
  CHECK_THROWS_AS(m.forward(Tensor<double, Backend>()), shape_error);
  m.forward(randn<double>({1, 2, 3}, 1));
  CHECK_THROWS_AS(m.backward(randn<double>({1, 3, 2}, 1)), shape_error);
}

// The kernels the layer calls (on cpu, the fast path of backend/cpu/leaky_relu.hpp) against the generic kernels,
// called explicitly (<T, Backend>, which the cpu overloads cannot take): same single multiply, so bit-identical,
// on lengths that are not multiples of any SIMD width, below and across the fast path's OpenMP blocks (16384),
// with zeros of both signs.
TEST_CASE_TEMPLATE("LeakyReLU kernels: the backend's path equals the generic kernels", T, float, double) {
  using V = Tensor<T, Backend>;
  std::uint64_t seed = 40;
  for (const index_t n : {index_t(1), index_t(7), index_t(33), index_t(16384), index_t(16385), index_t(50001)}) {
    for (const double slope : {0.01, -0.5, 0.0}) {
      INFO("n " << n << " slope " << slope);
      auto xv = randn<T>({n}, seed++).to_vector();
      for (index_t i = 0; i < n; i += 5) xv[i] = (i / 5) % 2 == 0 ? T(0) : -T(0);
      const V x = V::from_vector({n}, xv), dy = randn<T>({n}, seed++);
      const T s = static_cast<T>(slope);
      V y_f({n}), y_g({n}), dx_f({n}), dx_g({n});
      backend::leaky_relu_forward(Backend{}, n, x.data(), s, y_f.data());
      backend::leaky_relu_forward<T, Backend>(Backend{}, n, x.data(), s, y_g.data());
      backend::leaky_relu_backward(Backend{}, n, x.data(), dy.data(), s, dx_f.data());
      backend::leaky_relu_backward<T, Backend>(Backend{}, n, x.data(), dy.data(), s, dx_g.data());
      CHECK(y_f.to_vector() == y_g.to_vector());
      CHECK(dx_f.to_vector() == dx_g.to_vector());
    }
  }
}
