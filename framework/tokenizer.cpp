// Tokenizers. The GPT-2 encoder is written from the published algorithm (byte-level BPE:
// bytes -> printable unicode alphabet, regex pre-tokenization, greedy merges by rank):
//   1. split the text into pre-tokens with the GPT-2 pattern (hand-written matcher below,
//      because std::regex has no \p{L} / \p{N});
//   2. each pre-token starts as one symbol per byte; repeatedly merge every occurrence of
//      the adjacent pair with the lowest merge rank until no pair has a rank;
//   3. the final symbols are token ids.
// Internally all strings are raw bytes: the bytes-to-unicode alphabet only exists in the
// files, and is undone once when they are loaded.
#include "framework/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>

#include "ops/check.h"

namespace braid {
namespace {

constexpr const char* kEndOfText = "<|endoftext|>";
// Word-encoding cache bound: beyond this many distinct words the cache is cleared, so a
// large corpus cannot grow it without limit (a typical English corpus stays far below).
constexpr size_t kMaxCachedWords = size_t{1} << 20;

// ---------------------------------------------------------------------------------------
// Unicode classes for the pre-tokenizer.
//
// \s is Unicode White_Space exactly. \p{L} and \p{N} are exact for ASCII; above ASCII they
// come from the tables below, which list the letters and numbers of the main blocks:
// Latin-1 and Latin Extended A/B/Additional/C/D/E, IPA, Greek (+Extended), Cyrillic
// (+Supplement/Ext-B/C), Armenian, Hebrew, Arabic, Syriac/Thaana, the Indic scripts,
// Sinhala, Thai, Lao, Tibetan, Myanmar, Georgian, Ethiopic, Cherokee, Canadian
// syllabics, Khmer, Mongolian, kana, Bopomofo, Hangul, CJK ideographs (BMP and planes
// 2-3), Yi, letterlike symbols, presentation forms, fullwidth forms, math alphanumerics;
// numbers: Latin-1 superscripts/fractions, the decimal digits of the scripts above,
// super/subscripts, number forms, enclosed and circled numbers, CJK numerals, fullwidth
// digits. Combining marks (Mn/Mc) are not letters, as in Unicode. Code points of other
// scripts (historic and minority scripts, mostly outside the BMP) fall into the "other"
// class: their words may then split differently from OpenAI's encoder. A few unassigned
// code points inside the listed blocks count as letters; they do not occur in real text.
struct CodeRange {
  uint32_t first, last;
};

constexpr CodeRange kLetterRanges[] = {
    {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x2C1},
    {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE},
    // Greek and Coptic, Cyrillic
    {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386},
    {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
    {0x48A, 0x52F},
    // Armenian, Hebrew, Arabic, Syriac, Thaana, NKo
    {0x531, 0x556}, {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2},
    {0x620, 0x64A}, {0x66E, 0x66F}, {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6},
    {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF}, {0x710, 0x710}, {0x712, 0x72F},
    {0x74D, 0x7A5}, {0x7B1, 0x7B1}, {0x7CA, 0x7EA},
    // Indic scripts, Sinhala, Thai, Lao, Tibetan, Myanmar (letters only: vowel signs and
    // viramas are marks, as in Unicode, so words of these scripts split at them)
    {0x904, 0x939}, {0x93D, 0x93D}, {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980},
    {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8}, {0x9AA, 0x9B0}, {0x9B2, 0x9B2},
    {0x9B6, 0x9B9}, {0x9BD, 0x9BD}, {0x9CE, 0x9CE}, {0x9DC, 0x9DD}, {0x9DF, 0x9E1},
    {0x9F0, 0x9F1}, {0x9FC, 0x9FC},
    {0xA05, 0xA0A}, {0xA0F, 0xA10}, {0xA13, 0xA28}, {0xA2A, 0xA30}, {0xA32, 0xA33},
    {0xA35, 0xA36}, {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E}, {0xA72, 0xA74},
    {0xA85, 0xA8D}, {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3},
    {0xAB5, 0xAB9}, {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9},
    {0xB05, 0xB0C}, {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30}, {0xB32, 0xB33},
    {0xB35, 0xB39}, {0xB3D, 0xB3D}, {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71},
    {0xB83, 0xB83}, {0xB85, 0xB8A}, {0xB8E, 0xB90}, {0xB92, 0xB95}, {0xB99, 0xB9A},
    {0xB9C, 0xB9C}, {0xB9E, 0xB9F}, {0xBA3, 0xBA4}, {0xBA8, 0xBAA}, {0xBAE, 0xBB9},
    {0xBD0, 0xBD0}, {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28}, {0xC2A, 0xC39},
    {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5C, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80},
    {0xC85, 0xC8C}, {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9},
    {0xCBD, 0xCBD}, {0xCDC, 0xCDE}, {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C},
    {0xD0E, 0xD10}, {0xD12, 0xD3A}, {0xD3D, 0xD3D}, {0xD4E, 0xD4E}, {0xD54, 0xD56},
    {0xD5F, 0xD61}, {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1}, {0xDB3, 0xDBB},
    {0xDBD, 0xDBD}, {0xDC0, 0xDC6}, {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46},
    {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3}, {0xEA5, 0xEA5},
    {0xEA7, 0xEB0}, {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6},
    {0xEDC, 0xEDF}, {0xF00, 0xF00}, {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C},
    {0x1000, 0x102A}, {0x103F, 0x103F}, {0x1050, 0x1055}, {0x105A, 0x105D},
    {0x1061, 0x1061}, {0x1065, 0x1066}, {0x106E, 0x1070}, {0x1075, 0x1081},
    {0x108E, 0x108E},
    // Georgian, Hangul Jamo, Ethiopic, Cherokee, Canadian syllabics, Khmer, Mongolian,
    // Cyrillic Extended-C, Georgian Mtavruli
    {0x10A0, 0x10C5}, {0x10C7, 0x10C7}, {0x10CD, 0x10CD}, {0x10D0, 0x10FA},
    {0x10FC, 0x1248}, {0x124A, 0x124D}, {0x1250, 0x135A}, {0x1380, 0x138F},
    {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1401, 0x166C}, {0x166F, 0x167F},
    {0x1780, 0x17B3}, {0x1820, 0x1878}, {0x1880, 0x18A8}, {0x18AA, 0x18AA},
    {0x18B0, 0x18F5}, {0x1C80, 0x1C8A}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF},
    // Phonetic extensions, Latin Extended Additional, Greek Extended
    {0x1D00, 0x1DBF}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    // Superscript letters, letterlike symbols
    {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2102, 0x2102},
    {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D},
    {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D},
    {0x212F, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E},
    {0x2183, 0x2184},
    // Glagolitic, Latin Extended-C, Coptic, Georgian Supplement
    {0x2C00, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25},
    // CJK: iteration marks, kana, Bopomofo, Hangul compatibility Jamo, ideographs, Yi
    {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C}, {0x3041, 0x3096},
    {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF}, {0x3105, 0x312F},
    {0x3131, 0x318E}, {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF},
    {0x4E00, 0xA48C},
    // Cyrillic Extended-B, Latin Extended-D/E, Hangul syllables, CJK compatibility
    {0xA640, 0xA66E}, {0xA67F, 0xA69D}, {0xA717, 0xA71F}, {0xA722, 0xA788},
    {0xA78B, 0xA7CA}, {0xA7F2, 0xA7FF}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69},
    {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6}, {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D},
    {0xFA70, 0xFAD9},
    // Alphabetic and Arabic presentation forms, fullwidth/halfwidth forms
    {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB28},
    {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41},
    {0xFB43, 0xFB44}, {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F},
    {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB}, {0xFE70, 0xFE74}, {0xFE76, 0xFEFC},
    {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE}, {0xFFC2, 0xFFC7},
    {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC},
    // Supplementary planes: Linear B, Deseret/Osmanya, math alphanumerics, CJK ext B-G
    {0x10000, 0x100FA}, {0x10400, 0x1049D}, {0x1D400, 0x1D6C0}, {0x1D6C2, 0x1D6DA},
    {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714}, {0x1D716, 0x1D734}, {0x1D736, 0x1D74E},
    {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8}, {0x1D7AA, 0x1D7C2},
    {0x1D7C4, 0x1D7CB}, {0x20000, 0x2A6DF}, {0x2A700, 0x2EBE0}, {0x2F800, 0x2FA1D},
    {0x30000, 0x3134A},
};

constexpr CodeRange kNumberRanges[] = {
    {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9}, {0xA66, 0xA6F},
    {0xAE6, 0xAEF}, {0xB66, 0xB6F}, {0xB72, 0xB77}, {0xBE6, 0xBF2}, {0xC66, 0xC6F},
    {0xC78, 0xC7E}, {0xCE6, 0xCEF}, {0xD58, 0xD5E}, {0xD66, 0xD78}, {0xDE6, 0xDEF},
    {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33}, {0x1040, 0x1049}, {0x1090, 0x1099},
    {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9}, {0x17F0, 0x17F9},
    {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x2070, 0x2070},
    {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189},
    {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD},
    {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195},
    {0x3220, 0x3229}, {0x3248, 0x324F}, {0x3251, 0x325F}, {0x3280, 0x3289},
    {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909},
    {0xAA50, 0xAA59}, {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x10107, 0x10133},
    {0x1D7CE, 0x1D7FF}, {0x1F100, 0x1F10C},
};

template <size_t N>
constexpr bool sorted_and_disjoint(const CodeRange (&ranges)[N]) {
  for (size_t i = 0; i < N; ++i) {
    if (ranges[i].first > ranges[i].last) return false;
    if (i > 0 && ranges[i].first <= ranges[i - 1].last) return false;
  }
  return true;
}
static_assert(sorted_and_disjoint(kLetterRanges), "binary search needs sorted letter ranges");
static_assert(sorted_and_disjoint(kNumberRanges), "binary search needs sorted number ranges");

template <size_t N>
bool in_ranges(const CodeRange (&ranges)[N], uint32_t cp) {
  // Ranges are sorted and disjoint: find the first range whose end is >= cp.
  auto it = std::lower_bound(std::begin(ranges), std::end(ranges), cp,
                             [](const CodeRange& r, uint32_t c) { return r.last < c; });
  return it != std::end(ranges) && it->first <= cp;
}

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

constexpr uint32_t kInvalidCodePoint = 0xFFFFFFFFu;

CharClass classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (cp == kInvalidCodePoint) return CharClass::kOther;
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
      cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)
    return CharClass::kSpace;
  if (in_ranges(kLetterRanges, cp)) return CharClass::kLetter;
  if (in_ranges(kNumberRanges, cp)) return CharClass::kNumber;
  return CharClass::kOther;
}

// Decodes one UTF-8 code point at s[i]; returns its length in bytes. A byte that does not
// start a well-formed sequence (overlong, surrogate, > U+10FFFF, truncated) is returned as
// kInvalidCodePoint of length 1, so that every byte string has a pre-tokenization.
size_t decode_utf8(std::string_view s, size_t i, uint32_t& cp) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const auto cont = [&](size_t k) { return k < s.size() && (byte(k) & 0xC0) == 0x80; };
  const uint8_t b0 = byte(i);
  cp = kInvalidCodePoint;
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF && cont(i + 1)) {
    cp = (uint32_t(b0 & 0x1F) << 6) | (byte(i + 1) & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF && cont(i + 1) && cont(i + 2)) {
    const uint8_t b1 = byte(i + 1);
    const bool ok = (b0 == 0xE0) ? b1 >= 0xA0 : (b0 == 0xED) ? b1 <= 0x9F : true;
    if (!ok) return 1;
    cp = (uint32_t(b0 & 0x0F) << 12) | (uint32_t(b1 & 0x3F) << 6) | (byte(i + 2) & 0x3F);
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
    const uint8_t b1 = byte(i + 1);
    const bool ok = (b0 == 0xF0) ? b1 >= 0x90 : (b0 == 0xF4) ? b1 <= 0x8F : true;
    if (!ok) return 1;
    cp = (uint32_t(b0 & 0x07) << 18) | (uint32_t(b1 & 0x3F) << 12) |
         (uint32_t(byte(i + 2) & 0x3F) << 6) | (byte(i + 3) & 0x3F);
    return 4;
  }
  return 1;
}

// Splits text into GPT-2 pre-tokens and calls emit(std::string_view) for each, in order;
// the pieces concatenate to the text. Matches the alternatives of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// in order at each position, as a backtracking regex engine would.
template <typename Emit>
void split_gpt2_pretokens(std::string_view text, Emit&& emit) {
  // [n] code points: their class, their code point (ASCII checks only) and byte offset.
  std::vector<CharClass> cls;
  std::vector<uint32_t> cps;
  std::vector<size_t> offset;  // [n + 1]
  cls.reserve(text.size());
  cps.reserve(text.size());
  offset.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    const size_t len = decode_utf8(text, i, cp);
    cls.push_back(classify(cp));
    cps.push_back(cp);
    offset.push_back(i);
    i += len;
  }
  offset.push_back(text.size());
  const size_t n = cps.size();
  const auto run_end = [&](size_t k, CharClass c) {
    while (k < n && cls[k] == c) ++k;
    return k;
  };
  const auto at = [&](size_t k, char c) { return k < n && cps[k] == uint32_t(c); };

  size_t i = 0;
  while (i < n) {
    size_t end = i;
    if (cps[i] == '\'' && (at(i + 1, 's') || at(i + 1, 't') || at(i + 1, 'm') || at(i + 1, 'd'))) {
      end = i + 2;
    } else if (cps[i] == '\'' && ((at(i + 1, 'r') && at(i + 2, 'e')) ||
                                  (at(i + 1, 'v') && at(i + 2, 'e')) ||
                                  (at(i + 1, 'l') && at(i + 2, 'l')))) {
      end = i + 3;
    } else {
      // ` ?X+`: an optional single U+0020 followed by a run of one class (not space).
      const size_t k = (cps[i] == ' ' && i + 1 < n) ? i + 1 : i;
      if (cls[k] != CharClass::kSpace) {
        end = run_end(k, cls[k]);
      } else {
        // Whitespace run [i, ws_end). `\s+(?!\S)` takes all of it at the end of the text,
        // else all but its last character (which then leads the next word as ` ?X+` or
        // is taken alone by the final `\s+`).
        const size_t ws_end = run_end(i, CharClass::kSpace);
        if (ws_end == n || ws_end - i == 1) {
          end = ws_end == n ? n : i + 1;
        } else {
          end = ws_end - 1;
        }
      }
    }
    emit(text.substr(offset[i], offset[end] - offset[i]));
    i = end;
  }
}

// GPT-2's byte -> printable code point table: printable Latin-1 bytes map to themselves,
// the other 68 bytes to U+0100.. in byte order. Returns [256] code points.
std::vector<uint32_t> bytes_to_unicode() {
  std::vector<uint32_t> table(256, 0);
  std::vector<bool> printable(256, false);
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) table[b] = printable[b] ? uint32_t(b) : next++;
  return table;
}

// Undoes the bytes-to-unicode alphabet of a string from encoder.json / vocab.bpe.
std::string unicode_to_bytes(std::string_view s, const std::vector<int>& cp_to_byte,
                             const std::string& path) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    i += decode_utf8(s, i, cp);
    BRAID_REQUIRE(cp < cp_to_byte.size() && cp_to_byte[cp] >= 0,
                  "GPT-2 vocabulary file " << path << " holds the token '" << s
                  << "' with a character outside GPT-2's byte alphabet; the file is corrupt"
                  << " (delete it and run launch/fetch_gpt2_vocab.sh)");
    out.push_back(static_cast<char>(cp_to_byte[cp]));
  }
  return out;
}

std::ifstream open_vocab_file(const std::filesystem::path& path) {
  BRAID_REQUIRE(std::filesystem::is_regular_file(path),
                "GPT-2 vocabulary file " << path.string() << " not found; run "
                "launch/fetch_gpt2_vocab.sh " << path.parent_path().string()
                << " to download encoder.json and vocab.bpe");
  std::ifstream in(path, std::ios::binary);
  BRAID_REQUIRE(in, "cannot open GPT-2 vocabulary file " << path.string());
  return in;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

}  // namespace

// ---------------------------------------------------------------------------------------
std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<uint8_t>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    BRAID_REQUIRE(id >= 0 && id <= eot_token(),
                  "token id " << id << " is outside the byte tokenizer's vocabulary [0, 257)");
    if (id == eot_token()) {
      out += kEndOfText;
    } else {
      out.push_back(static_cast<char>(id));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
Gpt2Tokenizer::Gpt2Tokenizer(const std::string& vocab_dir) {
  namespace fs = std::filesystem;
  const fs::path encoder_path = fs::path(vocab_dir) / "encoder.json";
  const fs::path merges_path = fs::path(vocab_dir) / "vocab.bpe";
  std::ifstream encoder_in = open_vocab_file(encoder_path);
  std::ifstream merges_in = open_vocab_file(merges_path);
  load(encoder_in, merges_in, encoder_path, merges_path);
}

Gpt2Tokenizer::Gpt2Tokenizer(std::istream& encoder_json, std::istream& merges_bpe,
                             const std::string& encoder_name, const std::string& merges_name) {
  load(encoder_json, merges_bpe, encoder_name, merges_name);
}

void Gpt2Tokenizer::load(std::istream& encoder_in, std::istream& merges_in,
                         const std::filesystem::path& encoder_path,
                         const std::filesystem::path& merges_path) {
  const std::vector<uint32_t> byte_to_cp = bytes_to_unicode();
  std::vector<int> cp_to_byte(512, -1);
  for (int b = 0; b < 256; ++b) cp_to_byte[byte_to_cp[b]] = b;

  // encoder.json: {"token": id, ...} with ids dense in [0, V).
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(encoder_in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError("GPT-2 vocabulary file " + encoder_path.string() +
                     " is not valid JSON (" + e.what() + "); delete it and run "
                     "launch/fetch_gpt2_vocab.sh");
  }
  BRAID_REQUIRE(encoder.is_object() && !encoder.empty(),
                "GPT-2 vocabulary file " << encoder_path.string()
                << " should be a JSON object mapping tokens to ids");
  id_to_bytes_.assign(encoder.size(), std::string());
  std::vector<bool> seen(encoder.size(), false);
  std::unordered_map<std::string, int32_t> bytes_to_id;
  bytes_to_id.reserve(encoder.size());
  for (const auto& [token, value] : encoder.items()) {
    BRAID_REQUIRE(value.is_number_integer() && value.get<int64_t>() >= 0 &&
                      value.get<int64_t>() < int64_t(encoder.size()) &&
                      !seen[value.get<int64_t>()],
                  "GPT-2 vocabulary file " << encoder_path.string() << ": token '" << token
                  << "' has id " << value.dump() << "; expected distinct ids in [0, "
                  << encoder.size() << ")");
    const int32_t id = value.get<int32_t>();
    seen[id] = true;
    std::string bytes = token == kEndOfText ? token : unicode_to_bytes(token, cp_to_byte,
                                                                       encoder_path.string());
    if (token == kEndOfText) eot_token_ = id;
    else bytes_to_id.emplace(bytes, id);
    id_to_bytes_[id] = std::move(bytes);
  }
  BRAID_REQUIRE(eot_token_ >= 0, "GPT-2 vocabulary file " << encoder_path.string()
                << " has no \"" << kEndOfText << "\" token");
  for (int b = 0; b < 256; ++b) {
    auto it = bytes_to_id.find(std::string(1, static_cast<char>(b)));
    BRAID_REQUIRE(it != bytes_to_id.end(), "GPT-2 vocabulary file " << encoder_path.string()
                  << " lacks the single-byte token for byte " << b);
    byte_to_id_[b] = it->second;
  }

  // vocab.bpe: "#version" line, then one merge "left right" per line in rank order.
  std::string line;
  int32_t rank = 0;
  int64_t line_number = 0;
  while (std::getline(merges_in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    BRAID_REQUIRE(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                      line.find(' ', space + 1) == std::string::npos,
                  "GPT-2 merges file " << merges_path.string() << " line " << line_number
                  << ": expected two tokens separated by one space, got '" << line << "'");
    const std::string left = unicode_to_bytes(std::string_view(line).substr(0, space),
                                              cp_to_byte, merges_path.string());
    const std::string right = unicode_to_bytes(std::string_view(line).substr(space + 1),
                                               cp_to_byte, merges_path.string());
    const auto l = bytes_to_id.find(left), r = bytes_to_id.find(right),
               m = bytes_to_id.find(left + right);
    BRAID_REQUIRE(l != bytes_to_id.end() && r != bytes_to_id.end() && m != bytes_to_id.end(),
                  "GPT-2 merges file " << merges_path.string() << " line " << line_number
                  << ": merge '" << line << "' uses or makes a token missing from "
                  << encoder_path.string() << "; the two files do not belong together");
    merges_.emplace(pair_key(l->second, r->second), Merge{rank++, m->second});
  }
  BRAID_REQUIRE(rank > 0, "GPT-2 merges file " << merges_path.string() << " has no merges");
}

void Gpt2Tokenizer::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  auto cached = cache_.find(std::string(word));
  if (cached != cache_.end()) {
    ids.insert(ids.end(), cached->second.begin(), cached->second.end());
    return;
  }
  std::vector<int32_t> symbols(word.size());
  for (size_t i = 0; i < word.size(); ++i) symbols[i] = byte_to_id_[uint8_t(word[i])];
  std::vector<int32_t> next;
  while (symbols.size() > 1) {
    // The adjacent pair with the lowest merge rank; every occurrence of it merges at once.
    const Merge* best = nullptr;
    uint64_t best_key = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const uint64_t key = pair_key(symbols[i], symbols[i + 1]);
      auto it = merges_.find(key);
      if (it != merges_.end() && (best == nullptr || it->second.rank < best->rank)) {
        best = &it->second;
        best_key = key;
      }
    }
    if (best == nullptr) break;
    next.clear();
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && pair_key(symbols[i], symbols[i + 1]) == best_key) {
        next.push_back(best->merged_id);
        i += 2;
      } else {
        next.push_back(symbols[i]);
        i += 1;
      }
    }
    symbols.swap(next);
  }
  ids.insert(ids.end(), symbols.begin(), symbols.end());
  if (cache_.size() >= kMaxCachedWords) cache_.clear();
  cache_.emplace(std::string(word), std::move(symbols));
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  split_gpt2_pretokens(text, [&](std::string_view word) { encode_word(word, ids); });
  return ids;
}

std::string Gpt2Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    BRAID_REQUIRE(id >= 0 && id < vocab_size(), "token id " << id << " is outside the GPT-2 "
                  "vocabulary [0, " << vocab_size() << ")");
    out += id_to_bytes_[id];
  }
  return out;
}

// ---------------------------------------------------------------------------------------
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& vocab_dir) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  if (name == "gpt2") return std::make_unique<Gpt2Tokenizer>(vocab_dir);
  throw InputError("unknown tokenizer '" + name + "'; expected 'gpt2' or 'byte'");
}

}  // namespace braid
