// mmnet/layers/broadcast.hpp: broadcasting element-wise ops, PyTorch's `a * b` and `a + b` where b broadcasts
// to a (torch.broadcast_to semantics, b never larger than a), their gradients reduced over the broadcast axes,
// and the explicit broadcast x.expand(shape) with its adjoint, autograd's sum_to.
//
//   nn::BroadcastMul   y = a * b, b of shape N x C x 1 x 1 x 1 (channel gate, CBAM), N x 1 x D x H x W (spatial
//                      gate) or the full shape; backward returns {dL/da, dL/db}, dL/db summed over broadcast axes
//   nn::BroadcastAdd   y = a + b, same shapes
//   nn::Multiply       y = a * b for equal shapes only (the product rule)
//   nn::BroadcastTo    y = x.expand(shape) (materialised), e.g. an N x C x 1 x 1 x 1 global pool back to
//                      D x H x W (the ASPP image branch); backward sums over the broadcast axes
//   broadcast_to(x, shape), sum_to(x, shape): the same as free functions
//
// Shapes: b (or x) has a's rank and each of its extents equals a's or is 1 (a leading batch of 1 broadcasts
// too). Reductions run as a fixed two-pass blocking (chunks of reduce_chunk terms, then the chunks in order)
// accumulated in double, so results do not depend on the thread count and GPUs get parallel work even when
// only a few outputs reduce very long axes (N*C gates over D*H*W).
#pragma once
#include <string>
#include <utility>

#include "../core/module.hpp"

namespace mmnet::nn {

namespace detail {

// How a tensor of shape `small` (each extent equal to full's or 1) lies in one of shape `full`. Axes of full
// extent 1 are dropped and adjacent axes of the same kind (kept or broadcast) merged, so a channel gate
// N x C x 1 x 1 x 1 over N x C x D x H x W becomes (N*C) x (D*H*W) with the second axis broadcast.
struct BroadcastLayout {
  int rank = 0;                           // merged axes of full
  index_t extent[max_rank] = {};          // their extents
  index_t small_stride[max_rank] = {};    // stride in small; 0 on broadcast axes
  int nkept = 0, nred = 0;                // kept and broadcast (reduced) axes, in order
  index_t kept_extent[max_rank] = {}, kept_stride[max_rank] = {};  // kept axes: extent, stride in full
  index_t red_extent[max_rank] = {}, red_stride[max_rank] = {};    // broadcast axes: extent, stride in full
  index_t kept = 1;     // numel(small)
  index_t reduced = 1;  // numel(full) / numel(small): terms summed into each small element

  // Flat index in small of the element that full's flat index i reads.
  MMNET_HOST_DEVICE index_t small_index(index_t i) const {
    index_t s = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const index_t c = i % extent[d];
      i /= extent[d];
      s += c * small_stride[d];
    }
    return s;
  }
  // Flat index in full of small element o with every broadcast coordinate 0.
  MMNET_HOST_DEVICE index_t full_base(index_t o) const {
    index_t f = 0;
    for (int k = nkept - 1; k >= 0; --k) {
      const index_t c = o % kept_extent[k];
      o /= kept_extent[k];
      f += c * kept_stride[k];
    }
    return f;
  }
};

inline BroadcastLayout broadcast_layout(const Shape& small, const Shape& full) {
  BroadcastLayout l;
  bool red[max_rank] = {};
  for (int d = 0; d < full.rank(); ++d) {
    if (full[d] == 1) continue;
    const bool r = small[d] == 1;
    if (l.rank > 0 && red[l.rank - 1] == r) {
      l.extent[l.rank - 1] *= full[d];
    } else {
      red[l.rank] = r;
      l.extent[l.rank++] = full[d];
    }
  }
  index_t full_stride[max_rank] = {};
  index_t fs = 1, ss = 1;
  for (int d = l.rank - 1; d >= 0; --d) {
    full_stride[d] = fs;
    fs *= l.extent[d];
    l.small_stride[d] = red[d] ? 0 : ss;
    if (!red[d]) ss *= l.extent[d];
  }
  for (int d = 0; d < l.rank; ++d) {
    if (red[d]) {
      l.red_extent[l.nred] = l.extent[d];
      l.red_stride[l.nred++] = full_stride[d];
      l.reduced *= l.extent[d];
    } else {
      l.kept_extent[l.nkept] = l.extent[d];
      l.kept_stride[l.nkept++] = full_stride[d];
      l.kept *= l.extent[d];
    }
  }
  return l;
}

// Whether `small` broadcasts to `full`: same rank, each extent equal or 1.
inline bool broadcastable(const Shape& small, const Shape& full) {
  if (small.rank() != full.rank()) return false;
  for (int d = 0; d < full.rank(); ++d)
    if (small[d] != full[d] && small[d] != 1) return false;
  return true;
}

inline void check_broadcast(const std::string& component, const std::string& small_what, const Shape& small,
                            const std::string& full_what, const Shape& full) {
  if (!broadcastable(small, full))
    fail<shape_error>(component, small_what + " shape (same rank, each extent equal to the " + full_what + "'s or 1)",
                      "a shape that broadcasts to " + full.str(), small.str(), full_what + " shape " + full.str());
}

template <class T, class B>
void check_nonempty(const std::string& component, const std::string& what, const Tensor<T, B>& t) {
  if (!t.defined() || t.numel() == 0)
    fail<shape_error>(component, what, "a non-empty tensor",
                      t.defined() ? "shape " + t.shape().str() : std::string("an empty tensor"));
}

// Terms per block of the two-pass reductions; fixed, so the summation order never depends on threads.
inline constexpr index_t reduce_chunk = 4096;

// Runs f(i) for i in [0, n) where each index is a long loop of about `work` steps: the cpu overload spreads
// even a few indices over OpenMP threads (parallel_for's grain counts indices, not work).
template <class Backend, class F>
void for_each_heavy(Backend b, index_t n, index_t work, F&& f) {
  (void)work;
  backend::parallel_for(b, n, f);
}
template <class F>
void for_each_heavy(cpu, index_t n, index_t work, F&& f) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n > 1 && n * work >= backend::parallel_grain)
#endif
  for (index_t i = 0; i < n; ++i) f(i);
}

// Sum of term(full index, small index o) over the broadcast coordinates r in [r0, r1) of small element o
// (raster order over the broadcast axes, the last fastest).
template <class Term>
MMNET_HOST_DEVICE double broadcast_partial_sum(const BroadcastLayout& l, const Term& term, index_t o, index_t r0,
                                               index_t r1) {
  if (r0 >= r1) return 0.0;
  const index_t base = l.full_base(o);
  index_t coord[max_rank] = {};
  index_t off = 0;
  index_t r = r0;
  for (int k = l.nred - 1; k >= 0; --k) {
    coord[k] = r % l.red_extent[k];
    r /= l.red_extent[k];
    off += coord[k] * l.red_stride[k];
  }
  double acc = 0;
  for (index_t j = r0; j < r1; ++j) {
    acc += term(base + off, o);
    for (int k = l.nred - 1; k >= 0; --k) {  // odometer step
      ++coord[k];
      off += l.red_stride[k];
      if (coord[k] < l.red_extent[k]) break;
      off -= coord[k] * l.red_stride[k];
      coord[k] = 0;
    }
  }
  return acc;
}

template <class Backend>
using double_storage = typename backend_traits<Backend>::template storage<double>;

// out[o] = sum over the broadcast coordinates of term(i, o), for every small element o (l.kept of them).
template <class Backend, class Term>
double_storage<Backend> broadcast_reduce(Backend b, const BroadcastLayout& l, const Term& term) {
  using traits = backend_traits<Backend>;
  auto out = traits::template allocate<double>(l.kept);
  double* po = traits::data(out);
  const index_t nchunk = l.reduced > reduce_chunk ? (l.reduced + reduce_chunk - 1) / reduce_chunk : 1;
  if (nchunk == 1) {
    const index_t r1 = l.reduced;
    for_each_heavy(b, l.kept, r1, MMNET_KERNEL(index_t o) { po[o] = broadcast_partial_sum(l, term, o, 0, r1); });
    return out;
  }
  auto part = traits::template allocate<double>(l.kept * nchunk);
  double* pp = traits::data(part);
  const index_t total = l.reduced;
  for_each_heavy(b, l.kept * nchunk, reduce_chunk, MMNET_KERNEL(index_t j) {
    const index_t o = j / nchunk, c = j - o * nchunk;
    const index_t r1 = (c + 1) * reduce_chunk < total ? (c + 1) * reduce_chunk : total;
    pp[j] = broadcast_partial_sum(l, term, o, c * reduce_chunk, r1);
  });
  backend::parallel_for(b, l.kept, MMNET_KERNEL(index_t o) {
    double s = 0;
    for (index_t c = 0; c < nchunk; ++c) s += pp[o * nchunk + c];
    po[o] = s;
  });
  return out;
}

// cpu, one broadcast axis (the CBAM gates, global pools): the generic kernel's chunks, with the odometer
// replaced by a strided loop; over a contiguous axis each chunk is summed in 8 interleaved lanes (fixed order,
// so still independent of the thread count, but not the generic kernel's bits). When the innermost kept axis is
// contiguous in full (the spatial gate N x 1 x D x H x W: reduce over C at stride D*H*W), a block of
// neighbouring outputs is summed together, so the loop over the broadcast axis reads contiguous rows.
template <class Term>
double_storage<cpu> broadcast_reduce(cpu, const BroadcastLayout& l, const Term& term) {
  if (l.nred != 1) return broadcast_reduce<cpu, Term>(cpu{}, l, term);
  using traits = backend_traits<cpu>;
  auto out = traits::template allocate<double>(l.kept);
  double* po = traits::data(out);
  const index_t stride = l.red_stride[0], total = l.reduced;
  const index_t nchunk = total > reduce_chunk ? (total + reduce_chunk - 1) / reduce_chunk : 1;
  const bool blocked = nchunk == 1 && l.nkept > 0 && l.kept_stride[l.nkept - 1] == 1 && l.kept_extent[l.nkept - 1] > 1;
  if (blocked) {
    constexpr index_t block = 256;
    const index_t inner = l.kept_extent[l.nkept - 1];
    const index_t nb = (inner + block - 1) / block;
    const index_t tasks = (l.kept / inner) * nb;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (tasks > 1 && l.kept * total >= backend::parallel_grain)
#endif
    for (index_t t = 0; t < tasks; ++t) {
      const index_t row = t / nb, j0 = (t - row * nb) * block;
      const index_t len = j0 + block < inner ? block : inner - j0;
      const index_t o0 = row * inner + j0;
      const index_t base = l.full_base(o0);  // outputs o0 .. o0 + len - 1 sit at base + j in full
      double acc[block];
      for (index_t j = 0; j < len; ++j) acc[j] = 0;
      for (index_t r = 0; r < total; ++r)
        for (index_t j = 0; j < len; ++j) acc[j] += term(base + r * stride + j, o0 + j);
      for (index_t j = 0; j < len; ++j) po[o0 + j] = acc[j];
    }
    return out;
  }
  auto part = traits::template allocate<double>(l.kept * nchunk);
  double* pp = traits::data(part);
  for_each_heavy(cpu{}, l.kept * nchunk, total < reduce_chunk ? total : reduce_chunk, [&](index_t j) {
    const index_t o = j / nchunk, c = j - o * nchunk;
    const index_t r0 = c * reduce_chunk, r1 = (c + 1) * reduce_chunk < total ? (c + 1) * reduce_chunk : total;
    const index_t base = l.full_base(o);
    if (stride != 1) {
      double acc = 0;
      for (index_t r = r0; r < r1; ++r) acc += term(base + r * stride, o);
      pp[j] = acc;
      return;
    }
    // Contiguous: lanes independent partial sums, added in a fixed order, so the loop vectorises.
    constexpr index_t lanes = 8;
    double acc[lanes] = {};
    index_t r = r0;
    for (; r + lanes <= r1; r += lanes)
      for (index_t q = 0; q < lanes; ++q) acc[q] += term(base + r + q, o);
    for (; r < r1; ++r) acc[(r - r0) % lanes] += term(base + r, o);
    double sum = 0;
    for (index_t q = 0; q < lanes; ++q) sum += acc[q];
    pp[j] = sum;
  });
  for (index_t o = 0; o < l.kept; ++o) {
    double s = 0;
    for (index_t c = 0; c < nchunk; ++c) s += pp[o * nchunk + c];
    po[o] = s;
  }
  return out;
}

// Terms of the reductions (namespace-scope functors: nvcc's extended lambdas may not nest).
template <class T>
struct SumTerm {
  const T* x;
  MMNET_HOST_DEVICE double operator()(index_t i, index_t) const { return static_cast<double>(x[i]); }
};
template <class T>
struct ProductTerm {
  const T* a;
  const T* b;
  MMNET_HOST_DEVICE double operator()(index_t i, index_t) const {
    return static_cast<double>(a[i]) * static_cast<double>(b[i]);
  }
};

// A tensor of `shape` from double values times scale.
template <class T, class Backend>
Tensor<T, Backend> tensor_from_sums(const double_storage<Backend>& sums, const Shape& shape, double scale) {
  Tensor<T, Backend> y(shape);
  const double* ps = backend_traits<Backend>::data(sums);
  T* py = y.data();
  backend::parallel_for(Backend{}, y.numel(), MMNET_KERNEL(index_t i) { py[i] = static_cast<T>(ps[i] * scale); });
  return y;
}

// y[i] = op(a[i], b[small_index(i)]) over full's elements; op 0: a * b, 1: a + b, 2: b (broadcast copy).
template <class T, class Backend>
void broadcast_binary(Backend bk, const BroadcastLayout& l, int op, index_t n, const T* a, const T* b, T* y) {
  backend::parallel_for(bk, n, MMNET_KERNEL(index_t i) {
    const T v = b[l.small_index(i)];
    y[i] = op == 0 ? a[i] * v : (op == 1 ? a[i] + v : v);
  });
}

// cpu: one OpenMP iteration per row of the innermost merged axis, which is contiguous in full and either
// contiguous or broadcast in small, so the index arithmetic runs once per row and the inner loop vectorises.
template <class T>
void broadcast_binary(cpu, const BroadcastLayout& l, int op, index_t n, const T* a, const T* b, T* y) {
  const index_t inner = l.rank > 0 ? l.extent[l.rank - 1] : 1;
  const index_t step = l.rank > 0 ? l.small_stride[l.rank - 1] : 0;
  const index_t rows = n / inner;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows > 1 && n >= backend::parallel_grain)
#endif
  for (index_t r = 0; r < rows; ++r) {
    const T* br = b + l.small_index(r * inner);
    const T* ar = op == 2 ? nullptr : a + r * inner;
    T* yr = y + r * inner;
    if (step == 0) {
      const T v = br[0];
      if (op == 0) for (index_t j = 0; j < inner; ++j) yr[j] = ar[j] * v;
      else if (op == 1) for (index_t j = 0; j < inner; ++j) yr[j] = ar[j] + v;
      else for (index_t j = 0; j < inner; ++j) yr[j] = v;
    } else {
      if (op == 0) for (index_t j = 0; j < inner; ++j) yr[j] = ar[j] * br[j];
      else if (op == 1) for (index_t j = 0; j < inner; ++j) yr[j] = ar[j] + br[j];
      else for (index_t j = 0; j < inner; ++j) yr[j] = br[j];
    }
  }
}

}  // namespace detail

// torch.broadcast_to(x, shape), materialised: each extent of x must equal shape's or be 1.
template <class T, class Backend>
Tensor<T, Backend> broadcast_to(const Tensor<T, Backend>& x, const Shape& shape) {
  const std::string name = "mmnet::nn::broadcast_to";
  detail::check_nonempty(name, "input", x);
  if (shape.numel() == 0) fail<shape_error>(name, "target shape", "no zero extent", shape.str());
  detail::check_broadcast(name, "input", x.shape(), "target", shape);
  Tensor<T, Backend> y(shape);
  detail::broadcast_binary(Backend{}, detail::broadcast_layout(x.shape(), shape), 2, y.numel(),
                           static_cast<const T*>(nullptr), x.data(), y.data());
  return y;
}

// The adjoint of broadcast_to (autograd's sum_to): sums x over the axes where shape has extent 1 and x does
// not. shape must broadcast to x's shape.
template <class T, class Backend>
Tensor<T, Backend> sum_to(const Tensor<T, Backend>& x, const Shape& shape) {
  const std::string name = "mmnet::nn::sum_to";
  detail::check_nonempty(name, "input", x);
  detail::check_broadcast(name, "target", shape, "input", x.shape());
  const auto l = detail::broadcast_layout(shape, x.shape());
  return detail::tensor_from_sums<T, Backend>(detail::broadcast_reduce(Backend{}, l, detail::SumTerm<T>{x.data()}),
                                              shape, 1.0);
}

namespace detail {
// What BroadcastMul, BroadcastAdd and Multiply share: checks, the saved operands and the gate's layout.
template <class T, class Backend>
class BroadcastBinary : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

 protected:
  void check_forward(const char* name, const tensor& a, const tensor& b) {
    check_nonempty(name, "input a", a);
    check_nonempty(name, "input b", b);
    if (!broadcastable(b.shape(), a.shape()))
      fail<shape_error>(name, "shape of b (same rank as a, each extent equal to a's or 1)",
                        "a shape that broadcasts to a's " + a.shape().str(), b.shape().str(),
                        "a shape " + a.shape().str() + ", b shape " + b.shape().str());
  }
  void check_backward(const char* name, const tensor& dy) const {
    if (!a_.defined()) fail<value_error>(std::string(name) + "::backward", "saved inputs", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, a_.shape());
  }
  tensor a_, b_;
  BroadcastLayout layout_;
};
}  // namespace detail

// y = a * b with b broadcast to a (PyTorch's a * b). backward(dy) returns {dy * b, sum_to(dy * a, b's shape)}.
template <class T, class Backend>
class BroadcastMul : public detail::BroadcastBinary<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const tensor& a, const tensor& b) {
    this->check_forward(name, a, b);
    this->a_ = a;
    this->b_ = b;
    this->layout_ = detail::broadcast_layout(b.shape(), a.shape());
    tensor y(a.shape());
    detail::broadcast_binary(Backend{}, this->layout_, 0, y.numel(), a.data(), b.data(), y.data());
    return y;
  }

  std::pair<tensor, tensor> backward(const tensor& dy) {
    this->check_backward(name, dy);
    tensor da(dy.shape());
    detail::broadcast_binary(Backend{}, this->layout_, 0, da.numel(), dy.data(), this->b_.data(), da.data());
    const auto sums =
        detail::broadcast_reduce(Backend{}, this->layout_, detail::ProductTerm<T>{dy.data(), this->a_.data()});
    return {da, detail::tensor_from_sums<T, Backend>(sums, this->b_.shape(), 1.0)};
  }

 private:
  static constexpr const char* name = "mmnet::nn::BroadcastMul";
};

// y = a + b with b broadcast to a (PyTorch's a + b). backward(dy) returns {dy (a copy), sum_to(dy, b's shape)}.
template <class T, class Backend>
class BroadcastAdd : public detail::BroadcastBinary<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const tensor& a, const tensor& b) {
    this->check_forward(name, a, b);
    this->a_ = a;  // only its shape is needed; the copy is shallow
    this->b_ = b;
    this->layout_ = detail::broadcast_layout(b.shape(), a.shape());
    tensor y(a.shape());
    detail::broadcast_binary(Backend{}, this->layout_, 1, y.numel(), a.data(), b.data(), y.data());
    return y;
  }

  std::pair<tensor, tensor> backward(const tensor& dy) {
    this->check_backward(name, dy);
    const auto sums = detail::broadcast_reduce(Backend{}, this->layout_, detail::SumTerm<T>{dy.data()});
    // A copy, not dy itself: callers accumulate into input gradients in place.
    return {dy.clone(), detail::tensor_from_sums<T, Backend>(sums, this->b_.shape(), 1.0)};
  }

 private:
  static constexpr const char* name = "mmnet::nn::BroadcastAdd";
};

// y = a * b for tensors of equal shape (torch.mul without broadcasting); backward returns {dy * b, dy * a}.
template <class T, class Backend>
class Multiply : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const tensor& a, const tensor& b) {
    detail::check_nonempty(name, "input a", a);
    detail::check_nonempty(name, "input b", b);
    if (a.shape() != b.shape())
      fail<shape_error>(name, "shape of b (equal to a's)", a.shape().str(), b.shape().str(),
                        "a shape " + a.shape().str() + ", b shape " + b.shape().str());
    a_ = a;
    b_ = b;
    return mul(a, b);
  }

  std::pair<tensor, tensor> backward(const tensor& dy) {
    if (!a_.defined()) fail<value_error>(std::string(name) + "::backward", "saved inputs", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, a_.shape());
    return {mul(dy, b_), mul(dy, a_)};
  }

 private:
  static constexpr const char* name = "mmnet::nn::Multiply";
  tensor a_, b_;
};

// y = broadcast_to(x, shape) (x.expand(shape) in PyTorch, materialised); backward(dy) = sum_to(dy, x's shape).
// The ASPP image branch: BroadcastTo().forward(pooled, Shape{N, C, D, H, W}) for pooled N x C x 1 x 1 x 1.
template <class T, class Backend>
class BroadcastTo : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const tensor& x, const Shape& shape) {
    tensor y = broadcast_to(x, shape);  // checks the shapes
    in_shape_ = x.shape();
    out_shape_ = shape;
    return y;
  }

  tensor backward(const tensor& dy) {
    if (in_shape_.rank() == 0)
      fail<value_error>("mmnet::nn::BroadcastTo::backward", "saved shape", "a forward() call first", "none");
    check_same_shape("mmnet::nn::BroadcastTo::backward", "grad_output", dy, out_shape_);
    return sum_to(dy, in_shape_);
  }

 private:
  Shape in_shape_, out_shape_;
};

}  // namespace mmnet::nn
