// mmnet/data/dataset.hpp: data sets in the Medical Segmentation Decathlon layout as nnU-Net (v1) uses it, read into
// data::Volume / data::LabelMap, and written (predictions, phantom data sets). Python counterparts: nnU-Net v1's
// dataset.json handling and nibabel. See docs/data_layout.md.
//
//   DIR/dataset.json      {"name", "description", "tensorImageSize": "4D", "modality": {"0": "T1", ...},
//                          "labels": {"0": "background", "1": "lesion"}, "numTraining", "numTest",
//                          "training": [{"image": "./imagesTr/CASE.nii.gz", "label": "./labelsTr/CASE.nii.gz"}],
//                          "test": ["./imagesTs/CASE.nii.gz", ...]}
//   DIR/imagesTr/CASE_XXXX.nii.gz   one 3D file per modality, XXXX = modality index (0000, 0001, ...)
//   DIR/labelsTr/CASE.nii.gz        integer labels, same geometry
//   DIR/imagesTs/CASE_XXXX.nii.gz
//   DIR/labelsTs/CASE.nii.gz        optional: an mmnet extension for evaluation (MSD itself has no test labels);
//                                    the phantom data sets always have it.
// As nnU-Net v1, the listed "./imagesTr/CASE.nii.gz" names the case; the files read are CASE_XXXX.nii.gz. An
// original MSD case stored as ONE 4D file (x, y, z, modality) at the listed path is read too when the per-modality
// files are absent.
//
// open_dataset() parses dataset.json and checks it: required keys (name, modality, labels, numTraining, numTest,
// training, test) and their types, numTraining / numTest equal to the list lengths, modality keys 0..M-1, label
// keys integers in [0, 255], and every file of every case exists (io_error naming the file and the case). Paths
// are relative to DIR. load_case() reads one case and checks it: every modality and the label have the same
// shape (exactly) and the same spacing and affine (numpy.isclose: |a - b| <= 1e-8 + 1e-5 |b|, as nnU-Net's
// geometry check), otherwise shape_error listing the case, both files and both values; non-finite intensities
// raise value_error naming the file; label values that are not integers or not keys of "labels" raise
// value_error naming the file and the value; unreadable / corrupt files raise io_error naming the file and case.
//
// Axes: a case's Volume is (C, D, H, W) = (modality, nz, ny, nx), spacing (dz, dy, dx) = (pixdim[3], pixdim[2],
// pixdim[1]) (see io/nifti.hpp). Writing: write_label_map() / write_case() take a reference header (the one
// load_case() returns, or make_reference_header() for data made in memory) and keep its geometry (dims, pixdim,
// qform / sform, units); images are written as float32, labels as uint8, each file atomically (io::write_nifti).
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/nifti.hpp"
#include "phantom.hpp"
#include "volume.hpp"

namespace mmnet::data {

// One case of a split as dataset.json lists it, with the files resolved under the data set's directory.
struct DatasetCase {
  std::string name;                  // case identifier, e.g. "phantom_001"
  std::vector<std::string> images;   // one file per modality (CASE_XXXX.nii.gz), or the single 4D file
  bool four_d = false;               // images holds one 4D file with all modalities
  std::optional<std::string> label;  // labelsTr/CASE.nii.gz (training), labelsTs/CASE.nii.gz if present (test)
};

struct Dataset {
  std::string dir;                           // the directory holding dataset.json
  std::string name, description, tensor_image_size;
  std::vector<std::string> modalities;       // modality names by channel index
  std::map<int, std::string> labels;         // label value -> name
  std::vector<DatasetCase> training, test;

  index_t num_modalities() const { return static_cast<index_t>(modalities.size()); }
  // The cases of a split: "train" (or "training") / "test".
  const std::vector<DatasetCase>& cases(const std::string& split) const {
    if (split == "train" || split == "training") return training;
    if (split == "test") return test;
    fail<value_error>("mmnet::data::Dataset::cases", "split", "\"train\" or \"test\"", "\"" + split + "\"");
  }
  const DatasetCase& find(const std::string& case_name, const std::string& split) const {
    for (const auto& c : cases(split))
      if (c.name == case_name) return c;
    fail<value_error>("mmnet::data::Dataset", "case of split " + split, "one listed in " + dir + "/dataset.json",
                      "\"" + case_name + "\"");
  }
};

// A loaded case.
struct LoadedCase {
  std::string name;
  Volume image;                    // (C, D, H, W) = (modality, nz, ny, nx), spacing (dz, dy, dx)
  std::optional<LabelMap> label;   // when the case has a label file
  io::NiftiHeader reference;       // the first modality's header (3D): write predictions with it
};

namespace detail {

namespace fs = std::filesystem;

[[noreturn]] inline void dataset_fail(const std::string& file, const std::string& problem) {
  throw io_error("mmnet::data::open_dataset: " + file + ": " + problem);
}

inline std::string strip_nifti_ext(const std::string& file) {
  for (const char* ext : {".nii.gz", ".nii"}) {
    const std::string e(ext);
    if (file.size() > e.size() && file.compare(file.size() - e.size(), e.size(), e) == 0) return file.substr(0, file.size() - e.size());
  }
  return {};
}
inline std::string nifti_ext(const std::string& file) {
  const std::string gz(".nii.gz");
  return file.size() > gz.size() && file.compare(file.size() - gz.size(), gz.size(), gz) == 0 ? ".nii.gz" : ".nii";
}
inline std::string modality_suffix(index_t m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "_%04lld", static_cast<long long>(m));
  return buf;
}
inline std::string resolve(const std::string& dir, const std::string& rel) {
  const fs::path p(rel);
  return (p.is_absolute() ? p : (fs::path(dir) / p)).lexically_normal().string();
}

inline const nlohmann::json& json_key(const nlohmann::json& j, const std::string& key, const std::string& file,
                                      nlohmann::json::value_t type, const char* type_name) {
  auto it = j.find(key);
  if (it == j.end()) dataset_fail(file, "missing key \"" + key + "\"");
  const bool ok = it->type() == type || (type == nlohmann::json::value_t::number_integer && it->is_number_integer());
  if (!ok) dataset_fail(file, "key \"" + key + "\": expected " + type_name + ", got " + it->type_name());
  return *it;
}

// The files of the case whose listed image is `listed` (relative to dir).
inline DatasetCase resolve_case(const std::string& dir, const std::string& file, const std::string& listed,
                                const std::optional<std::string>& label_rel, const std::string& labels_folder,
                                index_t modalities) {
  const std::string stem = strip_nifti_ext(listed);
  if (stem.empty()) dataset_fail(file, "image entry \"" + listed + "\" is not a .nii or .nii.gz file");
  DatasetCase c;
  c.name = fs::path(stem).filename().string();
  const std::string ext = nifti_ext(listed);
  std::vector<std::string> per_modality;
  bool all = true;
  for (index_t m = 0; m < modalities; ++m) {
    per_modality.push_back(resolve(dir, stem + modality_suffix(m) + ext));
    all = all && fs::is_regular_file(per_modality.back());
  }
  const std::string whole = resolve(dir, listed);
  if (all) {
    c.images = per_modality;
  } else if (fs::is_regular_file(whole)) {  // an original MSD 4D file
    c.images = {whole};
    c.four_d = true;
  } else {
    for (const auto& f : per_modality)
      if (!fs::is_regular_file(f)) dataset_fail(file, "case " + c.name + ": missing image file " + f);
  }
  if (label_rel) {
    const std::string l = resolve(dir, *label_rel);
    if (!fs::is_regular_file(l)) dataset_fail(file, "case " + c.name + ": missing label file " + l);
    c.label = l;
  } else if (!labels_folder.empty()) {
    const std::string l = resolve(dir, labels_folder + "/" + c.name + ext);
    if (fs::is_regular_file(l)) c.label = l;
  }
  return c;
}

inline bool isclose(double a, double b) { return std::abs(a - b) <= 1e-8 + 1e-5 * std::abs(b); }

inline std::vector<std::int64_t> dims3(const io::NiftiHeader& h) {  // dims without trailing 1s beyond z
  std::vector<std::int64_t> d = h.dims;
  while (d.size() > 3 && d.back() == 1) d.pop_back();
  while (d.size() < 3) d.push_back(1);
  return d;
}
inline std::string dims_str(const std::vector<std::int64_t>& d) {
  std::string s = "(";
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + ")";
}
inline std::string num_str(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}
inline std::string spacing_str(const io::NiftiHeader& h) {
  return "(" + num_str(h.pixdim[0]) + ", " + num_str(h.pixdim[1]) + ", " + num_str(h.pixdim[2]) + ")";
}
inline std::string affine_str(const io::NiftiAffine& a) {
  std::string s = "[";
  for (int r = 0; r < 3; ++r) {
    s += r ? "; " : "";
    for (int c = 0; c < 4; ++c) s += (c ? " " : "") + num_str(a[r][c]);
  }
  return s + "]";
}

// Same spatial geometry (x, y, z dims exactly; spacing and affine nearly) or shape_error naming both files.
inline void check_same_geometry(const std::string& case_name, const std::string& file_a, const io::NiftiHeader& a,
                                const std::string& file_b, const io::NiftiHeader& b, bool spatial_only) {
  const char* who = "mmnet::data::load_case";
  auto da = dims3(a), db = dims3(b);
  if (spatial_only) {
    da.resize(3);
    db.resize(3);
  }
  auto mismatch = [&](const std::string& what, const std::string& va, const std::string& vb) {
    throw shape_error(std::string(who) + ": case " + case_name + ": " + what + " differs: " + file_a + " has " + va +
                      ", " + file_b + " has " + vb);
  };
  if (da != db) mismatch("shape (x, y, z)", dims_str(da), dims_str(db));
  for (int i = 0; i < 3; ++i)
    if (!isclose(b.pixdim[static_cast<std::size_t>(i)], a.pixdim[static_cast<std::size_t>(i)]))
      mismatch("spacing (dx, dy, dz)", spacing_str(a), spacing_str(b));
  io::NiftiAffine aa, ab;
  try {
    aa = a.affine();
    ab = b.affine();
  } catch (const value_error& e) {
    throw io_error(std::string(who) + ": case " + case_name + ": " + e.what());
  }
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c)
      if (!isclose(ab[r][c], aa[r][c])) mismatch("affine", affine_str(aa), affine_str(ab));
}

// Reads a file, adding the case to io / value errors.
inline io::NiftiImage<float> read_case_file(const std::string& case_name, const std::string& path) {
  try {
    return io::read_nifti<float>(path);
  } catch (const io_error& e) {
    throw io_error(std::string("mmnet::data::load_case: case ") + case_name + ": " + e.what());
  } catch (const value_error& e) {
    throw value_error(std::string("mmnet::data::load_case: case ") + case_name + ": " + e.what());
  }
}
inline void check_finite(const std::string& case_name, const std::string& path, const std::vector<float>& v) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw value_error("mmnet::data::load_case: case " + case_name + ": " + path + ": intensity " + num_str(v[i]) +
                        " at voxel " + std::to_string(i) + " (x fastest): expected finite values");
}

inline io::NiftiHeader header_3d(io::NiftiHeader h, index_t d, index_t hh, index_t w) {
  h.dims = {w, hh, d};
  return h;
}

inline void write_json_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw io_error("mmnet::data: " + tmp + ": cannot open for writing");
    f << text;
    f.flush();
    if (!f) throw io_error("mmnet::data: " + tmp + ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw io_error("mmnet::data: " + path + ": cannot rename the temporary file into place");
  }
}

}  // namespace detail

// Parses and checks DIR/dataset.json (see the top of this file).
inline Dataset open_dataset(const std::string& dir) {
  namespace fs = std::filesystem;
  using vt = nlohmann::json::value_t;
  const std::string file = (fs::path(dir) / "dataset.json").string();
  std::ifstream in(file);
  if (!in) detail::dataset_fail(file, "cannot open (no dataset.json in " + dir + ")");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    detail::dataset_fail(file, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) detail::dataset_fail(file, std::string("expected a JSON object, got ") + j.type_name());

  Dataset ds;
  ds.dir = dir;
  ds.name = detail::json_key(j, "name", file, vt::string, "a string").get<std::string>();
  if (auto it = j.find("description"); it != j.end() && it->is_string()) ds.description = it->get<std::string>();
  if (auto it = j.find("tensorImageSize"); it != j.end() && it->is_string()) ds.tensor_image_size = it->get<std::string>();

  const auto& mod = detail::json_key(j, "modality", file, vt::object, "an object");
  if (mod.empty()) detail::dataset_fail(file, "\"modality\" is empty");
  for (std::size_t m = 0; m < mod.size(); ++m) {
    auto it = mod.find(std::to_string(m));
    if (it == mod.end() || !it->is_string())
      detail::dataset_fail(file, "\"modality\": expected string entries \"0\" .. \"" + std::to_string(mod.size() - 1) +
                                     "\", entry \"" + std::to_string(m) + "\" is missing or not a string");
    ds.modalities.push_back(it->get<std::string>());
  }
  const auto& lab = detail::json_key(j, "labels", file, vt::object, "an object");
  if (lab.empty()) detail::dataset_fail(file, "\"labels\" is empty");
  for (auto it = lab.begin(); it != lab.end(); ++it) {
    const std::string& k = it.key();
    const bool digits = !k.empty() && k.size() <= 3 && std::all_of(k.begin(), k.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    if (!digits || std::stoi(k) > 255 || !it->is_string())
      detail::dataset_fail(file, "\"labels\": expected integer keys in [0, 255] with string names, got key \"" + k + "\"");
    ds.labels[std::stoi(k)] = it->get<std::string>();
  }

  const auto& tr = detail::json_key(j, "training", file, vt::array, "an array");
  const auto num_tr = detail::json_key(j, "numTraining", file, vt::number_integer, "an integer").get<long long>();
  if (num_tr != static_cast<long long>(tr.size()))
    detail::dataset_fail(file, "numTraining is " + std::to_string(num_tr) + " but \"training\" lists " + std::to_string(tr.size()) + " cases");
  const auto& ts = detail::json_key(j, "test", file, vt::array, "an array");
  const auto num_ts = detail::json_key(j, "numTest", file, vt::number_integer, "an integer").get<long long>();
  if (num_ts != static_cast<long long>(ts.size()))
    detail::dataset_fail(file, "numTest is " + std::to_string(num_ts) + " but \"test\" lists " + std::to_string(ts.size()) + " cases");

  const index_t M = ds.num_modalities();
  for (std::size_t i = 0; i < tr.size(); ++i) {
    const auto& e = tr[i];
    const std::string where = "\"training\"[" + std::to_string(i) + "]";
    if (!e.is_object()) detail::dataset_fail(file, where + ": expected an object {\"image\", \"label\"}");
    auto im = e.find("image"), lb = e.find("label");
    if (im == e.end() || !im->is_string()) detail::dataset_fail(file, where + ": missing string key \"image\"");
    if (lb == e.end() || !lb->is_string()) detail::dataset_fail(file, where + ": missing string key \"label\"");
    ds.training.push_back(detail::resolve_case(dir, file, im->get<std::string>(), lb->get<std::string>(), "", M));
  }
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const auto& e = ts[i];
    std::string listed;
    if (e.is_string()) listed = e.get<std::string>();
    else if (e.is_object() && e.contains("image") && e["image"].is_string()) listed = e["image"].get<std::string>();
    else detail::dataset_fail(file, "\"test\"[" + std::to_string(i) + "]: expected a path string");
    ds.test.push_back(detail::resolve_case(dir, file, listed, std::nullopt, "labelsTs", M));
  }
  for (const auto* split : {&ds.training, &ds.test})
    for (std::size_t a = 0; a < split->size(); ++a)
      for (std::size_t b = a + 1; b < split->size(); ++b)
        if ((*split)[a].name == (*split)[b].name) detail::dataset_fail(file, "case " + (*split)[a].name + " is listed twice");
  return ds;
}

// Reads and checks one case (see the top of this file).
inline LoadedCase load_case(const Dataset& ds, const DatasetCase& dc) {
  const char* who = "mmnet::data::load_case";
  const index_t M = ds.num_modalities();
  LoadedCase out;
  out.name = dc.name;
  std::vector<io::NiftiImage<float>> imgs;
  for (const auto& f : dc.images) imgs.push_back(detail::read_case_file(dc.name, f));
  const io::NiftiHeader& h0 = imgs[0].header;
  const auto d0 = detail::dims3(h0);
  if (d0.size() > (dc.four_d ? 4u : 3u) || (dc.four_d && M > 1 && (d0.size() != 4 || d0[3] != M)))
    throw shape_error(std::string(who) + ": case " + dc.name + ": " + dc.images[0] + ": dims " + detail::dims_str(h0.dims) +
                      ": expected " + (dc.four_d ? "(x, y, z, " + std::to_string(M) + ") for the 4D file" : std::string("3 dimensions (x, y, z)")));
  for (std::size_t m = 1; m < imgs.size(); ++m)
    detail::check_same_geometry(dc.name, dc.images[0], h0, dc.images[m], imgs[m].header, false);
  const index_t W = d0[0], H = d0[1], D = d0[2];
  out.image = Volume(M, D, H, W, Spacing{h0.pixdim[2], h0.pixdim[1], h0.pixdim[0]});
  const std::size_t vox = static_cast<std::size_t>(D * H * W);
  for (std::size_t f = 0; f < imgs.size(); ++f) {
    detail::check_finite(dc.name, dc.images[f], imgs[f].data);
    std::copy(imgs[f].data.begin(), imgs[f].data.end(), out.image.data.begin() + static_cast<std::ptrdiff_t>(f * vox));
  }
  out.reference = detail::header_3d(h0, D, H, W);
  if (dc.label) {
    const std::string& lf = *dc.label;
    io::NiftiImage<float> l = detail::read_case_file(dc.name, lf);
    detail::check_same_geometry(dc.name, dc.images[0], out.reference, lf, l.header, true);
    if (detail::dims3(l.header).size() != 3)
      throw shape_error(std::string(who) + ": case " + dc.name + ": " + lf + ": dims " + detail::dims_str(l.header.dims) +
                        ": expected 3 dimensions (x, y, z)");
    LabelMap lm(D, H, W, out.image.spacing);
    for (std::size_t i = 0; i < vox; ++i) {
      const float v = l.data[i];
      if (!(v == std::floor(v) && v >= 0 && v <= 255 && ds.labels.count(static_cast<int>(v))))
        throw value_error(std::string(who) + ": case " + dc.name + ": " + lf + ": label value " + detail::num_str(v) +
                          " at voxel " + std::to_string(i) + " (x fastest) is not one of dataset.json's labels");
      lm.data[i] = static_cast<std::uint8_t>(v);
    }
    out.label = std::move(lm);
  }
  return out;
}
inline LoadedCase load_case(const Dataset& ds, const std::string& case_name, const std::string& split = "train") {
  return load_case(ds, ds.find(case_name, split));
}
inline LoadedCase load_case(const Dataset& ds, index_t index, const std::string& split = "train") {
  const auto& cs = ds.cases(split);
  if (index < 0 || index >= static_cast<index_t>(cs.size()))
    fail<value_error>("mmnet::data::load_case", "case index of split " + split,
                      "[0, " + std::to_string(cs.size()) + ")", index);
  return load_case(ds, cs[static_cast<std::size_t>(index)]);
}

// A NIfTI-1 header for a (D, H, W) grid with the given spacing built in memory: mm units, qform and sform
// (code 1, scanner) both diag(dx, dy, dz) with the volume centred on the origin, float32 data.
inline io::NiftiHeader make_reference_header(index_t depth, index_t height, index_t width, const Spacing& spacing) {
  io::NiftiHeader h;
  h.dims = {width, height, depth};
  h.pixdim = {spacing[2], spacing[1], spacing[0], 1, 1, 1, 1};
  h.qform_code = h.sform_code = 1;
  h.qoffset_x = -0.5 * static_cast<double>(width - 1) * spacing[2];
  h.qoffset_y = -0.5 * static_cast<double>(height - 1) * spacing[1];
  h.qoffset_z = -0.5 * static_cast<double>(depth - 1) * spacing[0];
  h.srow = {{{spacing[2], 0, 0, h.qoffset_x}, {0, spacing[1], 0, h.qoffset_y}, {0, 0, spacing[0], h.qoffset_z}}};
  h.xyzt_units = NIFTI_UNITS_MM;
  h.datatype = io::NiftiDType::float32;
  h.descrip = "mmnet";
  return h;
}
inline io::NiftiHeader make_reference_header(const Volume& v) { return make_reference_header(v.depth, v.height, v.width, v.spacing); }

namespace detail {
inline void check_reference_shape(const char* who, const std::string& path, index_t d, index_t h, index_t w,
                                  const io::NiftiHeader& reference) {
  const auto rd = dims3(reference);
  if (rd.size() < 3 || rd[0] != w || rd[1] != h || rd[2] != d)
    fail<shape_error>(who, "shape (x, y, z) of " + path, "the reference header's " + dims_str(reference.dims),
                      dims_str({w, h, d}));
}
}  // namespace detail

// Writes a label map as uint8 with the reference's geometry (its spacing is written, not label.spacing).
inline void write_label_map(const std::string& path, const LabelMap& label, const io::NiftiHeader& reference) {
  detail::check_reference_shape("mmnet::data::write_label_map", path, label.depth, label.height, label.width, reference);
  io::NiftiImage<float> img;
  img.header = detail::header_3d(reference, label.depth, label.height, label.width);
  img.header.datatype = io::NiftiDType::uint8;
  img.header.scl_slope = img.header.scl_inter = 0;
  img.header.cal_min = img.header.cal_max = 0;
  img.header.intent_code = 0;
  img.data.assign(label.data.begin(), label.data.end());
  io::write_nifti(path, img);
}

// Writes channel `channel` of image as float32 with the reference's geometry.
inline void write_volume_channel(const std::string& path, const Volume& image, index_t channel, const io::NiftiHeader& reference) {
  detail::check_reference_shape("mmnet::data::write_volume_channel", path, image.depth, image.height, image.width, reference);
  if (channel < 0 || channel >= image.channels)
    fail<value_error>("mmnet::data::write_volume_channel", "channel", "[0, " + std::to_string(image.channels) + ")", channel);
  io::NiftiImage<float> img;
  img.header = detail::header_3d(reference, image.depth, image.height, image.width);
  img.header.datatype = io::NiftiDType::float32;
  img.header.scl_slope = img.header.scl_inter = 0;
  const float* c = image.channel(channel);
  img.data.assign(c, c + image.voxels());
  io::write_nifti(path, img);
}

namespace detail {
inline void write_case_files(const std::string& dir, const std::string& split, const std::string& case_name,
                             const Volume& image, const LabelMap* label, const io::NiftiHeader& reference) {
  namespace fs = std::filesystem;
  const bool train = split == "train" || split == "training";
  if (!train && split != "test") fail<value_error>("mmnet::data::write_case", "split", "\"train\" or \"test\"", "\"" + split + "\"");
  const fs::path images = fs::path(dir) / (train ? "imagesTr" : "imagesTs");
  const fs::path labels = fs::path(dir) / (train ? "labelsTr" : "labelsTs");
  std::error_code ec;
  fs::create_directories(images, ec);
  if (ec) throw io_error("mmnet::data::write_case: " + images.string() + ": cannot create (" + ec.message() + ")");
  for (index_t m = 0; m < image.channels; ++m)
    write_volume_channel((images / (case_name + modality_suffix(m) + ".nii.gz")).string(), image, m, reference);
  if (label) {
    fs::create_directories(labels, ec);
    if (ec) throw io_error("mmnet::data::write_case: " + labels.string() + ": cannot create (" + ec.message() + ")");
    write_label_map((labels / (case_name + ".nii.gz")).string(), *label, reference);
  }
}
}  // namespace detail

// Writes a case into DIR in the layout above: imagesTr|imagesTs/NAME_XXXX.nii.gz per channel and, with a label,
// labelsTr|labelsTs/NAME.nii.gz (split "train" or "test"), with the reference's geometry. Creates the folders;
// dataset.json is not touched.
inline void write_case(const std::string& dir, const std::string& split, const std::string& case_name, const Volume& image,
                       const LabelMap& label, const io::NiftiHeader& reference) {
  detail::write_case_files(dir, split, case_name, image, &label, reference);
}
inline void write_case(const std::string& dir, const std::string& split, const std::string& case_name, const Volume& image,
                       const io::NiftiHeader& reference) {
  detail::write_case_files(dir, split, case_name, image, nullptr, reference);
}

// The case name of phantom number `number` (1-based): phantom_001, ...
inline std::string phantom_case_name(int number) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "phantom_%03d", number);
  return buf;
}

// Writes a phantom data set: training cases phantom_001 .. phantom_N, test cases numbered from the next hundred
// (phantom_101, ... when N <= 100), case k made by make_phantom(options, derive_seed(seed, k)); imagesTr, labelsTr,
// imagesTs and labelsTs (test labels: an mmnet extension for evaluation). dataset.json's "modality" and "labels"
// are phantom_modalities() / phantom_labels() of the task (brats_like: 4 modalities T1, T1ce, T2, FLAIR and labels
// 0 background, 1 edema, 2 non-enhancing, 3 enhancing; name "mmnet_phantom_brats"; npc_like: 1 modality T1 and
// labels 0 background, 1 tumour; name "mmnet_phantom_npc"). An existing dataset.json is removed
// first and the new one written last, so an interrupted run leaves no dataset.json.
inline void write_phantom_dataset(const std::string& dir, int train_cases, int test_cases, std::uint64_t seed,
                                  const PhantomOptions& options = PhantomOptions()) {
  namespace fs = std::filesystem;
  const char* who = "mmnet::data::write_phantom_dataset";
  if (train_cases < 0) fail<value_error>(who, "train_cases", ">= 0", train_cases);
  if (test_cases < 0) fail<value_error>(who, "test_cases", ">= 0", test_cases);
  detail::check_phantom_options(options);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw io_error(std::string(who) + ": " + dir + ": cannot create (" + ec.message() + ")");
  fs::remove(fs::path(dir) / "dataset.json", ec);

  nlohmann::ordered_json j;
  const bool brats = options.task() == PhantomTask::brats_like, npc = options.task() == PhantomTask::npc_like;
  const bool barriers = options.task() == PhantomTask::barriers;
  j["name"] = brats ? "mmnet_phantom_brats" : npc ? "mmnet_phantom_npc" : barriers ? "mmnet_phantom_barriers" : "mmnet_phantom";
  j["description"] = std::string(brats ? "mmnet synthetic skull-stripped brain-tumour phantoms (task "
                                 : npc ? "mmnet synthetic single-modality nasopharyngeal-carcinoma phantoms (task "
                                 : barriers ? "mmnet synthetic CT / T1c / T2 brain-barrier phantoms (task "
                                       : "mmnet synthetic multi-modal head phantoms (task ") +
                     phantom_task_name(options.task()) + ", seed " + std::to_string(seed) + ")";
  j["reference"] = "mmnet include/mmnet/data/phantom.hpp";
  j["licence"] = "CC0";
  j["release"] = "1.0";
  j["tensorImageSize"] = "4D";
  const auto mods = phantom_modalities(options.task());
  const auto labs = phantom_labels(options.task());
  nlohmann::ordered_json mj = nlohmann::ordered_json::object(), lj = nlohmann::ordered_json::object();
  for (std::size_t m = 0; m < mods.size(); ++m) mj[std::to_string(m)] = mods[m];
  for (std::size_t l = 0; l < labs.size(); ++l) lj[std::to_string(l)] = labs[l];
  j["modality"] = mj;
  j["labels"] = lj;
  j["numTraining"] = train_cases;
  j["numTest"] = test_cases;
  nlohmann::ordered_json tr = nlohmann::ordered_json::array(), ts = nlohmann::ordered_json::array();
  const int test_start = (train_cases / 100 + 1) * 100 + 1;
  for (int k = 0; k < train_cases + test_cases; ++k) {
    const bool train = k < train_cases;
    const int number = train ? k + 1 : test_start + (k - train_cases);
    Phantom p = make_phantom(options, derive_seed(seed, static_cast<std::uint64_t>(number)));
    p.name = phantom_case_name(number);
    const io::NiftiHeader ref = make_reference_header(p.image);
    write_case(dir, train ? "train" : "test", p.name, p.image, p.label, ref);
    if (train)
      tr.push_back({{"image", "./imagesTr/" + p.name + ".nii.gz"}, {"label", "./labelsTr/" + p.name + ".nii.gz"}});
    else
      ts.push_back("./imagesTs/" + p.name + ".nii.gz");
  }
  for (const char* sub : {"imagesTr", "labelsTr", "imagesTs", "labelsTs"}) fs::create_directories(fs::path(dir) / sub, ec);
  j["training"] = tr;
  j["test"] = ts;
  detail::write_json_atomically((fs::path(dir) / "dataset.json").string(), j.dump(4) + "\n");
}

}  // namespace mmnet::data
