// mmnet/models/cscn/cbr.hpp: the CSCN spec's CBR(k, cin -> cout, r) (shared/specs/cascaded-fcn.md §2): Conv3d with
// kernel k^3, stride 1, dilation r, zero padding r (k - 1) / 2 and NO bias, then BatchNorm3d (eps 1e-5, momentum
// 0.1), then ReLU. PyTorch: nn.Sequential-free module with members conv, bn (state-dict names P.conv.weight,
// P.bn.{weight,bias,running_mean,running_var,num_batches_tracked}; tests/reference/cscn_ref.py `CBR`).
#pragma once
#include "../../core/module.hpp"
#include "../../core/random.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/batchnorm3d.hpp"
#include "../../layers/conv3d.hpp"

namespace mmnet::models::cscn {

template <class T, class Backend>
struct CBR : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  nn::Conv3d<T, Backend> conv;
  nn::BatchNorm3d<T, Backend> bn;
  nn::ReLU<T, Backend> relu;

  // k: kernel (1 or 3 in CSCN), r: dilation; the padding r (k - 1) / 2 keeps the spatial size.
  CBR(index_t in, index_t out, index_t k, index_t r = 1, Generator& g = default_generator())
      : conv(nn::Conv3dOptions(in, out, k).dilation(r).padding(r * (k - 1) / 2).bias(false), g),
        bn(nn::BatchNorm3dOptions(out)) {}

  void members(Members<T, Backend>& m) override { m("conv", conv)("bn", bn); }

  tensor forward(const tensor& x) { return relu.forward(bn.forward(conv.forward(x))); }
  tensor backward(const tensor& dy) { return conv.backward(bn.backward(relu.backward(dy))); }
};

}  // namespace mmnet::models::cscn
