// Resumable checkpoints (io/checkpoint.hpp): the tiny network trained 6 steps straight equals 3 steps, a
// checkpoint, fresh objects (other init, other hyperparameters) loaded from it, and 3 more steps -- parameters,
// BN statistics, optimizer and scheduler state BIT-identical -- for SGD + PolyLR, Adam (AMSGrad) +
// CosineAnnealingLR and AdamW + ReduceLROnPlateau, with gradient clipping. Also: the file layout, extras,
// all-or-nothing loading, bad files, and an atomic save.
#include <mmnet/io/checkpoint.hpp>
#include <mmnet/losses/bce_with_logits.hpp>
#include <mmnet/models/tiny_net.hpp>
#include <mmnet/optim/adam.hpp>
#include <mmnet/optim/adamw.hpp>
#include <mmnet/optim/clip_grad.hpp>
#include <mmnet/optim/lr_scheduler.hpp>
#include <mmnet/optim/sgd.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

std::string ckpt_path(const std::string& stem) {
  return "/tmp/mmnet_checkpoint_test_" + std::to_string(::getpid()) + "_" + Backend::name + "_" + stem + ".h5";
}

bool ckpt_file_exists(const std::string& p) { return std::ifstream(p).good(); }

template <class T>
struct Run {
  Generator gen;
  models::TinyNet<T, Backend> net;
  std::unique_ptr<optim::OptimizerBase> opt;
  std::unique_ptr<optim::SchedulerBase> sched;
  losses::BCEWithLogits<T, Backend> bce;
  explicit Run(std::uint64_t seed) : gen(seed), net(models::TinyNetOptions(2).width(3), gen) {}
};

// One training step; the plateau scheduler sees the loss, the others step per iteration.
template <class T>
void ckpt_train_step(Run<T>& r, const TestTensor<T>& x, const TestTensor<T>& y) {
  r.opt->zero_grad();
  const auto logits = r.net.forward(x);
  const T loss = r.bce.forward(logits, y);
  r.net.backward(r.bce.backward());
  optim::clip_grad_norm_(r.net, 0.05);  // small enough to clip
  r.opt->step();
  if (auto* plateau = dynamic_cast<optim::ReduceLROnPlateau*>(r.sched.get())) plateau->step(static_cast<double>(loss));
  else static_cast<optim::LRScheduler*>(r.sched.get())->step();
}

void ckpt_identical(const StateDict& a, const StateDict& b, const std::string& what) {
  CHECK_MESSAGE(a.keys() == b.keys(), what);
  for (const auto& entry : a) {
    const HostArray* o = b.find(entry.first);
    REQUIRE_MESSAGE(o != nullptr, what << ": " << entry.first);
    CHECK_MESSAGE(entry.second.dtype == o->dtype, what << " " << entry.first);
    CHECK_MESSAGE(entry.second.shape == o->shape, what << " " << entry.first);
    CHECK_MESSAGE(entry.second.data == o->data, what << " " << entry.first << " is not bit-identical");
  }
}

template <class T>
using Setup = std::function<void(Run<T>&, bool other)>;

template <class T>
std::vector<std::pair<std::string, Setup<T>>> ckpt_setups() {
  using P = std::vector<Parameter<T, Backend>*>;
  return {
      {"sgd_poly",
       [](Run<T>& r, bool other) {
         r.opt = std::make_unique<optim::SGD<T, Backend>>(
             r.net.parameters(), other ? optim::SGDOptions(1.0) : optim::SGDOptions(0.05).momentum(0.99).nesterov(true).weight_decay(3e-5));
         r.sched = std::make_unique<optim::PolyLR>(*r.opt, optim::PolyLROptions(other ? 3 : 8).power(0.9));
       }},
      {"adam_cosine",
       [](Run<T>& r, bool other) {
         r.opt = std::make_unique<optim::Adam<T, Backend>>(
             P(r.net.parameters()), other ? optim::AdamOptions(0.5) : optim::AdamOptions(3e-3).amsgrad(true).weight_decay(3e-5));
         r.sched = std::make_unique<optim::CosineAnnealingLR>(*r.opt, optim::CosineAnnealingLROptions(4).eta_min(1e-4));
       }},
      {"adamw_plateau",
       [](Run<T>& r, bool other) {
         r.opt = std::make_unique<optim::AdamW<T, Backend>>(r.net.parameters(),
                                                            optim::AdamWOptions(other ? 0.1 : 5e-3).weight_decay(0.05));
         r.sched = std::make_unique<optim::ReduceLROnPlateau>(
             *r.opt, optim::ReduceLROnPlateauOptions().patience(0).factor(0.5).threshold(other ? 0.5 : 1e-2));
       }},
  };
}

}  // namespace

TEST_CASE_TEMPLATE("a run resumed from a checkpoint is bit-identical to an uninterrupted one", T, float, double) {
  const auto x = randn<T>({2, 2, 3, 5, 4}, 21);
  auto y = randn<T>({2, 1, 3, 5, 4}, 22);
  {
    auto v = y.to_vector();
    for (auto& e : v) e = e > T(0.3) ? T(1) : T(0);
    y.assign(v);
  }
  for (const auto& named_setup : ckpt_setups<T>()) {
    const std::string name = named_setup.first;  // no structured bindings: doctest's macros capture in lambdas
    const auto& setup = named_setup.second;
    INFO(name);
    Run<T> straight(1);
    setup(straight, false);
    for (int t = 0; t < 6; ++t) ckpt_train_step(straight, x, y);

    Run<T> first(1);
    setup(first, false);
    for (int t = 0; t < 3; ++t) ckpt_train_step(first, x, y);
    const std::string path = ckpt_path(name);
    io::save_checkpoint(path, first.net, first.opt.get(), first.sched.get(), {{"epoch", 3}, {"best_dice", 0.625}},
                        "tiny_net");

    Run<T> resumed(99);  // another init and other hyperparameters: the checkpoint restores everything
    setup(resumed, true);
    const auto extra = io::load_checkpoint(path, resumed.net, resumed.opt.get(), resumed.sched.get());
    CHECK(extra.at("epoch") == 3);
    CHECK(extra.at("best_dice") == 0.625);
    ckpt_identical(resumed.net.state_dict(), first.net.state_dict(), name + " model after loading");
    ckpt_identical(resumed.opt->state_dict(), first.opt->state_dict(), name + " optimizer after loading");
    ckpt_identical(resumed.sched->state_dict(), first.sched->state_dict(), name + " scheduler after loading");
    for (int t = 3; t < 6; ++t) ckpt_train_step(resumed, x, y);

    ckpt_identical(resumed.net.state_dict(), straight.net.state_dict(), name + " model after 6 steps");
    ckpt_identical(resumed.opt->state_dict(), straight.opt->state_dict(), name + " optimizer after 6 steps");
    ckpt_identical(resumed.sched->state_dict(), straight.sched->state_dict(), name + " scheduler after 6 steps");
    CHECK(resumed.opt->lr() == straight.opt->lr());
    CHECK(resumed.opt->step_count() == 6);
    std::remove(path.c_str());
  }
}

TEST_CASE("a checkpoint file holds model, optimizer, scheduler and extra groups") {
  Run<float> r(2);
  r.opt = std::make_unique<optim::Adam<float, Backend>>(r.net.parameters(), optim::AdamOptions(1e-3));
  r.sched = std::make_unique<optim::StepLR>(*r.opt, optim::StepLROptions(2));
  const auto x = randn<float>({1, 2, 3, 4, 5}, 3);
  const auto y = TestTensor<float>::full({1, 1, 3, 4, 5}, 1.f);
  ckpt_train_step(r, x, y);
  const std::string path = ckpt_path("layout");
  io::save_checkpoint(path, r.net, r.opt.get(), r.sched.get(), {{"epoch", 1}}, "tiny");
  const auto names = io::list_datasets(path);
  auto has = [&names](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  CHECK(has("model/conv1.weight"));
  CHECK(has("model/bn1.num_batches_tracked"));
  CHECK(has("optimizer/param_groups.0.lr"));
  CHECK(has("optimizer/state.0.exp_avg"));
  CHECK(has("scheduler/last_epoch"));
  CHECK(has("extra/epoch"));
  CHECK(names.front() == "model/conv1.weight");  // creation order: the model first, in state-dict order
  const io::Checkpoint c = io::read_checkpoint(path);
  CHECK(c.model_name == "tiny");
  CHECK(c.model.keys() == r.net.state_dict().keys());
  CHECK(c.model.at("conv1.weight").dtype == DType::f32);
  CHECK(c.optimizer.at("state.0.step").dtype == DType::i64);
  CHECK(c.extra.at("epoch") == 1);
  // the weights alone load into a model of the other precision
  models::TinyNet<double, Backend> d(models::TinyNetOptions(2).width(3));
  d.load_state_dict(c.model);
  CHECK(d.conv1.weight.value.to_vector()[0] == static_cast<double>(r.net.conv1.weight.value.to_vector()[0]));
  // model only
  const std::string path2 = ckpt_path("model_only");
  io::save_checkpoint(path2, r.net);
  const io::Checkpoint m = io::read_checkpoint(path2);
  CHECK(m.optimizer.empty());
  CHECK(m.scheduler.empty());
  CHECK(m.extra.empty());
  Run<float> q(5);
  q.opt = std::make_unique<optim::Adam<float, Backend>>(q.net.parameters(), optim::AdamOptions(1e-3));
  CHECK_THROWS_WITH_AS(io::load_checkpoint(path2, q.net, q.opt.get()), doctest::Contains("no optimizer state"),
                       state_dict_error);
  CHECK(io::load_checkpoint(path2, q.net).empty());
  CHECK(q.net.conv1.weight.value.to_vector() == r.net.conv1.weight.value.to_vector());
  std::remove(path.c_str());
  std::remove(path2.c_str());
}

TEST_CASE("load_checkpoint is all or nothing, and bad files are reported") {
  Run<double> r(3);
  r.opt = std::make_unique<optim::SGD<double, Backend>>(r.net.parameters(), optim::SGDOptions(0.1).momentum(0.9));
  r.sched = std::make_unique<optim::ExponentialLR>(*r.opt, optim::ExponentialLROptions(0.5));
  const auto x = randn<double>({1, 2, 3, 4, 5}, 3);
  const auto y = TestTensor<double>::full({1, 1, 3, 4, 5}, 0.0);
  ckpt_train_step(r, x, y);
  const std::string path = ckpt_path("all_or_nothing");
  io::save_checkpoint(path, r.net, r.opt.get(), r.sched.get());

  // a model of another width: the model part fails, so the optimizer and scheduler must not change either
  Run<double> other(4);
  other.opt = std::make_unique<optim::SGD<double, Backend>>(other.net.parameters(), optim::SGDOptions(0.3));
  other.sched = std::make_unique<optim::ExponentialLR>(*other.opt, optim::ExponentialLROptions(0.9));
  models::TinyNet<double, Backend> wide(models::TinyNetOptions(2).width(4));
  const StateDict opt_before = other.opt->state_dict(), sched_before = other.sched->state_dict();
  const StateDict wide_before = wide.state_dict();
  CHECK_THROWS_AS(io::load_checkpoint(path, wide, other.opt.get(), other.sched.get()), state_dict_error);
  ckpt_identical(wide.state_dict(), wide_before, "model after a failed load");
  // a scheduler of another kind: nothing changes, the model included
  optim::StepLR step(*other.opt, optim::StepLROptions(3));
  const StateDict net_before = other.net.state_dict();
  CHECK_THROWS_WITH_AS(io::load_checkpoint(path, other.net, other.opt.get(), &step), doctest::Contains("StepLR"),
                       state_dict_error);
  ckpt_identical(other.net.state_dict(), net_before, "model after a failed scheduler check");
  ckpt_identical(other.opt->state_dict(), opt_before, "optimizer after a failed load");
  ckpt_identical(other.sched->state_dict(), sched_before, "scheduler after a failed load");
  // an optimizer over other parameters
  std::vector<Parameter<double, Backend>> ps(1);
  ps[0].reset({3});
  optim::SGD<double, Backend> small({&ps[0]}, optim::SGDOptions(0.1));
  CHECK_THROWS_WITH_AS(io::load_checkpoint(path, other.net, &small), doctest::Contains("this optimizer has 1"),
                       state_dict_error);
  ckpt_identical(other.net.state_dict(), net_before, "model after a failed optimizer check");

  // bad files
  CHECK_THROWS_AS(io::load_checkpoint(ckpt_path("missing"), other.net), io_error);
  const std::string weights = ckpt_path("weights_only");
  io::save_state_dict(weights, r.net.state_dict());
  CHECK_THROWS_WITH_AS(io::read_checkpoint(weights), doctest::Contains("not an mmnet checkpoint"), io_error);
  const std::string text = ckpt_path("text");
  std::ofstream(text) << "not hdf5";
  CHECK_THROWS_AS(io::read_checkpoint(text), io_error);
  // an unwritable destination: io_error, no file and no temporary left behind
  const std::string nowhere = "/nonexistent_mmnet_dir/ckpt.h5";
  CHECK_THROWS_WITH_AS(io::save_checkpoint(nowhere, r.net, r.opt.get()), doctest::Contains(nowhere.c_str()), io_error);
  CHECK_FALSE(ckpt_file_exists(nowhere));
  // a name HDF5 cannot hold
  io::Checkpoint c;
  c.model.insert("a/b", HostArray{DType::f64, {1}, {1.0}});
  const std::string slash = ckpt_path("slash");
  CHECK_THROWS_WITH_AS(io::write_checkpoint(slash, c), doctest::Contains("no '/'"), io_error);
  CHECK_FALSE(ckpt_file_exists(slash));
  // overwriting keeps the destination valid
  io::save_checkpoint(path, r.net, r.opt.get(), r.sched.get(), {{"epoch", 7}});
  CHECK(io::read_checkpoint(path).extra.at("epoch") == 7);
  std::remove(path.c_str());
  std::remove(weights.c_str());
  std::remove(text.c_str());
}
