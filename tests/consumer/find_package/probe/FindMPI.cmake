# Stands in for CMake's FindMPI in the find_package consumer: a plain find_package(gradclip), without
# COMPONENTS mpi, must not look for MPI, even when the package was built with it. The backtrace of
# this error names the file that asked.
message(FATAL_ERROR "find_package(MPI) ran during a find_package(gradclip) that did not ask for the mpi component")
