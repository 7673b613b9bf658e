// CSCN networks (models/cscn/{bunet,acdnet}.hpp) against the PyTorch BUNet / ACDNet of tests/reference/cscn_ref.py,
// spec shared/specs/cascaded-fcn.md §8 point 4 on the ref-tiny config: eval-mode and train-mode logits from the
// loaded weights (plus the updated BN running statistics), the focal loss with the §3 α, every parameter gradient
// and the input gradient, one Adam step, a second train-mode forward; plus the §8 state-dict names and order,
// parameter counts (paper and tiny), central-difference checks (ASPPDenseLayer, DenseBlock, BUNet-tiny),
// gradient accumulation, He-normal init and bad input.
//
// §8 point 1 (single ops) is covered by the layer tests: dilated Conv3d r = 1, 2 and (1, 2, 4) -- conv3d_test
// (conv3d_ref.py cases "dilation 2" and "(1,2,4)"; r = 3 is added below through ASPPDenseLayer/ACDNet-tiny with rates
// (1, 2, 3)); ConvTranspose3d k2 s2 -- conv_transpose3d_test; BatchNorm3d train (output + running stats) and eval --
// batchnorm3d_test; MaxPool3d with ties -- maxpool3d_test ("ties_*"); AvgPool3d 2 -- avgpool3d_test; GAP + broadcast
// -- global_pool_test and broadcast_test (x.expand of a pooled map); trilinear align_corners=False to an explicit
// size -- upsample_test ("tri_size_*"); log-softmax -- softmax_test. The 1x2x3 -> 4x8x12 and 2x4x6 -> 4x8x12
// resizes run inside ACDNet-tiny here (side3, side2).
#include <mmnet/cscn.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using models::cscn::ASPPDenseLayer;
using models::cscn::DenseBlock;

namespace {

template <class T>
void check_state(const StateDict& ours, const StateDict& ref, const std::string& what, double tol) {
  CHECK(ours.keys() == ref.keys());
  for (const auto& entry : ours) {
    const std::string& name = entry.first;
    const HostArray& a = entry.second;
    const HostArray& r = ref.at(name);
    REQUIRE_MESSAGE(a.shape == r.shape, what << name);
    if (a.dtype == DType::i64) {
      CHECK_MESSAGE(a.data[0] == r.data[0], what << name);
      continue;
    }
    const double err = relative_error(a.data, r.data);
    ErrorStats::get().record(std::is_same_v<T, double>, err, what + name);
    CHECK_MESSAGE(err <= tol, what << name << ": relative error " << err << " > tolerance " << tol);
  }
}

// The §8 point 4 procedure for one network (fixture group `g`).
template <class T, class Net>
void full_net_case(Net& net, const std::string& g, index_t expected_params) {
  Fixture fx("cscn");
  const StateDict init = fx.group(g + "/init");
  CHECK(net.state_dict().keys() == init.keys());  // §8 names, PyTorch's order
  net.load_state_dict(init);                      // strict
  const auto x = fx.tensor<T>(g + "/input");
  const auto labels = fx.tensor<T>(g + "/labels");
  const auto alpha = fx.tensor<T>(g + "/alpha");
  // α of the labels (each block here is a whole volume) equals scipy's EDT + 1.
  check_close(losses::distance_weight_map(labels), fx.array(g + "/alpha"), tol_output<T>(), g + " alpha");

  net.eval();
  check_close(net.forward(x), fx.array(g + "/eval_logits"), tol_output<T>(), g + " eval logits");
  check_state<T>(net.state_dict(), init, g + " state unchanged by eval forward: ", std::is_same_v<T, double> ? 0.0 : 1e-7);

  net.train();
  const auto logits = net.forward(x);
  check_close(logits, fx.array(g + "/logits"), tol_output<T>(), g + " train logits");
  check_state<T>(net.state_dict(), fx.group(g + "/after_forward"), g + " after train forward: ", tol_output<T>());
  losses::DistanceWeightedFocal<T, Backend> focal;  // gamma 2
  const T loss = focal.forward(logits, labels, alpha);
  check_close_scalar(loss, fx.scalar(g + "/loss"), tol_output<T>(), g + " focal loss");
  const auto dx = net.backward(focal.backward());
  check_close(dx, fx.array(g + "/grad_input"), tol_grad<T>(), g + " dL/dx");
  const auto params = net.named_parameters();
  index_t total = 0;
  for (auto& np : params) {
    check_close(np.second->grad, fx.array(g + "/grad/" + np.first), tol_grad<T>(), g + " grad of " + np.first);
    total += np.second->value.numel();
  }
  CHECK(total == expected_params);

  // b4.bias entries whose gradient is zero in exact arithmetic (a per-channel constant into a train-mode BN; both
  // libraries hold rounding noise there, ~1e-8 in float) are exactly 0 in the fixture; zero ours there too, as the
  // reference did, since Adam's g / (|g| + eps) turns noise into steps of up to lr.
  for (auto& np : params) {
    const std::string& n = np.first;
    if (n.size() < 7 || n.compare(n.size() - 7, 7, "b4.bias") != 0) continue;
    const auto& ref = fx.array(g + "/grad/" + n).data;
    auto ours = np.second->grad.to_vector();
    for (std::size_t i = 0; i < ours.size(); ++i)
      if (ref[i] == 0) ours[i] = T(0);
    np.second->grad.assign(ours);
  }
  optim::Adam<T, Backend> adam(net.parameters(), models::cscn::adam_options(models::CSCNOptions::tiny()));
  CHECK(adam.lr() == doctest::Approx(1e-3));
  adam.step();
  check_state<T>(net.state_dict(), fx.group(g + "/after_step"), g + " after one Adam step: ", tol_output<T>());

  const auto logits2 = net.forward(x);  // train mode, no backward
  check_close(logits2, fx.array(g + "/logits2"), tol_output<T>(), g + " second train-mode logits");
  check_close_scalar(focal.forward(logits2, labels, alpha), fx.scalar(g + "/loss2"), tol_output<T>(), g + " second loss");
  check_state<T>(net.state_dict(), fx.group(g + "/after_second"), g + " after the second forward: ", tol_output<T>());
}

}  // namespace

TEST_CASE_TEMPLATE("BUNet-tiny matches PyTorch: logits, running stats, focal loss, gradients, Adam (spec §8.4)", T, float,
                   double) {
  models::BUNet<T, Backend> net(models::BUNetOptions::tiny());
  full_net_case<T>(net, "bunet", 18116);
}

TEST_CASE_TEMPLATE("ACDNet-tiny matches PyTorch: logits, running stats, focal loss, gradients, Adam (spec §8.4)", T, float,
                   double) {
  models::ACDNet<T, Backend> net(models::ACDNetOptions::tiny());
  full_net_case<T>(net, "acdnet", 42898);
}

TEST_CASE("CSCN lr schedule: 1e-3 * 0.9^(t/500), continuous and staircase (spec §4.3, §8.4)") {
  const auto o = models::CSCNOptions::tiny();
  CHECK(models::cscn::exponential_lr(0, o) == 1e-3);
  CHECK(models::cscn::exponential_lr(500, o) == doctest::Approx(0.9e-3).epsilon(1e-14));
  CHECK(models::cscn::exponential_lr(1250, o) == doctest::Approx(1e-3 * std::pow(0.9, 2.5)).epsilon(1e-14));
  CHECK(models::cscn::exponential_lr(1250, models::CSCNOptions(o).lr_staircase(true)) ==
        doctest::Approx(0.81e-3).epsilon(1e-14));
  CHECK(models::cscn::exponential_lr(50000, o) == doctest::Approx(1e-3 * std::pow(0.9, 100)).epsilon(1e-12));
  CHECK_THROWS_AS(models::cscn::exponential_lr(-1, o), value_error);
  // Set on an optimizer as the schedule's step: Adam's lr follows.
  models::BUNet<double, Backend> net(models::BUNetOptions::tiny());
  optim::Adam<double, Backend> adam(net.parameters(), models::cscn::adam_options(o));
  adam.set_lr(models::cscn::exponential_lr(500, o));
  CHECK(adam.lr() == doctest::Approx(0.9e-3));
}

TEST_CASE("CSCN parameter counts and state-dict tensors: paper and ref-tiny (spec §2.3, §8)") {
  Fixture fx("cscn");
  models::BUNet<float, Backend> bp(models::BUNetOptions::paper()), bt(models::BUNetOptions::tiny());
  models::ACDNet<float, Backend> ap(models::ACDNetOptions::paper()), at(models::ACDNetOptions::tiny());
  CHECK(bp.num_parameters(true) == 1147090);
  CHECK(ap.num_parameters(true) == 1673234);
  CHECK(bt.num_parameters(true) == 18116);
  CHECK(at.num_parameters(true) == 42898);
  CHECK(bp.state_dict().size() == 66);
  CHECK(ap.state_dict().size() == 444);
  CHECK(bt.state_dict().size() == 66);
  CHECK(at.state_dict().size() == 252);
  CHECK(fx.scalar("counts/bunet_paper") == 1147090);
  CHECK(fx.scalar("counts/acdnet_paper") == 1673234);
  CHECK(fx.scalar("counts/acdnet_paper_tensors") == 444);
  // Spot checks of the §8 table (names and PyTorch shapes; ConvT (Cin, Cout, 2, 2, 2)).
  const StateDict sd = at.state_dict();
  auto shape = [&](const std::string& k) { return sd.at(k).shape; };
  CHECK(shape("stem.conv.weight") == std::vector<index_t>{8, 2, 3, 3, 3});
  CHECK(shape("db1.1.b4.weight") == std::vector<index_t>{4, 11, 1, 1, 1});
  CHECK(shape("db2.0.b3.conv.weight") == std::vector<index_t>{4, 7, 3, 3, 3});
  CHECK(shape("db3.1.bottleneck.conv.weight") == std::vector<index_t>{3, 20, 1, 1, 1});
  CHECK(shape("td2.cbr.conv.weight") == std::vector<index_t>{6, 13, 1, 1, 1});
  CHECK(shape("up2.weight") == std::vector<index_t>{12, 16, 2, 2, 2});
  CHECK(shape("dec2.conv.weight") == std::vector<index_t>{16, 29, 3, 3, 3});
  CHECK(shape("up1.weight") == std::vector<index_t>{16, 10, 2, 2, 2});
  CHECK(shape("dec1.conv.weight") == std::vector<index_t>{10, 24, 3, 3, 3});
  CHECK(shape("fuse.conv.weight") == std::vector<index_t>{8, 12, 3, 3, 3});
  CHECK(shape("head.bias") == std::vector<index_t>{2});
  CHECK(sd.at("db1.0.b0.bn.num_batches_tracked").dtype == DType::i64);
  const StateDict sb = bt.state_dict();
  CHECK(sb.at("dec2.0.conv.weight").shape == std::vector<index_t>{8, 24, 3, 3, 3});
  CHECK(sb.at("dec1.0.conv.weight").shape == std::vector<index_t>{4, 12, 3, 3, 3});
  CHECK(sb.at("up2.weight").shape == std::vector<index_t>{16, 16, 2, 2, 2});
  CHECK(sb.at("head.weight").shape == std::vector<index_t>{2, 4, 1, 1, 1});
  // Dilations of the ASPP branches: (1, 2, 3) for ref-tiny, padding = dilation.
  CHECK(at.db2.layers[1].b3.conv.options().dilation() == ExpandingArray3(3));
  CHECK(at.db2.layers[1].b3.conv.options().padding() == ExpandingArray3(3));
  CHECK(ap.db1.layers[0].b3.conv.options().dilation() == ExpandingArray3(4));
  // Output shapes: logits N x 2 x D x H x W.
  CHECK(bt.forward(TestTensor<float>(Shape{2, 1, 4, 8, 12})).shape() == Shape{2, 2, 4, 8, 12});
  CHECK(at.forward(TestTensor<float>(Shape{2, 2, 4, 8, 12})).shape() == Shape{2, 2, 4, 8, 12});
}

TEST_CASE("ASPPDenseLayer (dilations 1, 2, 3), a DenseBlock and BUNet-tiny pass the central-difference check") {
  Generator g(11);
  SUBCASE("ASPPDenseLayer") {
    ASPPDenseLayer<double, Backend> layer(3, 2, 2, {1, 2, 3}, g);
    gradcheck_module(layer, randn<double>(Shape{2, 3, 3, 4, 5}, 1));
  }
  SUBCASE("DenseBlock, L = 2") {
    DenseBlock<double, Backend> block(3, 2, 2, 2, {1, 2, 3}, g);
    gradcheck_module(block, randn<double>(Shape{2, 3, 2, 3, 4}, 2));
  }
  SUBCASE("BUNet-tiny, train mode") {
    if (!whole_network_gradchecks) return;  // see tests/support/mmnet_test.hpp
    models::BUNet<double, Backend> net(models::BUNetOptions::tiny(), g);
    gradcheck_module(net, randn<double>(Shape{2, 1, 4, 4, 8}, 3));
  }
}

TEST_CASE("BUNet and ACDNet accumulate parameter gradients over two backward calls") {
  models::BUNet<double, Backend> b(models::BUNetOptions::tiny());
  models::ACDNet<double, Backend> a(models::ACDNetOptions::tiny());
  auto run = [](auto& net, const TestTensor<double>& x) {
    const auto y = net.forward(x);
    const auto r = randn<double>(y.shape(), 5);
    net.zero_grad();
    const auto dx1 = net.backward(r).to_vector();
    std::vector<std::vector<double>> once;
    for (auto& np : net.named_parameters()) once.push_back(np.second->grad.to_vector());
    const auto dx2 = net.backward(r).to_vector();
    CHECK(dx1 == dx2);
    std::size_t k = 0;
    for (auto& np : net.named_parameters()) {
      const auto twice = np.second->grad.to_vector();
      std::vector<double> expect(once[k]);
      for (auto& e : expect) e *= 2;
      CHECK_MESSAGE(relative_error(twice, expect) <= 1e-14, np.first);
      ++k;
    }
  };
  run(b, randn<double>(Shape{2, 1, 4, 8, 12}, 1));
  run(a, randn<double>(Shape{2, 2, 4, 8, 12}, 2));
  // Frozen networks get no gradient.
  b.freeze();
  b.zero_grad();
  b.forward(randn<double>(Shape{1, 1, 4, 8, 12}, 3));
  b.backward(randn<double>(Shape{1, 2, 4, 8, 12}, 4));
  for (auto& np : b.named_parameters()) CHECK(mmnet::sum(np.second->grad) == 0.0);
}

TEST_CASE("he_normal_init follows spec §4.3: std sqrt(2 / fan_in), ConvTranspose3d fan_in = dim 1 * 8") {
  models::ACDNet<double, Backend> net(models::ACDNetOptions::paper());
  Generator g(3);
  models::cscn::he_normal_init(net, g);
  auto stdev = [](const TestTensor<double>& t) {
    const auto v = t.to_vector();
    double s = 0, s2 = 0;
    for (double e : v) s += e, s2 += e * e;
    const double n = static_cast<double>(v.size());
    return std::sqrt(s2 / n - (s / n) * (s / n));
  };
  // dec2: Conv3d 176 -> 64, k3: fan_in 176 * 27. up2: ConvTranspose3d (120, 64, 2, 2, 2): fan_in 64 * 8.
  CHECK(stdev(net.dec2.conv.weight.value) == doctest::Approx(std::sqrt(2.0 / (176 * 27))).epsilon(0.02));
  CHECK(stdev(net.up2.weight.value) == doctest::Approx(std::sqrt(2.0 / (64 * 8))).epsilon(0.03));
  CHECK(mmnet::sum(net.up2.bias.value) == 0.0);
  CHECK(mmnet::sum(net.head.bias.value) == 0.0);
  CHECK(mmnet::sum(net.stem.bn.weight.value) == 32.0);
  CHECK(mmnet::sum(net.stem.bn.bias.value) == 0.0);
  CHECK(mmnet::sum(net.stem.bn.running_var.value) == 32.0);
}

TEST_CASE_TEMPLATE("BUNet, ACDNet and their options reject bad input, naming component, expected and actual", T, float,
                   double) {
  models::BUNet<T, Backend> b(models::BUNetOptions::tiny());
  models::ACDNet<T, Backend> a(models::ACDNetOptions::tiny());
  check_throws_naming<shape_error>([&] { b.forward(TestTensor<T>(Shape{2, 2, 4, 8, 12})); },
                                   {"mmnet::models::BUNet", "input channels", "1", "2"});
  check_throws_naming<shape_error>([&] { a.forward(TestTensor<T>(Shape{2, 1, 4, 8, 12})); },
                                   {"mmnet::models::ACDNet", "input channels", "2", "1"});
  check_throws_naming<shape_error>([&] { b.forward(TestTensor<T>(Shape{2, 1, 6, 8, 12})); },
                                   {"mmnet::models::BUNet", "input size D", "multiple of 4", "6"});
  check_throws_naming<shape_error>([&] { a.forward(TestTensor<T>(Shape{2, 2, 4, 8, 10})); },
                                   {"mmnet::models::ACDNet", "input size W", "multiple of 4", "10"});
  check_throws_naming<shape_error>([&] { b.forward(TestTensor<T>(Shape{1, 4, 8, 12})); },
                                   {"mmnet::models::BUNet", "input rank", "5", "4"});
  check_throws_naming<value_error>([&] { models::BUNet<T, Backend> fresh(models::BUNetOptions::tiny()); fresh.backward(TestTensor<T>(Shape{2, 2, 4, 8, 12})); },
                                   {"mmnet::models::BUNet::backward", "forward"});
  b.forward(TestTensor<T>(Shape{2, 1, 4, 8, 12}));
  check_throws_naming<shape_error>([&] { b.backward(TestTensor<T>(Shape{2, 2, 4, 8, 8})); },
                                   {"mmnet::models::BUNet::backward", "grad_output", "(2, 2, 4, 8, 12)", "(2, 2, 4, 8, 8)"});
  check_throws_naming<shape_error>([&] { ASPPDenseLayer<T, Backend>(3, 2, 2, {1, 2, 3}).forward(TestTensor<T>(Shape{1, 4, 2, 2, 2})); },
                                   {"ASPPDenseLayer", "input channels", "3", "4"});
  check_throws_naming<value_error>([] { models::BUNetOptions().b(0).validate(); }, {"BUNetOptions", "b", ">= 1", "0"});
  check_throws_naming<value_error>([] { models::ACDNetOptions().rates({1, 0, 2}).validate(); },
                                   {"ACDNetOptions", "rates[1]", ">= 1", "0"});
  check_throws_naming<value_error>([] { models::ACDNetOptions().theta(0).validate(); }, {"ACDNetOptions", "theta", "0"});
  check_throws_naming<value_error>([] { models::ACDNetOptions().s(1).L(1).k(1).theta(0.3).validate(); },
                                   {"ACDNetOptions", "transition 1", ">= 1", "0"});
  check_throws_naming<value_error>([] { models::CSCNOptions().block({6, 24, 24}).validate(); },
                                   {"CSCNOptions", "block D", "multiple of 4", "6"});
  check_throws_naming<value_error>([] { models::CSCNOptions().stride({4, 0, 12}).validate(); },
                                   {"CSCNOptions", "stride H", "0"});
  check_throws_naming<value_error>([] { models::CSCN<T, Backend>(models::CSCNOptions::tiny().acdnet(models::ACDNetOptions::tiny().in_channels(1))); },
                                   {"mmnet::models::CSCN", "acdnet in_channels", "2", "1"});
}
