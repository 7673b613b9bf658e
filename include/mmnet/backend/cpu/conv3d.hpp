// mmnet/backend/cpu/conv3d.hpp: the cpu fast path of Conv3d (same signatures as the generic kernels in
// backend/common/conv3d.hpp, overloaded on the cpu tag).
//
// Forward and backward-data are one "gather convolution" (GatherConv): every output row segment is
//   y[n, k, o] = bias[k] + sum_{c, t} x[n, c, base(o) + toff[t]] * wpack[k, c, t]
// over the zero-padded input (no bounds checks), with a list of tap offsets toff:
//   forward        x = pad(input), W de-interleaved into stride_w phases (polyphase), so each tap reads a
//                  contiguous run of W whatever the stride; taps = the whole kernel.
//   backward-data  polyphase: the outputs dx[phase + stride * q] of one phase (per axis) are a stride-1
//                  gather over pad(dy) with the taps t whose (phase + pad - t*d) is divisible by the stride;
//                  no zeros are inserted, so stride s does 1/s^3 of the spread convolution's work. All phases
//                  run in one pass over one window.
// The padding is never materialised for the whole input: each OpenMP task (n, ~8 output rows, a run of od)
// copies the rows it reads into a per-thread window, keeping a ring of planes so consecutive od copy only
// the planes they add. The register tile is KB output channels x NR rows x NV vectors along W (24
// accumulators: 8 x 3 or 6 x 4, or 4 x 6, 2 x 8, 1 x 8 for few channels): each tap loads NR*NV input vectors
// and KB broadcast weights (repacked per call as [k-block][c][tap][KB], so a tap's KB weights are contiguous;
// a channel tail is padded with zero weights and not stored). Narrow rows (fewer vectors than the tile)
// block several output rows instead. Each output element is summed by one tile in a fixed order, so results
// do not depend on the thread count.
// The weight and bias gradients live in conv3d_weight.hpp (included at the end).
//
// Precision: forward and backward-data sum C*kd*kh*kw (resp. K*kd*kh*kw) products in T, as every conv
// library does.
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../common/conv3d.hpp"
#include "memory.hpp"

namespace mmnet::backend {
namespace cpu_conv3d {

template <class T>
using buffer = std::vector<T, backend::caching_allocator<T>>;  // reused across calls: no page faults per step

// Work below this many multiply-adds stays on one thread.
inline constexpr index_t parallel_work = index_t(1) << 16;

// A gather convolution: outputs (N, Cout, OD, OH, OW); the input (N, Cin, S, Hs, Ws) is read through "padded
// coordinates" (source index + o{z,y,x}; outside the source reads zero). Output (od, oh, ow) reads padded plane
// od*zstep + zoff[slot(t)], row oh*ystep + ybase + trow[t], column ow*s + tcol[t]: tcol is a column of the W
// phase layout (a padded row of s*Wq values, phase j % s at j / s), so a tap reads a contiguous run for any s.
// Each task copies the planes and rows it reads into a small per-thread window (no padded copy of the whole
// input, which would cost a pass over memory and page faults), then runs its tiles on the window.
//
// The outputs may come in phases (a strided backward-data's output phases): each phase has its own extents,
// first output, taps and packed weights, and reads the same window, so the window is copied once for all.
struct GatherPhase {
  index_t OD, OH, OW;
  index_t y0;          // the phase's output (0, 0, 0, 0, 0) in y
  index_t tap0, ntap;  // its taps in the tap arrays
  index_t w0;          // its packed weights' offset, in units of Cin * KB (set by pack_and_run)
};

struct GatherConv {
  index_t N, Cin, Cout;
  index_t OD, OH;  // task extents: the largest phase's
  index_t S, Hs, Ws, oz, oy, ox;  // source extents, padding before
  index_t s, Wq;                  // W phases, phase length
  index_t zstep, ystep;
  const index_t* zoff;  // the window's planes
  index_t nplanes;
  index_t ybase, yspan;  // rows read by one output row: ybase + [0, yspan)
  const index_t* tslot;  // per tap: plane slot, row offset (from ybase), phase-layout column
  const index_t* trow;
  const index_t* tcol;
  GatherPhase* phases;
  index_t nphase;
  index_t y_n, y_k, y_d, y_h, y_w;  // output strides (y_w > 1: the phases of a strided backward-data)
  // set by gather_conv for the tiles: the window's channel stride and row step, one phase's taps
  index_t x_c = 0, x_h = 0;
  const index_t* toff = nullptr;
  index_t ntap = 0;
};

// Extra elements after a padded buffer: a tile's last vectors may read past the end of the last row.
inline constexpr index_t read_slack = 512;

// One register tile: KB output channels x NR rows x NV vectors along W. x points at (n, c = 0, od, oh0, ow0),
// y at (n, k0, od, oh0, ow0); only nk channels, nr rows and nw W elements are valid (rows past nr repeat
// the last valid row, so the loads stay inside the buffer).
template <class T, int KB, int NR, int NV>
void tile(const GatherConv& g, const T* x, const T* wp, const T* bp, T* y, index_t nk, index_t nr, index_t nw) {
  using B = xsimd::batch<T>;
  constexpr index_t L = static_cast<index_t>(B::size);
  constexpr int NJ = NR * NV;
  B acc[KB][NJ];
  for (int kb = 0; kb < KB; ++kb) {
    const B init(bp ? bp[kb] : T(0));
    for (int j = 0; j < NJ; ++j) acc[kb][j] = init;
  }
  index_t roff[NR];
  for (int r = 0; r < NR; ++r) roff[r] = std::min<index_t>(r, nr - 1) * g.x_h;
  const index_t ntap = g.ntap;
  for (index_t c = 0; c < g.Cin; ++c) {
    const T* xc = x + c * g.x_c;
    const T* wc = wp + c * ntap * KB;
    for (index_t t = 0; t < ntap; ++t) {
      const T* xt = xc + g.toff[t];
      const T* wt = wc + t * KB;
      B xv[NJ];
      for (int r = 0; r < NR; ++r)
        for (int v = 0; v < NV; ++v) xv[r * NV + v] = B::load_unaligned(xt + roff[r] + v * L);
      for (int kb = 0; kb < KB; ++kb) {
        const B wv(wt[kb]);
        for (int j = 0; j < NJ; ++j) acc[kb][j] = xsimd::fma(wv, xv[j], acc[kb][j]);
      }
    }
  }
  for (int kb = 0; kb < KB; ++kb) {
    if (kb >= nk) break;
    for (int r = 0; r < NR; ++r) {
      if (r >= nr) break;
      T* yr = y + kb * g.y_k + r * g.y_h;
      for (int v = 0; v < NV; ++v) {
        const index_t w0 = v * L;
        if (w0 >= nw) break;
        if (g.y_w == 1 && w0 + L <= nw) {
          acc[kb][r * NV + v].store_unaligned(yr + w0);
        } else {
          alignas(64) T tmp[L];
          acc[kb][r * NV + v].store_aligned(tmp);
          const index_t m = std::min(L, nw - w0);
          for (index_t i = 0; i < m; ++i) yr[(w0 + i) * g.y_w] = tmp[i];
        }
      }
    }
  }
}

// Calls tile<KB, NR, NV> for the runtime NV (and rows: NR = NW / NV, else 1).
template <class T, int KB, int NW, int NV = 1>
void tile_dispatch(int nv, bool rows, const GatherConv& g, const T* x, const T* wp, const T* bp, T* y, index_t nk,
                   index_t nr, index_t nw) {
  if constexpr (NV <= NW) {
    if (nv == NV) {
      if (rows && NW / NV > 1)
        tile<T, KB, (NW / NV > 1 ? NW / NV : 1), NV>(g, x, wp, bp, y, nk, nr, nw);
      else
        tile<T, KB, 1, NV>(g, x, wp, bp, y, nk, nr, nw);
      return;
    }
    tile_dispatch<T, KB, NW, NV + 1>(nv, rows, g, x, wp, bp, y, nk, nr, nw);
  }
}

// One padded row in the W phase layout: padded column j (source column j - ox) goes to phase j % s at index
// j / s; columns outside the source, or a null source row, are zero. The row (s * Wq values) is written whole.
template <class T>
void copy_row(const T* sr, index_t W, index_t ox, index_t s, index_t Wq, T* dr) {
  const index_t Rl = s * Wq;
  if (!sr) {
    std::fill(dr, dr + Rl, T(0));
    return;
  }
  const index_t j0 = std::max<index_t>(0, ox), j1 = std::min(Rl, ox + W);  // padded columns with a source
  if (s == 1 && Rl >= 64) {
    std::fill(dr, dr + std::min(j0, Rl), T(0));
    if (j1 > j0) std::memcpy(dr + j0, sr + (j0 - ox), sizeof(T) * static_cast<std::size_t>(j1 - j0));
    std::fill(dr + std::min(std::max(j0, j1), Rl), dr + Rl, T(0));
    return;
  }
  if (s == 1) {  // plain loops: for short rows library calls would cost more than the copy
    const index_t a = std::min(j0, Rl), b = std::max(a, j1);
    const T* sj = sr - ox;
    for (index_t j = 0; j < a; ++j) dr[j] = T(0);
    for (index_t j = a; j < b; ++j) dr[j] = sj[j];
    for (index_t j = b; j < Rl; ++j) dr[j] = T(0);
    return;
  }
  for (index_t ph = 0; ph < s; ++ph) {  // phase ph holds padded columns j = ph + s*q
    T* dq = dr + ph * Wq;
    // q with j0 <= ph + s*q < j1, as a branch-free strided copy between two zero runs
    const index_t qa = std::min(Wq, j0 > ph ? (j0 - ph + s - 1) / s : index_t(0));
    const index_t qb = std::max(qa, std::min(Wq, j1 > ph ? (j1 - ph + s - 1) / s : index_t(0)));
    std::fill(dq, dq + qa, T(0));
    const T* sq = sr + (ph - ox);
    if (s == 2) {  // a constant stride, which the compiler vectorises with permutes
      for (index_t q = qa; q < qb; ++q) dq[q] = sq[2 * q];
    } else {
      for (index_t q = qa; q < qb; ++q) dq[q] = sq[s * q];
    }
    std::fill(dq + qb, dq + Wq, T(0));
  }
}

// A tile shape for NW vectors of accumulators per channel block and nvec vectors per output row. Wide rows:
// NW vectors along W (then a narrower tile for the W tail). Narrow rows: NV vectors (a divisor of nvec) times
// NW / NV rows, the NV giving the most accumulators.
struct TilePlan {
  int NV;
  bool rows;
  index_t NR;
};
inline TilePlan plan_tiles(int NW, index_t nvec) {
  TilePlan t{NW, false, 1};
  if (nvec < NW) {
    t.rows = true;
    int best = 0;
    for (int v = 1; v <= nvec; ++v)
      if (nvec % v == 0 && (NW / v) * v > best) best = (NW / v) * v, t.NV = v;
    t.NR = NW / t.NV;
  }
  return t;
}

// The fraction of a (KB, NW) tiling's multiply-adds that are real: channel blocks past Cout and tile rows
// past OH are computed and dropped.
inline double tile_efficiency(index_t cout, index_t KB, int NW, index_t OH, index_t nvec) {
  const TilePlan t = plan_tiles(NW, nvec);
  const double kf = double(cout) / double((cout + KB - 1) / KB * KB);
  const double rf = double(OH) / double((OH + t.NR - 1) / t.NR * t.NR);
  return kf * rf;
}

// The whole gather convolution with KB-channel blocks and about NW vectors per tile. wpack: per phase,
// [k-block][c][tap][KB] at phase.w0 * Cin * KB; bpack: [k-block][KB] or null.
template <class T, int KB, int NW>
void gather_conv(const GatherConv& g0, const T* x, const T* wpack, const T* bpack, T* y) {
  constexpr index_t L = static_cast<index_t>(xsimd::batch<T>::size);
  // A task: about 8 output rows (whole tiles: rows per tile are 1 or NW, see plan_tiles) of one n and a run of
  // od, all phases and channel blocks. The window keeps a ring of zring padded planes (plane z in slot
  // z % zring), so consecutive od copy only the planes they add.
  const index_t RB = std::min((g0.OH + NW - 1) / NW, index_t((8 + NW - 1) / NW)) * NW;
  const index_t nrb = (g0.OH + RB - 1) / RB;
  const index_t Rl = g0.s * g0.Wq;
  const index_t rows_span = (RB - 1) * g0.ystep + g0.yspan;
  index_t zmin = 0, zmax = 0;
  for (index_t i = 0; i < g0.nplanes; ++i) {
    zmin = i ? std::min(zmin, g0.zoff[i]) : g0.zoff[i];
    zmax = i ? std::max(zmax, g0.zoff[i]) : g0.zoff[i];
  }
  const index_t zring = g0.nplanes ? zmax - zmin + 1 : 0;
  const index_t win_c = zring * rows_span * Rl;
  index_t ntaps = 0;
  for (index_t i = 0; i < g0.nphase; ++i) ntaps = std::max(ntaps, g0.phases[i].tap0 + g0.phases[i].ntap);
  GatherConv g = g0;
  g.x_c = win_c;
  g.x_h = g0.ystep * Rl;
  const index_t nkb = (g.Cout + KB - 1) / KB;
  // runs of od (single od when the kernel has one plane): enough tasks (16) to balance threads, long runs to
  // reuse planes
  const index_t nodc = zring <= 1 ? g.OD : std::min(g.OD, std::max<index_t>(1, (16 + g.N * nrb - 1) / (g.N * nrb)));
  const index_t odlen = (g.OD + nodc - 1) / nodc;
  const index_t tasks = g.N * nrb * nodc;
  index_t work = 0;
  for (index_t i = 0; i < g.nphase; ++i) {
    const GatherPhase& ph = g.phases[i];
    work += g.N * g.Cout * ph.OD * ph.OH * ph.OW * g.Cin * ph.ntap;
  }
  const index_t plane = g.Hs * g.Ws;
#if defined(_OPENMP)
#pragma omp parallel if (work >= parallel_work)
#endif
  {
    // a tile's last vectors may read past the window's last row: read_slack zeros after it
    buffer<T> win(static_cast<std::size_t>(g.Cin * win_c + read_slack), T(0));
    std::vector<index_t> ring(static_cast<std::size_t>(std::max<index_t>(1, zring)));
    std::vector<index_t> toff(static_cast<std::size_t>(std::max<index_t>(1, ntaps)));
    GatherConv gp = g;
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_t t = 0; t < tasks; ++t) {
      const index_t rb = t % nrb, odc = (t / nrb) % nodc, n = t / (nodc * nrb);
      const index_t oh0 = rb * RB;
      std::fill(ring.begin(), ring.end(), index_t(-1));
      for (index_t od = odc * odlen; od < std::min(g.OD, (odc + 1) * odlen); ++od) {
        // the window: channel c, ring slot z % zring, row j holds padded (z, oh0*ystep + ybase + j)
        for (index_t i = 0; i < g.nplanes; ++i) {
          const index_t z = od * g.zstep + g.zoff[i], slot = z % zring;
          if (ring[static_cast<std::size_t>(slot)] == z) continue;
          ring[static_cast<std::size_t>(slot)] = z;
          const index_t zs = z - g.oz;
          for (index_t c = 0; c < g.Cin; ++c) {
            const T* sp = (zs >= 0 && zs < g.S) ? x + ((n * g.Cin + c) * g.S + zs) * plane : nullptr;
            T* wp = win.data() + c * win_c + slot * rows_span * Rl;
            for (index_t j = 0; j < rows_span; ++j) {
              const index_t ys = oh0 * g.ystep + g.ybase + j - g.oy;
              copy_row(sp && ys >= 0 && ys < g.Hs ? sp + ys * g.Ws : nullptr, g.Ws, g.ox, g.s, g.Wq, wp + j * Rl);
            }
          }
        }
        for (index_t tt = 0; tt < ntaps; ++tt)
          toff[static_cast<std::size_t>(tt)] =
              (((od * g.zstep + g.zoff[g.tslot[tt]]) % zring) * rows_span + g.trow[tt]) * Rl + g.tcol[tt];
        for (index_t pi = 0; pi < g.nphase; ++pi) {
          const GatherPhase& ph = g.phases[pi];
          if (od >= ph.OD || oh0 >= ph.OH) continue;
          const index_t nrows = std::min(RB, ph.OH - oh0);
          const TilePlan tp = plan_tiles(NW, (ph.OW + L - 1) / L);
          const index_t step = tp.NV * L;
          gp.toff = toff.data() + ph.tap0;
          gp.ntap = ph.ntap;
          for (index_t kbi = 0; kbi < nkb; ++kbi) {
            const index_t k0 = kbi * KB, nk = std::min<index_t>(KB, g.Cout - k0);
            const T* wp = wpack + (ph.w0 + kbi * ph.ntap) * g.Cin * KB;
            const T* bp = bpack ? bpack + kbi * KB : nullptr;
            for (index_t r0 = 0; r0 < nrows; r0 += tp.NR) {
              const index_t nr = std::min(tp.NR, nrows - r0);
              const T* xb = win.data() + r0 * g.x_h;
              T* yb = y + ph.y0 + n * g.y_n + k0 * g.y_k + od * g.y_d + (oh0 + r0) * g.y_h;
              for (index_t ow0 = 0; ow0 < ph.OW; ow0 += step) {
                const index_t nw = std::min(step, ph.OW - ow0);
                const int nv = static_cast<int>((nw + L - 1) / L);
                tile_dispatch<T, KB, NW>(nv, tp.rows, gp, xb + ow0, wp, bp, yb + ow0 * g.y_w, nk, nr, nw);
              }
            }
          }
        }
      }
    }
  }
  (void)work;
}

// The output-channel block (and tile width) for Cout channels: 8 x 3 vectors (24 accumulators; or 6 x 4, see
// run_gather) when there are enough channels, narrower blocks with more vectors for a few channels.
inline int channel_block(index_t cout) { return cout >= 5 ? 8 : cout >= 3 ? 4 : cout == 2 ? 2 : 1; }

// Repacks w(k, c, tap) = wsrc[k * wk + c * wc + tapidx[t]] into [phase][k-block][c][tap][KB] (zero past Cout)
// and the bias into [k-block][KB]; then runs the gather convolution.
template <class T, int KB, int NW>
void pack_and_run(const GatherConv& g, const T* w, index_t wk, index_t wc, const index_t* tapidx, const T* bias,
                  const T* x, T* y) {
  const index_t nkb = (g.Cout + KB - 1) / KB;
  index_t total = 0;  // in units of Cin * KB
  for (index_t i = 0; i < g.nphase; ++i) {
    g.phases[i].w0 = total;
    total += nkb * g.phases[i].ntap;
  }
  buffer<T> wpack(static_cast<std::size_t>(std::max<index_t>(1, total * g.Cin * KB)), T(0));
  for (index_t i = 0; i < g.nphase; ++i) {
    const GatherPhase& ph = g.phases[i];
    for (index_t kbi = 0; kbi < nkb; ++kbi)
      for (index_t c = 0; c < g.Cin; ++c)
        for (index_t t = 0; t < ph.ntap; ++t)
          for (index_t kb = 0; kb < KB; ++kb) {
            const index_t k = kbi * KB + kb;
            if (k < g.Cout)
              wpack[static_cast<std::size_t>((((ph.w0 + kbi * ph.ntap) * g.Cin + c * ph.ntap + t) * KB + kb))] =
                  w[k * wk + c * wc + tapidx[ph.tap0 + t]];
          }
  }
  buffer<T> bpack;
  if (bias) {
    bpack.assign(static_cast<std::size_t>(nkb * KB), T(0));
    for (index_t k = 0; k < g.Cout; ++k) bpack[static_cast<std::size_t>(k)] = bias[k];
  }
  gather_conv<T, KB, NW>(g, x, wpack.data(), bias ? bpack.data() : nullptr, y);
}

template <class T>
void run_gather(const GatherConv& g, const T* w, index_t wk, index_t wc, const index_t* tapidx, const T* bias,
                const T* x, T* y) {
  constexpr index_t L = static_cast<index_t>(xsimd::batch<T>::size);
  const index_t nvec = (g.phases[0].OW + L - 1) / L;  // phase 0 is the largest
  switch (channel_block(g.Cout)) {
    case 8:
      // 6 channels x 4 vectors when it wastes less (e.g. 64 channels, 16-wide rows: 4 rows per tile fit OH 16)
      if (tile_efficiency(g.Cout, 6, 4, g.OH, nvec) > tile_efficiency(g.Cout, 8, 3, g.OH, nvec) + 0.02)
        pack_and_run<T, 6, 4>(g, w, wk, wc, tapidx, bias, x, y);
      else
        pack_and_run<T, 8, 3>(g, w, wk, wc, tapidx, bias, x, y);
      break;
    case 4: pack_and_run<T, 4, 6>(g, w, wk, wc, tapidx, bias, x, y); break;
    case 2: pack_and_run<T, 2, 8>(g, w, wk, wc, tapidx, bias, x, y); break;
    default: pack_and_run<T, 1, 8>(g, w, wk, wc, tapidx, bias, x, y); break;
  }
}

// y = conv3d(x, w) + b for any stride, padding and dilation.
template <class T>
void forward(const Conv3dProblem& p, const T* x, const T* w, const T* b, T* y) {
  const index_t s = p.sw;
  const index_t Wp = (p.OW - 1) * s + (p.kw - 1) * p.dw + 1;  // padded columns read
  const index_t Wq = (Wp + s - 1) / s;
  const index_t kvol = p.kernel_volume();
  std::vector<index_t> zoff(static_cast<std::size_t>(p.kd)), tslot, trow, tcol, tapidx;
  for (index_t a = 0; a < p.kd; ++a) zoff[static_cast<std::size_t>(a)] = a * p.dd;
  for (index_t a = 0; a < p.kd; ++a)
    for (index_t bb = 0; bb < p.kh; ++bb)
      for (index_t e = 0; e < p.kw; ++e) {
        const index_t j = e * p.dw;
        tslot.push_back(a);
        trow.push_back(bb * p.dh);
        tcol.push_back((j % s) * Wq + j / s);
        tapidx.push_back((a * p.kh + bb) * p.kw + e);
      }
  GatherPhase phase{p.OD, p.OH, p.OW, 0, 0, kvol, 0};
  GatherConv g{p.N, p.C, p.K, p.OD, p.OH, p.D, p.H, p.W, p.pd, p.ph, p.pw, s, Wq, p.sd, p.sh,
               zoff.data(), p.kd, 0, (p.kh - 1) * p.dh + 1, tslot.data(), trow.data(), tcol.data(), &phase, 1,
               p.K * p.OD * p.OH * p.OW, p.OD * p.OH * p.OW, p.OH * p.OW, p.OW, 1};
  run_gather(g, w, p.C * kvol, kvol, tapidx.data(), b, x, y);
}

// One axis of the polyphase backward-data: output index i = phase + s * q reads dy[q + m_t] through each tap
// t with (phase + pad - t*d) divisible by s, m_t = (phase + pad - t*d) / s. In padded coordinates (front
// zeros before dy) every read index q + m_t + front is >= 0.
struct AxisPhases {
  index_t front = 0, extent = 0;  // zero padding before dy, and the padded length read
  static index_t floor_mod(index_t a, index_t s) { return ((a % s) + s) % s; }
  AxisPhases(index_t I, index_t O, index_t k, index_t s, index_t pad, index_t d) {
    index_t lo = 0, hi = O;  // the dy index range read, [lo, hi)
    for (index_t ph = 0; ph < s && ph < I; ++ph) {
      const index_t q_last = (I - 1 - ph) / s;
      for (index_t t = 0; t < k; ++t) {
        const index_t u = ph + pad - t * d;
        if (floor_mod(u, s) != 0) continue;
        lo = std::min(lo, u / s);
        hi = std::max(hi, q_last + u / s + 1);
      }
    }
    front = -lo;
    extent = hi - lo;
  }
};

// dx = conv3d^T(dy, w) (+ bias, for ConvTranspose3d), assigning dx; any stride, padding and dilation. The
// output phases (fd, fh, fw) are the phases of one gather convolution over one window of padded dy.
template <class T>
void backward_data(const Conv3dProblem& p, const T* dy, const T* w, const T* bias, T* dx) {
  const AxisPhases ad(p.D, p.OD, p.kd, p.sd, p.pd, p.dd), ah(p.H, p.OH, p.kh, p.sh, p.ph, p.dh),
      aw(p.W, p.OW, p.kw, p.sw, p.pw, p.dw);
  // the planes and rows (padded dy coordinates, at q = 0) the phases' taps read
  std::vector<index_t> zoff;
  index_t ylo = 0, yhi = -1;
  for (index_t fd = 0; fd < std::min(p.sd, p.D); ++fd)
    for (index_t a = 0; a < p.kd; ++a) {
      const index_t ud = fd + p.pd - a * p.dd;
      if (AxisPhases::floor_mod(ud, p.sd) == 0) zoff.push_back(ud / p.sd + ad.front);
    }
  std::sort(zoff.begin(), zoff.end());
  zoff.erase(std::unique(zoff.begin(), zoff.end()), zoff.end());
  for (index_t fh = 0; fh < std::min(p.sh, p.H); ++fh)
    for (index_t bb = 0; bb < p.kh; ++bb) {
      const index_t uh = fh + p.ph - bb * p.dh;
      if (AxisPhases::floor_mod(uh, p.sh) != 0) continue;
      const index_t yr = uh / p.sh + ah.front;
      ylo = yhi < ylo ? yr : std::min(ylo, yr);
      yhi = std::max(yhi, yr);
    }
  if (yhi < ylo) ylo = yhi = 0;
  const index_t kvol = p.kernel_volume();
  std::vector<index_t> tslot, trow, tcol, tapidx;
  std::vector<GatherPhase> phases;
  for (index_t fd = 0; fd < std::min(p.sd, p.D); ++fd)
    for (index_t fh = 0; fh < std::min(p.sh, p.H); ++fh)
      for (index_t fw = 0; fw < std::min(p.sw, p.W); ++fw) {
        const index_t tap0 = static_cast<index_t>(tslot.size());
        for (index_t a = 0; a < p.kd; ++a) {
          const index_t ud = fd + p.pd - a * p.dd;
          if (AxisPhases::floor_mod(ud, p.sd) != 0) continue;
          const index_t slot =
              std::lower_bound(zoff.begin(), zoff.end(), ud / p.sd + ad.front) - zoff.begin();
          for (index_t bb = 0; bb < p.kh; ++bb) {
            const index_t uh = fh + p.ph - bb * p.dh;
            if (AxisPhases::floor_mod(uh, p.sh) != 0) continue;
            for (index_t e = 0; e < p.kw; ++e) {
              const index_t uw = fw + p.pw - e * p.dw;
              if (AxisPhases::floor_mod(uw, p.sw) != 0) continue;
              tslot.push_back(slot);
              trow.push_back(uh / p.sh + ah.front - ylo);
              tcol.push_back(uw / p.sw + aw.front);
              tapidx.push_back((a * p.kh + bb) * p.kw + e);
            }
          }
        }
        // a phase no tap reaches still runs (ntap = 0): it stores the bias or zeros
        phases.push_back(GatherPhase{(p.D - fd + p.sd - 1) / p.sd, (p.H - fh + p.sh - 1) / p.sh,
                                     (p.W - fw + p.sw - 1) / p.sw, (fd * p.H + fh) * p.W + fw, tap0,
                                     static_cast<index_t>(tslot.size()) - tap0, 0});
      }
  GatherConv g{p.N, p.K, p.C, phases[0].OD, phases[0].OH, p.OD, p.OH, p.OW, ad.front, ah.front, aw.front, 1,
               aw.extent, 1, 1, zoff.data(), static_cast<index_t>(zoff.size()), ylo, yhi - ylo + 1, tslot.data(),
               trow.data(), tcol.data(), phases.data(), static_cast<index_t>(phases.size()),
               p.C * p.D * p.H * p.W, p.D * p.H * p.W, p.sd * p.H * p.W, p.sh * p.W, p.sw};
  run_gather(g, w, kvol, p.C * kvol, tapidx.data(), bias, dy, dx);
}

}  // namespace cpu_conv3d

template <class T>
void conv3d_forward(cpu, const Conv3dProblem& p, const T* x, const T* w, const T* b, T* y) {
  if (p.output_numel() == 0) return;
  cpu_conv3d::forward(p, x, w, b, y);
}

// dx[c, i] = sum over the outputs o and taps t with i = o*s - p + t*d of dy[k, o] * w[k, c, t] (polyphase).
template <class T>
void conv3d_backward_data(cpu, const Conv3dProblem& p, const T* dy, const T* w, T* dx) {
  if (p.input_numel() == 0) return;
  if (p.output_numel() == 0) {
    std::fill(dx, dx + p.input_numel(), T(0));
    return;
  }
  cpu_conv3d::backward_data(p, dy, w, static_cast<const T*>(nullptr), dx);
}

}  // namespace mmnet::backend

// The weight and bias gradients' cpu fast paths.
#include "conv3d_weight.hpp"
