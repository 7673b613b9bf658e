// mmnet/io/hdf5.hpp: state dicts as HDF5 files, through the HDF5 C library.
//
// Layout (format version 1): one dataset per state-dict entry at the file root, named by its dotted name,
// with PyTorch's shape and dtype (float32 / float64 / int64; 0-d for num_batches_tracked), in state-dict
// order (link creation order is tracked). Root attributes (fixed-length UTF-8 strings):
// mmnet_format_version, mmnet_library_version, model_name. tools/torch2h5.py and tools/h52torch.py convert
// to and from PyTorch .pt files and write the same layout.
//
// Grouped files (save_state_dict with an attribute map; io/checkpoint.hpp uses them): a name may contain '/',
// "model/conv1.weight" being dataset conv1.weight in group model. Groups track link creation order too, so
// read_all gives the entries back in state-dict order as long as each group's entries are contiguous there
// (otherwise grouped by first appearance). Weight files stay flat: tools/h52torch.py refuses groups.
//
// Integrity: files are written in the HDF5 1.10 object format, whose metadata (superblock, object headers,
// link indexes, chunk indexes) carries checksums, and every non-empty array is stored in chunks with the
// Fletcher-32 filter (0-d and empty arrays are compact, i.e. inside the checksummed object header). A flipped
// byte anywhere that matters therefore makes loading fail with io_error instead of yielding wrong weights.
// Files from other writers (plain h5py, without checksums) are read as they are; they cannot be verified, so a
// damaged one may load wrong values, and HDF5 1.10 itself can crash reading a damaged variable-length string
// attribute (read_attributes; load_state_dict reads only mmnet_format_version). Readers: HDF5 >= 1.10.
//
// save() builds the file in memory, writes it to "<path>.tmp-<pid>-<n>-<t>", fsyncs it and renames it over
// path, so a failed or interrupted save never leaves a half-written destination. Every failure throws
// mmnet::io_error naming the file and the problem; HDF5's own error printing is silenced while mmnet calls it.
#pragma once
#include <hdf5.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/state_dict.hpp"
#include "atomic_file.hpp"

namespace mmnet::io {

inline constexpr int hdf5_format_version = 1;

namespace detail {

// RAII for one HDF5 identifier.
class H5Id {
 public:
  H5Id() = default;
  H5Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  H5Id(H5Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  ~H5Id() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and reports whether closing succeeded (a file's close is where its data is flushed).
  bool reset() {
    bool ok = true;
    if (id_ >= 0 && close_) ok = close_(id_) >= 0;
    id_ = -1;
    return ok;
  }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// HDF5 prints its error stack to stderr by default; mmnet reports through exceptions instead. The handler is
// per thread in thread-safe builds, so each public call turns it off for its own thread and restores the
// caller's handler afterwards (an application's own HDF5 use keeps its settings).
class QuietErrors {
 public:
  QuietErrors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The innermost message of the current thread's HDF5 error stack ("truncated file: eof = ...",
// "incorrect metadata checksum ..."), to say why a call failed. Call it right after the failing call.
inline std::string hdf5_reason() {
  std::string reason;
  auto walk = [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
    if (n == 0 && e && e->desc) *static_cast<std::string*>(out) = e->desc;
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk, &reason);
  if (reason.size() > 200) reason = reason.substr(0, 200) + "...";
  return reason.empty() ? std::string() : " (HDF5: " + reason + ")";
}

[[noreturn]] inline void fail_file(const std::string& path, const std::string& problem) {
  throw io_error("mmnet::io::hdf5: " + path + ": " + problem);
}

inline std::string quote_name(const std::string& name) { return "'" + name + "'"; }

inline const char* type_class_name(H5T_class_t c) {
  switch (c) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_TIME: return "time";
    case H5T_STRING: return "string";
    case H5T_BITFIELD: return "bitfield";
    case H5T_OPAQUE: return "opaque";
    case H5T_COMPOUND: return "compound";
    case H5T_REFERENCE: return "reference";
    case H5T_ENUM: return "enum (e.g. a bool array)";
    case H5T_VLEN: return "variable-length";
    case H5T_ARRAY: return "array";
    default: return "unknown";
  }
}

// File access: HDF5 1.10 object format (checksummed metadata) for new files; file locking where the file
// system supports it, ignored where it does not (NFS, Lustre) rather than failing.
inline H5Id file_access(bool for_writing) {
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid()) return fapl;
  if (for_writing) {
#if H5_VERSION_GE(1, 10, 2)
    H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110);
#else
    H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
#endif
  }
#if H5_VERSION_GE(1, 10, 7)
  H5Pset_file_locking(fapl.get(), true, true);
#endif
  return fapl;
}

inline H5Id open_for_reading(const std::string& path) {
  if (path.empty()) throw io_error("mmnet::io::hdf5: empty file name");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail_file(path, std::string("cannot open the file: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail_file(path, "is a directory, not an HDF5 file");
  if (::access(path.c_str(), R_OK) != 0) fail_file(path, std::string("cannot read the file: ") + std::strerror(errno));
  if (st.st_size == 0) fail_file(path, "not an HDF5 file (the file is empty)");
  const htri_t is = H5Fis_hdf5(path.c_str());
  if (is <= 0)
    fail_file(path, "not an HDF5 file (no HDF5 signature: another format, or cut off before the superblock)" +
                        hdf5_reason());
  H5Id fapl = file_access(false);
  H5Id f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  if (!f.valid()) fail_file(path, "the HDF5 file is truncated or corrupt: it cannot be opened" + hdf5_reason());
  return f;
}

// Reads one dataset as float32 / float64 / int64 (other integer and float widths convert; anything else throws).
inline HostArray read_dataset(hid_t file, const std::string& path, const std::string& name) {
  const std::string what = "dataset " + quote_name(name);
  H5Id ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) fail_file(path, "cannot open " + what + " (corrupt file?)" + hdf5_reason());
  H5Id type(H5Dget_type(ds.get()), H5Tclose);
  if (!type.valid()) fail_file(path, what + " has an unreadable data type (corrupt file?)" + hdf5_reason());
  H5Id space(H5Dget_space(ds.get()), H5Sclose);
  if (!space.valid()) fail_file(path, what + " has an unreadable shape (corrupt file?)" + hdf5_reason());

  HostArray a;
  const H5T_class_t cls = H5Tget_class(type.get());
  const std::size_t size = H5Tget_size(type.get());
  if (cls == H5T_FLOAT && size > 0) {
    a.dtype = size <= 4 ? DType::f32 : DType::f64;  // float16 widens to float32
  } else if (cls == H5T_INTEGER && size > 0) {
    a.dtype = DType::i64;
  } else {
    fail_file(path, what + " holds " + type_class_name(cls) +
                        " data; a state dict holds float32, float64 or int64 numbers");
  }

  const H5S_class_t space_class = H5Sget_simple_extent_type(space.get());
  if (space_class == H5S_NULL) fail_file(path, what + " has no data (null dataspace); expected an array or a scalar");
  if (space_class != H5S_SCALAR && space_class != H5S_SIMPLE)
    fail_file(path, what + " has an unreadable shape (corrupt file?)" + hdf5_reason());
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail_file(path, what + " has an unreadable shape (corrupt file?)" + hdf5_reason());
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    fail_file(path, what + " has an unreadable shape (corrupt file?)" + hdf5_reason());
  hsize_t n = 1;
  for (auto d : dims) {
    if (d > static_cast<hsize_t>(INT64_MAX) || (d != 0 && n > static_cast<hsize_t>(INT64_MAX) / d))
      fail_file(path, what + " has an impossible shape (corrupt file?)");
    n *= d;
    a.shape.push_back(static_cast<index_t>(d));
  }

  // Contiguous and compact datasets store exactly n * size bytes. Anything else is damage (or a dataset never
  // written), and HDF5 1.10 may read out of bounds on it (found by flipping bytes in plain h5py files).
  {
    H5Id dcpl(H5Dget_create_plist(ds.get()), H5Pclose);
    const H5D_layout_t layout = dcpl.valid() ? H5Pget_layout(dcpl.get()) : H5D_LAYOUT_ERROR;
    if (layout == H5D_LAYOUT_ERROR) fail_file(path, what + " has an unreadable layout (corrupt file?)" + hdf5_reason());
    if ((layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) && n > 0) {
      const hsize_t stored = H5Dget_storage_size(ds.get());
      if (n > std::numeric_limits<hsize_t>::max() / size || stored != n * size)
        fail_file(path, what + " stores " + std::to_string(stored) + " bytes for " + std::to_string(n) + " values of " +
                            std::to_string(size) + " bytes (never written, truncated or corrupt)");
    }
  }

  try {
    a.data.resize(static_cast<std::size_t>(n));
    if (n == 0) return a;
    herr_t rc = -1;
    // Read in the file's own width, so HDF5 converts nothing for the formats mmnet and PyTorch write.
    if (a.dtype == DType::f32) {
      std::vector<float> v(static_cast<std::size_t>(n));
      rc = H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
      std::copy(v.begin(), v.end(), a.data.begin());
    } else if (a.dtype == DType::f64) {
      rc = H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data.data());
    } else {
      std::vector<long long> v(static_cast<std::size_t>(n));
      rc = H5Dread(ds.get(), H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
      std::transform(v.begin(), v.end(), a.data.begin(), [](long long x) { return static_cast<double>(x); });
    }
    if (rc < 0)
      fail_file(path, "cannot read " + what + ": corrupt or truncated data (checksum or read error)" + hdf5_reason());
  } catch (const std::bad_alloc&) {
    fail_file(path, what + " of shape " + a.shape_str() + " does not fit in memory (corrupt file?)");
  } catch (const std::length_error&) {
    fail_file(path, what + " of shape " + a.shape_str() + " does not fit in memory (corrupt file?)");
  }
  return a;
}

// One link of a group, as H5Literate reports it.
struct LinkEntry {
  std::string name;
  std::int64_t corder = 0;
  bool corder_valid = false;
};

// A template, so that it matches both H5L_info_t (HDF5 1.10) and H5L_info2_t (1.12+).
template <class LinkInfo>
herr_t collect_link(hid_t, const char* name, const LinkInfo* info, void* op) {
  try {
    // Soft and external links would duplicate entries or leave the file.
    if (info->type == H5L_TYPE_HARD)
      static_cast<std::vector<LinkEntry>*>(op)->push_back({name, info->corder, info->corder_valid != 0});
    return 0;
  } catch (...) {
    return -1;
  }
}

// The hard links of a group, in creation order when the group tracks it, else by name.
//
// Links are always fetched in HDF5's native order and sorted here. Asking HDF5 for an increasing order makes it
// build a table of all links first, and when that fails half way (a checksum error in a damaged file) HDF5
// 1.10 frees the table's uninitialised entries (H5G__link_release_table): a crash risk found with valgrind.
inline bool group_links(hid_t group, std::vector<LinkEntry>& links) {
  hsize_t idx = 0;
  links.clear();
  // Groups that do not track creation order refuse at once; name order then.
  if (H5Literate(group, H5_INDEX_CRT_ORDER, H5_ITER_NATIVE, &idx, collect_link, &links) < 0) {
    links.clear();
    idx = 0;
    if (H5Literate(group, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, collect_link, &links) < 0) return false;
  }
  const bool by_corder = !links.empty() && std::all_of(links.begin(), links.end(), [](auto& l) { return l.corder_valid; });
  std::sort(links.begin(), links.end(), [by_corder](const LinkEntry& a, const LinkEntry& b) {
    return by_corder ? a.corder < b.corder : a.name < b.name;  // std::string order is HDF5's (strcmp)
  });
  return true;
}

// Datasets of a group and, recursively, of its subgroups ("group/name").
inline void list_group(hid_t group, const std::string& path, const std::string& prefix, int depth,
                       std::vector<std::string>& names) {
  // Hard links can form cycles in a crafted file; real state dicts are flat.
  if (depth > 32) fail_file(path, "cannot list the datasets: groups nested deeper than 32 levels (a cycle of links?)");
  std::vector<LinkEntry> links;
  if (!group_links(group, links))
    fail_file(path, "cannot list the links of group '" + (prefix.empty() ? std::string("/") : prefix) +
                        "' (corrupt file?)" + hdf5_reason());
  for (auto& l : links) {
    H5Id obj(H5Oopen(group, l.name.c_str(), H5P_DEFAULT), H5Oclose);
    if (!obj.valid()) fail_file(path, "cannot open object " + quote_name(prefix + l.name) + " (corrupt file?)" + hdf5_reason());
    const H5I_type_t t = H5Iget_type(obj.get());
    if (t == H5I_DATASET) names.push_back(prefix + l.name);
    else if (t == H5I_GROUP) list_group(obj.get(), path, prefix + l.name + "/", depth + 1, names);
  }
}

inline std::vector<std::string> list_datasets(hid_t file, const std::string& path) {
  std::vector<std::string> names;
  try {
    list_group(file, path, "", 0, names);
  } catch (const std::bad_alloc&) {
    fail_file(path, "out of memory while listing the datasets (corrupt file?)");
  }
  return names;
}

// Root attributes as strings: strings as they are, integer and float scalars printed; others are skipped.
inline std::map<std::string, std::string> read_attributes(hid_t obj, const std::string& path, const char* only = nullptr) {
  std::vector<std::string> keys;
  auto collect = [](hid_t, const char* name, const H5A_info_t*, void* op) -> herr_t {
    try {
      static_cast<std::vector<std::string>*>(op)->emplace_back(name);
      return 0;
    } catch (...) {
      return -1;
    }
  };
  hsize_t idx = 0;
  if (only) {
    keys.emplace_back(only);
  } else {  // native order, sorted here: see group_links
    if (H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, collect, &keys) < 0)
      fail_file(path, "cannot list the root attributes (corrupt file?)" + hdf5_reason());
    std::sort(keys.begin(), keys.end());
  }
  std::map<std::string, std::string> out;
  for (auto& key : keys) {
    H5Id attr(H5Aopen(obj, key.c_str(), H5P_DEFAULT), H5Aclose);
    if (!attr.valid()) fail_file(path, "cannot open attribute " + quote_name(key) + " (corrupt file?)" + hdf5_reason());
    H5Id type(H5Aget_type(attr.get()), H5Tclose);
    H5Id space(H5Aget_space(attr.get()), H5Sclose);
    if (!type.valid() || !space.valid())
      fail_file(path, "cannot read attribute " + quote_name(key) + " (corrupt file?)" + hdf5_reason());
    if (H5Sget_simple_extent_npoints(space.get()) != 1) continue;  // arrays are not metadata mmnet uses
    const H5T_class_t cls = H5Tget_class(type.get());
    bool ok = true;
    if (cls == H5T_STRING) {
      const htri_t var = H5Tis_variable_str(type.get());
      if (var > 0) {
        // The memory type must carry the file's character set: HDF5 does not convert ASCII <-> UTF-8.
        H5Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
        H5Tset_size(mem.get(), H5T_VARIABLE);
        H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
        char* s = nullptr;
        ok = H5Aread(attr.get(), mem.get(), &s) >= 0;
        if (ok) out[key] = s ? s : "";
        if (s) H5free_memory(s);
      } else if (var == 0) {
        std::string s(H5Tget_size(type.get()), '\0');
        ok = H5Aread(attr.get(), type.get(), s.data()) >= 0;
        if (ok) {
          s = s.c_str();  // NULLTERM and NULLPAD
          if (H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD) s.erase(s.find_last_not_of(' ') + 1);
          out[key] = s;
        }
      } else {
        ok = false;
      }
    } else if (cls == H5T_INTEGER) {
      long long v = 0;
      ok = H5Aread(attr.get(), H5T_NATIVE_LLONG, &v) >= 0;
      if (ok) out[key] = std::to_string(v);
    } else if (cls == H5T_FLOAT) {
      double v = 0;
      ok = H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v) >= 0;
      if (ok) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.17g", v);
        out[key] = buf;
      }
    }
    if (!ok) fail_file(path, "cannot read attribute " + quote_name(key) + " (corrupt file?)" + hdf5_reason());
  }
  return out;
}

inline void write_string_attr(hid_t obj, const std::string& path, const char* key, const std::string& value) {
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  // Fixed length with room for the terminator, so every reader (h5py included) sees all characters.
  bool ok = type.valid() && H5Tset_size(type.get(), value.size() + 1) >= 0 &&
            H5Tset_strpad(type.get(), H5T_STR_NULLTERM) >= 0 && H5Tset_cset(type.get(), H5T_CSET_UTF8) >= 0;
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(ok && space.valid() ? H5Acreate2(obj, key, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT) : -1,
            H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), value.c_str()) < 0)
    fail_file(path, std::string("cannot write attribute ") + key + hdf5_reason());
}

// Chunks of at most max_chunk_bytes(): whole arrays up to that size (one chunk, one checksum), larger ones split
// along the leading axes. HDF5 caps a chunk at 4 GiB.
inline std::size_t& max_chunk_bytes() {
  static std::size_t limit = std::size_t(1) << 28;
  return limit;
}
inline std::vector<hsize_t> chunk_dims(const std::vector<hsize_t>& dims, std::size_t elem_size) {
  std::vector<hsize_t> c = dims;
  const hsize_t limit = std::max<hsize_t>(max_chunk_bytes(), elem_size);
  for (std::size_t i = 0; i < c.size(); ++i) {
    hsize_t inner = elem_size;  // bytes of one slice along axis i
    for (std::size_t j = i + 1; j < c.size(); ++j) inner *= c[j];
    if (inner * c[i] <= limit) break;
    c[i] = std::max<hsize_t>(1, limit / inner);
  }
  return c;
}

// A flat name is one non-empty link name other than '.' (HDF5's name for the group itself). A grouped name is
// such names joined by '/': no leading, trailing or doubled '/', no '.' component.
inline bool valid_name(const std::string& name, bool grouped) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = name.find('/', start);
    if (slash != std::string::npos && !grouped) return false;
    const std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == ".") return false;
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

// Everything that makes a state dict unwritable is found before any file is touched.
inline void validate_for_writing(const std::string& path, const StateDict& sd, bool grouped) {
  std::map<std::string, std::string> group_user;  // each group of a grouped name -> the first entry inside it
  for (auto& [name, a] : sd) {
    const std::string what = "entry " + quote_name(name);
    if (!valid_name(name, grouped))
      fail_file(path, what + (grouped ? ": not a valid dataset name (empty, or an empty or '.' part between '/')"
                                      : ": not a valid dataset name (empty, '.' or containing '/')"));
    for (auto slash = name.find('/'); slash != std::string::npos; slash = name.find('/', slash + 1))
      group_user.emplace(name.substr(0, slash), name);
    index_t n = 1;
    for (auto d : a.shape) {
      if (d < 0 || (d != 0 && n > INT64_MAX / d)) fail_file(path, what + ": invalid shape " + a.shape_str());
      n *= d;
    }
    if (static_cast<index_t>(a.data.size()) != n)
      fail_file(path, what + " holds " + std::to_string(a.data.size()) + " values for shape " + a.shape_str() + " (" +
                          std::to_string(n) + " expected)");
    if (a.dtype == DType::i64)
      for (double v : a.data)
        if (!(v == std::floor(v) && v >= -0x1p63 && v < 0x1p63))
          fail_file(path, what + " is int64 but holds the non-integer value " + std::to_string(v));
  }
  // "a" and "a/b" cannot both exist: a link is either a dataset or a group.
  for (auto& [name, a] : sd) {
    auto it = group_user.find(name);
    if (it != group_user.end())
      fail_file(path, "entry " + quote_name(name) + " is also the group of entry " + quote_name(it->second) +
                          " (a name cannot be both a dataset and a group)");
  }
}

inline void write_dataset(hid_t file, const std::string& path, const std::string& name, const HostArray& a) {
  const std::vector<hsize_t> dims(a.shape.begin(), a.shape.end());
  H5Id space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
             H5Sclose);
  const hid_t file_type = a.dtype == DType::f32 ? H5T_IEEE_F32LE : a.dtype == DType::f64 ? H5T_IEEE_F64LE : H5T_STD_I64LE;
  const std::size_t elem = a.dtype == DType::f32 ? 4 : 8;
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  bool ok = space.valid() && dcpl.valid() && H5Pset_obj_track_times(dcpl.get(), false) >= 0;  // reproducible bytes
  if (ok && !a.data.empty() && !dims.empty()) {
    const auto chunk = chunk_dims(dims, elem);
    // Fill time as h5py sets it, so that tools/torch2h5.py writes the same bytes (every chunk is written whole).
    ok = H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) >= 0 &&
         H5Pset_fletcher32(dcpl.get()) >= 0 && H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_ALLOC) >= 0;
  } else if (ok) {
    ok = H5Pset_layout(dcpl.get(), H5D_COMPACT) >= 0;  // 0-d or empty: the data sits in the checksummed header
  }
  if (!ok) fail_file(path, "cannot prepare dataset " + quote_name(name) + hdf5_reason());
  H5Id ds(H5Dcreate2(file, name.c_str(), file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) fail_file(path, "cannot create dataset " + quote_name(name) + hdf5_reason());
  herr_t rc = 0;
  if (a.dtype == DType::f32) {
    std::vector<float> v(a.data.begin(), a.data.end());
    if (!v.empty()) rc = H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  } else if (a.dtype == DType::f64) {
    if (!a.data.empty()) rc = H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data.data());
  } else {
    std::vector<long long> v(a.data.begin(), a.data.end());
    if (!v.empty()) rc = H5Dwrite(ds.get(), H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  }
  if (rc < 0 || !ds.reset()) fail_file(path, "cannot write dataset " + quote_name(name) + hdf5_reason());
}

// The core driver's memory, captured when HDF5 releases it at close, when the superblock is final.
// (H5Fget_file_image on the open file clears the superblock's status flags without updating its checksum in
// HDF5 1.10, which makes the image unreadable.) The callbacks run inside HDF5 and must not throw.
struct ImageCapture {
  std::vector<char> bytes;
  std::size_t capacity = 0;
  bool failed = false;
};
inline void* image_malloc(std::size_t size, H5FD_file_image_op_t, void* udata) {
  static_cast<ImageCapture*>(udata)->capacity = size;
  return std::malloc(size);
}
inline void* image_memcpy(void* dst, const void* src, std::size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(dst, src, size);
}
inline void* image_realloc(void* ptr, std::size_t size, H5FD_file_image_op_t, void* udata) {
  void* p = std::realloc(ptr, size);
  if (p) static_cast<ImageCapture*>(udata)->capacity = size;
  return p;
}
inline herr_t image_free(void* ptr, H5FD_file_image_op_t op, void* udata) {
  auto& cap = *static_cast<ImageCapture*>(udata);
  if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && ptr) {
    try {
      cap.bytes.assign(static_cast<char*>(ptr), static_cast<char*>(ptr) + cap.capacity);
    } catch (...) {
      cap.failed = true;
    }
  }
  std::free(ptr);
  return 0;
}
inline void* image_udata_copy(void* udata) { return udata; }
inline herr_t image_udata_free(void*) { return 0; }

// Builds the whole file in memory (HDF5's core driver without backing store) and returns its bytes, so that
// HDF5 itself never writes to disk. When a write inside HDF5 fails (disk full), H5Fclose fails too, the file
// stays open inside the library, and HDF5 1.10 crashes at program exit trying to close it again; our own
// write_file_atomically just reports the error.
//
// attributes: the root string attributes, in order; the groups of grouped names are created on the way.
inline std::vector<char> build_image(const std::string& path, const StateDict& sd,
                                     const std::vector<std::pair<std::string, std::string>>& attributes) {
  H5Id fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  // Creation order tracked and indexed, as h5py's track_order=True: datasets list in state-dict order.
  // No timestamps on the root group either: the same weights give the same bytes.
  if (!fcpl.valid() || H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0 ||
      H5Pset_attr_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0 ||
      H5Pset_obj_track_times(fcpl.get(), false) < 0)
    fail_file(path, "cannot set up the file creation properties" + hdf5_reason());
  ImageCapture capture;
  H5FD_file_image_callbacks_t callbacks = {image_malloc,     image_memcpy,     image_realloc, image_free,
                                           image_udata_copy, image_udata_free, &capture};
  H5Id fapl = file_access(true);
  if (!fapl.valid() || H5Pset_fapl_core(fapl.get(), std::size_t(1) << 20, /*backing_store=*/false) < 0 ||
      H5Pset_file_image_callbacks(fapl.get(), &callbacks) < 0)
    fail_file(path, "cannot set up the in-memory HDF5 file" + hdf5_reason());
  {
    // The name only identifies the in-memory file inside HDF5 (no two open files may share one).
    static std::atomic<unsigned> serial{0};
    const std::string name = "mmnet-in-memory-" + std::to_string(::getpid()) + "-" + std::to_string(serial++) + ".h5";
    H5Id f(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), H5Fclose);
    if (!f.valid()) fail_file(path, "cannot create the in-memory HDF5 file" + hdf5_reason());
    for (auto& [key, value] : attributes) write_string_attr(f.get(), path, key.c_str(), value);
    // Groups like the root: creation order tracked and indexed, no timestamps.
    H5Id gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    if (!gcpl.valid() || H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0 ||
        H5Pset_obj_track_times(gcpl.get(), false) < 0)
      fail_file(path, "cannot set up the group creation properties" + hdf5_reason());
    std::set<std::string> groups;
    for (auto& [key, a] : sd) {
      for (auto slash = key.find('/'); slash != std::string::npos; slash = key.find('/', slash + 1)) {
        const std::string group = key.substr(0, slash);
        if (!groups.insert(group).second) continue;
        H5Id g(H5Gcreate2(f.get(), group.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
        if (!g.valid()) fail_file(path, "cannot create group " + quote_name(group) + hdf5_reason());
      }
      write_dataset(f.get(), path, key, a);
    }
    if (!f.reset()) fail_file(path, "cannot close the in-memory HDF5 file" + hdf5_reason());
  }
  fapl.reset();
  // The file ends at the superblock's end-of-file address (version 2 and 3 superblocks, 8-byte addresses).
  std::vector<char>& b = capture.bytes;
  if (capture.failed) fail_file(path, "out of memory copying the in-memory HDF5 file");
  if (b.size() < 48 || (b[8] != 2 && b[8] != 3) || b[9] != 8)
    fail_file(path, "the in-memory HDF5 file has an unexpected superblock (internal error)");
  std::uint64_t eof = 0;
  for (int i = 7; i >= 0; --i) eof = (eof << 8) | static_cast<unsigned char>(b[28 + i]);
  if (eof < 48 || eof > (std::uint64_t(1) << 50))
    fail_file(path, "the in-memory HDF5 file has an unexpected size (internal error)");
  b.resize(static_cast<std::size_t>(eof), '\0');  // space allocated but never written reads as zeros
  return std::move(b);
}

// Every dataset of an open file, nested ones as "group/name", in file order.
inline StateDict read_entries(hid_t file, const std::string& path) {
  StateDict sd;
  for (auto& n : list_datasets(file, path)) sd.insert(n, read_dataset(file, path, n));
  return sd;
}

// Validates, builds the file in memory and writes it atomically: a temporary file in the same directory,
// fsynced, then renamed over path. On any failure the destination is untouched and the temporary file removed.
inline void save_file(const std::string& path, const StateDict& sd, bool grouped,
                      const std::vector<std::pair<std::string, std::string>>& attributes) {
  if (path.empty()) throw io_error("mmnet::io::hdf5: empty file name");
  validate_for_writing(path, sd, grouped);
  const std::vector<char> image = build_image(path, sd, attributes);
  write_file_atomically(path, [&](FileSink& out) { out.write(image.data(), image.size()); },
                        [&](const std::string& problem) { fail_file(path, problem); });
}

}  // namespace detail

// Names of all datasets in the file, in creation order when the file tracks it (mmnet and
// tools/torch2h5.py files do), else by name; datasets in groups appear as "group/name".
inline std::vector<std::string> list_datasets(const std::string& path) {
  detail::QuietErrors quiet;
  auto f = detail::open_for_reading(path);
  return detail::list_datasets(f.get(), path);
}

// Every dataset of the file (nested ones as "group/name"), as a StateDict.
inline StateDict read_all(const std::string& path) {
  detail::QuietErrors quiet;
  auto f = detail::open_for_reading(path);
  return detail::read_entries(f.get(), path);
}

// String attributes of the file root (mmnet_format_version, mmnet_library_version, model_name, ...); integer
// and float scalars are given as text; array-valued attributes are left out.
inline std::map<std::string, std::string> read_attributes(const std::string& path) {
  detail::QuietErrors quiet;
  auto f = detail::open_for_reading(path);
  return detail::read_attributes(f.get(), path);
}

// A state dict file (root datasets in file order). Files from newer mmnet formats are refused; files without
// mmnet's attributes (e.g. written by plain h5py) are read as they are.
inline StateDict load_state_dict(const std::string& path) {
  detail::QuietErrors quiet;
  auto f = detail::open_for_reading(path);
  // Only the version attribute is read: other attributes (e.g. h5py's variable-length strings) do not matter here.
  const htri_t has_version = H5Aexists(f.get(), "mmnet_format_version");
  if (has_version < 0) detail::fail_file(path, "cannot read the root attributes (corrupt file?)" + detail::hdf5_reason());
  if (has_version > 0) {
    const auto attrs = detail::read_attributes(f.get(), path, "mmnet_format_version");
    auto it = attrs.find("mmnet_format_version");
    const std::string text = it == attrs.end() ? std::string("(not a scalar)") : it->second;
    long v = -1;
    try {
      std::size_t used = 0;
      v = std::stol(text, &used);
      if (used != text.size()) v = -1;
    } catch (const std::exception&) {
      v = -1;
    }
    if (v < 1 || v > hdf5_format_version)
      detail::fail_file(path, "mmnet_format_version is '" + text + "'; this mmnet reads format 1 to " +
                                  std::to_string(hdf5_format_version) + " (file from a newer mmnet?)");
  }
  return detail::read_entries(f.get(), path);
}

// Writes sd as a weights file (flat: names may not contain '/'), atomically: a temporary file in the same
// directory, fsynced, then renamed over path. On any failure the destination is untouched and the temporary
// file removed.
inline void save_state_dict(const std::string& path, const StateDict& sd, const std::string& model_name = "") {
  detail::QuietErrors quiet;
  detail::save_file(path, sd, /*grouped=*/false,
                    {{"mmnet_format_version", std::to_string(hdf5_format_version)},
                     {"mmnet_library_version", MMNET_VERSION_STRING},
                     {"model_name", model_name}});
}

// Writes sd as a grouped file, atomically as above: names may contain '/' (see the layout above), and
// attributes become further root string attributes. model_name is written as "" unless attributes gives it;
// mmnet_format_version and mmnet_library_version are mmnet's own and cannot be given.
inline void save_state_dict(const std::string& path, const StateDict& sd,
                            const std::map<std::string, std::string>& attributes) {
  detail::QuietErrors quiet;
  if (path.empty()) throw io_error("mmnet::io::hdf5: empty file name");
  std::vector<std::pair<std::string, std::string>> attrs = {
      {"mmnet_format_version", std::to_string(hdf5_format_version)}, {"mmnet_library_version", MMNET_VERSION_STRING}};
  if (!attributes.count("model_name")) attrs.emplace_back("model_name", "");
  for (auto& [key, value] : attributes) {
    if (key.empty()) detail::fail_file(path, "an attribute name is empty");
    if (key == "mmnet_format_version" || key == "mmnet_library_version")
      detail::fail_file(path, "attribute " + key + " is written by mmnet itself and cannot be given");
    attrs.emplace_back(key, value);
  }
  detail::save_file(path, sd, /*grouped=*/true, attrs);
}

}  // namespace mmnet::io
