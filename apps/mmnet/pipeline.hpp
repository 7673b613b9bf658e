// apps/mmnet/pipeline.hpp: what `mmnet train` and `mmnet segment` share: the run configuration (RUN/config.json),
// the preprocessing of a case (body box of T1 by Otsu on the raw image, per-modality body z-score with MMFNet's
// clips, crop to the box), output-path hygiene (no partial outputs on failure) and small file helpers.
#pragma once
#include <nlohmann/json.hpp>

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
#include <mmnet/io/nifti.hpp>

#include "cli_common.hpp"

namespace mmnet_cli {

namespace fs = std::filesystem;

// ---- RUN/config.json -----------------------------------------------------------------------------------------

// Everything segment needs to rebuild the model and repeat the preprocessing, plus the training settings (so
// that --resume continues with them).
struct RunConfig {
  std::string model = "mmfnet", config = "small";
  std::vector<std::string> modalities;                 // dataset.json's modality names, channel order
  std::vector<index_t> patch{16, 48, 48};              // D, H, W: training patch = sliding-window roi
  std::vector<std::array<double, 2>> clips;            // per modality, after the body z-score
  int batch = 2, epochs = 0, iterations = 0;
  double lr = 1e-3, val_fraction = 0.2;
  std::uint64_t seed = 0;
  std::string data;
  std::vector<std::string> train_cases, val_cases;

  std::string checkpoint_name() const { return model + "-" + config; }

  mmnet::data::NormalizeOptions normalize_options() const {
    mmnet::data::NormalizeOptions o(mmnet::data::NormalizeMode::body_zscore);
    for (std::size_t c = 0; c < clips.size(); ++c) o.clip(static_cast<index_t>(c), clips[c][0], clips[c][1]);
    return o;
  }
  // Image value outside a volume (sampler padding, rotation fill, sliding-window padding): the lower clip.
  std::vector<float> pad_values() const {
    std::vector<float> v;
    for (auto& c : clips) v.push_back(static_cast<float>(c[0]));
    return v;
  }

  nlohmann::ordered_json to_json() const {
    nlohmann::ordered_json j;
    j["model"] = model;
    j["config"] = config;
    j["modalities"] = modalities;
    j["patch"] = patch;
    j["normalization"] = {{"mode", "body_zscore"},
                          {"otsu", "per modality, voxels above the volume's Otsu threshold (256 bins)"},
                          {"clips", clips},
                          {"crop", "body box of channel 0 (Otsu mask of the raw image), then crop"}};
    j["threshold"] = 0.5;
    j["batch"] = batch;
    j["epochs"] = epochs;
    j["iterations"] = iterations;
    j["lr"] = lr;
    j["val_fraction"] = val_fraction;
    j["seed"] = seed;
    j["data"] = data;
    j["train_cases"] = train_cases;
    j["val_cases"] = val_cases;
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
      r.clips = j.at("normalization").at("clips").get<std::vector<std::array<double, 2>>>();
      r.batch = j.at("batch").get<int>();
      r.epochs = j.at("epochs").get<int>();
      r.iterations = j.at("iterations").get<int>();
      r.lr = j.at("lr").get<double>();
      r.val_fraction = j.at("val_fraction").get<double>();
      r.seed = j.at("seed").get<std::uint64_t>();
      r.data = j.at("data").get<std::string>();
      r.train_cases = j.at("train_cases").get<std::vector<std::string>>();
      r.val_cases = j.at("val_cases").get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception& e) {
      throw cli_error(path + ": not a valid mmnet run configuration (" + e.what() + ")");
    }
    if (r.patch.size() != 3) throw cli_error(path + ": 'patch' must hold 3 sizes");
    for (auto p : r.patch)
      if (p < 1) throw cli_error(path + ": 'patch' sizes must be >= 1");
    if (r.clips.size() != r.modalities.size())
      throw cli_error(path + ": " + std::to_string(r.clips.size()) + " clip ranges for " +
                      std::to_string(r.modalities.size()) + " modalities");
    return r;
  }
};

// ---- files ---------------------------------------------------------------------------------------------------

// Writes text to path through a temporary file and a rename (never a half-written file).
inline void write_text_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw cli_error(path + ": cannot write");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw cli_error(path + ": cannot write (" + ec.message() + ")");
  }
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
  mmnet::data::Box box;                         // in the original grid
  index_t depth = 0, height = 0, width = 0;     // the original grid
  mmnet::io::NiftiHeader reference;
  mmnet::data::Volume full_image;               // the normalised uncropped image (only with keep_full: PNGs)
};

// Checks a data set against a run's model: the modality count and a binary label set.
inline void check_dataset_fits(const mmnet::data::Dataset& ds, index_t modalities, const std::string& what) {
  const std::string json = join_path(ds.dir, "dataset.json");
  if (ds.num_modalities() != modalities)
    throw cli_error(json + ": " + std::to_string(ds.num_modalities()) + " modalities; " + what + " expects " +
                    std::to_string(modalities));
  if (ds.labels.size() != 2 || !ds.labels.count(0) || !ds.labels.count(1))
    throw cli_error(json + ": labels must be exactly 0 (background) and 1 (the structure to segment); got " +
                    std::to_string(ds.labels.size()) + " labels");
}

// MMFNet's preprocessing (spec §4): body box from the Otsu mask of channel 0 on the raw image (the whole volume
// when that is empty), per-modality body z-score with the clips, then the crop.
inline PreparedCase prepare_case(mmnet::data::LoadedCase lc, const mmnet::data::NormalizeOptions& norm,
                                 bool keep_full = false) {
  PreparedCase p;
  p.name = lc.name;
  p.depth = lc.image.depth;
  p.height = lc.image.height;
  p.width = lc.image.width;
  p.reference = lc.reference;
  p.box = mmnet::data::body_box(lc.image, 0);
  if (p.box.empty()) p.box = mmnet::data::Box::full(p.depth, p.height, p.width);
  mmnet::data::normalize(lc.image, norm, lc.name);
  p.image = mmnet::data::crop(lc.image, p.box);
  if (lc.label) p.label = mmnet::data::crop(*lc.label, p.box);
  if (keep_full) p.full_image = std::move(lc.image);
  return p;
}

inline std::string fmt(double v, int digits = 4) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace mmnet_cli
