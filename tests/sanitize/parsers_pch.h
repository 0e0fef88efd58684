// Precompiled header of focusvla_asan_tests (the Torch-free parsers under ASan + UBSan, ctest
// asan_parsers): the heavy headers every one of its files parses.
#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
