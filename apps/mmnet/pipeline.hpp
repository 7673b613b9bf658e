// apps/mmnet/pipeline.hpp: what `mmnet train` and `mmnet segment` share: the run configuration (RUN/config.json),
// the preprocessing of a case (MMFNet: body box of T1 by Otsu on the raw image, per-modality body z-score with
// MMFNet's clips, crop to the box; MAML: nnU-Net's crop to the non-zero box and z-score inside the non-zero
// mask; CSCN: the same after resampling to 1 mm isotropic, trilinear image and nearest label; HMRNet: z-score per
// image and channel over the whole volume, no crop), output-path hygiene
// (no partial outputs on failure) and small file helpers.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <mmnet/data/crop.hpp>
#include <mmnet/data/dataset.hpp>
#include <mmnet/data/normalize.hpp>
#include <mmnet/data/resample.hpp>
#include <mmnet/io/atomic_file.hpp>
#include <mmnet/io/nifti.hpp>

#include "cli_common.hpp"
#include "models.hpp"

namespace mmnet_cli {

namespace fs = std::filesystem;

// ---- RUN/config.json -----------------------------------------------------------------------------------------

// HMRNet: one fine network of the two-stage system as config.json records it (segment needs the window).
struct HMRNetPartConfig {
  std::string name, region;    // part name (TwoStagePlan::abcs()), region whole / sinus_sagittal / sinus_transverse
  int label = 1;
  std::string form = "p";      // p or s
  std::vector<index_t> patch;  // D, H, W: the training patch = the sliding window over a crop
};

// Everything segment needs to rebuild the model and repeat the preprocessing, plus the training settings (so
// that --resume continues with them).
struct RunConfig {
  std::string model = "mmfnet", config = "small";
  std::vector<std::string> modalities;                 // dataset.json's modality names, channel order
  std::vector<std::string> labels;                     // dataset.json's label names by value 0..K-1
  std::vector<index_t> patch{16, 48, 48};              // D, H, W: training patch = sliding-window roi
  // body_zscore (MMFNet), nonzero_zscore (nnU-Net, MAML) or isotropic_nonzero_zscore (CSCN: resample to `spacing`
  // first, trilinear image / nearest label, when a case's spacing differs; then as nonzero_zscore) or zscore
  // (HMRNet: every channel z-scored over the whole volume, no crop)
  std::string normalization = "body_zscore";
  std::array<double, 3> spacing{1.0, 1.0, 1.0};        // isotropic_nonzero_zscore: the target grid (mm, D H W)
  std::vector<std::array<double, 2>> clips;            // per modality, after the body z-score (body_zscore only)
  std::string optimizer = "adam";                      // adam, or sgd (Nesterov, poly LR, clip 12: nnU-Net / MAML)
  std::string loss = "code";                           // MAML: the code or the paper loss weights (spec §3.3)
  double modality_dropout = 0;                         // MAML: probability of dropping modalities per step
  int batch = 2, epochs = 0, iterations = 0;
  int stage1_epochs = 0;                               // HMRNet: epochs of stage 1 (0: epochs)
  double lr = 1e-3, val_fraction = 0.2;
  std::uint64_t seed = 0;
  std::string data;
  std::vector<std::string> train_cases, val_cases;
  // HMRNet: the sinus split (half width of the sagittal slab along W, end of the transverse region along D, the
  // parts' margin), the structure-box margin, and the fine networks.
  std::array<index_t, 3> sinus_split{6, 22, 5};
  index_t box_margin = 10;
  std::vector<HMRNetPartConfig> parts;

  std::string checkpoint_name() const { return model + "-" + config; }

  bool nonzero() const { return normalization == "nonzero_zscore" || normalization == "isotropic_nonzero_zscore"; }
  bool resamples() const { return normalization == "isotropic_nonzero_zscore"; }
  // The grid cases are resampled to before anything else (CSCN), or none.
  std::optional<mmnet::data::Spacing> resample_target() const {
    if (!resamples()) return std::nullopt;
    return mmnet::data::Spacing{spacing[0], spacing[1], spacing[2]};
  }
  mmnet::data::NormalizeOptions normalize_options() const {
    if (nonzero()) return mmnet::data::NormalizeOptions::nnunet_mri();
    if (normalization == "zscore") return mmnet::data::NormalizeOptions(mmnet::data::NormalizeMode::zscore);
    mmnet::data::NormalizeOptions o(mmnet::data::NormalizeMode::body_zscore);
    for (std::size_t c = 0; c < clips.size(); ++c) o.clip(static_cast<index_t>(c), clips[c][0], clips[c][1]);
    return o;
  }
  // Image value outside a volume (sampler padding, rotation fill, sliding-window padding): the lower clip
  // (MMFNet), 0 (nnU-Net: the value outside the non-zero mask).
  std::vector<float> pad_values() const {
    std::vector<float> v;
    if (nonzero() || normalization == "zscore") return std::vector<float>(modalities.size(), 0.0f);
    for (auto& c : clips) v.push_back(static_cast<float>(c[0]));
    return v;
  }

  nlohmann::ordered_json to_json() const {
    nlohmann::ordered_json j;
    j["model"] = model;
    j["config"] = config;
    j["modalities"] = modalities;
    j["labels"] = labels;
    j["patch"] = patch;
    if (resamples())
      j["normalization"] = {{"mode", "isotropic_nonzero_zscore"},
                            {"spacing", spacing},
                            {"resample", "to spacing when a case's differs: trilinear image, nearest label (align "
                                         "corners, mmnet/data/resample.hpp); predictions go back by nearest"},
                            {"mask", "voxels where any modality is non-zero; outside set to 0"},
                            {"clips", clips},
                            {"crop", "bounding box of the non-zero mask, then crop"}};
    else if (normalization == "zscore")
      j["normalization"] = {{"mode", "zscore"},
                            {"scope", "per image and channel, mean / std of all voxels (HMRNet spec §4 [R])"},
                            {"clips", clips},
                            {"crop", "none (the sinus split and the boxes refer to the whole volume)"}};
    else if (nonzero())
      j["normalization"] = {{"mode", "nonzero_zscore"},
                            {"mask", "voxels where any modality is non-zero; outside set to 0"},
                            {"clips", clips},
                            {"crop", "bounding box of the non-zero mask, then crop"}};
    else
      j["normalization"] = {{"mode", "body_zscore"},
                            {"otsu", "per modality, voxels above the volume's Otsu threshold (256 bins)"},
                            {"clips", clips},
                            {"crop", "body box of channel 0 (Otsu mask of the raw image), then crop"}};
    if (labels.size() <= 2) j["threshold"] = 0.5;
    else j["discretize"] = "argmax";
    j["optimizer"] = optimizer;
    j["loss"] = loss;
    j["modality_dropout"] = modality_dropout;
    j["batch"] = batch;
    j["epochs"] = epochs;
    j["iterations"] = iterations;
    j["lr"] = lr;
    j["val_fraction"] = val_fraction;
    j["seed"] = seed;
    j["data"] = data;
    j["train_cases"] = train_cases;
    j["val_cases"] = val_cases;
    if (model == "hmrnet") {
      nlohmann::ordered_json h;
      h["stage1_epochs"] = stage1_epochs;
      h["box_margin"] = box_margin;
      h["sinus_split"] = {{"half_width", sinus_split[0]}, {"transverse_end", sinus_split[1]}, {"margin", sinus_split[2]}};
      h["parts"] = nlohmann::ordered_json::array();
      for (const auto& p : parts)
        h["parts"].push_back({{"name", p.name}, {"label", p.label}, {"form", p.form}, {"region", p.region}, {"patch", p.patch}});
      j["hmrnet"] = h;
    }
    return j;
  }

  static RunConfig read(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw cli_error(path + ": cannot read (no such file; a run directory written by `mmnet train` has it)");
    RunConfig r;
    try {
      const nlohmann::json j = nlohmann::json::parse(in);
      r.model = j.at("model").get<std::string>();
      r.config = j.at("config").get<std::string>();
      r.modalities = j.at("modalities").get<std::vector<std::string>>();
      r.patch = j.at("patch").get<std::vector<index_t>>();
      r.normalization = j.at("normalization").value("mode", std::string("body_zscore"));
      r.clips = j.at("normalization").at("clips").get<std::vector<std::array<double, 2>>>();
      if (r.resamples()) r.spacing = j.at("normalization").at("spacing").get<std::array<double, 3>>();
      // Keys added with MAML; a run written before has the MMFNet values.
      r.labels = j.value("labels", std::vector<std::string>{"background", "foreground"});
      r.optimizer = j.value("optimizer", std::string("adam"));
      r.loss = j.value("loss", std::string("code"));
      r.modality_dropout = j.value("modality_dropout", 0.0);
      r.batch = j.at("batch").get<int>();
      r.epochs = j.at("epochs").get<int>();
      r.iterations = j.at("iterations").get<int>();
      r.lr = j.at("lr").get<double>();
      r.val_fraction = j.at("val_fraction").get<double>();
      r.seed = j.at("seed").get<std::uint64_t>();
      r.data = j.at("data").get<std::string>();
      r.train_cases = j.at("train_cases").get<std::vector<std::string>>();
      r.val_cases = j.at("val_cases").get<std::vector<std::string>>();
      if (j.contains("hmrnet")) {
        const auto& h = j.at("hmrnet");
        r.stage1_epochs = h.value("stage1_epochs", 0);
        r.box_margin = h.at("box_margin").get<index_t>();
        const auto& ss = h.at("sinus_split");
        r.sinus_split = {ss.at("half_width").get<index_t>(), ss.at("transverse_end").get<index_t>(), ss.at("margin").get<index_t>()};
        for (const auto& p : h.at("parts"))
          r.parts.push_back({p.at("name").get<std::string>(), p.at("region").get<std::string>(), p.at("label").get<int>(),
                             p.at("form").get<std::string>(), p.at("patch").get<std::vector<index_t>>()});
      }
    } catch (const nlohmann::json::exception& e) {
      throw cli_error(path + ": not a valid mmnet run configuration (" + e.what() + ")");
    }
    if (r.patch.size() != 3) throw cli_error(path + ": 'patch' must hold 3 sizes");
    for (auto p : r.patch)
      if (p < 1) throw cli_error(path + ": 'patch' sizes must be >= 1");
    if (r.normalization != "body_zscore" && r.normalization != "nonzero_zscore" &&
        r.normalization != "isotropic_nonzero_zscore" && r.normalization != "zscore")
      throw cli_error(path + ": unknown normalization mode '" + r.normalization + "'");
    for (double v : r.spacing)
      if (!(v > 0) || !std::isfinite(v)) throw cli_error(path + ": normalization 'spacing' must be > 0");
    if (r.optimizer != "adam" && r.optimizer != "sgd") throw cli_error(path + ": unknown optimizer '" + r.optimizer + "'");
    if (r.loss != "code" && r.loss != "paper") throw cli_error(path + ": unknown loss '" + r.loss + "'");
    if (r.labels.size() < 2) throw cli_error(path + ": 'labels' must name at least 2 labels");
    if (r.normalization == "body_zscore" && r.clips.size() != r.modalities.size())
      throw cli_error(path + ": " + std::to_string(r.clips.size()) + " clip ranges for " +
                      std::to_string(r.modalities.size()) + " modalities");
    return r;
  }
};

// ---- files ---------------------------------------------------------------------------------------------------

// Writes text to path atomically (mmnet/io/atomic_file.hpp: never a half-written file).
inline void write_text_atomically(const std::string& path, const std::string& text) {
  mmnet::io::write_file_atomically(path, text, [&](const std::string& problem) { throw cli_error(path + ": " + problem); });
}

// Output hygiene: the files (and a directory) a command created; on failure (destructor without commit())
// they are removed, so a failed command leaves nothing it made behind.
class OutputGuard {
 public:
  // Creates dir if missing (remembered for removal); an existing non-directory is an error.
  void make_dir(const std::string& dir) {
    std::error_code ec;
    if (fs::exists(dir, ec)) {
      if (!fs::is_directory(dir, ec)) throw cli_error(dir + ": exists and is not a directory");
      return;
    }
    fs::create_directories(dir, ec);
    if (ec) throw cli_error(dir + ": cannot create (" + ec.message() + ")");
    if (created_dir_.empty()) created_dir_ = dir;
  }
  void add(const std::string& file) { files_.push_back(file); }
  void commit() { committed_ = true; }
  bool created(const std::string& dir) const { return !created_dir_.empty() && created_dir_ == dir; }
  ~OutputGuard() {
    if (committed_) return;
    std::error_code ec;
    for (auto& f : files_) fs::remove(f, ec);
    if (!created_dir_.empty()) fs::remove_all(created_dir_, ec);
  }

 private:
  std::vector<std::string> files_;
  std::string created_dir_;
  bool committed_ = false;
};

inline std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// ---- preprocessing ---------------------------------------------------------------------------------------------

// A case ready for the network: the normalised image cropped to the body box, its label on the same grid, and
// what undoing the crop and writing a prediction need.
struct PreparedCase {
  std::string name;
  mmnet::data::Volume image;                    // C x d x h x w, normalised, cropped
  std::optional<mmnet::data::LabelMap> label;   // cropped, 0/1
  mmnet::data::Box box;                         // in the (resampled) grid
  index_t depth = 0, height = 0, width = 0;     // the original grid (the case's files)
  mmnet::data::Spacing spacing{1.0, 1.0, 1.0};  // and its spacing
  bool resampled = false;                       // image/label were resampled to the run's spacing first
  index_t grid_depth = 0, grid_height = 0, grid_width = 0;  // the grid `box` refers to (= the original unless resampled)
  mmnet::io::NiftiHeader reference;
  mmnet::data::Volume full_image;               // the normalised uncropped image (only with keep_full: PNGs)
};

// Checks a data set against a run's model: the modality count and the label set (0, 1 for a binary model;
// exactly 0..classes-1 for a multi-class one).
inline void check_dataset_fits(const mmnet::data::Dataset& ds, index_t modalities, index_t classes, const std::string& what) {
  const std::string json = join_path(ds.dir, "dataset.json");
  if (ds.num_modalities() != modalities)
    throw cli_error(json + ": " + std::to_string(ds.num_modalities()) + " modalities; " + what + " expects " +
                    std::to_string(modalities));
  if (classes == 2) {
    if (ds.labels.size() != 2 || !ds.labels.count(0) || !ds.labels.count(1))
      throw cli_error(json + ": labels must be exactly 0 (background) and 1 (the structure to segment); got " +
                      std::to_string(ds.labels.size()) + " labels");
    return;
  }
  bool contiguous = static_cast<index_t>(ds.labels.size()) == classes;
  for (index_t k = 0; contiguous && k < classes; ++k) contiguous = ds.labels.count(static_cast<int>(k)) == 1;
  if (!contiguous)
    throw cli_error(json + ": labels must be exactly 0.." + std::to_string(classes - 1) + " (" + what + " has " +
                    std::to_string(classes) + " classes); got " + std::to_string(ds.labels.size()) + " labels");
}

// The label names of a data set by value (0..n-1, as check_dataset_fits requires).
inline std::vector<std::string> label_names(const mmnet::data::Dataset& ds) {
  std::vector<std::string> n;
  for (auto& [v, name] : ds.labels) n.push_back(name);
  return n;
}

// The run's preprocessing. body_zscore (MMFNet, spec §4): body box from the Otsu mask of channel 0 on the raw
// image (the whole volume when that is empty), per-modality body z-score with the clips, then the crop.
// nonzero_zscore (nnU-Net, MAML spec §4.2): the bounding box of the voxels where any modality is non-zero,
// z-score inside that mask (0 outside), then the crop. zscore without the mask (HMRNet): the whole volume, no crop. isotropic_nonzero_zscore (CSCN spec §4.1): resample_to set,
// the image (trilinear) and label (nearest) are first resampled to it when their spacing differs.
inline PreparedCase prepare_case(mmnet::data::LoadedCase lc, const mmnet::data::NormalizeOptions& norm,
                                 bool keep_full = false,
                                 const std::optional<mmnet::data::Spacing>& resample_to = std::nullopt) {
  PreparedCase p;
  p.name = lc.name;
  p.depth = lc.image.depth;
  p.height = lc.image.height;
  p.width = lc.image.width;
  p.reference = lc.reference;
  p.spacing = lc.image.spacing;
  if (resample_to && !mmnet::data::same_spacing(lc.image.spacing, *resample_to)) {
    lc.image = mmnet::data::resample(lc.image, *resample_to);
    if (lc.label) lc.label = mmnet::data::resample(*lc.label, *resample_to);
    p.resampled = true;
  }
  p.grid_depth = lc.image.depth;
  p.grid_height = lc.image.height;
  p.grid_width = lc.image.width;
  if (norm.mode() == mmnet::data::NormalizeMode::zscore && !norm.use_nonzero_mask())
    p.box = mmnet::data::Box::full(p.grid_depth, p.grid_height, p.grid_width);
  else
    p.box = norm.use_nonzero_mask() ? mmnet::data::nonzero_box(lc.image) : mmnet::data::body_box(lc.image, 0);
  if (p.box.empty()) p.box = mmnet::data::Box::full(p.grid_depth, p.grid_height, p.grid_width);
  mmnet::data::normalize(lc.image, norm, lc.name);
  p.image = mmnet::data::crop(lc.image, p.box);
  if (lc.label) p.label = mmnet::data::crop(*lc.label, p.box);
  if (keep_full) p.full_image = std::move(lc.image);
  return p;
}

// A label map on a prepared case's (cropped, maybe resampled) grid back onto the grid of the case's files: uncrop,
// then nearest-neighbour resampling when the case was resampled.
inline mmnet::data::LabelMap to_original_grid(const mmnet::data::LabelMap& cropped, const PreparedCase& c) {
  mmnet::data::LabelMap full = mmnet::data::uncrop(cropped, c.box, c.grid_depth, c.grid_height, c.grid_width);
  if (!c.resampled) return full;
  return mmnet::data::resample_to_shape(full, {c.depth, c.height, c.width}, c.spacing);
}

// Keeps only the channels of `present` (ascending indices), in that order: the input of a run with missing
// modalities (the others are never normalised or passed to the network).
inline void select_channels(mmnet::data::LoadedCase& lc, const std::vector<index_t>& present) {
  const mmnet::data::Volume& v = lc.image;
  if (static_cast<index_t>(present.size()) == v.channels) return;
  mmnet::data::Volume out(static_cast<index_t>(present.size()), v.depth, v.height, v.width, v.spacing);
  const std::size_t n = static_cast<std::size_t>(v.depth * v.height * v.width);
  for (std::size_t i = 0; i < present.size(); ++i)
    std::copy_n(v.data.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(present[i]) * n), n,
                out.data.begin() + static_cast<std::ptrdiff_t>(i * n));
  lc.image = std::move(out);
}

inline std::string fmt(double v, int digits = 4) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace mmnet_cli
