// mmnet/io/weights.hpp: save / load a module's weights as HDF5 (see io/hdf5.hpp for the format).
#pragma once
#include <string>

#include "../core/module.hpp"
#include "hdf5.hpp"

namespace mmnet {

// Writes module.state_dict() atomically; model_name is stored as the root attribute "model_name".
template <class T, class B>
void save(Module<T, B>& module, const std::string& path, const std::string& model_name = "") {
  io::save_state_dict(path, module.state_dict(), model_name);
}

// Loads weights saved by mmnet::save or tools/torch2h5.py, converting float32 <-> float64 as needed.
// strict: every key must match by name and shape (PyTorch's load_state_dict(strict=True)). Shape mismatches
// throw either way. A file problem throws io_error; a state dict that does not fit throws state_dict_error
// listing every missing, unexpected and mismatched key; both name the file. The module is untouched on error.
template <class T, class B>
LoadResult load(Module<T, B>& module, const std::string& path, bool strict = true) {
  const StateDict sd = io::load_state_dict(path);
  try {
    return module.load_state_dict(sd, strict);
  } catch (const state_dict_error& e) {
    throw state_dict_error("mmnet::load: " + path + ": " + e.what());
  }
}

}  // namespace mmnet
