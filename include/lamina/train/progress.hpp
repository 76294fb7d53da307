#pragma once
// A one-line progress display for long loops: step, loss, accuracy,
// throughput and ETA, redrawn at most every `interval` seconds.
#include <chrono>
#include <cstdio>
#include <string>

#include "lamina/core/tensor.hpp"

namespace lamina::train {

inline std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  const long s = long(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

class Progress {
 public:
  using clock = std::chrono::steady_clock;
  explicit Progress(std::FILE* out = stderr, double interval = 0.5) : out_(out), interval_(interval) {}

  /// Starts a phase of `total` steps; `label` prefixes every line (e.g. "epoch 3/10").
  void start(std::string label, index_t total) {
    label_ = std::move(label);
    total_ = total;
    start_ = last_ = clock::now();
    drawn_ = false;
  }
  /// Reports step `done` (1-based) with running loss/accuracy and images so far.
  void update(index_t done, double loss, double accuracy, index_t images, bool force = false) {
    const auto now = clock::now();
    if (!force && std::chrono::duration<double>(now - last_).count() < interval_ && done < total_) return;
    last_ = now;
    const double el = std::chrono::duration<double>(now - start_).count();
    const double rate = el > 0 ? double(images) / el : 0.0;
    const double eta = done > 0 ? el * double(total_ - done) / double(done) : -1;
    if (out_) {
      std::fprintf(out_, "\r%s step %ld/%ld loss %.4f acc %.2f%% %.0f img/s ETA %s   ", label_.c_str(), long(done),
                   long(total_), loss, 100 * accuracy, rate, format_duration(eta).c_str());
      std::fflush(out_);
    }
    drawn_ = true;
  }
  /// Ends the line.
  void finish() {
    if (out_ && drawn_) std::fputc('\n', out_);
    drawn_ = false;
  }
  double elapsed() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

 private:
  std::FILE* out_;
  double interval_;
  std::string label_;
  index_t total_ = 0;
  clock::time_point start_, last_;
  bool drawn_ = false;
};

}  // namespace lamina::train
