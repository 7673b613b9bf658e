// apps/mmnet/main.cpp: the `mmnet` command-line front end.
//
//   mmnet info    --model mmfnet|maml|cscn --config paper|tiny|brats|small|... [--shape DxHxW]
//       per-block architecture summary (output shape for a batch-1 input, parameter count), then `params: N`
//   mmnet forward --model mmfnet|maml|cscn --config paper|tiny|brats|... [--weights W.h5] --input X.h5 --output Y.h5
//                 [--modalities T1ce,...] [--backend cpu|cuda] [--threads K] [--seed S]
//       eval-mode inference on dataset `input` (N x M x D x H x W) of X.h5; writes the probabilities as dataset
//       `output` of Y.h5 (float32): MMFNet's sigmoid N x 1 x D x H x W, MAML's softmax N x K x D x H x W (of the
//       fused head, or with --modalities of the available branches; the input then has M channels or one per
//       listed modality); CSCN: each of the N single-channel volumes (Z x Y x X, any size) separately through
//       CSCN::predict (multi-view BUNet, ROI, multi-view ACDNet, λ fusion), output P_final N x 1 x Z x Y x X
//       (the tumour probability; 0 outside the ROI; mask = P_final > 0.5)
//
//   mmnet bench conv3d ... | mmnet bench train-step ...
//       timings as JSON lines (apps/mmnet/bench.hpp; bench/compare.py compares them with PyTorch)
//
// The segmentation pipeline (docs/pipeline.md):
//   mmnet phantom  --out DIR --cases N [--test-cases M] --seed S [--shape DxHxW] [--task mmfnet-like|brats-like]
//                                                                                    (cmd_phantom.hpp)
//   mmnet train    --data DIR [--model maml] --config small --out RUN [--epochs E] [--iterations I] ... [--resume]
//                                                                                    (cmd_train.hpp)
//   mmnet segment  --weights RUN/best.h5 --data DIR --split test --out PRED [--tta] [--png] [--modalities T1ce]
//                                                                                    (cmd_segment.hpp)
//   mmnet evaluate --pred PRED --truth DIR/labelsTs [--csv out.csv] [--regions auto|binary|brats|labels]
//                  [--dataset DIR]                                                    (cmd_evaluate.hpp)
//
// Every failure (missing file or dataset, wrong rank or channel count, weights that do not fit, bad option)
// is one line on stderr and exit code 2.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <mmnet/io/hdf5.hpp>
#include <mmnet/core/parallel.hpp>
#include <mmnet/io/weights.hpp>
#include <mmnet/maml.hpp>
#include <mmnet/mmfnet.hpp>

#include "bench.hpp"
#include "cli_common.hpp"
#include "models.hpp"
#include "cmd_evaluate.hpp"
#include "cmd_phantom.hpp"
#include "cmd_segment.hpp"
#include "cmd_train.hpp"
#include "conresnet_cli.hpp"
#include "hmrnet_cli.hpp"

namespace {

using namespace mmnet_cli;

// ---- info ------------------------------------------------------------------------------------------------

struct Row {
  std::string block;
  std::vector<mmnet::index_t> shape;
  mmnet::index_t params;
};

// Sum of the parameter sizes whose dotted name starts with prefix + ".".
template <class Net>
mmnet::index_t params_under(Net& net, const std::string& prefix) {
  mmnet::index_t n = 0;
  for (auto& [name, p] : net.named_parameters())
    if (name.compare(0, prefix.size() + 1, prefix + ".") == 0) n += p->value.numel();
  return n;
}

void print_rows(const std::vector<Row>& rows, mmnet::index_t expected_total) {
  std::printf("%-62s %-28s %12s\n", "block", "output shape", "params");
  mmnet::index_t total = 0;
  for (auto& r : rows) {
    std::printf("%-62s %-28s %12lld\n", r.block.c_str(), shape_str(r.shape).c_str(), static_cast<long long>(r.params));
    total += r.params;
  }
  if (total != expected_total)  // every parameter belongs to exactly one row
    throw std::logic_error("per-block parameter counts sum to " + std::to_string(total) + ", the model has " +
                           std::to_string(expected_total));
  std::printf("params: %lld\n", static_cast<long long>(expected_total));
}

// MAML (spec §2): per branch the encoder stages, the decoder levels and heads; the fusion conv, the MA modules
// and the fused head. Branch 0 in detail, the others (identical layer lists) as one row each.
int run_info_maml(const std::string& config, const std::vector<mmnet::index_t>& dhw) {
  const ModelSpec spec = model_spec("maml", config);
  const mmnet::MAMLOptions& o = *spec.maml;
  const mmnet::index_t k = o.size_multiple();
  for (int d = 0; d < 3; ++d)
    if (dhw[d] % k != 0)
      throw cli_error(std::string("--shape: size ") + "DHW"[d] + " must be a multiple of " + std::to_string(k) +
                      " (2^" + std::to_string(o.num_pool()) + " poolings), got " + std::to_string(dhw[d]));
  mmnet::MAML<float, mmnet::cpu> net(o);
  auto at = [&](mmnet::index_t c, mmnet::index_t stage) {
    const mmnet::index_t f = mmnet::index_t(1) << stage;
    return std::vector<mmnet::index_t>{1, c, dhw[0] / f, dhw[1] / f, dhw[2] / f};
  };
  const mmnet::index_t M = o.modalities(), P = o.num_pool(), K = o.classes();
  std::vector<Row> rows;
  const std::string b0 = "modality_specific_models.0";
  for (mmnet::index_t d = 0; d <= P; ++d) {
    const std::string n = b0 + ".conv_blocks_context." + std::to_string(d);
    rows.push_back({n + (d == P ? " (bottleneck)" : ""), at(o.channels(static_cast<int>(d)), d), params_under(net, n)});
  }
  for (mmnet::index_t u = 0; u < P; ++u) {
    const mmnet::index_t t = P - 1 - u;
    const std::string tu = b0 + ".tu." + std::to_string(u), loc = b0 + ".conv_blocks_localization." + std::to_string(u);
    rows.push_back({tu + " + " + "conv_blocks_localization." + std::to_string(u), at(o.channels(static_cast<int>(t)), t),
                    params_under(net, tu) + params_under(net, loc)});
  }
  for (mmnet::index_t u = 0; u < P; ++u) {
    const mmnet::index_t t = P - 1 - u;
    const std::string n = b0 + ".seg_outputs." + std::to_string(u);
    rows.push_back({n + (u == 0 ? " (weight 0 in the code loss)" : ""), at(K, t), params_under(net, n)});
  }
  for (mmnet::index_t m = 1; m < M; ++m) {
    const std::string n = "modality_specific_models." + std::to_string(m);
    rows.push_back({n + " (as .0)", at(o.channels(0), 0), params_under(net, n)});
  }
  rows.push_back({"fusion (F_dual)", at(o.channels(0), 0), params_under(net, "fusion")});
  for (mmnet::index_t m = 0; m < M; ++m) {
    const std::string n = "modality_aware_modules." + std::to_string(m);
    rows.push_back({n + " (A_" + std::to_string(m + 1) + ")", at(o.channels(0), 0), params_under(net, n)});
  }
  rows.push_back({"output (Z, fused logits)", at(K, 0), params_under(net, "output")});
  if (params_under(net, "fusion") + params_under(net, "output") == 0) {  // MS+Ensemble: branches only
    rows.erase(std::remove_if(rows.begin(), rows.end(), [](const Row& r) { return r.params == 0 && r.block.find("seg_outputs") == std::string::npos; }),
               rows.end());
  }
  std::printf("MAML, config %s: %lld modalities, %lld classes, C %lld, %lld poolings, widths", config.c_str(),
              static_cast<long long>(M), static_cast<long long>(K), static_cast<long long>(o.base_channels()),
              static_cast<long long>(P));
  for (mmnet::index_t d = 0; d <= P; ++d) std::printf(" %lld", static_cast<long long>(o.channels(static_cast<int>(d))));
  std::printf(", MA %s\n", mmnet::attention::to_string(o.ma_variant()));
  std::printf("input: %s\n", shape_str({1, M, dhw[0], dhw[1], dhw[2]}).c_str());
  print_rows(rows, net.num_parameters());
  return 0;
}

// CSCN (spec cascaded-fcn §2): BUNet's and ACDNet's blocks on one block of the preset (default the spec's
// (D, H, W) = (8, 24, 24); --shape another multiple of 4), one shared network per stage.
int run_info_cscn(const std::string& config, const std::string& shape_text) {
  const ModelSpec spec = model_spec("cscn", config);
  const mmnet::CSCNOptions& o = *spec.cscn;
  std::vector<mmnet::index_t> dhw{o.block()[0], o.block()[1], o.block()[2]};
  if (!shape_text.empty()) dhw = parse_shape(shape_text);
  for (int d = 0; d < 3; ++d)
    if (dhw[d] % 4 != 0)
      throw cli_error(std::string("--shape: size ") + "DHW"[d] + " must be a multiple of 4 (2 poolings), got " +
                      std::to_string(dhw[d]));
  mmnet::CSCN<float, mmnet::cpu> net(o);
  auto at = [&](mmnet::index_t c, int level) {
    const mmnet::index_t f = mmnet::index_t(1) << level;
    return std::vector<mmnet::index_t>{1, c, dhw[0] / f, dhw[1] / f, dhw[2] / f};
  };
  const auto& bo = o.bunet();
  const auto& ao = o.acdnet();
  const mmnet::index_t b = bo.b(), K = bo.classes();
  auto sum = [&](std::initializer_list<const char*> names) {
    mmnet::index_t n = 0;
    for (const char* x : names) n += params_under(net, x);
    return n;
  };
  std::vector<Row> rows{
      {"bunet.e1", at(2 * b, 0), sum({"bunet.e1"})},
      {"bunet.e2 (after max-pool)", at(4 * b, 1), sum({"bunet.e2"})},
      {"bunet.bottom (after max-pool)", at(8 * b, 2), sum({"bunet.bottom"})},
      {"bunet.up2 + dec2", at(4 * b, 1), sum({"bunet.up2", "bunet.dec2"})},
      {"bunet.up1 + dec1", at(2 * b, 0), sum({"bunet.up1", "bunet.dec1"})},
      {"bunet.head (logits; softmax outside)", at(K, 0), sum({"bunet.head"})},
      {"acdnet.stem (input cat[image, P_coarse])", at(ao.s(), 0), sum({"acdnet.stem"})},
      {"acdnet.db1", at(ao.block_out(1), 0), sum({"acdnet.db1"})},
      {"acdnet.td1 (+ avg-pool)", at(ao.block_in(2), 1), sum({"acdnet.td1"})},
      {"acdnet.db2", at(ao.block_out(2), 1), sum({"acdnet.db2"})},
      {"acdnet.td2 (+ avg-pool)", at(ao.block_in(3), 2), sum({"acdnet.td2"})},
      {"acdnet.db3", at(ao.block_out(3), 2), sum({"acdnet.db3"})},
      {"acdnet.up2 + dec2", at(ao.u2(), 1), sum({"acdnet.up2", "acdnet.dec2"})},
      {"acdnet.up1 + dec1", at(ao.u1(), 0), sum({"acdnet.up1", "acdnet.dec1"})},
      {"acdnet.side1 (on up1 + dec1)", at(ao.e(), 0), sum({"acdnet.side1"})},
      {"acdnet.side2 (on up2 + dec2, trilinear up)", at(ao.e(), 0), sum({"acdnet.side2"})},
      {"acdnet.side3 (on db3, trilinear up)", at(ao.e(), 0), sum({"acdnet.side3"})},
      {"acdnet.fuse (on cat[side1, side2, side3])", at(ao.s(), 0), sum({"acdnet.fuse"})},
      {"acdnet.head (logits; softmax outside)", at(K, 0), sum({"acdnet.head"})},
  };
  const mmnet::index_t nb = params_under(net, "bunet"), na = params_under(net, "acdnet");
  std::printf("CSCN, config %s: BUNet b %lld; ACDNet s %lld, L %lld, k %lld, a %lld, rates %lld/%lld/%lld, u2 %lld, u1 %lld, "
              "e %lld; block %s, stride %s, ROI margin %lld, lambda %s, one shared network per stage\n",
              config.c_str(), static_cast<long long>(b), static_cast<long long>(ao.s()), static_cast<long long>(ao.L()),
              static_cast<long long>(ao.k()), static_cast<long long>(ao.a()), static_cast<long long>(ao.rates()[0]),
              static_cast<long long>(ao.rates()[1]), static_cast<long long>(ao.rates()[2]), static_cast<long long>(ao.u2()),
              static_cast<long long>(ao.u1()), static_cast<long long>(ao.e()), o.block().str().c_str(),
              o.stride().str().c_str(), static_cast<long long>(o.roi_margin()), fmt(o.lambda(), 2).c_str());
  std::printf("input: BUNet %s, ACDNet %s (one block in the view frame)\n", shape_str({1, bo.in_channels(), dhw[0], dhw[1], dhw[2]}).c_str(),
              shape_str({1, ao.in_channels(), dhw[0], dhw[1], dhw[2]}).c_str());
  std::printf("BUNet %lld + ACDNet %lld parameters (bunet.* / acdnet.* rows)\n", static_cast<long long>(nb),
              static_cast<long long>(na));
  print_rows(rows, net.num_parameters());
  return 0;
}

// HMRNet (spec hmrnet.md §2): a "-p" / "-s" config is one fine network: the MR branch (in_conv, down1..3, up2..4),
// the HR branch (fr_in_conv, basic_conv*), the BFC levels 1, 2, 3, 5, 6 and 7, the deep-supervision heads and the
// output conv, with the MR shape of each row; a system config (paper, small, tiny) lists stage 1 and the parts.
int run_info_hmrnet(const std::string& config, std::string shape_text) {
  const ModelSpec spec = model_spec("hmrnet", config);
  const HMRNetPreset& hp = *spec.hmrnet;
  if (shape_text.empty()) shape_text = "48x56x48";  // the barriers phantom (every axis a multiple of 8)
  const std::vector<mmnet::index_t> dhw = parse_shape(shape_text);
  if (!hp.single) {  // the two-stage system of train / segment
    const auto plan = mmnet::hmrnet::TwoStagePlan::abcs();
    HMRNetSystem<float, mmnet::cpu> sys(hp, plan);
    const mmnet::index_t K = hp.unet.classes();
    std::vector<Row> rows{{"stage1 (U-Net, 3 -> " + std::to_string(K) + " classes, " + std::to_string(hp.unet.num_pool()) +
                               " poolings, base " + std::to_string(hp.unet.base_channels()) + ")",
                           {1, K, dhw[0], dhw[1], dhw[2]}, params_under(sys, "stage1")}};
    for (const auto& p : plan.parts)
      rows.push_back({p.name + " (HMRNet-" + mmnet::models::to_string(p.form) + ", label " + std::to_string(p.label) + ", on its crop)",
                      {1, 2, dhw[0], dhw[1], dhw[2]}, params_under(sys, p.name)});
    std::printf("HMRNet two-stage system, config %s: stage-1 U-Net, then one binary HMRNet per part (TwoStagePlan::abcs()); "
                "fine widths c %lld %lld %lld %lld, ch %lld\n",
                config.c_str(), static_cast<long long>(hp.p.mr_channels(0)), static_cast<long long>(hp.p.mr_channels(1)),
                static_cast<long long>(hp.p.mr_channels(2)), static_cast<long long>(hp.p.mr_channels(3)),
                static_cast<long long>(hp.p.hr_channels()));
    std::printf("input: %s (CT, T1c, T2); shapes: stage 1 on the volume, each part on its crop\n",
                shape_str({1, 3, dhw[0], dhw[1], dhw[2]}).c_str());
    print_rows(rows, sys.num_parameters());
    return 0;
  }
  const mmnet::HMRNetOptions& o = hp.fine(*hp.single);
  const auto m = o.size_multiple();
  for (int d = 0; d < 3; ++d)
    if (dhw[d] % m[static_cast<std::size_t>(d)] != 0 || dhw[d] < 2 * m[static_cast<std::size_t>(d)])
      throw cli_error(std::string("--shape: size ") + "DHW"[d] + " must be a multiple of " + std::to_string(m[static_cast<std::size_t>(d)]) +
                      " and at least " + std::to_string(2 * m[static_cast<std::size_t>(d)]) + " (HMRNet-" +
                      mmnet::models::to_string(o.form()) + "), got " + std::to_string(dhw[d]));
  mmnet::HMRNet<float, mmnet::cpu> net(o);
  const mmnet::index_t K = o.classes(), ch = o.hr_channels();
  auto at = [&](mmnet::index_t c, int level) {  // level 0..3; level 3 of -s is (8, 8, 4)
    std::vector<mmnet::index_t> s{1, c, dhw[0], dhw[1], dhw[2]};
    if (level == 0) return s;
    const auto f = level == 3 ? o.level_scale(3) : mmnet::ExpandingArray3(mmnet::index_t(1) << level);
    for (int d = 0; d < 3; ++d) s[static_cast<std::size_t>(d + 2)] /= f[static_cast<std::size_t>(d)];
    return s;
  };
  auto sum = [&](std::initializer_list<std::string> names) {
    mmnet::index_t n = 0;
    for (const auto& x : names) n += params_under(net, x);
    return n;
  };
  auto c = [&](int l) { return o.mr_channels(l); };
  auto bfc = [&](int l) {
    const std::string s = std::to_string(l);
    return sum({"concat" + s, "fr_concat" + s, "sse_up" + s, "sse_down" + s});
  };
  std::vector<Row> rows{
      {"in_conv (MR m0)", at(c(0), 0), sum({"in_conv"})},
      {"fr_in_conv (HR h0)", at(ch, 0), sum({"fr_in_conv"})},
      {"basic_conv1 (HR)", at(ch, 0), sum({"basic_conv1"})},
      {"down1 (max-pool 2 + block)", at(c(1), 1), sum({"down1"})},
      {"BFC 1 (concat1, fr_concat1, sse_up1, sse_down1)", at(c(1), 1), bfc(1)},
      {"basic_conv2 (HR)", at(ch, 0), sum({"basic_conv2"})},
      {"down2 (max-pool 2 + block)", at(c(2), 2), sum({"down2"})},
      {"BFC 2", at(c(2), 2), bfc(2)},
      {"basic_conv3 (HR)", at(ch, 0), sum({"basic_conv3"})},
      {std::string("down3 (max-pool ") + (o.form() == mmnet::HMRNetForm::p ? "2" : "(2,2,1)") + " + block)", at(c(3), 3), sum({"down3"})},
      {"dpvision_con3 (y3, weight 0)", at(K, 3), sum({"dpvision_con3"})},
      {"BFC 3", at(c(3), 3), bfc(3)},
      {"up2 (trilinear up + block)", at(c(2), 2), sum({"up2"})},
      {"basic_conv5 (HR)", at(ch, 0), sum({"basic_conv5"})},
      {"dpvision_con5 (y2)", at(K, 2), sum({"dpvision_con5"})},
      {"BFC 5 (skip m2)", at(c(2), 2), bfc(5)},
      {"up3 (trilinear up + block)", at(c(1), 1), sum({"up3"})},
      {"basic_conv6 (HR)", at(ch, 0), sum({"basic_conv6"})},
      {"dpvision_con6 (y1)", at(K, 1), sum({"dpvision_con6"})},
      {"BFC 6 (skip m1)", at(c(1), 1), bfc(6)},
      {"up4 (trilinear up + block)", at(c(0), 0), sum({"up4"})},
      {"basic_conv7 (HR)", at(ch, 0), sum({"basic_conv7"})},
      {"BFC 7 (concat7, fr_concat7, sse7, fr_sse7)", at(c(0), 0), sum({"concat7", "fr_concat7", "sse7", "fr_sse7"})},
      {"final_concat", at(c(0), 0), sum({"final_concat"})},
      {"out_conv (y0 logits; softmax outside)", at(K, 0), sum({"out_conv"})},
  };
  std::printf("HMRNet-%s, config %s: in %lld (CT, T1c, T2), classes %lld, MR c %lld %lld %lld %lld, HR ch %lld, %s\n",
              mmnet::models::to_string(o.form()), config.c_str(), static_cast<long long>(o.in_channels()), static_cast<long long>(K),
              static_cast<long long>(c(0)), static_cast<long long>(c(1)), static_cast<long long>(c(2)), static_cast<long long>(c(3)),
              static_cast<long long>(ch),
              o.form() == mmnet::HMRNetForm::p ? "3D convs" : "2.5D separable convs (3,3,1)+(1,1,3), slice axis W");
  std::printf("input: %s\n", shape_str({1, o.in_channels(), dhw[0], dhw[1], dhw[2]}).c_str());
  print_rows(rows, net.num_parameters());
  return 0;
}

// ConResNet (spec conresnet.md §2): the encoder (conv_4_32, layer0..4, the three strided pre-activation convs),
// fusionConv, the three decoder stages (ConResAtt: seg path and, with the context residual, the residual path),
// the heads. Shapes of a batch-1 input; the residual heads' outputs are up-sampled to full size in forward().
int run_info_conresnet(const std::string& config, std::string shape_text) {
  const ModelSpec spec = model_spec("conresnet", config);
  const mmnet::ConResNetOptions& o = *spec.conresnet;
  if (shape_text.empty()) shape_text = config.rfind("tiny", 0) == 0 ? "16x24x32" : config.rfind("brats", 0) == 0 ? "80x160x160" : "32x32x32";
  const std::vector<mmnet::index_t> dhw = parse_shape(shape_text);
  for (int d = 0; d < 3; ++d)
    if (dhw[d] % 8 != 0)
      throw cli_error(std::string("--shape: size ") + "DHW"[d] + " must be a multiple of 8 (3 strided convolutions), got " +
                      std::to_string(dhw[d]));
  mmnet::ConResNet<float, mmnet::cpu> net(o);
  const mmnet::index_t w = o.width(), K = o.num_classes();
  auto at = [&](mmnet::index_t c, int level) {
    const mmnet::index_t f = mmnet::index_t(1) << level;
    return std::vector<mmnet::index_t>{1, c, dhw[0] / f, dhw[1] / f, dhw[2] / f};
  };
  auto p = [&](const std::string& n) { return params_under(net, n); };
  std::vector<Row> rows{
      {"conv_4_32.0 (WS conv C_in -> w)", at(w, 0), p("conv_4_32.0")},
      {"layer0", at(w, 0), p("layer0")},
      {"conv_32_64 (stride 2)", at(2 * w, 1), p("conv_32_64")},
      {"layer1", at(2 * w, 1), p("layer1")},
      {"conv_64_128 (stride 2)", at(4 * w, 2), p("conv_64_128")},
      {"layer2", at(4 * w, 2), p("layer2")},
      {"conv_128_256 (stride 2)", at(8 * w, 3), p("conv_128_256")},
      {"layer3", at(8 * w, 3), p("layer3")},
      {"layer4 (dilation " + std::to_string(o.dilation()) + ")", at(8 * w, 3), p("layer4")},
      {"fusionConv (Dropout3d " + fmt(o.dropout(), 2) + ")", at(4 * w, 3), p("fusionConv")},
      {"seg_x4.0 (ConResAtt, up x2)", at(2 * w, 2), p("seg_x4.0")},
      {"seg_x2.0 (ConResAtt, up x2)", at(w, 1), p("seg_x2.0")},
      {"seg_x1.0 (ConResAtt, up x2)", at(w, 0), p("seg_x1.0")},
      {"seg_cls.0 (O_seg logits; sigmoid outside)", at(K, 0), p("seg_cls.0")},
  };
  if (o.context_residual()) {
    rows.push_back({"res_cls.0 (O_res)", at(K, 0), p("res_cls.0")});
    rows.push_back({"resx2_cls.0 (on 1/2, trilinear up)", at(K, 0), p("resx2_cls.0")});
    rows.push_back({"resx4_cls.0 (on 1/4, trilinear up)", at(K, 0), p("resx4_cls.0")});
  }
  std::printf("ConResNet, config %s: C_in %lld, K %lld (sigmoid regions ET, WT, TC), w %lld, G %lld, blocks %lld %lld %lld %lld %lld, "
              "%s\n",
              config.c_str(), static_cast<long long>(o.in_channels()), static_cast<long long>(K), static_cast<long long>(w),
              static_cast<long long>(o.groups()), static_cast<long long>(o.blocks()[0]), static_cast<long long>(o.blocks()[1]),
              static_cast<long long>(o.blocks()[2]), static_cast<long long>(o.blocks()[3]), static_cast<long long>(o.blocks()[4]),
              o.context_residual() ? "context residual (inputs X and X_res, outputs seg, res, resx2, resx4)"
                                   : "baseline: no context residual path (output seg)");
  std::printf("input: %s (X; X_res the same shape)\n", shape_str({1, o.in_channels(), dhw[0], dhw[1], dhw[2]}).c_str());
  print_rows(rows, net.num_parameters());
  return 0;
}

int run_info(const std::string& model, const std::string& config, std::string shape_text) {
  const ModelKind kind = model_kind(model);
  if (kind == ModelKind::cscn) return run_info_cscn(config, shape_text);
  if (kind == ModelKind::hmrnet) return run_info_hmrnet(config, shape_text);
  if (kind == ModelKind::conresnet) return run_info_conresnet(config, shape_text);
  if (shape_text.empty())  // the papers' patches: MMFNet 16 x 256 x 256 slabs, MAML (nnU-Net) 128^3; §8 tiny inputs
    shape_text = kind == ModelKind::mmfnet ? "16x256x256" : config == "tiny" ? "16x24x32" : "128x128x128";
  const std::vector<mmnet::index_t> dhw = parse_shape(shape_text);
  if (kind == ModelKind::maml) return run_info_maml(config, dhw);
  const mmnet::MMFNetOptions o = options_for(model, config);
  o.validate();
  const mmnet::index_t k = o.size_multiple();
  for (int d = 0; d < 3; ++d)
    if (dhw[d] % k != 0)
      throw cli_error(std::string("--shape: size ") + "DHW"[d] + " must be a multiple of " + std::to_string(k) +
                      " (2^" + std::to_string(o.levels()) + " levels), got " + std::to_string(dhw[d]));
  // Parameters are counted on the model itself; shapes follow analytically from the architecture (spec §2):
  // level l runs at size / 2^(l-1), the bottleneck at size / 2^L, every conv is size-preserving.
  mmnet::MMFNet<float, mmnet::cpu> net(o);
  auto at_level = [&](mmnet::index_t c, mmnet::index_t level) {
    const mmnet::index_t f = mmnet::index_t(1) << (level - 1);
    return std::vector<mmnet::index_t>{1, c, dhw[0] / f, dhw[1] / f, dhw[2] / f};
  };
  const mmnet::index_t L = o.levels(), E = o.num_encoders();
  std::vector<Row> rows;
  for (mmnet::index_t m = 0; m < E; ++m) {
    const std::string enc = "encoders." + std::to_string(m);
    for (mmnet::index_t l = 1; l <= L; ++l)
      rows.push_back({enc + ".block" + std::to_string(l), at_level(o.channels(l), l),
                      params_under(net, enc + ".block" + std::to_string(l))});
    rows.push_back({enc + ".bottleneck", at_level(o.bottleneck_channels(), L + 1), params_under(net, enc + ".bottleneck")});
  }
  for (mmnet::index_t l = 1; l <= L; ++l) {
    if (o.fusion() == mmnet::MMFNetFusion::cbam_rfblock)
      rows.push_back({"fusions." + std::to_string(l), at_level(o.channels(l), l), params_under(net, "fusions." + std::to_string(l))});
    else
      rows.push_back({"merge." + std::to_string(l) + " (concat)", at_level(E * o.channels(l), l), 0});
  }
  for (mmnet::index_t l = L; l >= 1; --l)
    rows.push_back({"decoder." + std::to_string(l), at_level(o.channels(l), l), params_under(net, "decoder." + std::to_string(l))});
  rows.push_back({"head (+ sigmoid)", at_level(1, 1), params_under(net, "head")});

  std::printf("MMFNet, config %s: %lld modalities, levels", config.c_str(), static_cast<long long>(o.modalities()));
  for (auto c : o.level_channels()) std::printf(" %lld", static_cast<long long>(c));
  std::printf(", bottleneck %lld, r %lld, fusion %s%s\n", static_cast<long long>(o.bottleneck_channels()),
              static_cast<long long>(o.reduction()), mmnet::models::fusion_name(o.fusion()),
              o.input_level_fusion() ? " (input-level)" : "");
  std::printf("input: %s\n", shape_str({1, o.modalities(), dhw[0], dhw[1], dhw[2]}).c_str());
  print_rows(rows, net.num_parameters());
  return 0;
}

// ---- forward ---------------------------------------------------------------------------------------------

struct ForwardArgs {
  std::string model = "mmfnet", config = "paper", weights, input, output, backend = "cpu", modalities;
  int threads = 0;
  unsigned long long seed = 0;
};

template <class Backend>
mmnet::HostArray infer(const ForwardArgs& a, const ModelSpec& spec, const mmnet::models::ModalitySet& present,
                       const mmnet::HostArray& x) {
  mmnet::Generator g(a.seed);
  std::vector<float> v(x.data.begin(), x.data.end());
  const auto input = mmnet::Tensor<float, Backend>::from_vector(mmnet::Shape(x.shape), v);
  mmnet::Tensor<float, Backend> prob;
  if (spec.kind == ModelKind::conresnet) {  // sigmoid(O_seg), N x 3 x D x H x W, X_res from the input
    mmnet::ConResNet<float, Backend> net(*spec.conresnet, g);
    if (!a.weights.empty()) mmnet::load(net, a.weights, /*strict=*/true);
    net.eval();
    auto z = net.predict(input, mmnet::conresnet::image_residual(input)).to_vector();
    for (auto& v : z) v = 1.0f / (1.0f + std::exp(-v));
    prob = mmnet::Tensor<float, Backend>::from_vector(mmnet::Shape{x.shape[0], spec.conresnet->num_classes(), x.shape[2], x.shape[3], x.shape[4]}, z);
  } else if (spec.kind == ModelKind::hmrnet) {  // one fine network: softmax(y0), N x 2 x D x H x W
    if (!spec.hmrnet->single)
      throw cli_error("--config " + a.config + ": the two-stage system (use mmnet segment); forward runs one fine network: "
                      "--config paper-p, paper-s, small-p, small-s, tiny-p or tiny-s");
    mmnet::HMRNet<float, Backend> net(spec.hmrnet->fine(*spec.hmrnet->single), g);
    if (!a.weights.empty()) mmnet::load(net, a.weights, /*strict=*/true);
    net.eval();
    prob = net.predict(input);
  } else if (spec.kind == ModelKind::cscn) {  // each volume separately through the cascade: P_final N x 1 x Z x Y x X
    mmnet::CSCN<float, Backend> net(*spec.cscn, g);
    if (!a.weights.empty()) mmnet::load(net, a.weights, /*strict=*/true);
    net.eval();
    const mmnet::index_t n = x.shape[0], per = input.numel() / std::max<mmnet::index_t>(1, n);
    const mmnet::Shape one{1, x.shape[1], x.shape[2], x.shape[3], x.shape[4]};
    std::vector<double> all;
    for (mmnet::index_t i = 0; i < n; ++i) {
      const std::vector<float> vi(v.begin() + i * per, v.begin() + (i + 1) * per);
      const auto p = net.predict(mmnet::Tensor<float, Backend>::from_vector(one, vi)).p_final.to_vector();
      all.insert(all.end(), p.begin(), p.end());
    }
    prob = mmnet::Tensor<float, Backend>::from_vector(mmnet::Shape{n, 1, x.shape[2], x.shape[3], x.shape[4]}, all);
  } else if (spec.kind == ModelKind::maml) {
    mmnet::MAML<float, Backend> net(*spec.maml, g);
    if (!a.weights.empty()) mmnet::load(net, a.weights, /*strict=*/true);
    net.eval();
    prob = net.predict(input, present);
  } else {
    mmnet::MMFNet<float, Backend> net(*spec.mmfnet, g);
    if (!a.weights.empty()) mmnet::load(net, a.weights, /*strict=*/true);
    net.eval();
    prob = net.forward(input);
  }
  mmnet::HostArray out;
  out.dtype = mmnet::DType::f32;
  out.shape = prob.shape().to_vector();
  const auto p = prob.to_vector();
  out.data.assign(p.begin(), p.end());
  return out;
}

int run_forward(const ForwardArgs& a) {
  const ModelSpec spec = model_spec(a.model, a.config);
  std::vector<std::string> names;  // modality names are not known here: indices (or the BraTS names for 4)
  for (mmnet::index_t m = 0; m < spec.modalities(); ++m) names.push_back(std::to_string(m));
  if (spec.modalities() == 4) names = {"T1", "T1ce", "T2", "FLAIR"};
  mmnet::models::ModalitySet present;
  for (mmnet::index_t m = 0; m < spec.modalities(); ++m) present.push_back(m);
  if (!a.modalities.empty()) {
    if (spec.kind != ModelKind::maml) throw cli_error("--modalities: only for --model maml");
    present = parse_modalities(a.modalities, names);
  }
  if (a.backend != "cpu" && a.backend != "cuda") throw cli_error("--backend: expected cpu or cuda, got '" + a.backend + "'");
#if !MMNET_HAS_CUDA_BACKEND
  if (a.backend == "cuda")
    throw cli_error("--backend cuda: this mmnet binary was built without the cuda backend "
                    "(configure with -DMMNET_CLI_WITH_CUDA_BACKEND=ON)");
#endif
  if (a.threads < 0) throw cli_error("--threads: expected a positive count, got " + std::to_string(a.threads));
  if (a.threads > 0) mmnet::set_num_threads(a.threads);

  const mmnet::StateDict in = mmnet::io::read_all(a.input);
  const mmnet::HostArray* x = in.find("input");
  if (!x) throw cli_error(a.input + ": no dataset 'input' (expected N x M x D x H x W float32)");
  if (x->dtype == mmnet::DType::i64) throw cli_error(a.input + ": dataset 'input' is int64; expected float32");
  if (x->shape.size() != 5)
    throw cli_error(a.input + ": dataset 'input' has rank " + std::to_string(x->shape.size()) + " (shape " +
                    x->shape_str() + "); expected 5: N x M x D x H x W");
  const auto want = static_cast<mmnet::index_t>(present.size());
  if (x->shape[1] != spec.modalities() && x->shape[1] != want)
    throw cli_error(a.input + ": dataset 'input' has " + std::to_string(x->shape[1]) + " channels (shape " +
                    x->shape_str() + "); " + spec.name() + " expects " + std::to_string(spec.modalities()) + " modalities" +
                    (want != spec.modalities() ? " (or " + std::to_string(want) + ", one per --modalities entry)" : std::string()));

  mmnet::HostArray y;
#if MMNET_HAS_CUDA_BACKEND
  y = a.backend == "cuda" ? infer<mmnet::cuda>(a, spec, present, *x) : infer<mmnet::cpu>(a, spec, present, *x);
#else
  y = infer<mmnet::cpu>(a, spec, present, *x);
#endif
  mmnet::StateDict out;
  out.insert("output", std::move(y));
  mmnet::io::save_state_dict(a.output, out, a.model + "-" + a.config + " output");
  return 0;
}

// Messages are reported on one line: embedded newlines (state-dict key lists) become "; ".
std::string one_line(std::string s) {
  for (std::size_t i = 0; (i = s.find('\n', i)) != std::string::npos;) s.replace(i, 1, "; ");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mmnet: inspect and run the 3D segmentation networks of the mmnet library"};
  app.require_subcommand(1);

  std::string info_model = "mmfnet", info_config = "paper", info_shape;
  auto* info = app.add_subcommand("info", "Per-block output shapes and parameter counts");
  info->add_option("--model", info_model, "Model (mmfnet, maml, cscn, hmrnet, conresnet)")->capture_default_str()->check(CLI::IsMember(model_names()));
  info->add_option("--config", info_config, "Preset")->capture_default_str()->check(CLI::IsMember(all_config_names()));
  info->add_option("--shape", info_shape, "Input size DxHxW (batch 1; default the paper's patch: mmfnet 16x256x256, maml 128x128x128, maml tiny 16x24x32; cscn the preset's block, 8x24x24 or tiny 4x8x12)");

  ForwardArgs fa;
  auto* fwd = app.add_subcommand("forward", "Eval-mode inference: dataset 'input' of --input -> dataset 'output' of --output");
  fwd->add_option("--model", fa.model, "Model (mmfnet, maml, cscn: input N x 1 x Z x Y x X volumes, output P_final N x 1 x Z x Y x X; hmrnet -p/-s configs: one fine network, softmax(y0) N x 2 x D x H x W; conresnet: sigmoid(O_seg) N x 3 x D x H x W, regions ET, WT, TC)")->capture_default_str()->check(CLI::IsMember(model_names()));
  fwd->add_option("--config", fa.config, "Preset")->capture_default_str()->check(CLI::IsMember(all_config_names()));
  fwd->add_option("--modalities", fa.modalities, "maml: the available modalities (indices, or T1,T1ce,T2,FLAIR for 4)");
  fwd->add_option("--weights", fa.weights, "State dict (.h5, mmnet::save or tools/torch2h5.py); default: seeded initialisation");
  fwd->add_option("--input", fa.input, "HDF5 file with dataset 'input', N x M x D x H x W")->required();
  fwd->add_option("--output", fa.output, "HDF5 file to write (dataset 'output', N x C x D x H x W probabilities, float32)")->required();
  fwd->add_option("--backend", fa.backend, "cpu or cuda")->capture_default_str();
  fwd->add_option("--threads", fa.threads, "Threads (0: OpenMP's default)")->capture_default_str();
  fwd->add_option("--seed", fa.seed, "Seed of the default initialisation")->capture_default_str();

  BenchConvArgs bca;
  BenchTrainArgs bta;
  const BenchCommands bench = add_bench_commands(app, bca, bta);

  PhantomArgs pha;
  TrainArgs tra;
  SegmentArgs sga;
  EvaluateArgs eva;
  auto* phantom = add_phantom_command(app, pha);
  auto* train = add_train_command(app, tra);
  auto* segment = add_segment_command(app, sga);
  auto* evaluate = add_evaluate_command(app, eva);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "mmnet: %s\n", one_line(e.what()).c_str());
    return exit_error;
  }
  try {
    if (*info) return run_info(info_model, info_config, info_shape);
    if (*bench.conv3d) return run_bench_conv3d(bca);
    if (*bench.train_step) return run_bench_train_step(bta);
    if (*phantom) return run_phantom(pha);
    if (*train) return run_train(tra);
    if (*segment) return run_segment(sga);
    if (*evaluate) return run_evaluate(eva);
    return run_forward(fa);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmnet: %s\n", one_line(e.what()).c_str());
    return exit_error;
  }
}
