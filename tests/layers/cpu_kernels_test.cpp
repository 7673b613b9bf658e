// cpu fast paths (issue [D]) against the generic kernels they replace, on many shapes in double: max pooling
// (the 2 x 2 x 2 row kernel, the scatter backward, the overlapping fallback), channel reductions (blocks of
// channel_block voxels, tails, ties, NaN), the broadcast reductions of the CBAM gates, BatchNorm, channel
// copies; and the caching host allocator. These kernels are cpu-only, so the test runs them directly in both
// test executables (the backend under test is irrelevant here).
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <mmnet/mmnet.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;

namespace {

std::vector<double> random_values(index_t n, std::uint64_t seed, bool ties = false) {
  std::vector<double> v(static_cast<std::size_t>(n));
  std::uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& x : v) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    const double u = static_cast<double>(s >> 11) / 9007199254740992.0;  // [0, 1)
    x = ties ? std::floor(u * 4.0) : 2.0 * u - 1.0;
  }
  return v;
}

template <class V>
void check_equal(const V& a, const V& b, const char* what) {
  REQUIRE(a.size() == b.size());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool both_nan = a[i] != a[i] && b[i] != b[i];
    wrong += !(a[i] == b[i] || both_nan);
  }
  CHECK_MESSAGE(wrong == 0, what << ": " << wrong << " of " << a.size() << " values differ");
}

void check_near(const std::vector<double>& a, const std::vector<double>& b, const char* what) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  CHECK_MESSAGE(worst < 1e-12, what << ": largest relative difference " << worst);
}

backend::Pool3dProblem pool_problem(index_t planes, index_t d, index_t h, index_t w, index_t k[3], index_t s[3],
                                    index_t p[3]) {
  backend::Pool3dProblem pr;
  pr.planes = planes;
  pr.id = d, pr.ih = h, pr.iw = w;
  pr.kd = k[0], pr.kh = k[1], pr.kw = k[2];
  pr.sd = s[0], pr.sh = s[1], pr.sw = s[2];
  pr.pd = p[0], pr.ph = p[1], pr.pw = p[2];
  pr.od = backend::pool_output_size(d, pr.kd, pr.sd, pr.pd);
  pr.oh = backend::pool_output_size(h, pr.kh, pr.sh, pr.ph);
  pr.ow = backend::pool_output_size(w, pr.kw, pr.sw, pr.pw);
  return pr;
}

}  // namespace

TEST_CASE("cpu max pooling fast paths equal the generic kernels") {
  struct Case {
    index_t planes, d, h, w, k[3], s[3], p[3];
    bool ties;
  };
  const Case cases[] = {
      {3, 4, 6, 8, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, false},   // the U-Net pool
      {2, 5, 7, 9, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, true},    // odd sizes (dropped last row), ties
      {2, 3, 5, 6, {1, 2, 2}, {1, 2, 2}, {0, 0, 0}, false},   // (1, 2, 2)
      {2, 5, 6, 7, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, true},    // overlapping: generic backward
      {1, 6, 7, 8, {2, 2, 2}, {3, 3, 3}, {1, 1, 1}, false},   // gaps between windows, padding
      {2, 4, 5, 9, {2, 2, 2}, {2, 2, 2}, {1, 1, 0}, true},    // padded rows at the border, 2 x 2 inside
      {64, 4, 8, 16, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, false},  // enough work for OpenMP
  };
  int i = 0;
  for (auto c : cases) {
    INFO("case " << i++);
    const auto pr = pool_problem(c.planes, c.d, c.h, c.w, c.k, c.s, c.p);
    auto x = random_values(pr.planes * pr.in_plane(), 11 + i, c.ties);
    if (i == 2) x[5] = std::numeric_limits<double>::quiet_NaN();
    const index_t no = pr.planes * pr.out_plane();
    std::vector<double> y1(no), y2(no), dx1(x.size(), 7.0), dx2(x.size(), 9.0);
    std::vector<std::int64_t> a1(no), a2(no);
    backend::max_pool3d_forward(cpu{}, pr, x.data(), y1.data(), a1.data());
    backend::max_pool3d_forward<double, cpu>(cpu{}, pr, x.data(), y2.data(), a2.data());
    check_equal(y1, y2, "forward values");
    check_equal(a1, a2, "forward argmax");
    const auto dy = random_values(no, 99 + i);
    backend::max_pool3d_backward(cpu{}, pr, dy.data(), a1.data(), dx1.data());
    backend::max_pool3d_backward<double, cpu>(cpu{}, pr, dy.data(), a1.data(), dx2.data());
    check_equal(dx1, dx2, "backward");
  }
}

TEST_CASE("cpu channel reductions equal the generic kernels (blocks, tails, ties, NaN)") {
  namespace d = nn::detail;
  const index_t shapes[][3] = {{2, 1, 7}, {2, 3, 511}, {1, 7, 513}, {2, 5, 1500}, {3, 24, 2 * d::channel_block + 3}};
  int i = 0;
  for (auto& sh : shapes) {
    for (bool ties : {false, true}) {
      INFO("n " << sh[0] << " c " << sh[1] << " s " << sh[2] << " ties " << ties);
      const d::ChannelProblem p{sh[0], sh[1], sh[2]};
      auto x = random_values(p.n * p.c * p.s, 31 + i++, ties);
      if (ties && p.c > 1) x[static_cast<std::size_t>(p.s + 2)] = std::numeric_limits<double>::quiet_NaN();
      const index_t nv = p.n * p.s;
      const auto dy = random_values(nv, 71 + i);
      std::vector<double> y1(nv), y2(nv), m1(nv), m2(nv), s1(nv), s2(nv), dx1(x.size()), dx2(x.size());
      std::vector<std::int64_t> a1(nv), a2(nv);

      d::channel_mean_forward(cpu{}, p, x.data(), y1.data());
      d::channel_mean_forward<double, cpu>(cpu{}, p, x.data(), y2.data());
      check_equal(y1, y2, "mean forward");
      d::channel_mean_backward(cpu{}, p, dy.data(), dx1.data());
      d::channel_mean_backward<double, cpu>(cpu{}, p, dy.data(), dx2.data());
      check_equal(dx1, dx2, "mean backward");

      d::channel_max_forward(cpu{}, p, x.data(), y1.data(), a1.data());
      d::channel_max_forward<double, cpu>(cpu{}, p, x.data(), y2.data(), a2.data());
      check_equal(y1, y2, "max forward");
      check_equal(a1, a2, "max argmax");
      d::channel_max_backward(cpu{}, p, dy.data(), a1.data(), dx1.data());
      d::channel_max_backward<double, cpu>(cpu{}, p, dy.data(), a1.data(), dx2.data());
      check_equal(dx1, dx2, "max backward");

      d::channel_std_forward(cpu{}, p, 1e-6, x.data(), y1.data(), m1.data(), s1.data());
      d::channel_std_forward<double, cpu>(cpu{}, p, 1e-6, x.data(), y2.data(), m2.data(), s2.data());
      check_equal(y1, y2, "std forward");
      check_equal(m1, m2, "std mean");
      d::channel_std_backward(cpu{}, p, dy.data(), x.data(), m1.data(), s1.data(), dx1.data());
      d::channel_std_backward<double, cpu>(cpu{}, p, dy.data(), x.data(), m1.data(), s1.data(), dx2.data());
      check_equal(dx1, dx2, "std backward");
    }
  }
}

TEST_CASE("cpu broadcast reductions agree with the generic kernel (CBAM gates, chunks, tails)") {
  namespace d = nn::detail;
  const Shape cases[][2] = {
      {{2, 3, 1, 1, 1}, {2, 3, 4, 5, 6}},        // channel gate, one chunk, tail of the 8 lanes
      {{2, 3, 1, 1, 1}, {2, 3, 9, 23, 41}},      // several chunks of reduce_chunk
      {{2, 1, 4, 5, 6}, {2, 5, 4, 5, 6}},        // spatial gate: blocked over contiguous outputs
      {{1, 1, 7, 9, 300}, {1, 24, 7, 9, 300}},   // spatial gate, several blocks and a tail
      {{1, 1, 3, 4, 5}, {2, 3, 3, 4, 5}},        // two broadcast axes: generic
      {{2, 3, 4, 1, 1}, {2, 3, 4, 5, 6}},        // reduce the last two axes
  };
  int i = 0;
  for (auto& c : cases) {
    INFO("small " << c[0].str() << " full " << c[1].str());
    const auto l = d::broadcast_layout(c[0], c[1]);
    const auto a = random_values(c[1].numel(), 5 + i), b = random_values(c[1].numel(), 55 + i);
    ++i;
    const d::ProductTerm<double> term{a.data(), b.data()};
    const auto s1 = d::broadcast_reduce(cpu{}, l, term);
    const auto s2 = d::broadcast_reduce<cpu, d::ProductTerm<double>>(cpu{}, l, term);
    check_near(std::vector<double>(s1.begin(), s1.end()), std::vector<double>(s2.begin(), s2.end()), "sums");
  }
}

TEST_CASE("cpu BatchNorm kernels agree with the generic kernels") {
  const backend::BatchNormProblem shapes[] = {{2, 3, 37}, {1, 5, 2}, {3, 2, 4099}, {2, 8, 2048}};
  int i = 0;
  for (const auto p : shapes) {
    INFO("n " << p.n << " c " << p.c << " s " << p.s);
    const auto x = random_values(p.numel(), 3 + i), dy = random_values(p.numel(), 33 + i);
    const auto w = random_values(p.c, 63 + i), bias = random_values(p.c, 93 + i);
    ++i;
    std::vector<double> m1(p.c), m2(p.c), is1(p.c), is2(p.c), rm1(p.c, 0.5), rm2(p.c, 0.5), rv1(p.c, 2.0), rv2(p.c, 2.0);
    backend::batch_norm_stats(cpu{}, p, x.data(), 1e-5, m1.data(), is1.data(), rm1.data(), rv1.data(), 0.1);
    backend::batch_norm_stats<double, cpu>(cpu{}, p, x.data(), 1e-5, m2.data(), is2.data(), rm2.data(), rv2.data(), 0.1);
    check_near(m1, m2, "mean");
    check_near(is1, is2, "invstd");
    check_near(rm1, rm2, "running_mean");
    check_near(rv1, rv2, "running_var");
    for (bool affine : {true, false}) {
      const double* pw = affine ? w.data() : nullptr;
      const double* pb = affine ? bias.data() : nullptr;
      std::vector<double> y1(x.size()), y2(x.size());
      backend::batch_norm_apply(cpu{}, p, x.data(), m2.data(), is2.data(), pw, pb, y1.data());
      backend::batch_norm_apply<double, cpu>(cpu{}, p, x.data(), m2.data(), is2.data(), pw, pb, y2.data());
      check_near(y1, y2, "apply");
      std::vector<double> sd1(p.c), sd2(p.c), sx1(p.c), sx2(p.c), gw1(p.c, 1.0), gw2(p.c, 1.0), gb1(p.c), gb2(p.c);
      backend::batch_norm_backward_reduce(cpu{}, p, x.data(), dy.data(), m2.data(), is2.data(), sd1.data(), sx1.data(),
                                          gw1.data(), gb1.data());
      backend::batch_norm_backward_reduce<double, cpu>(cpu{}, p, x.data(), dy.data(), m2.data(), is2.data(),
                                                       sd2.data(), sx2.data(), gw2.data(), gb2.data());
      check_near(sd1, sd2, "sum_dy");
      check_near(sx1, sx2, "sum_dy_xhat");
      check_near(gw1, gw2, "grad_weight");
      check_near(gb1, gb2, "grad_bias");
      for (bool batch_stats : {true, false}) {
        std::vector<double> dx1(x.size()), dx2(x.size());
        backend::batch_norm_backward_input(cpu{}, p, x.data(), dy.data(), m2.data(), is2.data(), pw, sd2.data(),
                                           sx2.data(), batch_stats, dx1.data());
        backend::batch_norm_backward_input<double, cpu>(cpu{}, p, x.data(), dy.data(), m2.data(), is2.data(), pw,
                                                        sd2.data(), sx2.data(), batch_stats, dx2.data());
        check_near(dx1, dx2, "backward input");
      }
    }
  }
}

TEST_CASE("cpu channel copies equal the generic kernel") {
  const index_t cases[][5] = {{2, 3, 5, 7, 2}, {3, 1, 70000, 4, 3}, {1, 2, 1, 2, 0}};  // outer, c, inner, total, offset
  for (auto& c : cases) {
    const index_t outer = c[0], ch = c[1], inner = c[2], total = c[3], off = c[4];
    const auto src = random_values(outer * ch * inner, 17);
    std::vector<double> d1(outer * total * inner, 1.0), d2(d1);
    nn::detail::copy_channels(cpu{}, outer, ch, inner, src.data(), ch, 0, d1.data(), total, off);
    nn::detail::copy_channels<double, cpu>(cpu{}, outer, ch, inner, src.data(), ch, 0, d2.data(), total, off);
    check_equal(d1, d2, "copy");
  }
}

TEST_CASE("cpu caching allocator: size classes, reuse, limit, release") {
  using backend::HostBlockCache;
  for (std::size_t b : {1u, 63u, 64u, 65u, 4096u, 65537u, 1000000u, 8388608u, 8388609u}) {
    const std::size_t c = HostBlockCache::size_class(b);
    CHECK(c >= b);
    CHECK(c % HostBlockCache::alignment == 0);
    CHECK(c <= b + b / 8 + HostBlockCache::alignment);
  }
  backend::release_cached_memory();
  CHECK(backend::cached_memory_bytes() == 0);
  const double* first = nullptr;
  {
    Tensor<double, cpu> t(Shape{1000, 37});
    first = t.data();
    CHECK(reinterpret_cast<std::uintptr_t>(first) % HostBlockCache::alignment == 0);
  }
  CHECK(backend::cached_memory_bytes() >= 1000 * 37 * sizeof(double));
  {
    Tensor<double, cpu> t(Shape{1000, 37});  // the same size class: the cached block, zero-filled again
    CHECK(t.data() == first);
    const auto v = t.to_vector();
    bool zero = true;
    for (double x : v) zero = zero && x == 0.0;
    CHECK(zero);
  }
  backend::set_cache_limit(0);  // caching off: the cache is emptied and frees go to the system
  CHECK(backend::cached_memory_bytes() == 0);
  { Tensor<float, cpu> t(Shape{4096}); }
  CHECK(backend::cached_memory_bytes() == 0);
  backend::set_cache_limit(std::size_t(4) << 30);
}
