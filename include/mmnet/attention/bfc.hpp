// mmnet/attention/bfc.hpp: HMRNet's bidirectional feature calibration (spec hmrnet.md §2.3-2.4, §8.0) and its
// spatial gate. No torch.nn module; the reference is tests/reference/bfc_ref.py, written from the spec and
// structured like the official HMRNet_p.py (SpatialSELayer3D gates, Concatenate fusion blocks).
//
//   attention::Gate     z = x * att(y),  att(y) = sigmoid(Conv3d(C -> 1, k=1, bias)(y)), N x 1 x D x H x W
//                       broadcast over x's channels (the official SpatialSELayer3D with its arguments swapped)
//   attention::BFC      one BFC level between the multi-resolution (MR) feature m and the high-resolution (HR)
//                       feature h, s = the per-axis factor between their resolutions:
//                         mu = up(m, s)      trilinear, align_corners = true (spec §7 ambiguity 4)
//                         hd = pool(h, s)    max pool, kernel = stride = s
//                         mc = Bm(cat[skip, hd, m] or cat[hd, m]) * att(W_h, hd)     (gate alpha_m, sse_down)
//                         hc = Bh(cat[mu, h])                    * att(W_m, mu)      (gate alpha_h, sse_up)
//                       both from the uncalibrated m, h; each gate reads only the other branch's resampled feature.
//
//   using Block = MyConvBlock<float, mmnet::cpu>;
//   attention::BFC<float, mmnet::cpu, Block> bfc(attention::BFCOptions(32, 8, 2).level(1),
//                                               Block(40, 32), Block(40, 8));
//   auto [mc, hc] = bfc.forward(m, h);             // decoder levels: bfc.forward(m, h, skip)
//   auto [dm, dh, dskip] = bfc.backward(dmc, dhc);
//
// The fusion blocks Bm, Bh are any Module<T, Backend> with forward(x) / backward(dy) (HMRNet's B, issue [H]);
// the caller builds them with the widths Bm: skip + C_h + C_m -> C_m and Bh: C_m + C_h -> C_h.
//
// State-dict names (spec §8.0) for level l, in the official order:
//   concat{l}.conv.<Bm>   fr_concat{l}.conv.<Bh>   sse_up{l}.conv.{weight,bias}   sse_down{l}.conv.{weight,bias}
// ("concat{l}" is the official Concatenate module, ".conv" its ConvBlock). The keys are not nested under a BFC
// name: a model splices a level in, `m.splice(bfc1);`, between its own members, so its state dict equals the
// official one. Gates that are off (ablations, spec §2.6: a level without BFC, HRB/MRB only) are identically 1,
// have no conv and no keys.
#pragma once
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/expanding_array.hpp"
#include "../core/module.hpp"
#include "../core/ops.hpp"
#include "../core/random.hpp"
#include "../layers/activation.hpp"
#include "../layers/broadcast.hpp"
#include "../layers/concat.hpp"
#include "../layers/conv3d.hpp"
#include "../layers/maxpool3d.hpp"
#include "../layers/upsample.hpp"

namespace mmnet::attention {

// Options of Gate: GateOptions(in_channels), the channel count of the tensor the gate is computed from.
struct GateOptions {
  explicit GateOptions(index_t in_channels) : in_channels_(in_channels) {}
  // Channels of y, the input of the 1x1x1 conv (C -> 1).
  GateOptions& in_channels(index_t v) { in_channels_ = v; return *this; }
  index_t in_channels() const { return in_channels_; }

 private:
  index_t in_channels_;
};

namespace detail {
inline const GateOptions& checked(const GateOptions& o) {
  if (o.in_channels() < 1) fail<value_error>("mmnet::attention::GateOptions", "in_channels", ">= 1", o.in_channels());
  return o;
}

template <class T, class B>
void check_same_batch_and_space(const char* component, const std::string& what, const Tensor<T, B>& t,
                                const std::string& ref_what, const Tensor<T, B>& ref) {
  bool same = t.size(0) == ref.size(0);
  for (int d = 2; same && d < 5; ++d) same = t.size(d) == ref.size(d);
  if (!same)
    fail<shape_error>(component, what + " shape (batch and D x H x W of the " + ref_what + ")",
                      nn::detail::shape_without_channels(ref.shape()), t.shape().str(),
                      ref_what + " shape " + ref.shape().str());
}
}  // namespace detail

// z = x * sigmoid(conv(y)): a spatial gate computed from y (C channels) applied to x (any channel count, same
// batch and D x H x W). conv is Conv3d(C, 1, 1) with bias and PyTorch's default init.
template <class T, class Backend>
class Gate : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::attention::Gate";

  nn::Conv3d<T, Backend> conv;  // weight (1, C, 1, 1, 1), bias (1)
  nn::Sigmoid<T, Backend> sigmoid;

  explicit Gate(const GateOptions& options, Generator& generator = default_generator())
      : conv(nn::Conv3dOptions(detail::checked(options).in_channels(), 1, 1), generator), options_(options) {}

  void members(Members<T, Backend>& m) override { m("conv", conv); }

  const GateOptions& options() const { return options_; }

  // x: N x C_x x D x H x W; y: N x C x D x H x W. Returns x * att(y).
  tensor forward(const tensor& x, const tensor& y) {
    check_rank(name, "input x", x, 5);
    check_rank(name, "input y", y, 5);
    if (y.size(1) != options_.in_channels())
      fail<shape_error>(name, "channels of y (the gate's input)", options_.in_channels(), y.size(1),
                        "y shape " + y.shape().str());
    detail::check_same_batch_and_space(name, "x", x, "gate input y", y);
    alpha_ = sigmoid.forward(conv.forward(y));
    return mul_.forward(x, alpha_);
  }

  // dz: dL/dz. Returns {dL/dx, dL/dy}; adds into conv's parameter gradients.
  std::pair<tensor, tensor> backward(const tensor& dz) {
    if (!alpha_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a forward() call first", "none");
    auto [dx, dalpha] = mul_.backward(dz);  // checks dz's shape
    return {dx, conv.backward(sigmoid.backward(dalpha))};
  }

  // att(y) of the last forward, N x 1 x D x H x W.
  const tensor& alpha() const { return alpha_; }

 private:
  GateOptions options_;
  nn::BroadcastMul<T, Backend> mul_;
  tensor alpha_;
};

// Options of BFC: BFCOptions(mr_channels, hr_channels, scale).skip_channels(c).level(l).mr_gate(b).hr_gate(b).
struct BFCOptions {
  // C_m, C_h and the per-axis factor s between the HR and the MR resolution (2, 4, 8, {2, 2, 1}, {8, 8, 4}).
  BFCOptions(index_t mr_channels, index_t hr_channels, ExpandingArray3 scale)
      : mr_channels_(mr_channels), hr_channels_(hr_channels), scale_(scale) {}

  index_t mr_channels() const { return mr_channels_; }
  index_t hr_channels() const { return hr_channels_; }
  const ExpandingArray3& scale() const { return scale_; }

  // Channels of the U-Net skip fed first into Bm (decoder levels); 0 (default) = no skip.
  BFCOptions& skip_channels(index_t v) { skip_channels_ = v; return *this; }
  index_t skip_channels() const { return skip_channels_; }
  // alpha_m = att(W_h, hd) gates the MR output (sse_down); off: alpha_m = 1, no conv (default on).
  BFCOptions& mr_gate(bool v) { mr_gate_ = v; return *this; }
  bool mr_gate() const { return mr_gate_; }
  // alpha_h = att(W_m, mu) gates the HR output (sse_up); off: alpha_h = 1, no conv (default on).
  BFCOptions& hr_gate(bool v) { hr_gate_ = v; return *this; }
  bool hr_gate() const { return hr_gate_; }
  // Both gates on or off (off: the "no BFC" level of the ablations).
  BFCOptions& gates(bool v) { mr_gate_ = hr_gate_ = v; return *this; }
  // HMRNet level l (1, 2, 3, 5, 6): member names concat{l}.conv, fr_concat{l}.conv, sse_up{l}, sse_down{l}
  // (default 1). Resets names set with names().
  BFCOptions& level(int l) {
    const std::string s = std::to_string(l);
    return names("concat" + s + ".conv", "fr_concat" + s + ".conv", "sse_up" + s, "sse_down" + s);
  }
  // Explicit member names of Bm, Bh, the alpha_h gate and the alpha_m gate (spec order of the state dict).
  BFCOptions& names(std::string mr_fusion, std::string hr_fusion, std::string hr_gate, std::string mr_gate) {
    mr_fusion_name_ = std::move(mr_fusion);
    hr_fusion_name_ = std::move(hr_fusion);
    hr_gate_name_ = std::move(hr_gate);
    mr_gate_name_ = std::move(mr_gate);
    return *this;
  }
  const std::string& mr_fusion_name() const { return mr_fusion_name_; }
  const std::string& hr_fusion_name() const { return hr_fusion_name_; }
  const std::string& hr_gate_name() const { return hr_gate_name_; }
  const std::string& mr_gate_name() const { return mr_gate_name_; }

 private:
  index_t mr_channels_, hr_channels_;
  ExpandingArray3 scale_;
  index_t skip_channels_ = 0;
  bool mr_gate_ = true, hr_gate_ = true;
  std::string mr_fusion_name_ = "concat1.conv", hr_fusion_name_ = "fr_concat1.conv";
  std::string hr_gate_name_ = "sse_up1", mr_gate_name_ = "sse_down1";
};

namespace detail {
inline const BFCOptions& checked(const BFCOptions& o) {
  const char* who = "mmnet::attention::BFCOptions";
  if (o.mr_channels() < 1) fail<value_error>(who, "mr_channels", ">= 1", o.mr_channels());
  if (o.hr_channels() < 1) fail<value_error>(who, "hr_channels", ">= 1", o.hr_channels());
  if (o.skip_channels() < 0) fail<value_error>(who, "skip_channels", ">= 0 (0: no skip)", o.skip_channels());
  for (int a = 0; a < 3; ++a)
    if (o.scale()[a] < 1) fail<value_error>(who, "scale", "every entry >= 1", o.scale().str());
  const std::string* names[4] = {&o.mr_fusion_name(), &o.hr_fusion_name(), &o.hr_gate_name(), &o.mr_gate_name()};
  for (int i = 0; i < 4; ++i) {
    if (names[i]->empty()) fail<value_error>(who, "member names", "non-empty names", "an empty name");
    for (int j = 0; j < i; ++j)
      if (*names[i] == *names[j]) fail<value_error>(who, "member names", "four distinct names", "'" + *names[i] + "' twice");
  }
  return o;
}

// Whether B is a fusion block for BFC<T, Backend>: Tensor forward(const Tensor&), Tensor backward(const Tensor&).
template <class B, class T, class Backend, class = void>
struct has_forward_backward : std::false_type {};
template <class B, class T, class Backend>
struct has_forward_backward<
    B, T, Backend,
    std::void_t<decltype(std::declval<Tensor<T, Backend>&>() =
                             std::declval<B&>().forward(std::declval<const Tensor<T, Backend>&>())),
                decltype(std::declval<Tensor<T, Backend>&>() =
                             std::declval<B&>().backward(std::declval<const Tensor<T, Backend>&>()))>>
    : std::true_type {};
}  // namespace detail

template <class T, class Backend, class MBlock, class HBlock = MBlock>
class BFC : public Module<T, Backend> {
  static_assert(std::is_base_of_v<Module<T, Backend>, MBlock>,
                "mmnet::attention::BFC: the MR fusion block MBlock must derive from mmnet::Module<T, Backend>");
  static_assert(std::is_base_of_v<Module<T, Backend>, HBlock>,
                "mmnet::attention::BFC: the HR fusion block HBlock must derive from mmnet::Module<T, Backend>");
  static_assert(detail::has_forward_backward<MBlock, T, Backend>::value,
                "mmnet::attention::BFC: MBlock needs Tensor<T, Backend> forward(const Tensor<T, Backend>&) and "
                "Tensor<T, Backend> backward(const Tensor<T, Backend>&)");
  static_assert(detail::has_forward_backward<HBlock, T, Backend>::value,
                "mmnet::attention::BFC: HBlock needs Tensor<T, Backend> forward(const Tensor<T, Backend>&) and "
                "Tensor<T, Backend> backward(const Tensor<T, Backend>&)");

 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::attention::BFC";

  // Calibrated features: mc (N x C_m at MR resolution), hc (N x C_h at HR resolution).
  struct Outputs {
    tensor mc, hc;
  };
  // dL/dm, dL/dh and dL/dskip (empty without a skip), each with every path summed.
  struct Gradients {
    tensor dm, dh, dskip;
  };

  // Names as the official HMRNet (level number dropped; the options add it to the state-dict names).
  MBlock concat;                               // Bm: skip + C_h + C_m -> C_m, at MR resolution
  HBlock fr_concat;                            // Bh: C_m + C_h -> C_h, at HR resolution
  std::optional<Gate<T, Backend>> sse_up;      // W_m: C_m -> 1 on mu, alpha_h; absent when hr_gate is off
  std::optional<Gate<T, Backend>> sse_down;    // W_h: C_h -> 1 on hd, alpha_m; absent when mr_gate is off
  nn::Upsample<T, Backend> basic_up;           // mu = up(m, s)
  nn::MaxPool3d<T, Backend> basic_down;        // hd = pool(h, s)

  // The gate convs are initialised from generator, alpha_h's first (the official construction order).
  BFC(const BFCOptions& options, MBlock mr_fusion, HBlock hr_fusion, Generator& generator = default_generator())
      : concat(std::move(mr_fusion)),
        fr_concat(std::move(hr_fusion)),
        basic_up(nn::UpsampleOptions()
                     .scale_factor({static_cast<double>(detail::checked(options).scale()[0]),
                                    static_cast<double>(options.scale()[1]), static_cast<double>(options.scale()[2])})
                     .mode(nn::UpsampleMode::trilinear)
                     .align_corners(true)),
        basic_down(nn::MaxPool3dOptions(options.scale())),
        options_(options) {
    if (options_.hr_gate()) sse_up.emplace(GateOptions(options_.mr_channels()), generator);
    if (options_.mr_gate()) sse_down.emplace(GateOptions(options_.hr_channels()), generator);
  }

  // Lists Bm, Bh, sse_up, sse_down under their full names (see the header comment: list a level inline).
  void members(Members<T, Backend>& m) override {
    m(options_.mr_fusion_name(), concat)(options_.hr_fusion_name(), fr_concat);
    if (sse_up) m(options_.hr_gate_name(), *sse_up);
    if (sse_down) m(options_.mr_gate_name(), *sse_down);
  }

  const BFCOptions& options() const { return options_; }

  // m: N x C_m x d x h x w; h: N x C_h x (d, h, w) * s; skip: N x C_skip x d x h x w, given iff skip_channels > 0.
  Outputs forward(const tensor& m, const tensor& h, const tensor& skip = tensor()) {
    check_inputs(m, h, skip);
    const tensor mu = basic_up.forward(m);
    const tensor hd = basic_down.forward(h);
    // MR branch first, as the official code (gate order sse_down{l}, sse_up{l}).
    tensor fm = concat.forward(skip.defined() ? cat_m_.forward({skip, hd, m}) : cat_m_.forward({hd, m}));
    check_block_output("MR fusion block (Bm)", fm, m.shape());
    const tensor mc = sse_down ? sse_down->forward(fm, hd) : fm;
    tensor fh = fr_concat.forward(cat_h_.forward({mu, h}));
    check_block_output("HR fusion block (Bh)", fh, h.shape());
    const tensor hc = sse_up ? sse_up->forward(fh, mu) : fh;
    m_shape_ = m.shape();
    h_shape_ = h.shape();
    has_skip_ = skip.defined();
    return {mc, hc};
  }

  // dmc, dhc: dL/dmc, dL/dhc. Adds into every parameter gradient (fusion blocks and gate convs).
  Gradients backward(const tensor& dmc, const tensor& dhc) {
    const std::string who = std::string(name) + "::backward";
    if (m_shape_.rank() != 5) fail<value_error>(who, "state", "a forward() call first", "none");
    check_same_shape(who, "grad of mc", dmc, m_shape_);
    check_same_shape(who, "grad of hc", dhc, h_shape_);
    Gradients g;
    // MR branch: mc = Bm(cat[skip, hd, m]) * att(hd).
    tensor dfm = dmc, dhd;
    if (sse_down) std::tie(dfm, dhd) = sse_down->backward(dmc);
    std::vector<tensor> dcat_m = cat_m_.backward(concat.backward(dfm));
    const std::size_t k = has_skip_ ? 1 : 0;
    if (has_skip_) g.dskip = dcat_m[0];
    if (dhd.defined()) add_(dhd, dcat_m[k]);
    else dhd = dcat_m[k];
    g.dm = dcat_m[k + 1];
    // HR branch: hc = Bh(cat[mu, h]) * att(mu).
    tensor dfh = dhc, dmu;
    if (sse_up) std::tie(dfh, dmu) = sse_up->backward(dhc);
    std::vector<tensor> dcat_h = cat_h_.backward(fr_concat.backward(dfh));
    if (dmu.defined()) add_(dmu, dcat_h[0]);
    else dmu = dcat_h[0];
    g.dh = dcat_h[1];
    // The resampled copies of m and h carry gradient back to their sources.
    add_(g.dm, basic_up.backward(dmu));
    add_(g.dh, basic_down.backward(dhd));
    return g;
  }

  // alpha_m = att(W_h, hd) (N x 1 at MR resolution) and alpha_h = att(W_m, mu) (N x 1 at HR resolution) of the
  // last forward; empty when that gate is off.
  tensor alpha_m() const { return sse_down ? sse_down->alpha() : tensor(); }
  tensor alpha_h() const { return sse_up ? sse_up->alpha() : tensor(); }

 private:
  void check_inputs(const tensor& m, const tensor& h, const tensor& skip) const {
    const auto& o = options_;
    check_rank(name, "MR input m", m, 5);
    check_rank(name, "HR input h", h, 5);
    if (m.size(1) != o.mr_channels())
      fail<shape_error>(name, "channels of the MR input m", o.mr_channels(), m.size(1), "m shape " + m.shape().str());
    if (h.size(1) != o.hr_channels())
      fail<shape_error>(name, "channels of the HR input h", o.hr_channels(), h.size(1), "h shape " + h.shape().str());
    if (m.size(0) != h.size(0))
      fail<shape_error>(name, "batch size of h (equal to m's)", m.size(0), h.size(0),
                        "m shape " + m.shape().str() + ", h shape " + h.shape().str());
    static const char* axis[3] = {"D", "H", "W"};
    for (int a = 0; a < 3; ++a) {
      const index_t s = o.scale()[a], n = h.size(2 + a);
      if (n % s != 0)
        fail<shape_error>(name, std::string("HR extent ") + axis[a] + " (a multiple of the scale " + o.scale().str() + ")",
                          "a multiple of " + std::to_string(s), n, "h shape " + h.shape().str());
      if (m.size(2 + a) * s != n)
        fail<shape_error>(name, std::string("MR extent ") + axis[a] + " (HR extent / scale " + o.scale().str() + ")",
                          n / s, m.size(2 + a), "m shape " + m.shape().str() + ", h shape " + h.shape().str());
    }
    if (o.skip_channels() == 0) {
      if (skip.defined())
        fail<shape_error>(name, "skip input", "none (skip_channels is 0)", "shape " + skip.shape().str());
      return;
    }
    if (!skip.defined())
      fail<shape_error>(name, "skip input", "a tensor with " + std::to_string(o.skip_channels()) + " channels", "none");
    check_rank(name, "skip input", skip, 5);
    if (skip.size(1) != o.skip_channels())
      fail<shape_error>(name, "channels of the skip input", o.skip_channels(), skip.size(1),
                        "skip shape " + skip.shape().str());
    detail::check_same_batch_and_space(name, "skip", skip, "MR input m", m);
  }

  // A fusion block must bring its branch back to the branch's own shape (width C_m or C_h).
  void check_block_output(const std::string& what, const tensor& y, const Shape& expected) const {
    if (!y.defined() || y.shape() != expected)
      fail<shape_error>(name, what + " output shape", expected.str(),
                        y.defined() ? y.shape().str() : std::string("an empty tensor"),
                        "build Bm as skip + C_h + C_m -> C_m and Bh as C_m + C_h -> C_h, shape-preserving");
  }

  BFCOptions options_;
  nn::Concat<T, Backend> cat_m_, cat_h_;
  Shape m_shape_, h_shape_;
  bool has_skip_ = false;
};

}  // namespace mmnet::attention
