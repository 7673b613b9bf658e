// mmnet/models/tiny_net.hpp: the smallest complete 3D segmentation network, used as the end-to-end proof
// (tests/e2e/tiny_net_test.cpp against tests/reference/tiny_net_ref.py) and the teaching example
// (examples/tiny_train.cpp). It reads like its figure:
//
//   x ─ conv1 ─ bn1 ─ relu1 ─┬─ pool ─ conv2 ─┐
//                            └──── skip ──────┴─ concat ─ head ─ logits (sigmoid → probability)
//
// conv1 has no bias: BatchNorm subtracts the batch mean right after it, so a bias there would get an exactly
// zero gradient (PyTorch's convention for conv + BN).
#pragma once
#include "../core/module.hpp"
#include "../core/ops.hpp"
#include "../layers/activation.hpp"
#include "../layers/batchnorm3d.hpp"
#include "../layers/concat.hpp"
#include "../layers/conv3d.hpp"
#include "../layers/maxpool3d.hpp"

namespace mmnet::models {

struct TinyNetOptions {
  explicit TinyNetOptions(index_t in_channels = 2) : in_channels_(in_channels) {}
  TinyNetOptions& in_channels(index_t v) { in_channels_ = v; return *this; }
  TinyNetOptions& width(index_t v) { width_ = v; return *this; }
  index_t in_channels() const { return in_channels_; }
  index_t width() const { return width_; }

 private:
  index_t in_channels_ = 2;
  index_t width_ = 4;
};

template <class T, class Backend>
struct TinyNet : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  nn::Conv3d<T, Backend> conv1;
  nn::BatchNorm3d<T, Backend> bn1;
  nn::ReLU<T, Backend> relu1;
  nn::MaxPool3d<T, Backend> pool;
  nn::Conv3d<T, Backend> conv2;
  nn::Concat<T, Backend> concat;
  nn::Conv3d<T, Backend> head;

  explicit TinyNet(const TinyNetOptions& o = TinyNetOptions(), Generator& g = default_generator())
      : conv1(nn::Conv3dOptions(o.in_channels(), o.width(), 3).padding(1).bias(false), g),
        bn1(nn::BatchNorm3dOptions(o.width())),
        pool(nn::MaxPool3dOptions(3).stride(1).padding(1)),
        conv2(nn::Conv3dOptions(o.width(), o.width(), {1, 3, 3}).padding({0, 1, 1}), g),
        head(nn::Conv3dOptions(2 * o.width(), 1, 1), g) {}

  void members(Members<T, Backend>& m) override {
    m("conv1", conv1)("bn1", bn1)("pool", pool)("conv2", conv2)("head", head);
  }

  // Returns logits (N x 1 x D x H x W); apply a Sigmoid for probabilities.
  tensor forward(const tensor& x) {
    const tensor skip = relu1.forward(bn1.forward(conv1.forward(x)));
    const tensor h = conv2.forward(pool.forward(skip));
    return head.forward(concat.forward({skip, h}));
  }

  // dL/dlogits in; returns dL/dx. The skip receives the gradient of both of its uses.
  tensor backward(const tensor& dlogits) {
    auto d = concat.backward(head.backward(dlogits));
    tensor dskip = pool.backward(conv2.backward(d[1]));
    add_(dskip, d[0]);
    return conv1.backward(bn1.backward(relu1.backward(dskip)));
  }
};

}  // namespace mmnet::models
