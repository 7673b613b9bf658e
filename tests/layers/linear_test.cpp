// Linear: PyTorch fixtures (tests/reference/linear_ref.py) on N x in and N x in x 1 (x 1 x 1) inputs,
// central-difference checks, gradient accumulation, frozen weights, default init, bad input and options.
#include <mmnet/layers/linear.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
nn::Linear<T, Backend> case_module(const Fixture& fx, const std::string& g) {
  nn::Linear<T, Backend> fc(nn::LinearOptions(static_cast<index_t>(fx.scalar(g + "in")),
                                              static_cast<index_t>(fx.scalar(g + "out")))
                                .bias(fx.scalar(g + "bias") != 0));
  fc.load_state_dict(fx.group(g + "state"));
  return fc;
}

}  // namespace

TEST_CASE_TEMPLATE("Linear matches PyTorch: output, grad_input, grad_weight, grad_bias", T, float, double) {
  Fixture fx("linear");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  REQUIRE(cases >= 9);
  for (int i = 0; i < cases; ++i) {
    const std::string g = case_name(i);
    CAPTURE(g);
    auto fc = case_module<T>(fx, g);
    const auto x = fx.tensor<T>(g + "input");
    const auto dy = fx.tensor<T>(g + "grad_output");
    check_close(fc.forward(x), fx.array(g + "output"), tol_output<T>(), "linear " + g + "output");
    check_close(fc.backward(dy), fx.array(g + "grad_input"), tol_grad<T>(), "linear " + g + "grad_input");
    check_close(fc.weight.grad, fx.array(g + "grad_weight"), tol_grad<T>(), "linear " + g + "grad_weight");
    if (fc.options().bias())
      check_close(fc.bias.grad, fx.array(g + "grad_bias"), tol_grad<T>(), "linear " + g + "grad_bias");
    else
      CHECK_FALSE(fc.bias.defined());
  }
}

TEST_CASE("Linear passes the central-difference gradient check") {
  struct Case {
    Shape x;
    nn::LinearOptions o;
  };
  using O = nn::LinearOptions;
  const Case cases[] = {
      {{3, 5}, O(5, 4)},
      {{2, 6}, O(6, 3).bias(false)},
      {{2, 12, 1, 1, 1}, O(12, 3)},  // CBAM fc1
      {{2, 3, 1, 1, 1}, O(3, 12)},   // CBAM fc2
      {{4, 1}, O(1, 2)},
      {{3, 4, 1}, O(4, 1)},
  };
  int i = 0;
  for (const auto& c : cases) {
    CAPTURE(i++);
    Generator gen(700 + static_cast<std::uint64_t>(i));
    nn::Linear<double, Backend> fc(c.o, gen);
    gradcheck_module(fc, randn<double>(c.x, 800 + static_cast<std::uint64_t>(i)));
  }
}

TEST_CASE_TEMPLATE("Linear parameter gradients accumulate over two backward calls", T, float, double) {
  Fixture fx("linear");
  for (int i : {0, 2}) {  // rank 2 and rank 5
    const std::string g = case_name(i);
    CAPTURE(g);
    auto fc = case_module<T>(fx, g);
    const auto x = fx.tensor<T>(g + "input");
    const auto dy = fx.tensor<T>(g + "grad_output");
    fc.forward(x);
    fc.backward(dy);
    const auto dx = fc.backward(dy);
    check_close(dx, fx.array(g + "grad_input"), tol_grad<T>(), g + "grad_input, second call");
    check_close(fc.weight.grad, scaled(fx.array(g + "grad_weight"), 2), tol_grad<T>(), g + "grad_weight x2");
    check_close(fc.bias.grad, scaled(fx.array(g + "grad_bias"), 2), tol_grad<T>(), g + "grad_bias x2");
    fc.zero_grad();
    fc.backward(dy);
    check_close(fc.weight.grad, fx.array(g + "grad_weight"), tol_grad<T>(), g + "grad_weight after zero_grad");
  }
}

TEST_CASE_TEMPLATE("a frozen Linear weight gets no gradient", T, float, double) {
  Fixture fx("linear");
  const std::string g = case_name(2);
  auto fc = case_module<T>(fx, g);
  fc.weight.requires_grad = false;
  fc.forward(fx.tensor<T>(g + "input"));
  const auto dx = fc.backward(fx.tensor<T>(g + "grad_output"));
  check_close(dx, fx.array(g + "grad_input"), tol_grad<T>(), "grad_input with a frozen weight");
  CHECK(dot(fc.weight.grad, fc.weight.grad) == 0.0);
  check_close(fc.bias.grad, fx.array(g + "grad_bias"), tol_grad<T>(), "grad_bias with a frozen weight");
  fc.freeze();
  fc.zero_grad();
  fc.backward(fx.tensor<T>(g + "grad_output"));
  CHECK(dot(fc.bias.grad, fc.bias.grad) == 0.0);
}

TEST_CASE("Linear parameters: names, (out, in) layout, PyTorch default init") {
  nn::Linear<double, Backend> fc(nn::LinearOptions(16, 40));
  const auto np = fc.named_parameters();
  REQUIRE(np.size() == 2);
  CHECK(np[0].first == "weight");
  CHECK(np[1].first == "bias");
  CHECK(fc.weight.value.shape() == Shape{40, 16});
  CHECK(fc.bias.value.shape() == Shape{40});
  double wmax = 0;
  for (double w : fc.weight.value.to_vector()) {  // kaiming_uniform_(a = sqrt(5)): bound 1/sqrt(in) = 1/4
    CHECK(std::abs(w) <= 0.25);
    wmax = std::max(wmax, std::abs(w));
  }
  CHECK(wmax > 0.2);  // 1/sqrt(out) = 0.158 would be the wrong fan
  for (double b : fc.bias.value.to_vector()) CHECK(std::abs(b) <= 0.25);
  CHECK(fc.options().in_features() == 16);
  CHECK(fc.options().out_features() == 40);
  CHECK(fc.options().bias());

  nn::Linear<double, Backend> nb(nn::LinearOptions(3, 2).bias(false));
  CHECK(nb.state_dict().keys() == std::vector<std::string>{"weight"});

  Generator g1(5), g2(5);
  nn::Linear<double, Backend> a(nn::LinearOptions(4, 3), g1), b(nn::LinearOptions(4, 3), g2);
  CHECK(a.weight.value.to_vector() == b.weight.value.to_vector());
  CHECK(a.bias.value.to_vector() == b.bias.value.to_vector());
}

TEST_CASE("Linear keeps the input's rank and equals the rank-2 result on N x in x 1 x 1 x 1") {
  nn::Linear<double, Backend> fc(nn::LinearOptions(5, 3));
  const auto x = randn<double>({2, 5}, 3);
  const auto y2 = fc.forward(x);
  CHECK(y2.shape() == Shape{2, 3});
  const auto y5 = fc.forward(x.reshape({2, 5, 1, 1, 1}));
  CHECK(y5.shape() == Shape{2, 3, 1, 1, 1});
  CHECK(y5.to_vector() == y2.to_vector());
  const auto dx = fc.backward(randn<double>({2, 3, 1, 1, 1}, 4));
  CHECK(dx.shape() == Shape{2, 5, 1, 1, 1});
}

TEST_CASE("Linear rejects bad input and bad options") {
  nn::Linear<double, Backend> fc(nn::LinearOptions(4, 3));
  check_throws_naming<shape_error>([&] { fc.forward(randn<double>({4}, 1)); },
                                   {"mmnet::nn::Linear", "input rank", "got 1", "(4,)"});
  check_throws_naming<shape_error>([&] { fc.forward(randn<double>({2, 5}, 1)); },
                                   {"mmnet::nn::Linear", "input features", "expected 4", "got 5", "(2, 5)"});
  check_throws_naming<shape_error>([&] { fc.forward(randn<double>({2, 4, 1, 2, 1}, 1)); },
                                   {"mmnet::nn::Linear", "trailing axis 3", "expected 1", "got 2", "(2, 4, 1, 2, 1)"});
  check_throws_naming<shape_error>([&] { fc.forward(Tensor<double, Backend>()); },
                                   {"mmnet::nn::Linear", "empty tensor"});
  check_throws_naming<value_error>([&] { fc.backward(randn<double>({2, 3}, 1)); },
                                   {"mmnet::nn::Linear::backward", "forward() call first"});
  fc.forward(randn<double>({2, 4, 1, 1, 1}, 1));
  check_throws_naming<shape_error>([&] { fc.backward(randn<double>({2, 3}, 1)); },
                                   {"mmnet::nn::Linear::backward", "grad_output", "(2, 3, 1, 1, 1)", "(2, 3)"});
  check_throws_naming<shape_error>([&] { fc.backward(randn<double>({2, 4, 1, 1, 1}, 1)); },
                                   {"mmnet::nn::Linear::backward", "grad_output", "(2, 4, 1, 1, 1)"});

  using O = nn::LinearOptions;
  using L = nn::Linear<double, Backend>;
  check_throws_naming<value_error>([] { (void)L(O(0, 3)); }, {"mmnet::nn::LinearOptions", "in_features", "got 0"});
  check_throws_naming<value_error>([] { (void)L(O(3, -1)); }, {"mmnet::nn::LinearOptions", "out_features", "got -1"});
}

TEST_CASE_TEMPLATE("Linear with an empty batch gives an empty output", T, float, double) {
  nn::Linear<T, Backend> fc(nn::LinearOptions(4, 3));
  const auto y = fc.forward(TestTensor<T>(Shape{0, 4, 1, 1, 1}));
  CHECK(y.shape() == Shape{0, 3, 1, 1, 1});
  const auto dx = fc.backward(y);
  CHECK(dx.shape() == Shape{0, 4, 1, 1, 1});
  CHECK(dot(fc.weight.grad, fc.weight.grad) == 0.0);
  CHECK(dot(fc.bias.grad, fc.bias.grad) == 0.0);
}
