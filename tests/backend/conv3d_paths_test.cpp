// The cpu fast paths of Conv3d (forward, backward-data) and ConvTranspose3d (forward, backward-data) against the
// generic kernels on many random problems: every channel block (1, 2, 4, 8 and their tails), wide and narrow
// rows (vectors along W, blocked rows, W tails), strides, dilations, paddings and output_padding. The cpu
// overloads are called with host pointers, so this file runs the same checks in every test executable.
#include <mmnet/core/parallel.hpp>
#include <mmnet/layers/conv3d.hpp>
#include <mmnet/layers/conv_transpose3d.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
std::vector<T> random_vector(index_t n, Generator& g) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(g.uniform(-1.0, 1.0));
  return v;
}

// max |a - b| / max |b|
template <class T>
double rel_error(const std::vector<T>& a, const std::vector<T>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return den > 0 ? num / den : num;
}

// Accumulation in T over up to a few thousand products: double agrees with the generic (double) sums to
// rounding, float to its own.
template <class T>
constexpr double path_tol() { return std::is_same_v<T, double> ? 1e-12 : 1e-5; }

struct Rng {
  Generator g;
  index_t pick(index_t lo, index_t hi) { return lo + static_cast<index_t>(g.integer(static_cast<std::uint64_t>(hi - lo + 1))); }
};

std::string describe(const Conv3dProblem& p) {
  return "N" + std::to_string(p.N) + " C" + std::to_string(p.C) + " K" + std::to_string(p.K) + " in " +
         Shape{p.D, p.H, p.W}.str() + " k " + Shape{p.kd, p.kh, p.kw}.str() + " s " + Shape{p.sd, p.sh, p.sw}.str() +
         " p " + Shape{p.pd, p.ph, p.pw}.str() + " d " + Shape{p.dd, p.dh, p.dw}.str() + " out " +
         Shape{p.OD, p.OH, p.OW}.str();
}

// A random Conv3d problem; `wide` draws W up to 150 (several vectors and W tiles per row), else W up to 40.
Conv3dProblem random_problem(Rng& r, int trial) {
  for (;;) {
    Conv3dProblem p;
    p.N = r.pick(1, 2);
    const index_t channels[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17};
    p.C = channels[r.pick(0, 10)];
    p.K = channels[trial % 11];  // every channel block and tail in turn
    p.kd = r.pick(1, 3), p.kh = r.pick(1, 3), p.kw = r.pick(1, 4);
    p.sd = r.pick(1, 2), p.sh = r.pick(1, 3), p.sw = r.pick(1, 3);
    p.dd = r.pick(1, 2), p.dh = r.pick(1, 2), p.dw = r.pick(1, 3);
    p.pd = r.pick(0, 2), p.ph = r.pick(0, 2), p.pw = r.pick(0, 4);
    p.D = r.pick(1, 6), p.H = r.pick(1, 9);
    p.W = trial % 3 == 0 ? r.pick(40, 150) : r.pick(1, 40);
    p.compute_output();
    if (p.valid_output()) return p;
  }
}

template <class T>
void check_conv3d(const Conv3dProblem& p, Generator& g, double& worst) {
  const auto x = random_vector<T>(p.input_numel(), g), w = random_vector<T>(p.weight_numel(), g),
             b = random_vector<T>(p.K, g), dy = random_vector<T>(p.output_numel(), g);
  std::vector<T> y(static_cast<std::size_t>(p.output_numel()), T(7)), y_ref(y.size());
  backend::conv3d_forward(cpu{}, p, x.data(), w.data(), b.data(), y.data());
  backend::generic::conv3d_forward(cpu{}, p, x.data(), w.data(), b.data(), y_ref.data());
  const double ef = rel_error(y, y_ref);
  CHECK_MESSAGE(ef <= path_tol<T>(), "forward error ", ef);
  std::vector<T> dx(static_cast<std::size_t>(p.input_numel()), T(7)), dx_ref(dx.size());
  backend::conv3d_backward_data(cpu{}, p, dy.data(), w.data(), dx.data());
  backend::generic::conv3d_backward_data(cpu{}, p, dy.data(), w.data(), dx_ref.data());
  const double eb = rel_error(dx, dx_ref);
  CHECK_MESSAGE(eb <= path_tol<T>(), "backward-data error ", eb);
  worst = std::max({worst, ef, eb});
}

template <class T>
void check_conv_transpose3d(const ConvTranspose3dProblem& p, Generator& g, double& worst) {
  const auto x = random_vector<T>(p.input_numel(), g), w = random_vector<T>(p.weight_numel(), g),
             b = random_vector<T>(p.K, g), dy = random_vector<T>(p.output_numel(), g);
  std::vector<T> y(static_cast<std::size_t>(p.output_numel()), T(7)), y_ref(y.size());
  backend::conv_transpose3d_forward(cpu{}, p, x.data(), w.data(), b.data(), y.data());
  backend::generic::conv_transpose3d_forward(cpu{}, p, x.data(), w.data(), b.data(), y_ref.data());
  const double ef = rel_error(y, y_ref);
  CHECK_MESSAGE(ef <= path_tol<T>(), "transposed forward error ", ef);
  std::vector<T> dx(static_cast<std::size_t>(p.input_numel()), T(7)), dx_ref(dx.size());
  backend::conv_transpose3d_backward_data(cpu{}, p, dy.data(), w.data(), dx.data());
  backend::generic::conv_transpose3d_backward_data(cpu{}, p, dy.data(), w.data(), dx_ref.data());
  const double eb = rel_error(dx, dx_ref);
  CHECK_MESSAGE(eb <= path_tol<T>(), "transposed backward-data error ", eb);
  worst = std::max({worst, ef, eb});
}

}  // namespace

TEST_CASE_TEMPLATE("Conv3d cpu fast paths agree with the generic kernels on random problems", T, float, double) {
  Rng r{Generator(20261129)};
  double worst = 0;
  for (int trial = 0; trial < 132; ++trial) {
    const Conv3dProblem p = random_problem(r, trial);
    CAPTURE(describe(p));
    check_conv3d<T>(p, r.g, worst);
  }
  MESSAGE("largest fast-path error ", worst);
}

TEST_CASE_TEMPLATE("Conv3d cpu fast paths: the register-tile variants and their tails", T, float, double) {
  // Each K hits one channel block (8, 4, 2, 1) with a tail; each W one tile shape: a single narrow vector
  // (rows blocked), two vectors, exactly NW vectors, NW plus a tail, and a W tail inside a vector; H: one
  // row, tile-row tails, several 8-row tasks.
  constexpr index_t L = static_cast<index_t>(xsimd::batch<T>::size);
  Generator g(7);
  double worst = 0;
  for (index_t K : {1, 2, 3, 4, 6, 8, 11, 16, 64})  // 64 with 16-wide rows: 6-channel x 4-row tiles
    for (index_t W : {index_t(1), L - 1, L, 2 * L, 3 * L, 3 * L + 5, 6 * L, 8 * L + 3, 9 * L})
      for (index_t H : {1, 4, 7, 19}) {  // 19: several row blocks per task and a tail
        Conv3dProblem p;
        p.N = 2, p.C = 3, p.K = K, p.D = 3, p.H = H, p.W = W;
        p.kd = 3, p.kh = 3, p.kw = 3, p.pd = 1, p.ph = 1, p.pw = 1;
        p.compute_output();
        CAPTURE(describe(p));
        check_conv3d<T>(p, g, worst);
      }
  MESSAGE("largest tile-variant error ", worst);
}

TEST_CASE_TEMPLATE("Conv3d cpu fast paths: unpadded input, whole vectors per row", T, float, double) {
  constexpr index_t L = static_cast<index_t>(xsimd::batch<T>::size);
  Generator g(9);
  double worst = 0;
  for (index_t k : {1, 2, 3})
    for (index_t ow : {L, 2 * L, 4 * L, 5 * L})
      for (index_t K : {1, 4, 11}) {
        Conv3dProblem p;
        p.N = 2, p.C = 5, p.K = K, p.D = 2 + k, p.H = 3 + k, p.W = ow + k - 1;
        p.kd = k, p.kh = k, p.kw = k, p.sd = k == 2 ? 2 : 1, p.sh = k == 3 ? 2 : 1;
        p.compute_output();
        REQUIRE(p.OW == ow);
        CAPTURE(describe(p));
        check_conv3d<T>(p, g, worst);
      }
  MESSAGE("largest unpadded-input error ", worst);
}

TEST_CASE_TEMPLATE("Conv3d cpu fast paths: stride, dilation, padding larger than the kernel reach", T, float, double) {
  Generator g(11);
  double worst = 0;
  struct Case {
    index_t k, s, p, d;
  };
  for (const Case c : {Case{3, 2, 1, 1}, Case{3, 1, 2, 2}, Case{2, 2, 0, 1}, Case{1, 2, 0, 1}, Case{3, 3, 1, 1},
                       Case{4, 2, 3, 1}, Case{1, 1, 3, 1}, Case{3, 2, 2, 2}, Case{5, 3, 2, 1}}) {
    for (index_t W : {5, 33, 70}) {
      Conv3dProblem p;
      p.N = 2, p.C = 5, p.K = 9, p.D = 5, p.H = 6, p.W = W;
      p.kd = c.k, p.kh = c.k, p.kw = c.k, p.sd = c.s, p.sh = c.s, p.sw = c.s;
      p.pd = c.p, p.ph = c.p, p.pw = c.p, p.dd = c.d, p.dh = c.d, p.dw = c.d;
      p.compute_output();
      if (!p.valid_output()) continue;
      CAPTURE(describe(p));
      check_conv3d<T>(p, g, worst);
    }
  }
  MESSAGE("largest stride/dilation error ", worst);
}

TEST_CASE_TEMPLATE("Conv3d cpu fast paths: long D (a task's run of od reuses the planes it has copied)", T, float,
                   double) {
  // Tasks are runs of od once there are more than 16 (n, od) pairs per row block: D 37-60 makes runs of 3-4,
  // whose plane ring wraps around; strides, dilations and transposed convolutions included.
  Generator g(13);
  double worst = 0;
  struct Case {
    index_t k, s, p, d;
  };
  for (const Case c : {Case{3, 1, 1, 1}, Case{3, 2, 1, 1}, Case{3, 1, 2, 2}, Case{2, 2, 0, 1}, Case{1, 1, 0, 1}}) {
    Conv3dProblem p;
    p.N = 1, p.C = 3, p.K = 5, p.D = c.s == 2 ? 60 : 37, p.H = 5, p.W = 21;
    p.kd = c.k, p.kh = c.k, p.kw = c.k, p.sd = c.s, p.sh = c.s, p.sw = c.s;
    p.pd = c.p, p.ph = c.p, p.pw = c.p, p.dd = c.d, p.dh = c.d, p.dw = c.d;
    p.compute_output();
    CAPTURE(describe(p));
    check_conv3d<T>(p, g, worst);
    ConvTranspose3dProblem q;
    q.N = 1, q.C = 4, q.K = 3, q.D = 31, q.H = 4, q.W = 9;
    q.kd = q.kh = q.kw = c.k, q.sd = q.sh = q.sw = c.s, q.pd = q.ph = q.pw = c.p / 2, q.dd = q.dh = q.dw = c.d;
    q.compute_output();
    CAPTURE(describe(q.adjoint()));
    check_conv_transpose3d<T>(q, g, worst);
  }
  MESSAGE("largest long-D error ", worst);
}

TEST_CASE_TEMPLATE("ConvTranspose3d cpu fast paths agree with the generic kernels", T, float, double) {
  Rng r{Generator(4242)};
  double worst = 0;
  int tested = 0;
  for (int trial = 0; tested < 60 && trial < 1000; ++trial) {
    ConvTranspose3dProblem p;
    const index_t channels[] = {1, 2, 3, 4, 5, 8, 9, 16};
    p.N = r.pick(1, 2), p.C = channels[r.pick(0, 7)], p.K = channels[trial % 8];
    p.kd = r.pick(1, 3), p.kh = r.pick(1, 3), p.kw = r.pick(1, 4);
    p.sd = r.pick(1, 2), p.sh = r.pick(1, 3), p.sw = r.pick(1, 3);
    p.dd = r.pick(1, 2), p.dh = r.pick(1, 2), p.dw = r.pick(1, 2);
    p.pd = r.pick(0, 1), p.ph = r.pick(0, 2), p.pw = r.pick(0, 2);
    // output_padding < max(stride, dilation), as PyTorch requires
    p.opd = r.pick(0, std::max(p.sd, p.dd) - 1), p.oph = r.pick(0, std::max(p.sh, p.dh) - 1),
    p.opw = r.pick(0, std::max(p.sw, p.dw) - 1);
    p.D = r.pick(1, 5), p.H = r.pick(1, 6), p.W = trial % 4 == 0 ? r.pick(20, 60) : r.pick(1, 20);
    p.compute_output();
    if (!p.valid_output()) continue;
    ++tested;
    CAPTURE(describe(p.adjoint()));
    check_conv_transpose3d<T>(p, r.g, worst);
  }
  CHECK(tested == 60);
  MESSAGE("largest transposed fast-path error ", worst);
}

TEST_CASE("Conv3d cpu fast paths give bit-identical results for 1 and 2 threads") {
  Generator g(5);
  Conv3dProblem p;
  p.N = 2, p.C = 6, p.K = 13, p.D = 5, p.H = 9, p.W = 37;
  p.kd = 3, p.kh = 3, p.kw = 3, p.sd = 1, p.sh = 2, p.sw = 2, p.pd = 1, p.ph = 1, p.pw = 1;
  p.compute_output();
  const auto x = random_vector<float>(p.input_numel(), g), w = random_vector<float>(p.weight_numel(), g),
             dy = random_vector<float>(p.output_numel(), g);
  const int threads = get_num_threads();
  std::vector<float> y1(static_cast<std::size_t>(p.output_numel())), y2(y1.size());
  std::vector<float> dx1(static_cast<std::size_t>(p.input_numel())), dx2(dx1.size());
  set_num_threads(1);
  backend::conv3d_forward(cpu{}, p, x.data(), w.data(), static_cast<const float*>(nullptr), y1.data());
  backend::conv3d_backward_data(cpu{}, p, dy.data(), w.data(), dx1.data());
  set_num_threads(2);
  backend::conv3d_forward(cpu{}, p, x.data(), w.data(), static_cast<const float*>(nullptr), y2.data());
  backend::conv3d_backward_data(cpu{}, p, dy.data(), w.data(), dx2.data());
  set_num_threads(threads);
  CHECK(y1 == y2);
  CHECK(dx1 == dx2);
}
