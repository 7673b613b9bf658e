// Euclidean distance transform: scipy fixtures (tests/reference/distance_transform_ref.py), a brute-force
// O(n^2) reference, the cascaded-FCN spec §8 item 2 alpha map, bad input.
#include <mmnet/core/parallel.hpp>
#include <mmnet/ops/distance_transform.hpp>

#include <cmath>
#include <map>
#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

// Distance of every inside voxel to the nearest zero voxel of its volume, by trying all of them.
std::vector<double> brute_force_edt(const std::vector<double>& m, const Shape& s, const ops::Spacing3& sp) {
  const index_t d = s[s.rank() - 3], h = s[s.rank() - 2], w = s[s.rank() - 1], vol = d * h * w;
  std::vector<double> out(m.size(), 0.0);
  for (index_t v0 = 0; v0 < static_cast<index_t>(m.size()); v0 += vol)
    for (index_t i = 0; i < vol; ++i) {
      if (m[static_cast<std::size_t>(v0 + i)] == 0) continue;
      double best = INFINITY;
      for (index_t j = 0; j < vol; ++j) {
        if (m[static_cast<std::size_t>(v0 + j)] != 0) continue;
        const double dz = sp[0] * static_cast<double>(i / (h * w) - j / (h * w));
        const double dy = sp[1] * static_cast<double>((i / w) % h - (j / w) % h);
        const double dx = sp[2] * static_cast<double>(i % w - j % w);
        best = std::min(best, dz * dz + dy * dy + dx * dx);
      }
      out[static_cast<std::size_t>(v0 + i)] = std::sqrt(best);
    }
  return out;
}

// The spec's ground truth G (Z, Y, X) = (6, 10, 14).
TestTensor<double> spec_volume() {
  std::vector<double> g(6 * 10 * 14, 0.0);
  auto at = [&](int z, int y, int x) -> double& { return g[static_cast<std::size_t>((z * 10 + y) * 14 + x)]; };
  for (int z = 1; z < 4; ++z)
    for (int y = 2; y < 7; ++y)
      for (int x = 2; x < 9; ++x) at(z, y, x) = 1;
  at(2, 4, 5) = 0;
  for (int z = 3; z < 6; ++z)
    for (int y = 6; y < 10; ++y)
      for (int x = 11; x < 14; ++x) at(z, y, x) = 1;
  at(4, 8, 2) = 1;
  return TestTensor<double>::from_vector({6, 10, 14}, g);
}

}  // namespace

TEST_CASE_TEMPLATE("distance_transform matches scipy.ndimage.distance_transform_edt", T, float, double) {
  Fixture fx("distance_transform");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    const auto& sp = fx.array(c + "spacing").data;
    const ops::Spacing3 spacing{sp[0], sp[1], sp[2]};
    const auto d = ops::distance_transform(fx.tensor<T>(c + "mask"), spacing);
    check_close(d, fx.array(c + "distance"), tol_output<T>(), "edt " + c + "distance");
    // squared distances are the squares (exact integers on a unit grid)
    const auto d2 = ops::squared_distance_transform(fx.tensor<T>(c + "mask"), spacing).to_vector();
    const auto ref = fx.array(c + "distance").data;
    for (std::size_t i = 0; i < ref.size(); ++i)
      CHECK(static_cast<double>(d2[i]) == doctest::Approx(ref[i] * ref[i]).epsilon(std::is_same_v<T, double> ? 1e-13 : 1e-6));
  }
}

TEST_CASE("distance_transform equals a brute-force search, also with anisotropic spacing") {
  struct Case {
    Shape shape;
    double inside;
    ops::Spacing3 spacing;
  };
  const Case cases[] = {{{2, 1, 5, 7, 9}, 0.85, {1, 1, 1}},     {{1, 2, 6, 4, 11}, 0.9, {2.5, 1.0, 0.7}},
                        {{3, 8, 5}, 0.97, {1.0, 3.0, 1.0}},      {{1, 1, 9, 1, 6}, 0.8, {0.3, 1.0, 1.9}},
                        {{2, 1, 1, 12, 13}, 0.95, {1, 1.25, 1}}, {{1, 1, 7, 6, 5}, 0.5, {4.0, 0.5, 0.25}}};
  std::uint64_t seed = 100;
  for (const auto& cs : cases) {
    INFO("shape " << cs.shape.str());
    auto m = binary_tensor<double>(cs.shape, cs.inside, ++seed);
    // every volume needs a zero voxel
    const index_t vol = cs.shape[cs.shape.rank() - 3] * cs.shape[cs.shape.rank() - 2] * cs.shape[cs.shape.rank() - 1];
    for (index_t v0 = 0; v0 < m.numel(); v0 += vol) perturb_element(m, v0 + vol / 2, -m.to_vector()[static_cast<std::size_t>(v0 + vol / 2)]);
    const auto expected = brute_force_edt(m.to_vector(), cs.shape, cs.spacing);
    const auto got = ops::distance_transform(m, cs.spacing).to_vector();
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - expected[i]) / std::max(1.0, expected[i]));
    CHECK(worst <= 1e-13);
    if (cs.spacing == ops::Spacing3{1, 1, 1})
      CHECK(got == expected);  // exact on a unit grid
  }
}

TEST_CASE("distance_transform: the cascaded-FCN spec alpha map (spec §8 item 2)") {
  const auto g = spec_volume();
  auto alpha = ops::distance_transform(g).to_vector();
  for (auto& a : alpha) a += 1;
  const auto gv = g.to_vector();
  double tumour = 0, total = 0;
  std::map<double, int> counts;
  for (std::size_t i = 0; i < alpha.size(); ++i) {
    tumour += gv[i];
    total += alpha[i];
    ++counts[alpha[i]];
  }
  CHECK(tumour == 141);
  CHECK(total == doctest::Approx(1002.656854249).epsilon(1e-12));
  CHECK(counts.size() == 5);
  CHECK(counts[1.0] == 699);
  CHECK(counts[2.0] == 119);
  CHECK(counts[1.0 + std::sqrt(2.0)] == 4);
  CHECK(counts[3.0] == 16);
  CHECK(counts[4.0] == 2);
  auto at = [&](int z, int y, int x) { return alpha[static_cast<std::size_t>((z * 10 + y) * 14 + x)]; };
  CHECK(at(2, 5, 6) == 1.0 + std::sqrt(2.0));
  CHECK(at(2, 4, 7) == 3.0);
  CHECK(at(4, 8, 2) == 2.0);
  CHECK(at(5, 9, 13) == 4.0);  // the outside of the volume is not background
  // the block [2:6, 2:10, 2:14] of the full map, and the (wrong) map of the cropped ground truth
  std::vector<double> crop;
  double block = 0;
  for (int z = 2; z < 6; ++z)
    for (int y = 2; y < 10; ++y)
      for (int x = 2; x < 14; ++x) {
        block += at(z, y, x);
        crop.push_back(gv[static_cast<std::size_t>((z * 10 + y) * 14 + x)]);
      }
  CHECK(block == doctest::Approx(511.656854249).epsilon(1e-12));
  const auto a_crop = ops::distance_transform(TestTensor<double>::from_vector({4, 8, 12}, crop)).to_vector();
  int differ = 0, k = 0;
  for (int z = 2; z < 6; ++z)
    for (int y = 2; y < 10; ++y)
      for (int x = 2; x < 14; ++x, ++k) differ += (a_crop[static_cast<std::size_t>(k)] + 1 != at(z, y, x));
  CHECK(differ == 9);
  // an all-tumour volume has no distance to the background
  CHECK_THROWS_WITH_AS(ops::distance_transform(TestTensor<double>::full({6, 10, 14}, 1.0)),
                       doctest::Contains("background"), value_error);
}

TEST_CASE_TEMPLATE("distance_transform does not depend on the thread count", T, float, double) {
  const auto m = binary_tensor<T>({2, 1, 16, 40, 36}, 0.98, 5);
  const auto all = ops::distance_transform(m, {2.0, 0.8, 0.8}).to_vector();
  const int threads = get_num_threads();
  set_num_threads(1);
  const auto one = ops::distance_transform(m, {2.0, 0.8, 0.8}).to_vector();
  set_num_threads(threads);
  CHECK(one == all);
}

TEST_CASE_TEMPLATE("distance_transform rejects bad input", T, float, double) {
  const auto m = binary_tensor<T>({2, 3, 4, 5}, 0.5, 1);
  try {
    ops::distance_transform(TestTensor<T>({4, 5}));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string s = e.what();
    CHECK(s.find("mmnet::ops::distance_transform") != std::string::npos);
    CHECK(s.find("expected 3 to 5") != std::string::npos);
    CHECK(s.find("got 2") != std::string::npos);
  }
  CHECK_THROWS_AS(ops::distance_transform(TestTensor<T>()), shape_error);
  CHECK_THROWS_WITH_AS(ops::distance_transform(m, {1.0, 0.0, 1.0}), doctest::Contains("spacing[1]"), value_error);
  CHECK_THROWS_AS(ops::distance_transform(m, {NAN, 1.0, 1.0}), value_error);
  CHECK_THROWS_AS(ops::squared_distance_transform(m, {1.0, 1.0, -2.0}), value_error);
  // the second volume has no background voxel
  auto v = TestTensor<T>::full({2, 1, 2, 3, 4}, T(1));
  perturb_element(v, 5, -1.0);
  CHECK_THROWS_WITH_AS(ops::distance_transform(v), doctest::Contains("volume 1"), value_error);
}
