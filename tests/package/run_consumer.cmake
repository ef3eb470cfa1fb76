# Builds and runs tests/package/consumer against hdssl. Called by CTest with
# -DMODE=find_package|add_subdirectory -DHDSSL_SOURCE_DIR -DHDSSL_BINARY_DIR -DWORK_DIR -DCONSUMER_DIR.
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${step} failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${step}: ok")
endfunction()

if(MODE STREQUAL "find_package")
  set(prefix "${WORK_DIR}/prefix")
  run("install hdssl" ${CMAKE_COMMAND} --install "${HDSSL_BINARY_DIR}" --prefix "${prefix}")
  if(NOT EXISTS "${prefix}/include/hdssl/hdssl.hpp")
    message(FATAL_ERROR "install did not place include/hdssl/hdssl.hpp under ${prefix}")
  endif()
  set(args -DCMAKE_PREFIX_PATH=${prefix})
else()
  set(args -DHDSSL_SOURCE_DIR=${HDSSL_SOURCE_DIR})
endif()
find_program(CCACHE ccache)
if(CCACHE)
  list(APPEND args -DCMAKE_CXX_COMPILER_LAUNCHER=${CCACHE})
endif()
# The installed package is consumed by a Release project; the source tree by a project that sets no build
# type at all, which must still have none after add_subdirectory (hdssl's Release default is for its own
# top-level build only).
if(MODE STREQUAL "find_package")
  set(build_type Release)
else()
  set(build_type "")
endif()
run("configure consumer (${MODE})" ${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/build"
    -G "${GENERATOR}" "-DCMAKE_BUILD_TYPE=${build_type}" "-DEXPECTED_BUILD_TYPE=${build_type}" -DHDSSL_MODE=${MODE} ${args})
run("build consumer (${MODE})" ${CMAKE_COMMAND} --build "${WORK_DIR}/build" -j2)
run("run consumer (${MODE})" "${WORK_DIR}/build/consumer")
