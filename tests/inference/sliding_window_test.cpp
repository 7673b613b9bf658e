// Sliding-window inference against a line-by-line re-implementation of MONAI's sliding_window_inference
// (tests/reference/sliding_window_ref.py), its invariances (batching, memory limit, mirror TTA of an equivariant
// network, blending of identical predictions) and bad inputs; post-processing into label maps.
#include <mmnet/inference/postprocess.hpp>
#include <mmnet/inference/sliding_window.hpp>
#include <mmnet/layers/conv3d.hpp>
#include <mmnet/layers/softmax.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using inference::BlendMode;
using inference::SlidingWindowInfo;
using inference::SlidingWindowOptions;

namespace {

// The fixture's toy network: a 3x3x3 Conv3d (padding 1) plus (k + 1) * (pos . (z, y, x)) in window coordinates.
template <class T>
struct ToyNet {
  std::shared_ptr<nn::Conv3d<T, Backend>> conv;
  std::vector<double> pos{0, 0, 0};
  index_t calls = 0;

  ToyNet(const HostArray& weight, const HostArray& bias, std::vector<double> pos_, index_t kernel = 3)
      : pos(std::move(pos_)) {
    const index_t K = weight.shape[0], C = weight.shape[1];
    conv = std::make_shared<nn::Conv3d<T, Backend>>(nn::Conv3dOptions(C, K, kernel).padding(kernel / 2));
    conv->weight.value.assign(weight.data);
    conv->bias.value.assign(bias.data);
  }
  Tensor<T, Backend> operator()(const Tensor<T, Backend>& x) {
    ++calls;
    auto y = conv->forward(x);
    if (pos[0] == 0 && pos[1] == 0 && pos[2] == 0) return y;
    auto v = y.to_vector();
    const index_t N = y.size(0), K = y.size(1), D = y.size(2), H = y.size(3), W = y.size(4);
    std::size_t i = 0;
    for (index_t n = 0; n < N; ++n)
      for (index_t k = 0; k < K; ++k)
        for (index_t z = 0; z < D; ++z)
          for (index_t yy = 0; yy < H; ++yy)
            for (index_t xx = 0; xx < W; ++xx)
              v[i++] += static_cast<T>(static_cast<double>(k + 1) *
                                       (pos[0] * static_cast<double>(z) + pos[1] * static_cast<double>(yy) +
                                        pos[2] * static_cast<double>(xx)));
    return Tensor<T, Backend>::from_vector(y.shape(), v);
  }
};

template <class T>
inference::Network<T, Backend> as_network(std::shared_ptr<ToyNet<T>> net) {
  return [net](const Tensor<T, Backend>& x) { return (*net)(x); };
}

template <class T>
std::shared_ptr<ToyNet<T>> fixture_net(const Fixture& fx, bool symmetric = false) {
  const auto& pos = fx.array("net/pos").data;
  return std::make_shared<ToyNet<T>>(fx.array(symmetric ? "net/symmetric_weight" : "net/weight"), fx.array("net/bias"),
                                     symmetric ? std::vector<double>{0, 0, 0} : pos);
}

SlidingWindowOptions fixture_options(const Fixture& fx, const std::string& p) {
  const auto& ov = fx.array(p + "overlap").data;
  const auto& sg = fx.array(p + "sigma_scale").data;
  SlidingWindowOptions o(triple(fx.array(p + "roi")));
  o.overlap({ov[0], ov[1], ov[2]})
      .mode(fx.scalar(p + "gaussian") != 0 ? BlendMode::gaussian : BlendMode::constant)
      .sigma_scale({sg[0], sg[1], sg[2]})
      .sw_batch_size(static_cast<index_t>(fx.scalar(p + "sw_batch_size")))
      .padding_value(fx.scalar(p + "padding_value"));
  std::vector<int> mirror;
  const auto& m = fx.array(p + "mirror").data;
  for (int a = 0; a < 3; ++a)
    if (m[static_cast<std::size_t>(a)] != 0) mirror.push_back(a);
  return o.mirror_axes(mirror);
}

template <class T>
Tensor<T, cpu> host_tensor(const HostArray& a) {
  return Tensor<T, cpu>::from_vector(Shape(a.shape), a.data);
}

// Tensor<T, cpu> -> the test backend, so check_close (typed on the test backend) can compare it.
template <class T>
Tensor<T, Backend> on_test_backend(const Tensor<T, cpu>& t) {
  return Tensor<T, Backend>::from_vector(t.shape(), t.to_vector());
}

template <class T>
Tensor<T, cpu> run(const Tensor<T, cpu>& x, const inference::Network<T, Backend>& net, const SlidingWindowOptions& o,
                   SlidingWindowInfo* info = nullptr) {
  return inference::sliding_window_inference<Backend>(x, net, o, info);
}

}  // namespace

TEST_CASE_TEMPLATE("sliding_window_inference matches the MONAI reference", T, float, double) {
  Fixture fx("sliding_window");
  const auto cases = case_names(fx);
  REQUIRE(cases.size() >= 12);
  for (const auto& name : cases) {
    const std::string p = name + "/";
    INFO(name);
    const auto x = host_tensor<T>(fx.array(p + "input"));
    const auto o = fixture_options(fx, p);
    auto net = fixture_net<T>(fx);
    SlidingWindowInfo info;
    const auto y = run<T>(x, as_network(net), o, &info);
    check_close(on_test_backend(y), fx.array(p + "output"), tol_output<T>(), "sliding window " + name);

    // Window positions (exact) and the importance map.
    const auto plan = inference::plan_windows({x.size(2), x.size(3), x.size(4)}, o);
    const auto& starts = fx.array(p + "starts");
    REQUIRE(static_cast<std::size_t>(starts.shape[0]) == plan.starts.size());
    for (std::size_t i = 0; i < plan.starts.size(); ++i)
      for (std::size_t a = 0; a < 3; ++a)
        CHECK(static_cast<double>(plan.starts[i][a]) == starts.data[i * 3 + a]);
    const auto w = inference::importance_map(plan.roi, o.mode(), o.sigma_scale());
    const auto w_t = Tensor<double, Backend>::from_vector(Shape{plan.roi[0], plan.roi[1], plan.roi[2]}, w);
    check_close(w_t, fx.array(p + "importance"), tol_output<double>(), "importance map " + name);

    // Calls: one per batch of windows, times the mirror combinations.
    const index_t windows = static_cast<index_t>(plan.starts.size());
    const index_t total = x.size(0) * windows;
    const index_t batches = (total + o.sw_batch_size() - 1) / o.sw_batch_size();
    CHECK(info.windows == windows);
    CHECK(info.out_channels == 3);
    CHECK(info.network_calls == batches * (index_t(1) << o.mirror_axes().size()));
    CHECK(net->calls == info.network_calls);
  }
}

TEST_CASE("sliding window: image smaller than the roi, one window, overlap 0 and roi 1 are in the reference") {
  Fixture fx("sliding_window");
  // case5: padding on D and W; case6: roi == image; case4: overlap 0; case11: roi 1 (interval 1).
  const auto plan5 = inference::plan_windows({3, 11, 4}, fixture_options(fx, "case5/"));
  CHECK(plan5.padded_size == inference::Index3{6, 11, 7});
  CHECK(plan5.pad_before == inference::Index3{1, 0, 1});
  const auto plan6 = inference::plan_windows({5, 6, 7}, fixture_options(fx, "case6/"));
  CHECK(plan6.starts.size() == 1);
  CHECK(plan6.scan_interval == inference::Index3{5, 6, 7});
  const auto plan4 = inference::plan_windows({9, 11, 13}, fixture_options(fx, "case4/"));
  CHECK(plan4.scan_interval == inference::Index3{4, 5, 6});
  const auto plan11 = inference::plan_windows({2, 2, 2}, fixture_options(fx, "case11/"));
  CHECK(plan11.scan_interval == inference::Index3{1, 1, 1});
  CHECK(plan11.starts.size() == 8);
}

TEST_CASE_TEMPLATE("sliding window: sw_batch_size and the memory limit do not change the result", T, float, double) {
  Fixture fx("sliding_window");
  const auto x = host_tensor<T>(fx.array("case2/input"));
  auto o = fixture_options(fx, "case2/");
  auto net = fixture_net<T>(fx);
  const auto y1 = run<T>(x, as_network(net), SlidingWindowOptions(o).sw_batch_size(1)).to_vector();
  const auto y3 = run<T>(x, as_network(net), SlidingWindowOptions(o).sw_batch_size(3)).to_vector();
  const auto y64 = run<T>(x, as_network(net), SlidingWindowOptions(o).sw_batch_size(64)).to_vector();
  CHECK(y1 == y3);  // bit-identical: each window's prediction and the summation order do not depend on batching
  CHECK(y1 == y64);

  // A budget for the accumulators plus exactly two windows: batches of 2 even though sw_batch_size is 5.
  SlidingWindowInfo info;
  run<T>(x, as_network(net), SlidingWindowOptions(o).sw_batch_size(5), &info);
  const std::size_t fixed = static_cast<std::size_t>(1 * 3 * 9 * 11 * 13 + 9 * 11 * 13 + 5 * 4 * 7) * sizeof(double);
  const std::size_t per_window = static_cast<std::size_t>((2 + 3) * 5 * 4 * 7) * sizeof(T) * 2;
  CHECK(info.bytes == fixed + 5 * per_window);
  SlidingWindowInfo limited;
  const auto y2 = run<T>(x, as_network(net), SlidingWindowOptions(o).sw_batch_size(5).memory_limit(fixed + 2 * per_window + 7),
                         &limited)
                      .to_vector();
  CHECK(limited.batch_size == 2);
  CHECK(limited.bytes <= fixed + 2 * per_window + 7);
  CHECK(limited.network_calls == 1 + (45 - 1 + 1) / 2);  // one window first (to learn K), then pairs
  CHECK(y2 == y1);
  check_throws_naming<value_error>([&] { run<T>(x, as_network(net), SlidingWindowOptions(o).memory_limit(fixed)); },
                                   {"mmnet::inference::sliding_window_inference", "memory_limit",
                                    "at least " + std::to_string(fixed + per_window), std::to_string(fixed)});
}

TEST_CASE_TEMPLATE("sliding window: mirror TTA of a flip-equivariant network equals no TTA", T, float, double) {
  Fixture fx("sliding_window");
  const auto x = host_tensor<T>(fx.array("case9/input"));
  auto net = fixture_net<T>(fx, /*symmetric=*/true);
  auto o = fixture_options(fx, "case9/");
  const auto plain = run<T>(x, as_network(net), SlidingWindowOptions(o).mirror_axes({}));
  for (const auto& axes : std::vector<std::vector<int>>{{0}, {2, 1}, {0, 1, 2}}) {
    SlidingWindowInfo info;
    const auto tta = run<T>(x, as_network(net), SlidingWindowOptions(o).mirror_axes(axes), &info);
    check_close(on_test_backend(tta), host(on_test_backend(plain)), tol_output<T>(), "equivariant mirror TTA");
    CHECK(info.network_calls == ((info.windows + 1) / 2) * (index_t(1) << axes.size()));
  }
  // The non-equivariant toy network does change under TTA (so the test above is not vacuous).
  auto net2 = fixture_net<T>(fx);
  const auto a = run<T>(x, as_network(net2), SlidingWindowOptions(o).mirror_axes({})).to_vector();
  const auto b = run<T>(x, as_network(net2), SlidingWindowOptions(o).mirror_axes({0, 2})).to_vector();
  double diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(static_cast<double>(a[i] - b[i])));
  CHECK(diff > 1e-2);
}

TEST_CASE_TEMPLATE("sliding window: identical window predictions blend to themselves in both modes", T, float, double) {
  // A pointwise (1x1x1) network predicts the same value for a voxel from every window, so any weighted mean of
  // the windows, constant or Gaussian, at any overlap, equals the network on the whole image.
  Generator g(5);
  std::vector<double> wv(3 * 2), bv(3);
  for (auto& v : wv) v = g.normal();
  for (auto& v : bv) v = g.normal();
  const HostArray weight{DType::f64, {3, 2, 1, 1, 1}, wv}, bias{DType::f64, {3}, bv};
  auto net = std::make_shared<ToyNet<T>>(weight, bias, std::vector<double>{0, 0, 0}, 1);
  const auto xb = randn<T>({1, 2, 7, 10, 5}, 3);
  const auto x = Tensor<T, cpu>::from_vector(xb.shape(), xb.to_vector());
  const auto whole = host((*net)(xb));
  for (auto mode : {BlendMode::constant, BlendMode::gaussian})
    for (double ov : {0.0, 0.5, 0.75}) {
      const auto y = run<T>(x, as_network(net), SlidingWindowOptions({3, 4, 2}).mode(mode).overlap(ov).sw_batch_size(4));
      check_close(on_test_backend(y), whole, tol_output<T>(), std::string("pointwise net, ") + to_string(mode));
    }
}

TEST_CASE("sliding window on a data::Volume keeps the geometry and equals the tensor call") {
  Fixture fx("sliding_window");
  const auto& in = fx.array("case7/input");
  data::Volume v(in.shape[1], in.shape[2], in.shape[3], in.shape[4], {2.5, 0.8, 0.7});
  for (std::size_t i = 0; i < v.data.size(); ++i) v.data[i] = static_cast<float>(in.data[i]);
  const auto o = fixture_options(fx, "case7/");
  auto net = fixture_net<float>(fx);
  const auto out = inference::sliding_window_inference<Backend, float>(v, as_network(net), o);
  CHECK(out.channels == 3);
  CHECK(out.depth == v.depth);
  CHECK(out.width == v.width);
  CHECK(out.spacing == v.spacing);
  const auto y = run<float>(Tensor<float, cpu>::from_vector(Shape{1, v.channels, v.depth, v.height, v.width}, v.data),
                            as_network(net), o)
                     .to_vector();
  CHECK(out.data == std::vector<float>(y.begin(), y.end()));
  // And a double network on the float volume matches the reference.
  auto netd = fixture_net<double>(fx);
  const auto outd = inference::sliding_window_inference<Backend, double>(v, as_network(netd), o);
  const auto yd = Tensor<float, Backend>::from_vector(Shape{1, 3, v.depth, v.height, v.width}, outd.data);
  check_close(yd, fx.array("case7/output"), tol_output<float>(), "volume case7");
}

TEST_CASE("sliding window rejects bad options, images and network outputs") {
  Fixture fx("sliding_window");
  const auto x = host_tensor<double>(fx.array("case0/input"));
  auto net = fixture_net<double>(fx);
  const auto good = fixture_options(fx, "case0/");
  const std::string comp = "mmnet::inference::sliding_window_inference";
  check_throws_naming<value_error>([&] { run<double>(x, as_network(net), SlidingWindowOptions({0, 4, 4})); },
                                   {comp, "roi_size", "all >= 1", "(0, 4, 4)"});
  check_throws_naming<value_error>([&] { run<double>(x, as_network(net), SlidingWindowOptions({4, -1, 4})); },
                                   {comp, "roi_size", "(4, -1, 4)"});
  check_throws_naming<value_error>([&] { run<double>(x, as_network(net), SlidingWindowOptions(4).overlap(1.0)); },
                                   {comp, "overlap", "in [0, 1)", "got 1"});
  check_throws_naming<value_error>(
      [&] { run<double>(x, as_network(net), SlidingWindowOptions(4).overlap({0.25, -0.1, 0.25})); },
      {comp, "overlap along axis 1", "in [0, 1)", "-0.1"});
  check_throws_naming<value_error>([&] { run<double>(x, as_network(net), SlidingWindowOptions(4).sw_batch_size(0)); },
                                   {comp, "sw_batch_size", ">= 1", "got 0"});
  check_throws_naming<value_error>(
      [&] { run<double>(x, as_network(net), SlidingWindowOptions(4).mode(BlendMode::gaussian).sigma_scale(0.0)); },
      {comp, "sigma_scale", "> 0", "got 0"});
  check_throws_naming<value_error>([&] { run<double>(x, as_network(net), SlidingWindowOptions(4).mirror_axes({3})); },
                                   {comp, "mirror axis", "got 3"});
  check_throws_naming<value_error>([&] { run<double>(x, as_network(net), SlidingWindowOptions(4).mirror_axes({1, 1})); },
                                   {comp, "mirror axes", "at most once"});
  // Image: rank and emptiness.
  check_throws_naming<shape_error>(
      [&] { run<double>(Tensor<double, cpu>(Shape{2, 9, 11, 13}), as_network(net), good); },
      {comp, "rank", "expected 5", "got 4"});
  check_throws_naming<shape_error>(
      [&] { run<double>(Tensor<double, cpu>(Shape{1, 2, 0, 11, 13}), as_network(net), good); },
      {comp, "image", "(1, 2, 0, 11, 13)"});
  check_throws_naming<value_error>([&] { run<double>(x, inference::Network<double, Backend>(), good); },
                                   {comp, "network", "a callable"});
  // Network outputs of the wrong spatial size, batch, rank, or a channel count that changes between calls.
  auto shrink = [](const Tensor<double, Backend>& in) {
    return Tensor<double, Backend>(Shape{in.size(0), 3, in.size(2) - 1, in.size(3), in.size(4)});
  };
  check_throws_naming<shape_error>([&] { run<double>(x, shrink, good); },
                                   {comp, "network output shape", "expected (1, K >= 1, 4, 5, 6)", "got (1, 3, 3, 5, 6)",
                                    "network input shape (1, 2, 4, 5, 6)"});
  auto one = [](const Tensor<double, Backend>& in) {
    return Tensor<double, Backend>(Shape{1, 3, in.size(2), in.size(3), in.size(4)});
  };
  check_throws_naming<shape_error>([&] { run<double>(x, one, SlidingWindowOptions(good).sw_batch_size(3)); },
                                   {comp, "network output shape", "expected (3, K >= 1, 4, 5, 6)", "got (1, 3, 4, 5, 6)"});
  auto flat = [](const Tensor<double, Backend>& in) { return Tensor<double, Backend>(Shape{in.size(0), 3, 120}); };
  check_throws_naming<shape_error>([&] { run<double>(x, flat, good); }, {comp, "network output shape", "got (1, 3, 120)"});
  int n = 0;
  auto changing = [&n](const Tensor<double, Backend>& in) {
    return Tensor<double, Backend>(Shape{in.size(0), ++n == 1 ? 3 : 2, in.size(2), in.size(3), in.size(4)});
  };
  check_throws_naming<shape_error>([&] { run<double>(x, changing, good); },
                                   {comp, "network output shape", "expected (1, 3, 4, 5, 6)", "got (1, 2, 4, 5, 6)"});
}

// ---- post-processing ---------------------------------------------------------------------------------------

TEST_CASE("to_label_map: threshold (last channel above wins) and argmax (first channel on ties)") {
  using inference::PostprocessOptions;
  // 3 channels x (1 x 2 x 3) voxels.
  const std::vector<double> p = {
      0.1, 0.5, 0.9, 0.6, 0.2, 0.7,   // channel 0
      0.0, 0.6, 0.2, 0.55, 0.9, 0.7,  // channel 1
      0.0, 0.1, 0.4, 0.6, 0.3, 0.7,   // channel 2
  };
  const auto probs = Tensor<double, cpu>::from_vector(Shape{1, 3, 1, 2, 3}, p);
  auto th = inference::to_label_map(probs, PostprocessOptions::threshold(), {3.0, 1.0, 1.0});
  CHECK(th.depth == 1);
  CHECK(th.height == 2);
  CHECK(th.width == 3);
  CHECK(th.spacing == data::Spacing{3.0, 1.0, 1.0});
  CHECK(th.data == std::vector<std::uint8_t>{0, 2, 1, 3, 2, 3});  // 0.5 >= 0.5 is on (MONAI's AsDiscrete)
  auto per = inference::to_label_map(probs, PostprocessOptions::threshold().thresholds({0.05, 0.95, 0.35}).labels({2, 1, 4}));
  CHECK(per.data == std::vector<std::uint8_t>{2, 2, 4, 4, 2, 4});
  auto am = inference::to_label_map(probs.reshape(Shape{3, 1, 2, 3}), PostprocessOptions::argmax());
  CHECK(am.data == std::vector<std::uint8_t>{0, 1, 0, 0, 1, 0});  // ties (0.6/0.6, 0.7 x3) go to the first channel
  auto am2 = inference::to_label_map(probs, PostprocessOptions::argmax().labels({0, 7, 9}));
  CHECK(am2.data == std::vector<std::uint8_t>{0, 7, 0, 0, 7, 0});
  // The component-filter hook runs on the finished map.
  int called = 0;
  auto f = inference::to_label_map(probs, PostprocessOptions::argmax().component_filter([&](data::LabelMap& m) {
    ++called;
    m.at(0, 0, 0) = 5;
  }));
  CHECK(called == 1);
  CHECK(f.at(0, 0, 0) == 5);
  // A Volume (float) gives the same as the tensor.
  data::Volume v(3, 1, 2, 3, {1.0, 2.0, 3.0});
  for (std::size_t i = 0; i < p.size(); ++i) v.data[i] = static_cast<float>(p[i]);
  auto tv = inference::to_label_map(v, PostprocessOptions::threshold().thresholds({0.05, 0.95, 0.35}).labels({2, 1, 4}));
  CHECK(tv.data == per.data);
  CHECK(tv.spacing == v.spacing);
}

TEST_CASE("to_label_map rejects bad options and outputs") {
  using inference::PostprocessOptions;
  const std::string comp = "mmnet::inference::to_label_map";
  const auto probs = Tensor<double, cpu>::from_vector(Shape{1, 2, 1, 1, 2}, std::vector<double>{0.1, 0.2, 0.3, 0.4});
  check_throws_naming<value_error>(
      [&] { inference::to_label_map(probs, PostprocessOptions::threshold().thresholds({0.5, 0.5, 0.5})); },
      {comp, "thresholds", "expected 2", "got 3"});
  check_throws_naming<value_error>([&] { inference::to_label_map(probs, PostprocessOptions::argmax().labels({1})); },
                                   {comp, "labels", "expected 2", "got 1"});
  check_throws_naming<value_error>([&] { inference::to_label_map(probs, PostprocessOptions::argmax().labels({0, 300})); },
                                   {comp, "label", "[0, 255]", "got 300"});
  check_throws_naming<shape_error>(
      [&] { inference::to_label_map(Tensor<double, cpu>(Shape{2, 2, 1, 1, 2}), PostprocessOptions::argmax()); },
      {comp, "(1, K, D, H, W)", "got (2, 2, 1, 1, 2)"});
  const auto nan = Tensor<double, cpu>::from_vector(Shape{2, 1, 1, 2}, std::vector<double>{0.1, NAN, 0.3, 0.4});
  check_throws_naming<value_error>([&] { inference::to_label_map(nan, PostprocessOptions::threshold()); },
                                   {comp, "finite", "voxel 1"});
}

TEST_CASE("keep_largest_component: per label, 6- vs 26-connectivity, other labels untouched") {
  // label 1: a 2x2x2 block and a separate single voxel; label 2: a 3-voxel bar and a diagonal neighbour voxel.
  data::LabelMap map(4, 5, 6);
  for (index_t z = 0; z < 2; ++z)
    for (index_t y = 0; y < 2; ++y)
      for (index_t x = 0; x < 2; ++x) map.at(z, y, x) = 1;
  map.at(3, 4, 0) = 1;
  for (index_t x = 2; x < 5; ++x) map.at(3, 2, x) = 2;
  map.at(2, 1, 5) = 2;  // touches (3, 2, 4) only through a corner: joined under 26-, separate under 6-connectivity
  const data::LabelMap before = map;

  auto with26 = map;
  inference::keep_largest_component(26)(with26);
  auto with6 = map;
  inference::keep_largest_component(6)(with6);
  CHECK(with26.at(3, 4, 0) == 0);  // the lone label-1 voxel goes under both
  CHECK(with6.at(3, 4, 0) == 0);
  CHECK(with26.at(2, 1, 5) == 2);  // kept: part of the largest label-2 component under 26-connectivity
  CHECK(with6.at(2, 1, 5) == 0);   // removed: its own component under 6-connectivity
  index_t changed26 = 0, changed6 = 0;
  for (std::size_t i = 0; i < before.data.size(); ++i) {
    changed26 += with26.data[i] != before.data[i];
    changed6 += with6.data[i] != before.data[i];
    CHECK((with6.data[i] == before.data[i] || with6.data[i] == 0));
  }
  CHECK(changed26 == 1);
  CHECK(changed6 == 2);

  // as a post-processing option: argmax over 3 channels, then the filter
  std::vector<double> v(3 * 4 * 5 * 6, 0.0);
  for (index_t i = 0; i < 4 * 5 * 6; ++i) v[static_cast<std::size_t>(before.data[static_cast<std::size_t>(i)] * 120 + i)] = 1.0;
  const auto probs = Tensor<double, cpu>::from_vector({3, 4, 5, 6}, v);
  const auto labels =
      inference::to_label_map(probs, inference::PostprocessOptions::argmax().component_filter(inference::keep_largest_component(6)));
  CHECK(labels.data == with6.data);
}

// ---- nnU-Net v1 placement, Gaussian and mirror TTA (the reference re-implements nnU-Net's
// SegmentationNetwork._internal_predict_3D_3Dconv_tiled; see tests/reference/sliding_window_ref.py) ----

namespace {

// nnU-Net's network for the fixture: a 3x3x3 Conv3d (padding 1) followed by the softmax nnU-Net applies
// (inference_apply_nonlin), so the mirror TTA averages probabilities as nnU-Net does.
template <class T>
struct SoftmaxNet {
  std::shared_ptr<nn::Conv3d<T, Backend>> conv;
  std::shared_ptr<nn::Softmax<T, Backend>> softmax = std::make_shared<nn::Softmax<T, Backend>>();
  index_t calls = 0;

  explicit SoftmaxNet(const Fixture& fx) {
    const auto& weight = fx.array("nnnet/weight");
    conv = std::make_shared<nn::Conv3d<T, Backend>>(nn::Conv3dOptions(weight.shape[1], weight.shape[0], 3).padding(1));
    conv->weight.value.assign(weight.data);
    conv->bias.value.assign(fx.array("nnnet/bias").data);
  }
  Tensor<T, Backend> operator()(const Tensor<T, Backend>& x) {
    ++calls;
    return softmax->forward(conv->forward(x));
  }
};

std::vector<index_t> as_indices(const HostArray& a) {
  std::vector<index_t> v;
  for (double d : a.data) v.push_back(static_cast<index_t>(d));
  return v;
}

}  // namespace

TEST_CASE("SlidingWindowOptions::nnunet sets nnU-Net v1's placement, Gaussian, overlap and mirroring; MONAI is the default") {
  const auto o = SlidingWindowOptions::nnunet({16, 24, 32});
  CHECK(o.placement() == inference::WindowPlacement::nnunet);
  CHECK(o.gaussian_style() == inference::GaussianStyle::nnunet);
  CHECK(o.mode() == BlendMode::gaussian);
  CHECK(o.overlap() == inference::Double3{0.5, 0.5, 0.5});
  CHECK(o.sigma_scale() == inference::Double3{0.125, 0.125, 0.125});
  CHECK(o.mirror_axes() == std::vector<int>{0, 1, 2});
  CHECK(o.padding_value() == 0.0);
  const SlidingWindowOptions d(4);
  CHECK(d.placement() == inference::WindowPlacement::monai);
  CHECK(d.gaussian_style() == inference::GaussianStyle::monai);
  CHECK(std::string(to_string(inference::WindowPlacement::nnunet)) == "nnunet");
  CHECK(std::string(to_string(inference::GaussianStyle::monai)) == "monai");
}

TEST_CASE("nnU-Net window placement matches _compute_steps_for_sliding_window") {
  using inference::Index3;
  // The spec's examples, written out.
  const auto p193 = inference::plan_windows({193, 20, 40}, SlidingWindowOptions::nnunet({128, 16, 32}));
  CHECK(p193.axis_starts[0] == std::vector<index_t>{0, 32, 65});  // 32.5 rounds half to even
  CHECK(p193.scan_interval[0] == 33);
  const auto p = inference::plan_windows({20, 30, 40}, SlidingWindowOptions::nnunet({16, 24, 32}));
  CHECK(p.axis_starts[0] == std::vector<index_t>{0, 4});
  CHECK(p.axis_starts[1] == std::vector<index_t>{0, 6});
  CHECK(p.axis_starts[2] == std::vector<index_t>{0, 8});
  CHECK(p.starts.size() == 8);
  CHECK(p.starts[1] == Index3{0, 0, 8});  // D-major, W fastest
  CHECK(p.starts[7] == Index3{4, 6, 8});
  // size == patch: one window at 0; size < patch: padded to the patch (floor(d / 2) before), one window.
  const auto eq = inference::plan_windows({16, 10, 7}, SlidingWindowOptions::nnunet({16, 24, 32}));
  CHECK(eq.axis_starts[0] == std::vector<index_t>{0});
  CHECK(eq.scan_interval[0] == 16);
  CHECK(eq.padded_size == Index3{16, 24, 32});
  CHECK(eq.pad_before == Index3{0, 7, 12});
  CHECK(eq.starts.size() == 1);
  // Every reference case, each along a different axis.
  Fixture fx("sliding_window");
  int n = 0;
  for (int i = 0; fx.has("placement/" + std::to_string(i) + "/starts"); ++i, ++n) {
    const std::string q = "placement/" + std::to_string(i) + "/";
    const index_t size = static_cast<index_t>(fx.scalar(q + "size")), patch = static_cast<index_t>(fx.scalar(q + "patch"));
    const int a = i % 3;
    Index3 img{3, 4, 5}, roi{2, 3, 4};
    img[static_cast<std::size_t>(a)] = size;
    roi[static_cast<std::size_t>(a)] = patch;
    const auto plan = inference::plan_windows(
        img, SlidingWindowOptions({roi[0], roi[1], roi[2]}).placement(inference::WindowPlacement::nnunet).overlap(fx.scalar(q + "overlap")));
    INFO(q << " size " << size << " patch " << patch);
    CHECK(plan.axis_starts[static_cast<std::size_t>(a)] == as_indices(fx.array(q + "starts")));
  }
  CHECK(n >= 20);
}

TEST_CASE("nnU-Net Gaussian importance map equals _get_gaussian's float32 values") {
  Fixture fx("sliding_window");
  using inference::GaussianStyle;
  int n = 0;
  for (int i = 0; fx.has("gaussian/" + std::to_string(i) + "/map"); ++i, ++n) {
    const std::string q = "gaussian/" + std::to_string(i) + "/";
    const auto pa = as_indices(fx.array(q + "patch"));
    const inference::Index3 roi{pa[0], pa[1], pa[2]};
    const double s = fx.scalar(q + "sigma_scale");
    const auto w = inference::importance_map(roi, BlendMode::gaussian, {s, s, s}, GaussianStyle::nnunet);
    check_close(Tensor<double, Backend>::from_vector(Shape{roi[0], roi[1], roi[2]}, w), fx.array(q + "map"),
                tol_output<double>(), "nnU-Net Gaussian " + q);
    for (double v : w) CHECK(v == static_cast<double>(static_cast<float>(v)));  // float32 values
  }
  CHECK(n >= 5);
  // MAML's 128^3 tile, sampled every (9, 7, 5): centre 1 at 64, corner exp(-8)^3 (e^-24), all float32.
  const auto w = inference::importance_map({128, 128, 128}, BlendMode::gaussian, {0.125, 0.125, 0.125}, GaussianStyle::nnunet);
  const auto at = [&](index_t z, index_t y, index_t x) { return w[static_cast<std::size_t>((z * 128 + y) * 128 + x)]; };
  CHECK(at(64, 64, 64) == 1.0);
  CHECK(at(0, 0, 0) == static_cast<double>(static_cast<float>(std::exp(-8.0) * std::exp(-8.0) * std::exp(-8.0))));
  std::vector<double> sub;
  for (index_t z = 0; z < 128; z += 9)
    for (index_t y = 0; y < 128; y += 7)
      for (index_t x = 0; x < 128; x += 5) sub.push_back(at(z, y, x));
  const auto& ref = fx.array("gaussian128/sampled");
  check_close(Tensor<double, Backend>::from_vector(Shape(ref.shape), sub), ref, tol_output<double>(), "nnU-Net Gaussian 128^3");
  // The MONAI style is unchanged by the new parameter's default and differs (centre, clamp) from nnU-Net's.
  CHECK(inference::importance_map({4, 5, 6}, BlendMode::gaussian) ==
        inference::importance_map({4, 5, 6}, BlendMode::gaussian, {0.125, 0.125, 0.125}, GaussianStyle::monai));
  CHECK(inference::importance_map({4, 5, 6}, BlendMode::gaussian, {0.125, 0.125, 0.125}, GaussianStyle::nnunet) !=
        inference::importance_map({4, 5, 6}, BlendMode::gaussian));
  // Constant blending ignores the style.
  CHECK(inference::importance_map({2, 3, 4}, BlendMode::constant, {0.125, 0.125, 0.125}, GaussianStyle::nnunet) ==
        std::vector<double>(24, 1.0));
}

TEST_CASE_TEMPLATE("sliding_window_inference with SlidingWindowOptions::nnunet matches nnU-Net v1's tiled prediction", T,
                   float, double) {
  Fixture fx("sliding_window");
  const auto cases = case_names(fx, "image");
  REQUIRE(cases.size() >= 4);
  for (const auto& name : cases) {
    const std::string p = name + "/";
    INFO(name);
    const auto x = host_tensor<T>(fx.array(p + "image"));
    std::vector<int> mirror;
    const auto& m = fx.array(p + "mirror").data;
    for (int a = 0; a < 3; ++a)
      if (m[static_cast<std::size_t>(a)] != 0) mirror.push_back(a);
    const auto o = SlidingWindowOptions::nnunet(triple(fx.array(p + "patch")))
                       .mirror_axes(mirror)
                       .sw_batch_size(static_cast<index_t>(fx.scalar(p + "sw_batch_size")));
    auto net = std::make_shared<SoftmaxNet<T>>(fx);
    SlidingWindowInfo info;
    const auto y = run<T>(x, [net](const Tensor<T, Backend>& t) { return (*net)(t); }, o, &info);
    check_close(on_test_backend(y), fx.array(p + "probs"), tol_output<T>(), "nnU-Net sliding window " + name);

    const auto plan = inference::plan_windows({x.size(2), x.size(3), x.size(4)}, o);
    CHECK(plan.axis_starts[0] == as_indices(fx.array(p + "starts_d")));
    CHECK(plan.axis_starts[1] == as_indices(fx.array(p + "starts_h")));
    CHECK(plan.axis_starts[2] == as_indices(fx.array(p + "starts_w")));
    const auto w = inference::importance_map(plan.roi, o.mode(), o.sigma_scale(), o.gaussian_style());
    check_close(Tensor<double, Backend>::from_vector(Shape{plan.roi[0], plan.roi[1], plan.roi[2]}, w),
                fx.array(p + "importance"), tol_output<double>(), "importance map " + name);
    const index_t total = x.size(0) * static_cast<index_t>(plan.starts.size());
    CHECK(info.network_calls == (total + o.sw_batch_size() - 1) / o.sw_batch_size() * (index_t(1) << mirror.size()));
    CHECK(net->calls == info.network_calls);
    // Probabilities in, probabilities out: every voxel's blended softmax sums to 1.
    const auto v = y.to_vector();
    const index_t K = y.size(1), vox = y.size(2) * y.size(3) * y.size(4);
    double worst = 0;
    for (index_t n = 0; n < y.size(0); ++n)
      for (index_t i = 0; i < vox; ++i) {
        double s = 0;
        for (index_t k = 0; k < K; ++k) s += static_cast<double>(v[static_cast<std::size_t>((n * K + k) * vox + i)]);
        worst = std::max(worst, std::abs(s - 1.0));
      }
    CHECK(worst < (std::is_same<T, float>::value ? 1e-5 : 1e-12));
  }
}
