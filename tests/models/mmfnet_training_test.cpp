// MMFNet training (models/mmfnet/training.hpp, spec §4): the self-transfer encoder copy and freezing (spec §8
// point 8, A13), the Trainer's early stopping and best checkpoint, the phase switch of self_transfer(), a
// bit-exact resume from a checkpoint, and PyTorch-trained weights loaded strictly (tiny and paper networks).
#include <cstdio>
#include <string>

#include <mmnet/io/weights.hpp>
#include <mmnet/mmfnet.hpp>
#include <mmnet/models/mmfnet/training.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
using Net = models::MMFNet<T, Backend>;

MMFNetOptions tiny_single() { return MMFNetOptions::tiny().modalities(1).fusion(MMFNetFusion::merge); }

// Binary labels (Bernoulli(0.3)) from a fixed seed.
template <class T>
TestTensor<T> labels(const Shape& s, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = g.uniform() < 0.3 ? T(1) : T(0);
  return TestTensor<T>::from_vector(s, v);
}

// One Adam step of the soft Dice loss.
template <class T>
void adam_step(Net<T>& net, optim::Adam<T, Backend>& opt, const TestTensor<T>& x, const TestTensor<T>& y) {
  losses::SoftDice<T, Backend> dice;
  opt.zero_grad();
  dice.forward(net.forward(x), y);
  net.backward(dice.backward());
  opt.step();
}

bool starts_with(const std::string& s, const std::string& head) { return s.rfind(head, 0) == 0; }
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
// Conv biases feeding a BatchNorm: their gradient is rounding noise around zero (see mmfnet_test.cpp).
bool bias_before_bn(const std::string& n) {
  if (!ends_with(n, ".bias")) return false;
  if (starts_with(n, "encoders.")) return ends_with(n, ".conv1.bias") || ends_with(n, ".conv2.bias") || ends_with(n, "bottleneck.conv.bias");
  if (starts_with(n, "decoder.")) return ends_with(n, ".conv.bias");
  return ends_with(n, "rfblock.conv1.bias");
}
bool is_running_stat(const std::string& n) { return ends_with(n, ".running_mean") || ends_with(n, ".running_var"); }

template <class T>
bool same_bits(const TestTensor<T>& a, const TestTensor<T>& b) {
  return a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

}  // namespace

TEST_CASE_TEMPLATE("copy_encoder copies encoders.0.* exactly; frozen encoders keep weights, BN statistics move (A13)", T,
                   float, double) {
  Generator g(5);
  Net<T> single(tiny_single(), g);
  optim::Adam<T, Backend> single_opt(single.parameters(), optim::AdamOptions(1e-3));
  const auto x = randn<T>({2, 3, 4, 12, 8}, 1);
  const auto y = labels<T>({2, 1, 4, 12, 8}, 2);
  const auto x0 = nn::split_channels(x, {1, 1, 1})[0];
  adam_step(single, single_opt, x0, y);

  Net<T> net(MMFNetOptions::tiny(), g);
  const StateDict before = net.state_dict();
  mmfnet::copy_encoder(single, net, 0);
  const StateDict src = single.state_dict(), dst = net.state_dict();
  index_t copied = 0;
  for (const auto& e : dst) {
    const std::string& n = e.first;
    if (starts_with(n, "encoders.0.")) {
      const HostArray& s = src.at(n);  // same name in the single-modality model
      CHECK_MESSAGE(e.second.data == s.data, n);
      ++copied;
    } else {
      CHECK_MESSAGE(e.second.data == before.at(n).data, n << " must not change");
    }
  }
  CHECK(copied == 35);  // per level 2 convs (w, b) + 2 BNs (γ, β, mean, var, count); bottleneck conv + BN
  CHECK(dst.at("encoders.0.block1.bn1.num_batches_tracked").data[0] == 1);

  // The same input channel gives the same encoder outputs, bit for bit, in train and in eval mode.
  for (bool training : {true, false}) {
    single.train(training);
    net.train(training);
    const auto a = single.encoders[0].forward(x0);
    const auto b = net.encoders[0].forward(x0);
    CHECK(same_bits(a, b));
    for (index_t l = 1; l <= 2; ++l) CHECK(same_bits(single.encoders[0].skip(l), net.encoders[0].skip(l)));
  }
  net.train();

  CHECK_THROWS_AS(mmfnet::copy_encoder(net, single, 0), value_error);    // source has 3 encoders
  CHECK_THROWS_AS(mmfnet::copy_encoder(single, net, 3), value_error);    // m out of range
  CHECK_THROWS_AS(mmfnet::copy_encoder(single, net, -1), value_error);
  Generator g2(1);
  Net<T> wide(MMFNetOptions::tiny().modalities(1).fusion(MMFNetFusion::merge).level_channels({4, 6}), g2);
  const StateDict unchanged = net.state_dict();
  CHECK_THROWS_AS(mmfnet::copy_encoder(wide, net, 1), state_dict_error);
  CHECK(net.state_dict().at("encoders.1.block2.conv1.weight").data == unchanged.at("encoders.1.block2.conv1.weight").data);

  for (bool bn_too : {false, true}) {
    CAPTURE(bn_too);
    Net<T> n2(MMFNetOptions::tiny(), g);
    mmfnet::copy_encoder(single, n2, 0);
    n2.train();
    mmfnet::freeze_encoders(n2, bn_too);
    CHECK(n2.encoders[0].is_training() == !bn_too);
    optim::Adam<T, Backend> opt(n2.parameters(), optim::AdamOptions(1e-3));
    const StateDict s0 = n2.state_dict();
    adam_step(n2, opt, x, y);
    const StateDict s1 = n2.state_dict();
    for (const auto& e : s1) {
      const std::string& n = e.first;
      const bool same = e.second.data == s0.at(n).data;
      if (starts_with(n, "encoders.")) {
        if (is_running_stat(n) || ends_with(n, "num_batches_tracked")) CHECK_MESSAGE(same == bn_too, n);
        else CHECK_MESSAGE(same, n << ": frozen, must be bit-identical");
      } else if (!bias_before_bn(n) && !is_running_stat(n) && !ends_with(n, "num_batches_tracked")) {
        CHECK_MESSAGE(!same, n << ": trained, must change");
      }
    }
    mmfnet::unfreeze_encoders(n2);
    CHECK(n2.encoders[0].is_training());
    for (auto& np : n2.named_parameters()) CHECK(np.second->requires_grad);
  }
}
