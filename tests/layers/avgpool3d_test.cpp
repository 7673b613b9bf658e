// AvgPool3d: PyTorch fixtures (tests/reference/avgpool3d_ref.py) with isotropic, anisotropic, large and
// overlapping padded windows, count_include_pad on and off; central-difference checks; bad inputs and options.
#include <mmnet/layers/avgpool3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
struct PoolCase {
  const char* name;
  nn::AvgPool3dOptions options;
};
const std::vector<PoolCase>& pool_cases() {
  using O = nn::AvgPool3dOptions;
  static const std::vector<PoolCase> cases{
      {"k2", O(2)},
      {"k2_odd", O(2)},
      {"k221", O({2, 2, 1})},
      {"k122", O({1, 2, 2})},
      {"k4", O(4)},
      {"k8", O(8)},
      {"k884", O({8, 8, 4})},
      {"k3s1p1", O(3).stride(1).padding(1)},
      {"k3s2p1", O(3).stride(2).padding(1)},
      {"k2s1", O(2).stride(1)},
      {"aniso_overlap", O({3, 2, 3}).stride({2, 1, 2}).padding({1, 0, 1})},
      {"k3s1p1_nopad", O(3).stride(1).padding(1).count_include_pad(false)},
      {"aniso_overlap_nopad", O({3, 2, 3}).stride({2, 1, 2}).padding({1, 1, 1}).count_include_pad(false)},
      {"k4s2p2_nopad", O(4).stride(2).padding(2).count_include_pad(false)},
      {"size1_axis", O({1, 2, 2})},
  };
  return cases;
}
}  // namespace

TEST_CASE_TEMPLATE("AvgPool3d matches PyTorch: outputs and grad_input", T, float, double) {
  Fixture fx("avgpool3d");
  for (const auto& c : pool_cases()) {
    const std::string n = c.name;
    INFO("case " << n);
    nn::AvgPool3d<T, Backend> pool(c.options);
    check_close(pool.forward(fx.tensor<T>(n + "/input")), fx.array(n + "/output"), tol_output<T>(), n + " output");
    check_close(pool.backward(fx.tensor<T>(n + "/grad_output")), fx.array(n + "/grad_input"), tol_grad<T>(),
                n + " grad_input");
  }
}

TEST_CASE("AvgPool3d passes the central-difference gradient check (double)") {
  using O = nn::AvgPool3dOptions;
  for (const auto& o : {O(2), O({2, 2, 1}), O({1, 2, 2}), O(3).stride(1).padding(1), O(3).stride(2).padding(1),
                        O({3, 2, 3}).stride({2, 1, 2}).padding({1, 0, 1}),
                        O(3).stride(1).padding(1).count_include_pad(false)}) {
    nn::AvgPool3d<double, Backend> pool(o);
    gradcheck_module(pool, randn<double>({2, 2, 4, 5, 6}, 3));
  }
  nn::AvgPool3d<double, Backend> big(O({8, 8, 4}));
  gradcheck_module(big, randn<double>({1, 1, 9, 8, 5}, 4));
}

TEST_CASE_TEMPLATE("AvgPool3d output sizes; a 2x2x2 window gives each input grad / 8; backward is repeatable", T,
                   float, double) {
  nn::AvgPool3d<T, Backend> pool(nn::AvgPool3dOptions(2));
  const auto y = pool.forward(randn<T>({2, 3, 5, 6, 7}, 1));
  CHECK(y.shape() == Shape{2, 3, 2, 3, 3});
  const auto dx = pool.backward(Tensor<T, Backend>::full(y.shape(), T(1))).to_vector();
  // Inside the pooled region every element gets 1/8; the floored-away last slice, row and column get 0.
  CHECK(dx[0] == T(0.125));
  CHECK(dx[(4 * 6 + 0) * 7 + 0] == T(0));  // d = 4 lies outside every window
  CHECK(sum(Tensor<T, Backend>::from_vector(Shape{2 * 3 * 5 * 6 * 7}, dx)) == doctest::Approx(2 * 3 * 2 * 3 * 3));
  const auto dy = randn<T>(y.shape(), 2);
  CHECK(pool.backward(dy).to_vector() == pool.backward(dy).to_vector());
  // Padded zeros count in the divisor by default (PyTorch), not with count_include_pad(false).
  nn::AvgPool3d<T, Backend> with_pad(nn::AvgPool3dOptions(3).stride(1).padding(1));
  nn::AvgPool3d<T, Backend> without_pad(nn::AvgPool3dOptions(3).stride(1).padding(1).count_include_pad(false));
  const auto ones = Tensor<T, Backend>::full(Shape{1, 1, 3, 4, 5}, T(1));
  CHECK(with_pad.forward(ones).to_vector()[0] == doctest::Approx(8.0 / 27.0));
  CHECK(without_pad.forward(ones).to_vector()[0] == doctest::Approx(1.0));
  nn::AvgPool3d<T, Backend> aniso(nn::AvgPool3dOptions({8, 8, 4}));
  CHECK(aniso.forward(randn<T>({1, 2, 17, 16, 9}, 1)).shape() == Shape{1, 2, 2, 2, 2});
  CHECK(nn::AvgPool3dOptions({2, 2, 1}).stride() == ExpandingArray3(2, 2, 1));
  CHECK(nn::AvgPool3dOptions(2).count_include_pad());
}

TEST_CASE("AvgPool3d rejects bad input and options") {
  using Layer = nn::AvgPool3d<double, Backend>;
  using O = nn::AvgPool3dOptions;
  Layer pool(O(2));
  CHECK_THROWS_AS(pool.backward(randn<double>({1, 1, 2, 2, 2}, 1)), value_error);  // backward before forward
  CHECK_THROWS_AS(pool.forward(randn<double>({1, 4, 4, 4}, 1)), shape_error);       // rank 4
  CHECK_THROWS_AS(pool.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(pool.forward(Tensor<double, Backend>(Shape{1, 0, 4, 4, 4})), shape_error);
  CHECK_THROWS_WITH_AS(pool.forward(randn<double>({1, 1, 4, 1, 4}, 1)), doctest::Contains("(1, 1, 4, 1, 4)"),
                       shape_error);  // H smaller than the kernel
  pool.forward(randn<double>({1, 2, 4, 6, 8}, 1));
  CHECK_THROWS_AS(pool.backward(randn<double>({1, 2, 2, 3, 5}, 1)), shape_error);  // grad_output shape
  CHECK_THROWS_AS(Layer(O(0)), value_error);
  CHECK_THROWS_AS(Layer(O(2).stride(0)), value_error);
  CHECK_THROWS_WITH_AS(Layer(O(2).padding(2)), doctest::Contains("mmnet::nn::AvgPool3d"), value_error);
  CHECK_THROWS_AS(Layer(O(3).padding({0, -1, 0})), value_error);
  CHECK_THROWS_AS(Layer(O({8, 8, 4}).padding({4, 4, 3})), value_error);
}
