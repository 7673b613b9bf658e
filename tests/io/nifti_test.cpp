// NIfTI-1/2 files against nibabel (tests/reference/nifti_ref.py). nibabel -> mmnet: every fixture file (.nii and
// .nii.gz, NIfTI-1 and -2, uint8 / int16 / int32 / float32 / float64, scaled and unscaled, big-endian with an
// extension, 4D) is read with nibabel's get_fdata() values, affine and header fields, and its Tensor view has the
// documented (..., z, y, x) axis order. mmnet -> nibabel: mmnet rewrites each fixture (as it is, and with the other
// NIfTI version and compression) and writes images made from tensors (every data type), a data::Volume and a
// data::LabelMap; nibabel must read each exactly as mmnet does (nifti_ref.py check). Damaged, truncated, foreign and
// missing files raise io_error naming the file; bad images raise value_error; failed writes leave the destination
// untouched; byte changes and cuts anywhere never crash or give wrong .nii.gz data.
#include <mmnet/io/hdf5.hpp>
#include <mmnet/io/nifti.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <type_traits>

#include "../support/mmnet_test.hpp"

namespace nifti_test {

using namespace mmnet;
using mmnet::io::NiftiDType;
using mmnet::io::NiftiHeader;
using mmnet::io::NiftiImage;
using mmnet::test::Backend;
using mmnet::test::files_in;
using mmnet::test::read_bytes;
using mmnet::test::write_bytes;
using mmnet::test::check_throws_naming;
namespace fs = std::filesystem;

// ---- files ---------------------------------------------------------------------------------------------------
inline std::string scratch(const std::string& name) { return mmnet::test::scratch_dir("nifti", name); }
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
inline std::string fixture_file(const std::string& name) { return mmnet::test::fixture_dir() + "/nifti/" + name; }

// Runs f, which must throw E; checks that the message contains every part.
template <class E = io_error>
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts, const std::string& what) {
  INFO(what);
  try {
    f();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (auto& p : parts) CHECK_MESSAGE(contains(msg, p), "'" << p << "' missing from: " << msg);
    return;
  } catch (const std::exception& e) {
    FAIL_CHECK("wrong exception type: " << e.what());
    return;
  }
  FAIL_CHECK("no exception");
}

// ---- header fields in nifti_ref.py's FIELDS order ---------------------------------------------------------------
inline std::vector<double> fields(const NiftiHeader& h) {
  std::vector<double> v = {double(h.version), double(static_cast<int>(h.datatype)), double(h.qform_code),
                           double(h.sform_code), h.quatern_b, h.quatern_c, h.quatern_d, h.qoffset_x, h.qoffset_y,
                           h.qoffset_z};
  for (auto& row : h.srow) v.insert(v.end(), row.begin(), row.end());
  const std::vector<double> rest = {h.scl_slope, h.scl_inter, double(h.xyzt_units), double(h.intent_code),
                                    h.intent_p1, h.intent_p2, h.intent_p3, h.cal_min, h.cal_max,
                                    double(h.slice_code), double(h.slice_start), double(h.slice_end),
                                    h.slice_duration, h.toffset, double(h.dim_info), h.qfac};
  v.insert(v.end(), rest.begin(), rest.end());
  return v;
}
inline bool same(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }
inline bool same(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same(a[i], b[i])) return false;
  return true;
}
inline std::string text(const HostArray& a) {
  std::string s;
  for (double c : a.data) s += static_cast<char>(static_cast<int>(c));
  return s;
}
inline HostArray codes(const std::string& s) {
  HostArray a{DType::i64, {static_cast<index_t>(s.size())}, {}};
  for (unsigned char c : s) a.data.push_back(c);
  return a;
}
inline std::vector<double> flat(const io::NiftiAffine& a) {
  std::vector<double> v;
  for (auto& r : a) v.insert(v.end(), r.begin(), r.end());
  return v;
}
inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
// A header field stored in a NIfTI-1 float32 slot reads back rounded to float.
inline double as_stored(double v, int version) { return version == 1 ? double(float(v)) : v; }
inline NiftiHeader stored(NiftiHeader h) {
  const int v = h.version;
  for (double* p : {&h.quatern_b, &h.quatern_c, &h.quatern_d, &h.qoffset_x, &h.qoffset_y, &h.qoffset_z, &h.scl_slope,
                    &h.scl_inter, &h.intent_p1, &h.intent_p2, &h.intent_p3, &h.cal_min, &h.cal_max,
                    &h.slice_duration, &h.toffset})
    *p = as_stored(*p, v);
  for (auto& row : h.srow)
    for (auto& x : row) x = as_stored(x, v);
  for (auto& x : h.pixdim) x = as_stored(x, v);
  return h;
}

// ---- nibabel -> mmnet ----------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("nifti: nibabel-written files read with nibabel's values, affine and header fields", T, float,
                   double) {
  mmnet::test::Fixture fx("nifti");
  const auto names = mmnet::test::case_names(fx, "data");
  REQUIRE(names.size() == 12);
  std::map<std::string, int> seen;
  for (const auto& name : names) {
    const std::string file = text(fx.array(name + "/file"));
    const std::string path = fixture_file(file);
    INFO(name << " (" << file << ")");
    const NiftiImage<T> img = io::read_nifti<T>(path);
    const NiftiHeader& h = img.header;
    ++seen[contains(file, ".gz") ? "gz" : "nii"];
    ++seen["v" + std::to_string(h.version)];

    // Header fields, exactly as stored.
    const HostArray& dims = fx.array(name + "/dims");
    REQUIRE(h.dims.size() == dims.data.size());
    for (std::size_t i = 0; i < h.dims.size(); ++i) CHECK(double(h.dims[i]) == dims.data[i]);
    const HostArray& pixdim = fx.array(name + "/pixdim");
    for (int i = 0; i < 7; ++i) CHECK(h.pixdim[i] == pixdim.data[i + 1]);
    const auto want = fx.array(name + "/fields").data;
    const auto got = fields(h);
    for (std::size_t i = 0; i < want.size(); ++i)
      CHECK_MESSAGE(same(got[i], want[i]), "field " << i << ": " << got[i] << " vs " << want[i]);
    CHECK(h.descrip == text(fx.array(name + "/descrip")));
    CHECK(h.intent_name == text(fx.array(name + "/intent_name")));
    CHECK(h.aux_file == text(fx.array(name + "/aux_file")));
    CHECK(h.spacing()[0] == h.pixdim[0]);
    CHECK(h.big_endian == (name == "big_endian_ext"));
    // The header alone gives the same fields.
    const NiftiHeader h_only = io::read_nifti_header(path);
    CHECK(same(fields(h_only), got));
    CHECK(h_only.dims == h.dims);

    // Affine: exact for sform and the fallback; the qform to rounding (nibabel's numpy operation order).
    const auto aff = flat(img.affine());
    const auto want_aff = fx.array(name + "/affine").data;
    if (h.sform_code != 0 || h.qform_code == 0) {
      CHECK(same(aff, want_aff));
    } else {
      CHECK(max_abs_diff(aff, want_aff) <= 1e-12);
      ++seen["qform"];
    }
    if (h.sform_code != 0) ++seen["sform"];
    if (h.sform_code == 0 && h.qform_code == 0) ++seen["fallback"];
    if (h.has_scaling() && !(h.scl_slope == 1 && h.scl_inter == 0)) ++seen["scaled"];

    // Data: get_fdata() in (x, y, z, t) C order against mmnet's file order (x fastest).
    const HostArray& data = fx.array(name + "/data");
    REQUIRE(static_cast<index_t>(img.data.size()) == data.numel());
    const std::int64_t nx = h.dims[0], ny = h.dims[1], nz = h.dims[2], nt = h.dims.size() > 3 ? h.dims[3] : 1;
    const auto tensor = io::to_tensor<T, Backend>(img).to_vector();
    REQUIRE(tensor.size() == img.data.size());
    std::vector<index_t> want_shape(h.dims.rbegin(), h.dims.rend());
    CHECK(io::to_tensor<T, Backend>(img).shape() == Shape(want_shape));
    std::size_t bad = 0;
    for (std::int64_t t = 0; t < nt; ++t)
      for (std::int64_t k = 0; k < nz; ++k)
        for (std::int64_t j = 0; j < ny; ++j)
          for (std::int64_t i = 0; i < nx; ++i) {
            const double w =
                data.data[static_cast<std::size_t>(((i * ny + j) * nz + k) * nt + t)];         // nibabel [i,j,k,t]
            const std::size_t f = static_cast<std::size_t>(i + nx * (j + ny * (k + nz * t)));  // tensor [t][k][j][i]
            if (!(img.data[f] == static_cast<T>(w) && tensor[f] == static_cast<T>(w) &&
                  img.at(i, j, k, t) == static_cast<T>(w)))
              ++bad;
          }
    CHECK_MESSAGE(bad == 0, bad << " voxels differ from nibabel's get_fdata()");
  }
  CHECK(seen["gz"] >= 5);
  CHECK(seen["nii"] >= 5);
  CHECK(seen["v1"] >= 5);
  CHECK(seen["v2"] >= 5);
  CHECK(seen["qform"] >= 2);
  CHECK(seen["sform"] >= 4);
  CHECK(seen["fallback"] >= 2);
  CHECK(seen["scaled"] >= 4);
}

TEST_CASE("nifti: Volume and LabelMap views: (c, z, y, x) is NIfTI voxel (x, y, z, c), spacing (dz, dy, dx)") {
  mmnet::test::Fixture fx("nifti");
  // v1_f64: 7 x 5 x 3 x 2 (x, y, z, t), pixdim (0.8, 1.5, 3.0, 2.5).
  const auto img = io::read_nifti<double>(fixture_file(text(fx.array("v1_f64/file"))));
  const HostArray& ref = fx.array("v1_f64/data");  // nibabel's [x, y, z, t]
  const data::Volume v = io::to_volume(img);
  CHECK(v.shape() == Shape{2, 3, 5, 7});
  CHECK(v.spacing == data::Spacing{3.0, 1.5, float(0.8)});
  std::size_t bad = 0;
  for (index_t c = 0; c < 2; ++c)
    for (index_t z = 0; z < 3; ++z)
      for (index_t y = 0; y < 5; ++y)
        for (index_t x = 0; x < 7; ++x)
          if (v.at(c, z, y, x) != float(ref.data[static_cast<std::size_t>(((x * 5 + y) * 3 + z) * 2 + c)])) ++bad;
  CHECK(bad == 0);
  // A 3D uint8 image as labels; the same image with a fractional value or a value above 255 is refused.
  auto u8 = io::read_nifti<float>(fixture_file(text(fx.array("v2_u8/file"))));
  const data::LabelMap m = io::to_label_map(u8);
  CHECK((m.depth == 3 && m.height == 5 && m.width == 7));
  CHECK(m.at(2, 4, 6) == u8.at(6, 4, 2));
  CHECK(m.at(1, 0, 3) == u8.at(3, 0, 1));
  u8.data[5] = 2.5f;
  check_throws_naming<value_error>([&] { io::to_label_map(u8); }, {"mmnet::io::to_label_map", "voxel 5", "2.5"});
  u8.data[5] = 256;
  check_throws_naming<value_error>([&] { io::to_label_map(u8); }, {"voxel 5", "256"});
  check_throws_naming<shape_error>([&] { io::to_label_map(img); }, {"to_label_map", "volumes", "expected 1, got 2"});
  NiftiImage<float> five;
  five.header.dims = {2, 2, 2, 2, 2};
  five.data.assign(32, 0.f);
  check_throws_naming<shape_error>([&] { io::to_volume(five); }, {"to_volume", "1 to 4", "got 5"});
}

TEST_CASE("nifti: a valid scl_slope with a non-finite scl_inter is refused, as nibabel does") {
  const std::string path = fixture_file("bad_inter.nii");
  expect_error([&] { io::read_nifti(path); }, {path, "scl_inter is not finite"}, "bad inter");
  CHECK(std::isinf(io::read_nifti_header(path).scl_inter));  // the header alone is fine
}

// ---- mmnet -> nibabel ----------------------------------------------------------------------------------------

// Deterministic values.
struct Lcg {
  std::uint64_t s;
  double next() {  // in [0, 1)
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return double(s >> 11) / 9007199254740992.0;
  }
};

// The manifest nifti_ref.py check compares nibabel's reading with.
struct Manifest {
  StateDict sd;
  void add(const std::string& name, const std::string& file, const NiftiImage<double>& img) {
    const NiftiHeader& h = img.header;
    sd.insert(name + "/file", codes(file));
    std::vector<index_t> zyx(h.dims.rbegin(), h.dims.rend());
    sd.insert(name + "/data_zyx", HostArray{DType::f64, zyx, img.data});
    sd.insert(name + "/fields", HostArray{DType::f64, {index_t(fields(h).size())}, fields(h)});
    std::vector<double> dims(h.dims.begin(), h.dims.end());
    sd.insert(name + "/dims", HostArray{DType::i64, {index_t(dims.size())}, dims});
    std::vector<double> pixdim = {h.qfac};
    pixdim.insert(pixdim.end(), h.pixdim.begin(), h.pixdim.end());
    sd.insert(name + "/pixdim", HostArray{DType::f64, {8}, pixdim});
    sd.insert(name + "/descrip", codes(h.descrip));
    sd.insert(name + "/intent_name", codes(h.intent_name));
    sd.insert(name + "/aux_file", codes(h.aux_file));
    sd.insert(name + "/affine", HostArray{DType::f64, {4, 4}, flat(h.affine())});
  }
};

inline std::string source_dir() { return fs::path(__FILE__).parent_path().parent_path().string(); }

// Runs nifti_ref.py check on dir; returns its exit status, printing its output on failure.
inline int nibabel_check(const std::string& dir) {
  const char* py = std::getenv("MMNET_PYTHON");
  const std::string python = py && *py ? py : "/usr/bin/python3";
  const std::string script = source_dir() + "/reference/nifti_ref.py";
  const std::string log = dir + "/check.log";
  const std::string cmd = "'" + python + "' '" + script + "' check '" + dir + "' > '" + log + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  const std::string out = read_bytes(log);
  MESSAGE(out);
  return rc == -1 ? -1 : WEXITSTATUS(rc);
}

// Writes img to dir/file, reads it back with mmnet (which must give want and want's header as stored), and adds
// mmnet's reading to the manifest.
template <class T>
void write_and_check(Manifest& m, const std::string& dir, const std::string& name, const std::string& file,
                     const NiftiImage<T>& img, const std::vector<double>& want, int* count) {
  INFO(name << " (" << file << ")");
  const std::string path = dir + "/" + file;
  io::write_nifti(path, img);
  const NiftiImage<double> back = io::read_nifti<double>(path);
  CHECK(same(fields(back.header), fields(stored(img.header))));
  CHECK(back.header.dims == img.header.dims);
  for (int i = 0; i < 7; ++i) CHECK(back.header.pixdim[i] == as_stored(img.header.pixdim[i], img.header.version));
  CHECK(back.header.descrip == img.header.descrip);
  CHECK(back.header.intent_name == img.header.intent_name);
  CHECK(back.header.aux_file == img.header.aux_file);
  CHECK_MESSAGE(same(back.data, want), "mmnet reads back other values than it wrote");
  m.add(name, file, back);
  ++*count;
}

inline NiftiImage<double> tensor_image(const Shape& zyx, NiftiHeader h,
                                       const std::function<double(std::size_t)>& value) {
  std::vector<double> v(static_cast<std::size_t>(zyx.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = value(i);
  const auto t = Tensor<double, Backend>::from_vector(zyx, v);
  NiftiImage<double> img = io::image_from_tensor(t, std::move(h));
  // image_from_tensor: dims are the tensor's shape reversed, and to_tensor() gives the tensor back.
  std::vector<std::int64_t> xyz(zyx.begin(), zyx.end());
  std::reverse(xyz.begin(), xyz.end());
  CHECK(img.header.dims == xyz);
  CHECK(io::to_tensor<double, Backend>(img).to_vector() == v);
  return img;
}

TEST_CASE("nifti: files mmnet writes are read by nibabel with the same data, affine and header fields") {
  const std::string dir = scratch("nibabel_check");
  Manifest m;
  int written = 0;

  // 1. Every fixture: rewritten as it is, and with the other NIfTI version and compression.
  mmnet::test::Fixture fx("nifti");
  for (const auto& name : mmnet::test::case_names(fx, "data")) {
    const std::string file = text(fx.array(name + "/file"));
    const NiftiImage<double> img = io::read_nifti<double>(fixture_file(file));
    const bool gz = contains(file, ".gz");
    write_and_check(m, dir, "same_" + name, "same_" + name + (gz ? ".nii.gz" : ".nii"), img, img.data, &written);
    NiftiImage<double> other = img;
    other.header.version = 3 - img.header.version;
    write_and_check(m, dir, "other_" + name, "other_" + name + (gz ? ".nii" : ".nii.gz"), other, img.data, &written);
  }

  // 2. Images made from tensors, in every data type mmnet writes, with anisotropic spacing and non-trivial affines.
  NiftiHeader base;
  base.pixdim = {0.7, 1.1, 2.9, 1.5, 1, 1, 1};
  base.sform_code = 2;
  base.srow = {{{0.69, -0.05, 0.21, -40.5}, {0.08, 1.07, -0.3, 12.25}, {-0.1, 0.2, 2.85, 80}}};
  base.qform_code = 1;
  base.quatern_b = 0.1;
  base.quatern_c = -0.2;
  base.quatern_d = 0.3;
  base.qoffset_x = -40.5;
  base.qoffset_y = 12.25;
  base.qoffset_z = 80;
  base.xyzt_units = 2 | 8;  // mm, s
  base.descrip = "written by mmnet";
  base.aux_file = "aux";
  base.intent_code = 1002;
  base.intent_name = "label";
  base.cal_min = 0;
  base.cal_max = 255;
  base.dim_info = 1 | (2 << 2) | (3 << 4);
  base.slice_code = 2;
  base.slice_start = 1;
  base.slice_end = 4;
  base.slice_duration = 0.05;
  base.toffset = -1.25;
  Lcg rng{42};
  const Shape zyx{5, 4, 7};  // D, H, W all different: x = 7, y = 4, z = 5
  struct Case {
    const char* name;
    NiftiDType type;
    int version;
    bool gz;
    double lo, hi;  // raw value range (integers for integer types)
    double slope, inter;
  };
  const Case table[] = {
      {"u8", NiftiDType::uint8, 1, true, 0, 255, 0, 0},
      {"i16_scaled", NiftiDType::int16, 2, false, -32768, 32767, 0.25, -100},
      {"i32", NiftiDType::int32, 1, false, -2147483648.0, 2147483647.0, 0, 0},
      {"f32_scaled", NiftiDType::float32, 2, true, -1000, 1000, 2, 0.5},
      {"f64", NiftiDType::float64, 1, false, -1e6, 1e6, 0, 0},
      {"i8", NiftiDType::int8, 2, true, -128, 127, 0, 0},
      {"u16", NiftiDType::uint16, 1, true, 0, 65535, 0, 0},
      {"u32", NiftiDType::uint32, 2, false, 0, 4294967295.0, 0, 0},
      {"i64", NiftiDType::int64, 1, true, -9007199254740992.0, 9007199254740992.0, 0, 0},
      {"u64", NiftiDType::uint64, 2, false, 0, 9007199254740992.0, 0, 0},
  };
  for (const Case& c : table) {
    NiftiHeader h = base;
    h.version = c.version;
    h.datatype = c.type;
    h.scl_slope = c.slope;
    h.scl_inter = c.inter;
    const bool integer = c.type != NiftiDType::float32 && c.type != NiftiDType::float64;
    const std::size_t n = static_cast<std::size_t>(zyx.numel());
    auto raw = [&](std::size_t i) {
      if (i == 0) return c.lo;  // both ends of the type's range
      if (i == n - 1) return c.hi;
      double r = c.lo + (c.hi - c.lo) * rng.next();
      if (integer) r = std::floor(r);
      if (c.type == NiftiDType::float32) r = double(float(r));
      return r;
    };
    const bool scaled = c.slope != 0;
    NiftiImage<double> img = tensor_image(zyx, h, [&](std::size_t i) {
      const double r = raw(i);
      return scaled ? r * c.slope + c.inter : r;  // exact for these slopes and ranges
    });
    write_and_check(m, dir, std::string("tensor_") + c.name,
                    std::string("tensor_") + c.name + (c.gz ? ".nii.gz" : ".nii"), img, img.data, &written);
  }

  // 3. 4D float32 from float values, qform only with qfac -1, NIfTI-1, written with a data type override.
  {
    NiftiHeader h = base;
    h.sform_code = 0;
    h.qfac = -1;
    h.scl_slope = std::nan("");
    std::vector<float> v(2 * 3 * 4 * 6);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = float(rng.next() * 10 - 5);
    const auto t = Tensor<float, Backend>::from_vector(Shape{2, 3, 4, 6}, v);
    NiftiImage<float> img = io::image_from_tensor(t, h);
    CHECK(img.header.dims == std::vector<std::int64_t>{6, 4, 3, 2});
    img.header.datatype = NiftiDType::float64;  // overridden below
    io::write_nifti(dir + "/override.nii", img, NiftiDType::float32);
    CHECK(io::read_nifti_header(dir + "/override.nii").datatype == NiftiDType::float32);
    img.header.datatype = NiftiDType::float32;
    const std::vector<double> want(v.begin(), v.end());
    write_and_check(m, dir, "tensor_4d_f32_qfac", "tensor_4d_f32_qfac.nii", img, want, &written);
    CHECK(io::to_tensor<float, Backend>(io::read_nifti<float>(dir + "/tensor_4d_f32_qfac.nii")).to_vector() == v);
  }

  // 4. No transform codes: nibabel's fallback affine.
  {
    NiftiHeader h;
    h.pixdim = {0.5, 0.75, 1.25, 1, 1, 1, 1};
    h.datatype = NiftiDType::float64;
    NiftiImage<double> img = tensor_image(Shape{3, 2, 5}, h, [&](std::size_t i) { return double(i) - 7.5; });
    write_and_check(m, dir, "tensor_fallback", "tensor_fallback.nii.gz", img, img.data, &written);
  }

  // 5. A data::Volume with two channels (4D file) and a data::LabelMap (uint8), with a reference header's geometry.
  {
    data::Volume vol(2, 3, 4, 5, {2.5, 0.9, 0.6});
    for (std::size_t i = 0; i < vol.data.size(); ++i) vol.data[i] = float(rng.next() * 4 - 2);
    NiftiHeader h = base;
    h.version = 2;
    NiftiImage<float> img = io::image_from_volume(vol, h);
    CHECK(img.header.dims == std::vector<std::int64_t>{5, 4, 3, 2});
    CHECK(img.header.pixdim[0] == 0.6);
    CHECK(img.header.pixdim[2] == 2.5);
    write_and_check(m, dir, "volume_2ch", "volume_2ch.nii.gz", img,
                    std::vector<double>(vol.data.begin(), vol.data.end()), &written);
    data::LabelMap labels(3, 4, 5, {2.5, 0.9, 0.6});
    for (std::size_t i = 0; i < labels.data.size(); ++i) labels.data[i] = static_cast<std::uint8_t>(i * 7 % 5);
    labels.data.back() = 255;
    NiftiImage<float> limg = io::image_from_label_map(labels, base);
    CHECK(limg.header.datatype == NiftiDType::uint8);
    write_and_check(m, dir, "labels", "labels.nii.gz", limg,
                    std::vector<double>(labels.data.begin(), labels.data.end()), &written);
    const data::LabelMap back = io::to_label_map(io::read_nifti<float>(dir + "/labels.nii.gz"));
    CHECK(back.data == labels.data);
    for (int i = 0; i < 3; ++i) CHECK(back.spacing[i] == double(float(labels.spacing[i])));  // NIfTI-1: float32
  }

  CHECK(written == 2 * 12 + 10 + 2 + 2);
  io::save_state_dict(dir + "/manifest.h5", m.sd, std::map<std::string, std::string>{{"model_name", "nifti_manifest"}});
  // nibabel reads them: once, from the cpu executable (the files do not depend on the backend, and the
  // executables for real GPUs may run on machines without Python).
  if constexpr (std::is_same_v<Backend, mmnet::cpu>) {
    CHECK(nibabel_check(dir) == 0);
  } else {
    MESSAGE("nibabel check left to the cpu executable");
  }
}

// ---- writing: rounding, ranges, atomicity --------------------------------------------------------------------

TEST_CASE("nifti: integer types round to nearest and refuse values outside their range") {
  const std::string dir = scratch("write_errors");
  NiftiImage<double> img;
  img.header.dims = {3, 2};
  img.header.datatype = NiftiDType::int16;
  img.data = {0.4, 0.5, 1.5, -2.6, 32767.4, -32768.4};
  io::write_nifti(dir + "/r.nii", img);
  CHECK(io::read_nifti(dir + "/r.nii").data == std::vector<double>{0, 0, 2, -3, 32767, -32768});  // ties to even

  const std::string path = dir + "/good.nii.gz";
  io::write_nifti(path, img);
  const std::string good = read_bytes(path);
  auto untouched = [&] {
    CHECK(read_bytes(path) == good);
    CHECK(files_in(dir) == std::vector<std::string>{"good.nii.gz", "r.nii"});  // no temporary file left
  };
  NiftiImage<double> bad = img;
  bad.data[4] = 32767.6;
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "voxel 4", "int16 range"}, "overflow");
  untouched();
  bad.data[4] = std::nan("");
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "voxel 4"}, "nan");
  untouched();
  bad = img;
  bad.header.scl_slope = 0.001;  // 0.5 / 0.001 = 500 fits, 32767 / 0.001 does not
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "int16 range", "scl_slope"}, "scaled overflow");
  untouched();
  bad = img;
  bad.data.pop_back();
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "6 voxels", "5 values"}, "size");
  bad = img;
  bad.header.dims = {40000, 1};
  bad.data.assign(40000, 0.0);
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "32767", "version 2"}, "v1 dims");
  bad.header.version = 2;
  CHECK_NOTHROW(io::write_nifti(dir + "/big.nii", bad));
  CHECK(io::read_nifti_header(dir + "/big.nii").dims == std::vector<std::int64_t>{40000, 1});
  fs::remove(dir + "/big.nii");
  bad = img;
  bad.header.descrip = std::string(81, 'x');
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "descrip", "81 bytes", "80"}, "descrip");
  bad = img;
  bad.header.version = 3;
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "version is 3"}, "version");
  bad = img;
  bad.header.dims = {};
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "0 dimensions"}, "no dims");
  bad = img;
  bad.header.slice_end = 40000;
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "slice_end is 40000"}, "slice_end");
  bad = img;
  bad.header.scl_slope = 2;
  bad.header.scl_inter = std::nan("");
  expect_error<value_error>([&] { io::write_nifti(path, bad); }, {path, "scl_inter is not finite"}, "inter");
  untouched();
  expect_error([&] { io::write_nifti(dir + "/no/such/dir/x.nii", img); },
               {dir + "/no/such/dir/x.nii", "cannot create the temporary file"}, "missing dir");
  expect_error([&] { io::write_nifti(dir + "/x.img", img); }, {dir + "/x.img", ".nii or .nii.gz"}, "extension");
  expect_error([&] { io::write_nifti("", img); }, {"empty file name"}, "empty name");
  untouched();
}

// ---- damaged, truncated and foreign files ---------------------------------------------------------------------

template <class V>
void poke(std::string& bytes, std::size_t offset, V v) {
  std::memcpy(&bytes[offset], &v, sizeof v);
}

TEST_CASE("nifti: damaged, truncated, foreign and missing files raise io_error naming the file") {
  const std::string dir = scratch("bad_files");
  NiftiImage<double> img;
  img.header.dims = {4, 3, 2};
  img.header.datatype = NiftiDType::int16;
  img.data.resize(24);
  for (std::size_t i = 0; i < 24; ++i) img.data[i] = double(i * 37 % 101);
  io::write_nifti(dir + "/v1.nii", img);
  io::write_nifti(dir + "/v1.nii.gz", img);
  img.header.version = 2;
  io::write_nifti(dir + "/v2.nii", img);
  const std::string v1 = read_bytes(dir + "/v1.nii"), v1gz = read_bytes(dir + "/v1.nii.gz"),
                    v2 = read_bytes(dir + "/v2.nii");
  REQUIRE(v1.size() == 352 + 48);
  REQUIRE(v2.size() == 544 + 48);

  int n = 0;
  // Each case: a file with these bytes must fail in read_nifti (and read_nifti_header when header_too).
  auto bad_file = [&](const std::string& name, const std::string& bytes, const std::vector<std::string>& problem,
                      bool header_too) {
    const std::string path = dir + "/" + name;
    write_bytes(path, bytes);
    std::vector<std::string> parts = problem;
    parts.insert(parts.begin(), "mmnet::io::nifti: " + path + ": ");
    expect_error([&] { io::read_nifti<float>(path); }, parts, name + ": read_nifti");
    if (header_too) expect_error([&] { io::read_nifti_header(path); }, parts, name + ": read_nifti_header");
    ++n;
  };

  bad_file("empty.nii", "", {"the file is empty"}, true);
  bad_file("text.nii", "this is not a NIfTI file, just some text that is long enough to hold a header ...",
           {"not a NIfTI file", "sizeof_hdr"}, true);
  bad_file("hdf5.nii", read_bytes(mmnet::test::fixture_dir() + "/nifti.h5"), {"HDF5 file"}, true);
  bad_file("short.nii", v1.substr(0, 3), {"shorter than a header"}, true);
  bad_file("cut_header.nii", v1.substr(0, 200), {"truncated NIfTI-1 header: 200 of 348 bytes"}, true);
  bad_file("cut_header2.nii", v2.substr(0, 500), {"truncated NIfTI-2 header: 500 of 540 bytes"}, true);
  bad_file("cut_data.nii", v1.substr(0, v1.size() - 5), {"truncated", "43 bytes of voxel data", "need 48"}, false);
  bad_file("cut_ext.nii", v1.substr(0, 350), {"ends before vox_offset 352"}, false);
  bad_file("cut.nii.gz", v1gz.substr(0, v1gz.size() / 2), {"truncated"}, false);
  {
    std::string b = v1gz;  // CRC trailer damaged: all data decompresses, the check at the end fails
    b[b.size() - 6] ^= 0x5a;
    bad_file("crc.nii.gz", b, {"cannot read the data", "corrupt"}, false);
  }
  {
    std::string b = v1gz;
    for (std::size_t i = 20; i < b.size() - 8; i += 7) b[i] ^= 0xff;
    bad_file("garbled.nii.gz", b, {}, false);
  }
  {
    std::string b = v1;
    std::memcpy(&b[344], "ni1\0", 4);
    bad_file("pair.nii", b, {"'ni1'", ".hdr/.img pair"}, true);
    std::memcpy(&b[344], "xyz\0", 4);
    bad_file("magic.nii", b, {"magic is not 'n+1'"}, true);
  }
  {
    std::string b = v2;
    std::memcpy(&b[8], "\n\n\032\n", 4);
    bad_file("magic2.nii", b, {"damaged NIfTI-2 magic", "text mode"}, true);
  }
  const std::size_t dim1 = offsetof(nifti_1_header, dim), dim2 = offsetof(nifti_2_header, dim);
  {
    std::string b = v1;
    poke<std::int16_t>(b, dim1, 0);
    bad_file("dim0.nii", b, {"dim[0]", "is 0, expected 1 to 7"}, true);
    poke<std::int16_t>(b, dim1, 8);
    bad_file("dim8.nii", b, {"is 8, expected 1 to 7"}, true);
    b = v1;
    poke<std::int16_t>(b, dim1 + 2 * 2, -3);
    bad_file("negdim.nii", b, {"dim[2] is -3", "positive"}, true);
    b = v1;
    poke<std::int16_t>(b, dim1 + 2 * 3, 30000);  // claims far more data than the file holds
    bad_file("bigdim.nii", b, {"truncated", "48 bytes of voxel data", "need 720000"}, false);
  }
  {
    std::string b = v2;  // 2^60 voxels: must neither overflow nor try to allocate them
    poke<std::int64_t>(b, dim2 + 8 * 1, std::int64_t(1) << 30);
    poke<std::int64_t>(b, dim2 + 8 * 2, std::int64_t(1) << 30);
    bad_file("huge.nii", b, {"truncated", "48 bytes of voxel data"}, false);
    poke<std::int64_t>(b, dim2 + 8 * 3, std::int64_t(1) << 62);
    bad_file("overflow.nii", b, {"overflow 64 bits"}, true);
  }
  {
    std::string b = v1;
    poke<std::int16_t>(b, offsetof(nifti_1_header, datatype), NIFTI_TYPE_COMPLEX64);
    bad_file("complex.nii", b, {"data type 32", "not supported"}, true);
    poke<std::int16_t>(b, offsetof(nifti_1_header, datatype), 12345);
    bad_file("dtype.nii", b, {"data type 12345", "not supported"}, true);
    b = v1;
    poke<float>(b, offsetof(nifti_1_header, vox_offset), 100.0f);
    bad_file("offset_small.nii", b, {"vox_offset", "expected a whole number >= 348"}, true);
    poke<float>(b, offsetof(nifti_1_header, vox_offset), std::nanf(""));
    bad_file("offset_nan.nii", b, {"vox_offset"}, true);
    poke<float>(b, offsetof(nifti_1_header, vox_offset), 4096.0f);
    bad_file("offset_far.nii", b, {"ends before vox_offset 4096"}, false);
  }
  {
    // Byte-swapped header with damage: the swap is recognised, then the damage reported.
    std::string b = v1;
    poke<std::int32_t>(b, 0, 348);
    std::reverse(b.begin(), b.begin() + 4);
    bad_file("swapped.nii", b, {"dim[0]", "is 768, expected 1 to 7"}, true);
  }
  CHECK(n == 26);

  // Missing files, directories, names that are not .nii / .nii.gz.
  expect_error([&] { io::read_nifti(dir + "/missing.nii"); },
               {dir + "/missing.nii", "cannot open the file", "No such file"}, "missing");
  expect_error([&] { io::read_nifti(dir + "/missing.nii.gz"); }, {dir + "/missing.nii.gz", "No such file"},
               "missing gz");
  fs::create_directories(dir + "/folder.nii");
  expect_error([&] { io::read_nifti(dir + "/folder.nii"); }, {dir + "/folder.nii", "is a directory"}, "directory");
  write_bytes(dir + "/data.img", v1);
  expect_error([&] { io::read_nifti(dir + "/data.img"); }, {dir + "/data.img", ".nii or .nii.gz"}, "extension");
  expect_error([&] { io::read_nifti(""); }, {"empty file name"}, "empty name");

  // A .nii reading leaves nothing else behind, and the good files still read.
  CHECK(io::read_nifti(dir + "/v1.nii").data == img.data);
  CHECK(io::read_nifti(dir + "/v1.nii.gz").data == img.data);
  CHECK(io::read_nifti(dir + "/v2.nii").data == img.data);
}

// Every single-byte change of the header and every cut of the file: the reader gives data or io_error, never
// another exception or a crash; a damaged .nii.gz never gives wrong data (the gzip CRC and length catch it).
TEST_CASE("nifti: byte changes and cuts anywhere give data or io_error, never a crash or wrong gzip data") {
  const std::string dir = scratch("fuzz");
  NiftiImage<double> img;
  img.header.dims = {4, 3, 2, 2};
  img.header.datatype = NiftiDType::float32;
  img.header.scl_slope = 1.5;
  img.header.scl_inter = -2;
  img.header.sform_code = 1;
  img.data.resize(48);
  for (std::size_t i = 0; i < img.data.size(); ++i) img.data[i] = double(i) * 0.5 - 3;
  const std::string path = dir + "/f.nii", gzpath = dir + "/f.nii.gz";
  std::size_t read_ok = 0, refused = 0, wrong = 0;
  std::vector<double> intact;  // what the undamaged file holds (float32 after undoing the scale)
  auto attempt = [&](const std::string& p, const std::string& bytes, bool must_fail, bool must_be_exact) {
    // Same size: overwrite in place (opening with O_TRUNC costs ~2 ms on some file systems).
    if (fs::exists(p) && fs::file_size(p) == bytes.size()) {
      std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
      f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    } else {
      write_bytes(p, bytes);
    }
    try {
      const auto back = io::read_nifti<double>(p);
      if (must_fail || (must_be_exact && !same(back.data, intact))) {
        ++wrong;
        MESSAGE(p << ": " << bytes.size() << " bytes read without error"
                  << (must_fail ? " (a cut file)" : " (wrong data)"));
      }
      ++read_ok;
    } catch (const io_error& e) {
      if (!contains(e.what(), p)) ++wrong;
      ++refused;
    } catch (const std::exception& e) {
      FAIL_CHECK("not an io_error: " << e.what());
      ++wrong;
    }
  };
  for (int version : {1, 2}) {
    img.header.version = version;
    io::write_nifti(path, img);
    io::write_nifti(gzpath, img);
    const std::string nii = read_bytes(path), gz = read_bytes(gzpath);
    intact = io::read_nifti<double>(gzpath).data;
    CHECK(io::read_nifti<double>(path).data == intact);
    const std::size_t data_at = version == 1 ? 352 : 544;
    for (std::size_t at = 0; at < data_at; ++at)
      for (unsigned char v : {0x00, 0x7f, 0x80, 0xff}) {
        std::string b = nii;
        if (static_cast<unsigned char>(b[at]) == v) continue;
        b[at] = static_cast<char>(v);
        attempt(path, b, false, false);
      }
    for (std::size_t len = 0; len < nii.size(); len += 3) attempt(path, nii.substr(0, len), true, false);
    for (std::size_t len = 0; len < gz.size(); ++len) attempt(gzpath, gz.substr(0, len), true, false);
    for (std::size_t at = 0; at < gz.size(); ++at)
      for (unsigned char x : {0x01, 0x80}) {
        std::string b = gz;
        b[at] = static_cast<char>(b[at] ^ x);
        attempt(gzpath, b, false, true);
      }
  }
  MESSAGE(read_ok << " damaged files read, " << refused << " refused");
  CHECK(wrong == 0);
  CHECK(refused > 1000);
}

}  // namespace nifti_test
