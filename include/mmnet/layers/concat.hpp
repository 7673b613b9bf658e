// mmnet/layers/concat.hpp: channel concatenation (torch.cat(xs, dim=1)) and its inverse, the channel split
// (torch.split(y, sizes, dim=1)), for tensors N x C_i x ... of any rank >= 2 with equal other dimensions.
// nn::Concat is the layer form: forward concatenates, backward splits dL/dy back into one gradient per input.
#pragma once
#include <cstring>
#include <string>
#include <vector>

#include "../core/module.hpp"

namespace mmnet::nn {

namespace detail {
// Shape with dimension 1 replaced, for messages and for building outputs.
inline Shape with_channels(const Shape& s, index_t c) {
  Shape r = s;
  r[1] = c;
  return r;
}
inline std::string shape_without_channels(const Shape& s) {
  std::string r = "(";
  for (int d = 0; d < s.rank(); ++d) r += (d ? ", " : "") + (d == 1 ? std::string("*") : std::to_string(s[d]));
  return r + ")";
}

// Copies channels [src_offset, src_offset + c) of src (outer x src_total x inner) into channels
// [dst_offset, dst_offset + c) of dst (outer x dst_total x inner); one copied element per index.
template <class T, class Backend>
void copy_channels(Backend b, index_t outer, index_t c, index_t inner, const T* src, index_t src_total,
                   index_t src_offset, T* dst, index_t dst_total, index_t dst_offset) {
  const index_t block = c * inner;
  backend::parallel_for(b, outer * block, MMNET_KERNEL(index_t i) {
    const index_t n = i / block;
    const index_t r = i - n * block;
    dst[(n * dst_total + dst_offset) * inner + r] = src[(n * src_total + src_offset) * inner + r];
  });
}
// cpu: each sample's c channels are one contiguous block in both tensors; memcpy pieces of it, spread over
// OpenMP threads when the copy is large.
template <class T>
void copy_channels(cpu, index_t outer, index_t c, index_t inner, const T* src, index_t src_total,
                   index_t src_offset, T* dst, index_t dst_total, index_t dst_offset) {
  const index_t block = c * inner;
  constexpr index_t piece = index_t(1) << 16;  // elements per task
  const index_t pieces = (block + piece - 1) / piece;
  const index_t tasks = outer * pieces;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (tasks > 1 && outer * block >= backend::parallel_grain * 16)
#endif
  for (index_t t = 0; t < tasks; ++t) {
    const index_t n = t / pieces, k0 = (t - n * pieces) * piece;
    const index_t len = k0 + piece < block ? piece : block - k0;
    std::memcpy(dst + (n * dst_total + dst_offset) * inner + k0, src + (n * src_total + src_offset) * inner + k0,
                sizeof(T) * static_cast<std::size_t>(len));
  }
}
}  // namespace detail

// torch.cat(xs, dim=1). Every input needs the rank and all dimensions but 1 of xs[0].
template <class T, class Backend>
Tensor<T, Backend> cat_channels(const std::vector<Tensor<T, Backend>>& xs) {
  const std::string name = "mmnet::nn::cat_channels";
  if (xs.empty()) fail<shape_error>(name, "number of inputs", "at least 1", 0);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const std::string what = "input " + std::to_string(i);
    if (!xs[i].defined()) fail<shape_error>(name, what, "a tensor", "an empty tensor");
    if (xs[i].rank() < 2) fail<shape_error>(name, what + " rank", ">= 2 (N x C x ...)", xs[i].rank(), "shape " + xs[i].shape().str());
    if (i == 0) continue;
    const Shape& s0 = xs[0].shape();
    const Shape& si = xs[i].shape();
    bool same = si.rank() == s0.rank();
    for (int d = 0; same && d < s0.rank(); ++d) same = d == 1 || si[d] == s0[d];
    if (!same)
      fail<shape_error>(name, what + " shape (all dimensions but 1 must match input 0)", detail::shape_without_channels(s0),
                        si.str(), "input 0 shape " + s0.str());
  }
  const Shape& s0 = xs[0].shape();
  index_t total = 0;
  for (auto& x : xs) total += x.size(1);
  index_t inner = 1;
  for (int d = 2; d < s0.rank(); ++d) inner *= s0[d];
  Tensor<T, Backend> y(detail::with_channels(s0, total));
  index_t offset = 0;
  for (auto& x : xs) {
    detail::copy_channels(Backend{}, s0[0], x.size(1), inner, x.data(), x.size(1), 0, y.data(), total, offset);
    offset += x.size(1);
  }
  return y;
}

// torch.split(y, sizes, dim=1): sizes must sum to y's channel count; each part is a new tensor.
template <class T, class Backend>
std::vector<Tensor<T, Backend>> split_channels(const Tensor<T, Backend>& y, const std::vector<index_t>& sizes) {
  const std::string name = "mmnet::nn::split_channels";
  if (!y.defined()) fail<shape_error>(name, "input", "a tensor", "an empty tensor");
  if (y.rank() < 2) fail<shape_error>(name, "input rank", ">= 2 (N x C x ...)", y.rank(), "shape " + y.shape().str());
  if (sizes.empty()) fail<shape_error>(name, "number of parts", "at least 1", 0);
  index_t total = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0) fail<shape_error>(name, "size of part " + std::to_string(i), ">= 0", sizes[i]);
    total += sizes[i];
  }
  if (total != y.size(1))
    fail<shape_error>(name, "sum of the part sizes", y.size(1), total, "input shape " + y.shape().str());
  index_t inner = 1;
  for (int d = 2; d < y.rank(); ++d) inner *= y.size(d);
  std::vector<Tensor<T, Backend>> parts;
  parts.reserve(sizes.size());
  index_t offset = 0;
  for (index_t c : sizes) {
    Tensor<T, Backend> part(detail::with_channels(y.shape(), c));
    detail::copy_channels(Backend{}, y.size(0), c, inner, y.data(), total, offset, part.data(), c, 0);
    parts.push_back(part);
    offset += c;
  }
  return parts;
}

// Channel concatenation as a layer (no parameters). backward(dy) returns one gradient per input of the last
// forward, in input order.
template <class T, class Backend>
class Concat : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const std::vector<tensor>& xs) {
    tensor y = cat_channels(xs);
    sizes_.clear();
    for (auto& x : xs) sizes_.push_back(x.size(1));
    out_shape_ = y.shape();
    return y;
  }

  std::vector<tensor> backward(const tensor& dy) {
    if (sizes_.empty()) fail<value_error>("mmnet::nn::Concat::backward", "saved sizes", "a forward() call first", "none");
    check_same_shape("mmnet::nn::Concat::backward", "grad_output", dy, out_shape_);
    return split_channels(dy, sizes_);
  }

 private:
  std::vector<index_t> sizes_;
  Shape out_shape_;
};

}  // namespace mmnet::nn
