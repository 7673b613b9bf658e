// mmnet/core/error.hpp: the exception hierarchy. Every message names the component, what was expected and
// what was found, e.g. "mmnet::Conv3d: input channels: expected 4, got 3 (input shape (2, 3, 6, 8, 10))".
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mmnet {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// Wrong rank, shape or channel count of a tensor handed to a component.
class shape_error : public error {
 public:
  using error::error;
};
// Invalid option or value: non-finite loss, negative size, unknown name.
class value_error : public error {
 public:
  using error::error;
};
// A file could not be read or written: missing, truncated, corrupt, wrong format.
class io_error : public error {
 public:
  using error::error;
};
// A state dict does not fit a module: missing, unexpected or shape-mismatched keys.
class state_dict_error : public error {
 public:
  using error::error;
};

namespace detail {
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws E with "component: what: expected X, got Y[ (context)]".
template <class E = value_error, class X, class Y>
[[noreturn]] void fail(const std::string& component, const std::string& what, const X& expected,
                       const Y& actual, const std::string& context = {}) {
  throw E(detail::cat(component, ": ", what, ": expected ", expected, ", got ", actual,
                      context.empty() ? std::string() : " (" + context + ")"));
}

}  // namespace mmnet
