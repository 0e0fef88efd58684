// Precompiled header for focusvla targets: the expensive, stable third-party headers.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
