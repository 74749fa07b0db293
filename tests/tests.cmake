# Registration of each test executable: braid_test(<target> <timeout_s> [labels])
# or braid_mpi_test(<target> <np> <timeout_s> [labels]). Keep one line per test.
braid_test(test_schedule 60)
