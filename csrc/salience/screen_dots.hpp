// The float32 dot products of the salience screen, compiled apart (screen_dots.cpp) with FMA
// contraction and an AVX2 + FMA clone: these sums only decide which keys are scored in float64
// (their error bound, screen.hpp's screenBound, holds for any summation order, fused or not), so
// unlike the float64 scores they need not give the same bits in every clone. Part of
// salience.hpp's header-only core; no Python, no torch.
#pragma once

#include <cstddef>

namespace mnemonix {
namespace salience {

// The first pass over a block of `count` key rows (stride d): the first query's dot products
// into dots[r] and the rows' squared norms into dots[2 * block + r]; with `twoQueries` and short
// rows also the second query's (q + d) into dots[block + r], and then it returns true. `ahead`:
// the next block's start, prefetched (or null).
bool screenFirstPass(const float* q, size_t d, const float* tile, size_t count, float* dots, size_t block,
                     bool twoQueries, const char* ahead);

// One query's (or with `pair` two queries': q and q + d) dot products with the block's rows into
// dots[r] (and dots[block + r]), the rows read from cache.
void screenQueryPass(const float* q, size_t d, const float* tile, size_t count, float* dots, size_t block, bool pair);

}  // namespace salience
}  // namespace mnemonix
