// mmnet/optim/clip_grad.hpp: gradient clipping, torch.nn.utils.clip_grad_norm_ and clip_grad_value_ (1.13).
//
// clip_grad_norm_(params, max_norm, norm_type = 2): over the parameters that have a gradient (requires_grad
// and a defined grad: a frozen parameter is skipped, as torch skips grad None), in the parameters' precision T:
//   n_i   = ||g_i||_p per parameter (accumulated in double, rounded to T, as torch.norm of each grad)
//   total = ||(n_1, n_2, ...)||_p           (p = inf: max |g|)
//   coef  = min(1, max_norm / (total + 1e-6)),  every g_i *= coef   (also when coef is 1, as torch)
// Returns total (0 when no parameter has a gradient). A non-finite total makes every gradient NaN, as torch
// does, unless error_if_nonfinite, which throws mmnet::value_error instead and leaves the gradients alone.
// nnU-Net clips to a global L2 norm of 12 after the backward pass: clip_grad_norm_(model, 12.0).
// clip_grad_value_(params, v) clamps every gradient element to [-v, v].
//
// norm_type: any p > 0, or INFINITY. torch also accepts p <= 0 (not norms) and a negative max_norm (which
// flips the gradients); mmnet rejects both with mmnet::value_error.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../core/module.hpp"

namespace mmnet::optim {

namespace detail {

// max |x| over a tensor, NaN if any element is NaN (torch's max propagates NaN). Blocks are reduced in
// parallel, their maxima on the host: deterministic on both backends.
template <class T, class Backend>
double max_abs(const Tensor<T, Backend>& t) {
  const index_t n = t.numel();
  if (n == 0) return 0.0;
  const index_t block = 4096;
  const index_t blocks = (n + block - 1) / block;
  Tensor<T, Backend> partial({blocks});
  const T* x = t.data();
  T* out = partial.data();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  backend::parallel_for(Backend{}, blocks, MMNET_KERNEL(index_t b) {
    const index_t lo = b * block;
    const index_t hi = lo + block < n ? lo + block : n;
    T m = T(0);
    bool has_nan = false;
    for (index_t i = lo; i < hi; ++i) {
      const T a = std::abs(x[i]);
      if (a != a) has_nan = true;
      else if (a > m) m = a;
    }
    out[b] = has_nan ? nan : m;
  });
  double m = 0;
  for (T v : partial.to_vector()) {
    if (std::isnan(v)) return std::numeric_limits<double>::quiet_NaN();
    m = std::max(m, static_cast<double>(v));
  }
  return m;
}

// ||x||_p for finite p > 0, summed in double.
template <class T, class Backend>
double p_norm(const Tensor<T, Backend>& t, double p) {
  const T* x = t.data();
  double s;
  if (p == 2.0) {
    s = backend::reduce_sum<double>(Backend{}, t.numel(), MMNET_KERNEL(index_t i) {
      const double v = static_cast<double>(x[i]);
      return v * v;
    });
    return std::sqrt(s);
  }
  if (p == 1.0)
    return backend::reduce_sum<double>(Backend{}, t.numel(),
                                       MMNET_KERNEL(index_t i) { return std::abs(static_cast<double>(x[i])); });
  s = backend::reduce_sum<double>(Backend{}, t.numel(),
                                  MMNET_KERNEL(index_t i) { return std::pow(std::abs(static_cast<double>(x[i])), p); });
  return std::pow(s, 1.0 / p);
}

template <class T, class Backend>
std::vector<Parameter<T, Backend>*> with_grad(const std::vector<Parameter<T, Backend>*>& params) {
  std::vector<Parameter<T, Backend>*> out;
  for (auto* p : params)
    if (p && p->requires_grad && p->grad.defined() && p->grad.numel() > 0) out.push_back(p);
  return out;
}

}  // namespace detail

// Scales all gradients together so that their joint p-norm is at most max_norm; returns the norm before.
template <class T, class Backend>
double clip_grad_norm_(const std::vector<Parameter<T, Backend>*>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false) {
  const char* name = "mmnet::optim::clip_grad_norm_";
  if (!(max_norm >= 0)) fail<value_error>(name, "max_norm", "a value >= 0", max_norm);
  if (!(norm_type > 0)) fail<value_error>(name, "norm_type", "a value > 0 or INFINITY", norm_type);
  const auto ps = detail::with_grad(params);
  if (ps.empty()) return 0.0;
  const bool inf = std::isinf(norm_type);
  T total;
  if (inf) {
    double m = 0;
    for (auto* p : ps) {
      const double n = static_cast<double>(static_cast<T>(detail::max_abs(p->grad)));
      m = std::isnan(n) || std::isnan(m) ? std::numeric_limits<double>::quiet_NaN() : std::max(m, n);
    }
    total = static_cast<T>(m);
  } else {
    // the norm of the per-parameter norms, each rounded to T first, as torch.norm(torch.stack(norms))
    double s = 0;
    for (auto* p : ps) {
      const double n = static_cast<double>(static_cast<T>(detail::p_norm(p->grad, norm_type)));
      s += norm_type == 2.0 ? n * n : norm_type == 1.0 ? n : std::pow(n, norm_type);
    }
    total = static_cast<T>(norm_type == 2.0 ? std::sqrt(s) : norm_type == 1.0 ? s : std::pow(s, 1.0 / norm_type));
  }
  if (error_if_nonfinite && !std::isfinite(total))
    fail<value_error>(name, "total norm of the gradients", "a finite value", total,
                      "error_if_nonfinite is set; the gradients were left unchanged");
  // torch: max_norm / (total + 1e-6) evaluates as reciprocal(total + 1e-6) * max_norm in T, then clamp(max=1)
  T coef = T(1) / (total + static_cast<T>(1e-6)) * static_cast<T>(max_norm);
  if (coef > T(1)) coef = T(1);  // NaN stays NaN, as torch.clamp
  for (auto* p : ps) {
    T* g = p->grad.data();
    backend::parallel_for(Backend{}, p->grad.numel(), MMNET_KERNEL(index_t i) { g[i] = g[i] * coef; });
  }
  return static_cast<double>(total);
}
// All parameters of a module.
template <class T, class Backend>
double clip_grad_norm_(Module<T, Backend>& module, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false) {
  return clip_grad_norm_(module.parameters(), max_norm, norm_type, error_if_nonfinite);
}

// Clamps every gradient element to [-clip_value, clip_value] (NaN stays NaN).
template <class T, class Backend>
void clip_grad_value_(const std::vector<Parameter<T, Backend>*>& params, double clip_value) {
  if (!(clip_value >= 0)) fail<value_error>("mmnet::optim::clip_grad_value_", "clip_value", "a value >= 0", clip_value);
  const T hi = static_cast<T>(clip_value), lo = -hi;
  for (auto* p : detail::with_grad(params)) {
    T* g = p->grad.data();
    backend::parallel_for(Backend{}, p->grad.numel(), MMNET_KERNEL(index_t i) {
      const T v = g[i];
      g[i] = v < lo ? lo : (v > hi ? hi : v);
    });
  }
}
template <class T, class Backend>
void clip_grad_value_(Module<T, Backend>& module, double clip_value) {
  clip_grad_value_(module.parameters(), clip_value);
}

}  // namespace mmnet::optim
