// Connected components: scipy.ndimage.label fixtures (tests/reference/metrics_ref.py, connected_components.h5)
// with 6- and 26-connectivity (same labels, count, largest component), a 10^7-voxel volume (iterative, no
// recursion), bad input. Host-side code: cpu types.
#include <mmnet/ops/connected_components.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE("connected_components matches scipy.ndimage.label (6 and 26 connectivity)") {
  Fixture fx("connected_components");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  CHECK(cases >= 10);
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    const auto& m = fx.array(c + "mask");
    REQUIRE(m.shape.size() == 3);
    const ops::Dims3 dims{m.shape[0], m.shape[1], m.shape[2]};
    for (int conn : {6, 26}) {
      const std::string p = c + "c" + std::to_string(conn) + "/";
      INFO(p);
      const auto cc = ops::connected_components(m.data, dims, conn);
      CHECK(cc.count == static_cast<std::int64_t>(fx.scalar(p + "count")));
      const auto& lab = fx.array(p + "labels").data;
      REQUIRE(lab.size() == cc.labels.size());
      index_t mismatched = 0;
      for (std::size_t i = 0; i < lab.size(); ++i) mismatched += static_cast<double>(cc.labels[i]) != lab[i];
      CHECK_MESSAGE(mismatched == 0, p << ": " << mismatched << " labels differ from scipy's");
      std::int64_t total = 0;
      for (auto s : cc.sizes) total += s;
      CHECK(static_cast<std::int64_t>(cc.sizes.size()) == cc.count);
      std::int64_t fg = 0;
      for (double v : m.data) fg += v != 0;
      CHECK(total == fg);
      const auto& largest = fx.array(p + "largest").data;
      const auto keep = ops::largest_connected_component(m.data, dims, conn);
      const auto keep_t = ops::largest_connected_component(Tensor<double, cpu>::from_vector({1, dims.d, dims.h, dims.w}, m.data), conn)
                              .to_vector();
      const auto keep_f = ops::largest_connected_component(Tensor<float, cpu>::from_vector({dims.d, dims.h, dims.w}, m.data), conn)
                              .to_vector();
      REQUIRE(keep.size() == largest.size());
      index_t diff = 0;
      for (std::size_t i = 0; i < keep.size(); ++i)
        diff += (static_cast<double>(keep[i]) != largest[i]) + (keep_t[i] != largest[i]) + (static_cast<double>(keep_f[i]) != largest[i]);
      CHECK_MESSAGE(diff == 0, p << ": largest component differs from scipy's at " << diff << " voxels");
    }
  }
}

TEST_CASE("connected_components: uint8 input, diagonal contacts and a 10^7-voxel volume (no recursion)") {
  // two voxels touching at a corner: one 26-component, two 6-components
  std::vector<std::uint8_t> m(2 * 2 * 2, 0);
  m[0] = 1, m[7] = 1;
  CHECK(ops::connected_components(m, {2, 2, 2}, 26).count == 1);
  CHECK(ops::connected_components(m, {2, 2, 2}, 6).count == 2);
  CHECK(ops::connected_components(m, {2, 2, 2}).count == 1);  // default: 26
  // tie: equal sizes keep the lowest label (the first in row-major order)
  const auto keep = ops::largest_connected_component(m, {2, 2, 2}, 6);
  CHECK(keep[0] == 1);
  CHECK(keep[7] == 0);
  // empty mask: no component, an all-zero largest-component mask
  std::vector<std::uint8_t> none(24, 0);
  CHECK(ops::connected_components(none, {2, 3, 4}).count == 0);
  CHECK(ops::largest_connected_component(none, {2, 3, 4}) == none);
  // 10^7 voxels: all foreground (one component, a queue of every voxel), and a 3D checkerboard: one
  // 26-component of 5 x 10^6 voxels, 5 x 10^6 isolated 6-components.
  const ops::Dims3 big{200, 200, 250};
  std::vector<std::uint8_t> full(static_cast<std::size_t>(big.numel()), 1);
  const auto t0 = std::chrono::steady_clock::now();
  const auto cf = ops::connected_components(full, big, 26);
  CHECK(cf.count == 1);
  CHECK(cf.sizes[0] == big.numel());
  std::vector<std::uint8_t> board(full.size());
  for (index_t z = 0; z < big.d; ++z)
    for (index_t y = 0; y < big.h; ++y)
      for (index_t x = 0; x < big.w; ++x) board[static_cast<std::size_t>((z * big.h + y) * big.w + x)] = (z + y + x) % 2;
  const auto c26 = ops::connected_components(board, big, 26);
  CHECK(c26.count == 1);
  CHECK(c26.sizes[0] == big.numel() / 2);
  const auto c6 = ops::connected_components(board, big, 6);
  CHECK(c6.count == big.numel() / 2);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("connected_components: 3 passes over 10^7 voxels in " << s << " s");
}

TEST_CASE("connected_components: bad input names the component, the expected and the actual value") {
  std::vector<std::uint8_t> m(24, 1);
  CHECK_THROWS_AS(ops::connected_components(m, {2, 3, 4}, 8), value_error);
  CHECK_THROWS_AS(ops::connected_components(m, {2, 3, 5}), shape_error);
  CHECK_THROWS_AS(ops::connected_components(m.data(), {0, 3, 4}), shape_error);
  CHECK_THROWS_AS(ops::connected_components(Tensor<double, cpu>::from_vector({2, 12}, std::vector<double>(24, 1.0))), shape_error);
  CHECK_THROWS_AS(ops::connected_components(Tensor<double, cpu>::from_vector({2, 1, 3, 4}, std::vector<double>(24, 1.0))), shape_error);
  try {
    ops::connected_components(m, {2, 3, 4}, 18);
    FAIL("no throw");
  } catch (const value_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("mmnet::ops::connected_components") != std::string::npos);
    CHECK(msg.find("6 or 26") != std::string::npos);
    CHECK(msg.find("18") != std::string::npos);
  }
}
