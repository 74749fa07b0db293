// braid-ledger: reads the collective-ledger dumps of every rank (OUT/ledger/rank-N.json,
// written on a watchdog timeout, a fatal error or SIGUSR2) and names the rank and call
// where the ranks diverged or stalled.
//   build/bin/braid-ledger out/run/ledger
// Exit code: 0 a divergence, stall or lost rank was found; 1 the ledgers agree; 2 bad input.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ops/check.h"
#include "parallel/ledger_analysis.h"

int main(int argc, char** argv) {
  using namespace braid;
  std::string dir;
  double min_wait = 1.0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf("Usage: braid-ledger DIR [--min-wait SECONDS]\n"
                  "Reads DIR/rank-N.json (braid-train's ledger dumps) and names the first call where the ranks\n"
                  "diverged (same sequence number in a group, different op, dtype, count or root) or the call\n"
                  "they are stalled in and the ranks that never reached it. --min-wait: calls blocked for less\n"
                  "than this when dumped are not stalls (default 1 s).\n"
                  "Exit code: 0 a divergence, stall or lost rank was found; 1 the ledgers agree; 2 bad input.\n");
      return 0;
    }
    if (!std::strcmp(argv[i], "--min-wait") && i + 1 < argc) {
      min_wait = std::atof(argv[++i]);
    } else if (dir.empty() && argv[i][0] != '-') {
      dir = argv[i];
    } else {
      std::fprintf(stderr, "braid-ledger: error: unexpected argument '%s' (see --help)\n", argv[i]);
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "braid-ledger: error: give the ledger directory (OUT/ledger of the run)\n");
    return 2;
  }
  try {
    auto dumps = read_ledger_dumps(dir);
    LedgerReport rep = analyze_ledgers(dumps, min_wait);
    std::printf("braid-ledger: %zu ledger(s) in %s, world of %d\n", dumps.size(), dir.c_str(), rep.world_size);
    for (const std::string& d : rep.details) std::printf("  %s\n", d.c_str());
    std::printf("verdict: %s\n", rep.verdict.summary.c_str());
    if (rep.verdict.kind == LedgerVerdict::Kind::Consistent) return 1;
    std::printf("blame: rank%s", rep.verdict.ranks.size() > 1 ? "s " : " ");
    for (size_t i = 0; i < rep.verdict.ranks.size(); ++i) std::printf("%s%d", i ? "," : "", rep.verdict.ranks[i]);
    if (rep.verdict.seq >= 0) std::printf(" at call #%lld of group %s", static_cast<long long>(rep.verdict.seq),
                                          rep.verdict.group.c_str());
    std::printf("\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "braid-ledger: error: %s\n", e.what());
    return 2;
  }
}
