// libFuzzer target: the checks of model.h5's dataset headers (validate_stored_tensors),
// with every header fact forgeable, and the layout-independent crc32 (slice_crc32): the
// shares of any tiling of any small tensor must XOR to zlib's crc32 of the whole.
#include <fuzzer/FuzzedDataProvider.h>
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "framework/checkpoint_format.h"
#include "ops/check.h"

namespace {

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void check_tiling(FuzzedDataProvider& p) {
  const int nd = p.ConsumeIntegralInRange(1, 3);
  std::vector<int64_t> shape(static_cast<size_t>(nd));
  int64_t n = 1;
  for (auto& d : shape) n *= (d = p.ConsumeIntegralInRange(1, 9));
  std::vector<float> full(static_cast<size_t>(n));
  for (auto& x : full) {
    const uint32_t bits = p.ConsumeIntegral<uint32_t>();
    std::memcpy(&x, &bits, 4);
  }
  const uint32_t want = uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(full.data()), uInt(n * 4)));
  const int dim = p.ConsumeIntegralInRange(-1, nd - 1);
  const int64_t rows = dim < 0 ? 1 : shape[size_t(dim)];
  const int64_t parts = dim < 0 ? 1 : p.ConsumeIntegralInRange<int64_t>(1, rows + 2);
  const int64_t storage = (rows + parts - 1) / parts;
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= shape[size_t(d)];
  for (int d = dim + 1; d < nd; ++d) inner *= shape[size_t(d)];
  uint32_t x = 0;
  for (int64_t part = 0; part < parts; ++part) {
    braid::SliceGeometry g{shape, dim, 0, 0, 0};
    std::vector<float> local = full;
    if (dim >= 0) {
      g.shard_offset = part * storage;
      g.shard_count = std::max<int64_t>(0, std::min(storage, rows - g.shard_offset));
      g.storage_rows = storage;
      local.assign(size_t(outer * storage * inner), 0.f);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t r = 0; r < g.shard_count; ++r)
          for (int64_t i = 0; i < inner; ++i)
            local[size_t((o * storage + r) * inner + i)] = full[size_t((o * rows + g.shard_offset + r) * inner + i)];
    }
    x ^= braid::slice_crc32(local.data(), g);
  }
  if (x != want) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider p(data, size);
  check_tiling(p);

  braid::ModelConfig m;
  m.n_layer = p.ConsumeIntegralInRange(1, 2);
  m.n_head = p.ConsumeIntegralInRange(1, 2);
  m.n_embd = m.n_head * p.ConsumeIntegralInRange(1, 3);
  m.seq_len = p.ConsumeIntegralInRange(1, 4);
  m.vocab_size = p.ConsumeIntegralInRange(1, 70);
  const auto list = braid::full_param_list(m);
  braid::CheckpointManifest man;
  std::vector<braid::StoredTensor> found;
  uint64_t offset = p.ConsumeIntegralInRange<uint64_t>(0, 4096);
  for (const char* g : braid::kCheckpointGroups)
    for (const auto& [name, shape] : list) {
      braid::StoredTensor t;
      t.found = t.float32_le = t.contiguous = true;
      t.dims.assign(shape.begin(), shape.end());
      t.storage_bytes = uint64_t(numel(shape)) * 4;
      t.file_offset = offset;
      offset += t.storage_bytes;
      t.has_crc = p.ConsumeBool();
      t.crc = t.has_crc ? p.ConsumeIntegralInRange<int64_t>(-1, 3) : -1;
      if (p.ConsumeBool()) man.crc32[std::string("/") + g + "/" + name] = uint32_t(p.ConsumeIntegralInRange(0, 3));
      // Forgeries, each with a small probability.
      switch (p.ConsumeIntegralInRange(0, 15)) {
        case 0: t.found = false; break;
        case 1: t.float32_le = false; break;
        case 2: t.contiguous = false; break;
        case 3: t.dims.push_back(p.ConsumeIntegral<uint64_t>()); break;
        case 4: if (!t.dims.empty()) t.dims[0] = p.ConsumeIntegral<uint64_t>(); break;
        case 5: t.storage_bytes = p.ConsumeIntegral<uint64_t>(); break;
        case 6: t.file_offset = p.ConsumeIntegral<uint64_t>(); break;
        default: break;
      }
      found.push_back(t);
    }
  const uint64_t file_bytes = p.ConsumeBool() ? offset : p.ConsumeIntegral<uint64_t>();
  try {
    const auto crcs = braid::validate_stored_tensors(list, found, file_bytes, man, "model.h5");
    // Accepted: every dataset is where and what the model needs, inside the file.
    size_t k = 0;
    for (const char* g : braid::kCheckpointGroups)
      for (const auto& [name, shape] : list) {
        const braid::StoredTensor& t = found[k];
        const uint64_t bytes = uint64_t(numel(shape)) * 4;
        if (!t.found || !t.float32_le || !t.contiguous || t.dims.size() != shape.size() || t.storage_bytes != bytes ||
            t.file_offset > file_bytes || file_bytes - t.file_offset < bytes)
          __builtin_trap();
        if (crcs[k] != man.crc32.at(std::string("/") + g + "/" + name)) __builtin_trap();
        ++k;
      }
  } catch (const braid::InputError&) {
  }
  return 0;
}
