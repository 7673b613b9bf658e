// Channel reductions: PyTorch fixtures (tests/reference/channel_reduce_ref.py) with random inputs, ties, an
// all-zero channel and all-zero voxels, one channel, ranks 3 and 2; gradient checks; the tie and NaN rules of
// torch.max(dim=1); bad inputs.
#include <cmath>
#include <limits>

#include <mmnet/layers/channel_reduce.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
const char* const cases[] = {"randn", "ties", "zeros", "one_channel", "rank3", "rank2"};

}  // namespace

TEST_CASE_TEMPLATE("ChannelMean, ChannelMax, ChannelStd match PyTorch", T, float, double) {
  Fixture fx("channel_reduce");
  for (const std::string n : cases) {
    INFO("case " << n);
    const auto x = fx.tensor<T>(n + "/input");
    const auto dy = fx.tensor<T>(n + "/grad_output");

    nn::ChannelMean<T, Backend> mean;
    check_close(mean.forward(x), fx.array(n + "/mean/output"), tol_output<T>(), n + " mean output");
    check_close(mean.backward(dy), fx.array(n + "/mean/grad_input"), tol_grad<T>(), n + " mean grad_input");

    nn::ChannelMax<T, Backend> mx;
    check_close(mx.forward(x), fx.array(n + "/max/output"), tol_output<T>(), n + " max output");
    const auto idx = mx.indices();
    const auto& ref = fx.array(n + "/max/indices").data;
    REQUIRE(idx.size() == ref.size());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < idx.size(); ++i) wrong += static_cast<double>(idx[i]) != ref[i];
    CHECK_MESSAGE(wrong == 0, n << ": " << wrong << " of " << idx.size() << " channel argmax indices differ from PyTorch");
    check_close(mx.backward(dy), fx.array(n + "/max/grad_input"), tol_grad<T>(), n + " max grad_input");

    for (const auto& [suffix, eps] : {std::pair<std::string, double>{"", 1e-6}, {"_eps1e-2", 1e-2}}) {
      nn::ChannelStd<T, Backend> sd(nn::ChannelStdOptions().eps(eps));
      check_close(sd.forward(x), fx.array(n + "/std" + suffix + "/output"), tol_output<T>(), n + " std" + suffix + " output");
      check_close(sd.backward(dy), fx.array(n + "/std" + suffix + "/grad_input"), tol_grad<T>(),
                  n + " std" + suffix + " grad_input");
    }
  }
}

TEST_CASE("Channel reductions pass the central-difference gradient check (double)") {
  nn::ChannelMean<double, Backend> mean;
  gradcheck_module(mean, randn<double>({2, 3, 3, 4, 5}, 1));
  gradcheck_module(mean, randn<double>({2, 4, 7}, 2));
  nn::ChannelMax<double, Backend> mx;
  gradcheck_module(mx, distinct({2, 3, 3, 4, 5}, 3));
  nn::ChannelStd<double, Backend> sd;
  gradcheck_module(sd, randn<double>({2, 3, 3, 4, 5}, 4));
  // An all-zero channel and voxels where every channel is zero (std sqrt(eps), gradient 0).
  auto x = randn<double>({1, 3, 2, 3, 4}, 5);
  auto v = x.to_vector();
  for (int i = 0; i < 24; ++i) v[static_cast<std::size_t>(24 + i)] = 0.0;          // channel 1
  for (int c = 0; c < 3; ++c) v[static_cast<std::size_t>(24 * c + 5)] = 0.0;       // voxel 5, all channels
  x.assign(v);
  gradcheck_module(sd, x);
  const auto s = sd.forward(x).to_vector();
  CHECK(s[5] == doctest::Approx(std::sqrt(1e-6)).epsilon(1e-12));
  CHECK(sd.backward(randn<double>({1, 1, 2, 3, 4}, 6)).to_vector()[5] == 0.0);
  nn::ChannelStd<double, Backend> one(nn::ChannelStdOptions().eps(0.25));
  gradcheck_module(one, randn<double>({2, 1, 2, 3, 4}, 7));  // C = 1: std sqrt(eps), gradient 0
  CHECK(one.forward(randn<double>({2, 1, 2, 3, 4}, 7)).to_vector()[3] == doctest::Approx(0.5));
}

TEST_CASE_TEMPLATE("ChannelMax: the first maximal channel takes the whole gradient; the first NaN wins", T, float,
                   double) {
  nn::ChannelMax<T, Backend> mx;
  // Voxel 0: channels (1, 3, 3, 2) -> channel 1; voxel 1: all zero -> channel 0; voxel 2: NaN at 1 and 3.
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> v{1, 0, 0, 3, 0, nan, 3, 0, 5, 2, 0, nan};  // (1, 4, 3) channel-major
  const auto y = mx.forward(Tensor<T, Backend>::from_vector(Shape{1, 4, 3}, v)).to_vector();
  CHECK(y[0] == T(3));
  CHECK(y[1] == T(0));
  CHECK(std::isnan(y[2]));
  CHECK(mx.indices() == std::vector<std::int64_t>{1, 0, 1});
  const auto dx = mx.backward(Tensor<T, Backend>::from_vector(Shape{1, 1, 3}, std::vector<T>{10, 20, 30})).to_vector();
  CHECK(dx == std::vector<T>{0, 20, 0, 10, 0, 30, 0, 0, 0, 0, 0, 0});
}

TEST_CASE("Channel reductions reject bad input and options") {
  nn::ChannelMean<double, Backend> mean;
  nn::ChannelMax<double, Backend> mx;
  nn::ChannelStd<double, Backend> sd;
  using Std = nn::ChannelStd<double, Backend>;
  CHECK_THROWS_AS(mean.backward(randn<double>({1, 1, 2}, 1)), value_error);  // backward before forward
  CHECK_THROWS_AS(mx.backward(randn<double>({1, 1, 2}, 1)), value_error);
  CHECK_THROWS_AS(sd.backward(randn<double>({1, 1, 2}, 1)), value_error);
  CHECK_THROWS_AS(mean.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_WITH_AS(mx.forward(randn<double>({4}, 1)), doctest::Contains("mmnet::nn::ChannelMax"), shape_error);
  CHECK_THROWS_WITH_AS(sd.forward(Tensor<double, Backend>(Shape{2, 0, 3, 4, 5})), doctest::Contains("(2, 0, 3, 4, 5)"),
                       shape_error);  // zero channels
  CHECK_THROWS_AS(mean.forward(Tensor<double, Backend>(Shape{2, 3, 0, 4, 5})), shape_error);
  const auto x = randn<double>({2, 3, 4, 5, 6}, 1);
  mean.forward(x);
  mx.forward(x);
  sd.forward(x);
  CHECK_THROWS_WITH_AS(mean.backward(randn<double>({2, 3, 4, 5, 6}, 1)), doctest::Contains("(2, 1, 4, 5, 6)"),
                       shape_error);
  CHECK_THROWS_AS(mx.backward(randn<double>({2, 1, 4, 6, 5}, 1)), shape_error);
  CHECK_THROWS_AS(sd.backward(randn<double>({2, 1, 4, 5}, 1)), shape_error);
  CHECK_THROWS_AS(Std(nn::ChannelStdOptions().eps(-1)), value_error);
  CHECK_THROWS_AS(Std(nn::ChannelStdOptions().eps(INFINITY)), value_error);
}
