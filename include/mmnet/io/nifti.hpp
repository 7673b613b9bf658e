// mmnet/io/nifti.hpp: NIfTI-1 and NIfTI-2 images (.nii, .nii.gz), read and written with niftilib's header
// structs and byte swapping (Debian libnifti2-dev) and zlib; the Python counterpart is nibabel.
//
// Axis convention. NIfTI stores voxel (i, j, k[, t, ...]) with i (x) varying fastest. NiftiImage::data keeps that
// file order, so data[i + nx * (j + ny * k)] is voxel (i, j, k). Read as a C-order array, that buffer has the
// REVERSED shape (..., t, z, y, x): to_tensor() gives exactly that view without moving data, i.e. a 3D image
// becomes a Tensor of shape (D, H, W) = (nz, ny, nx) and a 4D one (C, D, H, W) = (nt, nz, ny, nx), the library's
// NCDHW layout without N. nibabel's img.get_fdata() has shape (x, y, z[, t]): get_fdata()[i, j, k] equals
// tensor[k][j][i] (numpy: np.transpose(get_fdata()) is the tensor). header.dims and header.pixdim stay in the
// file's (x, y, z, t, ...) order. to_volume() / image_from_volume() convert to and from data::Volume
// (C x D x H x W, channels = the 4th NIfTI axis), to_label_map() / image_from_label_map() to data::LabelMap.
//
// Reading (read_nifti): the header is checked by mmnet before anything else (size 348 or 540 in either byte
// order, single-file magic "n+1" / "n+2", 1 to 7 positive dimensions, a supported data type, a data offset
// inside the file), then the whole file is decompressed by zlib (plain .nii files are read by the same code),
// so truncation, a damaged gzip stream (CRC, length) or a data block shorter than the dimensions say all raise
// mmnet::io_error naming the file, and a damaged header can never make mmnet allocate more than the file holds.
// niftilib's own file readers (nifti_image_read), which print to stderr, guess other file names and cannot report
// every failure, are never called, so niftilib's global debug level is left alone. Big-endian files are swapped
// with niftilib's swap_nifti_header / nifti_swap_Nbytes. Header extensions are skipped.
// Voxel values are scaled as nibabel's get_fdata() does: if scl_slope is 0 or not finite nothing is scaled
// (scl_inter is ignored too); otherwise value = raw * scl_slope + scl_inter in double (multiply skipped when the
// slope is 1, add skipped when the intercept is 0, never fused), and a non-finite scl_inter with a valid slope is
// an error (nibabel refuses it too). The header keeps scl_slope / scl_inter as stored.
//
// Writing (write_nifti): the header's version (1 or 2), datatype, spacing, qform / sform (codes, quaternion,
// offsets, srow rows), units, intent, calibration, slice timing, description and scale factors are written as
// given; the file is compressed when the name ends in .nii.gz (zlib level 1, as nibabel). With a valid scale
// (slope finite and non-zero) values are stored as (value - scl_inter) / scl_slope. Integer types round to
// nearest (ties to even) and a value outside the type's range, or NaN, raises mmnet::value_error. NIfTI-1 stores
// floats as float32 (header fields and float32 data round to nearest). Extensions are not written. The file is
// written to a temporary file in the same directory, fsynced and renamed over the destination, so a failed
// write never leaves a partial file.
//
// affine(): the voxel-to-world matrix nibabel's img.affine gives: the sform rows if sform_code != 0, else the
// qform (quaternion b, c, d with a = sqrt(1 - b^2 - c^2 - d^2), pixdim[1..3], qfac, offsets) if qform_code != 0,
// else nibabel's fallback diag(-dx, dy, dz) centred on the volume (niftilib's fallback has no flip and no
// centring; nibabel's is used). Sform and fallback affines equal nibabel's exactly; the qform follows nibabel's
// formula (fillpositive, quat2mat) in double and agrees to a few units in the last place.
#pragma once
#include <nifti2_io.h>  // niftilib: nifti_1_header, nifti_2_header, NIFTI_TYPE_*, swap_nifti_header
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.hpp"
#include "../core/shape.hpp"
#include "../core/tensor.hpp"
#include "../data/volume.hpp"
#include "atomic_file.hpp"

namespace mmnet::io {

// Voxel data types mmnet reads and writes (NIfTI codes). Complex and RGB types are refused.
enum class NiftiDType : int {
  uint8 = NIFTI_TYPE_UINT8,
  int16 = NIFTI_TYPE_INT16,
  int32 = NIFTI_TYPE_INT32,
  float32 = NIFTI_TYPE_FLOAT32,
  float64 = NIFTI_TYPE_FLOAT64,
  int8 = NIFTI_TYPE_INT8,
  uint16 = NIFTI_TYPE_UINT16,
  uint32 = NIFTI_TYPE_UINT32,
  int64 = NIFTI_TYPE_INT64,
  uint64 = NIFTI_TYPE_UINT64,
};

inline const char* nifti_dtype_name(NiftiDType t) {
  switch (t) {
    case NiftiDType::uint8: return "uint8";
    case NiftiDType::int16: return "int16";
    case NiftiDType::int32: return "int32";
    case NiftiDType::float32: return "float32";
    case NiftiDType::float64: return "float64";
    case NiftiDType::int8: return "int8";
    case NiftiDType::uint16: return "uint16";
    case NiftiDType::uint32: return "uint32";
    case NiftiDType::int64: return "int64";
    case NiftiDType::uint64: return "uint64";
  }
  return "?";
}

// Bytes per voxel; 0 for a code mmnet does not support.
inline int nifti_dtype_size(int code) {
  switch (code) {
    case NIFTI_TYPE_UINT8: case NIFTI_TYPE_INT8: return 1;
    case NIFTI_TYPE_INT16: case NIFTI_TYPE_UINT16: return 2;
    case NIFTI_TYPE_INT32: case NIFTI_TYPE_UINT32: case NIFTI_TYPE_FLOAT32: return 4;
    case NIFTI_TYPE_INT64: case NIFTI_TYPE_UINT64: case NIFTI_TYPE_FLOAT64: return 8;
    default: return 0;
  }
}

using NiftiAffine = std::array<std::array<double, 4>, 4>;

// The header fields mmnet keeps, as stored (NIfTI-1 float32 / int16 fields widened exactly).
struct NiftiHeader {
  int version = 1;                          // 1: NIfTI-1 (348-byte header), 2: NIfTI-2 (540 bytes)
  std::vector<std::int64_t> dims;           // dim[1..dim[0]]: nx, ny, nz, nt, ... (x first)
  std::array<double, 7> pixdim{1, 1, 1, 1, 1, 1, 1};  // pixdim[1..7]: dx, dy, dz (mm), dt, ...
  double qfac = 1;                          // pixdim[0]: -1 flips the qform's k axis; anything but -1 reads as 1
  int qform_code = 0, sform_code = 0;       // NIFTI_XFORM_*: 0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI
  double quatern_b = 0, quatern_c = 0, quatern_d = 0;
  double qoffset_x = 0, qoffset_y = 0, qoffset_z = 0;
  std::array<std::array<double, 4>, 3> srow{{{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}}};  // srow_x, srow_y, srow_z
  NiftiDType datatype = NiftiDType::float32;
  double scl_slope = 0, scl_inter = 0;      // 0 or non-finite slope: no scaling
  int xyzt_units = 0;                       // NIFTI_UNITS_* of space | time
  int intent_code = 0;
  double intent_p1 = 0, intent_p2 = 0, intent_p3 = 0;
  std::string intent_name;                  // up to 16 bytes
  double cal_min = 0, cal_max = 0;
  int slice_code = 0;
  std::int64_t slice_start = 0, slice_end = 0;
  double slice_duration = 0, toffset = 0;
  int dim_info = 0;                         // freq_dim | phase_dim << 2 | slice_dim << 4
  std::string descrip;                      // up to 80 bytes
  std::string aux_file;                     // up to 24 bytes
  bool big_endian = false;                  // how the file was stored (read only: mmnet writes native order)

  // Number of voxels (product of dims).
  std::int64_t nvox() const {
    std::int64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
  // (dx, dy, dz), the voxel size in the file's x, y, z order.
  std::array<double, 3> spacing() const { return {pixdim[0], pixdim[1], pixdim[2]}; }
  // Whether reading applies scl_slope / scl_inter (nibabel's rule).
  bool has_scaling() const { return scl_slope != 0 && std::isfinite(scl_slope); }
  // nibabel's img.affine (see the top of this file). Throws value_error for a qform nibabel refuses
  // (negative pixdim[1..3], |(b, c, d)| > 1).
  NiftiAffine affine() const;
  NiftiAffine qform_affine() const;
  NiftiAffine fallback_affine() const;
};

// An image: header plus voxel values (scaled, see above) in file order, x fastest.
template <class T = double>
struct NiftiImage {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::io::NiftiImage: the value type must be float or double");
  NiftiHeader header;
  std::vector<T> data;

  const std::vector<std::int64_t>& dims() const { return header.dims; }
  NiftiAffine affine() const { return header.affine(); }
  // The value at voxel (i, j, k[, t]) (unchecked).
  T at(std::int64_t i, std::int64_t j, std::int64_t k, std::int64_t t = 0) const {
    const auto& d = header.dims;
    const std::int64_t nx = d.size() > 0 ? d[0] : 1, ny = d.size() > 1 ? d[1] : 1, nz = d.size() > 2 ? d[2] : 1;
    return data[static_cast<std::size_t>(i + nx * (j + ny * (k + nz * t)))];
  }
};

namespace detail {

[[noreturn]] inline void nifti_fail(const std::string& path, const std::string& problem) {
  throw io_error("mmnet::io::nifti: " + path + ": " + problem);
}
[[noreturn]] inline void nifti_value_fail(const std::string& path, const std::string& problem) {
  throw value_error("mmnet::io::nifti: " + path + ": " + problem);
}

inline bool ends_with(const std::string& s, const char* tail) {
  const std::size_t n = std::strlen(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

// .nii or .nii.gz (as nibabel and niftilib decide the format by the name).
inline bool nifti_gz_name(const std::string& path, bool writing) {
  if (path.empty()) throw io_error("mmnet::io::nifti: empty file name");
  if (ends_with(path, ".nii.gz")) return true;
  if (ends_with(path, ".nii")) return false;
  nifti_fail(path, std::string("the file name must end in .nii or .nii.gz") +
                       (writing ? " (it chooses compression)" : " (other NIfTI forms, .hdr/.img pairs, are not read)"));
}

inline std::string fixed_string(const char* p, std::size_t n) { return std::string(p, strnlen(p, n)); }

inline void put_string(const std::string& path, const char* what, const std::string& s, char* dst, std::size_t n) {
  if (s.size() > n)
    nifti_value_fail(path, std::string(what) + " has " + std::to_string(s.size()) + " bytes; the header holds " +
                               std::to_string(n));
  std::memset(dst, 0, n);
  std::memcpy(dst, s.data(), s.size());
}

// A gzFile that closes itself. zlib reads plain files transparently, so .nii and .nii.gz share one reader.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) nifti_fail(path, std::string("cannot open the file: ") + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) nifti_fail(path, "is a directory, not a NIfTI file");
    if (!S_ISREG(st.st_mode)) nifti_fail(path, "is not a regular file");
    if (st.st_size == 0) nifti_fail(path, "not a NIfTI file (the file is empty)");
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) nifti_fail(path, std::string("cannot open the file: ") + std::strerror(errno ? errno : ENOMEM));
    gzbuffer(f_, 1 << 17);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;
  ~GzReader() {
    if (f_) gzclose_r(f_);
  }
  // Reads up to n bytes; returns how many (fewer only at the end of the data). Throws on a damaged stream.
  std::size_t read(void* dst, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int r = gzread(f_, static_cast<char*>(dst) + done, chunk);
      if (r < 0) fail_stream();
      if (r == 0) break;
      done += static_cast<std::size_t>(r);
    }
    // zlib reports a gzip stream cut short as end of data plus an error state.
    if (done < n) check_state();
    return done;
  }
  // Reads to the end, so that the gzip CRC and length trailer get checked.
  void drain() {
    char buf[1 << 14];
    while (read(buf, sizeof buf) == sizeof buf) {
    }
  }

 private:
  void check_state() {
    int err = Z_OK;
    gzerror(f_, &err);
    if (err != Z_OK && err != Z_STREAM_END) fail_stream();
  }
  [[noreturn]] void fail_stream() {
    int err = Z_OK;
    const char* msg = gzerror(f_, &err);
    const std::string why = err == Z_ERRNO ? std::string(std::strerror(errno)) : std::string(msg ? msg : "unknown");
    nifti_fail(path_, "cannot read the data: " + why + " (truncated or corrupt gzip stream?)");
  }
  std::string path_;
  gzFile f_ = nullptr;
};

// What the header says about the data block.
struct NiftiLayout {
  std::int64_t vox_offset = 0;
  std::int64_t nbytes = 0;
  int size = 0;
  bool swapped = false;
};

template <class H>
void check_dims(const std::string& path, const H& h, NiftiHeader& out) {
  const auto ndim = static_cast<std::int64_t>(h.dim[0]);
  if (ndim < 1 || ndim > 7)
    nifti_fail(path, "dim[0] (the number of dimensions) is " + std::to_string(ndim) +
                         ", expected 1 to 7 (corrupt header or not a NIfTI file)");
  for (std::int64_t i = 1; i <= ndim; ++i) {
    const auto d = static_cast<std::int64_t>(h.dim[i]);
    if (d < 1)
      nifti_fail(path, "dim[" + std::to_string(i) + "] is " + std::to_string(d) + ", expected a positive size");
    out.dims.push_back(d);
  }
}

// NIfTI-1 keeps some codes in a char, NIfTI-2 in an int32.
template <class V>
int code_value(V v) {
  if constexpr (sizeof(V) == 1) return static_cast<unsigned char>(v);
  else return static_cast<int>(v);
}

// Copies the fields both versions share (their names match in niftilib's structs).
template <class H>
void copy_common(const H& h, NiftiHeader& out) {
  out.qfac = h.pixdim[0] == -1 ? -1.0 : 1.0;  // nibabel fixes any other pixdim[0] to 1 on load
  for (int i = 0; i < 7; ++i) out.pixdim[i] = h.pixdim[i + 1];
  out.qform_code = h.qform_code;
  out.sform_code = h.sform_code;
  out.quatern_b = h.quatern_b;
  out.quatern_c = h.quatern_c;
  out.quatern_d = h.quatern_d;
  out.qoffset_x = h.qoffset_x;
  out.qoffset_y = h.qoffset_y;
  out.qoffset_z = h.qoffset_z;
  for (int c = 0; c < 4; ++c) {
    out.srow[0][c] = h.srow_x[c];
    out.srow[1][c] = h.srow_y[c];
    out.srow[2][c] = h.srow_z[c];
  }
  out.datatype = static_cast<NiftiDType>(h.datatype);
  out.scl_slope = h.scl_slope;
  out.scl_inter = h.scl_inter;
  out.xyzt_units = code_value(h.xyzt_units);
  out.intent_code = h.intent_code;
  out.intent_p1 = h.intent_p1;
  out.intent_p2 = h.intent_p2;
  out.intent_p3 = h.intent_p3;
  out.intent_name = fixed_string(h.intent_name, sizeof h.intent_name);
  out.cal_min = h.cal_min;
  out.cal_max = h.cal_max;
  out.slice_code = code_value(h.slice_code);
  out.slice_start = h.slice_start;
  out.slice_end = h.slice_end;
  out.slice_duration = h.slice_duration;
  out.toffset = h.toffset;
  out.dim_info = code_value(h.dim_info);
  out.descrip = fixed_string(h.descrip, sizeof h.descrip);
  out.aux_file = fixed_string(h.aux_file, sizeof h.aux_file);
}

// Reads and checks the header at the start of the stream; leaves the stream after the header.
inline NiftiHeader parse_header(const std::string& path, GzReader& in, NiftiLayout& layout) {
  unsigned char buf[sizeof(nifti_2_header)] = {};
  static_assert(sizeof(nifti_1_header) == 348 && sizeof(nifti_2_header) == 540, "niftilib header structs");
  const std::size_t got = in.read(buf, 4);
  if (got < 4) nifti_fail(path, "not a NIfTI file (" + std::to_string(got) + " bytes, shorter than a header)");
  if (buf[0] == 0x89 && buf[1] == 'H' && buf[2] == 'D' && buf[3] == 'F')
    nifti_fail(path, "not a NIfTI file (it is an HDF5 file)");
  std::int32_t size = 0;
  std::memcpy(&size, buf, 4);
  std::int32_t swapped_size = size;
  nifti_swap_4bytes(1, &swapped_size);
  int version = 0;
  bool swapped = false;
  if (size == 348 || size == 540) {
    version = size == 348 ? 1 : 2;
  } else if (swapped_size == 348 || swapped_size == 540) {
    version = swapped_size == 348 ? 1 : 2;
    swapped = true;
  } else {
    nifti_fail(path, "not a NIfTI file (the first 4 bytes, sizeof_hdr, read " + std::to_string(size) +
                         "; NIfTI-1 has 348, NIfTI-2 540)");
  }
  const std::size_t hsize = version == 1 ? 348 : 540;
  const std::size_t rest = in.read(buf + 4, hsize - 4);
  if (rest < hsize - 4)
    nifti_fail(path, "truncated NIfTI-" + std::to_string(version) + " header: " + std::to_string(rest + 4) +
                         " of " + std::to_string(hsize) + " bytes");
  NiftiHeader out;
  out.version = version;
  out.big_endian = swapped != (nifti_short_order() == 2);  // niftilib: 2 = MSB_FIRST, this machine is big-endian
  layout.swapped = swapped;
  double vox_offset = 0;
  if (version == 1) {
    nifti_1_header h;
    std::memcpy(&h, buf, sizeof h);
    if (swapped) swap_nifti_header(&h, 1);  // niftilib
    if (std::memcmp(h.magic, "ni1", 4) == 0)
      nifti_fail(path, "a NIfTI-1 .hdr/.img pair header (magic 'ni1'); only single-file .nii is read");
    if (std::memcmp(h.magic, "n+1", 4) != 0) nifti_fail(path, "not a NIfTI-1 file (magic is not 'n+1')");
    check_dims(path, h, out);
    copy_common(h, out);
    vox_offset = h.vox_offset;
  } else {
    nifti_2_header h;
    std::memcpy(&h, buf, sizeof h);
    if (swapped) swap_nifti_header(&h, 2);
    if (std::memcmp(h.magic, "ni2", 4) == 0)
      nifti_fail(path, "a NIfTI-2 .hdr/.img pair header (magic 'ni2'); only single-file .nii is read");
    if (std::memcmp(h.magic, "n+2", 4) != 0) nifti_fail(path, "not a NIfTI-2 file (magic is not 'n+2')");
    if (std::memcmp(h.magic + 4, "\r\n\032\n", 4) != 0)
      nifti_fail(path, "damaged NIfTI-2 magic (its line-ending bytes changed: copied in text mode?)");
    check_dims(path, h, out);
    copy_common(h, out);
    vox_offset = static_cast<double>(h.vox_offset);
  }
  const int dsize = nifti_dtype_size(static_cast<int>(out.datatype));
  if (dsize == 0) {
    const int code = static_cast<int>(out.datatype);
    const char* name = nifti_datatype_string(code);  // niftilib's name, "UNKNOWN" for garbage
    nifti_fail(path, "data type " + std::to_string(code) + " (" + (name ? name : "?") +
                         ") is not supported; mmnet reads uint8, int8, int16, uint16, int32, uint32, int64, "
                         "uint64, float32 and float64");
  }
  // A zero offset is read as "right after the header and the 4 extension flag bytes", as nibabel and niftilib do.
  const double min_offset = static_cast<double>(hsize + 4);
  if (vox_offset == 0) vox_offset = min_offset;
  if (!std::isfinite(vox_offset) || vox_offset < static_cast<double>(hsize) || vox_offset > 9.0e15 ||
      vox_offset != std::floor(vox_offset))
    nifti_fail(path, "vox_offset (where the voxels start) is " + std::to_string(vox_offset) +
                         ", expected a whole number >= " + std::to_string(hsize) + " (corrupt header)");
  layout.vox_offset = static_cast<std::int64_t>(vox_offset);
  layout.size = dsize;
  std::int64_t n = 1;
  for (auto d : out.dims) {
    if (n > std::numeric_limits<std::int64_t>::max() / dsize / d)
      nifti_fail(path, "the dimensions overflow 64 bits (corrupt header)");
    n *= d;
  }
  layout.nbytes = n * dsize;
  return out;
}

// Reads the whole file: header, then the data block (grown as the bytes arrive, so a header claiming more than
// the file holds cannot make us allocate it), then the rest of the stream for the gzip checks.
inline NiftiHeader read_raw(const std::string& path, std::vector<unsigned char>& raw, NiftiLayout& layout) {
  nifti_gz_name(path, false);
  GzReader in(path);
  NiftiHeader h = parse_header(path, in, layout);
  const std::int64_t hsize = h.version == 1 ? 348 : 540;
  // Extensions (or padding) up to vox_offset, skipped in pieces: a damaged offset must not make us allocate it.
  for (std::int64_t left = layout.vox_offset - hsize; left > 0;) {
    unsigned char skip[1 << 14];
    const std::size_t want = static_cast<std::size_t>(std::min<std::int64_t>(left, sizeof skip));
    if (in.read(skip, want) < want)
      nifti_fail(path, "truncated: the file ends before vox_offset " + std::to_string(layout.vox_offset));
    left -= static_cast<std::int64_t>(want);
  }
  try {
    raw.clear();
    const std::size_t total = static_cast<std::size_t>(layout.nbytes);
    // Doubling steps (from 16 MiB): amortised linear copying, and never much more than the file really holds.
    while (raw.size() < total) {
      const std::size_t want = std::min(std::max(std::size_t(16) << 20, raw.size()), total - raw.size());
      const std::size_t at = raw.size();
      raw.resize(at + want);
      const std::size_t got = in.read(raw.data() + at, want);
      if (got < want)
        nifti_fail(path, "truncated: " + std::to_string(at + got) + " bytes of voxel data, the header's dimensions " +
                             "and data type need " + std::to_string(total));
    }
  } catch (const std::bad_alloc&) {
    nifti_fail(path, "the voxel data (" + std::to_string(layout.nbytes) + " bytes) does not fit in memory");
  }
  in.drain();
  return h;
}

// Stored values of type R to T, scaled as nibabel's apply_read_scaling in double: the multiply is skipped when the
// slope is 1, the add when the intercept is 0, and the product goes through a volatile so it is never fused into an
// fma (numpy rounds it separately).
template <class R, class T>
void decode_values(const unsigned char* src, std::size_t n, double slope, double inter, T* dst) {
  auto raw = [src](std::size_t i) {
    R v;
    std::memcpy(&v, src + i * sizeof(R), sizeof(R));
    return static_cast<double>(v);
  };
  if (slope != 1 && inter != 0) {
    for (std::size_t i = 0; i < n; ++i) {
      volatile double p = raw(i) * slope;
      dst[i] = static_cast<T>(p + inter);
    }
  } else if (slope != 1) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(raw(i) * slope);
  } else if (inter != 0) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(raw(i) + inter);
  } else {
    for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(raw(i));
  }
}

template <class T>
void decode_all(NiftiDType type, const unsigned char* src, std::size_t n, double slope, double inter, T* dst) {
  switch (type) {
    case NiftiDType::uint8: decode_values<std::uint8_t>(src, n, slope, inter, dst); break;
    case NiftiDType::int8: decode_values<std::int8_t>(src, n, slope, inter, dst); break;
    case NiftiDType::int16: decode_values<std::int16_t>(src, n, slope, inter, dst); break;
    case NiftiDType::uint16: decode_values<std::uint16_t>(src, n, slope, inter, dst); break;
    case NiftiDType::int32: decode_values<std::int32_t>(src, n, slope, inter, dst); break;
    case NiftiDType::uint32: decode_values<std::uint32_t>(src, n, slope, inter, dst); break;
    case NiftiDType::int64: decode_values<std::int64_t>(src, n, slope, inter, dst); break;
    case NiftiDType::uint64: decode_values<std::uint64_t>(src, n, slope, inter, dst); break;
    case NiftiDType::float32: decode_values<float>(src, n, slope, inter, dst); break;
    case NiftiDType::float64: decode_values<double>(src, n, slope, inter, dst); break;
  }
}

// Values to stored type R, undoing a valid scale first ((v - inter) / slope in double). Integer types round to
// nearest, ties to even; a value outside R's range (or NaN) is an error. Floats round to nearest.
template <class R, class T>
void encode_values(const std::string& path, const T* v, std::size_t n, const NiftiHeader& h, unsigned char* dst) {
  const bool scaled = h.has_scaling();
  const double slope = h.scl_slope, inter = h.scl_inter;
  for (std::size_t i = 0; i < n; ++i) {
    double x = static_cast<double>(v[i]);
    if (scaled) {
      if (inter != 0) x = x - inter;
      if (slope != 1) x = x / slope;
    }
    R r;
    if constexpr (std::is_integral_v<R>) {
      const double lo = static_cast<double>(std::numeric_limits<R>::min());
      const double hi = static_cast<double>(std::numeric_limits<R>::max());
      const double y = std::nearbyint(x);
      // For 64-bit types hi rounds up to 2^63 / 2^64, which itself does not fit: compare strictly there.
      const bool too_big = sizeof(R) == 8 ? y >= hi : y > hi;
      if (!(y >= lo) || too_big)
        nifti_value_fail(path, "voxel " + std::to_string(i) + " holds " + std::to_string(static_cast<double>(v[i])) +
                                   ", which is " + std::to_string(x) +
                                   " after undoing scl_slope / scl_inter: outside the " + nifti_dtype_name(h.datatype) +
                                   " range");
      r = static_cast<R>(y);
    } else {
      r = static_cast<R>(x);
    }
    std::memcpy(dst + i * sizeof(R), &r, sizeof(R));
  }
}

template <class H>
void fill_common(const std::string& path, const NiftiHeader& in, H& h) {
  using F = std::remove_reference_t<decltype(h.pixdim[0])>;
  using D = std::remove_reference_t<decltype(h.dim[0])>;
  h.dim[0] = static_cast<D>(in.dims.size());
  for (int i = 1; i < 8; ++i) h.dim[i] = static_cast<D>(i <= static_cast<int>(in.dims.size()) ? in.dims[i - 1] : 1);
  h.pixdim[0] = static_cast<F>(in.qfac == -1 ? -1 : 1);
  for (int i = 0; i < 7; ++i) h.pixdim[i + 1] = static_cast<F>(in.pixdim[i]);
  h.qform_code = static_cast<decltype(h.qform_code)>(in.qform_code);
  h.sform_code = static_cast<decltype(h.sform_code)>(in.sform_code);
  h.quatern_b = static_cast<F>(in.quatern_b);
  h.quatern_c = static_cast<F>(in.quatern_c);
  h.quatern_d = static_cast<F>(in.quatern_d);
  h.qoffset_x = static_cast<F>(in.qoffset_x);
  h.qoffset_y = static_cast<F>(in.qoffset_y);
  h.qoffset_z = static_cast<F>(in.qoffset_z);
  for (int c = 0; c < 4; ++c) {
    h.srow_x[c] = static_cast<F>(in.srow[0][c]);
    h.srow_y[c] = static_cast<F>(in.srow[1][c]);
    h.srow_z[c] = static_cast<F>(in.srow[2][c]);
  }
  h.scl_slope = static_cast<F>(in.scl_slope);
  h.scl_inter = static_cast<F>(in.scl_inter);
  h.xyzt_units = static_cast<decltype(h.xyzt_units)>(in.xyzt_units);
  h.intent_code = static_cast<decltype(h.intent_code)>(in.intent_code);
  h.intent_p1 = static_cast<F>(in.intent_p1);
  h.intent_p2 = static_cast<F>(in.intent_p2);
  h.intent_p3 = static_cast<F>(in.intent_p3);
  put_string(path, "intent_name", in.intent_name, h.intent_name, sizeof h.intent_name);
  h.cal_min = static_cast<F>(in.cal_min);
  h.cal_max = static_cast<F>(in.cal_max);
  h.slice_code = static_cast<decltype(h.slice_code)>(in.slice_code);
  h.slice_start = static_cast<decltype(h.slice_start)>(in.slice_start);
  h.slice_end = static_cast<decltype(h.slice_end)>(in.slice_end);
  h.slice_duration = static_cast<F>(in.slice_duration);
  h.toffset = static_cast<F>(in.toffset);
  h.dim_info = static_cast<char>(in.dim_info);
  put_string(path, "descrip", in.descrip, h.descrip, sizeof h.descrip);
  put_string(path, "aux_file", in.aux_file, h.aux_file, sizeof h.aux_file);
}

inline void check_for_writing(const std::string& path, const NiftiHeader& h, std::size_t nvalues) {
  auto bad = [&](const std::string& what) { nifti_value_fail(path, what); };
  if (h.version != 1 && h.version != 2) bad("version is " + std::to_string(h.version) + ", expected 1 or 2");
  if (h.dims.empty() || h.dims.size() > 7)
    bad("the image has " + std::to_string(h.dims.size()) + " dimensions, expected 1 to 7");
  std::int64_t n = 1;
  for (std::size_t i = 0; i < h.dims.size(); ++i) {
    const auto d = h.dims[i];
    if (d < 1) bad("dims[" + std::to_string(i) + "] is " + std::to_string(d) + ", expected a positive size");
    if (h.version == 1 && d > 32767)
      bad("dims[" + std::to_string(i) + "] is " + std::to_string(d) + ", NIfTI-1 holds at most 32767: use version 2");
    if (n > std::numeric_limits<std::int64_t>::max() / d) bad("the dimensions overflow 64 bits");
    n *= d;
  }
  if (static_cast<std::uint64_t>(n) != nvalues)
    bad("the header's dims hold " + std::to_string(n) + " voxels but the image has " + std::to_string(nvalues) +
        " values");
  if (nifti_dtype_size(static_cast<int>(h.datatype)) == 0)
    bad("data type code " + std::to_string(static_cast<int>(h.datatype)) + " is not one mmnet writes");
  auto in_range = [&](const char* what, std::int64_t v, std::int64_t lo, std::int64_t hi) {
    if (v < lo || v > hi)
      bad(std::string(what) + " is " + std::to_string(v) + ", the NIfTI-" + std::to_string(h.version) +
          " field holds " + std::to_string(lo) + " to " + std::to_string(hi));
  };
  const std::int64_t short_max = 32767, int_max = 2147483647;
  const std::int64_t code_max = h.version == 1 ? short_max : int_max;
  in_range("qform_code", h.qform_code, -code_max - 1, code_max);
  in_range("sform_code", h.sform_code, -code_max - 1, code_max);
  in_range("intent_code", h.intent_code, -code_max - 1, code_max);
  in_range("xyzt_units", h.xyzt_units, 0, h.version == 1 ? 255 : int_max);
  in_range("slice_code", h.slice_code, 0, h.version == 1 ? 255 : int_max);
  in_range("dim_info", h.dim_info, 0, 255);
  if (h.version == 1) {
    in_range("slice_start", h.slice_start, -short_max - 1, short_max);
    in_range("slice_end", h.slice_end, -short_max - 1, short_max);
  }
  if (h.has_scaling() && !std::isfinite(h.scl_inter))
    bad("scl_slope is " + std::to_string(h.scl_slope) + " but scl_inter is not finite");
}

// Header, extension flag and data as the bytes of a .nii file.
template <class T>
std::vector<unsigned char> encode(const std::string& path, const NiftiHeader& in, const std::vector<T>& values) {
  check_for_writing(path, in, values.size());
  const int dsize = nifti_dtype_size(static_cast<int>(in.datatype));
  const std::size_t hsize = in.version == 1 ? 348 : 540;
  const std::size_t offset = hsize + 4;
  const std::size_t n = values.size();
  std::vector<unsigned char> out;
  try {
    out.assign(offset + n * static_cast<std::size_t>(dsize), 0);
  } catch (const std::bad_alloc&) {
    nifti_value_fail(path, "the image (" + std::to_string(n) + " voxels) does not fit in memory as a file");
  }
  if (in.version == 1) {
    nifti_1_header h;
    std::memset(&h, 0, sizeof h);
    h.sizeof_hdr = 348;
    fill_common(path, in, h);
    h.datatype = static_cast<short>(in.datatype);
    h.bitpix = static_cast<short>(8 * dsize);
    h.vox_offset = static_cast<float>(offset);
    std::memcpy(h.magic, "n+1\0", 4);
    std::memcpy(out.data(), &h, sizeof h);
  } else {
    nifti_2_header h;
    std::memset(&h, 0, sizeof h);
    h.sizeof_hdr = 540;
    fill_common(path, in, h);
    h.datatype = static_cast<short>(in.datatype);
    h.bitpix = static_cast<short>(8 * dsize);
    h.vox_offset = static_cast<std::int64_t>(offset);
    std::memcpy(h.magic, "n+2\0\r\n\032\n", 8);
    std::memcpy(out.data(), &h, sizeof h);
  }
  unsigned char* dst = out.data() + offset;
  const T* v = values.data();
  switch (in.datatype) {
    case NiftiDType::uint8: encode_values<std::uint8_t>(path, v, n, in, dst); break;
    case NiftiDType::int8: encode_values<std::int8_t>(path, v, n, in, dst); break;
    case NiftiDType::int16: encode_values<std::int16_t>(path, v, n, in, dst); break;
    case NiftiDType::uint16: encode_values<std::uint16_t>(path, v, n, in, dst); break;
    case NiftiDType::int32: encode_values<std::int32_t>(path, v, n, in, dst); break;
    case NiftiDType::uint32: encode_values<std::uint32_t>(path, v, n, in, dst); break;
    case NiftiDType::int64: encode_values<std::int64_t>(path, v, n, in, dst); break;
    case NiftiDType::uint64: encode_values<std::uint64_t>(path, v, n, in, dst); break;
    case NiftiDType::float32: encode_values<float>(path, v, n, in, dst); break;
    case NiftiDType::float64: encode_values<double>(path, v, n, in, dst); break;
  }
  return out;
}

// Writes bytes (gzip-compressed when gz) atomically (io/atomic_file.hpp).
inline void save_atomically(const std::string& path, const std::vector<unsigned char>& bytes, bool gz) {
  write_file_atomically(
      path,
      [&](FileSink& out) {
        if (!gz) return out.write(bytes.data(), bytes.size());
        // gzclose_w closes its descriptor: compress through a duplicate, the sink's own is synced after.
        const int fd2 = ::dup(out.fd());
        if (fd2 < 0) out.fail_errno("cannot duplicate the descriptor of", errno);
        gzFile g = gzdopen(fd2, "wb1");
        if (!g) {
          ::close(fd2);
          out.fail_errno("cannot start gzip compression of", ENOMEM);
        }
        std::size_t done = 0;
        while (done < bytes.size()) {
          const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(bytes.size() - done, 1u << 30));
          errno = 0;
          const int w = gzwrite(g, bytes.data() + done, chunk);
          if (w <= 0) {
            const int err = errno ? errno : EIO;
            gzclose_w(g);
            out.fail_errno("cannot write", err);
          }
          done += static_cast<std::size_t>(w);
        }
        errno = 0;
        if (gzclose_w(g) != Z_OK) out.fail_errno("cannot finish", errno ? errno : EIO);
      },
      [&](const std::string& problem) { nifti_fail(path, problem); });
}

}  // namespace detail

inline NiftiAffine NiftiHeader::qform_affine() const {
  // nibabel's Nifti1Header.get_qform: fillpositive, then quat2mat, scaled by pixdim with qfac on k.
  const double b = quatern_b, c = quatern_c, d = quatern_d;
  const double w2 = 1.0 - (b * b + c * c + d * d);
  const double threshold = -3.0 * (version == 1 ? double(std::numeric_limits<float>::epsilon())
                                                : std::numeric_limits<double>::epsilon());
  if (w2 < threshold)
    fail("mmnet::io::NiftiHeader::qform_affine", "|(quatern_b, quatern_c, quatern_d)|^2", "<= 1", 1.0 - w2);
  const double a = w2 < 0 ? 0.0 : std::sqrt(w2);
  double r[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  const double nq = a * a + b * b + c * c + d * d;
  if (nq >= std::numeric_limits<double>::epsilon()) {
    const double s = 2.0 / nq;
    const double X = b * s, Y = c * s, Z = d * s;
    const double wX = a * X, wY = a * Y, wZ = a * Z, xX = b * X, xY = b * Y, xZ = b * Z, yY = c * Y, yZ = c * Z,
                 zZ = d * Z;
    const double m[3][3] = {{1.0 - (yY + zZ), xY - wZ, xZ + wY},
                            {xY + wZ, 1.0 - (xX + zZ), yZ - wX},
                            {xZ - wY, yZ + wX, 1.0 - (xX + yY)}};
    std::memcpy(r, m, sizeof r);
  }
  double vox[3] = {pixdim[0], pixdim[1], pixdim[2]};
  for (int i = 0; i < 3; ++i)
    if (vox[i] < 0)
      fail("mmnet::io::NiftiHeader::qform_affine", "pixdim[" + std::to_string(i + 1) + "]", ">= 0", vox[i]);
  vox[2] *= qfac == -1 ? -1.0 : 1.0;
  NiftiAffine out{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) out[i][j] = r[i][j] * vox[j];
  out[0][3] = qoffset_x;
  out[1][3] = qoffset_y;
  out[2][3] = qoffset_z;
  out[3] = {0, 0, 0, 1};
  return out;
}

inline NiftiAffine NiftiHeader::fallback_affine() const {
  // nibabel's get_base_affine (shape_zoom_affine with x flipped): centred on the volume.
  NiftiAffine out{};
  for (int i = 0; i < 3; ++i) {
    const double n = i < static_cast<int>(dims.size()) ? static_cast<double>(dims[i]) : 1.0;
    double z = i < static_cast<int>(dims.size()) ? pixdim[i] : 1.0;
    if (i == 0) z = -z;
    out[i][i] = z;
    out[i][3] = -((n - 1) / 2.0) * z;
  }
  out[3][3] = 1;
  return out;
}

inline NiftiAffine NiftiHeader::affine() const {
  if (sform_code != 0) {  // nibabel's get_best_affine tests != 0 (negative codes are invalid anyway)
    NiftiAffine out{};
    for (int i = 0; i < 3; ++i) out[i] = srow[i];
    out[3] = {0, 0, 0, 1};
    return out;
  }
  if (qform_code != 0) return qform_affine();
  return fallback_affine();
}

// The header of a .nii / .nii.gz file (only the header is read and checked, not the data).
inline NiftiHeader read_nifti_header(const std::string& path) {
  detail::nifti_gz_name(path, false);
  detail::GzReader in(path);
  detail::NiftiLayout layout;
  return detail::parse_header(path, in, layout);
}

// Reads a .nii / .nii.gz file: header and scaled voxel values (see the top of this file). Every problem with the
// file raises io_error naming it.
template <class T = double>
NiftiImage<T> read_nifti(const std::string& path) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::io::read_nifti: T must be float or double");
  std::vector<unsigned char> raw;
  detail::NiftiLayout layout;
  NiftiImage<T> img;
  img.header = detail::read_raw(path, raw, layout);
  const NiftiHeader& h = img.header;
  const std::size_t n = static_cast<std::size_t>(h.nvox());
  if (layout.swapped && layout.size > 1)
    nifti_swap_Nbytes(static_cast<int64_t>(n), layout.size, raw.data());  // niftilib
  double slope = 1, inter = 0;
  if (h.has_scaling()) {
    if (!std::isfinite(h.scl_inter))
      detail::nifti_fail(path, "scl_slope is " + std::to_string(h.scl_slope) +
                                   " but scl_inter is not finite: the values cannot be scaled (nibabel refuses too)");
    slope = h.scl_slope;
    inter = h.scl_inter;
  }
  try {
    img.data.resize(n);
    detail::decode_all(h.datatype, raw.data(), n, slope, inter, img.data.data());
  } catch (const std::bad_alloc&) {
    detail::nifti_fail(path, "the image (" + std::to_string(n) + " voxels) does not fit in memory");
  }
  return img;
}

// Writes image to path (.nii, or .nii.gz compressed) with image.header's version, data type and fields,
// atomically (see the top of this file). Bad image or header values raise value_error, file problems io_error.
template <class T>
void write_nifti(const std::string& path, const NiftiImage<T>& image) {
  const bool gz = detail::nifti_gz_name(path, true);
  const std::vector<unsigned char> bytes = detail::encode(path, image.header, image.data);
  detail::save_atomically(path, bytes, gz);
}

// The same with another voxel data type (the header's scl_slope / scl_inter still apply).
template <class T>
void write_nifti(const std::string& path, const NiftiImage<T>& image, NiftiDType datatype) {
  const bool gz = detail::nifti_gz_name(path, true);
  NiftiHeader h = image.header;
  h.datatype = datatype;
  const std::vector<unsigned char> bytes = detail::encode(path, h, image.data);
  detail::save_atomically(path, bytes, gz);
}

// The image as a Tensor of the reversed shape (..., t, z, y, x): a 3D image gives (D, H, W) = (nz, ny, nx), a 4D
// one (C, D, H, W) = (nt, nz, ny, nx). No data moves: the file order is the tensor's C order.
template <class T, class Backend, class U>
Tensor<T, Backend> to_tensor(const NiftiImage<U>& image) {
  const auto& d = image.header.dims;
  if (d.empty() || d.size() > 5)
    fail<shape_error>("mmnet::io::to_tensor", "NIfTI dimensions for a tensor", "1 to 5", d.size());
  std::vector<index_t> shape(d.rbegin(), d.rend());
  return Tensor<T, Backend>::from_vector(Shape(shape), image.data);
}

// An image holding t's values with header's fields; dims become t's shape reversed ((D, H, W) -> (x, y, z) =
// (W, H, D)), so to_tensor() gives t back.
template <class T, class Backend>
NiftiImage<T> image_from_tensor(const Tensor<T, Backend>& t, NiftiHeader header) {
  const auto s = t.shape().to_vector();
  header.dims.assign(s.rbegin(), s.rend());
  NiftiImage<T> img;
  img.header = std::move(header);
  img.data = t.to_vector();
  return img;
}

// ---- data::Volume / data::LabelMap (the data pipeline's host types) ------------------------------------------
// A Volume is C x D x H x W with W fastest: exactly NIfTI's file order for (x, y, z, t) with the 4th NIfTI axis
// as channels (multi-volume files, e.g. stacked modalities). Voxels are copied unchanged; spacing is (dz, dy, dx).

namespace detail {
// (C, D, H, W) of an image with 1 to 4 dimensions.
inline std::array<index_t, 4> cdhw(const NiftiHeader& h, const char* component) {
  const auto& d = h.dims;
  if (d.empty() || d.size() > 4)
    fail<shape_error>(component, "NIfTI dimensions", "1 to 4 (x, y, z[, channels])", d.size());
  auto at = [&](std::size_t i) { return i < d.size() ? static_cast<index_t>(d[i]) : index_t(1); };
  return {at(3), at(2), at(1), at(0)};
}
}  // namespace detail

// The image as a Volume: C = nt (1 for a 3D image), D = nz, H = ny, W = nx, spacing (dz, dy, dx).
template <class U>
data::Volume to_volume(const NiftiImage<U>& image) {
  const auto s = detail::cdhw(image.header, "mmnet::io::to_volume");
  if (static_cast<index_t>(image.data.size()) != s[0] * s[1] * s[2] * s[3])
    fail<shape_error>("mmnet::io::to_volume", "values for the header's dims", s[0] * s[1] * s[2] * s[3],
                      image.data.size());
  data::Volume v(s[0], s[1], s[2], s[3], {image.header.pixdim[2], image.header.pixdim[1], image.header.pixdim[0]});
  std::transform(image.data.begin(), image.data.end(), v.data.begin(), [](U x) { return static_cast<float>(x); });
  return v;
}

// The image as a LabelMap (a 3D image, or 4D with one volume, of whole numbers 0 to 255; anything else raises
// value_error naming the voxel).
template <class U>
data::LabelMap to_label_map(const NiftiImage<U>& image) {
  const auto s = detail::cdhw(image.header, "mmnet::io::to_label_map");
  if (s[0] != 1) fail<shape_error>("mmnet::io::to_label_map", "volumes (4th NIfTI dimension)", 1, s[0]);
  if (static_cast<index_t>(image.data.size()) != s[1] * s[2] * s[3])
    fail<shape_error>("mmnet::io::to_label_map", "values for the header's dims", s[1] * s[2] * s[3], image.data.size());
  data::LabelMap m(s[1], s[2], s[3], {image.header.pixdim[2], image.header.pixdim[1], image.header.pixdim[0]});
  for (std::size_t i = 0; i < image.data.size(); ++i) {
    const double x = static_cast<double>(image.data[i]);
    if (!(x >= 0 && x <= 255 && x == std::floor(x)))
      fail("mmnet::io::to_label_map", "voxel " + std::to_string(i) + " label", "a whole number 0 to 255", x);
    m.data[i] = static_cast<std::uint8_t>(x);
  }
  return m;
}

// An image of v with header's other fields (datatype, transforms, units, ...): dims (W, H, D), plus C as the 4th
// dimension when C > 1; pixdim[1..3] = (dx, dy, dz) from v.spacing. The sform / qform are kept as given: set
// them yourself if v's grid is not the one header describes (e.g. after resampling).
inline NiftiImage<float> image_from_volume(const data::Volume& v, NiftiHeader header) {
  header.dims = {v.width, v.height, v.depth};
  if (v.channels != 1) header.dims.push_back(v.channels);
  header.pixdim[0] = v.spacing[2];
  header.pixdim[1] = v.spacing[1];
  header.pixdim[2] = v.spacing[0];
  NiftiImage<float> img;
  img.header = std::move(header);
  img.data = v.data;
  return img;
}

// A label image of m: uint8, no scaling, the other fields from header (see image_from_volume).
inline NiftiImage<float> image_from_label_map(const data::LabelMap& m, NiftiHeader header) {
  header.dims = {m.width, m.height, m.depth};
  header.pixdim[0] = m.spacing[2];
  header.pixdim[1] = m.spacing[1];
  header.pixdim[2] = m.spacing[0];
  header.datatype = NiftiDType::uint8;
  header.scl_slope = 0;
  header.scl_inter = 0;
  NiftiImage<float> img;
  img.header = std::move(header);
  img.data.assign(m.data.begin(), m.data.end());
  return img;
}

}  // namespace mmnet::io
