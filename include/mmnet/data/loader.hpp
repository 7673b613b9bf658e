// mmnet/data/loader.hpp: a background thread that produces training batches into a bounded queue.
//
// Python equivalent: nnU-Net's NonDetMultiThreadedAugmenter / torch.utils.data.DataLoader with one worker and
// prefetching, except that batch k is a pure function of (base seed, k): its generator is seeded with
// batch_seed(base, k), so the sequence of batches does not depend on timing, and a run resumed at batch k
// (LoaderOptions::start_batch(k)) sees exactly the batches an uninterrupted run sees from k on.
//
// Batch k = make_batch(sampler, options, k):
//   Generator g(batch_seed(seed, k)); patches = sampler.sample_batch(batch_size, g);
//   for each patch in order: augment(patch.image, patch.label, augment_options, g)  (if augmentation is on)
//   each patch cropped by crop_margin on every side (if set)
//   images = N x C x pd x ph x pw, labels = N x 1 x pd x ph x pw (label values as floats), Tensor<float, cpu>.
// Errors in the worker (a bad case, a failing producer) are rethrown by the consumer's next() at the position of
// the batch that failed; the worker stops there. The destructor stops and joins the worker, also while it waits
// on a full queue.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "augment.hpp"
#include "crop.hpp"
#include "sampler.hpp"

namespace mmnet::data {

struct Batch {
  index_t index = 0;               // position in the batch sequence
  Tensor<float, cpu> images;       // N x C x pd x ph x pw
  Tensor<float, cpu> labels;       // N x 1 x pd x ph x pw
  std::vector<index_t> cases;      // case index of each sample
  std::vector<Box> boxes;          // patch box of each sample (before augmentation, after crop_margin), case coordinates
  std::vector<bool> forced;        // whether each sample was forced to contain foreground
};

// The generator seed of batch k: splitmix64 of the base seed combined with k, so neighbouring (base, k) pairs
// give unrelated streams.
inline std::uint64_t batch_seed(std::uint64_t base, std::uint64_t k) {
  auto mix = [](std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return mix(mix(base) ^ k);
}

struct LoaderOptions {
  explicit LoaderOptions(index_t batch_size) : batch_size_(batch_size) {}

  index_t batch_size() const { return batch_size_; }
  // Base seed of the batch sequence (default 0).
  LoaderOptions& seed(std::uint64_t s) { seed_ = s; return *this; }
  std::uint64_t seed() const { return seed_; }
  // Batches produced ahead of the consumer (default 4).
  LoaderOptions& capacity(index_t c) { capacity_ = c; return *this; }
  index_t capacity() const { return capacity_; }
  // Index of the first batch (resuming a run at batch k; default 0).
  LoaderOptions& start_batch(index_t k) { start_ = k; return *this; }
  index_t start_batch() const { return start_; }
  // Number of batches to produce; next() after the last throws value_error (default: unlimited, -1).
  LoaderOptions& num_batches(index_t n) { num_ = n; return *this; }
  index_t num_batches() const { return num_; }
  // Augmentation of each patch (default: AugmentOptions(), nnU-Net-like); augment(false) turns it off.
  LoaderOptions& augment(AugmentOptions a) { aug_ = std::move(a); augment_on_ = true; return *this; }
  LoaderOptions& augment(bool on) { augment_on_ = on; return *this; }
  const AugmentOptions& augment_options() const { return aug_; }
  bool augment_enabled() const { return augment_on_; }
  // Voxels cut from each side of every patch after augmentation (default 0): sample patches larger by 2 * margin
  // and a rotation brings no fill value into the result (nnU-Net samples an enlarged patch for the same reason).
  LoaderOptions& crop_margin(std::array<index_t, 3> m) { margin_ = m; return *this; }
  std::array<index_t, 3> crop_margin() const { return margin_; }

  void validate() const {
    const char* component = "mmnet::data::LoaderOptions";
    if (batch_size_ <= 0) fail<value_error>(component, "batch size", "> 0", batch_size_);
    if (capacity_ <= 0) fail<value_error>(component, "capacity", "> 0", capacity_);
    if (start_ < 0) fail<value_error>(component, "start batch", ">= 0", start_);
    if (num_ < -1) fail<value_error>(component, "num_batches", ">= 0 or -1 (unlimited)", num_);
    if (augment_on_) aug_.validate();
    for (int a = 0; a < 3; ++a)
      if (margin_[static_cast<std::size_t>(a)] < 0)
        fail<value_error>(component, "crop margin along axis " + std::to_string(a), ">= 0",
                          margin_[static_cast<std::size_t>(a)]);
  }

 private:
  index_t batch_size_;
  std::uint64_t seed_ = 0;
  index_t capacity_ = 4;
  index_t start_ = 0;
  index_t num_ = -1;
  AugmentOptions aug_;
  bool augment_on_ = true;
  std::array<index_t, 3> margin_{0, 0, 0};
};

// Stacks patches into a Batch (images N x C x D x H x W, labels N x 1 x D x H x W). Patches must share shape.
inline Batch stack(const std::vector<Patch>& patches, index_t index) {
  const char* component = "mmnet::data::stack";
  if (patches.empty()) fail<value_error>(component, "number of patches", ">= 1", 0);
  const Volume& v0 = patches[0].image;
  const auto n = static_cast<index_t>(patches.size());
  const index_t per_image = v0.channels * v0.voxels(), per_label = v0.voxels();
  std::vector<float> img(static_cast<std::size_t>(n * per_image)), lab(static_cast<std::size_t>(n * per_label));
  Batch b;
  b.index = index;
  for (index_t i = 0; i < n; ++i) {
    const Patch& p = patches[static_cast<std::size_t>(i)];
    if (p.image.shape() != v0.shape())
      fail<shape_error>(component, "patch " + std::to_string(i) + " image shape", v0.shape().str(), p.image.shape().str());
    if (p.label.shape() != Shape{v0.depth, v0.height, v0.width})
      fail<shape_error>(component, "patch " + std::to_string(i) + " label shape",
                        Shape{v0.depth, v0.height, v0.width}.str(), p.label.shape().str());
    std::copy(p.image.data.begin(), p.image.data.end(), img.begin() + i * per_image);
    std::copy(p.label.data.begin(), p.label.data.end(), lab.begin() + i * per_label);
    b.cases.push_back(p.case_index);
    b.boxes.push_back(p.box);
    b.forced.push_back(p.forced_foreground);
  }
  b.images = Tensor<float, cpu>::from_vector(Shape{n, v0.channels, v0.depth, v0.height, v0.width}, img);
  b.labels = Tensor<float, cpu>::from_vector(Shape{n, 1, v0.depth, v0.height, v0.width}, lab);
  return b;
}

// Batch k of the sequence (see the header comment); what the loader's worker runs.
// Sampler: PatchSampler, WindowSampler or anything with sample_batch(index_t, Generator&) -> std::vector<Patch>.
template <class Sampler>
Batch make_batch(const Sampler& sampler, const LoaderOptions& o, index_t k) {
  Generator g(batch_seed(o.seed(), static_cast<std::uint64_t>(k)));
  auto patches = sampler.sample_batch(o.batch_size(), g);
  if (o.augment_enabled())
    for (auto& p : patches) augment(p.image, p.label, o.augment_options(), g);
  const auto m = o.crop_margin();
  if (m[0] || m[1] || m[2])
    for (auto& p : patches) {
      const Box inner{{m[0], m[1], m[2]}, {p.image.depth - m[0], p.image.height - m[1], p.image.width - m[2]}};
      if (inner.empty())
        fail<shape_error>("mmnet::data::make_batch", "patch size", "> 2 * crop margin " + Shape{m[0], m[1], m[2]}.str(),
                          Shape{p.image.depth, p.image.height, p.image.width}.str());
      p.image = crop(p.image, inner);
      p.label = crop(p.label, inner);
      for (std::size_t a = 0; a < 3; ++a) p.box.begin[a] += m[a], p.box.end[a] -= m[a];
    }
  return stack(patches, k);
}

// The bounded producer/consumer queue around one worker thread; produce(k) makes batch k.
class BatchLoader {
 public:
  static constexpr const char* component = "mmnet::data::BatchLoader";
  using Producer = std::function<Batch(index_t)>;

  // Batches from a sampler (PatchSampler, WindowSampler; shared, so the cases live as long as any user).
  template <class Sampler>
  BatchLoader(std::shared_ptr<const Sampler> sampler, LoaderOptions o) : BatchLoader(make_producer(sampler, o), o) {}
  template <class Sampler>
  BatchLoader(std::shared_ptr<Sampler> sampler, LoaderOptions o)
      : BatchLoader(std::shared_ptr<const Sampler>(std::move(sampler)), std::move(o)) {}

  // Batches from any producer, e.g. a test's or a different pipeline's.
  BatchLoader(Producer produce, LoaderOptions o) : produce_(std::move(produce)), o_(std::move(o)) {
    o_.validate();
    if (!produce_) fail<value_error>(component, "producer", "a callable", "an empty std::function");
    next_ = o_.start_batch();
    worker_ = std::thread([this] { run(); });
  }

  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  ~BatchLoader() { stop(); }

  // The next batch in sequence (blocks until the worker has it); rethrows the worker's exception.
  Batch next() {
    std::unique_lock<std::mutex> lock(m_);
    if (o_.num_batches() >= 0 && next_ >= o_.start_batch() + o_.num_batches())
      fail<value_error>(component, "batch index", "< " + std::to_string(o_.start_batch() + o_.num_batches()) +
                                                      " (num_batches)", next_);
    not_empty_.wait(lock, [this] { return !queue_.empty() || failure_ || stopped_; });
    if (queue_.empty()) {
      if (failure_) std::rethrow_exception(failure_);
      fail<value_error>(component, "state", "running", "stopped");
    }
    Batch b = std::move(queue_.front());
    queue_.pop_front();
    ++next_;
    not_full_.notify_one();
    return b;
  }

  // Index of the batch the next call to next() returns.
  index_t next_index() const {
    std::lock_guard<std::mutex> lock(m_);
    return next_;
  }
  // Number of finished batches waiting in the queue (for tests and monitoring).
  index_t queued() const {
    std::lock_guard<std::mutex> lock(m_);
    return static_cast<index_t>(queue_.size());
  }

  // Stops the worker (after the batch it is making) and joins it; idempotent.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stopped_ = true;
    }
    not_full_.notify_all();
    not_empty_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

 private:
  template <class Sampler>
  static Producer make_producer(std::shared_ptr<const Sampler> sampler, const LoaderOptions& o) {
    if (!sampler) fail<value_error>(component, "sampler", "non-null", "nullptr");
    if (o.augment_enabled() && !o.augment_options().rotation_fill().empty() &&
        static_cast<index_t>(o.augment_options().rotation_fill().size()) != sampler->channels())
      fail<shape_error>(component, "rotation_fill entries (one per channel)", sampler->channels(),
                        o.augment_options().rotation_fill().size());
    return [sampler, o](index_t k) { return make_batch(*sampler, o, k); };
  }

  void run() {
    const index_t end = o_.num_batches() >= 0 ? o_.start_batch() + o_.num_batches() : -1;
    for (index_t k = o_.start_batch(); end < 0 || k < end; ++k) {
      {
        std::unique_lock<std::mutex> lock(m_);
        not_full_.wait(lock, [this] { return stopped_ || static_cast<index_t>(queue_.size()) < o_.capacity(); });
        if (stopped_) return;
      }
      try {
        Batch b = produce_(k);
        std::lock_guard<std::mutex> lock(m_);
        queue_.push_back(std::move(b));
      } catch (...) {
        std::lock_guard<std::mutex> lock(m_);
        failure_ = std::current_exception();
        not_empty_.notify_all();
        return;
      }
      not_empty_.notify_one();
    }
  }

  Producer produce_;
  LoaderOptions o_;
  mutable std::mutex m_;
  std::condition_variable not_full_, not_empty_;
  std::deque<Batch> queue_;
  std::exception_ptr failure_;
  bool stopped_ = false;
  index_t next_ = 0;
  std::thread worker_;  // last: starts after every other member exists
};

}  // namespace mmnet::data
