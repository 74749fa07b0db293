// Step profiler: where a training step's time goes, op by op, on the device that runs it.
// Off unless start() is called (braid-bench --profile N); then every Scope at the top level
// (Scopes inside another Scope add nothing) records a mark when it opens and when it
// closes: a CUDA event on the compute stream (its time is when the stream reaches it) or,
// on the CPU, the host clock. collect() turns consecutive marks into intervals: the time
// inside a Scope is charged to its name; the time between one Scope's close and the next
// one's open is the stream's idle time (the host launching, a host synchronisation,
// legacy-stream copies, a wait on another stream that no Scope names).
// Scopes are opened by the profiling backend (framework/profiling_backend.cpp, one per
// op call), the optimizer, and the communicators where the compute stream waits for a
// collective ("wait <group>").
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace braid::prof {

// cuda_stream: the compute stream (a cudaStream_t), or nullptr for the host clock.
void start(void* cuda_stream);
bool active();

class Scope {
 public:
  explicit Scope(std::string_view name);  // costs one branch while profiling is off
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool counted_ = false, recorded_ = false;
};

struct Entry {
  std::string name;
  double ms = 0;      // total over the profiled steps
  int64_t calls = 0;  // total over the profiled steps
};
struct Report {
  std::vector<Entry> entries;  // by time, largest first
  double idle_ms = 0;          // between Scopes
  double span_ms = 0;          // first mark to last mark: sum of entries + idle_ms
};
// Waits for the stream, turns the marks since start() into a Report and stops profiling.
Report collect();

}  // namespace braid::prof
