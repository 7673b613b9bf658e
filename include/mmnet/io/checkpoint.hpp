// mmnet/io/checkpoint.hpp: resumable training checkpoints -- model, optimizer, scheduler and scalars (epoch,
// best metric, ...) in ONE HDF5 file (what torch.save({"model": ..., "optimizer": ..., ...}) holds).
//
// Layout (checkpoint format version 1), one group per part, each holding that part's StateDict with its own
// dotted names as datasets (link creation order tracked, so io::read_all lists them in state-dict order):
//   model/<name>       model.state_dict(): parameters, buffers, counters, with PyTorch's shapes and dtypes
//   optimizer/<name>   optimizer.state_dict() (optim/optimizer.hpp: "param_groups.0.lr", "state.3.exp_avg", ...)
//   scheduler/<name>   scheduler.state_dict() (optim/lr_scheduler.hpp: "last_epoch", "base_lrs", ...)
//   extra/<name>       the caller's scalars, 0-d float64
// Root attributes: mmnet_format_version, mmnet_library_version, mmnet_checkpoint_version, model_name.
//
// save_checkpoint writes "<path>.tmp-<pid>-<n>" and renames it over path (the rule of io/hdf5.hpp), so an
// interrupted save never leaves a half-written checkpoint. load_checkpoint checks every part against the
// objects before it changes any of them: on any mismatch it throws (mmnet::state_dict_error, or io_error for
// an unreadable file) and the model, optimizer and scheduler keep their state. The optimizer must have been
// built on the model's parameters in the same order (model.parameters()), as when the checkpoint was saved.
//
//   io::save_checkpoint("ckpt.h5", net, &opt, &sched, {{"epoch", epoch}});
//   auto extra = io::load_checkpoint("ckpt.h5", net, &opt, &sched);   int epoch = int(extra.at("epoch"));
//
// Not stored: random-generator state and data-loader position (resume them from the saved epoch yourself).
#pragma once
#include <hdf5.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/module.hpp"
#include "../core/state_dict.hpp"
#include "../optim/lr_scheduler.hpp"
#include "../optim/optimizer.hpp"
#include "hdf5.hpp"

namespace mmnet::io {

inline constexpr int checkpoint_format_version = 1;

// The parts of a checkpoint file, as host state dicts (an absent part is empty).
struct Checkpoint {
  StateDict model, optimizer, scheduler;
  std::map<std::string, double> extra;
  std::string model_name;  // the root attribute model_name
};

namespace checkpoint_detail {

[[noreturn]] inline void fail_file(const std::string& path, const std::string& problem) {
  throw io_error("mmnet::io::checkpoint: " + path + ": " + problem);
}

// RAII for one HDF5 identifier (closing a file is where its data is flushed, so reset() reports success).
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  bool reset() {
    bool ok = true;
    if (id_ >= 0) ok = close_(id_) >= 0;
    id_ = -1;
    return ok;
  }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

inline void write_string_attr(const std::string& path, hid_t obj, const char* key, const std::string& value) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), value.empty() ? 1 : value.size());
  H5Tset_strpad(type.get(), H5T_STR_NULLTERM);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, key, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), value.empty() ? "" : value.c_str()) < 0)
    fail_file(path, std::string("cannot write attribute ") + key);
}

inline void write_group(const std::string& path, hid_t file, const std::string& group, const StateDict& sd) {
  Handle gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
  H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  Handle g(H5Gcreate2(file, group.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
  if (!g.valid()) fail_file(path, "cannot create group '" + group + "'");
  for (auto& [name, a] : sd) {
    const std::string full = group + "/" + name;
    if (name.empty() || name == "." || name.find('/') != std::string::npos)
      fail_file(path, "entry '" + full + "': names must be non-empty, not '.', and contain no '/'");
    if (static_cast<index_t>(a.data.size()) != a.numel())
      fail_file(path, "entry '" + full + "' holds " + std::to_string(a.data.size()) + " values for shape " + a.shape_str());
    std::vector<hsize_t> dims(a.shape.begin(), a.shape.end());
    Handle space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                 H5Sclose);
    const hid_t file_type = a.dtype == DType::f32 ? H5T_IEEE_F32LE : a.dtype == DType::f64 ? H5T_IEEE_F64LE : H5T_STD_I64LE;
    Handle ds(H5Dcreate2(g.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    if (!ds.valid()) fail_file(path, "cannot create dataset '" + full + "'");
    herr_t rc = 0;
    if (a.dtype == DType::i64) {
      std::vector<long long> v(a.data.begin(), a.data.end());
      if (!v.empty()) rc = H5Dwrite(ds.get(), H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    } else if (!a.data.empty()) {
      rc = H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data.data());
    }
    if (rc < 0) fail_file(path, "cannot write dataset '" + full + "' (disk full?)");
  }
}

// A string (or integer) attribute of the root group; nullopt when absent. (io::read_attributes is not used:
// it asks H5Aget_num_attrs about the file id, which HDF5 answers with -1, so it finds no attributes.)
inline std::optional<std::string> read_root_attr(const std::string& path, const char* key) {
  if (!std::ifstream(path, std::ios::binary)) fail_file(path, "cannot open the file (missing or unreadable)");
  if (H5Fis_hdf5(path.c_str()) <= 0) fail_file(path, "not an HDF5 file (no HDF5 signature; truncated or another format)");
  Handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.valid()) fail_file(path, "the HDF5 file is corrupt or truncated (H5Fopen failed)");
  Handle root(H5Gopen2(f.get(), "/", H5P_DEFAULT), H5Gclose);
  if (!root.valid()) fail_file(path, "cannot open the root group");
  if (H5Aexists(root.get(), key) <= 0) return std::nullopt;
  Handle attr(H5Aopen(root.get(), key, H5P_DEFAULT), H5Aclose);
  Handle type(attr.valid() ? H5Aget_type(attr.get()) : -1, H5Tclose);
  if (!type.valid()) fail_file(path, std::string("cannot read attribute ") + key);
  if (H5Tget_class(type.get()) == H5T_INTEGER) {
    long long v = 0;
    if (H5Aread(attr.get(), H5T_NATIVE_LLONG, &v) < 0) fail_file(path, std::string("cannot read attribute ") + key);
    return std::to_string(v);
  }
  if (H5Tget_class(type.get()) != H5T_STRING) fail_file(path, std::string("attribute ") + key + " is not a string");
  if (H5Tis_variable_str(type.get()) > 0) {
    char* v = nullptr;
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    if (H5Aread(attr.get(), mem.get(), &v) < 0 || !v) fail_file(path, std::string("cannot read attribute ") + key);
    std::string out(v);
    H5free_memory(v);
    return out;
  }
  std::string v(H5Tget_size(type.get()), '\0');
  if (H5Aread(attr.get(), type.get(), v.data()) < 0) fail_file(path, std::string("cannot read attribute ") + key);
  return std::string(v.c_str());
}

}  // namespace checkpoint_detail

// Writes the parts of c (empty ones are left out) atomically.
inline void write_checkpoint(const std::string& path, const Checkpoint& c, const std::string& model_name = "") {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back as exceptions, not printed HDF5 stacks
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  StateDict extra;
  for (auto& [k, v] : c.extra) extra.insert(k, HostArray{DType::f64, {}, {v}});
  try {
    using checkpoint_detail::Handle;
    Handle fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    Handle f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT), H5Fclose);
    if (!f.valid())
      checkpoint_detail::fail_file(path, "cannot create the temporary file " + tmp + " (directory missing or not writable?)");
    checkpoint_detail::write_string_attr(path, f.get(), "mmnet_format_version", std::to_string(hdf5_format_version));
    checkpoint_detail::write_string_attr(path, f.get(), "mmnet_library_version", MMNET_VERSION_STRING);
    checkpoint_detail::write_string_attr(path, f.get(), "mmnet_checkpoint_version", std::to_string(checkpoint_format_version));
    checkpoint_detail::write_string_attr(path, f.get(), "model_name", model_name);
    const std::pair<const char*, const StateDict*> parts[] = {
        {"model", &c.model}, {"optimizer", &c.optimizer}, {"scheduler", &c.scheduler}, {"extra", &extra}};
    for (auto& [group, sd] : parts)
      if (!sd->empty()) checkpoint_detail::write_group(path, f.get(), group, *sd);
    if (H5Fflush(f.get(), H5F_SCOPE_GLOBAL) < 0 || !f.reset())
      checkpoint_detail::fail_file(path, "cannot flush and close " + tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    checkpoint_detail::fail_file(path, "cannot rename " + tmp + " to the destination");
  }
}

// Reads every part of a checkpoint written by write_checkpoint / save_checkpoint.
inline Checkpoint read_checkpoint(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const auto version = checkpoint_detail::read_root_attr(path, "mmnet_checkpoint_version");
  if (!version)
    checkpoint_detail::fail_file(path, "not an mmnet checkpoint (no mmnet_checkpoint_version attribute; a weights "
                                       "file is read with io::load_state_dict)");
  if (*version != std::to_string(checkpoint_format_version))
    checkpoint_detail::fail_file(path, "checkpoint format version " + *version + " (this mmnet reads version " +
                                           std::to_string(checkpoint_format_version) + ")");
  Checkpoint c;
  c.model_name = checkpoint_detail::read_root_attr(path, "model_name").value_or("");
  for (auto& [name, a] : read_all(path)) {
    const auto slash = name.find('/');
    const std::string group = slash == std::string::npos ? std::string() : name.substr(0, slash);
    const std::string key = slash == std::string::npos ? name : name.substr(slash + 1);
    if (group == "model") c.model.insert(key, a);
    else if (group == "optimizer") c.optimizer.insert(key, a);
    else if (group == "scheduler") c.scheduler.insert(key, a);
    else if (group == "extra") {
      if (a.numel() != 1 || a.data.size() != 1)
        checkpoint_detail::fail_file(path, "extra entry '" + key + "' is not a scalar (shape " + a.shape_str() + ")");
      c.extra[key] = a.data[0];
    } else {
      checkpoint_detail::fail_file(path, "dataset '" + name + "' lies outside the groups model, optimizer, scheduler, extra");
    }
  }
  return c;
}

// Saves model (and, when given, optimizer and scheduler) plus the extra scalars into one file, atomically.
template <class T, class Backend>
void save_checkpoint(const std::string& path, Module<T, Backend>& model, const optim::OptimizerBase* optimizer = nullptr,
                     const optim::SchedulerBase* scheduler = nullptr, const std::map<std::string, double>& extra = {},
                     const std::string& model_name = "") {
  Checkpoint c;
  c.model = model.state_dict();
  if (optimizer) c.optimizer = optimizer->state_dict();
  if (scheduler) c.scheduler = scheduler->state_dict();
  c.extra = extra;
  write_checkpoint(path, c, model_name);
}

// Restores model (strictly: every name and shape must match) and, when given, optimizer and scheduler from a
// checkpoint; returns its extra scalars. All or nothing: everything is checked before anything changes.
template <class T, class Backend>
std::map<std::string, double> load_checkpoint(const std::string& path, Module<T, Backend>& model,
                                              optim::OptimizerBase* optimizer = nullptr,
                                              optim::SchedulerBase* scheduler = nullptr) {
  Checkpoint c = read_checkpoint(path);
  auto need = [&path](const StateDict& sd, const std::string& what) {
    if (sd.empty())
      throw state_dict_error("mmnet::io::load_checkpoint: " + path + ": a " + what + " was given but the checkpoint holds no " +
                             what + " state");
  };
  if (optimizer) {
    need(c.optimizer, "optimizer");
    optimizer->check_state_dict(c.optimizer);
  }
  if (scheduler) {
    need(c.scheduler, "scheduler");
    scheduler->check_state_dict(c.scheduler);
  }
  model.load_state_dict(c.model, /*strict=*/true);  // checks everything itself before it writes
  if (optimizer) optimizer->load_state_dict(c.optimizer);
  if (scheduler) scheduler->load_state_dict(c.scheduler);
  return c.extra;
}

}  // namespace mmnet::io
