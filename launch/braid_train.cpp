// braid-train: trains a GPT on every rank of the world under mpirun or Slurm (srun/sbatch).
//   mpirun -np 4 build/bin/braid-train --data data/fortunes --out out/run --tp 2 --pp 2
// See --help for every option; --config FILE reads the same options from an INI file.
// Exit codes: 0 done, 1 fatal, 2 bad input, 42 checkpoint on SIGUSR1 (requeue me), 43
// checkpoint on SIGTERM/SIGINT (launch/lib/entry.h).
#include <csignal>
#include <cstdio>
#include <string>

#include "framework/plan.h"
#include "framework/trainer.h"
#include "launch/lib/entry.h"
#include "parallel/collective_check.h"

int main(int argc, char** argv) {
  // Stop signals are handled from the very start: a Slurm preemption that arrives while
  // the ranks start up must not kill them (the loop sees the flag at its first agreement).
  // Only braid-train: the other programs keep the default actions (Ctrl-C ends them).
  braid::install_stop_signals();
  braid::install_dump_signal();
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
    if (cfg.plan) return run_train_plan(cfg, world_size);  // nothing allocated, no training
    validate_train_config(cfg, world_size);
    ProcessGroups groups = make_process_groups(MPI_COMM_WORLD, cfg.tp, cfg.pp);
    configure_rank(groups.grid, cfg.threads);
    start_watchdog(groups, cfg.collective_timeout, cfg.checkpoint_timeout, cfg.out_dir + "/ledger");
    if (cfg.device == "cuda") cfg.local_device = local_gpu_index();
    install_stop_signals();
    std::string launch = describe_launch();
    if (groups.grid.world_rank == 0 && !cfg.quiet) std::printf("%s\n", launch.c_str());
    Trainer trainer(cfg, groups);
    run_collectively(*groups.world, [&] { trainer.init_or_resume(); });
    // SIGUSR1 asks for a checkpoint and a requeue, SIGTERM/SIGINT for a checkpoint and a stop.
    StopRequest stop = trainer.train([] {
      int sig = stop_signal_received();
      return sig == 0 ? StopRequest::None : sig == SIGUSR1 ? StopRequest::Requeue : StopRequest::Stop;
    });
    if (stop == StopRequest::None) return kExitDone;
    const int rc = stop == StopRequest::Requeue ? kExitRequeue : kExitStopped;
    if (groups.grid.world_rank == 0) {
      std::printf("exit %d: checkpoint of step %lld saved on %s; run again with --resume auto to continue\n", rc,
                  static_cast<long long>(trainer.step()),
                  stop == StopRequest::Requeue ? "SIGUSR1 (requeue)" : "SIGTERM/SIGINT (stop)");
      std::fflush(stdout);
    }
    return rc;
  });
}
