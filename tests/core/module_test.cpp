// The module contract: dotted names, state dicts, strict loading, freezing, train/eval, zero_grad.
#include <mmnet/io/weights.hpp>
#include <mmnet/layers/activation.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
template <class T, class B>
struct Leaf : Module<T, B> {
  Parameter<T, B> weight, bias;
  Buffer<T, B> running_mean;
  Counter num_batches_tracked;
  explicit Leaf(index_t n, bool with_bias = true) {
    weight.reset({n, 2});
    if (with_bias) bias.reset({n});
    running_mean.value = mmnet::Tensor<T, B>({n});
  }
  void members(Members<T, B>& m) override {
    m("weight", weight)("bias", bias)("running_mean", running_mean)("num_batches_tracked", num_batches_tracked);
  }
};
template <class T, class B>
struct Block : Module<T, B> {
  Leaf<T, B> conv{3};
  nn::ReLU<T, B> relu;
  std::vector<Leaf<T, B>> heads{Leaf<T, B>(1, false), Leaf<T, B>(2)};
  void members(Members<T, B>& m) override { m("conv", conv)("relu", relu)("heads", heads, 1); }
};
}  // namespace

TEST_CASE_TEMPLATE("named parameters and buffers use PyTorch's dotted names and order", T, float, double) {
  Block<T, Backend> b;
  std::vector<std::string> names;
  for (auto& np : b.named_parameters()) names.push_back(np.first);
  CHECK(names == std::vector<std::string>{"conv.weight", "conv.bias", "heads.1.weight", "heads.2.weight", "heads.2.bias"});
  std::vector<std::string> bufs;
  for (auto& nb : b.named_buffers()) bufs.push_back(nb.first);
  CHECK(bufs == std::vector<std::string>{"conv.running_mean", "conv.num_batches_tracked", "heads.1.running_mean",
                                         "heads.1.num_batches_tracked", "heads.2.running_mean", "heads.2.num_batches_tracked"});
  CHECK(b.num_parameters() == 6 + 3 + 2 + 4 + 2);
  auto sd = b.state_dict();
  CHECK(sd.keys().front() == "conv.weight");
  CHECK(sd.at("conv.num_batches_tracked").dtype == DType::i64);
  CHECK(sd.at("conv.num_batches_tracked").shape.empty());
  CHECK(sd.at("conv.weight").dtype == (std::is_same_v<T, float> ? DType::f32 : DType::f64));
}

TEST_CASE_TEMPLATE("load_state_dict: round trip, dtype conversion, strict errors name every key", T, float, double) {
  Block<T, Backend> a, b;
  a.conv.weight.value.fill_(T(0.25));
  a.conv.num_batches_tracked.value = 7;
  auto sd = a.state_dict();
  b.load_state_dict(sd);
  CHECK(b.conv.weight.value.to_vector() == a.conv.weight.value.to_vector());
  CHECK(b.conv.num_batches_tracked.value == 7);

  // the other precision loads too (float <-> double)
  using U = std::conditional_t<std::is_same_v<T, float>, double, float>;
  Block<U, Backend> c;
  c.load_state_dict(sd);
  CHECK(c.conv.weight.value.to_vector()[0] == U(0.25));

  StateDict bad = sd;
  bad.insert("extra.weight", HostArray{DType::f32, {1}, {1.0}});
  bad.insert("conv.bias", HostArray{DType::f32, {4}, {1, 2, 3, 4}});
  StateDict missing;
  for (auto& e : bad)
    if (e.first != "heads.2.bias") missing.insert(e.first, e.second);
  Block<T, Backend> d;
  const auto before = d.conv.weight.value.to_vector();
  try {
    d.load_state_dict(missing);
    FAIL("expected state_dict_error");
  } catch (const state_dict_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("conv.bias (expected (3,), got (4,))") != std::string::npos);
    CHECK(msg.find("missing keys (1): heads.2.bias") != std::string::npos);
    CHECK(msg.find("unexpected keys (1): extra.weight") != std::string::npos);
  }
  CHECK(d.conv.weight.value.to_vector() == before);  // nothing modified by a failed load

  StateDict partial;
  partial.insert("conv.weight", sd.at("conv.weight"));
  partial.insert("unknown", HostArray{DType::f32, {1}, {1.0}});
  auto r = d.load_state_dict(partial, /*strict=*/false);
  CHECK(r.unexpected_keys == std::vector<std::string>{"unknown"});
  CHECK(r.missing_keys.size() == 10);
  CHECK(d.conv.weight.value.to_vector()[0] == T(0.25));
}

TEST_CASE_TEMPLATE("freeze, zero_grad, train and eval", T, float, double) {
  Block<T, Backend> b;
  b.heads[1].freeze();
  CHECK(b.num_parameters(/*trainable_only=*/true) == 6 + 3 + 2);
  CHECK_FALSE(b.heads[1].weight.wants_grad());
  b.unfreeze();
  CHECK(b.heads[1].weight.wants_grad());
  b.conv.weight.grad.fill_(T(3));
  b.zero_grad();
  CHECK(sum(b.conv.weight.grad) == 0.0);
  CHECK(b.is_training());
  b.eval();
  CHECK_FALSE(b.is_training());
  CHECK_FALSE(b.heads[0].is_training());
  CHECK_FALSE(b.relu.is_training());
  b.train();
  CHECK(b.conv.is_training());
}

namespace {
template <class T, class B>
struct Spliced : Module<T, B> {
  Block<T, B> inner;
  Leaf<T, B> head{1};
  void members(Members<T, B>& m) override { m.splice(inner)("head", head); }
};
}  // namespace

TEST_CASE("splice lists a child's members under the parent's own names and keeps its mode in step") {
  Spliced<double, Backend> s;
  std::vector<std::string> names;
  for (auto& np : s.named_parameters()) names.push_back(np.first);
  CHECK(names == std::vector<std::string>{"conv.weight", "conv.bias", "heads.1.weight", "heads.2.weight",
                                          "heads.2.bias", "head.weight", "head.bias"});
  s.eval();
  CHECK_FALSE(s.inner.is_training());
  CHECK_FALSE(s.inner.conv.is_training());
  s.load_state_dict(s.state_dict());
}
