// Reading the ledger dumps of all ranks (ledger.h) and naming where they went wrong:
//
// - divergence: within one group, the call with the same sequence number differs between
//   ranks (op, dtype, element count or root): the ranks that differ from the majority are
//   named, with both calls;
// - stall: a rank is blocked (longer than min_wait_s when it dumped) in a collective that
//   some members of the group never started, or in a receive whose sender never sent; the
//   ranks it waits for are named, with what they were doing instead;
// - lost ranks: members of the world without a dump (killed, crashed or frozen).
//
// braid-ledger (launch/braid_ledger.cpp) prints the report; the tests call it directly.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace braid {

struct LedgerVerdict {
  enum class Kind { Consistent, Divergence, Failed, Stall, Lost };
  Kind kind = Kind::Consistent;
  std::vector<int> ranks;  // the ranks to blame (diverging, not arrived, or lost)
  std::string group;       // "world[0,1,2,3]"
  int64_t seq = -1;        // the call's sequence number in that group (-1: point to point / none)
  std::string summary;     // one line for a person
};

struct LedgerReport {
  int world_size = 0;
  std::vector<int> lost;             // ranks without a dump
  std::vector<std::string> details;  // every finding, earliest first
  LedgerVerdict verdict;  // the first divergence, else a failed rank, else the stall at the end
                          // of the chain of waits, else lost ranks
};

// Reads DIR/rank-*.json; InputError naming the file for anything malformed.
std::map<int, nlohmann::json> read_ledger_dumps(const std::string& dir);
LedgerReport analyze_ledgers(const std::map<int, nlohmann::json>& dumps, double min_wait_s = 1.0);

}  // namespace braid
