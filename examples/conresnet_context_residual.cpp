// examples/conresnet_context_residual.cpp: ConResNet's inter-slice context residuals (spec
// shared/specs/conresnet.md §1, §3.1) on a synthetic BraTS-like phantom, written as PNGs, and one forward / loss
// of an untrained ConResNetOptions::small() on it.
//
//   conresnet_context_residual [OUTDIR] [SEED]      (default OUTDIR conresnet_context_residual_out, SEED 7)
//
// 1. data::make_phantom(PhantomOptions::brats()): 48^3 voxels of 1 mm, channels [T1, T1ce, T2, FLAIR], labels
//    0 background, 1 edema, 2 non-enhancing, 3 enhancing; z-score over the brain (non-zero voxels) per channel.
// 2. X_res = conresnet::image_residual(X): |X[d] - X[d-1]| along D (the axial slice axis), X_res[0] = 0.
// 3. y = conresnet::region_targets(labels, brats_regions_nnunet()): channels [ET, WT, TC] = [{3}, {1,2,3}, {2,3}];
//    Y_res = conresnet::label_residual(y): 1 where a region's label changes between slice d-1 and d (first slice:
//    the label itself).
// 4. PNGs, one per slice d through the tumour (rows flipped: anterior up), four 48 x 48 panels scaled x 4 side by
//    side: FLAIR | FLAIR's X_res | labels (edema green, non-enhancing red, enhancing yellow) | Y_res (red ET, green
//    WT, blue TC; overlaps mix). Y_res marks the tumour's boundary voxels whose neighbour in the previous slice
//    differs: where the surface runs across the slices (top and bottom of a lesion) whole patches light up, where it
//    runs along D only thin rims do; X_res shows the same edges in the image, plus noise.
// 5. One forward of an untrained ConResNet small() (w 8) on a 32^3 crop around the tumour and the loss of spec §3.4
//    (code mode): the four outputs' shapes, the loss terms and the residual weights t_k = ln(V / (count + 1)).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <mmnet/conresnet.hpp>
#include <mmnet/data/normalize.hpp>
#include <mmnet/data/phantom.hpp>

#include "../apps/mmnet/png.hpp"  // header-only PNG writer of the command-line tool (zlib)

using namespace mmnet;
using Vol = Tensor<float, cpu>;

namespace {

struct Rgb {
  std::uint8_t r, g, b;
};

std::uint8_t byte(double v) { return static_cast<std::uint8_t>(std::lround(255.0 * std::clamp(v, 0.0, 1.0))); }

// Panels of rows x cols pixels side by side, each scaled by `scale`, rows flipped; a 4-pixel dark gap between.
void write_panels(const std::string& path, index_t rows, index_t cols, const std::vector<std::vector<Rgb>>& panels,
                  int scale) {
  const int gap = 4, n = static_cast<int>(panels.size());
  const int pw = static_cast<int>(cols) * scale, W = n * pw + (n - 1) * gap, H = static_cast<int>(rows) * scale;
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(W) * H * 3, 20);
  for (int k = 0; k < n; ++k)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < pw; ++x) {
        const index_t r = rows - 1 - y / scale, c = x / scale;
        const Rgb p = panels[static_cast<std::size_t>(k)][static_cast<std::size_t>(r * cols + c)];
        const std::size_t o = (static_cast<std::size_t>(y) * W + k * (pw + gap) + x) * 3;
        rgb[o] = p.r, rgb[o + 1] = p.g, rgb[o + 2] = p.b;
      }
  mmnet_cli::write_png_rgb(path, W, H, rgb);
}

double percentile(std::vector<float> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "conresnet_context_residual_out";
  const std::uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 7;
  try {
    std::filesystem::create_directories(out);

    // 1. Phantom, z-scored over the brain.
    data::Phantom ph = data::make_phantom(data::PhantomOptions::brats(), seed);
    data::normalize(ph.image, data::NormalizeOptions::nnunet_mri());
    const index_t C = ph.image.channels, D = ph.image.depth, H = ph.image.height, W = ph.image.width, V = D * H * W;
    const Vol x = Vol::from_vector(Shape{1, C, D, H, W}, ph.image.data);
    const Vol labels = Vol::from_vector(Shape{1, 1, D, H, W}, std::vector<float>(ph.label.data.begin(), ph.label.data.end()));
    std::printf("phantom brats_like seed %llu: %lld x %lld x %lld voxels of 1 mm, channels", static_cast<unsigned long long>(seed),
                static_cast<long long>(D), static_cast<long long>(H), static_cast<long long>(W));
    for (auto& m : ph.modalities) std::printf(" %s", m.c_str());
    std::printf("\n");

    // 2, 3. Residuals and targets.
    const Vol x_res = conresnet::image_residual(x);
    const Vol y = conresnet::region_targets(labels, conresnet::brats_regions_nnunet());
    const Vol y_res = conresnet::label_residual(y);
    const auto xv = x.to_vector(), rv = x_res.to_vector(), yv = y.to_vector(), yrv = y_res.to_vector();
    const auto& lab = ph.label.data;
    const char* regions[3] = {"ET", "WT", "TC"};
    index_t d_lo = D, d_hi = -1;
    for (index_t d = 0; d < D; ++d)
      for (index_t i = 0; i < H * W; ++i)
        if (lab[static_cast<std::size_t>(d * H * W + i)]) d_lo = std::min(d_lo, d), d_hi = std::max(d_hi, d);
    if (d_hi < 0) throw std::runtime_error("the phantom has no tumour");
    for (int k = 0; k < 3; ++k) {
      double nv = 0, nr = 0;
      for (index_t i = 0; i < V; ++i) {
        nv += yv[static_cast<std::size_t>(k * V + i)];
        nr += yrv[static_cast<std::size_t>(k * V + i)];
      }
      std::printf("%s: %.0f voxels, Y_res %.0f voxels (%.1f%% of the region), t_k = ln(V / (count + 1)) = %.3f\n",
                  regions[k], nv, nr, nv > 0 ? 100.0 * nr / nv : 0.0, std::log(static_cast<double>(V) / (nr + 1)));
    }
    std::printf("tumour slices d = %lld .. %lld\n", static_cast<long long>(d_lo), static_cast<long long>(d_hi));

    // 4. PNGs: FLAIR | X_res(FLAIR) | labels | Y_res, through the tumour.
    const index_t flair = C - 1;  // [T1, T1ce, T2, FLAIR]
    const std::vector<float> fl(xv.begin() + flair * V, xv.begin() + (flair + 1) * V);
    const std::vector<float> fr(rv.begin() + flair * V, rv.begin() + (flair + 1) * V);
    const double lo = percentile(fl, 0.01), hi = percentile(fl, 0.99), rhi = percentile(fr, 0.995);
    const Rgb label_colour[4] = {{0, 0, 0}, {40, 200, 60}, {220, 40, 40}, {250, 220, 40}};
    std::vector<std::string> files;
    const index_t mid = (d_lo + d_hi) / 2;
    for (index_t d : {d_lo, std::min(d_lo + 2, d_hi), mid, std::max(d_hi - 2, d_lo), d_hi}) {
      std::vector<std::vector<Rgb>> panels(4, std::vector<Rgb>(static_cast<std::size_t>(H * W)));
      for (index_t i = 0; i < H * W; ++i) {
        const auto v = static_cast<std::size_t>(d * H * W + i), p = static_cast<std::size_t>(i);
        const auto g = byte((fl[v] - lo) / (hi - lo)), gr = byte(fr[v] / rhi);
        bool brain = false;  // outside the brain every channel is exactly 0: shown black
        for (index_t k = 0; k < C; ++k) brain = brain || xv[static_cast<std::size_t>(k * V) + v] != 0.0f;
        const std::uint8_t gb = brain ? g : 0;
        panels[0][p] = {gb, gb, gb};
        panels[1][p] = {gr, gr, gr};
        const auto dim = static_cast<std::uint8_t>(gb / 3);
        panels[2][p] = lab[v] ? label_colour[lab[v]] : Rgb{dim, dim, dim};
        panels[3][p] = {static_cast<std::uint8_t>(255 * yrv[0 * V + v]), static_cast<std::uint8_t>(255 * yrv[1 * V + v]),
                        static_cast<std::uint8_t>(255 * yrv[2 * V + v])};
      }
      char name[64];
      std::snprintf(name, sizeof name, "slice_d%02lld.png", static_cast<long long>(d));
      write_panels(out + "/" + name, H, W, panels, 4);
      files.push_back(name);
    }
    std::printf("wrote");
    for (auto& f : files) std::printf(" %s/%s", out.c_str(), f.c_str());
    std::printf(" (FLAIR | X_res | labels | Y_res [R ET, G WT, B TC])\n");

    // 5. One forward of an untrained small ConResNet on a 32^3 crop around the tumour, and the loss.
    index_t c[3] = {mid, 0, 0};
    {
      double sh = 0, sw = 0, n = 0;
      for (index_t i = 0; i < H * W; ++i)
        if (lab[static_cast<std::size_t>(mid * H * W + i)]) sh += static_cast<double>(i / W), sw += static_cast<double>(i % W), n += 1;
      c[1] = static_cast<index_t>(sh / std::max(n, 1.0)), c[2] = static_cast<index_t>(sw / std::max(n, 1.0));
    }
    const index_t P = 32;
    index_t o[3];
    const index_t ext[3] = {D, H, W};
    for (int a = 0; a < 3; ++a) o[a] = std::clamp<index_t>(c[a] - P / 2, 0, ext[a] - P);
    auto crop = [&](const std::vector<float>& v, index_t ch) {
      std::vector<float> r(static_cast<std::size_t>(ch * P * P * P));
      for (index_t k = 0; k < ch; ++k)
        for (index_t d = 0; d < P; ++d)
          for (index_t h = 0; h < P; ++h)
            for (index_t w = 0; w < P; ++w)
              r[static_cast<std::size_t>(((k * P + d) * P + h) * P + w)] =
                  v[static_cast<std::size_t>(k * V + ((o[0] + d) * H + o[1] + h) * W + o[2] + w)];
      return Vol::from_vector(Shape{1, ch, P, P, P}, r);
    };
    const Vol xc = crop(xv, C), yc = crop(yv, 3);
    Generator g(seed);
    ConResNet<float, cpu> net(ConResNetOptions::small(), g);
    ConResNetLoss<float, cpu> loss;
    const auto outs = net.forward(xc, conresnet::image_residual(xc));  // X_res of the crop, as in training
    const float l = loss.forward(outs, yc, conresnet::label_residual(yc));
    const auto& t = loss.terms();
    std::printf("untrained ConResNet small (%lld parameters) on a %lld^3 crop at (%lld, %lld, %lld): outputs", static_cast<long long>(net.num_parameters()),
                static_cast<long long>(P), static_cast<long long>(o[0]), static_cast<long long>(o[1]), static_cast<long long>(o[2]));
    for (auto& y_out : outs) std::printf(" %s", y_out.shape().str().c_str());
    std::printf("\n  loss %.4f = Dice %.4f + BCE %.4f + L_b(res) %.4f + 0.5 (L_b(resx2) %.4f + L_b(resx4) %.4f); t_k(res) =",
                static_cast<double>(l), t.dice, t.bce, t.res, t.resx2, t.resx4);
    for (double w : loss.pos_weights(0)) std::printf(" %.3f", w);
    std::printf("\n");
    const auto [dx, dx_res] = net.backward(loss.backward());
    std::printf("  backward: dX %s, dX_res %s\n", dx.shape().str().c_str(), dx_res.shape().str().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "conresnet_context_residual: %s\n", e.what());
    return 1;
  }
  return 0;
}
