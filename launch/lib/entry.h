// Entry-point plumbing shared by braid-train and braid-sample: MPI start-up, the rank
// prefix of error messages, BLAS threads per rank, preemption signals, and the one place
// where errors are caught. An InputError raised collectively (the same on every rank)
// ends the run with one message per rank and exit code 2; any other error on one rank
// aborts the world (MPI_Abort) so the others never hang in a collective.
#pragma once
#include <functional>
#include <string>

#include "parallel/rank_grid.h"

namespace braid {

// Runs body(world) between MPI_Init and MPI_Finalize and returns the process exit code.
int run_main(int argc, char** argv, const char* program, const std::function<int(int, char**)>& body);
// Sets the error prefix from the grid and the BLAS threads (threads <= 0: cores / ranks
// sharing this node).
void configure_rank(const RankGrid& grid, int threads);
// SIGTERM / SIGUSR1 / SIGINT (Slurm preemption, scancel --signal) set a flag that the
// training loop polls once per step; the run saves a checkpoint and exits cleanly.
void install_stop_signals();
// The GPU this rank drives: node-local rank (MPI_Comm_split_type SHARED) modulo the GPUs
// visible. Several ranks may share one GPU (the MPI data plane stages their traffic).
int local_gpu_index();
bool stop_signal_received();

// Fault handling (parallel/watchdog.h): starts this rank's watchdog over the groups' ledger
// (collective over the world). timeout_s <= 0 disables the timeout; ledgers are dumped to
// dump_dir on a timeout, on a fatal error (run_main asks every rank for its ledger before
// MPI_Abort) and on SIGUSR2. It lives until run_main returns.
void start_watchdog(ProcessGroups& groups, double timeout_s, const std::string& dump_dir);

}  // namespace braid
