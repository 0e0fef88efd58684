# The concurrent code built twice more, with AddressSanitizer + UBSan and with ThreadSanitizer:
# the server (src/serve/), the chunk executor (src/runtime/) and, under ASan, the C ABI
# (src/capi/). Per sanitizer, one object library instruments those files; from it come
#   focusvla_<san>              `focusvla serve`: the tool's own objects (focusvla_cli_objects,
#                               uninstrumented) around the instrumented server
#                               -> ctest serve_<san> (the stress test and the server's edge cases)
#   focusvla_<san>_threads_tests the batcher's and the executor's unit tests -> ctest <san>_threads
# and, ASan only, the C program of ctest capi links the instrumented C ABI.
# LibTorch and the rest of the library link in as in the release build: a report names our code.
# Cost, kept small enough for scripts/test: the files compile at -O0 -g1 (codegen of Beast's
# templates at -O1 -g took ~150 s for ws_session.cpp alone) behind one precompiled header per
# sanitizer (tests/sanitize/pch.h: parsing LibTorch and Beast was half of each file's time).
# Assertions are on (-UNDEBUG): the session's "one write in flight" assert is checked here.
# Included from tests/CMakeLists.txt when FOCUSVLA_SANITIZER_TESTS is on and the server is built.

set(_focusvla_asan_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined)
set(_focusvla_tsan_flags -fsanitize=thread)
set(_focusvla_asan_env "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1"
                       "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1")
# OMP_NUM_THREADS=1: LibTorch's OpenMP team synchronizes in libgomp, which ThreadSanitizer cannot
# see, so its kernels' threads would be reported racing each other inside libtorch_cpu. With one
# thread the policy runs on the batcher's thread and every report is about our threads.
set(_focusvla_tsan_env "TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=${CMAKE_CURRENT_SOURCE_DIR}/sanitize/tsan.supp"
                       "OMP_NUM_THREADS=1")

# Every target of one sanitizer gets exactly these flags and usage requirements: the precompiled
# header is only valid (REUSE_FROM) in files compiled like it.
function(focusvla_sanitize target san)
  target_compile_options(${target} PRIVATE ${_focusvla_${san}_flags} -fno-omit-frame-pointer -O0 -g1 -UNDEBUG)
  target_link_options(${target} PRIVATE ${_focusvla_${san}_flags})
  # Eigen frees its matrices by hand under AddressSanitizer (EIGEN_MALLOC_ALREADY_ALIGNED 0) but
  # not in the uninstrumented library that allocates them: keep the library's setting (glibc's
  # malloc and ASan's both align to 16 bytes, Eigen's default alignment here).
  target_compile_definitions(${target} PRIVATE EIGEN_MALLOC_ALREADY_ALIGNED=1 BOOST_ASIO_NO_DEPRECATED)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src/serve
                             ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${target} PRIVATE focusvla::focusvla Boost::headers ${FOCUSVLA_MSGPACK_TARGET}
                        GTest::gtest Threads::Threads)
endfunction()

# The server's tests that run against each sanitized server: the stress test, the limits and the
# bad-input, pipelining, drain and ping tests (all of test_serve.py under ASan took 6 minutes on 2
# cores: its 16 x 100 and 16 x 25 request runs stay in serve_openpi).
set(_focusvla_sanitized_serve_tests "test_serve_stress.py test_serve_limits.py \
test_serve.py::test_bad_input_keeps_serving test_serve_ops.py::test_pipelined_requests_answered_in_order \
test_serve_ops.py::test_sigterm_drains_in_flight_request test_serve_ops.py::test_pings_answered_while_a_request_is_in_flight")

foreach(_san asan tsan)
  set(_objects focusvla_${_san}_objects)
  set(_sources ${FOCUSVLA_SERVE_SOURCES} ${PROJECT_SOURCE_DIR}/src/runtime/chunk_executor.cpp)
  if(_san STREQUAL "asan")
    list(APPEND _sources ${PROJECT_SOURCE_DIR}/src/capi/focusvla_c.cpp)
  endif()
  add_library(${_objects} OBJECT ${_sources})
  focusvla_sanitize(${_objects} ${_san})
  target_precompile_headers(${_objects} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/sanitize/pch.h)

  if(TARGET focusvla_cli_objects)
    # The instrumented objects first: the linker keeps the first copy of an inline function that
    # several objects define (shared_ptr's reference counting, Asio's executors), and TSan must see
    # the instrumented one, or it misses the synchronization inside it and reports a false race.
    add_executable(focusvla_serve_${_san} $<TARGET_OBJECTS:${_objects}> $<TARGET_OBJECTS:focusvla_cli_objects>)
    set_target_properties(focusvla_serve_${_san} PROPERTIES OUTPUT_NAME focusvla_${_san})
    focusvla_sanitize(focusvla_serve_${_san} ${_san})
    target_link_libraries(focusvla_serve_${_san} PRIVATE CLI11::CLI11)
    if(FOCUSVLA_HAVE_IMGCODECS)
      target_link_libraries(focusvla_serve_${_san} PRIVATE opencv_imgcodecs)
    endif()
    add_dependencies(focusvla_tests focusvla_serve_${_san})
    add_test(NAME serve_${_san} COMMAND ${CMAKE_COMMAND} -E env FOCUSVLA_CLI=$<TARGET_FILE:focusvla_serve_${_san}>
             FOCUSVLA_ACT_CLI=$<TARGET_FILE:focusvla_cli>
             ${CMAKE_CURRENT_SOURCE_DIR}/python/run_serve.sh ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}
             ${FOCUSVLA_TEST_DATA})
    set_tests_properties(serve_${_san} PROPERTIES FIXTURES_REQUIRED data_policy TIMEOUT 900
      ENVIRONMENT "${FOCUSVLA_TEST_ENV};FOCUSVLA_SERVE_TESTS=${_focusvla_sanitized_serve_tests};${_focusvla_${_san}_env}")
  endif()

  set(_tests focusvla_${_san}_threads_tests)
  add_executable(${_tests} ${CMAKE_CURRENT_SOURCE_DIR}/serve/test_batcher.cpp
                 ${CMAKE_CURRENT_SOURCE_DIR}/runtime/test_chunk_executor.cpp
                 ${CMAKE_CURRENT_SOURCE_DIR}/runtime/test_chunk_executor_ensemble.cpp $<TARGET_OBJECTS:${_objects}>)
  focusvla_sanitize(${_tests} ${_san})
  target_link_libraries(${_tests} PRIVATE GTest::gtest_main)
  target_precompile_headers(${_tests} REUSE_FROM ${_objects})
  add_dependencies(focusvla_tests ${_tests})
  add_test(NAME ${_san}_threads COMMAND ${_tests} --gtest_brief=1)
  set_tests_properties(${_san}_threads PROPERTIES TIMEOUT 600 ENVIRONMENT "${FOCUSVLA_TEST_ENV};${_focusvla_${_san}_env}")
endforeach()
