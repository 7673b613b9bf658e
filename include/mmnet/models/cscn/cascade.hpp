// mmnet/models/cscn/cascade.hpp: CSCN, the two-stage cascade BUNet -> ACDNet with multi-view inference (spec
// shared/specs/cascaded-fcn.md §2.3 "Multi-view fusion", "Cascade output", §4.4). Reference:
// tests/reference/cscn_ref.py `cascade`.
//
//   P_c = stage_predict(BUNet, [img])                         whole volume, three views averaged
//   ROI = roi(P_c > 0.5)                                       largest 26-CC, bbox + margin, clipped, grown
//   P_f = stage_predict(ACDNet, crop([img, P_c], ROI))         the crop only (blocks never read outside it)
//   P   = λ P_c + (1 - λ) P_f in the ROI, 0 outside;  mask = P > 0.5
//
// One network per stage shared by the three views (state-dict names bunet.*, acdnet.*), or with
// view_specific_weights three per stage (bunet.{0,1,2}.*, acdnet.{0,1,2}.*, index = axial, coronal, sagittal).
//
//   models::CSCN<float, mmnet::cpu> cscn(models::CSCNOptions::paper());
//   auto r = cscn.predict(image);      // image 1 x 1 x Z x Y x X; r.p_coarse, r.roi, r.p_fine, r.p_final, r.mask
#pragma once
#include <string>
#include <vector>

#include "../../core/module.hpp"
#include "../../layers/concat.hpp"
#include "acdnet.hpp"
#include "bunet.hpp"
#include "options.hpp"
#include "views.hpp"

namespace mmnet::models {

template <class T, class Backend>
struct CSCNPrediction {
  Tensor<T, Backend> p_coarse;  // 1 x 1 x Z x Y x X, stage 1 tumour probability
  cscn::Box3 roi;               // (Z, Y, X), half-open
  Tensor<T, Backend> p_fine;    // 1 x 1 x (ROI extent), stage 2 tumour probability on the crop
  Tensor<T, Backend> p_final;   // 1 x 1 x Z x Y x X, λ P_c + (1 - λ) P_f in the ROI, 0 outside
  Tensor<T, Backend> mask;      // 1 x 1 x Z x Y x X, 1 where p_final > 0.5
};

template <class T, class Backend>
struct CSCN : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::models::CSCN";

  std::vector<BUNet<T, Backend>> bunet;    // 1, or 3 with view_specific_weights (axial, coronal, sagittal)
  std::vector<ACDNet<T, Backend>> acdnet;

  explicit CSCN(const CSCNOptions& options = CSCNOptions::paper(), Generator& g = default_generator())
      : options_(validated(options)) {
    const std::size_t copies = options.view_specific_weights() ? 3 : 1;
    bunet.reserve(copies);
    acdnet.reserve(copies);
    for (std::size_t i = 0; i < copies; ++i) bunet.emplace_back(options.bunet(), g);
    for (std::size_t i = 0; i < copies; ++i) acdnet.emplace_back(options.acdnet(), g);
  }

  void members(Members<T, Backend>& m) override {
    if (bunet.size() == 1) m("bunet", bunet[0])("acdnet", acdnet[0]);
    else m("bunet", bunet)("acdnet", acdnet);
  }

  const CSCNOptions& options() const { return options_; }

  // The network of a stage that sees view v.
  BUNet<T, Backend>& bunet_for(cscn::View v) { return bunet[bunet.size() == 1 ? 0 : static_cast<std::size_t>(v)]; }
  ACDNet<T, Backend>& acdnet_for(cscn::View v) { return acdnet[acdnet.size() == 1 ? 0 : static_cast<std::size_t>(v)]; }

  // Stage 1 on the whole volume (image 1 x in x Z x Y x X); eval mode is set. Returns P_coarse 1 x 1 x Z x Y x X.
  tensor coarse(const tensor& image) {
    check_image(image);
    this->eval();
    return cscn::stage_predict([this](const tensor& b, cscn::View v) { return bunet_for(v).forward(b); }, image,
                               options_.block(), options_.stride(), options_.inference_batch());
  }

  // Spec §4.4 ROI of a coarse probability map.
  cscn::Box3 roi(const tensor& p_coarse) const {
    return cscn::roi_from_probability(p_coarse, options_.roi_margin(), cscn::min_extent(options_.block()));
  }

  // Stage 2 on crop(cat[image, P_coarse], roi); eval mode is set. Returns P_fine on the crop, 1 x 1 x (ROI extent).
  tensor fine(const tensor& image, const tensor& p_coarse, const cscn::Box3& roi) {
    check_image(image);
    check_same_shape(name, "P_coarse", p_coarse, Shape{1, 1, image.size(2), image.size(3), image.size(4)});
    check_box(image, roi);
    this->eval();
    const tensor crop = cscn::crop_box(nn::cat_channels(std::vector<tensor>{image, p_coarse}), roi);
    return cscn::stage_predict([this](const tensor& b, cscn::View v) { return acdnet_for(v).forward(b); }, crop,
                               options_.block(), options_.stride(), options_.inference_batch());
  }

  // The whole cascade.
  CSCNPrediction<T, Backend> predict(const tensor& image) {
    CSCNPrediction<T, Backend> r;
    r.p_coarse = coarse(image);
    r.roi = roi(r.p_coarse);
    finish(image, r);
    return r;
  }
  // The cascade with a given ROI (e.g. to test stage 2 when P_coarse has no tumour).
  CSCNPrediction<T, Backend> predict(const tensor& image, const cscn::Box3& forced_roi) {
    CSCNPrediction<T, Backend> r;
    r.p_coarse = coarse(image);
    r.roi = forced_roi;
    finish(image, r);
    return r;
  }

 private:
  static const CSCNOptions& validated(const CSCNOptions& o) {
    o.validate();
    if (o.acdnet().in_channels() != o.bunet().in_channels() + 1)
      fail<value_error>(name, "acdnet in_channels (bunet's input plus P_coarse)", o.bunet().in_channels() + 1,
                        o.acdnet().in_channels());
    return o;
  }
  void check_image(const tensor& image) const {
    cscn::volume_dims(name, image);
    if (image.size(1) != options_.bunet().in_channels())
      fail<shape_error>(name, "image channels", options_.bunet().in_channels(), image.size(1),
                        "image shape " + image.shape().str());
  }
  void check_box(const tensor& image, const cscn::Box3& b) const {
    for (int a = 0; a < 3; ++a)
      if (b.lo[static_cast<std::size_t>(a)] < 0 || b.hi[static_cast<std::size_t>(a)] > image.size(2 + a) ||
          b.extent(a) < 1)
        fail<value_error>(name, std::string("ROI on axis ") + "ZYX"[a],
                          "0 <= lo < hi <= " + std::to_string(image.size(2 + a)), b.str());
  }
  void finish(const tensor& image, CSCNPrediction<T, Backend>& r) {
    r.p_fine = fine(image, r.p_coarse, r.roi);
    const index_t Z = image.size(2), Y = image.size(3), X = image.size(4);
    const auto pc = r.p_coarse.to_vector(), pf = r.p_fine.to_vector();
    std::vector<double> out(pc.size(), 0.0), mask(pc.size(), 0.0);
    const double lam = options_.lambda();
    const index_t ey = r.roi.extent(1), ex = r.roi.extent(2);
    for (index_t z = r.roi.lo[0]; z < r.roi.hi[0]; ++z)
      for (index_t y = r.roi.lo[1]; y < r.roi.hi[1]; ++y)
        for (index_t x = r.roi.lo[2]; x < r.roi.hi[2]; ++x) {
          const std::size_t i = static_cast<std::size_t>((z * Y + y) * X + x);
          const std::size_t j = static_cast<std::size_t>(((z - r.roi.lo[0]) * ey + (y - r.roi.lo[1])) * ex + (x - r.roi.lo[2]));
          out[i] = lam * static_cast<double>(pc[i]) + (1.0 - lam) * static_cast<double>(pf[j]);
          mask[i] = out[i] > 0.5 ? 1.0 : 0.0;
        }
    r.p_final = tensor::from_vector(Shape{1, 1, Z, Y, X}, out);
    r.mask = tensor::from_vector(Shape{1, 1, Z, Y, X}, mask);
  }

  CSCNOptions options_;
};

}  // namespace mmnet::models
