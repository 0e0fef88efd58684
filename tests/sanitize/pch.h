// Precompiled header of the sanitized builds (tests/sanitize/sanitizers.cmake): the library's
// (LibTorch, nlohmann-json) plus Boost.Beast / Asio, msgpack-cxx and GoogleTest, parsed once per
// sanitizer instead of once per instrumented file.
#pragma once
#include "../../cmake/focusvla_pch.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>
#include <msgpack.hpp>
