// apps/mmnet/cmd_evaluate.hpp: `mmnet evaluate`: predictions PRED/CASE.nii.gz against the truth TRUTH/CASE.nii.gz
// (binary labels 0/1), per case Dice, IoU, precision, recall, HD, HD95, ASSD and NSD (metrics/metrics.hpp, the
// spacing from the files), then `mean dice: X  mean hd95: Y  mean assd: Z` (nan-means; distances in mm).
#pragma once
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <mmnet/data/dataset.hpp>
#include <mmnet/io/nifti.hpp>
#include <mmnet/metrics/metrics.hpp>

#include "cli_common.hpp"
#include "pipeline.hpp"

namespace mmnet_cli {

struct EvaluateArgs {
  std::string pred, truth, csv;
  double nsd_tolerance = 1.0;
};

inline CLI::App* add_evaluate_command(CLI::App& app, EvaluateArgs& a) {
  auto* c = app.add_subcommand("evaluate", "Compare predicted label maps with the truth: per-case metrics and the means");
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later option wins
  c->add_option("--pred", a.pred, "Directory of predictions CASE.nii.gz (mmnet segment --out)")->required();
  c->add_option("--truth", a.truth, "Directory of true label maps CASE.nii.gz (e.g. DATA/labelsTs); every case is evaluated")->required();
  c->add_option("--csv", a.csv, "Also write the per-case rows to this CSV file");
  c->add_option("--nsd-tolerance", a.nsd_tolerance, "Normalised surface Dice tolerance in mm")->capture_default_str();
  return c;
}

namespace evaluate_detail {

// The label map of a binary label file (values 0 / 1 only), with its header.
inline mmnet::data::LabelMap read_binary(const std::string& path, mmnet::io::NiftiHeader& header) {
  const auto img = mmnet::io::read_nifti<float>(path);
  header = img.header;
  mmnet::data::LabelMap m;
  try {
    m = mmnet::io::to_label_map(img);
  } catch (const mmnet::error& e) {
    throw cli_error(path + ": not a label map (" + e.what() + ")");
  }
  for (std::size_t i = 0; i < m.data.size(); ++i)
    if (m.data[i] > 1)
      throw cli_error(path + ": label value " + std::to_string(m.data[i]) + " at voxel " + std::to_string(i) +
                      "; expected 0 or 1");
  return m;
}

inline bool close(double a, double b) { return std::abs(a - b) <= 1e-5 + 1e-5 * std::abs(b); }

inline void check_geometry(const std::string& name, const std::string& pred, const mmnet::io::NiftiHeader& p,
                           const std::string& truth, const mmnet::io::NiftiHeader& t) {
  auto dims = [](const mmnet::io::NiftiHeader& h) {
    std::string s;
    for (auto d : h.dims) s += (s.empty() ? "" : "x") + std::to_string(d);
    return s;
  };
  if (p.dims != t.dims)
    throw cli_error("case " + name + ": prediction " + pred + " has dims " + dims(p) + ", truth " + truth + " has " + dims(t));
  for (int a = 0; a < 3; ++a)
    if (!close(p.pixdim[a], t.pixdim[a]))
      throw cli_error("case " + name + ": prediction " + pred + " has voxel size " + fmt(p.pixdim[a], 6) + " mm along axis " +
                      std::to_string(a) + ", truth " + truth + " has " + fmt(t.pixdim[a], 6));
  const auto pa = p.affine(), ta = t.affine();
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c)
      if (!close(pa[r][c], ta[r][c]))
        throw cli_error("case " + name + ": prediction " + pred + " and truth " + truth + " have different affines (row " +
                        std::to_string(r) + ", column " + std::to_string(c) + ": " + fmt(pa[r][c], 6) + " vs " +
                        fmt(ta[r][c], 6) + ")");
}

inline double nanmean(const std::vector<double>& v) {
  double s = 0;
  int n = 0;
  for (double x : v)
    if (!std::isnan(x)) s += x, ++n;
  return n ? s / n : std::nan("");
}

}  // namespace evaluate_detail

inline int run_evaluate(const EvaluateArgs& a) {
  using namespace evaluate_detail;
  std::error_code ec;
  if (!fs::is_directory(a.truth, ec)) throw cli_error(a.truth + ": no such directory (--truth)");
  if (!fs::is_directory(a.pred, ec)) throw cli_error(a.pred + ": no such directory (--pred)");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(a.truth, ec)) {
    const std::string f = e.path().filename().string();
    if (e.is_regular_file() && (mmnet::data::detail::nifti_ext(f) == ".nii.gz" || mmnet::data::detail::nifti_ext(f) == ".nii"))
      names.push_back(f);
  }
  std::sort(names.begin(), names.end());
  if (names.empty()) throw cli_error(a.truth + ": no label files (*.nii.gz) to evaluate");
  if (!(a.nsd_tolerance >= 0) || !std::isfinite(a.nsd_tolerance))
    throw cli_error("--nsd-tolerance: expected a finite value >= 0");

  mmnet::metrics::MetricOptions opt;
  opt.nsd_tolerance_mm = a.nsd_tolerance;
  struct Row {
    std::string name;
    mmnet::metrics::SegmentationMetrics m;
  };
  std::vector<Row> rows;
  for (const auto& file : names) {
    const std::string name = mmnet::data::detail::strip_nifti_ext(file);
    const std::string truth = join_path(a.truth, file), pred = join_path(a.pred, file);
    if (!fs::exists(pred, ec)) throw cli_error("case " + name + ": no prediction " + pred);
    mmnet::io::NiftiHeader ph, th;
    const auto t = read_binary(truth, th);
    const auto p = read_binary(pred, ph);
    check_geometry(name, pred, ph, truth, th);
    const mmnet::ops::Dims3 dims{t.depth, t.height, t.width};
    const mmnet::ops::Spacing3 spacing{th.pixdim[2], th.pixdim[1], th.pixdim[0]};
    rows.push_back({name, mmnet::metrics::evaluate(p.data.data(), t.data.data(), dims, spacing, opt)});
  }

  const char* head = "case,dice,iou,precision,recall,hd_mm,hd95_mm,assd_mm,nsd";
  std::string csv = std::string(head) + "\n";
  std::printf("%-20s %8s %8s %9s %8s %8s %8s %8s %8s\n", "case", "dice", "iou", "precision", "recall", "hd", "hd95",
              "assd", "nsd");
  std::vector<double> dice, hd95, assd;
  for (auto& r : rows) {
    const auto& m = r.m;
    std::printf("%-20s %8s %8s %9s %8s %8s %8s %8s %8s\n", r.name.c_str(), fmt(m.dice).c_str(), fmt(m.iou).c_str(),
                fmt(m.precision).c_str(), fmt(m.recall).c_str(), fmt(m.hd, 2).c_str(), fmt(m.hd95, 2).c_str(),
                fmt(m.assd, 2).c_str(), fmt(m.nsd).c_str());
    csv += r.name + "," + fmt(m.dice, 6) + "," + fmt(m.iou, 6) + "," + fmt(m.precision, 6) + "," + fmt(m.recall, 6) + "," +
           fmt(m.hd, 6) + "," + fmt(m.hd95, 6) + "," + fmt(m.assd, 6) + "," + fmt(m.nsd, 6) + "\n";
    dice.push_back(m.dice);
    hd95.push_back(m.hd95);
    assd.push_back(m.assd);
  }
  if (!a.csv.empty()) write_text_atomically(a.csv, csv);
  std::printf("mean dice: %s  mean hd95: %s  mean assd: %s\n", fmt(nanmean(dice)).c_str(), fmt(nanmean(hd95)).c_str(),
              fmt(nanmean(assd)).c_str());
  return 0;
}

}  // namespace mmnet_cli
