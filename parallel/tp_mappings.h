// Tensor-parallel communication primitives (Megatron's "mappings"), each a forward/backward
// pair over the TP group. Activations are [B, T, C] row-major; with sequence parallelism
// a rank holds 1/TP of the B*T tokens in the layernorm/residual regions: the contiguous
// block of flat token rows [tp*N/TP, (tp+1)*N/TP), N = B*T, stored as [B, T/TP, C].
// (Megatron splits the sequence of its [T, B, C] layout, which is the same thing: a
// contiguous block.) The collectives then read and write the full tensor directly, with
// no repacking; only the position embedding needs each local row's position
// (Gpt::embedding_forward).
//
//   copy_to_tp        forward: identity            backward: all-reduce(sum)
//   reduce_from_tp    forward: all-reduce(sum)     backward: identity
//   gather_seq        forward: all-gather (seq)    backward: reduce-scatter (seq)
//   scatter_seq       forward: reduce-scatter(seq) backward: all-gather (seq)
//
// Identities are not functions here: the caller simply reuses the buffer.
#pragma once
#include <cstdint>

#include "parallel/communicator.h"

namespace braid {

// In place all-reduce of x over the TP group (reduce_from_tp forward, copy_to_tp backward).
void tp_all_reduce(Communicator& tp, Tensor& x);

// full[B, T, C] <- concatenation (by TP rank) of every rank's block local[N/TP rows].
void tp_gather_seq(Communicator& tp, const Tensor& local, Tensor& full);
// local <- this rank's block of the sum over ranks of full[B, T, C].
void tp_reduce_scatter_seq(Communicator& tp, const Tensor& full, Tensor& local);

}  // namespace braid
