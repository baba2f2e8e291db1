# Runs inside `cmake --install` (install(SCRIPT) in cmake/install.cmake, which sets the SPLITFS_*
# variables first): makes the files that depend on the prefix being installed to, then installs
# them like any other file (DESTDIR and the install manifest included).
#   - a man page per program, from its --help (cmake/man.py);
#   - the systemd units of docs/systemd/, naming the installed server binaries.
set(generated "${SPLITFS_BINARY_DIR}/install-generated")
file(REMOVE_RECURSE "${generated}")
file(MAKE_DIRECTORY "${generated}/man1" "${generated}/systemd")

function(splitfs_under_prefix dir out)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

if(NOT SPLITFS_PYTHON3)
  message(FATAL_ERROR "python3 is needed to make the man pages (scripts/setup.sh installs it)")
endif()
set(pages)
foreach(program binary IN ZIP_LISTS SPLITFS_MAN_PROGRAMS SPLITFS_MAN_BINARIES)
  execute_process(
    COMMAND "${SPLITFS_PYTHON3}" "${SPLITFS_SOURCE_DIR}/cmake/man.py" --program "${binary}"
            --name "${program}" --version "${SPLITFS_VERSION}"
            --sections "${SPLITFS_SOURCE_DIR}/cmake/man/${program}.roff"
            --output "${generated}/man1/${program}.1"
    RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "cannot make the man page of ${program} (${status})")
  endif()
  list(APPEND pages "${generated}/man1/${program}.1")
endforeach()
splitfs_under_prefix("${SPLITFS_MANDIR}/man1" man1_dir)
file(INSTALL DESTINATION "${man1_dir}" TYPE FILE FILES ${pages})

splitfs_under_prefix("${SPLITFS_BINDIR}" SPLITFS_INSTALLED_BINDIR)
file(GLOB units "${SPLITFS_SOURCE_DIR}/docs/systemd/*.service.in")
set(configured)
foreach(unit IN LISTS units)
  get_filename_component(name "${unit}" NAME)
  string(REGEX REPLACE "\\.in$" "" name "${name}")
  configure_file("${unit}" "${generated}/systemd/${name}" @ONLY)
  list(APPEND configured "${generated}/systemd/${name}")
endforeach()
splitfs_under_prefix("${SPLITFS_DOCDIR}/systemd" systemd_dir)
file(INSTALL DESTINATION "${systemd_dir}" TYPE FILE FILES ${configured})
