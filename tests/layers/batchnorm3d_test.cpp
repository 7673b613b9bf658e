// BatchNorm3d: PyTorch fixtures (tests/reference/batchnorm3d_ref.py) in train and eval mode, running statistics,
// central-difference checks in both modes, gradient accumulation, frozen parameters and bad inputs.
#include <algorithm>

#include <mmnet/layers/batchnorm3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
// Every entry of ours against the reference state dict: the same keys (HDF5 groups list them alphabetically, so
// the order is checked separately), close values, exact counters.
void check_state(const StateDict& ours, const StateDict& ref, double tol, bool is_double, const std::string& what) {
  auto a_keys = ours.keys(), r_keys = ref.keys();
  std::sort(a_keys.begin(), a_keys.end());
  std::sort(r_keys.begin(), r_keys.end());
  CHECK_MESSAGE(a_keys == r_keys, what << ": state dict keys differ");
  for (auto& entry : ours) {  // no structured bindings: doctest's macros capture them in lambdas (C++20)
    const std::string& name = entry.first;
    const HostArray& a = entry.second;
    const HostArray* r = ref.find(name);
    REQUIRE_MESSAGE(r != nullptr, what << ": reference lacks " << name);
    CHECK_MESSAGE(a.shape == r->shape, what << ": " << name << " shape " << a.shape_str() << " vs " << r->shape_str());
    if (a.dtype == DType::i64) {
      CHECK_MESSAGE(a.data == r->data, what << ": " << name << " = " << a.data[0] << ", reference " << r->data[0]);
      continue;
    }
    const double err = relative_error(a.data, r->data);
    ErrorStats::get().record(is_double, err, what + " " + name);
    CHECK_MESSAGE(err <= tol, what << ": " << name << " relative error " << err);
  }
}

// One fixture case: train_calls train-mode forwards (backward after the first), then an eval-mode forward and
// backward; outputs, gradients and the state dict after every call are compared with PyTorch.
template <class T>
void run_case(const Fixture& fx, const std::string& c, const nn::BatchNorm3dOptions& o, int train_calls) {
  INFO("case " << c);
  constexpr bool dbl = std::is_same_v<T, double>;
  nn::BatchNorm3d<T, Backend> bn(o);
  bn.load_state_dict(fx.group(c + "/init"));  // strict: the names equal PyTorch's
  bn.train();
  for (int k = 0; k < train_calls; ++k) {
    const std::string t = c + "/train" + std::to_string(k);
    check_close(bn.forward(fx.tensor<T>(t + "/input")), fx.array(t + "/output"), tol_output<T>(), t + " output");
    if (k == 0) {
      check_close(bn.backward(fx.tensor<T>(t + "/grad_output")), fx.array(t + "/grad_input"), tol_grad<T>(),
                  t + " grad_input");
      for (auto& [name, p] : bn.named_parameters())
        check_close(p->grad, fx.array(t + "/grad/" + name), tol_grad<T>(), t + " grad of " + name);
    }
    check_state(bn.state_dict(), fx.group(c + "/after" + std::to_string(k)), tol_output<T>(), dbl,
                c + " state after train call " + std::to_string(k));
  }
  bn.eval();
  bn.zero_grad();
  const std::string e = c + "/eval";
  check_close(bn.forward(fx.tensor<T>(e + "/input")), fx.array(e + "/output"), tol_output<T>(), e + " output");
  check_close(bn.backward(fx.tensor<T>(e + "/grad_output")), fx.array(e + "/grad_input"), tol_grad<T>(),
              e + " grad_input");
  for (auto& [name, p] : bn.named_parameters())
    check_close(p->grad, fx.array(e + "/grad/" + name), tol_grad<T>(), e + " grad of " + name);
  // eval mode leaves the running statistics and the counter alone
  check_state(bn.state_dict(), fx.group(c + "/after" + std::to_string(train_calls - 1)), tol_output<T>(), dbl,
              c + " state after eval");
}
}  // namespace

TEST_CASE_TEMPLATE("BatchNorm3d matches PyTorch in train and eval mode", T, float, double) {
  Fixture fx("batchnorm3d");
  using O = nn::BatchNorm3dOptions;
  run_case<T>(fx, "default", O(3), 2);
  run_case<T>(fx, "momentum03", O(4).momentum(0.3).eps(1e-3), 2);
  run_case<T>(fx, "momentum_none", O(5).momentum(std::nullopt), 3);
  run_case<T>(fx, "nonaffine", O(3).affine(false), 2);
  run_case<T>(fx, "untracked", O(3).track_running_stats(false), 1);
  run_case<T>(fx, "small", O(3), 2);
  run_case<T>(fx, "single_sample", O(4), 2);
}

TEST_CASE("BatchNorm3d: registration order, names and initial values") {
  nn::BatchNorm3d<double, Backend> bn(nn::BatchNorm3dOptions(3));
  CHECK(bn.state_dict().keys() ==
        std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"});
  CHECK(bn.weight.value.to_vector() == std::vector<double>{1, 1, 1});
  CHECK(bn.bias.value.to_vector() == std::vector<double>{0, 0, 0});
  CHECK(bn.running_mean.value.to_vector() == std::vector<double>{0, 0, 0});
  CHECK(bn.running_var.value.to_vector() == std::vector<double>{1, 1, 1});
  CHECK(bn.num_batches_tracked.value == 0);
  CHECK(bn.options().momentum().value() == 0.1);
  CHECK(bn.options().eps() == 1e-5);

  nn::BatchNorm3d<double, Backend> plain(nn::BatchNorm3dOptions(3).affine(false));
  CHECK(plain.state_dict().keys() == std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"});
  CHECK(plain.parameters().empty());
  nn::BatchNorm3d<double, Backend> untracked(nn::BatchNorm3dOptions(3).track_running_stats(false));
  CHECK(untracked.state_dict().keys() == std::vector<std::string>{"weight", "bias"});
}

TEST_CASE("BatchNorm3d passes the central-difference gradient check (double)") {
  // Random affine parameters so that the weight enters every term.
  auto randomise = [](nn::BatchNorm3d<double, Backend>& bn, std::uint64_t seed) {
    bn.weight.value.assign(randn<double>({bn.options().num_features()}, seed).to_vector());
    bn.bias.value.assign(randn<double>({bn.options().num_features()}, seed + 1).to_vector());
  };
  SUBCASE("train mode: batch statistics (mean and variance terms)") {
    nn::BatchNorm3d<double, Backend> bn(nn::BatchNorm3dOptions(3));
    randomise(bn, 3);
    gradcheck_module(bn, randn<double>({2, 3, 2, 3, 4}, 5));
  }
  SUBCASE("train mode, tiny batch N=2, 1x1x2") {
    nn::BatchNorm3d<double, Backend> bn(nn::BatchNorm3dOptions(3));
    randomise(bn, 4);
    gradcheck_module(bn, randn<double>({2, 3, 1, 1, 2}, 6));
  }
  SUBCASE("train mode, non-affine") {
    nn::BatchNorm3d<double, Backend> bn(nn::BatchNorm3dOptions(2).affine(false));
    gradcheck_module(bn, randn<double>({3, 2, 2, 1, 3}, 7));
  }
  SUBCASE("eval mode: running statistics (affine)") {
    nn::BatchNorm3d<double, Backend> bn(nn::BatchNorm3dOptions(3));
    randomise(bn, 8);
    bn.running_mean.value.assign(std::vector<double>{0.3, -0.2, 0.1});
    bn.running_var.value.assign(std::vector<double>{0.5, 1.5, 2.0});
    bn.eval();
    gradcheck_module(bn, randn<double>({2, 3, 2, 3, 4}, 9));
  }
  SUBCASE("eval mode without running statistics uses the batch statistics") {
    nn::BatchNorm3d<double, Backend> bn(nn::BatchNorm3dOptions(3).track_running_stats(false));
    randomise(bn, 10);
    bn.eval();
    gradcheck_module(bn, randn<double>({2, 3, 2, 3, 1}, 11));
  }
}

TEST_CASE_TEMPLATE("BatchNorm3d parameter gradients accumulate across backward calls", T, float, double) {
  nn::BatchNorm3d<T, Backend> bn(nn::BatchNorm3dOptions(3));
  const auto x = randn<T>({2, 3, 2, 3, 4}, 1);
  const auto dy = randn<T>({2, 3, 2, 3, 4}, 2);
  bn.forward(x);
  bn.backward(dy);
  const auto gw1 = bn.weight.grad.to_vector();
  const auto gb1 = bn.bias.grad.to_vector();
  bn.forward(x);
  bn.backward(dy);
  const auto gw2 = bn.weight.grad.to_vector();
  const auto gb2 = bn.bias.grad.to_vector();
  for (std::size_t i = 0; i < gw1.size(); ++i) {
    CHECK(gw2[i] == doctest::Approx(2 * gw1[i]).epsilon(1e-5));
    CHECK(gb2[i] == doctest::Approx(2 * gb1[i]).epsilon(1e-5));
  }
  bn.zero_grad();
  CHECK(bn.weight.grad.to_vector() == std::vector<T>(3, T(0)));
}

TEST_CASE_TEMPLATE("frozen BatchNorm3d parameters get no gradient; running stats still update in train mode", T,
                   float, double) {
  nn::BatchNorm3d<T, Backend> bn(nn::BatchNorm3dOptions(3));
  nn::BatchNorm3d<T, Backend> live(nn::BatchNorm3dOptions(3));
  bn.freeze();
  const auto x = randn<T>({2, 3, 2, 3, 4}, 1);
  const auto dy = randn<T>({2, 3, 2, 3, 4}, 2);
  bn.forward(x);
  const auto dx = bn.backward(dy).to_vector();
  live.forward(x);
  const auto dx_live = live.backward(dy).to_vector();
  CHECK(dx == dx_live);  // the input gradient does not depend on freezing
  CHECK(bn.weight.grad.to_vector() == std::vector<T>(3, T(0)));
  CHECK(bn.bias.grad.to_vector() == std::vector<T>(3, T(0)));
  CHECK(live.weight.grad.to_vector() != std::vector<T>(3, T(0)));
  CHECK(bn.running_mean.value.to_vector() == live.running_mean.value.to_vector());
  CHECK(bn.running_var.value.to_vector() == live.running_var.value.to_vector());
  CHECK(bn.running_mean.value.to_vector() != std::vector<T>(3, T(0)));
  CHECK(bn.num_batches_tracked.value == 1);
  // only the bias frozen: the weight still gets its gradient
  nn::BatchNorm3d<T, Backend> half(nn::BatchNorm3dOptions(3));
  half.bias.requires_grad = false;
  half.forward(x);
  half.backward(dy);
  CHECK(half.weight.grad.to_vector() == live.weight.grad.to_vector());
  CHECK(half.bias.grad.to_vector() == std::vector<T>(3, T(0)));
}

TEST_CASE_TEMPLATE("BatchNorm3d on a large input: per-channel mean 0 and variance 1 (threaded channel loops)", T,
                   float, double) {
  const index_t n = 2, c = 5, s = 6 * 16 * 20;
  nn::BatchNorm3d<T, Backend> bn(nn::BatchNorm3dOptions(c).eps(0));
  const auto x = randn<T>({n, c, 6, 16, 20}, 3);
  const auto y = bn.forward(x).to_vector();
  const auto xv = x.to_vector();
  const auto rm = bn.running_mean.value.to_vector();
  for (index_t ch = 0; ch < c; ++ch) {
    double sx = 0, sy = 0, syy = 0;
    for (index_t b = 0; b < n; ++b)
      for (index_t k = 0; k < s; ++k) {
        const auto at = static_cast<std::size_t>((b * c + ch) * s + k);
        sx += xv[at];
        sy += y[at];
        syy += static_cast<double>(y[at]) * y[at];
      }
    const double m = static_cast<double>(n * s);
    CHECK(std::abs(sy / m) < 1e-5);
    CHECK(syy / m == doctest::Approx(1.0).epsilon(1e-4));
    CHECK(rm[static_cast<std::size_t>(ch)] == doctest::Approx(0.1 * sx / m).epsilon(1e-4));
  }
}

TEST_CASE("BatchNorm3d: eval mode leaves running statistics and the counter unchanged") {
  nn::BatchNorm3d<double, Backend> bn(nn::BatchNorm3dOptions(2));
  bn.eval();
  bn.forward(randn<double>({1, 2, 1, 1, 1}, 1));  // one value per channel is fine with running statistics
  CHECK(bn.num_batches_tracked.value == 0);
  CHECK(bn.running_mean.value.to_vector() == std::vector<double>{0, 0});
  CHECK(bn.running_var.value.to_vector() == std::vector<double>{1, 1});
}

TEST_CASE("BatchNorm3d rejects bad input") {
  using Layer = nn::BatchNorm3d<double, Backend>;
  nn::BatchNorm3d<double, Backend> bn(nn::BatchNorm3dOptions(3));
  CHECK_THROWS_AS(bn.forward(randn<double>({2, 4, 2, 2, 2}, 1)), shape_error);  // channels
  CHECK_THROWS_AS(bn.forward(randn<double>({2, 3, 2, 2}, 1)), shape_error);     // rank 4
  CHECK_THROWS_AS(bn.forward(Tensor<double, Backend>()), shape_error);          // empty
  CHECK_THROWS_AS(bn.forward(Tensor<double, Backend>(Shape{0, 3, 2, 2, 2})), shape_error);
  CHECK_THROWS_AS(bn.backward(randn<double>({2, 3, 2, 2, 2}, 1)), value_error);  // backward before forward
  // PyTorch: "Expected more than 1 value per channel when training"
  CHECK_THROWS_WITH_AS(bn.forward(randn<double>({1, 3, 1, 1, 1}, 1)),
                       doctest::Contains("values per channel when training: expected more than 1, got 1"), shape_error);
  CHECK(bn.num_batches_tracked.value == 0);  // a rejected call changes nothing
  bn.forward(randn<double>({2, 3, 2, 2, 2}, 1));
  CHECK_THROWS_AS(bn.backward(randn<double>({2, 3, 2, 2, 3}, 1)), shape_error);  // grad_output shape
  nn::BatchNorm3d<double, Backend> untracked(nn::BatchNorm3dOptions(3).track_running_stats(false));
  untracked.eval();  // batch statistics in eval mode too, so one value per channel is still an error
  CHECK_THROWS_AS(untracked.forward(randn<double>({1, 3, 1, 1, 1}, 1)), shape_error);
  CHECK_THROWS_AS(Layer(nn::BatchNorm3dOptions(0)), value_error);
  CHECK_THROWS_AS(Layer(nn::BatchNorm3dOptions(3).eps(-1)), value_error);
}
