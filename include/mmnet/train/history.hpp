// mmnet/train/history.hpp: the per-epoch training record and its two files, log.csv (what a CSVLogger /
// nnU-Net's progress log holds) and curves.svg (nnU-Net's progress.png, as hand-written SVG: no dependency).
//
// log.csv, one row per completed epoch, numbers written with 17 significant digits (they read back exactly):
//   epoch,iteration,train_loss,val_loss,val_dice,lr,seconds
//   1,250,0.61234,0.58,0.41,0.01,73.2
// epoch is 1-based; iteration counts all iterations done at the epoch's end; val_loss / val_<metric> are empty
// without validation (the metric column is named after TrainerOptions::metric_name, "dice" by default); lr is
// the learning rate of the epoch's last optimizer step; seconds is the wall time since training began (a
// resumed run continues the count).
//
// curves.svg: two panels, the training and validation loss vs epoch, and the validation metric vs epoch with
// the best epoch circled; axes with ticks, labels and legends. Both files are replaced atomically (written to
// a temporary file, then renamed), so a reader never sees half a file.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"

namespace mmnet::train {

// One completed epoch.
struct EpochRecord {
  int epoch = 0;               // 0-based index
  std::int64_t iteration = 0;  // iterations done in total at the epoch's end
  double train_loss = 0;       // mean over the epoch's iterations
  std::optional<double> val_loss, val_metric;
  double lr = 0;               // lr of the epoch's last optimizer step
  double seconds = 0;          // wall time since training began
};

namespace history_detail {

inline std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

inline std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

// Writes text to path atomically (io/atomic_file.hpp).
inline void write_text_atomic(const std::string& path, const std::string& text) {
  io::write_file_atomically(path, text, [&](const std::string& problem) {
    throw io_error("mmnet::train: " + path + ": " + problem);
  });
}

// Tick positions in [lo, hi]: multiples of a step of 1, 2 or 5 times a power of ten (at least min_step) giving
// about target intervals.
inline std::vector<double> nice_ticks(double lo, double hi, int target = 5, double min_step = 0) {
  std::vector<double> t;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return t;
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / mag;
  const double step = std::max(min_step, (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag);
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k += 1) {
    const double v = k * step;  // a multiple, not a running sum: no drift
    t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  }
  return t;
}

inline std::string tick_label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

struct Series {
  std::string label, color;
  std::vector<std::pair<double, double>> points;  // (epoch 1-based, value), finite values only
};

// One panel: a frame at (x0, y0) of size w x h with ticks, labels, a legend and the series as polylines.
inline void panel(std::ostringstream& svg, double x0, double y0, double w, double h, const std::string& title,
                  const std::string& ylabel, double max_epoch, const std::vector<Series>& series,
                  std::optional<std::pair<double, double>> marker) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (auto& s : series)
    for (auto& p : s.points) lo = std::min(lo, p.second), hi = std::max(hi, p.second);
  if (!(lo <= hi)) lo = 0, hi = 1;               // no data
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {  // a flat line: give it room
    const double pad = std::abs(hi) > 0 ? std::abs(hi) * 0.1 : 0.5;
    lo -= pad, hi += pad;
  } else {
    const double pad = (hi - lo) * 0.05;
    lo -= pad, hi += pad;
  }
  const double xmin = 1, xmax = std::max(2.0, max_epoch);
  auto px = [&](double e) { return x0 + (e - xmin) / (xmax - xmin) * w; };
  auto py = [&](double v) { return y0 + h - (v - lo) / (hi - lo) * h; };
  char buf[256];
  svg << "<g>\n";
  std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"15\">", x0 + w / 2,
                y0 - 12);
  svg << buf << xml_escape(title) << "</text>\n";
  for (double t : nice_ticks(lo, hi)) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">",
                  x0, py(t), x0 + w, py(t), x0 - 6, py(t) + 4);
    svg << buf << tick_label(t) << "</text>\n";
  }
  for (double t : nice_ticks(xmin, xmax, 6, 1.0)) {  // whole epochs
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">",
                  px(t), y0 + h, px(t), y0 + h + 5, px(t), y0 + h + 18);
    svg << buf << tick_label(t) << "</text>\n";
  }
  std::snprintf(
      buf, sizeof buf,
      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#000\"/>\n"
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">epoch</text>\n"
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 %.1f %.1f)\">",
      x0, y0, w, h, x0 + w / 2, y0 + h + 36, x0 - 58, y0 + h / 2, x0 - 58, y0 + h / 2);
  svg << buf << xml_escape(ylabel) << "</text>\n";
  double lx = x0;  // the legend: one row under the axis label, clear of the data
  for (auto& s : series) {
    if (s.points.size() == 1) {
      std::snprintf(buf, sizeof buf, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"/>\n", px(s.points[0].first),
                    py(s.points[0].second), s.color.c_str());
      svg << buf;
    } else if (!s.points.empty()) {
      svg << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.8\" points=\"";
      for (std::size_t i = 0; i < s.points.size(); ++i) {
        std::snprintf(buf, sizeof buf, "%s%.2f,%.2f", i ? " " : "", px(s.points[i].first), py(s.points[i].second));
        svg << buf;
      }
      svg << "\"/>\n";
    }
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">",
                  lx, y0 + h + 58, lx + 20, y0 + h + 58, s.color.c_str(), lx + 26, y0 + h + 62);
    svg << buf << xml_escape(s.label) << "</text>\n";
    lx += 130;
  }
  if (marker && std::isfinite(marker->second)) {
    std::snprintf(buf, sizeof buf,
                  "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"5\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\"/>\n",
                  px(marker->first), py(marker->second));
    svg << buf;
  }
  if (series.empty() || std::all_of(series.begin(), series.end(), [](const Series& s) { return s.points.empty(); })) {
    std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" fill=\"#888\">",
                  x0 + w / 2, y0 + h / 2);
    svg << buf << "no data</text>\n";
  }
  svg << "</g>\n";
}

}  // namespace history_detail

// The log.csv header for a metric name ("dice" gives "val_dice").
inline std::string csv_header(const std::string& metric_name = "dice") {
  return "epoch,iteration,train_loss,val_loss,val_" + metric_name + ",lr,seconds";
}

// log.csv's text for the records (see the file comment).
inline std::string format_csv(const std::vector<EpochRecord>& records, const std::string& metric_name = "dice") {
  using history_detail::number;
  std::string out = csv_header(metric_name) + "\n";
  for (auto& r : records) {
    out += std::to_string(r.epoch + 1) + "," + std::to_string(r.iteration) + "," + number(r.train_loss) + "," +
           (r.val_loss ? number(*r.val_loss) : "") + "," + (r.val_metric ? number(*r.val_metric) : "") + "," +
           number(r.lr) + "," + number(r.seconds) + "\n";
  }
  return out;
}

// Reads log.csv back (Trainer::resume does, to keep the file and the plot whole). Throws io_error naming the
// file and line for anything that format_csv does not write.
inline std::vector<EpochRecord> read_csv(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw io_error("mmnet::train::read_csv: cannot open " + path);
  std::vector<EpochRecord> out;
  std::string line;
  int line_no = 0;
  auto bad = [&](const std::string& why) {
    throw io_error("mmnet::train::read_csv: " + path + ":" + std::to_string(line_no) + ": " + why);
  };
  while (std::getline(f, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1) {
      if (line.compare(0, 26, "epoch,iteration,train_loss") != 0) bad("not a training log (header '" + line + "')");
      continue;
    }
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (std::size_t comma; (comma = line.find(',', start)) != std::string::npos; start = comma + 1)
      fields.push_back(line.substr(start, comma - start));
    fields.push_back(line.substr(start));
    if (fields.size() != 7) bad("expected 7 fields, got " + std::to_string(fields.size()));
    auto num = [&](const std::string& s, const char* what) {
      char* end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size())
        bad(std::string("field ") + what + " is not a number ('" + s + "')");
      return v;
    };
    auto opt = [&](const std::string& s, const char* what) -> std::optional<double> {
      if (s.empty()) return std::nullopt;
      return num(s, what);
    };
    EpochRecord r;
    r.epoch = static_cast<int>(num(fields[0], "epoch")) - 1;
    r.iteration = static_cast<std::int64_t>(num(fields[1], "iteration"));
    r.train_loss = num(fields[2], "train_loss");
    r.val_loss = opt(fields[3], "val_loss");
    r.val_metric = opt(fields[4], "val_metric");
    r.lr = num(fields[5], "lr");
    r.seconds = num(fields[6], "seconds");
    out.push_back(r);
  }
  if (line_no == 0) bad("empty file");
  return out;
}

// curves.svg's text: loss (train, validation) and the validation metric vs epoch; best_epoch (0-based, -1 =
// none) is circled on the metric panel, or on the validation loss when there is no metric.
inline std::string format_svg(const std::vector<EpochRecord>& records, const std::string& metric_name = "dice",
                              int best_epoch = -1) {
  using history_detail::Series;
  Series train{"train loss", "#1f77b4", {}}, val{"val loss", "#ff7f0e", {}},
      metric{"val " + metric_name, "#2ca02c", {}};
  double max_epoch = 1;
  std::optional<std::pair<double, double>> metric_mark, loss_mark;
  for (auto& r : records) {
    const double e = r.epoch + 1;
    max_epoch = std::max(max_epoch, e);
    if (std::isfinite(r.train_loss)) train.points.emplace_back(e, r.train_loss);
    if (r.val_loss && std::isfinite(*r.val_loss)) val.points.emplace_back(e, *r.val_loss);
    if (r.val_metric && std::isfinite(*r.val_metric)) metric.points.emplace_back(e, *r.val_metric);
    if (r.epoch == best_epoch) {
      if (r.val_metric) metric_mark = std::make_pair(e, *r.val_metric);
      if (r.val_loss) loss_mark = std::make_pair(e, *r.val_loss);
    }
  }
  std::vector<Series> losses{train};
  if (!val.points.empty()) losses.push_back(val);
  std::vector<Series> metrics;
  if (!metric.points.empty()) metrics.push_back(metric);
  std::ostringstream svg;
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
         "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1000\" height=\"440\" viewBox=\"0 0 1000 440\" "
         "font-family=\"sans-serif\">\n"
         "<rect width=\"1000\" height=\"440\" fill=\"#fff\"/>\n";
  history_detail::panel(svg, 80, 50, 380, 300, "Loss", "loss", max_epoch, losses,
                        metrics.empty() ? loss_mark : std::nullopt);
  history_detail::panel(svg, 580, 50, 380, 300, "Validation " + metric_name, metric_name, max_epoch, metrics,
                        metric_mark);
  svg << "</svg>\n";
  return svg.str();
}

inline void write_csv(const std::string& path, const std::vector<EpochRecord>& records,
                      const std::string& metric_name = "dice") {
  history_detail::write_text_atomic(path, format_csv(records, metric_name));
}
inline void write_svg(const std::string& path, const std::vector<EpochRecord>& records,
                      const std::string& metric_name = "dice", int best_epoch = -1) {
  history_detail::write_text_atomic(path, format_svg(records, metric_name, best_epoch));
}

}  // namespace mmnet::train
