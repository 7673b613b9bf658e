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
// The file is written by io::save_state_dict (io/hdf5.hpp), so a checkpoint has a weight file's guarantees:
// built in memory, written to a temporary file, fsynced and renamed over path (an interrupted save never leaves a
// half-written checkpoint), checksummed metadata and Fletcher-32 data (a damaged file raises io_error instead of
// restoring wrong values). load_checkpoint checks every part against the objects before it changes any of them:
// on any mismatch it throws (mmnet::state_dict_error, or io_error for an unreadable file) and the model,
// optimizer and scheduler keep their state. The optimizer must have been built on the model's parameters in
// the same order (model.parameters()), as when the checkpoint was saved.
//
//   io::save_checkpoint("ckpt.h5", net, &opt, &sched, {{"epoch", epoch}});
//   auto extra = io::load_checkpoint("ckpt.h5", net, &opt, &sched);   int epoch = int(extra.at("epoch"));
//
// Not stored: random-generator state and data-loader position (resume them from the saved epoch yourself).
#pragma once
#include <map>
#include <string>

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

// Each part's names become "<part>/<name>": they must be flat names themselves, so that reading splits them back.
inline void add_part(const std::string& path, StateDict& out, const std::string& part, const StateDict& sd) {
  for (auto& [name, a] : sd) {
    if (!detail::valid_name(name, /*grouped=*/false))
      fail_file(path, "entry '" + part + "/" + name + "': names must be non-empty, not '.', and contain no '/'");
    out.insert(part + "/" + name, a);
  }
}

}  // namespace checkpoint_detail

// Writes the parts of c (empty ones are left out) atomically.
inline void write_checkpoint(const std::string& path, const Checkpoint& c, const std::string& model_name = "") {
  StateDict all, extra;
  for (auto& [k, v] : c.extra) extra.insert(k, HostArray{DType::f64, {}, {v}});
  checkpoint_detail::add_part(path, all, "model", c.model);
  checkpoint_detail::add_part(path, all, "optimizer", c.optimizer);
  checkpoint_detail::add_part(path, all, "scheduler", c.scheduler);
  checkpoint_detail::add_part(path, all, "extra", extra);
  save_state_dict(path, all,
                  {{"mmnet_checkpoint_version", std::to_string(checkpoint_format_version)}, {"model_name", model_name}});
}

// Reads every part of a checkpoint written by write_checkpoint / save_checkpoint.
inline Checkpoint read_checkpoint(const std::string& path) {
  // One open for the attributes and the data (io::read_attributes + io::read_all), so both come from one file.
  detail::QuietErrors quiet;
  const auto file = detail::open_for_reading(path);
  const auto attrs = detail::read_attributes(file.get(), path);
  const auto version = attrs.find("mmnet_checkpoint_version");
  if (version == attrs.end())
    checkpoint_detail::fail_file(path, "not an mmnet checkpoint (no mmnet_checkpoint_version attribute; a weights "
                                       "file is read with io::load_state_dict)");
  if (version->second != std::to_string(checkpoint_format_version))
    checkpoint_detail::fail_file(path, "checkpoint format version " + version->second + " (this mmnet reads version " +
                                           std::to_string(checkpoint_format_version) + ")");
  Checkpoint c;
  const auto name_attr = attrs.find("model_name");
  if (name_attr != attrs.end()) c.model_name = name_attr->second;
  for (auto& [name, a] : detail::read_entries(file.get(), path)) {
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
