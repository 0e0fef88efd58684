#pragma once
// Logging. The library logs through an spdlog logger named "focusvla" (to stderr), quiet by
// default: warnings and errors only. Callers set the level with set_log_level, or with the
// environment variable FOCUSVLA_LOG_LEVEL=trace|debug|info|warn|error|off read on first use.
// An application that registers its own spdlog logger named "focusvla" before the first log
// call gets the library's messages in its own sinks.
//
// This header does not include spdlog: LibTorch bundles a different fmt than the system spdlog
// is built against, and the two must not meet in one translation unit of a user's program.

#include <string>

namespace focusvla {

enum class LogLevel { trace, debug, info, warn, error, off };

void set_log_level(LogLevel level);
LogLevel log_level();
// Parses "trace".."off" (and "warning", "err"); throws Error on anything else.
LogLevel parse_log_level(const std::string& name);

// Writes one message at `level` when that level is enabled.
void log(LogLevel level, const std::string& message);
inline void log_debug(const std::string& message) { log(LogLevel::debug, message); }
inline void log_info(const std::string& message) { log(LogLevel::info, message); }
inline void log_warn(const std::string& message) { log(LogLevel::warn, message); }
bool log_enabled(LogLevel level);

}  // namespace focusvla
