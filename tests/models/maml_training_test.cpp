// MAML training (models/maml/training.hpp, spec maml.md §4.1) through train::Trainer: the code preset (SGD-Nesterov,
// poly lr per epoch, clip 12, code loss) leaves the unused heads bit-identical and follows the poly schedule; the
// paper preset (Adam-AMSGrad, ReduceLROnPlateau on the loss EMA) keeps the EMA of the epoch losses; with modality
// dropout, a run resumed from last.h5 (dropout generator tracked) ends with the same weights as one that never
// stopped.
#include <cmath>
#include <string>
#include <vector>

#include <mmnet/maml.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

using T = double;
using Net = models::MAML<T, Backend>;
using Batch = train::Batch<T, Backend>;

// A deterministic batch per (epoch, iteration): N 2, M 2, 16 x 8 x 16, labels in {0, 1, 2}.
Batch batch(int epoch, int it) {
  const std::uint64_t seed = 1000 + 17 * static_cast<std::uint64_t>(epoch) + static_cast<std::uint64_t>(it);
  Batch b;
  b.input = randn<T>(Shape{2, 2, 16, 8, 16}, seed);
  Generator g(seed);
  std::vector<T> y(2 * 16 * 8 * 16);
  for (auto& e : y) e = static_cast<T>(g.integer(3));
  b.target = TestTensor<T>::from_vector(Shape{2, 1, 16, 8, 16}, y);
  return b;
}

train::TrainerOptions quiet(int epochs) {
  return train::TrainerOptions().epochs(epochs).iterations_per_epoch(2).progress(train::ProgressMode::off).handle_sigint(false);
}

}  // namespace

TEST_CASE("MAML training: code preset through train::Trainer") {
  Generator g(3);
  Net net(MAMLOptions::tiny(), g);
  const auto before = net.state_dict();
  optim::SGD<T, Backend> opt(net.parameters(), maml::sgd_options());
  optim::PolyLR sched(opt, maml::poly_lr_options(4));
  models::MAMLLoss<T, Backend> loss(MAMLLossOptions::code(3));
  train::Trainer<Net> trainer(net, opt, maml::loss_step(loss), quiet(3).clip_grad_norm(maml::clip_norm));
  trainer.scheduler(sched, train::SchedulerStep::per_epoch);
  const auto r = trainer.fit(batch);
  CHECK(r.status == train::FitStatus::completed);
  REQUIRE(r.history.size() == 3);
  for (int e = 0; e < 3; ++e) {
    CHECK(std::isfinite(r.history[static_cast<std::size_t>(e)].train_loss));
    CHECK(r.history[static_cast<std::size_t>(e)].lr == doctest::Approx(0.01 * std::pow(1 - e / 4.0, 0.9)));
  }
  const auto after = net.state_dict();
  for (auto& e : before) {
    const bool unused_head = e.first.find(".seg_outputs.0.") != std::string::npos;
    CHECK_MESSAGE((after.at(e.first).data == e.second.data) == unused_head, e.first);
  }
}

TEST_CASE("MAML training: paper preset with the loss EMA and ReduceLROnPlateau") {
  Generator g(4);
  Net net(MAMLOptions::tiny(), g);
  optim::Adam<T, Backend> opt(net.parameters(), maml::adam_options());
  optim::ReduceLROnPlateau plateau(opt, maml::plateau_options().patience(0));
  maml::LossEMA ema;
  std::vector<double> averages;
  models::MAMLLoss<T, Backend> loss(MAMLLossOptions::paper(3));
  train::Trainer<Net> trainer(net, opt, maml::loss_step(loss), quiet(3));
  trainer.on_epoch_end([&](const train::EpochRecord& rec, bool) {
    averages.push_back(ema.update(rec.train_loss));
    plateau.step(averages.back());
  });
  const auto r = trainer.fit(batch);
  REQUIRE(r.history.size() == 3);
  double ma = r.history[0].train_loss;
  CHECK(averages[0] == ma);
  for (std::size_t e = 1; e < 3; ++e) {
    ma = 0.93 * ma + 0.07 * r.history[e].train_loss;
    CHECK(averages[e] == doctest::Approx(ma).epsilon(1e-14));
  }
  // the four unused heads (seg_outputs.0 and .1 of both branches) never had a gradient
  for (auto& b : net.modality_specific_models) {
    CHECK(!b.seg_outputs[0].weight.grad.defined());
    CHECK(!b.seg_outputs[1].weight.grad.defined());
    CHECK(b.seg_outputs[2].weight.grad.defined());
  }
}

TEST_CASE("MAML training: exact resume with modality dropout") {
  const auto o = MAMLOptions::tiny().modality_dropout(0.5).dropout_seed(9);
  auto run = [&o](const std::string& dir, int epochs, bool resume) {
    Generator g(5);
    Net net(o, g);
    optim::SGD<T, Backend> opt(net.parameters(), maml::sgd_options());
    models::MAMLLoss<T, Backend> loss(MAMLLossOptions::code(3));
    train::Trainer<Net> trainer(net, opt, maml::loss_step(loss), quiet(epochs).clip_grad_norm(maml::clip_norm).output_dir(dir));
    trainer.track_generator("modality_dropout", net.dropout_generator());
    if (resume) trainer.resume(dir);
    trainer.fit(batch);
    return net.state_dict();
  };
  const std::string straight = scratch_dir("maml_training", "straight"), split = scratch_dir("maml_training", "split");
  const auto full = run(straight, 3, false);
  run(split, 1, false);
  const auto resumed = run(split, 3, true);
  for (auto& e : full) CHECK_MESSAGE(resumed.at(e.first).data == e.second.data, e.first);
}
