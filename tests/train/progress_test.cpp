// The progress display (train/progress.hpp): the pure formatters from numbers, and ProgressDisplay's output in
// plain-line, bar and off modes written to a string stream.
#include <mmnet/train/progress.hpp>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;

namespace {

train::ProgressState progress_state(int epoch, int it) {
  train::ProgressState s;
  s.epoch = epoch;
  s.epochs = 100;
  s.iteration = it;
  s.iterations = 75;
  s.loss = 0.43214;
  s.lr = 1e-3;
  s.it_per_s = 12.34;
  s.eta_s = 3723;
  return s;
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("progress formatters") {
  CHECK(train::format_duration(0) == "0:00");
  CHECK(train::format_duration(59.4) == "0:59");
  CHECK(train::format_duration(62) == "1:02");
  CHECK(train::format_duration(3723) == "1:02:03");
  CHECK(train::format_duration(2 * 86400 + 3723) == "2-01:02:03");
  CHECK(train::format_duration(-1) == "--:--");
  CHECK(train::format_duration(std::numeric_limits<double>::infinity()) == "--:--");
  CHECK(train::format_duration(std::nan("")) == "--:--");

  CHECK(train::format_value(0.43214) == "0.4321");
  CHECK(train::format_value(0) == "0.0000");
  CHECK(train::format_value(1.5e-5) == "1.500e-05");
  CHECK(train::format_value(std::nan("")) == "nan");
  CHECK(train::format_lr(1e-3) == "1.00e-03");
  CHECK(train::format_rate(12.34) == "12.3 it/s");
  CHECK(train::format_rate(250.4) == "250 it/s");
  CHECK(train::format_rate(0.5) == "2.00 s/it");
  CHECK(train::format_rate(0) == "? it/s");

  CHECK(train::format_progress(progress_state(2, 45), 20) ==
        "epoch 3/100 [############--------] 45/75  loss 0.4321  lr 1.00e-03  12.3 it/s  ETA 1:02:03");
  CHECK(train::format_progress(progress_state(2, 5), 20) ==
        "epoch 3/100 [#-------------------]  5/75  loss 0.4321  lr 1.00e-03  12.3 it/s  ETA 1:02:03");
  CHECK(train::format_progress(progress_state(2, 75), 10) ==
        "epoch 3/100 [##########] 75/75  loss 0.4321  lr 1.00e-03  12.3 it/s  ETA 1:02:03");
  CHECK(train::format_progress(progress_state(0, 0), 4).find("[----]  0/75") != std::string::npos);
  CHECK(train::format_progress(progress_state(2, 45), 0) ==
        "epoch 3/100 it 45/75  loss 0.4321  lr 1.00e-03  12.3 it/s  ETA 1:02:03");
  auto unknown = progress_state(0, 1);
  unknown.it_per_s = 0;
  unknown.eta_s = -1;
  CHECK(train::format_progress(unknown, 0) == "epoch 1/100 it 1/75  loss 0.4321  lr 1.00e-03  ? it/s  ETA --:--");

  train::EpochSummary e;
  e.epoch = 2;
  e.epochs = 100;
  e.train_loss = 0.43214;
  e.val_loss = 0.50123;
  e.val_metric = 0.81234;
  e.best = true;
  e.lr = 1e-3;
  e.seconds = 9.84;
  CHECK(train::format_epoch_summary(e) ==
        "epoch 3/100  train loss 0.4321  val loss 0.5012  val dice 0.8123 *  lr 1.00e-03  9.8 s");
  e.val_loss.reset();
  e.val_metric.reset();
  e.best = false;
  CHECK(train::format_epoch_summary(e) == "epoch 3/100  train loss 0.4321  lr 1.00e-03  9.8 s");
}

TEST_CASE("ProgressDisplay: plain lines, bar and off") {
  const int iterations = 7;
  auto run = [&](train::ProgressMode mode) {
    std::ostringstream os;
    {
      train::ProgressDisplay p(os, mode, /*every=*/3, /*min_interval_s=*/0.0);
      p.start(2 * iterations);
      for (int e = 0; e < 2; ++e) {
        for (int it = 1; it <= iterations; ++it) {
          train::ProgressState s;
          s.epoch = e;
          s.epochs = 2;
          s.iteration = it;
          s.iterations = iterations;
          s.loss = 0.5;
          s.lr = 0.01;
          p.update(s);
        }
        train::EpochSummary es;
        es.epoch = e;
        es.epochs = 2;
        es.train_loss = 0.5;
        p.epoch_end(es);
      }
      p.message("done");
    }
    return os.str();
  };
  std::ostringstream probe;
  CHECK(!train::is_terminal(probe));
  CHECK(!train::ProgressDisplay(probe).uses_bar());  // automatic on a non-terminal: lines
  CHECK(train::ProgressDisplay(probe, train::ProgressMode::bar).uses_bar());

  const std::string lines = run(train::ProgressMode::lines);
  CHECK(lines.find('\r') == std::string::npos);
  CHECK(count(lines, " it 3/7 ") == 2);  // every 3 iterations
  CHECK(count(lines, " it 6/7 ") == 2);
  CHECK(count(lines, " it 7/7 ") == 2);  // and the epoch's last one
  CHECK(count(lines, " it 1/7 ") == 0);
  CHECK(count(lines, "train loss") == 2);
  CHECK(lines.find("epoch 2/2 it 7/7  loss 0.5000  lr 1.00e-02") != std::string::npos);
  CHECK(lines.substr(lines.size() - 5) == "done\n");
  CHECK(count(lines, "\n") == 6 + 2 + 1);

  const std::string bar = run(train::ProgressMode::bar);
  CHECK(count(bar, "\r") == 2 * iterations + 2);  // every update redraws (min interval 0), each epoch end clears
  CHECK(count(bar, "\x1b[K") == 2 * iterations + 2);
  CHECK(bar.find("epoch 1/2 [####################] 7/7") != std::string::npos);
  CHECK(count(bar, "\n") == 3);  // the two epoch summaries and the message
  CHECK(bar.find("\r\x1b[Kepoch 2/2  train loss 0.5000") != std::string::npos);

  CHECK(run(train::ProgressMode::off).empty());

  // a bar left pending is ended by the destructor
  std::ostringstream os;
  {
    train::ProgressDisplay p(os, train::ProgressMode::bar, 1, 0.0);
    p.start(10);
    train::ProgressState s;
    s.epochs = 1;
    s.iterations = 10;
    s.iteration = 1;
    p.update(s);
  }
  CHECK(os.str().back() == '\n');
}
