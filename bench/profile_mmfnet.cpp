// bench/profile_mmfnet.cpp: where one MMFNet training step (paper config, batch 2, 3 x 16 x 128 x 128, soft
// Dice, Adam) spends its time, per component. It replays MMFNet::forward/backward through the model's public
// members with a timer around each layer call (the same calls in the same order, so the same numerics; checked
// against net.forward once), and prints a table of the minimum over the repetitions of each component's total.
//
//   mmnet_profile_mmfnet [--threads T] [--repeats R] [--step-only] [--cache-mb M] [--release] [--infer]
//
// --step-only times net.forward + dice + net.backward + adam as bench_main does (no per-layer timers) and
// prints the cpu allocator's cached bytes; --cache-mb sets the cpu allocator's cache limit (0: no caching);
// --release turns on MMFNet::release_activations_after_backward (as Trainer does) for --step-only; --infer
// times an eval-mode forward instead of the training step.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <mmnet/mmnet.hpp>

using namespace mmnet;
using Clock = std::chrono::steady_clock;
using tensor = Tensor<float, cpu>;

namespace {

std::map<std::string, double> acc;  // component -> seconds in the current step
std::vector<std::string> order;     // first-seen order for the table

template <class F>
auto timed(const std::string& what, F&& f) {
  const auto a = Clock::now();
  auto r = f();
  const double s = std::chrono::duration<double>(Clock::now() - a).count();
  if (!acc.count(what)) order.push_back(what);
  acc[what] += s;
  return r;
}
template <class F>
void timed_void(const std::string& what, F&& f) {
  timed(what, [&] { f(); return 0; });
}

tensor random_tensor(const Shape& s, Generator& g) {
  std::vector<float> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<float>(g.normal());
  return tensor::from_vector(s, v);
}

using Net = MMFNet<float, cpu>;

// CBR = conv -> bn -> relu with separate timers.
template <class Conv, class BN, class R>
tensor cbr_forward(Conv& conv, BN& bn, R& relu, const tensor& x) {
  const tensor c = timed("conv3d fwd", [&] { return conv.forward(x); });
  const tensor b = timed("batchnorm fwd", [&] { return bn.forward(c); });
  return timed("relu fwd", [&] { return relu.forward(b); });
}
template <class Conv, class BN, class R>
tensor cbr_backward(Conv& conv, BN& bn, R& relu, const tensor& dy) {
  const tensor a = timed("relu bwd", [&] { return relu.backward(dy); });
  const tensor b = timed("batchnorm bwd", [&] { return bn.backward(a); });
  return timed("conv3d bwd (data+weight+bias)", [&] { return conv.backward(b); });
}

struct Replay {
  Net& net;
  std::vector<std::vector<tensor>> skips;  // [m][l]
  std::vector<nn::MaxPool3d<float, cpu>> pools;
  std::vector<nn::Concat<float, cpu>> fuse_cat, dec_cat;
  nn::Concat<float, cpu> bottom_cat;
  nn::Sigmoid<float, cpu> sigmoid;
  std::vector<tensor> fori, fr;

  explicit Replay(Net& n) : net(n) {
    const std::size_t levels = n.encoders[0].blocks.size();
    for (std::size_t i = 0; i < n.encoders.size() * levels; ++i) pools.emplace_back(nn::MaxPool3dOptions(2));
    fuse_cat.resize(levels);
    dec_cat.resize(levels);
    fori.resize(levels);
    fr.resize(levels);
  }

  tensor forward(const tensor& x) {
    const std::size_t e = net.encoders.size(), levels = net.encoders[0].blocks.size();
    const auto xs = timed("split/concat/copies", [&] { return nn::split_channels(x, std::vector<index_t>(e, 1)); });
    skips.assign(e, {});
    std::vector<tensor> bottoms;
    for (std::size_t m = 0; m < e; ++m) {
      auto& enc = net.encoders[m];
      tensor h = xs[m];
      for (std::size_t l = 0; l < levels; ++l) {
        auto& b = enc.blocks[l];
        h = cbr_forward(b.conv1, b.bn1, b.relu1, h);
        h = cbr_forward(b.conv2, b.bn2, b.relu2, h);
        skips[m].push_back(h);
        h = timed("maxpool fwd", [&] { return pools[m * levels + l].forward(h); });
      }
      bottoms.push_back(cbr_forward(enc.bottleneck.conv, enc.bottleneck.bn, enc.bottleneck.relu, h));
    }
    std::vector<tensor> fused(levels);
    for (std::size_t l = 0; l < levels; ++l) {
      auto& f = net.fusions[l];
      std::vector<tensor> in;
      for (std::size_t m = 0; m < e; ++m) in.push_back(skips[m][l]);
      fori[l] = timed("split/concat/copies", [&] { return fuse_cat[l].forward(in); });
      const tensor fc = timed("cbam channel attention fwd", [&] { return f.channel_attention.forward(fori[l]); });
      const tensor fs = timed("cbam spatial attention fwd", [&] { return f.spatial_attention.forward(fc); });
      const tensor sum = timed("elementwise add", [&] { return add(fori[l], fs); });
      auto& r = f.rfblock;
      fr[l] = timed("conv3d fwd", [&] { return r.reduce.forward(sum); });
      const tensor c1 = timed("conv3d fwd", [&] { return r.conv1.forward(fr[l]); });
      const tensor b = timed("batchnorm fwd", [&] { return r.bn.forward(c1); });
      const tensor a = timed("relu fwd", [&] { return r.relu.forward(b); });
      tensor y = timed("conv3d fwd", [&] { return r.conv2.forward(a); });
      timed_void("elementwise add", [&] { add_(y, fr[l]); });
      fused[l] = y;
    }
    tensor d = timed("split/concat/copies", [&] { return bottom_cat.forward(bottoms); });
    for (std::size_t l = levels; l-- > 0;) {
      auto& b = net.decoder.blocks[l];
      const tensor u = timed("conv_transpose3d fwd", [&] { return b.up.forward(d); });
      const tensor c = timed("split/concat/copies", [&] { return dec_cat[l].forward({fused[l], u}); });
      d = cbr_forward(b.conv, b.bn, b.relu, c);
    }
    const tensor logits = timed("conv3d fwd", [&] { return net.head.forward(d); });
    return timed("sigmoid fwd", [&] { return sigmoid.forward(logits); });
  }

  void backward(const tensor& dprob) {
    const std::size_t e = net.encoders.size(), levels = net.encoders[0].blocks.size();
    const tensor dl = timed("sigmoid bwd", [&] { return sigmoid.backward(dprob); });
    tensor d = timed("conv3d bwd (data+weight+bias)", [&] { return net.head.backward(dl); });
    std::vector<tensor> dfused(levels);
    for (std::size_t l = 0; l < levels; ++l) {
      auto& b = net.decoder.blocks[l];
      const tensor dc = cbr_backward(b.conv, b.bn, b.relu, d);
      const auto parts = timed("split/concat/copies", [&] { return dec_cat[l].backward(dc); });
      dfused[l] = parts[0];
      d = timed("conv_transpose3d bwd", [&] { return b.up.backward(parts[1]); });
    }
    const auto dbottoms = timed("split/concat/copies", [&] { return bottom_cat.backward(d); });
    std::vector<std::vector<tensor>> dskips(e, std::vector<tensor>(levels));
    for (std::size_t l = 0; l < levels; ++l) {
      auto& f = net.fusions[l];
      auto& r = f.rfblock;
      const tensor& dy = dfused[l];
      const tensor d2 = timed("conv3d bwd (data+weight+bias)", [&] { return r.conv2.backward(dy); });
      const tensor d3 = timed("relu bwd", [&] { return r.relu.backward(d2); });
      const tensor d4 = timed("batchnorm bwd", [&] { return r.bn.backward(d3); });
      tensor dfr = timed("conv3d bwd (data+weight+bias)", [&] { return r.conv1.backward(d4); });
      timed_void("elementwise add", [&] { add_(dfr, dy); });
      const tensor dsum = timed("conv3d bwd (data+weight+bias)", [&] { return r.reduce.backward(dfr); });
      const tensor dfc = timed("cbam spatial attention bwd", [&] { return f.spatial_attention.backward(dsum); });
      tensor dfori = timed("cbam channel attention bwd", [&] { return f.channel_attention.backward(dfc); });
      timed_void("elementwise add", [&] { add_(dfori, dsum); });
      const auto dm = timed("split/concat/copies", [&] { return fuse_cat[l].backward(dfori); });
      for (std::size_t m = 0; m < e; ++m) dskips[m][l] = dm[m];
    }
    for (std::size_t m = 0; m < e; ++m) {
      auto& enc = net.encoders[m];
      tensor g = cbr_backward(enc.bottleneck.conv, enc.bottleneck.bn, enc.bottleneck.relu, dbottoms[m]);
      for (std::size_t l = levels; l-- > 0;) {
        g = timed("maxpool bwd", [&] { return pools[m * levels + l].backward(g); });
        timed_void("elementwise add", [&] { add_(g, dskips[m][l]); });
        auto& b = enc.blocks[l];
        g = cbr_backward(b.conv2, b.bn2, b.relu2, g);
        g = cbr_backward(b.conv1, b.bn1, b.relu1, g);
      }
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  int threads = get_num_threads(), repeats = 3;
  bool step_only = false, release = false, infer = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--step-only")) step_only = true;
    else if (!std::strcmp(argv[i], "--release")) release = true;
    else if (!std::strcmp(argv[i], "--infer")) infer = step_only = true;
    else if (!std::strcmp(argv[i], "--cache-mb") && i + 1 < argc)
      backend::set_cache_limit(static_cast<std::size_t>(std::atol(argv[++i])) << 20);
  }
  set_num_threads(threads);
  Generator g(0);
  Net net(MMFNetOptions::paper(), g);
  losses::SoftDice<float, cpu> dice;
  optim::Adam<float, cpu> opt(net.parameters(), optim::AdamOptions(1e-3));
  const auto x = random_tensor({2, 3, 16, 128, 128}, g);
  auto y = random_tensor({2, 1, 16, 128, 128}, g);
  auto yv = y.to_vector();
  for (auto& v : yv) v = v > 0.5f ? 1.f : 0.f;
  y.assign(yv);

  if (step_only) {
    net.release_activations_after_backward(release);
    if (infer) net.eval();
    std::vector<double> t;
    for (int r = 0; r <= repeats; ++r) {
      const auto a = Clock::now();
      if (infer) {
        net.forward(x);
      } else {
        opt.zero_grad();
        const auto prob = net.forward(x);
        dice.forward(prob, y);
        net.backward(dice.backward());
        opt.step();
      }
      if (r > 0) t.push_back(std::chrono::duration<double>(Clock::now() - a).count());  // r == 0: warm-up
    }
    std::sort(t.begin(), t.end());
    std::printf("{\"bench\": \"%s\", \"threads\": %d, \"min_s\": %.4f, \"median_s\": %.4f, "
                "\"cached_mb\": %.1f}\n",
                infer ? "mmfnet_inference" : "mmfnet_train_step", threads, t.front(), t[t.size() / 2],
                static_cast<double>(backend::cached_memory_bytes()) / (1 << 20));
    return 0;
  }

  Replay replay(net);
  {  // the replay computes what net.forward computes
    const auto a = replay.forward(x).to_vector();
    const auto b = net.forward(x).to_vector();
    double md = 0;
    for (std::size_t i = 0; i < a.size(); ++i) md = std::max(md, std::abs(static_cast<double>(a[i]) - b[i]));
    std::printf("replay vs net.forward: max |diff| %.3g\n", md);
  }
  std::map<std::string, double> best;
  double best_step = 1e30;
  for (int r = 0; r <= repeats; ++r) {
    acc.clear();
    const auto a = Clock::now();
    timed_void("optimizer zero_grad", [&] { opt.zero_grad(); });
    const tensor prob = replay.forward(x);
    timed_void("soft dice fwd", [&] { dice.forward(prob, y); });
    const tensor dp = timed("soft dice bwd", [&] { return dice.backward(); });
    replay.backward(dp);
    timed_void("adam step", [&] { opt.step(); });
    const double step = std::chrono::duration<double>(Clock::now() - a).count();
    if (r == 0) continue;  // warm-up
    best_step = std::min(best_step, step);
    for (auto& [k, v] : acc) best[k] = best.count(k) ? std::min(best[k], v) : v;
  }
  double timed_sum = 0;
  for (auto& [k, v] : best) timed_sum += v;
  std::vector<std::pair<double, std::string>> rows;
  for (auto& [k, v] : best) rows.push_back({v, k});
  std::sort(rows.rbegin(), rows.rend());
  std::printf("MMFNet paper step, batch 2, 3x16x128x128, %d thread(s), min of %d: %.1f ms\n", threads, repeats,
              best_step * 1e3);
  std::printf("| component | ms | %% of step |\n|---|---:|---:|\n");
  for (auto& [v, k] : rows) std::printf("| %s | %.1f | %.1f |\n", k.c_str(), v * 1e3, 100 * v / best_step);
  std::printf("| (untimed: glue, vector bookkeeping) | %.1f | %.1f |\n", (best_step - timed_sum) * 1e3,
              100 * (best_step - timed_sum) / best_step);
  return 0;
}
