// The training loop (train/trainer.hpp) on the tiny network with synthetic deterministic batches: the loop equals
// a hand-written one bit for bit; 2 epochs straight equal 1 epoch, a fresh trainer (other init, hyperparameters
// and generator seed) resumed from last.h5 and 1 more epoch -- weights, optimizer, scheduler, generator and
// log BIT-identical; SIGINT raised from the batch source stops after that iteration with a consistent last.h5
// that resumes to the uninterrupted result, and the previous handler is restored; early stopping and best.h5
// on scripted validation sequences (metric max, loss min, min_delta), ReduceLROnPlateau on the monitored value;
// log.csv / curves.svg; Generator::state(); bad options and checkpoints that do not fit.
#include <mmnet/losses/bce_with_logits.hpp>
#include <mmnet/models/tiny_net.hpp>
#include <mmnet/optim/adam.hpp>
#include <mmnet/optim/lr_scheduler.hpp>
#include <mmnet/optim/sgd.hpp>
#include <mmnet/train/trainer.hpp>

#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

namespace fs = std::filesystem;

// A fresh directory under the build tree (next to the fixture directory, wherever the test runs from), one
// tree per backend's executable.
std::string trainer_dir(const std::string& name) {
  const fs::path p =
      fs::absolute(fixture_dir()).parent_path() / ("trainer_test_tmp_" + std::string(Backend::name)) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void trainer_identical(const StateDict& a, const StateDict& b, const std::string& what) {
  CHECK_MESSAGE(a.keys() == b.keys(), what);
  for (const auto& entry : a) {
    const HostArray* o = b.find(entry.first);
    REQUIRE_MESSAGE(o != nullptr, what << ": " << entry.first);
    CHECK_MESSAGE(entry.second.shape == o->shape, what << " " << entry.first);
    CHECK_MESSAGE(entry.second.data == o->data, what << " " << entry.first << " is not bit-identical");
  }
}

bool same_records(const std::vector<train::EpochRecord>& a, const std::vector<train::EpochRecord>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].epoch != b[i].epoch || a[i].iteration != b[i].iteration || a[i].train_loss != b[i].train_loss ||
        a[i].val_loss != b[i].val_loss || a[i].val_metric != b[i].val_metric || a[i].lr != b[i].lr)
      return false;
  return true;
}

// log.csv without its seconds column (wall time differs between runs).
std::string csv_without_seconds(const std::string& text) {
  std::istringstream in(text);
  std::string line, out;
  while (std::getline(in, line)) out += line.substr(0, line.rfind(',')) + "\n";
  return out;
}

template <class T>
using Net = models::TinyNet<T, Backend>;

// Everything one training process owns. other = a different init, lr, schedule length and data seed: resume()
// must overwrite all of it.
template <class T>
struct Setup {
  Generator init;
  Net<T> net;
  optim::Adam<T, Backend> opt;
  optim::CosineAnnealingLR sched;
  losses::BCEWithLogits<T, Backend> bce;
  Generator data;
  std::ostringstream log;
  train::Trainer<Net<T>> trainer;

  Setup(bool other, const train::TrainerOptions& o)
      : init(other ? 77 : 1),
        net(models::TinyNetOptions(2).width(3), init),
        opt(net.parameters(), optim::AdamOptions(other ? 0.5 : 3e-2)),
        sched(opt, optim::CosineAnnealingLROptions(other ? 2 : 5).eta_min(1e-3)),
        data(other ? 99 : 5),
        trainer(net, opt, train::loss_step(bce), train::TrainerOptions(o).progress(train::ProgressMode::lines)) {
    trainer.scheduler(sched, train::SchedulerStep::per_iteration).track_generator("data", data).progress_stream(log);
  }

  // Deterministic in (epoch, iteration) plus noise from the tracked generator.
  train::Batch<T, Backend> batch(int e, int it) {
    const Shape xs{2, 2, 3, 5, 4}, ys{2, 1, 3, 5, 4};
    std::vector<T> x(static_cast<std::size_t>(xs.numel())), y(static_cast<std::size_t>(ys.numel()));
    for (std::size_t i = 0; i < x.size(); ++i)
      x[i] = static_cast<T>(std::sin(0.37 * static_cast<double>(i) + 1.3 * e + 0.7 * it) + 0.2 * data.normal());
    for (std::size_t i = 0; i < y.size(); ++i)
      y[i] = static_cast<T>((i * 7 + static_cast<std::size_t>(e + 2 * it)) % 5 < 2);
    return {TestTensor<T>::from_vector(xs, x), TestTensor<T>::from_vector(ys, y)};
  }

  // Loss on a fixed batch; metric 1 / (1 + loss) (higher is better).
  train::ValidationResult validate(Net<T>& model) {
    const auto b = fixed_val_batch();
    losses::BCEWithLogits<T, Backend> l;
    const double loss = static_cast<double>(l.forward(model.forward(b.input), b.target));
    return {1.0 / (1.0 + loss), loss};
  }
  static train::Batch<T, Backend> fixed_val_batch() {
    const Shape xs{2, 2, 3, 5, 4}, ys{2, 1, 3, 5, 4};
    std::vector<T> x(static_cast<std::size_t>(xs.numel())), y(static_cast<std::size_t>(ys.numel()));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(std::cos(0.23 * static_cast<double>(i)));
    for (std::size_t i = 0; i < y.size(); ++i) y[i] = static_cast<T>(i % 3 == 0);
    return {TestTensor<T>::from_vector(xs, x), TestTensor<T>::from_vector(ys, y)};
  }

  train::FitResult fit(std::function<void(int, int)> hook = {}) {
    return trainer.fit(
        [this, hook](int e, int it) {
          if (hook) hook(e, it);
          return batch(e, it);
        },
        [this](Net<T>& m) { return validate(m); });
  }
};

train::TrainerOptions small_run(const std::string& dir, int epochs) {
  return train::TrainerOptions().epochs(epochs).iterations_per_epoch(3).output_dir(dir);
}

// A deep-supervision-shaped model: forward returns two outputs, backward takes their gradients.
template <class T>
struct TwoOutputs : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  Net<T> net;
  explicit TwoOutputs(Generator& g) : net(models::TinyNetOptions(2).width(3), g) {}
  void members(Members<T, Backend>& m) override { m("net", net); }
  std::vector<tensor> forward(const tensor& x) {
    const tensor z = net.forward(x);
    return {z, z.clone()};
  }
  tensor backward(const std::vector<tensor>& g) {
    tensor d = g[0].clone();
    add_(d, g[1]);
    return net.backward(d);
  }
};

int g_test_handler_calls = 0;
void test_sigint_handler(int) { ++g_test_handler_calls; }

// Installs test_sigint_handler for the scope (so that a SIGINT outside fit() cannot end the test run).
struct TestHandler {
  struct sigaction old {};
  TestHandler() {
    struct sigaction sa {};
    sa.sa_handler = &test_sigint_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
  }
  ~TestHandler() { sigaction(SIGINT, &old, nullptr); }
  static bool installed() {
    struct sigaction now {};
    sigaction(SIGINT, nullptr, &now);
    return now.sa_handler == &test_sigint_handler;
  }
};

}  // namespace

TEST_CASE("Generator::state() restores the exact sequence, the cached normal deviate included") {
  Generator g(123);
  g.uniform();
  g.normal();  // leaves a spare deviate
  const auto s = g.state();
  Generator h(9);
  h.set_state(s);
  CHECK(h.state() == s);
  for (int i = 0; i < 50; ++i) {
    CHECK(g.normal() == h.normal());
    CHECK(g.uniform() == h.uniform());
    CHECK(g.integer(1000) == h.integer(1000));
  }
  auto bad = s;
  bad.back() = 2;
  check_throws_naming<value_error>([&] { h.set_state(bad); }, {"mmnet::Generator::set_state", "0 or 1"});
  bad = s;
  bad.erase(bad.begin() + 3);  // one engine word short
  const auto before = h.state();
  check_throws_naming<value_error>([&] { h.set_state(bad); }, {"mmnet::Generator::set_state", "engine words"});
  CHECK(h.state() == before);
  CHECK_THROWS_AS(h.set_state({1, 0}), value_error);
}

TEST_CASE_TEMPLATE("the trainer's loop equals a hand-written one bit for bit (clipping, per-epoch scheduler)", T, float,
                   double) {
  const std::string dir = trainer_dir("loop");
  train::TrainerOptions o = small_run(dir, 2).clip_grad_norm(0.05).progress(train::ProgressMode::off);
  Setup<T> a(false, o);
  train::Trainer<Net<T>> per_epoch(a.net, a.opt, train::loss_step(a.bce), o);
  per_epoch.scheduler(a.sched, train::SchedulerStep::per_epoch).track_generator("data", a.data).progress_stream(a.log);
  const auto r = per_epoch.fit([&a](int e, int it) { return a.batch(e, it); });
  CHECK(r.status == train::FitStatus::completed);
  CHECK(r.epochs_run == 2);
  CHECK(r.best_epoch == -1);  // no validation

  Setup<T> b(false, o);
  std::vector<double> losses;
  for (int e = 0; e < 2; ++e) {
    double sum = 0;
    for (int it = 0; it < 3; ++it) {
      const auto batch = b.batch(e, it);
      b.opt.zero_grad();
      const double l = static_cast<double>(b.bce.forward(b.net.forward(batch.input), batch.target));
      b.net.backward(b.bce.backward());
      optim::clip_grad_norm_(b.net, 0.05);
      b.opt.step();
      sum += l;
    }
    losses.push_back(sum / 3);
    b.sched.step();
  }
  trainer_identical(a.net.state_dict(), b.net.state_dict(), "model");
  trainer_identical(a.opt.state_dict(), b.opt.state_dict(), "optimizer");
  trainer_identical(a.sched.state_dict(), b.sched.state_dict(), "scheduler");
  REQUIRE(r.history.size() == 2);
  CHECK(r.history[0].train_loss == losses[0]);
  CHECK(r.history[1].train_loss == losses[1]);
  CHECK(r.history[1].iteration == 6);
  CHECK(a.net.is_training());
  CHECK(a.log.str().empty());  // progress off
}

TEST_CASE("a model with several outputs: the loss step takes and returns their type") {
  using T = double;
  using tensor = TestTensor<T>;
  using Model = TwoOutputs<T>;
  static_assert(std::is_same_v<train::Trainer<Model>::output_type, std::vector<tensor>>);
  auto run = [](bool by_hand) {
    Generator g(11);
    Model m(g);
    optim::SGD<T, Backend> opt(m.parameters(), optim::SGDOptions(0.1).momentum(0.9));
    losses::BCEWithLogits<T, Backend> full, half;
    auto step = [&](const std::vector<tensor>& z, const tensor& y) {
      train::LossStep<T, Backend, std::vector<tensor>> s;
      s.loss = static_cast<double>(full.forward(z[0], y)) + 0.5 * static_cast<double>(half.forward(z[1], y));
      s.grad = {full.backward(), half.backward(T(0.5))};
      return s;
    };
    const auto batch = [](int e, int it) {
      auto b = Setup<T>::fixed_val_batch();
      scale_(b.input, T(1 + 0.1 * e + 0.01 * it));
      return b;
    };
    if (by_hand) {
      for (int e = 0; e < 2; ++e)
        for (int it = 0; it < 2; ++it) {
          const auto b = batch(e, it);
          opt.zero_grad();
          m.backward(step(m.forward(b.input), b.target).grad);
          opt.step();
        }
    } else {
      train::Trainer<Model> t(
          m, opt, step, train::TrainerOptions().epochs(2).iterations_per_epoch(2).progress(train::ProgressMode::off));
      const auto r = t.fit(batch);
      CHECK(r.history.size() == 2);
      CHECK(std::isfinite(r.history[1].train_loss));
    }
    return m.state_dict();
  };
  trainer_identical(run(false), run(true), "two-output model");
}

TEST_CASE_TEMPLATE("2 epochs straight equal 1 epoch + resume in a fresh trainer + 1 epoch, bit for bit", T, float,
                   double) {
  const std::string d1 = trainer_dir("straight"), d2 = trainer_dir("resumed");
  Setup<T> straight(false, small_run(d1, 2));
  const auto r1 = straight.fit();
  CHECK(r1.status == train::FitStatus::completed);
  CHECK(r1.epochs_run == 2);

  {
    Setup<T> first(false, small_run(d2, 1));
    const auto r = first.fit();
    CHECK(r.epochs_run == 1);
    CHECK(r.epoch == 1);
  }
  Setup<T> second(true, small_run(d2, 2));  // "a new process": other init, lr, T_max and data seed
  second.trainer.resume(d2);
  CHECK(second.trainer.epoch() == 1);
  CHECK(second.trainer.iteration() == 0);
  CHECK(second.trainer.global_step() == 3);
  CHECK(second.trainer.history().size() == 1);
  const auto r2 = second.fit();
  CHECK(r2.status == train::FitStatus::completed);
  CHECK(r2.epochs_run == 1);

  trainer_identical(second.net.state_dict(), straight.net.state_dict(), "model");
  trainer_identical(second.opt.state_dict(), straight.opt.state_dict(), "optimizer");
  trainer_identical(second.sched.state_dict(), straight.sched.state_dict(), "scheduler");
  CHECK(second.data.state() == straight.data.state());
  CHECK(same_records(r2.history, r1.history));
  CHECK(r2.best_epoch == r1.best_epoch);
  CHECK(r2.best_value == r1.best_value);
  CHECK(csv_without_seconds(slurp(d2 + "/log.csv")) == csv_without_seconds(slurp(d1 + "/log.csv")));
  // last.h5 of both runs holds the same state
  const auto c1 = io::read_checkpoint(d1 + "/last.h5"), c2 = io::read_checkpoint(d2 + "/last.h5");
  trainer_identical(c2.model, c1.model, "last.h5 model");
  trainer_identical(c2.optimizer, c1.optimizer, "last.h5 optimizer");
  for (const char* k : {"epoch", "iteration", "global_step", "best_value", "best_epoch", "epochs_without_improvement",
                        "epoch_loss_sum", "epoch_loss_count", "last_lr", "rng.data.words", "rng.data.0.lo"})
    CHECK_MESSAGE(c2.extra.at(k) == c1.extra.at(k), k);
  CHECK(c1.extra.at("epoch") == 2);
  CHECK(c1.extra.at("iteration") == 0);
  // a resume of a finished run has nothing left to do
  Setup<T> third(true, small_run(d2, 2));
  third.trainer.resume(d2 + "/last.h5");  // a checkpoint file works too
  const auto r3 = third.fit();
  CHECK(r3.status == train::FitStatus::completed);
  CHECK(r3.epochs_run == 0);
  trainer_identical(third.net.state_dict(), straight.net.state_dict(), "finished model");
}

TEST_CASE_TEMPLATE("SIGINT stops after the current iteration, saves a consistent last.h5, and resumes exactly", T,
                   float, double) {
  TestHandler handler;
  const std::string ds = trainer_dir("sigint_straight");
  // The uninterrupted run, with the state at the start of (1, 2) and (2, 0) captured from the batch source.
  Setup<T> straight(false, small_run(ds, 3));
  StateDict model_at_1_2, opt_at_1_2, model_at_2_0;
  std::vector<std::uint64_t> data_at_1_2;
  const auto rs = straight.fit([&](int e, int it) {
    if (e == 1 && it == 2) {
      model_at_1_2 = straight.net.state_dict();
      opt_at_1_2 = straight.opt.state_dict();
      data_at_1_2 = straight.data.state();
    }
    if (e == 2 && it == 0) model_at_2_0 = straight.net.state_dict();
  });
  REQUIRE(rs.status == train::FitStatus::completed);
  CHECK(TestHandler::installed());

  SUBCASE("in the middle of an epoch") {
    const std::string d = trainer_dir("sigint_mid");
    {
      Setup<T> run(false, small_run(d, 3));
      const auto r = run.fit([](int e, int it) {
        if (e == 1 && it == 1) std::raise(SIGINT);
      });
      CHECK(r.status == train::FitStatus::interrupted);
      CHECK(r.epoch == 1);
      CHECK(r.iteration == 2);
      CHECK(r.epochs_run == 1);
      CHECK(TestHandler::installed());  // the previous handler is back
      CHECK(g_test_handler_calls == 0);  // and the trainer's one took the signal
      CHECK(run.log.str().find("interrupted at epoch 2, iteration 2") != std::string::npos);
      const auto c = io::read_checkpoint(d + "/last.h5");
      trainer_identical(c.model, model_at_1_2, "checkpoint model");
      trainer_identical(c.optimizer, opt_at_1_2, "checkpoint optimizer");
      CHECK(c.extra.at("epoch") == 1);
      CHECK(c.extra.at("iteration") == 2);
      CHECK(c.extra.at("global_step") == 5);
      CHECK(c.extra.at("epoch_loss_count") == 2);
      CHECK(run.data.state() == data_at_1_2);
      CHECK(train::read_csv(d + "/log.csv").size() == 1);  // only completed epochs
    }
    Setup<T> resumed(true, small_run(d, 3));
    resumed.trainer.resume(d);
    CHECK(resumed.data.state() == data_at_1_2);
    const auto r = resumed.fit();
    CHECK(r.status == train::FitStatus::completed);
    trainer_identical(resumed.net.state_dict(), straight.net.state_dict(), "resumed model");
    trainer_identical(resumed.opt.state_dict(), straight.opt.state_dict(), "resumed optimizer");
    trainer_identical(resumed.sched.state_dict(), straight.sched.state_dict(), "resumed scheduler");
    CHECK(same_records(r.history, rs.history));
    CHECK(csv_without_seconds(slurp(d + "/log.csv")) == csv_without_seconds(slurp(ds + "/log.csv")));
  }
  SUBCASE("at an epoch's last iteration: validation is left to the resumed run") {
    const std::string d = trainer_dir("sigint_last");
    {
      Setup<T> run(false, small_run(d, 3));
      const auto r = run.fit([](int e, int it) {
        if (e == 1 && it == 2) std::raise(SIGINT);
      });
      CHECK(r.status == train::FitStatus::interrupted);
      CHECK(r.epoch == 1);
      CHECK(r.iteration == 3);
      CHECK(r.history.size() == 1);
      const auto c = io::read_checkpoint(d + "/last.h5");
      trainer_identical(c.model, model_at_2_0, "checkpoint model");
    }
    Setup<T> resumed(true, small_run(d, 3));
    resumed.trainer.resume(d);
    const auto r = resumed.fit();
    trainer_identical(resumed.net.state_dict(), straight.net.state_dict(), "resumed model");
    CHECK(same_records(r.history, rs.history));
  }
  SUBCASE("request_stop() from the validation: stops at the epoch's end") {
    const std::string d = trainer_dir("request_stop");
    Setup<T> run(false, small_run(d, 3));
    const auto r = run.trainer.fit([&run](int e, int it) { return run.batch(e, it); },
                                   [&run](Net<T>& m) {
                                     run.trainer.request_stop();
                                     return run.validate(m);
                                   });
    CHECK(r.status == train::FitStatus::interrupted);
    CHECK(r.epoch == 1);
    CHECK(r.iteration == 0);
    CHECK(r.epochs_run == 1);
  }
  SUBCASE("an exception from the batch source restores the handler too") {
    Setup<T> run(false, small_run("", 3));
    CHECK_THROWS_AS(run.fit([](int e, int) {
      if (e == 1) throw io_error("no more data");
    }),
                    io_error);
    CHECK(TestHandler::installed());
  }
  std::raise(SIGINT);  // reaches the test's handler: nothing of the trainer's is left installed
  CHECK(g_test_handler_calls == 1);
  g_test_handler_calls = 0;
}

TEST_CASE_TEMPLATE("no validation, SGD + per-epoch PolyLR, request_stop() mid-epoch: the resumed run is exact", T,
                   float, double) {
  struct Run {
    Generator init{3}, data{8};
    Net<T> net{models::TinyNetOptions(2).width(3), init};
    optim::SGD<T, Backend> opt{net.parameters(), optim::SGDOptions(0.05).momentum(0.9).nesterov(true)};
    optim::PolyLR sched{opt, optim::PolyLROptions(3)};
    losses::BCEWithLogits<T, Backend> bce;
    std::ostringstream log;
    train::Trainer<Net<T>> trainer;
    explicit Run(const std::string& dir)
        : trainer(net, opt, train::loss_step(bce),
                  train::TrainerOptions().epochs(3).iterations_per_epoch(4).output_dir(dir)) {
      trainer.scheduler(sched).track_generator("data", data).progress_stream(log);
    }
    train::Batch<T, Backend> batch(int e, int it) {
      auto b = Setup<T>::fixed_val_batch();
      scale_(b.input, static_cast<T>(1 + 0.1 * e - 0.05 * it + 0.1 * data.uniform()));
      return b;
    }
  };
  Run straight(trainer_dir("nv_straight"));
  const auto rs = straight.trainer.fit([&straight](int e, int it) { return straight.batch(e, it); });
  CHECK(rs.best_epoch == -1);
  const std::string d = trainer_dir("nv_resumed");
  {
    Run first(d);
    const auto r = first.trainer.fit([&first](int e, int it) {
      if (e == 1 && it == 1) first.trainer.request_stop();
      return first.batch(e, it);
    });
    CHECK(r.status == train::FitStatus::interrupted);
    CHECK(r.iteration == 2);
    CHECK(io::read_checkpoint(d + "/last.h5").extra.at("best_value") == -std::numeric_limits<double>::infinity());
  }
  Run second(d);
  second.trainer.resume(d);
  const auto r = second.trainer.fit([&second](int e, int it) { return second.batch(e, it); });
  CHECK(r.status == train::FitStatus::completed);
  trainer_identical(second.net.state_dict(), straight.net.state_dict(), "model");
  trainer_identical(second.opt.state_dict(), straight.opt.state_dict(), "optimizer");
  trainer_identical(second.sched.state_dict(), straight.sched.state_dict(), "scheduler");
  CHECK(same_records(r.history, rs.history));
  CHECK(straight.opt.lr() == 0);  // PolyLR(3) stepped per epoch reaches 0 after 3 epochs
}

TEST_CASE("early stopping and best.h5 follow a scripted validation sequence") {
  using T = double;
  SUBCASE("metric max, patience 3") {
    const std::string d = trainer_dir("early_metric");
    Setup<T> run(false, small_run(d, 10).patience(3).restore_best(true));
    const std::vector<double> metric{0.2, 0.5, 0.4, 0.5, 0.45, 0.9};
    std::vector<StateDict> states;
    const auto r = run.trainer.fit([&run](int e, int it) { return run.batch(e, it); },
                                   [&](Net<T>& m) {
                                     states.push_back(m.state_dict());
                                     return train::ValidationResult{metric[states.size() - 1], std::nullopt};
                                   });
    CHECK(r.status == train::FitStatus::early_stopped);
    CHECK(r.epochs_run == 5);  // 0.4, 0.5 (no strict gain), 0.45: three epochs without improvement
    CHECK(r.best_epoch == 1);
    CHECK(r.best_value == 0.5);
    CHECK(run.trainer.epochs_without_improvement() == 3);
    const auto best = io::read_checkpoint(d + "/best.h5");
    trainer_identical(best.model, states[1], "best.h5");
    CHECK(best.extra.at("best_epoch") == 1);
    CHECK(best.extra.at("epoch") == 2);  // best.h5 is a resumable checkpoint of that epoch's end
    trainer_identical(run.net.state_dict(), states[1], "restore_best");
    const auto last = io::read_checkpoint(d + "/last.h5");
    trainer_identical(last.model, states[4], "last.h5");
    CHECK(last.extra.at("epochs_without_improvement") == 3);
    const auto rows = train::read_csv(d + "/log.csv");
    REQUIRE(rows.size() == 5);
    CHECK(rows[3].val_metric == 0.5);
    CHECK(!rows[3].val_loss);
    CHECK(run.log.str().find("early stop: no improvement for 3 epochs (best epoch 2)") != std::string::npos);
    // resuming an early-stopped run stops at once
    Setup<T> again(true, small_run(d, 10).patience(3));
    again.trainer.resume(d);
    const auto r2 = again.fit();
    CHECK(r2.status == train::FitStatus::early_stopped);
    CHECK(r2.epochs_run == 0);
    CHECK(r2.best_epoch == 1);
  }
  SUBCASE("loss min with min_delta") {
    const std::string d = trainer_dir("early_loss");
    Setup<T> run(false, small_run(d, 10).patience(2).monitor(train::Monitor::loss_min).min_delta(0.05));
    const std::vector<double> loss{1.0, 0.97, 0.9, 0.88, 0.86, 0.1};
    int calls = 0;
    const auto r = run.trainer.fit([&run](int e, int it) { return run.batch(e, it); },
                                   [&](Net<T>&) { return train::ValidationResult{std::nullopt, loss[calls++]}; });
    CHECK(r.status == train::FitStatus::early_stopped);
    CHECK(r.epochs_run == 5);  // 0.97 and 0.88 / 0.86 gain less than 0.05
    CHECK(r.best_epoch == 2);
    CHECK(r.best_value == 0.9);
    CHECK(io::read_checkpoint(d + "/best.h5").extra.at("best_epoch") == 2);
    CHECK(run.net.state_dict().at("head.bias").data == io::read_checkpoint(d + "/last.h5").model.at("head.bias").data);
  }
  SUBCASE("patience 0 never stops") {
    Setup<T> run(false, small_run("", 4));
    std::vector<int> seen;
    std::vector<bool> improved;
    run.trainer.on_epoch_end([&](const train::EpochRecord& rec, bool better) {
      seen.push_back(rec.epoch);
      improved.push_back(better);
    });
    const auto r = run.trainer.fit([&run](int e, int it) { return run.batch(e, it); },
                                   [](Net<T>&) { return train::ValidationResult{0.5, 0.5}; });
    CHECK(r.status == train::FitStatus::completed);
    CHECK(r.epochs_run == 4);
    CHECK(seen == std::vector<int>{0, 1, 2, 3});
    CHECK(improved == std::vector<bool>{true, false, false, false});
    CHECK(r.best_epoch == 0);
    CHECK(run.trainer.epochs_without_improvement() == 3);
  }
}

TEST_CASE("ReduceLROnPlateau steps once per epoch on the monitored quantity") {
  using T = double;
  Generator init(3);
  Net<T> net(models::TinyNetOptions(2).width(3), init);
  optim::SGD<T, Backend> opt(net.parameters(), optim::SGDOptions(0.01));
  optim::ReduceLROnPlateau plateau(
      opt, optim::ReduceLROnPlateauOptions().mode(optim::PlateauMode::max).patience(0).factor(0.5));
  losses::BCEWithLogits<T, Backend> bce;
  std::ostringstream sink;
  train::Trainer<Net<T>> trainer(
      net, opt, train::loss_step(bce),
      train::TrainerOptions().epochs(4).iterations_per_epoch(2).progress(train::ProgressMode::off));
  trainer.scheduler(plateau).progress_stream(sink);
  const std::vector<double> metric{0.3, 0.2, 0.4, 0.1};
  int calls = 0;
  const auto r = trainer.fit([](int, int) { return Setup<T>::fixed_val_batch(); },
                             [&](Net<T>&) { return train::ValidationResult{metric[calls++], std::nullopt}; });
  REQUIRE(r.history.size() == 4);
  CHECK(r.history[0].lr == 0.01);
  CHECK(r.history[1].lr == 0.01);   // epoch 0 improved
  CHECK(r.history[2].lr == 0.005);  // epoch 1 did not: halved
  CHECK(r.history[3].lr == 0.005);
  CHECK(opt.lr() == 0.0025);
  CHECK(plateau.last_epoch() == 4);
}

TEST_CASE("log.csv and curves.svg") {
  std::vector<train::EpochRecord> recs(3);
  for (int i = 0; i < 3; ++i) {
    recs[i].epoch = i;
    recs[i].iteration = 250 * (i + 1);
    recs[i].train_loss = 1.0 / (i + 1.5);
    recs[i].lr = 0.01 * std::pow(0.9, i);
    recs[i].seconds = 12.5 * (i + 1);
    if (i != 1) recs[i].val_loss = 0.3 + 0.1 * i;
    recs[i].val_metric = 0.1 * i + 1.0 / 3.0;
  }
  const std::string text = train::format_csv(recs, "dice");
  CHECK(text.compare(0, 54, "epoch,iteration,train_loss,val_loss,val_dice,lr,second") == 0);
  CHECK(text.find("\n2,500,") != std::string::npos);
  const std::string d = trainer_dir("csv");
  train::write_csv(d + "/log.csv", recs, "dice");
  const auto back = train::read_csv(d + "/log.csv");
  CHECK(same_records(back, recs));  // 17 digits: exact
  CHECK(back[2].seconds == 37.5);
  CHECK(!back[1].val_loss);
  {
    std::ofstream(d + "/bad.csv") << "epoch,iteration,train_loss,val_loss,val_dice,lr,seconds\n1,2,x,,,0.1,3\n";
    check_throws_naming<io_error>([&] { train::read_csv(d + "/bad.csv"); }, {"bad.csv:2", "train_loss"});
    std::ofstream(d + "/other.csv") << "a,b\n";
    CHECK_THROWS_AS(train::read_csv(d + "/other.csv"), io_error);
    CHECK_THROWS_AS(train::read_csv(d + "/missing.csv"), io_error);
  }
  const std::string svg = train::format_svg(recs, "dice<1>", 2);
  CHECK(svg.find("<svg") != std::string::npos);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(svg.find("<polyline") != std::string::npos);
  CHECK(svg.find(">epoch</text>") != std::string::npos);
  CHECK(svg.find("Validation dice&lt;1&gt;") != std::string::npos);  // escaped
  CHECK(svg.find("train loss") != std::string::npos);
  CHECK(svg.find("val loss") != std::string::npos);
  CHECK(svg.find("stroke=\"#d62728\"") != std::string::npos);  // the best epoch's circle
  CHECK(svg.find("dice<1>") == std::string::npos);
  const std::string empty = train::format_svg({}, "dice");
  CHECK(empty.find("no data") != std::string::npos);
  CHECK(empty.find("nan") == std::string::npos);
  const auto ticks = train::history_detail::nice_ticks(0.03, 0.97);
  REQUIRE(ticks.size() >= 4);
  CHECK(ticks.front() >= 0.03);
  CHECK(ticks.back() <= 0.97);
  CHECK(train::history_detail::nice_ticks(1, 1).empty());
  CHECK(train::history_detail::nice_ticks(1, 2, 6, 1.0) == std::vector<double>{1, 2});  // whole epochs
  CHECK(train::history_detail::nice_ticks(1, 300, 6, 1.0) == std::vector<double>{50, 100, 150, 200, 250, 300});
  const auto unit = train::history_detail::nice_ticks(0, 1, 5);
  REQUIRE(unit.size() == 6);
  CHECK(train::history_detail::tick_label(unit[3]) == "0.6");
  CHECK(unit[5] == 1);
  // a training run writes both, plus last.h5 and best.h5
  const std::string run_dir = trainer_dir("files");
  Setup<double> run(false, small_run(run_dir, 2));
  run.fit();
  for (const char* f : {"last.h5", "best.h5", "log.csv", "curves.svg"})
    CHECK_MESSAGE(fs::exists(run_dir + "/" + f), f);
  for (const auto& entry : fs::directory_iterator(run_dir))
    CHECK_MESSAGE(entry.path().filename().string().find(".tmp") == std::string::npos, "left behind: " << entry.path());
  CHECK(slurp(run_dir + "/curves.svg").find("<polyline") != std::string::npos);
  // the plain-line progress: one line per epoch, one per N iterations
  const std::string out = run.log.str();
  CHECK(out.find("epoch 1/2 it 3/3  loss ") != std::string::npos);
  CHECK(out.find("epoch 2/2  train loss ") != std::string::npos);
  CHECK(out.find("val dice ") != std::string::npos);
}

TEST_CASE("bad options, inputs and checkpoints that do not fit") {
  using T = double;
  check_throws_naming<value_error>([] { train::TrainerOptions().iterations_per_epoch(0).validate(); },
                                   {"mmnet::train::TrainerOptions", "iterations_per_epoch", ">= 1", "0"});
  CHECK_THROWS_AS(train::TrainerOptions().epochs(-1).validate(), value_error);
  CHECK_THROWS_AS(train::TrainerOptions().patience(-2).validate(), value_error);
  CHECK_THROWS_AS(train::TrainerOptions().clip_grad_norm(-1).validate(), value_error);
  CHECK_THROWS_AS(train::TrainerOptions().min_delta(NAN).validate(), value_error);
  CHECK_THROWS_AS(train::TrainerOptions().metric_name("a,b").validate(), value_error);
  CHECK_THROWS_AS(train::TrainerOptions().progress_every(0).validate(), value_error);

  Setup<T> run(false, small_run("", 2));
  CHECK_THROWS_AS(run.trainer.fit({}), value_error);
  CHECK_THROWS_AS(run.trainer.track_generator("data", run.data), value_error);  // twice
  CHECK_THROWS_AS(run.trainer.track_generator("a/b", run.data), value_error);
  optim::SGD<T, Backend> other(run.net.parameters(), optim::SGDOptions(0.1));
  optim::StepLR foreign(other, optim::StepLROptions(2));
  check_throws_naming<value_error>([&] { run.trainer.scheduler(foreign); }, {"Trainer::scheduler", "optimizer"});
  CHECK_THROWS_AS(train::Trainer<Net<T>>(run.net, run.opt, nullptr), value_error);

  SUBCASE("a non-finite training loss") {
    train::Trainer<Net<T>> t(run.net, run.opt,
                             [](const TestTensor<T>& l, const TestTensor<T>&) {
                               return train::LossStep<T, Backend>{NAN, l};
                             },
                             small_run("", 1).progress(train::ProgressMode::off));
    check_throws_naming<value_error>([&] { t.fit([&run](int e, int it) { return run.batch(e, it); }); },
                                     {"Trainer::fit", "training loss", "epoch 0, iteration 0"});
  }
  SUBCASE("validation without the monitored quantity") {
    check_throws_naming<value_error>(
        [&] {
          run.trainer.fit([&run](int e, int it) { return run.batch(e, it); },
                          [](Net<T>&) { return train::ValidationResult{std::nullopt, 0.5}; });
        },
        {"validation metric", "a finite value", "none"});
  }
  SUBCASE("resume") {
    check_throws_naming<io_error>([&] { run.trainer.resume(trainer_dir("nothing")); }, {"resume", "last.h5"});
    const std::string d = trainer_dir("mismatch");
    {
      Setup<T> first(false, small_run(d, 2));
      first.fit([](int e, int it) {
        if (e == 1 && it == 0) std::raise(SIGINT);
      });
    }
    const auto before = run.net.state_dict();
    const auto opt_before = run.opt.state_dict();
    const auto data_before = run.data.state();
    // iterations per epoch changed in the middle of an epoch
    Setup<T> longer(true, small_run(d, 2).iterations_per_epoch(4));
    check_throws_naming<state_dict_error>([&] { longer.trainer.resume(d); }, {"cannot resume", "middle of an epoch"});
    // another monitored quantity
    Setup<T> loss_mon(true, small_run(d, 2).monitor(train::Monitor::loss_min));
    CHECK_THROWS_AS(loss_mon.trainer.resume(d), state_dict_error);
    // an untracked generator in the checkpoint / a tracked one missing from it
    Generator model_rng(4);
    Net<T> net2(models::TinyNetOptions(2).width(3), model_rng);
    optim::Adam<T, Backend> opt2(net2.parameters(), optim::AdamOptions());
    optim::CosineAnnealingLR sched2(opt2, optim::CosineAnnealingLROptions(5));
    train::Trainer<Net<T>> untracked(net2, opt2, train::loss_step(run.bce), small_run(d, 2));
    untracked.scheduler(sched2, train::SchedulerStep::per_iteration);
    check_throws_naming<state_dict_error>([&] { untracked.resume(d); }, {"generator 'data'", "does not track"});
    untracked.track_generator("data", model_rng).track_generator("dropout", run.init);
    check_throws_naming<state_dict_error>([&] { untracked.resume(d); }, {"tracked generator 'dropout'"});
    // no scheduler attached
    train::Trainer<Net<T>> no_sched(net2, opt2, train::loss_step(run.bce), small_run(d, 2));
    no_sched.track_generator("data", model_rng);
    CHECK_THROWS_AS(no_sched.resume(d), state_dict_error);
    // a model of another width: the whole resume fails and nothing changes
    Generator g5(5);
    Net<T> wide(models::TinyNetOptions(2).width(4), g5);
    optim::Adam<T, Backend> opt_wide(wide.parameters(), optim::AdamOptions());
    optim::CosineAnnealingLR sched_wide(opt_wide, optim::CosineAnnealingLROptions(5));
    train::Trainer<Net<T>> wrong(wide, opt_wide, train::loss_step(run.bce), small_run(d, 2));
    wrong.scheduler(sched_wide, train::SchedulerStep::per_iteration).track_generator("data", model_rng);
    const auto wide_before = wide.state_dict();
    const auto rng_before = model_rng.state();
    CHECK_THROWS_AS(wrong.resume(d), state_dict_error);
    trainer_identical(wide.state_dict(), wide_before, "model after a failed resume");
    CHECK(model_rng.state() == rng_before);
    CHECK(wrong.epoch() == 0);
    // none of the failed resumes touched the first setup
    trainer_identical(run.net.state_dict(), before, "untouched model");
    trainer_identical(run.opt.state_dict(), opt_before, "untouched optimizer");
    CHECK(run.data.state() == data_before);
  }
}
