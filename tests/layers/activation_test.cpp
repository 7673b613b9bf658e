// ReLU and Sigmoid: PyTorch fixtures (tests/reference/activation_ref.py) and central-difference checks.
#include <mmnet/layers/activation.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("ReLU and Sigmoid match PyTorch", T, float, double) {
  Fixture fx("activation");
  const auto x = fx.tensor<T>("input");
  const auto dy = fx.tensor<T>("grad_output");
  nn::ReLU<T, Backend> relu;
  check_close(relu.forward(x), fx.array("relu/output"), tol_output<T>(), "relu output");
  check_close(relu.backward(dy), fx.array("relu/grad_input"), tol_grad<T>(), "relu grad_input");
  nn::Sigmoid<T, Backend> sig;
  check_close(sig.forward(x), fx.array("sigmoid/output"), tol_output<T>(), "sigmoid output");
  check_close(sig.backward(dy), fx.array("sigmoid/grad_input"), tol_grad<T>(), "sigmoid grad_input");
}

TEST_CASE("ReLU and Sigmoid pass the central-difference gradient check") {
  auto x = randn<double>({2, 3, 3, 4, 2}, 11);
  nn::ReLU<double, Backend> relu;
  gradcheck_module(relu, x);
  nn::Sigmoid<double, Backend> sig;
  gradcheck_module(sig, x);
}

TEST_CASE("activations reject a gradient of the wrong shape") {
  nn::ReLU<double, Backend> relu;
  relu.forward(randn<double>({1, 2, 3}, 1));
  CHECK_THROWS_AS(relu.backward(randn<double>({1, 2, 4}, 1)), shape_error);
}
