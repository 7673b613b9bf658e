// Synthetic multi-modal head phantoms (data/phantom.hpp): options and their checks, shape and spacing, bit-exact
// determinism per seed, a lesion of plausible size inside the brain, the designed per-modality contrast (T1 barely
// darker, T2 brighter, CET1 enhancing), the claim that no single modality separates the lesion by a threshold while
// T2 and CET1 together do, a smooth bounded bias field, and the noise level. Host-only code: the same checks run
// in every backend's executable. The brats_like task: skull-stripped (exact zeros outside the brain = the non-zero
// mask), labels consistent with the tissues, nested regions (necrosis inside the enhancing rim, the core inside the
// edema), the per-modality contrast of each region, determinism and variety across seeds. The npc_like task (CSCN):
// one T1 channel, a small tumour on the nasopharyngeal wall inside the head, brighter than muscle but overlapping
// the mucosa / adenoid / lymph nodes, the anisotropic default grid kept by the data set writer.
#include <mmnet/data/dataset.hpp>
#include <mmnet/data/normalize.hpp>
#include <mmnet/data/phantom.hpp>
#include <mmnet/metrics/metrics.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

namespace phantom_test {

using namespace mmnet;
using namespace mmnet::data;

// A smaller grid with the default field of view (96 x 96 x 96 mm), to keep the suite fast at -O1.
inline PhantomOptions small() { return PhantomOptions().shape({12, 48, 40}).spacing({8.0, 2.0, 2.4}); }

inline bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
inline bool is_lesion(std::uint8_t t) {
  return t == static_cast<std::uint8_t>(PhantomTissue::lesion_core) || t == static_cast<std::uint8_t>(PhantomTissue::lesion_rim);
}
inline std::size_t count_tissue(const Phantom& p, PhantomTissue t) {
  return static_cast<std::size_t>(std::count(p.tissues.data.begin(), p.tissues.data.end(), static_cast<std::uint8_t>(t)));
}
// Mean of channel m over the voxels where pred(tissue) holds.
template <class Pred>
double mean_where(const Phantom& p, index_t m, Pred pred) {
  double s = 0;
  std::size_t n = 0;
  const float* c = p.image.channel(m);
  for (std::size_t i = 0; i < p.tissues.data.size(); ++i)
    if (pred(p.tissues.data[i])) {
      s += c[i];
      ++n;
    }
  return n ? s / static_cast<double>(n) : 0.0;
}
inline double dice(const std::vector<char>& pred, const std::vector<std::uint8_t>& truth) {
  double inter = 0, a = 0, b = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) {
    inter += (pred[i] && truth[i]) ? 1 : 0;
    a += pred[i] ? 1 : 0;
    b += truth[i] ? 1 : 0;
  }
  return a + b > 0 ? 2 * inter / (a + b) : 1.0;
}
// The best Dice any one-sided threshold (v > t or v < t) on channel m reaches.
inline double best_threshold_dice(const Phantom& p, index_t m) {
  const float* c = p.image.channel(m);
  std::vector<float> values(c, c + p.image.voxels());
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  double best = 0;
  std::vector<char> pred(values.size() ? p.label.data.size() : 0);
  const std::size_t step = std::max<std::size_t>(1, values.size() / 400);
  for (std::size_t k = 0; k < values.size(); k += step) {
    const float t = values[k];
    for (int above = 0; above < 2; ++above) {
      for (std::size_t i = 0; i < pred.size(); ++i) pred[i] = above ? c[i] >= t : c[i] <= t;
      best = std::max(best, dice(pred, p.label.data));
    }
  }
  return best;
}

TEST_CASE("phantom: shape, spacing, modalities and labels") {
  const Phantom p = make_phantom(PhantomOptions(), 1);
  CHECK(p.image.channels == 3);
  CHECK(p.image.depth == 24);
  CHECK(p.image.height == 96);
  CHECK(p.image.width == 96);
  CHECK(p.image.spacing == Spacing{4.0, 1.0, 1.0});
  CHECK(p.label.depth == 24);
  CHECK(p.label.height == 96);
  CHECK(p.label.width == 96);
  CHECK(p.label.spacing == Spacing{4.0, 1.0, 1.0});
  CHECK(p.tissues.voxels() == p.label.voxels());
  CHECK(p.bias.shape() == p.image.shape());
  CHECK(p.modalities == std::vector<std::string>{"T1", "T2", "CET1"});
  CHECK(p.labels == std::vector<std::string>{"background", "lesion"});
  CHECK(p.name == "phantom_s1");
  CHECK(*std::max_element(p.label.data.begin(), p.label.data.end()) == 1);

  // Other grids: the head keeps its size in mm (it fills the same fraction of the field of view).
  const Phantom q = make_phantom(PhantomOptions().shape({10, 30, 28}).spacing({3.0, 0.8, 0.7}), 1);
  CHECK(q.image.shape() == Shape{3, 10, 30, 28});
  CHECK(q.label.spacing == Spacing{3.0, 0.8, 0.7});
  const double head_fraction_p = 1.0 - static_cast<double>(count_tissue(p, PhantomTissue::air)) / static_cast<double>(p.label.voxels());
  const double head_fraction_q = 1.0 - static_cast<double>(count_tissue(q, PhantomTissue::air)) / static_cast<double>(q.label.voxels());
  CHECK(head_fraction_p == doctest::Approx(head_fraction_q).epsilon(0.1));
  CHECK(head_fraction_p > 0.2);
  CHECK(head_fraction_p < 0.6);
  // Air stays air (~0) in every modality without noise.
  const Phantom clean = make_phantom(small().noise(PhantomNoise::none), 2);
  for (index_t m = 0; m < 3; ++m)
    CHECK(mean_where(clean, m, [](std::uint8_t t) { return t == 0; }) == 0.0);
}

TEST_CASE("phantom: bit-identical for a seed, different for another") {
  const PhantomOptions o = small();
  const Phantom a = make_phantom(o, 42), b = make_phantom(o, 42), c = make_phantom(o, 43);
  CHECK(same_bytes(a.image.data, b.image.data));
  CHECK(same_bytes(a.bias.data, b.bias.data));
  CHECK(a.label.data == b.label.data);
  CHECK(a.tissues.data == b.tissues.data);
  CHECK_FALSE(same_bytes(a.image.data, c.image.data));
  CHECK_FALSE(a.label.data == c.label.data);
  // Each modality is noisy on its own (different draws), and the bias fields differ between modalities.
  CHECK_FALSE(std::equal(a.bias.channel(0), a.bias.channel(0) + a.bias.voxels(), a.bias.channel(1)));
  for (int s = 0; s < 3; ++s) {
    const std::uint64_t d = derive_seed(7, static_cast<std::uint64_t>(s));
    CHECK(d == derive_seed(7, static_cast<std::uint64_t>(s)));
    CHECK(d != derive_seed(8, static_cast<std::uint64_t>(s)));
    CHECK(d != derive_seed(7, static_cast<std::uint64_t>(s + 1)));
  }
}

TEST_CASE("phantom: the lesion lies in the brain with a plausible size, larger radii give larger lesions") {
  double small_total = 0, large_total = 0;
  for (std::uint64_t seed = 0; seed < 10; ++seed) {
    const Phantom p = make_phantom(small(), seed);
    const double voxel_mm3 = 8.0 * 2.0 * 2.4;
    std::size_t lesion = 0, mismatched = 0, at_border = 0;
    for (std::size_t i = 0; i < p.label.data.size(); ++i) {
      mismatched += (p.label.data[i] == 1) != is_lesion(p.tissues.data[i]);
      lesion += p.label.data[i];
    }
    CHECK(mismatched == 0);
    const std::size_t brain_total = lesion + count_tissue(p, PhantomTissue::brain) + count_tissue(p, PhantomTissue::vessel);
    const double volume = static_cast<double>(lesion) * voxel_mm3;
    INFO("seed " << seed << ": lesion " << lesion << " voxels, " << volume << " mm3");
    // Radius 6..14 mm, semi-axes x 0.7..1.3, surface moved by <= 25%: more than a 3 mm ball, less than 50 ml.
    CHECK(volume > 4.0 / 3.0 * 3.14159 * 27.0);
    CHECK(volume < 50000.0);
    CHECK(static_cast<double>(lesion) < 0.5 * static_cast<double>(brain_total));
    CHECK(count_tissue(p, PhantomTissue::lesion_core) > 0);
    CHECK(count_tissue(p, PhantomTissue::lesion_rim) > 0);
    CHECK(count_tissue(p, PhantomTissue::csf) > 0);
    // The lesion never reaches the border of the volume (it lies inside the head).
    for (index_t z = 0; z < p.label.depth; ++z)
      for (index_t y = 0; y < p.label.height; ++y)
        for (index_t x = 0; x < p.label.width; ++x)
          if (p.label.at(z, y, x))
            at_border += !(z > 0 && z + 1 < p.label.depth && y > 0 && y + 1 < p.label.height && x > 0 && x + 1 < p.label.width);
    CHECK(at_border == 0);
    const Phantom small_lesion = make_phantom(small().lesion_radius(4.0, 5.0), seed);
    const Phantom large_lesion = make_phantom(small().lesion_radius(12.0, 14.0), seed);
    small_total += static_cast<double>(std::count(small_lesion.label.data.begin(), small_lesion.label.data.end(), 1));
    large_total += static_cast<double>(std::count(large_lesion.label.data.begin(), large_lesion.label.data.end(), 1));
  }
  CHECK(small_total > 0);
  CHECK(large_total > 4 * small_total);  // radius 12..14 mm lesions are larger than 4..5 mm ones
  // One lobe without deformation is a (rotated) ellipsoid: still present.
  const Phantom e = make_phantom(small().lesion_lobes(1).lesion_deformation(0.0), 3);
  CHECK(std::count(e.label.data.begin(), e.label.data.end(), 1) > 0);
}

TEST_CASE("phantom: lesion / brain contrast per modality as designed") {
  auto lesion = [](std::uint8_t t) { return is_lesion(t); };
  auto brain = [](std::uint8_t t) { return t == static_cast<std::uint8_t>(PhantomTissue::brain); };
  SUBCASE("noise-free, bias-free, texture-free: the tissue table") {
    const Phantom p = make_phantom(small().noise(PhantomNoise::none).bias_strength(0).texture(0), 5);
    const double r_t1 = mean_where(p, 0, lesion) / mean_where(p, 0, brain);
    const double r_t2 = mean_where(p, 1, lesion) / mean_where(p, 1, brain);
    const double r_ce = mean_where(p, 2, lesion) / mean_where(p, 2, brain);
    CHECK(r_t1 == doctest::Approx(0.55 / 0.60).epsilon(1e-6));
    CHECK(r_t2 >= 0.80 / 0.45 - 1e-6);
    CHECK(r_t2 <= 0.85 / 0.45 + 1e-6);
    CHECK(r_ce >= 0.72 / 0.60 - 1e-6);
    CHECK(r_ce <= 1.00 / 0.60 + 1e-6);
    CHECK(r_t2 > r_ce);
    std::size_t off_table = 0;
    for (std::size_t i = 0; i < p.tissues.data.size(); ++i) {
      const auto t = static_cast<PhantomTissue>(p.tissues.data[i]);
      for (index_t m = 0; m < 3; ++m) off_table += p.image.channel(m)[i] != static_cast<float>(phantom_tissue_intensity(t, m));
    }
    CHECK(off_table == 0);
  }
  SUBCASE("default noise, bias and texture: the same ordering on average") {
    double r[3] = {0, 0, 0};
    const int seeds = 6;
    for (int s = 0; s < seeds; ++s) {
      const Phantom p = make_phantom(small(), static_cast<std::uint64_t>(100 + s));
      for (index_t m = 0; m < 3; ++m) r[m] += mean_where(p, m, lesion) / mean_where(p, m, brain) / seeds;
    }
    INFO("lesion / brain: T1 " << r[0] << ", T2 " << r[1] << ", CET1 " << r[2]);
    CHECK(r[0] > 0.8);
    CHECK(r[0] < 1.0);
    CHECK(r[2] > 1.2);
    CHECK(r[1] > r[2]);
  }
}

TEST_CASE("phantom: no single-modality threshold separates the lesion, T2 and CET1 together do") {
  for (std::uint64_t seed = 0; seed < 3; ++seed) {
    const Phantom p = make_phantom(small().noise(PhantomNoise::none).bias_strength(0), seed);
    for (index_t m = 0; m < 3; ++m) {
      const double d = best_threshold_dice(p, m);
      INFO("seed " << seed << ", modality " << p.modalities[static_cast<std::size_t>(m)] << ": best threshold Dice " << d);
      CHECK(d < 0.9);
    }
    std::vector<char> both(p.label.data.size());
    for (std::size_t i = 0; i < both.size(); ++i) both[i] = p.image.channel(1)[i] > 0.7f && p.image.channel(2)[i] > 0.65f;
    CHECK(dice(both, p.label.data) == 1.0);
  }
}

TEST_CASE("phantom: the bias field is smooth, bounded and optional") {
  const double s = 0.3;
  const Phantom p = make_phantom(small().bias_strength(s), 9);
  const index_t n[3] = {p.bias.depth, p.bias.height, p.bias.width};
  for (index_t m = 0; m < 3; ++m) {
    double lo = 1e9, hi = -1e9, step[3] = {0, 0, 0};
    for (index_t z = 0; z < n[0]; ++z)
      for (index_t y = 0; y < n[1]; ++y)
        for (index_t x = 0; x < n[2]; ++x) {
          const double l = std::log(static_cast<double>(p.bias.at(m, z, y, x)));
          lo = std::min(lo, l);
          hi = std::max(hi, l);
          if (z + 1 < n[0]) step[0] = std::max(step[0], std::abs(std::log(static_cast<double>(p.bias.at(m, z + 1, y, x))) - l));
          if (y + 1 < n[1]) step[1] = std::max(step[1], std::abs(std::log(static_cast<double>(p.bias.at(m, z, y + 1, x))) - l));
          if (x + 1 < n[2]) step[2] = std::max(step[2], std::abs(std::log(static_cast<double>(p.bias.at(m, z, y, x + 1))) - l));
        }
    INFO("modality " << m << ": log bias in [" << lo << ", " << hi << "], steps " << step[0] << " " << step[1] << " " << step[2]);
    CHECK(lo >= -s - 1e-6);
    CHECK(hi <= s + 1e-6);
    CHECK(hi - lo > 0.05 * s);  // not constant
    for (int a = 0; a < 3; ++a) CHECK(step[a] <= 2 * 3.141592653589793 * s / static_cast<double>(n[a]) + 1e-6);
  }
  // The image is the clean image times the bias field.
  const Phantom clean = make_phantom(small().bias_strength(0).noise(PhantomNoise::none), 9);
  const Phantom biased = make_phantom(small().bias_strength(s).noise(PhantomNoise::none), 9);
  CHECK(std::all_of(clean.bias.data.begin(), clean.bias.data.end(), [](float v) { return v == 1.0f; }));
  double worst = 0;
  for (std::size_t i = 0; i < clean.image.data.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(biased.image.data[i]) -
                                     static_cast<double>(clean.image.data[i]) * biased.bias.data[i]));
  CHECK(worst < 1e-6);
  CHECK(clean.label.data == biased.label.data);
}

TEST_CASE("phantom: noise level follows snr") {
  auto brain = [](std::uint8_t t) { return t == static_cast<std::uint8_t>(PhantomTissue::brain); };
  auto air = [](std::uint8_t t) { return t == 0; };
  for (double snr : {10.0, 40.0}) {
    const Phantom g = make_phantom(small().noise(PhantomNoise::gaussian).snr(snr).bias_strength(0).texture(0), 11);
    for (index_t m = 0; m < 3; ++m) {
      const double mu = phantom_tissue_intensity(PhantomTissue::brain, m), sigma = mu / snr;
      double s = 0, s2 = 0, n = 0;
      for (std::size_t i = 0; i < g.tissues.data.size(); ++i)
        if (brain(g.tissues.data[i])) {
          const double v = g.image.channel(m)[i];
          s += v;
          s2 += v * v;
          n += 1;
        }
      const double mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
      CHECK(mean == doctest::Approx(mu).epsilon(0.01));
      CHECK(sd == doctest::Approx(sigma).epsilon(0.1));
      CHECK(std::abs(mean_where(g, m, air)) < 0.1 * sigma);
    }
    // Rician: air is Rayleigh distributed, mean sigma sqrt(pi / 2), never negative.
    const Phantom r = make_phantom(small().snr(snr), 11);
    for (index_t m = 0; m < 3; ++m) {
      const double sigma = phantom_tissue_intensity(PhantomTissue::brain, m) / snr;
      CHECK(mean_where(r, m, air) == doctest::Approx(sigma * std::sqrt(3.141592653589793 / 2)).epsilon(0.1));
    }
    CHECK(*std::min_element(r.image.data.begin(), r.image.data.end()) >= 0.0f);
  }
}

TEST_CASE("phantom: invalid options name the option") {
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().shape({24, 2, 96}), 0), Contains("shape[1]"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().spacing({4.0, 0.0, 1.0}), 0), Contains("spacing[1]"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().spacing({std::nan(""), 1.0, 1.0}), 0), Contains("spacing[0]"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().lesion_radius(5, 3), 0), Contains("lesion_radius"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().lesion_radius(0, 3), 0), Contains("lesion_radius"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().lesion_lobes(0), 0), Contains("lesion_lobes"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().lesion_deformation(1.0), 0), Contains("lesion_deformation"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().lesion_rim(1.5), 0), Contains("lesion_rim"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().distractors(-1), 0), Contains("distractors"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().head_jitter(0.5), 0), Contains("head_jitter"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().texture(-0.1), 0), Contains("texture"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().bias_strength(3), 0), Contains("bias_strength"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().snr(0), 0), Contains("snr"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions().task(static_cast<PhantomTask>(7)), 0), Contains("task"), value_error);
  // Getters return what the setters stored.
  const auto o = PhantomOptions().shape({8, 9, 10}).spacing({2, 3, 4}).lesion_radius(1, 2).lesion_lobes(2).snr(5)
                     .noise(PhantomNoise::gaussian).bias_strength(0.1).texture(0.2).head_jitter(0.1).distractors(0)
                     .lesion_rim(0.5).lesion_deformation(0.1);
  CHECK(o.shape() == std::array<index_t, 3>{8, 9, 10});
  CHECK(o.spacing() == Spacing{2, 3, 4});
  CHECK(o.lesion_radius() == std::array<double, 2>{1, 2});
  CHECK(o.lesion_lobes() == 2);
  CHECK(o.snr() == 5);
  CHECK(o.noise() == PhantomNoise::gaussian);
  CHECK(o.bias_strength() == 0.1);
  CHECK(o.texture() == 0.2);
  CHECK(o.head_jitter() == 0.1);
  CHECK(o.distractors() == 0);
  CHECK(o.lesion_rim() == 0.5);
  CHECK(o.lesion_deformation() == 0.1);
  CHECK(o.task() == PhantomTask::mmfnet_like);
  CHECK(o.edema_scale() == std::array<double, 2>{1.5, 2.0});
  CHECK(PhantomOptions().edema_scale(1.2, 3.0).edema_scale() == std::array<double, 2>{1.2, 3.0});
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions::brats().edema_scale(0.9, 2.0), 0), Contains("edema_scale"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions::brats().edema_scale(2.0, 1.5), 0), Contains("edema_scale"), value_error);
  CHECK_THROWS_WITH_AS(make_phantom(PhantomOptions::brats().edema_scale(1.5, 5.0), 0), Contains("edema_scale"), value_error);
  CHECK_THROWS_WITH_AS(phantom_tissue_intensity(PhantomTissue::edema, 0), Contains("mmfnet_like"), value_error);
  CHECK_THROWS_WITH_AS(brats_tissue_intensity(PhantomTissue::edema, 4), Contains("modality"), value_error);
}

// ---- brats_like ------------------------------------------------------------------------------------------------

inline std::uint8_t tissue(PhantomTissue t) { return static_cast<std::uint8_t>(t); }
// A smaller brats_like grid (1 mm, all axes different) to keep the suite fast.
inline PhantomOptions brats_small() { return PhantomOptions::brats().shape({40, 46, 42}); }

TEST_CASE("phantom brats_like: modalities, labels, skull-stripped (exact zeros outside the brain)") {
  const PhantomOptions o = PhantomOptions::brats();
  CHECK(o.task() == PhantomTask::brats_like);
  CHECK(o.shape() == std::array<index_t, 3>{48, 48, 48});
  CHECK(o.spacing() == Spacing{1.0, 1.0, 1.0});
  CHECK(phantom_task_name(PhantomTask::brats_like) == std::string("brats_like"));
  for (const auto noise : {PhantomNoise::rician, PhantomNoise::gaussian, PhantomNoise::none}) {
    const Phantom p = make_phantom(PhantomOptions(o).noise(noise), 3);
    INFO("noise " << static_cast<int>(noise));
    CHECK(p.image.shape() == Shape{4, 48, 48, 48});
    CHECK(p.label.shape() == Shape{48, 48, 48});
    CHECK(p.image.spacing == Spacing{1.0, 1.0, 1.0});
    CHECK(p.modalities == std::vector<std::string>{"T1", "T1ce", "T2", "FLAIR"});
    CHECK(p.labels == std::vector<std::string>{"background", "edema", "non-enhancing", "enhancing"});
    std::size_t outside_nonzero = 0, inside_zero = 0, brain = 0, label_outside = 0, label_mismatch = 0, other_tissue = 0;
    std::size_t count[4] = {0, 0, 0, 0};
    for (std::size_t i = 0; i < p.label.data.size(); ++i) {
      const std::uint8_t t = p.tissues.data[i], l = p.label.data[i];
      const bool in_brain = t != tissue(PhantomTissue::air);
      brain += in_brain;
      if (l > 3) FAIL("label value " << int(l) << " at voxel " << i);
      ++count[l];
      label_outside += !in_brain && l != 0;
      const std::uint8_t want = t == tissue(PhantomTissue::edema) ? 1 : t == tissue(PhantomTissue::necrosis) ? 2
                                : t == tissue(PhantomTissue::enhancing) ? 3 : 0;
      label_mismatch += l != want;
      for (index_t m = 0; m < 4; ++m) {
        const float v = p.image.channel(m)[i];
        outside_nonzero += !in_brain && v != 0.0f;
        inside_zero += in_brain && v == 0.0f;
      }
      // Only the brats_like tissues occur.
      other_tissue += !(t == tissue(PhantomTissue::air) || t == tissue(PhantomTissue::csf) ||
                        t == tissue(PhantomTissue::vessel) || t >= tissue(PhantomTissue::white_matter));
    }
    CHECK(other_tissue == 0);
    CHECK(outside_nonzero == 0);
    CHECK(inside_zero == 0);
    CHECK(label_outside == 0);
    CHECK(label_mismatch == 0);
    CHECK(count[1] > 0);
    CHECK(count[2] > 0);
    CHECK(count[3] > 0);
    const double brain_fraction = static_cast<double>(brain) / static_cast<double>(p.label.voxels());
    CHECK(brain_fraction > 0.15);
    CHECK(brain_fraction < 0.5);
    CHECK(static_cast<double>(count[1] + count[2] + count[3]) < 0.5 * static_cast<double>(brain));
    // The non-zero mask nnU-Net crops to and normalises in is exactly the brain.
    const auto mask = nonzero_mask(p.image);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < mask.size(); ++i) differ += mask[i] != (p.tissues.data[i] != tissue(PhantomTissue::air));
    CHECK(differ == 0);
    for (auto t : {PhantomTissue::white_matter, PhantomTissue::grey_matter, PhantomTissue::csf})
      CHECK(count_tissue(p, t) > 0);
  }
}

TEST_CASE("phantom brats_like: nested regions WT > TC > ET, necrosis inside the rim, the core inside the edema") {
  const auto regions = metrics::nnunet_brats_regions();
  REQUIRE(regions.size() == 3);
  CHECK(regions[0].name == "WT");
  CHECK(regions[0].labels == std::vector<std::int64_t>{1, 2, 3});
  CHECK(regions[1].labels == std::vector<std::int64_t>{2, 3});
  CHECK(regions[2].labels == std::vector<std::int64_t>{3});
  double edema_share_sum = 0;
  const int seeds = 8;
  for (std::uint64_t seed = 0; seed < static_cast<std::uint64_t>(seeds); ++seed) {
    const Phantom p = make_phantom(brats_small(), seed);
    const index_t D = p.label.depth, H = p.label.height, W = p.label.width;
    const metrics::Dims3 dims{D, H, W};
    // Region sizes: WT > TC > ET > 0 (strictly: there is edema and necrosis).
    const auto self = metrics::evaluate_regions(p.label.data, p.label.data, dims, {1, 1, 1}, regions,
                                                metrics::MetricOptions{true, 95.0, 1.0, false});
    const auto wt = self[0].counts.truth(), tc = self[1].counts.truth(), et = self[2].counts.truth();
    INFO("seed " << seed << ": WT " << wt << ", TC " << tc << ", ET " << et);
    CHECK(wt > tc);
    CHECK(tc > et);
    CHECK(et > 0);
    for (const auto& m : self) CHECK(m.dice == 1.0);
    // Faces between a core voxel (2, 3) and a non-core neighbour: mostly edema (the rest CSF / brain edge,
    // where edema does not spread); necrosis (2) touches only the core (enclosed by the enhancing rim).
    std::size_t core_faces = 0, to_edema = 0, nec_faces = 0, nec_out = 0;
    const index_t dz[6] = {1, -1, 0, 0, 0, 0}, dy[6] = {0, 0, 1, -1, 0, 0}, dx[6] = {0, 0, 0, 0, 1, -1};
    for (index_t z = 0; z < D; ++z)
      for (index_t y = 0; y < H; ++y)
        for (index_t x = 0; x < W; ++x) {
          const int l = p.label.at(z, y, x);
          if (l < 2) continue;
          for (int k = 0; k < 6; ++k) {
            const index_t zz = z + dz[k], yy = y + dy[k], xx = x + dx[k];
            const int n = (zz < 0 || yy < 0 || xx < 0 || zz >= D || yy >= H || xx >= W) ? 0 : p.label.at(zz, yy, xx);
            if (n < 2) {
              ++core_faces;
              to_edema += n == 1;
            }
            if (l == 2) {
              ++nec_faces;
              nec_out += n < 2;
            }
          }
        }
    const double edema_share = static_cast<double>(to_edema) / static_cast<double>(core_faces);
    INFO("core faces " << core_faces << ", to edema " << edema_share << "; necrosis faces " << nec_faces << ", out " << nec_out);
    CHECK(edema_share > 0.5);
    CHECK(static_cast<double>(nec_out) <= 0.02 * static_cast<double>(nec_faces));
    edema_share_sum += edema_share;
  }
  CHECK(edema_share_sum / seeds > 0.7);
}

TEST_CASE("phantom brats_like: per-modality contrast of each region as in real MRI") {
  using PT = PhantomTissue;
  SUBCASE("noise-free, bias-free, texture-free: the tissue table") {
    const Phantom p = make_phantom(brats_small().noise(PhantomNoise::none).bias_strength(0).texture(0), 4);
    std::size_t off_table = 0;
    for (std::size_t i = 0; i < p.tissues.data.size(); ++i)
      for (index_t m = 0; m < 4; ++m)
        off_table += p.image.channel(m)[i] != static_cast<float>(brats_tissue_intensity(static_cast<PT>(p.tissues.data[i]), m));
    CHECK(off_table == 0);
    CHECK(brats_tissue_intensity(PT::air, 2) == 0.0);
  }
  SUBCASE("default noise, bias and texture: the ordering holds on average") {
    enum { T1, T1CE, T2, FLAIR };
    const PT tissues[] = {PT::white_matter, PT::grey_matter, PT::csf, PT::edema, PT::necrosis, PT::enhancing};
    double mean[6][4] = {};
    const int seeds = 5;
    for (int s = 0; s < seeds; ++s) {
      const Phantom p = make_phantom(brats_small(), static_cast<std::uint64_t>(200 + s));
      for (int k = 0; k < 6; ++k) {
        const auto t = tissue(tissues[k]);
        REQUIRE(count_tissue(p, tissues[k]) > 0);
        for (index_t m = 0; m < 4; ++m) mean[k][m] += mean_where(p, m, [t](std::uint8_t x) { return x == t; }) / seeds;
      }
    }
    enum { WM, GM, CSF, ED, NEC, ET };
    for (int m = 0; m < 4; ++m)
      INFO("modality " << m << ": WM " << mean[WM][m] << " GM " << mean[GM][m] << " CSF " << mean[CSF][m] << " edema "
                       << mean[ED][m] << " necrosis " << mean[NEC][m] << " enhancing " << mean[ET][m]);
    // FLAIR: the whole tumour is bright against all normal tissue (CSF suppressed).
    for (int k : {ED, NEC, ET})
      for (int n : {WM, GM, CSF}) CHECK(mean[k][FLAIR] > 1.2 * mean[n][FLAIR]);
    // T2: the whole tumour is bright against the parenchyma, but CSF is brighter still.
    for (int k : {ED, NEC, ET}) {
      CHECK(mean[k][T2] > 1.2 * mean[WM][T2]);
      CHECK(mean[k][T2] > 1.2 * mean[GM][T2]);
      CHECK(mean[CSF][T2] > mean[k][T2]);
    }
    // T1ce: the enhancing part is the brightest by far; necrosis is dark (darker than edema and white matter).
    for (int n : {WM, GM, CSF, ED, NEC}) CHECK(mean[ET][T1CE] > 1.5 * mean[n][T1CE]);
    CHECK(mean[NEC][T1CE] < 0.6 * mean[ED][T1CE]);
    CHECK(mean[NEC][T1CE] < 0.6 * mean[WM][T1CE]);
    // T1: the tumour only faintly (within 25% of white matter for edema and enhancing; hypo-intense).
    for (int k : {ED, ET}) {
      CHECK(mean[k][T1] < mean[WM][T1]);
      CHECK(mean[k][T1] > 0.75 * mean[WM][T1]);
    }
  }
}

TEST_CASE("phantom brats_like: bit-identical for a seed, different for another, cases vary") {
  const PhantomOptions o = brats_small();
  const Phantom a = make_phantom(o, 42), b = make_phantom(o, 42), c = make_phantom(o, 43);
  CHECK(same_bytes(a.image.data, b.image.data));
  CHECK(same_bytes(a.bias.data, b.bias.data));
  CHECK(a.label.data == b.label.data);
  CHECK(a.tissues.data == b.tissues.data);
  CHECK_FALSE(same_bytes(a.image.data, c.image.data));
  CHECK_FALSE(a.label.data == c.label.data);
  // Tumour position and size vary across cases.
  std::vector<double> sizes, centres;
  for (std::uint64_t s = 0; s < 8; ++s) {
    const Phantom p = make_phantom(o, derive_seed(1, s));
    double n = 0, cz = 0;
    for (index_t z = 0; z < p.label.depth; ++z)
      for (index_t i = 0; i < p.label.height * p.label.width; ++i)
        if (p.label.data[static_cast<std::size_t>(z * p.label.height * p.label.width + i)]) n += 1, cz += static_cast<double>(z);
    REQUIRE(n > 0);
    sizes.push_back(n);
    centres.push_back(cz / n);
  }
  CHECK(*std::max_element(sizes.begin(), sizes.end()) > 1.5 * *std::min_element(sizes.begin(), sizes.end()));
  CHECK(*std::max_element(centres.begin(), centres.end()) - *std::min_element(centres.begin(), centres.end()) > 3.0);
}


// ---- npc_like --------------------------------------------------------------------------------------------------

inline std::size_t count_label(const Phantom& p) {
  return static_cast<std::size_t>(std::count(p.label.data.begin(), p.label.data.end(), std::uint8_t{1}));
}
// Centroid (mm, z y x) of the voxels whose tissue is t.
inline std::array<double, 3> centroid_mm(const Phantom& p, PhantomTissue t) {
  std::array<double, 3> c{0, 0, 0};
  double n = 0;
  const auto& L = p.tissues;
  for (index_t z = 0; z < L.depth; ++z)
    for (index_t y = 0; y < L.height; ++y)
      for (index_t x = 0; x < L.width; ++x)
        if (L.data[L.offset(z, y, x)] == static_cast<std::uint8_t>(t)) {
          c[0] += (static_cast<double>(z) + 0.5) * L.spacing[0];
          c[1] += (static_cast<double>(y) + 0.5) * L.spacing[1];
          c[2] += (static_cast<double>(x) + 0.5) * L.spacing[2];
          n += 1;
        }
  for (double& v : c) v /= n > 0 ? n : 1.0;
  return c;
}
// The best Dice of an intensity window lo <= v <= hi (lo and hi on a grid over the tumour's 1st..99th percentile
// and beyond): what an intensity-only rule can reach.
inline double best_window_dice(const Phantom& p) {
  const float* c = p.image.channel(0);
  std::vector<float> tum;
  for (std::size_t i = 0; i < p.label.data.size(); ++i)
    if (p.label.data[i]) tum.push_back(c[i]);
  std::sort(tum.begin(), tum.end());
  const double q_lo = tum[tum.size() / 100], q_hi = tum[tum.size() * 99 / 100];
  const double span = q_hi - q_lo;
  double best = 0;
  std::vector<char> pred(p.label.data.size());
  for (int a = 0; a <= 12; ++a)
    for (int b = 0; b <= 12; ++b) {
      const double lo = q_lo - 0.2 * span + a * 0.05 * span, hi = q_hi + 0.2 * span - b * 0.05 * span;
      if (hi <= lo) continue;
      for (std::size_t i = 0; i < pred.size(); ++i) pred[i] = c[i] >= lo && c[i] <= hi;
      best = std::max(best, dice(pred, p.label.data));
    }
  return best;
}

TEST_CASE("phantom npc_like: one T1 channel, labels, the anisotropic default grid and the isotropic preset") {
  const PhantomOptions o = PhantomOptions::npc();
  CHECK(o.task() == PhantomTask::npc_like);
  CHECK(o.shape() == std::array<index_t, 3>{24, 64, 64});
  CHECK(o.spacing() == Spacing{3.0, 1.0, 1.0});
  CHECK(phantom_task_name(PhantomTask::npc_like) == std::string("npc_like"));
  CHECK(phantom_modalities(PhantomTask::npc_like) == std::vector<std::string>{"T1"});
  CHECK(phantom_labels(PhantomTask::npc_like) == std::vector<std::string>{"background", "tumour"});
  const Phantom p = make_phantom(o, 1);
  CHECK(p.image.shape() == Shape{1, 24, 64, 64});
  CHECK(p.image.spacing == Spacing{3.0, 1.0, 1.0});
  CHECK(p.label.shape() == Shape{24, 64, 64});
  CHECK(p.label.spacing == Spacing{3.0, 1.0, 1.0});
  CHECK(p.bias.shape() == p.image.shape());
  CHECK(p.modalities == std::vector<std::string>{"T1"});
  CHECK(p.labels == std::vector<std::string>{"background", "tumour"});
  // Labels are exactly the tumour tissue; only npc_like tissues (and air) occur.
  std::size_t mismatched = 0, foreign = 0;
  for (std::size_t i = 0; i < p.label.data.size(); ++i) {
    const auto t = p.tissues.data[i];
    mismatched += p.label.data[i] != (t == static_cast<std::uint8_t>(PhantomTissue::tumour) ? 1 : 0);
    foreign += t != 0 && t < static_cast<std::uint8_t>(PhantomTissue::muscle);
  }
  CHECK(mismatched == 0);
  CHECK(foreign == 0);
  for (PhantomTissue t : {PhantomTissue::muscle, PhantomTissue::fat, PhantomTissue::bone, PhantomTissue::vertebra,
                          PhantomTissue::airway, PhantomTissue::mucosa, PhantomTissue::lymphoid,
                          PhantomTissue::lymph_node, PhantomTissue::tumour})
    CHECK_MESSAGE(count_tissue(p, t) > 0, "tissue " << static_cast<int>(t));

  // The isotropic preset: the same 72 x 64 x 64 mm field of view at 1 mm, and (the parameter draws do not depend
  // on the grid) the same anatomy: the tumour volume in mm^3 agrees with the anisotropic one to partial volumes.
  const PhantomOptions iso = PhantomOptions::npc_isotropic();
  CHECK(iso.shape() == std::array<index_t, 3>{72, 64, 64});
  CHECK(iso.spacing() == Spacing{1.0, 1.0, 1.0});
  for (std::uint64_t seed : {1u, 5u, 9u}) {
    const Phantom a = make_phantom(o, seed), b = make_phantom(iso, seed);
    CHECK(b.image.shape() == Shape{1, 72, 64, 64});
    const double va = 3.0 * static_cast<double>(count_label(a)), vb = static_cast<double>(count_label(b));
    CHECK(va == doctest::Approx(vb).epsilon(0.2));
    const auto ca = centroid_mm(a, PhantomTissue::tumour), cb = centroid_mm(b, PhantomTissue::tumour);
    for (int k = 0; k < 3; ++k) CHECK(std::abs(ca[static_cast<std::size_t>(k)] - cb[static_cast<std::size_t>(k)]) < 1.5);
  }
  // Air outside the head stays exactly 0 without noise; with Rician noise it is Rayleigh (mean 1.2533 sigma).
  const Phantom clean = make_phantom(PhantomOptions::npc().noise(PhantomNoise::none), 2);
  CHECK(mean_where(clean, 0, [](std::uint8_t t) { return t == 0; }) == 0.0);
  const double sigma = npc_tissue_intensity(PhantomTissue::muscle) / PhantomOptions::npc().snr();
  CHECK(mean_where(p, 0, [](std::uint8_t t) { return t == 0; }) == doctest::Approx(1.2533 * sigma).epsilon(0.03));
}

TEST_CASE("phantom npc_like: a small tumour (a few cm^3) on the nasopharyngeal wall, inside the head") {
  std::vector<double> volumes;
  for (std::uint64_t s = 0; s < 10; ++s) {
    const Phantom p = make_phantom(PhantomOptions::npc(), derive_seed(11, s));
    const auto& L = p.label;
    const double volume_mm3 = 3.0 * static_cast<double>(count_label(p));
    CHECK_MESSAGE(volume_mm3 > 500.0, "seed " << s << ": " << volume_mm3 << " mm^3");
    CHECK_MESSAGE(volume_mm3 < 6000.0, "seed " << s << ": " << volume_mm3 << " mm^3");
    volumes.push_back(volume_mm3);
    // Inside the head: no tumour voxel touches the air outside it (6-neighbourhood) or the volume's border.
    std::size_t touching = 0;
    std::array<index_t, 3> lo{L.depth, L.height, L.width}, hi{-1, -1, -1};
    for (index_t z = 0; z < L.depth; ++z)
      for (index_t y = 0; y < L.height; ++y)
        for (index_t x = 0; x < L.width; ++x) {
          if (!L.data[L.offset(z, y, x)]) continue;
          const index_t q[3] = {z, y, x};
          for (std::size_t a = 0; a < 3; ++a) lo[a] = std::min(lo[a], q[a]), hi[a] = std::max(hi[a], q[a]);
          if (z == 0 || y == 0 || x == 0 || z == L.depth - 1 || y == L.height - 1 || x == L.width - 1) {
            ++touching;
            continue;
          }
          const std::size_t nb[6] = {L.offset(z - 1, y, x), L.offset(z + 1, y, x), L.offset(z, y - 1, x),
                                     L.offset(z, y + 1, x), L.offset(z, y, x - 1), L.offset(z, y, x + 1)};
          for (std::size_t k : nb) touching += p.tissues.data[k] == static_cast<std::uint8_t>(PhantomTissue::air);
        }
    CHECK(touching == 0);
    // Small enough for CSCN's blocks: in-plane extent <= 32 mm (the 24 x 24 block holds most of it), >= 6 mm.
    for (std::size_t a = 0; a < 3; ++a) {
      const double extent_mm = static_cast<double>(hi[a] - lo[a] + 1) * L.spacing[a];
      CHECK_MESSAGE(extent_mm >= 6.0, "axis " << a << " extent " << extent_mm);
      if (a > 0) CHECK_MESSAGE(extent_mm <= 32.0, "axis " << a << " extent " << extent_mm);
      else CHECK_MESSAGE(extent_mm <= 36.0, "axis " << a << " extent " << extent_mm);
    }
    // Near the airway (it arises from the nasopharyngeal wall) and touching the mucosa or the lumen.
    const auto ct = centroid_mm(p, PhantomTissue::tumour), ca = centroid_mm(p, PhantomTissue::airway);
    const double dy = ct[1] - ca[1], dx = ct[2] - ca[2];
    CHECK(std::sqrt(dy * dy + dx * dx) < 20.0);
  }
  CHECK(*std::max_element(volumes.begin(), volumes.end()) > 1.3 * *std::min_element(volumes.begin(), volumes.end()));
  // Larger radii give larger tumours.
  double small_total = 0, large_total = 0;
  for (std::uint64_t s = 0; s < 4; ++s) {
    small_total += static_cast<double>(count_label(make_phantom(PhantomOptions::npc().lesion_radius(4, 5), s)));
    large_total += static_cast<double>(count_label(make_phantom(PhantomOptions::npc().lesion_radius(9, 10), s)));
  }
  CHECK(large_total > 3.0 * small_total);
}

TEST_CASE("phantom npc_like: tumour brighter than muscle, overlapping mucosa and lymphoid tissue") {
  using PT = PhantomTissue;
  // The designed T1 ordering (no noise, bias or texture: exact table values; the tumour within +-8%).
  CHECK(npc_tissue_intensity(PT::air) == 0.0);
  CHECK(npc_tissue_intensity(PT::airway) == 0.0);
  CHECK(npc_tissue_intensity(PT::bone) < npc_tissue_intensity(PT::vertebra));
  CHECK(npc_tissue_intensity(PT::vertebra) < npc_tissue_intensity(PT::muscle));
  CHECK(npc_tissue_intensity(PT::muscle) < npc_tissue_intensity(PT::mucosa));
  CHECK(npc_tissue_intensity(PT::mucosa) < npc_tissue_intensity(PT::lymphoid));
  CHECK(npc_tissue_intensity(PT::lymphoid) < npc_tissue_intensity(PT::lymph_node));
  CHECK(npc_tissue_intensity(PT::lymph_node) < npc_tissue_intensity(PT::tumour));
  CHECK(npc_tissue_intensity(PT::tumour) < npc_tissue_intensity(PT::fat));
  CHECK(npc_tissue_intensity(PT::brain) == 0.0);
  {
    const Phantom p = make_phantom(PhantomOptions::npc().noise(PhantomNoise::none).bias_strength(0).texture(0), 4);
    std::size_t off_table = 0, tumour_out = 0;
    for (std::size_t i = 0; i < p.tissues.data.size(); ++i) {
      const auto t = static_cast<PT>(p.tissues.data[i]);
      const double v = p.image.data[i], ref = npc_tissue_intensity(t);
      if (t == PT::tumour) tumour_out += std::abs(v - ref) > 0.08 * ref + 1e-6;
      else off_table += v != static_cast<float>(ref);
    }
    CHECK(off_table == 0);
    CHECK(tumour_out == 0);
    CHECK(p.bias.data == std::vector<float>(p.bias.data.size(), 1.0f));
  }
  // With the default noise, bias and texture: clearly brighter than muscle (> 4 sigma), but within 3 sigma of the
  // mucosa and the adenoid, so the best intensity window reaches a poor Dice: location and shape must decide.
  const double sigma = npc_tissue_intensity(PT::muscle) / PhantomOptions::npc().snr();
  double worst_window = 0;
  for (std::uint64_t s = 0; s < 4; ++s) {
    const Phantom p = make_phantom(PhantomOptions::npc(), derive_seed(21, s));
    const auto is = [](PT t) { return [t](std::uint8_t v) { return v == static_cast<std::uint8_t>(t); }; };
    const double tumour = mean_where(p, 0, is(PT::tumour)), muscle = mean_where(p, 0, is(PT::muscle));
    const double mucosa = mean_where(p, 0, is(PT::mucosa)), lymphoid = mean_where(p, 0, is(PT::lymphoid));
    CHECK_MESSAGE(tumour - muscle > 4 * sigma, "seed " << s << ": tumour " << tumour << ", muscle " << muscle);
    CHECK_MESSAGE(tumour > mucosa, "seed " << s);
    CHECK_MESSAGE(std::abs(tumour - mucosa) < 3 * sigma, "seed " << s << ": tumour " << tumour << ", mucosa " << mucosa);
    CHECK_MESSAGE(std::abs(tumour - lymphoid) < 3 * sigma, "seed " << s << ": tumour " << tumour << ", lymphoid " << lymphoid);
    CHECK(mean_where(p, 0, is(PT::fat)) > tumour);
    const double w = best_window_dice(p);
    worst_window = std::max(worst_window, w);
    CHECK_MESSAGE(w < 0.75, "seed " << s << ": best intensity-window Dice " << w);
  }
  MESSAGE("npc_like: best intensity-window Dice over 4 cases <= " << worst_window);
}

TEST_CASE("phantom npc_like: bit-identical for a seed, different for another") {
  const PhantomOptions o = PhantomOptions::npc().shape({16, 56, 52});
  const Phantom a = make_phantom(o, 42), b = make_phantom(o, 42), c = make_phantom(o, 43);
  CHECK(same_bytes(a.image.data, b.image.data));
  CHECK(same_bytes(a.bias.data, b.bias.data));
  CHECK(a.label.data == b.label.data);
  CHECK(a.tissues.data == b.tissues.data);
  CHECK_FALSE(same_bytes(a.image.data, c.image.data));
  CHECK_FALSE(a.label.data == c.label.data);
  CHECK_FALSE(same_bytes(a.bias.data, c.bias.data));
}

TEST_CASE("phantom npc_like: the data set writer keeps one modality, the tumour label and the anisotropic spacing") {
  const std::string dir = mmnet::test::scratch_dir("phantom", "npc_dataset");
  const PhantomOptions o = PhantomOptions::npc().shape({16, 48, 44});
  write_phantom_dataset(dir, 2, 1, 3, o);
  const Dataset ds = open_dataset(dir);
  CHECK(ds.name == "mmnet_phantom_npc");
  CHECK(ds.modalities == std::vector<std::string>{"T1"});
  CHECK(ds.labels == std::map<int, std::string>{{0, "background"}, {1, "tumour"}});
  REQUIRE(ds.training.size() == 2);
  REQUIRE(ds.test.size() == 1);
  CHECK(ds.training[0].images.size() == 1);
  const LoadedCase lc = load_case(ds, 0);
  CHECK(lc.image.shape() == Shape{1, 16, 48, 44});
  CHECK(lc.image.spacing == Spacing{3.0, 1.0, 1.0});
  REQUIRE(lc.label.has_value());
  CHECK(lc.label->spacing == Spacing{3.0, 1.0, 1.0});
  // NIfTI pixdim[1..3] = (dx, dy, dz) = (1, 1, 3): thick axial slices.
  CHECK(lc.reference.spacing() == std::array<double, 3>{1.0, 1.0, 3.0});
  const Phantom p = make_phantom(o, derive_seed(3, 1));
  CHECK(same_bytes(lc.image.data, p.image.data));
  CHECK(lc.label->data == p.label.data);
}

// ---- barriers (HMRNet's five structures) ---------------------------------------------------------------------

struct LabelStats {
  std::array<index_t, 6> count{};
  std::array<std::array<double, 3>, 6> centroid{};  // voxel units (z, y, x)
  std::array<std::array<double, 3>, 6> mean{};      // per modality, over the label's voxels
};
inline LabelStats label_stats(const Phantom& p) {
  LabelStats s;
  const LabelMap& L = p.label;
  for (index_t z = 0; z < L.depth; ++z)
    for (index_t y = 0; y < L.height; ++y)
      for (index_t x = 0; x < L.width; ++x) {
        const int l = L.at(z, y, x);
        REQUIRE(l <= 5);
        ++s.count[static_cast<std::size_t>(l)];
        s.centroid[static_cast<std::size_t>(l)][0] += static_cast<double>(z);
        s.centroid[static_cast<std::size_t>(l)][1] += static_cast<double>(y);
        s.centroid[static_cast<std::size_t>(l)][2] += static_cast<double>(x);
        for (index_t m = 0; m < 3; ++m) s.mean[static_cast<std::size_t>(l)][static_cast<std::size_t>(m)] += p.image.at(m, z, y, x);
      }
  for (std::size_t l = 0; l < 6; ++l)
    for (std::size_t a = 0; a < 3; ++a)
      if (s.count[l] > 0) {
        s.centroid[l][a] /= static_cast<double>(s.count[l]);
        s.mean[l][a] /= static_cast<double>(s.count[l]);
      }
  return s;
}

TEST_CASE("phantom barriers: three channels CT / T1c / T2, labels 0..5, the 1.2 mm preset, tissues consistent") {
  const PhantomOptions o = PhantomOptions::barriers();
  CHECK(o.task() == PhantomTask::barriers);
  CHECK(o.shape() == std::array<index_t, 3>{48, 56, 48});
  CHECK(o.spacing() == Spacing{1.2, 1.2, 1.2});
  CHECK(phantom_task_name(PhantomTask::barriers) == std::string("barriers"));
  CHECK(phantom_modalities(PhantomTask::barriers) == std::vector<std::string>{"CT", "T1c", "T2"});
  CHECK(phantom_labels(PhantomTask::barriers) ==
        std::vector<std::string>{"background", "cerebellum", "falx", "sinuses", "tentorium", "ventricles"});
  const Phantom p = make_phantom(o, 5);
  CHECK(p.image.shape() == Shape{3, 48, 56, 48});
  CHECK(p.bias.shape() == Shape{3, 48, 56, 48});
  CHECK(p.label.shape() == Shape{48, 56, 48});
  CHECK(p.image.spacing == Spacing{1.2, 1.2, 1.2});
  CHECK(p.modalities.size() == 3);
  CHECK(p.labels.size() == 6);
  using PT = PhantomTissue;
  const std::map<int, PT> tissue_of{{1, PT::cerebellum}, {2, PT::dura}, {3, PT::sinus_blood}, {4, PT::dura}, {5, PT::csf}};
  const std::vector<PT> allowed{PT::air, PT::skin, PT::skull, PT::brain, PT::csf, PT::dura, PT::sinus_blood, PT::cerebellum};
  bool consistent = true, only_allowed = true;
  for (std::size_t i = 0; i < p.label.data.size(); ++i) {
    const auto t = static_cast<PT>(p.tissues.data[i]);
    const int l = p.label.data[i];
    if (l > 0 && tissue_of.at(l) != t) consistent = false;
    if (l == 0 && (t == PT::dura || t == PT::sinus_blood || t == PT::cerebellum)) consistent = false;
    if (std::find(allowed.begin(), allowed.end(), t) == allowed.end()) only_allowed = false;
  }
  CHECK(consistent);
  CHECK(only_allowed);
  // CT has no bias field; T1c and T2 have one.
  CHECK(std::all_of(p.bias.channel(0), p.bias.channel(0) + p.bias.voxels(), [](float b) { return b == 1.0f; }));
  CHECK_FALSE(std::all_of(p.bias.channel(1), p.bias.channel(1) + p.bias.voxels(), [](float b) { return b == 1.0f; }));
  CHECK(barriers_tissue_intensity(PT::air, 0) == 0.0);
  CHECK_THROWS_AS(barriers_tissue_intensity(PT::brain, 3), value_error);
}

TEST_CASE("phantom barriers: all five structures present with plausible sizes in every case") {
  for (std::uint64_t s = 0; s < 6; ++s) {
    const LabelStats st = label_stats(make_phantom(PhantomOptions::barriers(), derive_seed(21, s)));
    CAPTURE(s);
    CHECK(st.count[1] > 300);  // cerebellum: a blob of ~0.3-0.5 cm^3 at this scale
    CHECK(st.count[2] > 300);  // falx: a 1-voxel sheet over much of the mid-sagittal plane
    CHECK(st.count[3] > 150);  // sinuses
    CHECK(st.count[4] > 200);  // tentorium
    CHECK(st.count[5] > 150);  // ventricles
    for (std::size_t l = 1; l < 6; ++l) CHECK(st.count[l] < 3000);
  }
}

TEST_CASE("phantom barriers: falx and tentorium are one voxel thick, sinuses at most two voxels radially") {
  for (std::uint64_t s = 0; s < 4; ++s) {
    const Phantom p = make_phantom(PhantomOptions::barriers(), derive_seed(22, s));
    const LabelMap& L = p.label;
    index_t falx_max = 0, tent_max = 0, sin_z_max = 0;
    std::vector<index_t> falx_x;
    for (index_t z = 0; z < L.depth; ++z)
      for (index_t y = 0; y < L.height; ++y) {
        index_t n = 0;
        for (index_t x = 0; x < L.width; ++x)
          if (L.at(z, y, x) == 2) { ++n; falx_x.push_back(x); }
        falx_max = std::max(falx_max, n);
      }
    for (index_t y = 0; y < L.height; ++y)
      for (index_t x = 0; x < L.width; ++x) {
        index_t n = 0;
        for (index_t z = 0; z < L.depth; ++z) n += L.at(z, y, x) == 4;
        tent_max = std::max(tent_max, n);
      }
    // transverse sinus: at the back (y < H / 4), off the midline (the sagittal sinus): its z extent per column
    for (index_t y = 0; y < L.height / 4; ++y)
      for (index_t x = 0; x < L.width; ++x) {
        if (std::abs(2 * x - L.width) < 10) continue;
        index_t n = 0;
        for (index_t z = 0; z < L.depth; ++z) n += L.at(z, y, x) == 3;
        sin_z_max = std::max(sin_z_max, n);
      }
    CAPTURE(s);
    CHECK(falx_max == 1);   // one voxel per (z, y) row
    CHECK(tent_max == 1);   // one voxel per (y, x) column
    CHECK(sin_z_max >= 1);
    CHECK(sin_z_max <= 3);  // a 2-voxel tube (3 where the shell curves)
    // the falx is one sagittal plane (a single x), near the middle
    REQUIRE_FALSE(falx_x.empty());
    CHECK(*std::min_element(falx_x.begin(), falx_x.end()) == *std::max_element(falx_x.begin(), falx_x.end()));
    CHECK(std::abs(2 * falx_x[0] - L.width) <= 6);
    // ... with CSF (label 0, tissue csf) on either side in T2: the dark dura line between bright CSF
    const LabelStats st = label_stats(p);
    CHECK(st.mean[2][2] < 0.5 * st.mean[5][2]);
  }
}

TEST_CASE("phantom barriers: positions and nesting (cerebellum below the tentorium, falx above it, sinus outside the brain)") {
  for (std::uint64_t s = 0; s < 4; ++s) {
    const Phantom p = make_phantom(PhantomOptions::barriers(), derive_seed(23, s));
    const LabelMap& L = p.label;
    const LabelStats st = label_stats(p);
    const double cz = L.depth / 2.0, cy = L.height / 2.0, cx = L.width / 2.0;
    CAPTURE(s);
    CHECK(st.centroid[1][0] < cz - 4);   // cerebellum inferior
    CHECK(st.centroid[1][1] < cy - 3);   // and posterior
    CHECK(std::abs(st.centroid[1][2] - cx) < 2.5);
    CHECK(st.centroid[2][0] > cz + 2);   // falx superior, on the midline
    CHECK(std::abs(st.centroid[2][2] - cx) < 2.5);
    CHECK(st.centroid[4][0] < st.centroid[2][0]);  // tentorium below the falx, above the cerebellum
    CHECK(st.centroid[4][0] > st.centroid[1][0]);
    CHECK(st.centroid[4][1] < cy);       // tentorium posterior
    CHECK(std::abs(st.centroid[5][1] - cy) < 4);  // ventricles central, mirrored about the midline
    CHECK(std::abs(st.centroid[5][2] - cx) < 2.5);
    // every column holding both: the tentorium lies above the cerebellum
    bool above = true;
    index_t both = 0;
    for (index_t y = 0; y < L.height; ++y)
      for (index_t x = 0; x < L.width; ++x) {
        index_t zt = -1, zc = -1;
        for (index_t z = 0; z < L.depth; ++z) {
          if (L.at(z, y, x) == 4) zt = z;
          if (L.at(z, y, x) == 1) zc = std::max(zc, z);
        }
        if (zt >= 0 && zc >= 0) { ++both; above = above && zt > zc; }
      }
    CHECK(both > 20);
    CHECK(above);
    // the ventricles: two components, one each side of the falx plane
    index_t left = 0, right = 0;
    for (index_t i = 0; i < L.voxels(); ++i)
      if (L.data[static_cast<std::size_t>(i)] == 5) (2 * (i % L.width) < L.width ? left : right)++;
    CHECK(left > 50);
    CHECK(right > 50);
    // sinus voxels lie in the dura shell: never next to air, and both a midline-top and a posterior-lateral part
    index_t top = 0, lateral = 0;
    for (index_t z = 0; z < L.depth; ++z)
      for (index_t y = 0; y < L.height; ++y)
        for (index_t x = 0; x < L.width; ++x)
          if (L.at(z, y, x) == 3) {
            if (z > cz + 8 && std::abs(x - cx) <= 2) ++top;
            if (z < cz && std::abs(x - cx) > 8) ++lateral;
          }
    CHECK(top > 20);
    CHECK(lateral > 20);
  }
}

TEST_CASE("phantom barriers: per-modality contrast (CT bone, T1c sinuses, T2 ventricles / CSF)") {
  using PT = PhantomTissue;
  // Designed intensities.
  for (PT t : {PT::skin, PT::brain, PT::csf, PT::dura, PT::sinus_blood, PT::cerebellum})
    CHECK(barriers_tissue_intensity(PT::skull, 0) > barriers_tissue_intensity(t, 0));
  for (PT t : {PT::skin, PT::skull, PT::brain, PT::csf, PT::dura, PT::cerebellum})
    CHECK(barriers_tissue_intensity(PT::sinus_blood, 1) > barriers_tissue_intensity(t, 1));
  for (PT t : {PT::skin, PT::skull, PT::brain, PT::dura, PT::sinus_blood, PT::cerebellum})
    CHECK(barriers_tissue_intensity(PT::csf, 2) > barriers_tissue_intensity(t, 2));
  // Measured on noisy, biased phantoms.
  for (std::uint64_t s = 0; s < 3; ++s) {
    const Phantom p = make_phantom(PhantomOptions::barriers(), derive_seed(24, s));
    const LabelStats st = label_stats(p);
    double skull_ct = 0, brain_ct = 0, brain_t1 = 0, brain_t2 = 0;
    index_t ns = 0, nb = 0;
    for (index_t i = 0; i < p.label.voxels(); ++i) {
      const auto t = static_cast<PT>(p.tissues.data[static_cast<std::size_t>(i)]);
      if (t == PT::skull) { skull_ct += p.image.channel(0)[i]; ++ns; }
      if (t == PT::brain) { brain_ct += p.image.channel(0)[i]; brain_t1 += p.image.channel(1)[i]; brain_t2 += p.image.channel(2)[i]; ++nb; }
    }
    skull_ct /= static_cast<double>(ns);
    brain_ct /= static_cast<double>(nb);
    brain_t1 /= static_cast<double>(nb);
    brain_t2 /= static_cast<double>(nb);
    CAPTURE(s);
    CHECK(skull_ct > 2 * brain_ct);                     // CT: bright bone
    CHECK(st.mean[3][1] > 1.5 * brain_t1);              // T1c: bright sinuses
    for (std::size_t l : {1, 2, 4, 5}) CHECK(st.mean[3][1] > st.mean[l][1]);
    CHECK(st.mean[5][2] > 1.7 * brain_t2);              // T2: bright ventricles
    for (std::size_t l : {1, 2, 3, 4}) CHECK(st.mean[5][2] > st.mean[l][2]);
    CHECK(std::abs(st.mean[5][0] - brain_ct) < 0.15);   // CT: ventricles barely visible
  }
}

TEST_CASE("phantom barriers: bit-identical for a seed, different for another, the data set writer") {
  const Phantom a = make_phantom(PhantomOptions::barriers(), 9), b = make_phantom(PhantomOptions::barriers(), 9);
  const Phantom c = make_phantom(PhantomOptions::barriers(), 10);
  CHECK(same_bytes(a.image.data, b.image.data));
  CHECK(a.label.data == b.label.data);
  CHECK(a.tissues.data == b.tissues.data);
  CHECK_FALSE(same_bytes(a.image.data, c.image.data));
  CHECK_FALSE(a.label.data == c.label.data);
  // noise follows snr: sigma = brain intensity / snr in each channel (Gaussian, measured in the air)
  const Phantom g = make_phantom(PhantomOptions::barriers().noise(PhantomNoise::gaussian), 3);
  for (index_t m = 0; m < 3; ++m) {
    double s2 = 0;
    index_t n = 0;
    for (index_t i = 0; i < g.label.voxels(); ++i)
      if (g.tissues.data[static_cast<std::size_t>(i)] == static_cast<std::uint8_t>(PhantomTissue::air)) {
        s2 += static_cast<double>(g.image.channel(m)[i]) * g.image.channel(m)[i];
        ++n;
      }
    const double sigma = barriers_tissue_intensity(PhantomTissue::brain, m) / 20.0;
    CHECK(std::sqrt(s2 / static_cast<double>(n)) == doctest::Approx(sigma).epsilon(0.05));
  }

  const std::string dir = mmnet::test::scratch_dir("phantom", "barriers_dataset");
  const PhantomOptions o = PhantomOptions::barriers().shape({24, 32, 24});
  write_phantom_dataset(dir, 2, 1, 4, o);
  const Dataset ds = open_dataset(dir);
  CHECK(ds.name == "mmnet_phantom_barriers");
  CHECK(ds.modalities == std::vector<std::string>{"CT", "T1c", "T2"});
  CHECK(ds.labels == std::map<int, std::string>{{0, "background"}, {1, "cerebellum"}, {2, "falx"}, {3, "sinuses"},
                                                {4, "tentorium"}, {5, "ventricles"}});
  REQUIRE(ds.training.size() == 2);
  const LoadedCase lc = load_case(ds, 1);
  CHECK(lc.image.shape() == Shape{3, 24, 32, 24});
  const Phantom p = make_phantom(o, derive_seed(4, 2));
  CHECK(same_bytes(lc.image.data, p.image.data));
  REQUIRE(lc.label.has_value());
  CHECK(lc.label->data == p.label.data);
}

}  // namespace phantom_test
