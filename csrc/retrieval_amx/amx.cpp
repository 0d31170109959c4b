// AMX bfloat16 retrieval kernel (see amx.hpp for the math and the tile layout).
#include "retrieval_amx/amx.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <vector>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define MNEMONIX_AMX_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "retrieval_amx/tiles.hpp"
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace mnemonix {
namespace retrieval {
namespace amx {

#ifdef MNEMONIX_AMX_BUILD

namespace {

constexpr size_t kBlock = 128;              // keys per block: 8 key groups, 4 chunks of P V
constexpr size_t kGroups = kBlock / kRows;
constexpr size_t kChunks = kBlock / kDepth;
// d chunks per pass of the logits: a pair of key groups' tiles over them (32 KB) stay in L1
// while every query tile of the group passes by.
constexpr size_t kSliceChunks = 16;
// Query tiles scanned together: their working sets (running out, packed queries, logits and
// weights) within this budget. Every group re-reads and re-packs the keys, so the budget is the
// L3's rather than L2's: N = 1e4, d = 12,288, B = 100 took 114 ms in one group, 230 in two
// (8 MB); at d <= 1,024 the budget moved times by -10..+30% (B = 256..4,096), no clear way.
constexpr size_t kGroupBytes = size_t(16) << 20;
// A thread keeps its workspace between calls up to this size (page faults of a fresh one cost
// ~1 ms per 16 MB on a VM); above, it is released after the call.
constexpr size_t kKeptWorkspaceFloats = size_t(16) << 20;
constexpr size_t kMaxParts = 64;  // key ranges merged (threads)
// How far a block's max may pass a query's reference max before the reference moves (and the
// running out is rescaled): FlashAttention-4's conditional rescaling. Weights then reach
// e^8 ~ 3e3 (float32 holds them and their sums; the bfloat16 split P_hi + P_lo is relative).
constexpr float kMaxSlack = 8.0f;
constexpr float kMaxWeight = 2981.0f;  // > e^kMaxSlack (2980.96)
constexpr float kMaxSum = 0x1p124f;    // a running out below this, a factor 16 short of float32's max

float bitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The queries as B tiles in AMX's pair layout, tiles t, t + 1 (t even) interleaved by chunk:
// tile (t, c) at (((t / 2) * chunks + c) * 2 + t % 2) * kTile, row `pair` holding the dwords
// Q[16 t + query][32 c + 2 pair .. + 1] for query 0..15 (zeros past B and d): a transpose of
// the 16 x 16 dwords of 16 query rows.
MNEMONIX_TARGET_AMX void packQueries(const Problem& p, size_t tiles, size_t chunks, uint16_t* packed) {
  for (size_t t = 0; t < roundUp(tiles, 2); ++t) {
    for (size_t c = 0; c < chunks; ++c) {
      __m512i r[16];
      const size_t width = std::min(kDepth, p.d - c * kDepth);
      for (size_t q = 0; q < kRows; ++q) {
        const size_t b = t * kRows + q;
        r[q] = b < p.batch ? _mm512_maskz_loadu_epi16(firstLanes(width), p.q + b * p.d + c * kDepth)
                           : _mm512_setzero_si512();
      }
      transpose16(r);
      uint16_t* dst = packed + (((t / 2) * chunks + c) * 2 + t % 2) * kTile;
      for (size_t pair = 0; pair < kRows; ++pair) _mm512_storeu_si512(dst + pair * kDepth, r[pair]);
    }
  }
}

// A thread's buffers, kept between calls (see kKeptWorkspaceFloats).
struct Workspace {
  std::vector<float> m, l, acc;  // [tiles * 16], same, [tiles][dvTiles][16][16]: max, sum, out by C tile
  std::vector<uint16_t> keys;    // a block's keys as A tiles, key-group pairs interleaved by chunk
  std::vector<uint16_t> values;  // a block's values as B tiles: [chunk][dv tile][16 pairs][32]
  std::vector<float> logits;     // [group tiles][kBlock][16]
  std::vector<uint16_t> weights; // P_hi and P_lo A tiles: [group tiles][chunk][2][16][32]
  std::vector<float> alpha;      // [group tiles][16]
};

// One thread's scan: the problem, its padded sizes and the thread's workspace.
struct Scan {
  const Problem& p;
  size_t tiles, chunks, dvTiles, groupTiles;
  const uint16_t* qPacked;
  Workspace& w;
  uint32_t valueBits = 0;  // the largest |value| packed so far, as bfloat16 magnitude bits
};

// Packs keys [k0, k0 + count) of K as A tiles (1 KB, contiguous; zeros past count and d): key
// groups g, g + 1 (g even) interleaved by chunk, tile (g, c) at (((g / 2) * chunks + c) * 2 +
// g % 2) * kTile. Written tile by tile, its 16 rows in order (row by row, a row's 32 chunks
// landed 2 KB apart in two L1 sets: ~13 cycles a store), read as 16 streams of key rows.
MNEMONIX_TARGET_AMX void packKeys(Scan& s, size_t k0, size_t count) {
  const size_t d = s.p.d;
  for (size_t g = 0; g < kGroups; ++g) {
    uint16_t* tiles = s.w.keys.data() + ((g / 2) * s.chunks * 2 + g % 2) * kTile;
    for (size_t c = 0; c < s.chunks; ++c) {
      const __mmask32 lanes = firstLanes(std::min(kDepth, d - c * kDepth));
      uint16_t* dst = tiles + 2 * c * kTile;
      for (size_t r = 0; r < kRows; ++r) {
        const size_t j = g * kRows + r;
        const __mmask32 mask = j < count ? lanes : 0;
        _mm512_storeu_si512(dst + r * kDepth, _mm512_maskz_loadu_epi16(mask, s.p.k + (k0 + j) * d + c * kDepth));
      }
    }
  }
}

// Packs values [k0, k0 + count) of V as B tiles in the pair layout (zero rows past count):
// values[((c * dvTiles + tile) * 16 + pair) * 32 + 2 col + e] = V[k0 + 32 c + 2 pair + e][16 tile + col],
// written tile by tile in order (as packKeys).
MNEMONIX_TARGET_AMX void packValues(Scan& s, size_t k0, size_t count) {
  const size_t dv = s.p.dv;
  uint16_t* dst = s.w.values.data();
  __m512i top = _mm512_setzero_si512();  // magnitude bits: a NaN's pass an infinity's
  const __m512i magnitude = _mm512_set1_epi32(0x7fff);
  for (size_t c = 0; c < kChunks; ++c) {
    for (size_t tile = 0; tile < s.dvTiles; ++tile) {
      const size_t col = tile * kRows;
      const __mmask16 lanes = static_cast<__mmask16>(firstLanes(std::min(kRows, dv - col)));
      for (size_t pair = 0; pair < kRows; ++pair, dst += kDepth) {
        const size_t j0 = c * kDepth + 2 * pair;
        const __mmask16 m0 = j0 < count ? lanes : 0, m1 = j0 + 1 < count ? lanes : 0;
        const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m0, s.p.v + (k0 + j0) * dv + col));
        const __m512i hi = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m1, s.p.v + (k0 + j0 + 1) * dv + col));
        _mm512_storeu_si512(dst, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        top = _mm512_max_epu32(top, _mm512_max_epu32(_mm512_and_si512(lo, magnitude), _mm512_and_si512(hi, magnitude)));
      }
    }
  }
  s.valueBits = std::max<uint32_t>(s.valueBits, _mm512_reduce_max_epu32(top));
}

// The logits of a query tile t alone (slot u of the group): C tiles 0-3 = key groups g..g + 3,
// the keys' A tiles alternating in tiles 4-5, the queries' B tile in 6 (1 x 4 blocking: no zero
// tile paired with it, which doubled the work of one query tile).
MNEMONIX_TARGET_AMX void blockLogitsOne(Scan& s, size_t t, size_t u) {
  const size_t pairSlab = s.chunks * 2 * kTile;
  const uint16_t* qp = s.qPacked + (t / 2) * pairSlab + (t % 2) * kTile;  // chunk c at 2 c tiles on
  float* out = s.w.logits.data() + u * kBlock * kRows;
  for (size_t c0 = 0; c0 < s.chunks; c0 += kSliceChunks) {
    const size_t c1 = std::min(s.chunks, c0 + kSliceChunks);
    for (size_t g = 0; g < kGroups; g += 4) {
      const uint16_t* k01 = s.w.keys.data() + (g / 2) * pairSlab;  // groups g, g + 1 interleaved
      const uint16_t* k23 = k01 + pairSlab;                          // groups g + 2, g + 3
      float* o = out + g * kCTile;
      if (c0 == 0) {
        zeroAccumulators();
      } else {
        loadAccumulators(o);
      }
      for (size_t c = c0; c < c1; ++c) {
        _tile_loadd(6, qp + 2 * c * kTile, 64);
        _tile_loadd(4, k01 + 2 * c * kTile, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(5, k01 + (2 * c + 1) * kTile, 64);
        _tile_dpbf16ps(1, 5, 6);
        _tile_loadd(4, k23 + 2 * c * kTile, 64);
        _tile_dpbf16ps(2, 4, 6);
        _tile_loadd(5, k23 + (2 * c + 1) * kTile, 64);
        _tile_dpbf16ps(3, 5, 6);
      }
      storeAccumulators(o);
    }
  }
}

// logits[t - t0][j][query] = <K[k0 + j], Q[16 t + query]> for the block's keys and the query
// tiles [t0, t1) (t0 even; an odd last tile alone: blockLogitsOne). 2 x 2 blocking: C tiles 0-3 =
// key groups g, g + 1 x query tiles t, t + 1; tiles 4-5 the keys' A tiles, 6-7 the queries' B
// tiles. d is taken in slices of kSliceChunks chunks, the C tiles carried in memory.
MNEMONIX_TARGET_AMX void blockLogits(Scan& s, size_t t0, size_t t1) {
  const size_t pairSlab = s.chunks * 2 * kTile;  // two tiles' packed data
  const size_t paired = t0 + (t1 - t0) / 2 * 2;
  if (paired < t1) blockLogitsOne(s, paired, paired - t0);
  for (size_t c0 = 0; c0 < s.chunks; c0 += kSliceChunks) {
    const size_t c1 = std::min(s.chunks, c0 + kSliceChunks);
    for (size_t g = 0; g < kGroups; g += 2) {
      const uint16_t* kp = s.w.keys.data() + (g / 2) * pairSlab;
      for (size_t t = t0; t < paired; t += 2) {
        const uint16_t* qp = s.qPacked + (t / 2) * pairSlab;
        float* out = s.w.logits.data() + ((t - t0) * kBlock + g * kRows) * kRows;
        float* out1 = out + kBlock * kRows;  // query tile t + 1
        if (c0 == 0) {
          zeroAccumulators();
        } else {
          _tile_loadd(0, out, 64);
          _tile_loadd(1, out1, 64);
          _tile_loadd(2, out + kCTile, 64);
          _tile_loadd(3, out1 + kCTile, 64);
        }
        for (size_t c = c0; c < c1; ++c) {
          _tile_loadd(4, kp + 2 * c * kTile, 64);
          _tile_loadd(6, qp + 2 * c * kTile, 64);
          _tile_loadd(5, kp + (2 * c + 1) * kTile, 64);
          _tile_loadd(7, qp + (2 * c + 1) * kTile, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, out, 64);
        _tile_stored(1, out1, 64);
        _tile_stored(2, out + kCTile, 64);
        _tile_stored(3, out1 + kCTile, 64);
      }
    }
  }
}

// One 32-key chunk of query tile u's weights w (key-major: w[j] = 16 queries' weights of key j)
// as the A tiles P_hi, P_lo (query-major, 32 keys a row): pairs of keys interleaved into dwords,
// then a 16 x 16 dword transpose.
MNEMONIX_TARGET_AMX void storeWeightTiles(const __m512* w, uint16_t* hiTile, uint16_t* loTile) {
  // word 2 q + e of a pair's dword row = word q (e = 0: the even key) or 16 + q (the odd key) of
  // the two keys' 16 + 16 bfloat16 weights
  alignas(64) static constexpr uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                            8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i interleave = _mm512_load_si512(kInterleave);
  __m512i hi[16], lo[16];
  for (size_t pair = 0; pair < kRows; ++pair) {
    const __m512 w0 = w[2 * pair], w1 = w[2 * pair + 1];
    const __m512i h = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(w1, w0));  // to nearest even
    const __m512 h0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    const __m512 h1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    const __m512i l = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(_mm512_sub_ps(w1, h1), _mm512_sub_ps(w0, h0)));
    hi[pair] = _mm512_permutexvar_epi16(interleave, h);
    lo[pair] = _mm512_permutexvar_epi16(interleave, l);
  }
  transpose16(hi);
  transpose16(lo);
  for (size_t q = 0; q < kRows; ++q) {
    _mm512_storeu_si512(hiTile + q * kDepth, hi[q]);
    _mm512_storeu_si512(loTile + q * kDepth, lo[q]);
  }
}

// The online softmax of query tile t (slot u of the group) over the block's `count` logits: the
// new max, alpha = exp(m_old - m_new) into alpha[u], the weights as P_hi / P_lo A tiles. A NaN
// or infinite logit makes its query's sum NaN (its out and lse then read NaN: the caller's
// check). Returns whether any alpha differs from 1 (the tile's running out must be rescaled).
MNEMONIX_TARGET_AMX bool blockWeights(Scan& s, size_t t, size_t u, size_t count) {
  const __m512 beta = _mm512_set1_ps(s.p.beta);
  const float* x = s.w.logits.data() + u * kBlock * kRows;
  const __m512 mOld = _mm512_loadu_ps(s.w.m.data() + t * kRows);
  __m512 top = _mm512_set1_ps(kNegInf);
  __mmask16 bad = 0;
  for (size_t j = 0; j < count; ++j) {
    const __m512 v = _mm512_mul_ps(beta, _mm512_loadu_ps(x + j * kRows));
    bad |= _mm512_fpclass_ps_mask(v, 0x99);  // QNaN, +Inf, -Inf, SNaN
    top = _mm512_max_ps(top, v);
  }
  // The reference max m moves only when the block's max passes it by more than kMaxSlack: the
  // weights exp(x - m) stay below e^kMaxSlack, and past the first blocks a tile's running out is
  // seldom rescaled (a pass over it per block: N = 1e4, d = 1,024, B = 256 spent 13% there).
  // It moves as before where the sums could otherwise pass kMaxSum: the running out is at most
  // l * max |v|, and l grows by up to e^kMaxSlack a key (values near float32's limit keep the
  // range they had with p <= 1).
  const __m512 valueMax = _mm512_set1_ps(bitsToFloat(s.valueBits << 16));
  const __m512 lBound = _mm512_add_ps(_mm512_loadu_ps(s.w.l.data() + t * kRows),
                                      _mm512_set1_ps(static_cast<float>(count) * kMaxWeight));
  const __mmask16 eager = _mm512_cmp_ps_mask(_mm512_mul_ps(lBound, valueMax), _mm512_set1_ps(kMaxSum), _CMP_GE_OQ);
  const __mmask16 grow = _mm512_cmp_ps_mask(top, _mm512_add_ps(mOld, _mm512_set1_ps(kMaxSlack)), _CMP_GT_OQ) | eager;
  const __m512 mNew = _mm512_mask_mov_ps(mOld, grow, _mm512_max_ps(top, mOld));
  // a query with no finite logit yet keeps weight 0 (exp(x - mNew) would be NaN at mNew = -inf)
  const __mmask16 live = _mm512_cmp_ps_mask(mNew, _mm512_set1_ps(kNegInf), _CMP_NEQ_OQ);
  const __m512 alpha = exp16(_mm512_maskz_sub_ps(live, mOld, mNew));
  __m512 sum = _mm512_setzero_ps();
  uint16_t* tiles = s.w.weights.data() + u * kChunks * 2 * kTile;
  for (size_t c = 0; c < kChunks; ++c) {
    __m512 w[kDepth];
    for (size_t i = 0; i < kDepth; ++i) {
      const size_t j = c * kDepth + i;
      w[i] = _mm512_setzero_ps();
      if (j < count)
        w[i] = _mm512_maskz_mov_ps(live, exp16(_mm512_fmsub_ps(beta, _mm512_loadu_ps(x + j * kRows), mNew)));
      sum = _mm512_add_ps(sum, w[i]);
    }
    storeWeightTiles(w, tiles + 2 * c * kTile, tiles + (2 * c + 1) * kTile);
  }
  const __m512 lNew = _mm512_fmadd_ps(_mm512_loadu_ps(s.w.l.data() + t * kRows), alpha, sum);
  _mm512_storeu_ps(s.w.l.data() + t * kRows, _mm512_mask_mov_ps(lNew, bad, _mm512_set1_ps(std::nanf(""))));
  _mm512_storeu_ps(s.w.m.data() + t * kRows, mNew);
  _mm512_storeu_ps(s.w.alpha.data() + u * kRows, alpha);
  return _mm512_cmp_ps_mask(alpha, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ) != 0;
}

// Query tile t's running out *= alpha[u] (per query row).
MNEMONIX_TARGET_AMX void rescale(Scan& s, size_t t, size_t u) {
  float* acc = s.w.acc.data() + t * s.dvTiles * kCTile;
  for (size_t q = 0; q < kRows; ++q) {
    const __m512 a = _mm512_set1_ps(s.w.alpha[u * kRows + q]);
    for (size_t dt = 0; dt < s.dvTiles; ++dt) {
      float* row = acc + dt * kCTile + q * kRows;
      _mm512_storeu_ps(row, _mm512_mul_ps(a, _mm512_loadu_ps(row)));
    }
  }
}

// The running out of query tiles t, t + 1 (slots u, u + 1) += P_hi V + P_lo V over the block's
// first `chunksUsed` chunks; on the thread's first block (`first`) it starts from zero. 2 x 2
// blocking: C tiles 0-3 = query tiles t, t + 1 x dv tiles dt, dt + 1; tiles 4-5 the weights' A
// tiles, 6-7 the values' B tiles.
MNEMONIX_TARGET_AMX void blockValues(Scan& s, size_t t, size_t u, size_t chunksUsed, bool first) {
  float* acc0 = s.w.acc.data() + t * s.dvTiles * kCTile;
  float* acc1 = acc0 + s.dvTiles * kCTile;
  const uint16_t* w0 = s.w.weights.data() + u * kChunks * 2 * kTile;
  const uint16_t* w1 = w0 + kChunks * 2 * kTile;
  for (size_t dt = 0; dt < s.dvTiles; dt += 2) {
    const bool two = dt + 1 < s.dvTiles;
    float* a0 = acc0 + dt * kCTile;
    float* a1 = acc1 + dt * kCTile;
    if (first) {
      zeroAccumulators();
    } else {
      _tile_loadd(0, a0, 64);
      _tile_loadd(2, a1, 64);
      if (two) {
        _tile_loadd(1, a0 + kCTile, 64);
        _tile_loadd(3, a1 + kCTile, 64);
      }
    }
    for (size_t c = 0; c < chunksUsed; ++c) {
      const uint16_t* v = s.w.values.data() + (c * s.dvTiles + dt) * kTile;
      _tile_loadd(6, v, 64);
      if (two) _tile_loadd(7, v + kTile, 64);
      for (size_t h = 0; h < 2; ++h) {  // P_hi, then P_lo
        _tile_loadd(4, w0 + (2 * c + h) * kTile, 64);
        _tile_loadd(5, w1 + (2 * c + h) * kTile, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        if (two) {
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
    }
    _tile_stored(0, a0, 64);
    _tile_stored(2, a1, 64);
    if (two) {
      _tile_stored(1, a0 + kCTile, 64);
      _tile_stored(3, a1 + kCTile, 64);
    }
  }
}

// blockValues for a query tile t alone (slot u): C tiles 0-3 = dv tiles dt..dt + 3, tile 4 P_hi,
// tile 5 P_lo, the values' B tiles alternating in 6-7 (each C tile's two products not back to back).
MNEMONIX_TARGET_AMX void blockValuesOne(Scan& s, size_t t, size_t u, size_t chunksUsed, bool first) {
  float* acc = s.w.acc.data() + t * s.dvTiles * kCTile;
  const uint16_t* w = s.w.weights.data() + u * kChunks * 2 * kTile;
  for (size_t dt = 0; dt < s.dvTiles; dt += 4) {
    const size_t n = std::min<size_t>(4, s.dvTiles - dt);
    float* a = acc + dt * kCTile;
    if (first) {
      zeroAccumulators();
    } else {
      _tile_loadd(0, a, 64);
      if (n > 1) _tile_loadd(1, a + kCTile, 64);
      if (n > 2) _tile_loadd(2, a + 2 * kCTile, 64);
      if (n > 3) _tile_loadd(3, a + 3 * kCTile, 64);
    }
    for (size_t c = 0; c < chunksUsed; ++c) {
      const uint16_t* v = s.w.values.data() + (c * s.dvTiles + dt) * kTile;
      _tile_loadd(4, w + 2 * c * kTile, 64);
      _tile_loadd(5, w + (2 * c + 1) * kTile, 64);
      _tile_loadd(6, v, 64);
      _tile_dpbf16ps(0, 4, 6);
      if (n > 1) {
        _tile_loadd(7, v + kTile, 64);
        _tile_dpbf16ps(1, 4, 7);
      }
      _tile_dpbf16ps(0, 5, 6);
      if (n > 1) _tile_dpbf16ps(1, 5, 7);
      if (n > 2) {
        _tile_loadd(6, v + 2 * kTile, 64);
        _tile_dpbf16ps(2, 4, 6);
        if (n > 3) {
          _tile_loadd(7, v + 3 * kTile, 64);
          _tile_dpbf16ps(3, 4, 7);
        }
        _tile_dpbf16ps(2, 5, 6);
        if (n > 3) _tile_dpbf16ps(3, 5, 7);
      }
    }
    _tile_stored(0, a, 64);
    if (n > 1) _tile_stored(1, a + kCTile, 64);
    if (n > 2) _tile_stored(2, a + 2 * kCTile, 64);
    if (n > 3) _tile_stored(3, a + 3 * kCTile, 64);
  }
}

// One thread's scan of keys [begin, end) for every query tile, a group of tiles at a time.
MNEMONIX_TARGET_AMX void scanKeys(Scan& s, size_t begin, size_t end) {
  configureTiles();
  for (size_t t0 = 0; t0 < s.tiles; t0 += s.groupTiles) {
    const size_t t1 = std::min(s.tiles, t0 + s.groupTiles);
    for (size_t k0 = begin; k0 < end; k0 += kBlock) {
      const size_t count = std::min(kBlock, end - k0);
      const bool first = k0 == begin;
      packKeys(s, k0, count);
      packValues(s, k0, count);
      blockLogits(s, t0, t1);
      for (size_t t = t0; t < t1; t += 2) {
        const bool pair = t + 1 < t1;
        for (size_t u = t - t0; u < t - t0 + (pair ? 2 : 1); ++u)
          if (blockWeights(s, t0 + u, u, count) && !first) rescale(s, t0 + u, u);
        const size_t chunksUsed = (count + kDepth - 1) / kDepth;
        if (pair)
          blockValues(s, t, t - t0, chunksUsed, first);
        else
          blockValuesOne(s, t, t - t0, chunksUsed, first);
      }
    }
  }
  _tile_release();
}

// out and lse from the parts' (m, l, acc): the exact merge of their key ranges, one query tile
// per task. A part that saw no key (more threads than blocks) has m = -inf and weighs 0.
MNEMONIX_TARGET_AMX void mergeTile(const Problem& p, const std::vector<Scan*>& parts, size_t t) {
  const size_t dvTiles = parts[0]->dvTiles;
  for (size_t q = 0; q < kRows && t * kRows + q < p.batch; ++q) {
    const size_t b = t * kRows + q;
    float top = kNegInf;
    for (const Scan* s : parts) top = std::max(top, s->w.m[b]);
    float weight[kMaxParts];
    float total = 0.0f;
    for (size_t i = 0; i < parts.size(); ++i) {
      weight[i] = parts[i]->w.m[b] == kNegInf ? 0.0f : std::exp(parts[i]->w.m[b] - top);
      total += weight[i] * parts[i]->w.l[b];
    }
    const __m512 inv = _mm512_set1_ps(1.0f / total);
    for (size_t dt = 0; dt < dvTiles; ++dt) {
      __m512 o = _mm512_setzero_ps();
      for (size_t i = 0; i < parts.size(); ++i) {
        if (weight[i] == 0.0f) continue;  // (its acc was never written)
        const float* row = parts[i]->w.acc.data() + (t * dvTiles + dt) * kCTile + q * kRows;
        o = _mm512_fmadd_ps(_mm512_set1_ps(weight[i]), _mm512_loadu_ps(row), o);
      }
      o = _mm512_mul_ps(o, inv);
      const size_t col = dt * kRows;
      const __mmask16 mask = static_cast<__mmask16>(firstLanes(std::min(kRows, p.dv - col)));
      if (p.outFloat32)
        _mm512_mask_storeu_ps(static_cast<float*>(p.out) + b * p.dv + col, mask, o);
      else
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(p.out) + b * p.dv + col, mask,
                                 _mm512_cvtepi32_epi16(bf16Bits(o)));
    }
    if (p.lse) p.lse[b] = top + std::log(total);
  }
}

// Sizes a thread's workspace for the call (m = -inf and l = 0 set; nothing else needs zeros).
void prepare(Workspace& w, size_t tiles, size_t dPad, size_t dvTiles, size_t groupTiles) {
  const size_t rows = roundUp(tiles, 2) * kRows;
  w.m.assign(rows, kNegInf);
  w.l.assign(rows, 0.0f);
  if (w.acc.size() < roundUp(tiles, 2) * dvTiles * kCTile) w.acc.resize(roundUp(tiles, 2) * dvTiles * kCTile);
  w.keys.resize(kBlock * dPad);
  w.values.resize(kChunks * dvTiles * kTile);
  w.logits.resize(groupTiles * kBlock * kRows);
  w.weights.resize(groupTiles * kChunks * 2 * kTile);
  w.alpha.resize(groupTiles * kRows);
}

void release(Workspace& w) {
  if (w.acc.size() > kKeptWorkspaceFloats) std::vector<float>().swap(w.acc);
  if (w.keys.size() > 2 * kKeptWorkspaceFloats) std::vector<uint16_t>().swap(w.keys);
  if (w.values.size() > 2 * kKeptWorkspaceFloats) std::vector<uint16_t>().swap(w.values);
}

Workspace& threadWorkspace() {
  static thread_local Workspace w;
  return w;
}

}  // namespace

bool available() {
  static const bool ok = [] {
    const char* wanted = std::getenv("MNEMONIX_AMX");  // "0": never (tests of the refusal, comparisons)
    if (wanted && std::strcmp(wanted, "0") == 0) return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool avx512 = (b >> 16) & 1u, dq = (b >> 17) & 1u, bw = (b >> 30) & 1u, vl = (b >> 31) & 1u;
    const bool tile = (d >> 24) & 1u, bf16 = (d >> 22) & 1u;
    if (!(avx512 && dq && bw && vl && tile && bf16)) return false;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1u)) return false;  // AVX512_BF16 (the weights' split)
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // Linux: ask for the tile state
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

void retrieve(const Problem& p, int threads) {
  const size_t tiles = (p.batch + kRows - 1) / kRows;
  const size_t dPad = roundUp(p.d, kDepth), chunks = dPad / kDepth;
  const size_t dvTiles = (p.dv + kRows - 1) / kRows;
  // a query tile's share of the group's working set: its running out, packed queries, logits, weights
  const size_t tileBytes = dvTiles * kCTile * 4 + chunks * kTile * 2 + kBlock * kRows * 4 + kChunks * 2 * kTile * 2;
  const size_t groupTiles = std::min(roundUp(tiles, 2), std::max<size_t>(2, kGroupBytes / tileBytes) & ~size_t(1));
  std::vector<uint16_t> qPacked(roundUp(tiles, 2) * chunks * kTile);
  packQueries(p, tiles, chunks, qPacked.data());
  size_t maxParts = 1;
#ifdef _OPENMP
  maxParts = static_cast<size_t>(threads > 0 ? threads : omp_get_max_threads());
#endif
  maxParts = std::max<size_t>(1, std::min({maxParts, (p.n + kBlock - 1) / kBlock, kMaxParts}));
  std::vector<Scan*> parts(maxParts, nullptr);  // part i: thread i's scan (the merge's fixed order)
  size_t team = 1;
#pragma omp parallel num_threads(static_cast<int>(maxParts))
  {
    size_t me = 0;
#ifdef _OPENMP
#pragma omp single
    team = static_cast<size_t>(omp_get_num_threads());
    me = static_cast<size_t>(omp_get_thread_num());
#endif
    Workspace& w = threadWorkspace();
    prepare(w, tiles, dPad, dvTiles, groupTiles);
    Scan scan{p, tiles, chunks, dvTiles, groupTiles, qPacked.data(), w};
    const size_t share = roundUp((p.n + team - 1) / team, kBlock);
    const size_t begin = std::min(p.n, me * share), end = std::min(p.n, begin + share);
    if (begin < end) scanKeys(scan, begin, end);
    parts[me] = &scan;
#pragma omp barrier
    const std::vector<Scan*> used(parts.begin(), parts.begin() + static_cast<std::ptrdiff_t>(team));
#pragma omp for schedule(static)
    for (size_t t = 0; t < tiles; ++t) mergeTile(p, used, t);
    release(w);
  }
}

#else  // no AMX in this build

bool available() { return false; }
void retrieve(const Problem&, int) {}

#endif

}  // namespace amx
}  // namespace retrieval
}  // namespace mnemonix
