// bench/conv_weight_kernels.cpp: the cpu Conv3d / ConvTranspose3d weight-gradient kernels alone, on the cases of
// bench/conv_weight_torch.py (same names, same GFLOP count). Usage: mmnet_conv_weight_bench [THREADS] [REPEATS]
// [NAME FILTER] [w|k] pick cases and force one of the two kernels.
// Prints the minimum time over the repeats of the weight gradient, and of the weight + bias gradients.
#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <mmnet/mmnet.hpp>

using namespace mmnet;

namespace {

struct Case {
  const char* name;
  bool transposed;
  index_t cin, cout, d, h, w, kd, kh, kw, s, pd, ph, pw, dil;
};

double now(clockid_t clock) {
  timespec t{};
  clock_gettime(clock, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Minimum over the repeats of the wall time, or with one thread of the process's cpu time (which, on a shared
// machine, leaves out the time other processes held the core).
clockid_t timing_clock = CLOCK_MONOTONIC;

template <class F>
double min_time(int repeats, F&& f) {
  f();
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const double a = now(timing_clock);
    f();
    best = std::min(best, now(timing_clock) - a);
  }
  return best;
}

std::vector<float> random_vector(index_t n, std::uint64_t seed) {
  Generator g(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& e : v) e = static_cast<float>(g.normal());
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  const char* only = argc > 3 ? argv[3] : nullptr;
  // "w": always the W-vector kernel, "k": always the channel-vector kernel, else the dispatch's choice
  const std::string kernel = argc > 4 ? argv[4] : "auto";
  set_num_threads(threads);
  if (threads == 1) timing_clock = CLOCK_PROCESS_CPUTIME_ID;
  const Case cases[] = {
      {"1->8 16x128x128 k3", false, 1, 8, 16, 128, 128, 3, 3, 3, 1, 1, 1, 1, 1},
      {"8->8 16x128x128 k3", false, 8, 8, 16, 128, 128, 3, 3, 3, 1, 1, 1, 1, 1},
      {"8->8 16x128x128 k133", false, 8, 8, 16, 128, 128, 1, 3, 3, 1, 0, 1, 1, 1},
      {"16->16 16x128x128 k133", false, 16, 16, 16, 128, 128, 1, 3, 3, 1, 0, 1, 1, 1},
      {"32->32 32^3 k3", false, 32, 32, 32, 32, 32, 3, 3, 3, 1, 1, 1, 1, 1},
      {"64->64 16^3 k3", false, 64, 64, 16, 16, 16, 3, 3, 3, 1, 1, 1, 1, 1},
      {"64->32 16x64x64 k1", false, 64, 32, 16, 64, 64, 1, 1, 1, 1, 0, 0, 0, 1},
      {"16->32 16x64x64 k3 s2", false, 16, 32, 16, 64, 64, 3, 3, 3, 2, 1, 1, 1, 1},
      {"16->16 16x64x64 k3 d2", false, 16, 16, 16, 64, 64, 3, 3, 3, 1, 2, 2, 2, 2},
      {"T 32->16 8x32x32 k2 s2", true, 32, 16, 8, 32, 32, 2, 2, 2, 2, 0, 0, 0, 1},
  };
  for (const Case& c : cases)
    for (index_t n : {1, 2}) {
      const std::string name = std::string(c.name) + " N" + std::to_string(n);
      if (only && name.find(only) == std::string::npos) continue;
      double tw = 0, twb = 0, flops = 0;
      if (!c.transposed) {
        Conv3dProblem p;
        p.N = n, p.C = c.cin, p.D = c.d, p.H = c.h, p.W = c.w, p.K = c.cout;
        p.kd = c.kd, p.kh = c.kh, p.kw = c.kw, p.sd = p.sh = p.sw = c.s, p.pd = c.pd, p.ph = c.ph, p.pw = c.pw;
        p.dd = p.dh = p.dw = c.dil;
        p.compute_output();
        const auto x = random_vector(p.input_numel(), 1), dy = random_vector(p.output_numel(), 2);
        std::vector<float> dw(static_cast<std::size_t>(p.weight_numel())), db(static_cast<std::size_t>(p.K));
        auto weight = [&] {
          if (kernel == "w")
            backend::cpu_conv3d_weight::backward_weight(p, x.data(), dy.data(), dw.data());
          else if (kernel == "k")
            backend::cpu_conv3d_weight::backward_weight_channels(p, x.data(), dy.data(), dw.data());
          else
            backend::conv3d_backward_weight(cpu{}, p, x.data(), dy.data(), dw.data());
        };
        tw = min_time(repeats, weight);
        twb = min_time(repeats, [&] {
          weight();
          backend::conv3d_backward_bias(cpu{}, p, dy.data(), db.data());
        });
        flops = 2.0 * static_cast<double>(p.output_numel()) * static_cast<double>(p.C * p.kernel_volume());
      } else {
        ConvTranspose3dProblem p;
        p.N = n, p.C = c.cin, p.D = c.d, p.H = c.h, p.W = c.w, p.K = c.cout;
        p.kd = c.kd, p.kh = c.kh, p.kw = c.kw, p.sd = p.sh = p.sw = c.s, p.pd = c.pd, p.ph = c.ph, p.pw = c.pw;
        p.dd = p.dh = p.dw = c.dil;
        p.compute_output();
        const auto x = random_vector(p.input_numel(), 1), dy = random_vector(p.output_numel(), 2);
        std::vector<float> dw(static_cast<std::size_t>(p.weight_numel())), db(static_cast<std::size_t>(p.K));
        tw = min_time(repeats,
                      [&] { backend::conv_transpose3d_backward_weight(cpu{}, p, x.data(), dy.data(), dw.data()); });
        twb = min_time(repeats, [&] {
          backend::conv_transpose3d_backward_weight(cpu{}, p, x.data(), dy.data(), dw.data());
          backend::conv_transpose3d_backward_bias(cpu{}, p, dy.data(), db.data());
        });
        flops = 2.0 * static_cast<double>(p.input_numel()) * static_cast<double>(p.K * p.kd * p.kh * p.kw);
      }
      std::printf("%-34s weight %9.3f ms %7.1f GFLOP/s   weight+bias %9.3f ms\n", name.c_str(), tw * 1e3,
                  flops / tw * 1e-9, twb * 1e3);
      std::fflush(stdout);
    }
  return 0;
}
