// MAML (models/maml/*.hpp) against the PyTorch MAML of tests/reference/maml_ref.py, spec maml.md §8:
// parameter counts of the presets and the §8 key list (points 1), the §3.2 label targets (2), every forward tap
// F_i, z_i^(k), F_dual, A_i, F_att, Z (3), L_seg of the 7 outputs and the totals of both presets (4), the input
// and parameter gradients with the exact no-gradient sets of the code, paper, joint-only and intra-only losses
// (5), two SGD-Nesterov / Adam-AMSGrad steps with and without clipping (6), the single-modality path (7) and
// the paper MA variant (9), and the sliding_window/ fixture group of point 8 reproduced with a plain tile loop
// around predict(). Also: predict(), modality dropout, the no-gradient bookkeeping across steps, central-difference
// checks of a branch and of a small whole network, gradient accumulation, initialisation statistics, bad input.
#include <chrono>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include <mmnet/inference/sliding_window.hpp>
#include <mmnet/layers/flip_permute.hpp>
#include <mmnet/maml.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
using Net = models::MAML<T, Backend>;
template <class T>
using Loss = models::MAMLLoss<T, Backend>;

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
bool starts_with(const std::string& s, const std::string& head) { return s.rfind(head, 0) == 0; }

// Conv biases whose output goes straight into an InstanceNorm (every branch CNA conv, each MA module's first conv
// and, in the paper variant, its second): IN removes any per-channel constant, so their gradient is exactly zero
// and PyTorch's and ours hold only rounding noise. They are checked against the scale of the same conv's weight.
bool bias_before_in(const std::string& n, bool paper_ma) {
  if (starts_with(n, "modality_specific_models.")) return ends_with(n, ".conv.bias");
  if (starts_with(n, "modality_aware_modules.")) return ends_with(n, ".0.bias") || (paper_ma && ends_with(n, ".3.bias"));
  return false;
}
std::string weight_of(const std::string& bias) { return bias.substr(0, bias.size() - 4) + "weight"; }

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::abs(e));
  return m;
}
template <class T>
std::vector<double> as_double(const TestTensor<T>& t) {
  const auto v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

// A gradient (or a stepped parameter) against the reference; for a bias before IN the error is taken relative to
// the scale of the same conv's weight entry (ref_weight), which is what bounds its rounding noise.
template <class T>
void check_entry(const TestTensor<T>& ours, const HostArray& ref, const HostArray* ref_weight, double tol,
                 const std::string& what) {
  if (!ref_weight) {
    check_close(ours, ref, tol, what);
    return;
  }
  const auto a = as_double(ours);
  REQUIRE(a.size() == ref.data.size());
  double diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(a[i] - ref.data[i]));
  const double scale = max_abs(ref_weight->data);
  REQUIRE(scale > 0);
  const double err = diff / scale;
  ErrorStats::get().record(std::is_same_v<T, double>, err, what + " (relative to the weight's scale)");
  CHECK_MESSAGE(err <= tol, what << ": error " << diff << " vs weight scale " << scale);
}

// The §8 table of maml-tiny expanded in module order (context, tu, localization, seg_outputs per branch; fusion,
// MA modules, output), with shapes; paper_ma: the §8 point 9 variant.
std::vector<std::pair<std::string, std::vector<index_t>>> spec_tiny_keys(bool paper_ma = false) {
  std::vector<std::pair<std::string, std::vector<index_t>>> k;
  auto cna = [&k](const std::string& p, index_t co, index_t ci) {
    k.emplace_back(p + ".conv.weight", std::vector<index_t>{co, ci, 3, 3, 3});
    k.emplace_back(p + ".conv.bias", std::vector<index_t>{co});
    k.emplace_back(p + ".instnorm.weight", std::vector<index_t>{co});
    k.emplace_back(p + ".instnorm.bias", std::vector<index_t>{co});
  };
  const index_t w[4] = {4, 8, 16, 16};
  for (int b = 0; b < 2; ++b) {
    const std::string B = "modality_specific_models." + std::to_string(b) + ".";
    for (int d = 0; d < 3; ++d) {
      const std::string s = B + "conv_blocks_context." + std::to_string(d) + ".blocks.";
      cna(s + "0", w[d], d == 0 ? 1 : w[d - 1]);
      cna(s + "1", w[d], w[d]);
    }
    cna(B + "conv_blocks_context.3.0.blocks.0", 16, 16);
    cna(B + "conv_blocks_context.3.1.blocks.0", 16, 16);
    for (int u = 0; u < 3; ++u) k.emplace_back(B + "tu." + std::to_string(u) + ".weight", std::vector<index_t>{w[3 - u], w[2 - u], 2, 2, 2});
    for (int u = 0; u < 3; ++u) {
      const std::string s = B + "conv_blocks_localization." + std::to_string(u) + ".";
      cna(s + "0.blocks.0", w[2 - u], 2 * w[2 - u]);
      cna(s + "1.blocks.0", w[2 - u], w[2 - u]);
    }
    for (int u = 0; u < 3; ++u) k.emplace_back(B + "seg_outputs." + std::to_string(u) + ".weight", std::vector<index_t>{3, w[2 - u], 1, 1, 1});
  }
  k.emplace_back("fusion.weight", std::vector<index_t>{4, 8, 3, 3, 3});
  k.emplace_back("fusion.bias", std::vector<index_t>{4});
  for (int i = 0; i < 2; ++i) {
    const std::string m = "modality_aware_modules." + std::to_string(i) + ".";
    k.emplace_back(m + "0.weight", std::vector<index_t>{4, 8, 3, 3, 3});
    k.emplace_back(m + "0.bias", std::vector<index_t>{4});
    k.emplace_back(m + "1.weight", std::vector<index_t>{4});
    k.emplace_back(m + "1.bias", std::vector<index_t>{4});
    k.emplace_back(m + "3.weight", paper_ma ? std::vector<index_t>{4, 4, 1, 1, 1} : std::vector<index_t>{4, 4, 3, 3, 3});
    k.emplace_back(m + "3.bias", std::vector<index_t>{4});
    if (paper_ma) {
      k.emplace_back(m + "4.weight", std::vector<index_t>{4});
      k.emplace_back(m + "4.bias", std::vector<index_t>{4});
    }
  }
  k.emplace_back("output.weight", std::vector<index_t>{3, 4, 1, 1, 1});
  return k;
}

MAMLOptions tiny_options(bool paper_ma) {
  auto o = MAMLOptions::tiny();
  if (paper_ma) o.ma_variant(attention::MAVariant::paper);
  return o;
}

MAMLLossOptions loss_preset(const std::string& name, index_t p = 3) {
  if (name == "code") return MAMLLossOptions::code(p);
  if (name == "paper") return MAMLLossOptions::paper(p);
  if (name == "joint") return MAMLLossOptions::code(p).lambda(0);
  if (name == "intra") return MAMLLossOptions::code(p).w_joint(0);
  throw error("unknown preset " + name);
}

template <class T>
Net<T> load_tiny(const Fixture& fx, const std::string& group, bool paper_ma = false) {
  Net<T> net(tiny_options(paper_ma));
  net.load_state_dict(fx.group(group + "/params"), true);
  return net;
}

template <class T>
TestTensor<T> labels(const Fixture& fx) {
  return fx.tensor<T>("tiny/y");
}

// Forward taps of the network against group/ (spec §8 point 3).
template <class T>
void check_forward(Net<T>& net, const Fixture& fx, const std::string& group) {
  const auto outs = net.forward(fx.tensor<T>("tiny/x"));
  REQUIRE(outs.size() == 7);
  const double tol = tol_output<T>();
  for (index_t i = 0; i < 2; ++i) {
    const std::string si = std::to_string(i);
    check_close(net.features(i), fx.array(group + "/F/" + si), tol, group + " F_" + si);
    for (index_t k = 0; k < 3; ++k)
      check_close(outs[static_cast<std::size_t>(net.output_index(i, k))], fx.array(group + "/z/" + si + "/" + std::to_string(k)), tol,
                  group + " z_" + si + "^(" + std::to_string(k) + ")");
    const auto a = net.attention(i).to_vector();
    CHECK(*std::min_element(a.begin(), a.end()) > T(0));
    CHECK(*std::max_element(a.begin(), a.end()) < T(1));
    check_close(net.attention(i), fx.array(group + "/A/" + si), tol, group + " A_" + si);
  }
  check_close(net.dual(), fx.array(group + "/F_dual"), tol, group + " F_dual");
  check_close(net.fused(), fx.array(group + "/F_att"), tol, group + " F_att");
  check_close(outs[0], fx.array(group + "/Z"), tol, group + " Z");
}

// Loss terms and total of one preset (point 4), then gradients of x and of every parameter, with the exact set
// of parameters that have one (point 5).
template <class T>
void check_preset(Net<T>& net, const Fixture& fx, const std::string& group, const std::string& preset, bool paper_ma) {
  const std::string g = group + "/" + preset;
  Loss<T> loss(loss_preset(preset));
  net.zero_grad();
  auto x = fx.tensor<T>("tiny/x");
  const T l = loss.forward(net.forward(x), labels<T>(fx));
  check_close_scalar(l, fx.scalar(g + "/loss"), tol_output<T>(), g + " loss");
  const auto& terms = fx.array(g + "/terms").data;
  const auto& lseg = fx.array(group + "/lseg").data;
  for (std::size_t j = 0; j < 7; ++j) {
    CHECK(loss.evaluated()[j] == (terms[j] != 0));
    check_close_scalar(static_cast<T>(loss.terms()[j]), terms[j], tol_output<T>(), g + " term " + std::to_string(j));
    if (loss.evaluated()[j]) check_close_scalar(static_cast<T>(loss.terms()[j]), lseg[j], tol_output<T>(), g + " L_seg " + std::to_string(j));
  }
  const auto dx = net.backward(loss.backward());
  check_close(dx, fx.array(g + "/grad/x"), tol_grad<T>(), g + " dL/dx");
  const StateDict params = fx.group(group + "/params");
  int without = 0;
  for (auto& np : net.named_parameters()) {
    const std::string& n = np.first;
    const std::string key = g + "/grad/" + n;
    const bool has = fx.has(key);
    CHECK_MESSAGE(np.second->grad.defined() == has, g << ": " << n << (has ? " should have" : " should have no") << " gradient");
    if (!has) {
      ++without;
      continue;
    }
    if (!np.second->grad.defined()) continue;
    const HostArray* w = bias_before_in(n, paper_ma) ? &fx.array(g + "/grad/" + weight_of(n)) : nullptr;
    check_entry(np.second->grad, fx.array(key), w, tol_grad<T>(), g + " dL/d" + n);
  }
  const int expected = preset == "code" ? 2 : preset == "paper" ? 4 : preset == "joint" ? 6 : paper_ma ? 19 : 17;
  CHECK(without == expected);
}

}  // namespace

TEST_CASE("MAML: parameter counts of the presets") {
  Fixture fx("maml");
  struct Row {
    const char* key;
    MAMLOptions o;
    index_t total;
  };
  const Row rows[] = {
      {"tiny", MAMLOptions::tiny(), 120272},
      {"brats", MAMLOptions::brats(), 66484752},
      {"liver", MAMLOptions::liver(), 62611104},
      {"tiny_paper_ma", MAMLOptions::tiny().ma_variant(attention::MAVariant::paper), 119456},
      {"brats_paper_ma", MAMLOptions::brats().ma_variant(attention::MAVariant::paper), 66458256},
      {"liver_paper_ma", MAMLOptions::liver().ma_variant(attention::MAVariant::paper), 62557984},
  };
  for (const auto& r : rows) {
    const std::string k = std::string("counts/") + r.key + "/";
    CHECK_MESSAGE(r.o.num_parameters() == r.total, r.key);
    CHECK_MESSAGE(r.o.num_parameters() == static_cast<index_t>(fx.scalar(k + "total")), r.key);
    CHECK(r.o.ma_parameters() == static_cast<index_t>(fx.scalar(k + "ma")));
    if (fx.has(k + "branch")) {
      CHECK(r.o.branch_parameters() == static_cast<index_t>(fx.scalar(k + "branch")));
      CHECK(r.o.fusion_parameters() == static_cast<index_t>(fx.scalar(k + "fusion")));
      CHECK(r.o.output_parameters() == static_cast<index_t>(fx.scalar(k + "output")));
    }
  }
  CHECK(MAMLOptions::tiny().branch_parameters() == 58384);
  CHECK(MAMLOptions::tiny().fusion_parameters() == 868);
  CHECK(MAMLOptions::tiny().ma_parameters() == 2624);
  CHECK(MAMLOptions::tiny().output_parameters() == 12);
  CHECK(MAMLOptions::tiny().ma_variant(attention::MAVariant::paper).ma_parameters() == 1808);

  // constructed networks
  Net<float> tiny(MAMLOptions::tiny());
  CHECK(tiny.num_parameters() == 120272);
  CHECK(tiny.modality_specific_models[0].num_parameters() == 58384);
  CHECK(tiny.ma.fusion.weight.value.numel() + tiny.ma.fusion.bias.value.numel() == 868);
  CHECK(tiny.output.num_parameters() == 12);
  CHECK(Net<float>(tiny_options(true)).num_parameters() == 119456);
  const auto ens = MAMLOptions::tiny().variant(MAMLVariant::ms_ensemble);
  CHECK(Net<float>(ens).num_parameters() == 116768);
  CHECK(ens.num_parameters() == 116768);
  const auto t0 = std::chrono::steady_clock::now();
  {
    Net<float> liver(MAMLOptions::liver());
    CHECK(liver.num_parameters() == 62611104);
    CHECK(liver.named_parameters().size() == 2 * (6 * 8 + 5 + 5 * 8 + 5) + 2 + 2 * 6 + 1);
  }
  MESSAGE("liver preset constructed in "
          << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s");
  CHECK(MAMLOptions::small().num_parameters() == Net<float>(MAMLOptions::small()).num_parameters());
}

TEST_CASE("MAML: state-dict names and strict load (spec §8 table)") {
  Fixture fx("maml");
  for (bool paper_ma : {false, true}) {
    Net<float> net(tiny_options(paper_ma));
    const auto spec = spec_tiny_keys(paper_ma);
    const auto np = net.named_parameters();
    REQUIRE(np.size() == spec.size());
    CHECK(np.size() == (paper_ma ? 143u : 139u));
    for (std::size_t i = 0; i < np.size(); ++i) {
      CHECK(np[i].first == spec[i].first);
      CHECK_MESSAGE(np[i].second->value.shape().to_vector() == spec[i].second, np[i].first);
    }
    CHECK(net.named_buffers().empty());
    const std::string group = paper_ma ? "tiny_paper_ma" : "tiny";
    const StateDict ref = fx.group(group + "/params");
    CHECK(ref.keys() == net.state_dict().keys());  // the PyTorch module's order too
    std::string order;
    for (double c : fx.array(group + "/order").data) order += static_cast<char>(c);
    std::string ours;
    for (std::size_t i = 0; i < np.size(); ++i) ours += (i ? "\n" : "") + np[i].first;
    CHECK(order == ours);
    net.load_state_dict(ref, true);
    const StateDict back = net.state_dict();
    for (auto& e : ref) CHECK(relative_error(back.at(e.first).data, e.second.data) <= 1e-7);
  }
}

TEST_CASE_TEMPLATE("MAML: maml-tiny forward taps and label targets (§8 points 2-3)", T, float, double) {
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny");
  check_forward(net, fx, "tiny");
  const auto y = labels<T>(fx);
  check_close(nn::downsample_labels_centered(y, ExpandingArray3(2)), fx.array("tiny/y1"), 0.0, "Y^(1)");
  check_close(nn::downsample_labels_centered(y, ExpandingArray3(4)), fx.array("tiny/y2"), 0.0, "Y^(2)");
}

TEST_CASE_TEMPLATE("MAML: losses, gradients and no-gradient sets (§8 points 4-5)", T, float, double) {
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny");
  for (const char* preset : {"code", "paper", "joint", "intra"}) {
    CAPTURE(preset);
    check_preset(net, fx, "tiny", preset, false);
  }
  // joint only: the mutual-learning path reaches both branches' encoders with non-zero gradients
  Loss<T> joint(loss_preset("joint"));
  net.zero_grad();
  joint.forward(net.forward(fx.tensor<T>("tiny/x")), labels<T>(fx));
  net.backward(joint.backward());
  for (auto& b : net.modality_specific_models)
    CHECK(max_abs(as_double(b.conv_blocks_context[0].blocks[0].conv.weight.grad)) > 0);
}

TEST_CASE_TEMPLATE("MAML: paper MA variant (§8 point 9)", T, float, double) {
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny_paper_ma", true);
  check_forward(net, fx, "tiny_paper_ma");
  for (const char* preset : {"code", "paper"}) {
    CAPTURE(preset);
    check_preset(net, fx, "tiny_paper_ma", preset, true);
  }
}

TEST_CASE_TEMPLATE("MAML: two optimizer steps (§8 point 6)", T, float, double) {
  Fixture fx("maml");
  const auto x = fx.tensor<T>("tiny/x");
  const auto y = labels<T>(fx);
  struct Run {
    const char* group;
    const char* preset;
    bool sgd;
    double scale;
  };
  for (const Run r : {Run{"tiny/sgd", "code", true, 1.0}, Run{"tiny/sgd_clip", "code", true, 1e4},
                      Run{"tiny/adam", "paper", false, 1.0}}) {
    CAPTURE(r.group);
    auto net = load_tiny<T>(fx, "tiny");
    const StateDict before = net.state_dict();
    std::unique_ptr<optim::Optimizer<T, Backend>> opt;
    if (r.sgd) opt = std::make_unique<optim::SGD<T, Backend>>(net.parameters(), maml::sgd_options());
    else opt = std::make_unique<optim::Adam<T, Backend>>(net.parameters(), maml::adam_options());
    Loss<T> loss(loss_preset(r.preset));
    std::set<std::string> no_grad;
    for (int s = 1; s <= 2; ++s) {
      const std::string g = std::string(r.group) + "/step" + std::to_string(s);
      opt->zero_grad();
      const T l = loss.forward(net.forward(x), y);
      check_close_scalar(static_cast<T>(l * r.scale), fx.scalar(std::string(r.group) + "/loss" + std::to_string(s)),
                         tol_output<T>(), g + " loss");
      net.backward(loss.backward(static_cast<T>(r.scale)));
      if (r.sgd) {
        const double norm = optim::clip_grad_norm_(net, maml::clip_norm);
        check_close_scalar(static_cast<T>(norm), fx.scalar(std::string(r.group) + "/norm" + std::to_string(s)), tol_grad<T>(),
                           g + " pre-clip norm");
        if (r.scale > 1) CHECK(norm > 100 * maml::clip_norm);
      }
      opt->step();
      for (auto& np : net.named_parameters()) {
        const std::string& n = np.first;
        if (!np.second->grad.defined()) {
          no_grad.insert(n);
          continue;
        }
        const HostArray* w = bias_before_in(n, false) ? &fx.array(g + "/" + weight_of(n)) : nullptr;
        // Adam normalises every element by its own gradient history, so from the second step on its update
        // depends on ratios of gradient elements: float rounding of an element far below its tensor's largest
        // (tol_grad is relative to that largest) becomes an error of the step itself, up to lr. The float run
        // therefore compares Adam's second step only through the loss and the no-gradient invariants; the double
        // run compares every parameter after both steps at the double tolerance.
        if (!r.sgd && std::is_same_v<T, float> && s == 2) continue;
        // Adam's m / (sqrt(v) + eps) turns the rounding noise of a zero gradient (~1e-9 in float, vs eps 1e-8)
        // into steps of up to lr: in float those biases are compared with that bound.
        if (w && !r.sgd && std::is_same_v<T, float>) {
          const auto a = as_double(np.second->value);
          const auto& ref = fx.array(g + "/" + n).data;
          double diff = 0;
          for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(a[i] - ref[i]));
          CHECK_MESSAGE(diff <= 2 * 3e-4 * 1.01, g << "/" << n << ": " << diff);
          continue;
        }
        check_entry(np.second->value, fx.array(g + "/" + n), w, tol_output<T>(), g + "/" + n);
      }
    }
    // no-gradient tensors: bit-identical after the steps
    CHECK(no_grad.size() == (std::string(r.preset) == "code" ? 2u : 4u));
    for (auto& np : net.named_parameters()) {
      if (!no_grad.count(np.first)) continue;
      const auto now = net.state_dict().at(np.first).data;
      CHECK_MESSAGE(now == before.at(np.first).data, np.first << " changed without a gradient");
      CHECK(starts_with(np.first.substr(np.first.find(".seg_outputs.") + 1), "seg_outputs."));
    }
  }
}

TEST_CASE_TEMPLATE("MAML: single-modality path (§8 point 7)", T, float, double) {
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny");
  const auto full = net.forward(fx.tensor<T>("tiny/x"));
  for (const char* kind : {"zero", "noise"}) {
    CAPTURE(kind);
    const std::string g = std::string("tiny/single/") + kind;
    const auto x = fx.tensor<T>(g + "/x");
    const auto outs = net.forward(x, {0});
    CHECK(!outs[0].defined());
    for (std::size_t j = 4; j < 7; ++j) CHECK(!outs[j].defined());
    check_close(outs[1], fx.array(g + "/z0"), tol_output<T>(), g + " z_0^(0)");
    CHECK(outs[1].to_vector() == full[1].to_vector());  // bit-identical: branch 0 never reads channel 1
    // all modalities present: branch 0's own logits do not change with channel 1 either
    const auto all = net.forward(x);
    CHECK(all[1].to_vector() == full[1].to_vector());
  }
  // x with present.size() channels
  const auto x1 = nn::split_channels(fx.tensor<T>("tiny/x"), {1, 1});
  const auto o0 = net.forward(x1[0], {0});
  CHECK(o0[1].to_vector() == full[1].to_vector());
  const auto o1 = net.forward(x1[1], {1});
  for (index_t k = 0; k < 3; ++k)
    CHECK(o1[static_cast<std::size_t>(net.output_index(1, k))].to_vector() ==
          full[static_cast<std::size_t>(net.output_index(1, k))].to_vector());
  // backward: dL/dx has x's shape; with M channels the absent one is zero, the present one the same
  Loss<T> loss(MAMLLossOptions::code(3));
  loss.forward(o1, labels<T>(fx));
  const auto d1 = net.backward(loss.backward());
  CHECK(d1.shape() == x1[1].shape());
  loss.forward(net.forward(fx.tensor<T>("tiny/x"), {1}), labels<T>(fx));
  const auto d2 = nn::split_channels(net.backward(loss.backward()), {1, 1});
  CHECK(max_abs(as_double(d2[0])) == 0);
  CHECK(d2[1].to_vector() == d1.to_vector());
  CHECK(max_abs(as_double(d1)) > 0);
}

TEST_CASE_TEMPLATE("MAML: predict", T, float, double) {
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny");
  const auto x = fx.tensor<T>("tiny/x");
  nn::Softmax<T, Backend> softmax;
  const auto outs = net.forward(x);
  const auto pz = host(softmax.forward(outs[0]));
  check_close(net.predict(x), pz, tol_output<T>(), "predict(all) = softmax(Z)");
  check_close(net.predict(x, {0, 1}), pz, tol_output<T>(), "predict({0, 1})");
  // one modality: softmax of that branch's full-resolution logits, the other channel ignored
  const auto p1 = host(softmax.forward(outs[static_cast<std::size_t>(net.output_index(1, 0))]));
  auto xn = fx.tensor<T>("tiny/single/noise/x");  // channel 1 replaced
  const auto parts = nn::split_channels(x, {1, 1});
  const auto noisy0 = nn::cat_channels(std::vector<TestTensor<T>>{randn<T>(parts[0].shape(), 3), parts[1]});
  check_close(net.predict(noisy0, {1}), p1, tol_output<T>(), "predict({1}), channel 0 noise");
  check_close(net.predict(parts[1], {1}), p1, tol_output<T>(), "predict({1}), one channel given");
  const auto p0 = host(softmax.forward(fx.tensor<T>("tiny/single/noise/z0")));
  check_close(net.predict(xn, {0}), p0, tol_output<T>(), "predict({0})");

  // three modalities, two present: the mean of the two branches' softmaxes
  Generator g(11);
  Net<T> three(MAMLOptions::tiny().modalities(3), g);
  const auto x3 = randn<T>(Shape{1, 3, 8, 16, 24}, 5);
  const auto o3 = three.forward(x3);
  auto mean = softmax.forward(o3[static_cast<std::size_t>(three.output_index(0, 0))]).clone();
  add_(mean, softmax.forward(o3[static_cast<std::size_t>(three.output_index(2, 0))]));
  scale_(mean, T(0.5));
  check_close(three.predict(x3, {0, 2}), host(mean), tol_output<T>(), "predict({0, 2}) of 3");
  const auto c3 = nn::split_channels(x3, {1, 1, 1});
  check_close(three.predict(nn::cat_channels(std::vector<TestTensor<T>>{c3[0], c3[2]}), {0, 2}), host(mean), tol_output<T>(),
              "predict({0, 2}) with two channels");
  // MS+Ensemble: the mean over all branches
  Generator g2(11);
  Net<T> ens(MAMLOptions::tiny().modalities(3).variant(MAMLVariant::ms_ensemble), g2);
  const auto oe = ens.forward(x3);
  CHECK(!oe[0].defined());
  auto all3 = softmax.forward(oe[1]).clone();
  add_(all3, softmax.forward(oe[4]));
  add_(all3, softmax.forward(oe[7]));
  scale_(all3, T(1.0 / 3));
  check_close(ens.predict(x3), host(all3), tol_output<T>(), "ms_ensemble predict");
}

TEST_CASE("MAML: modality dropout") {
  using T = double;
  const auto o = MAMLOptions::tiny().modalities(3).modality_dropout(1.0).dropout_seed(42);
  Generator g1(3), g2(3);
  Net<T> a(o, g1), b(o, g2);
  const auto x = randn<T>(Shape{2, 3, 8, 16, 8}, 9);
  TestTensor<T> y(Shape{2, 1, 8, 16, 8});
  {
    Generator gy(4);
    std::vector<T> v(static_cast<std::size_t>(y.numel()));
    for (auto& e : v) e = static_cast<T>(gy.integer(3));
    y.assign(v);
  }
  Loss<T> loss(MAMLLossOptions::code(3));
  std::set<std::vector<index_t>> seen;
  for (int it = 0; it < 12; ++it) {
    a.zero_grad();
    const auto outs = a.forward(x);
    b.forward(x);
    CHECK(a.present() == b.present());  // deterministic for the seed
    const auto present = a.present();
    CHECK(!present.empty());
    CHECK(present.size() < 3);
    seen.insert(present);
    CHECK(!outs[0].defined());
    for (index_t i = 0; i < 3; ++i) {
      const bool in = std::find(present.begin(), present.end(), i) != present.end();
      for (index_t k = 0; k < 3; ++k) CHECK(outs[static_cast<std::size_t>(a.output_index(i, k))].defined() == in);
    }
    loss.forward(outs, y);
    CHECK(!loss.evaluated()[0]);
    const auto dx = a.backward(loss.backward());
    CHECK(dx.shape() == x.shape());
    for (auto& np : a.named_parameters()) {
      const std::string& n = np.first;
      bool expect = false;
      for (index_t i : present)
        if (starts_with(n, "modality_specific_models." + std::to_string(i) + ".") && !ends_with(n, "seg_outputs.0.weight"))
          expect = true;
      CHECK_MESSAGE(np.second->grad.defined() == expect, n);
    }
    // absent channels of dL/dx are zero
    const auto parts = nn::split_channels(dx, {1, 1, 1});
    for (index_t i = 0; i < 3; ++i)
      if (std::find(present.begin(), present.end(), i) == present.end())
        CHECK(max_abs(as_double(parts[static_cast<std::size_t>(i)])) == 0);
  }
  CHECK(seen.size() >= 3);
  // eval mode: no dropout
  a.eval();
  CHECK(a.forward(x)[0].defined());
  CHECK(a.present().size() == 3);
  // reseeding repeats the sequence
  a.train();
  a.dropout_generator().seed(7);
  b.dropout_generator().seed(7);
  for (int it = 0; it < 3; ++it) {
    a.forward(x);
    b.forward(x);
    CHECK(a.present() == b.present());
  }
  // p = 0: every modality, always
  Net<T> c(MAMLOptions::tiny().modalities(3));
  for (int it = 0; it < 3; ++it) CHECK(c.forward(x)[0].defined());
}

TEST_CASE("MAML: no-gradient bookkeeping across steps") {
  using T = double;
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny");
  const auto x = fx.tensor<T>("tiny/x");
  const auto y = labels<T>(fx);
  Loss<T> loss(MAMLLossOptions::code(3));
  // zero_grad on undefined grads is a no-op (Module's and the optimizers')
  loss.forward(net.forward(x), y);
  net.backward(loss.backward());
  auto& h0 = net.modality_specific_models[0].seg_outputs[0].weight;
  CHECK(!h0.grad.defined());
  net.zero_grad();
  optim::SGD<T, Backend> sgd(net.parameters(), maml::sgd_options());
  sgd.zero_grad();
  CHECK(!h0.grad.defined());
  // a later step that does reach the head allocates its gradient
  Loss<T> all(MAMLLossOptions::code(3).alpha({0.5, 0.3, 0.2}));
  all.forward(net.forward(x), y);
  net.backward(all.backward());
  CHECK(h0.grad.defined());
  CHECK(max_abs(as_double(h0.grad)) > 0);
  // a backward that does not reach it keeps what was accumulated (no zero_grad in between) ...
  const auto kept = h0.grad.to_vector();
  loss.forward(net.forward(x), y);
  net.backward(loss.backward());
  CHECK(h0.grad.to_vector() == kept);
  // ... and after zero_grad() the same backward leaves it without a gradient again
  net.zero_grad();
  loss.forward(net.forward(x), y);
  net.backward(loss.backward());
  CHECK(!h0.grad.defined());
}

TEST_CASE("MAML: gradients accumulate across two backward calls") {
  using T = double;
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny");
  const auto x = fx.tensor<T>("tiny/x");
  Loss<T> loss(MAMLLossOptions::code(3));
  net.zero_grad();
  loss.forward(net.forward(x), labels<T>(fx));
  net.backward(loss.backward());
  std::vector<std::vector<T>> once;
  for (auto* p : net.parameters()) once.push_back(p->grad.defined() ? p->grad.to_vector() : std::vector<T>{});
  loss.forward(net.forward(x), labels<T>(fx));
  net.backward(loss.backward());
  std::size_t i = 0;
  for (auto& np : net.named_parameters()) {
    const auto& o = once[i++];
    if (o.empty()) {
      CHECK(!np.second->grad.defined());
      continue;
    }
    auto two = o;
    for (auto& e : two) e *= 2;
    CHECK_MESSAGE(relative_error(std::vector<double>(two.begin(), two.end()), as_double(np.second->grad)) <= 1e-12, np.first);
  }
}

namespace {
// Every output of a module returning a list, flattened into one 1 x n tensor (for gradcheck_module).
template <class M>
struct Flatten : Module<double, Backend> {
  using tensor = Tensor<double, Backend>;
  M& m;
  std::vector<Shape> shapes;
  std::vector<index_t> sizes;
  explicit Flatten(M& inner) : m(inner) {}
  void members(Members<double, Backend>& mm) override { mm.splice(m); }
  tensor flat(const std::vector<tensor>& outs) {
    shapes.clear();
    sizes.clear();
    std::vector<tensor> f;
    for (auto& o : outs) {
      shapes.push_back(o.shape());
      sizes.push_back(o.numel());
      f.push_back(o.reshape(Shape{1, o.numel()}));
    }
    return nn::cat_channels(f);
  }
  std::vector<tensor> unflat(const tensor& d) {
    auto parts = nn::split_channels(d, sizes);
    for (std::size_t i = 0; i < parts.size(); ++i) parts[i] = parts[i].reshape(shapes[i]);
    return parts;
  }
};
struct BranchAll : Flatten<models::maml::Branch<double, Backend>> {
  using Flatten::Flatten;
  tensor forward(const tensor& x) {
    auto outs = m.forward(x);
    outs.push_back(m.features_out());
    return flat(outs);
  }
  tensor backward(const tensor& d) {
    auto parts = unflat(d);
    const tensor df = parts.back();
    parts.pop_back();
    return m.backward(parts, df);
  }
};
struct MAMLAll : Flatten<models::MAML<double, Backend>> {
  using Flatten::Flatten;
  tensor forward(const tensor& x) { return flat(m.forward(x)); }
  tensor backward(const tensor& d) { return m.backward(unflat(d)); }
};
}  // namespace

TEST_CASE("MAML: central-difference check of a branch (all heads and F)" * doctest::skip(!whole_network_gradchecks)) {
  Generator g(21);
  const auto bo = MAMLOptions(1, 2).base_channels(1).num_pool(2).max_channels(2);  // widths 1, 2, 2
  models::maml::Branch<double, Backend> branch(bo, g);
  for (auto* p : branch.parameters()) {  // IN affine away from 1 / 0
    if (p->value.rank() == 1 && p->value.numel() > 0) p->value.assign(uniform_tensor<double>(p->value.shape(), 0.5, 1.5, 3).to_vector());
  }
  BranchAll bw(branch);
  gradcheck_module(bw, randn<double>(Shape{1, 1, 8, 4, 12}, 4));
}

TEST_CASE("MAML: central-difference check of a small whole network (every output)" * doctest::skip(!whole_network_gradchecks)) {
  Generator g2(22);
  Net<double> small(MAMLOptions(2, 2).base_channels(2).num_pool(1).max_channels(2), g2);
  MAMLAll mw(small);
  gradcheck_module(mw, randn<double>(Shape{1, 2, 4, 2, 6}, 5));
}

TEST_CASE("MAML: initialisation (spec §2.4)") {
  Generator g(1);
  Net<double> net(MAMLOptions::tiny().base_channels(8).max_channels(32), g);
  auto std_of = [](const std::vector<double>& v) {
    double s = 0;
    for (double e : v) s += e * e;
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  auto& b = net.modality_specific_models[1];
  const double gain = std::sqrt(2.0 / (1 + 1e-4));
  const auto w = b.conv_blocks_localization[0].first.blocks[0].conv.weight.value.to_vector();  // (32, 64, 3,3,3)
  CHECK(std_of(w) == doctest::Approx(gain / std::sqrt(64.0 * 27)).epsilon(0.03));
  const auto t = b.tu[0].weight.value.to_vector();  // (32, 32, 2,2,2): fan_in = dim 1 * 8
  CHECK(std_of(t) == doctest::Approx(gain / std::sqrt(32.0 * 8)).epsilon(0.05));
  CHECK(max_abs(b.conv_blocks_context[1].blocks[1].conv.bias.value.to_vector()) == 0);
  for (double e : b.conv_blocks_context[1].blocks[1].instnorm.weight.value.to_vector()) CHECK(e == 1);
  // fusion / MA / output: PyTorch's default, U(+-1/sqrt(fan_in))
  const auto f = net.ma.fusion.weight.value.to_vector();
  const double bound = 1 / std::sqrt(16.0 * 27);
  CHECK(max_abs(f) <= bound);
  CHECK(max_abs(f) > 0.9 * bound);
  CHECK(max_abs(net.ma.fusion.bias.value.to_vector()) > 0);
  CHECK(max_abs(net.output.weight.value.to_vector()) <= 1 / std::sqrt(8.0));
}

TEST_CASE("MAML: training helpers") {
  const auto s = maml::sgd_options();
  CHECK(s.lr() == 0.01);
  CHECK(s.momentum() == 0.99);
  CHECK(s.nesterov());
  CHECK(s.weight_decay() == 3e-5);
  const auto a = maml::adam_options();
  CHECK(a.lr() == 3e-4);
  CHECK(a.amsgrad());
  CHECK(a.weight_decay() == 3e-5);
  CHECK(maml::poly_lr_options(1000).power() == 0.9);
  const auto pl = maml::plateau_options();
  CHECK(pl.factor() == 0.2);
  CHECK(pl.patience() == 30);
  CHECK(pl.threshold() == 1e-3);
  maml::LossEMA ema;
  CHECK(!ema.value());
  CHECK(ema.update(2.0) == 2.0);
  CHECK(ema.update(1.0) == doctest::Approx(0.93 * 2 + 0.07));
  // loss presets
  const auto code = MAMLLossOptions::code(5);
  CHECK(code.w_joint() == doctest::Approx(8.0 / 15));
  CHECK(code.lambda() == 1);
  CHECK(code.alpha()[4] == 0);
  const auto paper = MAMLLossOptions::paper(5);
  CHECK(paper.w_joint() == 1);
  CHECK(paper.lambda() == 0.5);
  CHECK(paper.alpha() == std::vector<double>{1, 0, 0, 0, 0});
  CHECK(MAMLLossOptions::code(5).variant(MAMLVariant::ms_ma).lambda() == 0);
  CHECK(MAMLLossOptions::paper(5).variant(MAMLVariant::ms_ensemble).w_joint() == 0);
  CHECK(MAMLLossOptions::paper(5).variant(MAMLVariant::ms_ensemble).lambda() == 0.5);
}

TEST_CASE("MAML: bad input") {
  using T = float;
  Net<T> net(MAMLOptions::tiny());
  const char* who = "mmnet::MAML";
  check_throws_naming<shape_error>([&] { net.forward(TestTensor<T>(Shape{1, 3, 8, 8, 8})); }, {who, "input channels", "2", "3"});
  check_throws_naming<shape_error>([&] { net.forward(TestTensor<T>(Shape{1, 2, 8, 12, 8})); }, {who, "input size H", "multiple of 8", "12"});
  check_throws_naming<shape_error>([&] { net.forward(TestTensor<T>(Shape{2, 8, 8, 8})); }, {who, "rank", "5", "4"});
  const TestTensor<T> x(Shape{1, 2, 8, 16, 8});
  check_throws_naming<value_error>([&] { net.forward(x, {}); }, {who, "present modalities", "non-empty", "{}"});
  check_throws_naming<value_error>([&] { net.forward(x, {0, 2}); }, {who, "present modality index", "0..1", "2"});
  check_throws_naming<value_error>([&] { net.forward(x, {1, 0}); }, {who, "strictly increasing", "{1, 0}"});
  check_throws_naming<value_error>([&] { net.predict(x, {-1}); }, {who, "present modality index", "-1"});
  check_throws_naming<value_error>([&] { net.backward(std::vector<TestTensor<T>>(7)); }, {who, "forward() call first"});
  const auto outs = net.forward(x);
  check_throws_naming<shape_error>([&] { net.backward(std::vector<TestTensor<T>>(6)); }, {who, "number of output gradients", "7", "6"});
  auto grads = std::vector<TestTensor<T>>(7);
  grads[0] = TestTensor<T>(Shape{1, 3, 8, 16, 4});
  check_throws_naming<shape_error>([&] { net.backward(grads); }, {who, "gradient of output 0", "(1, 3, 8, 16, 8)", "(1, 3, 8, 16, 4)"});
  net.forward(x, {1});
  grads[0] = TestTensor<T>(Shape{1, 3, 8, 16, 8});
  check_throws_naming<shape_error>([&] { net.backward(grads); }, {who, "gradient of output 0", "undefined"});
  models::maml::Branch<T, Backend> branch(MAMLOptions::tiny());
  check_throws_naming<shape_error>([&] { branch.forward(TestTensor<T>(Shape{1, 2, 8, 8, 8})); },
                                   {"maml::Branch", "input channels", "1", "2"});
  check_throws_naming<shape_error>([&] { branch.forward(TestTensor<T>(Shape{1, 1, 8, 8, 4})); },
                                   {"maml::Branch", "input size W", "multiple of 8", "4"});
  check_throws_naming<value_error>([&] { branch.backward(std::vector<TestTensor<T>>(3)); }, {"maml::Branch", "forward() call first"});
  branch.forward(TestTensor<T>(Shape{1, 1, 8, 16, 8}));
  check_throws_naming<shape_error>([&] { branch.backward(std::vector<TestTensor<T>>(2)); }, {"maml::Branch", "head gradients", "3", "2"});
  check_throws_naming<value_error>([] { Net<T>(MAMLOptions(0, 3)); }, {"MAMLOptions", "modalities", ">= 1", "0"});
  check_throws_naming<value_error>([] { Net<T>(MAMLOptions::tiny().classes(1)); }, {"MAMLOptions", "classes", "1"});
  check_throws_naming<value_error>([] { Net<T>(MAMLOptions::tiny().max_channels(2)); }, {"MAMLOptions", "max_channels", "2"});
  check_throws_naming<value_error>([] { Net<T>(MAMLOptions::tiny().modality_dropout(1.5)); }, {"MAMLOptions", "modality_dropout", "1.5"});
  check_throws_naming<value_error>([] { MAMLLoss<T, Backend>(MAMLLossOptions::code(3).lambda(-1)); }, {"MAMLLossOptions", "lambda", "-1"});
  Loss<T> loss(MAMLLossOptions::code(3));
  check_throws_naming<shape_error>([&] { loss.forward(std::vector<TestTensor<T>>(6), TestTensor<T>(Shape{1, 1, 8, 16, 8})); },
                                   {"mmnet::MAMLLoss", "output count", "6"});
  check_throws_naming<value_error>([&] { Loss<T>(MAMLLossOptions::code(3)).backward(); }, {"mmnet::MAMLLoss", "forward()"});
}

// The sliding_window/ fixture group (spec §8 point 8) reproduced with a plain tile loop around predict(): checks
// the fixture's conventions (tile starts, Gaussian centre floor(p / 2), 8 mirrors, division by the summed map)
// and the network's probabilities at once. inference/sliding_window.hpp is tested against the same group elsewhere.
namespace {
void sliding_window_by_hand(bool single) {
  using T = double;
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny");
  const HostArray& xin = fx.array("sliding_window/input");  // 1 x 2 x 20 x 30 x 40
  const HostArray& gmap = fx.array("sliding_window/gaussian_f32");
  const index_t S[3] = {20, 30, 40}, P[3] = {16, 24, 32};
  const std::vector<double> sd = fx.array("sliding_window/starts_d").data, sh = fx.array("sliding_window/starts_h").data,
                            sw = fx.array("sliding_window/starts_w").data;
  CHECK(sd == std::vector<double>{0, 4});
  CHECK(sh == std::vector<double>{0, 6});
  CHECK(sw == std::vector<double>{0, 8});
  // g(x) = prod_a exp(-(x_a - floor(p_a / 2))^2 / (2 (p_a / 8)^2)), rounded to float
  for (index_t d = 0; d < P[0]; d += 5)
    for (index_t h = 0; h < P[1]; h += 7)
      for (index_t w = 0; w < P[2]; w += 3) {
        double g = 1;
        const index_t c[3] = {d, h, w};
        for (int a = 0; a < 3; ++a) g *= std::exp(-std::pow(double(c[a] - P[a] / 2), 2) / (2 * std::pow(P[a] / 8.0, 2)));
        CHECK(gmap.data[static_cast<std::size_t>((d * P[1] + h) * P[2] + w)] == static_cast<double>(static_cast<float>(g)));
      }
  const index_t vol = S[0] * S[1] * S[2], tile = P[0] * P[1] * P[2];
  {
    std::vector<double> acc(static_cast<std::size_t>(3 * vol), 0.0), norm(static_cast<std::size_t>(vol), 0.0);
    for (double d0 : sd)
      for (double h0 : sh)
        for (double w0 : sw) {
          std::vector<double> t(static_cast<std::size_t>(2 * tile));
          for (index_t c = 0; c < 2; ++c)
            for (index_t d = 0; d < P[0]; ++d)
              for (index_t h = 0; h < P[1]; ++h)
                for (index_t w = 0; w < P[2]; ++w)
                  t[static_cast<std::size_t>(((c * P[0] + d) * P[1] + h) * P[2] + w)] =
                      xin.data[static_cast<std::size_t>(((c * S[0] + index_t(d0) + d) * S[1] + index_t(h0) + h) * S[2] + index_t(w0) + w)];
          const auto x = TestTensor<T>::from_vector(Shape{1, 2, P[0], P[1], P[2]}, t);
          std::vector<double> prob(static_cast<std::size_t>(3 * tile), 0.0);
          for (int mask = 0; mask < 8; ++mask) {
            std::vector<int> axes;
            for (int a = 0; a < 3; ++a)
              if (mask >> a & 1) axes.push_back(a);
            const auto xf = axes.empty() ? x : nn::flip(x, axes);
            auto pf = single ? net.predict(xf, {0}) : net.predict(xf);
            if (!axes.empty()) pf = nn::flip(pf, axes);
            const auto v = pf.to_vector();
            for (std::size_t i = 0; i < v.size(); ++i) prob[i] += v[i] / 8;
          }
          for (index_t k = 0; k < 3; ++k)
            for (index_t d = 0; d < P[0]; ++d)
              for (index_t h = 0; h < P[1]; ++h)
                for (index_t w = 0; w < P[2]; ++w) {
                  const index_t ti = (d * P[1] + h) * P[2] + w;
                  const index_t vi = ((index_t(d0) + d) * S[1] + index_t(h0) + h) * S[2] + index_t(w0) + w;
                  const double g = gmap.data[static_cast<std::size_t>(ti)];
                  acc[static_cast<std::size_t>(k * vol + vi)] += prob[static_cast<std::size_t>(k * tile + ti)] * g;
                  if (k == 0) norm[static_cast<std::size_t>(vi)] += g;
                }
        }
    for (index_t k = 0; k < 3; ++k)
      for (index_t i = 0; i < vol; ++i) acc[static_cast<std::size_t>(k * vol + i)] /= norm[static_cast<std::size_t>(i)];
    const std::string key = single ? "sliding_window/single0/output" : "sliding_window/output";
    check_close(TestTensor<T>::from_vector(Shape{1, 3, S[0], S[1], S[2]}, acc), fx.array(key), tol_output<T>(), key);
  }
}
}  // namespace

TEST_CASE("MAML: nnU-Net sliding window over maml-tiny, by hand (§8 point 8 fixture, all modalities)") {
  sliding_window_by_hand(false);
}
TEST_CASE("MAML: nnU-Net sliding window over maml-tiny, by hand (§8 point 8 fixture, modality 0 only)") {
  sliding_window_by_hand(true);
}

// Spec §8 point 8 through the library: inference::sliding_window_inference with SlidingWindowOptions::nnunet (nnU-Net
// v1 tiles, float32-rounded Gaussian around floor(p / 2), the 8 mirror combinations) and net.predict (softmax)
// as the network, against the same fixture, on the test backend.
TEST_CASE_TEMPLATE("MAML: sliding_window_inference with SlidingWindowOptions::nnunet over maml-tiny (§8 point 8)", T, float, double) {
  Fixture fx("maml");
  auto net = load_tiny<T>(fx, "tiny");
  net.eval();
  const HostArray& xin = fx.array("sliding_window/input");  // 1 x 2 x 20 x 30 x 40
  const std::vector<T> xv(xin.data.begin(), xin.data.end());
  const auto image = Tensor<T, cpu>::from_vector(Shape(xin.shape), xv);
  const auto opt = inference::SlidingWindowOptions::nnunet({16, 24, 32});
  inference::SlidingWindowInfo info;
  for (const bool single : {false, true}) {
    const ModalitySet present = single ? ModalitySet{0} : ModalitySet{0, 1};
    const auto probs = inference::sliding_window_inference<Backend, T>(
        image, [&](const TestTensor<T>& x) { return net.predict(x, present); }, opt, &info);
    CHECK(info.windows == 8);                     // starts D {0, 4} x H {0, 6} x W {0, 8}
    CHECK(info.network_calls == 8 * 8);           // each window and its 7 mirrored copies
    const std::string key = single ? "sliding_window/single0/output" : "sliding_window/output";
    // The window accumulator lives on the host (cpu tensor) whatever the backend the network ran on.
    check_close(TestTensor<T>::from_vector(probs.shape(), probs.to_vector()), fx.array(key), tol_output<T>(),
                key + " (library)");
  }
}
