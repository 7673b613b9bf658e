// bench/bench_main.cpp: mmnet timings, one JSON object per line (median of repeated runs).
// bench/run.sh runs this and bench/torch_bench.py in the same session and prints mmnet/PyTorch ratios.
//
//   mmnet_bench [--threads T] [--repeats R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <mmnet/mmnet.hpp>

using namespace mmnet;
using Clock = std::chrono::steady_clock;

namespace {

double median_seconds(int repeats, const std::function<void()>& f) {
  f();  // warm-up: first-touch allocations
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto a = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <class T>
Tensor<T, cpu> random_tensor(const Shape& s, Generator& g) {
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(g.normal());
  return Tensor<T, cpu>::from_vector(s, v);
}

struct ConvCase {
  index_t n, cin, cout, d, h, w, kd, kh, kw;
};

void bench_conv(const ConvCase& c, int repeats, int threads) {
  Generator g(0);
  const index_t pd = c.kd / 2, ph = c.kh / 2, pw = c.kw / 2;
  nn::Conv3d<float, cpu> conv(nn::Conv3dOptions(c.cin, c.cout, {c.kd, c.kh, c.kw}).padding({pd, ph, pw}), g);
  const auto x = random_tensor<float>({c.n, c.cin, c.d, c.h, c.w}, g);
  const auto y = conv.forward(x);
  const auto dy = random_tensor<float>(y.shape(), g);
  const double fwd = median_seconds(repeats, [&] { conv.forward(x); });
  const double bwd = median_seconds(repeats, [&] { conv.backward(dy); });  // data + weight + bias
  const double flops = 2.0 * static_cast<double>(y.numel()) * c.cin * c.kd * c.kh * c.kw;
  std::printf("{\"bench\": \"conv3d\", \"case\": \"%lldx%lld->%lld %lldx%lldx%lld k%lldx%lldx%lld\", \"threads\": %d, "
              "\"fwd_s\": %.6f, \"bwd_s\": %.6f, \"fwd_gflops\": %.2f, \"bwd_gflops\": %.2f}\n",
              (long long)c.n, (long long)c.cin, (long long)c.cout, (long long)c.d, (long long)c.h, (long long)c.w,
              (long long)c.kd, (long long)c.kh, (long long)c.kw, threads, fwd, bwd, flops / fwd * 1e-9,
              2 * flops / bwd * 1e-9);
}

void bench_tiny_step(int repeats, int threads) {
  Generator g(0);
  models::TinyNet<float, cpu> net(models::TinyNetOptions(2).width(8), g);
  nn::Sigmoid<float, cpu> sigmoid;
  losses::SoftDice<float, cpu> dice;
  losses::BCEWithLogits<float, cpu> bce;
  optim::Adam<float, cpu> opt(net.parameters(), optim::AdamOptions(1e-3));
  const auto x = random_tensor<float>({2, 2, 16, 64, 64}, g);
  auto y = random_tensor<float>({2, 1, 16, 64, 64}, g);
  auto yv = y.to_vector();
  for (auto& v : yv) v = v > 0.5f ? 1.f : 0.f;
  y.assign(yv);
  const double step = median_seconds(repeats, [&] {
    opt.zero_grad();
    const auto logits = net.forward(x);
    const auto prob = sigmoid.forward(logits);
    dice.forward(prob, y);
    bce.forward(logits, y);
    auto d = sigmoid.backward(dice.backward());
    add_(d, bce.backward());
    net.backward(d);
    opt.step();
  });
  std::printf("{\"bench\": \"tiny_net_train_step\", \"case\": \"2x2x16x64x64 width 8\", \"threads\": %d, \"step_s\": %.6f}\n",
              threads, step);
}

// MMFNet paper configuration, batch 2, 3 x 16 x 128 x 128, soft Dice, Adam (issue [C]'s reported step).
void bench_mmfnet_step(int repeats, int threads) {
  Generator g(0);
  MMFNet<float, cpu> net(MMFNetOptions::paper(), g);
  losses::SoftDice<float, cpu> dice;
  optim::Adam<float, cpu> opt(net.parameters(), optim::AdamOptions(1e-3));
  const auto x = random_tensor<float>({2, 3, 16, 128, 128}, g);
  auto y = random_tensor<float>({2, 1, 16, 128, 128}, g);
  auto yv = y.to_vector();
  for (auto& v : yv) v = v > 0.5f ? 1.f : 0.f;
  y.assign(yv);
  const double step = median_seconds(repeats, [&] {
    opt.zero_grad();
    const auto prob = net.forward(x);
    dice.forward(prob, y);
    net.backward(dice.backward());
    opt.step();
  });
  std::printf("{\"bench\": \"mmfnet_train_step\", \"case\": \"paper 2x3x16x128x128\", \"threads\": %d, \"step_s\": %.6f}\n",
              threads, step);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = get_num_threads(), repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
  }
  set_num_threads(threads);
  const std::vector<ConvCase> cases = {
      {1, 16, 16, 32, 64, 64, 3, 3, 3}, {1, 32, 32, 32, 32, 32, 3, 3, 3}, {2, 8, 8, 16, 128, 128, 1, 3, 3},
      {2, 24, 8, 16, 64, 64, 1, 1, 1}};
  for (const auto& c : cases) bench_conv(c, repeats, threads);
  bench_tiny_step(repeats, threads);
  bench_mmfnet_step(3, threads);
  return 0;
}
