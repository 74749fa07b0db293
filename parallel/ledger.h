// The collective ledger: each rank keeps a fixed-size ring of its most recent
// communication calls (collectives and point-to-point), so that when a job stalls or two
// ranks disagree about the order of collectives, the dumps of all ranks show where.
//
// One Ledger per rank, shared by every group of that rank (make_process_groups wraps each
// group in a LedgerCommunicator, ledger_communicator.h). An entry records the group, the
// call's sequence number in that group (collectives only: the k-th collective of a group
// is the same call on every member of a correct program), the op, element count, dtype,
// root or peer, tag, and start / wait / finish times. Recording takes a short mutex and
// never allocates; the watchdog thread reads the ring concurrently.
//
// Dumps are JSON (`<dir>/rank-<R>.json`, written to a temporary name then renamed) and
// are read by braid-ledger (ledger_analysis.h).
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace braid {

enum class CallState : uint8_t { Issued, Waiting, Finished, Failed };

struct LedgerEntry {
  uint64_t ordinal = 0;  // 1-based position in this rank's ledger; 0: empty slot
  int32_t group = -1;    // index into the ledger's group table
  int64_t seq = -1;      // collectives: k-th collective of the group; point-to-point: -1
  const char* op = "";   // static strings only (no allocation per call)
  const char* dtype = "";
  int64_t count = 0;     // elements (-1: not known before the call, e.g. broadcast_string)
  int32_t peer = -1;     // world rank: broadcast root or point-to-point peer
  int32_t tag = -1;
  int64_t start_us = 0, wait_us = 0, finish_us = 0;  // wall clock, microseconds since the epoch
  CallState state = CallState::Issued;
};

// A group as seen by this rank: its name and members (ranks of the world the ledger was
// made over, in group-rank order). Two ranks' groups are the same group when name and
// members agree.
struct LedgerGroup {
  std::string name;
  std::vector<int> members;
};

class Ledger {
 public:
  static constexpr size_t kDefaultCapacity = 4096;
  Ledger(int world_rank, int world_size, size_t capacity = kDefaultCapacity);

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // Registers a group (at group creation, not per call); returns its index.
  int add_group(const std::string& name, std::vector<int> members);

  // Records a call on the calling thread. A blocking call is Waiting from its start; a
  // non-blocking one is Issued until wait_begin(). Returns the ordinal for the others.
  uint64_t begin(int group, int64_t seq, const char* op, int64_t count, const char* dtype,
                 int peer, int tag, bool blocking);
  void wait_begin(uint64_t ordinal);
  void finish(uint64_t ordinal, bool ok);

  // The call this rank is blocked in (the oldest Waiting entry), if any, and for how long.
  struct Blocked {
    bool any = false;
    LedgerEntry entry;
    double seconds = 0;
  };
  Blocked blocked() const;
  // The longest-waiting call whose wait exceeds its limit: `io_limit_s` for checkpoint
  // saves and loads (ops "checkpoint_*"), `limit_s` for every other call; <= 0 = no limit.
  Blocked overdue(double limit_s, double io_limit_s) const;
  // The checkpoint save or load this rank is in (Waiting), if any, and for how long.
  Blocked in_checkpoint() const;
  // "call #57 of group tp[0,1]: all_reduce_sum f32 x 4096"
  std::string describe(const LedgerEntry& e) const;

  nlohmann::json to_json(const std::string& reason) const;
  // Writes <dir>/rank-<world_rank>.json (directories created); returns the path.
  std::string dump(const std::string& dir, const std::string& reason) const;

 private:
  LedgerEntry* find(uint64_t ordinal);  // nullptr once overwritten
  template <class F>
  Blocked longest_wait(F counts) const;
  std::string group_label(int g) const;

  int world_rank_, world_size_;
  mutable std::mutex mu_;
  std::vector<LedgerEntry> ring_;  // fixed size, allocated once
  uint64_t next_ = 1;
  std::vector<LedgerGroup> groups_;
  // Steady-clock start of waiting, per slot (the watchdog must not trip over clock steps).
  std::vector<std::chrono::steady_clock::time_point> wait_steady_;
};

const char* call_state_name(CallState s);
bool is_checkpoint_call(const LedgerEntry& e);  // a whole checkpoint save or load
int64_t wall_clock_us();

}  // namespace braid
