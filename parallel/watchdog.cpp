#include "parallel/watchdog.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <sstream>

#include "ops/check.h"
#include "parallel/mpi_check.h"

namespace braid {

namespace {
std::atomic<bool> g_dump_requested{false};
constexpr int kTagDumpRequest = 7101, kTagDumpAnswer = 7102, kTagProbe = 7103, kTagProbeAnswer = 7104;
constexpr int kReasonBytes = 256;
std::array<char, kReasonBytes> g_request_buf{};  // outgoing reason (lives until the abort)
int g_answer_buf = 0;                            // outgoing answer: this rank
// Outgoing probe answers {this rank, probe number}: a send buffer must live until the send
// completes and these are never waited for, so each answer keeps its own (a few per run).
std::mutex g_probe_answers_mu;
std::deque<std::array<int, 2>> g_probe_answers;
int g_probe_buf = 0;  // outgoing probe: its number (one probe at a time, watchdog thread)
}  // namespace

void request_ledger_dump() { g_dump_requested.store(true); }

Watchdog::Watchdog(std::shared_ptr<Ledger> ledger, MPI_Comm world, Options opt)
    : ledger_(std::move(ledger)), opt_(std::move(opt)) {
  BRAID_CHECK_MPI(MPI_Comm_dup(world, &comm_));
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);  // a dead peer must not abort us here
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  cross_rank_ = level == MPI_THREAD_MULTIPLE;
  g_answer_buf = rank_;
  thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void Watchdog::dump_local(const std::string& reason) noexcept {
  if (opt_.dump_dir.empty()) return;
  std::lock_guard<std::mutex> lock(dump_mu_);
  try {
    ledger_->dump(opt_.dump_dir, reason);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s watchdog: %s\n", error_prefix().c_str(), e.what());
  }
}

void Watchdog::serve_requests() {
  if (!cross_rank_) return;
  for (;;) {  // liveness probes: answered at once, nothing else to do
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    if (MPI_Improbe(MPI_ANY_SOURCE, kTagProbe, comm_, &flag, &msg, &st) != MPI_SUCCESS || !flag) break;
    int seq = -1;
    if (MPI_Mrecv(&seq, 1, MPI_INT, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
    std::lock_guard<std::mutex> lock(g_probe_answers_mu);
    g_probe_answers.push_back({rank_, seq});
    MPI_Request req;
    if (MPI_Isend(g_probe_answers.back().data(), 2, MPI_INT, st.MPI_SOURCE, kTagProbeAnswer, comm_, &req) ==
        MPI_SUCCESS)
      MPI_Request_free(&req);
  }
  for (;;) {
    // Matched probe: the two threads may both serve; each message is received once.
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    if (MPI_Improbe(MPI_ANY_SOURCE, kTagDumpRequest, comm_, &flag, &msg, &st) != MPI_SUCCESS || !flag) return;
    std::array<char, kReasonBytes> reason{};
    if (MPI_Mrecv(reason.data(), kReasonBytes, MPI_CHAR, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS) return;
    reason[kReasonBytes - 1] = 0;
    dump_local("dump requested by rank " + std::to_string(st.MPI_SOURCE) + ": " + reason.data());
    MPI_Request req;
    if (MPI_Isend(&g_answer_buf, 1, MPI_INT, st.MPI_SOURCE, kTagDumpAnswer, comm_, &req) == MPI_SUCCESS)
      MPI_Request_free(&req);
  }
}

std::vector<int> Watchdog::dump_all(const std::string& reason, const std::vector<int>& known_silent) {
  std::vector<int> silent;
  dump_local(reason);
  if (!cross_rank_) {
    for (int r = 0; r < size_; ++r)
      if (r != rank_) silent.push_back(r);
    return silent;
  }
  std::snprintf(g_request_buf.data(), kReasonBytes, "%s", reason.c_str());
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    MPI_Request req;
    // Never waited for: a dead rank must not hold us up.
    if (MPI_Isend(g_request_buf.data(), kReasonBytes, MPI_CHAR, r, kTagDumpRequest, comm_, &req) == MPI_SUCCESS)
      MPI_Request_free(&req);
  }
  std::vector<bool> answered(size_t(size_), false);
  answered[size_t(rank_)] = true;
  int missing = size_ - 1;
  for (int r : known_silent)  // not waited for; still reported silent unless they answer
    if (r >= 0 && r < size_ && r != rank_) --missing;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(opt_.grace_s);
  while (missing > 0 && std::chrono::steady_clock::now() < deadline) {
    serve_requests();  // another rank may be collecting at the same time
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    if (MPI_Improbe(MPI_ANY_SOURCE, kTagDumpAnswer, comm_, &flag, &msg, &st) == MPI_SUCCESS && flag) {
      int who = -1;
      MPI_Mrecv(&who, 1, MPI_INT, &msg, MPI_STATUS_IGNORE);
      if (who >= 0 && who < size_ && !answered[size_t(who)]) {
        answered[size_t(who)] = true;
        if (std::find(known_silent.begin(), known_silent.end(), who) == known_silent.end()) --missing;
      }
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int r = 0; r < size_; ++r)
    if (!answered[size_t(r)]) silent.push_back(r);
  return silent;
}

std::vector<int> Watchdog::probe_peers() {
  std::vector<int> silent;
  if (!cross_rank_) return silent;
  g_probe_buf = ++probe_seq_;
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    MPI_Request req;
    // Never waited for: a dead rank must not hold us up.
    if (MPI_Isend(&g_probe_buf, 1, MPI_INT, r, kTagProbe, comm_, &req) == MPI_SUCCESS) MPI_Request_free(&req);
  }
  std::vector<bool> answered(size_t(size_), false);
  answered[size_t(rank_)] = true;
  int missing = size_ - 1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(opt_.grace_s);
  while (missing > 0 && std::chrono::steady_clock::now() < deadline) {
    serve_requests();  // the others may be probing too
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    if (MPI_Improbe(MPI_ANY_SOURCE, kTagProbeAnswer, comm_, &flag, &msg, &st) == MPI_SUCCESS && flag) {
      std::array<int, 2> ans{-1, -1};
      MPI_Mrecv(ans.data(), 2, MPI_INT, &msg, MPI_STATUS_IGNORE);
      const int who = ans[0];
      // An answer to an earlier probe (late, but that rank was alive then) does not count.
      if (ans[1] == probe_seq_ && who >= 0 && who < size_ && !answered[size_t(who)]) {
        answered[size_t(who)] = true;
        --missing;
      }
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int r = 0; r < size_; ++r)
    if (!answered[size_t(r)]) silent.push_back(r);
  return silent;
}

void Watchdog::check_checkpoint_peers() {
  if (!cross_rank_ || opt_.timeout_s <= 0 || size_ < 2) return;
  const Ledger::Blocked b = ledger_->in_checkpoint();
  if (!b.any || b.seconds <= opt_.timeout_s) return;
  const auto now = std::chrono::steady_clock::now();
  if (last_probe_ != std::chrono::steady_clock::time_point{} &&
      std::chrono::duration<double>(now - last_probe_).count() < opt_.timeout_s)
    return;
  const std::vector<int> silent = probe_peers();
  last_probe_ = std::chrono::steady_clock::now();
  if (silent.empty()) return;  // a long save among live ranks: --checkpoint-timeout decides
  char secs[32];
  std::snprintf(secs, sizeof(secs), "%.1f", b.seconds);
  std::ostringstream head;
  head << "checkpoint stalled on rank " << ledger_->world_rank() << ": blocked " << secs << " s in "
       << ledger_->describe(b.entry) << ", and a liveness probe (sent after --collective-timeout " << opt_.timeout_s
       << ") went unanswered for " << opt_.grace_s << " s";
  abort_job(head.str(), silent);
}

void Watchdog::fire(const Ledger::Blocked& b) {
  const std::string call = ledger_->describe(b.entry);
  char secs[32];
  std::snprintf(secs, sizeof(secs), "%.1f", b.seconds);
  std::ostringstream head;
  const bool io = is_checkpoint_call(b.entry);
  head << (io ? "checkpoint" : "collective") << " timeout on rank " << ledger_->world_rank() << ": blocked " << secs
       << " s (" << (io ? "--checkpoint-timeout " : "--collective-timeout ")
       << (io ? opt_.checkpoint_timeout_s : opt_.timeout_s) << ") in " << call;
  abort_job(head.str(), {});
}

void Watchdog::abort_job(const std::string& head, const std::vector<int>& known_silent) {
  std::fprintf(stderr, "%s watchdog: %s; collecting the ranks' ledgers (up to %.0f s)\n", error_prefix().c_str(),
               head.c_str(), opt_.grace_s);
  std::fflush(stderr);
  std::vector<int> silent = dump_all(head, known_silent);
  std::ostringstream os;
  os << head << ". ";
  if (silent.empty()) {
    os << "Every rank answered";
  } else {
    os << "Rank" << (silent.size() > 1 ? "s " : " ");
    for (size_t i = 0; i < silent.size(); ++i) os << (i ? "," : "") << silent[i];
    os << (silent.size() > 1 ? " do" : " does") << " not answer (lost: killed, crashed or frozen)";
  }
  if (!opt_.dump_dir.empty())
    os << "; ledgers in " << opt_.dump_dir << " (braid-ledger " << opt_.dump_dir << " names the call where the ranks"
       << " diverged or stalled)";
  os << ". Aborting the job with exit code " << kWatchdogExitCode << ".";
  std::fprintf(stderr, "%s watchdog: %s\n", error_prefix().c_str(), os.str().c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, kWatchdogExitCode);
  std::abort();  // MPI_Abort does not return
}

void Watchdog::loop() {
  // Poll often enough that the timeout is met within a tenth of it (at most 100 ms late).
  double shortest = 1;
  for (double t : {opt_.timeout_s, opt_.checkpoint_timeout_s})
    if (t > 0) shortest = std::min(shortest, t);
  const double poll_s = std::min(0.1, shortest / 10);
  const auto poll = std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(poll_s));
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, poll, [this] { return stop_; })) {
    lock.unlock();
    if (g_dump_requested.exchange(false)) {
      dump_local("SIGUSR2");
      std::fprintf(stderr, "%s watchdog: ledger dumped to %s/rank-%d.json (SIGUSR2)\n", error_prefix().c_str(),
                   opt_.dump_dir.c_str(), ledger_->world_rank());
      std::fflush(stderr);
    }
    serve_requests();
    if (opt_.timeout_s > 0 || opt_.checkpoint_timeout_s > 0) {
      Ledger::Blocked b = ledger_->overdue(opt_.timeout_s, opt_.checkpoint_timeout_s);
      if (b.any) fire(b);
    }
    check_checkpoint_peers();
    lock.lock();
  }
}

}  // namespace braid
