# The all-reduce ceiling of this host's GPUs, measured with PyTorch's NCCL (not Braid's
# code): bf16 all-reduces of a TP activation's size (GPT-2 1.5B, B=8, T=1024: 8192 x 1600
# x 2 bytes = 26.2 MB) and larger, median of 50 after 5 warm-ups. busbw = algbw x 2(n-1)/n
# (nccl-tests' convention). Braid's TP waits (braid-bench --profile) compare against it.
#   torchrun --nproc_per_node 2 bench/torch_allreduce.py
import os
import statistics
import time

import torch
import torch.distributed as dist


def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    for mb in (6.6, 26.2, 104.9):
        x = torch.randn(int(mb * 1e6 / 2), device="cuda", dtype=torch.bfloat16)
        for _ in range(5):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(50):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dist.all_reduce(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e-3)
        t = statistics.median(times)
        algbw = mb * 1e6 / t / 1e9
        if rank == 0:
            print(f"torch all_reduce {mb:6.1f} MB bf16 on {world} GPUs: {t * 1e6:7.1f} us, algbw {algbw:5.0f} GB/s, "
                  f"busbw {algbw * 2 * (world - 1) / world:5.0f} GB/s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
