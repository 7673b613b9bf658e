// Upsample: PyTorch fixtures (tests/reference/upsample_ref.py; each case stores its own options) for trilinear
// with align_corners true/false and nearest, sizes and scale factors, up and down; the HMRNet ramp check;
// central-difference checks; bad options and inputs.
#include <algorithm>
#include <cmath>
#include <utility>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include <mmnet/layers/upsample.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

nn::UpsampleOptions fixture_options(const Fixture& fx, const std::string& n) {
  nn::UpsampleOptions o;
  o.mode(fx.scalar(n + "/mode") == 1 ? nn::UpsampleMode::trilinear : nn::UpsampleMode::nearest)
      .align_corners(fx.scalar(n + "/align_corners") != 0)
      .recompute_scale_factor(fx.scalar(n + "/recompute_scale_factor") != 0);
  if (fx.has(n + "/size")) {
    const auto& s = fx.array(n + "/size").data;
    o.size({static_cast<index_t>(s[0]), static_cast<index_t>(s[1]), static_cast<index_t>(s[2])});
  } else {
    const auto& s = fx.array(n + "/scale_factor").data;
    o.scale_factor({s[0], s[1], s[2]});
  }
  return o;
}
}  // namespace

TEST_CASE_TEMPLATE("Upsample matches torch.nn.functional.interpolate: outputs and grad_input", T, float, double) {
  Fixture fx("upsample");
  const auto names = case_names(fx);
  REQUIRE(names.size() >= 38);
  for (const auto& n : names) {
    INFO("case " << n);
    nn::Upsample<T, Backend> up(fixture_options(fx, n));
    check_close(up.forward(fx.tensor<T>(n + "/input")), fx.array(n + "/output"), tol_output<T>(), n + " output");
    check_close(up.backward(fx.tensor<T>(n + "/grad_output")), fx.array(n + "/grad_input"), tol_grad<T>(),
                n + " grad_input");
  }
}

TEST_CASE_TEMPLATE("Upsample: a second forward of another shape rebuilds its tables; forward(x, size) overrides",
                   T, float, double) {
  Fixture fx("upsample");
  nn::Upsample<T, Backend> up(fixture_options(fx, "tri_ac_size_odd"));
  check_close(up.forward(fx.tensor<T>("tri_ac_size_odd/input")), fx.array("tri_ac_size_odd/output"), tol_output<T>(),
              "first call");
  // Same layer, explicit size of another case with the same mode and align_corners.
  check_close(up.forward(fx.tensor<T>("tri_ac_size_down4/input"), {4, 6, 8}), fx.array("tri_ac_size_down4/output"),
              tol_output<T>(), "forward(x, size)");
  check_close(up.backward(fx.tensor<T>("tri_ac_size_down4/grad_output")), fx.array("tri_ac_size_down4/grad_input"),
              tol_grad<T>(), "backward after forward(x, size)");
  check_close(up.forward(fx.tensor<T>("tri_ac_size_odd/input")), fx.array("tri_ac_size_odd/output"), tol_output<T>(),
              "back to the first shape");
  // A scale-factor layer given an explicit size samples by the sizes (align_corners false): as the size case.
  nn::Upsample<T, Backend> by_scale(nn::UpsampleOptions().scale_factor(3.0).mode(nn::UpsampleMode::trilinear));
  check_close(by_scale.forward(fx.tensor<T>("tri_size_odd/input"), {9, 13, 11}), fx.array("tri_size_odd/output"),
              tol_output<T>(), "scale layer, explicit size");
  check_close(nn::interpolate(fx.tensor<T>("near_s2/input"), fixture_options(fx, "near_s2")), fx.array("near_s2/output"),
              tol_output<T>(), "nn::interpolate");
}

TEST_CASE_TEMPLATE("Upsample (align_corners) of a linear ramp reproduces the ramp at src = o (in-1)/(out-1)", T,
                   float, double) {
  // HMRNet's unit check: the 2x3x4 ramp 1 + 2d + 3h + 5w, scales 8 and (8, 8, 4).
  std::vector<T> v;
  for (int d = 0; d < 2; ++d)
    for (int h = 0; h < 3; ++h)
      for (int w = 0; w < 4; ++w) v.push_back(static_cast<T>(1 + 2 * d + 3 * h + 5 * w));
  const auto x = Tensor<T, Backend>::from_vector(Shape{1, 1, 2, 3, 4}, v);
  for (const auto& s : {nn::UpsampleOptions::scales{8, 8, 8}, nn::UpsampleOptions::scales{8, 8, 4}}) {
    nn::Upsample<T, Backend> up(nn::UpsampleOptions().scale_factor(s).mode(nn::UpsampleMode::trilinear).align_corners(true));
    const auto y = up.forward(x);
    const index_t od = 2 * static_cast<index_t>(s[0]), oh = 3 * static_cast<index_t>(s[1]), ow = 4 * static_cast<index_t>(s[2]);
    REQUIRE(y.shape() == Shape{1, 1, od, oh, ow});
    std::vector<double> expect;
    for (index_t d = 0; d < od; ++d)
      for (index_t h = 0; h < oh; ++h)
        for (index_t w = 0; w < ow; ++w)
          expect.push_back(1 + 2.0 * d * 1 / (od - 1) + 3.0 * h * 2 / (oh - 1) + 5.0 * w * 3 / (ow - 1));
    check_close(y, HostArray{DType::f64, {1, 1, od, oh, ow}, expect}, std::is_same_v<T, double> ? 1e-12 : 1e-6,
                "ramp x" + std::to_string(static_cast<int>(s[2])));
  }
}

TEST_CASE("Upsample passes the central-difference gradient check (double)") {
  using O = nn::UpsampleOptions;
  const auto tri = nn::UpsampleMode::trilinear;
  const std::vector<O> options{
      O().scale_factor(2.0).mode(tri).align_corners(true),
      O().scale_factor({2, 2, 1}).mode(tri).align_corners(true),
      O().size({3, 5, 2}).mode(tri).align_corners(true),
      O().size({1, 7, 4}).mode(tri).align_corners(true),
      O().scale_factor(2.0).mode(tri),
      O().scale_factor({1.7, 0.6, 2.5}).mode(tri),
      O().size({2, 7, 5}).mode(tri),
      O().size({1, 2, 9}).mode(tri),
      O().scale_factor(2.0),
      O().scale_factor({1.7, 0.6, 2.5}),
      O().size({2, 7, 5}),
  };
  for (const auto& o : options) {
    nn::Upsample<double, Backend> up(o);
    gradcheck_module(up, randn<double>({2, 1, 3, 4, 5}, 11));
  }
  nn::Upsample<double, Backend> size1(O().size({4, 1, 3}).mode(tri));
  gradcheck_module(size1, randn<double>({1, 2, 1, 3, 2}, 12));
}

TEST_CASE_TEMPLATE("Upsample output sizes follow PyTorch (floor(in * scale), explicit sizes)", T, float, double) {
  nn::Upsample<T, Backend> up(nn::UpsampleOptions().scale_factor({2.5, 0.3, 1.0}));
  CHECK(up.output_size(Shape{1, 1, 5, 7, 6}) == ExpandingArray3(12, 2, 6));
  CHECK(up.forward(randn<T>({2, 3, 5, 7, 6}, 1)).shape() == Shape{2, 3, 12, 2, 6});
  nn::Upsample<T, Backend> sized(nn::UpsampleOptions().size({9, 13, 11}).mode(nn::UpsampleMode::trilinear));
  CHECK(sized.forward(randn<T>({1, 2, 5, 7, 6}, 1)).shape() == Shape{1, 2, 9, 13, 11});
  // The same size: a plain copy in both modes.
  for (auto m : {nn::UpsampleMode::nearest, nn::UpsampleMode::trilinear}) {
    nn::Upsample<T, Backend> same(nn::UpsampleOptions().size({3, 4, 5}).mode(m));
    const auto x = randn<T>({2, 2, 3, 4, 5}, 2);
    CHECK(same.forward(x).to_vector() == x.to_vector());
    CHECK(same.backward(x).to_vector() == x.to_vector());
  }
}

TEST_CASE("Upsample rejects bad options and inputs") {
  using Layer = nn::Upsample<double, Backend>;
  using O = nn::UpsampleOptions;
  CHECK_THROWS_AS(Layer{O()}, value_error);                                       // neither size nor scale
  CHECK_THROWS_AS(Layer(O().size(4).scale_factor(2.0)), value_error);             // both
  CHECK_THROWS_AS(Layer(O().size({4, 0, 4})), value_error);
  CHECK_THROWS_AS(Layer(O().scale_factor({2, -1, 2})), value_error);
  CHECK_THROWS_AS(Layer(O().scale_factor(0.0)), value_error);
  CHECK_THROWS_AS(Layer(O().scale_factor(2.0).align_corners(true)), value_error);  // nearest + align_corners
  Layer up(O().scale_factor(2.0).mode(nn::UpsampleMode::trilinear));
  CHECK_THROWS_AS(up.backward(randn<double>({1, 1, 2, 2, 2}, 1)), value_error);    // before forward
  CHECK_THROWS_AS(up.forward(randn<double>({1, 4, 4, 4}, 1)), shape_error);         // rank 4
  CHECK_THROWS_AS(up.forward(Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(up.forward(Tensor<double, Backend>(Shape{1, 1, 0, 2, 2})), shape_error);
  up.forward(randn<double>({1, 2, 2, 3, 4}, 1));
  CHECK_THROWS_AS(up.backward(randn<double>({1, 2, 4, 6, 7}, 1)), shape_error);     // grad_output shape
  Layer down(O().scale_factor(0.2));
  CHECK_THROWS_AS(down.forward(randn<double>({1, 1, 4, 8, 8}, 1)), shape_error);    // floor(4 * 0.2) = 0
  CHECK_THROWS_AS(up.forward(randn<double>({1, 1, 2, 2, 2}, 1), {2, 0, 2}), shape_error);
  try {
    down.forward(randn<double>({1, 1, 4, 8, 8}, 1));
  } catch (const shape_error& e) {
    CHECK(std::string(e.what()).find("mmnet::nn::Upsample") != std::string::npos);
    CHECK(std::string(e.what()).find("output size") != std::string::npos);
  }
}

// The trilinear kernels the layer calls (on cpu, the fast path of backend/cpu/upsample.hpp) against the generic
// kernels of backend/common/interpolate.hpp, called explicitly (<double, Backend>, which the cpu overloads cannot
// take), on random problems: up and down, both align_corners, scale factors and sizes, unchanged axes, size-1
// axes, odd widths.
TEST_CASE("Upsample trilinear kernels: the backend's path matches the generic kernels (double, random shapes)") {
  using D = Tensor<double, Backend>;
  struct Case { index_t planes, in[3], out[3]; bool align; double sf[3]; };
  const Case cases[] = {
      {2, {3, 4, 5}, {6, 8, 10}, false, {2, 2, 2}},   {3, {5, 3, 7}, {9, 3, 13}, true, {0, 0, 0}},
      {1, {1, 1, 1}, {2, 3, 5}, false, {0, 0, 0}},    {2, {7, 6, 9}, {3, 4, 5}, false, {0, 0, 0}},
      {4, {4, 5, 6}, {8, 10, 6}, false, {2, 2, 1}},   {2, {6, 5, 3}, {11, 1, 17}, true, {0, 0, 0}},
      {1, {2, 9, 33}, {4, 18, 66}, true, {2, 2, 2}},  {3, {5, 4, 3}, {7, 9, 8}, false, {1.5, 2.3, 2.9}}};
  double worst = 0;
  std::uint64_t seed = 300;
  for (const Case& k : cases) {
    INFO("planes " << k.planes << " in " << k.in[0] << "x" << k.in[1] << "x" << k.in[2] << " out " << k.out[0] << "x"
                   << k.out[1] << "x" << k.out[2] << " align " << k.align);
    const backend::InterpPlan<Backend> plan(k.in, k.out, true, k.align, k.sf);
    const backend::Interp3dProblem p = plan.problem(k.planes);
    const D x = randn<double>({k.planes * p.in_plane()}, seed++);
    const D dy = randn<double>({k.planes * p.out_plane()}, seed++);
    D y_f({k.planes * p.out_plane()}), y_g({k.planes * p.out_plane()});
    D dx_f({k.planes * p.in_plane()}), dx_g({k.planes * p.in_plane()});
    backend::trilinear_forward(Backend{}, p, x.data(), y_f.data());
    backend::trilinear_forward<double, Backend>(Backend{}, p, x.data(), y_g.data());
    backend::trilinear_backward(Backend{}, p, dy.data(), dx_f.data());
    backend::trilinear_backward<double, Backend>(Backend{}, p, dy.data(), dx_g.data());
    for (const auto& pair : {std::make_pair(y_f.to_vector(), y_g.to_vector()),
                             std::make_pair(dx_f.to_vector(), dx_g.to_vector())}) {
      double scale = 1, d = 0;
      for (double v : pair.second) scale = std::max(scale, std::abs(v));
      for (std::size_t i = 0; i < pair.first.size(); ++i) d = std::max(d, std::abs(pair.first[i] - pair.second[i]));
      CHECK(d / scale <= 1e-14);
      worst = std::max(worst, d / scale);
    }
#if defined(_OPENMP)
    // Bit-identical for any thread count: the backend's path again on 1 and on 3 threads.
    const int threads = omp_get_max_threads();
    for (const int t : {1, 3}) {
      omp_set_num_threads(t);
      D y_t({k.planes * p.out_plane()}), dx_t({k.planes * p.in_plane()});
      backend::trilinear_forward(Backend{}, p, x.data(), y_t.data());
      backend::trilinear_backward(Backend{}, p, dy.data(), dx_t.data());
      CHECK(y_t.to_vector() == y_f.to_vector());
      CHECK(dx_t.to_vector() == dx_f.to_vector());
    }
    omp_set_num_threads(threads);
#endif
  }
  MESSAGE("Upsample trilinear fast path vs generic kernels: largest relative difference " << worst);
}
