# The repository stands alone: nothing the build, the tests or the scripts use may reach outside the
# source tree into the team's sibling "shared" folder (a clone has no such folder).
# Run as: cmake -DSRC=<source dir> -P stands_alone.cmake
# The pattern is assembled from pieces so that this file does not name the path it looks for.
set(_outside "\\.\\./")
string(APPEND _outside "shared")
file(GLOB_RECURSE files RELATIVE "${SRC}"
     "${SRC}/CMakeLists.txt" "${SRC}/cmake/*" "${SRC}/tests/*" "${SRC}/examples/*" "${SRC}/benchmarks/*"
     "${SRC}/scripts/*" "${SRC}/.ci/*" "${SRC}/include/*")
set(bad "")
foreach(f IN LISTS files)
  if(f MATCHES "\\.safetensors$")
    continue()
  endif()
  file(STRINGS "${SRC}/${f}" hits REGEX "${_outside}")
  if(hits)
    list(APPEND bad "${f}")
  endif()
endforeach()
if(bad)
  string(REPLACE ";" ", " bad_text "${bad}")
  message(FATAL_ERROR "these files reach outside the tree into the sibling shared folder, which a clone does not have: ${bad_text}")
endif()
if(NOT EXISTS "${SRC}/tests/fixtures/reference_fpn_b8_s4.safetensors")
  message(FATAL_ERROR "tests/fixtures/reference_fpn_b8_s4.safetensors is missing: the parity test needs it")
endif()
list(LENGTH files n)
message(STATUS "stands alone: ${n} files checked, none reaches outside the source tree")
