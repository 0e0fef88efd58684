#pragma once

namespace focusvla {
inline constexpr const char* kVersion = "0.1.0";
}
