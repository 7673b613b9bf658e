// mmnet/attention/channel_attention.hpp: 3D-CBAM channel attention as in MMFNet (no torch.nn module; the
// reference is tests/reference/channel_attention_ref.py `ChannelAttention`, written from the MMFNet spec §2.3):
//
//   z  = sum over the pools p of MLP_p(pool_p(x))      pools: avg F.adaptive_avg_pool3d(x, 1),
//                                                             max F.adaptive_max_pool3d(x, 1),
//                                                             std sqrt(x.var((2,3,4), unbiased=False) + eps)
//   Wc = sigmoid(z)                                    once, after the sum (as CBAM)
//   Fc = Wc * x                                        Wc is N x C x 1 x 1 x 1, broadcast over D, H, W
//
//   attention::ChannelAttention<float, mmnet::cpu> ca(attention::ChannelAttentionOptions(12, 3));
//
// MLP = fc1 (Linear C -> hidden) -> ReLU -> fc2 (Linear hidden -> C), biases on (spec A7). Defaults are the
// full MMFNet block: pools {avg, max, std}, one MLP per pool (members mlp_avg, mlp_max, mlp_std), std eps 1e-6
// inside the square root (A9). shared_mlp(true) gives the original CBAM / "Base MMFNet" form: one MLP (member
// mlp) applied to every pooled descriptor, its parameter gradients summed over the applications. The hidden
// size is the caller's choice; reduced_channels(C, r) gives the spec's floor(C / r), at least 1 (A8).
// Everything is composed from nn:: layers (global pools, Linear, ReLU, Sigmoid, BroadcastMul); no own kernels.
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "../core/module.hpp"
#include "../core/random.hpp"
#include "../layers/activation.hpp"
#include "../layers/broadcast.hpp"
#include "../layers/concat.hpp"
#include "../layers/global_pool.hpp"
#include "../layers/linear.hpp"

namespace mmnet::attention {

// The descriptors an attention branch pools: mean (avg), maximum, population std. Channel attention pools over
// D, H, W; spatial attention reduces over the channels.
enum class Pool { avg, max, std };

inline const char* pool_name(Pool p) { return p == Pool::avg ? "avg" : (p == Pool::max ? "max" : "std"); }

inline std::string pools_str(const std::vector<Pool>& pools) {
  std::string s = "{";
  for (std::size_t i = 0; i < pools.size(); ++i) s += (i ? ", " : "") + std::string(pool_name(pools[i]));
  return s + "}";
}

namespace detail {
// Throws value_error unless pools is a non-empty subset of {avg, max, std} listed in that order (the order fixes
// the spatial conv's input channels, so it is never re-sorted silently).
inline void check_pools(const std::string& component, const std::vector<Pool>& pools) {
  bool ok = !pools.empty();
  for (std::size_t i = 1; ok && i < pools.size(); ++i) ok = static_cast<int>(pools[i - 1]) < static_cast<int>(pools[i]);
  if (!ok)
    fail<value_error>(component, "pools", "a non-empty subset of {avg, max, std} in that order, without repeats",
                      pools_str(pools));
}

inline void check_eps(const std::string& component, double eps) {
  if (!std::isfinite(eps) || eps < 0) fail<value_error>(component, "std_eps", "a finite value >= 0", eps);
}
}  // namespace detail

// The MMFNet hidden size floor(channels / ratio), at least 1 (spec A8: PyTorch's //, then max(1, .)).
inline index_t reduced_channels(index_t channels, index_t ratio) {
  if (channels <= 0) fail<value_error>("mmnet::attention::reduced_channels", "channels", "> 0", channels);
  if (ratio <= 0) fail<value_error>("mmnet::attention::reduced_channels", "ratio", "> 0", ratio);
  const index_t h = channels / ratio;
  return h > 0 ? h : 1;
}

// Options of ChannelAttention: ChannelAttentionOptions(channels, hidden).pools({Pool::avg, Pool::max, Pool::std})
// .shared_mlp(false).std_eps(1e-6).
struct ChannelAttentionOptions {
  ChannelAttentionOptions(index_t channels, index_t hidden) : channels_(channels), hidden_(hidden) {}

  index_t channels() const { return channels_; }
  index_t hidden() const { return hidden_; }
  // Pooled descriptors, a non-empty subset of {avg, max, std} in that order (default all three, MMFNet).
  ChannelAttentionOptions& pools(std::vector<Pool> v) { pools_ = std::move(v); return *this; }
  const std::vector<Pool>& pools() const { return pools_; }
  // One MLP shared by every pool (CBAM, "Base MMFNet") instead of one per pool (default false, MMFNet).
  ChannelAttentionOptions& shared_mlp(bool v) { shared_mlp_ = v; return *this; }
  bool shared_mlp() const { return shared_mlp_; }
  // Added to the population variance inside the square root of the std pool (default 1e-6, spec A9).
  ChannelAttentionOptions& std_eps(double v) { std_eps_ = v; return *this; }
  double std_eps() const { return std_eps_; }

 private:
  index_t channels_, hidden_;
  std::vector<Pool> pools_{Pool::avg, Pool::max, Pool::std};
  bool shared_mlp_ = false;
  double std_eps_ = 1e-6;
};

// fc1 (Linear channels -> hidden) -> ReLU -> fc2 (Linear hidden -> channels) on N x C x 1 x 1 x 1 descriptors.
template <class T, class Backend>
struct ChannelMLP : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  nn::Linear<T, Backend> fc1;
  nn::ReLU<T, Backend> relu;
  nn::Linear<T, Backend> fc2;

  ChannelMLP(index_t channels, index_t hidden, Generator& generator = default_generator())
      : fc1(nn::LinearOptions(channels, hidden), generator), fc2(nn::LinearOptions(hidden, channels), generator) {}

  void members(Members<T, Backend>& m) override { m("fc1", fc1)("fc2", fc2); }

  tensor forward(const tensor& v) { return fc2.forward(relu.forward(fc1.forward(v))); }
  tensor backward(const tensor& dz) { return fc1.backward(relu.backward(fc2.backward(dz))); }
};

template <class T, class Backend>
class ChannelAttention : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::attention::ChannelAttention";

  // One MLP per pool (present only for the pools in use), or the shared one.
  std::optional<ChannelMLP<T, Backend>> mlp_avg, mlp_max, mlp_std, mlp;

  explicit ChannelAttention(const ChannelAttentionOptions& options, Generator& generator = default_generator())
      : options_(options) {
    const std::string who = "mmnet::attention::ChannelAttentionOptions";
    if (options.channels() <= 0) fail<value_error>(who, "channels", "> 0", options.channels());
    if (options.hidden() <= 0) fail<value_error>(who, "hidden", "> 0", options.hidden());
    detail::check_pools(who, options.pools());
    detail::check_eps(who, options.std_eps());
    std_pool_ = nn::GlobalStdPool3d<T, Backend>(nn::GlobalStdPool3dOptions().eps(options.std_eps()));
    if (options.shared_mlp()) {
      mlp.emplace(options.channels(), options.hidden(), generator);
    } else {
      for (Pool p : options.pools()) mlp_of(p).emplace(options.channels(), options.hidden(), generator);
    }
  }

  // PyTorch registration order: mlp_avg, mlp_max, mlp_std (those in use), or mlp.
  void members(Members<T, Backend>& m) override {
    if (mlp_avg) m("mlp_avg", *mlp_avg);
    if (mlp_max) m("mlp_max", *mlp_max);
    if (mlp_std) m("mlp_std", *mlp_std);
    if (mlp) m("mlp", *mlp);
  }

  const ChannelAttentionOptions& options() const { return options_; }

  // x: N x C x D x H x W. Returns Fc = Wc * x.
  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
    if (x.size(1) != options_.channels())
      fail<shape_error>(name, "input channels", options_.channels(), x.size(1), "input shape " + x.shape().str());
    const auto& pools = options_.pools();
    const index_t n = x.size(0), c = x.size(1);
    in_shape_ = x.shape();
    std::vector<tensor> pooled;
    for (Pool p : pools) pooled.push_back(pool_forward(p, x));
    tensor z;
    if (mlp) {
      // The shared MLP runs once on the descriptors stacked along the batch axis (P*N x C x 1 x 1 x 1): the
      // same as applying it to each, and its backward then sums the parameter gradients of all applications.
      std::vector<tensor> flat;
      for (auto& v : pooled) flat.push_back(v.reshape({1, n * c}));
      const index_t np = static_cast<index_t>(pools.size());
      const tensor zs = mlp->forward(nn::cat_channels(flat).reshape({np * n, c, 1, 1, 1}));
      const auto parts = nn::split_channels(zs.reshape({1, np * n * c}), std::vector<index_t>(pools.size(), n * c));
      z = parts[0].reshape({n, c, 1, 1, 1});
      for (std::size_t i = 1; i < parts.size(); ++i) add_(z, parts[i].reshape({n, c, 1, 1, 1}));
    } else {
      for (std::size_t i = 0; i < pools.size(); ++i) {
        const tensor zp = mlp_of(pools[i])->forward(pooled[i]);
        if (i == 0) z = zp;
        else add_(z, zp);
      }
    }
    const tensor wc = gate_.forward(z);
    return scale_.forward(x, wc);
  }

  // dL/dFc in; returns dL/dx, the direct path (dFc * Wc) plus the path through the gate and every pool.
  tensor backward(const tensor& dfc) {
    const std::string who = std::string(name) + "::backward";
    const tensor& wc = gate_.output();
    if (!wc.defined()) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    check_same_shape(who, "grad_output", dfc, in_shape_);
    auto [dx, dwc] = scale_.backward(dfc);
    const tensor dz = gate_.backward(dwc);
    const auto& pools = options_.pools();
    if (mlp) {
      const index_t n = in_shape_[0], c = in_shape_[1], np = static_cast<index_t>(pools.size());
      const std::vector<tensor> copies(pools.size(), dz.reshape({1, n * c}));
      const tensor dv = mlp->backward(nn::cat_channels(copies).reshape({np * n, c, 1, 1, 1}));
      const auto parts = nn::split_channels(dv.reshape({1, np * n * c}), std::vector<index_t>(pools.size(), n * c));
      for (std::size_t i = 0; i < pools.size(); ++i) add_(dx, pool_backward(pools[i], parts[i].reshape({n, c, 1, 1, 1})));
    } else {
      for (Pool p : pools) add_(dx, pool_backward(p, mlp_of(p)->backward(dz)));
    }
    return dx;
  }

  // Wc of the last forward, N x C x 1 x 1 x 1.
  const tensor& weights() const { return gate_.output(); }

  // Drops everything the last forward saved (the input held by the pools and the gate product, Wc), freeing
  // it; backward() and weights() need a new forward() afterwards. For one-backward-per-forward training.
  void release() {
    avg_pool_ = nn::GlobalAvgPool3d<T, Backend>();
    max_pool_ = nn::GlobalMaxPool3d<T, Backend>();
    std_pool_ = nn::GlobalStdPool3d<T, Backend>(nn::GlobalStdPool3dOptions().eps(options_.std_eps()));
    gate_ = nn::Sigmoid<T, Backend>();
    scale_ = nn::BroadcastMul<T, Backend>();
  }

 private:
  std::optional<ChannelMLP<T, Backend>>& mlp_of(Pool p) {
    return p == Pool::avg ? mlp_avg : (p == Pool::max ? mlp_max : mlp_std);
  }
  tensor pool_forward(Pool p, const tensor& x) {
    return p == Pool::avg ? avg_pool_.forward(x) : (p == Pool::max ? max_pool_.forward(x) : std_pool_.forward(x));
  }
  tensor pool_backward(Pool p, const tensor& dv) {
    return p == Pool::avg ? avg_pool_.backward(dv) : (p == Pool::max ? max_pool_.backward(dv) : std_pool_.backward(dv));
  }

  ChannelAttentionOptions options_;
  nn::GlobalAvgPool3d<T, Backend> avg_pool_;
  nn::GlobalMaxPool3d<T, Backend> max_pool_;
  nn::GlobalStdPool3d<T, Backend> std_pool_;
  nn::Sigmoid<T, Backend> gate_;
  nn::BroadcastMul<T, Backend> scale_;
  Shape in_shape_;
};

}  // namespace mmnet::attention
