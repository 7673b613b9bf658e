// examples/cscn_views.cpp: the three views of a CSCN block (spec shared/specs/cascaded-fcn.md §2.1, §4.1-4.2) on a
// synthetic nasopharyngeal-carcinoma phantom, written as PNGs.
//
//   cscn_views [OUTDIR] [SEED]      (default OUTDIR cscn_views_out, SEED 3)
//
// 1. data::make_phantom(PhantomOptions::npc()): one T1 channel, 24 x 64 x 64 voxels of (Z, Y, X) = (3, 1, 1) mm,
//    thick axial slices as the paper's 0.6 x 0.6 x 3.0 mm scans; label 1 = tumour.
// 2. Resample to CSCN's 1 mm isotropic grid (spec §4.1 step 2) with nn::interpolate (PyTorch's F.interpolate):
//    trilinear with align_corners = false for the image (half-pixel centres: output voxel o samples the input at
//    (o + 0.5) / 3 - 0.5, so the voxel centres stay where they are in mm), nearest for the label. For the integer
//    factor 3 PyTorch's 'nearest' (src = floor(o / 3)) equals the physically centred 'nearest-exact'
//    (floor((o + 0.5) / 3)); a non-integer factor would need the latter.
// 3. z-score over the non-zero voxels (spec §4.1 [R]): data::normalize with NormalizeOptions::nnunet_mri().
// 4. Block centre c = the tumour voxel nearest to the tumour's centroid. In each view the volume is seen as
//    (D, H, W) = (Z, Y, X) permuted (axial (0,1,2), coronal (1,0,2), sagittal (2,0,1): view axis k is volume axis
//    perm[k]); the block is (8, 24, 24) in that frame with origin c_view - B / 2 (c is voxel B / 2 of the block),
//    cut with models::cscn::extract_block (zeros outside the volume). So the short side 8 lies along Z (axial),
//    Y (coronal) or X (sagittal).
// 5. PNGs (rows flipped so that anterior (axial) or superior (coronal, sagittal) is up; grey = z-scored image
//    between its 1st and 99th percentiles, red = tumour outline, yellow = block footprint):
//      <view>_block.png  the block's middle slice d = 4 (it holds c), 24 x 24 pixels scaled x 8
//      <view>_slice.png  the full volume's slice through c in the same view, scaled x 4, with the block footprint
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <mmnet/cscn.hpp>
#include <mmnet/data/normalize.hpp>
#include <mmnet/data/phantom.hpp>
#include <mmnet/layers/upsample.hpp>

#include "../apps/mmnet/png.hpp"  // header-only PNG writer of the command-line tool (zlib)

using namespace mmnet;
namespace cscn = mmnet::models::cscn;
using Vol = Tensor<float, cpu>;

namespace {

struct Rgb {
  std::uint8_t r, g, b;
};

// A view-frame image: rows x cols grey values in [0, 1], the tumour mask, an optional footprint rectangle.
struct Picture {
  index_t rows = 0, cols = 0;
  std::vector<float> grey;
  std::vector<std::uint8_t> mask;
  index_t box_r0 = -1, box_r1 = -1, box_c0 = -1, box_c1 = -1;  // half-open; -1: none
};

// Writes the picture scaled by `scale`, rows flipped (row 0 at the bottom), tumour outline red, footprint yellow.
void write_picture(const std::string& path, const Picture& p, int scale) {
  const int W = static_cast<int>(p.cols) * scale, H = static_cast<int>(p.rows) * scale;
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(W) * H * 3);
  auto at = [&](index_t r, index_t c) { return static_cast<std::size_t>(r * p.cols + c); };
  auto outline = [&](index_t r, index_t c) {  // a tumour pixel with a 4-neighbour outside the tumour (or the picture)
    if (!p.mask[at(r, c)]) return false;
    const index_t nr[4] = {r - 1, r + 1, r, r}, nc[4] = {c, c, c - 1, c + 1};
    for (int k = 0; k < 4; ++k)
      if (nr[k] < 0 || nr[k] >= p.rows || nc[k] < 0 || nc[k] >= p.cols || !p.mask[at(nr[k], nc[k])]) return true;
    return false;
  };
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const index_t r = p.rows - 1 - y / scale, c = x / scale;  // flipped rows
      const auto v = static_cast<std::uint8_t>(std::lround(255.0 * std::clamp(p.grey[at(r, c)], 0.0f, 1.0f)));
      Rgb px{v, v, v};
      if (outline(r, c)) px = Rgb{230, 30, 30};
      if (p.box_r0 >= 0) {
        // The footprint's border: 1-pixel lines on the rectangle's edges in the scaled (row-flipped) image.
        const int x0 = static_cast<int>(p.box_c0) * scale, x1 = static_cast<int>(p.box_c1) * scale - 1;
        const int y0 = static_cast<int>(p.rows - p.box_r1) * scale, y1 = static_cast<int>(p.rows - p.box_r0) * scale - 1;
        const bool in_x = x >= x0 && x <= x1, in_y = y >= y0 && y <= y1;
        if ((in_y && (x == x0 || x == x1)) || (in_x && (y == y0 || y == y1))) px = Rgb{250, 220, 40};
      }
      const std::size_t o = (static_cast<std::size_t>(y) * W + x) * 3;
      rgb[o] = px.r, rgb[o + 1] = px.g, rgb[o + 2] = px.b;
    }
  mmnet_cli::write_png_rgb(path, W, H, rgb);
}

// Slice d of a 1 x 1 x D x H x W view-frame tensor as a picture (grey window [lo, hi]).
Picture slice_picture(const Vol& img, const Vol& lab, index_t d, double lo, double hi) {
  Picture p;
  p.rows = img.size(3), p.cols = img.size(4);
  const auto iv = img.to_vector(), lv = lab.to_vector();
  for (index_t r = 0; r < p.rows; ++r)
    for (index_t c = 0; c < p.cols; ++c) {
      const std::size_t i = static_cast<std::size_t>((d * p.rows + r) * p.cols + c);
      p.grey.push_back(static_cast<float>((iv[i] - lo) / (hi - lo)));
      p.mask.push_back(lv[i] > 0.5f ? 1 : 0);
    }
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "cscn_views_out";
  const std::uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 3;
  try {
    std::filesystem::create_directories(out);

    // 1. The phantom on its anisotropic acquisition grid.
    const data::Phantom ph = data::make_phantom(data::PhantomOptions::npc(), seed);
    const auto sp = ph.image.spacing;
    std::size_t tumour = 0;
    for (auto v : ph.label.data) tumour += v;
    std::printf("phantom npc_like seed %llu: %lld x %lld x %lld voxels of (%g, %g, %g) mm (Z, Y, X), modality %s, "
                "tumour %zu voxels = %.2f cm^3\n",
                static_cast<unsigned long long>(seed), static_cast<long long>(ph.image.depth),
                static_cast<long long>(ph.image.height), static_cast<long long>(ph.image.width), sp[0], sp[1], sp[2],
                ph.modalities[0].c_str(), tumour, static_cast<double>(tumour) * sp[0] * sp[1] * sp[2] / 1000.0);

    // 2. Resample to 1 mm: trilinear image, nearest label (see the top of the file).
    const Shape raw{1, 1, ph.image.depth, ph.image.height, ph.image.width};
    const Vol image_raw = Vol::from_vector(raw, ph.image.data);
    std::vector<float> label_f(ph.label.data.begin(), ph.label.data.end());
    const Vol label_raw = Vol::from_vector(raw, label_f);
    const ExpandingArray3 iso(static_cast<index_t>(std::lround(static_cast<double>(ph.image.depth) * sp[0])),
                              static_cast<index_t>(std::lround(static_cast<double>(ph.image.height) * sp[1])),
                              static_cast<index_t>(std::lround(static_cast<double>(ph.image.width) * sp[2])));
    Vol image = nn::interpolate(image_raw, nn::UpsampleOptions().size(iso).mode(nn::UpsampleMode::trilinear));
    const Vol label = nn::interpolate(label_raw, nn::UpsampleOptions().size(iso).mode(nn::UpsampleMode::nearest));
    const index_t Z = iso[0], Y = iso[1], X = iso[2];
    std::printf("resampled to 1 mm: %lld x %lld x %lld (image trilinear, align_corners false; label nearest)\n",
                static_cast<long long>(Z), static_cast<long long>(Y), static_cast<long long>(X));

    // 3. z-score over the non-zero voxels.
    {
      data::Volume v(1, Z, Y, X, {1.0, 1.0, 1.0});
      v.data = image.to_vector();
      const auto stats = data::normalize(v, data::NormalizeOptions::nnunet_mri());
      std::printf("z-score over non-zero voxels: mean %.4f, std %.4f\n", stats[0].mean, stats[0].std);
      image = Vol::from_vector(image.shape(), v.data);
    }
    const auto iv = image.to_vector(), lv = label.to_vector();
    std::vector<float> sorted(iv);
    std::sort(sorted.begin(), sorted.end());
    const double lo = sorted[sorted.size() / 100], hi = sorted[sorted.size() * 99 / 100];

    // 4. Block centre: the tumour voxel nearest to the tumour's centroid.
    double cz = 0, cy = 0, cx = 0, n = 0;
    for (index_t z = 0; z < Z; ++z)
      for (index_t y = 0; y < Y; ++y)
        for (index_t x = 0; x < X; ++x)
          if (lv[static_cast<std::size_t>((z * Y + y) * X + x)] > 0.5f) cz += z, cy += y, cx += x, n += 1;
    if (n == 0) throw std::runtime_error("the phantom has no tumour");
    cz /= n, cy /= n, cx /= n;
    std::array<index_t, 3> c{0, 0, 0};
    double best = 1e300;
    for (index_t z = 0; z < Z; ++z)
      for (index_t y = 0; y < Y; ++y)
        for (index_t x = 0; x < X; ++x)
          if (lv[static_cast<std::size_t>((z * Y + y) * X + x)] > 0.5f) {
            const double d = (z - cz) * (z - cz) + (y - cy) * (y - cy) + (x - cx) * (x - cx);
            if (d < best) best = d, c = {z, y, x};
          }
    std::printf("tumour at 1 mm: %.0f voxels (%.2f cm^3), centroid (%.1f, %.1f, %.1f), block centre c = (%lld, %lld, %lld)\n",
                n, n / 1000.0, cz, cy, cx, static_cast<long long>(c[0]), static_cast<long long>(c[1]),
                static_cast<long long>(c[2]));

    // 5. The three views.
    const ExpandingArray3 block(8, 24, 24);
    const std::array<index_t, 3> dims{Z, Y, X};
    std::vector<std::string> files;
    for (cscn::View v : cscn::all_views) {
      const auto perm = cscn::permutation(v), inv = cscn::inverse_permutation(v);
      std::array<index_t, 3> cv{}, origin{}, nv{};
      for (std::size_t k = 0; k < 3; ++k) {
        cv[k] = c[static_cast<std::size_t>(perm[k])];       // c in the view frame
        nv[k] = dims[static_cast<std::size_t>(perm[k])];    // volume extent in the view frame
        origin[k] = cv[k] - block[static_cast<int>(k)] / 2;  // c is voxel B / 2 of the block
      }
      const Vol bi = cscn::extract_block(image, v, origin, block);
      const Vol bl = cscn::extract_block(label, v, origin, block);
      double in_block = 0;
      for (float e : bl.to_vector()) in_block += e > 0.5f ? 1 : 0;
      // The block's centre voxel (B / 2 on each axis) is the volume's voxel c.
      const float centre = bi.to_vector()[static_cast<std::size_t>((4 * 24 + 12) * 24 + 12)];
      const float at_c = iv[static_cast<std::size_t>((c[0] * Y + c[1]) * X + c[2])];
      std::printf("%-8s permutation (%d,%d,%d) inverse (%d,%d,%d): view frame (D,H,W) = (%c,%c,%c) %lld x %lld x %lld, "
                  "block %s origin (%lld, %lld, %lld), tumour in block %.0f voxels (%.0f%% of the tumour), centre voxel %s c\n",
                  cscn::view_name(v), perm[0], perm[1], perm[2], inv[0], inv[1], inv[2], "ZYX"[perm[0]], "ZYX"[perm[1]],
                  "ZYX"[perm[2]], static_cast<long long>(nv[0]), static_cast<long long>(nv[1]),
                  static_cast<long long>(nv[2]), bi.shape().str().c_str(), static_cast<long long>(origin[0]),
                  static_cast<long long>(origin[1]), static_cast<long long>(origin[2]), in_block, 100.0 * in_block / n,
                  centre == at_c ? "==" : "!=");
      if (centre != at_c) throw std::runtime_error("block centre does not match the volume at c");

      const std::string name = cscn::view_name(v);
      write_picture(out + "/" + name + "_block.png", slice_picture(bi, bl, block[0] / 2, lo, hi), 8);
      files.push_back(name + "_block.png");
      // The full slice through c in this view: a 1 x H x W "block" at depth cv[0] covering the whole view plane.
      const ExpandingArray3 plane(1, nv[1], nv[2]);
      const std::array<index_t, 3> plane_origin{cv[0], 0, 0};
      Picture s = slice_picture(cscn::extract_block(image, v, plane_origin, plane),
                                cscn::extract_block(label, v, plane_origin, plane), 0, lo, hi);
      s.box_r0 = origin[1], s.box_r1 = origin[1] + block[1], s.box_c0 = origin[2], s.box_c1 = origin[2] + block[2];
      write_picture(out + "/" + name + "_slice.png", s, 4);
      files.push_back(name + "_slice.png");
    }
    std::printf("wrote to %s:", out.c_str());
    for (const auto& f : files) std::printf(" %s", f.c_str());
    std::printf("\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cscn_views: %s\n", e.what());
    return 1;
  }
  return 0;
}
