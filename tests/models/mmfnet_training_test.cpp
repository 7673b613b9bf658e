// MMFNet training (models/mmfnet/training.hpp, spec §4): the self-transfer encoder copy and freezing (spec §8
// point 8, A13), the Trainer's early stopping and best checkpoint, the phase switch of self_transfer(), a
// bit-exact resume from a checkpoint, and PyTorch-trained weights loaded strictly (tiny and paper networks).
#include <cstdio>
#include <string>

#include <unistd.h>

#include <mmnet/core/parallel.hpp>
#include <mmnet/io/weights.hpp>
#include <mmnet/mmfnet.hpp>
#include <mmnet/models/mmfnet/training.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
using Net = models::MMFNet<T, Backend>;

MMFNetOptions tiny_single() { return MMFNetOptions::tiny().modalities(1).fusion(MMFNetFusion::merge); }

// Binary labels (Bernoulli(0.3)) from a fixed seed.
template <class T>
TestTensor<T> labels(const Shape& s, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = g.uniform() < 0.3 ? T(1) : T(0);
  return TestTensor<T>::from_vector(s, v);
}

// One Adam step of the soft Dice loss.
template <class T>
void adam_step(Net<T>& net, optim::Adam<T, Backend>& opt, const TestTensor<T>& x, const TestTensor<T>& y) {
  losses::SoftDice<T, Backend> dice;
  opt.zero_grad();
  dice.forward(net.forward(x), y);
  net.backward(dice.backward());
  opt.step();
}

bool starts_with(const std::string& s, const std::string& head) { return s.rfind(head, 0) == 0; }
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
// Conv biases feeding a BatchNorm: their gradient is rounding noise around zero (see mmfnet_test.cpp).
bool bias_before_bn(const std::string& n) {
  if (!ends_with(n, ".bias")) return false;
  if (starts_with(n, "encoders.")) return ends_with(n, ".conv1.bias") || ends_with(n, ".conv2.bias") || ends_with(n, "bottleneck.conv.bias");
  if (starts_with(n, "decoder.")) return ends_with(n, ".conv.bias");
  return ends_with(n, "rfblock.conv1.bias");
}
bool is_running_stat(const std::string& n) { return ends_with(n, ".running_mean") || ends_with(n, ".running_var"); }

template <class T>
bool same_bits(const TestTensor<T>& a, const TestTensor<T>& b) {
  return a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

}  // namespace

TEST_CASE_TEMPLATE("copy_encoder copies encoders.0.* exactly; frozen encoders keep weights, BN statistics move (A13)", T,
                   float, double) {
  Generator g(5);
  Net<T> single(tiny_single(), g);
  optim::Adam<T, Backend> single_opt(single.parameters(), optim::AdamOptions(1e-3));
  const auto x = randn<T>({2, 3, 4, 12, 8}, 1);
  const auto y = labels<T>({2, 1, 4, 12, 8}, 2);
  const auto x0 = nn::split_channels(x, {1, 1, 1})[0];
  adam_step(single, single_opt, x0, y);

  Net<T> net(MMFNetOptions::tiny(), g);
  const StateDict before = net.state_dict();
  mmfnet::copy_encoder(single, net, 0);
  const StateDict src = single.state_dict(), dst = net.state_dict();
  index_t copied = 0;
  for (const auto& e : dst) {
    const std::string& n = e.first;
    if (starts_with(n, "encoders.0.")) {
      const HostArray& s = src.at(n);  // same name in the single-modality model
      CHECK_MESSAGE(e.second.data == s.data, n);
      ++copied;
    } else {
      CHECK_MESSAGE(e.second.data == before.at(n).data, n << " must not change");
    }
  }
  CHECK(copied == 35);  // per level 2 convs (w, b) + 2 BNs (γ, β, mean, var, count); bottleneck conv + BN
  CHECK(dst.at("encoders.0.block1.bn1.num_batches_tracked").data[0] == 1);

  // The same input channel gives the same encoder outputs, bit for bit, in train and in eval mode.
  for (bool training : {true, false}) {
    single.train(training);
    net.train(training);
    const auto a = single.encoders[0].forward(x0);
    const auto b = net.encoders[0].forward(x0);
    CHECK(same_bits(a, b));
    for (index_t l = 1; l <= 2; ++l) CHECK(same_bits(single.encoders[0].skip(l), net.encoders[0].skip(l)));
  }
  net.train();

  CHECK_THROWS_AS(mmfnet::copy_encoder(net, single, 0), value_error);    // source has 3 encoders
  CHECK_THROWS_AS(mmfnet::copy_encoder(single, net, 3), value_error);    // m out of range
  CHECK_THROWS_AS(mmfnet::copy_encoder(single, net, -1), value_error);
  Generator g2(1);
  Net<T> wide(MMFNetOptions::tiny().modalities(1).fusion(MMFNetFusion::merge).level_channels({4, 6}), g2);
  const StateDict unchanged = net.state_dict();
  CHECK_THROWS_AS(mmfnet::copy_encoder(wide, net, 1), state_dict_error);
  CHECK(net.state_dict().at("encoders.1.block2.conv1.weight").data == unchanged.at("encoders.1.block2.conv1.weight").data);

  for (bool bn_too : {false, true}) {
    CAPTURE(bn_too);
    Net<T> n2(MMFNetOptions::tiny(), g);
    mmfnet::copy_encoder(single, n2, 0);
    n2.train();
    mmfnet::freeze_encoders(n2, bn_too);
    CHECK(n2.encoders[0].is_training() == !bn_too);
    optim::Adam<T, Backend> opt(n2.parameters(), optim::AdamOptions(1e-3));
    const StateDict s0 = n2.state_dict();
    adam_step(n2, opt, x, y);
    const StateDict s1 = n2.state_dict();
    for (const auto& e : s1) {
      const std::string& n = e.first;
      const bool same = e.second.data == s0.at(n).data;
      if (starts_with(n, "encoders.")) {
        if (is_running_stat(n) || ends_with(n, "num_batches_tracked")) CHECK_MESSAGE(same == bn_too, n);
        else CHECK_MESSAGE(same, n << ": frozen, must be bit-identical");
      } else if (!bias_before_bn(n) && !is_running_stat(n) && !ends_with(n, "num_batches_tracked")) {
        CHECK_MESSAGE(!same, n << ": trained, must change");
      }
    }
    mmfnet::unfreeze_encoders(n2);
    CHECK(n2.encoders[0].is_training());
    for (auto& np : n2.named_parameters()) CHECK(np.second->requires_grad);
  }
}

namespace {
template <class T>
mmfnet::Batch<T, Backend> tiny_batch(int epoch, int it, index_t modalities = 3) {
  const auto seed = static_cast<std::uint64_t>(1000 + 37 * epoch + it);
  return {randn<T>({2, modalities, 4, 12, 8}, seed), labels<T>({2, 1, 4, 12, 8}, seed + 500)};
}
std::string temp_path(const std::string& name) {
  return "/tmp/mmnet_mmfnet_training_" + std::to_string(::getpid()) + "_" + Backend::name + "_" + name + ".h5";
}
}  // namespace

TEST_CASE_TEMPLATE("Trainer: early stopping on the validation loss, best checkpoint and restore", T, float, double) {
  Generator g(8);
  Net<T> net(MMFNetOptions::tiny(), g);
  const std::string path = temp_path(std::is_same_v<T, float> ? "best_f" : "best_d");
  std::remove(path.c_str());
  mmfnet::Trainer<T, Backend> trainer(
      net, mmfnet::TrainerOptions().lr(1e-3).epochs(10).iterations_per_epoch(2).patience(2).best_checkpoint(path));
  // Scripted validation losses: best at epoch 1, then two epochs without improvement -> stop after epoch 3.
  const std::vector<double> scripted{5, 4, 4.5, 4.0, 3, 2};
  std::vector<StateDict> snapshots;
  std::vector<bool> eval_mode;
  int reports = 0;
  auto result = trainer.fit([](int e, int it) { return tiny_batch<T>(e, it); },
                            [&](Net<T>& m) {
                              snapshots.push_back(m.state_dict());
                              eval_mode.push_back(!m.is_training());
                              return scripted.at(snapshots.size() - 1);
                            },
                            [&](const mmfnet::EpochReport& r) {
                              CHECK(r.epoch == reports);
                              CHECK(r.best == (r.epoch <= 1));
                              CHECK(std::isfinite(r.train_loss));
                              ++reports;
                            });
  CHECK(result.epochs_run == 4);
  CHECK(result.stopped_early);
  CHECK(result.best_epoch == 1);
  CHECK(result.best_validation_loss == 4);
  CHECK(reports == 4);
  CHECK(eval_mode == std::vector<bool>(4, true));
  CHECK(net.is_training());
  CHECK(snapshots[3].at("head.weight").data != snapshots[1].at("head.weight").data);  // it kept training
  // The model holds the best epoch's weights again, and so does the checkpoint.
  CHECK(net.state_dict().at("head.weight").data == snapshots[1].at("head.weight").data);
  Generator g2(99);
  Net<T> fresh(MMFNetOptions::tiny(), g2);
  optim::Adam<T, Backend> opt(fresh.parameters(), optim::AdamOptions(0.5));
  const auto extra = io::load_checkpoint(path, fresh, &opt);
  CHECK(extra.at("epoch") == 1);
  CHECK(extra.at("validation_loss") == 4);
  const StateDict loaded = fresh.state_dict();
  for (const auto& e : snapshots[1]) CHECK_MESSAGE(loaded.at(e.first).data == e.second.data, e.first);
  CHECK(opt.lr() == doctest::Approx(1e-3));
  CHECK(opt.step_count() == 4);  // 2 epochs x 2 iterations at the best epoch
  std::remove(path.c_str());

  // Without validation: no early stop, every epoch runs.
  mmfnet::Trainer<T, Backend> plain(net, mmfnet::TrainerOptions().epochs(3).iterations_per_epoch(1).patience(1));
  auto r2 = plain.fit([](int e, int it) { return tiny_batch<T>(e, it); });
  CHECK(r2.epochs_run == 3);
  CHECK_FALSE(r2.stopped_early);
  CHECK(r2.best_epoch == -1);

  CHECK_THROWS_AS(mmfnet::TrainerOptions().patience(-1).validate(), value_error);
  CHECK_THROWS_AS(mmfnet::TrainerOptions().iterations_per_epoch(0).validate(), value_error);
  CHECK_THROWS_AS(mmfnet::TrainerOptions().lr(-1).validate(), value_error);
  CHECK_THROWS_AS(plain.fit({}), value_error);
  using Tr = mmfnet::Trainer<T, Backend>;
  CHECK_THROWS_AS(Tr(net, mmfnet::TrainerOptions().lr(std::nan(""))), value_error);
}

TEST_CASE_TEMPLATE("Trainer phase switch: frozen warm-up, then a fresh Adam at 1e-4 on all parameters", T, float, double) {
  Generator g(9);
  Net<T> net(MMFNetOptions::tiny(), g);
  mmfnet::Trainer<T, Backend> trainer(
      net, mmfnet::TrainerOptions().lr(1e-3).epochs(1).iterations_per_epoch(2).freeze_encoders(true).phase("warmup"));
  const StateDict s0 = net.state_dict();
  trainer.fit([](int e, int it) { return tiny_batch<T>(e, it); });
  const StateDict s1 = net.state_dict();
  const auto named = net.named_parameters();
  const StateDict warm_opt = trainer.optimizer().state_dict();
  for (std::size_t i = 0; i < named.size(); ++i) {
    const std::string& n = named[i].first;
    const bool enc = starts_with(n, "encoders.");
    CHECK_MESSAGE(named[i].second->requires_grad == !enc, n);
    CHECK_MESSAGE(warm_opt.contains("state." + std::to_string(i) + ".exp_avg") == !enc, n);
    if (enc) CHECK_MESSAGE(s1.at(n).data == s0.at(n).data, n);
  }
  CHECK(s1.at("encoders.2.block1.bn1.running_mean").data != s0.at("encoders.2.block1.bn1.running_mean").data);

  trainer.start_phase(mmfnet::TrainerOptions().lr(1e-4).epochs(1).iterations_per_epoch(1).phase("finetune"));
  CHECK(trainer.optimizer().lr() == 1e-4);
  CHECK(trainer.optimizer().step_count() == 0);
  for (const auto& e : trainer.optimizer().state_dict()) CHECK_MESSAGE(!starts_with(e.first, "state."), e.first);
  for (const auto& np : net.named_parameters()) CHECK_MESSAGE(np.second->requires_grad, np.first);
  CHECK(trainer.epoch() == 1);
  trainer.fit([](int e, int it) { return tiny_batch<T>(e, it); });
  const StateDict s2 = net.state_dict();
  CHECK(s2.at("encoders.0.block1.conv1.weight").data != s1.at("encoders.0.block1.conv1.weight").data);
  const StateDict fine_opt = trainer.optimizer().state_dict();
  CHECK(fine_opt.at("state.0.step").data[0] == 1);  // the encoder's first Adam step: its state started now
  CHECK(fine_opt.at("param_groups.0.lr").data[0] == 1e-4);
}

TEST_CASE("self_transfer runs spec §4: pre-training per modality, frozen warm-up at 1e-3, fine-tuning at 1e-4") {
  using T = double;
  Generator g(10);
  Net<T> net(MMFNetOptions::tiny(), g);
  mmfnet::SelfTransferOptions o;
  o.pretrain.epochs(2).iterations_per_epoch(1).patience(5);
  o.main.iterations_per_epoch(1).patience(5);
  o.warmup_epochs = 1;
  o.total_epochs = 3;
  std::vector<mmfnet::Batch<T, Backend>> val{tiny_batch<T>(99, 0), tiny_batch<T>(99, 1)};
  std::vector<mmfnet::EpochReport> reports;
  std::vector<bool> frozen_at_report;
  auto r = mmfnet::self_transfer(net, o, [](int e, int it) { return tiny_batch<T>(e, it); }, val, g,
                                 [&](const mmfnet::EpochReport& rep) {
                                   reports.push_back(rep);
                                   frozen_at_report.push_back(!net.encoders[0].blocks[0].conv1.weight.requires_grad);
                                 });
  REQUIRE(reports.size() == 3 * 2 + 3);
  const std::vector<std::string> phases{"pretrain.0", "pretrain.0", "pretrain.1", "pretrain.1", "pretrain.2",
                                        "pretrain.2", "warmup",     "finetune",   "finetune"};
  for (std::size_t i = 0; i < reports.size(); ++i) {
    CHECK(reports[i].phase == phases[i]);
    CHECK(reports[i].lr == (i < 8 - 1 ? 1e-3 : 1e-4));
    CHECK(frozen_at_report[i] == (i == 6));  // only the net's warm-up has its encoders frozen
    CHECK(reports[i].validation_loss.has_value());
  }
  CHECK(reports[6].epoch == 0);
  CHECK(reports[8].epoch == 2);  // warm-up and fine-tuning are one run
  CHECK(r.pretrain.size() == 3);
  CHECK(r.warmup.epochs_run == 1);
  CHECK(r.finetune.epochs_run == 2);
  for (const auto& np : net.named_parameters()) CHECK(np.second->requires_grad);
  // The net ends with the best epoch's weights: its validation loss is the best one reported.
  net.eval();
  CHECK(mmfnet::Trainer<T, Backend>::dice_loss(net, val) == r.finetune.best_validation_loss);
  CHECK_THROWS_AS(mmfnet::self_transfer(net, [&] { auto b = o; b.warmup_epochs = 4; return b; }(),
                                        [](int e, int it) { return tiny_batch<T>(e, it); }, val, g),
                  value_error);
}

TEST_CASE_TEMPLATE("Resume: 3 steps + checkpoint + 3 steps in fresh objects equals 6 straight steps, bit for bit", T, float,
                   double) {
  // One thread, and the library's deterministic kernels make the comparison exact; restored at the end.
  const int threads = mmnet::get_num_threads();
  mmnet::set_num_threads(1);
  const auto step = [](Net<T>& net, optim::Adam<T, Backend>& opt, int i) {
    const auto b = tiny_batch<T>(0, i);
    adam_step(net, opt, b.input, b.target);
  };
  Generator g(12);
  Net<T> straight(MMFNetOptions::tiny(), g);
  Net<T> first(MMFNetOptions::tiny(), g);
  first.load_state_dict(straight.state_dict());
  optim::Adam<T, Backend> opt_straight(straight.parameters(), optim::AdamOptions(1e-3));
  for (int i = 0; i < 6; ++i) step(straight, opt_straight, i);

  optim::Adam<T, Backend> opt_first(first.parameters(), optim::AdamOptions(1e-3));
  for (int i = 0; i < 3; ++i) step(first, opt_first, i);
  const std::string path = temp_path(std::is_same_v<T, float> ? "resume_f" : "resume_d");
  io::save_checkpoint(path, first, &opt_first, nullptr, {{"step", 3}});

  Generator g2(77);  // different initial weights: everything must come from the checkpoint
  Net<T> resumed(MMFNetOptions::tiny(), g2);
  optim::Adam<T, Backend> opt_resumed(resumed.parameters(), optim::AdamOptions(0.1));
  const auto extra = io::load_checkpoint(path, resumed, &opt_resumed);
  std::remove(path.c_str());
  CHECK(extra.at("step") == 3);
  for (int i = 3; i < 6; ++i) step(resumed, opt_resumed, i);

  const StateDict a = straight.state_dict(), b = resumed.state_dict();
  CHECK(a.keys() == b.keys());
  for (const auto& e : a) CHECK_MESSAGE(e.second.data == b.at(e.first).data, e.first);
  const StateDict oa = opt_straight.state_dict(), ob = opt_resumed.state_dict();
  CHECK(oa.keys() == ob.keys());
  for (const auto& e : oa) CHECK_MESSAGE(e.second.data == ob.at(e.first).data, e.first);
  CHECK(a.at("encoders.1.block2.bn2.num_batches_tracked").data[0] == 6);
  CHECK(oa.at("state.0.step").data[0] == 6);
  mmnet::set_num_threads(threads);
}

TEST_CASE_TEMPLATE("PyTorch MMFNet weights (tools/torch2h5.py) load strictly and give PyTorch's eval outputs", T, float,
                   double) {
  Fixture fx("mmfnet_training");
  for (const char* name : {"tiny", "paper"}) {
    CAPTURE(name);
    const std::string c = name;
    Net<T> net(c == "tiny" ? MMFNetOptions::tiny() : MMFNetOptions::paper());
    mmnet::load(net, fixture_dir() + "/mmfnet_torch_" + c + ".h5", /*strict=*/true);
    net.eval();
    check_close(net.forward(fx.tensor<T>(c + "/input")), fx.array(c + "/prob"), tol_output<T>(), c + " eval prob");
  }
}
