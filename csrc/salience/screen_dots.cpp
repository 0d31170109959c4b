// The salience screen's float32 dot products (screen_dots.hpp), compiled with
// -ffp-contract=fast (CMakeLists.txt) so that the AVX2 + FMA clone fuses each multiply-add:
// half the floating-point operations of the separate multiply and add that salience/bindings.cpp
// keeps for its float64 sums.
#include "salience/screen_dots.hpp"

#include "common/rows.hpp"
#include "salience/screen.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MNEMONIX_FMA_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MNEMONIX_FMA_CLONES
#endif

namespace mnemonix {
namespace salience {

MNEMONIX_FMA_CLONES void screenFirstPass(const float* q, size_t d, const float* tile, size_t count, float* dots,
                                         size_t block, bool pair, const char* ahead) {
  if (pair)
    dotPairSquaresRows(q, d, tile, count, dots, block);
  else if (d >= kRowsInOrderDims)
    dotSquaresRows(q, d, tile, count, dots, 2 * block);
  else
    rows::dotBlock<1, true>(q, d, tile, count, dots, 2 * block, ahead, d * sizeof(float));
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
