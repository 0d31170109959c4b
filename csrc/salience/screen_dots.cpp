// The salience screen's float32 dot products (screen_dots.hpp), compiled with
// -ffp-contract=fast (CMakeLists.txt) so that the AVX2 + FMA clone fuses each multiply-add:
// half the floating-point operations of the separate multiply and add that salience/bindings.cpp
// keeps for its float64 sums.
#include "salience/screen_dots.hpp"

#include <cstddef>

#include "common/rows.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MNEMONIX_FMA_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MNEMONIX_FMA_CLONES
#endif

namespace mnemonix {
namespace salience {
namespace {

constexpr size_t kRowsInOrderDims = 64;  // from here on dotSquaresRows (measured: d = 64..768, B = 1)

// One query's float32 dot products with `count` rows (stride d) into out[r], and the rows' squared
// norms into out[stride + r], a row at a time: rows read in address order, which the hardware's
// stream prefetch follows (four rows interleaved 3 kB apart defeat it at large d).
MNEMONIX_ALWAYS_INLINE void dotSquaresRows(const float* q, size_t d, const float* tile, size_t count, float* out,
                                           size_t stride) {
  using rows::Lanes8;
  using rows::loadLanes8;
  const size_t dv = d & ~size_t(15);
  for (size_t r = 0; r < count; ++r) {
    const float* x = tile + r * d;
    Lanes8 a0 = {}, a1 = {}, s0 = {}, s1 = {};
    for (size_t i = 0; i < dv; i += 16) {
      const Lanes8 x0 = loadLanes8(x + i), x1 = loadLanes8(x + i + 8);
      a0 += loadLanes8(q + i) * x0;
      a1 += loadLanes8(q + i + 8) * x1;
      s0 += x0 * x0;
      s1 += x1 * x1;
    }
    const Lanes8 sums = rows::laneSums4(a0, a1, s0, s1);
    float dot = sums[0] + sums[1], sq = sums[2] + sums[3];
    for (size_t i = dv; i < d; ++i) {
      dot += q[i] * x[i];
      sq += x[i] * x[i];
    }
    out[r] = dot;
    out[stride + r] = sq;
  }
}

// Two queries' float32 dot products with `count` rows (stride d) into out[r] and out[stride + r],
// and the rows' squared norms into out[2 * stride + r], two rows at a time: each row is read once
// for three sums (4 loads per 6 multiply-adds; a pass for the first query and the squares, then
// one for the second query, took 10 per 12).
MNEMONIX_ALWAYS_INLINE void dotPairSquaresRows(const float* q, size_t d, const float* tile, size_t count, float* out,
                                               size_t stride) {
  using rows::Lanes8;
  using rows::loadLanes8;
  const size_t dv = d & ~size_t(7);
  const float* qb = q + d;
  size_t r = 0;
  for (; r + 2 <= count; r += 2) {
    const float* x = tile + r * d;
    Lanes8 a0 = {}, a1 = {}, b0 = {}, b1 = {}, s0 = {}, s1 = {};
    for (size_t i = 0; i < dv; i += 8) {
      const Lanes8 x0 = loadLanes8(x + i), x1 = loadLanes8(x + d + i), qa = loadLanes8(q + i),
                   qbi = loadLanes8(qb + i);
      a0 += qa * x0;
      a1 += qa * x1;
      b0 += qbi * x0;
      b1 += qbi * x1;
      s0 += x0 * x0;
      s1 += x1 * x1;
    }
    const Lanes8 dots = rows::laneSums4(a0, a1, b0, b1), squares = rows::laneSums4(s0, s1, s0, s1);
    float v[6] = {dots[0], dots[1], dots[2], dots[3], squares[0], squares[1]};
    for (size_t i = dv; i < d; ++i) {
      v[0] += q[i] * x[i];
      v[1] += q[i] * x[d + i];
      v[2] += qb[i] * x[i];
      v[3] += qb[i] * x[d + i];
      v[4] += x[i] * x[i];
      v[5] += x[d + i] * x[d + i];
    }
    out[r] = v[0];
    out[r + 1] = v[1];
    out[stride + r] = v[2];
    out[stride + r + 1] = v[3];
    out[2 * stride + r] = v[4];
    out[2 * stride + r + 1] = v[5];
  }
  for (; r < count; ++r) {  // the last row: the same sums, one lane set each
    const float* x = tile + r * d;
    Lanes8 a = {}, b = {}, sq = {};
    for (size_t i = 0; i < dv; i += 8) {
      const Lanes8 x0 = loadLanes8(x + i);
      a += loadLanes8(q + i) * x0;
      b += loadLanes8(qb + i) * x0;
      sq += x0 * x0;
    }
    const Lanes8 sums = rows::laneSums4(a, b, sq, sq);
    float v[3] = {sums[0], sums[1], sums[2]};
    for (size_t i = dv; i < d; ++i) {
      v[0] += q[i] * x[i];
      v[1] += qb[i] * x[i];
      v[2] += x[i] * x[i];
    }
    out[r] = v[0];
    out[stride + r] = v[1];
    out[2 * stride + r] = v[2];
  }
}

}  // namespace

// Short rows: the first two queries and the squares in one pass (N = 1e5, d = 32, B = 4:
// 1.47 -> 1.36 ms on one thread). Long ones keep dotSquaresRows' address order, which the
// hardware prefetch follows (two rows 3 kB apart: N = 1e4, d = 768, B = 4 took 2.0 -> 2.8 ms).
MNEMONIX_FMA_CLONES bool screenFirstPass(const float* q, size_t d, const float* tile, size_t count, float* dots,
                                         size_t block, bool twoQueries, const char* ahead) {
  if (twoQueries && d < kRowsInOrderDims) {
    dotPairSquaresRows(q, d, tile, count, dots, block);
    return true;
  }
  if (d >= kRowsInOrderDims)
    dotSquaresRows(q, d, tile, count, dots, 2 * block);
  else
    rows::dotBlock<1, true>(q, d, tile, count, dots, 2 * block, ahead, d * sizeof(float));
  return false;
}

MNEMONIX_FMA_CLONES void screenQueryPass(const float* q, size_t d, const float* tile, size_t count, float* dots,
                                         size_t block, bool pair) {
  if (pair)
    rows::dotBlock<2>(q, d, tile, count, dots, block, nullptr, 0);
  else
    rows::dotBlock<1>(q, d, tile, count, dots, block, nullptr, 0);
}

}  // namespace salience
}  // namespace mnemonix
