# Packaging: what `cmake --install BUILD [--prefix DIR]` puts in place, so that another project can
# use splitfs with find_package(splitfs) (target splitfs::splitfs) or pkg-config (splitfs.pc).
#
#   bin/        splitfs, splitfs-https-server, splitfs-tcp-server
#   sbin/       mount.fuse.splitfs (the mount(8) helper of mount-scripts/)
#   lib/        libsplitfs.so: the client library (C++ API and C API) with everything it needs
#               linked in; lib/pkgconfig/splitfs.pc; lib/cmake/splitfs/ (package config)
#   include/    splitfs/*.h, splitfs/*.hpp
#   share/man/  man pages made from each program's --help at install time
#   share/doc/  README, SECURITY and docs/, and systemd units for the two servers
#
# The library is one shared object made of every internal static library splitfs_core links, so a
# consumer links -lsplitfs alone and the system's dynamic linker brings in OpenSSL, libcurl, SQLite
# and the rest. Those static libraries are therefore built as position-independent code.
#
# Every path in the installed files is relative to the prefix given at install time: the package
# can be installed anywhere and moved.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The internal static libraries `root` links, directly or through others, `root` included.
function(splitfs_static_closure root out)
  set(pending ${root})
  set(closure)
  while(pending)
    list(POP_FRONT pending target)
    if(target IN_LIST closure)
      continue()
    endif()
    list(APPEND closure ${target})
    foreach(property LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
      get_target_property(items ${target} ${property})
      if(NOT items)
        continue()
      endif()
      foreach(item IN LISTS items)
        string(REGEX REPLACE "^\\$<LINK_ONLY:(.+)>$" "\\1" item "${item}")
        if(NOT TARGET "${item}")
          continue()
        endif()
        get_target_property(imported ${item} IMPORTED)
        get_target_property(type ${item} TYPE)
        if(NOT imported AND type STREQUAL "STATIC_LIBRARY")
          list(APPEND pending ${item})
        endif()
      endforeach()
    endforeach()
  endwhile()
  set(${out} ${closure} PARENT_SCOPE)
endfunction()

# A folder adds its targets only once it has a CMakeLists.txt: without all of them, no package.
foreach(target splitfs_core splitfs splitfs-https-server splitfs-tcp-server)
  if(NOT TARGET ${target})
    message(STATUS "splitfs: no target ${target} yet, so no install rules")
    return()
  endif()
endforeach()

splitfs_static_closure(splitfs_core splitfs_library_parts)
set_property(TARGET ${splitfs_library_parts} PROPERTY POSITION_INDEPENDENT_CODE ON)

# libsplitfs.so: the objects of every part, and splitfs_core's own link line for the system
# libraries (its archives add nothing: every symbol in them is already defined by the objects).
set(splitfs_library_objects)
foreach(part IN LISTS splitfs_library_parts)
  list(APPEND splitfs_library_objects $<TARGET_OBJECTS:${part}>)
endforeach()
add_library(splitfs_shared SHARED ${splitfs_library_objects})
target_link_libraries(splitfs_shared PRIVATE splitfs_core)
target_include_directories(splitfs_shared INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
# client.hpp needs C++20 (std::span, defaulted comparisons); C consumers are unaffected.
target_compile_features(splitfs_shared INTERFACE cxx_std_20)
if(SPLITFS_SANITIZE)
  # An instrumented library runs only in an instrumented program.
  target_link_options(splitfs_shared INTERFACE -fsanitize=address,undefined)
  set(SPLITFS_PC_SANITIZE " -fsanitize=address,undefined")
endif()
set_target_properties(splitfs_shared PROPERTIES
  OUTPUT_NAME splitfs
  EXPORT_NAME splitfs
  LINKER_LANGUAGE CXX
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR})
add_library(splitfs::splitfs ALIAS splitfs_shared)

install(TARGETS splitfs splitfs-https-server splitfs-tcp-server
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(PROGRAMS ${PROJECT_SOURCE_DIR}/mount-scripts/mount.splitfs
  DESTINATION ${CMAKE_INSTALL_SBINDIR} RENAME mount.fuse.splitfs)
install(TARGETS splitfs_shared EXPORT splitfsTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/splitfs
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")

# CMake package: find_package(splitfs) then target_link_libraries(app PRIVATE splitfs::splitfs).
set(splitfs_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/splitfs)
install(EXPORT splitfsTargets NAMESPACE splitfs:: DESTINATION ${splitfs_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/splitfsConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/splitfsConfig.cmake
  INSTALL_DESTINATION ${splitfs_cmake_dir})
# 0.x releases promise nothing across minor versions.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cmake/splitfsConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/splitfsConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/splitfsConfigVersion.cmake
  DESTINATION ${splitfs_cmake_dir})

# pkg-config: the prefix is found from the .pc file's own place, so the package stays relocatable.
set(splitfs_pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH SPLITFS_PC_TO_PREFIX /prefix/${splitfs_pc_dir} /prefix)
configure_file(${PROJECT_SOURCE_DIR}/cmake/splitfs.pc.in ${PROJECT_BINARY_DIR}/cmake/splitfs.pc
  @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/cmake/splitfs.pc DESTINATION ${splitfs_pc_dir})

install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/SECURITY.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/
  DESTINATION ${CMAKE_INSTALL_DOCDIR}
  FILES_MATCHING PATTERN "*.md")

# Made at install time, for the prefix being installed to: the man pages, from each program's
# --help (cmake/man.py, with the hand-written sections of cmake/man/), and the systemd units,
# which name the installed binaries. `ninja man` writes the man pages into BUILD/man to read them
# before installing (man -l BUILD/man/splitfs.1).
find_program(SPLITFS_PYTHON3 python3)
set(splitfs_man_programs splitfs splitfs-https-server splitfs-tcp-server)
set(splitfs_man_commands)
foreach(program IN LISTS splitfs_man_programs)
  list(APPEND splitfs_man_commands
    COMMAND ${SPLITFS_PYTHON3} ${PROJECT_SOURCE_DIR}/cmake/man.py
            --program $<TARGET_FILE:${program}> --name ${program}
            --version ${PROJECT_VERSION} --sections ${PROJECT_SOURCE_DIR}/cmake/man/${program}.roff
            --output ${PROJECT_BINARY_DIR}/man/${program}.1)
endforeach()
add_custom_target(man ${splitfs_man_commands}
  DEPENDS ${splitfs_man_programs}
  COMMENT "Writing the man pages into ${PROJECT_BINARY_DIR}/man"
  VERBATIM)
install(CODE "
  set(SPLITFS_PYTHON3 \"${SPLITFS_PYTHON3}\")
  set(SPLITFS_BINARY_DIR \"${PROJECT_BINARY_DIR}\")
  set(SPLITFS_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(SPLITFS_VERSION \"${PROJECT_VERSION}\")
  set(SPLITFS_MAN_PROGRAMS \"${splitfs_man_programs}\")
  set(SPLITFS_MAN_BINARIES \"$<TARGET_FILE:splitfs>;$<TARGET_FILE:splitfs-https-server>;$<TARGET_FILE:splitfs-tcp-server>\")
  set(SPLITFS_MANDIR \"${CMAKE_INSTALL_MANDIR}\")
  set(SPLITFS_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(SPLITFS_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
")
install(SCRIPT ${PROJECT_SOURCE_DIR}/cmake/install_generated.cmake)
