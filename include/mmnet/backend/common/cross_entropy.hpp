// mmnet/backend/common/cross_entropy.hpp: class-axis kernels shared by the softmax losses (cross-entropy, focal,
// Dice + CE) on both backends. Tensors are N x C x S (S = voxels per sample, 1 for N x C logits); one index
// per voxel (n, s) reads the C logits of that voxel at stride S and writes only that voxel's C outputs.
// Labels are integer class indices stored in T and already validated (losses::detail::check_labels).
// Everything is computed in double and rounded to T once.
#pragma once
#include <cmath>

#include "../../core/backends.hpp"
#include "../../core/config.hpp"

namespace mmnet::backend {

// Every class-axis kernel's vocabulary.
struct ClassProblem {
  index_t n = 0;  // samples
  index_t c = 0;  // classes (channels)
  index_t s = 0;  // voxels per sample
  MMNET_HOST_DEVICE index_t voxels() const { return n * s; }
};

// K sums reduced together in one pass (reduce_sum's accumulator type).
template <int K>
struct Sums {
  double v[K];
  MMNET_HOST_DEVICE Sums() {
    for (int k = 0; k < K; ++k) v[k] = 0;
  }
  MMNET_HOST_DEVICE explicit Sums(double x) {  // reduce_sum's A(0)
    for (int k = 0; k < K; ++k) v[k] = x;
  }
  MMNET_HOST_DEVICE Sums operator+(const Sums& o) const {
    Sums r;
    for (int k = 0; k < K; ++k) r.v[k] = v[k] + o.v[k];
    return r;
  }
  MMNET_HOST_DEVICE Sums& operator+=(const Sums& o) {
    for (int k = 0; k < K; ++k) v[k] += o.v[k];
    return *this;
  }
};

// Label handling shared by the kernels: ignored voxels (has_ignore && label == ignore) contribute nothing.
struct LabelSpec {
  bool has_ignore = false;
  double ignore = -100;
  MMNET_HOST_DEVICE bool ignored(double label) const { return has_ignore && label == ignore; }
};

// log(sum_c exp(x_c)) of one voxel's logits (stride S), shifted by the maximum so that nothing overflows.
template <class T>
MMNET_HOST_DEVICE inline double log_sum_exp(const T* xv, index_t c, index_t stride) {
  double m = xv[0];
  for (index_t k = 1; k < c; ++k) m = fmax(m, static_cast<double>(xv[k * stride]));
  double se = 0;
  for (index_t k = 0; k < c; ++k) se += std::exp(static_cast<double>(xv[k * stride]) - m);
  return m + std::log(se);
}

// prob[n, c, s] = softmax over c of x[n, :, s].
template <class T, class Backend>
void softmax_forward(Backend b, const ClassProblem p, const T* x, T* prob) {
  parallel_for(b, p.voxels(), MMNET_KERNEL(index_t v) {
    const index_t n = v / p.s, s = v - n * p.s;
    const T* xv = x + n * p.c * p.s + s;
    T* pv = prob + n * p.c * p.s + s;
    const double lse = log_sum_exp(xv, p.c, p.s);
    for (index_t k = 0; k < p.c; ++k) pv[k * p.s] = static_cast<T>(std::exp(static_cast<double>(xv[k * p.s]) - lse));
  });
}

// dx = softmax's backward of dprob: dx_c = p_c (dp_c - sum_k p_k dp_k), per voxel.
template <class T, class Backend>
void softmax_backward(Backend b, const ClassProblem p, const T* prob, const T* dprob, T* dx) {
  parallel_for(b, p.voxels(), MMNET_KERNEL(index_t v) {
    const index_t n = v / p.s, s = v - n * p.s;
    const index_t o = n * p.c * p.s + s;
    double dot = 0;
    for (index_t k = 0; k < p.c; ++k) dot += static_cast<double>(prob[o + k * p.s]) * dprob[o + k * p.s];
    for (index_t k = 0; k < p.c; ++k) {
      const index_t i = o + k * p.s;
      dx[i] = static_cast<T>(static_cast<double>(prob[i]) * (static_cast<double>(dprob[i]) - dot));
    }
  });
}

// {sum of w_y * (-log softmax(x)_y), sum of w_y} over the voxels that are not ignored (w = 1 without class
// weights): the numerator and denominator of torch's weighted-mean cross-entropy.
template <class T, class Backend>
Sums<2> cross_entropy_sums(Backend b, const ClassProblem p, const T* x, const T* labels, const double* class_w,
                           const LabelSpec ls) {
  return reduce_sum<Sums<2>>(b, p.voxels(), MMNET_KERNEL(index_t v) {
    Sums<2> r;
    const double label = labels[v];
    if (ls.ignored(label)) return r;
    const index_t n = v / p.s, s = v - n * p.s;
    const T* xv = x + n * p.c * p.s + s;
    const index_t y = static_cast<index_t>(label);
    const double w = class_w ? class_w[y] : 1.0;
    r.v[0] = w * (log_sum_exp(xv, p.c, p.s) - static_cast<double>(xv[y * p.s]));
    r.v[1] = w;
    return r;
  });
}

// dx_c (+)= scale * w_y * (softmax(x)_c - [c == y]); 0 (or unchanged with accumulate) at ignored voxels.
template <class T, class Backend>
void cross_entropy_backward(Backend b, const ClassProblem p, const T* x, const T* labels, const double* class_w,
                            const LabelSpec ls, double scale, bool accumulate, T* dx) {
  parallel_for(b, p.voxels(), MMNET_KERNEL(index_t v) {
    const index_t n = v / p.s, s = v - n * p.s;
    const index_t o = n * p.c * p.s + s;
    const double label = labels[v];
    if (ls.ignored(label)) {
      if (!accumulate)
        for (index_t k = 0; k < p.c; ++k) dx[o + k * p.s] = T(0);
      return;
    }
    const index_t y = static_cast<index_t>(label);
    const double w = scale * (class_w ? class_w[y] : 1.0);
    const double lse = log_sum_exp(x + o, p.c, p.s);
    for (index_t k = 0; k < p.c; ++k) {
      const index_t i = o + k * p.s;
      const double g = w * (std::exp(static_cast<double>(x[i]) - lse) - (k == y ? 1.0 : 0.0));
      dx[i] = static_cast<T>(accumulate ? static_cast<double>(dx[i]) + g : g);
    }
  });
}

// Softmax focal loss, per voxel with true class y, p = softmax(x)_y and q = 1 - p computed as the sum of the
// other classes' probabilities (accurate when p is close to 1):
//   FL = -a q^gamma log p,  a = class_w[y] (1 without) * wmap[voxel] (1 without)
// Returns the sum over voxels.
template <class T, class Backend>
double focal_softmax_sum(Backend b, const ClassProblem p, const T* x, const T* labels, const double* class_w,
                         const T* wmap, double gamma) {
  return reduce_sum<double>(b, p.voxels(), MMNET_KERNEL(index_t v) {
    const index_t n = v / p.s, s = v - n * p.s;
    const T* xv = x + n * p.c * p.s + s;
    const index_t y = static_cast<index_t>(labels[v]);
    const double lse = log_sum_exp(xv, p.c, p.s);
    const double logp = static_cast<double>(xv[y * p.s]) - lse;
    double q = 0;
    for (index_t k = 0; k < p.c; ++k)
      if (k != y) q += std::exp(static_cast<double>(xv[k * p.s]) - lse);
    const double a = (class_w ? class_w[y] : 1.0) * (wmap ? static_cast<double>(wmap[v]) : 1.0);
    return -a * std::pow(q, gamma) * logp;
  });
}

// dFL/dx_j = a [gamma q^(gamma-1) p log p - q^gamma] (delta_jy - p_j), times scale. The first term is taken as 0
// where q == 0 (its limit for every gamma >= 0; q^(gamma-1) alone is infinite there for gamma < 1).
template <class T, class Backend>
void focal_softmax_backward(Backend b, const ClassProblem p, const T* x, const T* labels, const double* class_w,
                            const T* wmap, double gamma, double scale, T* dx) {
  parallel_for(b, p.voxels(), MMNET_KERNEL(index_t v) {
    const index_t n = v / p.s, s = v - n * p.s;
    const index_t o = n * p.c * p.s + s;
    const T* xv = x + o;
    const index_t y = static_cast<index_t>(labels[v]);
    const double lse = log_sum_exp(xv, p.c, p.s);
    const double logp = static_cast<double>(xv[y * p.s]) - lse;
    const double pt = std::exp(logp);
    double q = 0;
    for (index_t k = 0; k < p.c; ++k)
      if (k != y) q += std::exp(static_cast<double>(xv[k * p.s]) - lse);
    const double a = scale * (class_w ? class_w[y] : 1.0) * (wmap ? static_cast<double>(wmap[v]) : 1.0);
    const double first = (gamma != 0 && q > 0) ? gamma * std::pow(q, gamma - 1) * pt * logp : 0.0;
    const double coef = a * (first - std::pow(q, gamma));
    for (index_t k = 0; k < p.c; ++k) {
      const double pk = std::exp(static_cast<double>(xv[k * p.s]) - lse);
      dx[o + k * p.s] = static_cast<T>(coef * ((k == y ? 1.0 : 0.0) - pk));
    }
  });
}

// Sigmoid focal loss per element (MONAI's sigmoid_focal_loss), x logit, t target in [0, 1]:
//   bce = max(x, 0) - x t + log(1 + exp(-|x|)),  m = exp(gamma logsigmoid(-x (2t - 1)))  (= (1 - p_t)^gamma for
//   binary t),  FL = af * cw_c * wmap * m * bce,  af = alpha t + (1 - alpha)(1 - t) (1 without alpha).
// wmap is either per element (map_s == 0) or N x 1 x S broadcast over channels (map_s == S).
struct SigmoidFocalSpec {
  double gamma = 2;
  bool has_alpha = false;
  double alpha = 0.25;
  index_t map_broadcast = 0;  // 0: the weight map has the input's shape; else S: N x 1 x S
};

MMNET_HOST_DEVICE inline double stable_sigmoid(double x) {
  const double e = std::exp(-std::abs(x));
  return x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}
// log(sigmoid(u)) = -(max(-u, 0) + log(1 + exp(-|u|)))
MMNET_HOST_DEVICE inline double log_sigmoid(double u) { return -(fmax(-u, 0.0) + std::log1p(std::exp(-std::abs(u)))); }

template <class T>
MMNET_HOST_DEVICE inline double sigmoid_focal_factor(const ClassProblem& p, const SigmoidFocalSpec& f, index_t i,
                                                     double t, const double* class_w, const T* wmap) {
  double a = f.has_alpha ? f.alpha * t + (1 - f.alpha) * (1 - t) : 1.0;
  if (class_w) a *= class_w[(i / p.s) % p.c];
  if (wmap) {
    const index_t j = f.map_broadcast ? (i / (p.c * p.s)) * p.s + i % p.s : i;
    a *= static_cast<double>(wmap[j]);
  }
  return a;
}

template <class T, class Backend>
double focal_sigmoid_sum(Backend b, const ClassProblem p, const T* x, const T* t, const double* class_w,
                         const T* wmap, const SigmoidFocalSpec f) {
  return reduce_sum<double>(b, p.n * p.c * p.s, MMNET_KERNEL(index_t i) {
    const double xi = x[i], ti = t[i];
    const double bce = fmax(xi, 0.0) - xi * ti + std::log1p(std::exp(-std::abs(xi)));
    const double m = std::exp(f.gamma * log_sigmoid(-xi * (2 * ti - 1)));
    return sigmoid_focal_factor(p, f, i, ti, class_w, wmap) * m * bce;
  });
}

// dFL/dx = a [m gamma sigmoid(u) (1 - 2t) bce + m (sigmoid(x) - t)] with u = x (2t - 1), times scale.
template <class T, class Backend>
void focal_sigmoid_backward(Backend b, const ClassProblem p, const T* x, const T* t, const double* class_w,
                            const T* wmap, const SigmoidFocalSpec f, double scale, T* dx) {
  parallel_for(b, p.n * p.c * p.s, MMNET_KERNEL(index_t i) {
    const double xi = x[i], ti = t[i];
    const double bce = fmax(xi, 0.0) - xi * ti + std::log1p(std::exp(-std::abs(xi)));
    const double u = xi * (2 * ti - 1);
    const double m = std::exp(f.gamma * log_sigmoid(-u));
    const double dm = f.gamma == 0 ? 0.0 : m * f.gamma * stable_sigmoid(u) * (1 - 2 * ti);
    const double a = scale * sigmoid_focal_factor(p, f, i, ti, class_w, wmap);
    dx[i] = static_cast<T>(a * (dm * bce + m * (stable_sigmoid(xi) - ti)));
  });
}

}  // namespace mmnet::backend
