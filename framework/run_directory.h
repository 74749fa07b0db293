// The run's output directory (--out): metrics, checkpoints. It is created and probed for
// writing by every rank before the first step, because every rank writes checkpoint data
// into it (MPI-IO); an unwritable directory is then one clear message at start-up instead
// of a failure at the first save, after the work of the steps before it.
#pragma once
#include <string>

namespace braid {

// Creates `dir` if needed and checks that this rank can create and write a file in it.
// InputError naming the directory and the system's reason otherwise.
void prepare_output_directory(const std::string& dir, int rank);

}  // namespace braid
