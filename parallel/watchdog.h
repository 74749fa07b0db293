// Watchdog: a thread per rank that watches the rank's collective ledger (ledger.h).
//
// - If the rank stays blocked in one communication call (a collective, a receive, or the
//   wait of a non-blocking call) for longer than the timeout (--collective-timeout), or in
//   a whole checkpoint save or load for longer than --checkpoint-timeout, it
//   prints which call on which rank, has every rank dump its ledger, names the ranks that
//   did not answer (dead, or frozen as a whole process), and aborts the job (MPI_Abort
//   with kWatchdogExitCode).
// - On request (SIGUSR2 -> request_ledger_dump(), a flag: the signal handler never writes
//   files) it dumps this rank's ledger and the run goes on.
// - A checkpoint save or load runs inside parallel HDF5, whose own synchronisation our
//   communicators cannot see: a peer lost there would leave the others waiting for the
//   whole --checkpoint-timeout. So once a rank has been in a save or load for longer than
//   --collective-timeout, it sends the other ranks' watchdogs a liveness probe (again
//   every --collective-timeout): if one does not answer within grace_s it is lost, and the
//   job is aborted at once, naming it. A long save among live ranks is left alone.
// - It answers other ranks' dump requests (dump_all) with a dump of its own, and their
//   liveness probes.
//
// Cross-rank messages go over a private duplicate of the world communicator, from this
// thread while the main thread may sit in a collective: that needs MPI_THREAD_MULTIPLE
// (run_main asks for it). Without it the watchdog still times out, dumps its own ledger
// and aborts, but cannot collect the other ranks' dumps.
#pragma once
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "parallel/ledger.h"

namespace braid {

// mpirun's exit code when the watchdog aborts the job.
constexpr int kWatchdogExitCode = 4;

class Watchdog {
 public:
  struct Options {
    double timeout_s = 600;  // <= 0: no timeout (dumps on request still work)
    double checkpoint_timeout_s = 3600;  // a whole checkpoint save or load; <= 0: none
    std::string dump_dir;    // where rank-<R>.json goes
    double grace_s = 3;      // how long dump_all waits for the other ranks' answers
  };
  // Collective over `world` (duplicates it). Starts the thread.
  Watchdog(std::shared_ptr<Ledger> ledger, MPI_Comm world, Options opt);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Asks every other rank to dump its ledger, dumps this rank's, and waits up to grace_s
  // for the others' answers. Returns the ranks that did not answer. Any thread; no throw.
  // `known_silent`: ranks already found lost, not waited for.
  std::vector<int> dump_all(const std::string& reason, const std::vector<int>& known_silent = {});
  // Sends every other rank a liveness probe and waits up to grace_s for the answers;
  // returns the ranks that did not answer. Watchdog thread only.
  std::vector<int> probe_peers();
  const Options& options() const { return opt_; }

 private:
  void loop();
  void serve_requests();  // answers pending dump requests (either thread)
  void dump_local(const std::string& reason) noexcept;
  [[noreturn]] void fire(const Ledger::Blocked& b);
  [[noreturn]] void abort_job(const std::string& head, const std::vector<int>& known_silent);
  // Liveness probe during a long checkpoint save or load (see above).
  void check_checkpoint_peers();

  std::shared_ptr<Ledger> ledger_;
  Options opt_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  bool cross_rank_ = false;  // MPI_THREAD_MULTIPLE available
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int probe_seq_ = 0;
  std::chrono::steady_clock::time_point last_probe_{};
  std::mutex dump_mu_;
  std::thread thread_;
};

// Async-signal-safe: makes the watchdog thread dump this rank's ledger (SIGUSR2).
void request_ledger_dump();

}  // namespace braid
