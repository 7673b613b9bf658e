// GroupNorm: PyTorch fixtures (tests/reference/group_norm_ref.py) for G = 1, 1 < G < C and G = C, ranks 2/3/5,
// tiny volumes, constant groups and accumulated parameter gradients; one-value groups; central-difference checks;
// frozen parameters, names and bad inputs.
#include <algorithm>
#include <cmath>
#include <vector>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include <mmnet/layers/group_norm.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
// One forward + backward of a fixture case: output, grad_input and the (accumulated) parameter gradients.
template <class T>
void check_step(nn::GroupNorm<T, Backend>& m, const Fixture& fx, const std::string& c) {
  check_close(m.forward(fx.tensor<T>(c + "/input")), fx.array(c + "/output"), tol_output<T>(), c + " output");
  check_close(m.backward(fx.tensor<T>(c + "/grad_output")), fx.array(c + "/grad_input"), tol_grad<T>(),
              c + " grad_input");
  for (auto& np : m.named_parameters())
    check_close(np.second->grad, fx.array(c + "/grad/" + np.first), tol_grad<T>(), c + " grad of " + np.first);
}

template <class T>
void run_case(const Fixture& fx, const std::string& c, const nn::GroupNormOptions& o, bool twice = false) {
  INFO("case " << c);
  nn::GroupNorm<T, Backend> m(o);
  m.load_state_dict(fx.group(c + "/state"));  // strict: the names equal PyTorch's
  check_step(m, fx, c);
  if (twice) check_step(m, fx, c + "/second");  // PyTorch's .grad after two backward calls
}

void randomise(nn::GroupNorm<double, Backend>& m, std::uint64_t seed) {
  m.weight.value.assign(randn<double>({m.options().num_channels()}, seed).to_vector());
  m.bias.value.assign(randn<double>({m.options().num_channels()}, seed + 1).to_vector());
}
}  // namespace

TEST_CASE_TEMPLATE("GroupNorm matches PyTorch", T, float, double) {
  Fixture fx("group_norm");
  using O = nn::GroupNormOptions;
  run_case<T>(fx, "g2c6", O(2, 6), true);
  run_case<T>(fx, "g1c4", O(1, 4));
  run_case<T>(fx, "g4c4", O(4, 4));
  run_case<T>(fx, "plain", O(3, 6).affine(false));
  run_case<T>(fx, "tiny_w", O(2, 2));
  run_case<T>(fx, "tiny_h", O(1, 3));
  run_case<T>(fx, "constant", O(3, 6));
  run_case<T>(fx, "eps", O(2, 4).eps(1e-3));
  run_case<T>(fx, "rank3", O(2, 4));
  run_case<T>(fx, "rank2", O(2, 4));
  run_case<T>(fx, "chunked", O(2, 4));
}

TEST_CASE("GroupNorm: names, defaults and mode independence") {
  nn::GroupNorm<double, Backend> m(nn::GroupNormOptions(2, 4));
  CHECK(m.state_dict().keys() == std::vector<std::string>{"weight", "bias"});
  CHECK(m.weight.value.to_vector() == std::vector<double>{1, 1, 1, 1});
  CHECK(m.bias.value.to_vector() == std::vector<double>{0, 0, 0, 0});
  CHECK(m.options().eps() == 1e-5);
  CHECK(m.options().affine());
  nn::GroupNorm<double, Backend> plain(nn::GroupNormOptions(2, 4).affine(false));
  CHECK(plain.state_dict().keys().empty());

  randomise(m, 3);
  const auto x = randn<double>({2, 4, 2, 3, 1}, 4);
  const auto y_train = m.forward(x).to_vector();
  m.eval();
  CHECK(m.forward(x).to_vector() == y_train);
}

TEST_CASE("GroupNorm passes the central-difference gradient check (double)") {
  SUBCASE("2 groups of 3 channels") {
    nn::GroupNorm<double, Backend> m(nn::GroupNormOptions(2, 6));
    randomise(m, 1);
    gradcheck_module(m, randn<double>({2, 6, 2, 3, 4}, 2));
  }
  SUBCASE("one group") {
    nn::GroupNorm<double, Backend> m(nn::GroupNormOptions(1, 3));
    randomise(m, 3);
    gradcheck_module(m, randn<double>({2, 3, 3, 1, 2}, 4));
  }
  SUBCASE("one-channel groups, tiny volumes") {
    nn::GroupNorm<double, Backend> m(nn::GroupNormOptions(3, 3));
    randomise(m, 5);
    gradcheck_module(m, randn<double>({1, 3, 1, 1, 2}, 6));
    gradcheck_module(m, randn<double>({2, 3, 1, 2, 1}, 7));
  }
  SUBCASE("non-affine, rank 3") {
    nn::GroupNorm<double, Backend> m(nn::GroupNormOptions(2, 4).affine(false));
    gradcheck_module(m, randn<double>({3, 4, 5}, 8));
  }
  SUBCASE("constant groups (variance 0)") {
    nn::GroupNorm<double, Backend> m(nn::GroupNormOptions(2, 4));
    randomise(m, 9);
    gradcheck_module(m, Tensor<double, Backend>::full({2, 4, 1, 2, 3}, -1.25));
  }
}

TEST_CASE_TEMPLATE("GroupNorm: one value per group gives the bias and no input gradient", T, float, double) {
  // Allowed by PyTorch when the batch has more than one sample; the variance is 0, so xhat = 0.
  nn::GroupNorm<T, Backend> m(nn::GroupNormOptions(3, 3));
  m.weight.value.assign(std::vector<double>{2, 3, 4});
  m.bias.value.assign(std::vector<double>{0.5, -1, 2});
  const auto y = m.forward(randn<T>({2, 3, 1, 1, 1}, 1)).to_vector();
  CHECK(y == std::vector<T>{T(0.5), T(-1), T(2), T(0.5), T(-1), T(2)});
  const auto dy = randn<T>({2, 3, 1, 1, 1}, 2);
  CHECK(m.backward(dy).to_vector() == std::vector<T>(6, T(0)));
  CHECK(m.weight.grad.to_vector() == std::vector<T>(3, T(0)));
  const auto g = dy.to_vector();
  const auto gb = m.bias.grad.to_vector();
  for (int c = 0; c < 3; ++c) CHECK(gb[c] == doctest::Approx(g[c] + g[c + 3]));
}

TEST_CASE_TEMPLATE("GroupNorm parameter gradients accumulate; frozen parameters get none", T, float, double) {
  nn::GroupNorm<T, Backend> m(nn::GroupNormOptions(2, 4));
  const auto x = randn<T>({2, 4, 3, 1, 2}, 1);
  const auto dy = randn<T>({2, 4, 3, 1, 2}, 2);
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
  m.bias.requires_grad = false;
  m.forward(x);
  m.backward(dy);
  CHECK(m.weight.grad.to_vector() == gw1);
  CHECK(m.bias.grad.to_vector() == std::vector<T>(4, T(0)));
}

TEST_CASE("GroupNorm rejects bad options and inputs") {
  using O = nn::GroupNormOptions;
  using G = nn::GroupNorm<double, Backend>;
  CHECK_THROWS_WITH_AS(G(O(3, 4)), doctest::Contains("divisible"), value_error);
  CHECK_THROWS_AS(G(O(0, 4)), value_error);
  CHECK_THROWS_AS(G(O(2, 0)), value_error);
  CHECK_THROWS_AS(G(O(2, 4).eps(-1e-5)), value_error);
  G m(O(2, 4));
  CHECK_THROWS_AS(m.backward(randn<double>({1, 4, 2}, 1)), value_error);  // no forward yet
  CHECK_THROWS_AS(m.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(m.forward(randn<double>({4}, 1)), shape_error);                 // rank 1
  CHECK_THROWS_AS(m.forward(randn<double>({2, 6, 2, 2, 2}, 1)), shape_error);     // channels
  CHECK_THROWS_AS(m.forward(Tensor<double, Backend>({2, 4, 0, 3, 3})), shape_error);
  // A single value per group over the whole batch: PyTorch raises "Expected more than 1 value per channel".
  G inst(O(4, 4));
  CHECK_THROWS_WITH_AS(inst.forward(randn<double>({1, 4, 1, 1, 1}, 1)), doctest::Contains("more than 1"), shape_error);
  m.forward(randn<double>({2, 4, 1, 2, 3}, 1));
  CHECK_THROWS_AS(m.backward(randn<double>({2, 4, 1, 3, 2}, 1)), shape_error);
}

namespace {
// Largest |a - b| / max(1, max|b|) over two equal-length vectors.
double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double scale = 1, d = 0;
  for (double v : b) scale = std::max(scale, std::abs(v));
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d / scale;
}
}  // namespace

// The kernels the layers call (on cpu, the fast path of backend/cpu/group_norm.hpp) against the generic kernels of
// backend/common/group_stats.hpp, called explicitly (<double, Backend>, which the cpu overloads cannot take), on
// random problems: plane sizes that are not multiples of any SIMD width, one-channel groups, one value per plane,
// planes and groups longer than one reduction chunk (4096), with and without affine parameters.
TEST_CASE("GroupNorm kernels: the backend's path matches the generic kernels (double, random shapes)") {
  using D = Tensor<double, Backend>;
  struct Case { index_t n, c, g, s; bool affine; };
  const Case cases[] = {{2, 6, 2, 7 * 5 * 3, true},  {1, 4, 4, 1, true},       {3, 5, 5, 17, false},
                        {2, 8, 4, 4099, true},        {1, 3, 1, 2 * 3 * 5, true}, {2, 16, 16, 9 * 11 * 13, true},
                        {1, 2, 1, 8193, false},       {2, 12, 3, 33, true},      {1, 1, 1, 4096 + 8, true}};
  double worst = 0;
  std::uint64_t seed = 100;
  for (const Case& k : cases) {
    INFO("n " << k.n << " c " << k.c << " g " << k.g << " s " << k.s << " affine " << k.affine);
    const backend::GroupNormProblem p{k.n, k.c, k.g, k.s};
    // An offset mean and a spread scale, so that cancellation in x - mean shows.
    D x = D::from_vector({p.numel()}, [&] {
      auto v = randn<double>({p.numel()}, seed++).to_vector();
      for (auto& e : v) e = 3.0 + 2.5 * e;
      return v;
    }());
    const D dy = randn<double>({p.numel()}, seed++);
    const D w = randn<double>({k.c}, seed++), b = randn<double>({k.c}, seed++);
    const double* pw = k.affine ? w.data() : nullptr;
    const double* pb = k.affine ? b.data() : nullptr;
    D mean_f({p.rows()}), inv_f({p.rows()}), mean_g({p.rows()}), inv_g({p.rows()});
    backend::group_norm_stats(Backend{}, p, x.data(), 1e-5, mean_f.data(), inv_f.data());
    backend::group_norm_stats<double, Backend>(Backend{}, p, x.data(), 1e-5, mean_g.data(), inv_g.data());
    const double d_mean = rel_diff(mean_f.to_vector(), mean_g.to_vector());
    const double d_inv = rel_diff(inv_f.to_vector(), inv_g.to_vector());
    // The rest of the comparison feeds both paths the generic statistics, so each kernel is compared alone.
    D y_f({p.numel()}), y_g({p.numel()});
    backend::group_norm_apply(Backend{}, p, x.data(), mean_g.data(), inv_g.data(), pw, pb, y_f.data());
    backend::group_norm_apply<double, Backend>(Backend{}, p, x.data(), mean_g.data(), inv_g.data(), pw, pb, y_g.data());
    const double d_y = rel_diff(y_f.to_vector(), y_g.to_vector());
    D sd_f({k.n * k.c}), sdx_f({k.n * k.c}), sd_g({k.n * k.c}), sdx_g({k.n * k.c});
    backend::group_norm_backward_reduce(Backend{}, p, x.data(), dy.data(), mean_g.data(), inv_g.data(), sd_f.data(),
                                        sdx_f.data());
    backend::group_norm_backward_reduce<double, Backend>(Backend{}, p, x.data(), dy.data(), mean_g.data(),
                                                         inv_g.data(), sd_g.data(), sdx_g.data());
    const double d_sd = rel_diff(sd_f.to_vector(), sd_g.to_vector());
    const double d_sdx = rel_diff(sdx_f.to_vector(), sdx_g.to_vector());
    D dx_f({p.numel()}), dx_g({p.numel()});
    backend::group_norm_backward_input(Backend{}, p, x.data(), dy.data(), mean_g.data(), inv_g.data(), pw,
                                       sd_g.data(), sdx_g.data(), dx_f.data());
    backend::group_norm_backward_input<double, Backend>(Backend{}, p, x.data(), dy.data(), mean_g.data(),
                                                        inv_g.data(), pw, sd_g.data(), sdx_g.data(), dx_g.data());
    const double d_dx = rel_diff(dx_f.to_vector(), dx_g.to_vector());
    CHECK(d_mean <= 1e-14);
    CHECK(d_inv <= 1e-14);
    CHECK(d_y <= 1e-14);
    CHECK(d_sd <= 1e-13);
    CHECK(d_sdx <= 1e-13);
    CHECK(d_dx <= 1e-14);
    worst = std::max({worst, d_mean, d_inv, d_y, d_sd, d_sdx, d_dx});
#if defined(_OPENMP)
    // Bit-identical for any thread count: the backend's path again on 1 and on 3 threads.
    const auto run = [&] {
      D m({p.rows()}), is({p.rows()}), y({p.numel()}), sd({k.n * k.c}), sdx({k.n * k.c}), dx({p.numel()});
      backend::group_norm_stats(Backend{}, p, x.data(), 1e-5, m.data(), is.data());
      backend::group_norm_apply(Backend{}, p, x.data(), m.data(), is.data(), pw, pb, y.data());
      backend::group_norm_backward_reduce(Backend{}, p, x.data(), dy.data(), m.data(), is.data(), sd.data(),
                                          sdx.data());
      backend::group_norm_backward_input(Backend{}, p, x.data(), dy.data(), m.data(), is.data(), pw, sd.data(),
                                         sdx.data(), dx.data());
      std::vector<double> all;
      for (const D* t : {&m, &is, &y, &sd, &sdx, &dx}) {
        const auto v = t->to_vector();
        all.insert(all.end(), v.begin(), v.end());
      }
      return all;
    };
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const auto one = run();
    omp_set_num_threads(3);
    const auto three = run();
    omp_set_num_threads(threads);
    CHECK(one == three);
#endif
  }
  MESSAGE("GroupNorm fast path vs generic kernels: largest relative difference " << worst);
}
