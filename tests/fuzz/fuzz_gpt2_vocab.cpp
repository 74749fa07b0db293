// libFuzzer target: loading a GPT-2 vocabulary (encoder.json and vocab.bpe) from untrusted
// bytes. The input is encoder.json, a line "=====", then vocab.bpe. An accepted vocabulary
// must encode and decode losslessly: decode(encode(text)) == text for any text.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "framework/tokenizer.h"
#include "ops/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string separator = "\n=====\n";
  const size_t cut = text.find(separator);
  std::istringstream encoder(text.substr(0, cut));
  std::istringstream merges(cut == std::string::npos ? "" : text.substr(cut + separator.size()));
  try {
    braid::Gpt2Tokenizer tok(encoder, merges, "encoder.json", "vocab.bpe");
    for (const std::string sample : {std::string("hello world, hello\n\n  it's 2024!"), text.substr(0, 64)}) {
      const std::vector<int32_t> ids = tok.encode(sample);
      if (tok.decode(ids) != sample) __builtin_trap();
    }
  } catch (const braid::InputError&) {
  }
  return 0;
}
