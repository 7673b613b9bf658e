// mmnet/layers/upsample.hpp: Upsample (torch.nn.Upsample / torch.nn.functional.interpolate, modes 'nearest'
// and 'trilinear') over N x C x D x H x W, up or down, to an explicit size or by per-axis scale factors.
//
//   nn::Upsample<float, mmnet::cpu> up(nn::UpsampleOptions().scale_factor({2, 2, 1})
//                                          .mode(nn::UpsampleMode::trilinear).align_corners(true));
//   nn::Upsample<float, mmnet::cpu> to(nn::UpsampleOptions().size({9, 13, 11}).mode(nn::UpsampleMode::trilinear));
//
// PyTorch's semantics (CPU kernels of 1.13), per axis:
// * output size: the given size, or floor(in * scale_factor);
// * trilinear, align_corners = true: src = o * (in - 1) / (out - 1), and src = 0 when out == 1; the scale
//   factor only sets the size;
// * trilinear, align_corners = false: src = max(0, (o + 0.5) / scale_factor - 0.5) with a given scale factor,
//   (o + 0.5) * in / out - 0.5 with a given size (or with recompute_scale_factor(true));
//   corners floor(src) and the next one, clamped at the border;
// * an axis whose size does not change is copied (whatever the scale factor);
// * nearest: src = min(floor(o * s), in - 1), s = 1 / scale_factor or in / out, computed in float.
// Backward gathers the same weights per input element (kernels: backend/common/interpolate.hpp;
// trilinear on cpu: backend/cpu/upsample.hpp).
// Defaults are PyTorch's: mode nearest, align_corners false, recompute_scale_factor false.
#pragma once
#include <array>
#include <string>

#include "../backend/common/interpolate.hpp"
#include "../backend/cpu/upsample.hpp"  // cpu overloads of the trilinear kernels, declared before the calls below
#include "../core/expanding_array.hpp"
#include "../core/module.hpp"

namespace mmnet::nn {

enum class UpsampleMode { nearest, trilinear };

inline const char* upsample_mode_name(UpsampleMode m) { return m == UpsampleMode::nearest ? "nearest" : "trilinear"; }

// Exactly one of size and scale_factor must be set.
struct UpsampleOptions {
  using scales = std::array<double, 3>;

  UpsampleOptions() = default;

  // Output extents (d, h, w).
  UpsampleOptions& size(ExpandingArray3 v) { size_ = v; has_size_ = true; return *this; }
  // Multipliers of the input extents (d, h, w); output extent = floor(in * factor).
  UpsampleOptions& scale_factor(const scales& v) { scale_factor_ = v; has_scale_ = true; return *this; }
  UpsampleOptions& scale_factor(double all) { return scale_factor(scales{all, all, all}); }
  // nearest (default, as PyTorch) or trilinear.
  UpsampleOptions& mode(UpsampleMode v) { mode_ = v; return *this; }
  // Trilinear only: align the corner voxel centres of input and output (default false, as PyTorch).
  UpsampleOptions& align_corners(bool v) { align_corners_ = v; return *this; }
  // With a scale factor: derive the sampling step from the sizes instead of 1 / scale_factor (default false).
  UpsampleOptions& recompute_scale_factor(bool v) { recompute_scale_factor_ = v; return *this; }

  bool has_size() const { return has_size_; }
  const ExpandingArray3& size() const { return size_; }
  bool has_scale_factor() const { return has_scale_; }
  const scales& scale_factor() const { return scale_factor_; }
  UpsampleMode mode() const { return mode_; }
  bool align_corners() const { return align_corners_; }
  bool recompute_scale_factor() const { return recompute_scale_factor_; }

 private:
  ExpandingArray3 size_;
  scales scale_factor_{0, 0, 0};
  bool has_size_ = false, has_scale_ = false;
  UpsampleMode mode_ = UpsampleMode::nearest;
  bool align_corners_ = false;
  bool recompute_scale_factor_ = false;
};

template <class T, class Backend>
class Upsample : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit Upsample(const UpsampleOptions& options) : options_(options) {
    const auto& o = options_;
    if (o.has_size() == o.has_scale_factor())
      fail<value_error>(name, "options", "exactly one of size and scale_factor",
                        o.has_size() ? "both" : "neither");
    for (int a = 0; a < 3; ++a) {
      if (o.has_size() && o.size()[a] < 1) fail<value_error>(name, "size", "every entry >= 1", o.size().str());
      if (o.has_scale_factor() && !(o.scale_factor()[a] > 0))
        fail<value_error>(name, "scale_factor", "every entry > 0", scales_str(o.scale_factor()));
    }
    if (o.mode() == UpsampleMode::nearest && o.align_corners())
      fail<value_error>(name, "align_corners", "false with mode nearest (PyTorch allows it only for interpolating modes)",
                        "true");
  }

  // Output extents (d, h, w) for an input of this shape (N x C x D x H x W).
  ExpandingArray3 output_size(const Shape& in) const {
    if (options_.has_size()) return options_.size();
    index_t s[3];
    for (int a = 0; a < 3; ++a)
      s[a] = static_cast<index_t>(static_cast<double>(in[2 + a]) * options_.scale_factor()[a]);  // truncates, as PyTorch
    return {s[0], s[1], s[2]};
  }

  tensor forward(const tensor& x) {
    check_input(x);
    const ExpandingArray3 out = output_size(x.shape());
    return run_forward(x, out, options_.has_scale_factor() && !options_.recompute_scale_factor());
  }

  // Resamples to an explicit size for this call, ignoring the options' size or scale factor (e.g. "to the
  // skip tensor's size", as ConResNet's decoder does).
  tensor forward(const tensor& x, const ExpandingArray3& size) {
    check_input(x);
    return run_forward(x, size, false);
  }

  tensor backward(const tensor& dy) {
    if (in_shape_.rank() != 5) fail<value_error>(std::string(name) + "::backward", "state", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, out_shape_);
    tensor dx(in_shape_);
    const backend::Interp3dProblem p = plan_.problem(in_shape_[0] * in_shape_[1]);
    if (plan_.linear()) backend::trilinear_backward(Backend{}, p, dy.data(), dx.data());
    else backend::nearest_backward(Backend{}, p, dy.data(), dx.data());
    return dx;
  }

  const UpsampleOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::Upsample";

  static std::string scales_str(const UpsampleOptions::scales& s) {
    return "(" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) + ")";
  }

  void check_input(const tensor& x) const {
    check_rank(name, "input", x, 5);
    for (int a = 2; a < 5; ++a)
      if (x.size(a) < 1) fail<shape_error>(name, "input spatial extents", "every extent >= 1", x.shape().str());
  }

  tensor run_forward(const tensor& x, const ExpandingArray3& out, bool use_scale) {
    for (int a = 0; a < 3; ++a)
      if (out[a] < 1)
        fail<shape_error>(name, "output size", "every extent >= 1", out.str(),
                          "input shape " + x.shape().str() + ", scale_factor " + scales_str(options_.scale_factor()));
    const Shape in_shape = x.shape();
    const Shape out_shape{in_shape[0], in_shape[1], out[0], out[1], out[2]};
    // The tables depend only on the spatial extents and on whether the scale factor is used: reuse them.
    bool same = plan_valid_ && use_scale == plan_uses_scale_ && in_shape_.rank() == 5;
    for (int a = 2; same && a < 5; ++a) same = in_shape_[a] == in_shape[a] && out_shape_[a] == out_shape[a];
    if (!same) {
      const index_t in[3] = {in_shape[2], in_shape[3], in_shape[4]};
      const index_t o[3] = {out[0], out[1], out[2]};
      double sf[3] = {0, 0, 0};
      if (use_scale)
        for (int a = 0; a < 3; ++a) sf[a] = options_.scale_factor()[a];
      plan_ = backend::InterpPlan<Backend>(in, o, options_.mode() == UpsampleMode::trilinear, options_.align_corners(), sf);
      plan_valid_ = true;
      plan_uses_scale_ = use_scale;
    }
    in_shape_ = in_shape;
    out_shape_ = out_shape;
    tensor y(out_shape);
    const backend::Interp3dProblem p = plan_.problem(in_shape[0] * in_shape[1]);
    if (plan_.linear()) backend::trilinear_forward(Backend{}, p, x.data(), y.data());
    else backend::nearest_forward(Backend{}, p, x.data(), y.data());
    return y;
  }

  UpsampleOptions options_;
  backend::InterpPlan<Backend> plan_;
  bool plan_valid_ = false, plan_uses_scale_ = false;
  Shape in_shape_, out_shape_;
};

// torch.nn.functional.interpolate(x, ...) without gradient: a one-off Upsample forward.
template <class T, class Backend>
Tensor<T, Backend> interpolate(const Tensor<T, Backend>& x, const UpsampleOptions& options) {
  Upsample<T, Backend> up(options);
  return up.forward(x);
}

}  // namespace mmnet::nn
