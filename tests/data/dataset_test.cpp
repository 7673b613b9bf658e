// Medical Segmentation Decathlon / nnU-Net v1 data sets (data/dataset.hpp): a small phantom data set written,
// opened and loaded back exactly (voxels, labels, spacing, geometry), dataset.json's content, predictions written
// with a case's reference header, an original-MSD 4D case, nibabel reading the files as mmnet does, and every
// error path (missing dataset.json, bad JSON, missing keys, count mismatches, missing modality / label files,
// shape / spacing / affine mismatches between modalities and label, unknown or fractional label values, NaN
// intensities, corrupt .nii.gz) naming the file and the case. Host-only code: the same checks run in every
// backend's executable, each in its own scratch directory.
#include <mmnet/data/dataset.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>

#include "../support/mmnet_test.hpp"

namespace dataset_test {

using namespace mmnet;
using namespace mmnet::data;
using mmnet::test::Backend;
using mmnet::test::read_bytes;
using mmnet::test::write_bytes;
namespace fs = std::filesystem;
using doctest::Contains;

inline std::string scratch(const std::string& name) { return mmnet::test::scratch_dir("dataset", name); }

// Small anisotropic cases (D, H, W) = (6, 20, 18) with spacing (3, 1.2, 0.9) mm: all axes differ.
inline PhantomOptions tiny() { return PhantomOptions().shape({6, 20, 18}).spacing({3.0, 1.2, 0.9}).lesion_radius(3.0, 5.0); }
inline Spacing as_float(const Spacing& s) {
  return {static_cast<double>(static_cast<float>(s[0])), static_cast<double>(static_cast<float>(s[1])),
          static_cast<double>(static_cast<float>(s[2]))};
}
// A fresh data set with 2 training cases (phantom_001, phantom_002) and 1 test case (phantom_101): written once
// per seed (write_nifti fsyncs every file), then copied.
inline std::string fresh(const std::string& name, std::uint64_t seed = 5) {
  static std::map<std::uint64_t, std::string> written;
  auto it = written.find(seed);
  if (it == written.end()) {
    const std::string master = scratch("master_" + std::to_string(seed));
    write_phantom_dataset(master, 2, 1, seed, tiny());
    it = written.emplace(seed, master).first;
  }
  const std::string dir = scratch(name);
  fs::copy(it->second, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return dir;
}
inline nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}
inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}
inline void edit_json(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = read_json(dir + "/dataset.json");
  edit(j);
  write_text(dir + "/dataset.json", j.dump(2));
}
inline std::string image_file(const std::string& dir, const std::string& name, int m, const char* folder = "imagesTr") {
  char buf[16];
  std::snprintf(buf, sizeof buf, "_%04d", m);
  return dir + "/" + folder + "/" + name + buf + ".nii.gz";
}

TEST_CASE("dataset: a phantom data set round-trips exactly") {
  const std::string dir = fresh("roundtrip");
  const Dataset ds = open_dataset(dir);
  CHECK(ds.name == "mmnet_phantom");
  CHECK(ds.tensor_image_size == "4D");
  CHECK(ds.modalities == std::vector<std::string>{"T1", "T2", "CET1"});
  CHECK(ds.labels == std::map<int, std::string>{{0, "background"}, {1, "lesion"}});
  REQUIRE(ds.cases("train").size() == 2);
  REQUIRE(ds.cases("test").size() == 1);
  CHECK(ds.cases("train")[0].name == "phantom_001");
  CHECK(ds.cases("training")[1].name == "phantom_002");
  CHECK(ds.cases("test")[0].name == "phantom_101");
  CHECK(ds.cases("train")[1].images[2] == fs::path(image_file(dir, "phantom_002", 2)).lexically_normal().string());
  CHECK_FALSE(ds.cases("train")[0].four_d);

  struct Want { const char* split; index_t index; int number; };
  for (const Want w : {Want{"train", 0, 1}, Want{"train", 1, 2}, Want{"test", 0, 101}}) {
    INFO(w.split << " case " << w.index);
    const Phantom p = make_phantom(tiny(), derive_seed(5, static_cast<std::uint64_t>(w.number)));
    const LoadedCase c = load_case(ds, w.index, w.split);
    CHECK(c.name == phantom_case_name(w.number));
    CHECK(c.image.shape() == Shape{3, 6, 20, 18});
    CHECK(c.image.spacing == as_float(tiny().spacing()));  // NIfTI-1 stores pixdim as float32
    CHECK(c.image.data == p.image.data);                   // float32 voxels: exact
    REQUIRE(c.label.has_value());
    CHECK(c.label->data == p.label.data);
    CHECK(c.label->spacing == c.image.spacing);
    CHECK(std::count(c.label->data.begin(), c.label->data.end(), 1) > 0);
    CHECK(c.reference.dims == std::vector<std::int64_t>{18, 20, 6});
    CHECK(c.reference.xyzt_units == NIFTI_UNITS_MM);
    const auto a = c.reference.affine(), want = make_reference_header(p.image).affine();
    for (int r = 0; r < 4; ++r)
      for (int k = 0; k < 4; ++k) CHECK(a[r][k] == doctest::Approx(want[r][k]).epsilon(1e-6));
    const LoadedCase by_name = load_case(ds, c.name, w.split);
    CHECK(by_name.image.data == c.image.data);
    CHECK(by_name.label->data == c.label->data);
  }
  // The same seed writes the same files; another seed other images.
  const std::string again_dir = scratch("roundtrip_again");
  write_phantom_dataset(again_dir, 2, 1, 5, tiny());
  const Dataset again = open_dataset(again_dir);
  CHECK(load_case(again, 1).image.data == load_case(ds, 1).image.data);
  const Dataset other = open_dataset(fresh("roundtrip_other", 6));
  CHECK_FALSE(load_case(other, 1).image.data == load_case(ds, 1).image.data);
}

TEST_CASE("dataset: dataset.json follows the MSD / nnU-Net v1 format") {
  const std::string dir = fresh("json");
  const nlohmann::json j = read_json(dir + "/dataset.json");
  for (const char* key : {"name", "description", "reference", "licence", "release", "tensorImageSize", "modality",
                          "labels", "numTraining", "numTest", "training", "test"})
    CHECK_MESSAGE(j.contains(key), key);
  CHECK(j["tensorImageSize"] == "4D");
  CHECK(j["modality"] == nlohmann::json{{"0", "T1"}, {"1", "T2"}, {"2", "CET1"}});
  CHECK(j["labels"] == nlohmann::json{{"0", "background"}, {"1", "lesion"}});
  CHECK(j["numTraining"] == 2);
  CHECK(j["numTest"] == 1);
  CHECK(j["training"][0] == nlohmann::json{{"image", "./imagesTr/phantom_001.nii.gz"}, {"label", "./labelsTr/phantom_001.nii.gz"}});
  CHECK(j["test"] == nlohmann::json::array({"./imagesTs/phantom_101.nii.gz"}));
  for (const char* f : {"imagesTr/phantom_001_0000.nii.gz", "imagesTr/phantom_002_0002.nii.gz", "labelsTr/phantom_002.nii.gz",
                        "imagesTs/phantom_101_0001.nii.gz", "labelsTs/phantom_101.nii.gz"})
    CHECK_MESSAGE(fs::is_regular_file(dir + "/" + f), f);
  CHECK_FALSE(fs::exists(dir + "/imagesTr/phantom_001.nii.gz"));  // nnU-Net v1: only the per-modality files
  const auto img = io::read_nifti_header(dir + "/imagesTr/phantom_001_0000.nii.gz");
  const auto lab = io::read_nifti_header(dir + "/labelsTr/phantom_001.nii.gz");
  CHECK(img.datatype == io::NiftiDType::float32);
  CHECK(lab.datatype == io::NiftiDType::uint8);
  CHECK(img.qform_code == 1);
  CHECK(img.sform_code == 1);
  // Test cases are numbered from the next hundred; zero test cases give an empty list.
  const std::string big = scratch("json_numbering");
  write_phantom_dataset(big, 0, 2, 1, tiny());
  const Dataset b = open_dataset(big);
  CHECK(b.cases("train").empty());
  CHECK(b.cases("test")[1].name == "phantom_102");
}

TEST_CASE("dataset: predictions written with the reference header keep the case's geometry") {
  const std::string dir = fresh("predictions");
  const Dataset ds = open_dataset(dir);
  const LoadedCase c = load_case(ds, 0);
  LabelMap pred(c.image.depth, c.image.height, c.image.width);
  for (std::size_t i = 0; i < pred.data.size(); ++i) pred.data[i] = static_cast<std::uint8_t>(i % 3);
  const std::string out = dir + "/pred_001.nii.gz";
  write_label_map(out, pred, c.reference);
  const auto back = io::read_nifti<float>(out);
  CHECK(back.header.datatype == io::NiftiDType::uint8);
  CHECK(back.header.dims == std::vector<std::int64_t>{18, 20, 6});
  const auto image_header = io::read_nifti_header(ds.cases("train")[0].images[0]);
  CHECK(back.header.affine() == image_header.affine());
  CHECK(back.header.pixdim == image_header.pixdim);
  std::vector<float> want(pred.data.begin(), pred.data.end());
  CHECK(back.data == want);
  // A volume written with write_case reads back through a hand-made data set entry.
  Volume twice = c.image;
  for (auto& v : twice.data) v *= 2;
  write_case(dir, "train", "doubled", twice, *c.label, c.reference);
  edit_json(dir, [](nlohmann::json& j) {
    j["training"].push_back({{"image", "./imagesTr/doubled.nii.gz"}, {"label", "./labelsTr/doubled.nii.gz"}});
    j["numTraining"] = 3;
  });
  const LoadedCase d = load_case(open_dataset(dir), "doubled");
  CHECK(d.image.data == twice.data);
  CHECK(d.label->data == c.label->data);
  // Shape mismatches with the reference are refused before anything is written.
  CHECK_THROWS_WITH_AS(write_label_map(dir + "/bad.nii.gz", LabelMap(6, 20, 17), c.reference), Contains("bad.nii.gz"), shape_error);
  CHECK_THROWS_AS(write_case(dir, "train", "bad", Volume(3, 5, 20, 18), c.reference), shape_error);
  CHECK_THROWS_WITH_AS(write_case(dir, "validation", "bad", c.image, c.reference), Contains("split"), value_error);
  CHECK_FALSE(fs::exists(dir + "/bad.nii.gz"));
}

TEST_CASE("dataset: an original MSD case stored as one 4D file") {
  const std::string dir = fresh("four_d");
  const Dataset ds = open_dataset(dir);
  const LoadedCase c = load_case(ds, 0);
  io::NiftiImage<float> img;
  img.header = c.reference;
  img.header.dims = {18, 20, 6, 3};
  img.data = c.image.data;  // (C, D, H, W) C order is the 4D file's (x, y, z, t) order
  io::write_nifti(dir + "/imagesTr/msd_001.nii.gz", img);
  edit_json(dir, [](nlohmann::json& j) {
    j["training"].push_back({{"image", "./imagesTr/msd_001.nii.gz"}, {"label", "./labelsTr/phantom_001.nii.gz"}});
    j["numTraining"] = 3;
  });
  const Dataset ds4 = open_dataset(dir);
  CHECK(ds4.cases("train")[2].four_d);
  const LoadedCase m = load_case(ds4, "msd_001");
  CHECK(m.image.data == c.image.data);
  CHECK(m.image.spacing == c.image.spacing);
  CHECK(m.label->data == c.label->data);
  CHECK(m.reference.dims == std::vector<std::int64_t>{18, 20, 6});
  // A 4D file with the wrong number of volumes.
  img.header.dims = {18, 20, 3, 6};
  io::write_nifti(dir + "/imagesTr/msd_001.nii.gz", img);
  CHECK_THROWS_WITH_AS(load_case(ds4, "msd_001"), Contains("msd_001.nii.gz"), shape_error);
}

TEST_CASE("dataset: nibabel reads the files as mmnet does") {
  const char* py = std::getenv("MMNET_PYTHON");
  const std::string python = py && *py ? py : "/usr/bin/python3";
  if (std::system(("'" + python + "' -c 'import nibabel' > /dev/null 2>&1").c_str()) != 0) {
    MESSAGE("nibabel not available to " << python << ": cross-check skipped");
    return;
  }
  const std::string dir = fresh("nibabel");
  const std::string script = dir + "/check.py", out = dir + "/nibabel.json";
  write_text(script, R"(import json, sys
import nibabel as nib, numpy as np
res = {}
for f in sys.argv[2:]:
    img = nib.load(f)
    a = np.asarray(img.dataobj)
    res[f] = {"shape": list(img.shape), "zooms": [float(z) for z in img.header.get_zooms()],
              "affine": img.affine.tolist(), "dtype": str(img.get_data_dtype()),
              "sum": float(np.asarray(img.get_fdata(), dtype=np.float64).sum()),
              "first": float(np.transpose(img.get_fdata()).ravel()[7]), "values": sorted(set(np.unique(a).tolist())) if a.dtype == np.uint8 else []}
json.dump(res, open(sys.argv[1], "w"))
)");
  const Dataset ds = open_dataset(dir);
  const LoadedCase c = load_case(ds, 1);
  const auto& dc = ds.cases("train")[1];
  std::string cmd = "'" + python + "' '" + script + "' '" + out + "'";
  for (const auto& f : dc.images) cmd += " '" + f + "'";
  cmd += " '" + *dc.label + "' > '" + dir + "/check.log' 2>&1";
  const int rc = std::system(cmd.c_str());
  REQUIRE_MESSAGE(rc == 0, "nibabel check failed, see " << dir << "/check.log");
  const nlohmann::json j = read_json(out);
  const auto affine = c.reference.affine();
  for (std::size_t m = 0; m <= dc.images.size(); ++m) {
    const bool is_label = m == dc.images.size();
    const std::string f = is_label ? *dc.label : dc.images[m];
    INFO(f);
    const auto& r = j.at(f);
    CHECK(r["shape"] == nlohmann::json::array({18, 20, 6}));  // nibabel: (x, y, z) = (W, H, D)
    CHECK(r["zooms"][0].get<double>() == c.image.spacing[2]);
    CHECK(r["zooms"][1].get<double>() == c.image.spacing[1]);
    CHECK(r["zooms"][2].get<double>() == c.image.spacing[0]);
    for (int row = 0; row < 4; ++row)
      for (int k = 0; k < 4; ++k) CHECK(r["affine"][row][k].get<double>() == affine[row][k]);
    CHECK(r["dtype"] == (is_label ? "uint8" : "float32"));
    double sum = 0;
    float first = 0;
    if (is_label) {
      for (auto v : c.label->data) sum += v;
      first = c.label->data[7];
      CHECK(r["values"] == nlohmann::json::array({0, 1}));
    } else {
      const float* ch = c.image.channel(static_cast<index_t>(m));
      for (index_t i = 0; i < c.image.voxels(); ++i) sum += ch[i];
      first = ch[7];
    }
    CHECK(r["sum"].get<double>() == doctest::Approx(sum).epsilon(1e-9));
    CHECK(r["first"].get<double>() == static_cast<double>(first));  // nibabel's transpose = mmnet's (D, H, W) order
  }
}

TEST_CASE("dataset: a brats_like (multi-class) phantom data set round-trips, unlisted label values are rejected") {
  // 4 modalities, labels 0..3; small 1 mm grid with all axes different.
  const PhantomOptions o = PhantomOptions::brats().shape({20, 26, 22}).lesion_radius(3.0, 5.0);
  const std::string dir = scratch("brats");
  write_phantom_dataset(dir, 2, 1, 11, o);
  const nlohmann::json j = read_json(dir + "/dataset.json");
  CHECK(j["name"] == "mmnet_phantom_brats");
  CHECK(j["modality"] == nlohmann::json{{"0", "T1"}, {"1", "T1ce"}, {"2", "T2"}, {"3", "FLAIR"}});
  CHECK(j["labels"] == nlohmann::json{{"0", "background"}, {"1", "edema"}, {"2", "non-enhancing"}, {"3", "enhancing"}});
  CHECK(j["tensorImageSize"] == "4D");
  for (const char* f : {"imagesTr/phantom_001_0003.nii.gz", "imagesTs/phantom_101_0003.nii.gz", "labelsTs/phantom_101.nii.gz"})
    CHECK_MESSAGE(fs::is_regular_file(dir + "/" + f), f);
  CHECK_FALSE(fs::exists(image_file(dir, "phantom_001", 4)));
  const Dataset ds = open_dataset(dir);
  CHECK(ds.num_modalities() == 4);
  CHECK(ds.labels == std::map<int, std::string>{{0, "background"}, {1, "edema"}, {2, "non-enhancing"}, {3, "enhancing"}});
  struct Want { const char* split; index_t index; int number; };
  for (const Want w : {Want{"train", 0, 1}, Want{"train", 1, 2}, Want{"test", 0, 101}}) {
    INFO(w.split << " case " << w.index);
    const Phantom p = make_phantom(o, derive_seed(11, static_cast<std::uint64_t>(w.number)));
    const LoadedCase c = load_case(ds, w.index, w.split);
    CHECK(c.image.shape() == Shape{4, 20, 26, 22});
    CHECK(c.image.spacing == Spacing{1.0, 1.0, 1.0});
    CHECK(c.image.data == p.image.data);
    REQUIRE(c.label.has_value());
    CHECK(c.label->data == p.label.data);
    for (std::uint8_t v = 1; v <= 3; ++v) CHECK(std::count(c.label->data.begin(), c.label->data.end(), v) > 0);
    const auto hdr = io::read_nifti_header(dir + (w.number > 100 ? "/labelsTs/" : "/labelsTr/") + c.name + ".nii.gz");
    CHECK(hdr.datatype == io::NiftiDType::uint8);
  }
  // A value not listed in dataset.json: the message names the case, the file, the value and the voxel.
  auto rewrite = [&](const std::string& path, const std::function<void(io::NiftiImage<float>&)>& edit) {
    io::NiftiImage<float> img = io::read_nifti<float>(path);
    edit(img);
    io::write_nifti(path, img);
  };
  const std::string lf = dir + "/labelsTr/phantom_002.nii.gz";
  rewrite(lf, [](io::NiftiImage<float>& img) { img.data[7] = 4; });  // BraTS' original enhancing label
  CHECK_THROWS_WITH_AS(load_case(ds, 1), Contains("labelsTr/phantom_002.nii.gz: label value 4 at voxel 7"), value_error);
  CHECK_THROWS_WITH_AS(load_case(ds, 1), Contains("case phantom_002"), value_error);
  CHECK_NOTHROW(load_case(ds, 0));
  // Dropping label 3 from dataset.json makes the enhancing voxels invalid.
  edit_json(dir, [](nlohmann::json& j) { j["labels"].erase("3"); });
  const Dataset fewer = open_dataset(dir);
  CHECK(fewer.labels.size() == 3);
  CHECK_THROWS_WITH_AS(load_case(fewer, 0), Contains("labelsTr/phantom_001.nii.gz: label value 3"), value_error);
  CHECK_THROWS_WITH_AS(load_case(fewer, 0, "test"), Contains("case phantom_101"), value_error);
  // Adding 4 makes the edited case valid again.
  edit_json(dir, [](nlohmann::json& j) { j["labels"]["3"] = "enhancing"; j["labels"]["4"] = "other"; });
  CHECK(load_case(open_dataset(dir), 1).label->data[7] == 4);
}

TEST_CASE("dataset: errors name the file and the case") {
  SUBCASE("missing dataset.json") {
    const std::string dir = scratch("err_missing_json");
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("dataset.json"), io_error);
  }
  SUBCASE("invalid JSON") {
    const std::string dir = fresh("err_bad_json");
    write_text(dir + "/dataset.json", "{\"name\": \"x\", ");
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("dataset.json: not valid JSON"), io_error);
    write_text(dir + "/dataset.json", "[1, 2]");
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("expected a JSON object"), io_error);
  }
  SUBCASE("missing or malformed keys") {
    for (const char* key : {"name", "modality", "labels", "numTraining", "numTest", "training", "test"}) {
      const std::string dir = fresh(std::string("err_key_") + key);
      edit_json(dir, [&](nlohmann::json& j) { j.erase(key); });
      CHECK_THROWS_WITH_AS(open_dataset(dir), Contains((std::string("missing key \"") + key + "\"").c_str()), io_error);
    }
    const std::string dir = fresh("err_keys");
    edit_json(dir, [](nlohmann::json& j) { j["modality"] = nlohmann::json::array({"T1"}); });
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("\"modality\": expected an object"), io_error);
    edit_json(dir, [](nlohmann::json& j) { j["modality"] = {{"0", "T1"}, {"2", "CET1"}}; });
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("entry \"1\""), io_error);
    edit_json(dir, [](nlohmann::json& j) { j["modality"] = {{"0", "T1"}, {"1", "T2"}, {"2", "CET1"}}; j["labels"]["x"] = "odd"; });
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("key \"x\""), io_error);
    edit_json(dir, [](nlohmann::json& j) { j["labels"].erase("x"); j["numTraining"] = 5; });
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("numTraining is 5"), io_error);
    edit_json(dir, [](nlohmann::json& j) { j["numTraining"] = 2; j["numTest"] = "1"; });
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("\"numTest\": expected an integer"), io_error);
    edit_json(dir, [](nlohmann::json& j) { j["numTest"] = 1; j["training"][1].erase("label"); });
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("\"training\"[1]: missing string key \"label\""), io_error);
    edit_json(dir, [](nlohmann::json& j) { j["training"][1] = j["training"][0]; });
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("phantom_001 is listed twice"), io_error);
    edit_json(dir, [](nlohmann::json& j) { j["training"][1] = {{"image", "./imagesTr/p.png"}, {"label", "x"}}; });
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("not a .nii or .nii.gz"), io_error);
  }
  SUBCASE("missing modality or label file") {
    const std::string dir = fresh("err_missing_file");
    fs::remove(image_file(dir, "phantom_002", 1));
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("case phantom_002: missing image file"), io_error);
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("phantom_002_0001.nii.gz"), io_error);
    fs::copy(fresh("err_missing_file2"), dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    fs::remove(dir + "/labelsTr/phantom_001.nii.gz");
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("case phantom_001: missing label file"), io_error);
    fs::copy(fresh("err_missing_file3"), dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    fs::remove(image_file(dir, "phantom_101", 0, "imagesTs"));
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("phantom_101_0000.nii.gz"), io_error);
    // Test labels are optional.
    fs::copy(fresh("err_missing_file4"), dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    fs::remove(dir + "/labelsTs/phantom_101.nii.gz");
    CHECK_FALSE(load_case(open_dataset(dir), 0, "test").label.has_value());
  }
  const std::string dir = fresh("err_case");
  const Dataset ds = open_dataset(dir);
  const LoadedCase c = load_case(ds, 0);
  const std::string f1 = image_file(dir, "phantom_001", 1);
  auto rewrite = [&](const std::string& path, const std::function<void(io::NiftiImage<float>&)>& edit) {
    io::NiftiImage<float> img = io::read_nifti<float>(path);
    edit(img);
    io::write_nifti(path, img);
  };
  auto restore = [&]() { fs::copy(fresh("err_restore"), dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing); };
  SUBCASE("modalities with different shapes") {
    rewrite(f1, [](io::NiftiImage<float>& img) {
      img.header.dims = {18, 20, 5};
      img.data.resize(18 * 20 * 5);
    });
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("case phantom_001: shape (x, y, z) differs"), shape_error);
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("phantom_001_0000.nii.gz has (18, 20, 6)"), shape_error);
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("phantom_001_0001.nii.gz has (18, 20, 5)"), shape_error);
    CHECK_NOTHROW(load_case(ds, 1));
  }
  SUBCASE("modalities with different spacings") {
    rewrite(f1, [](io::NiftiImage<float>& img) { img.header.pixdim[2] = 3.5; });
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("case phantom_001: spacing (dx, dy, dz) differs"), shape_error);
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("has (0.899999976, 1.20000005, 3.5)"), shape_error);
    restore();
    CHECK_NOTHROW(load_case(ds, 0));
  }
  SUBCASE("modalities with different affines") {
    rewrite(f1, [](io::NiftiImage<float>& img) { img.header.srow[0][3] += 2.0; });
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("case phantom_001: affine differs"), shape_error);
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("phantom_001_0001.nii.gz"), shape_error);
    // Differences within numpy.isclose's tolerance are accepted (float32 round-off of other tools).
    restore();
    rewrite(f1, [](io::NiftiImage<float>& img) { img.header.srow[0][0] *= 1.0 + 1e-7; });
    CHECK_NOTHROW(load_case(ds, 0));
  }
  SUBCASE("label with another geometry") {
    rewrite(dir + "/labelsTr/phantom_002.nii.gz", [](io::NiftiImage<float>& img) {
      img.header.dims = {18, 19, 6};
      img.data.resize(18 * 19 * 6);
    });
    CHECK_THROWS_WITH_AS(load_case(ds, 1), Contains("labelsTr/phantom_002.nii.gz has (18, 19, 6)"), shape_error);
  }
  SUBCASE("label values not in dataset.json") {
    const std::string lf = dir + "/labelsTr/phantom_001.nii.gz";
    rewrite(lf, [](io::NiftiImage<float>& img) { img.data[5] = 3; });
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("labelsTr/phantom_001.nii.gz: label value 3 at voxel 5"), value_error);
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("case phantom_001"), value_error);
    io::NiftiImage<float> frac = io::read_nifti<float>(lf);
    frac.data[5] = 0.5f;
    io::write_nifti(lf, frac, io::NiftiDType::float32);
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("label value 0.5"), value_error);
    // Adding the value to dataset.json's labels makes it valid.
    restore();
    rewrite(lf, [](io::NiftiImage<float>& img) { img.data[5] = 3; });
    edit_json(dir, [](nlohmann::json& j) { j["labels"]["3"] = "other"; });
    CHECK(load_case(open_dataset(dir), 0).label->data[5] == 3);
  }
  SUBCASE("NaN or infinite intensities") {
    rewrite(image_file(dir, "phantom_001", 2), [](io::NiftiImage<float>& img) { img.data[11] = std::nanf(""); });
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("phantom_001_0002.nii.gz: intensity nan at voxel 11"), value_error);
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("case phantom_001"), value_error);
    restore();
    rewrite(image_file(dir, "phantom_001", 0), [](io::NiftiImage<float>& img) { img.data[0] = std::numeric_limits<float>::infinity(); });
    CHECK_THROWS_WITH_AS(load_case(ds, 0), Contains("phantom_001_0000.nii.gz: intensity inf"), value_error);
  }
  SUBCASE("corrupt .nii.gz") {
    const std::string f = image_file(dir, "phantom_002", 0);
    const auto size = fs::file_size(f);
    fs::resize_file(f, size / 2);
    CHECK_THROWS_WITH_AS(load_case(ds, 1), Contains("case phantom_002"), io_error);
    CHECK_THROWS_WITH_AS(load_case(ds, 1), Contains("phantom_002_0000.nii.gz"), io_error);
    write_text(f, "not a nifti file at all");
    CHECK_THROWS_WITH_AS(load_case(ds, 1), Contains("phantom_002_0000.nii.gz"), io_error);
    CHECK_NOTHROW(load_case(ds, 0));
  }
  SUBCASE("a failed write_phantom_dataset leaves no dataset.json") {
    fs::remove_all(dir + "/imagesTs");
    write_text(dir + "/imagesTs", "a file where the folder should be");
    CHECK_THROWS_WITH_AS(write_phantom_dataset(dir, 2, 1, 5, tiny()), Contains("imagesTs"), io_error);
    CHECK_FALSE(fs::exists(dir + "/dataset.json"));
    CHECK_THROWS_WITH_AS(open_dataset(dir), Contains("dataset.json"), io_error);
  }
  SUBCASE("bad split, index or name") {
    CHECK_THROWS_WITH_AS(ds.cases("validation"), Contains("split"), value_error);
    CHECK_THROWS_WITH_AS(load_case(ds, 2), Contains("case index"), value_error);
    CHECK_THROWS_WITH_AS(load_case(ds, -1, "test"), Contains("case index"), value_error);
    CHECK_THROWS_WITH_AS(load_case(ds, "phantom_101"), Contains("\"phantom_101\""), value_error);
    CHECK(load_case(ds, "phantom_101", "test").name == "phantom_101");
    CHECK_THROWS_WITH_AS(write_phantom_dataset(dir, -1, 1, 0, tiny()), Contains("train_cases"), value_error);
    CHECK_THROWS_WITH_AS(write_phantom_dataset(dir, 1, 1, 0, tiny().snr(-1)), Contains("snr"), value_error);
  }
}

}  // namespace dataset_test
