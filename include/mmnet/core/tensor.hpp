// mmnet/core/tensor.hpp: Tensor<T, Backend>, a contiguous NCDHW array of rank 1-5.
//
// Copies are shallow (they share storage, like torch::Tensor); clone() copies the data. Host <-> device
// transfers are explicit: to<mmnet::cuda>(), to_vector(). On the cuda backend data() is a device pointer.
#pragma once
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "backend.hpp"
#include "backends.hpp"
#include "config.hpp"
#include "error.hpp"
#include "shape.hpp"

namespace mmnet {

template <class T, class Backend>
class Tensor {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::Tensor: the element type T must be float or double");
  static_assert(is_backend_v<Backend>, "mmnet::Tensor: Backend must be mmnet::cpu or mmnet::cuda");

 public:
  using value_type = T;
  using backend_type = Backend;
  using traits = backend_traits<Backend>;
  using storage_type = typename traits::template storage<T>;

  Tensor() = default;
  // Zero-filled tensor of the given shape.
  explicit Tensor(const Shape& shape) : shape_(checked(shape)) {
    storage_ = std::make_shared<storage_type>(traits::template allocate<T>(shape_.numel()));
  }

  static Tensor zeros(const Shape& shape) { return Tensor(shape); }
  static Tensor full(const Shape& shape, T value) {
    Tensor t(shape);
    t.fill_(value);
    return t;
  }
  // Copies n = shape.numel() host values.
  static Tensor from_host(const Shape& shape, const T* host) {
    Tensor t(shape);
    traits::copy_from_host(host, t.numel(), *t.storage_);
    return t;
  }
  template <class U>
  static Tensor from_vector(const Shape& shape, const std::vector<U>& v) {
    if (static_cast<index_t>(v.size()) != shape.numel())
      fail<shape_error>("mmnet::Tensor::from_vector", "element count for shape " + shape.str(), shape.numel(),
                        v.size());
    if constexpr (std::is_same_v<U, T>) {
      return from_host(shape, v.data());
    } else {
      std::vector<T> c(v.begin(), v.end());
      return from_host(shape, c.data());
    }
  }

  bool defined() const { return static_cast<bool>(storage_); }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  index_t size(int d) const { return shape_[d < 0 ? d + shape_.rank() : d]; }
  index_t numel() const { return defined() ? shape_.numel() : 0; }

  T* data() { return storage_ ? traits::data(*storage_) : nullptr; }
  const T* data() const { return storage_ ? traits::data(static_cast<const storage_type&>(*storage_)) : nullptr; }
  bool shares_storage_with(const Tensor& o) const { return storage_ && storage_ == o.storage_; }

  std::vector<T> to_vector() const {
    std::vector<T> v(static_cast<std::size_t>(numel()));
    if (defined()) traits::copy_to_host(*storage_, numel(), v.data());
    return v;
  }
  // Explicit copy to another backend (host <-> device).
  template <class B2>
  Tensor<T, B2> to() const {
    if (!defined()) return {};
    if constexpr (std::is_same_v<B2, Backend>) {
      return clone();
    } else {
      const auto v = to_vector();
      return Tensor<T, B2>::from_host(shape_, v.data());
    }
  }
  // Element-type conversion (float <-> double) on the same backend.
  template <class U>
  Tensor<U, Backend> cast() const {
    if (!defined()) return {};
    const auto v = to_vector();
    return Tensor<U, Backend>::from_vector(shape_, v);
  }
  Tensor clone() const {
    if (!defined()) return {};
    Tensor t(shape_);
    traits::copy(data(), numel(), t.data());
    return t;
  }
  // Same storage, new shape with the same element count.
  Tensor reshape(const Shape& shape) const {
    if (shape.numel() != numel())
      fail<shape_error>("mmnet::Tensor::reshape", "element count of " + shape.str(), numel(), shape.numel(),
                        "tensor shape " + shape_.str());
    Tensor t = *this;
    t.shape_ = checked(shape);
    return t;
  }
  // Overwrites the elements in place from host values (converted to T); the count must match.
  template <class U>
  Tensor& assign(const std::vector<U>& v) {
    if (static_cast<index_t>(v.size()) != numel())
      fail<shape_error>("mmnet::Tensor::assign", "element count for shape " + shape_.str(), numel(), v.size());
    if constexpr (std::is_same_v<U, T>) {
      traits::copy_from_host(v.data(), numel(), *storage_);
    } else {
      std::vector<T> c(v.begin(), v.end());
      traits::copy_from_host(c.data(), numel(), *storage_);
    }
    return *this;
  }
  Tensor& fill_(T v) {
    traits::fill(data(), numel(), v);
    return *this;
  }
  Tensor& zero_() { return fill_(T(0)); }
  // The value of a one-element tensor (copied to the host).
  T item() const {
    if (numel() != 1) fail<shape_error>("mmnet::Tensor::item", "element count", 1, numel());
    return to_vector()[0];
  }

 private:
  static const Shape& checked(const Shape& s) {
    if (s.rank() < 1 || s.rank() > max_rank)
      fail<shape_error>("mmnet::Tensor", "rank", "1 to 5", s.rank(), "shape " + s.str());
    return s;
  }
  Shape shape_;
  std::shared_ptr<storage_type> storage_;
};

// Shape check used by components: throws shape_error naming the component and both shapes.
template <class T, class B>
void check_same_shape(const std::string& component, const std::string& what, const Tensor<T, B>& a,
                      const Shape& expected) {
  if (a.shape() != expected) fail<shape_error>(component, what + " shape", expected.str(), a.shape().str());
}

template <class T, class B>
void check_rank(const std::string& component, const std::string& what, const Tensor<T, B>& a, int rank) {
  if (!a.defined()) fail<shape_error>(component, what, "a tensor of rank " + std::to_string(rank), "an empty tensor");
  if (a.rank() != rank)
    fail<shape_error>(component, what + " rank", rank, a.rank(), "shape " + a.shape().str());
}

}  // namespace mmnet
