// Broadcasting ops: PyTorch fixtures (tests/reference/broadcast_ref.py) for channel, spatial, full, batch-shared
// and per-sample gates (a * b, a + b, both gradients) and for x.expand(shape); gradient checks of both inputs;
// mismatched shapes; results independent of the thread count.
#include <mmnet/core/parallel.hpp>
#include <mmnet/layers/broadcast.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {
const char* const cases[] = {"channel_gate", "batch_shared", "spatial_gate", "full", "scalar_per_sample",
                             "rank3", "channel_gate_big", "spatial_gate_one_channel"};
const char* const expand_cases[] = {"pool_back", "pool_back_big", "mixed"};

// Binary layers as one-input modules for gradcheck_module: the other operand is held fixed.
template <class Layer>
struct WrtA : Module<double, Backend> {
  Layer layer;
  Tensor<double, Backend> b;
  Tensor<double, Backend> forward(const Tensor<double, Backend>& x) { return layer.forward(x, b); }
  Tensor<double, Backend> backward(const Tensor<double, Backend>& dy) { return layer.backward(dy).first; }
};
template <class Layer>
struct WrtB : Module<double, Backend> {
  Layer layer;
  Tensor<double, Backend> a;
  Tensor<double, Backend> forward(const Tensor<double, Backend>& x) { return layer.forward(a, x); }
  Tensor<double, Backend> backward(const Tensor<double, Backend>& dy) { return layer.backward(dy).second; }
};
struct ExpandTo : Module<double, Backend> {
  nn::BroadcastTo<double, Backend> layer;
  Shape shape;
  Tensor<double, Backend> forward(const Tensor<double, Backend>& x) { return layer.forward(x, shape); }
  Tensor<double, Backend> backward(const Tensor<double, Backend>& dy) { return layer.backward(dy); }
};
}  // namespace

TEST_CASE_TEMPLATE("BroadcastMul and BroadcastAdd match PyTorch's a * b and a + b, with both gradients", T, float,
                   double) {
  Fixture fx("broadcast");
  for (const std::string n : cases) {
    INFO("case " << n);
    const auto a = fx.tensor<T>(n + "/a");
    const auto b = fx.tensor<T>(n + "/b");
    const auto dy = fx.tensor<T>(n + "/grad_output");
    nn::BroadcastMul<T, Backend> mul;
    check_close(mul.forward(a, b), fx.array(n + "/mul/output"), tol_output<T>(), n + " mul output");
    auto [da, db] = mul.backward(dy);
    check_close(da, fx.array(n + "/mul/grad_a"), tol_grad<T>(), n + " mul grad_a");
    check_close(db, fx.array(n + "/mul/grad_b"), tol_grad<T>(), n + " mul grad_b");
    nn::BroadcastAdd<T, Backend> add;
    check_close(add.forward(a, b), fx.array(n + "/add/output"), tol_output<T>(), n + " add output");
    auto [da2, db2] = add.backward(dy);
    check_close(da2, fx.array(n + "/add/grad_a"), tol_grad<T>(), n + " add grad_a");
    check_close(db2, fx.array(n + "/add/grad_b"), tol_grad<T>(), n + " add grad_b");
    CHECK_FALSE(da2.shares_storage_with(dy));
    if (a.shape() == b.shape()) {
      nn::Multiply<T, Backend> prod;
      check_close(prod.forward(a, b), fx.array(n + "/mul/output"), tol_output<T>(), n + " Multiply output");
      auto [pa, pb] = prod.backward(dy);
      check_close(pa, fx.array(n + "/mul/grad_a"), tol_grad<T>(), n + " Multiply grad_a");
      check_close(pb, fx.array(n + "/mul/grad_b"), tol_grad<T>(), n + " Multiply grad_b");
    }
  }
}

TEST_CASE_TEMPLATE("BroadcastTo, broadcast_to and sum_to match x.expand(shape) and its gradient", T, float, double) {
  Fixture fx("broadcast");
  for (const std::string n : expand_cases) {
    INFO("case " << n);
    const auto x = fx.tensor<T>(n + "/input");
    const auto dy = fx.tensor<T>(n + "/grad_output");
    const Shape shape(fx.array(n + "/output").shape);
    nn::BroadcastTo<T, Backend> bt;
    check_close(bt.forward(x, shape), fx.array(n + "/output"), tol_output<T>(), n + " output");
    check_close(bt.backward(dy), fx.array(n + "/grad_input"), tol_grad<T>(), n + " grad_input");
    check_close(nn::broadcast_to(x, shape), fx.array(n + "/output"), tol_output<T>(), n + " broadcast_to");
    check_close(nn::sum_to(dy, x.shape()), fx.array(n + "/grad_input"), tol_grad<T>(), n + " sum_to");
  }
}

TEST_CASE("Broadcast ops pass the central-difference gradient check for both inputs (double)") {
  const Shape a_shape{2, 3, 3, 4, 5};
  for (const Shape& b_shape : {Shape{2, 3, 1, 1, 1}, Shape{2, 1, 3, 4, 5}, a_shape, Shape{1, 3, 1, 4, 1}}) {
    INFO("b shape " << b_shape);
    WrtA<nn::BroadcastMul<double, Backend>> ma;
    ma.b = randn<double>(b_shape, 1);
    gradcheck_module(ma, randn<double>(a_shape, 2));
    WrtB<nn::BroadcastMul<double, Backend>> mb;
    mb.a = randn<double>(a_shape, 3);
    gradcheck_module(mb, randn<double>(b_shape, 4));
    WrtA<nn::BroadcastAdd<double, Backend>> aa;
    aa.b = randn<double>(b_shape, 5);
    gradcheck_module(aa, randn<double>(a_shape, 6));
    WrtB<nn::BroadcastAdd<double, Backend>> ab;
    ab.a = randn<double>(a_shape, 7);
    gradcheck_module(ab, randn<double>(b_shape, 8));
  }
  WrtA<nn::Multiply<double, Backend>> pa;
  pa.b = randn<double>(a_shape, 9);
  gradcheck_module(pa, randn<double>(a_shape, 10));
  WrtB<nn::Multiply<double, Backend>> pb;
  pb.a = randn<double>(a_shape, 11);
  gradcheck_module(pb, randn<double>(a_shape, 12));
  ExpandTo e;
  e.shape = a_shape;
  gradcheck_module(e, randn<double>({2, 3, 1, 1, 1}, 13));
  e.shape = Shape{2, 3, 3, 4, 5};
  gradcheck_module(e, randn<double>({1, 3, 3, 1, 5}, 14));
}

TEST_CASE("Broadcast reductions over long axes give the same bits for any thread count") {
  const auto a = randn<double>({2, 3, 9, 30, 33}, 1);
  const auto b = randn<double>({2, 3, 1, 1, 1}, 2);
  const auto dy = randn<double>(a.shape(), 3);
  auto run = [&] {
    nn::BroadcastMul<double, Backend> mul;
    mul.forward(a, b);
    auto d = mul.backward(dy);
    std::vector<double> out = d.second.to_vector();
    for (double v : nn::sum_to(dy, Shape{1, 3, 9, 1, 33}).to_vector()) out.push_back(v);
    return out;
  };
  const int threads = get_num_threads();
  set_num_threads(1);
  const auto one = run();
  set_num_threads(3);
  const auto three = run();
  set_num_threads(threads);
  CHECK(one == three);
}

TEST_CASE("Broadcast ops reject mismatched shapes, naming both") {
  nn::BroadcastMul<double, Backend> mul;
  nn::BroadcastAdd<double, Backend> add;
  nn::Multiply<double, Backend> prod;
  const auto a = randn<double>({2, 3, 4, 5, 6}, 1);
  CHECK_THROWS_AS(mul.backward(a), value_error);  // backward before forward
  CHECK_THROWS_AS(add.backward(a), value_error);
  CHECK_THROWS_AS(prod.backward(a), value_error);
  // b's channel count differs: the message names both shapes.
  CHECK_THROWS_WITH_AS(mul.forward(a, randn<double>({2, 2, 1, 1, 1}, 1)), doctest::Contains("(2, 3, 4, 5, 6)"), shape_error);
  CHECK_THROWS_WITH_AS(mul.forward(a, randn<double>({2, 2, 1, 1, 1}, 1)), doctest::Contains("(2, 2, 1, 1, 1)"), shape_error);
  CHECK_THROWS_WITH_AS(add.forward(a, randn<double>({2, 1, 4, 6, 5}, 1)), doctest::Contains("mmnet::nn::BroadcastAdd"),
                       shape_error);
  CHECK_THROWS_AS(mul.forward(a, randn<double>({2, 3, 1, 1}, 1)), shape_error);            // rank
  CHECK_THROWS_AS(mul.forward(randn<double>({2, 3, 1, 1, 1}, 1), a), shape_error);         // b larger than a
  CHECK_THROWS_AS(mul.forward(a, Tensor<double, Backend>()), shape_error);
  CHECK_THROWS_AS(add.forward(Tensor<double, Backend>(Shape{2, 0, 4, 5, 6}), randn<double>({2, 1, 1, 1, 1}, 1)), shape_error);
  CHECK_THROWS_WITH_AS(prod.forward(a, randn<double>({2, 3, 1, 1, 1}, 1)), doctest::Contains("(2, 3, 1, 1, 1)"), shape_error);
  mul.forward(a, randn<double>({2, 3, 1, 1, 1}, 2));
  CHECK_THROWS_AS(mul.backward(randn<double>({2, 3, 1, 1, 1}, 1)), shape_error);  // grad_output has a's shape
  nn::BroadcastTo<double, Backend> bt;
  CHECK_THROWS_AS(bt.backward(a), value_error);
  CHECK_THROWS_WITH_AS(bt.forward(randn<double>({2, 3, 2, 1, 1}, 1), a.shape()), doctest::Contains("(2, 3, 2, 1, 1)"),
                       shape_error);
  CHECK_THROWS_AS(nn::broadcast_to(randn<double>({2, 1, 1}, 1), Shape{2, 0, 3}), shape_error);
  CHECK_THROWS_AS(nn::sum_to(a, Shape{2, 3, 4, 5}), shape_error);
  CHECK_THROWS_AS(nn::sum_to(a, Shape{2, 3, 4, 5, 3}), shape_error);
  bt.forward(randn<double>({2, 3, 1, 1, 1}, 1), a.shape());
  CHECK_THROWS_AS(bt.backward(randn<double>({2, 3, 4, 5, 5}, 1)), shape_error);
}
