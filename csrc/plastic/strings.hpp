// Plastic prefix memory: the string machinery of the engine (header-only, no Python).
//
// Node strings are UTF-32 (one char32_t per code point, as Python's str), found through a
// polynomial rolling hash (mod 2^61 - 1) so that every substring of a string hashes in O(1)
// from its prefix hashes. Each r_level keeps its nodes in a string-ordered set whose keys
// carry the first six code points packed into two words (most comparisons never touch the
// string heap) and a histogram of (first code point, length) for substring lookups.
// The predictor (predictor.hpp) adds a flat hashed string index and an alphabet.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mnemonix {
namespace plastic {

using Str = std::u32string;
using View = std::u32string_view;
using NodeId = int32_t;

constexpr int64_t kMax64 = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin64 = std::numeric_limits<int64_t>::min();

inline int64_t satAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? kMax64 : kMin64;
  return r;
}

inline int64_t satMul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return ((a < 0) != (b < 0)) ? kMin64 : kMax64;
  return r;
}

// Polynomial hash mod the Mersenne prime 2^61 - 1: h(c_0..c_{n-1}) = sum (c_i + 1) B^(n-1-i).
struct RollingHash {
  static constexpr uint64_t kMod = (uint64_t{1} << 61) - 1;
  static constexpr uint64_t kBase = 0x1d8e4e27c47d124fULL % kMod;

  static uint64_t mulmod(uint64_t a, uint64_t b) {
    unsigned __int128 x = static_cast<unsigned __int128>(a) * b;
    uint64_t r = static_cast<uint64_t>(x & kMod) + static_cast<uint64_t>(x >> 61);
    r = (r & kMod) + (r >> 61);
    return r >= kMod ? r - kMod : r;
  }
  static uint64_t push(uint64_t h, char32_t c) {
    uint64_t r = mulmod(h, kBase) + static_cast<uint64_t>(c) + 1;
    return r >= kMod ? r - kMod : r;
  }
  static uint64_t of(View s) {
    uint64_t h = 0;
    for (char32_t c : s) h = push(h, c);
    return h;
  }
};

// Prefix hashes of one string: hash of any substring in O(1).
class SubstringHasher {
 public:
  void reset(View s) {
    prefix_.assign(s.size() + 1, 0);
    if (power_.empty()) power_.push_back(1);
    while (power_.size() < s.size() + 1) power_.push_back(RollingHash::mulmod(power_.back(), RollingHash::kBase));
    for (size_t i = 0; i < s.size(); ++i) prefix_[i + 1] = RollingHash::push(prefix_[i], s[i]);
  }
  uint64_t hash(size_t begin, size_t len) const {
    uint64_t a = prefix_[begin + len];
    uint64_t b = RollingHash::mulmod(prefix_[begin], power_[len]);
    return a >= b ? a - b : a + RollingHash::kMod - b;
  }

 private:
  std::vector<uint64_t> prefix_, power_;
};

// A level's sort key: the first six code points packed three to a 64-bit word (21 bits
// each, first code point in the high bits, zero padded) and the node id. Packed heads
// compare like the strings they start (zero is the smallest code point, so padding sorts
// a shorter string first); only equal heads need the full strings. This keeps most
// comparisons inside the tree node, away from the string heap.
struct Head {
  uint64_t hi = 0, lo = 0;
  static Head of(View s) {
    Head h;
    for (size_t i = 0; i < 6; ++i) {
      uint64_t c = i < s.size() ? static_cast<uint64_t>(s[i]) : 0;
      if (i < 3)
        h.hi |= c << (42 - 21 * i);
      else
        h.lo |= c << (42 - 21 * (i - 3));
    }
    return h;
  }
  // -1, 0, +1; 0 means "look at the strings".
  int cmp(const Head& o) const {
    if (hi != o.hi) return hi < o.hi ? -1 : 1;
    if (lo != o.lo) return lo < o.lo ? -1 : 1;
    return 0;
  }
};

struct LevelKey {
  Head head;
  NodeId id;
};

struct Probe {  // a string looked up in a level
  Head head;
  View str;
};

// Orders level keys by their strings; transparent, so a level can be searched by a Probe.
struct ByString {
  const std::deque<Str>* strings;
  using is_transparent = void;
  bool operator()(const LevelKey& a, const LevelKey& b) const {
    int c = a.head.cmp(b.head);
    return c != 0 ? c < 0 : (*strings)[a.id] < (*strings)[b.id];
  }
  bool operator()(const LevelKey& a, const Probe& b) const {
    int c = a.head.cmp(b.head);
    return c != 0 ? c < 0 : View((*strings)[a.id]) < b.str;
  }
  bool operator()(const Probe& a, const LevelKey& b) const {
    int c = a.head.cmp(b.head);
    return c != 0 ? c < 0 : a.str < View((*strings)[b.id]);
  }
};

struct Level {
  explicit Level(ByString cmp) : sorted(cmp) {}
  std::set<LevelKey, ByString> sorted;     // the level's nodes in string order
  // first code point -> (string length -> number of nodes); the empty string is counted apart
  std::map<char32_t, std::map<size_t, int64_t>> lengthsByFirst;
  int64_t empty = 0;
};

inline size_t commonPrefixLength(View a, View b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// "U+00EB 'ë'": a code point for error messages.
inline std::string describeCodePoint(char32_t c) {
  static const char* hex = "0123456789ABCDEF";
  std::string out = "U+";
  const int digits = c > 0xFFFF ? 6 : 4;
  for (int i = digits - 1; i >= 0; --i) out += hex[(c >> (4 * i)) & 0xF];
  std::string utf8;
  if (c < 0x80) {
    if (c < 0x20 || c == 0x7F) return out;  // control characters: the code point only
    utf8 += static_cast<char>(c);
  } else if (c < 0x800) {
    utf8 += static_cast<char>(0xC0 | (c >> 6));
    utf8 += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    utf8 += static_cast<char>(0xE0 | (c >> 12));
    utf8 += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    utf8 += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    utf8 += static_cast<char>(0xF0 | (c >> 18));
    utf8 += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    utf8 += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    utf8 += static_cast<char>(0x80 | (c & 0x3F));
  }
  return out + " '" + utf8 + "'";
}

// The characters a predictor assigns probabilities to, sorted by code point.
class Alphabet {
 public:
  Alphabet() = default;
  explicit Alphabet(std::vector<char32_t> symbols) : symbols_(std::move(symbols)) {
    std::sort(symbols_.begin(), symbols_.end());
    symbols_.erase(std::unique(symbols_.begin(), symbols_.end()), symbols_.end());
    ascii_.assign(128, -1);
    for (size_t i = 0; i < symbols_.size(); ++i) {
      if (symbols_[i] < 128)
        ascii_[symbols_[i]] = static_cast<int32_t>(i);
      else
        other_[symbols_[i]] = static_cast<int32_t>(i);
    }
  }
  int32_t index(char32_t c) const {  // -1: not in the alphabet
    if (c < 128) return ascii_[c];
    auto it = other_.find(c);
    return it == other_.end() ? -1 : it->second;
  }
  size_t size() const { return symbols_.size(); }
  const std::vector<char32_t>& symbols() const { return symbols_; }

 private:
  std::vector<char32_t> symbols_;
  std::vector<int32_t> ascii_;
  std::unordered_map<char32_t, int32_t> other_;
};

// Strings -> dense ids through the rolling hash of strings.hpp (open addressing, verified
// against the string). Keys live in one flat buffer: one allocation, not one per key.
class StringIndex {
 public:
  StringIndex() { slots_.assign(16, -1); }
  int32_t find(uint64_t h, View s) const {
    const size_t mask = slots_.size() - 1;
    for (size_t i = slot(h, mask);; i = (i + 1) & mask) {
      const int32_t id = slots_[i];
      if (id < 0) return -1;
      if (hashes_[static_cast<size_t>(id)] == h && key(id) == s) return id;
    }
  }
  // The id of s, inserting it if new.
  int32_t insert(uint64_t h, View s) {
    const int32_t found = find(h, s);
    if (found >= 0) return found;
    if (hashes_.size() >= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      throw std::length_error("predictor context table is full (2^31 - 1 entries)");
    const auto id = static_cast<int32_t>(hashes_.size());
    pool_.append(s);
    begin_.push_back(pool_.size());
    hashes_.push_back(h);
    if (hashes_.size() * 2 > slots_.size()) {
      slots_.assign(slots_.size() * 2, -1);
      for (int32_t k = 0; k < id; ++k) place(k);
    }
    place(id);
    return id;
  }
  size_t size() const { return hashes_.size(); }
  View key(int32_t id) const {
    const auto i = static_cast<size_t>(id);
    return View(pool_).substr(begin_[i], begin_[i + 1] - begin_[i]);
  }

 private:
  static size_t slot(uint64_t h, size_t mask) {
    const uint64_t z = h * 0x9e3779b97f4a7c15ULL;
    return static_cast<size_t>(z ^ (z >> 29)) & mask;
  }
  void place(int32_t id) {
    const size_t mask = slots_.size() - 1;
    size_t i = slot(hashes_[static_cast<size_t>(id)], mask);
    while (slots_[i] >= 0) i = (i + 1) & mask;
    slots_[i] = id;
  }
  Str pool_;
  std::vector<size_t> begin_{0};
  std::vector<uint64_t> hashes_;
  std::vector<int32_t> slots_;
};

}  // namespace plastic
}  // namespace mnemonix
