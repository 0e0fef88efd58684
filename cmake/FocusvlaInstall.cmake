# `cmake --install` puts headers, the library and a package config in the prefix, so that a robot
# program can say find_package(focusvla) and link focusvla::focusvla.
include(CMakePackageConfigHelpers)
install(TARGETS focusvla EXPORT focusvlaTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The C ABI (focusvla/focusvla.h) is in the library and installed with it. The server's library
# and headers (focusvla::serve) are installed where the server is built.
if(TARGET focusvla_serve)
  set(FOCUSVLA_HAVE_SERVE ON)  # for focusvlaConfig.cmake.in
  install(TARGETS focusvla_serve EXPORT focusvlaTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/focusvla DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
else()
  set(FOCUSVLA_HAVE_SERVE OFF)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/focusvla DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
    PATTERN serve EXCLUDE)
endif()
if(TARGET focusvla_cli)
  install(TARGETS focusvla_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(EXPORT focusvlaTargets NAMESPACE focusvla::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/focusvla)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/focusvlaConfig.cmake.in
  ${PROJECT_BINARY_DIR}/focusvlaConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/focusvla)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/focusvlaConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/focusvlaConfig.cmake ${PROJECT_BINARY_DIR}/focusvlaConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/focusvla)
