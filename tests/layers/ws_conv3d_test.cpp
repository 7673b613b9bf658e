// WSConv3d: fixtures from ConResNet's weight-standardised Conv3d (tests/reference/ws_conv3d_ref.py), the
// weight-standardisation gradient check of the ConResNet spec (section 8, double), gradient accumulation,
// frozen weights, properties of the standardised weight, and bad input and options.
#include <mmnet/layers/conv3d.hpp>
#include <mmnet/layers/ws_conv3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

nn::Conv3dOptions case_options(const Fixture& fx, const std::string& g) {
  return nn::Conv3dOptions(static_cast<index_t>(fx.scalar(g + "in")), static_cast<index_t>(fx.scalar(g + "out")),
                           triple(fx.array(g + "kernel")))
      .stride(triple(fx.array(g + "stride")))
      .padding(triple(fx.array(g + "padding")))
      .dilation(triple(fx.array(g + "dilation")))
      .bias(fx.scalar(g + "bias") != 0);
}

template <class T>
nn::WSConv3d<T, Backend> case_module(const Fixture& fx, const std::string& g) {
  nn::WSConv3d<T, Backend> conv(case_options(fx, g));
  conv.load_state_dict(fx.group(g + "state"));
  return conv;
}

}  // namespace

TEST_CASE_TEMPLATE("WSConv3d matches ConResNet's PyTorch module: W^, output, grad_input, grad_weight, grad_bias", T,
                   float, double) {
  Fixture fx("ws_conv3d");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  REQUIRE(cases >= 9);
  for (int i = 0; i < cases; ++i) {
    const std::string g = case_name(i);
    CAPTURE(g);
    auto conv = case_module<T>(fx, g);
    const auto x = fx.tensor<T>(g + "input");
    const auto dy = fx.tensor<T>(g + "grad_output");
    check_close(conv.standardised_weight(), fx.array(g + "w_hat"), tol_output<T>(), "ws_conv3d " + g + "w_hat");
    check_close(conv.forward(x), fx.array(g + "output"), tol_output<T>(), "ws_conv3d " + g + "output");
    check_close(conv.backward(dy), fx.array(g + "grad_input"), tol_grad<T>(), "ws_conv3d " + g + "grad_input");
    check_close(conv.weight.grad, fx.array(g + "grad_weight"), tol_grad<T>(), "ws_conv3d " + g + "grad_weight");
    if (conv.options().bias())
      check_close(conv.bias.grad, fx.array(g + "grad_bias"), tol_grad<T>(), "ws_conv3d " + g + "grad_bias");
    else
      CHECK_FALSE(conv.bias.defined());
  }
}

// ConResNet spec section 8: the weight standardisation's gradient (through mean, unbiased variance and the
// 1e-12 inside the square root) against central differences of the raw weight, in double.
TEST_CASE("WSConv3d passes the central-difference gradient check (weight standardisation)") {
  struct Case {
    Shape x;
    nn::Conv3dOptions o;
    double offset;  // added to the raw weight, so the mean subtraction matters
  };
  using O = nn::Conv3dOptions;
  const Case cases[] = {
      {{1, 2, 3, 4, 5}, O(2, 3, 3).padding(1).bias(false), 0.0},                        // ResBlock conv
      {{1, 2, 5, 4, 6}, O(2, 2, 3).stride(2).padding(1).bias(false), 0.2},               // stride-2 down conv
      {{1, 2, 5, 5, 6}, O(2, 2, 3).padding(2).dilation(2).bias(false), -0.1},           // dilation 2
      {{2, 3, 2, 3, 4}, O(3, 3, 1).bias(false), 0.5},                                    // conv_res: 1x1x1
      {{2, 2, 2, 3, 4}, O(2, 3, {1, 3, 3}).padding({0, 1, 1}), 0.3},                     // anisotropic, bias
      {{1, 2, 2, 3, 4}, O(2, 2, 1), 0.1},  // n = 2 per channel: W^ = +-1/sqrt(2), dL/dW ~ 0
  };
  int i = 0;
  for (const auto& c : cases) {
    CAPTURE(i++);
    Generator gen(500 + static_cast<std::uint64_t>(i));
    nn::WSConv3d<double, Backend> conv(c.o, gen);
    auto w = conv.weight.value.to_vector();
    for (std::size_t j = 0; j < w.size(); ++j) w[j] += c.offset * static_cast<double>(1 + j % 3);
    conv.weight.value.assign(w);
    gradcheck_module(conv, randn<double>(c.x, 600 + static_cast<std::uint64_t>(i)));
  }
}

TEST_CASE_TEMPLATE("WSConv3d parameter gradients accumulate over two backward calls", T, float, double) {
  Fixture fx("ws_conv3d");
  for (int i : {1, 4}) {  // stride 2 without bias; with bias
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
    if (conv.options().bias())
      check_close(conv.bias.grad, scaled(fx.array(g + "grad_bias"), 2), tol_grad<T>(), g + "grad_bias x2");
    conv.zero_grad();
    conv.backward(dy);
    check_close(conv.weight.grad, fx.array(g + "grad_weight"), tol_grad<T>(), g + "grad_weight after zero_grad");
  }
}

TEST_CASE_TEMPLATE("a frozen WSConv3d weight gets no gradient", T, float, double) {
  Fixture fx("ws_conv3d");
  const std::string g = case_name(4);
  auto conv = case_module<T>(fx, g);
  conv.weight.requires_grad = false;
  conv.forward(fx.tensor<T>(g + "input"));
  const auto dx = conv.backward(fx.tensor<T>(g + "grad_output"));
  check_close(dx, fx.array(g + "grad_input"), tol_grad<T>(), "grad_input with a frozen weight");
  CHECK(dot(conv.weight.grad, conv.weight.grad) == 0.0);
  check_close(conv.bias.grad, fx.array(g + "grad_bias"), tol_grad<T>(), "grad_bias with a frozen weight");
}

TEST_CASE("WSConv3d: names, init, and the standardised weight (zero mean, unit unbiased variance)") {
  nn::WSConv3d<double, Backend> conv(nn::Conv3dOptions(4, 6, 3).padding(1).bias(false));
  CHECK(conv.state_dict().keys() == std::vector<std::string>{"weight"});
  CHECK(conv.weight.value.shape() == Shape{6, 4, 3, 3, 3});
  const double bound = 1.0 / std::sqrt(4.0 * 27.0);  // nn.Conv3d's default init
  for (double w : conv.weight.value.to_vector()) CHECK(std::abs(w) <= bound);

  nn::WSConv3d<double, Backend> with_bias(nn::Conv3dOptions(2, 3, 3));  // Conv3dOptions' default: bias on
  const auto np = with_bias.named_parameters();
  REQUIRE(np.size() == 2);
  CHECK(np[0].first == "weight");
  CHECK(np[1].first == "bias");

  const auto w_hat = conv.standardised_weight().to_vector();
  const std::size_t n = 4 * 27;
  for (std::size_t o = 0; o < 6; ++o) {
    double m = 0, ss = 0;
    for (std::size_t j = 0; j < n; ++j) m += w_hat[o * n + j];
    m /= static_cast<double>(n);
    for (std::size_t j = 0; j < n; ++j) ss += (w_hat[o * n + j] - m) * (w_hat[o * n + j] - m);
    CHECK(std::abs(m) < 1e-14);
    CHECK(std::abs(ss / static_cast<double>(n - 1) - 1.0) < 1e-8);  // var / (var + 1e-12)
  }
}

TEST_CASE_TEMPLATE("WSConv3d convolves with W^: equal to nn::Conv3d holding W^; shifts of W change nothing", T,
                   float, double) {
  const auto opts = nn::Conv3dOptions(3, 4, {1, 3, 3}).stride({1, 2, 1}).padding({0, 1, 1});
  Generator gen(9);
  nn::WSConv3d<T, Backend> ws(opts, gen);
  nn::Conv3d<T, Backend> plain(opts, gen);
  plain.weight.value.assign(ws.standardised_weight().to_vector());
  plain.bias.value.assign(ws.bias.value.to_vector());
  const auto x = randn<T>({2, 3, 3, 6, 5}, 21);
  const auto y = ws.forward(x);
  check_close(plain.forward(x), host(y), tol_output<T>(), "WSConv3d vs Conv3d(W^)");

  // W -> W + c per output channel leaves W^ and the output unchanged (up to rounding)
  auto w = ws.weight.value.to_vector();
  for (std::size_t j = 0; j < w.size(); ++j) w[j] += static_cast<T>(0.25 * static_cast<double>(1 + j / 27));
  ws.weight.value.assign(w);
  const auto y1 = y.to_vector(), y2 = ws.forward(x).to_vector();
  double worst = 0, scale = 0;
  for (std::size_t j = 0; j < y1.size(); ++j) {
    worst = std::max(worst, std::abs(static_cast<double>(y2[j]) - static_cast<double>(y1[j])));
    scale = std::max(scale, std::abs(static_cast<double>(y1[j])));
  }
  CHECK(worst <= (std::is_same_v<T, double> ? 1e-12 : 1e-5) * scale);
}

TEST_CASE("WSConv3d maps a constant input to zero away from the padded borders (sum of W^ = 0)") {
  nn::WSConv3d<double, Backend> conv(nn::Conv3dOptions(2, 3, 3).padding(1).bias(false));
  const auto y = conv.forward(TestTensor<double>::full(Shape{1, 2, 4, 5, 6}, 2.5)).to_vector();
  for (index_t k = 0; k < 3; ++k)
    for (index_t d = 1; d < 3; ++d)
      for (index_t h = 1; h < 4; ++h)
        for (index_t w = 1; w < 5; ++w)
          CHECK(std::abs(y[static_cast<std::size_t>(((k * 4 + d) * 5 + h) * 6 + w)]) < 1e-12);
}

TEST_CASE("WSConv3d rejects bad input and bad options") {
  nn::WSConv3d<double, Backend> conv(nn::Conv3dOptions(3, 4, 3).bias(false));
  check_throws_naming<shape_error>([&] { conv.forward(randn<double>({2, 3, 5, 6}, 1)); },
                                   {"mmnet::nn::WSConv3d", "rank", "expected 5", "got 4"});
  check_throws_naming<shape_error>([&] { conv.forward(randn<double>({2, 2, 5, 6, 7}, 1)); },
                                   {"mmnet::nn::WSConv3d", "input channels", "expected 3", "got 2", "(2, 2, 5, 6, 7)"});
  check_throws_naming<shape_error>([&] { conv.forward(randn<double>({1, 3, 2, 6, 7}, 1)); },
                                   {"mmnet::nn::WSConv3d", "output size", "(0, 4, 5)", "(1, 3, 2, 6, 7)"});
  check_throws_naming<shape_error>([&] { conv.forward(Tensor<double, Backend>()); },
                                   {"mmnet::nn::WSConv3d", "empty tensor"});
  check_throws_naming<value_error>([&] { conv.backward(randn<double>({1, 4, 3, 4, 5}, 1)); },
                                   {"mmnet::nn::WSConv3d::backward", "forward() call first"});
  conv.forward(randn<double>({1, 3, 5, 6, 7}, 1));
  check_throws_naming<shape_error>(
      [&] { conv.backward(randn<double>({1, 4, 3, 4, 4}, 1)); },
      {"mmnet::nn::WSConv3d::backward", "grad_output", "(1, 4, 3, 4, 5)", "(1, 4, 3, 4, 4)"});

  using O = nn::Conv3dOptions;
  using C = nn::WSConv3d<double, Backend>;
  // one weight per output channel has no unbiased variance
  check_throws_naming<value_error>([] { (void)C(O(1, 4, 1)); }, {"mmnet::nn::WSConv3d", "weights per output channel",
                                                                 ">= 2", "got 1"});
  CHECK_NOTHROW((void)C(O(2, 4, 1)));
  CHECK_NOTHROW((void)C(O(1, 4, {1, 1, 2})));
  check_throws_naming<value_error>([] { (void)C(O(0, 4, 3)); }, {"mmnet::nn::WSConv3d", "in_channels", "got 0"});
  check_throws_naming<value_error>([] { (void)C(O(3, 0, 3)); }, {"out_channels", "got 0"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, {1, 0, 3})); }, {"kernel_size", "(1, 0, 3)"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 3).stride({1, 1, 0})); }, {"stride", "(1, 1, 0)"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 3).padding({0, -1, 0})); }, {"padding", "(0, -1, 0)"});
  check_throws_naming<value_error>([] { (void)C(O(3, 4, 3).dilation(0)); }, {"dilation", "(0, 0, 0)"});
}

TEST_CASE_TEMPLATE("WSConv3d with an empty batch gives an empty output", T, float, double) {
  nn::WSConv3d<T, Backend> conv(nn::Conv3dOptions(2, 3, 3).padding(1).bias(false));
  const auto y = conv.forward(TestTensor<T>(Shape{0, 2, 4, 5, 6}));
  CHECK(y.shape() == Shape{0, 3, 4, 5, 6});
  const auto dx = conv.backward(y);
  CHECK(dx.shape() == Shape{0, 2, 4, 5, 6});
  CHECK(dot(conv.weight.grad, conv.weight.grad) == 0.0);
}
