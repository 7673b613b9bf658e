// examples/tiny_train.cpp: train, save, reload and segment with the tiny 3D network, start to finish.
//
// The data are synthetic two-modality volumes: an ellipsoidal "lesion" that is bright in modality 0 and only
// faintly visible in modality 1, on a smooth background with noise. The loop is the one every mmnet model
// uses: zero_grad, forward, loss, backward, step.
//
//   tiny_train [--steps N] [--threads T] [--seed S] [--out weights.h5]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mmnet/mmnet.hpp>

using namespace mmnet;

namespace {

struct Args {
  int steps = 60;
  int threads = 0;
  std::uint64_t seed = 1;
  std::string out = "tiny_net.h5";
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    auto next = [&](const char* flag) {
      if (i + 1 >= argc) throw value_error(std::string("tiny_train: ") + flag + " needs a value");
      return std::string(argv[++i]);
    };
    if (!std::strcmp(argv[i], "--steps")) a.steps = std::stoi(next("--steps"));
    else if (!std::strcmp(argv[i], "--threads")) a.threads = std::stoi(next("--threads"));
    else if (!std::strcmp(argv[i], "--seed")) a.seed = std::stoull(next("--seed"));
    else if (!std::strcmp(argv[i], "--out")) a.out = next("--out");
    else throw value_error(std::string("tiny_train: unknown option ") + argv[i]);
  }
  return a;
}

// A batch of n synthetic cases: image n x 2 x D x H x W, label n x 1 x D x H x W.
template <class T, class B>
void make_batch(Generator& g, index_t n, index_t D, index_t H, index_t W, Tensor<T, B>& image, Tensor<T, B>& label) {
  std::vector<T> img(static_cast<std::size_t>(n * 2 * D * H * W)), lab(static_cast<std::size_t>(n * D * H * W));
  for (index_t s = 0; s < n; ++s) {
    const double cz = g.uniform(0.3, 0.7) * D, cy = g.uniform(0.3, 0.7) * H, cx = g.uniform(0.3, 0.7) * W;
    const double rz = g.uniform(0.2, 0.35) * D, ry = g.uniform(0.15, 0.3) * H, rx = g.uniform(0.15, 0.3) * W;
    for (index_t z = 0; z < D; ++z)
      for (index_t y = 0; y < H; ++y)
        for (index_t x = 0; x < W; ++x) {
          const double q = std::pow((z - cz) / rz, 2) + std::pow((y - cy) / ry, 2) + std::pow((x - cx) / rx, 2);
          const bool fg = q < 1.0;
          const double background = 0.3 * std::sin(0.3 * x + 0.2 * y) + 0.1 * z / D;
          const index_t v = ((s * D + z) * H + y) * W + x;
          lab[static_cast<std::size_t>(v)] = fg ? T(1) : T(0);
          img[static_cast<std::size_t>(((s * 2 + 0) * D + z) * H * W + y * W + x)] =
              static_cast<T>(background + (fg ? 1.5 : 0.0) + 0.4 * g.normal());
          img[static_cast<std::size_t>(((s * 2 + 1) * D + z) * H * W + y * W + x)] =
              static_cast<T>(-background + (fg ? 0.5 : 0.0) + 0.4 * g.normal());
        }
  }
  image = Tensor<T, B>::from_vector({n, 2, D, H, W}, img);
  label = Tensor<T, B>::from_vector({n, 1, D, H, W}, lab);
}

template <class T, class B>
double dice_score(const Tensor<T, B>& prob, const Tensor<T, B>& label) {
  const auto p = prob.to_vector(), g = label.to_vector();
  double inter = 0, sp = 0, sg = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double b = p[i] > T(0.5) ? 1.0 : 0.0;
    inter += b * g[i];
    sp += b;
    sg += g[i];
  }
  return sp + sg > 0 ? 2 * inter / (sp + sg) : 1.0;
}

template <class T, class B>
int run(const Args& args) {
  Generator gen(args.seed);
  models::TinyNet<T, B> net(models::TinyNetOptions(2).width(8), gen);
  nn::Sigmoid<T, B> sigmoid;
  losses::SoftDice<T, B> dice;
  losses::BCEWithLogits<T, B> bce;
  optim::Adam<T, B> opt(net.parameters(), optim::AdamOptions(1e-2));
  std::printf("tiny_train: backend %s, %lld parameters, %d threads, %d steps\n", B::name,
              static_cast<long long>(net.num_parameters()), get_num_threads(), args.steps);

  Tensor<T, B> x, y;
  const auto t0 = std::chrono::steady_clock::now();
  for (int step = 1; step <= args.steps; ++step) {
    make_batch(gen, 2, 8, 24, 24, x, y);
    opt.zero_grad();
    const auto logits = net.forward(x);
    const auto prob = sigmoid.forward(logits);
    const T loss = dice.forward(prob, y) + bce.forward(logits, y);
    auto dlogits = sigmoid.backward(dice.backward());
    add_(dlogits, bce.backward());
    net.backward(dlogits);
    opt.step();
    if (step == 1 || step % 10 == 0 || step == args.steps)
      std::printf("  step %4d/%d  loss %.4f  train Dice %.3f  (%.1f s)\n", step, args.steps, static_cast<double>(loss),
                  dice_score(prob, y),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  save(net, args.out, "tiny_net");
  std::printf("saved weights to %s\n", args.out.c_str());

  // Segment held-out cases with a freshly built model that only sees the saved file.
  models::TinyNet<T, B> fresh(models::TinyNetOptions(2).width(8));
  load(fresh, args.out);
  fresh.eval();
  Generator test_gen(args.seed + 1000);
  double mean = 0;
  const int cases = 4;
  for (int c = 0; c < cases; ++c) {
    make_batch(test_gen, 1, 8, 24, 24, x, y);
    const double d = dice_score(sigmoid.forward(fresh.forward(x)), y);
    std::printf("  held-out case %d: Dice %.3f\n", c + 1, d);
    mean += d / cases;
  }
  std::printf("segmentation of %d held-out cases: mean Dice %.3f\n", cases, mean);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    if (args.threads > 0) set_num_threads(args.threads);
    return run<float, cpu>(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tiny_train: %s\n", e.what());
    return 1;
  }
}
