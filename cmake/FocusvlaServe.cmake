# focusvla_serve: the openpi-protocol policy server (include/focusvla/serve/, src/serve/), on
# Boost.Beast / Boost.Asio (headers, Boost >= 1.70) and msgpack-cxx (headers). Debian:
# libboost-dev libmsgpack-cxx-dev (scripts/setup). Without them: no server, a status message.
include(${CMAKE_CURRENT_LIST_DIR}/FocusvlaMsgpack.cmake)
if(NOT FOCUSVLA_MSGPACK_FOUND)
  message(STATUS "focusvla: Boost (>= 1.70) or msgpack-cxx not found (Debian: libboost-dev libmsgpack-cxx-dev), "
                 "not building the server")
  return()
endif()
find_package(Threads REQUIRED)
file(GLOB FOCUSVLA_SERVE_SOURCES CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/src/serve/*.cpp")
add_library(focusvla_serve ${FOCUSVLA_SERVE_SOURCES})
add_library(focusvla::serve ALIAS focusvla_serve)
# Boost and msgpack-cxx are header-only and used only inside src/serve/ (the public headers
# include neither): the installed focusvla::serve needs neither of them, only Threads.
target_link_libraries(focusvla_serve PUBLIC focusvla::focusvla Threads::Threads
  PRIVATE $<BUILD_INTERFACE:Boost::headers> $<BUILD_INTERFACE:${FOCUSVLA_MSGPACK_TARGET}>)
set_target_properties(focusvla_serve PROPERTIES EXPORT_NAME serve)
# msgpack-cxx's Boost use is header-only; Asio needs no Boost.System library since 1.69.
target_compile_definitions(focusvla_serve PRIVATE BOOST_ASIO_NO_DEPRECATED)
target_precompile_headers(focusvla_serve REUSE_FROM focusvla_pch)
message(STATUS "focusvla: building the server (Boost ${Boost_VERSION}, ${FOCUSVLA_MSGPACK_TARGET})")
