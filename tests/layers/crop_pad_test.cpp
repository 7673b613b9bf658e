// CropPad: torch.nn.functional.pad fixtures (tests/reference/crop_pad_ref.py) for padding, cropping and both on
// one axis, with fill values; torch_pad argument order; central differences; bad inputs.
#include <mmnet/layers/crop_pad.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
// Crops and pads copy: exact in double; in float, exact up to rounding the fixture's input to float.
template <class T>
constexpr double copy_tol() { return std::is_same_v<T, double> ? 0.0 : 6e-8; }
const char* const crop_pad_cases[] = {"pad", "crop", "mixed", "same_axis", "identity", "to_one_voxel", "size1_axes"};
}  // namespace

TEST_CASE_TEMPLATE("CropPad matches torch.nn.functional.pad (negative pads crop): outputs and grad_input", T, float,
                   double) {
  Fixture fx("crop_pad");
  for (const std::string n : crop_pad_cases) {
    INFO("case " << n);
    nn::CropPad<T, Backend> cp(nn::CropPadOptions()
                                   .begin(triple(fx.array(n + "/begin")))
                                   .end(triple(fx.array(n + "/end")))
                                   .value(fx.scalar(n + "/value")));
    check_close(cp.forward(fx.tensor<T>(n + "/input")), fx.array(n + "/output"), copy_tol<T>(), n + " output");
    check_close(cp.backward(fx.tensor<T>(n + "/grad_output")), fx.array(n + "/grad_input"), copy_tol<T>(),
                n + " grad_input");
  }
}

TEST_CASE_TEMPLATE("CropPadOptions::torch_pad takes F.pad's order (last axis first)", T, float, double) {
  Fixture fx("crop_pad");
  // "mixed": begin (2, -1, 0), end (-1, 3, -2), value -1.5 -> F.pad(x, (0, -2, -1, 3, 2, -1), value=-1.5)
  const auto o = nn::CropPadOptions::torch_pad({0, -2, -1, 3, 2, -1}).value(-1.5);
  CHECK(o.begin() == ExpandingArray3(2, -1, 0));
  CHECK(o.end() == ExpandingArray3(-1, 3, -2));
  check_close(nn::crop_pad(fx.tensor<T>("mixed/input"), o), fx.array("mixed/output"), copy_tol<T>(), "crop_pad()");
}

TEST_CASE("CropPad passes the central-difference gradient check (double)") {
  using O = nn::CropPadOptions;
  for (const auto& o : {O().begin({1, 0, 2}).end({0, 2, 1}).value(3.0), O().begin({-1, 0, -2}).end({-1, -1, 0}),
                        O().begin({-2, 1, 3}).end({3, -2, -1})}) {
    nn::CropPad<double, Backend> cp(o);
    gradcheck_module(cp, randn<double>({2, 1, 4, 5, 6}, 5));
  }
}

TEST_CASE("CropPad rejects crops larger than the volume and bad inputs") {
  using O = nn::CropPadOptions;
  const auto x = randn<double>({1, 2, 4, 5, 6}, 1);
  nn::CropPad<double, Backend> too_much(O().begin({-2, 0, 0}).end({-2, 0, 0}));  // D: 4 - 4 = 0 left
  CHECK_THROWS_AS(too_much.forward(x), shape_error);
  nn::CropPad<double, Backend> one_side(O().begin({0, 0, -7}).end({0, 0, 3}));    // W: crops 7 of 6
  CHECK_THROWS_AS(one_side.forward(x), shape_error);
  try {
    one_side.forward(x);
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::nn::CropPad") != std::string::npos);
    CHECK(m.find("W") != std::string::npos);
  }
  nn::CropPad<double, Backend> cp(O().begin(1));
  CHECK_THROWS_AS(cp.backward(x), value_error);  // before forward
  CHECK_THROWS_AS(cp.forward(randn<double>({2, 4, 5, 6}, 1)), shape_error);
  CHECK_THROWS_AS(cp.forward(Tensor<double, Backend>()), shape_error);
  CHECK(cp.forward(x).shape() == Shape{1, 2, 5, 6, 7});
  CHECK_THROWS_AS(cp.backward(x), shape_error);  // grad_output shape
  CHECK_THROWS_AS(O::torch_pad({1, 2, 3, 4}), value_error);
}
