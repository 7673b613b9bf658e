// bench/conv_kernels.cpp: GFLOP/s of the cpu Conv3d forward and backward-data kernels (raw pointers, no layer)
// on the issue [D] case table; the minimum over repeats, as the machine is shared. With one thread the time is
// the thread's CPU time (time spent descheduled by other processes does not count).
//
//   mmnet_conv_kernels [--threads T] [--repeats R] [--filter SUBSTRING]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <mmnet/core/parallel.hpp>
#include <mmnet/core/random.hpp>
#include <mmnet/layers/conv3d.hpp>

using namespace mmnet;
using Clock = std::chrono::steady_clock;

namespace {

struct Case {
  const char* name;
  index_t n, c, k, d, h, w, kd, kh, kw, s, dil;
};

bool cpu_clock = false;

double now() {
  if (cpu_clock) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

template <class F>
double min_seconds(int repeats, F&& f) {
  f();  // warm-up
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const double a = now();
    f();
    best = std::min(best, now() - a);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, repeats = 5;
  std::string filter;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--filter")) filter = argv[i + 1];
  }
  set_num_threads(threads);
  cpu_clock = threads == 1;
  const std::vector<Case> cases = {
      {"1->8 16x128x128 k3", 1, 1, 8, 16, 128, 128, 3, 3, 3, 1, 1},
      {"8->8 16x128x128 k3", 1, 8, 8, 16, 128, 128, 3, 3, 3, 1, 1},
      {"8->8 16x128x128 k133", 1, 8, 8, 16, 128, 128, 1, 3, 3, 1, 1},
      {"16->16 16x128x128 k133", 1, 16, 16, 16, 128, 128, 1, 3, 3, 1, 1},
      {"32->32 32^3 k3", 1, 32, 32, 32, 32, 32, 3, 3, 3, 1, 1},
      {"64->64 16^3 k3", 1, 64, 64, 16, 16, 16, 3, 3, 3, 1, 1},
      {"64->32 16x64x64 k1", 1, 64, 32, 16, 64, 64, 1, 1, 1, 1, 1},
      {"16->32 16x64x64 k3 s2", 1, 16, 32, 16, 64, 64, 3, 3, 3, 2, 1},
      {"16->16 16x64x64 k3 d2", 1, 16, 16, 16, 64, 64, 3, 3, 3, 1, 2},
      {"N2 8->8 16x128x128 k3", 2, 8, 8, 16, 128, 128, 3, 3, 3, 1, 1},
      {"N2 32->32 32^3 k3", 2, 32, 32, 32, 32, 32, 3, 3, 3, 1, 1},
      {"N2 64->64 16^3 k3", 2, 64, 64, 16, 16, 16, 3, 3, 3, 1, 1},
  };
  Generator g(0);
  for (const Case& cs : cases) {
    if (!filter.empty() && std::string(cs.name).find(filter) == std::string::npos) continue;
    Conv3dProblem p;
    p.N = cs.n, p.C = cs.c, p.K = cs.k, p.D = cs.d, p.H = cs.h, p.W = cs.w;
    p.kd = cs.kd, p.kh = cs.kh, p.kw = cs.kw;
    p.sd = p.sh = p.sw = cs.s;
    p.dd = p.dh = p.dw = cs.dil;
    p.pd = cs.kd / 2 * cs.dil, p.ph = cs.kh / 2 * cs.dil, p.pw = cs.kw / 2 * cs.dil;
    p.compute_output();
    std::vector<float> x(static_cast<std::size_t>(p.input_numel())), w(static_cast<std::size_t>(p.weight_numel())),
        b(static_cast<std::size_t>(p.K)), y(static_cast<std::size_t>(p.output_numel())), dx(x.size());
    for (auto& v : x) v = static_cast<float>(g.normal());
    for (auto& v : w) v = static_cast<float>(g.normal());
    for (auto& v : b) v = static_cast<float>(g.normal());
    const double flops = 2.0 * static_cast<double>(p.output_numel()) * static_cast<double>(p.C * p.kernel_volume());
    const double tf = min_seconds(repeats, [&] { backend::conv3d_forward(cpu{}, p, x.data(), w.data(), b.data(), y.data()); });
    const double tb = min_seconds(repeats, [&] { backend::conv3d_backward_data(cpu{}, p, y.data(), w.data(), dx.data()); });
    std::printf("%-26s threads %d  fwd %8.3f ms %7.1f GFLOP/s   bwd-data %8.3f ms %7.1f GFLOP/s\n", cs.name, threads,
                tf * 1e3, flops / tf * 1e-9, tb * 1e3, flops / tb * 1e-9);
    std::fflush(stdout);
  }
  return 0;
}
