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
// Exit codes of braid-train (README, "Launching"). Both "stopped" codes mean that a
// checkpoint of the last completed step was saved: run the same command again (with
// --resume auto) to continue bitwise where the run stopped.
constexpr int kExitDone = 0;       // reached --steps or --stop-after
constexpr int kExitFatal = 1;      // an internal or system error (the world is aborted)
constexpr int kExitBadInput = 2;   // bad input, one message on every rank
constexpr int kExitDiverged = 3;   // non-finite steps that a rollback could not cure (README, "Faults")
constexpr int kExitWatchdog = 4;   // a collective or receive outlived --collective-timeout
constexpr int kExitRequeue = 42;   // stopped on SIGUSR1: "checkpoint and come back" (requeue)
constexpr int kExitStopped = 43;   // stopped on SIGTERM or SIGINT: "checkpoint and stop"

// SIGTERM / SIGUSR1 / SIGINT (Slurm preemption, time limit, scancel, Ctrl-C) only record
// the signal; the training loop asks stop_signal_received() at its agreement points.
void install_stop_signals();
// 0 when no stop signal came; else the strongest one received: SIGTERM or SIGINT (stop)
// over SIGUSR1 (requeue).
int stop_signal_received();
// The GPU this rank drives: node-local rank (MPI_Comm_split_type SHARED) modulo the GPUs
// visible. Several ranks may share one GPU (the MPI data plane stages their traffic).
int local_gpu_index();
// Collective over the world: "launch: R ranks on N node(s) [| slurm job J restart K]".
// Ranks, node-local ranks and nodes come from MPI (MPI_Comm_split_type SHARED), never from
// launcher variables (under mpirun inside sbatch every rank sees SLURM_PROCID=0); Slurm's
// SLURM_JOB_ID and SLURM_RESTART_COUNT (unset = 0) are named when present.
std::string describe_launch();

// Fault handling (parallel/watchdog.h): starts this rank's watchdog over the groups' ledger
// (collective over the world). timeout_s <= 0 disables the timeout; ledgers are dumped to
// dump_dir on a timeout, on a fatal error (run_main asks every rank for its ledger before
// MPI_Abort) and on SIGUSR2. It lives until run_main returns.
void start_watchdog(ProcessGroups& groups, double timeout_s, double checkpoint_timeout_s, const std::string& dump_dir);
// SIGUSR2 asks the watchdog for a ledger dump (braid-train installs it before MPI_Init).
void install_dump_signal();

}  // namespace braid
