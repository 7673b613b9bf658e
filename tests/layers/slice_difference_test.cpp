// SliceDifference: PyTorch fixtures (tests/reference/slice_difference_ref.py) along D, H and W, with exact ties
// (derivative 0 at 0) and a size-1 axis; the label variant; central differences; bad inputs.
#include <mmnet/layers/slice_difference.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("SliceDifference matches PyTorch: outputs and grad_input (sign(0) = 0)", T, float, double) {
  Fixture fx("slice_difference");
  for (const std::string n : {"d", "h", "w", "d_ties", "w_ties", "d_size1"}) {
    INFO("case " << n);
    const int axis = static_cast<int>(fx.scalar(n + "/axis"));
    nn::SliceDifference<T, Backend> res(nn::SliceDifferenceOptions().axis(axis));
    const auto x = fx.tensor<T>(n + "/input");
    check_close(res.forward(x), fx.array(n + "/output"), tol_output<T>(), n + " output");
    check_close(res.backward(fx.tensor<T>(n + "/grad_output")), fx.array(n + "/grad_input"), tol_grad<T>(),
                n + " grad_input");
    check_close(nn::slice_difference(x, axis), fx.array(n + "/output"), tol_output<T>(), n + " slice_difference()");
  }
}

TEST_CASE_TEMPLATE("slice_difference_labels matches PyTorch: first slice = (label != 0), then label != previous", T,
                   float, double) {
  Fixture fx("slice_difference");
  for (const std::string n : {"labels_d", "labels_multi_h", "labels_w"}) {
    INFO("case " << n);
    check_close(nn::slice_difference_labels(fx.tensor<T>(n + "/labels"), static_cast<int>(fx.scalar(n + "/axis"))),
                fx.array(n + "/label_output"), 0.0, n + " label residual");
  }
  // Spelled out along D: labels (2, 2, 0, 1) per voxel -> (1, 0, 1, 1).
  const auto lab = Tensor<T, Backend>::from_vector(Shape{1, 1, 4, 1, 1}, std::vector<T>{2, 2, 0, 1});
  CHECK(nn::slice_difference_labels(lab).to_vector() == std::vector<T>{1, 0, 1, 1});
  CHECK(nn::slice_difference(lab).to_vector() == std::vector<T>{0, 0, 2, 1});  // the image form zeroes slice 0
}

TEST_CASE("SliceDifference passes the central-difference gradient check (double, tie-free inputs)") {
  for (int axis = 0; axis < 3; ++axis) {
    nn::SliceDifference<double, Backend> res(nn::SliceDifferenceOptions().axis(axis));
    gradcheck_module(res, randn<double>({2, 2, 3, 4, 5}, 21 + static_cast<std::uint64_t>(axis)));
  }
}

TEST_CASE("SliceDifference rejects bad axes and inputs") {
  using L = nn::SliceDifference<double, Backend>;
  using O = nn::SliceDifferenceOptions;
  CHECK_THROWS_AS(L(O().axis(3)), value_error);
  CHECK_THROWS_AS(L(O().axis(-1)), value_error);
  L res;
  CHECK(res.options().axis() == 0);  // D by default, as ConResNet
  CHECK_THROWS_AS(res.backward(randn<double>({1, 1, 2, 2, 2}, 1)), value_error);  // before forward
  CHECK_THROWS_AS(res.forward(randn<double>({1, 2, 3, 4}, 1)), shape_error);
  CHECK_THROWS_AS(res.forward(Tensor<double, Backend>()), shape_error);
  res.forward(randn<double>({1, 1, 2, 3, 4}, 1));
  CHECK_THROWS_AS(res.backward(randn<double>({1, 1, 2, 4, 3}, 1)), shape_error);
  CHECK_THROWS_AS(nn::slice_difference_labels(randn<double>({1, 1, 2, 3, 4}, 1), 5), value_error);
  CHECK_THROWS_AS(nn::slice_difference_labels(randn<double>({1, 2, 3}, 1)), shape_error);
}
