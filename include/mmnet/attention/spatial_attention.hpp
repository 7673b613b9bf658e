// mmnet/attention/spatial_attention.hpp: 3D-CBAM spatial attention as in MMFNet (no torch.nn module; the
// reference is tests/reference/spatial_attention_ref.py `SpatialAttention`, written from the MMFNet spec §2.3):
//
//   S  = concat over the pools of [x.mean(1), torch.max(x, 1)[0], sqrt(x.var(1, unbiased=False) + eps)]
//   Ws = sigmoid(conv(S))     conv = Conv3d(|pools| -> 1, k, padding k // 2, bias), no BN (spec A10)
//   Fs = Ws * x               Ws is N x 1 x D x H x W, broadcast over the channels
//
//   attention::SpatialAttention<float, mmnet::cpu> sa(attention::SpatialAttentionOptions());
//
// Defaults are MMFNet's: pools {avg (channel mean), max, std} in that order, kernel 3 (the original 2D CBAM uses
// 7 and a BN after the conv; MMFNet has neither), std eps 1e-6 inside the square root (A9). Without the std pool
// ("Base MMFNet") conv.weight is (1, 2, k, k, k). The channel max routes its gradient to the first maximal
// channel, as torch.max(dim=1). Works for any channel count; composed from nn:: layers, no own kernels.
#pragma once
#include <string>
#include <vector>

#include "../core/module.hpp"
#include "../core/random.hpp"
#include "../layers/activation.hpp"
#include "../layers/broadcast.hpp"
#include "../layers/channel_reduce.hpp"
#include "../layers/concat.hpp"
#include "../layers/conv3d.hpp"
#include "channel_attention.hpp"  // attention::Pool and the option checks shared with channel attention

namespace mmnet::attention {

// Options of SpatialAttention: SpatialAttentionOptions().pools({Pool::avg, Pool::max, Pool::std}).kernel(3)
// .std_eps(1e-6).
struct SpatialAttentionOptions {
  // Channel reductions concatenated as the conv's input, a non-empty subset of {avg, max, std} in that order
  // (default all three, MMFNet).
  SpatialAttentionOptions& pools(std::vector<Pool> v) { pools_ = std::move(v); return *this; }
  const std::vector<Pool>& pools() const { return pools_; }
  // Odd cubic kernel size of the conv, padded by kernel / 2 so Ws keeps D x H x W (default 3, MMFNet A10).
  SpatialAttentionOptions& kernel(index_t v) { kernel_ = v; return *this; }
  index_t kernel() const { return kernel_; }
  // Added to the population variance inside the square root of the std reduction (default 1e-6, spec A9).
  SpatialAttentionOptions& std_eps(double v) { std_eps_ = v; return *this; }
  double std_eps() const { return std_eps_; }

 private:
  std::vector<Pool> pools_{Pool::avg, Pool::max, Pool::std};
  index_t kernel_ = 3;
  double std_eps_ = 1e-6;
};

namespace detail {
inline const SpatialAttentionOptions& checked_options(const SpatialAttentionOptions& o) {
  const std::string who = "mmnet::attention::SpatialAttentionOptions";
  check_pools(who, o.pools());
  if (o.kernel() <= 0 || o.kernel() % 2 == 0)
    fail<value_error>(who, "kernel", "an odd size >= 1 (padding kernel / 2 keeps D x H x W)", o.kernel());
  check_eps(who, o.std_eps());
  return o;
}
}  // namespace detail

template <class T, class Backend>
class SpatialAttention : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::attention::SpatialAttention";

  nn::Conv3d<T, Backend> conv;  // (1, |pools|, k, k, k) and bias (1)

  explicit SpatialAttention(const SpatialAttentionOptions& options = SpatialAttentionOptions(),
                            Generator& generator = default_generator())
      : conv(nn::Conv3dOptions(static_cast<index_t>(detail::checked_options(options).pools().size()), 1, options.kernel())
                 .padding(options.kernel() / 2),
             generator),
        options_(options),
        std_reduce_(nn::ChannelStdOptions().eps(options.std_eps())) {}

  void members(Members<T, Backend>& m) override { m("conv", conv); }

  const SpatialAttentionOptions& options() const { return options_; }

  // x: N x C x D x H x W (any C >= 1). Returns Fs = Ws * x.
  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
    std::vector<tensor> reduced;
    for (Pool p : options_.pools()) reduced.push_back(reduce_forward(p, x));
    const tensor ws = gate_.forward(conv.forward(concat_.forward(reduced)));
    in_shape_ = x.shape();
    return scale_.forward(x, ws);
  }

  // dL/dFs in; returns dL/dx, the direct path (dFs * Ws) plus the path through the gate and every reduction.
  tensor backward(const tensor& dfs) {
    const std::string who = std::string(name) + "::backward";
    if (in_shape_.rank() != 5) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    check_same_shape(who, "grad_output", dfs, in_shape_);
    auto [dx, dws] = scale_.backward(dfs);
    const auto ds = concat_.backward(conv.backward(gate_.backward(dws)));
    const auto& pools = options_.pools();
    for (std::size_t i = 0; i < pools.size(); ++i) add_(dx, reduce_backward(pools[i], ds[i]));
    return dx;
  }

  // Ws of the last forward, N x 1 x D x H x W.
  const tensor& weights() const { return gate_.output(); }

  // Drops what the last forward saved outside the conv (the input held by the reductions and the gate
  // product, their statistics, Ws); backward() and weights() need a new forward() afterwards.
  void release() {
    mean_reduce_ = nn::ChannelMean<T, Backend>();
    max_reduce_ = nn::ChannelMax<T, Backend>();
    std_reduce_ = nn::ChannelStd<T, Backend>(nn::ChannelStdOptions().eps(options_.std_eps()));
    gate_ = nn::Sigmoid<T, Backend>();
    scale_ = nn::BroadcastMul<T, Backend>();
    in_shape_ = Shape();
  }

 private:
  tensor reduce_forward(Pool p, const tensor& x) {
    return p == Pool::avg ? mean_reduce_.forward(x) : (p == Pool::max ? max_reduce_.forward(x) : std_reduce_.forward(x));
  }
  tensor reduce_backward(Pool p, const tensor& d) {
    return p == Pool::avg ? mean_reduce_.backward(d) : (p == Pool::max ? max_reduce_.backward(d) : std_reduce_.backward(d));
  }

  SpatialAttentionOptions options_;
  nn::ChannelMean<T, Backend> mean_reduce_;
  nn::ChannelMax<T, Backend> max_reduce_;
  nn::ChannelStd<T, Backend> std_reduce_;
  nn::Concat<T, Backend> concat_;
  nn::Sigmoid<T, Backend> gate_;
  nn::BroadcastMul<T, Backend> scale_;
  Shape in_shape_;
};

}  // namespace mmnet::attention
