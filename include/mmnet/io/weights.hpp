// mmnet/io/weights.hpp: save / load a module's weights as HDF5 (see io/hdf5.hpp for the format).
#pragma once
#include <string>

#include "../core/module.hpp"
#include "hdf5.hpp"

namespace mmnet {

template <class T, class B>
void save(Module<T, B>& module, const std::string& path, const std::string& model_name = "") {
  io::save_state_dict(path, module.state_dict(), model_name);
}

// strict: every key must match by name and shape (PyTorch's load_state_dict(strict=True)).
template <class T, class B>
LoadResult load(Module<T, B>& module, const std::string& path, bool strict = true) {
  const StateDict sd = io::load_state_dict(path);
  try {
    return module.load_state_dict(sd, strict);
  } catch (const state_dict_error& e) {
    throw state_dict_error(std::string(e.what()) + " [file " + path + "]");
  }
}

}  // namespace mmnet
