// InstanceNorm3d: PyTorch fixtures (tests/reference/instance_norm3d_ref.py) incl. tiny volumes, constant channels
// and accumulated parameter gradients, central-difference checks, frozen parameters, names and bad inputs.
#include <mmnet/layers/instance_norm3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
// One forward + backward of a fixture case: output, grad_input and the (accumulated) parameter gradients.
template <class T>
void check_step(nn::InstanceNorm3d<T, Backend>& m, const Fixture& fx, const std::string& c) {
  check_close(m.forward(fx.tensor<T>(c + "/input")), fx.array(c + "/output"), tol_output<T>(), c + " output");
  check_close(m.backward(fx.tensor<T>(c + "/grad_output")), fx.array(c + "/grad_input"), tol_grad<T>(),
              c + " grad_input");
  for (auto& np : m.named_parameters())
    check_close(np.second->grad, fx.array(c + "/grad/" + np.first), tol_grad<T>(), c + " grad of " + np.first);
}

template <class T>
void run_case(const Fixture& fx, const std::string& c, const nn::InstanceNorm3dOptions& o, bool twice = false) {
  INFO("case " << c);
  nn::InstanceNorm3d<T, Backend> m(o);
  m.load_state_dict(fx.group(c + "/state"));  // strict: the names equal PyTorch's
  check_step(m, fx, c);
  if (twice) check_step(m, fx, c + "/second");  // PyTorch's .grad after two backward calls
}

void randomise(nn::InstanceNorm3d<double, Backend>& m, std::uint64_t seed) {
  m.weight.value.assign(randn<double>({m.options().num_features()}, seed).to_vector());
  m.bias.value.assign(randn<double>({m.options().num_features()}, seed + 1).to_vector());
}
}  // namespace

TEST_CASE_TEMPLATE("InstanceNorm3d matches PyTorch", T, float, double) {
  Fixture fx("instance_norm3d");
  using O = nn::InstanceNorm3dOptions;
  run_case<T>(fx, "affine", O(3), true);
  run_case<T>(fx, "plain", O(4).affine(false));
  run_case<T>(fx, "tiny_w", O(2));
  run_case<T>(fx, "tiny_h", O(3));
  run_case<T>(fx, "constant", O(3));
  run_case<T>(fx, "shifted_eps", O(2).eps(1e-3));
  run_case<T>(fx, "chunked", O(2));
}

TEST_CASE("InstanceNorm3d: names, defaults and mode independence") {
  nn::InstanceNorm3d<double, Backend> m(nn::InstanceNorm3dOptions(3));
  CHECK(m.state_dict().keys() == std::vector<std::string>{"weight", "bias"});
  CHECK(m.weight.value.to_vector() == std::vector<double>{1, 1, 1});
  CHECK(m.bias.value.to_vector() == std::vector<double>{0, 0, 0});
  CHECK(m.options().eps() == 1e-5);
  CHECK(m.options().affine());
  nn::InstanceNorm3d<double, Backend> plain(nn::InstanceNorm3dOptions(3).affine(false));
  CHECK(plain.state_dict().keys().empty());
  CHECK(plain.parameters().empty());

  // No running statistics: eval mode normalises with the instance statistics too.
  randomise(m, 3);
  const auto x = randn<double>({2, 3, 2, 3, 4}, 4);
  const auto y_train = m.forward(x).to_vector();
  m.eval();
  CHECK(m.forward(x).to_vector() == y_train);
}

TEST_CASE("InstanceNorm3d passes the central-difference gradient check (double)") {
  SUBCASE("affine, 2 x 3 x 3 x 4 x 5") {
    nn::InstanceNorm3d<double, Backend> m(nn::InstanceNorm3dOptions(3));
    randomise(m, 1);
    gradcheck_module(m, randn<double>({2, 3, 3, 4, 5}, 2));
  }
  SUBCASE("non-affine") {
    nn::InstanceNorm3d<double, Backend> m(nn::InstanceNorm3dOptions(2).affine(false));
    gradcheck_module(m, randn<double>({2, 2, 2, 1, 3}, 3));
  }
  SUBCASE("tiny volumes 1x1x2 and 1x2x1") {
    nn::InstanceNorm3d<double, Backend> m(nn::InstanceNorm3dOptions(2));
    randomise(m, 4);
    gradcheck_module(m, randn<double>({1, 2, 1, 1, 2}, 5));
    gradcheck_module(m, randn<double>({2, 2, 1, 2, 1}, 6));
  }
  SUBCASE("constant channels (variance 0)") {
    nn::InstanceNorm3d<double, Backend> m(nn::InstanceNorm3dOptions(2));
    randomise(m, 7);
    gradcheck_module(m, Tensor<double, Backend>::full({2, 2, 2, 3, 1}, 0.75));
  }
}

TEST_CASE_TEMPLATE("InstanceNorm3d: constant input gives the bias; gradients accumulate; frozen gets none", T, float, double) {
  nn::InstanceNorm3d<T, Backend> m(nn::InstanceNorm3dOptions(2));
  m.bias.value.assign(std::vector<double>{0.5, -1.5});
  const auto y = m.forward(Tensor<T, Backend>::full({2, 2, 1, 3, 2}, T(4))).to_vector();
  for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == (((i / 6) % 2) == 0 ? T(0.5) : T(-1.5)));

  const auto x = randn<T>({2, 2, 3, 1, 4}, 1);
  const auto dy = randn<T>({2, 2, 3, 1, 4}, 2);
  m.zero_grad();
  m.forward(x);
  m.backward(dy);
  const auto gw1 = m.weight.grad.to_vector(), gb1 = m.bias.grad.to_vector();
  m.forward(x);
  m.backward(dy);
  const auto gw2 = m.weight.grad.to_vector(), gb2 = m.bias.grad.to_vector();
  for (std::size_t i = 0; i < gw1.size(); ++i) {
    CHECK(gw2[i] == doctest::Approx(2 * gw1[i]).epsilon(1e-6));
    CHECK(gb2[i] == doctest::Approx(2 * gb1[i]).epsilon(1e-6));
  }

  m.zero_grad();
  m.weight.requires_grad = false;
  m.forward(x);
  m.backward(dy);
  CHECK(m.weight.grad.to_vector() == std::vector<T>{0, 0});
  CHECK(m.bias.grad.to_vector() == gb1);
}

TEST_CASE("InstanceNorm3d rejects bad options and inputs") {
  using O = nn::InstanceNorm3dOptions;
  using I = nn::InstanceNorm3d<double, Backend>;
  CHECK_THROWS_AS(I(O(0)), value_error);
  CHECK_THROWS_AS(I(O(2).eps(-1)), value_error);
  I m(O(3));
  CHECK_THROWS_AS(m.backward(randn<double>({1, 3, 2, 2, 2}, 1)), value_error);  // no forward yet
  CHECK_THROWS_AS(m.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(m.forward(randn<double>({3, 2, 2, 2}, 1)), shape_error);        // rank 4
  CHECK_THROWS_AS(m.forward(randn<double>({1, 2, 2, 2, 2}, 1)), shape_error);     // channels
  CHECK_THROWS_AS(m.forward(Tensor<double, Backend>({2, 3, 0, 4, 5})), shape_error);
  // One voxel per channel: PyTorch raises "Expected more than 1 spatial element".
  CHECK_THROWS_WITH_AS(m.forward(randn<double>({2, 3, 1, 1, 1}, 1)), doctest::Contains("more than 1"), shape_error);
  m.forward(randn<double>({2, 3, 1, 2, 3}, 1));
  CHECK_THROWS_AS(m.backward(randn<double>({2, 3, 1, 3, 2}, 1)), shape_error);
}
