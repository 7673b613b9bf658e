// Channel concat / split: PyTorch fixtures (tests/reference/concat_ref.py), the layer's backward, a gradient
// check and bad inputs.
#include <mmnet/layers/concat.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("Concat matches torch.cat(dim=1) and its backward splits the gradient", T, float, double) {
  Fixture fx("concat");
  for (const std::string c : {"rank5", "rank3"}) {
    INFO("case " << c);
    std::vector<TestTensor<T>> xs;
    for (int i = 0; i < 3; ++i) xs.push_back(fx.tensor<T>(c + "/input" + std::to_string(i)));
    nn::Concat<T, Backend> cat;
    check_close(cat.forward(xs), fx.array(c + "/output"), tol_output<T>(), c + " output");
    check_close(nn::cat_channels(xs), fx.array(c + "/output"), tol_output<T>(), c + " cat_channels");
    const auto dxs = cat.backward(fx.tensor<T>(c + "/grad_output"));
    REQUIRE(dxs.size() == 3);
    for (int i = 0; i < 3; ++i) {
      CHECK(dxs[i].shape() == xs[i].shape());
      check_close(dxs[i], fx.array(c + "/grad_input" + std::to_string(i)), tol_grad<T>(), c + " grad_input" + std::to_string(i));
    }
    // split inverts cat exactly
    const auto parts = nn::split_channels(nn::cat_channels(xs), {xs[0].size(1), xs[1].size(1), xs[2].size(1)});
    for (int i = 0; i < 3; ++i) CHECK(parts[i].to_vector() == xs[i].to_vector());
  }
}

TEST_CASE("Concat passes the central-difference gradient check (double)") {
  // As a module of one input: y = cat(x, 2x, x[:, :1]) exercises every block and offset.
  struct Wrap : Module<double, Backend> {
    nn::Concat<double, Backend> cat;
    Tensor<double, Backend> forward(const Tensor<double, Backend>& x) {
      Tensor<double, Backend> x2 = x.clone();
      scale_(x2, 2.0);
      return cat.forward({x, x2, nn::split_channels(x, {1, x.size(1) - 1})[0]});
    }
    Tensor<double, Backend> backward(const Tensor<double, Backend>& dy) {
      auto d = cat.backward(dy);
      Tensor<double, Backend> dx = d[0].clone();
      axpy_(dx, 2.0, d[1]);
      auto head = nn::split_channels(dx, {1, dx.size(1) - 1});
      add_(head[0], d[2]);
      return nn::cat_channels(head);
    }
  } m;
  gradcheck_module(m, randn<double>({2, 3, 2, 3, 4}, 1));
}

TEST_CASE("cat_channels and split_channels handle rank 2 and zero-channel parts") {
  auto a = Tensor<double, Backend>::from_vector(Shape{2, 1}, std::vector<double>{1, 2});
  auto b = Tensor<double, Backend>::from_vector(Shape{2, 2}, std::vector<double>{3, 4, 5, 6});
  auto e = Tensor<double, Backend>(Shape{2, 0});
  const auto y = nn::cat_channels<double, Backend>({a, e, b});
  CHECK(y.shape() == Shape{2, 3});
  CHECK(y.to_vector() == std::vector<double>{1, 3, 4, 2, 5, 6});
  const auto parts = nn::split_channels(y, {0, 2, 1});
  CHECK(parts[0].shape() == Shape{2, 0});
  CHECK(parts[1].to_vector() == std::vector<double>{1, 3, 2, 5});
  CHECK(parts[2].to_vector() == std::vector<double>{4, 6});
}

TEST_CASE("Concat rejects mismatching inputs, naming the input and the shapes") {
  nn::Concat<double, Backend> cat;
  const auto a = randn<double>({2, 1, 3, 4, 5}, 1);
  const auto b = randn<double>({2, 2, 3, 4, 5}, 2);
  CHECK_THROWS_WITH_AS(cat.forward({a, b, randn<double>({2, 2, 3, 5, 5}, 3)}),
                       doctest::Contains("input 2 shape"), shape_error);
  CHECK_THROWS_WITH_AS(cat.forward({a, b, randn<double>({2, 2, 3, 5, 5}, 3)}), doctest::Contains("(2, 2, 3, 5, 5)"),
                       shape_error);
  CHECK_THROWS_WITH_AS(cat.forward({a, randn<double>({3, 2, 3, 4, 5}, 3)}), doctest::Contains("input 1"), shape_error);
  CHECK_THROWS_AS(cat.forward({a, randn<double>({2, 2, 3, 4}, 3)}), shape_error);  // rank
  CHECK_THROWS_AS(cat.forward({a, Tensor<double, Backend>()}), shape_error);
  CHECK_THROWS_AS(cat.forward({}), shape_error);
  CHECK_THROWS_AS(cat.forward({randn<double>({4}, 1)}), shape_error);  // rank 1
  CHECK_THROWS_AS(cat.backward(randn<double>({2, 3, 3, 4, 5}, 1)), value_error);  // backward before forward
  cat.forward({a, b});
  CHECK_THROWS_AS(cat.backward(randn<double>({2, 4, 3, 4, 5}, 1)), shape_error);
  CHECK_THROWS_AS(nn::split_channels(b, {1, 2}), shape_error);   // sizes sum to 3, not 2
  CHECK_THROWS_AS(nn::split_channels(b, {3, -1}), shape_error);
}
