// libFuzzer target: the braid-train command line and --config parser and the checks that
// follow it (validate_train_config, make_model_layout). The input's lines up to the first
// empty line are the arguments, the rest is the config file's text; the world size is
// 1 + (input length mod 16). An InputError is the expected answer to bad input; any other
// exception, a crash or a sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "framework/train_config.h"
#include "ops/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (end == pos) {  // an empty line: the config text follows
      ++pos;
      break;
    }
    args.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  const std::string config = pos < text.size() ? text.substr(pos) : "";
  const int world = 1 + int(size % 16);
  braid::TrainConfig cfg;
  try {
    if (!braid::parse_train_config(args, cfg, [&](const std::string&) { return config; })) return 0;
    braid::validate_train_config(cfg, world);
    const auto layout = braid::make_model_layout(cfg.model, cfg.tp, cfg.tp - 1, cfg.pp, cfg.pp - 1,
                                                 cfg.virtual_stages, cfg.sequence_parallel, cfg.pp_layers);
    // What validation promises to the code after it.
    if (int64_t(cfg.tp) * cfg.pp > world || world % (cfg.tp * cfg.pp) != 0) __builtin_trap();
    // Heads need not divide by TP (padding heads; a rank may hold only padding, as with
    // 25 heads on TP 8), but there are at least TP of them, and the MLP splits evenly.
    if (cfg.model.n_head < cfg.tp || cfg.model.n_embd % cfg.model.n_head != 0) __builtin_trap();
    if ((int64_t{4} * cfg.model.n_embd) % cfg.tp != 0) __builtin_trap();
    if (int64_t(layout.heads_local(cfg.model)) * cfg.tp < cfg.model.n_head) __builtin_trap();
    int layers = 0;
    for (int n : layout.chunk_layers) layers += n;
    if (layers != cfg.model.n_layer) __builtin_trap();
  } catch (const braid::InputError&) {
  }
  return 0;
}
