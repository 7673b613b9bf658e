// Dropout3d: its semantics (PyTorch's random stream cannot be matched): whole channels dropped, the kept fraction
// near 1 - p, the 1 / (1 - p) scale, backward with the same mask, identity in eval mode and for p = 0, zeros for
// p = 1, seeded reproducibility, a given (PyTorch) mask, and bad inputs.
#include <cmath>
#include <mmnet/layers/dropout3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
// The multiplier of every (n, c) plane, 0 or scale; checks that y = x * it over the whole plane.
template <class T>
std::vector<T> plane_factors(const Tensor<T, Backend>& x, const Tensor<T, Backend>& y, T scale) {
  const auto xv = x.to_vector(), yv = y.to_vector();
  const index_t planes = x.size(0) * x.size(1), s = x.numel() / planes;
  std::vector<T> f(static_cast<std::size_t>(planes));
  for (index_t p = 0; p < planes; ++p) {
    const auto b = static_cast<std::size_t>(p * s);
    f[static_cast<std::size_t>(p)] = yv[b] == T(0) ? T(0) : scale;
    bool constant = true;
    for (index_t k = 0; k < s; ++k)
      constant = constant && yv[b + k] == xv[b + k] * f[static_cast<std::size_t>(p)];
    CHECK_MESSAGE(constant, "plane " << p << " is not scaled uniformly");
  }
  return f;
}
// Inputs without zeros, so that a zero output means a dropped plane.
template <class T>
Tensor<T, Backend> positive(const Shape& s, std::uint64_t seed) {
  auto v = randn<T>(s, seed).to_vector();
  for (auto& e : v) e = std::abs(e) + T(0.5);
  return Tensor<T, Backend>::from_vector(s, v);
}
}  // namespace

TEST_CASE_TEMPLATE("Dropout3d drops whole channels with probability p and scales the rest by 1/(1-p)", T, float, double) {
  const double p = 0.3;
  nn::Dropout3d<T, Backend> d(nn::Dropout3dOptions(p).seed(123));
  CHECK(d.is_training());
  const auto x = positive<T>({4, 500, 2, 3, 5}, 1);
  const auto y = d.forward(x);
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  const auto f = plane_factors(x, y, scale);
  index_t kept = 0;
  for (T v : f) kept += v != T(0);
  // 2000 planes: the kept fraction has standard deviation sqrt(0.21 / 2000) ~ 0.01
  CHECK(static_cast<double>(kept) / 2000.0 == doctest::Approx(1 - p).epsilon(0.05 / 0.7));
  // the mask accessor agrees, shape (N, C, 1, 1, 1)
  CHECK(d.mask().shape() == Shape{4, 500, 1, 1, 1});
  CHECK(d.mask().to_vector() == f);

  // backward multiplies by the same mask
  const auto dy = positive<T>({4, 500, 2, 3, 5}, 2);
  CHECK(plane_factors(dy, d.backward(dy), scale) == f);
}

TEST_CASE_TEMPLATE("Dropout3d: same seed, same masks; successive calls differ", T, float, double) {
  const auto x = positive<T>({2, 64, 1, 2, 3}, 3);
  nn::Dropout3d<T, Backend> a(nn::Dropout3dOptions(0.5).seed(7)), b(nn::Dropout3dOptions(0.5).seed(7)),
      c(nn::Dropout3dOptions(0.5).seed(8));
  const auto ya1 = a.forward(x).to_vector(), ya2 = a.forward(x).to_vector();
  CHECK(b.forward(x).to_vector() == ya1);
  CHECK(b.forward(x).to_vector() == ya2);
  CHECK(ya1 != ya2);
  CHECK(c.forward(x).to_vector() != ya1);
  a.generator().seed(7);  // restarting the generator restarts the sequence
  CHECK(a.forward(x).to_vector() == ya1);
}

TEST_CASE_TEMPLATE("Dropout3d: identity in eval mode and for p = 0, zeros for p = 1", T, float, double) {
  const auto x = randn<T>({2, 3, 2, 3, 4}, 4);
  const auto dy = randn<T>({2, 3, 2, 3, 4}, 5);
  nn::Dropout3d<T, Backend> d(nn::Dropout3dOptions(0.5));
  d.eval();
  const auto y = d.forward(x);
  CHECK(y.to_vector() == x.to_vector());
  CHECK(!y.shares_storage_with(x));  // a copy: in-place updates of y cannot reach x
  CHECK(!d.mask().defined());
  CHECK(d.backward(dy).to_vector() == dy.to_vector());

  nn::Dropout3d<T, Backend> zero(nn::Dropout3dOptions(0.0));
  CHECK(zero.forward(x).to_vector() == x.to_vector());
  CHECK(zero.backward(dy).to_vector() == dy.to_vector());

  nn::Dropout3d<T, Backend> all(nn::Dropout3dOptions(1.0));
  CHECK(all.forward(x).to_vector() == std::vector<T>(static_cast<std::size_t>(x.numel()), T(0)));
  CHECK(all.backward(dy).to_vector() == std::vector<T>(static_cast<std::size_t>(x.numel()), T(0)));
}

TEST_CASE_TEMPLATE("Dropout3d applies a given mask (e.g. exported from PyTorch) in either mode", T, float, double) {
  const auto x = randn<T>({2, 3, 1, 2, 3}, 6);
  const T s = static_cast<T>(1 / 0.9);
  auto mask = Tensor<T, Backend>::from_vector({2, 3, 1, 1, 1}, std::vector<T>{s, 0, s, s, s, 0});
  nn::Dropout3d<T, Backend> d(nn::Dropout3dOptions(0.1));
  d.eval();
  const auto y = d.forward_with_mask(x, mask).to_vector();
  mask.fill_(T(5));  // the layer keeps its own copy
  const auto xv = x.to_vector();
  const std::vector<T> m{s, 0, s, s, s, 0};
  for (std::size_t i = 0; i < xv.size(); ++i) CHECK(y[i] == xv[i] * m[i / 6]);
  const auto dy = randn<T>({2, 3, 1, 2, 3}, 7);
  const auto dx = d.backward(dy).to_vector();
  const auto dyv = dy.to_vector();
  for (std::size_t i = 0; i < dyv.size(); ++i) CHECK(dx[i] == dyv[i] * m[i / 6]);
}

TEST_CASE("Dropout3d passes the central-difference gradient check with a fixed mask (double)") {
  // Reseeding before each forward keeps the mask fixed while gradcheck perturbs the input.
  struct Fixed : Module<double, Backend> {
    nn::Dropout3d<double, Backend> d{nn::Dropout3dOptions(0.4)};
    Tensor<double, Backend> forward(const Tensor<double, Backend>& x) {
      d.generator().seed(3);
      return d.forward(x);
    }
    Tensor<double, Backend> backward(const Tensor<double, Backend>& dy) { return d.backward(dy); }
  } m;
  gradcheck_module(m, randn<double>({2, 4, 2, 1, 3}, 8));
}

TEST_CASE("Dropout3d rejects bad options and inputs") {
  using O = nn::Dropout3dOptions;
  using D = nn::Dropout3d<double, Backend>;
  CHECK_THROWS_WITH_AS(D(O(1.5)), doctest::Contains("[0, 1]"), value_error);
  CHECK_THROWS_AS(D(O(-0.1)), value_error);
  CHECK_THROWS_AS(D(O(NAN)), value_error);
  D d(O(0.5));
  CHECK_THROWS_AS(d.backward(randn<double>({1, 2, 1, 1, 2}, 1)), value_error);  // no forward yet
  CHECK_THROWS_AS(d.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(d.forward(randn<double>({2, 3, 4, 5}, 1)), shape_error);  // rank 4
  CHECK_THROWS_AS(d.forward(Tensor<double, Backend>({2, 0, 1, 2, 3})), shape_error);
  CHECK_THROWS_AS(d.forward_with_mask(randn<double>({2, 3, 1, 2, 3}, 1), randn<double>({2, 3, 1, 1, 2}, 1)),
                  shape_error);
  d.forward(randn<double>({2, 3, 1, 2, 3}, 1));
  CHECK_THROWS_AS(d.backward(randn<double>({2, 3, 1, 3, 2}, 1)), shape_error);
}
