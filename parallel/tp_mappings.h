// Tensor-parallel communication primitives (Megatron's "mappings"), each a forward/backward
// pair over the TP group. Activations are [B, T, C] row-major; with sequence parallelism
// a rank holds the sequence slice [B, T/TP, C] (rows t in [tp*Ts, (tp+1)*Ts) of every
// sample) in the layernorm/residual regions.
//
//   copy_to_tp        forward: identity            backward: all-reduce(sum)
//   reduce_from_tp    forward: all-reduce(sum)     backward: identity
//   gather_seq        forward: all-gather (seq)    backward: reduce-scatter (seq)
//   scatter_seq       forward: reduce-scatter(seq) backward: all-gather (seq)
//
// Identities are not functions here: the caller simply reuses the buffer.
#pragma once
#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace braid {

// In place all-reduce of x over the TP group (reduce_from_tp forward, copy_to_tp backward).
void tp_all_reduce(Communicator& tp, Tensor& x);

// full[B, T, C] <- concatenation along T of every rank's local[B, T/TP, C].
void tp_gather_seq(Communicator& tp, const Tensor& local, Tensor& full, int B, int T);
// local[B, T/TP, C] <- this rank's sequence slice of the sum over ranks of full[B, T, C].
void tp_reduce_scatter_seq(Communicator& tp, const Tensor& full, Tensor& local, int B, int T);

}  // namespace braid
