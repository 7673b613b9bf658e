// 3D-CBAM spatial attention: PyTorch fixtures (tests/reference/spatial_attention_ref.py) for every pool set, the
// tiny-MMFNet levels, Base MMFNet's 2-channel conv, kernels 1/3/5/7, one channel, an all-zero channel plus
// all-zero voxels (spec §8 point 7: std sqrt(eps), channel-max ties); output, Ws, dL/dx and the conv's gradients
// after a strict state-dict load. Gradient checks in double, gradient accumulation, bad input and bad options.
#include <cmath>

#include <mmnet/attention/spatial_attention.hpp>

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

TEST_CASE_TEMPLATE("SpatialAttention matches PyTorch for every pool set and kernel", T, float, double) {
  Fixture fx("spatial_attention");
  const auto names = case_names(fx);
  CHECK(names.size() == 18);
  for (const auto& n : names) {
    INFO("case " << n);
    const auto x = fx.tensor<T>(n + "/input");
    attention::SpatialAttention<T, Backend> sa(attention::SpatialAttentionOptions()
                                                   .pools(pools_of(fx.array(n + "/options/pools")))
                                                   .kernel(static_cast<index_t>(fx.scalar(n + "/options/kernel")))
                                                   .std_eps(fx.scalar(n + "/options/eps")));
    const StateDict sd = fx.group(n + "/state");
    sa.load_state_dict(sd);  // strict
    CHECK(sa.state_dict().keys() == sd.keys());
    check_close(sa.forward(x), fx.array(n + "/output"), tol_output<T>(), n + " Fs");
    check_close(sa.weights(), fx.array(n + "/weights"), tol_output<T>(), n + " Ws");
    check_close(sa.backward(fx.tensor<T>(n + "/grad_output")), fx.array(n + "/grad_input"), tol_grad<T>(),
                n + " grad_input");
    const StateDict grads = fx.group(n + "/grad");
    CHECK(sa.named_parameters().size() == grads.size());
    for (auto& [name, p] : sa.named_parameters()) check_close(p->grad, grads.at(name), tol_grad<T>(), n + " grad " + name);
  }
}

TEST_CASE("SpatialAttention passes the central-difference gradient check (double)") {
  const std::vector<std::vector<Pool>> sets = {{Pool::avg, Pool::max, Pool::std}, {Pool::avg, Pool::max}, {Pool::max},
                                               {Pool::avg, Pool::std}};
  std::uint64_t seed = 21;
  for (const auto& pools : sets) {
    for (index_t k : {3, 1}) {
      INFO("pools " << attention::pools_str(pools) << ", kernel " << k);
      Generator g(seed);
      attention::SpatialAttention<double, Backend> sa(attention::SpatialAttentionOptions().pools(pools).kernel(k), g);
      gradcheck_module(sa, distinct({2, 4, 3, 4, 5}, seed++, 0.011, -1.2));
    }
  }
  attention::SpatialAttention<double, Backend> k5(attention::SpatialAttentionOptions().kernel(5));
  gradcheck_module(k5, distinct({1, 3, 2, 5, 3}, 3, 0.011, -1.2));
  // Spec §8 point 7 at a point without ties: an all-zero channel and voxels where every channel is zero (std
  // reduction sqrt(eps), gradient 0, no 0/0), with the mean and std reductions (the max would tie there).
  auto x = distinct({2, 4, 2, 3, 4}, 4, 0.011, -1.2);
  auto v = x.to_vector();
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 4; ++c)
      for (int s = 0; s < 24; ++s)
        if (c == 2 || s < 8) v[static_cast<std::size_t>((n * 4 + c) * 24 + s)] = 0.0;
  x.assign(v);
  attention::SpatialAttention<double, Backend> sa(attention::SpatialAttentionOptions().pools({Pool::avg, Pool::std}));
  gradcheck_module(sa, x);
}

TEST_CASE_TEMPLATE("SpatialAttention: parameter gradients accumulate, frozen ones get none", T, float, double) {
  attention::SpatialAttention<T, Backend> sa;
  const auto x = randn<T>({2, 5, 3, 4, 6}, 3);
  const auto dy = randn<T>({2, 5, 3, 4, 6}, 4);
  sa.forward(x);
  const auto dx1 = sa.backward(dy).to_vector();
  const auto w1 = sa.conv.weight.grad.to_vector();
  const auto b1 = sa.conv.bias.grad.to_vector();
  sa.forward(x);
  CHECK(sa.backward(dy).to_vector() == dx1);
  const auto w2 = sa.conv.weight.grad.to_vector();
  for (std::size_t i = 0; i < w2.size(); ++i) CHECK(w2[i] == doctest::Approx(2 * w1[i]).epsilon(1e-5));
  CHECK(sa.conv.bias.grad.to_vector()[0] == doctest::Approx(2 * b1[0]).epsilon(1e-5));
  sa.zero_grad();
  sa.freeze();
  sa.forward(x);
  CHECK(sa.backward(dy).to_vector() == dx1);
  CHECK(sum(sa.conv.weight.grad) == 0.0);
  CHECK(sum(sa.conv.bias.grad) == 0.0);
}

TEST_CASE("SpatialAttention: names, shapes and defaults") {
  attention::SpatialAttention<double, Backend> full;
  CHECK(full.state_dict().keys() == std::vector<std::string>{"conv.weight", "conv.bias"});
  CHECK(full.conv.weight.value.shape() == Shape{1, 3, 3, 3, 3});
  attention::SpatialAttention<double, Backend> base(attention::SpatialAttentionOptions().pools({Pool::avg, Pool::max}));
  CHECK(base.conv.weight.value.shape() == Shape{1, 2, 3, 3, 3});
  attention::SpatialAttention<double, Backend> k5(attention::SpatialAttentionOptions().pools({Pool::std}).kernel(5));
  CHECK(k5.conv.weight.value.shape() == Shape{1, 1, 5, 5, 5});
  const attention::SpatialAttentionOptions d;
  CHECK(d.pools() == std::vector<Pool>{Pool::avg, Pool::max, Pool::std});
  CHECK(d.kernel() == 3);
  CHECK(d.std_eps() == 1e-6);
  const auto x = randn<double>({2, 7, 3, 4, 5}, 1);
  CHECK(full.forward(x).shape() == x.shape());
  CHECK(full.weights().shape() == Shape{2, 1, 3, 4, 5});
  for (double w : full.weights().to_vector()) CHECK((w > 0 && w < 1));
}

TEST_CASE("SpatialAttention rejects bad input and options") {
  using SA = attention::SpatialAttention<double, Backend>;
  using Opt = attention::SpatialAttentionOptions;
  SA sa;
  CHECK_THROWS_WITH_AS(sa.backward(randn<double>({2, 6, 3, 4, 5}, 1)),
                       doctest::Contains("mmnet::attention::SpatialAttention::backward"), value_error);
  CHECK_THROWS_WITH_AS(sa.forward(randn<double>({2, 6, 3, 4}, 1)),
                       doctest::Contains("mmnet::attention::SpatialAttention: input rank: expected 5, got 4"),
                       shape_error);
  CHECK_THROWS_AS(sa.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(sa.forward(Tensor<double, Backend>(Shape{2, 0, 3, 4, 5})), shape_error);
  CHECK_THROWS_AS(sa.forward(Tensor<double, Backend>(Shape{2, 3, 3, 0, 5})), shape_error);
  sa.forward(randn<double>({2, 6, 3, 4, 5}, 1));
  CHECK_THROWS_WITH_AS(sa.backward(randn<double>({2, 5, 3, 4, 5}, 1)), doctest::Contains("(2, 6, 3, 4, 5)"), shape_error);
  CHECK_THROWS_AS(sa.backward(randn<double>({2, 1, 3, 4, 5}, 1)), shape_error);
  CHECK_THROWS_WITH_AS(SA(Opt().kernel(4)), doctest::Contains("kernel: expected an odd size >= 1"), value_error);
  CHECK_THROWS_AS(SA(Opt().kernel(0)), value_error);
  CHECK_THROWS_AS(SA(Opt().kernel(-3)), value_error);
  CHECK_THROWS_WITH_AS(SA(Opt().pools({})), doctest::Contains("mmnet::attention::SpatialAttentionOptions: pools"),
                       value_error);
  CHECK_THROWS_WITH_AS(SA(Opt().pools({Pool::std, Pool::avg})), doctest::Contains("got {std, avg}"), value_error);
  CHECK_THROWS_AS(SA(Opt().pools({Pool::max, Pool::max})), value_error);
  CHECK_THROWS_AS(SA(Opt().std_eps(-1.0)), value_error);
  CHECK_THROWS_AS(SA(Opt().std_eps(std::nan(""))), value_error);
  // A 3-channel conv does not load into the 2-channel (Base MMFNet) layout.
  SA base(Opt().pools({Pool::avg, Pool::max}));
  CHECK_THROWS_AS(base.load_state_dict(sa.state_dict()), state_dict_error);
}
