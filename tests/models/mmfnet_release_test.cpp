// MMFNet::release_activations_after_backward (issue [D]): the opt-in memory saving for one backward per
// forward gives the same gradients and input gradient bit for bit, frees the fusion taps, and a second
// backward after one forward then fails cleanly; turning it off restores repeated backward calls.
#include <mmnet/mmfnet.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE("MMFNet release_activations_after_backward: same results, taps freed, second backward throws") {
  for (auto options : {MMFNetOptions::tiny(), MMFNetOptions::tiny().fusion(models::MMFNetFusion::merge)}) {
    Generator g1(3), g2(3);
    MMFNet<double, Backend> keep(options, g1), drop(options, g2);
    drop.release_activations_after_backward(true);
    CHECK(drop.release_activations_after_backward());
    const auto x = randn<double>({2, 3, 4, 8, 8}, 5);
    const auto dy = randn<double>({2, 1, 4, 8, 8}, 6);
    for (int step = 0; step < 2; ++step) {  // the second step re-saves after the release
      keep.zero_grad();
      drop.zero_grad();
      CHECK(keep.forward(x).to_vector() == drop.forward(x).to_vector());
      CHECK(keep.backward(dy).to_vector() == drop.backward(dy).to_vector());
      const auto pk = keep.parameters(), pd = drop.parameters();
      REQUIRE(pk.size() == pd.size());
      for (std::size_t i = 0; i < pk.size(); ++i) CHECK(pk[i]->grad.to_vector() == pd[i]->grad.to_vector());
      for (auto& f : drop.fusions) CHECK(!f.fori().defined());
      CHECK_THROWS_AS(drop.backward(dy), value_error);
    }
    drop.release_activations_after_backward(false);
    drop.forward(x);
    drop.backward(dy);
    CHECK_NOTHROW(drop.backward(dy));
  }
}
