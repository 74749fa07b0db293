// Tokenizer tests. The byte tokenizer must be the identity on bytes. The GPT-2 tokenizer
// must give OpenAI's ids: the expected ids below are golden values of the reference GPT-2
// encoder (regex pre-tokenization + BPE over encoder.json / vocab.bpe), several of them
// the well-known ones ("Hello world" -> 15496 995). The GPT-2 tests need the vocabulary
// files (launch/fetch_gpt2_vocab.sh) and are skipped without them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "framework/tokenizer.h"
#include "ops/check.h"

namespace braid {
namespace {

std::string find_vocab_dir() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("BRAID_VOCAB_DIR")) candidates.push_back(env);
  candidates.push_back(std::string(BRAID_SOURCE_DIR) + "/vocab");
  candidates.push_back("/work/main/vocab");
  for (const auto& dir : candidates) {
    namespace fs = std::filesystem;
    if (fs::exists(dir + "/encoder.json") && fs::exists(dir + "/vocab.bpe")) return dir;
  }
  return "";
}

// Loads the GPT-2 tokenizer once for all tests (parsing the files takes ~0.1 s).
const Tokenizer* gpt2() {
  static std::unique_ptr<Tokenizer> tokenizer = [] {
    const std::string dir = find_vocab_dir();
    return dir.empty() ? nullptr : make_tokenizer("gpt2", dir);
  }();
  return tokenizer.get();
}

#define REQUIRE_GPT2()                                                                    \
  if (gpt2() == nullptr)                                                                  \
  GTEST_SKIP() << "GPT-2 vocabulary not found in " BRAID_SOURCE_DIR "/vocab; run "        \
                  "launch/fetch_gpt2_vocab.sh " BRAID_SOURCE_DIR "/vocab"

std::string random_bytes(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(byte(rng));
  return s;
}

TEST(ByteTokenizer, RoundTripsRandomBytesIncludingInvalidUtf8) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eot_token(), 256);
  EXPECT_EQ(tok.name(), "byte");
  std::mt19937 rng(1234);
  for (size_t n : {0, 1, 7, 1000}) {
    const std::string text = random_bytes(rng, n);
    const std::vector<int32_t> ids = tok.encode(text);
    ASSERT_EQ(ids.size(), text.size());
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(ids[i], static_cast<uint8_t>(text[i]));
    EXPECT_EQ(tok.decode(ids), text);
  }
  const std::string invalid = "\xff\xfe\xc0\x80 \xed\xa0\x80 \xf4\x90\x80\x80 ok";
  EXPECT_EQ(tok.decode(tok.encode(invalid)), invalid);
}

TEST(ByteTokenizer, DecodesEotAndRejectsOutOfRangeIds) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.decode({'a', 256, 'b'}), "a<|endoftext|>b");
  EXPECT_THROW(tok.decode({257}), InputError);
  EXPECT_THROW(tok.decode({-1}), InputError);
}

TEST(MakeTokenizer, UnknownNameAndMissingVocabularyAreInputErrors) {
  EXPECT_EQ(make_tokenizer("byte", "/nonexistent")->name(), "byte");
  EXPECT_THROW(make_tokenizer("sentencepiece", "vocab"), InputError);
  const std::string dir = ::testing::TempDir() + "/braid_no_vocab_here";
  try {
    make_tokenizer("gpt2", dir);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir + "/encoder.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fetch_gpt2_vocab.sh"), std::string::npos) << msg;
  }
}

TEST(Gpt2Tokenizer, Properties) {
  REQUIRE_GPT2();
  EXPECT_EQ(gpt2()->vocab_size(), 50257);
  EXPECT_EQ(gpt2()->eot_token(), 50256);
  EXPECT_EQ(gpt2()->name(), "gpt2");
  EXPECT_EQ(gpt2()->decode({50256}), "<|endoftext|>");
  EXPECT_THROW(gpt2()->decode({50257}), InputError);
}

struct KnownEncoding {
  std::string text;
  std::vector<int32_t> ids;
};

TEST(Gpt2Tokenizer, KnownEncodings) {
  REQUIRE_GPT2();
  const std::vector<KnownEncoding> cases = {
      {"Hello world", {15496, 995}},
      {" Hello", {18435}},
      {"hello world!", {31373, 995, 0}},
      {"Hello, world!", {15496, 11, 995, 0}},
      {"It's", {1026, 338}},
      {"12345", {10163, 2231}},
      {"$ 3.14159 is pi", {3, 513, 13, 1415, 19707, 318, 31028}},
      // Contractions are case-sensitive and only split at the start of a match.
      {"I'll've we're", {40, 1183, 1053, 356, 821}},
      {"x'S 's", {87, 6, 50, 705, 82}},
      {"She said: \"don't\" -- it'd be 2nd-best...",
       {3347, 531, 25, 366, 9099, 470, 1, 1377, 340, 1549, 307, 362, 358, 12, 13466, 986}},
      // Whitespace runs: all but the last space stay apart from the next word.
      {"a  b\n\n  c   ", {64, 220, 275, 628, 220, 269, 220, 220, 220}},
      {"  ", {220, 220}},
      {"\n\n", {628}},
      {"x = 1_000_000;\n\tif (x) {",
       {87, 796, 352, 62, 830, 62, 830, 26, 198, 197, 361, 357, 87, 8, 1391}},
      // The special token is not special inside text.
      {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}},
      // Non-ASCII letters and numbers (Latin-1, Cyrillic, Greek, CJK, kana, number forms).
      {"café Größe", {66, 1878, 2634, 1902, 9101, 39683, 68}},
      {"Привет, мир!", {140, 253, 21169, 18849, 38857, 16843, 20375, 11, 12466, 120, 18849,
                        21169, 0}},
      {"γειά σου κόσμε", {42063, 30950, 29945, 138, 105, 18074, 225, 26517, 139, 227, 7377,
                          118, 139, 234, 38392, 34703, 30950}},
      {"日本語のテキスト", {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302}},
      {"Ⅻ ½ ²", {158, 227, 104, 25208, 1587, 110}},
      // Devanagari and Thai: vowel signs and viramas are marks, not letters.
      {"नमस्ते दुनिया", {11976, 101, 11976, 106, 11976, 116, 24231, 235, 11976, 97, 24231, 229,
                       28225, 99, 24231, 223, 11976, 101, 11976, 123, 11976, 107, 48077}},
      {"สวัสดี ชาวโลก", {19567, 103, 19567, 100, 19567, 109, 19567, 103, 19567, 242, 19567,
                       113, 220, 19567, 232, 19567, 110, 19567, 100, 31479, 224, 19567, 98,
                       19567, 223}},
      {"", {}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(gpt2()->encode(c.text), c.ids) << "text: '" << c.text << "'";
    EXPECT_EQ(gpt2()->decode(c.ids), c.text);
  }
  // Again, now served from the word cache.
  for (const auto& c : cases) EXPECT_EQ(gpt2()->encode(c.text), c.ids) << c.text;
}

TEST(Gpt2Tokenizer, RoundTripsUnicodeParagraph) {
  REQUIRE_GPT2();
  const std::string paragraph =
      "The naïve café served crème brûlée; Straße, Ελληνικά, русский язык, עברית, العربية, "
      "हिन्दी, 日本語のテキスト, 한국어 문장, emoji 🎉🚀 and math 𝔘𝔫𝔦 ∑ ≤ ∞.\r\n"
      "\tTabs,\u00a0no-break spaces,\u3000ideographic space — dashes… “quotes” ‘too’.\n\n"
      "Numbers: 1,234.56, ¹²³, ½, ١٢٣, Ⅻ; code: for (int i = 0; i < n; ++i) { x += i; }   \n";
  const std::vector<int32_t> ids = gpt2()->encode(paragraph);
  EXPECT_LT(ids.size(), paragraph.size());
  for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < 50256) << id;
  EXPECT_EQ(gpt2()->decode(ids), paragraph);
}

TEST(Gpt2Tokenizer, RoundTripsArbitraryBytes) {
  REQUIRE_GPT2();
  std::mt19937 rng(99);
  for (size_t n : {1, 2, 3, 64, 4096}) {
    const std::string text = random_bytes(rng, n);
    EXPECT_EQ(gpt2()->decode(gpt2()->encode(text)), text) << "n=" << n;
  }
  const std::string invalid = "ok \xff\xfe\xc0\x80 \xed\xa0\x80 \xf4\x90\x80\x80 \xe6\x97 end";
  EXPECT_EQ(gpt2()->decode(gpt2()->encode(invalid)), invalid);
}

}  // namespace
}  // namespace braid
