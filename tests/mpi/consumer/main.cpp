// Compiles against the installed gradclip/mpi.hpp and gives the textbook answer on any number of
// ranks: every rank holds (3, 4), so the global norm is 5 * sqrt(ranks).
#include <gradclip/mpi.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<double> grad{3.0, 4.0};
  const auto r = gradclip::mpi::clip_by_global_norm(grad, 1.0, MPI_COMM_WORLD, {2.0, 0.0, gradclip::nonfinite::error});
  const double want = 5.0 * std::sqrt(static_cast<double>(size));
  const int ok = r.clipped && std::fabs(r.total_norm - want) <= 1e-12 * want &&
                 std::fabs(grad[0] - 3.0 / want) <= 1e-15 && std::fabs(grad[1] - 4.0 / want) <= 1e-15;
  int all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  if (rank == 0) std::printf("gradclip::mpi consumer on %d ranks: total_norm %.17g -> %s\n", size, r.total_norm, all_ok ? "ok" : "WRONG");
  MPI_Finalize();
  return all_ok ? 0 : 1;
}
