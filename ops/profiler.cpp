#include "ops/profiler.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "ops/check.h"
#ifdef BRAID_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace braid::prof {
namespace {

struct Mark {
  int name = -1;  // index into names for an opening mark, -1 for a closing one
  double host_ms = 0;
#ifdef BRAID_HAVE_CUDA
  cudaEvent_t event = nullptr;
#endif
};

struct State {
  bool on = false;
  void* stream = nullptr;
  int depth = 0;
  std::vector<Mark> marks;
  std::vector<std::string> names;
  std::map<std::string, int, std::less<>> name_index;
#ifdef BRAID_HAVE_CUDA
  std::vector<cudaEvent_t> pool;  // events reused across collects
  size_t pool_used = 0;
#endif
  std::chrono::steady_clock::time_point t0;
};

State& state() {
  static State s;
  return s;
}

void add_mark(State& s, int name) {
  Mark m;
  m.name = name;
#ifdef BRAID_HAVE_CUDA
  if (s.stream) {
    if (s.pool_used == s.pool.size()) {
      cudaEvent_t e = nullptr;
      BRAID_CHECK(cudaEventCreate(&e) == cudaSuccess, "profiler: cudaEventCreate failed");
      s.pool.push_back(e);
    }
    m.event = s.pool[s.pool_used++];
    BRAID_CHECK(cudaEventRecord(m.event, static_cast<cudaStream_t>(s.stream)) == cudaSuccess,
                "profiler: cudaEventRecord failed");
    s.marks.push_back(m);
    return;
  }
#endif
  m.host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s.t0).count();
  s.marks.push_back(m);
}

double elapsed_ms(const State& s, const Mark& a, const Mark& b) {
#ifdef BRAID_HAVE_CUDA
  if (s.stream) {
    float ms = 0;
    BRAID_CHECK(cudaEventElapsedTime(&ms, a.event, b.event) == cudaSuccess, "profiler: cudaEventElapsedTime failed");
    return ms;
  }
#endif
  (void)s;
  return b.host_ms - a.host_ms;
}

}  // namespace

void start(void* cuda_stream) {
  State& s = state();
  BRAID_CHECK(!s.on, "profiler: start() while profiling");
#ifndef BRAID_HAVE_CUDA
  BRAID_CHECK(cuda_stream == nullptr, "profiler: a CUDA stream in a build without CUDA");
#endif
  s.on = true;
  s.stream = cuda_stream;
  s.depth = 0;
  s.marks.clear();
  s.t0 = std::chrono::steady_clock::now();
}

bool active() { return state().on; }

Scope::Scope(std::string_view name) {
  State& s = state();
  if (!s.on) return;
  if (s.depth == 0) {
    auto it = s.name_index.find(name);
    if (it == s.name_index.end()) {
      it = s.name_index.emplace(std::string(name), int(s.names.size())).first;
      s.names.push_back(it->first);
    }
    add_mark(s, it->second);  // may throw: then this Scope counts for nothing
    recorded_ = true;
  }
  ++s.depth;
  counted_ = true;
}

Scope::~Scope() {
  if (!counted_) return;
  State& s = state();
  --s.depth;
  if (!recorded_ || !s.on) return;
  try {
    add_mark(s, -1);
  } catch (...) {
    // A destructor must not throw (the run may be unwinding from the error that made the
    // event record fail): profiling stops, and collect() says it was not running.
    s.on = false;
    s.marks.clear();
  }
}

Report collect() {
  State& s = state();
  BRAID_CHECK(s.on, "profiler: collect() without start(), or profiling stopped by an error");
  BRAID_CHECK(s.depth == 0, "profiler: collect() inside a Scope");
  struct Stop {  // profiling ends here whether or not the report can be made
    State& s;
    ~Stop() {
      s.on = false;
      s.marks.clear();
#ifdef BRAID_HAVE_CUDA
      s.pool_used = 0;
#endif
    }
  } stop{s};
#ifdef BRAID_HAVE_CUDA
  if (s.stream)
    BRAID_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(s.stream)) == cudaSuccess,
                "profiler: cudaStreamSynchronize failed");
#endif
  std::vector<Entry> per_name(s.names.size());
  Report r;
  for (size_t i = 0; i < s.marks.size(); ++i) {
    const Mark& m = s.marks[i];
    if (i + 1 < s.marks.size()) {
      const double ms = elapsed_ms(s, m, s.marks[i + 1]);
      if (m.name >= 0) {  // an opening mark: the next one closes it (top-level Scopes only)
        per_name[m.name].ms += ms;
        per_name[m.name].calls += 1;
      } else {
        r.idle_ms += ms;
      }
      r.span_ms += ms;
    }
  }
  for (size_t i = 0; i < per_name.size(); ++i) {
    if (per_name[i].calls == 0) continue;
    per_name[i].name = s.names[i];
    r.entries.push_back(per_name[i]);
  }
  std::sort(r.entries.begin(), r.entries.end(), [](const Entry& a, const Entry& b) { return a.ms > b.ms; });
  return r;
}

}  // namespace braid::prof
