// mmnet/models/conresnet/inference.hpp: ConResNet's sliding-window inference (spec conresnet.md §4.4, the official
// test.py) with the spec §7.16 resolution (the stride of every axis from its own tile):
//
//   auto prob = conresnet::sliding_window_probabilities(net, x, {80, 160, 160});   // N x K x D x H x W
//
// X_res is computed on the whole volume (so a tile's first slice is generally not 0); both are zero-padded at the
// END of each axis shorter than the tile. Per axis: stride = ceil(tile (1 - 1/3)) in double (16 -> 11, 24 -> 16,
// 32 -> 22, 80 -> 54, 160 -> 107), n = ceil((S - tile) / stride) + 1 tiles, start a1 = i stride, a2 = min(a1 +
// tile, S), a1 = max(a2 - tile, 0). Each tile: net.predict (eval mode, Dropout off), sigmoid, uniform average
// (no Gaussian weighting, no mirroring). Accumulated in double on the host; tiles visited D-major (W fastest).
// Binarise with p > 0.5 (np.around) outside.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../../core/expanding_array.hpp"
#include "../../core/tensor.hpp"
#include "conresnet.hpp"
#include "targets.hpp"

namespace mmnet::models::conresnet {

using Shape3 = ExpandingArray3;

// The per-axis stride of the official tiling: ceil(tile (1 - 1/3)), in double as Python computes it.
inline index_t window_stride(index_t tile) {
  return static_cast<index_t>(std::ceil(static_cast<double>(tile) * (1.0 - 1.0 / 3.0)));
}

// Tile starts along one axis of (padded) extent size >= tile.
inline std::vector<index_t> window_starts(index_t size, index_t tile) {
  const index_t stride = window_stride(tile);
  const auto n = static_cast<index_t>(std::ceil(static_cast<double>(size - tile) / static_cast<double>(stride))) + 1;
  std::vector<index_t> s;
  for (index_t i = 0; i < n; ++i) {
    const index_t a2 = std::min(i * stride + tile, size);
    s.push_back(std::max<index_t>(a2 - tile, 0));
  }
  return s;
}

template <class T, class Backend>
Tensor<T, Backend> sliding_window_probabilities(ConResNet<T, Backend>& net, const Tensor<T, Backend>& x, Shape3 patch) {
  const char* name = "mmnet::conresnet::sliding_window_probabilities";
  check_rank(name, "X", x, 5);
  if (x.numel() == 0) fail<shape_error>(name, "X", "a non-empty tensor", "shape " + x.shape().str());
  for (int a = 0; a < 3; ++a)
    if (patch[a] < 8 || patch[a] % 8 != 0)
      fail<value_error>(name, std::string("patch size ") + "DHW"[a], "a positive multiple of 8", patch[a]);
  const index_t N = x.size(0), C = x.size(1);
  const index_t size[3] = {x.size(2), x.size(3), x.size(4)};
  index_t S[3];
  std::vector<index_t> starts[3];
  for (int a = 0; a < 3; ++a) {
    S[a] = std::max(size[a], patch[a]);
    starts[a] = window_starts(S[a], patch[a]);
  }
  const auto hx = x.to_vector();
  const auto hr = image_residual(x).to_vector();
  const index_t pd = patch[0], ph = patch[1], pw = patch[2], tv = pd * ph * pw;
  const index_t V = size[0] * size[1] * size[2];
  index_t K = 0;
  std::vector<double> acc, cnt(static_cast<std::size_t>(S[0] * S[1] * S[2]), 0.0);
  std::vector<T> tx(static_cast<std::size_t>(N * C * tv)), tr(tx.size());
  for (index_t d0 : starts[0])
    for (index_t h0 : starts[1])
      for (index_t w0 : starts[2]) {
        // cut the tile (zeros beyond the volume: the end padding)
        for (index_t nc = 0; nc < N * C; ++nc)
          for (index_t d = 0; d < pd; ++d)
            for (index_t h = 0; h < ph; ++h)
              for (index_t w = 0; w < pw; ++w) {
                const index_t gd = d0 + d, gh = h0 + h, gw = w0 + w;
                const auto o = static_cast<std::size_t>(nc * tv + (d * ph + h) * pw + w);
                if (gd < size[0] && gh < size[1] && gw < size[2]) {
                  const auto i = static_cast<std::size_t>(nc * V + (gd * size[1] + gh) * size[2] + gw);
                  tx[o] = hx[i];
                  tr[o] = hr[i];
                } else {
                  tx[o] = T(0);
                  tr[o] = T(0);
                }
              }
        const Shape ts{N, C, pd, ph, pw};
        const auto seg = net.predict(Tensor<T, Backend>::from_vector(ts, tx), Tensor<T, Backend>::from_vector(ts, tr))
                             .to_vector();
        if (K == 0) {
          K = static_cast<index_t>(seg.size()) / (N * tv);
          acc.assign(static_cast<std::size_t>(N * K * S[0] * S[1] * S[2]), 0.0);
        }
        for (index_t d = 0; d < pd; ++d)
          for (index_t h = 0; h < ph; ++h)
            for (index_t w = 0; w < pw; ++w) {
              const index_t g = ((d0 + d) * S[1] + h0 + h) * S[2] + w0 + w;
              cnt[static_cast<std::size_t>(g)] += 1;
              for (index_t nk = 0; nk < N * K; ++nk) {
                const double z = static_cast<double>(seg[static_cast<std::size_t>(nk * tv + (d * ph + h) * pw + w)]);
                const double e = std::exp(-std::abs(z));
                acc[static_cast<std::size_t>(nk * S[0] * S[1] * S[2] + g)] += z >= 0 ? 1 / (1 + e) : e / (1 + e);
              }
            }
      }
  std::vector<T> out(static_cast<std::size_t>(N * K * V));
  for (index_t nk = 0; nk < N * K; ++nk)
    for (index_t d = 0; d < size[0]; ++d)
      for (index_t h = 0; h < size[1]; ++h)
        for (index_t w = 0; w < size[2]; ++w) {
          const index_t g = (d * S[1] + h) * S[2] + w;
          out[static_cast<std::size_t>(nk * V + (d * size[1] + h) * size[2] + w)] = static_cast<T>(
              acc[static_cast<std::size_t>(nk * S[0] * S[1] * S[2] + g)] / cnt[static_cast<std::size_t>(g)]);
        }
  return Tensor<T, Backend>::from_vector(Shape{N, K, size[0], size[1], size[2]}, out);
}

}  // namespace mmnet::models::conresnet
