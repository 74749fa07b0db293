// braid-train: trains a GPT on every rank of the world under mpirun or Slurm (srun/sbatch).
//   mpirun -np 4 build/bin/braid-train --data data/fortunes --out out/run --tp 2 --pp 2
// See --help for every option; --config FILE reads the same options from an INI file.
#include <cstdio>

#include "framework/trainer.h"
#include "launch/lib/entry.h"
#include "parallel/collective_check.h"

int main(int argc, char** argv) {
  return braid::run_main(argc, argv, "braid-train", [](int ac, char** av) {
    using namespace braid;
    TrainConfig cfg;
    int world_size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    bool go = true;
    {
      // Parsing is deterministic, so every rank reaches the same verdict.
      go = parse_train_config(ac, av, cfg);
    }
    if (!go) return 0;
    validate_train_config(cfg, world_size);
    ProcessGroups groups = make_process_groups(MPI_COMM_WORLD, cfg.tp, cfg.pp);
    configure_rank(groups.grid, cfg.threads);
    start_watchdog(groups, cfg.collective_timeout, cfg.out_dir + "/ledger");
    if (cfg.device == "cuda") cfg.local_device = local_gpu_index();
    install_stop_signals();
    Trainer trainer(cfg, groups);
    run_collectively(*groups.world, [&] { trainer.init_or_resume(); });
    trainer.train([] { return stop_signal_received(); });
    return 0;
  });
}
