#include "parallel/collective_check.h"

#include "parallel/mpi_check.h"

namespace braid {

void run_collectively(Communicator& world, const std::function<void()>& fn) {
  std::string msg;
  bool input_error = true;
  try {
    fn();
  } catch (const InputError& e) {
    msg = e.what();
  } catch (const std::exception& e) {
    msg = e.what();
    input_error = false;
  }
  if (world.size() == 1) {
    if (msg.empty()) return;
    if (input_error) throw InputError(msg);
    throw Error("braid", 0, msg);
  }
  // Lowest failing rank: MIN over (rank if failed else world size), done as MAX of negatives.
  int64_t key = msg.empty() ? -int64_t(world.size()) : -int64_t(world.rank());
  all_reduce_int64(world, &key, 1, ReduceOp::Max);
  int first_bad = int(-key);
  if (first_bad == world.size()) return;
  int64_t kind = input_error ? 1 : 0;
  std::string shared = msg;
  broadcast_string(world, shared, first_bad);
  int64_t shared_kind = kind;
  BRAID_CHECK_MPI(MPI_Bcast(&shared_kind, 1, MPI_INT64_T, first_bad, control_comm(world)));
  if (shared_kind) throw InputError(shared);
  throw Error("braid", 0, shared);
}

}  // namespace braid
