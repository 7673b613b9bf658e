// ConvTranspose3d: PyTorch fixtures (tests/reference/conv_transpose3d_ref.py), central-difference checks,
// gradient accumulation, frozen weights, bad input and options, its adjointness to Conv3d, and the dispatched
// kernels (Conv3d's fast paths on cpu) against the generic ones.
#include <mmnet/core/parallel.hpp>
#include <mmnet/layers/conv3d.hpp>
#include <mmnet/layers/conv_transpose3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

nn::ConvTranspose3dOptions case_options(const Fixture& fx, const std::string& g) {
  return nn::ConvTranspose3dOptions(static_cast<index_t>(fx.scalar(g + "in")),
                                    static_cast<index_t>(fx.scalar(g + "out")), triple(fx.array(g + "kernel")))
      .stride(triple(fx.array(g + "stride")))
      .padding(triple(fx.array(g + "padding")))
      .output_padding(triple(fx.array(g + "output_padding")))
      .dilation(triple(fx.array(g + "dilation")))
      .bias(fx.scalar(g + "bias") != 0);
}

// The fixture's module: options and PyTorch's state dict (strict load: names "weight", "bias", PyTorch shapes).
template <class T>
nn::ConvTranspose3d<T, Backend> case_module(const Fixture& fx, const std::string& g) {
  nn::ConvTranspose3d<T, Backend> conv(case_options(fx, g));
  conv.load_state_dict(fx.group(g + "state"));
  return conv;
}

}  // namespace

TEST_CASE_TEMPLATE("ConvTranspose3d matches PyTorch: output, grad_input, grad_weight, grad_bias", T, float, double) {
  Fixture fx("conv_transpose3d");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  REQUIRE(cases >= 16);
  for (int i = 0; i < cases; ++i) {
    const std::string g = case_name(i);
    CAPTURE(g);
    auto conv = case_module<T>(fx, g);
    const auto x = fx.tensor<T>(g + "input");
    const auto dy = fx.tensor<T>(g + "grad_output");
    check_close(conv.forward(x), fx.array(g + "output"), tol_output<T>(), "conv_transpose3d " + g + "output");
    check_close(conv.backward(dy), fx.array(g + "grad_input"), tol_grad<T>(), "conv_transpose3d " + g + "grad_input");
    check_close(conv.weight.grad, fx.array(g + "grad_weight"), tol_grad<T>(), "conv_transpose3d " + g + "grad_weight");
    if (conv.options().bias())
      check_close(conv.bias.grad, fx.array(g + "grad_bias"), tol_grad<T>(), "conv_transpose3d " + g + "grad_bias");
    else
      CHECK_FALSE(conv.bias.defined());
  }
}

TEST_CASE("ConvTranspose3d passes the central-difference gradient check") {
  struct Case {
    Shape x;
    nn::ConvTranspose3dOptions o;
  };
  using O = nn::ConvTranspose3dOptions;
  const Case cases[] = {
      {{2, 2, 2, 3, 4}, O(2, 3, 2).stride(2)},                                        // k2 s2
      {{1, 3, 2, 3, 4}, O(3, 2, 2).stride(2).bias(false)},                            // k2 s2, no bias
      {{1, 2, 2, 3, 4}, O(2, 2, 3).stride(2).padding(1).output_padding(1)},           // k3 s2 p1 op1
      {{2, 2, 3, 2, 3}, O(2, 3, {1, 2, 2}).stride({1, 2, 2})},                        // anisotropic
      {{1, 2, 3, 4, 5}, O(2, 2, 3).padding(1)},                                       // k3 s1 p1
      {{1, 2, 2, 3, 3}, O(2, 2, {2, 3, 2}).stride({2, 1, 3}).padding({0, 1, 0}).output_padding({1, 0, 2})},
      {{1, 1, 3, 3, 4}, O(1, 2, 3).padding(2).dilation(2).output_padding({1, 0, 1})},  // op < dilation only
  };
  int i = 0;
  for (const auto& c : cases) {
    CAPTURE(i++);
    Generator gen(300 + static_cast<std::uint64_t>(i));
    nn::ConvTranspose3d<double, Backend> conv(c.o, gen);
    gradcheck_module(conv, randn<double>(c.x, 400 + static_cast<std::uint64_t>(i)));
  }
}

TEST_CASE_TEMPLATE("ConvTranspose3d parameter gradients accumulate over two backward calls", T, float, double) {
  Fixture fx("conv_transpose3d");
  for (int i : {0, 2, 11}) {  // k2 s2, k3 s2 p1 op1, stride 1 (the cpu fast paths)
    const std::string g = case_name(i);
    CAPTURE(g);
    auto conv = case_module<T>(fx, g);
    const auto x = fx.tensor<T>(g + "input");
    const auto dy = fx.tensor<T>(g + "grad_output");
    conv.forward(x);
    conv.backward(dy);
    const auto dx = conv.backward(dy);
    check_close(dx, fx.array(g + "grad_input"), tol_grad<T>(), g + "grad_input, second call");
    check_close(conv.weight.grad, scaled(fx.array(g + "grad_weight"), 2), tol_grad<T>(), g + "grad_weight x2");
    check_close(conv.bias.grad, scaled(fx.array(g + "grad_bias"), 2), tol_grad<T>(), g + "grad_bias x2");
    conv.zero_grad();
    conv.backward(dy);
    check_close(conv.weight.grad, fx.array(g + "grad_weight"), tol_grad<T>(), g + "grad_weight after zero_grad");
  }
}

TEST_CASE_TEMPLATE("a frozen ConvTranspose3d weight gets no gradient", T, float, double) {
  Fixture fx("conv_transpose3d");
  const std::string g = case_name(0);
  auto conv = case_module<T>(fx, g);
  conv.weight.requires_grad = false;
  conv.forward(fx.tensor<T>(g + "input"));
  const auto dx = conv.backward(fx.tensor<T>(g + "grad_output"));
  check_close(dx, fx.array(g + "grad_input"), tol_grad<T>(), "grad_input with a frozen weight");
  CHECK(dot(conv.weight.grad, conv.weight.grad) == 0.0);
  check_close(conv.bias.grad, fx.array(g + "grad_bias"), tol_grad<T>(), "grad_bias with a frozen weight");

  conv.freeze();
  conv.zero_grad();
  const auto dx2 = conv.backward(fx.tensor<T>(g + "grad_output"));
  check_close(dx2, fx.array(g + "grad_input"), tol_grad<T>(), "grad_input with everything frozen");
  CHECK(dot(conv.bias.grad, conv.bias.grad) == 0.0);
}

TEST_CASE("ConvTranspose3d parameters: names, (in, out, k) layout, PyTorch default init with fan_in = out * k^3") {
  nn::ConvTranspose3d<double, Backend> up(nn::ConvTranspose3dOptions(8, 2, 2).stride(2));
  const auto np = up.named_parameters();
  REQUIRE(np.size() == 2);
  CHECK(np[0].first == "weight");
  CHECK(np[1].first == "bias");
  CHECK(up.weight.value.shape() == Shape{8, 2, 2, 2, 2});
  CHECK(up.bias.value.shape() == Shape{2});
  // PyTorch's fan_in of a transposed weight is dim 1 (out) times the kernel volume: 2 * 8 = 16, bound 1/4.
  // (in * k^3 = 64 would give 1/8: with 128 draws some exceed it.)
  double wmax = 0;
  for (double w : up.weight.value.to_vector()) {
    CHECK(std::abs(w) <= 0.25);
    wmax = std::max(wmax, std::abs(w));
  }
  CHECK(wmax > 0.125);
  for (double b : up.bias.value.to_vector()) CHECK(std::abs(b) <= 0.25);

  const auto& o = up.options();
  CHECK(o.in_channels() == 8);
  CHECK(o.out_channels() == 2);
  CHECK(o.kernel_size() == nn::ExpandingArray3(2));
  CHECK(o.stride() == nn::ExpandingArray3(2));
  CHECK(o.padding() == nn::ExpandingArray3(0));
  CHECK(o.output_padding() == nn::ExpandingArray3(0));
  CHECK(o.dilation() == nn::ExpandingArray3(1));
  CHECK(o.bias());

  nn::ConvTranspose3d<double, Backend> nb(nn::ConvTranspose3dOptions(3, 2, {1, 2, 2}).stride({1, 2, 2}).bias(false));
  CHECK_FALSE(nb.bias.defined());
  CHECK(nb.state_dict().keys() == std::vector<std::string>{"weight"});
  CHECK(nb.weight.value.shape() == Shape{3, 2, 1, 2, 2});

  Generator g1(5), g2(5);
  nn::ConvTranspose3d<double, Backend> a(nn::ConvTranspose3dOptions(2, 3, 2), g1);
  nn::ConvTranspose3d<double, Backend> b(nn::ConvTranspose3dOptions(2, 3, 2), g2);
  CHECK(a.weight.value.to_vector() == b.weight.value.to_vector());
  CHECK(a.bias.value.to_vector() == b.bias.value.to_vector());
}

TEST_CASE("ConvTranspose3d output extents follow PyTorch's formula") {
  using P = ConvTranspose3dProblem;
  // (in - 1) s - 2p + d (k - 1) + op + 1
  CHECK(P::output_extent(5, 2, 2, 0, 0, 1) == 10);  // k2 s2 doubles
  CHECK(P::output_extent(5, 3, 2, 1, 1, 1) == 10);  // k3 s2 p1 op1 doubles
  CHECK(P::output_extent(5, 3, 2, 1, 0, 1) == 9);
  CHECK(P::output_extent(4, 3, 1, 1, 0, 1) == 4);   // k3 s1 p1 keeps the size
  CHECK(P::output_extent(3, 3, 1, 2, 1, 2) == 4);   // dilation 2
  CHECK(P::output_extent(1, 1, 1, 1, 0, 1) == -1);  // the padding eats everything
  nn::ConvTranspose3d<double, Backend> up(nn::ConvTranspose3dOptions(2, 3, {1, 2, 2}).stride({1, 2, 2}));
  CHECK(up.forward(randn<double>({2, 2, 3, 4, 5}, 1)).shape() == Shape{2, 3, 3, 8, 10});
}

TEST_CASE("ConvTranspose3d rejects bad input and bad options") {
  nn::ConvTranspose3d<double, Backend> conv(nn::ConvTranspose3dOptions(3, 4, 3).padding(2));
  check_throws_naming<shape_error>([&] { conv.forward(randn<double>({2, 3, 5, 6}, 1)); },
                                   {"mmnet::nn::ConvTranspose3d", "rank", "expected 5", "got 4"});
  check_throws_naming<shape_error>(
      [&] { conv.forward(randn<double>({2, 2, 5, 6, 7}, 1)); },
      {"mmnet::nn::ConvTranspose3d", "input channels", "expected 3", "got 2", "(2, 2, 5, 6, 7)"});
  // (1 - 1) - 4 + 2 + 1 = -1 along D, (2 - 1) - 4 + 3 = 0 along H
  check_throws_naming<shape_error>([&] { conv.forward(randn<double>({1, 3, 1, 2, 7}, 1)); },
                                   {"mmnet::nn::ConvTranspose3d", "output size", "(-1, 0, 5)", "(1, 3, 1, 2, 7)"});
  check_throws_naming<shape_error>([&] { conv.forward(TestTensor<double>(Shape{1, 3, 4, 0, 5})); },
                                   {"mmnet::nn::ConvTranspose3d", "input spatial extents", "(1, 3, 4, 0, 5)"});
  check_throws_naming<shape_error>([&] { conv.forward(Tensor<double, Backend>()); },
                                   {"mmnet::nn::ConvTranspose3d", "empty tensor"});
  check_throws_naming<value_error>([&] { conv.backward(randn<double>({1, 4, 3, 4, 5}, 1)); },
                                   {"mmnet::nn::ConvTranspose3d::backward", "forward() call first"});

  conv.forward(randn<double>({1, 3, 5, 6, 7}, 1));  // output (1, 4, 3, 4, 5)
  check_throws_naming<shape_error>(
      [&] { conv.backward(randn<double>({1, 4, 3, 4, 4}, 1)); },
      {"mmnet::nn::ConvTranspose3d::backward", "grad_output", "(1, 4, 3, 4, 5)", "(1, 4, 3, 4, 4)"});
  CHECK_THROWS_AS(conv.backward(randn<double>({1, 4, 3, 4}, 1)), shape_error);

  using O = nn::ConvTranspose3dOptions;
  using C = nn::ConvTranspose3d<double, Backend>;
  const std::string opts = "mmnet::nn::ConvTranspose3dOptions";
  check_throws_naming<value_error>([] { (void)C(O(0, 4, 3)); }, {opts, "in_channels", "got 0"});
  check_throws_naming<value_error>([] { (void)C(O(3, 0, 3)); }, {opts, "out_channels", "got 0"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, {1, 0, 3})); }, {"kernel_size", "(1, 0, 3)"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 3).stride({1, 1, 0})); }, {"stride", "(1, 1, 0)"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 3).padding({0, -1, 0})); }, {"padding", "(0, -1, 0)"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 3).dilation(0)); }, {"dilation", "(0, 0, 0)"});
  // output_padding must stay below max(stride, dilation) on every axis, as PyTorch requires
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 2).stride(2).output_padding({0, 2, 0})); },
                                   {opts, "output_padding", "(2, 2, 2)", "got (0, 2, 0)"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 3).output_padding(1)); }, {"output_padding", "(1, 1, 1)"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 3).stride(2).output_padding({0, 0, -1})); },
                                   {"output_padding", "got (0, 0, -1)"});
  CHECK_NOTHROW(C(O(3, 4, 3).dilation(2).output_padding(1)));  // op < dilation suffices
}

TEST_CASE_TEMPLATE("ConvTranspose3d with an empty batch gives an empty output", T, float, double) {
  nn::ConvTranspose3d<T, Backend> up(nn::ConvTranspose3dOptions(2, 3, 2).stride(2));
  const auto y = up.forward(TestTensor<T>(Shape{0, 2, 3, 4, 5}));
  CHECK(y.shape() == Shape{0, 3, 6, 8, 10});
  const auto dx = up.backward(y);
  CHECK(dx.shape() == Shape{0, 2, 3, 4, 5});
  CHECK(dot(up.weight.grad, up.weight.grad) == 0.0);
  CHECK(dot(up.bias.grad, up.bias.grad) == 0.0);
}

// <ConvTranspose3d(x), y> = <x, Conv3d(y)> for the Conv3d with the same weight and geometry (no biases).
TEST_CASE("ConvTranspose3d is the adjoint of Conv3d") {
  struct Case {
    Shape x;
    index_t cin, cout;
    nn::ExpandingArray3 k, s, p, op;
  };
  const Case cases[] = {
      {{2, 3, 3, 4, 5}, 3, 2, 2, 2, 0, 0},
      {{1, 2, 3, 4, 5}, 2, 3, 3, 2, 1, 1},
      {{1, 2, 3, 4, 5}, 2, 3, {1, 2, 2}, {1, 2, 2}, 0, 0},
  };
  for (const auto& c : cases) {
    nn::ConvTranspose3d<double, Backend> up(
        nn::ConvTranspose3dOptions(c.cin, c.cout, c.k).stride(c.s).padding(c.p).output_padding(c.op).bias(false));
    nn::Conv3d<double, Backend> down(nn::Conv3dOptions(c.cout, c.cin, c.k).stride(c.s).padding(c.p).bias(false));
    down.weight.value.assign(up.weight.value.to_vector());  // (in, out, k) is Conv3d's (out', in', k)
    const auto x = randn<double>(c.x, 11);
    const auto ux = up.forward(x);
    const auto y = randn<double>(ux.shape(), 12);
    const auto dy = down.forward(y);
    REQUIRE(dy.shape() == x.shape());
    check_close_scalar(dot(ux, y), dot(x, dy), 1e-12, "adjoint identity");
  }
}

// The dispatched kernels (Conv3d's cpu fast paths on the cpu backend) against backend::generic on random problems,
// including output_padding >= stride (the adjoint conv's output extents are set, not computed).
TEST_CASE_TEMPLATE("ConvTranspose3d dispatched kernels agree with the generic kernels", T, float, double) {
  Generator rng(4321);
  auto pick = [&](index_t lo, index_t hi) {
    return lo + static_cast<index_t>(rng.integer(static_cast<std::uint64_t>(hi - lo + 1)));
  };
  int tested = 0;
  for (int trial = 0; tested < 24 && trial < 400; ++trial) {
    ConvTranspose3dProblem p;
    p.N = pick(1, 2), p.C = pick(1, 4), p.K = pick(1, 6);
    p.kd = pick(1, 3), p.kh = pick(1, 3), p.kw = pick(1, 4);
    p.sd = pick(1, 2), p.sh = pick(1, 3), p.sw = trial % 3 == 0 ? 2 : 1;
    p.dd = pick(1, 2), p.dh = pick(1, 2), p.dw = pick(1, 2);
    p.pd = pick(0, 2), p.ph = pick(0, 2), p.pw = pick(0, 2);
    p.opd = pick(0, std::max(p.sd, p.dd) - 1), p.oph = pick(0, std::max(p.sh, p.dh) - 1);
    p.opw = pick(0, std::max(p.sw, p.dw) - 1);
    p.D = pick(1, 4), p.H = pick(1, 5), p.W = pick(1, 11);
    p.compute_output();
    if (!p.valid_output()) continue;
    ++tested;
    const std::string what = "N" + std::to_string(p.N) + " C" + std::to_string(p.C) + " K" + std::to_string(p.K) +
                             " in " + Shape{p.D, p.H, p.W}.str() + " k " + Shape{p.kd, p.kh, p.kw}.str() + " s " +
                             Shape{p.sd, p.sh, p.sw}.str() + " p " + Shape{p.pd, p.ph, p.pw}.str() + " op " +
                             Shape{p.opd, p.oph, p.opw}.str() + " d " + Shape{p.dd, p.dh, p.dw}.str();
    CAPTURE(what);
    const std::uint64_t seed = 2000 + static_cast<std::uint64_t>(trial);
    const auto x = randn<T>({p.N, p.C, p.D, p.H, p.W}, seed);
    const auto w = randn<T>({p.C, p.K, p.kd, p.kh, p.kw}, seed + 1);
    const auto b = randn<T>({p.K}, seed + 2);
    const Shape ys{p.N, p.K, p.OD, p.OH, p.OW};
    const auto dy = randn<T>(ys, seed + 3);

    TestTensor<T> y_fast(ys), y_ref(ys);
    y_fast.fill_(T(7));  // forward assigns: stale values must disappear
    backend::conv_transpose3d_forward(Backend{}, p, x.data(), w.data(), b.data(), y_fast.data());
    backend::generic::conv_transpose3d_forward(Backend{}, p, x.data(), w.data(), b.data(), y_ref.data());
    check_close(y_fast, host(y_ref), tol_output<T>(), "forward, " + what);

    TestTensor<T> dx_fast(x.shape()), dx_ref(x.shape());
    dx_fast.fill_(T(7));
    backend::conv_transpose3d_backward_data(Backend{}, p, dy.data(), w.data(), dx_fast.data());
    backend::generic::conv_transpose3d_backward_data(Backend{}, p, dy.data(), w.data(), dx_ref.data());
    check_close(dx_fast, host(dx_ref), tol_grad<T>(), "backward data, " + what);

    auto dw_fast = randn<T>(w.shape(), seed + 4), dw_ref = dw_fast.clone();  // backward-weight adds
    backend::conv_transpose3d_backward_weight(Backend{}, p, x.data(), dy.data(), dw_fast.data());
    backend::generic::conv_transpose3d_backward_weight(Backend{}, p, x.data(), dy.data(), dw_ref.data());
    check_close(dw_fast, host(dw_ref), tol_grad<T>(), "backward weight, " + what);
  }
  CHECK(tested == 24);
}

TEST_CASE_TEMPLATE("ConvTranspose3d results do not depend on the thread count", T, float, double) {
  const int saved = get_num_threads();
  nn::ConvTranspose3d<T, Backend> conv(nn::ConvTranspose3dOptions(5, 6, 3).stride(2).padding(1).output_padding(1));
  const auto x = randn<T>({2, 5, 5, 6, 11}, 3);
  const auto dy = randn<T>({2, 6, 10, 12, 22}, 4);
  std::vector<std::vector<T>> runs[2];
  const int threads[2] = {1, 3};
  for (int r = 0; r < 2; ++r) {
    set_num_threads(threads[r]);
    conv.zero_grad();
    const auto y = conv.forward(x);
    const auto dx = conv.backward(dy);
    runs[r] = {y.to_vector(), dx.to_vector(), conv.weight.grad.to_vector(), conv.bias.grad.to_vector()};
  }
  set_num_threads(saved);
  for (int j = 0; j < 4; ++j) CHECK(runs[0][j] == runs[1][j]);
}
