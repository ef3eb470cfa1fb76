# FindNIfTI: the NIfTI C library (nifticlib >= 3, NIfTI-1 and NIfTI-2 through nifti2_io).
# Debian ships a NIFTIConfig.cmake whose imported targets point at missing files, so we
# look for the header and libraries ourselves.
#
# Result: imported target NIfTI::NIfTI, variables NIfTI_FOUND, NIfTI_INCLUDE_DIR, NIfTI_LIBRARIES.
find_path(NIfTI_INCLUDE_DIR nifti2_io.h PATH_SUFFIXES nifti)
find_library(NIfTI_nifti2_LIBRARY NAMES nifti2)
find_library(NIfTI_znz_LIBRARY NAMES znz)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NIfTI REQUIRED_VARS NIfTI_nifti2_LIBRARY NIfTI_znz_LIBRARY NIfTI_INCLUDE_DIR)
if(NIfTI_FOUND)
  set(NIfTI_LIBRARIES ${NIfTI_nifti2_LIBRARY} ${NIfTI_znz_LIBRARY})
  if(NOT TARGET NIfTI::NIfTI)
    add_library(NIfTI::NIfTI INTERFACE IMPORTED GLOBAL)
    find_package(ZLIB QUIET)
    set_target_properties(NIfTI::NIfTI PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${NIfTI_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${NIfTI_nifti2_LIBRARY};${NIfTI_znz_LIBRARY};$<$<TARGET_EXISTS:ZLIB::ZLIB>:ZLIB::ZLIB>;m")
  endif()
endif()
mark_as_advanced(NIfTI_INCLUDE_DIR NIfTI_nifti2_LIBRARY NIfTI_znz_LIBRARY)
