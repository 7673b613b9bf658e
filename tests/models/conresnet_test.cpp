// ConResNet (models/conresnet/*.hpp) against the PyTorch re-implementation of the official module in
// tests/reference/conresnet_ref.py, spec conresnet.md §8 on config tiny (C_in 2, K 3, w 4, G 2, 16 x 24 x 32, N 2):
// 1 parameter counts (tiny, BraTS, BraTS baseline), the 100 names in order, the 123-key official state dict with
// the 23 unused keys skipped; 2 inputs and targets (X_res, Y_res first-slice rule, region targets); 3 forward taps;
// 4 loss terms in code, paper (sigmoid) and λ = 0 mode; 5 gradients of all 100 parameters, X and X_res; 6 three Adam
// steps (paper mode; code mode within the spec's chaos bounds); 8 Dropout3d in train mode with the exported mask,
// a WS gradcheck, the sliding window (3 x 2 x 2 tiles), the baseline ablation; plus gradient accumulation, a
// central-difference check of a small whole network (cpu only), training helpers and bad input.
//
// Tolerances, spec §8.7, per tensor e = ||a - ref||_inf. float64: forward and loss e <= 1e-10 max(1, ||ref||),
// gradients e <= 1e-8 ||ref||, parameters after 3 Adam steps e <= 1e-10 (paper mode), code mode e <= 1e-7 after
// step 1 and 2e-5 after step 3. float32 (fp32-cast weights and inputs vs the float64 reference): forward
// e <= 1e-4 ||ref||, loss relative 1e-5, gradients e <= 1e-3 ||ref|| and parameters after 3 steps e <= 2.7e-4, in
// paper mode; code mode only as the isolated loss on the reference logits. Sliding window: 1e-10 / 1e-5.
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <mmnet/conresnet.hpp>
#include <mmnet/optim/adam.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
using Net = ConResNet<T, Backend>;
template <class T>
using Loss = ConResNetLoss<T, Backend>;

const Fixture& fixture() {
  static const Fixture fx("conresnet");
  return fx;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::abs(e));
  return m;
}

// Largest e / S and e / bound per tolerance class and precision, printed when the executable ends.
struct ClassStats {
  struct Worst {
    double rel = 0, ratio = 0;
    std::string what = "-";
  };
  std::map<std::string, Worst> dbl, flt;
  static ClassStats& get() {
    static ClassStats s;
    return s;
  }
  void record(bool is_double, const std::string& cls, double rel, double ratio, const std::string& what) {
    Worst& w = (is_double ? dbl : flt)[cls];
    if (ratio >= w.ratio) w = {rel, ratio, what};
  }
  ~ClassStats() {
    for (auto* m : {&dbl, &flt})
      for (auto& [cls, w] : *m)
        std::printf("[mmnet] conresnet %s %s %-8s largest e/S %.3e, e/bound %.3f (%s)\n", Backend::name,
                    m == &dbl ? "double" : "float ", cls.c_str(), w.rel, w.ratio, w.what.c_str());
  }
};

// e = max|a - ref| <= bound; S = the scale the class measures e against (for the statistics).
template <class T>
void check_abs(const TestTensor<T>& a, const HostArray& ref, double bound, const std::string& what, double S = 1,
               const std::string& cls = "other") {
  INFO(what);
  REQUIRE_MESSAGE(a.defined(), what << ": tensor is undefined");
  REQUIRE_MESSAGE(a.shape().to_vector() == ref.shape, what << ": shape " << a.shape().str() << " vs reference " << ref.shape_str());
  const auto v = a.to_vector();
  double e = 0;
  for (std::size_t i = 0; i < v.size(); ++i) e = std::max(e, std::abs(static_cast<double>(v[i]) - ref.data[i]));
  if (std::isnan(e)) e = INFINITY;
  ErrorStats::get().record(std::is_same_v<T, double>, e / std::max(S, 1e-300), what);
  ClassStats::get().record(std::is_same_v<T, double>, cls, e / std::max(S, 1e-300), bound > 0 ? e / bound : e, what);
  CHECK_MESSAGE(e <= bound, what << ": e = " << e << " > " << bound);
}
// Forward: double 1e-10 max(1, ||ref||), float 1e-4 ||ref||.
template <class T>
void check_forward(const TestTensor<T>& a, const HostArray& ref, const std::string& what) {
  const double r = max_abs(ref.data);
  if constexpr (std::is_same_v<T, double>) check_abs(a, ref, 1e-10 * std::max(1.0, r), what, std::max(1.0, r), "forward");
  else check_abs(a, ref, 1e-4 * r, what, r, "forward");
}
// Gradients: double 1e-8 ||ref||, float 1e-3 ||ref||.
template <class T>
void check_grad(const TestTensor<T>& a, const HostArray& ref, const std::string& what) {
  const double r = max_abs(ref.data);
  check_abs(a, ref, (std::is_same_v<T, double> ? 1e-8 : 1e-3) * r, what, r, "grad");
}
template <class T>
void check_loss_value(double a, double ref, const std::string& what) {
  const double tol = std::is_same_v<T, double> ? 1e-10 * std::max(1.0, std::abs(ref)) : 1e-5 * std::abs(ref);
  const double e = std::abs(a - ref);
  ErrorStats::get().record(std::is_same_v<T, double>, e / std::max(1e-300, std::abs(ref)), what);
  ClassStats::get().record(std::is_same_v<T, double>, "loss", e / std::max(1e-300, std::abs(ref)), e / tol, what);
  CHECK_MESSAGE(e <= tol, what << ": " << a << " vs " << ref << " (e = " << e << ")");
}

template <class T>
Net<T> loaded() {
  Net<T> net(ConResNetOptions::tiny());
  net.load_official_state_dict(fixture().group("official"));
  net.eval();
  return net;
}

template <class T>
std::map<std::string, Parameter<T, Backend>*> by_name(Net<T>& net) {
  std::map<std::string, Parameter<T, Backend>*> m;
  for (auto& np : net.named_parameters()) m[np.first] = np.second;
  return m;
}

ConResNetLossOptions loss_options(const std::string& mode) {
  return ConResNetLossOptions().res_on_logits(mode != "paper").lambda(mode == "lambda0" ? 0.0 : 0.5);
}

}  // namespace

// ---- 1: counts, names, loading -------------------------------------------------------------------------------

TEST_CASE("conresnet: parameter counts, names and order (spec §2.6, §8)") {
  const auto& fx = fixture();
  CHECK(fx.scalar("counts/tiny_used") == 298544);
  CHECK(fx.scalar("counts/brats_used") == 19018732);
  CHECK(fx.scalar("counts/brats_total") == 19441196);
  CHECK(fx.scalar("counts/brats_baseline") == 18783715);
  CHECK(ConResNetOptions::tiny().num_parameters() == 298544);
  CHECK(ConResNetOptions::brats().num_parameters() == 19018732);
  CHECK(ConResNetOptions::brats().context_residual(false).num_parameters() == 18783715);
  Net<float> tiny(ConResNetOptions::tiny());
  CHECK(tiny.num_parameters() == 298544);
  const auto names = tiny.named_parameters();
  CHECK(names.size() == 100);
  // the official keys minus the unused ones, in the official order
  const auto unused = conresnet::unused_official_keys();
  CHECK(unused.size() == 23);
  std::vector<std::string> want;
  for (auto& e : fx.group("official")) {
    bool skip = false;
    for (auto& k : unused) skip = skip || k == e.first;
    if (!skip) want.push_back(e.first);
  }
  REQUIRE(want.size() == 100);
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(names[i].first == want[i]);
  // built BraTS models (allocates 19 M floats each)
  Net<float> brats(ConResNetOptions::brats());
  CHECK(brats.num_parameters() == 19018732);
  CHECK(brats.named_parameters().size() == 100);
  Net<float> base(ConResNetOptions::brats().context_residual(false));
  CHECK(base.num_parameters() == 18783715);
  CHECK(base.num_outputs() == 1);
  Net<float> small(ConResNetOptions::small());
  CHECK(small.num_parameters() == ConResNetOptions::small().num_parameters());
  CHECK(ConResNetOptions::small().in_channels() == 4);
  CHECK(ConResNetOptions::small().width() == 8);
  CHECK(ConResNetOptions::small().groups() == 4);
}

TEST_CASE("conresnet: loading the official 123-key state dict (spec §7.7)") {
  const auto sd = fixture().group("official");
  CHECK(sd.size() == 123);
  Net<double> net(ConResNetOptions::tiny());
  std::vector<std::string> skipped;
  const auto r = net.load_official_state_dict(sd, true, &skipped);
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  CHECK(skipped == conresnet::unused_official_keys());
  CHECK(net.unused_official_keys() == conresnet::unused_official_keys());
  const auto w = net.seg_x4.att->conv_mp_first->weight.value.to_vector();
  CHECK(w == sd.at("seg_x4.0.conv_mp_first.weight").data);
  // plain strict loading sees the 23 unused keys as unexpected
  Net<double> other(ConResNetOptions::tiny());
  CHECK_THROWS_AS(other.load_state_dict(sd), state_dict_error);
}

// ---- 2: inputs and targets -----------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("conresnet: X_res, Y_res (first-slice rule) and region targets (spec §3.1)", T, float, double) {
  const auto& fx = fixture();
  check_forward(conresnet::image_residual(fx.tensor<T>("x")), fx.array("x_res"), "X_res");
  const auto y = conresnet::region_targets(fx.tensor<T>("labels"), conresnet::brats_regions_nnunet());
  check_abs(y, fx.array("y"), 0.0, "region targets [ET, WT, TC]");
  const auto y_res = conresnet::label_residual(y);
  check_abs(y_res, fx.array("y_res"), 0.0, "Y_res");
  // sample 1's balls touch slice 0: its first slice is the label itself, not 0
  const auto v = y_res.to_vector();
  const index_t V = 16 * 24 * 32, S = 24 * 32;
  double first = 0;
  for (index_t i = 0; i < S; ++i) first += static_cast<double>(v[static_cast<std::size_t>((1 * 3 + 1) * V + i)]);
  CHECK(first > 0);
  CHECK(conresnet::brats_regions_nnunet() == std::vector<std::vector<int>>{{3}, {1, 2, 3}, {2, 3}});
  CHECK(conresnet::brats_regions_official() == std::vector<std::vector<int>>{{4}, {1, 2, 4}, {1, 4}});
  // the official BraTS labels {1 necrosis / non-enhancing, 2 edema, 4 enhancing} give the same regions
  auto lab = fx.tensor<T>("labels").to_vector();
  for (auto& l : lab) l = l == T(1) ? T(2) : (l == T(2) ? T(1) : (l == T(3) ? T(4) : l));
  check_abs(conresnet::region_targets(TestTensor<T>::from_vector(Shape(fx.array("labels").shape), lab),
                                      conresnet::brats_regions_official()),
            fx.array("y"), 0.0, "region targets, official BraTS labels");
}

// ---- 3: forward ----------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("conresnet: forward taps and outputs (spec §8.3, eval)", T, float, double) {
  const auto& fx = fixture();
  auto net = loaded<T>();
  const auto x = fx.tensor<T>("x");
  const auto outs = net.forward(x, conresnet::image_residual(x));
  REQUIRE(outs.size() == 4);
  const auto& t = net.taps();
  const std::pair<const char*, const TestTensor<T>*> taps[] = {
      {"x0", &t.x0}, {"s1", &t.s1}, {"s2", &t.s2}, {"s3", &t.s3}, {"layer3", &t.layer3}, {"layer4", &t.layer4},
      {"z", &t.z}, {"r4", &t.r4}, {"resx2_pre", &t.resx2_pre}, {"resx4_pre", &t.resx4_pre}};
  for (auto& [n, v] : taps) check_forward(*v, fx.array(std::string("taps/") + n), n);
  const std::pair<const char*, typename Net<T>::Stage*> stages[] = {
      {"seg_x4", &net.seg_x4}, {"seg_x2", &net.seg_x2}, {"seg_x1", &net.seg_x1}};
  for (auto& [n, s] : stages) {
    const auto& mt = s->att->taps();
    const std::string p = std::string("taps/") + n + "/";
    check_forward(mt.f, fx.array(p + "F"), p + "F");
    check_forward(mt.g, fx.array(p + "G"), p + "G");
    check_forward(mt.r, fx.array(p + "R"), p + "R");
    check_forward(mt.t, fx.array(p + "T"), p + "T");
  }
  const char* names[] = {"seg", "res", "resx2", "resx4"};
  for (int j = 0; j < 4; ++j) check_forward(outs[static_cast<std::size_t>(j)], fx.array(std::string("out/") + names[j]), names[j]);
  // predict() = eval forward's seg, mode restored
  net.train();
  const auto seg = net.predict(x, conresnet::image_residual(x));
  CHECK(net.is_training());
  check_forward(seg, fx.array("out/seg"), "predict");
}

TEST_CASE_TEMPLATE("conresnet: O_seg and O_res of every stage (spec §8.3)", T, float, double) {
  const auto& fx = fixture();
  auto net = loaded<T>();
  const auto x = fx.tensor<T>("x");
  net.forward(x, conresnet::image_residual(x));
  // each stage's outputs, recomputed from the reference inputs of the stage (U(prev) + skip, U(prev O_res))
  const auto& t = net.taps();
  nn::Upsample<T, Backend> up(nn::UpsampleOptions().size({1, 1, 1}).mode(nn::UpsampleMode::trilinear).align_corners(true));
  auto size = [](const TestTensor<T>& a) { return ExpandingArray3(a.size(2), a.size(3), a.size(4)); };
  auto [a4, o4] = net.seg_x4.forward(add(up.forward(fx.tensor<T>("taps/z"), size(t.s3)), fx.tensor<T>("taps/s3")), fx.tensor<T>("taps/r4"));
  check_forward(a4, fx.array("taps/seg_x4/O_seg"), "seg_x4 O_seg");
  check_forward(o4, fx.array("taps/seg_x4/O_res"), "seg_x4 O_res");
  auto [a2, o2] = net.seg_x2.forward(add(up.forward(fx.tensor<T>("taps/seg_x4/O_seg"), size(t.s2)), fx.tensor<T>("taps/s2")),
                                     up.forward(fx.tensor<T>("taps/seg_x4/O_res"), size(t.s2)));
  check_forward(a2, fx.array("taps/seg_x2/O_seg"), "seg_x2 O_seg");
  check_forward(o2, fx.array("taps/seg_x2/O_res"), "seg_x2 O_res");
  auto [a1, o1] = net.seg_x1.forward(add(up.forward(fx.tensor<T>("taps/seg_x2/O_seg"), size(t.s1)), fx.tensor<T>("taps/s1")),
                                     up.forward(fx.tensor<T>("taps/seg_x2/O_res"), size(t.s1)));
  check_forward(a1, fx.array("taps/seg_x1/O_seg"), "seg_x1 O_seg");
  check_forward(o1, fx.array("taps/seg_x1/O_res"), "seg_x1 O_res");
}

TEST_CASE_TEMPLATE("conresnet: baseline ablation (context_residual(false), spec §2.6)", T, float, double) {
  const auto& fx = fixture();
  Net<T> base(ConResNetOptions::tiny().context_residual(false));
  StateDict sd;
  const auto all = fx.group("official");
  const auto params = base.named_parameters();
  CHECK(params.size() == 78);  // 100 less 16 residual-path tensors and 6 head tensors
  for (auto& np : params) sd.insert(np.first, all.at(np.first));
  base.load_state_dict(sd);
  base.eval();
  const auto x = fx.tensor<T>("x");
  const auto outs = base.forward(x, TestTensor<T>());
  REQUIRE(outs.size() == 1);
  check_forward(outs[0], fx.array("baseline/seg"), "baseline seg");
  // backward: one gradient, dX_res undefined; Dice + BCE only
  Loss<T> loss;
  const T l = loss.forward(outs, fx.tensor<T>("y"), TestTensor<T>());
  CHECK(std::isfinite(static_cast<double>(l)));
  CHECK(loss.terms().res == 0);
  const auto d = base.backward(loss.backward());
  CHECK(d.first.shape() == x.shape());
  CHECK(!d.second.defined());
}

// ---- 4, 5: loss and gradients --------------------------------------------------------------------------------

namespace {
template <class T>
void check_loss_and_grads(const std::string& mode, bool grads) {
  const auto& fx = fixture();
  auto net = loaded<T>();
  const auto x = fx.tensor<T>("x");
  const auto x_res = conresnet::image_residual(x);
  const auto y = fx.tensor<T>("y");
  Loss<T> loss(loss_options(mode));
  net.zero_grad();
  const T l = loss.forward(net.forward(x, x_res), y, conresnet::label_residual(y));
  const std::string p = "loss_" + mode + "/";
  const auto& tm = loss.terms();
  check_loss_value<T>(tm.dice, fx.scalar(p + "dice"), p + "dice");
  check_loss_value<T>(tm.bce, fx.scalar(p + "bce"), p + "bce");
  check_loss_value<T>(tm.res, fx.scalar(p + "lb_res"), p + "lb_res");
  check_loss_value<T>(tm.resx2, fx.scalar(p + "lb_resx2"), p + "lb_resx2");
  check_loss_value<T>(tm.resx4, fx.scalar(p + "lb_resx4"), p + "lb_resx4");
  check_loss_value<T>(static_cast<double>(l), fx.scalar(p + "total"), p + "total");
  const char* outs[] = {"res", "resx2", "resx4"};
  for (int j = 0; j < 3; ++j) {
    const auto& ref = fx.array(p + "t/" + outs[j]).data;
    const auto& w = loss.pos_weights(j);
    REQUIRE(w.size() == ref.size());
    for (std::size_t k = 0; k < w.size(); ++k) check_loss_value<double>(w[k], ref[k], p + "t_k " + outs[j]);
  }
  if (!grads) return;
  const auto [dx, dx_res] = net.backward(loss.backward());
  check_grad(dx, fx.array(p + "grad_x"), p + "grad_x");
  check_grad(dx_res, fx.array(p + "grad_x_res"), p + "grad_x_res");
  for (auto& np : net.named_parameters()) check_grad(np.second->grad, fx.array(p + "grad/" + np.first), p + "grad/" + np.first);
}
}  // namespace

TEST_CASE("conresnet: loss and gradients, code mode (spec §8.4-8.5, float64)") { check_loss_and_grads<double>("code", true); }
TEST_CASE("conresnet: loss and gradients, λ = 0 (float64)") { check_loss_and_grads<double>("lambda0", true); }
TEST_CASE_TEMPLATE("conresnet: loss and gradients, paper (sigmoid) mode", T, float, double) {
  check_loss_and_grads<T>("paper", true);
}

// The code-mode loss in float32 as an isolated loss (spec §8.7): the reference logits, each residual logit within
// 1e-4 of a clamp bound moved to 2e-4 from it on its side (so float rounding cannot flip a clamp mask), against the
// float64 loss on the same logits (the float64 loss itself is held to PyTorch above): terms relative 1e-5,
// gradients 1e-3 ||ref||.
TEST_CASE("conresnet: code-mode loss in float32, isolated, logits >= 1e-4 from the clamp bounds (spec §8.7)") {
  const auto& fx = fixture();
  std::vector<TestTensor<double>> od;
  std::vector<TestTensor<float>> of;
  index_t moved = 0;
  for (const char* n : {"seg", "res", "resx2", "resx4"}) {
    auto v = fx.array(std::string("out/") + n).data;
    if (std::string(n) != "seg")
      for (double& e : v)
        for (double b : {1e-3, 0.999})
          if (std::abs(e - b) < 1e-4) {
            e = e < b ? b - 2e-4 : b + 2e-4;
            ++moved;
          }
    const Shape s(fx.array(std::string("out/") + n).shape);
    od.push_back(TestTensor<double>::from_vector(s, v));
    of.push_back(TestTensor<float>::from_vector(s, v));
  }
  CHECK(moved > 0);
  for (const std::string mode : {"code", "lambda0"}) {
    Loss<double> ld(loss_options(mode));
    Loss<float> lf(loss_options(mode));
    const auto yd = fx.tensor<double>("y");
    const auto yf = fx.tensor<float>("y");
    const double l_ref = ld.forward(od, yd, conresnet::label_residual(yd));
    const float l = lf.forward(of, yf, conresnet::label_residual(yf));
    check_loss_value<float>(l, l_ref, mode + " total (float, isolated)");
    check_loss_value<float>(lf.terms().res, ld.terms().res, mode + " lb_res (float, isolated)");
    check_loss_value<float>(lf.terms().resx2, ld.terms().resx2, mode + " lb_resx2 (float, isolated)");
    check_loss_value<float>(lf.terms().resx4, ld.terms().resx4, mode + " lb_resx4 (float, isolated)");
    const auto gd = ld.backward();
    const auto gf = lf.backward();
    for (std::size_t j = 0; j < 4; ++j) {
      const auto v = gd[j].to_vector();
      if (mode == "lambda0" && j >= 2) continue;  // all zero
      check_grad(gf[j], HostArray{DType::f64, gd[j].shape().to_vector(), v}, mode + " dL/dout " + std::to_string(j) + " (float, isolated)");
    }
  }
}

// ---- 6: Adam -------------------------------------------------------------------------------------------------

namespace {
template <class T>
void run_adam(const std::string& mode, const std::function<void(int, Net<T>&)>& after_step) {
  const auto& fx = fixture();
  auto net = loaded<T>();
  const auto x = fx.tensor<T>("x");
  const auto x_res = conresnet::image_residual(x);
  const auto y = fx.tensor<T>("y");
  const auto y_res = conresnet::label_residual(y);
  auto o = conresnet::adam_options();
  optim::Adam<T, Backend> opt(net.parameters(), o.lr(1e-3));
  Loss<T> loss(loss_options(mode));
  for (int t = 0; t < 3; ++t) {
    opt.set_lr(conresnet::poly_lr(1e-3, t, 10));
    opt.zero_grad();
    loss.forward(net.forward(x, x_res), y, y_res);
    net.backward(loss.backward());
    opt.step();
    after_step(t + 1, net);
  }
  // moments after step 3
  if (mode == "paper") {
    const auto params = net.named_parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& st = opt.state(i);
      check_grad(st.exp_avg, fx.array("adam_paper/exp_avg/" + params[i].first), "exp_avg " + params[i].first);
      check_grad(st.exp_avg_sq, fx.array("adam_paper/exp_avg_sq/" + params[i].first), "exp_avg_sq " + params[i].first);
    }
  }
}
}  // namespace

TEST_CASE_TEMPLATE("conresnet: 3 Adam steps, paper (sigmoid) mode (spec §8.6)", T, float, double) {
  const auto& fx = fixture();
  const double bound = std::is_same_v<T, double> ? 1e-10 : 2.7e-4;
  run_adam<T>("paper", [&](int step, Net<T>& net) {
    if (step != 1 && step != 3) return;
    for (auto& np : net.named_parameters())
      check_abs(np.second->value, fx.array("adam_paper/step" + std::to_string(step) + "/" + np.first), bound,
                "Adam paper step " + std::to_string(step) + " " + np.first, 1, "adam");
  });
}

TEST_CASE("conresnet: 3 Adam steps, code mode within the chaos bounds (spec §8.7, float64)") {
  const auto& fx = fixture();
  run_adam<double>("code", [&](int step, Net<double>& net) {
    if (step != 1 && step != 3) return;
    const double bound = step == 1 ? 1e-7 : 2e-5;
    for (auto& np : net.named_parameters())
      check_abs(np.second->value, fx.array("adam_code/step" + std::to_string(step) + "/" + np.first), bound,
                "Adam code step " + std::to_string(step) + " " + np.first, 1, "adam-code");
  });
}

// ---- 8: extras -----------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("conresnet: Dropout3d in train mode with the PyTorch mask (spec §8.8)", T, float, double) {
  const auto& fx = fixture();
  auto net = loaded<T>();
  net.train();
  net.next_dropout_mask(fx.tensor<T>("train/mask"));
  const auto x = fx.tensor<T>("x");
  const auto y = fx.tensor<T>("y");
  Loss<T> loss(loss_options("paper"));
  const auto outs = net.forward(x, conresnet::image_residual(x));
  const char* names[] = {"seg", "res", "resx2", "resx4"};
  for (int j = 0; j < 4; ++j)
    check_forward(outs[static_cast<std::size_t>(j)], fx.array(std::string("train/") + names[j]), std::string("train ") + names[j]);
  loss.forward(outs, y, conresnet::label_residual(y));
  const auto d = net.backward(loss.backward());
  check_grad(d.first, fx.array("train/grad_x"), "train grad_x");
  // without a given mask, train mode draws one: some channel of 2 x 32 is dropped at p = 0.1 with this seed
  net.forward(x, conresnet::image_residual(x));
  CHECK(net.fusionConv.dropout_mask().defined());
  net.eval();
  net.forward(x, conresnet::image_residual(x));
  CHECK(!net.fusionConv.dropout_mask().defined());
}

TEST_CASE_TEMPLATE("conresnet: sliding window, 3 x 2 x 2 tiles (spec §4.4, §8.8)", T, float, double) {
  const auto& fx = fixture();
  CHECK(conresnet::window_stride(16) == 11);
  CHECK(conresnet::window_stride(24) == 16);
  CHECK(conresnet::window_stride(32) == 22);
  CHECK(conresnet::window_stride(80) == 54);
  CHECK(conresnet::window_stride(160) == 107);
  CHECK(conresnet::window_starts(30, 16) == std::vector<index_t>{0, 11, 14});
  CHECK(conresnet::window_starts(40, 24) == std::vector<index_t>{0, 16});
  CHECK(conresnet::window_starts(50, 32) == std::vector<index_t>{0, 18});
  CHECK(conresnet::window_starts(155, 80) == std::vector<index_t>{0, 54, 75});
  CHECK(conresnet::window_starts(240, 160) == std::vector<index_t>{0, 80});
  CHECK(conresnet::window_starts(16, 16) == std::vector<index_t>{0});
  auto net = loaded<T>();
  net.train();  // predict() turns Dropout off itself
  const auto prob = conresnet::sliding_window_probabilities(net, fx.tensor<T>("sw/x"), {16, 24, 32});
  CHECK(net.is_training());
  const auto& ref = fx.array("sw/prob");
  check_abs(prob, ref, std::is_same_v<T, double> ? 1e-10 : 1e-5, "sliding window probabilities", 1, "window");
}

TEST_CASE("conresnet: sliding window pads short axes at the end") {
  Generator g(5);
  Net<double> net(ConResNetOptions::tiny(), g);
  net.eval();
  const auto x = randn<double>(Shape{1, 2, 12, 24, 40}, 9);  // D 12 < 16: padded to 16 at the end
  const auto prob = conresnet::sliding_window_probabilities(net, x, {16, 24, 32});
  CHECK(prob.shape() == Shape{1, 3, 12, 24, 40});
  // the single D tile starts at 0: its first 12 slices equal a direct prediction of the zero-padded tile
  std::vector<double> xp(static_cast<std::size_t>(2 * 16 * 24 * 32), 0.0), rp(xp.size(), 0.0);
  const auto hx = x.to_vector();
  const auto hr = conresnet::image_residual(x).to_vector();
  for (index_t c = 0; c < 2; ++c)
    for (index_t d = 0; d < 12; ++d)
      for (index_t h = 0; h < 24; ++h)
        for (index_t w = 0; w < 32; ++w) {
          xp[static_cast<std::size_t>(((c * 16 + d) * 24 + h) * 32 + w)] = hx[static_cast<std::size_t>(((c * 12 + d) * 24 + h) * 40 + w)];
          rp[static_cast<std::size_t>(((c * 16 + d) * 24 + h) * 32 + w)] = hr[static_cast<std::size_t>(((c * 12 + d) * 24 + h) * 40 + w)];
        }
  const auto seg = net.predict(TestTensor<double>::from_vector(Shape{1, 2, 16, 24, 32}, xp),
                               TestTensor<double>::from_vector(Shape{1, 2, 16, 24, 32}, rp)).to_vector();
  const auto pv = prob.to_vector();
  // W = 40 > 32: voxels w < 8 are covered only by the first W tile
  double e = 0;
  for (index_t k = 0; k < 3; ++k)
    for (index_t d = 0; d < 12; ++d)
      for (index_t h = 0; h < 24; ++h)
        for (index_t w = 0; w < 8; ++w) {
          const double z = seg[static_cast<std::size_t>(((k * 16 + d) * 24 + h) * 32 + w)];
          e = std::max(e, std::abs(pv[static_cast<std::size_t>(((k * 12 + d) * 24 + h) * 40 + w)] - 1 / (1 + std::exp(-z))));
        }
  CHECK(e < 1e-14);
}

TEST_CASE("conresnet: WS convolution gradcheck (spec §8.8, float64)") {
  Generator g(3);
  nn::WSConv3d<double, Backend> conv(conresnet::ws3(3, 4, 2, 1), g);
  gradcheck_module(conv, randn<double>(Shape{2, 3, 5, 4, 6}, 4));
  nn::WSConv3d<double, Backend> dil(conresnet::ws3(2, 3, 1, 2), g);
  gradcheck_module(dil, randn<double>(Shape{1, 2, 5, 6, 4}, 5));
}

TEST_CASE("conresnet: gradients accumulate across two backward calls") {
  const auto& fx = fixture();
  auto net = loaded<double>();
  const auto x = fx.tensor<double>("x");
  const auto x_res = conresnet::image_residual(x);
  const auto y = fx.tensor<double>("y");
  Loss<double> loss(loss_options("paper"));
  net.zero_grad();
  loss.forward(net.forward(x, x_res), y, conresnet::label_residual(y));
  net.backward(loss.backward());
  std::vector<std::vector<double>> once;
  for (auto* p : net.parameters()) once.push_back(p->grad.to_vector());
  net.backward(loss.backward());
  std::size_t i = 0;
  double e = 0, s = 0;
  for (auto* p : net.parameters()) {
    const auto twice = p->grad.to_vector();
    for (std::size_t j = 0; j < twice.size(); ++j) {
      e = std::max(e, std::abs(twice[j] - 2 * once[i][j]));
      s = std::max(s, std::abs(once[i][j]));
    }
    ++i;
  }
  CHECK(s > 0);
  CHECK(e <= 1e-12 * s);
}

// Small whole networks (C_in 2, K 2, w 4, G 2, one block per layer, 8 x 8 x 16; with and without the context
// residual path) by central differences of L = Σ_j <out_j, r_j>: dX and dX_res at 24 elements each, and 3 elements
// of every parameter. (w 4: with w 2, seg_x1's 1x1x1 conv_res would have 2 weights per output channel, whose
// standardised values are ±1/√2 whatever the raw weights.)
namespace {
void whole_network_check(bool residual) {
  Generator g(11);
  const auto o = ConResNetOptions().in_channels(2).num_classes(2).width(4).groups(2).blocks({1, 1, 1, 1, 1})
                     .context_residual(residual);
  Net<double> net(o, g);
  net.eval();
  for (auto* p : net.parameters())  // GroupNorm affine away from 1 / 0
    if (p->value.rank() == 1) p->value.assign(uniform_tensor<double>(p->value.shape(), 0.5, 1.5, 13).to_vector());
  auto x = randn<double>(Shape{1, 2, 8, 8, 16}, 21);
  auto x_res = conresnet::image_residual(x);
  x_res.assign(uniform_tensor<double>(x_res.shape(), 0.1, 1.0, 22).to_vector());  // an independent input here
  auto outs = net.forward(x, x_res);
  std::vector<TestTensor<double>> r;
  for (std::size_t j = 0; j < outs.size(); ++j) r.push_back(randn<double>(outs[j].shape(), 30 + j));
  net.zero_grad();
  const auto [dx, dxr] = net.backward(r);
  auto value = [&] {
    const auto o2 = net.forward(x, x_res);
    double l = 0;
    for (std::size_t j = 0; j < o2.size(); ++j) l += dot(o2[j], r[j]);
    return l;
  };
  auto pick = [](const std::vector<double>& v, const std::vector<index_t>& idx) {
    std::vector<double> out;
    for (auto i : idx) out.push_back(v[static_cast<std::size_t>(i)]);
    return out;
  };
  std::vector<index_t> idx;
  for (index_t i = 0; i < 24; ++i) idx.push_back((i * 53 + 7) % x.numel());
  central_difference_check("dL/dX", 24, pick(dx.to_vector(), idx), value,
                           [&](index_t i, double h) { perturb_element(x, idx[static_cast<std::size_t>(i)], h); });
  if (residual)
    central_difference_check("dL/dX_res", 24, pick(dxr.to_vector(), idx), value,
                             [&](index_t i, double h) { perturb_element(x_res, idx[static_cast<std::size_t>(i)], h); });
  else
    CHECK(!dxr.defined());
  for (auto& np : net.named_parameters()) {
    auto& p = np.second->value;
    std::vector<index_t> pi;
    for (index_t i = 0; i < std::min<index_t>(3, p.numel()); ++i) pi.push_back((i * 7 + 1) % p.numel());
    central_difference_check("dL/d" + np.first, static_cast<index_t>(pi.size()), pick(np.second->grad.to_vector(), pi), value,
                             [&](index_t i, double h) { perturb_element(p, pi[static_cast<std::size_t>(i)], h); });
  }
}
}  // namespace

TEST_CASE("conresnet: central-difference check of a small whole network" * doctest::skip(!whole_network_gradchecks)) {
  whole_network_check(true);
}
TEST_CASE("conresnet: central-difference check of a small baseline network" * doctest::skip(!whole_network_gradchecks)) {
  whole_network_check(false);
}

// ---- helpers, bad input --------------------------------------------------------------------------------------

TEST_CASE("conresnet: training helpers (spec §4.1)") {
  const auto a = conresnet::adam_options();
  CHECK(a.lr() == 1e-4);
  CHECK(a.betas().first == 0.9);
  CHECK(a.betas().second == 0.999);
  CHECK(a.eps() == 1e-8);
  CHECK(a.weight_decay() == 5e-4);
  CHECK(!a.amsgrad());
  CHECK(conresnet::poly_lr(1e-4, 0, 40000) == 1e-4);
  CHECK(conresnet::poly_lr(1e-3, 2, 10) == doctest::Approx(1e-3 * std::pow(0.8, 0.9)).epsilon(1e-15));
  CHECK(conresnet::poly_lr(1e-4, 40000, 40000) == 0);
  CHECK_THROWS_AS(conresnet::poly_lr(1e-4, 5, 0), value_error);
  CHECK(ConResNetLossOptions().res_on_logits());
  CHECK(ConResNetLossOptions().lambda() == 0.5);
  CHECK(ConResNetLossOptions().pos_weight_scope() == losses::PosWeightScope::batch);
}

TEST_CASE("conresnet: pos_weight_scope(sample) weights per sample (spec §7.2)") {
  const auto& fx = fixture();
  std::vector<TestTensor<double>> outs;
  for (const char* n : {"seg", "res", "resx2", "resx4"}) outs.push_back(fx.tensor<double>(std::string("out/") + n));
  const auto y = fx.tensor<double>("y");
  Loss<double> loss(ConResNetLossOptions().pos_weight_scope(losses::PosWeightScope::sample));
  loss.forward(outs, y, conresnet::label_residual(y));
  CHECK(loss.pos_weights(0).size() == 6);  // N x K
  const auto yr = conresnet::label_residual(y).to_vector();
  const index_t V = 16 * 24 * 32;
  double c = 0;
  for (index_t i = 0; i < V; ++i) c += yr[static_cast<std::size_t>((1 * 3 + 2) * V + i)];
  CHECK(loss.pos_weights(0)[5] == doctest::Approx(std::log(V / (c + 1))).epsilon(1e-14));
}

TEST_CASE("conresnet: bad input names component, expected and actual") {
  Net<double> net(ConResNetOptions::tiny());
  const auto x = randn<double>(Shape{1, 2, 16, 16, 16}, 1);
  check_throws_naming<shape_error>([&] { net.forward(randn<double>(Shape{1, 3, 16, 16, 16}, 1), x); },
                                   {"ConResNet", "channels", "2", "3"});
  check_throws_naming<shape_error>([&] { net.forward(randn<double>(Shape{1, 2, 16, 12, 16}, 1), randn<double>(Shape{1, 2, 16, 12, 16}, 1)); },
                                   {"ConResNet", "size H", "multiple of 8", "12"});
  check_throws_naming<shape_error>([&] { net.forward(x, randn<double>(Shape{1, 2, 16, 16, 8}, 1)); },
                                   {"ConResNet", "X_res", "(1, 2, 16, 16, 8)"});
  CHECK_THROWS_AS(net.forward(randn<double>(Shape{2, 16, 16, 16}, 1), x), shape_error);
  check_throws_naming<value_error>([&] { net.backward({}); }, {"ConResNet::backward", "forward"});
  const auto outs = net.forward(x, conresnet::image_residual(x));
  check_throws_naming<shape_error>([&] { net.backward({outs[0]}); }, {"ConResNet::backward", "4", "1"});
  CHECK_THROWS_AS(net.backward({outs[0], outs[1], outs[2], randn<double>(Shape{1, 3, 8, 16, 16}, 2)}), shape_error);
  check_throws_naming<value_error>([] { ConResNetOptions::tiny().groups(3).validate(); }, {"ConResNetOptions", "groups", "3"});
  CHECK_THROWS_AS(Net<double>(ConResNetOptions::tiny().width(6).groups(4)), value_error);
  CHECK_THROWS_AS(Net<double>(ConResNetOptions::tiny().dropout(1.5)), value_error);
  CHECK_THROWS_AS(Net<double>(ConResNetOptions::tiny().in_channels(0)), value_error);
  check_throws_naming<shape_error>([] { conresnet::region_targets(randn<double>(Shape{1, 2, 2, 2, 2}, 1), conresnet::brats_regions_nnunet()); },
                                   {"region_targets", "channels", "1", "2"});
  Loss<double> loss;
  CHECK_THROWS_AS(loss.forward({outs[0], outs[1]}, outs[0], outs[0]), shape_error);
  CHECK_THROWS_AS(loss.backward(), value_error);
  CHECK_THROWS_AS(Loss<double>(ConResNetLossOptions().lambda(-1)), value_error);
  CHECK_THROWS_AS(conresnet::sliding_window_probabilities(net, x, {12, 16, 16}), value_error);
}
