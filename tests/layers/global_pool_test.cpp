// Global pools over D, H, W: PyTorch fixtures (tests/reference/global_pool_ref.py) with random inputs, exact ties,
// all-zero and constant channels, size-1 axes and planes longer than one reduction block; gradient checks; the
// argmax tie and NaN rules; results independent of the thread count; bad inputs.
#include <cmath>
#include <limits>

#include <mmnet/core/parallel.hpp>
#include <mmnet/layers/global_pool.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
const char* const cases[] = {"randn", "ties", "zero_channel", "size1", "size1_axes", "big", "big_ties", "big_zero"};

void check_indices(const std::vector<std::int64_t>& idx, const HostArray& ref, const std::string& what) {
  REQUIRE(idx.size() == ref.data.size());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < idx.size(); ++i) wrong += static_cast<double>(idx[i]) != ref.data[i];
  CHECK_MESSAGE(wrong == 0, what << ": " << wrong << " of " << idx.size() << " argmax indices differ from PyTorch");
}

}  // namespace

TEST_CASE_TEMPLATE("GlobalAvgPool3d, GlobalMaxPool3d, GlobalStdPool3d match PyTorch", T, float, double) {
  Fixture fx("global_pool");
  for (const std::string n : cases) {
    INFO("case " << n);
    const auto x = fx.tensor<T>(n + "/input");
    const auto dy = fx.tensor<T>(n + "/grad_output");

    nn::GlobalAvgPool3d<T, Backend> avg;
    check_close(avg.forward(x), fx.array(n + "/avg/output"), tol_output<T>(), n + " avg output");
    check_close(avg.backward(dy), fx.array(n + "/avg/grad_input"), tol_grad<T>(), n + " avg grad_input");

    nn::GlobalMaxPool3d<T, Backend> mx;
    check_close(mx.forward(x), fx.array(n + "/max/output"), tol_output<T>(), n + " max output");
    check_indices(mx.indices(), fx.array(n + "/max/indices"), n + " max");
    check_close(mx.backward(dy), fx.array(n + "/max/grad_input"), tol_grad<T>(), n + " max grad_input");

    for (const auto& [suffix, eps] : {std::pair<std::string, double>{"", 1e-6}, {"_eps1e-2", 1e-2}}) {
      nn::GlobalStdPool3d<T, Backend> sd(nn::GlobalStdPool3dOptions().eps(eps));
      check_close(sd.forward(x), fx.array(n + "/std" + suffix + "/output"), tol_output<T>(), n + " std" + suffix + " output");
      check_close(sd.backward(dy), fx.array(n + "/std" + suffix + "/grad_input"), tol_grad<T>(),
                  n + " std" + suffix + " grad_input");
    }
  }
}

TEST_CASE("Global pools pass the central-difference gradient check (double)") {
  nn::GlobalAvgPool3d<double, Backend> avg;
  gradcheck_module(avg, randn<double>({2, 3, 3, 4, 5}, 1));
  nn::GlobalMaxPool3d<double, Backend> mx;
  gradcheck_module(mx, distinct({2, 3, 3, 4, 5}, 2));
  nn::GlobalStdPool3d<double, Backend> sd;
  gradcheck_module(sd, randn<double>({2, 3, 3, 4, 5}, 3));
  // An all-zero channel: std sqrt(eps) and gradient 0 (no 0/0).
  auto x = randn<double>({1, 2, 2, 3, 4}, 4);
  auto v = x.to_vector();
  for (int i = 0; i < 24; ++i) v[static_cast<std::size_t>(i)] = 0.0;
  x.assign(v);
  gradcheck_module(sd, x);
  CHECK(sd.forward(x).to_vector()[0] == doctest::Approx(std::sqrt(1e-6)).epsilon(1e-12));
  nn::GlobalStdPool3d<double, Backend> sd_eps(nn::GlobalStdPool3dOptions().eps(0.5));
  gradcheck_module(sd_eps, randn<double>({1, 2, 1, 3, 2}, 5));
  CHECK(nn::GlobalStdPool3dOptions().eps() == 1e-6);
}

TEST_CASE_TEMPLATE("GlobalMaxPool3d: first index on ties, the last NaN wins, one plane longer than a block", T, float,
                   double) {
  nn::GlobalMaxPool3d<T, Backend> mx;
  // 2 x 5000 elements: the maximum 3 occurs at 10, 4100 (second block) and 4999 in plane 0; plane 1 is all -inf.
  std::vector<T> v(10000, T(1));
  v[10] = v[4100] = v[4999] = T(3);
  for (int i = 5000; i < 10000; ++i) v[static_cast<std::size_t>(i)] = -std::numeric_limits<T>::infinity();
  auto y = mx.forward(Tensor<T, Backend>::from_vector(Shape{1, 2, 5, 10, 100}, v));
  CHECK(y.to_vector()[0] == T(3));
  CHECK(mx.indices() == std::vector<std::int64_t>{10, 0});
  const auto dx = mx.backward(Tensor<T, Backend>::full(y.shape(), T(2))).to_vector();
  CHECK(dx[10] == T(2));
  CHECK(dx[4100] == T(0));
  CHECK(dx[5000] == T(2));
  CHECK(sum(Tensor<T, Backend>::from_vector(Shape{10000}, dx)) == doctest::Approx(4.0));
  // NaN: the value is NaN and the index the last NaN (PyTorch's adaptive_max_pool3d on the CPU).
  std::vector<T> w(2 * 3 * 4, T(0));
  w[5] = w[17] = std::numeric_limits<T>::quiet_NaN();
  y = mx.forward(Tensor<T, Backend>::from_vector(Shape{1, 1, 2, 3, 4}, w));
  CHECK(std::isnan(y.to_vector()[0]));
  CHECK(mx.indices() == std::vector<std::int64_t>{17});
}

TEST_CASE("Global pools give the same bits for any thread count") {
  const auto x = randn<double>({2, 3, 9, 30, 33}, 9);
  auto run = [&] {
    nn::GlobalAvgPool3d<double, Backend> avg;
    nn::GlobalStdPool3d<double, Backend> sd;
    const auto dy = randn<double>({2, 3, 1, 1, 1}, 10);
    std::vector<double> out = avg.forward(x).to_vector();
    for (double e : sd.forward(x).to_vector()) out.push_back(e);
    for (double e : sd.backward(dy).to_vector()) out.push_back(e);
    return out;
  };
  const int threads = get_num_threads();
  set_num_threads(1);
  const auto one = run();
  set_num_threads(3);
  const auto three = run();
  set_num_threads(threads);
  CHECK(one == three);
}

TEST_CASE("Global pools reject bad input and options") {
  nn::GlobalAvgPool3d<double, Backend> avg;
  nn::GlobalMaxPool3d<double, Backend> mx;
  nn::GlobalStdPool3d<double, Backend> sd;
  using Std = nn::GlobalStdPool3d<double, Backend>;
  CHECK_THROWS_AS(avg.backward(randn<double>({1, 1, 1, 1, 1}, 1)), value_error);  // backward before forward
  CHECK_THROWS_AS(mx.backward(randn<double>({1, 1, 1, 1, 1}, 1)), value_error);
  CHECK_THROWS_AS(sd.backward(randn<double>({1, 1, 1, 1, 1}, 1)), value_error);
  CHECK_THROWS_WITH_AS(avg.forward(randn<double>({2, 3, 4, 5}, 1)), doctest::Contains("mmnet::nn::GlobalAvgPool3d"),
                       shape_error);  // rank 4
  CHECK_THROWS_AS(mx.forward(randn<double>({2, 3, 4, 5}, 1)), shape_error);
  CHECK_THROWS_AS(sd.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(avg.forward(Tensor<double, Backend>(Shape{2, 3, 0, 4, 5})), shape_error);
  CHECK_THROWS_AS(mx.forward(Tensor<double, Backend>(Shape{2, 0, 3, 4, 5})), shape_error);
  const auto x = randn<double>({2, 3, 4, 5, 6}, 1);
  avg.forward(x);
  mx.forward(x);
  sd.forward(x);
  CHECK_THROWS_WITH_AS(avg.backward(randn<double>({2, 3, 1, 1, 2}, 1)), doctest::Contains("(2, 3, 1, 1, 1)"), shape_error);
  CHECK_THROWS_AS(mx.backward(randn<double>({2, 3, 4, 5, 6}, 1)), shape_error);
  CHECK_THROWS_AS(sd.backward(randn<double>({3, 3, 1, 1, 1}, 1)), shape_error);
  CHECK_THROWS_AS(Std(nn::GlobalStdPool3dOptions().eps(-1e-6)), value_error);
  CHECK_THROWS_AS(Std(nn::GlobalStdPool3dOptions().eps(std::nan(""))), value_error);
}
