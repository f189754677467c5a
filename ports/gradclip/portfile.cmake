# Overlay port for gradclip:
#   vcpkg install gradclip --overlay-ports=<gradclip checkout>/ports
# gradclip has no public release URL yet, so the port builds the checkout it lives in. Once releases
# are published, replace the SOURCE_PATH line with
#   vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO <owner>/gradclip REF "v${VERSION}"
#                     SHA512 <sha512 of the release archive> HEAD_REF main)

# Header-only: nothing differs between debug and release, so only release is configured and no
# debug/ tree is produced.
set(VCPKG_BUILD_TYPE release)

get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DGRADCLIP_BUILD_TESTS=OFF
        -DGRADCLIP_BUILD_EXAMPLES=OFF
        -DGRADCLIP_BUILD_BENCHMARKS=OFF
        -DGRADCLIP_INSTALL=ON
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/gradclip)
vcpkg_fixup_pkgconfig()

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
