// main() for the MPI tests: every rank runs the same Catch2 session (the test cases
// are collective, so every rank must run the same cases in the same order), and
// the run fails if any assertion failed on any rank.
#include <mpi.h>

#include <cstdio>

#if !defined(GRADCLIP_CATCH2_V3)
#define CATCH_CONFIG_RUNNER
#endif
#include "catch.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  // Failures show up in the return codes, not as MPI aborts.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  const int local = Catch::Session().run(argc, argv);
  int worst = local;
  MPI_Allreduce(&local, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0 && worst != 0) std::printf("gradclip MPI tests: failures on at least one rank (worst code %d)\n", worst);
  MPI_Finalize();
  return worst == 0 ? 0 : 1;
}
