// HMRNet's BFC and its gate: PyTorch fixtures (tests/reference/bfc_ref.py) for scales 2, 4, 8, (2,2,1) and
// (8,8,4), with and without the U-Net skip, gates on / off / one of them: mc, hc, both gates, gradients of m, h,
// skip and every parameter, the state dict loaded strictly under the official names; central differences in
// double (tie-free max-pool inputs); accumulation over two backward calls; composable names; bad input.
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include <mmnet/attention/bfc.hpp>
#include <mmnet/layers/activation.hpp>
#include <mmnet/layers/instance_norm3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

// The test fusion block, as in bfc_ref.py: HMRNet's ConvBlock with one conv (Conv3d k3 p1 -> IN -> LeakyReLU),
// keys conv_conv.0.{weight,bias}, conv_conv.1.{weight,bias}.
template <class T>
struct Block : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  nn::Conv3d<T, Backend> conv;
  nn::InstanceNorm3d<T, Backend> norm;
  nn::LeakyReLU<T, Backend> act;

  Block(index_t cin, index_t cout) : conv(nn::Conv3dOptions(cin, cout, 3).padding(1)), norm(nn::InstanceNorm3dOptions(cout)) {}
  void members(Members<T, Backend>& m) override { m("conv_conv.0", conv)("conv_conv.1", norm); }
  tensor forward(const tensor& x) { return act.forward(norm.forward(conv.forward(x))); }
  tensor backward(const tensor& dy) { return conv.backward(norm.backward(act.backward(dy))); }
};

template <class T>
using TestBFC = attention::BFC<T, Backend, Block<T>>;

const char* const cases[] = {"s2_enc",        "s4_enc",        "s8_enc",          "s221_enc",
                             "s884_enc",      "s4_dec_skip",   "s2_dec_skip",     "s221_dec_skip",
                             "s884_dec_skip_size1", "s2_gates_off", "s4_hr_gate_only", "s221_mr_gate_only"};

template <class T>
TestBFC<T> make_bfc(index_t cm, index_t ch, index_t cskip, ExpandingArray3 scale, int level, bool mr_gate, bool hr_gate) {
  const auto o = attention::BFCOptions(cm, ch, scale).skip_channels(cskip).level(level).mr_gate(mr_gate).hr_gate(hr_gate);
  return TestBFC<T>(o, Block<T>(cskip + ch + cm, cm), Block<T>(cm + ch, ch));
}

template <class T>
TestBFC<T> make_bfc(const Fixture& fx, const std::string& n) {
  const auto& s = fx.array(n + "/scale").data;
  const ExpandingArray3 scale(static_cast<index_t>(s[0]), static_cast<index_t>(s[1]), static_cast<index_t>(s[2]));
  return make_bfc<T>(static_cast<index_t>(fx.scalar(n + "/mr_channels")), static_cast<index_t>(fx.scalar(n + "/hr_channels")),
                     static_cast<index_t>(fx.scalar(n + "/skip_channels")), scale, static_cast<int>(fx.scalar(n + "/level")),
                     fx.scalar(n + "/mr_gate") != 0, fx.scalar(n + "/hr_gate") != 0);
}

// max|a - b| / scale: for gradients that are exactly 0 in exact arithmetic (a conv bias right before an
// instance norm), which are held to the largest parameter gradient G of their case (spec §8.1), never relatively.
template <class T>
void check_close_to_scale(const Tensor<T, Backend>& actual, const HostArray& expected, double scale, double tol,
                          const std::string& what) {
  INFO(what);
  REQUIRE(actual.shape().to_vector() == expected.shape);
  const auto v = actual.to_vector();
  double err = 0;
  for (std::size_t i = 0; i < v.size(); ++i) err = std::max(err, std::abs(static_cast<double>(v[i]) - expected.data[i]));
  err /= scale;
  ErrorStats::get().record(std::is_same_v<T, double>, err, what);
  CHECK_MESSAGE(err <= tol, what << ": error " << err << " (relative to G = " << scale << ") > tolerance " << tol);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// N(0,1)-like values without near ties: a random permutation of n evenly spaced values in [-2, 2], so a
// central-difference step never moves a max-pool argmax.
Tensor<double, Backend> distinct_values(const Shape& s, std::uint64_t seed) {
  const index_t n = s.numel();
  std::vector<double> v(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = -2.0 + 4.0 * static_cast<double>(i) / static_cast<double>(n);
  Generator g(seed);
  for (index_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<index_t>(g.uniform() * static_cast<double>(i + 1)) % (i + 1);
    std::swap(v[static_cast<std::size_t>(i)], v[static_cast<std::size_t>(j)]);
  }
  return Tensor<double, Backend>::from_vector(s, v);
}

// Gate as a one-input module over x (y fixed) or over y (x fixed), for gradcheck_module.
struct GateWrtX : Module<double, Backend> {
  attention::Gate<double, Backend> gate{attention::GateOptions(2)};
  Tensor<double, Backend> y;
  void members(Members<double, Backend>& m) override { m("gate", gate); }
  Tensor<double, Backend> forward(const Tensor<double, Backend>& x) { return gate.forward(x, y); }
  Tensor<double, Backend> backward(const Tensor<double, Backend>& dz) { return gate.backward(dz).first; }
};
struct GateWrtY : Module<double, Backend> {
  attention::Gate<double, Backend> gate{attention::GateOptions(2)};
  Tensor<double, Backend> x;
  void members(Members<double, Backend>& m) override { m("gate", gate); }
  Tensor<double, Backend> forward(const Tensor<double, Backend>& y) { return gate.forward(x, y); }
  Tensor<double, Backend> backward(const Tensor<double, Backend>& dz) { return gate.backward(dz).second; }
};

// A parent module listing one BFC level inline between its own members, as the HMRNet model does.
struct Parent : Module<double, Backend> {
  nn::Conv3d<double, Backend> basic_conv3{nn::Conv3dOptions(2, 2, 1)};
  TestBFC<double> bfc = make_bfc<double>(4, 2, 0, {2, 2, 1}, 3, true, true);
  nn::Conv3d<double, Backend> dpvision_con3{nn::Conv3dOptions(4, 2, 1)};
  void members(Members<double, Backend>& m) override {
    m("basic_conv3", basic_conv3);
    m.splice(bfc);
    m("dpvision_con3", dpvision_con3);
  }
};

}  // namespace

TEST_CASE_TEMPLATE("BFC matches the PyTorch reference: mc, hc, gates, gradients of m, h, skip and every parameter", T,
                   float, double) {
  Fixture fx("bfc");
  for (const std::string n : cases) {
    INFO("case " << n);
    auto bfc = make_bfc<T>(fx, n);
    const StateDict ref_state = fx.group(n + "/state");
    CHECK(bfc.state_dict().keys() == ref_state.keys());  // official names, official order
    bfc.load_state_dict(ref_state, true);

    const auto m = fx.tensor<T>(n + "/m");
    const auto h = fx.tensor<T>(n + "/h");
    const bool skip_case = fx.has(n + "/skip");
    const auto skip = skip_case ? fx.tensor<T>(n + "/skip") : Tensor<T, Backend>();
    auto out = bfc.forward(m, h, skip);
    check_close(out.mc, fx.array(n + "/mc"), tol_output<T>(), n + " mc");
    check_close(out.hc, fx.array(n + "/hc"), tol_output<T>(), n + " hc");
    if (fx.has(n + "/alpha_m")) check_close(bfc.alpha_m(), fx.array(n + "/alpha_m"), tol_output<T>(), n + " alpha_m");
    else CHECK_FALSE(bfc.alpha_m().defined());
    if (fx.has(n + "/alpha_h")) check_close(bfc.alpha_h(), fx.array(n + "/alpha_h"), tol_output<T>(), n + " alpha_h");
    else CHECK_FALSE(bfc.alpha_h().defined());

    auto g = bfc.backward(fx.tensor<T>(n + "/grad_mc"), fx.tensor<T>(n + "/grad_hc"));
    check_close(g.dm, fx.array(n + "/grad_m"), tol_grad<T>(), n + " grad_m");
    check_close(g.dh, fx.array(n + "/grad_h"), tol_grad<T>(), n + " grad_h");
    if (skip_case) check_close(g.dskip, fx.array(n + "/grad_skip"), tol_grad<T>(), n + " grad_skip");
    else CHECK_FALSE(g.dskip.defined());

    const StateDict ref_grad = fx.group(n + "/grad");
    double G = 0;
    for (auto& e : ref_grad)
      for (double v : e.second.data) G = std::max(G, std::abs(v));
    auto params = bfc.named_parameters();
    REQUIRE(params.size() == ref_grad.size());
    for (auto& [key, p] : params) {
      const HostArray& ref = fx.array(n + "/grad/" + key);
      if (ends_with(key, "conv_conv.0.bias"))  // feeds an instance norm: exactly 0 in exact arithmetic
        check_close_to_scale(p->grad, ref, G, tol_grad<T>(), n + " grad " + key);
      else
        check_close(p->grad, ref, tol_grad<T>(), n + " grad " + key);
    }
  }
}

TEST_CASE_TEMPLATE("Gate matches x * sigmoid(conv(y)) with both input gradients and the conv's", T, float, double) {
  Fixture fx("bfc");
  attention::Gate<T, Backend> gate(attention::GateOptions(2));
  CHECK(gate.state_dict().keys() == std::vector<std::string>{"conv.weight", "conv.bias"});
  gate.load_state_dict(fx.group("gate/state"), true);
  check_close(gate.forward(fx.tensor<T>("gate/x"), fx.tensor<T>("gate/y")), fx.array("gate/output"), tol_output<T>(),
              "gate output");
  check_close(gate.alpha(), fx.array("gate/alpha"), tol_output<T>(), "gate alpha");
  auto [dx, dy] = gate.backward(fx.tensor<T>("gate/grad_output"));
  check_close(dx, fx.array("gate/grad_x"), tol_grad<T>(), "gate grad_x");
  check_close(dy, fx.array("gate/grad_y"), tol_grad<T>(), "gate grad_y");
  check_close(gate.conv.weight.grad, fx.array("gate/grad/conv.weight"), tol_grad<T>(), "gate grad conv.weight");
  check_close(gate.conv.bias.grad, fx.array("gate/grad/conv.bias"), tol_grad<T>(), "gate grad conv.bias");
}

TEST_CASE("Gate passes the central-difference gradient check for x, y and the conv (double)") {
  GateWrtX gx;
  gx.y = randn<double>({2, 2, 3, 4, 5}, 1);
  gradcheck_module(gx, randn<double>({2, 3, 3, 4, 5}, 2));
  GateWrtY gy;
  gy.x = randn<double>({2, 3, 3, 4, 5}, 3);
  gradcheck_module(gy, randn<double>({2, 2, 3, 4, 5}, 4));
}

TEST_CASE("BFC passes the central-difference gradient check for m, h, skip and every parameter (double)") {
  struct Config {
    ExpandingArray3 scale;
    Shape hr;  // D, H, W
    index_t cskip;
    bool mr_gate, hr_gate;
  };
  const Config configs[] = {
      {{2, 2, 2}, {4, 6, 8}, 2, true, true},    // decoder level, both gates
      {{2, 2, 1}, {4, 6, 3}, 0, true, true},    // HMRNet-s pooling
      {{4, 4, 4}, {4, 8, 12}, 2, false, true},  // HRB only, MR extent 1 on D
      {{2, 2, 2}, {6, 4, 2}, 0, false, false},  // no BFC: fusion blocks only
      {{8, 8, 4}, {16, 8, 4}, 0, true, false},  // MRB only, MR 2 x 1 x 1
  };
  const index_t cm = 2, ch = 2;
  int k = 0;
  for (const Config& c : configs) {
    INFO("config " << k);
    auto bfc = make_bfc<double>(cm, ch, c.cskip, c.scale, 1, c.mr_gate, c.hr_gate);
    const Shape mr{2, cm, c.hr[0] / c.scale[0], c.hr[1] / c.scale[1], c.hr[2] / c.scale[2]};
    auto m = randn<double>(mr, 10 + k);
    auto h = distinct_values({2, ch, c.hr[0], c.hr[1], c.hr[2]}, 20 + k);
    auto skip = c.cskip ? randn<double>({2, c.cskip, mr[2], mr[3], mr[4]}, 30 + k) : Tensor<double, Backend>();
    auto out = bfc.forward(m, h, skip);
    const auto rm = randn<double>(out.mc.shape(), 40 + k), rh = randn<double>(out.hc.shape(), 50 + k);
    // Pre-filled gradients: a BFC that assigns instead of adding fails.
    std::vector<std::vector<double>> prefill;
    Generator gen(60 + k);
    for (auto& np : bfc.named_parameters()) {
      std::vector<double> v(static_cast<std::size_t>(np.second->grad.numel()));
      for (auto& e : v) e = gen.normal();
      np.second->grad.assign(v);
      prefill.push_back(v);
    }
    const auto g = bfc.backward(rm, rh);
    auto value = [&] {
      auto o = bfc.forward(m, h, skip);
      return dot(o.mc, rm) + dot(o.hc, rh);
    };
    central_difference_check("dL/dm", m.numel(), g.dm.to_vector(), value,
                             [&](index_t i, double d) { perturb_element(m, i, d); });
    central_difference_check("dL/dh", h.numel(), g.dh.to_vector(), value,
                             [&](index_t i, double d) { perturb_element(h, i, d); });
    if (c.cskip)
      central_difference_check("dL/dskip", skip.numel(), g.dskip.to_vector(), value,
                               [&](index_t i, double d) { perturb_element(skip, i, d); });
    std::size_t j = 0;
    for (auto& np : bfc.named_parameters()) {
      auto acc = np.second->grad.to_vector();
      for (std::size_t i = 0; i < acc.size(); ++i) acc[i] -= prefill[j][i];
      ++j;
      auto& p = np.second->value;
      central_difference_check("dL/d" + np.first, p.numel(), acc, value,
                               [&](index_t i, double d) { perturb_element(p, i, d); });
    }
    ++k;
  }
}

TEST_CASE("BFC and Gate accumulate parameter gradients over two backward calls") {
  auto bfc = make_bfc<double>(3, 2, 2, {2, 2, 1}, 6, true, true);
  const auto m = randn<double>({2, 3, 2, 3, 4}, 1), h = randn<double>({2, 2, 4, 6, 4}, 2);
  const auto skip = randn<double>({2, 2, 2, 3, 4}, 3);
  auto out = bfc.forward(m, h, skip);
  const auto rm = randn<double>(out.mc.shape(), 4), rh = randn<double>(out.hc.shape(), 5);
  bfc.zero_grad();
  const auto g1 = bfc.backward(rm, rh);
  std::vector<std::vector<double>> once;
  for (auto* p : bfc.parameters()) once.push_back(p->grad.to_vector());
  const auto g2 = bfc.backward(rm, rh);
  CHECK(g1.dm.to_vector() == g2.dm.to_vector());  // input gradients are returned, not accumulated
  CHECK(g1.dh.to_vector() == g2.dh.to_vector());
  CHECK(g1.dskip.to_vector() == g2.dskip.to_vector());
  std::size_t k = 0;
  for (auto& np : bfc.named_parameters()) {
    INFO(np.first);  // no structured binding: INFO captures it in a lambda (C++20 under nvcc)
    const auto twice = np.second->grad.to_vector();
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < twice.size(); ++i) {
      err = std::max(err, std::abs(twice[i] - 2 * once[k][i]));
      scale = std::max(scale, std::abs(once[k][i]));
    }
    CHECK(err <= 1e-12 * std::max(scale, 1e-300) + 1e-300);
    ++k;
  }
  // Frozen gate conv: no gradient, the rest still accumulates.
  bfc.zero_grad();
  bfc.sse_up->conv.freeze();
  bfc.forward(m, h, skip);
  bfc.backward(rm, rh);
  CHECK(sum(bfc.sse_up->conv.weight.grad) == 0.0);
  CHECK(sum(bfc.sse_down->conv.weight.grad) != 0.0);

  attention::Gate<double, Backend> gate(attention::GateOptions(2));
  const auto x = randn<double>({2, 3, 3, 4, 5}, 6), y = randn<double>({2, 2, 3, 4, 5}, 7);
  const auto dz = randn<double>({2, 3, 3, 4, 5}, 8);
  gate.forward(x, y);
  gate.backward(dz);
  const auto w1 = gate.conv.weight.grad.to_vector();
  const double b1 = gate.conv.bias.grad.item();
  gate.backward(dz);
  const auto w2 = gate.conv.weight.grad.to_vector();
  for (std::size_t i = 0; i < w1.size(); ++i) CHECK(w2[i] == doctest::Approx(2 * w1[i]).epsilon(1e-12));
  CHECK(gate.conv.bias.grad.item() == doctest::Approx(2 * b1).epsilon(1e-12));
}

TEST_CASE("BFC names compose into a model's state dict; gates that are off have no keys") {
  Parent parent;
  CHECK(parent.state_dict().keys() ==
        std::vector<std::string>{"basic_conv3.weight", "basic_conv3.bias",
                                 "concat3.conv.conv_conv.0.weight", "concat3.conv.conv_conv.0.bias",
                                 "concat3.conv.conv_conv.1.weight", "concat3.conv.conv_conv.1.bias",
                                 "fr_concat3.conv.conv_conv.0.weight", "fr_concat3.conv.conv_conv.0.bias",
                                 "fr_concat3.conv.conv_conv.1.weight", "fr_concat3.conv.conv_conv.1.bias",
                                 "sse_up3.conv.weight", "sse_up3.conv.bias", "sse_down3.conv.weight",
                                 "sse_down3.conv.bias", "dpvision_con3.weight", "dpvision_con3.bias"});
  CHECK(parent.state_dict().find("sse_up3.conv.weight")->shape == std::vector<index_t>{1, 4, 1, 1, 1});
  CHECK(parent.state_dict().find("sse_down3.conv.weight")->shape == std::vector<index_t>{1, 2, 1, 1, 1});
  parent.eval();  // train/eval reaches the fusion blocks through the inline listing
  CHECK_FALSE(parent.bfc.concat.norm.is_training());
  CHECK(parent.bfc.concat.norm.is_training() == parent.bfc.fr_concat.conv.is_training());

  auto hrb = make_bfc<double>(4, 2, 0, 2, 2, false, true);  // HRB ablation: only alpha_h
  auto keys = hrb.state_dict().keys();
  CHECK(std::count(keys.begin(), keys.end(), "sse_up2.conv.weight") == 1);
  CHECK(std::none_of(keys.begin(), keys.end(), [](const std::string& s) { return s.rfind("sse_down", 0) == 0; }));
  CHECK_FALSE(hrb.sse_down.has_value());
  auto none = make_bfc<double>(4, 2, 0, 2, 2, false, false);
  CHECK(none.state_dict().size() == 8);
  // Strict loading rejects a gated level's state (unexpected gate keys) and a gate-less one (missing keys).
  auto full = make_bfc<double>(4, 2, 0, 2, 2, true, true);
  CHECK_THROWS_AS(none.load_state_dict(full.state_dict(), true), state_dict_error);
  CHECK_THROWS_AS(full.load_state_dict(none.state_dict(), true), state_dict_error);
  CHECK_NOTHROW(none.load_state_dict(full.state_dict(), false));

  // Explicit names, e.g. for a model with other conventions.
  const auto o = attention::BFCOptions(4, 2, 2).names("mr_fuse", "hr_fuse", "gate_h", "gate_m");
  TestBFC<double> named(o, Block<double>(6, 4), Block<double>(6, 2));
  CHECK(named.state_dict().keys().front() == "mr_fuse.conv_conv.0.weight");
  CHECK(named.state_dict().keys().back() == "gate_m.conv.bias");
}

TEST_CASE("BFC with both gates off equals the fusion blocks alone; a gate is 1 where its conv saturates") {
  auto gated = make_bfc<double>(3, 2, 0, {2, 2, 1}, 1, true, true);
  auto plain = make_bfc<double>(3, 2, 0, {2, 2, 1}, 1, false, false);
  plain.load_state_dict(gated.state_dict(), false);
  // Weights 0, bias 40: sigmoid(40) = 1 - 4e-18, i.e. 1 in double.
  for (auto* gate : {&*gated.sse_up, &*gated.sse_down}) {
    gate->conv.weight.value.zero_();
    gate->conv.bias.value.fill_(40.0);
  }
  const auto m = randn<double>({2, 3, 3, 2, 5}, 1), h = randn<double>({2, 2, 6, 4, 5}, 2);
  auto a = gated.forward(m, h), b = plain.forward(m, h);
  CHECK(a.mc.to_vector() == b.mc.to_vector());
  CHECK(a.hc.to_vector() == b.hc.to_vector());
  const auto rm = randn<double>(a.mc.shape(), 3), rh = randn<double>(a.hc.shape(), 4);
  auto ga = gated.backward(rm, rh), gb = plain.backward(rm, rh);
  CHECK(ga.dm.to_vector() == gb.dm.to_vector());
  CHECK(ga.dh.to_vector() == gb.dh.to_vector());
}

TEST_CASE("Gate and BFC reject bad options and inputs, naming component, expected and actual") {
  using DGate = attention::Gate<double, Backend>;
  CHECK_THROWS_WITH_AS(DGate(attention::GateOptions(0)), doctest::Contains("in_channels: expected >= 1, got 0"), value_error);
  attention::Gate<double, Backend> gate(attention::GateOptions(2));
  const auto x = randn<double>({2, 3, 3, 4, 5}, 1);
  CHECK_THROWS_AS(gate.backward(x), value_error);  // before forward
  CHECK_THROWS_WITH_AS(gate.forward(x, randn<double>({2, 3, 3, 4, 5}, 2)),
                       doctest::Contains("mmnet::attention::Gate: channels of y (the gate's input): expected 2, got 3"),
                       shape_error);
  CHECK_THROWS_WITH_AS(gate.forward(x, randn<double>({2, 2, 3, 5, 4}, 2)), doctest::Contains("(2, 3, 3, 4, 5)"),
                       shape_error);  // spatial mismatch names x's shape
  CHECK_THROWS_AS(gate.forward(x, randn<double>({1, 2, 3, 4, 5}, 2)), shape_error);  // batch
  CHECK_THROWS_AS(gate.forward(x, randn<double>({2, 2, 12, 5}, 2)), shape_error);    // rank
  CHECK_THROWS_AS(gate.forward(Tensor<double, Backend>(), randn<double>({2, 2, 3, 4, 5}, 2)), shape_error);
  gate.forward(x, randn<double>({2, 2, 3, 4, 5}, 2));
  CHECK_THROWS_AS(gate.backward(randn<double>({2, 1, 3, 4, 5}, 3)), shape_error);

  using O = attention::BFCOptions;
  auto build = [](const O& o) { return TestBFC<double>(o, Block<double>(6, 4), Block<double>(6, 2)); };
  CHECK_THROWS_WITH_AS(build(O(0, 2, 2)), doctest::Contains("mr_channels: expected >= 1, got 0"), value_error);
  CHECK_THROWS_AS(build(O(4, 0, 2)), value_error);
  CHECK_THROWS_AS(build(O(4, 2, 2).skip_channels(-1)), value_error);
  CHECK_THROWS_WITH_AS(build(O(4, 2, {2, 0, 2})), doctest::Contains("scale: expected every entry >= 1, got (2, 0, 2)"),
                       value_error);
  CHECK_THROWS_AS(build(O(4, 2, 2).names("a", "b", "a", "c")), value_error);
  CHECK_THROWS_AS(build(O(4, 2, 2).names("a", "", "c", "d")), value_error);

  auto bfc = make_bfc<double>(4, 2, 0, {2, 2, 1}, 1, true, true);
  const auto m = randn<double>({2, 4, 3, 2, 5}, 1), h = randn<double>({2, 2, 6, 4, 5}, 2);
  CHECK_THROWS_AS(bfc.backward(m, h), value_error);  // before forward
  CHECK_THROWS_WITH_AS(bfc.forward(randn<double>({2, 3, 3, 2, 5}, 1), h),
                       doctest::Contains("channels of the MR input m: expected 4, got 3"), shape_error);
  CHECK_THROWS_WITH_AS(bfc.forward(m, randn<double>({2, 3, 6, 4, 5}, 2)),
                       doctest::Contains("channels of the HR input h: expected 2, got 3"), shape_error);
  CHECK_THROWS_AS(bfc.forward(randn<double>({1, 4, 3, 2, 5}, 1), h), shape_error);  // batch
  CHECK_THROWS_AS(bfc.forward(randn<double>({2, 4, 3, 2}, 1), h), shape_error);     // rank
  // The scale does not divide the HR extents: H = 5 with s_h = 2.
  CHECK_THROWS_WITH_AS(bfc.forward(randn<double>({2, 4, 3, 2, 5}, 1), randn<double>({2, 2, 6, 5, 5}, 2)),
                       doctest::Contains("expected a multiple of 2, got 5"), shape_error);
  // The MR extents are not HR / s (an isotropic factor given where (2, 2, 1) is configured).
  CHECK_THROWS_WITH_AS(bfc.forward(randn<double>({2, 4, 3, 2, 2}, 1), randn<double>({2, 2, 6, 4, 4}, 2)),
                       doctest::Contains("MR extent W"), shape_error);
  CHECK_THROWS_AS(bfc.forward(m, h, randn<double>({2, 4, 3, 2, 5}, 3)), shape_error);  // skip without skip_channels

  auto dec = make_bfc<double>(4, 2, 3, 2, 5, true, true);
  const auto md = randn<double>({2, 4, 2, 3, 4}, 1), hd = randn<double>({2, 2, 4, 6, 8}, 2);
  CHECK_THROWS_WITH_AS(dec.forward(md, hd), doctest::Contains("skip input: expected a tensor with 3 channels, got none"),
                       shape_error);
  CHECK_THROWS_WITH_AS(dec.forward(md, hd, randn<double>({2, 2, 2, 3, 4}, 3)),
                       doctest::Contains("channels of the skip input: expected 3, got 2"), shape_error);
  CHECK_THROWS_WITH_AS(dec.forward(md, hd, randn<double>({2, 3, 2, 4, 3}, 3)), doctest::Contains("(2, 3, 2, 4, 3)"),
                       shape_error);
  auto ok = dec.forward(md, hd, randn<double>({2, 3, 2, 3, 4}, 3));
  CHECK_THROWS_AS(dec.backward(ok.hc, ok.hc), shape_error);  // grad of mc has hc's shape
  CHECK_THROWS_AS(dec.backward(ok.mc, ok.mc), shape_error);

  // Fusion blocks of the wrong width (Bm built as C_m + C_h -> C_h) are caught at their output.
  TestBFC<double> wrong(O(4, 2, 2), Block<double>(6, 2), Block<double>(6, 2));
  CHECK_THROWS_WITH_AS(wrong.forward(md, hd), doctest::Contains("MR fusion block (Bm) output shape"), shape_error);
  TestBFC<double> wrong_in(O(4, 2, 2), Block<double>(5, 4), Block<double>(6, 2));
  CHECK_THROWS_WITH_AS(wrong_in.forward(md, hd), doctest::Contains("mmnet::nn::Conv3d: input channels: expected 5, got 6"),
                       shape_error);
}
