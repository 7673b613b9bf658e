// Resumable checkpoints (io/checkpoint.hpp): the tiny network trained 6 steps straight equals 3 steps, a
// checkpoint, fresh objects (other init, other hyperparameters) loaded from it, and 3 more steps -- parameters,
// BN statistics, optimizer and scheduler state BIT-identical -- for SGD + PolyLR, Adam (AMSGrad) +
// CosineAnnealingLR and AdamW + ReduceLROnPlateau, with gradient clipping. Also: the file layout, extras,
// all-or-nothing loading, bad files, an atomic save, checksums (a changed byte never loads wrong values) and
// files from the earlier writer.
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
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
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

namespace {

bool ckpt_same_bits(const StateDict& a, const StateDict& b) {
  if (a.keys() != b.keys()) return false;
  for (const auto& entry : a) {
    const HostArray& o = b.at(entry.first);
    if (entry.second.dtype != o.dtype || entry.second.shape != o.shape || entry.second.data.size() != o.data.size())
      return false;
    if (!entry.second.data.empty() &&
        std::memcmp(entry.second.data.data(), o.data.data(), o.data.size() * sizeof(double)) != 0)
      return false;
  }
  return true;
}

bool ckpt_same(const io::Checkpoint& a, const io::Checkpoint& b) {
  return ckpt_same_bits(a.model, b.model) && ckpt_same_bits(a.optimizer, b.optimizer) &&
         ckpt_same_bits(a.scheduler, b.scheduler) && a.extra == b.extra && a.model_name == b.model_name;
}

std::string ckpt_read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void ckpt_write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A trained tiny net with Adam and StepLR, saved as a checkpoint at path.
void ckpt_save_trained(const std::string& path, Run<float>& r) {
  r.opt = std::make_unique<optim::Adam<float, Backend>>(r.net.parameters(), optim::AdamOptions(1e-3));
  r.sched = std::make_unique<optim::StepLR>(*r.opt, optim::StepLROptions(2));
  const auto x = randn<float>({1, 2, 3, 4, 5}, 3);
  const auto y = TestTensor<float>::full({1, 1, 3, 4, 5}, 1.f);
  ckpt_train_step(r, x, y);
  io::save_checkpoint(path, r.net, r.opt.get(), r.sched.get(), {{"epoch", 1}, {"best_dice", 0.75}}, "tiny");
}

}  // namespace

TEST_CASE("a checkpoint is an io/hdf5.hpp grouped file: root attributes, checksummed chunks") {
  Run<float> r(6);
  const std::string path = ckpt_path("grouped");
  ckpt_save_trained(path, r);
  const auto attrs = io::read_attributes(path);
  CHECK(attrs.size() == 4);
  CHECK(attrs.at("mmnet_checkpoint_version") == std::to_string(io::checkpoint_format_version));
  CHECK(attrs.at("mmnet_format_version") == std::to_string(io::hdf5_format_version));
  CHECK(attrs.at("mmnet_library_version") == MMNET_VERSION_STRING);
  CHECK(attrs.at("model_name") == "tiny");
  // every part in state-dict order
  std::vector<std::string> expected;
  for (const auto& k : r.net.state_dict().keys()) expected.push_back("model/" + k);
  for (const auto& k : r.opt->state_dict().keys()) expected.push_back("optimizer/" + k);
  for (const auto& k : r.sched->state_dict().keys()) expected.push_back("scheduler/" + k);
  expected.push_back("extra/best_dice");
  expected.push_back("extra/epoch");
  CHECK(io::list_datasets(path) == expected);
  // the weights are stored as in a weight file: chunked, Fletcher-32
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  REQUIRE(f >= 0);
  hid_t d = H5Dopen2(f, "model/conv1.weight", H5P_DEFAULT);
  REQUIRE(d >= 0);
  hid_t p = H5Dget_create_plist(d);
  CHECK(H5Pget_layout(p) == H5D_CHUNKED);
  unsigned flags = 0;
  size_t n = 0;
  CHECK(H5Pget_filter2(p, 0, &flags, &n, nullptr, 0, nullptr, nullptr) == H5Z_FILTER_FLETCHER32);
  H5Pclose(p);
  H5Dclose(d);
  H5Fclose(f);
  // the same state gives the same bytes
  const std::string path2 = ckpt_path("grouped_again");
  io::save_checkpoint(path2, r.net, r.opt.get(), r.sched.get(), {{"epoch", 1}, {"best_dice", 0.75}}, "tiny");
  CHECK(ckpt_read_bytes(path) == ckpt_read_bytes(path2));
  std::remove(path.c_str());
  std::remove(path2.c_str());
}

// A flipped byte in the weights raises io_error instead of loading a wrong value; and every changed byte of a
// checkpoint is detected or harmless. MMNET_IO_FLIP_STRIDE=n tests every n-th byte (default 1: all of them).
TEST_CASE("a checkpoint is checksummed: a changed byte raises io_error, never wrong values") {
  Run<float> r(7);
  const std::string path = ckpt_path("checksummed");
  ckpt_save_trained(path, r);
  const io::Checkpoint original = io::read_checkpoint(path);
  const std::string bytes = ckpt_read_bytes(path);
  const std::string bad = ckpt_path("checksummed_bad");

  // one bit of a float32 weight in the data: a Fletcher-32 mismatch
  const float w = r.net.conv1.weight.value.to_vector()[1];
  char wb[4];
  std::memcpy(wb, &w, 4);
  const auto at = bytes.find(std::string(wb, 4));
  REQUIRE(at != std::string::npos);
  std::string flipped = bytes;
  flipped[at] = static_cast<char>(flipped[at] ^ 1);
  ckpt_write_bytes(bad, flipped);
  Run<float> target(8);
  const StateDict before = target.net.state_dict();
  CHECK_THROWS_WITH_AS(io::read_checkpoint(bad), doctest::Contains("checksum"), io_error);
  CHECK_THROWS_WITH_AS(io::load_checkpoint(bad, target.net), doctest::Contains(bad.c_str()), io_error);
  ckpt_identical(target.net.state_dict(), before, "model after a failed load");

  std::size_t stride = 1;
  if (const char* s = std::getenv("MMNET_IO_FLIP_STRIDE")) stride = std::max(1, std::atoi(s));
  std::size_t detected = 0, harmless = 0, wrong = 0;
  ckpt_write_bytes(bad, bytes);
  const int fd = ::open(bad.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  for (std::size_t i = 0; i < bytes.size(); i += stride) {
    const auto mask = static_cast<unsigned char>(i % 2 ? 0xFF : 1u << (i / 2 % 8));
    const char changed = static_cast<char>(static_cast<unsigned char>(bytes[i]) ^ mask);
    if (::pwrite(fd, &changed, 1, static_cast<off_t>(i)) != 1) FAIL("cannot write " << bad);
    try {
      if (ckpt_same(io::read_checkpoint(bad), original)) {
        ++harmless;
      } else {
        ++wrong;
        if (wrong <= 5) MESSAGE("byte " << i << " ^ " << int(mask) << " gave a different checkpoint, undetected");
      }
    } catch (const io_error& e) {
      ++detected;
      if (std::string(e.what()).find(bad) == std::string::npos) FAIL_CHECK("message without the file name: " << e.what());
    } catch (const std::exception& e) {
      FAIL_CHECK("byte " << i << ": wrong exception type: " << e.what());
    }
    if (::pwrite(fd, &bytes[i], 1, static_cast<off_t>(i)) != 1) FAIL("cannot write " << bad);
  }
  ::close(fd);
  MESSAGE(path << ": " << bytes.size() << " bytes; changed bytes detected " << detected << ", harmless " << harmless);
  CHECK(wrong == 0);
  CHECK(detected > 0);
  CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0);  // every failed read closed its file
  std::remove(path.c_str());
  std::remove(bad.c_str());
}

TEST_CASE("invalid names in any part are refused before a file is written") {
  const std::string path = ckpt_path("bad_names");
  for (const std::string part : {"model", "optimizer", "scheduler"}) {
    for (const std::string name : {"", ".", "a/b", "/"}) {
      io::Checkpoint c;
      c.model.insert("w", HostArray{DType::f64, {1}, {1.0}});
      StateDict& sd = part == "model" ? c.model : part == "optimizer" ? c.optimizer : c.scheduler;
      sd.insert(name, HostArray{DType::f64, {1}, {1.0}});
      CHECK_THROWS_WITH_AS(io::write_checkpoint(path, c), doctest::Contains(("'" + part + "/" + name + "'").c_str()),
                           io_error);
      CHECK_FALSE(ckpt_file_exists(path));
    }
  }
  io::Checkpoint c;
  c.extra["a/b"] = 1;
  CHECK_THROWS_WITH_AS(io::write_checkpoint(path, c), doctest::Contains("no '/'"), io_error);
  c.extra.clear();
  c.model.insert("w", HostArray{DType::f64, {2, 2}, {1.0}});
  CHECK_THROWS_WITH_AS(io::write_checkpoint(path, c), doctest::Contains("'model/w' holds 1 values for shape (2, 2)"),
                       io_error);
  CHECK_FALSE(ckpt_file_exists(path));
}

// Checkpoints from before checkpoints were written through io/hdf5.hpp (the superseded writer: contiguous
// datasets without checksums, ASCII strings without a terminator) still load.
TEST_CASE("checkpoints from the earlier writer still load") {
  const std::string path = ckpt_path("earlier");
  {
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    REQUIRE(f >= 0);
    auto attr = [f](const char* key, const std::string& value) {
      hid_t t = H5Tcopy(H5T_C_S1);
      H5Tset_size(t, value.empty() ? 1 : value.size());
      H5Tset_strpad(t, H5T_STR_NULLTERM);
      hid_t s = H5Screate(H5S_SCALAR);
      hid_t a = H5Acreate2(f, key, t, s, H5P_DEFAULT, H5P_DEFAULT);
      H5Awrite(a, t, value.empty() ? "" : value.c_str());
      H5Aclose(a);
      H5Sclose(s);
      H5Tclose(t);
    };
    attr("mmnet_format_version", "1");
    attr("mmnet_library_version", MMNET_VERSION_STRING);
    attr("mmnet_checkpoint_version", "1");
    attr("model_name", "old");
    auto dataset = [f](const char* group, const char* name, hid_t type, const std::vector<hsize_t>& dims,
                       hid_t mem, const void* data) {
      hid_t g = H5Lexists(f, group, H5P_DEFAULT) > 0 ? H5Gopen2(f, group, H5P_DEFAULT) : -1;
      if (g < 0) {
        hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
        H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
        g = H5Gcreate2(f, group, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        H5Pclose(gcpl);
      }
      hid_t s = dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr);
      hid_t d = H5Dcreate2(g, name, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
      H5Dclose(d);
      H5Sclose(s);
      H5Gclose(g);
    };
    const double w[3] = {0.5, -1.25, 3};
    const long long step = 4;
    const double epoch = 9;
    dataset("model", "w", H5T_IEEE_F32LE, {3}, H5T_NATIVE_DOUBLE, w);
    dataset("model", "n", H5T_STD_I64LE, {}, H5T_NATIVE_LLONG, &step);
    dataset("extra", "epoch", H5T_IEEE_F64LE, {}, H5T_NATIVE_DOUBLE, &epoch);
    H5Fclose(f);
    H5Pclose(fcpl);
  }
  const io::Checkpoint c = io::read_checkpoint(path);
  CHECK(c.model_name == "old");
  CHECK(c.model.keys() == std::vector<std::string>{"w", "n"});
  CHECK(c.model.at("w").dtype == DType::f32);
  CHECK(c.model.at("w").data == std::vector<double>{0.5, -1.25, 3});
  CHECK(c.model.at("n").dtype == DType::i64);
  CHECK(c.model.at("n").data == std::vector<double>{4});
  CHECK(c.optimizer.empty());
  CHECK(c.extra == std::map<std::string, double>{{"epoch", 9}});
  std::remove(path.c_str());
}

TEST_CASE("checkpoint calls keep HDF5's error printing off and the caller's handler") {
  struct Count {
    static herr_t handler(hid_t, void* data) {
      ++*static_cast<int*>(data);
      return 0;
    }
  };
  int calls = 0;
  H5E_auto2_t old_func = nullptr;
  void* old_data = nullptr;
  H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
  H5Eset_auto2(H5E_DEFAULT, &Count::handler, &calls);
  Run<float> r(9);
  const std::string path = ckpt_path("quiet");
  io::save_checkpoint(path, r.net);
  CHECK(io::read_checkpoint(path).model.size() == r.net.state_dict().size());
  const std::string text = ckpt_path("quiet_text");
  std::ofstream(text) << "not hdf5";
  CHECK_THROWS_AS(io::read_checkpoint(text), io_error);
  CHECK_THROWS_AS(io::save_checkpoint("/nonexistent_mmnet_dir/ckpt.h5", r.net), io_error);
  H5E_auto2_t func = nullptr;
  void* data = nullptr;
  H5Eget_auto2(H5E_DEFAULT, &func, &data);
  H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
  const bool kept = func == &Count::handler;
  CHECK(kept);
  CHECK(data == &calls);
  CHECK(calls == 0);
  std::remove(path.c_str());
  std::remove(text.c_str());
}
