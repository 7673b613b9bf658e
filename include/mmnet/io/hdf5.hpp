// mmnet/io/hdf5.hpp: state dicts as HDF5 files, through the HDF5 C library.
//
// Layout (format version 1): one dataset per state-dict entry at the file root, named by its dotted name,
// with PyTorch's shape and dtype (float32 / float64 / int64; 0-d for num_batches_tracked), in state-dict
// order (link creation order is tracked). Root attributes: mmnet_format_version, mmnet_library_version,
// model_name. tools/torch2h5.py and tools/h52torch.py convert to and from PyTorch .pt files.
//
// save() writes "<path>.tmp-<pid>-<n>" and renames it over path, so a failed or interrupted save never leaves
// a half-written destination. Every failure throws mmnet::io_error naming the file and the problem.
#pragma once
#include <hdf5.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/state_dict.hpp"

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

// HDF5 prints its own error stack to stderr by default; mmnet reports through exceptions instead.
inline void silence_hdf5() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

[[noreturn]] inline void fail_file(const std::string& path, const std::string& problem) {
  throw io_error("mmnet::io::hdf5: " + path + ": " + problem);
}

inline H5Id open_for_reading(const std::string& path) {
  silence_hdf5();
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail_file(path, "cannot open the file (missing or unreadable)");
  }
  const htri_t is = H5Fis_hdf5(path.c_str());
  if (is <= 0) fail_file(path, "not an HDF5 file (no HDF5 signature; truncated or another format)");
  H5Id f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.valid()) fail_file(path, "the HDF5 file is corrupt or truncated (H5Fopen failed)");
  return f;
}

inline HostArray read_dataset(hid_t file, const std::string& path, const std::string& name) {
  H5Id ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) fail_file(path, "cannot open dataset '" + name + "'");
  H5Id type(H5Dget_type(ds.get()), H5Tclose);
  H5Id space(H5Dget_space(ds.get()), H5Sclose);
  if (!type.valid() || !space.valid()) fail_file(path, "dataset '" + name + "' has an unreadable type or shape");
  HostArray a;
  const H5T_class_t cls = H5Tget_class(type.get());
  const size_t size = H5Tget_size(type.get());
  if (cls == H5T_FLOAT) {
    a.dtype = size <= 4 ? DType::f32 : DType::f64;
  } else if (cls == H5T_INTEGER) {
    a.dtype = DType::i64;
  } else {
    fail_file(path, "dataset '" + name + "': expected a float or integer dataset, got HDF5 type class " +
                        std::to_string(static_cast<int>(cls)));
  }
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail_file(path, "dataset '" + name + "' has an unreadable shape");
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    fail_file(path, "dataset '" + name + "' has an unreadable shape");
  for (auto d : dims) a.shape.push_back(static_cast<index_t>(d));
  a.data.resize(static_cast<std::size_t>(a.numel()));
  if (!a.data.empty() && H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data.data()) < 0)
    fail_file(path, "cannot read dataset '" + name + "' (corrupt or truncated data)");
  return a;
}

struct VisitState {
  std::vector<std::string> names;
};
inline herr_t collect_dataset(hid_t, const char* name, const H5O_info_t* info, void* op) {
  if (info->type == H5O_TYPE_DATASET) static_cast<VisitState*>(op)->names.emplace_back(name);
  return 0;
}

inline void write_string_attr(hid_t obj, const char* key, const std::string& value) {
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), value.empty() ? 1 : value.size());
  H5Tset_strpad(type.get(), H5T_STR_NULLTERM);
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(H5Acreate2(obj, key, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), value.empty() ? "" : value.c_str()) < 0)
    throw io_error(std::string("mmnet::io::hdf5: cannot write attribute ") + key);
}

}  // namespace detail

// Names of all datasets in the file, in creation order when the file tracks it (mmnet and
// tools/torch2h5.py files do), else by name; nested groups appear as "group/name".
inline std::vector<std::string> list_datasets(const std::string& path) {
  auto f = detail::open_for_reading(path);
  detail::VisitState st;
  herr_t rc = H5Ovisit(f.get(), H5_INDEX_CRT_ORDER, H5_ITER_INC, detail::collect_dataset, &st);
  if (rc < 0) {
    st.names.clear();
    rc = H5Ovisit(f.get(), H5_INDEX_NAME, H5_ITER_INC, detail::collect_dataset, &st);
  }
  if (rc < 0) detail::fail_file(path, "cannot list the datasets (corrupt file)");
  return st.names;
}

// Every dataset of the file (nested ones as "group/name"), as a StateDict.
inline StateDict read_all(const std::string& path) {
  const auto names = list_datasets(path);
  auto f = detail::open_for_reading(path);
  StateDict sd;
  for (auto& n : names) sd.insert(n, detail::read_dataset(f.get(), path, n));
  return sd;
}

// A state dict written by save_state_dict (root datasets only).
inline StateDict load_state_dict(const std::string& path) { return read_all(path); }

// String attributes of the file root (mmnet_format_version, mmnet_library_version, model_name, ...).
inline std::map<std::string, std::string> read_attributes(const std::string& path) {
  auto f = detail::open_for_reading(path);
  std::map<std::string, std::string> out;
  const int n = H5Aget_num_attrs(f.get());
  for (int i = 0; i < n; ++i) {
    detail::H5Id attr(H5Aopen_by_idx(f.get(), ".", H5_INDEX_NAME, H5_ITER_INC, static_cast<hsize_t>(i), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!attr.valid()) detail::fail_file(path, "cannot read attribute " + std::to_string(i));
    char name[256] = {0};
    H5Aget_name(attr.get(), sizeof(name) - 1, name);
    detail::H5Id type(H5Aget_type(attr.get()), H5Tclose);
    if (H5Tget_class(type.get()) == H5T_STRING) {
      if (H5Tis_variable_str(type.get()) > 0) {
        char* s = nullptr;
        detail::H5Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
        H5Tset_size(mem.get(), H5T_VARIABLE);
        if (H5Aread(attr.get(), mem.get(), &s) >= 0 && s) {
          out[name] = s;
          H5free_memory(s);
        }
      } else {
        std::string s(H5Tget_size(type.get()), '\0');
        if (H5Aread(attr.get(), type.get(), s.data()) >= 0) out[name] = s.c_str();
      }
    } else if (H5Tget_class(type.get()) == H5T_INTEGER) {
      long long v = 0;
      if (H5Aread(attr.get(), H5T_NATIVE_LLONG, &v) >= 0) out[name] = std::to_string(v);
    }
  }
  return out;
}

// Writes sd atomically (temporary file, then rename).
inline void save_state_dict(const std::string& path, const StateDict& sd, const std::string& model_name = "") {
  detail::silence_hdf5();
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  auto cleanup_fail = [&](const std::string& problem) {
    std::remove(tmp.c_str());
    detail::fail_file(path, problem);
  };
  {
    detail::H5Id fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    detail::H5Id f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT), H5Fclose);
    if (!f.valid()) cleanup_fail("cannot create the temporary file " + tmp + " (directory missing or not writable?)");
    try {
      detail::write_string_attr(f.get(), "mmnet_format_version", std::to_string(hdf5_format_version));
      detail::write_string_attr(f.get(), "mmnet_library_version", MMNET_VERSION_STRING);
      detail::write_string_attr(f.get(), "model_name", model_name);
    } catch (const io_error& e) {
      f.reset();
      cleanup_fail(e.what());
    }
    for (auto& [name, a] : sd) {
      if (static_cast<index_t>(a.data.size()) != a.numel()) {
        f.reset();
        cleanup_fail("entry '" + name + "' holds " + std::to_string(a.data.size()) + " values for shape " + a.shape_str());
      }
      std::vector<hsize_t> dims(a.shape.begin(), a.shape.end());
      detail::H5Id space(dims.empty() ? H5Screate(H5S_SCALAR)
                                      : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                         H5Sclose);
      const hid_t file_type = a.dtype == DType::f32 ? H5T_IEEE_F32LE : a.dtype == DType::f64 ? H5T_IEEE_F64LE : H5T_STD_I64LE;
      detail::H5Id ds(H5Dcreate2(f.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
      if (!ds.valid()) {
        f.reset();
        cleanup_fail("cannot create dataset '" + name + "'");
      }
      herr_t rc = 0;
      if (a.dtype == DType::i64) {
        std::vector<long long> v(a.data.begin(), a.data.end());
        if (!v.empty()) rc = H5Dwrite(ds.get(), H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
      } else if (!a.data.empty()) {
        rc = H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data.data());
      }
      if (rc < 0) {
        ds.reset();
        f.reset();
        cleanup_fail("cannot write dataset '" + name + "' (disk full?)");
      }
    }
    if (H5Fflush(f.get(), H5F_SCOPE_GLOBAL) < 0 || !f.reset()) cleanup_fail("cannot flush and close " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) cleanup_fail("cannot rename " + tmp + " to the destination");
}

}  // namespace mmnet::io
