import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, load
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class GradclipConan(ConanFile):
    name = "gradclip"
    description = "Header-only C++17 gradient clipping for C++ training code"
    license = "MIT"
    topics = ("deep-learning", "gradient-clipping", "eigen", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    # package() copies the headers, so the CMake files are not exported: editing them must not
    # change the recipe revision.
    exports_sources = "include/*", "LICENSE"
    no_copy_source = True
    # `conan create .` builds and runs the find_package consumer against the new package (conan >= 2.3).
    test_package_folder = "tests/consumer/conan"

    def set_version(self):
        # One source of truth: project(gradclip VERSION x.y.z) in CMakeLists.txt.
        if not self.version:
            cmakelists = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
            self.version = re.search(r"project\(gradclip\s+VERSION\s+([0-9.]+)", cmakelists).group(1)

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        # Eigen 3.4 and the 5.x series (the release after 3.4) both work.
        self.requires("eigen/[>=3.4.0 <6]")

    def package_id(self):
        self.info.clear()

    def validate(self):
        if self.settings.get_safe("compiler.cppstd"):
            check_min_cppstd(self, 17)

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*.hpp", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "gradclip")
        self.cpp_info.set_property("cmake_target_name", "gradclip::gradclip")
        self.cpp_info.set_property("pkg_config_name", "gradclip")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
