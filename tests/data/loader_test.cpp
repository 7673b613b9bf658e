// Background batch loader (include/mmnet/data/loader.hpp): the batches equal the sampler + augment chain run by
// hand with batch_seed(base, k), resuming at k, exception propagation, shutdown with a full queue, bad input.
#include <mmnet/data/loader.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using mmnet::data::AugmentOptions;
using mmnet::data::Batch;
using mmnet::data::BatchLoader;
using mmnet::data::Case;
using mmnet::data::LabelMap;
using mmnet::data::LoaderOptions;
using mmnet::data::PatchSampler;
using mmnet::data::SamplerOptions;
using mmnet::data::Volume;

namespace {

Case make_case(index_t c, index_t d, index_t h, index_t w, std::uint64_t seed, const std::string& name) {
  Case k{Volume(c, d, h, w), LabelMap(d, h, w), name};
  Generator g(seed);
  for (auto& x : k.image.data) x = static_cast<float>(g.normal());
  for (index_t z = d / 3; z < d / 2 + 1; ++z)
    for (index_t y = h / 4; y < h / 2; ++y)
      for (index_t x = w / 3; x < w / 2 + 1; ++x) k.label.at(z, y, x) = static_cast<std::uint8_t>(1 + (x + y) % 2);
  return k;
}

std::shared_ptr<const PatchSampler> make_sampler() {
  std::vector<Case> cases{make_case(2, 9, 14, 11, 1, "a"), make_case(2, 6, 10, 13, 2, "b"),
                          make_case(2, 4, 5, 6, 3, "small")};  // smaller than the patch along D and H: padded
  return std::make_shared<const PatchSampler>(std::move(cases), SamplerOptions({5, 7, 6}).pad_value({-1.0f, -2.0f}));
}

// Batch k by hand: the documented recipe.
Batch by_hand(const PatchSampler& s, const LoaderOptions& o, index_t k) {
  Generator g(data::batch_seed(o.seed(), static_cast<std::uint64_t>(k)));
  auto patches = s.sample_batch(o.batch_size(), g);
  if (o.augment_enabled())
    for (auto& p : patches) data::augment(p.image, p.label, o.augment_options(), g);
  std::vector<float> img, lab;
  for (const auto& p : patches) {
    img.insert(img.end(), p.image.data.begin(), p.image.data.end());
    lab.insert(lab.end(), p.label.data.begin(), p.label.data.end());
  }
  Batch b;
  b.index = k;
  const auto n = static_cast<index_t>(patches.size());
  b.images = Tensor<float, cpu>::from_vector(Shape{n, 2, 5, 7, 6}, img);
  b.labels = Tensor<float, cpu>::from_vector(Shape{n, 1, 5, 7, 6}, lab);
  for (const auto& p : patches) b.cases.push_back(p.case_index);
  return b;
}

void check_same(const Batch& a, const Batch& b) {
  CHECK(a.index == b.index);
  CHECK(a.images.shape() == b.images.shape());
  CHECK(a.labels.shape() == b.labels.shape());
  CHECK(a.images.to_vector() == b.images.to_vector());
  CHECK(a.labels.to_vector() == b.labels.to_vector());
  CHECK(a.cases == b.cases);
}

}  // namespace

TEST_CASE("BatchLoader yields the sampler + augment chain's batches, in order, for any capacity") {
  const auto s = make_sampler();
  const auto o = LoaderOptions(3).seed(1234).capacity(2).augment(AugmentOptions().rotation_probability(0.5));
  BatchLoader loader(s, o);
  for (index_t k = 0; k < 8; ++k) {
    CHECK(loader.next_index() == k);
    const Batch b = loader.next();
    CHECK(b.images.shape() == Shape{3, 2, 5, 7, 6});
    CHECK(b.labels.shape() == Shape{3, 1, 5, 7, 6});
    check_same(b, by_hand(*s, o, k));
    CHECK(b.forced == std::vector<bool>{false, false, true});  // round(3 * 2/3) = 2 random, 1 forced
  }
  // Capacity 1, no augmentation, another seed: still the hand-made sequence.
  const auto o2 = LoaderOptions(2).seed(99).capacity(1).augment(false);
  BatchLoader l2(s, o2);
  for (index_t k = 0; k < 5; ++k) check_same(l2.next(), by_hand(*s, o2, k));
  // Different base seeds give different sequences.
  CHECK(data::batch_seed(1, 0) != data::batch_seed(2, 0));
  CHECK(data::batch_seed(1, 0) != data::batch_seed(1, 1));
  CHECK(data::make_batch(*s, o, 0).images.to_vector() != data::make_batch(*s, LoaderOptions(o).seed(1235), 0).images.to_vector());
}

TEST_CASE("BatchLoader resumed at batch k sees the batches of an uninterrupted run") {
  const auto s = make_sampler();
  const auto o = LoaderOptions(2).seed(7).capacity(3);
  std::vector<Batch> full;
  {
    BatchLoader l(s, o);
    for (int i = 0; i < 9; ++i) full.push_back(l.next());
  }
  BatchLoader resumed(s, LoaderOptions(o).start_batch(5));
  CHECK(resumed.next_index() == 5);
  for (std::size_t k = 5; k < 9; ++k) check_same(resumed.next(), full[k]);
  // A limited run ends with an error naming the limit.
  BatchLoader limited(s, LoaderOptions(o).start_batch(2).num_batches(2));
  check_same(limited.next(), full[2]);
  check_same(limited.next(), full[3]);
  check_throws_naming<value_error>([&] { limited.next(); }, {"mmnet::data::BatchLoader", "< 4", "got 4"});
}

TEST_CASE("BatchLoader rethrows a worker exception in next(), at the failing batch") {
  const auto s = make_sampler();
  const auto o = LoaderOptions(2).seed(3);
  BatchLoader loader(
      [&](index_t k) {
        if (k == 3) throw value_error("producer failed at batch 3");
        return data::make_batch(*s, o, k);
      },
      LoaderOptions(2).capacity(2));
  for (index_t k = 0; k < 3; ++k) check_same(loader.next(), data::make_batch(*s, o, k));
  check_throws_naming<value_error>([&] { loader.next(); }, {"producer failed at batch 3"});
  // The worker has stopped; further calls keep failing instead of blocking.
  CHECK_THROWS_AS(loader.next(), value_error);
  // An mmnet error raised inside the worker (a box of the wrong size) reaches the consumer with its type.
  BatchLoader bad([&](index_t) { return data::stack({s->extract(0, data::Box{{0, 0, 0}, {1, 1, 1}})}, 0); },
                  LoaderOptions(1));
  CHECK_THROWS_AS(bad.next(), shape_error);
}

TEST_CASE("BatchLoader shuts down cleanly while its queue is full or a batch is in flight") {
  const auto s = make_sampler();
  std::atomic<int> made{0};
  {
    BatchLoader l(
        [&](index_t k) {
          ++made;
          return data::make_batch(*s, LoaderOptions(1), k);
        },
        LoaderOptions(1).capacity(2));
    // Wait until the worker has filled the queue and blocks on it.
    for (int i = 0; i < 2000 && l.queued() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(l.queued() == 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(made.load() == 2);  // capacity respected
  }  // destructor joins the blocked worker
  {
    // A slow producer in flight at destruction; never consumed.
    BatchLoader l(
        [&](index_t k) {
          std::this_thread::sleep_for(std::chrono::milliseconds(30));
          return data::make_batch(*s, LoaderOptions(1), k);
        },
        LoaderOptions(1).capacity(1));
  }
  {
    BatchLoader l(s, LoaderOptions(2));
    l.next();
    l.stop();
    l.stop();  // idempotent
  }
  CHECK(true);
}

TEST_CASE("BatchLoader and stack reject bad options and inputs") {
  const auto s = make_sampler();
  check_throws_naming<value_error>([&] { BatchLoader(s, LoaderOptions(0)); },
                                   {"mmnet::data::LoaderOptions", "batch size", "> 0", "got 0"});
  CHECK_THROWS_AS(BatchLoader(s, LoaderOptions(2).capacity(0)), value_error);
  CHECK_THROWS_AS(BatchLoader(s, LoaderOptions(2).start_batch(-1)), value_error);
  CHECK_THROWS_AS(BatchLoader(std::shared_ptr<const PatchSampler>(), LoaderOptions(2)), value_error);
  CHECK_THROWS_AS(BatchLoader(s, LoaderOptions(2).augment(AugmentOptions().scale_probability(-1))), value_error);
  check_throws_naming<shape_error>(
      [&] { BatchLoader(s, LoaderOptions(2).augment(AugmentOptions().rotation_fill({0.0f, 1.0f, 2.0f}))); },
      {"mmnet::data::BatchLoader", "rotation_fill", "expected 2", "got 3"});
  data::Patch a = s->extract(0, data::Box{{0, 0, 0}, {5, 7, 6}});
  data::Patch b = a;
  b.image = Volume(1, 5, 7, 6);
  check_throws_naming<shape_error>([&] { data::stack({a, b}, 0); },
                                   {"mmnet::data::stack", "patch 1 image shape", "(2, 5, 7, 6)", "(1, 5, 7, 6)"});
  CHECK_THROWS_AS(data::stack({}, 0), value_error);
}

TEST_CASE("BatchLoader with MMFNet's WindowSampler and augmentation") {
  std::vector<Case> cases{make_case(3, 13, 20, 22, 4, "p1"), make_case(3, 9, 24, 18, 5, "p2")};
  cases[0].roi = data::Box{{1, 2, 3}, {12, 18, 20}};
  auto s = std::make_shared<data::WindowSampler>(
      cases, data::WindowOptions({8, 12, 10}).max_offset({2, 4, 4}).pad_value({-2.0f, -3.0f, -2.0f}));
  const auto o = LoaderOptions(4).seed(5).augment(AugmentOptions::mmfnet().rotation_fill({-2.0f, -3.0f, -2.0f}));
  BatchLoader l(s, o);
  for (index_t k = 0; k < 3; ++k) {
    const Batch b = l.next();
    CHECK(b.images.shape() == Shape{4, 3, 8, 12, 10});
    Generator g(data::batch_seed(5, static_cast<std::uint64_t>(k)));
    auto patches = s->sample_batch(4, g);
    for (auto& p : patches) data::augment(p.image, p.label, o.augment_options(), g);
    check_same(b, data::stack(patches, k));
  }
}

TEST_CASE("LoaderOptions::crop_margin: enlarged patches, rotated, cropped back, no fill inside") {
  Case c = make_case(1, 12, 30, 28, 6, "big");
  for (auto& x : c.image.data) x = 1.0f + std::abs(x);  // all > 0; the rotation fill is -99
  auto s = std::make_shared<const PatchSampler>(std::vector<Case>{c}, SamplerOptions({4, 14, 12}));
  const auto aug = AugmentOptions::none().rotation_probability(1).rotation_degrees({-10, 10}).rotation_fill({-99.0f});
  const auto o = LoaderOptions(3).seed(8).augment(aug).crop_margin({0, 3, 3});
  const Batch b = data::make_batch(*s, o, 0);
  CHECK(b.images.shape() == Shape{3, 1, 4, 8, 6});
  for (float x : b.images.to_vector()) CHECK(x > 0.0f);
  // Without the margin the rotated corners hold fill.
  const Batch full = data::make_batch(*s, LoaderOptions(o).crop_margin({0, 0, 0}), 0);
  bool fill_seen = false;
  for (float x : full.images.to_vector()) fill_seen = fill_seen || x < -1.0f;
  CHECK(fill_seen);
  // The cropped batch is the centre of the full one; boxes shrink accordingly.
  const auto fi = full.images.to_vector(), ci = b.images.to_vector();
  for (index_t n = 0; n < 3; ++n)
    for (index_t z = 0; z < 4; ++z)
      for (index_t y = 0; y < 8; ++y)
        for (index_t x = 0; x < 6; ++x)
          CHECK(ci[static_cast<std::size_t>(((n * 4 + z) * 8 + y) * 6 + x)] ==
                fi[static_cast<std::size_t>(((n * 4 + z) * 14 + y + 3) * 12 + x + 3)]);
  CHECK(b.boxes[0].begin[1] == full.boxes[0].begin[1] + 3);
  CHECK(b.boxes[0].end[2] == full.boxes[0].end[2] - 3);
  check_throws_naming<shape_error>([&] { data::make_batch(*s, LoaderOptions(o).crop_margin({2, 0, 0}), 0); },
                                   {"mmnet::data::make_batch", "crop margin", "(2, 0, 0)", "(4, 14, 12)"});
  CHECK_THROWS_AS(BatchLoader(s, LoaderOptions(o).crop_margin({0, -1, 0})), value_error);
}
