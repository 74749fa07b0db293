#include "launch/lib/entry.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "ops/check.h"
#include "ops/device_memory.h"
#include "ops/ops.h"
#include "parallel/watchdog.h"

namespace braid {

namespace {
// Lock-free, so storing from a signal handler is async-signal-safe.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
void on_signal(int sig) {
  // A SIGUSR1 never overrides an earlier SIGTERM/SIGINT (stop wins over requeue).
  if (sig != SIGUSR1 || g_stop_signal.load() == 0) g_stop_signal.store(sig);
}
}  // namespace

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking calls (MPI, file I/O) resume after the handler
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) sigaction(sig, &sa, nullptr);
}

int stop_signal_received() { return g_stop_signal.load(); }

// Faults: the watchdog (owned here so that it outlives the body's unwinding and can
// collect the ledgers on a fatal error) and SIGUSR2, which asks it for a ledger dump.
namespace {
std::shared_ptr<Watchdog> g_watchdog;
void on_dump_signal(int) { request_ledger_dump(); }
}  // namespace

void install_dump_signal() { std::signal(SIGUSR2, on_dump_signal); }

void start_watchdog(ProcessGroups& groups, double timeout_s, double checkpoint_timeout_s, const std::string& dump_dir) {
  Watchdog::Options opt;
  opt.timeout_s = timeout_s;
  opt.checkpoint_timeout_s = checkpoint_timeout_s;
  opt.dump_dir = dump_dir;
  g_watchdog = std::make_shared<Watchdog>(groups.ledger, control_comm(*groups.world), opt);
}

int local_gpu_index() {
#ifndef BRAID_HAVE_CUDA
  throw InputError("--device cuda: this build of Braid has no CUDA backend (nvcc was not found at configure time)");
#endif
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  int gpus = gpu_count();
  BRAID_REQUIRE(gpus > 0, "--device cuda but no GPU is visible on this node");
  return local % gpus;
}

std::string describe_launch() {
  int size = 1, local = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  int leaders = local == 0 ? 1 : 0, nodes = 0;
  MPI_Allreduce(&leaders, &nodes, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  std::string s = "launch: " + std::to_string(size) + " ranks on " + std::to_string(nodes) + " node(s)";
  if (const char* job = std::getenv("SLURM_JOB_ID")) {
    const char* restart = std::getenv("SLURM_RESTART_COUNT");
    s += std::string(" | slurm job ") + job + " restart " + (restart && *restart ? restart : "0");
  }
  return s;
}

void configure_rank(const RankGrid& grid, int threads) {
  set_error_prefix(grid.describe());
  if (threads <= 0) {
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, grid.world_rank, MPI_INFO_NULL, &node);
    int local = 1;
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    // The CPUs this process may run on (a Slurm allocation or taskset), not the node's.
    cpu_set_t set;
    int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                             : int(std::thread::hardware_concurrency());
    threads = std::max(1, cores / std::max(1, local));
  }
  set_cpu_threads(threads);
}

int run_main(int argc, char** argv, const char* program, const std::function<int(int, char**)>& body) {
  // The watchdog thread talks to other ranks while the main thread sits in a collective.
  int provided = MPI_THREAD_SINGLE;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (error_prefix().empty()) {
    char host[128] = {0};
    gethostname(host, sizeof(host) - 1);
    set_error_prefix("[rank " + std::to_string(rank) + "/" + std::to_string(size) + " host=" + host + "]");
  }
  int rc = 0;
  try {
    rc = body(argc, argv);
  } catch (const InputError& e) {
    // Raised collectively: every rank has the same message and reaches this point.
    std::fprintf(stderr, "%s %s: error: %s\n", error_prefix().c_str(), program, e.what());
    std::fflush(stderr);
    g_watchdog.reset();
    MPI_Finalize();
    return kExitBadInput;
  } catch (const CollectiveError& e) {
    // Also reached by every rank together, with its own exit code.
    std::fprintf(stderr, "%s %s: error: %s\n", error_prefix().c_str(), program, e.what());
    std::fflush(stderr);
    g_watchdog.reset();
    MPI_Finalize();
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s %s: fatal: %s\n", error_prefix().c_str(), program, e.what());
    std::fflush(stderr);
    if (g_watchdog) {  // every rank's ledger, before the job goes
      std::vector<int> silent = g_watchdog->dump_all(std::string("fatal error: ") + e.what());
      std::fprintf(stderr, "%s %s: ledgers written to %s (%zu rank(s) did not answer); braid-ledger reads them\n",
                   error_prefix().c_str(), program, g_watchdog->options().dump_dir.c_str(), silent.size());
      std::fflush(stderr);
    }
    MPI_Abort(MPI_COMM_WORLD, kExitFatal);
    return kExitFatal;
  }
  g_watchdog.reset();
  MPI_Finalize();
  return rc;
}

}  // namespace braid
