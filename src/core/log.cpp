#include "focusvla/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>

#include <cstdlib>
#include <mutex>

#include "focusvla/core/error.h"

namespace focusvla {
namespace {

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::off: return spdlog::level::off;
  }
  return spdlog::level::warn;
}

std::shared_ptr<spdlog::logger> make_logger() {
  auto existing = spdlog::get("focusvla");
  if (existing) return existing;  // the application registered its own
  auto created = spdlog::stderr_color_mt("focusvla");
  created->set_pattern("[%H:%M:%S.%e] [focusvla] [%^%l%$] %v");
  LogLevel level = LogLevel::warn;
  if (const char* env = std::getenv("FOCUSVLA_LOG_LEVEL")) {
    try {
      level = parse_log_level(env);
    } catch (const Error& e) {
      created->warn("ignoring FOCUSVLA_LOG_LEVEL: {}", e.what());
    }
  }
  created->set_level(to_spdlog(level));
  return created;
}

std::shared_ptr<spdlog::logger> logger() {
  static std::once_flag once;
  static std::shared_ptr<spdlog::logger> instance;
  std::call_once(once, [] { instance = make_logger(); });
  return instance;
}

}  // namespace

void set_log_level(LogLevel level) { logger()->set_level(to_spdlog(level)); }

LogLevel log_level() {
  switch (logger()->level()) {
    case spdlog::level::trace: return LogLevel::trace;
    case spdlog::level::debug: return LogLevel::debug;
    case spdlog::level::info: return LogLevel::info;
    case spdlog::level::warn: return LogLevel::warn;
    case spdlog::level::err:
    case spdlog::level::critical: return LogLevel::error;
    default: return LogLevel::off;
  }
}

LogLevel parse_log_level(const std::string& name) {
  if (name == "trace") return LogLevel::trace;
  if (name == "debug") return LogLevel::debug;
  if (name == "info") return LogLevel::info;
  if (name == "warn" || name == "warning") return LogLevel::warn;
  if (name == "error" || name == "err") return LogLevel::error;
  if (name == "off") return LogLevel::off;
  throw Error("log level '" + name + "': unknown, expected trace, debug, info, warn, error or off");
}

void log(LogLevel level, const std::string& message) { logger()->log(to_spdlog(level), message); }

bool log_enabled(LogLevel level) { return logger()->should_log(to_spdlog(level)); }

}  // namespace focusvla
