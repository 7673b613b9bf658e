// Softmax and LogSoftmax: PyTorch fixtures (tests/reference/softmax_ref.py) over channels and other axes, one
// channel, ties and logits of +-1000; central-difference checks; bad inputs.
#include <cmath>

#include <mmnet/layers/softmax.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("Softmax and LogSoftmax match PyTorch", T, float, double) {
  Fixture fx("softmax");
  for (const char* c : {"ncdhw", "rank2", "rank3", "dim2", "dim_last", "one_channel", "ties", "large"}) {
    const std::string k = c;
    INFO("case " << k);
    const int dim = static_cast<int>(fx.scalar(k + "/dim"));
    const auto x = fx.tensor<T>(k + "/input");
    const auto dy = fx.tensor<T>(k + "/grad_output");
    nn::Softmax<T, Backend> sm{nn::SoftmaxOptions(dim)};
    check_close(sm.forward(x), fx.array(k + "/softmax/output"), tol_output<T>(), k + " softmax output");
    check_close(sm.backward(dy), fx.array(k + "/softmax/grad_input"), tol_grad<T>(), k + " softmax grad_input");
    nn::LogSoftmax<T, Backend> lsm{nn::LogSoftmaxOptions(dim)};
    check_close(lsm.forward(x), fx.array(k + "/log_softmax/output"), tol_output<T>(), k + " log_softmax output");
    check_close(lsm.backward(dy), fx.array(k + "/log_softmax/grad_input"), tol_grad<T>(),
                k + " log_softmax grad_input");
  }
}

TEST_CASE_TEMPLATE("Softmax: channel axis by default, finite at +-1000, sums to 1", T, float, double) {
  nn::Softmax<T, Backend> sm;
  nn::LogSoftmax<T, Backend> lsm;
  CHECK(sm.options().dim() == 1);
  CHECK(lsm.options().dim() == 1);
  // (N=1, C=3, 2 voxels): voxel 0 = (1000, -1000, 0), voxel 1 = (-1000, -1000, -1000)
  const auto x = Tensor<T, Backend>::from_vector({1, 3, 2}, std::vector<double>{1000, -1000, -1000, -1000, 0, -1000});
  const auto p = sm.forward(x).to_vector();
  CHECK(p[0] == T(1));
  CHECK(p[2] == T(0));
  CHECK(p[4] == T(0));
  for (int v : {1, 3, 5}) CHECK(p[v] == doctest::Approx(1.0 / 3));
  const auto lp = lsm.forward(x).to_vector();
  CHECK(lp[0] == T(0));
  CHECK(lp[2] == T(-2000));
  CHECK(lp[4] == T(-1000));
  for (int v : {1, 3, 5}) CHECK(lp[v] == doctest::Approx(-std::log(3.0)));
  for (auto e : sm.backward(randn<T>({1, 3, 2}, 1)).to_vector()) CHECK(std::isfinite(e));
  for (auto e : lsm.backward(randn<T>({1, 3, 2}, 1)).to_vector()) CHECK(std::isfinite(e));

  const auto q = sm.forward(randn<T>({2, 5, 3, 2, 4}, 3)).to_vector();
  for (int n = 0; n < 2; ++n)
    for (int v = 0; v < 24; ++v) {
      double s = 0;
      for (int c = 0; c < 5; ++c) s += q[static_cast<std::size_t>((n * 5 + c) * 24 + v)];
      CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
    }
}

TEST_CASE("Softmax and LogSoftmax pass the central-difference gradient check (double)") {
  const auto x = randn<double>({2, 4, 3, 2, 3}, 11);
  nn::Softmax<double, Backend> sm;
  gradcheck_module(sm, x);
  nn::LogSoftmax<double, Backend> lsm;
  gradcheck_module(lsm, x);
  nn::Softmax<double, Backend> last(nn::SoftmaxOptions(-1));
  gradcheck_module(last, x);
  nn::LogSoftmax<double, Backend> first(nn::LogSoftmaxOptions(0));
  gradcheck_module(first, x);
}

TEST_CASE("Softmax rejects bad inputs") {
  nn::Softmax<double, Backend> sm;
  CHECK_THROWS_AS(sm.backward(randn<double>({2, 3}, 1)), value_error);  // no forward yet
  CHECK_THROWS_AS(sm.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_WITH_AS(sm.forward(randn<double>({5}, 1)), doctest::Contains("dim"), shape_error);  // no axis 1
  CHECK_THROWS_AS(sm.forward(Tensor<double, Backend>({2, 3, 0})), shape_error);
  nn::LogSoftmax<double, Backend> bad(nn::LogSoftmaxOptions(-4));
  CHECK_THROWS_AS(bad.forward(randn<double>({2, 3, 4}, 1)), shape_error);
  sm.forward(randn<double>({2, 3, 4}, 1));
  CHECK_THROWS_AS(sm.backward(randn<double>({2, 4, 3}, 1)), shape_error);
}
