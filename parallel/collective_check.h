// Collective validation: every rank runs the same check; if any rank fails, every rank
// throws the same InputError carrying the message of the lowest failing rank. So a bad
// input gives one clear message on every rank and a clean non-zero exit, never a hang of
// the ranks that happened to pass while another one stopped.
#pragma once
#include <functional>

#include "parallel/communicator.h"

namespace braid {
void run_collectively(Communicator& world, const std::function<void()>& fn);
}  // namespace braid
