// 3D-CBAM channel attention: PyTorch fixtures (tests/reference/channel_attention_ref.py) for every pool set with
// separate and shared MLPs, the tiny-MMFNet levels, Base MMFNet, an all-zero channel plus all-zero voxels (spec §8
// point 7); output, Wc, dL/dx and every parameter gradient after a strict state-dict load. Gradient checks in
// double, gradient accumulation, frozen parameters, bad input and bad options.
#include <cmath>

#include <mmnet/attention/channel_attention.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using attention::Pool;

namespace {
std::vector<Pool> pools_of(const HostArray& a) {
  std::vector<Pool> p;
  for (double v : a.data) p.push_back(static_cast<Pool>(static_cast<int>(v)));
  return p;
}

}  // namespace

TEST_CASE_TEMPLATE("ChannelAttention matches PyTorch for every pool set, separate and shared MLPs", T, float, double) {
  Fixture fx("channel_attention");
  const auto names = case_names(fx);
  CHECK(names.size() == 24);
  for (const auto& n : names) {
    INFO("case " << n);
    const auto x = fx.tensor<T>(n + "/input");
    const auto opts = attention::ChannelAttentionOptions(x.size(1), static_cast<index_t>(fx.scalar(n + "/options/hidden")))
                          .pools(pools_of(fx.array(n + "/options/pools")))
                          .shared_mlp(fx.scalar(n + "/options/shared") != 0)
                          .std_eps(fx.scalar(n + "/options/eps"));
    attention::ChannelAttention<T, Backend> ca(opts);
    const StateDict sd = fx.group(n + "/state");
    ca.load_state_dict(sd);  // strict: names and shapes equal the PyTorch module's
    CHECK(ca.state_dict().keys() == sd.keys());  // and so does the order
    check_close(ca.forward(x), fx.array(n + "/output"), tol_output<T>(), n + " Fc");
    check_close(ca.weights(), fx.array(n + "/weights"), tol_output<T>(), n + " Wc");
    check_close(ca.backward(fx.tensor<T>(n + "/grad_output")), fx.array(n + "/grad_input"), tol_grad<T>(),
                n + " grad_input");
    const StateDict grads = fx.group(n + "/grad");
    CHECK(ca.named_parameters().size() == grads.size());
    for (auto& [name, p] : ca.named_parameters()) check_close(p->grad, grads.at(name), tol_grad<T>(), n + " grad " + name);
  }
}

TEST_CASE("ChannelAttention passes the central-difference gradient check (double)") {
  const std::vector<std::vector<Pool>> sets = {{Pool::avg, Pool::max, Pool::std}, {Pool::avg, Pool::max}, {Pool::std},
                                               {Pool::max, Pool::std}};
  std::uint64_t seed = 11;
  for (bool shared : {false, true}) {
    for (const auto& pools : sets) {
      INFO("shared " << shared << ", pools " << attention::pools_str(pools));
      Generator g(seed);
      attention::ChannelAttention<double, Backend> ca(attention::ChannelAttentionOptions(5, 3).pools(pools).shared_mlp(shared), g);
      gradcheck_module(ca, distinct({2, 5, 2, 3, 4}, seed++, 0.013, -1.1));
    }
  }
  // Spec §8 point 7 at a point without ties: an all-zero channel (std pool sqrt(eps), gradient 0, no 0/0) with
  // the avg and std pools (the max pool would tie there).
  auto x = distinct({2, 4, 3, 2, 3}, 5, 0.013, -1.1);
  auto v = x.to_vector();
  for (int n = 0; n < 2; ++n)
    for (int i = 0; i < 18; ++i) v[static_cast<std::size_t>(n * 72 + 18 + i)] = 0.0;  // channel 1
  x.assign(v);
  for (bool shared : {false, true}) {
    attention::ChannelAttention<double, Backend> ca(
        attention::ChannelAttentionOptions(4, 2).pools({Pool::avg, Pool::std}).shared_mlp(shared));
    gradcheck_module(ca, x);
  }
}

TEST_CASE_TEMPLATE("ChannelAttention: parameter gradients accumulate, frozen ones get none", T, float, double) {
  for (bool shared : {false, true}) {
    INFO("shared " << shared);
    attention::ChannelAttention<T, Backend> ca(attention::ChannelAttentionOptions(6, 2).shared_mlp(shared));
    const auto x = randn<T>({2, 6, 3, 4, 5}, 3);
    const auto dy = randn<T>({2, 6, 3, 4, 5}, 4);
    ca.forward(x);
    const auto dx1 = ca.backward(dy).to_vector();
    std::vector<std::vector<T>> once;
    for (auto* p : ca.parameters()) once.push_back(p->grad.to_vector());
    ca.forward(x);
    const auto dx2 = ca.backward(dy).to_vector();
    CHECK(dx1 == dx2);
    std::size_t k = 0;
    for (auto* p : ca.parameters()) {
      const auto twice = p->grad.to_vector();
      for (std::size_t i = 0; i < twice.size(); ++i) CHECK(twice[i] == doctest::Approx(2 * once[k][i]).epsilon(1e-5));
      ++k;
    }
    ca.zero_grad();
    ca.freeze();
    ca.forward(x);
    CHECK(ca.backward(dy).to_vector() == dx1);  // dL/dx does not depend on requires_grad
    for (auto* p : ca.parameters()) CHECK(sum(p->grad) == 0.0);
  }
}

TEST_CASE("ChannelAttention: names, defaults and the spec's hidden sizes") {
  attention::ChannelAttention<double, Backend> full(attention::ChannelAttentionOptions(12, 3));
  CHECK(full.state_dict().keys() ==
        std::vector<std::string>{"mlp_avg.fc1.weight", "mlp_avg.fc1.bias", "mlp_avg.fc2.weight", "mlp_avg.fc2.bias",
                                 "mlp_max.fc1.weight", "mlp_max.fc1.bias", "mlp_max.fc2.weight", "mlp_max.fc2.bias",
                                 "mlp_std.fc1.weight", "mlp_std.fc1.bias", "mlp_std.fc2.weight", "mlp_std.fc2.bias"});
  CHECK(full.mlp_avg->fc1.weight.value.shape() == Shape{3, 12});
  CHECK(full.mlp_std->fc2.weight.value.shape() == Shape{12, 3});
  CHECK(full.num_parameters() == 3 * (3 * 12 + 3 + 12 * 3 + 12));
  attention::ChannelAttention<double, Backend> base(
      attention::ChannelAttentionOptions(12, 3).pools({Pool::avg, Pool::max}).shared_mlp(true));
  CHECK(base.state_dict().keys() ==
        std::vector<std::string>{"mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"});
  CHECK(!base.mlp_avg);
  attention::ChannelAttention<double, Backend> max_only(attention::ChannelAttentionOptions(4, 1).pools({Pool::max}));
  CHECK(max_only.state_dict().keys().front() == "mlp_max.fc1.weight");
  const attention::ChannelAttentionOptions d(8, 2);
  CHECK(d.pools() == std::vector<Pool>{Pool::avg, Pool::max, Pool::std});
  CHECK(!d.shared_mlp());
  CHECK(d.std_eps() == 1e-6);
  // Spec A8: floor(M * c / r), at least 1. Paper (M 3, r 12): 2, 4, 8, 16; tiny (r 4): 3, 6; M 2: 1, 2, 5, 10.
  CHECK(attention::reduced_channels(24, 12) == 2);
  CHECK(attention::reduced_channels(192, 12) == 16);
  CHECK(attention::reduced_channels(12, 4) == 3);
  CHECK(attention::reduced_channels(24, 4) == 6);
  CHECK(attention::reduced_channels(16, 12) == 1);
  CHECK(attention::reduced_channels(8, 12) == 1);
  CHECK(attention::reduced_channels(16, 3) == 5);
  CHECK_THROWS_AS(attention::reduced_channels(8, 0), value_error);
  // Wc is a gate in (0, 1) of shape N x C x 1 x 1 x 1.
  const auto x = randn<double>({2, 12, 3, 4, 5}, 1);
  full.forward(x);
  CHECK(full.weights().shape() == Shape{2, 12, 1, 1, 1});
  for (double w : full.weights().to_vector()) CHECK((w > 0 && w < 1));
}

TEST_CASE("ChannelAttention rejects bad input and options") {
  using CA = attention::ChannelAttention<double, Backend>;
  using Opt = attention::ChannelAttentionOptions;
  CA ca(Opt(6, 2));
  CHECK_THROWS_WITH_AS(ca.backward(randn<double>({2, 6, 3, 4, 5}, 1)),
                       doctest::Contains("mmnet::attention::ChannelAttention::backward"), value_error);
  CHECK_THROWS_WITH_AS(ca.forward(randn<double>({2, 5, 3, 4, 5}, 1)),
                       doctest::Contains("mmnet::attention::ChannelAttention: input channels: expected 6, got 5"),
                       shape_error);
  CHECK_THROWS_WITH_AS(ca.forward(randn<double>({2, 6, 3, 4}, 1)), doctest::Contains("input rank: expected 5, got 4"),
                       shape_error);
  CHECK_THROWS_AS(ca.forward(randn<double>({6, 3, 4}, 1)), shape_error);
  CHECK_THROWS_AS(ca.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(ca.forward(Tensor<double, Backend>(Shape{2, 6, 0, 4, 5})), shape_error);
  ca.forward(randn<double>({2, 6, 3, 4, 5}, 1));
  CHECK_THROWS_WITH_AS(ca.backward(randn<double>({2, 6, 3, 4, 6}, 1)), doctest::Contains("(2, 6, 3, 4, 5)"), shape_error);
  CHECK_THROWS_AS(ca.backward(randn<double>({2, 6, 1, 1, 1}, 1)), shape_error);
  // Options.
  CHECK_THROWS_WITH_AS(CA(Opt(0, 2)), doctest::Contains("channels: expected > 0, got 0"), value_error);
  CHECK_THROWS_AS(CA(Opt(6, 0)), value_error);
  CHECK_THROWS_AS(CA(Opt(6, -1)), value_error);
  CHECK_THROWS_WITH_AS(CA(Opt(6, 2).pools({})), doctest::Contains("pools"), value_error);
  CHECK_THROWS_WITH_AS(CA(Opt(6, 2).pools({Pool::max, Pool::avg})), doctest::Contains("got {max, avg}"), value_error);
  CHECK_THROWS_AS(CA(Opt(6, 2).pools({Pool::avg, Pool::avg})), value_error);
  CHECK_THROWS_WITH_AS(CA(Opt(6, 2).std_eps(-1e-6)), doctest::Contains("std_eps"), value_error);
  CHECK_THROWS_AS(CA(Opt(6, 2).std_eps(std::nan(""))), value_error);
  CHECK_THROWS_AS(CA(Opt(6, 2).std_eps(INFINITY)), value_error);
  // A state dict of the other MLP layout does not load (strict).
  CA base(Opt(6, 2).pools({Pool::avg, Pool::max}).shared_mlp(true));
  CHECK_THROWS_AS(ca.load_state_dict(base.state_dict()), state_dict_error);
  CA wrong_hidden(Opt(6, 3));
  CHECK_THROWS_AS(ca.load_state_dict(wrong_hidden.state_dict()), state_dict_error);
}
