#include "parallel/ledger.h"

#include <cstring>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "ops/check.h"

namespace fs = std::filesystem;

namespace braid {

const char* call_state_name(CallState s) {
  switch (s) {
    case CallState::Issued: return "issued";
    case CallState::Waiting: return "waiting";
    case CallState::Finished: return "finished";
    case CallState::Failed: return "failed";
  }
  return "?";
}

int64_t wall_clock_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Ledger::Ledger(int world_rank, int world_size, size_t capacity)
    : world_rank_(world_rank), world_size_(world_size), ring_(std::max<size_t>(capacity, 1)),
      wait_steady_(ring_.size()) {}

int Ledger::add_group(const std::string& name, std::vector<int> members) {
  std::lock_guard<std::mutex> lock(mu_);
  groups_.push_back({name, std::move(members)});
  return int(groups_.size()) - 1;
}

uint64_t Ledger::begin(int group, int64_t seq, const char* op, int64_t count, const char* dtype,
                       int peer, int tag, bool blocking) {
  const int64_t now = wall_clock_us();
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t ord = next_++;
  const size_t slot = size_t(ord % ring_.size());
  LedgerEntry& e = ring_[slot];
  e.ordinal = ord;
  e.group = group;
  e.seq = seq;
  e.op = op;
  e.dtype = dtype;
  e.count = count;
  e.peer = peer;
  e.tag = tag;
  e.start_us = now;
  e.wait_us = blocking ? now : 0;
  e.finish_us = 0;
  e.state = blocking ? CallState::Waiting : CallState::Issued;
  if (blocking) wait_steady_[slot] = std::chrono::steady_clock::now();
  return ord;
}

LedgerEntry* Ledger::find(uint64_t ordinal) {
  LedgerEntry& e = ring_[size_t(ordinal % ring_.size())];
  return e.ordinal == ordinal ? &e : nullptr;
}

void Ledger::wait_begin(uint64_t ordinal) {
  std::lock_guard<std::mutex> lock(mu_);
  if (LedgerEntry* e = find(ordinal); e && e->state == CallState::Issued) {
    e->state = CallState::Waiting;
    e->wait_us = wall_clock_us();
    wait_steady_[size_t(ordinal % ring_.size())] = std::chrono::steady_clock::now();
  }
}

void Ledger::finish(uint64_t ordinal, bool ok) {
  const int64_t now = wall_clock_us();
  std::lock_guard<std::mutex> lock(mu_);
  if (LedgerEntry* e = find(ordinal)) {
    e->state = ok ? CallState::Finished : CallState::Failed;
    e->finish_us = now;
  }
}

// The longest-waiting call among those whose wait (seconds) `counts` accepts.
template <class F>
Ledger::Blocked Ledger::longest_wait(F counts) const {
  Blocked b;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < ring_.size(); ++i) {
    const LedgerEntry& e = ring_[i];
    if (e.ordinal == 0 || e.state != CallState::Waiting) continue;
    const double s = std::chrono::duration<double>(now - wait_steady_[i]).count();
    if (counts(e, s) && (!b.any || s > b.seconds)) {
      b.any = true;
      b.entry = e;
      b.seconds = s;
    }
  }
  return b;
}

Ledger::Blocked Ledger::blocked() const {
  return longest_wait([](const LedgerEntry&, double) { return true; });
}

bool is_checkpoint_call(const LedgerEntry& e) { return std::strncmp(e.op, "checkpoint_", 11) == 0; }

Ledger::Blocked Ledger::overdue(double limit_s, double io_limit_s) const {
  return longest_wait([&](const LedgerEntry& e, double s) {
    const double limit = is_checkpoint_call(e) ? io_limit_s : limit_s;
    return limit > 0 && s > limit;
  });
}

Ledger::Blocked Ledger::in_checkpoint() const {
  return longest_wait([](const LedgerEntry& e, double) { return is_checkpoint_call(e); });
}

std::string Ledger::group_label(int g) const {
  if (g < 0 || g >= int(groups_.size())) return "?";
  std::ostringstream os;
  os << groups_[size_t(g)].name << "[";
  const auto& m = groups_[size_t(g)].members;
  for (size_t i = 0; i < m.size(); ++i) os << (i ? "," : "") << m[i];
  os << "]";
  return os.str();
}

std::string Ledger::describe(const LedgerEntry& e) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream os;
  if (e.seq >= 0) os << "call #" << e.seq << " of group " << group_label(e.group) << ": ";
  else os << "point-to-point in group " << group_label(e.group) << ": ";
  os << e.op << " " << e.dtype << " x " << e.count;
  if (e.peer >= 0) os << (e.seq >= 0 ? " root " : " peer rank ") << e.peer;
  if (e.tag >= 0) os << " tag " << e.tag;
  return os.str();
}

nlohmann::json Ledger::to_json(const std::string& reason) const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json j;
  j["format"] = "braid-ledger";
  j["version"] = 1;
  j["rank"] = world_rank_;
  j["world_size"] = world_size_;
  j["reason"] = reason;
  j["dumped_us"] = wall_clock_us();
  j["capacity"] = ring_.size();
  nlohmann::json gs = nlohmann::json::array();
  for (const LedgerGroup& g : groups_) gs.push_back({{"name", g.name}, {"members", g.members}});
  j["groups"] = gs;
  // Entries oldest first.
  nlohmann::json es = nlohmann::json::array();
  const uint64_t first = next_ > ring_.size() ? next_ - ring_.size() : 1;
  for (uint64_t o = first; o < next_; ++o) {
    const LedgerEntry& e = ring_[size_t(o % ring_.size())];
    if (e.ordinal != o) continue;
    nlohmann::json x;
    x["ordinal"] = e.ordinal;
    x["group"] = e.group;
    x["seq"] = e.seq;
    x["op"] = e.op;
    x["dtype"] = e.dtype;
    x["count"] = e.count;
    x["peer"] = e.peer;
    x["tag"] = e.tag;
    x["start_us"] = e.start_us;
    x["wait_us"] = e.wait_us;
    x["finish_us"] = e.finish_us;
    x["state"] = call_state_name(e.state);
    es.push_back(std::move(x));
  }
  j["entries"] = es;
  return j;
}

std::string Ledger::dump(const std::string& dir, const std::string& reason) const {
  nlohmann::json j = to_json(reason);
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string path = (fs::path(dir) / ("rank-" + std::to_string(world_rank_) + ".json")).string();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    BRAID_CHECK(f.good(), "cannot write the ledger dump " << tmp);
    f << j.dump(1) << "\n";
    f.flush();
    BRAID_CHECK(f.good(), "writing the ledger dump " << tmp << " failed");
  }
  fs::rename(tmp, path, ec);
  BRAID_CHECK(!ec, "cannot rename " << tmp << " to " << path << ": " << ec.message());
  return path;
}

}  // namespace braid
