// ConResAtt (ConResNet's context residual module): fixtures from the official PyTorch class
// (tests/reference/context_residual_ref.py) for the three module kinds (first; in != out; in == out), D = 1,
// 1-channel groups and the official 8 groups; the official state dict loaded by name with its unused tensors
// skipped; central differences in double for both inputs and every parameter; gradient accumulation; parameter
// counts of the spec (section 2.6); bad input and options.
#include <mmnet/attention/context_residual.hpp>

#include <algorithm>
#include <cmath>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
using Att = attention::ConResAtt<T, Backend>;
using Opts = attention::ConResAttOptions;

Opts case_options(const Fixture& fx, const std::string& g) {
  return Opts(static_cast<index_t>(fx.scalar(g + "in")), static_cast<index_t>(fx.scalar(g + "out")))
      .first(fx.scalar(g + "first") != 0)
      .res_in_channels(static_cast<index_t>(fx.scalar(g + "res_in")))
      .groups(static_cast<index_t>(fx.scalar(g + "groups")));
}

template <class T>
Att<T> case_module(const Fixture& fx, const std::string& g) {
  Att<T> m(case_options(fx, g));
  m.load_official_state_dict(fx.group(g + "state"));
  return m;
}

std::vector<std::string> names(Att<double>& m) {
  std::vector<std::string> n;
  for (auto& np : m.named_parameters()) n.push_back(np.first);
  return n;
}

// GroupNorm weights (1 + 0.3 n) * 2 / sqrt(27 C) and biases 0.2 n * 2 / sqrt(27 C): the 3x3x3 WSConv after each
// GroupNorm then gives O(1) outputs, so neither sigmoid saturates and every path carries gradient.
void moderate_group_norms(Att<double>& m, std::uint64_t seed) {
  Generator g(seed);
  for (auto& np : m.named_parameters()) {
    if (np.first.compare(0, 3, "gn_") != 0) continue;
    auto& p = np.second->value;
    const double scale = 2.0 / std::sqrt(27.0 * static_cast<double>(p.numel()));
    const bool weight = np.first.find(".weight") != std::string::npos;
    std::vector<double> v(static_cast<std::size_t>(p.numel()));
    for (auto& e : v) e = (weight ? 1.0 + 0.3 * g.normal() : 0.2 * g.normal()) * scale;
    p.assign(v);
  }
}

// Whether every |S[d] - S[d-1]| (S = sigmoid(F)) is far from 0 relative to a 1e-6 step, unless both sigmoids are
// saturated: a tie inside the central difference's step would make |.| non-differentiable there.
bool tie_free(const TestTensor<double>& f) {
  const auto v = f.to_vector();
  const index_t D = f.size(2), hw = f.size(3) * f.size(4), nc = f.size(0) * f.size(1);
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  for (index_t r = 0; r < nc; ++r)
    for (index_t d = 1; d < D; ++d)
      for (index_t j = 0; j < hw; ++j) {
        const double a = sig(v[static_cast<std::size_t>((r * D + d) * hw + j)]);
        const double b = sig(v[static_cast<std::size_t>((r * D + d - 1) * hw + j)]);
        if (std::abs(a - b) < 1e-4 && std::max(a * (1 - a), b * (1 - b)) > 1e-6) return false;
      }
  return true;
}

// dlib's test_layer for two inputs and two outputs, in double: L = sum(O_seg * r_seg) + sum(O_res * r_res).
// Parameter gradients are pre-filled with random values, so assigning instead of adding fails.
void gradcheck_conres(Att<double>& m, const TestTensor<double>& seg0, const TestTensor<double>& res0,
                      std::uint64_t seed) {
  auto x_seg = seg0.clone(), x_res = res0.clone();
  const auto y = m.forward(x_seg, x_res);
  REQUIRE_MESSAGE(tie_free(m.taps().f), "inputs with a near-tie in the slice difference: pick another seed");
  const auto r_seg = randn<double>(y.first.shape(), seed), r_res = randn<double>(y.second.shape(), seed + 1);
  Generator g(seed + 2);
  std::vector<std::vector<double>> prefill;
  for (auto& np : m.named_parameters()) {
    std::vector<double> v(static_cast<std::size_t>(np.second->grad.numel()));
    for (auto& e : v) e = g.normal();
    np.second->grad.assign(v);
    prefill.push_back(v);
  }
  const auto dx = m.backward(r_seg, r_res);
  auto value = [&] {
    const auto o = m.forward(x_seg, x_res);
    return dot(o.first, r_seg) + dot(o.second, r_res);
  };
  central_difference_check("dL/dI_seg", x_seg.numel(), dx.first.to_vector(), value,
                           [&](index_t i, double h) { perturb_element(x_seg, i, h); });
  central_difference_check("dL/dI_res", x_res.numel(), dx.second.to_vector(), value,
                           [&](index_t i, double h) { perturb_element(x_res, i, h); });
  std::size_t k = 0;
  for (auto& np : m.named_parameters()) {
    auto acc = np.second->grad.to_vector();
    for (std::size_t i = 0; i < acc.size(); ++i) acc[i] -= prefill[k][i];
    ++k;
    auto& p = np.second->value;
    central_difference_check("dL/d" + np.first, p.numel(), acc, value,
                             [&](index_t i, double h) { perturb_element(p, i, h); });
  }
}

}  // namespace

TEST_CASE_TEMPLATE("ConResAtt matches the official PyTorch module: O_seg, O_res, F, G, R, T and all gradients", T,
                   float, double) {
  Fixture fx("context_residual");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  REQUIRE(cases >= 6);
  for (int i = 0; i < cases; ++i) {
    const std::string g = case_name(i);
    CAPTURE(g);
    auto m = case_module<T>(fx, g);
    const auto x_seg = fx.tensor<T>(g + "input_seg");
    const auto x_res = fx.tensor<T>(g + "input_res");
    const auto [o_seg, o_res] = m.forward(x_seg, x_res);
    check_close(o_seg, fx.array(g + "out_seg"), tol_output<T>(), "context_residual " + g + "O_seg");
    check_close(o_res, fx.array(g + "out_res"), tol_output<T>(), "context_residual " + g + "O_res");
    check_close(m.taps().f, fx.array(g + "F"), tol_output<T>(), "context_residual " + g + "F");
    check_close(m.taps().g, fx.array(g + "G"), tol_output<T>(), "context_residual " + g + "G");
    check_close(m.taps().r, fx.array(g + "R"), tol_output<T>(), "context_residual " + g + "R");
    check_close(m.taps().t, fx.array(g + "T"), tol_output<T>(), "context_residual " + g + "T");

    const auto [d_seg, d_res] = m.backward(fx.tensor<T>(g + "grad_out_seg"), fx.tensor<T>(g + "grad_out_res"));
    check_close(d_seg, fx.array(g + "grad_input_seg"), tol_grad<T>(), "context_residual " + g + "grad I_seg");
    check_close(d_res, fx.array(g + "grad_input_res"), tol_grad<T>(), "context_residual " + g + "grad I_res");
    const StateDict grads = fx.group(g + "grad");
    const auto params = m.named_parameters();
    REQUIRE(params.size() == grads.size());
    for (auto& [name, p] : params) check_close(p->grad, grads.at(name), tol_grad<T>(), "context_residual " + g + "grad " + name);
  }
}

TEST_CASE("ConResAtt's parameters are the official used ones, in order; the unused keys are exactly skipped") {
  Fixture fx("context_residual");
  for (int i = 0; i < static_cast<int>(fx.scalar("num_cases")); ++i) {
    const std::string g = case_name(i);
    CAPTURE(g);
    Att<double> m(case_options(fx, g));
    // PyTorch's used parameters (grad not None) in registration order == our state dict keys
    const StateDict official = fx.group(g + "state");
    const auto used = fx.group(g + "grad").keys();
    CHECK(m.state_dict().keys() == used);
    std::vector<std::string> unused;
    for (auto& k : official.keys())
      if (std::find(used.begin(), used.end(), k) == used.end()) unused.push_back(k);
    CHECK(m.unused_official_keys() == unused);
    CHECK(attention::conres_att_unused_keys(m.options(), "seg_x2.0.").front() == "seg_x2.0.gn_res.weight");

    // the official dict does not load as is (its unused tensors are unexpected), but does through the loader
    check_throws_naming<state_dict_error>([&] { m.load_state_dict(official); },
                                          {"unexpected keys", "gn_res2.weight", "conv_res2.weight"});
    const LoadResult r = m.load_official_state_dict(official);
    CHECK(r.missing_keys.empty());
    CHECK(r.unexpected_keys.empty());
    const StateDict loaded = m.state_dict();
    for (auto& e : loaded) CHECK(e.second.data == official.at(e.first).data);
    // our own state dict (no unused keys) loads through it too
    Att<double> copy(case_options(fx, g));
    CHECK_NOTHROW(copy.load_official_state_dict(loaded));
    CHECK(copy.state_dict().at("conv_seg.weight").data == official.at("conv_seg.weight").data);

    // anything beyond the unused keys is still unexpected, and a used key missing is still missing
    StateDict extra = official;
    extra.insert("gn_res3.weight", official.at("gn_seg.weight"));
    check_throws_naming<state_dict_error>([&] { m.load_official_state_dict(extra); }, {"unexpected keys", "gn_res3.weight"});
    CHECK(m.load_official_state_dict(extra, false).unexpected_keys == std::vector<std::string>{"gn_res3.weight"});
    StateDict missing;
    for (auto& e : official)
      if (e.first != "conv_res1.weight") missing.insert(e.first, e.second);
    check_throws_naming<state_dict_error>([&] { m.load_official_state_dict(missing); }, {"missing keys", "conv_res1.weight"});
  }
}

TEST_CASE("ConResAtt: the three kinds' parameters and counts (ConResNet spec 2.6, tiny and BraTS)") {
  // tiny: w 4, C_in 2, G 2
  Att<double> x4(Opts(16, 8).first(true).res_in_channels(2).groups(2));
  Att<double> x2(Opts(8, 4).groups(2));
  Att<double> x1(Opts(4, 4).groups(2));
  CHECK(names(x4) == std::vector<std::string>{"gn_seg.weight", "gn_seg.bias", "conv_seg.weight", "conv_res.weight",
                                               "gn_res1.weight", "gn_res1.bias", "conv_res1.weight",
                                               "conv_mp_first.weight"});
  CHECK(names(x2) == std::vector<std::string>{"gn_seg.weight", "gn_seg.bias", "conv_seg.weight", "conv_res.weight",
                                               "gn_res1.weight", "gn_res1.bias", "conv_res1.weight", "gn_mp.weight",
                                               "gn_mp.bias", "conv_mp.weight"});
  CHECK(names(x1) == std::vector<std::string>{"gn_seg.weight", "gn_seg.bias", "conv_seg.weight", "conv_res.weight",
                                               "gn_res1.weight", "gn_res1.bias", "conv_res1.weight"});
  CHECK(x4.conv_mp_first->weight.value.shape() == Shape{8, 2, 3, 3, 3});  // the image's C_in, not in_channels
  CHECK(x4.conv_res.weight.value.shape() == Shape{8, 8, 1, 1, 1});
  CHECK(x2.conv_mp->weight.value.shape() == Shape{4, 8, 3, 3, 3});
  CHECK(!x4.gn_mp.has_value());
  CHECK(!x1.conv_mp.has_value());
  CHECK(x4.num_parameters() == 5728);
  CHECK(x2.num_parameters() == 2216);
  CHECK(x1.num_parameters() == 896);
  CHECK(x4.unused_official_keys().size() + x2.unused_official_keys().size() + x1.unused_official_keys().size() == 23);
  CHECK(x4.unused_official_keys() == std::vector<std::string>{"gn_res.weight", "gn_res.bias", "gn_res2.weight",
                                                               "gn_res2.bias", "conv_res2.weight", "gn_mp.weight",
                                                               "gn_mp.bias", "conv_mp.weight"});
  CHECK(x2.unused_official_keys().back() == "conv_mp_first.weight");
  // BraTS: w 32, C_in 4 and 8 groups (the defaults)
  CHECK(Att<float>(Opts(128, 64).first(true)).num_parameters() == 343168);
  CHECK(Att<float>(Opts(64, 32)).num_parameters() == 139584);
  CHECK(Att<float>(Opts(32, 32)).num_parameters() == 56448);
  const Opts d(32, 32);
  CHECK(d.groups() == 8);
  CHECK(d.res_in_channels() == 4);
  CHECK(!d.first());
  // GroupNorm weights 1, biases 0; WSConv weights PyTorch's default bound
  for (double v : x1.gn_res1.weight.value.to_vector()) CHECK(v == 1.0);
  for (double v : x1.conv_seg.weight.value.to_vector()) CHECK(std::abs(v) <= 1.0 / std::sqrt(4.0 * 27.0));
}

TEST_CASE("ConResAtt passes the central-difference gradient check (double; both inputs, every parameter)") {
  struct Case {
    Opts o;
    Shape seg, res;
  };
  const Case cases[] = {
      {Opts(4, 4).first(true).res_in_channels(2).groups(2), {2, 4, 4, 3, 5}, {2, 2, 4, 3, 5}},  // first
      {Opts(6, 3).groups(3), {2, 6, 3, 5, 4}, {2, 6, 3, 5, 4}},                                 // in != out
      {Opts(3, 3).groups(1), {2, 3, 5, 4, 3}, {2, 3, 5, 4, 3}},                                 // in == out
      {Opts(2, 4).groups(2), {2, 2, 1, 3, 4}, {2, 2, 1, 3, 4}},                                 // D = 1
  };
  std::uint64_t seed = 40;
  for (const auto& c : cases) {
    seed += 10;
    CAPTURE(seed);
    Generator gen(seed);
    Att<double> m(c.o, gen);
    moderate_group_norms(m, seed + 1);
    gradcheck_conres(m, randn<double>(c.seg, seed + 2), randn<double>(c.res, seed + 3), seed + 4);
  }
}

TEST_CASE_TEMPLATE("ConResAtt parameter gradients accumulate over two backward calls; zero_grad; frozen", T, float,
                   double) {
  Fixture fx("context_residual");
  for (int i : {0, 1, 2}) {
    const std::string g = case_name(i);
    CAPTURE(g);
    auto m = case_module<T>(fx, g);
    const auto dy_seg = fx.tensor<T>(g + "grad_out_seg"), dy_res = fx.tensor<T>(g + "grad_out_res");
    m.forward(fx.tensor<T>(g + "input_seg"), fx.tensor<T>(g + "input_res"));
    m.backward(dy_seg, dy_res);
    const auto [d_seg, d_res] = m.backward(dy_seg, dy_res);
    check_close(d_seg, fx.array(g + "grad_input_seg"), tol_grad<T>(), g + "grad I_seg, second call");
    check_close(d_res, fx.array(g + "grad_input_res"), tol_grad<T>(), g + "grad I_res, second call");
    const StateDict grads = fx.group(g + "grad");
    for (auto& [name, p] : m.named_parameters()) check_close(p->grad, scaled(grads.at(name), 2), tol_grad<T>(), g + name + " x2");
    m.zero_grad();
    m.backward(dy_seg, dy_res);
    for (auto& [name, p] : m.named_parameters()) check_close(p->grad, grads.at(name), tol_grad<T>(), g + name + " after zero_grad");

    m.zero_grad();
    m.freeze();
    const auto [f_seg, f_res] = m.backward(dy_seg, dy_res);
    check_close(f_seg, fx.array(g + "grad_input_seg"), tol_grad<T>(), g + "grad I_seg, frozen");
    check_close(f_res, fx.array(g + "grad_input_res"), tol_grad<T>(), g + "grad I_res, frozen");
    for (auto& np : m.named_parameters()) CHECK(dot(np.second->grad, np.second->grad) == 0.0);
  }
}

TEST_CASE_TEMPLATE("ConResAtt: T = I_res when in == out; D = 1 gives G = 0 and R = 0", T, float, double) {
  Att<T> same(Opts(4, 4).groups(2));
  const auto x_seg = randn<T>({2, 4, 3, 4, 5}, 1), x_res = randn<T>({2, 4, 3, 4, 5}, 2);
  same.forward(x_seg, x_res);
  CHECK(same.taps().t.shares_storage_with(x_res));
  const auto g = same.taps().g.to_vector();  // slice 0 of G is zero
  for (index_t r = 0; r < 2 * 4; ++r)
    for (index_t j = 0; j < 4 * 5; ++j) CHECK(g[static_cast<std::size_t>(r * 3 * 20 + j)] == T(0));

  Att<T> flat(Opts(4, 2).groups(2));
  flat.forward(randn<T>({2, 4, 1, 4, 5}, 3), randn<T>({2, 4, 1, 4, 5}, 4));
  CHECK(dot(flat.taps().g, flat.taps().g) == 0.0);
  CHECK(dot(flat.taps().r, flat.taps().r) == 0.0);
}

TEST_CASE("ConResAtt rejects bad input and bad options") {
  Att<double> first(Opts(4, 2).first(true).res_in_channels(3).groups(2));
  Att<double> mid(Opts(4, 2).groups(2));
  const auto seg = randn<double>({2, 4, 3, 5, 4}, 1);
  const auto res3 = randn<double>({2, 3, 3, 5, 4}, 2), res4 = randn<double>({2, 4, 3, 5, 4}, 3);

  check_throws_naming<value_error>([&] { first.backward(randn<double>({2, 2, 3, 5, 4}, 1), randn<double>({2, 2, 3, 5, 4}, 1)); },
                                   {"mmnet::attention::ConResAtt::backward", "forward() call first"});
  // channel mismatches
  check_throws_naming<shape_error>([&] { first.forward(randn<double>({2, 3, 3, 5, 4}, 1), res3); },
                                   {"mmnet::attention::ConResAtt", "I_seg channels", "expected 4", "got 3"});
  check_throws_naming<shape_error>([&] { first.forward(seg, res4); },
                                   {"mmnet::attention::ConResAtt", "I_res channels", "res_in_channels", "expected 3", "got 4"});
  check_throws_naming<shape_error>([&] { mid.forward(seg, res3); },
                                   {"mmnet::attention::ConResAtt", "I_res channels", "expected 4", "got 3"});
  // I_seg / I_res spatial and batch mismatches
  check_throws_naming<shape_error>([&] { mid.forward(seg, randn<double>({2, 4, 3, 4, 5}, 4)); },
                                   {"I_res shape", "(2, 4, 3, 5, 4)", "got (2, 4, 3, 4, 5)"});
  check_throws_naming<shape_error>([&] { first.forward(seg, randn<double>({2, 3, 4, 5, 4}, 4)); },
                                   {"I_res shape", "(2, 3, 3, 5, 4)", "got (2, 3, 4, 5, 4)"});
  check_throws_naming<shape_error>([&] { mid.forward(seg, randn<double>({1, 4, 3, 5, 4}, 4)); },
                                   {"I_res shape", "(2, 4, 3, 5, 4)", "got (1, 4, 3, 5, 4)"});
  // rank and empty tensors
  check_throws_naming<shape_error>([&] { mid.forward(randn<double>({2, 4, 3, 5}, 1), res4); },
                                   {"I_seg rank", "expected 5", "got 4"});
  check_throws_naming<shape_error>([&] { mid.forward(seg, Tensor<double, Backend>()); }, {"I_res", "empty tensor"});
  check_throws_naming<shape_error>(
      [&] { mid.forward(Tensor<double, Backend>(Shape{0, 4, 3, 5, 4}), Tensor<double, Backend>(Shape{0, 4, 3, 5, 4})); },
      {"I_seg", "non-empty"});
  // grad_output shapes
  mid.forward(seg, res4);
  const auto good = randn<double>({2, 2, 3, 5, 4}, 5);
  check_throws_naming<shape_error>([&] { mid.backward(randn<double>({2, 4, 3, 5, 4}, 5), good); },
                                   {"ConResAtt::backward", "grad_output of O_seg", "(2, 2, 3, 5, 4)", "(2, 4, 3, 5, 4)"});
  check_throws_naming<shape_error>([&] { mid.backward(good, randn<double>({2, 2, 3, 4, 5}, 5)); },
                                   {"ConResAtt::backward", "grad_output of O_res", "(2, 2, 3, 4, 5)"});
  CHECK_NOTHROW(mid.backward(good, good));

  // options
  using A = Att<double>;
  check_throws_naming<value_error>([] { (void)A(Opts(0, 4)); }, {"mmnet::attention::ConResAtt", "in_channels", "got 0"});
  check_throws_naming<value_error>([] { (void)A(Opts(4, 1).groups(1)); }, {"out_channels", ">= 2", "got 1"});
  check_throws_naming<value_error>([] { (void)A(Opts(4, 6).groups(4)); },
                                   {"mmnet::attention::ConResAtt", "groups", "common divisor of 4 and 6", "got 4"});
  check_throws_naming<value_error>([] { (void)A(Opts(4, 4).groups(0)); }, {"groups", ">= 1", "got 0"});
  check_throws_naming<value_error>([] { (void)A(Opts(4, 4).groups(2).first(true).res_in_channels(0)); },
                                   {"res_in_channels", "got 0"});
  CHECK_NOTHROW((void)A(Opts(4, 4).groups(2).res_in_channels(0)));  // only the first module reads it
}
