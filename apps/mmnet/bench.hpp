// apps/mmnet/bench.hpp: `mmnet bench`, timings printed as one JSON object per line (bench/compare.py reads them
// and runs the same cases in PyTorch).
//
//   mmnet bench conv3d --cin C --cout K --shape DxHxW --kernel k|kD,kH,kW [--stride s|sD,sH,sW]
//                      [--padding p|pD,pH,pW] [--dilation d|dD,dH,dW] [--batch N] [--threads T] [--repeats R]
//       the three passes of one float32 convolution, timed separately through the cpu backend's kernels
//       (backend::conv3d_forward / conv3d_backward_data / conv3d_backward_weight, as nn::Conv3d calls them).
//       Default padding: kernel / 2 per axis (integer division; "same" size for odd kernels at stride 1 and
//       dilation 1), NOT adjusted for dilation: pass --padding with --dilation. Bias on (the forward adds it).
//       FLOPs of each pass: 2 * out_numel * C * kD * kH * kW (out_numel = N * K * OD * OH * OW).
//   mmnet bench train-step --model mmfnet|tiny|maml|cscn-bunet|cscn-acdnet|hmrnet-p|hmrnet-s|conresnet
//                          [--config PRESET] [--batch N] [--shape DxHxW] [--threads T] [--repeats R] [--width W]
//       one training step (zero_grad, forward, the model's loss, backward, [clipping,] optimiser step) and an
//       eval-mode forward (to probabilities). peak_rss_mb is this process's peak RSS (VmHWM; getrusage's ru_maxrss
//       as ru_maxrss_mb): one case a process. Per model (PyTorch twins in bench/compare.py):
//       mmfnet (--config: a mmfnet preset, default paper): soft Dice on the sigmoid output (mmfnet::Trainer's
//         loss, spec §3), Adam lr 1e-3; input N x M x D x H x W.
//       tiny (models::TinyNet, 2 input channels, width --width): soft Dice on sigmoid(logits) + BCE with logits
//         (tests/reference/tiny_net_ref.py), Adam lr 1e-3.
//       maml (--config small (default) | tiny | brats | liver): MAMLLoss code preset (DiceCE joint + deep-supervised
//         intra terms), maml::sgd_options() (SGD lr 0.01, Nesterov 0.99, wd 3e-5) with clip_grad_norm_ 12 (the
//         official code); labels uniform class indices; eval: predict() = softmax(Z).
//       cscn-bunet / cscn-acdnet (--config paper (default) | tiny): one CSCN stage on blocks, He-normal init,
//         DistanceWeightedFocal (gamma 2) with alpha = distance_weight_map(labels) computed once outside the
//         step (as training cuts it from the full volume), cscn::adam_options() (Adam lr 1e-3); eval: softmax.
//       hmrnet-p / hmrnet-s (--config paper (default) | tiny): HMRNetLoss theta 2.5, lambda (0.4, 0.3, 0.3, 0),
//         hmrnet::sgd_options() (SGD lr 0.01, Nesterov 0.99, wd 1e-5) with clip_grad_norm_ 12; eval: predict().
//       conresnet (--config small (default) | tiny | brats): ConResNetLoss (code mode, lambda 0.5) on targets y
//         (Bernoulli per region channel) and label_residual(y); X_res = image_residual(x), both made once outside
//         the step; conresnet::adam_options() (Adam lr 1e-4, wd 5e-4); eval: sigmoid(predict()).
//
// Every time is the median (and the minimum) of R >= 1 runs after one untimed warm-up run (default R 5).
// Inputs are N(0, 1) from Generator(--seed), binary targets Bernoulli(0.3), class labels uniform.
#pragma once
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <CLI/CLI.hpp>

#include <mmnet/core/ops.hpp>
#include <mmnet/core/parallel.hpp>
#include <mmnet/layers/activation.hpp>
#include <mmnet/layers/conv3d.hpp>
#include <mmnet/losses/bce_with_logits.hpp>
#include <mmnet/losses/soft_dice.hpp>
#include <mmnet/conresnet.hpp>
#include <mmnet/cscn.hpp>
#include <mmnet/hmrnet.hpp>
#include <mmnet/layers/softmax.hpp>
#include <mmnet/maml.hpp>
#include <mmnet/mmfnet.hpp>
#include <mmnet/models/tiny_net.hpp>
#include <mmnet/optim/adam.hpp>
#include <mmnet/optim/clip_grad.hpp>
#include <mmnet/optim/sgd.hpp>

#include "cli_common.hpp"

namespace mmnet_cli {

// ---- shared helpers --------------------------------------------------------------------------------------

// One JSON object on one line, keys in insertion order.
class JsonLine {
 public:
  JsonLine& add(const std::string& key, const std::string& v) { return raw(key, quote(v)); }
  JsonLine& add(const std::string& key, const char* v) { return raw(key, quote(v)); }
  JsonLine& add(const std::string& key, double v) {
    if (!std::isfinite(v)) return raw(key, "null");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return raw(key, buf);
  }
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
  JsonLine& add(const std::string& key, I v) { return raw(key, std::to_string(v)); }
  JsonLine& add(const std::string& key, const std::vector<index_t>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return raw(key, s + "]");
  }
  void print() const {
    std::printf("{%s}\n", body_.c_str());
    std::fflush(stdout);
  }

 private:
  static std::string quote(const std::string& s) {
    std::string q = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q + "\"";
  }
  JsonLine& raw(const std::string& key, const std::string& value) {
    body_ += (body_.empty() ? "" : ", ") + quote(key) + ": " + value;
    return *this;
  }
  std::string body_;
};

struct Timing {
  double median = 0, min = 0;
};

// prepare() (untimed) then f() (timed): once as warm-up (first-touch allocations, caches), then repeats times.
template <class Prepare, class F>
Timing time_runs(int repeats, Prepare&& prepare, F&& f) {
  using clock = std::chrono::steady_clock;
  prepare();
  f();
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    prepare();
    const auto a = clock::now();
    f();
    t.push_back(std::chrono::duration<double>(clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  const std::size_t n = t.size();
  return {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t.front()};
}

inline mmnet::Tensor<float, mmnet::cpu> normal_tensor(const mmnet::Shape& s, mmnet::Generator& g) {
  std::vector<float> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<float>(g.normal());
  return mmnet::Tensor<float, mmnet::cpu>::from_vector(s, v);
}

inline mmnet::Tensor<float, mmnet::cpu> class_tensor(const mmnet::Shape& s, index_t classes, mmnet::Generator& g) {
  std::vector<float> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<float>(g.integer(static_cast<std::uint64_t>(classes)));
  return mmnet::Tensor<float, mmnet::cpu>::from_vector(s, v);
}

inline mmnet::Tensor<float, mmnet::cpu> bernoulli_tensor(const mmnet::Shape& s, double p, mmnet::Generator& g) {
  std::vector<float> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = g.uniform() < p ? 1.f : 0.f;
  return mmnet::Tensor<float, mmnet::cpu>::from_vector(s, v);
}

// Peak resident set size of this process in MB: VmHWM of /proc/self/status, the high-water mark of this
// program's own address space. getrusage's ru_maxrss (also reported) is the fallback: on Linux it starts at the
// parent's RSS at fork time, so a child of a big process (bench/compare.py with torch loaded) inherits it.
inline double ru_maxrss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

// A "VmXXX:" line of /proc/self/status in MB, or -1 when unavailable.
inline double proc_status_mb(const char* key) {
  double mb = -1;
  if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    const std::size_t n = std::strlen(key);
    while (std::fgets(line, sizeof line, f)) {
      long long kb = 0;
      if (std::strncmp(line, key, n) == 0 && std::sscanf(line + n, ": %lld kB", &kb) == 1) {
        mb = static_cast<double>(kb) / 1024.0;
        break;
      }
    }
    std::fclose(f);
  }
  return mb;
}

inline double peak_rss_mb() {
  const double hwm = proc_status_mb("VmHWM");
  return hwm >= 0 ? hwm : ru_maxrss_mb();
}

inline void apply_threads(int threads) {
  if (threads < 0) throw cli_error("--threads: expected a positive count (0: OpenMP's default), got " + std::to_string(threads));
  if (threads > 0) mmnet::set_num_threads(threads);
}

inline void check_repeats(int repeats) {
  if (repeats < 1) throw cli_error("--repeats: expected >= 1, got " + std::to_string(repeats));
}

inline std::string triple_str(const std::vector<index_t>& v) {
  return std::to_string(v[0]) + "x" + std::to_string(v[1]) + "x" + std::to_string(v[2]);
}

// ---- bench conv3d ----------------------------------------------------------------------------------------

struct BenchConvArgs {
  index_t cin = 0, cout = 0, batch = 1;
  std::string shape, kernel, stride = "1", padding, dilation = "1";
  int threads = 0, repeats = 5;
  unsigned long long seed = 0;
};

inline int run_bench_conv3d(const BenchConvArgs& a) {
  apply_threads(a.threads);
  check_repeats(a.repeats);
  if (a.cin < 1) throw cli_error("--cin: expected >= 1, got " + std::to_string(a.cin));
  if (a.cout < 1) throw cli_error("--cout: expected >= 1, got " + std::to_string(a.cout));
  if (a.batch < 1) throw cli_error("--batch: expected >= 1, got " + std::to_string(a.batch));
  const auto dhw = parse_shape(a.shape);
  const auto k = parse_triple(a.kernel, "--kernel", 1);
  const auto s = parse_triple(a.stride, "--stride", 1);
  const auto d = parse_triple(a.dilation, "--dilation", 1);
  const auto p = a.padding.empty() ? std::vector<index_t>{k[0] / 2, k[1] / 2, k[2] / 2} : parse_triple(a.padding, "--padding", 0);

  mmnet::Generator g(a.seed);
  // The layer holds the weight and bias (PyTorch's initialisation) and maps options to the kernels' problem.
  mmnet::nn::Conv3d<float, mmnet::cpu> conv(mmnet::nn::Conv3dOptions(a.cin, a.cout, {k[0], k[1], k[2]})
                                                .stride({s[0], s[1], s[2]})
                                                .padding({p[0], p[1], p[2]})
                                                .dilation({d[0], d[1], d[2]}),
                                            g);
  const auto x = normal_tensor({a.batch, a.cin, dhw[0], dhw[1], dhw[2]}, g);
  const mmnet::Conv3dProblem pr = conv.problem(x.shape());
  if (!pr.valid_output())
    throw cli_error("conv3d: input " + triple_str(dhw) + " is too small for kernel " + triple_str(k) + ", padding " +
                    triple_str(p) + ", dilation " + triple_str(d) + " (output " + std::to_string(pr.OD) + "x" +
                    std::to_string(pr.OH) + "x" + std::to_string(pr.OW) + ")");
  mmnet::Tensor<float, mmnet::cpu> y({pr.N, pr.K, pr.OD, pr.OH, pr.OW});
  const auto dy = normal_tensor(y.shape(), g);
  mmnet::Tensor<float, mmnet::cpu> dx(x.shape()), dw(conv.weight.value.shape());
  const float* w = conv.weight.value.data();
  const float* b = conv.bias.value.data();

  const auto nothing = [] {};
  const Timing fwd = time_runs(a.repeats, nothing, [&] { mmnet::backend::conv3d_forward(mmnet::cpu{}, pr, x.data(), w, b, y.data()); });
  const Timing bwd_data = time_runs(a.repeats, nothing, [&] {
    mmnet::backend::conv3d_backward_data(mmnet::cpu{}, pr, dy.data(), w, dx.data());
  });
  // The weight gradient is accumulated (+=) as in Conv3d::backward: cleared before each run, untimed.
  const Timing bwd_weight = time_runs(a.repeats, [&] { dw.zero_(); }, [&] {
    mmnet::backend::conv3d_backward_weight(mmnet::cpu{}, pr, x.data(), dy.data(), dw.data());
  });

  const double flops = 2.0 * static_cast<double>(pr.output_numel()) * static_cast<double>(a.cin) *
                       static_cast<double>(k[0] * k[1] * k[2]);
  const std::string desc = std::to_string(a.cin) + "->" + std::to_string(a.cout) + " " + triple_str(dhw) + " k" +
                           triple_str(k) + " s" + triple_str(s) + " p" + triple_str(p) + " d" + triple_str(d) + " n" +
                           std::to_string(a.batch);
  JsonLine j;
  j.add("bench", "conv3d").add("impl", "mmnet").add("case", desc);
  j.add("batch", a.batch).add("cin", a.cin).add("cout", a.cout).add("shape", dhw).add("kernel", k).add("stride", s);
  j.add("padding", p).add("dilation", d).add("out_shape", std::vector<index_t>{pr.OD, pr.OH, pr.OW});
  j.add("threads", mmnet::get_num_threads()).add("repeats", a.repeats).add("gflop", flops * 1e-9);
  j.add("fwd_s", fwd.median).add("bwd_data_s", bwd_data.median).add("bwd_weight_s", bwd_weight.median);
  j.add("fwd_min_s", fwd.min).add("bwd_data_min_s", bwd_data.min).add("bwd_weight_min_s", bwd_weight.min);
  j.add("fwd_gflops", flops / fwd.median * 1e-9).add("bwd_data_gflops", flops / bwd_data.median * 1e-9);
  j.add("bwd_weight_gflops", flops / bwd_weight.median * 1e-9);
  j.print();
  return 0;
}

// ---- bench train-step ------------------------------------------------------------------------------------

struct BenchTrainArgs {
  std::string model = "mmfnet", config, shape = "16x128x128";  // config "": the model's default preset
  index_t batch = 2, width = 4;
  int threads = 0, repeats = 5;
  unsigned long long seed = 0;
};

inline void print_train_step(const BenchTrainArgs& a, const std::string& config, const std::vector<index_t>& input_shape,
                             index_t params, const Timing& step, const Timing& infer, double loss, double start_rss) {
  JsonLine j;
  j.add("bench", "train_step").add("impl", "mmnet").add("model", a.model).add("config", config);
  j.add("batch", a.batch).add("shape", std::vector<index_t>(input_shape.begin() + 2, input_shape.end()));
  j.add("input_shape", input_shape).add("threads", mmnet::get_num_threads()).add("repeats", a.repeats);
  j.add("params", params).add("train_step_s", step.median).add("train_step_min_s", step.min);
  j.add("infer_s", infer.median).add("infer_min_s", infer.min).add("peak_rss_mb", peak_rss_mb());
  j.add("ru_maxrss_mb", ru_maxrss_mb()).add("start_rss_mb", start_rss).add("last_loss", loss);
  j.print();
}

// The frame of every train-step case: R timed training steps in train mode (step_fn returns the loss), R timed
// eval-mode forwards, one JSON line.
template <class Net, class Step, class Infer>
int time_train_step(const BenchTrainArgs& a, const std::string& config, const mmnet::Shape& xs, Net& net,
                    double start_rss, Step&& step_fn, Infer&& infer_fn) {
  double loss = 0;
  net.train();
  const Timing step = time_runs(a.repeats, [] {}, [&] { loss = step_fn(); });
  net.eval();
  const Timing infer = time_runs(a.repeats, [] {}, infer_fn);
  print_train_step(a, config, xs.to_vector(), net.num_parameters(), step, infer, loss, start_rss);
  return 0;
}

inline void check_multiple(const std::vector<index_t>& dhw, const std::vector<index_t>& multiple, const std::string& what) {
  for (int i = 0; i < 3; ++i)
    if (dhw[i] % multiple[i] != 0)
      throw cli_error(std::string("--shape: size ") + "DHW"[i] + " must be a multiple of " + std::to_string(multiple[i]) +
                      " for " + what + ", got " + std::to_string(dhw[i]));
}

inline std::string config_or(const BenchTrainArgs& a, const char* fallback, const std::vector<std::string>& known) {
  const std::string c = a.config.empty() ? fallback : a.config;
  if (std::find(known.begin(), known.end(), c) == known.end()) {
    std::string k;
    for (const auto& n : known) k += (k.empty() ? "" : ", ") + n;
    throw cli_error("--config: unknown " + a.model + " preset '" + c + "' (known: " + k + ")");
  }
  return c;
}

// MAML, the official code's recipe (models/maml/training.hpp): MAMLLoss code preset, SGD-Nesterov, clipping at 12.
inline int bench_maml(const BenchTrainArgs& a, const std::vector<index_t>& dhw, mmnet::Generator& g, double start_rss) {
  using namespace mmnet;
  const std::string config = config_or(a, "small", {"small", "tiny", "brats", "liver"});
  const MAMLOptions o = config == "small" ? MAMLOptions::small()
                        : config == "tiny" ? MAMLOptions::tiny()
                        : config == "brats" ? MAMLOptions::brats() : MAMLOptions::liver();
  const index_t m = index_t(1) << o.num_pool();
  check_multiple(dhw, {m, m, m}, "maml " + config);
  MAML<float, cpu> net(o, g);
  MAMLLoss<float, cpu> loss_fn(MAMLLossOptions::code(o.num_pool()));
  optim::SGD<float, cpu> opt(net.parameters(), maml::sgd_options());
  const Shape xs{a.batch, o.modalities(), dhw[0], dhw[1], dhw[2]};
  const auto x = normal_tensor(xs, g);
  const auto y = class_tensor({a.batch, 1, dhw[0], dhw[1], dhw[2]}, o.classes(), g);
  return time_train_step(a, config, xs, net, start_rss, [&] {
    opt.zero_grad();
    const double loss = static_cast<double>(loss_fn.forward(net.forward(x), y));
    net.backward(loss_fn.backward());
    optim::clip_grad_norm_(net, maml::clip_norm);
    opt.step();
    return loss;
  }, [&] { net.predict(x); });
}

// One CSCN stage (spec §3, §4.2-4.3; models/cscn/training.hpp): He-normal init, distance-weighted focal loss with
// alpha from the labels (the full-volume map, computed once: cutting blocks is data loading), Adam lr 1e-3.
template <class Net>
int bench_cscn_stage(const BenchTrainArgs& a, const std::vector<index_t>& dhw, mmnet::Generator& g, double start_rss,
                     Net& net, index_t in_channels, const std::string& config) {
  using namespace mmnet;
  check_multiple(dhw, {4, 4, 4}, a.model);
  models::cscn::he_normal_init(net, g);
  losses::DistanceWeightedFocal<float, cpu> focal;
  nn::Softmax<float, cpu> softmax;
  optim::Adam<float, cpu> opt(net.parameters(), models::cscn::adam_options());
  const Shape xs{a.batch, in_channels, dhw[0], dhw[1], dhw[2]};
  const auto x = normal_tensor(xs, g);
  const auto y = bernoulli_tensor({a.batch, 1, dhw[0], dhw[1], dhw[2]}, 0.3, g);
  const auto alpha = losses::distance_weight_map(y);
  return time_train_step(a, config, xs, net, start_rss, [&] {
    opt.zero_grad();
    const double loss = static_cast<double>(focal.forward(net.forward(x), y, alpha));
    net.backward(focal.backward());
    opt.step();
    return loss;
  }, [&] { softmax.forward(net.forward(x)); });
}

inline int bench_cscn(const BenchTrainArgs& a, const std::vector<index_t>& dhw, mmnet::Generator& g, double start_rss) {
  using namespace mmnet;
  const std::string config = config_or(a, "paper", {"paper", "tiny"});
  if (a.model == "cscn-bunet") {
    const BUNetOptions o = config == "tiny" ? BUNetOptions::tiny() : BUNetOptions::paper();
    BUNet<float, cpu> net(o, g);
    return bench_cscn_stage(a, dhw, g, start_rss, net, o.in_channels(), config);
  }
  const ACDNetOptions o = config == "tiny" ? ACDNetOptions::tiny() : ACDNetOptions::paper();
  ACDNet<float, cpu> net(o, g);
  return bench_cscn_stage(a, dhw, g, start_rss, net, o.in_channels(), config);
}

// HMRNet (models/hmrnet/training.hpp): HMRNetLoss theta 2.5 (ventricles), SGD-Nesterov, clipping at 12.
inline int bench_hmrnet(const BenchTrainArgs& a, const std::vector<index_t>& dhw, mmnet::Generator& g, double start_rss) {
  using namespace mmnet;
  const std::string config = config_or(a, "paper", {"paper", "tiny"});
  const bool p = a.model == "hmrnet-p";
  const HMRNetOptions o = config == "tiny" ? (p ? HMRNetOptions::tiny_p() : HMRNetOptions::tiny_s())
                                           : (p ? HMRNetOptions::paper_p() : HMRNetOptions::paper_s());
  const ExpandingArray3 sm = o.size_multiple();
  check_multiple(dhw, {sm[0], sm[1], sm[2]}, a.model + " " + config);
  HMRNet<float, cpu> net(o, g);
  HMRNetLoss<float, cpu> loss_fn(HMRNetLossOptions().theta(2.5));
  optim::SGD<float, cpu> opt(net.parameters(), hmrnet::sgd_options());
  const Shape xs{a.batch, o.in_channels(), dhw[0], dhw[1], dhw[2]};
  const auto x = normal_tensor(xs, g);
  const auto y = bernoulli_tensor({a.batch, 1, dhw[0], dhw[1], dhw[2]}, 0.3, g);
  return time_train_step(a, config, xs, net, start_rss, [&] {
    opt.zero_grad();
    const double loss = static_cast<double>(loss_fn.forward(net.forward(x), y));
    net.backward(loss_fn.backward());
    optim::clip_grad_norm_(net, hmrnet::clip_norm);
    opt.step();
    return loss;
  }, [&] { net.predict(x); });
}

// ConResNet (models/conresnet/training.hpp): ConResNetLoss code mode, Adam lr 1e-4 with weight decay 5e-4.
inline int bench_conresnet(const BenchTrainArgs& a, const std::vector<index_t>& dhw, mmnet::Generator& g, double start_rss) {
  using namespace mmnet;
  const std::string config = config_or(a, "small", {"small", "tiny", "brats"});
  const ConResNetOptions o = config == "small" ? ConResNetOptions::small()
                             : config == "tiny" ? ConResNetOptions::tiny() : ConResNetOptions::brats();
  const index_t m = ConResNetOptions::size_multiple();
  check_multiple(dhw, {m, m, m}, "conresnet " + config);
  ConResNet<float, cpu> net(o, g);
  ConResNetLoss<float, cpu> loss_fn;
  nn::Sigmoid<float, cpu> sigmoid;
  optim::Adam<float, cpu> opt(net.parameters(), conresnet::adam_options());
  const Shape xs{a.batch, o.in_channels(), dhw[0], dhw[1], dhw[2]};
  const auto x = normal_tensor(xs, g);
  const auto x_res = conresnet::image_residual(x);
  const auto y = bernoulli_tensor({a.batch, o.num_classes(), dhw[0], dhw[1], dhw[2]}, 0.3, g);
  const auto y_res = conresnet::label_residual(y);
  return time_train_step(a, config, xs, net, start_rss, [&] {
    opt.zero_grad();
    const double loss = static_cast<double>(loss_fn.forward(net.forward(x, x_res), y, y_res));
    net.backward(loss_fn.backward());
    opt.step();
    return loss;
  }, [&] { sigmoid.forward(net.predict(x, x_res)); });
}

inline int run_bench_train_step(const BenchTrainArgs& a) {
  using namespace mmnet;
  const double start_rss = proc_status_mb("VmRSS");  // the program before any model or data
  apply_threads(a.threads);
  check_repeats(a.repeats);
  if (a.batch < 1) throw cli_error("--batch: expected >= 1, got " + std::to_string(a.batch));
  const auto dhw = parse_shape(a.shape);
  Generator g(a.seed);

  if (a.model == "mmfnet") {
    const std::string config = a.config.empty() ? "paper" : a.config;
    const MMFNetOptions o = options_for(a.model, config);
    o.validate();
    check_multiple(dhw, {o.size_multiple(), o.size_multiple(), o.size_multiple()}, a.model + " " + config);
    MMFNet<float, cpu> net(o, g);
    losses::SoftDice<float, cpu> dice;
    optim::Adam<float, cpu> opt(net.parameters(), optim::AdamOptions(1e-3));
    const Shape xs{a.batch, o.modalities(), dhw[0], dhw[1], dhw[2]};
    const auto x = normal_tensor(xs, g);
    const auto y = bernoulli_tensor({a.batch, 1, dhw[0], dhw[1], dhw[2]}, 0.3, g);
    net.release_activations_after_backward(true);  // as train::Trainer does (PyTorch frees saved tensors too)
    return time_train_step(a, config, xs, net, start_rss, [&] {
      opt.zero_grad();
      const double loss = static_cast<double>(dice.forward(net.forward(x), y));
      net.backward(dice.backward());
      opt.step();
      return loss;
    }, [&] { net.forward(x); });
  }
  if (a.model == "tiny") {
    if (a.width < 1) throw cli_error("--width: expected >= 1, got " + std::to_string(a.width));
    models::TinyNet<float, cpu> net(models::TinyNetOptions(2).width(a.width), g);
    nn::Sigmoid<float, cpu> sigmoid;
    losses::SoftDice<float, cpu> dice;
    losses::BCEWithLogits<float, cpu> bce;
    optim::Adam<float, cpu> opt(net.parameters(), optim::AdamOptions(1e-3));
    const Shape xs{a.batch, 2, dhw[0], dhw[1], dhw[2]};
    const auto x = normal_tensor(xs, g);
    const auto y = bernoulli_tensor({a.batch, 1, dhw[0], dhw[1], dhw[2]}, 0.3, g);
    return time_train_step(a, "width" + std::to_string(a.width), xs, net, start_rss, [&] {
      opt.zero_grad();
      const auto logits = net.forward(x);
      const double loss = static_cast<double>(dice.forward(sigmoid.forward(logits), y)) + static_cast<double>(bce.forward(logits, y));
      auto d = sigmoid.backward(dice.backward());
      add_(d, bce.backward());
      net.backward(d);
      opt.step();
      return loss;
    }, [&] { sigmoid.forward(net.forward(x)); });
  }
  if (a.model == "maml") return bench_maml(a, dhw, g, start_rss);
  if (a.model == "cscn-bunet" || a.model == "cscn-acdnet") return bench_cscn(a, dhw, g, start_rss);
  if (a.model == "hmrnet-p" || a.model == "hmrnet-s") return bench_hmrnet(a, dhw, g, start_rss);
  if (a.model == "conresnet") return bench_conresnet(a, dhw, g, start_rss);
  throw cli_error("--model: unknown model '" + a.model +
                  "' (known: mmfnet, tiny, maml, cscn-bunet, cscn-acdnet, hmrnet-p, hmrnet-s, conresnet)");
}

// ---- registration ----------------------------------------------------------------------------------------

struct BenchCommands {
  CLI::App* conv3d = nullptr;
  CLI::App* train_step = nullptr;
};

inline BenchCommands add_bench_commands(CLI::App& app, BenchConvArgs& ca, BenchTrainArgs& ta) {
  auto* bench = app.add_subcommand("bench", "Timings as JSON lines (bench/compare.py compares them with PyTorch)");
  bench->require_subcommand(1);
  BenchCommands c;
  c.conv3d = bench->add_subcommand("conv3d", "Forward, backward-data and backward-weight of one float32 Conv3d");
  c.conv3d->add_option("--cin", ca.cin, "Input channels")->required();
  c.conv3d->add_option("--cout", ca.cout, "Output channels")->required();
  c.conv3d->add_option("--shape", ca.shape, "Input size DxHxW")->required();
  c.conv3d->add_option("--kernel", ca.kernel, "Kernel size: k or kD,kH,kW")->required();
  c.conv3d->add_option("--stride", ca.stride, "Stride: s or sD,sH,sW")->capture_default_str();
  c.conv3d->add_option("--padding", ca.padding, "Zero padding: p or pD,pH,pW (default: kernel / 2 per axis)");
  c.conv3d->add_option("--dilation", ca.dilation, "Dilation: d or dD,dH,dW")->capture_default_str();
  c.conv3d->add_option("--batch", ca.batch, "Batch size N")->capture_default_str();
  c.conv3d->add_option("--threads", ca.threads, "Threads (0: OpenMP's default)")->capture_default_str();
  c.conv3d->add_option("--repeats", ca.repeats, "Timed runs after one warm-up; the median is reported")->capture_default_str();
  c.conv3d->add_option("--seed", ca.seed, "Seed of the data and weights")->capture_default_str();

  c.train_step = bench->add_subcommand("train-step", "One training step and one eval-mode forward of a model");
  c.train_step->add_option("--model", ta.model,
                           "mmfnet, tiny (models::TinyNet), maml, cscn-bunet, cscn-acdnet, hmrnet-p, hmrnet-s or conresnet")
      ->capture_default_str();
  c.train_step->add_option("--config", ta.config,
                           "Preset: mmfnet's (default paper); maml small (default), tiny, brats, liver; cscn-* and "
                           "hmrnet-* paper (default), tiny; conresnet small (default), tiny, brats");
  c.train_step->add_option("--batch", ta.batch, "Batch size N")->capture_default_str();
  c.train_step->add_option("--shape", ta.shape, "Input size DxHxW")->capture_default_str();
  c.train_step->add_option("--width", ta.width, "tiny: channels of its convolutions")->capture_default_str();
  c.train_step->add_option("--threads", ta.threads, "Threads (0: OpenMP's default)")->capture_default_str();
  c.train_step->add_option("--repeats", ta.repeats, "Timed steps after one warm-up; the median is reported")->capture_default_str();
  c.train_step->add_option("--seed", ta.seed, "Seed of the data and weights")->capture_default_str();
  return c;
}

}  // namespace mmnet_cli
