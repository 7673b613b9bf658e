// Label down-sampling: PyTorch slicing fixtures (tests/reference/label_resample_ref.py) for the strided
// (HMRNet) and centre (MAML) pickings, divisible and non-divisible extents; the index rule spelled out on a
// coordinate volume; bad inputs.
#include <mmnet/layers/label_resample.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("Label down-sampling matches PyTorch slicing (label[::f] and label[f/2::f])", T, float, double) {
  Fixture fx("label_resample");
  int cases = 0, centred = 0;
  for (const auto& e : fx.all()) {
    const std::string key = e.first;
    if (key.size() < 7 || key.compare(key.size() - 6, 6, "/input") != 0) continue;
    const std::string n = key.substr(0, key.size() - 6);
    INFO("case " << n);
    const auto& f = fx.array(n + "/factor").data;
    const ExpandingArray3 factor(static_cast<index_t>(f[0]), static_cast<index_t>(f[1]), static_cast<index_t>(f[2]));
    const auto y = fx.tensor<T>(n + "/input");
    // Labels are copied, never interpolated: exact in both precisions.
    check_close(nn::downsample_labels_strided(y, factor), fx.array(n + "/strided"), 0.0, n + " strided");
    if (fx.has(n + "/centered")) {
      check_close(nn::downsample_labels_centered(y, factor), fx.array(n + "/centered"), 0.0, n + " centered");
      ++centred;
    }
    ++cases;
  }
  CHECK(cases == 10);
  CHECK(centred == 10);
}

TEST_CASE_TEMPLATE("Label down-sampling reads index f*o (strided) and f*o + f/2 (centred) on every axis", T, float,
                   double) {
  // Each voxel holds its own flat index, so the output names the voxels it read.
  const Shape s{1, 1, 9, 8, 7};
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(i);
  const auto y = Tensor<T, Backend>::from_vector(s, v);
  const ExpandingArray3 f(4, 2, 3);
  const auto strided = nn::downsample_labels_strided(y, f);
  const auto centred = nn::downsample_labels_centered(y, f);
  CHECK(strided.shape() == Shape{1, 1, 3, 4, 3});   // ceil(9/4), ceil(8/2), ceil(7/3)
  CHECK(centred.shape() == Shape{1, 1, 2, 4, 2});   // d in {2, 6}, h in {1, 3, 5, 7}, w in {1, 4}
  const auto a = strided.to_vector(), b = centred.to_vector();
  auto at = [&](index_t d, index_t h, index_t w) { return static_cast<T>((d * 8 + h) * 7 + w); };
  CHECK(a[0] == at(0, 0, 0));
  CHECK(a.back() == at(8, 6, 6));
  CHECK(b[0] == at(2, 1, 1));
  CHECK(b.back() == at(6, 7, 4));
  CHECK(b[(1 * 4 + 2) * 2 + 1] == at(6, 5, 4));
}

TEST_CASE("Label down-sampling rejects bad factors and inputs") {
  const auto y = randn<double>({1, 1, 2, 6, 6}, 1);
  CHECK_THROWS_AS(nn::downsample_labels_strided(y, {0, 2, 2}), value_error);
  CHECK_THROWS_AS(nn::downsample_labels_centered(y, {2, -1, 2}), value_error);
  CHECK_THROWS_AS(nn::downsample_labels_centered(y, {5, 2, 2}), shape_error);  // index 5/2 = 2 is outside D = 2
  CHECK(nn::downsample_labels_strided(y, {5, 2, 2}).shape() == Shape{1, 1, 1, 3, 3});
  CHECK_THROWS_AS(nn::downsample_labels_strided(randn<double>({1, 6, 6, 6}, 1), 2), shape_error);
  CHECK_THROWS_AS(nn::downsample_labels_centered(Tensor<double, Backend>(), 2), shape_error);
}
