// Augmentation (include/mmnet/data/augment.hpp): flips, in-plane rotation, intensity transforms, the seeded
// chain, bad options.
#include <mmnet/data/augment.hpp>

#include <set>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using mmnet::data::AugmentOptions;
using mmnet::data::LabelMap;
using mmnet::data::Volume;

namespace {

Volume random_volume(index_t c, index_t d, index_t h, index_t w, std::uint64_t seed) {
  Volume v(c, d, h, w);
  Generator g(seed);
  for (auto& x : v.data) x = static_cast<float>(g.normal());
  return v;
}

LabelMap random_labels(index_t d, index_t h, index_t w, std::uint64_t seed) {
  LabelMap m(d, h, w);
  Generator g(seed);
  const std::uint8_t set[3] = {0, 3, 7};
  for (auto& x : m.data) x = set[g.integer(3)];
  return m;
}

void moments(const Volume& v, index_t c, double& mean, double& sd) {
  double s = 0, q = 0;
  const float* x = v.channel(c);
  for (index_t i = 0; i < v.voxels(); ++i) s += x[i];
  mean = s / static_cast<double>(v.voxels());
  for (index_t i = 0; i < v.voxels(); ++i) q += (x[i] - mean) * (x[i] - mean);
  sd = std::sqrt(q / static_cast<double>(v.voxels()));
}

constexpr double pi = 3.14159265358979323846;

}  // namespace

TEST_CASE("flips are involutions and reverse the right axis") {
  const Volume v = random_volume(2, 3, 4, 5, 1);
  const LabelMap m = random_labels(3, 4, 5, 2);
  for (int a = 0; a < 3; ++a) {
    Volume f = v;
    LabelMap fm = m;
    data::flip(f, a);
    data::flip(fm, a);
    CHECK(f.data != v.data);
    for (index_t c = 0; c < 2; ++c)
      for (index_t z = 0; z < 3; ++z)
        for (index_t y = 0; y < 4; ++y)
          for (index_t x = 0; x < 5; ++x) {
            const index_t z2 = a == 0 ? 2 - z : z, y2 = a == 1 ? 3 - y : y, x2 = a == 2 ? 4 - x : x;
            CHECK(f.at(c, z, y, x) == v.at(c, z2, y2, x2));
            if (c == 0) CHECK(fm.at(z, y, x) == m.at(z2, y2, x2));
          }
    data::flip(f, a);
    data::flip(fm, a);
    CHECK(f.data == v.data);
    CHECK(fm.data == m.data);
  }
  Volume one = random_volume(1, 1, 1, 6, 3);
  Volume once = one;
  data::flip(once, 0);  // size-1 axis: unchanged
  CHECK(once.data == one.data);
  CHECK_THROWS_AS(data::flip(once, 3), value_error);
}

TEST_CASE("rotation by 0 is the identity; rotation keeps labels in their set") {
  const Volume v = random_volume(2, 3, 7, 9, 4);
  const LabelMap m = random_labels(3, 7, 9, 5);
  Volume r = v;
  LabelMap rm = m;
  Generator g(1);
  data::augment(r, rm, AugmentOptions::none().rotation_probability(1).rotation_degrees({0, 0}), g);
  CHECK(r.data == v.data);
  CHECK(rm.data == m.data);
  for (double deg : {3.0, -17.0, 45.0, 133.0}) {
    LabelMap q = m;
    data::rotate_inplane(q, deg * pi / 180.0);
    std::set<int> seen;
    for (auto l : q.data) seen.insert(l);
    for (int l : seen) CHECK((l == 0 || l == 3 || l == 7));
    CHECK(seen.size() >= 2);
  }
  // A constant image rotated with the same fill stays constant (bilinear weights sum to 1).
  Volume k(1, 2, 6, 8);
  std::fill(k.data.begin(), k.data.end(), 2.5f);
  data::rotate_inplane(k, 0.3, {2.5f});
  for (float x : k.data) CHECK(x == doctest::Approx(2.5));
  // With fill 0 the corners go to 0 (outside) and the centre stays.
  std::fill(k.data.begin(), k.data.end(), 2.5f);
  data::rotate_inplane(k, pi / 4);
  CHECK(k.at(0, 0, 0, 0) == 0.0f);
  CHECK(k.at(0, 1, 3, 4) == doctest::Approx(2.5));
}

TEST_CASE("rotation by 90 degrees equals flip along W then transpose of H and W") {
  const index_t d = 3, n = 7;
  const Volume v = random_volume(2, d, n, n, 6);
  const LabelMap m = random_labels(d, n, n, 7);
  Volume r = v;
  LabelMap rm = m;
  data::rotate_inplane(r, pi / 2);
  data::rotate_inplane(rm, pi / 2);
  double err = 0;
  for (index_t c = 0; c < 2; ++c)
    for (index_t z = 0; z < d; ++z)
      for (index_t y = 0; y < n; ++y)
        for (index_t x = 0; x < n; ++x) {
          // out[y][x] = in[x][n - 1 - y]: the content turns counter-clockwise (H down, W right).
          err = std::max(err, std::abs(static_cast<double>(r.at(c, z, y, x)) - v.at(c, z, x, n - 1 - y)));
          if (c == 0) CHECK(rm.at(z, y, x) == m.at(z, x, n - 1 - y));
        }
  CHECK(err < 1e-5);
  // Four quarter turns of the labels are the identity.
  for (int i = 0; i < 3; ++i) data::rotate_inplane(rm, pi / 2);
  CHECK(rm.data == m.data);
}

TEST_CASE("intensity transforms: scale/shift, gamma, noise statistics") {
  const Volume v = random_volume(2, 4, 9, 10, 8);
  double m0, s0, m1, s1;
  moments(v, 1, m0, s0);
  Volume a = v;
  data::scale_shift(a, 1, 1.5, -0.25);
  moments(a, 1, m1, s1);
  CHECK(m1 == doctest::Approx(1.5 * m0 - 0.25).epsilon(1e-6));
  CHECK(s1 == doctest::Approx(1.5 * s0).epsilon(1e-6));
  CHECK(std::equal(v.channel(0), v.channel(0) + v.voxels(), a.channel(0)));  // other channel untouched

  // gamma 1 without stats: identity up to the 1e-7 range guard.
  Volume gm = v;
  data::gamma_transform(gm, 0, 1.0, false);
  for (index_t i = 0; i < v.voxels(); ++i) CHECK(gm.channel(0)[i] == doctest::Approx(v.channel(0)[i]).epsilon(1e-5));
  // gamma 2 on [0, 1] data: x^2.
  Volume u(1, 2, 3, 4);
  for (std::size_t i = 0; i < u.data.size(); ++i) u.data[i] = static_cast<float>(i) / 23.0f;
  Volume u2 = u;
  data::gamma_transform(u2, 0, 2.0, false);
  for (std::size_t i = 0; i < u.data.size(); ++i) CHECK(u2.data[i] == doctest::Approx(u.data[i] * u.data[i]).epsilon(1e-5));
  // retain_stats keeps mean and std while changing the values.
  Volume gr = v;
  data::gamma_transform(gr, 1, 0.7, true);
  moments(gr, 1, m1, s1);
  CHECK(m1 == doctest::Approx(m0).epsilon(1e-5));
  CHECK(s1 == doctest::Approx(s0).epsilon(1e-5));
  CHECK(!std::equal(v.channel(1), v.channel(1) + v.voxels(), gr.channel(1)));

  // Noise: the difference has mean ~0 and std ~sigma (n = 360 * 40 samples).
  Volume big(1, 10, 36, 40);
  Volume noisy = big;
  Generator g(9);
  data::add_gaussian_noise(noisy, 0, 0.3, g);
  moments(noisy, 0, m1, s1);
  CHECK(std::abs(m1) < 0.02);
  CHECK(s1 == doctest::Approx(0.3).epsilon(0.03));
}

TEST_CASE("augment: seeded, none() is the identity, labels follow the image geometry") {
  const Volume v = random_volume(3, 4, 8, 8, 10);
  const LabelMap m = random_labels(4, 8, 8, 11);
  auto o = AugmentOptions().rotation_probability(0.5).flip_probability({0.5, 0.5, 0.5});
  for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    Volume a = v, b = v;
    LabelMap la = m, lb = m;
    Generator ga(seed), gb(seed);
    data::augment(a, la, o, ga);
    data::augment(b, lb, o, gb);
    CHECK(a.data == b.data);
    CHECK(la.data == lb.data);
  }
  Volume n = v;
  LabelMap nm = m;
  Generator g(5);
  data::augment(n, nm, AugmentOptions::none(), g);
  CHECK(n.data == v.data);
  CHECK(nm.data == m.data);
  // Only flips: the label map is moved exactly like an image channel holding the labels.
  Volume img(1, 4, 8, 8);
  for (std::size_t i = 0; i < m.data.size(); ++i) img.data[i] = m.data[i];
  LabelMap lab = m;
  Generator gf(6);
  data::augment(img, lab, AugmentOptions::none().flip_probability({0.5, 0.5, 0.5}), gf);
  for (std::size_t i = 0; i < m.data.size(); ++i) CHECK(img.data[i] == static_cast<float>(lab.data[i]));
  // Rotation with nearest labels vs bilinear image: labels stay in the set.
  LabelMap lr = m;
  Volume vr = v;
  Generator gr(7);
  data::augment(vr, lr, AugmentOptions::mmfnet(), gr);
  for (auto l : lr.data) CHECK((l == 0 || l == 3 || l == 7));
}

TEST_CASE("augment rejects bad options and mismatched pairs") {
  Volume v(1, 2, 3, 4);
  LabelMap m(2, 3, 4), wrong(2, 4, 3);
  Generator g(1);
  check_throws_naming<value_error>(
      [&] { data::augment(v, m, AugmentOptions().rotation_probability(1.5), g); },
      {"mmnet::data::AugmentOptions", "rotation probability", "[0, 1]", "1.5"});
  check_throws_naming<value_error>([&] { data::augment(v, m, AugmentOptions().gamma_range({1.5, 0.7}), g); },
                                   {"gamma range", "lo <= hi"});
  CHECK_THROWS_AS(data::augment(v, m, AugmentOptions().gamma_range({0.0, 1.5}), g), value_error);
  CHECK_THROWS_AS(data::augment(v, m, AugmentOptions().noise_std({-0.1, 0.1}), g), value_error);
  check_throws_naming<shape_error>([&] { data::augment(v, wrong, AugmentOptions(), g); },
                                   {"mmnet::data::augment", "label shape", "(2, 3, 4)", "(2, 4, 3)"});
  CHECK_THROWS_AS(data::rotate_inplane(v, 0.1, {0.0f, 1.0f}), shape_error);
}
