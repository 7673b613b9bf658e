// Conv3d: PyTorch fixtures (tests/reference/conv3d_ref.py), central-difference checks, gradient accumulation,
// frozen weights, bad input, and the backend's fast kernels against the generic ones.
#include <mmnet/core/parallel.hpp>
#include <mmnet/layers/conv3d.hpp>

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

// The fixture's module: options and PyTorch's state dict (strict load, so the names must be "weight", "bias").
template <class T>
nn::Conv3d<T, Backend> case_module(const Fixture& fx, const std::string& g) {
  nn::Conv3d<T, Backend> conv(case_options(fx, g));
  conv.load_state_dict(fx.group(g + "state"));
  return conv;
}

}  // namespace

TEST_CASE_TEMPLATE("Conv3d matches PyTorch: output, grad_input, grad_weight, grad_bias", T, float, double) {
  Fixture fx("conv3d");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  REQUIRE(cases >= 16);
  for (int i = 0; i < cases; ++i) {
    const std::string g = case_name(i);
    CAPTURE(g);
    auto conv = case_module<T>(fx, g);
    const auto x = fx.tensor<T>(g + "input");
    const auto dy = fx.tensor<T>(g + "grad_output");
    check_close(conv.forward(x), fx.array(g + "output"), tol_output<T>(), g + "output");
    check_close(conv.backward(dy), fx.array(g + "grad_input"), tol_grad<T>(), g + "grad_input");
    check_close(conv.weight.grad, fx.array(g + "grad_weight"), tol_grad<T>(), g + "grad_weight");
    if (conv.options().bias()) check_close(conv.bias.grad, fx.array(g + "grad_bias"), tol_grad<T>(), g + "grad_bias");
  }
}

TEST_CASE("Conv3d passes the central-difference gradient check") {
  struct Case {
    Shape x;
    nn::Conv3dOptions o;
  };
  const Case cases[] = {
      {{1, 2, 3, 4, 5}, nn::Conv3dOptions(2, 3, 3).padding(1)},
      {{2, 2, 2, 3, 4}, nn::Conv3dOptions(2, 2, {1, 3, 3}).padding({0, 1, 1})},
      {{1, 2, 4, 3, 5}, nn::Conv3dOptions(2, 2, {3, 3, 1}).padding({1, 1, 0})},
      {{1, 2, 5, 4, 6}, nn::Conv3dOptions(2, 2, 3).stride(2).padding(1)},
      {{1, 2, 4, 5, 6}, nn::Conv3dOptions(2, 3, 3).stride({2, 2, 1}).padding(1)},
      {{1, 1, 3, 5, 9}, nn::Conv3dOptions(1, 2, 3).padding({1, 2, 4}).dilation({1, 2, 4})},
      {{1, 2, 4, 5, 7},
       nn::Conv3dOptions(2, 2, {2, 3, 4}).stride({2, 1, 3}).padding({0, 1, 2}).dilation({1, 2, 1}).bias(false)},
  };
  int i = 0;
  for (const auto& c : cases) {
    CAPTURE(i++);
    Generator gen(100 + static_cast<std::uint64_t>(i));
    nn::Conv3d<double, Backend> conv(c.o, gen);
    gradcheck_module(conv, randn<double>(c.x, 200 + static_cast<std::uint64_t>(i)));
  }
}

TEST_CASE_TEMPLATE("Conv3d parameter gradients accumulate over two backward calls", T, float, double) {
  Fixture fx("conv3d");
  for (int i : {0, 10, 16}) {  // k3, stride_w 3 (polyphase), a wide row (8-channel block and tail)
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

TEST_CASE_TEMPLATE("a frozen Conv3d weight gets no gradient", T, float, double) {
  Fixture fx("conv3d");
  const std::string g = case_name(0);
  auto conv = case_module<T>(fx, g);
  conv.weight.requires_grad = false;
  conv.forward(fx.tensor<T>(g + "input"));
  const auto dx = conv.backward(fx.tensor<T>(g + "grad_output"));
  check_close(dx, fx.array(g + "grad_input"), tol_grad<T>(), "grad_input with a frozen weight");
  CHECK(sum(conv.weight.grad) == 0.0);
  CHECK(dot(conv.weight.grad, conv.weight.grad) == 0.0);
  check_close(conv.bias.grad, fx.array(g + "grad_bias"), tol_grad<T>(), "grad_bias with a frozen weight");

  conv.freeze();  // everything frozen: the input gradient is still returned
  conv.zero_grad();
  const auto dx2 = conv.backward(fx.tensor<T>(g + "grad_output"));
  check_close(dx2, fx.array(g + "grad_input"), tol_grad<T>(), "grad_input with everything frozen");
  CHECK(dot(conv.bias.grad, conv.bias.grad) == 0.0);
}

TEST_CASE("Conv3d parameters: names, shapes, PyTorch default init, options") {
  nn::Conv3d<double, Backend> conv(nn::Conv3dOptions(4, 6, {1, 3, 3}).padding({0, 1, 1}));
  const auto np = conv.named_parameters();
  REQUIRE(np.size() == 2);
  CHECK(np[0].first == "weight");
  CHECK(np[1].first == "bias");
  CHECK(conv.weight.value.shape() == Shape{6, 4, 1, 3, 3});
  CHECK(conv.bias.value.shape() == Shape{6});
  const double bound = 1.0 / std::sqrt(4.0 * 9.0);  // kaiming_uniform_(a = sqrt(5)) and the bias share it
  for (double w : conv.weight.value.to_vector()) CHECK(std::abs(w) <= bound);
  for (double b : conv.bias.value.to_vector()) CHECK(std::abs(b) <= bound);
  CHECK(dot(conv.weight.value, conv.weight.value) > 0.0);

  const auto& o = conv.options();
  CHECK(o.in_channels() == 4);
  CHECK(o.out_channels() == 6);
  CHECK(o.kernel_size() == nn::ExpandingArray3(1, 3, 3));
  CHECK(o.stride() == nn::ExpandingArray3(1));
  CHECK(o.padding() == nn::ExpandingArray3(0, 1, 1));
  CHECK(o.dilation() == nn::ExpandingArray3(1));
  CHECK(o.bias());

  nn::Conv3d<double, Backend> nb(nn::Conv3dOptions(3, 2, 1).bias(false));
  const auto np2 = nb.named_parameters();
  REQUIRE(np2.size() == 1);
  CHECK(np2[0].first == "weight");
  CHECK_FALSE(nb.bias.defined());
  CHECK(nb.state_dict().keys() == std::vector<std::string>{"weight"});

  // the same generator seed gives the same weights
  Generator g1(5), g2(5);
  nn::Conv3d<double, Backend> a(nn::Conv3dOptions(2, 3, 3), g1), b(nn::Conv3dOptions(2, 3, 3), g2);
  CHECK(a.weight.value.to_vector() == b.weight.value.to_vector());
  CHECK(a.bias.value.to_vector() == b.bias.value.to_vector());
}

TEST_CASE("Conv3d rejects bad input and bad options") {
  nn::Conv3d<double, Backend> conv(nn::Conv3dOptions(3, 4, 3));
  check_throws_naming<shape_error>([&] { conv.forward(randn<double>({2, 3, 5, 6}, 1)); },
                                   {"mmnet::nn::Conv3d", "rank", "expected 5", "got 4"});
  check_throws_naming<shape_error>([&] { conv.forward(randn<double>({2, 2, 5, 6, 7}, 1)); },
                                   {"mmnet::nn::Conv3d", "input channels", "expected 3", "got 2", "(2, 2, 5, 6, 7)"});
  check_throws_naming<shape_error>([&] { conv.forward(randn<double>({1, 3, 2, 6, 7}, 1)); },
                                   {"mmnet::nn::Conv3d", "output size", "(0, 4, 5)", "(1, 3, 2, 6, 7)"});
  check_throws_naming<shape_error>([&] { conv.forward(Tensor<double, Backend>()); },
                                   {"mmnet::nn::Conv3d", "empty tensor"});
  CHECK_THROWS_AS(conv.backward(randn<double>({1, 4, 3, 4, 5}, 1)), value_error);  // no forward yet

  conv.forward(randn<double>({1, 3, 5, 6, 7}, 1));
  check_throws_naming<shape_error>(
      [&] { conv.backward(randn<double>({1, 4, 3, 4, 4}, 1)); },
      {"mmnet::nn::Conv3d::backward", "grad_output", "(1, 4, 3, 4, 5)", "(1, 4, 3, 4, 4)"});
  CHECK_THROWS_AS(conv.backward(randn<double>({1, 4, 3, 4}, 1)), shape_error);

  // padding or dilation decide what is too small
  nn::Conv3d<double, Backend> padded(nn::Conv3dOptions(1, 1, 3).padding(1));
  CHECK(padded.forward(randn<double>({1, 1, 1, 1, 1}, 1)).shape() == Shape{1, 1, 1, 1, 1});
  nn::Conv3d<double, Backend> dilated(nn::Conv3dOptions(1, 1, 3).dilation({1, 1, 3}));
  CHECK_THROWS_AS(dilated.forward(randn<double>({1, 1, 3, 3, 6}, 1)), shape_error);
  CHECK(dilated.forward(randn<double>({1, 1, 3, 3, 7}, 1)).shape() == Shape{1, 1, 1, 1, 1});

  using O = nn::Conv3dOptions;
  CHECK_THROWS_AS((nn::Conv3d<double, Backend>(O(0, 4, 3))), value_error);
  CHECK_THROWS_AS((nn::Conv3d<double, Backend>(O(3, 0, 3))), value_error);
  CHECK_THROWS_AS((nn::Conv3d<double, Backend>(O(3, 4, {1, 0, 3}))), value_error);
  CHECK_THROWS_AS((nn::Conv3d<double, Backend>(O(3, 4, 3).stride({1, 1, 0}))), value_error);
  CHECK_THROWS_AS((nn::Conv3d<double, Backend>(O(3, 4, 3).padding({0, -1, 0}))), value_error);
  CHECK_THROWS_AS((nn::Conv3d<double, Backend>(O(3, 4, 3).dilation(0))), value_error);
}

TEST_CASE("Conv3d output extents follow PyTorch's formula") {
  // floor((in + 2p - d(k-1) - 1) / s) + 1, including the negative spans of too-small inputs
  CHECK(Conv3dProblem::output_extent(8, 3, 2, 1, 1) == 4);
  CHECK(Conv3dProblem::output_extent(7, 3, 2, 1, 1) == 4);
  CHECK(Conv3dProblem::output_extent(9, 2, 3, 0, 1) == 3);
  CHECK(Conv3dProblem::output_extent(2, 3, 1, 0, 1) == 0);
  CHECK(Conv3dProblem::output_extent(2, 3, 2, 0, 1) == 0);
  CHECK(Conv3dProblem::output_extent(1, 5, 2, 0, 1) <= 0);
  CHECK(Conv3dProblem::output_extent(5, 3, 1, 0, 2) == 1);
  CHECK(Conv3dProblem::output_extent(3, 1, 1, 2, 1) == 7);
}

TEST_CASE_TEMPLATE("Conv3d with an empty batch gives an empty output", T, float, double) {
  nn::Conv3d<T, Backend> conv(nn::Conv3dOptions(2, 3, 3).padding(1));
  const auto y = conv.forward(TestTensor<T>(Shape{0, 2, 4, 5, 6}));
  CHECK(y.shape() == Shape{0, 3, 4, 5, 6});
  const auto dx = conv.backward(y);
  CHECK(dx.shape() == Shape{0, 2, 4, 5, 6});
  CHECK(dot(conv.weight.grad, conv.weight.grad) == 0.0);
}

// The dispatched kernels (the cpu fast path on the cpu backend) against backend::generic on random problems.
TEST_CASE_TEMPLATE("Conv3d fast kernels agree with the generic kernels", T, float, double) {
  Generator rng(1234);
  auto pick = [&](index_t lo, index_t hi) {
    return lo + static_cast<index_t>(rng.integer(static_cast<std::uint64_t>(hi - lo + 1)));
  };
  int tested = 0;
  for (int trial = 0; tested < 24 && trial < 200; ++trial) {
    Conv3dProblem p;
    p.N = pick(1, 2), p.C = pick(1, 5), p.K = pick(1, 7);
    p.kd = pick(1, 3), p.kh = pick(1, 3), p.kw = pick(1, 4);
    p.sd = pick(1, 2), p.sh = pick(1, 2), p.sw = trial % 3 == 0 ? 2 : 1;
    p.dd = pick(1, 2), p.dh = pick(1, 2), p.dw = pick(1, 3);
    p.pd = pick(0, 2), p.ph = pick(0, 2), p.pw = pick(0, 3);
    p.D = pick(1, 7), p.H = pick(1, 8), p.W = pick(1, 21);
    p.compute_output();
    if (!p.valid_output()) continue;
    ++tested;
    const std::string what = "N" + std::to_string(p.N) + " C" + std::to_string(p.C) + " K" + std::to_string(p.K) +
                             " in " + Shape{p.D, p.H, p.W}.str() + " k " + Shape{p.kd, p.kh, p.kw}.str() + " s " +
                             Shape{p.sd, p.sh, p.sw}.str() + " p " + Shape{p.pd, p.ph, p.pw}.str() + " d " +
                             Shape{p.dd, p.dh, p.dw}.str();
    CAPTURE(what);
    const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(trial);
    const auto x = randn<T>({p.N, p.C, p.D, p.H, p.W}, seed);
    const auto w = randn<T>({p.K, p.C, p.kd, p.kh, p.kw}, seed + 1);
    const auto b = randn<T>({p.K}, seed + 2);
    const auto dy = randn<T>({p.N, p.K, p.OD, p.OH, p.OW}, seed + 3);
    const Shape ys{p.N, p.K, p.OD, p.OH, p.OW};

    TestTensor<T> y_fast(ys), y_ref(ys);
    backend::conv3d_forward(Backend{}, p, x.data(), w.data(), b.data(), y_fast.data());
    backend::generic::conv3d_forward(Backend{}, p, x.data(), w.data(), b.data(), y_ref.data());
    check_close(y_fast, host(y_ref), tol_output<T>(), "forward, " + what);

    TestTensor<T> dx_fast(x.shape()), dx_ref(x.shape());
    dx_fast.fill_(T(7));  // backward-data assigns: stale values must disappear
    backend::conv3d_backward_data(Backend{}, p, dy.data(), w.data(), dx_fast.data());
    backend::generic::conv3d_backward_data(Backend{}, p, dy.data(), w.data(), dx_ref.data());
    check_close(dx_fast, host(dx_ref), tol_grad<T>(), "backward data, " + what);

    auto dw_fast = randn<T>(w.shape(), seed + 4), dw_ref = dw_fast.clone();  // backward-weight adds
    backend::conv3d_backward_weight(Backend{}, p, x.data(), dy.data(), dw_fast.data());
    backend::generic::conv3d_backward_weight(Backend{}, p, x.data(), dy.data(), dw_ref.data());
    check_close(dw_fast, host(dw_ref), tol_grad<T>(), "backward weight, " + what);

    auto db_fast = randn<T>(b.shape(), seed + 5), db_ref = db_fast.clone();
    backend::conv3d_backward_bias(Backend{}, p, dy.data(), db_fast.data());
    backend::generic::conv3d_backward_bias(Backend{}, p, dy.data(), db_ref.data());
    check_close(db_fast, host(db_ref), tol_grad<T>(), "backward bias, " + what);
  }
  CHECK(tested == 24);
}

TEST_CASE_TEMPLATE("Conv3d results do not depend on the thread count", T, float, double) {
  const int saved = get_num_threads();
  nn::Conv3d<T, Backend> conv(nn::Conv3dOptions(5, 6, 3).padding(1));
  const auto x = randn<T>({2, 5, 9, 10, 22}, 3);
  const auto dy = randn<T>({2, 6, 9, 10, 22}, 4);
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
  CHECK(runs[0][0] == runs[1][0]);
  CHECK(runs[0][1] == runs[1][1]);
  CHECK(runs[0][2] == runs[1][2]);
  CHECK(runs[0][3] == runs[1][3]);
}
