# Registration of each test executable: braid_test(<target> <timeout_s> [labels])
# or braid_mpi_test(<target> <np> <timeout_s> [labels]). Keep one line per test.
braid_test(test_schedule 60)
braid_test(test_tokenizer 120)
braid_test(test_dataset 120)
braid_test(test_checkpoint_format 60)
braid_test(test_dataset_integrity 60)
braid_mpi_test(test_layouts 8 900)
braid_mpi_test(test_reshard 8 900)
braid_mpi_test(test_checkpoint 4 300)
braid_test(test_ops_cpu 60)
braid_test(test_cross_entropy_cpu 60)
braid_test(test_adamw_cpu 60)
braid_test(test_reference 120)
braid_test(test_param_init 60)
braid_test(test_tuning_file 60)
braid_test(test_position_runs 60)
if(BRAID_HAVE_CUDA)
  braid_test(test_cuda_ops 300 cuda)
endif()
braid_test(test_cuda_training 300 cuda)
# The layout-equivalence suite with CUDA tensors on the GPU(s), MPI data plane.
add_test(NAME test_layouts_cuda_np8 COMMAND ${BRAID_MPIEXEC} -n 8 $<TARGET_FILE:test_layouts>)
set_tests_properties(test_layouts_cuda_np8 PROPERTIES TIMEOUT 900 LABELS "mpi;cuda"
                     ENVIRONMENT "${BRAID_TEST_ENV};BRAID_TEST_DEVICE=cuda")
# One process per GPU (skips with fewer GPUs than ranks): every data-plane group over NCCL,
# 10 steps per layout.
add_test(NAME test_layouts_cuda_nccl_np2 COMMAND ${BRAID_MPIEXEC} -n 2 $<TARGET_FILE:test_layouts>)
set_tests_properties(test_layouts_cuda_nccl_np2 PROPERTIES TIMEOUT 600 LABELS "mpi;cuda"
                     ENVIRONMENT "${BRAID_TEST_ENV};BRAID_TEST_DEVICE=cuda;BRAID_TEST_NCCL=1")
braid_mpi_test(test_rank_grid 8 120)
braid_mpi_test(test_collectives 3 60)
braid_mpi_test(test_profiler 2 120)
braid_mpi_test(test_stop_request 2 300)
braid_mpi_test(test_cuda_training 2 300 cuda)
# Eight GPUs (the nvidia-h200-x8 host; both skip with fewer GPUs than ranks): every layout
# that fits 8 ranks over NCCL, one process per GPU, and TP4 x PP2 checkpoints moved to 2
# GPUs, 1 GPU and the CPU.
add_test(NAME test_layouts_cuda_nccl_np8 COMMAND ${BRAID_MPIEXEC} -n 8 $<TARGET_FILE:test_layouts>)
set_tests_properties(test_layouts_cuda_nccl_np8 PROPERTIES TIMEOUT 900 LABELS "mpi;cuda"
                     ENVIRONMENT "${BRAID_TEST_ENV};BRAID_TEST_DEVICE=cuda;BRAID_TEST_NCCL=1")
add_test(NAME test_cuda_training_np8 COMMAND ${BRAID_MPIEXEC} -n 8 $<TARGET_FILE:test_cuda_training>
         --gtest_filter=*EightGpus*)
set_tests_properties(test_cuda_training_np8 PROPERTIES TIMEOUT 600 LABELS "mpi;cuda" ENVIRONMENT "${BRAID_TEST_ENV}")
braid_mpi_test(test_plan 8 300)
braid_mpi_test(test_ledger 4 120)
braid_mpi_test(test_nonfinite_steps 4 300)
# Bad-input cases (tests/launch/test_bad_inputs.sh CASE), one ctest each: bad_input_<case>.
set(BRAID_BAD_INPUT_CASES
    missing_data dataset_missing_split dataset_truncated dataset_bitflip dataset_larger_vocab
    world_not_divisible heads_vs_tp layers_vs_pp interleave_few_microbatches
    bad_flag_value memory_option_values unknown_flag unknown_config_key missing_config option_placeholder
    contradictory_stop_after contradictory_virtual_stages contradictory_device
    unwritable_output readonly_output
    checkpoint_missing checkpoint_no_manifest checkpoint_truncated checkpoint_bitflip_data
    checkpoint_bitflip_metadata checkpoint_other_model checkpoint_forged_manifest latest_pointer_escape
    interrupted_save killed_during_save disk_full)
# libFuzzer targets (tests/fuzz) and the seconds each runs in the suite: target:seconds.
set(BRAID_FUZZ_TARGETS
    fuzz_train_config:20 fuzz_checkpoint_manifest:20 fuzz_checkpoint_tensors:15 fuzz_shard_header:15 fuzz_gpt2_vocab:20)
