// mmnet/attention/cbam.hpp: 3D-CBAM, channel attention then spatial attention (Woo et al. 2018, in 3D with
// MMFNet's std pools and per-pool MLPs). No torch.nn module; the reference is tests/reference/cbam_ref.py `CBAM`
// (MMFNet spec §2.3, the attention half of the fusion block; the RFBlock that follows it is not part of this):
//
//   Fc = ChannelAttention(x) = Wc * x        Wc: N x C x 1 x 1 x 1
//   Fs = SpatialAttention(Fc) = Ws * Fc      Ws: N x 1 x D x H x W
//
//   attention::CBAM<float, mmnet::cpu> cbam(attention::CBAMOptions(12, 3));                    // full MMFNet
//   attention::CBAM<float, mmnet::cpu> base(attention::CBAMOptions(12, 3).shared_mlp(true)     // Base MMFNet
//       .channel_pools({Pool::avg, Pool::max}).spatial_pools({Pool::avg, Pool::max}));
//
// Members channel_attention and spatial_attention, so the state dict names are
// channel_attention.mlp_{avg,max,std}.fc{1,2}.{weight,bias} (or channel_attention.mlp.fc{1,2}.* when shared)
// and spatial_attention.conv.{weight,bias}, as spec §8. Defaults: see ChannelAttentionOptions and
// SpatialAttentionOptions (all pools, separate MLPs, kernel 3, std eps 1e-6).
#pragma once
#include <vector>

#include "../core/module.hpp"
#include "../core/random.hpp"
#include "channel_attention.hpp"
#include "spatial_attention.hpp"

namespace mmnet::attention {

// Options of CBAM: CBAMOptions(channels, hidden).channel_pools({avg, max, std}).spatial_pools({avg, max, std})
// .shared_mlp(false).kernel(3).std_eps(1e-6); std_eps applies to both branches.
struct CBAMOptions {
  CBAMOptions(index_t channels, index_t hidden) : channel_(channels, hidden) {}

  index_t channels() const { return channel_.channels(); }
  index_t hidden() const { return channel_.hidden(); }
  // Pools of the channel attention (default {avg, max, std}).
  CBAMOptions& channel_pools(std::vector<Pool> v) { channel_.pools(std::move(v)); return *this; }
  const std::vector<Pool>& channel_pools() const { return channel_.pools(); }
  // Channel reductions of the spatial attention (default {avg, max, std}).
  CBAMOptions& spatial_pools(std::vector<Pool> v) { spatial_.pools(std::move(v)); return *this; }
  const std::vector<Pool>& spatial_pools() const { return spatial_.pools(); }
  // One MLP shared by the channel pools (default false).
  CBAMOptions& shared_mlp(bool v) { channel_.shared_mlp(v); return *this; }
  bool shared_mlp() const { return channel_.shared_mlp(); }
  // Kernel size of the spatial conv (default 3).
  CBAMOptions& kernel(index_t v) { spatial_.kernel(v); return *this; }
  index_t kernel() const { return spatial_.kernel(); }
  // eps inside the square root of every std pool (default 1e-6).
  CBAMOptions& std_eps(double v) { channel_.std_eps(v); spatial_.std_eps(v); return *this; }
  double std_eps() const { return channel_.std_eps(); }

  const ChannelAttentionOptions& channel() const { return channel_; }
  const SpatialAttentionOptions& spatial() const { return spatial_; }

 private:
  ChannelAttentionOptions channel_;
  SpatialAttentionOptions spatial_;
};

template <class T, class Backend>
struct CBAM : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  ChannelAttention<T, Backend> channel_attention;
  SpatialAttention<T, Backend> spatial_attention;

  explicit CBAM(const CBAMOptions& options, Generator& generator = default_generator())
      : channel_attention(options.channel(), generator), spatial_attention(options.spatial(), generator) {}

  void members(Members<T, Backend>& m) override {
    m("channel_attention", channel_attention)("spatial_attention", spatial_attention);
  }

  // x: N x C x D x H x W. Returns Fs.
  tensor forward(const tensor& x) {
    fc_ = channel_attention.forward(x);
    return spatial_attention.forward(fc_);
  }

  // dL/dFs in; returns dL/dx.
  tensor backward(const tensor& dfs) {
    if (!fc_.defined()) fail<value_error>("mmnet::attention::CBAM::backward", "state", "a forward() call first", "no stored input");
    return channel_attention.backward(spatial_attention.backward(dfs));
  }

  // Of the last forward: Fc (N x C x D x H x W), Wc (N x C x 1 x 1 x 1), Ws (N x 1 x D x H x W).
  const tensor& channel_output() const { return fc_; }
  const tensor& channel_weights() const { return channel_attention.weights(); }
  const tensor& spatial_weights() const { return spatial_attention.weights(); }

 private:
  tensor fc_;
};

}  // namespace mmnet::attention
