// GoogleTest main for Braid tests: initialises MPI (every test binary runs under mpiexec,
// one or more ranks) and prints failures from every rank, never silencing non-zero ranks.
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int rc = RUN_ALL_TESTS();
  // Agree on the verdict so that every rank exits with the same code.
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
