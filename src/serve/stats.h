#pragma once
// The server's counters (GET /stats, the periodic stats line, the stop line) and the small time
// helpers its parts share. Internal to focusvla_serve.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace focusvla::serve::detail {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

inline std::string format_ms(double ms) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", ms);
  return text;
}

// Nearest-rank quantile of unsorted values (q in 0..1); NaN when empty.
inline double quantile(std::vector<double> values, double q) {
  if (values.empty()) return std::nan("");
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

class Stats {
 public:
  void connection_opened() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++connections_;
    ++open_;
  }
  void connection_closed() {
    std::lock_guard<std::mutex> lock(mutex_);
    --open_;
  }
  void connection_refused() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++refused_;
  }
  void request() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_;
  }
  void error() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++errors_;
    ++interval_errors_;
  }
  void batch(size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++batches_;
    batched_ += size;
    max_batch_ = std::max(max_batch_, size);
    ++interval_batches_;
    interval_batched_ += size;
  }
  void reply(double latency_ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++replies_;
    if (interval_latency_ms_.size() < (1u << 20)) interval_latency_ms_.push_back(latency_ms);
  }

  // `cancelled`: the batcher's count of requests answered without running (their client was gone).
  nlohmann::json totals(uint64_t cancelled) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {{"connections", connections_},
            {"open_connections", open_},
            {"refused_connections", refused_},
            {"requests", requests_},
            {"replies", replies_},
            {"errors", errors_},
            {"cancelled", cancelled},
            {"batches", batches_},
            {"max_batch_seen", max_batch_},
            {"mean_batch", batches_ ? static_cast<double>(batched_) / static_cast<double>(batches_) : 0.0}};
  }

  // The line for the interval since the last call, which starts a new interval.
  std::string interval_line(double seconds, int64_t chunk) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto n = static_cast<double>(interval_latency_ms_.size());
    std::string line = "stats: " + std::to_string(open_) + " open connection(s); last " + format_ms(seconds) +
                       " s: " + std::to_string(interval_latency_ms_.size()) + " replies (" + format_ms(n / seconds) +
                       "/s, " + format_ms(n * static_cast<double>(chunk) / seconds) + " actions/s), " +
                       std::to_string(interval_errors_) + " errors, " + std::to_string(interval_batches_) + " batches";
    if (interval_batches_)
      line += " (mean size " + format_ms(static_cast<double>(interval_batched_) / static_cast<double>(interval_batches_)) + ")";
    if (!interval_latency_ms_.empty())
      line += ", latency p50 " + format_ms(quantile(interval_latency_ms_, 0.5)) + " ms p99 " +
              format_ms(quantile(interval_latency_ms_, 0.99)) + " ms";
    line += "; total " + std::to_string(replies_) + " replies, " + std::to_string(errors_) + " errors";
    interval_latency_ms_.clear();
    interval_errors_ = interval_batches_ = interval_batched_ = 0;
    return line;
  }

 private:
  mutable std::mutex mutex_;
  uint64_t connections_ = 0, open_ = 0, refused_ = 0, requests_ = 0, replies_ = 0, errors_ = 0, batches_ = 0,
           batched_ = 0;
  size_t max_batch_ = 0;
  uint64_t interval_errors_ = 0, interval_batches_ = 0, interval_batched_ = 0;
  std::vector<double> interval_latency_ms_;
};

}  // namespace focusvla::serve::detail
