// apps/mmnet/cmd_evaluate.hpp: `mmnet evaluate`: predictions PRED/CASE.nii.gz against the truth TRUTH/CASE.nii.gz,
// per case Dice, IoU, precision, recall, HD, HD95, ASSD and NSD (metrics/metrics.hpp, the spacing from the files).
//
// --regions binary: labels 0/1, one row per case, then `mean dice: X  mean hd95: Y  mean assd: Z` (nan-means;
// distances in mm); CSV columns case,dice,...
// --regions brats: nnU-Net's BraTS labels (1 edema, 2 non-enhancing, 3 enhancing), regions WT = {1,2,3},
// TC = {2,3}, ET = {3} (metrics::nnunet_brats_regions); --regions labels: one region per non-zero label of
// dataset.json (named by it) or, without one, per non-zero value found. Both print one row per case and region,
// then per region `mean WT dice: X  mean WT hd95: Y  mean WT assd: Z` (distances in mm) and, with more than one
// label (--regions labels), `average of the N label means: dice X  hd95 Y  assd Z`; CSV columns case,region,dice,...
// --regions auto (default): brats when dataset.json's labels are exactly 0 background, 1 edema*, 2 non-enhancing*,
// 3 enhancing* (the phantom's and MSD Task01's names), labels when it has other labels above 1, else binary.
// dataset.json: --dataset DIR, else TRUTH/.. or TRUTH when they hold one; label values not listed there are errors.
// Empty regions follow metrics' convention (MONAI ignore_empty): Dice is NaN when the truth region is empty and is
// left out of the means (nnU-Net: NaN only when both are empty; BraTS challenge: 1 when both are empty).
#pragma once
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <mmnet/data/dataset.hpp>
#include <mmnet/io/nifti.hpp>
#include <mmnet/metrics/metrics.hpp>

#include "cli_common.hpp"
#include "pipeline.hpp"

namespace mmnet_cli {

struct EvaluateArgs {
  std::string pred, truth, csv, regions = "auto", dataset;
  double nsd_tolerance = 1.0;
};

inline CLI::App* add_evaluate_command(CLI::App& app, EvaluateArgs& a) {
  auto* c = app.add_subcommand("evaluate", "Compare predicted label maps with the truth: per-case metrics and the means");
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later option wins
  c->add_option("--pred", a.pred, "Directory of predictions CASE.nii.gz (mmnet segment --out)")->required();
  c->add_option("--truth", a.truth, "Directory of true label maps CASE.nii.gz (e.g. DATA/labelsTs); every case is evaluated")->required();
  c->add_option("--csv", a.csv, "Also write the per-case rows to this CSV file");
  c->add_option("--nsd-tolerance", a.nsd_tolerance, "Normalised surface Dice tolerance in mm")->capture_default_str();
  c->add_option("--regions", a.regions,
                "auto, binary (labels 0/1), brats (WT {1,2,3}, TC {2,3}, ET {3} on nnU-Net labels) or labels (one per label)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "binary", "brats", "labels"}));
  c->add_option("--dataset", a.dataset, "Data set whose dataset.json names the labels (default: TRUTH/.. or TRUTH if it has one)");
  return c;
}

namespace evaluate_detail {

// Any label map (whole numbers 0..255); values not in `allowed` (when given) are errors naming the file.
inline mmnet::data::LabelMap read_labels(const std::string& path, mmnet::io::NiftiHeader& header,
                                         const std::vector<int>* allowed, const std::string& allowed_from) {
  const auto img = mmnet::io::read_nifti<float>(path);
  header = img.header;
  mmnet::data::LabelMap m;
  try {
    m = mmnet::io::to_label_map(img);
  } catch (const mmnet::error& e) {
    throw cli_error(path + ": not a label map (" + e.what() + ")");
  }
  if (allowed) {
    bool ok[256] = {};
    for (int v : *allowed) ok[v] = true;
    for (std::size_t i = 0; i < m.data.size(); ++i)
      if (!ok[m.data[i]]) {
        std::string list;
        for (int v : *allowed) list += (list.empty() ? "" : ", ") + std::to_string(v);
        throw cli_error(path + ": label value " + std::to_string(m.data[i]) + " at voxel " + std::to_string(i) +
                        " is not one of " + allowed_from + " (" + list + ")");
      }
  }
  return m;
}

// The label map of a binary label file (values 0 / 1 only), with its header.
inline mmnet::data::LabelMap read_binary(const std::string& path, mmnet::io::NiftiHeader& header) {
  static const std::vector<int> binary{0, 1};
  return read_labels(path, header, &binary, "the binary labels");
}

// dataset.json's "labels" (value -> name); empty when there is no such file.
inline std::map<int, std::string> dataset_labels(const std::string& json) {
  std::ifstream in(json);
  if (!in) throw cli_error(json + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw cli_error(json + ": not valid JSON (" + e.what() + ")");
  }
  std::map<int, std::string> out;
  const auto it = j.find("labels");
  if (it == j.end() || !it->is_object() || it->empty()) throw cli_error(json + ": no \"labels\" object");
  for (auto l = it->begin(); l != it->end(); ++l) {
    const std::string& k = l.key();
    const bool digits = !k.empty() && k.size() <= 3 && std::all_of(k.begin(), k.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    if (!digits || std::stoi(k) > 255 || !l->is_string())
      throw cli_error(json + ": \"labels\": expected integer keys 0..255 with string names, got key \"" + k + "\"");
    out[std::stoi(k)] = l->get<std::string>();
  }
  return out;
}

inline std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}
// nnU-Net's BraTS label names (this phantom's, MSD Task01's "edema", "non-enhancing tumor", "enhancing tumour").
inline bool is_brats_labels(const std::map<int, std::string>& l) {
  auto starts = [&](int k, const char* prefix) {
    auto it = l.find(k);
    return it != l.end() && lower(it->second).rfind(prefix, 0) == 0;
  };
  return l.size() == 4 && starts(0, "background") && starts(1, "edema") && starts(2, "non-enhancing") && starts(3, "enhancing");
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

  // The label names: dataset.json of --dataset, else of TRUTH/.. or TRUTH.
  std::string json;
  if (!a.dataset.empty()) {
    json = join_path(a.dataset, "dataset.json");
    if (!fs::is_regular_file(json, ec)) throw cli_error(a.dataset + ": no dataset.json (--dataset)");
  } else {
    fs::path truth_dir = fs::path(a.truth).lexically_normal();
    if (!truth_dir.has_filename()) truth_dir = truth_dir.parent_path();  // "DIR/labelsTs/"
    for (const auto& dir : {truth_dir.parent_path(), truth_dir}) {
      const fs::path j = (dir.empty() ? fs::path(".") : dir) / "dataset.json";
      if (fs::is_regular_file(j, ec)) {
        json = j.string();
        break;
      }
    }
  }
  std::map<int, std::string> labels;
  if (!json.empty()) labels = dataset_labels(json);
  std::string mode = a.regions;
  if (mode == "auto") {
    if (is_brats_labels(labels)) mode = "brats";
    else if (!labels.empty() && labels.rbegin()->first > 1) mode = "labels";
    else mode = "binary";
  }
  struct Row {
    std::string name, region;
    mmnet::metrics::SegmentationMetrics m;
  };
  std::vector<Row> rows;

  if (mode == "binary") {
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
      rows.push_back({name, "", mmnet::metrics::evaluate(p.data.data(), t.data.data(), dims, spacing, opt)});
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

  // Region modes: which label values are valid, and the regions.
  std::vector<int> allowed;
  std::string allowed_from;
  if (!labels.empty()) {
    for (auto& [k, v] : labels) allowed.push_back(k);
    allowed_from = "the labels of " + json;
  } else if (mode == "brats") {
    allowed = {0, 1, 2, 3};
    allowed_from = "nnU-Net's BraTS labels";
  }
  if (mode == "brats" && !labels.empty() && labels.rbegin()->first > 3)
    throw cli_error("--regions brats: " + json + " lists label " + std::to_string(labels.rbegin()->first) +
                    "; expected nnU-Net's BraTS labels 0..3 (1 edema, 2 non-enhancing, 3 enhancing)");
  struct Pair {
    std::string name;
    mmnet::data::LabelMap pred, truth;
    mmnet::ops::Spacing3 spacing;
  };
  std::vector<Pair> pairs;
  bool seen[256] = {};
  for (const auto& file : names) {
    const std::string name = mmnet::data::detail::strip_nifti_ext(file);
    const std::string truth = join_path(a.truth, file), pred = join_path(a.pred, file);
    if (!fs::exists(pred, ec)) throw cli_error("case " + name + ": no prediction " + pred);
    mmnet::io::NiftiHeader ph, th;
    auto t = read_labels(truth, th, allowed.empty() ? nullptr : &allowed, allowed_from);
    auto p = read_labels(pred, ph, allowed.empty() ? nullptr : &allowed, allowed_from);
    check_geometry(name, pred, ph, truth, th);
    for (auto v : t.data) seen[v] = true;
    for (auto v : p.data) seen[v] = true;
    pairs.push_back({name, std::move(p), std::move(t), {th.pixdim[2], th.pixdim[1], th.pixdim[0]}});
  }
  std::vector<mmnet::metrics::Region> regions;
  if (mode == "brats") {
    regions = mmnet::metrics::nnunet_brats_regions();
  } else if (!labels.empty()) {
    for (auto& [k, v] : labels)
      if (k != 0) regions.push_back({v, {k}});
  } else {
    for (int k = 1; k < 256; ++k)
      if (seen[k]) regions.push_back({std::to_string(k), {k}});
  }
  if (regions.empty()) throw cli_error("--regions labels: no non-zero label to evaluate");
  if (mode == "brats")
    std::printf("regions (nnU-Net BraTS labels): WT = {1,2,3}, TC = {2,3}, ET = {3}\n");
  else {
    std::printf("regions (one per label):");
    for (auto& r : regions) std::printf(" %s = {%lld}", r.name.c_str(), static_cast<long long>(r.labels[0]));
    std::printf("\n");
  }
  std::printf("empty regions: Dice is nan where the truth region is empty and is left out of the means "
              "(MONAI ignore_empty; the BraTS challenge would count 1 when both are empty)\n");
  for (auto& pr : pairs) {
    const mmnet::ops::Dims3 dims{pr.truth.depth, pr.truth.height, pr.truth.width};
    const auto ms = mmnet::metrics::evaluate_regions(pr.pred.data.data(), pr.truth.data.data(), dims, pr.spacing, regions, opt);
    for (std::size_t r = 0; r < regions.size(); ++r) rows.push_back({pr.name, regions[r].name, ms[r]});
  }

  auto csv_field = [](std::string v) {
    for (auto& ch : v)
      if (ch == ',' || ch == '\n') ch = ';';
    return v;
  };
  std::string csv = "case,region,dice,iou,precision,recall,hd_mm,hd95_mm,assd_mm,nsd\n";
  std::printf("%-20s %-14s %8s %8s %9s %8s %8s %8s %8s %8s\n", "case", "region", "dice", "iou", "precision", "recall",
              "hd", "hd95", "assd", "nsd");
  std::map<std::string, std::vector<double>> dice, hd95, assd;
  for (auto& r : rows) {
    const auto& m = r.m;
    std::printf("%-20s %-14s %8s %8s %9s %8s %8s %8s %8s %8s\n", r.name.c_str(), r.region.c_str(), fmt(m.dice).c_str(),
                fmt(m.iou).c_str(), fmt(m.precision).c_str(), fmt(m.recall).c_str(), fmt(m.hd, 2).c_str(),
                fmt(m.hd95, 2).c_str(), fmt(m.assd, 2).c_str(), fmt(m.nsd).c_str());
    csv += r.name + "," + csv_field(r.region) + "," + fmt(m.dice, 6) + "," + fmt(m.iou, 6) + "," + fmt(m.precision, 6) + "," +
           fmt(m.recall, 6) + "," + fmt(m.hd, 6) + "," + fmt(m.hd95, 6) + "," + fmt(m.assd, 6) + "," + fmt(m.nsd, 6) + "\n";
    dice[r.region].push_back(m.dice);
    hd95[r.region].push_back(m.hd95);
    assd[r.region].push_back(m.assd);
  }
  if (!a.csv.empty()) write_text_atomically(a.csv, csv);
  for (auto& r : regions)
    std::printf("mean %s dice: %s  mean %s hd95: %s  mean %s assd: %s\n", r.name.c_str(), fmt(nanmean(dice[r.name])).c_str(),
                r.name.c_str(), fmt(nanmean(hd95[r.name])).c_str(), r.name.c_str(), fmt(nanmean(assd[r.name])).c_str());
  if (mode == "labels" && regions.size() > 1) {  // the mean of the per-label means (each label weighs the same)
    std::vector<double> d, h, s;
    for (auto& r : regions) d.push_back(nanmean(dice[r.name])), h.push_back(nanmean(hd95[r.name])), s.push_back(nanmean(assd[r.name]));
    std::printf("average of the %zu label means: dice %s  hd95 %s  assd %s\n", regions.size(), fmt(nanmean(d)).c_str(),
                fmt(nanmean(h)).c_str(), fmt(nanmean(s)).c_str());
  }
  return 0;
}

}  // namespace mmnet_cli
