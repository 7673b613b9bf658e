// Tensor<T, Backend>: shapes, host/device copies, element-wise ops, shape errors.
#include <mmnet/core/ops.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("tensor basics", T, float, double) {
  TestTensor<T> t({2, 3, 4});
  CHECK(t.rank() == 3);
  CHECK(t.numel() == 24);
  CHECK(t.size(-1) == 4);
  CHECK(sum(t) == 0.0);
  t.fill_(T(1.5));
  CHECK(sum(t) == doctest::Approx(36.0));
  auto u = t.reshape({4, 6});
  CHECK(u.shares_storage_with(t));
  auto c = t.clone();
  CHECK_FALSE(c.shares_storage_with(t));
  auto h = t.template to<mmnet::cpu>();
  CHECK(h.to_vector() == t.to_vector());
  auto back = h.template to<Backend>();
  CHECK(back.to_vector() == t.to_vector());
  auto d = t.template cast<double>();
  CHECK(d.to_vector()[5] == 1.5);
}

TEST_CASE_TEMPLATE("element-wise ops", T, float, double) {
  std::vector<T> a{1, 2, 3, 4, 5, 6}, b{6, 5, 4, 3, 2, 1};
  auto ta = TestTensor<T>::from_vector({2, 3}, a), tb = TestTensor<T>::from_vector({2, 3}, b);
  CHECK((ta + tb).to_vector() == std::vector<T>(6, T(7)));
  CHECK((ta * tb).to_vector() == std::vector<T>{6, 10, 12, 12, 10, 6});
  CHECK((ta - tb).to_vector() == std::vector<T>{-5, -3, -1, 1, 3, 5});
  CHECK(dot(ta, tb) == 56.0);
  axpy_(ta, T(2), tb);
  CHECK(ta.to_vector() == std::vector<T>{13, 12, 11, 10, 9, 8});
  scale_(ta, T(0.5));
  CHECK(ta.to_vector()[0] == T(6.5));
  CHECK(count_nonfinite(ta) == 0);
  ta.assign(std::vector<double>{1, NAN, INFINITY, 0, 0, 0});
  CHECK(count_nonfinite(ta) == 2);
}

TEST_CASE("tensor shape errors name the component and both values") {
  using TT = TestTensor<float>;
  CHECK_THROWS_AS(TT(Shape{}), shape_error);
  CHECK_THROWS_AS(TT(Shape{1, 2, 3, 4, 5, 6}), shape_error);
  CHECK_THROWS_AS(TT::from_vector({2, 2}, std::vector<float>(3)), shape_error);
  auto a = TT({2, 3}), b = TT({3, 2});
  try {
    (void)(a + b);
    FAIL("expected shape_error");
  } catch (const shape_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("mmnet::add") != std::string::npos);
    CHECK(msg.find("(2, 3)") != std::string::npos);
    CHECK(msg.find("(3, 2)") != std::string::npos);
  }
  CHECK_THROWS_AS(a.reshape({4, 2}), shape_error);
  CHECK_THROWS_AS(a.item(), shape_error);
}
