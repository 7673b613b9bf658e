// mmnet/train/progress.hpp: the training progress display (what tqdm / nnU-Net's epoch prints are to a PyTorch
// loop). On a terminal one line is redrawn in place; elsewhere (a log file, a pipe, CI) plain lines are printed:
//
//   terminal:  epoch 3/100 [########------------]  45/75  loss 0.4321  lr 1.00e-03  12.3 it/s  ETA 1:02:03
//   lines:     epoch 3/100 it 45/75  loss 0.4321  lr 1.00e-03  12.3 it/s  ETA 1:02:03      (every N iterations)
//   both:      epoch 3/100  train loss 0.4321  val loss 0.5012  val dice 0.8123 *  lr 1.00e-03  9.8 s  (per epoch)
//
// The text comes from pure functions (format_progress, format_epoch_summary, format_duration) so that tests
// can check it from numbers; ProgressDisplay only measures time and decides when and how to print.
// Epochs are shown 1-based ("epoch 1/E" is the first), iterations as the count done in the epoch.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>

#if defined(_WIN32)
#include <io.h>
#else
#include <unistd.h>
#endif

namespace mmnet::train {

// Where progress goes: automatic = a redrawn bar when the stream is a terminal (std::cerr / std::cout on a
// tty), plain lines otherwise; bar / lines force one; off prints nothing.
enum class ProgressMode { automatic, bar, lines, off };

// The numbers of one progress line.
struct ProgressState {
  int epoch = 0;        // 0-based epoch index (shown 1-based)
  int epochs = 0;       // total epochs
  int iteration = 0;    // iterations done in this epoch
  int iterations = 0;   // iterations per epoch
  double loss = 0;      // running mean of the epoch's training loss
  double lr = 0;
  double it_per_s = 0;  // 0 (or not finite): unknown yet
  double eta_s = -1;    // seconds left; < 0 (or not finite): unknown
};

// The numbers of one epoch's summary line.
struct EpochSummary {
  int epoch = 0, epochs = 0;  // 0-based index, total
  double train_loss = 0;
  std::optional<double> val_loss, val_metric;
  std::string metric_name = "dice";
  bool best = false;     // the monitored quantity improved (marked " *")
  double lr = 0;
  double seconds = 0;    // the epoch's wall time
};

namespace progress_detail {
inline std::string printf_string(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}
}  // namespace progress_detail

// Seconds as "m:ss", "h:mm:ss" or "d-hh:mm:ss"; "--:--" when unknown (negative or not finite).
inline std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds) || seconds > 1e9) return "--:--";
  long long s = static_cast<long long>(std::llround(seconds));
  const long long d = s / 86400, h = (s / 3600) % 24, m = (s / 60) % 60;
  s %= 60;
  char buf[48];
  if (d > 0) std::snprintf(buf, sizeof buf, "%lld-%02lld:%02lld:%02lld", d, h, m, s);
  else if (h > 0) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", h, m, s);
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", m, s);
  return buf;
}

// A loss or metric value: 4 decimals, or scientific notation when that would hide it.
inline std::string format_value(double v) {
  if (!std::isfinite(v)) return v != v ? "nan" : (v > 0 ? "inf" : "-inf");
  const double a = std::abs(v);
  return progress_detail::printf_string(a != 0 && (a < 1e-3 || a >= 1e5) ? "%.3e" : "%.4f", v);
}

// A learning rate: "1.00e-03".
inline std::string format_lr(double lr) { return progress_detail::printf_string("%.2e", lr); }

// Iterations per second: "12.3 it/s", or "1.52 s/it" when slower than one per second, "? it/s" when unknown.
inline std::string format_rate(double it_per_s) {
  if (!(it_per_s > 0) || !std::isfinite(it_per_s)) return "? it/s";
  if (it_per_s < 1) return progress_detail::printf_string("%.2f s/it", 1.0 / it_per_s);
  return progress_detail::printf_string(it_per_s < 100 ? "%.1f it/s" : "%.0f it/s", it_per_s);
}

// The progress line. bar_width > 0: the terminal form with a [###---] bar of that many cells;
// bar_width == 0: the plain-line form ("it i/n" instead of the bar).
inline std::string format_progress(const ProgressState& s, int bar_width = 20) {
  std::string line = "epoch " + std::to_string(s.epoch + 1) + "/" + std::to_string(s.epochs) + " ";
  const std::string total = std::to_string(s.iterations);
  std::string done = std::to_string(s.iteration);
  if (bar_width > 0) {
    const double frac = s.iterations > 0 ? std::min(1.0, std::max(0.0, double(s.iteration) / s.iterations)) : 0.0;
    const int fill = static_cast<int>(frac * bar_width);  // a cell fills once it is complete
    line += "[" + std::string(static_cast<std::size_t>(fill), '#') +
            std::string(static_cast<std::size_t>(bar_width - fill), '-') + "] ";
    if (done.size() < total.size()) done.insert(0, total.size() - done.size(), ' ');  // steady width
    line += done + "/" + total;
  } else {
    line += "it " + done + "/" + total;
  }
  line += "  loss " + format_value(s.loss) + "  lr " + format_lr(s.lr) + "  " + format_rate(s.it_per_s) +
          "  ETA " + format_duration(s.eta_s);
  return line;
}

// The per-epoch line.
inline std::string format_epoch_summary(const EpochSummary& e) {
  std::string line = "epoch " + std::to_string(e.epoch + 1) + "/" + std::to_string(e.epochs) + "  train loss " +
                     format_value(e.train_loss);
  if (e.val_loss) line += "  val loss " + format_value(*e.val_loss);
  if (e.val_metric) line += "  val " + e.metric_name + " " + format_value(*e.val_metric);
  if (e.best) line += " *";
  line += "  lr " + format_lr(e.lr) + "  " + progress_detail::printf_string("%.1f s", e.seconds);
  return line;
}

// Whether os writes to a terminal (only std::cout, std::cerr and std::clog can be told apart from files).
inline bool is_terminal(const std::ostream& os) {
#if defined(_WIN32)
  if (&os == &std::cout) return _isatty(1) != 0;
  if (&os == &std::cerr || &os == &std::clog) return _isatty(2) != 0;
#else
  if (&os == &std::cout) return ::isatty(1) != 0;
  if (&os == &std::cerr || &os == &std::clog) return ::isatty(2) != 0;
#endif
  return false;
}

// Prints progress to a stream: update() after every iteration, epoch_end() after every epoch, finish() at the
// end (ends a pending bar line). The bar is redrawn at most every min_interval_s seconds (and always on an
// epoch's last iteration); plain lines come every `every` iterations and on an epoch's last one.
class ProgressDisplay {
 public:
  using clock = std::chrono::steady_clock;

  explicit ProgressDisplay(std::ostream& os = std::cerr, ProgressMode mode = ProgressMode::automatic, int every = 50,
                           double min_interval_s = 0.1)
      : os_(os), every_(every > 0 ? every : 1), min_interval_s_(min_interval_s) {
    bar_ = mode == ProgressMode::bar || (mode == ProgressMode::automatic && is_terminal(os));
    off_ = mode == ProgressMode::off;
  }
  ProgressDisplay(const ProgressDisplay&) = delete;
  ProgressDisplay& operator=(const ProgressDisplay&) = delete;
  ~ProgressDisplay() {
    if (pending_) os_ << '\n' << std::flush;  // never leave the cursor at the end of a bar
  }

  bool uses_bar() const { return bar_ && !off_; }
  bool enabled() const { return !off_; }

  // Starts the clock (it/s counts iterations from here) with `remaining` iterations still to run in total.
  void start(long long remaining) {
    start_ = last_draw_ = clock::now();
    done_ = 0;
    remaining_ = remaining;
  }

  // One more iteration finished; s.it_per_s and s.eta_s are filled in from the clock.
  void update(ProgressState s) {
    ++done_;
    --remaining_;
    if (off_) return;
    const auto now = clock::now();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    s.it_per_s = elapsed > 0 ? done_ / elapsed : 0;
    s.eta_s = s.it_per_s > 0 ? std::max(0LL, remaining_) / s.it_per_s : -1;
    const bool last = s.iteration >= s.iterations;
    if (bar_) {
      if (!last && std::chrono::duration<double>(now - last_draw_).count() < min_interval_s_) return;
      last_draw_ = now;
      os_ << '\r' << format_progress(s) << "\x1b[K" << std::flush;  // ESC[K clears the rest of the old line
      pending_ = true;
    } else if (last || s.iteration % every_ == 0) {
      os_ << format_progress(s, 0) << '\n' << std::flush;
    }
  }

  void epoch_end(const EpochSummary& e) {
    if (off_) return;
    if (pending_) os_ << "\r\x1b[K";
    pending_ = false;
    os_ << format_epoch_summary(e) << '\n' << std::flush;
  }

  // A free-form message on its own line (e.g. "interrupted: saved last.h5").
  void message(const std::string& text) {
    if (off_) return;
    if (pending_) os_ << '\n';
    pending_ = false;
    os_ << text << '\n' << std::flush;
  }

 private:
  std::ostream& os_;
  int every_;
  double min_interval_s_;
  bool bar_ = false, off_ = false, pending_ = false;
  clock::time_point start_ = clock::now(), last_draw_ = clock::now();
  long long done_ = 0, remaining_ = 0;
};

}  // namespace mmnet::train
