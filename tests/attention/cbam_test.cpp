// 3D-CBAM (channel then spatial attention): PyTorch fixtures (tests/reference/cbam_ref.py) for the tiny-MMFNet
// levels, the spec §2.6 ablations (Base MMFNet, +multi-MLP, +stdPool in one branch), the spec §8 point 7 input
// (an all-zero channel and all-zero voxels) and size-1 axes; Fs, Fc, Wc, Ws, dL/dx and every parameter gradient
// after a strict load of the spec §8 names. Gradient checks in double, accumulation, bad input.
#include <cmath>

#include <mmnet/attention/cbam.hpp>

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

attention::CBAMOptions base_mmfnet(index_t c, index_t hidden) {
  return attention::CBAMOptions(c, hidden)
      .shared_mlp(true)
      .channel_pools({Pool::avg, Pool::max})
      .spatial_pools({Pool::avg, Pool::max});
}
}  // namespace

TEST_CASE_TEMPLATE("CBAM matches PyTorch: tiny MMFNet levels, ablations, zero channels and voxels", T, float, double) {
  Fixture fx("cbam");
  const auto names = case_names(fx);
  CHECK(names.size() == 10);
  for (const auto& n : names) {
    INFO("case " << n);
    const auto x = fx.tensor<T>(n + "/input");
    attention::CBAM<T, Backend> cbam(attention::CBAMOptions(x.size(1), static_cast<index_t>(fx.scalar(n + "/options/hidden")))
                                         .channel_pools(pools_of(fx.array(n + "/options/channel_pools")))
                                         .spatial_pools(pools_of(fx.array(n + "/options/spatial_pools")))
                                         .shared_mlp(fx.scalar(n + "/options/shared") != 0));
    const StateDict sd = fx.group(n + "/state");
    cbam.load_state_dict(sd);  // strict: the spec §8 names
    CHECK(cbam.state_dict().keys() == sd.keys());
    check_close(cbam.forward(x), fx.array(n + "/output"), tol_output<T>(), n + " Fs");
    check_close(cbam.channel_output(), fx.array(n + "/channel_output"), tol_output<T>(), n + " Fc");
    check_close(cbam.channel_weights(), fx.array(n + "/channel_weights"), tol_output<T>(), n + " Wc");
    check_close(cbam.spatial_weights(), fx.array(n + "/spatial_weights"), tol_output<T>(), n + " Ws");
    check_close(cbam.backward(fx.tensor<T>(n + "/grad_output")), fx.array(n + "/grad_input"), tol_grad<T>(),
                n + " grad_input");
    const StateDict grads = fx.group(n + "/grad");
    CHECK(cbam.named_parameters().size() == grads.size());
    for (auto& [name, p] : cbam.named_parameters()) check_close(p->grad, grads.at(name), tol_grad<T>(), n + " grad " + name);
  }
}

TEST_CASE("CBAM passes the central-difference gradient check (double)") {
  Generator g1(31), g2(32), g3(33);
  attention::CBAM<double, Backend> full(attention::CBAMOptions(6, 2), g1);
  gradcheck_module(full, distinct({2, 6, 2, 4, 3}, 1, 0.012, -1.3));
  attention::CBAM<double, Backend> base(base_mmfnet(6, 2), g2);
  gradcheck_module(base, distinct({2, 6, 2, 4, 3}, 2, 0.012, -1.3));
  // Spec §8 point 7 at a point without ties: an all-zero channel and voxels where every channel is zero, with the
  // avg and std pools in both branches (the max pools would tie there; their tie rule is covered by the fixtures).
  auto x = distinct({2, 4, 2, 3, 4}, 3, 0.012, -1.3);
  auto v = x.to_vector();
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 4; ++c)
      for (int s = 0; s < 24; ++s)
        if (c == 1 || s < 8) v[static_cast<std::size_t>((n * 4 + c) * 24 + s)] = 0.0;
  x.assign(v);
  attention::CBAM<double, Backend> zeros(
      attention::CBAMOptions(4, 2).channel_pools({Pool::avg, Pool::std}).spatial_pools({Pool::avg, Pool::std}), g3);
  gradcheck_module(zeros, x);
}

TEST_CASE_TEMPLATE("CBAM: parameter gradients accumulate over two backward calls", T, float, double) {
  attention::CBAM<T, Backend> cbam(attention::CBAMOptions(6, 2));
  const auto x = randn<T>({2, 6, 3, 4, 5}, 3);
  const auto dy = randn<T>({2, 6, 3, 4, 5}, 4);
  cbam.forward(x);
  const auto dx1 = cbam.backward(dy).to_vector();
  std::vector<std::vector<T>> once;
  for (auto* p : cbam.parameters()) once.push_back(p->grad.to_vector());
  cbam.forward(x);
  CHECK(cbam.backward(dy).to_vector() == dx1);
  std::size_t k = 0;
  for (auto* p : cbam.parameters()) {
    const auto twice = p->grad.to_vector();
    for (std::size_t i = 0; i < twice.size(); ++i) CHECK(twice[i] == doctest::Approx(2 * once[k][i]).epsilon(1e-5));
    ++k;
  }
}

TEST_CASE("CBAM: spec §8 state-dict names and parameter counts") {
  attention::CBAM<double, Backend> l1(attention::CBAMOptions(12, attention::reduced_channels(12, 4)));
  std::vector<std::string> expected;
  for (const char* p : {"avg", "max", "std"})
    for (const char* t : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"})
      expected.push_back(std::string("channel_attention.mlp_") + p + "." + t);
  expected.push_back("spatial_attention.conv.weight");
  expected.push_back("spatial_attention.conv.bias");
  CHECK(l1.state_dict().keys() == expected);
  CHECK(l1.channel_attention.mlp_max->fc1.weight.value.shape() == Shape{3, 12});
  CHECK(l1.spatial_attention.conv.weight.value.shape() == Shape{1, 3, 3, 3, 3});
  // The attention part of the spec's fusion-block counts (699 and 2,420 minus the RFBlock's 356 and 1,384; paper
  // level 1: 1,832 minus 1,384).
  CHECK(l1.num_parameters() == 343);
  attention::CBAM<double, Backend> l2(attention::CBAMOptions(24, attention::reduced_channels(24, 4)));
  CHECK(l2.num_parameters() == 1036);
  attention::CBAM<double, Backend> paper_l1(attention::CBAMOptions(24, attention::reduced_channels(24, 12)));
  CHECK(paper_l1.num_parameters() == 448);
  attention::CBAM<double, Backend> base(base_mmfnet(12, 3));
  CHECK(base.state_dict().keys() ==
        std::vector<std::string>{"channel_attention.mlp.fc1.weight", "channel_attention.mlp.fc1.bias",
                                 "channel_attention.mlp.fc2.weight", "channel_attention.mlp.fc2.bias",
                                 "spatial_attention.conv.weight", "spatial_attention.conv.bias"});
  CHECK(base.spatial_attention.conv.weight.value.shape() == Shape{1, 2, 3, 3, 3});
  const attention::CBAMOptions d(8, 2);
  CHECK(d.channel_pools() == std::vector<Pool>{Pool::avg, Pool::max, Pool::std});
  CHECK(d.spatial_pools() == std::vector<Pool>{Pool::avg, Pool::max, Pool::std});
  CHECK(!d.shared_mlp());
  CHECK(d.kernel() == 3);
  CHECK(d.std_eps() == 1e-6);
  CHECK(attention::CBAMOptions(8, 2).std_eps(1e-3).spatial().std_eps() == 1e-3);
  // Fs = Ws * Fc and Fc = Wc * x, with the exposed tensors.
  const auto x = randn<double>({2, 12, 3, 4, 5}, 9);
  const auto fs = l1.forward(x).to_vector();
  const auto fc = l1.channel_output().to_vector();
  const auto wc = l1.channel_weights().to_vector();
  const auto ws = l1.spatial_weights().to_vector();
  const auto xv = x.to_vector();
  double worst = 0;
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const std::size_t n = i / (12 * 60), c = (i / 60) % 12, s = i % 60;
    worst = std::max(worst, std::abs(fc[i] - wc[n * 12 + c] * xv[i]));
    worst = std::max(worst, std::abs(fs[i] - ws[n * 60 + s] * fc[i]));
  }
  CHECK(worst < 1e-15);
}

TEST_CASE("CBAM rejects bad input and options") {
  using C = attention::CBAM<double, Backend>;
  using Opt = attention::CBAMOptions;
  C cbam(Opt(6, 2));
  CHECK_THROWS_WITH_AS(cbam.backward(randn<double>({2, 6, 3, 4, 5}, 1)),
                       doctest::Contains("mmnet::attention::CBAM::backward"), value_error);
  CHECK_THROWS_WITH_AS(cbam.forward(randn<double>({2, 4, 3, 4, 5}, 1)),
                       doctest::Contains("input channels: expected 6, got 4"), shape_error);
  CHECK_THROWS_AS(cbam.forward(randn<double>({2, 6, 3, 4}, 1)), shape_error);
  CHECK_THROWS_AS(cbam.forward(Tensor<double, Backend>()), shape_error);
  cbam.forward(randn<double>({2, 6, 3, 4, 5}, 1));
  CHECK_THROWS_AS(cbam.backward(randn<double>({2, 6, 3, 5, 4}, 1)), shape_error);
  CHECK_THROWS_AS(C(Opt(0, 2)), value_error);
  CHECK_THROWS_AS(C(Opt(6, 0)), value_error);
  CHECK_THROWS_AS(C(Opt(6, 2).channel_pools({})), value_error);
  CHECK_THROWS_AS(C(Opt(6, 2).spatial_pools({Pool::max, Pool::avg})), value_error);
  CHECK_THROWS_AS(C(Opt(6, 2).kernel(2)), value_error);
  CHECK_THROWS_AS(C(Opt(6, 2).std_eps(-1)), value_error);
  // The full layout's state dict does not load into the Base MMFNet layout.
  C base(base_mmfnet(6, 2));
  CHECK_THROWS_AS(base.load_state_dict(cbam.state_dict()), state_dict_error);
}
