// MaxPool3d: PyTorch fixtures (tests/reference/maxpool3d_ref.py) with random inputs and exact ties, isotropic,
// anisotropic and overlapping windows; central-difference checks on tie-free inputs; bad inputs.
#include <mmnet/layers/maxpool3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
struct PoolCase {
  const char* name;
  nn::MaxPool3dOptions options;
};
const std::vector<PoolCase>& pool_cases() {
  using O = nn::MaxPool3dOptions;
  static const std::vector<PoolCase> cases{
      {"k2", O(2)},
      {"k221", O({2, 2, 1})},
      {"k122", O({1, 2, 2})},
      {"k4", O(4)},
      {"k884", O({8, 8, 4})},
      {"k3s1p1", O(3).stride(1).padding(1)},
      {"k3s2p1", O(3).stride(2).padding(1)},
      {"aniso_overlap", O({3, 2, 3}).stride({2, 1, 2}).padding({1, 0, 1})},
      {"ties_k3s1p1", O(3).stride(1).padding(1)},
      {"ties_k2", O(2)},
      {"ties_aniso", O({3, 2, 3}).stride({2, 1, 2}).padding({1, 0, 1})},
      {"ties_k884", O({8, 8, 4})},
      {"const_k3s1p1", O(3).stride(1).padding(1)},
      {"const_neg_k2", O({2, 2, 1})},
      {"blocks_k3s2p1", O(3).stride(2).padding(1)},
  };
  return cases;
}
}  // namespace

TEST_CASE_TEMPLATE("MaxPool3d matches PyTorch: outputs, argmax (ties to the first index) and grad_input", T, float,
                   double) {
  Fixture fx("maxpool3d");
  for (const auto& c : pool_cases()) {
    const std::string n = c.name;
    INFO("case " << n);
    nn::MaxPool3d<T, Backend> pool(c.options);
    check_close(pool.forward(fx.tensor<T>(n + "/input")), fx.array(n + "/output"), tol_output<T>(), n + " output");
    const auto& ref_idx = fx.array(n + "/indices").data;
    const auto idx = pool.indices();
    REQUIRE(idx.size() == ref_idx.size());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < idx.size(); ++i) wrong += static_cast<double>(idx[i]) != ref_idx[i];
    CHECK_MESSAGE(wrong == 0, n << ": " << wrong << " of " << idx.size() << " argmax indices differ from PyTorch");
    check_close(pool.backward(fx.tensor<T>(n + "/grad_output")), fx.array(n + "/grad_input"), tol_grad<T>(),
                n + " grad_input");
  }
}

TEST_CASE("MaxPool3d passes the central-difference gradient check (double, tie-free inputs)") {
  using O = nn::MaxPool3dOptions;
  for (const auto& o : {O(2), O({2, 2, 1}), O({1, 2, 2}), O(3).stride(1).padding(1), O(3).stride(2).padding(1),
                        O({3, 2, 3}).stride({2, 1, 2}).padding({1, 0, 1})}) {
    nn::MaxPool3d<double, Backend> pool(o);
    gradcheck_module(pool, distinct({2, 2, 4, 5, 6}, 3));
  }
  nn::MaxPool3d<double, Backend> big(O({8, 8, 4}));
  gradcheck_module(big, distinct({1, 1, 9, 8, 5}, 4));
}

TEST_CASE_TEMPLATE("MaxPool3d output sizes and overlapping windows sum their gradients", T, float, double) {
  nn::MaxPool3d<T, Backend> pool(nn::MaxPool3dOptions(3).stride(1).padding(1));
  // A single large value in a constant volume is the argmax of every window containing it: 27 windows in 3x3x3.
  std::vector<T> v(3 * 4 * 5, T(0));
  v[(1 * 4 + 2) * 5 + 2] = T(5);
  const auto y = pool.forward(Tensor<T, Backend>::from_vector(Shape{1, 1, 3, 4, 5}, v));
  CHECK(y.shape() == Shape{1, 1, 3, 4, 5});
  const auto dx = pool.backward(Tensor<T, Backend>::full(y.shape(), T(1))).to_vector();
  CHECK(dx[(1 * 4 + 2) * 5 + 2] == T(27));
  CHECK(sum(Tensor<T, Backend>::from_vector(Shape{60}, dx)) == doctest::Approx(60.0));  // every output once
  nn::MaxPool3d<T, Backend> aniso(nn::MaxPool3dOptions({8, 8, 4}));
  CHECK(aniso.forward(randn<T>({1, 2, 17, 16, 9}, 1)).shape() == Shape{1, 2, 2, 2, 2});
  nn::MaxPool3d<T, Backend> k221(nn::MaxPool3dOptions({2, 2, 1}));
  CHECK(k221.forward(randn<T>({2, 1, 5, 4, 3}, 1)).shape() == Shape{2, 1, 2, 2, 3});
  CHECK(nn::MaxPool3dOptions({2, 2, 1}).stride() == ExpandingArray3(2, 2, 1));
}

TEST_CASE("MaxPool3d rejects bad input and options") {
  using Layer = nn::MaxPool3d<double, Backend>;
  using O = nn::MaxPool3dOptions;
  nn::MaxPool3d<double, Backend> pool(O(2));
  CHECK_THROWS_AS(pool.backward(randn<double>({1, 1, 2, 2, 2}, 1)), value_error);  // backward before forward
  CHECK_THROWS_AS(pool.forward(randn<double>({1, 4, 4, 4}, 1)), shape_error);       // rank 4
  CHECK_THROWS_AS(pool.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(pool.forward(randn<double>({1, 1, 4, 1, 4}, 1)), shape_error);   // H smaller than the kernel
  pool.forward(randn<double>({1, 2, 4, 6, 8}, 1));
  CHECK_THROWS_AS(pool.backward(randn<double>({1, 2, 2, 3, 5}, 1)), shape_error);  // grad_output shape
  CHECK_THROWS_AS(Layer(O(0)), value_error);
  CHECK_THROWS_AS(Layer(O(2).stride(0)), value_error);
  CHECK_THROWS_AS(Layer(O(2).padding(2)), value_error);  // PyTorch: pad <= kernel / 2
  CHECK_THROWS_AS(Layer(O(3).padding({0, -1, 0})), value_error);
}
