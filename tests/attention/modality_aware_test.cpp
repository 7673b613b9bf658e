// MAML's modality-aware attention (attention/modality_aware.hpp): PyTorch fixtures (tests/reference/
// modality_aware_ref.py) for M = 2 and 4, both MA variants, with the official Generic_MAML state-dict names;
// parameter counts of the spec's presets; central-difference checks in double; gradient accumulation, frozen
// parameters and bad input.
#include <mmnet/attention/modality_aware.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using attention::MAFusion;
using attention::MAFusionOptions;
using attention::MAModule;
using attention::MAModuleOptions;
using attention::MAVariant;

namespace {

// The fusion part of Generic_MAML as a network holds it: MAFusion's members spliced in at the top level next to
// the head "output" (Conv3d C -> K, 1x1x1, no bias), so the names are the official ones.
template <class T>
struct FusionWithHead : Module<T, Backend> {
  using tensor = TestTensor<T>;
  MAFusion<T, Backend> block;
  nn::Conv3d<T, Backend> output;

  FusionWithHead(index_t m, index_t c, index_t k, MAVariant v)
      : block(MAFusionOptions(m, c).variant(v)), output(nn::Conv3dOptions(c, k, 1).bias(false)) {}
  void members(Members<T, Backend>& m) override {
    m.splice(block);
    m("output", output);
  }
};

// Inputs of one fixture case.
template <class T>
std::vector<TestTensor<T>> features(const Fixture& fx, const std::string& c, index_t m) {
  std::vector<TestTensor<T>> f;
  for (index_t i = 0; i < m; ++i) f.push_back(fx.tensor<T>(c + "/F/" + std::to_string(i)));
  return f;
}

// The entries of sd whose names start with prefix, with the prefix removed.
StateDict sub_dict(const StateDict& sd, const std::string& prefix) {
  StateDict out;
  for (auto& e : sd)
    if (e.first.compare(0, prefix.size(), prefix) == 0) out.insert(e.first.substr(prefix.size()), e.second);
  return out;
}

template <class T>
void check_open_interval(const TestTensor<T>& a, const std::string& what) {
  const auto v = a.to_vector();
  const auto mm = std::minmax_element(v.begin(), v.end());
  CHECK_MESSAGE((*mm.first > T(0) && *mm.second < T(1)),
                what << " outside (0, 1): [" << *mm.first << ", " << *mm.second << "]");
}

// Biases of the convs right before an InstanceNorm ("0.bias"; "3.bias" in the paper variant) have a gradient of
// exactly zero (the norm removes any per-channel constant), so both sides hold only rounding noise and a relative
// error means nothing. They are checked against the scale of the same conv's weight gradient instead.
inline bool bias_before_norm(const std::string& name, MAVariant v) {
  const std::size_t dot = name.rfind('.', name.size() - 6);
  const std::string local = name.substr(dot == std::string::npos ? 0 : dot + 1);
  return local == "0.bias" || (v == MAVariant::paper && local == "3.bias");
}

template <class T>
void check_grad(const TestTensor<T>& grad, const Fixture& fx, const std::string& group, const std::string& name,
                MAVariant v, const std::string& what) {
  const HostArray& ref = fx.array(group + name);
  if (!bias_before_norm(name, v)) {
    check_close(grad, ref, tol_grad<T>(), what + name);
    return;
  }
  const HostArray& wref = fx.array(group + name.substr(0, name.size() - 4) + "weight");
  double scale = 0, ref_max = 0, ours_max = 0;
  for (double e : wref.data) scale = std::max(scale, std::abs(e));
  for (double e : ref.data) ref_max = std::max(ref_max, std::abs(e));
  for (T e : grad.to_vector()) ours_max = std::max(ours_max, std::abs(static_cast<double>(e)));
  REQUIRE(scale > 0);
  CHECK_MESSAGE(ref_max <= 1e-12 * scale, what << name << ": PyTorch's gradient is not zero: " << ref_max);
  const double err = ours_max / scale;
  ErrorStats::get().record(std::is_same_v<T, double>, err, what + name + " (zero, relative to the weight's)");
  CHECK_MESSAGE(err <= tol_grad<T>(),
                what << name << ": should be zero, max " << ours_max << " vs weight gradient " << scale);
}

template <class T>
void run_case(const Fixture& fx, const std::string& c, index_t m, index_t ch, index_t k, MAVariant v) {
  INFO("case " << c);
  REQUIRE(static_cast<index_t>(fx.scalar(c + "/num_modalities")) == m);
  FusionWithHead<T> net(m, ch, k, v);
  const StateDict sd = fx.group(c + "/state");
  CHECK(net.state_dict().keys() == sd.keys());  // same names in the same (registration) order
  net.load_state_dict(sd);                      // strict
  const auto f = features<T>(fx, c, m);

  const auto f_att = net.block.forward(f);
  const auto z = net.output.forward(f_att);
  check_close(net.block.dual(), fx.array(c + "/dual"), tol_output<T>(), c + " F_dual");
  for (index_t i = 0; i < m; ++i) {
    const auto& a = net.block.attention(i);
    check_close(a, fx.array(c + "/A/" + std::to_string(i)), tol_output<T>(), c + " A_" + std::to_string(i));
    check_open_interval(a, c + " A_" + std::to_string(i));
  }
  check_close(f_att, fx.array(c + "/F_att"), tol_output<T>(), c + " F_att");
  check_close(z, fx.array(c + "/Z"), tol_output<T>(), c + " Z");

  const auto df = net.block.backward(net.output.backward(fx.tensor<T>(c + "/grad_Z")));
  REQUIRE(static_cast<index_t>(df.size()) == m);
  for (index_t i = 0; i < m; ++i)
    check_close(df[i], fx.array(c + "/grad_F/" + std::to_string(i)), tol_grad<T>(), c + " dL/dF_" + std::to_string(i));
  for (auto& np : net.named_parameters())
    check_grad(np.second->grad, fx, c + "/grad/", np.first, v, c + " grad of ");

  // One MA module on its own (the last one, loaded from its slice of the state dict).
  MAModule<T, Backend> ma(MAModuleOptions(ch).variant(v));
  ma.load_state_dict(sub_dict(sd, "modality_aware_modules." + std::to_string(m - 1) + "."));
  const auto a = ma.forward(f[static_cast<std::size_t>(m - 1)], fx.tensor<T>(c + "/dual"));
  check_close(a, fx.array(c + "/ma/A"), tol_output<T>(), c + " MA module alone: A");
  const auto [dfi, ddual] = ma.backward(fx.tensor<T>(c + "/ma/grad_A"));
  check_close(dfi, fx.array(c + "/ma/grad_F"), tol_grad<T>(), c + " MA module alone: dL/dF_i");
  check_close(ddual, fx.array(c + "/ma/grad_dual"), tol_grad<T>(), c + " MA module alone: dL/dF_dual");
  for (auto& np : ma.named_parameters())
    check_grad(np.second->grad, fx, c + "/ma/grad/", np.first, v, c + " MA module alone: grad of ");
}

// gradcheck_module wants one input tensor: the M features concatenated over channels.
struct FusionProbe : Module<double, Backend> {
  MAFusion<double, Backend> block;
  index_t m, c;
  FusionProbe(index_t m_, index_t c_, MAVariant v, Generator& g)
      : block(MAFusionOptions(m_, c_).variant(v), g), m(m_), c(c_) {}
  void members(Members<double, Backend>& mem) override { mem.splice(block); }
  TestTensor<double> forward(const TestTensor<double>& x) {
    return block.forward(nn::split_channels(x, std::vector<index_t>(static_cast<std::size_t>(m), c)));
  }
  TestTensor<double> backward(const TestTensor<double>& dy) { return nn::cat_channels(block.backward(dy)); }
};

// The same for one MA module: input cat(F_i, F_dual).
struct ModuleProbe : Module<double, Backend> {
  MAModule<double, Backend> ma;
  ModuleProbe(index_t c, MAVariant v, Generator& g) : ma(MAModuleOptions(c).variant(v), g) {}
  void members(Members<double, Backend>& mem) override { mem.splice(ma); }
  TestTensor<double> forward(const TestTensor<double>& x) {
    const auto p = nn::split_channels(x, {x.size(1) / 2, x.size(1) / 2});
    return ma.forward(p[0], p[1]);
  }
  TestTensor<double> backward(const TestTensor<double>& dy) {
    auto d = ma.backward(dy);
    return nn::cat_channels(std::vector<TestTensor<double>>{d.first, d.second});
  }
};

// IN weights away from 1 / 0 so that their gradients and the affine path are exercised.
template <class M>
void randomise_norms(M& m, std::uint64_t seed) {
  Generator g(seed);
  for (auto& np : m.named_parameters()) {
    if (np.second->value.rank() != 1 || np.first.find("fusion") != std::string::npos) continue;
    auto v = np.second->value.to_vector();
    for (auto& e : v) e += 0.3 * g.normal();
    np.second->value.assign(v);
  }
}

std::vector<TestTensor<double>> random_features(index_t m, const Shape& s, std::uint64_t seed) {
  std::vector<TestTensor<double>> f;
  for (index_t i = 0; i < m; ++i) f.push_back(randn<double>(s, seed + static_cast<std::uint64_t>(i)));
  return f;
}

}  // namespace

TEST_CASE_TEMPLATE("MA fusion and MA modules match PyTorch (Generic_MAML names, M = 2 and 4, both variants)", T,
                   float, double) {
  Fixture fx("modality_aware");
  run_case<T>(fx, "m2_code", 2, 4, 3, MAVariant::code);
  run_case<T>(fx, "m2_paper", 2, 4, 3, MAVariant::paper);
  run_case<T>(fx, "m4_code", 4, 3, 4, MAVariant::code);
  run_case<T>(fx, "m4_paper", 4, 3, 4, MAVariant::paper);
}

TEST_CASE("MA fusion: parameter counts and names of the spec's presets") {
  Fixture fx("modality_aware");
  struct Preset {
    const char* name;
    index_t m, c, k;
    index_t fusion, ma_code, ma_paper;  // spec maml.md §2.3, §2.5, §8
  };
  const Preset presets[] = {{"tiny", 2, 4, 3, 868, 2624, 1808},
                            {"brats", 4, 16, 4, 27664, 83200, 56704},
                            {"liver", 2, 32, 2, 55328, 166144, 113024}};
  for (const auto& p : presets) {
    INFO("preset " << p.name);
    for (MAVariant v : {MAVariant::code, MAVariant::paper}) {
      const std::string key = std::string("counts/") + p.name + "_" + attention::to_string(v) + "/";
      FusionWithHead<float> net(p.m, p.c, p.k, v);
      index_t ma = 0;
      for (auto& mod : net.block.modality_aware_modules) ma += mod.num_parameters();
      CHECK(net.block.fusion.num_parameters() == p.fusion);
      CHECK(ma == (v == MAVariant::code ? p.ma_code : p.ma_paper));
      CHECK(net.output.num_parameters() == p.c * p.k);
      // ... and PyTorch's own count of the same modules.
      CHECK(static_cast<index_t>(fx.scalar(key + "fusion")) == net.block.fusion.num_parameters());
      CHECK(static_cast<index_t>(fx.scalar(key + "ma")) == ma);
      CHECK(static_cast<index_t>(fx.scalar(key + "output")) == net.output.num_parameters());
      if (v == MAVariant::paper) {
        // The spec's "kernel-only change" count: the paper variant less its extra InstanceNorm (2C per module).
        const index_t kernel_only = ma - p.m * 2 * p.c;
        CHECK(kernel_only == (std::string(p.name) == "tiny" ? 1792 : std::string(p.name) == "brats" ? 56576 : 112896));
      }
    }
  }
  // Tiny config (spec §8): the exact names and shapes of the official state dict.
  FusionWithHead<double> code(2, 4, 3, MAVariant::code), paper(2, 4, 3, MAVariant::paper);
  std::vector<std::string> names;
  for (auto& np : code.named_parameters()) names.push_back(np.first + np.second->value.shape().str());
  const std::vector<std::string> expected_code = {
      "fusion.weight(4, 8, 3, 3, 3)", "fusion.bias(4,)",
      "modality_aware_modules.0.0.weight(4, 8, 3, 3, 3)", "modality_aware_modules.0.0.bias(4,)",
      "modality_aware_modules.0.1.weight(4,)", "modality_aware_modules.0.1.bias(4,)",
      "modality_aware_modules.0.3.weight(4, 4, 3, 3, 3)", "modality_aware_modules.0.3.bias(4,)",
      "modality_aware_modules.1.0.weight(4, 8, 3, 3, 3)", "modality_aware_modules.1.0.bias(4,)",
      "modality_aware_modules.1.1.weight(4,)", "modality_aware_modules.1.1.bias(4,)",
      "modality_aware_modules.1.3.weight(4, 4, 3, 3, 3)", "modality_aware_modules.1.3.bias(4,)",
      "output.weight(3, 4, 1, 1, 1)"};
  CHECK(names == expected_code);
  names.clear();
  for (auto& np : paper.named_parameters()) names.push_back(np.first + np.second->value.shape().str());
  std::vector<std::string> expected_paper;
  for (auto& s : expected_code) {
    if (s.find(".3.weight") != std::string::npos)
      expected_paper.push_back(s.substr(0, s.find('(')) + "(4, 4, 1, 1, 1)");
    else
      expected_paper.push_back(s);
    if (s.find(".3.bias") != std::string::npos) {
      const std::string stem = s.substr(0, s.find(".3.bias"));
      expected_paper.push_back(stem + ".4.weight(4,)");
      expected_paper.push_back(stem + ".4.bias(4,)");
    }
  }
  CHECK(names == expected_paper);
  CHECK(code.state_dict().size() == 15);  // no buffers: InstanceNorm keeps no running statistics
  CHECK(MAFusionOptions(2, 4).variant() == MAVariant::code);
  CHECK(MAModuleOptions(4).variant() == MAVariant::code);
}

TEST_CASE("MA fusion and MA module pass the central-difference gradient check (double)") {
  Generator g(5);
  SUBCASE("fusion, M = 2, code") {
    FusionProbe probe(2, 2, MAVariant::code, g);
    randomise_norms(probe, 1);
    gradcheck_module(probe, randn<double>({2, 4, 3, 4, 5}, 2));
  }
  SUBCASE("fusion, M = 3, paper") {
    FusionProbe probe(3, 2, MAVariant::paper, g);
    randomise_norms(probe, 2);
    gradcheck_module(probe, randn<double>({2, 6, 4, 3, 2}, 3));
  }
  SUBCASE("MA module, code") {
    ModuleProbe probe(3, MAVariant::code, g);
    randomise_norms(probe, 3);
    gradcheck_module(probe, randn<double>({2, 6, 3, 4, 2}, 4));
  }
  SUBCASE("MA module, paper") {
    ModuleProbe probe(2, MAVariant::paper, g);
    randomise_norms(probe, 4);
    gradcheck_module(probe, randn<double>({2, 4, 2, 3, 4}, 5));
  }
}

TEST_CASE("MA fusion: parameter gradients accumulate; frozen parameters get none; backward is repeatable") {
  Generator g(9);
  MAFusion<double, Backend> ma(MAFusionOptions(3, 2).variant(MAVariant::paper), g);
  const auto f = random_features(3, {2, 2, 3, 4, 5}, 11);
  const auto out = ma.forward(f);
  const auto dy = randn<double>(out.shape(), 12);
  const auto d1 = ma.backward(dy);
  std::vector<std::vector<double>> once;
  for (auto* p : ma.parameters()) once.push_back(p->grad.to_vector());
  const auto d2 = ma.backward(dy);
  std::size_t k = 0;
  for (auto* p : ma.parameters()) {
    const auto twice = p->grad.to_vector();
    for (std::size_t i = 0; i < twice.size(); ++i) CHECK(twice[i] == doctest::Approx(2 * once[k][i]).epsilon(1e-12));
    ++k;
  }
  for (std::size_t i = 0; i < d1.size(); ++i) CHECK(d1[i].to_vector() == d2[i].to_vector());

  ma.zero_grad();
  ma.freeze();
  const auto d3 = ma.backward(dy);
  for (auto* p : ma.parameters()) CHECK(sum(p->grad) == 0.0);
  for (std::size_t i = 0; i < d1.size(); ++i) CHECK(d1[i].to_vector() == d3[i].to_vector());
}

TEST_CASE("MA fusion and MA module reject bad input") {
  Generator g(1);
  using Mod = MAModule<double, Backend>;  // no commas inside doctest's macros
  using Fus = MAFusion<double, Backend>;
  CHECK_THROWS_AS(Mod(MAModuleOptions(0), g), value_error);
  CHECK_THROWS_AS(Fus(MAFusionOptions(0, 4), g), value_error);
  CHECK_THROWS_AS(Fus(MAFusionOptions(2, 0), g), value_error);
  CHECK_THROWS_AS(Fus(MAFusionOptions(2, -1), g), value_error);

  MAFusion<double, Backend> ma(MAFusionOptions(2, 3), g);
  const Shape s{2, 3, 3, 4, 5};
  CHECK_THROWS_AS(ma.backward(randn<double>(s, 1)), value_error);  // before any forward
  // Wrong number of modalities.
  CHECK_THROWS_AS(ma.forward(random_features(1, s, 1)), shape_error);
  CHECK_THROWS_AS(ma.forward(random_features(3, s, 1)), shape_error);
  CHECK_THROWS_AS(ma.forward({}), shape_error);
  // Wrong channel count (in either input).
  CHECK_THROWS_AS(ma.forward({randn<double>({2, 4, 3, 4, 5}, 1), randn<double>({2, 4, 3, 4, 5}, 2)}), shape_error);
  CHECK_THROWS_AS(ma.forward({randn<double>(s, 1), randn<double>({2, 2, 3, 4, 5}, 2)}), shape_error);
  // Mismatched F_i shapes: spatial, batch.
  CHECK_THROWS_AS(ma.forward({randn<double>(s, 1), randn<double>({2, 3, 3, 5, 4}, 2)}), shape_error);
  CHECK_THROWS_AS(ma.forward({randn<double>(s, 1), randn<double>({1, 3, 3, 4, 5}, 2)}), shape_error);
  // Wrong rank, empty tensor, a single voxel (InstanceNorm needs more than one).
  CHECK_THROWS_AS(ma.forward({randn<double>({2, 3, 20}, 1), randn<double>({2, 3, 20}, 2)}), shape_error);
  CHECK_THROWS_AS(ma.forward({TestTensor<double>(), randn<double>(s, 2)}), shape_error);
  CHECK_THROWS_AS(ma.forward(random_features(2, {2, 3, 1, 1, 1}, 1)), shape_error);
  try {
    ma.forward({randn<double>(s, 1), randn<double>({2, 5, 3, 4, 5}, 2)});
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("mmnet::attention::MAFusion") != std::string::npos);
    CHECK(msg.find("F_1 channels: expected 3, got 5") != std::string::npos);
  }
  // Wrong gradient shape after a good forward.
  ma.forward(random_features(2, s, 3));
  CHECK_THROWS_AS(ma.backward(randn<double>({2, 3, 3, 4, 4}, 1)), shape_error);
  CHECK_THROWS_AS(ma.backward(randn<double>({2, 6, 3, 4, 5}, 1)), shape_error);

  MAModule<double, Backend> mod(MAModuleOptions(3), g);
  CHECK_THROWS_AS(mod.backward(randn<double>(s, 1)), value_error);
  CHECK_THROWS_AS(mod.forward(randn<double>({2, 4, 3, 4, 5}, 1), randn<double>(s, 2)), shape_error);
  CHECK_THROWS_AS(mod.forward(randn<double>(s, 1), randn<double>({2, 4, 3, 4, 5}, 2)), shape_error);
  CHECK_THROWS_AS(mod.forward(randn<double>(s, 1), randn<double>({2, 3, 3, 4, 6}, 2)), shape_error);
  CHECK_THROWS_AS(mod.forward(randn<double>(s, 1), randn<double>({2, 3, 20}, 2)), shape_error);
  mod.forward(randn<double>(s, 1), randn<double>(s, 2));
  CHECK_THROWS_AS(mod.backward(randn<double>({2, 3, 3, 4, 6}, 1)), shape_error);
}
