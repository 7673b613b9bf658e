// Flip and Permute: torch.flip / Tensor.permute fixtures (tests/reference/flip_permute_ref.py) for every subset of
// spatial axes and every permutation; round trips; central differences; bad options and inputs.
#include <mmnet/layers/flip_permute.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
// Flips and permutations copy: exact in double; in float, exact up to rounding the fixture's input to float
// (relative error at most 2^-24 of the largest value).
template <class T>
constexpr double copy_tol() { return std::is_same_v<T, double> ? 0.0 : 6e-8; }
}  // namespace

TEST_CASE_TEMPLATE("Flip and Permute match torch.flip and Tensor.permute: outputs and grad_input", T, float, double) {
  Fixture fx("flip_permute");
  int flips = 0, permutes = 0;
  for (const auto& e : fx.all()) {
    const std::string key = e.first;
    if (key.size() < 7 || key.compare(key.size() - 6, 6, "/input") != 0) continue;
    const std::string n = key.substr(0, key.size() - 6);
    INFO("case " << n);
    const auto x = fx.tensor<T>(n + "/input");
    const auto dy = fx.tensor<T>(n + "/grad_output");
    if (fx.has(n + "/axes")) {
      std::vector<int> axes;
      for (double a : fx.array(n + "/axes").data) axes.push_back(static_cast<int>(a));
      nn::Flip<T, Backend> flip{nn::FlipOptions(axes)};
      check_close(flip.forward(x), fx.array(n + "/output"), copy_tol<T>(), n + " output");
      check_close(flip.backward(dy), fx.array(n + "/grad_input"), copy_tol<T>(), n + " grad_input");
      check_close(nn::flip(x, axes), fx.array(n + "/output"), copy_tol<T>(), n + " nn::flip");
      ++flips;
    } else {
      const auto& o = fx.array(n + "/order").data;
      const std::array<int, 3> order{static_cast<int>(o[0]), static_cast<int>(o[1]), static_cast<int>(o[2])};
      nn::Permute<T, Backend> perm{nn::PermuteOptions(order)};
      check_close(perm.forward(x), fx.array(n + "/output"), copy_tol<T>(), n + " output");
      check_close(perm.backward(dy), fx.array(n + "/grad_input"), copy_tol<T>(), n + " grad_input");
      check_close(nn::permute(x, order), fx.array(n + "/output"), copy_tol<T>(), n + " nn::permute");
      ++permutes;
    }
  }
  CHECK(flips == 8);
  CHECK(permutes == 6);
}

TEST_CASE_TEMPLATE("Flip twice and a permutation followed by its inverse give the input back", T, float, double) {
  const auto x = randn<T>({2, 2, 3, 4, 5}, 3);
  CHECK(nn::flip(nn::flip(x, {0, 2}), {2, 0}).to_vector() == x.to_vector());
  const auto p = nn::permute(x, {2, 0, 1});
  CHECK(p.shape() == Shape{2, 2, 5, 3, 4});
  CHECK(nn::permute(p, {1, 2, 0}).to_vector() == x.to_vector());  // inverse of (2, 0, 1)
}

TEST_CASE("Flip and Permute pass the central-difference gradient check (double)") {
  const auto x = randn<double>({2, 1, 2, 3, 4}, 9);
  for (const auto& axes : {std::vector<int>{}, std::vector<int>{1}, std::vector<int>{0, 2}, std::vector<int>{0, 1, 2}}) {
    nn::Flip<double, Backend> flip{nn::FlipOptions(axes)};
    gradcheck_module(flip, x);
  }
  for (const auto& order : {std::array<int, 3>{0, 2, 1}, std::array<int, 3>{2, 0, 1}, std::array<int, 3>{1, 2, 0}}) {
    nn::Permute<double, Backend> perm{nn::PermuteOptions(order)};
    gradcheck_module(perm, x);
  }
}

TEST_CASE("Flip and Permute reject bad axes and inputs") {
  using F = nn::Flip<double, Backend>;
  using P = nn::Permute<double, Backend>;
  CHECK_THROWS_AS(F{nn::FlipOptions({3})}, value_error);
  CHECK_THROWS_AS(F{nn::FlipOptions({-1})}, value_error);
  CHECK_THROWS_AS(F{nn::FlipOptions({0, 2, 0})}, value_error);  // duplicate, as torch.flip
  CHECK_THROWS_AS(P{nn::PermuteOptions({0, 0, 1})}, value_error);
  CHECK_THROWS_AS(P{nn::PermuteOptions({0, 1, 3})}, value_error);
  F flip{nn::FlipOptions({1})};
  P perm{nn::PermuteOptions({1, 0, 2})};
  CHECK_THROWS_AS(flip.backward(randn<double>({1, 1, 2, 2, 2}, 1)), value_error);  // before forward
  CHECK_THROWS_AS(perm.backward(randn<double>({1, 1, 2, 2, 2}, 1)), value_error);
  CHECK_THROWS_AS(flip.forward(randn<double>({1, 2, 3, 4}, 1)), shape_error);
  CHECK_THROWS_AS(perm.forward(Tensor<double, Backend>()), shape_error);
  perm.forward(randn<double>({1, 1, 2, 3, 4}, 1));
  CHECK_THROWS_AS(perm.backward(randn<double>({1, 1, 2, 3, 4}, 1)), shape_error);  // must be (1, 1, 3, 2, 4)
  CHECK(perm.backward(randn<double>({1, 1, 3, 2, 4}, 1)).shape() == Shape{1, 1, 2, 3, 4});
}
