#include "parallel/ledger_analysis.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "ops/check.h"

namespace fs = std::filesystem;

namespace braid {

namespace {

struct Call {
  int rank = -1;
  std::string group;  // "name[members]"
  int64_t seq = -1;
  std::string op, dtype, state;
  int64_t count = 0;
  int peer = -1, tag = -1;
  int64_t start_us = 0, wait_us = 0;
  bool waiting() const { return state == "waiting"; }
};

struct RankLedger {
  int rank = -1;
  int64_t dumped_us = 0;
  std::string reason;  // why it dumped
  std::vector<Call> calls;                                  // oldest first
  std::map<std::string, std::vector<int>> group_members;    // group key -> world ranks
  std::map<std::string, std::map<int64_t, const Call*>> by_seq;  // collectives per group
};

std::string join(const std::vector<int>& v, const char* sep = ",") {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? sep : "") << v[i];
  return os.str();
}

std::string ranks_phrase(const std::vector<int>& v) {
  return (v.size() == 1 ? "rank " : "ranks ") + join(v);
}

std::string signature(const Call& c) {
  std::ostringstream os;
  os << c.op << " " << c.dtype << " x " << (c.count >= 0 ? std::to_string(c.count) : std::string("?"));
  if (c.peer >= 0) os << (c.seq >= 0 ? " root " : (c.op == "recv" ? " from rank " : " to rank ")) << c.peer;
  if (c.tag >= 0) os << " tag " << c.tag;
  return os.str();
}

bool same_call(const Call& a, const Call& b) {
  return a.op == b.op && a.dtype == b.dtype && a.peer == b.peer && (a.count < 0 || b.count < 0 || a.count == b.count);
}

std::string where(const Call& c) {
  if (c.seq >= 0) return "call #" + std::to_string(c.seq) + " of group " + c.group;
  return "point-to-point in group " + c.group;
}

double waited_s(const RankLedger& l, const Call& c) { return double(l.dumped_us - c.wait_us) * 1e-6; }

// What a rank was doing at its dump: its blocked call, else its last call.
std::string activity(const RankLedger& l) {
  const Call* blocked = nullptr;
  for (const Call& c : l.calls)
    if (c.waiting() && (!blocked || c.wait_us < blocked->wait_us)) blocked = &c;
  std::ostringstream os;
  if (blocked) {
    char s[32];
    std::snprintf(s, sizeof(s), "%.1f", waited_s(l, *blocked));
    os << "blocked " << s << " s in " << where(*blocked) << " (" << signature(*blocked) << ")";
  } else if (!l.calls.empty()) {
    const Call& c = l.calls.back();
    os << "not in a communication call; its last was " << where(c) << " (" << signature(c) << ", " << c.state << ")";
  } else {
    os << "no calls recorded";
  }
  return os.str();
}

RankLedger parse_dump(const nlohmann::json& j) {
  RankLedger l;
  l.rank = j.at("rank").get<int>();
  l.dumped_us = j.at("dumped_us").get<int64_t>();
  l.reason = j.at("reason").get<std::string>();
  std::vector<std::string> keys;
  for (const auto& g : j.at("groups")) {
    std::vector<int> members = g.at("members").get<std::vector<int>>();
    std::string key = g.at("name").get<std::string>() + "[" + join(members) + "]";
    l.group_members[key] = members;
    keys.push_back(key);
  }
  for (const auto& e : j.at("entries")) {
    Call c;
    c.rank = l.rank;
    int g = e.at("group").get<int>();
    BRAID_REQUIRE(g >= 0 && g < int(keys.size()), "entry names group " << g << " of " << keys.size());
    c.group = keys[size_t(g)];
    c.seq = e.at("seq").get<int64_t>();
    c.op = e.at("op").get<std::string>();
    c.dtype = e.at("dtype").get<std::string>();
    c.count = e.at("count").get<int64_t>();
    c.peer = e.at("peer").get<int>();
    c.tag = e.at("tag").get<int>();
    c.start_us = e.at("start_us").get<int64_t>();
    c.wait_us = e.at("wait_us").get<int64_t>();
    c.state = e.at("state").get<std::string>();
    l.calls.push_back(std::move(c));
  }
  return l;
}

// Collectives by group and sequence number (pointers into l.calls: call once l is in place).
void index_calls(RankLedger& l) {
  for (const Call& c : l.calls)
    if (c.seq >= 0) l.by_seq[c.group][c.seq] = &c;
}

struct Divergence {
  std::string group;
  int64_t seq = -1, start_us = 0;
  std::vector<int> blamed;
  std::string text;
};

// The first call of `group` whose signature differs between the ranks that recorded it.
bool find_divergence(const std::string& group, const std::map<int, RankLedger>& ledgers, Divergence& out) {
  std::vector<const RankLedger*> have;
  for (const auto& [r, l] : ledgers)
    if (auto it = l.by_seq.find(group); it != l.by_seq.end() && !it->second.empty()) have.push_back(&l);
  if (have.size() < 2) return false;
  int64_t lo = INT64_MIN, hi = INT64_MAX;
  for (const RankLedger* l : have) {
    const auto& m = l->by_seq.at(group);
    lo = std::max(lo, m.begin()->first);
    hi = std::min(hi, m.rbegin()->first);
  }
  for (int64_t s = lo; s <= hi; ++s) {
    std::vector<const Call*> calls;
    for (const RankLedger* l : have) {
      const auto& m = l->by_seq.at(group);
      if (auto it = m.find(s); it != m.end()) calls.push_back(it->second);
    }
    bool all_same = true;
    for (const Call* c : calls) all_same = all_same && same_call(*c, *calls[0]);
    if (all_same) continue;
    // Group the ranks by what they called; blame those outside the largest class (all of
    // them when no class is larger than the others).
    std::vector<std::vector<const Call*>> classes;
    for (const Call* c : calls) {
      auto it = std::find_if(classes.begin(), classes.end(), [&](auto& k) { return same_call(*k[0], *c); });
      if (it == classes.end()) classes.push_back({c});
      else it->push_back(c);
    }
    std::sort(classes.begin(), classes.end(), [](auto& a, auto& b) { return a.size() > b.size(); });
    const bool majority = classes[0].size() > classes[1].size();
    out.group = group;
    out.seq = s;
    out.start_us = INT64_MAX;
    for (const Call* c : calls) out.start_us = std::min(out.start_us, c->start_us);
    std::ostringstream os;
    os << "divergence at call #" << s << " of group " << group << ":";
    for (size_t k = 0; k < classes.size(); ++k) {
      std::vector<int> rs;
      for (const Call* c : classes[k]) rs.push_back(c->rank);
      std::sort(rs.begin(), rs.end());
      if (k > 0 || !majority) out.blamed.insert(out.blamed.end(), rs.begin(), rs.end());
      os << (k ? ";" : "") << " " << ranks_phrase(rs) << " called " << signature(*classes[k][0]);
    }
    std::sort(out.blamed.begin(), out.blamed.end());
    out.text = os.str();
    return true;
  }
  return false;
}

struct Stall {
  std::string group;
  int64_t seq = -1, wait_us = 0;
  std::vector<int> waiting, blamed, lost;
  std::string text;
};

}  // namespace

std::map<int, nlohmann::json> read_ledger_dumps(const std::string& dir) {
  BRAID_REQUIRE(fs::is_directory(dir), "ledger directory " << dir << " does not exist");
  std::map<int, nlohmann::json> dumps;
  const std::regex name("rank-([0-9]+)\\.json");
  for (const auto& ent : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string fname = ent.path().filename().string();
    if (!std::regex_match(fname, m, name)) continue;
    std::ifstream f(ent.path());
    BRAID_REQUIRE(f.good(), "cannot read " << ent.path().string());
    try {
      nlohmann::json j = nlohmann::json::parse(f);
      BRAID_REQUIRE(j.value("format", "") == "braid-ledger", "not a braid ledger dump");
      parse_dump(j);  // validates every field
      const int rank = j.at("rank").get<int>();
      BRAID_REQUIRE(std::to_string(rank) == m[1].str(), "holds the ledger of rank " << rank);
      dumps[rank] = std::move(j);
    } catch (const nlohmann::json::exception& e) {
      throw InputError(ent.path().string() + " is not a valid ledger dump: " + e.what());
    } catch (const InputError& e) {
      throw InputError(ent.path().string() + ": " + e.what());
    }
  }
  BRAID_REQUIRE(!dumps.empty(), "no ledger dumps (rank-N.json) in " << dir);
  return dumps;
}

LedgerReport analyze_ledgers(const std::map<int, nlohmann::json>& dumps, double min_wait_s) {
  LedgerReport rep;
  std::map<int, RankLedger> ledgers;
  for (const auto& [r, j] : dumps) {
    ledgers[r] = parse_dump(j);
    index_calls(ledgers[r]);
    rep.world_size = std::max(rep.world_size, j.at("world_size").get<int>());
  }
  for (int r = 0; r < rep.world_size; ++r)
    if (!ledgers.count(r)) rep.lost.push_back(r);
  if (!rep.lost.empty())
    rep.details.push_back(ranks_phrase(rep.lost) + " left no ledger (killed, crashed or frozen)");
  int64_t first_dump = INT64_MAX, last_dump = INT64_MIN;
  for (const auto& [r, l] : ledgers) {
    first_dump = std::min(first_dump, l.dumped_us);
    last_dump = std::max(last_dump, l.dumped_us);
  }
  if (last_dump - first_dump > int64_t(60e6))
    rep.details.push_back("the dumps were written " + std::to_string((last_dump - first_dump) / 1000000) +
                          " s apart: some may come from an earlier event");

  std::vector<int> failed;
  std::string failure;
  for (const auto& [r, l] : ledgers)
    if (l.reason.rfind("fatal error", 0) == 0) {
      failed.push_back(r);
      if (failure.empty()) failure = l.reason;
      rep.details.push_back("rank " + std::to_string(r) + " stopped on a " + l.reason);
    }

  // Divergences: the earliest over all groups.
  std::set<std::string> groups;
  for (const auto& [r, l] : ledgers)
    for (const auto& [k, m] : l.group_members) groups.insert(k);
  std::vector<Divergence> divs;
  for (const std::string& g : groups) {
    Divergence d;
    if (find_divergence(g, ledgers, d)) divs.push_back(d);
  }
  std::sort(divs.begin(), divs.end(), [](auto& a, auto& b) { return a.start_us < b.start_us; });
  for (const Divergence& d : divs) rep.details.push_back(d.text);

  // Stalls: blocked calls, merged over the ranks blocked in the same collective.
  std::map<std::pair<std::string, int64_t>, Stall> stalls;  // collectives
  std::vector<Stall> p2p;
  for (const auto& [r, l] : ledgers) {
    for (const Call& c : l.calls) {
      if (!c.waiting() || waited_s(l, c) < min_wait_s) continue;
      if (c.seq >= 0) {
        Stall& s = stalls[{c.group, c.seq}];
        if (s.waiting.empty()) {
          s.group = c.group;
          s.seq = c.seq;
          s.wait_us = c.wait_us;
          s.text = "call #" + std::to_string(c.seq) + " of group " + c.group + " (" + signature(c) + ")";
        }
        s.wait_us = std::min(s.wait_us, c.wait_us);
        s.waiting.push_back(r);
        for (int m : l.group_members.at(c.group)) {
          if (m == r) continue;
          auto it = ledgers.find(m);
          if (it == ledgers.end()) {
            if (std::find(s.lost.begin(), s.lost.end(), m) == s.lost.end()) s.lost.push_back(m);
            continue;
          }
          const auto& seqs = it->second.by_seq;
          auto g = seqs.find(c.group);
          const bool started = g != seqs.end() && !g->second.empty() && g->second.rbegin()->first >= c.seq;
          if (!started && std::find(s.blamed.begin(), s.blamed.end(), m) == s.blamed.end()) s.blamed.push_back(m);
        }
      } else if (c.peer >= 0) {
        Stall s;
        s.group = c.group;
        s.wait_us = c.wait_us;
        s.waiting = {r};
        if (ledgers.count(c.peer)) s.blamed = {c.peer};
        else s.lost = {c.peer};
        s.text = "rank " + std::to_string(r) + "'s " + signature(c) + " in group " + c.group;
        p2p.push_back(s);
      }
    }
  }
  std::vector<Stall> all;
  for (auto& [k, s] : stalls) all.push_back(s);
  all.insert(all.end(), p2p.begin(), p2p.end());
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.wait_us < b.wait_us; });
  for (Stall& s : all) {
    std::sort(s.waiting.begin(), s.waiting.end());
    std::sort(s.blamed.begin(), s.blamed.end());
    std::sort(s.lost.begin(), s.lost.end());
    std::ostringstream os;
    os << "stall in " << s.text << ": " << ranks_phrase(s.waiting) << " waiting";
    for (int b : s.blamed) os << "; rank " << b << " never reached it (" << activity(ledgers.at(b)) << ")";
    if (!s.lost.empty()) os << "; " << ranks_phrase(s.lost) << " lost (no ledger)";
    if (s.blamed.empty() && s.lost.empty()) os << "; every member reached it (still in flight, or the transport is stuck)";
    rep.details.push_back(os.str());
  }

  LedgerVerdict& v = rep.verdict;
  if (!divs.empty()) {
    v.kind = LedgerVerdict::Kind::Divergence;
    v.ranks = divs[0].blamed;
    v.group = divs[0].group;
    v.seq = divs[0].seq;
    v.summary = divs[0].text;
  } else if (!failed.empty()) {
    v.kind = LedgerVerdict::Kind::Failed;
    v.ranks = failed;
    v.summary = ranks_phrase(failed) + " failed (" + failure + ")";
  } else if (!all.empty()) {
    // Follow the chain of waits from the earliest stall to the ranks at its end: lost ones,
    // ones busy outside communication, or a cycle (ranks waiting for each other in calls
    // they issued in different orders: a deadlock).
    std::vector<const Stall*> path{&all[0]};
    const Stall* repeat = nullptr;
    while (path.back()->lost.empty() && !repeat) {
      const Stall* next = nullptr;
      for (int b : path.back()->blamed)
        for (const Stall& t : all)
          if (!next && std::find(t.waiting.begin(), t.waiting.end(), b) != t.waiting.end()) next = &t;
      if (!next) break;
      if (std::find(path.begin(), path.end(), next) != path.end()) repeat = next;
      else path.push_back(next);
    }
    const Stall* s = repeat ? repeat : path.back();
    v.group = s->group;
    v.seq = s->seq;
    std::ostringstream os;
    if (repeat) {
      v.kind = LedgerVerdict::Kind::Stall;
      os << "deadlock: a cycle of waits:";
      std::set<int> blamed;
      for (auto it = std::find(path.begin(), path.end(), repeat); it != path.end(); ++it) {
        os << " " << (*it)->text << " (" << ranks_phrase((*it)->waiting) << ") waits for " << ranks_phrase((*it)->blamed)
           << ";";
        blamed.insert((*it)->blamed.begin(), (*it)->blamed.end());
      }
      os << " the ranks issued these calls in different orders";
      v.ranks.assign(blamed.begin(), blamed.end());
    } else {
      v.kind = s->lost.empty() ? LedgerVerdict::Kind::Stall : LedgerVerdict::Kind::Lost;
      v.ranks = s->lost.empty() ? s->blamed : s->lost;
      os << "stall in " << s->text << ": " << ranks_phrase(s->waiting) << " waiting for ";
      if (!s->lost.empty()) os << "lost " << ranks_phrase(s->lost);
      else if (!s->blamed.empty()) os << ranks_phrase(s->blamed) << " (" << activity(ledgers.at(s->blamed[0])) << ")";
      else os << "the transport (every member reached it)";
    }
    v.summary = os.str();
  } else if (!rep.lost.empty()) {
    v.kind = LedgerVerdict::Kind::Lost;
    v.ranks = rep.lost;
    v.summary = ranks_phrase(rep.lost) + " left no ledger";
  } else {
    v.summary = "no divergence and no stalled call: the ledgers of all " + std::to_string(rep.world_size) +
                " ranks agree";
  }
  return rep;
}

}  // namespace braid
