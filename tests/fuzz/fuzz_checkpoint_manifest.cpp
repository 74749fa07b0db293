// libFuzzer target: a checkpoint's manifest.json and its `latest` pointer, as untrusted
// text. Accepted input must keep the validators' promises: a pointer is a plain
// checkpoint name (it cannot leave the checkpoint directory), a manifest's numbers are in
// range, and a model it describes is only built once it fits the file that must hold it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "framework/checkpoint_format.h"
#include "ops/check.h"

namespace {
int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const std::string name = braid::parse_latest_pointer(text, "latest");
    int64_t step = -1;
    if (!braid::parse_checkpoint_dir_name(name, &step) || step < 0) __builtin_trap();
    if (name.find('/') != std::string::npos || name.find('.') != std::string::npos) __builtin_trap();
    if (braid::checkpoint_dir_name(step).size() > name.size()) __builtin_trap();
  } catch (const braid::InputError&) {
  }
  try {
    const braid::CheckpointManifest man = braid::parse_checkpoint_manifest(text, "manifest.json");
    if (man.step < 0 || man.data_position < 0 || man.optimizer_steps < 0 || man.optimizer_steps > man.step)
      __builtin_trap();
    const braid::ModelConfig& m = man.model;
    if (m.n_layer < 1 || m.n_head < 1 || m.n_embd < 1 || m.seq_len < 1 || m.vocab_size < 1) __builtin_trap();
    if (m.n_embd % m.n_head != 0) __builtin_trap();
    // Only a model that fits 1 MiB of file is built (the loader's order of checks).
    braid::check_model_fits_file(m, uint64_t{1} << 20, "model.h5");
    if (uint64_t(m.num_parameters()) * 12 > (uint64_t{1} << 20)) __builtin_trap();
    const auto list = braid::full_param_list(m);
    // The headers of a file that holds exactly these tensors, checked against the manifest.
    std::vector<braid::StoredTensor> found;
    uint64_t offset = 0;
    for (int g = 0; g < 3; ++g)
      for (const auto& [pname, shape] : list) {
        braid::StoredTensor t;
        t.found = t.float32_le = t.contiguous = true;
        t.dims.assign(shape.begin(), shape.end());
        t.storage_bytes = uint64_t(numel(shape)) * 4;
        t.file_offset = offset;
        offset += t.storage_bytes;
        found.push_back(t);
      }
    const auto crcs = braid::validate_stored_tensors(list, found, offset, man, "model.h5");
    if (crcs.size() != found.size()) __builtin_trap();
  } catch (const braid::InputError&) {
  }
  return 0;
}
