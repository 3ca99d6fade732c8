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

# pkg-config files for Meson and Make users: mproc.pc, and mproc-mpi.pc / mproc-redis.pc
# beside their targets. Relocatable: the prefix is found from the file's own place.
set(MPROC_PC_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
file(RELATIVE_PATH MPROC_PC_PREFIX_FROM_PCDIR "/prefix/${MPROC_PC_DIR}" "/prefix")
string(REGEX REPLACE "/$" "" MPROC_PC_PREFIX_FROM_PCDIR "${MPROC_PC_PREFIX_FROM_PCDIR}")
configure_file("${PROJECT_SOURCE_DIR}/cmake/mproc.pc.in" "${PROJECT_BINARY_DIR}/mproc.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/mproc.pc" DESTINATION ${MPROC_PC_DIR})
function(mproc_install_component_pc component description requires)
  set(MPROC_PC_COMPONENT ${component})
  set(MPROC_PC_DESCRIPTION "${description}")
  set(MPROC_PC_REQUIRES "${requires}")
  configure_file("${PROJECT_SOURCE_DIR}/cmake/mproc-component.pc.in" "${PROJECT_BINARY_DIR}/mproc-${component}.pc" @ONLY)
  install(FILES "${PROJECT_BINARY_DIR}/mproc-${component}.pc" DESTINATION ${MPROC_PC_DIR})
endfunction()

# mproc::mpi, when built: find_package(mproc COMPONENTS mpi).
if(TARGET mproc_mpi)
  install(TARGETS mproc_mpi EXPORT mprocMpiTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT mprocMpiTargets NAMESPACE mproc:: DESTINATION ${MPROC_CMAKE_DIR})
  # Debian's mpi-c.pc is the system's default MPI, the one find_package(MPI) finds.
  mproc_install_component_pc(mpi "mproc's pool on an MPI job" "mpi-c")
endif()

# mproc::redis, when built: find_package(mproc COMPONENTS redis).
if(TARGET mproc_redis)
  install(TARGETS mproc_redis EXPORT mprocRedisTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT mprocRedisTargets NAMESPACE mproc:: DESTINATION ${MPROC_CMAKE_DIR})
  mproc_install_component_pc(redis "mproc's pool and queue on Redis" "hiredis")
endif()
