// tests/support/mmnet_test.hpp: what every mmnet test uses.
//
// * mmnet::test::Backend: the backend this test executable was built for (cpu, or cuda through Thrust on
//   OpenMP or on a GPU). Test files are backend-agnostic and are compiled once per backend.
// * Fixture: an HDF5 file written by a PyTorch script in tests/reference/ (never edited by hand).
// * check_close: error = max|a - b| / max|b| over the tensor (absolute when the reference is all zeros),
//   recorded per precision so the run ends with the largest error seen.
// * gradcheck_module / gradcheck_fn: dlib-style central differences of sum(y * r) in double.
// * Small helpers many test files share: fixture case names, host copies, test inputs (uniform, binary,
//   tie-free), exception-message checks.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include <mmnet/core/expanding_array.hpp>
#include <mmnet/core/module.hpp>
#include <mmnet/core/ops.hpp>
#include <mmnet/core/random.hpp>
#include <mmnet/io/hdf5.hpp>

namespace mmnet::test {

#if defined(MMNET_TEST_BACKEND_CUDA)
using Backend = mmnet::cuda;
#else
using Backend = mmnet::cpu;
#endif

template <class T>
using TestTensor = mmnet::Tensor<T, Backend>;

// Central-difference checks of WHOLE networks (thousands of forward passes) run where forward passes are cheap: the
// cpu suite, and the nvcc suite on a GPU. The cuda_omp suite runs the cuda backend's generic Thrust kernels on
// OpenMP, about 10x slower, so it skips them (doctest::skip(!whole_network_gradchecks)): there the same networks
// are held to the PyTorch fixtures, gradients included, and every layer keeps its own check on every backend.
#if defined(MMNET_TEST_THRUST_OMP)
inline constexpr bool whole_network_gradchecks = false;
#else
inline constexpr bool whole_network_gradchecks = true;
#endif

// The tolerances: double 1e-10 relative; float 1e-4 on outputs and 1e-3 on gradients.
template <class T>
constexpr double tol_output() { return std::is_same_v<T, double> ? 1e-10 : 1e-4; }
template <class T>
constexpr double tol_grad() { return std::is_same_v<T, double> ? 1e-10 : 1e-3; }

inline std::string fixture_dir() {
  if (const char* d = std::getenv("MMNET_FIXTURE_DIR")) return d;
#if defined(MMNET_FIXTURE_DIR)
  return MMNET_FIXTURE_DIR;
#else
  return "fixtures";
#endif
}

// ---- scratch files ------------------------------------------------------------------------------------------
// A fresh directory `group/name` under one directory per process (the cpu, cuda_omp and cuda_nvcc executables may
// run at once), removed when the process ends.
struct ScratchRoot {
  std::filesystem::path dir = std::filesystem::path(fixture_dir()) /
                              (std::string("scratch_") + Backend::name + "_" + std::to_string(::getpid()));
  ~ScratchRoot() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};
inline std::string scratch_dir(const std::string& group, const std::string& name) {
  static ScratchRoot root;
  const std::filesystem::path d = root.dir / group / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}
inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
// The names in dir, sorted.
inline std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class Fixture {
 public:
  explicit Fixture(const std::string& name) : path_(fixture_dir() + "/" + name + ".h5"), sd_(io::read_all(path_)) {}
  bool has(const std::string& key) const { return sd_.contains(key); }
  const HostArray& array(const std::string& key) const {
    const HostArray* a = sd_.find(key);
    if (!a) throw error("fixture " + path_ + " has no dataset '" + key + "'");
    return *a;
  }
  template <class T>
  mmnet::Tensor<T, Backend> tensor(const std::string& key) const {
    const HostArray& a = array(key);
    return mmnet::Tensor<T, Backend>::from_vector(Shape(a.shape), a.data);
  }
  double scalar(const std::string& key) const { return array(key).data.at(0); }
  const StateDict& all() const { return sd_; }
  // The entries under "prefix/" with the prefix removed (e.g. a module's state dict).
  StateDict group(const std::string& prefix) const {
    StateDict out;
    const std::string p = prefix + "/";
    for (auto& e : sd_)
      if (e.first.compare(0, p.size(), p) == 0) out.insert(e.first.substr(p.size()), e.second);
    return out;
  }

 private:
  std::string path_;
  StateDict sd_;
};

// Largest error seen per precision, printed when the test executable ends.
class ErrorStats {
 public:
  static ErrorStats& get() {
    static ErrorStats s;
    return s;
  }
  void record(bool is_double, double err, const std::string& what) {
    auto& m = is_double ? dbl_ : flt_;
    if (err > m.first) m = {err, what};
  }
  ~ErrorStats() {
    std::printf("[mmnet] backend %s: largest reference error, double: %.3e (%s); float: %.3e (%s)\n", Backend::name,
                dbl_.first, dbl_.second.c_str(), flt_.first, flt_.second.c_str());
  }

 private:
  std::pair<double, std::string> dbl_{0.0, "-"}, flt_{0.0, "-"};
};

inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  if (std::isnan(num)) return INFINITY;
  return den > 0 ? num / den : num;
}

template <class T>
void check_close(const mmnet::Tensor<T, Backend>& actual, const HostArray& expected, double tol,
                 const std::string& what) {
  INFO(what);
  REQUIRE_MESSAGE(actual.defined(), what << ": tensor is empty");
  REQUIRE_MESSAGE(actual.shape().to_vector() == expected.shape,
                  what << ": shape " << actual.shape().str() << " vs reference " << expected.shape_str());
  const auto v = actual.to_vector();
  const double err = relative_error(std::vector<double>(v.begin(), v.end()), expected.data);
  ErrorStats::get().record(std::is_same_v<T, double>, err, what);
  CHECK_MESSAGE(err <= tol, what << ": relative error " << err << " > tolerance " << tol);
}

template <class T>
void check_close_scalar(T actual, double expected, double tol, const std::string& what) {
  const double err = std::abs(static_cast<double>(actual) - expected) / std::max(std::abs(expected), 1e-300);
  ErrorStats::get().record(std::is_same_v<T, double>, err, what);
  CHECK_MESSAGE(err <= tol, what << ": " << actual << " vs " << expected << ", relative error " << err);
}

// Random tensor with N(0,1) values from a fixed seed.
template <class T>
mmnet::Tensor<T, Backend> randn(const Shape& s, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(g.normal());
  return mmnet::Tensor<T, Backend>::from_vector(s, v);
}

// Central-difference check of a scalar-valued function's gradient. value(): L at the current point;
// perturb(i, h): moves element i by h. analytic[i] is dL/d element i.
inline void central_difference_check(const std::string& what, index_t n, const std::vector<double>& analytic,
                                     const std::function<double()>& value,
                                     const std::function<void(index_t, double)>& perturb, double h = 1e-6,
                                     double rtol = 1e-5, double atol = 1e-6) {
  REQUIRE(static_cast<index_t>(analytic.size()) == n);
  double worst = 0;
  index_t bad = 0;
  for (index_t i = 0; i < n; ++i) {
    perturb(i, h);
    const double lp = value();
    perturb(i, -2 * h);
    const double lm = value();
    perturb(i, h);
    const double num = (lp - lm) / (2 * h);
    const double diff = std::abs(num - analytic[static_cast<std::size_t>(i)]);
    const double lim = atol + rtol * std::max(std::abs(num), std::abs(analytic[static_cast<std::size_t>(i)]));
    worst = std::max(worst, diff / lim);
    if (!(diff <= lim)) {
      if (bad < 5)
        MESSAGE(what << "[" << i << "]: numeric " << num << " analytic " << analytic[static_cast<std::size_t>(i)]);
      ++bad;
    }
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << n << " gradient elements disagree with central differences");
}

// Host-side element update of a tensor (slow, for tests only).
template <class T>
void perturb_element(mmnet::Tensor<T, Backend>& t, index_t i, double h) {
  auto v = t.to_vector();
  v[static_cast<std::size_t>(i)] += static_cast<T>(h);
  t.assign(v);
}

// dlib's test_layer in double: L = sum(forward(x) * r) for a fixed random r. Checks dL/dx returned by
// backward and dL/dparam accumulated into every parameter gradient. Gradients are pre-filled with random
// values, so a layer that assigns instead of adding fails.
template <class M>
void gradcheck_module(M& m, const mmnet::Tensor<double, Backend>& x0, std::uint64_t seed = 7, double rtol = 1e-5,
                      double atol = 1e-6) {
  auto x = x0.clone();
  auto y = m.forward(x);
  const auto r = randn<double>(y.shape(), seed);
  std::vector<std::vector<double>> prefill;
  Generator g(seed + 1);
  for (auto& np : m.named_parameters()) {
    std::vector<double> v(static_cast<std::size_t>(np.second->grad.numel()));
    for (auto& e : v) e = g.normal();
    np.second->grad.assign(v);
    prefill.push_back(v);
  }
  const auto dx = m.backward(r).to_vector();
  auto value = [&] { return mmnet::dot(m.forward(x), r); };
  central_difference_check("dL/dinput", x.numel(), dx, value, [&](index_t i, double h) { perturb_element(x, i, h); },
                           1e-6, rtol, atol);
  std::size_t k = 0;
  for (auto& np : m.named_parameters()) {
    auto g_acc = np.second->grad.to_vector();
    for (std::size_t i = 0; i < g_acc.size(); ++i) g_acc[i] -= prefill[k][i];
    ++k;
    auto& p = np.second->value;
    central_difference_check("dL/d" + np.first, p.numel(), g_acc, value,
                             [&](index_t i, double h) { perturb_element(p, i, h); }, 1e-6, rtol, atol);
  }
}

// ---- Shared helpers ------------------------------------------------------------------------------------------

// Runs f, which must throw E with a message containing every one of parts (component, expected, actual, ...).
template <class E, class F>
void check_throws_naming(F&& f, std::initializer_list<std::string> parts) {
  bool thrown = false;
  try {
    f();
  } catch (const E& e) {
    thrown = true;
    const std::string msg = e.what();
    for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "'" << msg << "' lacks '" << p << "'");
  }
  CHECK_MESSAGE(thrown, "no exception of the expected type");
}

// The group prefix of numbered fixture case i: "case<i>/".
inline std::string case_name(int i) { return "case" + std::to_string(i) + "/"; }

// The case names of a fixture: every group with a dataset named `dataset` ("input"), in file order, without the
// trailing "/<dataset>".
inline std::vector<std::string> case_names(const Fixture& fx, const std::string& dataset = "input") {
  std::vector<std::string> names;
  const std::string suffix = "/" + dataset;
  for (const auto& e : fx.all())
    if (e.first.size() > suffix.size() && e.first.compare(e.first.size() - suffix.size(), suffix.size(), suffix) == 0)
      names.push_back(e.first.substr(0, e.first.size() - suffix.size()));
  return names;
}

// A fixture's 3-vector option (kernel, stride, padding, ...).
inline ExpandingArray3 triple(const HostArray& a) {
  return {static_cast<index_t>(a.data.at(0)), static_cast<index_t>(a.data.at(1)), static_cast<index_t>(a.data.at(2))};
}

// A host copy of t in double (times scale), to compare tensors with check_close.
template <class T>
HostArray host(const mmnet::Tensor<T, Backend>& t, double scale = 1.0) {
  const auto v = t.to_vector();
  HostArray a{DType::f64, t.shape().to_vector(), {}};
  for (T e : v) a.data.push_back(scale * static_cast<double>(e));
  return a;
}

// a with every element times s.
inline HostArray scaled(HostArray a, double s) {
  for (auto& e : a.data) e *= s;
  return a;
}

// Uniform values in [lo, hi) from a fixed seed.
template <class T>
mmnet::Tensor<T, Backend> uniform_tensor(const Shape& s, double lo, double hi, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(g.uniform(lo, hi));
  return mmnet::Tensor<T, Backend>::from_vector(s, v);
}

// 1 with probability rate, else 0, from a fixed seed (masks, binary targets).
template <class T>
mmnet::Tensor<T, Backend> binary_tensor(const Shape& s, double rate, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = g.uniform() < rate ? T(1) : T(0);
  return mmnet::Tensor<T, Backend>::from_vector(s, v);
}

// Distinct values offset + step * i (i = 0..n-1) in random order: spaced far wider than a central-difference step,
// so no max/argmax tie changes within a gradcheck step (max pools are differentiable at x).
inline mmnet::Tensor<double, Backend> distinct(const Shape& s, std::uint64_t seed, double step = 0.01,
                                               double offset = -1.0) {
  const index_t n = s.numel();
  std::vector<double> v(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = step * static_cast<double>(i) + offset;
  Generator g(seed);
  for (index_t i = n - 1; i > 0; --i) std::swap(v[static_cast<std::size_t>(i)], v[g.integer(static_cast<std::uint64_t>(i + 1))]);
  return mmnet::Tensor<double, Backend>::from_vector(s, v);
}

}  // namespace mmnet::test
