// mmnet/losses/one_hot.hpp: integer labels to one-hot targets (monai.networks.one_hot; torch.nn.functional.one_hot
// followed by moving the class axis to position 1).
//
//   labels N x 1 x D x H x W (whole numbers in [0, num_classes) stored in T)  ->  N x num_classes x D x H x W
//   out[n, c, ...] = 1 if labels[n, 0, ...] == c else 0
//
// Any rank >= 2 with a size-1 axis 1 is accepted (N x 1 for class labels of N samples). No gradient (labels are
// data). Labels that are not whole numbers in range raise value_error naming the first offending element.
//
//   auto g = losses::one_hot(labels, 3);   // then e.g. SoftDice on softmax probabilities vs g
#pragma once
#include <string>

#include "../core/tensor.hpp"
#include "reduction.hpp"

namespace mmnet::losses {

namespace detail {

// out[n, c, s] = [labels[n, s] == c] for labels N x S (the class axis removed); ignored labels (ls) give all 0.
template <class T, class Backend>
void one_hot_kernel(index_t n, index_t c, index_t s, const T* labels, bool has_ignore, double ignore, T* out) {
  backend::parallel_for(Backend{}, n * c * s, MMNET_KERNEL(index_t i) {
    const index_t sn = i / (c * s);
    const index_t k = (i / s) % c;
    const double l = labels[sn * s + i % s];
    out[i] = (!(has_ignore && l == ignore) && l == static_cast<double>(k)) ? T(1) : T(0);
  });
}

}  // namespace detail

template <class T, class Backend>
Tensor<T, Backend> one_hot(const Tensor<T, Backend>& labels, index_t num_classes) {
  constexpr const char* name = "mmnet::losses::one_hot";
  if (num_classes < 1) fail<value_error>(name, "num_classes", ">= 1", num_classes);
  if (!labels.defined() || labels.numel() == 0)
    fail<shape_error>(name, "labels", "a non-empty tensor",
                      labels.defined() ? "shape " + labels.shape().str() : std::string("an empty tensor"));
  if (labels.rank() < 2 || labels.size(1) != 1)
    fail<shape_error>(name, "labels shape", "N x 1 x ... (rank >= 2, axis 1 of size 1)", labels.shape().str());
  detail::check_labels(name, labels, num_classes);
  Shape out_shape = labels.shape();
  out_shape[1] = num_classes;
  Tensor<T, Backend> out(out_shape);
  const index_t n = labels.size(0);
  detail::one_hot_kernel<T, Backend>(n, num_classes, labels.numel() / n, labels.data(), false, 0.0, out.data());
  return out;
}

}  // namespace mmnet::losses
