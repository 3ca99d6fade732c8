# install(), the exported mproc:: targets and the package config for find_package(mproc).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(MPROC_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/mproc")

install(TARGETS mproc EXPORT mprocTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/mproc" DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT mprocTargets NAMESPACE mproc:: DESTINATION ${MPROC_CMAKE_DIR})

configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/mprocConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/mprocConfig.cmake"
  INSTALL_DESTINATION ${MPROC_CMAKE_DIR})
write_basic_package_version_file("${PROJECT_BINARY_DIR}/mprocConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/mprocConfig.cmake"
  "${PROJECT_BINARY_DIR}/mprocConfigVersion.cmake"
  DESTINATION ${MPROC_CMAKE_DIR})

# mproc::mpi, when built: find_package(mproc COMPONENTS mpi).
if(TARGET mproc_mpi)
  install(TARGETS mproc_mpi EXPORT mprocMpiTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT mprocMpiTargets NAMESPACE mproc:: DESTINATION ${MPROC_CMAKE_DIR})
endif()

# mproc::redis, when built: find_package(mproc COMPONENTS redis).
if(TARGET mproc_redis)
  install(TARGETS mproc_redis EXPORT mprocRedisTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT mprocRedisTargets NAMESPACE mproc:: DESTINATION ${MPROC_CMAKE_DIR})
endif()
