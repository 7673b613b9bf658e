// mmnet/models/cscn/acdnet.hpp: ACDNet, the fine stage of CSCN (spec shared/specs/cascaded-fcn.md §2.3): a 3D
// DenseNet whose dense layers put ASPP before the 1x1 bottleneck, with a U-Net-style decoder and multi-scale side
// outputs fused before the head. Returns LOGITS N x classes x D x H x W. PyTorch equivalent:
// tests/reference/cscn_ref.py `ACDNet`, state-dict names of spec §8:
//
//   x ─ stem ─ db1 ─┬─ td1 ─ db2 ─┬─ td2 ─ db3 ─┬─ up2 ─ cat[DB2, up] ─ dec2 ─┬─ up1 ─ cat[DB1, up] ─ dec1 ─┐
//                   │             │             │                            │                             │
//                   │             │           side3 ─ trilinear ─┐         side2 ─ trilinear ─┐          side1
//                   └─────────────┴── (skips)                    └─ cat[S1, S2, S3] ◄──────────┴────────────┘
//                                                                      └─ fuse ─ head ─ logits
//
// ASPPDenseLayer (names b0..b4, bottleneck): b0 = CBR(1), b1..b3 = CBR(3, dilation r1..r3), b4 = ReLU(Conv3d 1x1
// with bias) of the global average pool broadcast back to D x H x W (no BN, spec §7.6); y = bottleneck(cat[b0..b4])
// (CBR(1, 5a -> k)); out = cat[x, y]. DenseBlock: L such layers (names 0..L-1). TransitionDown: AvgPool3d(2) of
// CBR(1, C -> floor(θ C)) (name cbr). Side outputs are resized with trilinear interpolation, align_corners false,
// to the input's D x H x W. D, H and W must be multiples of 4. The global-pool branch makes the output depend on the
// block extent, so inference must use the training block size (spec §4.4).
//
//   models::ACDNet<float, mmnet::cpu> net(models::ACDNetOptions::paper());    // 1,673,234 parameters
//   auto logits = net.forward(x);                                            // x: N x 2 x 8 x 24 x 24
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/avgpool3d.hpp"
#include "../../layers/broadcast.hpp"
#include "../../layers/concat.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/conv_transpose3d.hpp"
#include "../../layers/global_pool.hpp"
#include "../../layers/upsample.hpp"
#include "bunet.hpp"
#include "cbr.hpp"
#include "options.hpp"

namespace mmnet::models {

namespace cscn {

// One dense layer: C -> C + k channels (spec §2.3 aspp_dense_layer).
template <class T, class Backend>
struct ASPPDenseLayer : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::models::cscn::ASPPDenseLayer";

  CBR<T, Backend> b0, b1, b2, b3;
  nn::Conv3d<T, Backend> b4;  // image-pooling branch: 1x1x1 with bias, no BN
  CBR<T, Backend> bottleneck;

  // in: C; a: ASPP branch width; k: growth rate; rates: dilations of b1..b3.
  ASPPDenseLayer(index_t in, index_t a, index_t k, const std::array<index_t, 3>& rates, Generator& g = default_generator())
      : b0(in, a, 1, 1, g),
        b1(in, a, 3, rates[0], g),
        b2(in, a, 3, rates[1], g),
        b3(in, a, 3, rates[2], g),
        b4(nn::Conv3dOptions(in, a, 1), g),
        bottleneck(5 * a, k, 1, 1, g),
        in_(in) {}

  void members(Members<T, Backend>& m) override {
    m("b0", b0)("b1", b1)("b2", b2)("b3", b3)("b4", b4)("bottleneck", bottleneck);
  }

  // x: N x C x D x H x W; returns cat[x, y], N x (C + k) x D x H x W.
  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    if (x.size(1) != in_) fail<shape_error>(name, "input channels", in_, x.size(1), "input shape " + x.shape().str());
    const tensor pooled = b4_relu_.forward(b4.forward(gap_.forward(x)));
    const tensor image = broadcast_.forward(pooled, Shape{x.size(0), pooled.size(1), x.size(2), x.size(3), x.size(4)});
    const tensor y = bottleneck.forward(
        branches_.forward({b0.forward(x), b1.forward(x), b2.forward(x), b3.forward(x), image}));
    return out_.forward({x, y});
  }

  // dL/d(cat[x, y]) in; returns dL/dx (the direct path plus all five branches).
  tensor backward(const tensor& dout) {
    const auto d = out_.backward(dout);  // {dx direct, dy}
    const auto db = branches_.backward(bottleneck.backward(d[1]));
    tensor dx = d[0];
    add_(dx, b0.backward(db[0]));
    add_(dx, b1.backward(db[1]));
    add_(dx, b2.backward(db[2]));
    add_(dx, b3.backward(db[3]));
    add_(dx, gap_.backward(b4.backward(b4_relu_.backward(broadcast_.backward(db[4])))));
    return dx;
  }

  index_t in_channels() const { return in_; }

 private:
  index_t in_;
  nn::GlobalAvgPool3d<T, Backend> gap_;
  nn::ReLU<T, Backend> b4_relu_;
  nn::BroadcastTo<T, Backend> broadcast_;
  nn::Concat<T, Backend> branches_, out_;
};

// L dense layers, C -> C + L k (names 0..L-1).
template <class T, class Backend>
struct DenseBlock : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  std::vector<ASPPDenseLayer<T, Backend>> layers;

  DenseBlock(index_t in, index_t L, index_t a, index_t k, const std::array<index_t, 3>& rates,
             Generator& g = default_generator()) {
    layers.reserve(static_cast<std::size_t>(L));
    for (index_t i = 0; i < L; ++i) layers.emplace_back(in + i * k, a, k, rates, g);
  }
  void members(Members<T, Backend>& m) override {
    for (std::size_t i = 0; i < layers.size(); ++i) m(std::to_string(i), layers[i]);
  }
  tensor forward(const tensor& x) {
    tensor h = x;
    for (auto& l : layers) h = l.forward(h);
    return h;
  }
  tensor backward(const tensor& dy) {
    tensor d = dy;
    for (std::size_t i = layers.size(); i-- > 0;) d = layers[i].backward(d);
    return d;
  }
};

// AvgPool3d(2) of CBR(1, C -> out) (name cbr).
template <class T, class Backend>
struct TransitionDown : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  CBR<T, Backend> cbr;

  TransitionDown(index_t in, index_t out, Generator& g = default_generator()) : cbr(in, out, 1, 1, g) {}
  void members(Members<T, Backend>& m) override { m("cbr", cbr); }
  tensor forward(const tensor& x) { return pool_.forward(cbr.forward(x)); }
  tensor backward(const tensor& dy) { return cbr.backward(pool_.backward(dy)); }

 private:
  nn::AvgPool3d<T, Backend> pool_{nn::AvgPool3dOptions(2)};
};

}  // namespace cscn

template <class T, class Backend>
struct ACDNet : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::models::ACDNet";

  cscn::CBR<T, Backend> stem;
  cscn::DenseBlock<T, Backend> db1;
  cscn::TransitionDown<T, Backend> td1;
  cscn::DenseBlock<T, Backend> db2;
  cscn::TransitionDown<T, Backend> td2;
  cscn::DenseBlock<T, Backend> db3;
  nn::ConvTranspose3d<T, Backend> up2;
  cscn::CBR<T, Backend> dec2;
  nn::ConvTranspose3d<T, Backend> up1;
  cscn::CBR<T, Backend> dec1;
  cscn::CBR<T, Backend> side3, side2, side1;
  cscn::CBR<T, Backend> fuse;
  nn::Conv3d<T, Backend> head;

  explicit ACDNet(const ACDNetOptions& options = ACDNetOptions::paper(), Generator& g = default_generator())
      : ACDNet(validated(options), 0, g) {}

  void members(Members<T, Backend>& m) override {
    m("stem", stem)("db1", db1)("td1", td1)("db2", db2)("td2", td2)("db3", db3)("up2", up2)("dec2", dec2)("up1", up1)(
        "dec1", dec1)("side3", side3)("side2", side2)("side1", side1)("fuse", fuse)("head", head);
  }

  const ACDNetOptions& options() const { return options_; }

  // x: N x in_channels x D x H x W (D, H, W multiples of 4). Returns the logits N x classes x D x H x W.
  tensor forward(const tensor& x) {
    cscn::check_net_input(name, x, options_.in_channels());
    const ExpandingArray3 size{x.size(2), x.size(3), x.size(4)};
    const tensor f1 = db1.forward(stem.forward(x));
    const tensor f2 = db2.forward(td1.forward(f1));
    const tensor f3 = db3.forward(td2.forward(f2));
    const tensor u2 = dec2.forward(cat2_.forward({f2, up2.forward(f3)}));
    const tensor u1 = dec1.forward(cat1_.forward({f1, up1.forward(u2)}));
    const tensor s3 = resize3_.forward(side3.forward(f3), size);
    const tensor s2 = resize2_.forward(side2.forward(u2), size);
    const tensor s1 = side1.forward(u1);
    logits_ = head.forward(fuse.forward(sides_.forward({s1, s2, s3})));
    return logits_;
  }

  // dL/dlogits in; returns dL/dx and adds every parameter gradient.
  tensor backward(const tensor& dlogits) {
    const std::string who = std::string(name) + "::backward";
    if (!logits_.defined()) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    check_same_shape(who, "grad_output (dL/dlogits)", dlogits, logits_.shape());
    const auto ds = sides_.backward(fuse.backward(head.backward(dlogits)));  // {dS1, dS2, dS3}
    tensor du1 = side1.backward(ds[0]);
    tensor du2 = side2.backward(resize2_.backward(ds[1]));
    tensor df3 = side3.backward(resize3_.backward(ds[2]));
    const auto d1 = cat1_.backward(dec1.backward(du1));  // {dDB1 (skip), dup1}
    add_(du2, up1.backward(d1[1]));
    const auto d2 = cat2_.backward(dec2.backward(du2));  // {dDB2 (skip), dup2}
    add_(df3, up2.backward(d2[1]));
    tensor df2 = td2.backward(db3.backward(df3));
    add_(df2, d2[0]);
    tensor df1 = td1.backward(db2.backward(df2));
    add_(df1, d1[0]);
    return stem.backward(db1.backward(df1));
  }

  const tensor& logits() const { return logits_; }

 private:
  static const ACDNetOptions& validated(const ACDNetOptions& o) {
    o.validate();
    return o;
  }
  ACDNet(const ACDNetOptions& o, int, Generator& g)
      : stem(o.in_channels(), o.s(), 3, 1, g),
        db1(o.block_in(1), o.L(), o.a(), o.k(), o.rates(), g),
        td1(o.block_out(1), o.block_in(2), g),
        db2(o.block_in(2), o.L(), o.a(), o.k(), o.rates(), g),
        td2(o.block_out(2), o.block_in(3), g),
        db3(o.block_in(3), o.L(), o.a(), o.k(), o.rates(), g),
        up2(nn::ConvTranspose3dOptions(o.block_out(3), o.u2(), 2).stride(2), g),
        dec2(o.block_out(2) + o.u2(), o.u2(), 3, 1, g),
        up1(nn::ConvTranspose3dOptions(o.u2(), o.u1(), 2).stride(2), g),
        dec1(o.block_out(1) + o.u1(), o.u1(), 3, 1, g),
        side3(o.block_out(3), o.e(), 1, 1, g),
        side2(o.u2(), o.e(), 1, 1, g),
        side1(o.u1(), o.e(), 1, 1, g),
        fuse(3 * o.e(), o.s(), 3, 1, g),
        head(nn::Conv3dOptions(o.s(), o.classes(), 1), g),
        options_(o) {}

  static nn::UpsampleOptions trilinear() {
    return nn::UpsampleOptions().scale_factor(1.0).mode(nn::UpsampleMode::trilinear).align_corners(false);
  }

  ACDNetOptions options_;
  nn::Concat<T, Backend> cat2_, cat1_, sides_;
  nn::Upsample<T, Backend> resize3_{trilinear()}, resize2_{trilinear()};  // sizes given per call
  tensor logits_;
};

}  // namespace mmnet::models
