// mmnet/backend/cpu/memory.hpp: host storage (aligned for xsimd, from a caching allocator) and the OpenMP loop
// every cpu kernel uses.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../../core/backend.hpp"
#include "../../core/config.hpp"

namespace mmnet {

namespace backend {

// Freed host blocks are kept per size class and handed out again, like PyTorch's caching allocators: a
// training step allocates the same sizes every iteration, so after the first one no step pays for malloc,
// page faults on fresh pages or returning memory to the OS. Blocks are 64-byte aligned (AVX-512 loads).
// Sizes round up to a multiple of 64 bytes below 64 KiB and to one of 8 classes per power of two above
// (at most 12.5% slack), so slightly different shapes share blocks; a request takes the smallest cached block
// of at least its size class and at most twice that (best fit). At most limit() bytes stay cached;
// release_cached_memory() returns them all to the system.
class HostBlockCache {
 public:
  static constexpr std::size_t alignment = 64;

  static HostBlockCache& instance() {
    static HostBlockCache* c = new HostBlockCache;  // never destroyed: tensors may be freed after main
    return *c;
  }
  HostBlockCache() {
    // MMNET_CPU_CACHE_MB overrides the default limit (0 turns caching off: lower peak memory, since freed
    // blocks of one size cannot serve another, at the cost of page faults on every large allocation).
    if (const char* e = std::getenv("MMNET_CPU_CACHE_MB")) {
      char* end = nullptr;
      const unsigned long long mb = std::strtoull(e, &end, 10);
      if (end != e) limit_ = static_cast<std::size_t>(mb) << 20;
    }
  }

  static std::size_t size_class(std::size_t bytes) {
    if (bytes == 0) bytes = 1;
    if (bytes <= (std::size_t(64) << 10)) return (bytes + alignment - 1) / alignment * alignment;
    std::size_t top = std::size_t(1);
    while ((top << 1) <= bytes) top <<= 1;  // highest power of two <= bytes
    const std::size_t step = top / 8;
    return (bytes + step - 1) / step * step;
  }

  void* get(std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Best fit: the smallest cached block of at least `bytes`, if it is at most twice as large (a larger one
      // would waste more than the request).
      auto it = free_.lower_bound(bytes);
      if (it != free_.end() && it->first <= 2 * bytes) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= it->first;
        try {
          if (it->first != bytes) oversized_[p] = it->first;
          if (it->second.empty()) free_.erase(it);
          return p;
        } catch (...) {  // no room to remember the real size: give the block back and allocate
          cached_ += it->first;
          it->second.push_back(p);
        }
      }
    }
    void* p = std::aligned_alloc(alignment, bytes);
    if (p == nullptr) {
      release();  // cached blocks of other sizes may be what the system is missing
      p = std::aligned_alloc(alignment, bytes);
      if (p == nullptr) throw std::bad_alloc();
    }
    return p;
  }

  // bytes: the size class of the request the block was handed out for.
  void put(void* p, std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!oversized_.empty()) {
        auto o = oversized_.find(p);
        if (o != oversized_.end()) {
          bytes = o->second;
          oversized_.erase(o);
        }
      }
      if (cached_ + bytes <= limit_) {
        try {
          free_[bytes].push_back(p);
          cached_ += bytes;
          return;
        } catch (...) {  // no room to remember the block: free it instead
        }
      }
    }
    std::free(p);
  }

  // Frees every cached block (live tensors are unaffected).
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  std::size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }
  std::size_t limit() {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }
  void set_limit(std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      if (cached_ <= limit_) return;
    }
    release();
  }

 private:
  std::mutex mutex_;
  std::map<std::size_t, std::vector<void*>> free_;        // size class -> cached blocks
  std::unordered_map<void*, std::size_t> oversized_;      // blocks handed out for a smaller class: real size
  std::size_t cached_ = 0;
  std::size_t limit_ = std::size_t(4) << 30;  // 4 GiB
};

// Bytes of freed host blocks kept for reuse; release_cached_memory() frees them (torch.cuda.empty_cache's
// counterpart for the cpu backend); set_cache_limit(0) turns caching off.
inline std::size_t cached_memory_bytes() { return HostBlockCache::instance().cached_bytes(); }
inline void release_cached_memory() { HostBlockCache::instance().release(); }
inline void set_cache_limit(std::size_t bytes) { HostBlockCache::instance().set_limit(bytes); }

// std::allocator-compatible front end of HostBlockCache.
template <class T>
struct caching_allocator {
  using value_type = T;
  caching_allocator() = default;
  template <class U>
  caching_allocator(const caching_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(HostBlockCache::instance().get(HostBlockCache::size_class(n * sizeof(T))));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    HostBlockCache::instance().put(p, HostBlockCache::size_class(n * sizeof(T)));
  }
  template <class U>
  bool operator==(const caching_allocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const caching_allocator<U>&) const noexcept { return false; }
};

}  // namespace backend

template <>
struct backend_traits<cpu> {
  template <class T>
  using storage = std::vector<T, backend::caching_allocator<T>>;

  template <class T>
  static storage<T> allocate(index_t n) { return storage<T>(static_cast<std::size_t>(n), T(0)); }
  template <class T>
  static T* data(storage<T>& s) { return s.data(); }
  template <class T>
  static const T* data(const storage<T>& s) { return s.data(); }
  template <class T>
  static void copy_from_host(const T* src, index_t n, storage<T>& dst) {
    if (n) std::memcpy(dst.data(), src, sizeof(T) * static_cast<std::size_t>(n));
  }
  template <class T>
  static void copy_to_host(const storage<T>& src, index_t n, T* dst) {
    if (n) std::memcpy(dst, src.data(), sizeof(T) * static_cast<std::size_t>(n));
  }
  template <class T>
  static void copy(const T* src, index_t n, T* dst) {
    if (n) std::memcpy(dst, src, sizeof(T) * static_cast<std::size_t>(n));
  }
  template <class T>
  static void fill(T* p, index_t n, T v) { std::fill(p, p + n, v); }
};

namespace backend {

// Loops shorter than this stay on one thread: thread start-up costs more than it saves.
inline constexpr index_t parallel_grain = 2048;

// Runs f(i) for i in [0, n). Each i must write only its own outputs (no atomics anywhere in mmnet), so
// results do not depend on the thread count.
template <class F>
void parallel_for(cpu, index_t n, F&& f) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= parallel_grain)
#endif
  for (index_t i = 0; i < n; ++i) f(i);
}

// Sum of f(i) over [0, n) in acc type A, with a fixed blocking independent of the thread count.
template <class A, class F>
A reduce_sum(cpu, index_t n, F&& f) {
  constexpr index_t block = 4096;
  const index_t nb = (n + block - 1) / block;
  std::vector<A> partial(static_cast<std::size_t>(nb), A(0));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (nb > 1)
#endif
  for (index_t b = 0; b < nb; ++b) {
    A s(0);
    const index_t end = std::min(n, (b + 1) * block);
    for (index_t i = b * block; i < end; ++i) s += f(i);
    partial[static_cast<std::size_t>(b)] = s;
  }
  A s(0);
  for (A p : partial) s += p;
  return s;
}

}  // namespace backend
}  // namespace mmnet
