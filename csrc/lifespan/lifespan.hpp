// One Memoria engram lifespan step on the CPU, fused: each row's value checks, then its step (the
// inputs read from memory once). Header-only core, no Python, no torch (the math of DESIGN.md's
// lifespan_step, the same as backends/lifespan.py's torch path, bit for bit):
//
//   lifespan'[b, m] = (lifespan[b, m] + sum_{r : idx[b, r] == m} delta[b, r]) - 1
//                     (deltas of one engram summed in r order; idx < 0 or >= M ignored)
//   types'          : WORKING -> SHORTTERM; then the first (count_STM - capacity) short-term
//                     engrams of the row (by position) -> LONGTERM
//   age'            = age + 1 (int32, wrapping like torch)
//   keep = lifespan' > 0, rank = position among the kept (-1 if dropped), numKept = count.
//
// Rows are independent: OpenMP over rows once a step is large enough to pay for the threads;
// results do not depend on the thread count.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace mnemonix {
namespace lifespan {

struct Codes {
  uint8_t working, shortterm, longterm;  // engram type codes; any code > longterm is invalid
};

// The first failed value check, in the order the Python op checks them (types, lifespan,
// delta, indices), with the value its message shows.
struct Fault {
  int which = 0;  // 0 none, 1 a type code > longterm, 2 a NaN / -inf lifespan, 3 a NaN / Inf delta, 4 an index >= M
  int64_t value = 0;  // the largest type code (1) or index (4)
};

struct Step {  // borrowed input and output buffers, row-major [B, M] / [B, R] / [B]
  const float* lifespan;
  const uint8_t* types;
  const int32_t* age;  // may be null (then ageOut is unused)
  const int64_t* idx;
  const float* delta;
  size_t batch, length, reminded;
  int64_t stmCapacity;
  float* lifespanOut;
  uint8_t* typesOut;
  int32_t* ageOut;
  bool* keep;
  int64_t* rank;
  int64_t* numKept;
};

// What the value checks look at, over one row or merged over rows (see Fault).
struct Seen {
  uint8_t topType = 0;
  bool badLife = false, badDelta = false;
  int64_t topIndex = -1;
};

// Row b's values as the checks see them: read just before the row is stepped, so the step reads
// them from the cache (one pass over the inputs from memory).
inline Seen checkRow(const Step& s, size_t b) {
  const size_t length = s.length, reminded = s.reminded;
  const float* lifeIn = s.lifespan + b * length;
  const uint8_t* typesIn = s.types + b * length;
  const int64_t* idx = s.idx + b * reminded;
  const float* delta = s.delta + b * reminded;
  Seen seen;
  // NaN or -inf read off the bits: integer compares vectorise, float ones that might trap do not
  // (B = 4, M = 1e4: 118 -> 78 us a step)
  uint8_t topType = 0;
  uint32_t badLife = 0;
#pragma omp simd reduction(max : topType) reduction(| : badLife)
  for (size_t m = 0; m < length; ++m) {
    uint32_t bits;
    std::memcpy(&bits, lifeIn + m, sizeof(bits));
    topType = typesIn[m] > topType ? typesIn[m] : topType;
    badLife |= static_cast<uint32_t>((bits & 0x7fffffffu) > 0x7f800000u) | static_cast<uint32_t>(bits == 0xff800000u);
  }
  seen.topType = topType;
  seen.badLife = badLife != 0;
  for (size_t r = 0; r < reminded; ++r) {
    seen.badDelta |= !std::isfinite(delta[r]);
    seen.topIndex = idx[r] > seen.topIndex ? idx[r] : seen.topIndex;
  }
  return seen;
}

inline void merge(Seen& all, const Seen& row) {
  all.topType = row.topType > all.topType ? row.topType : all.topType;
  all.topIndex = row.topIndex > all.topIndex ? row.topIndex : all.topIndex;
  all.badLife |= row.badLife;
  all.badDelta |= row.badDelta;
}

// The first failed check of the whole step, in the Python op's order.
inline Fault faultOf(const Seen& all, const Step& s, Codes codes) {
  if (s.batch != 0 && s.length != 0 && all.topType > codes.longterm) return {1, all.topType};
  if (all.badLife) return {2, 0};
  if (all.badDelta) return {3, 0};
  if (all.topIndex >= static_cast<int64_t>(s.length)) return {4, all.topIndex};
  return {};
}

// Pointers and sizes are read into locals first: the uint8_t / bool outputs may alias anything
// reachable through `s` (char aliasing), and loops re-reading `s` after each store do not vectorise.
inline void stepRow(const Step& s, Codes codes, size_t b) {
  const size_t length = s.length, reminded = s.reminded;
  const float* lifeIn = s.lifespan + b * length;
  const uint8_t* typesIn = s.types + b * length;
  const int64_t* idx = s.idx + b * reminded;
  const float* delta = s.delta + b * reminded;
  float* life = s.lifespanOut + b * length;
  uint8_t* typesOut = s.typesOut + b * length;
  bool* keep = s.keep + b * length;
  int64_t* rank = s.rank + b * length;
  const uint8_t working = codes.working, shortterm = codes.shortterm, longterm = codes.longterm;
  for (size_t m = 0; m < length; ++m) life[m] = 0.0f;  // the deltas' sums first, as torch adds them
  for (size_t r = 0; r < reminded; ++r) {
    const int64_t m = idx[r];
    if (m >= 0 && m < static_cast<int64_t>(length)) life[m] += delta[r];
  }
  // Branch-free passes: whether an engram is short-term or kept is as good as random, and the
  // mispredicted branches on both cost half the step (B = 4, M = 1e4: 245 us with, 118 without)
  int64_t stm = 0;
#pragma omp simd reduction(+ : stm)
  for (size_t m = 0; m < length; ++m) {
    life[m] = (lifeIn[m] + life[m]) - 1.0f;
    const uint8_t t = typesIn[m] == working ? shortterm : typesIn[m];
    typesOut[m] = t;
    stm += t == shortterm;
    keep[m] = life[m] > 0.0f;
  }
  // the first (stm - capacity) short-term engrams by position become long-term: a prefix only
  const int64_t exceeded = stm - s.stmCapacity;
  for (size_t m = 0, seen = 0; m < length && static_cast<int64_t>(seen) < exceeded; ++m) {
    const uint8_t t = typesOut[m];
    const uint8_t promote = t == shortterm;  // masks, not selects: GCC 12 turns those into branches
    typesOut[m] = static_cast<uint8_t>(t ^ ((t ^ longterm) & -promote));
    seen += promote;
  }
  int64_t kept = 0;
  for (size_t m = 0; m < length; ++m) {
    const int64_t k = keep[m];
    rank[m] = (kept & -k) | (k - 1);  // kept if k, else -1
    kept += k;
  }
  if (s.age) {
    const int32_t* ageIn = s.age + b * length;
    int32_t* ageOut = s.ageOut + b * length;
    for (size_t m = 0; m < length; ++m) ageOut[m] = static_cast<int32_t>(static_cast<uint32_t>(ageIn[m]) + 1u);
  }
  s.numKept[b] = kept;
}

#pragma omp declare reduction(mergeSeen : Seen : merge(omp_out, omp_in)) initializer(omp_priv = Seen{})

// The step, with the value checks (when `check`) folded into its row loop: every output is
// written, and a failed check returns its Fault (the caller then drops the outputs; the inputs
// are never written). Unchecked, an index >= M is ignored like a negative one.
inline Fault step(const Step& s, Codes codes, bool check) {
  const bool parallel = s.batch > 1 && s.batch * (s.length + s.reminded) >= (size_t{1} << 16);
  const auto row = [&s, codes, check](size_t b, Seen& seen) {
    if (check) merge(seen, checkRow(s, b));
    stepRow(s, codes, b);
  };
  Seen all;
  if (!parallel) {  // no OpenMP region at all: entering one (even with if(false)) costs ~0.4 us
    for (size_t b = 0; b < s.batch; ++b) row(b, all);
  } else {
    const long rows = static_cast<long>(s.batch);
#pragma omp parallel for schedule(static) reduction(mergeSeen : all)
    for (long b = 0; b < rows; ++b) row(static_cast<size_t>(b), all);
  }
  return check ? faultOf(all, s, codes) : Fault{};
}

}  // namespace lifespan
}  // namespace mnemonix
