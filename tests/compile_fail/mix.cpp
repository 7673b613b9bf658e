// Must NOT compile: ctest checks that the compiler prints mmnet's static_assert message.
#include <mmnet/core/ops.hpp>

int main() {
#if defined(MMNET_COMPILE_FAIL_backends)
  mmnet::Tensor<float, mmnet::cpu> a({2});
  mmnet::Tensor<float, mmnet::cuda> b({2});
  auto c = a + b;  // different backends
#else
  mmnet::Tensor<float, mmnet::cpu> a({2});
  mmnet::Tensor<double, mmnet::cpu> b({2});
  auto c = a + b;  // different element types
#endif
  return static_cast<int>(c.numel());
}
