// Python bindings of the fused CPU retrieval kernel: mnemonix._core.retrieval.
//
// Inputs converted to C-contiguous float32 with the GIL held, outputs allocated, the kernel
// run with the GIL released (it is stateless: any number of threads may call it).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/numpy_buffer.hpp"
#include "common/python.hpp"
#include "registry.hpp"
#include "retrieval/merge_parts.hpp"
#include "retrieval/retrieval.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace retrieval {
namespace {

using FloatArray = CArray<float>;

// The checked operands of one call: C-contiguous float32 views (converted once if needed).
struct Operands {
  FloatArray q, k;
  std::optional<FloatArray> v, b;  // None: the values are the keys; no bias
  size_t batch, d, n, dv;
};

Operands parse(const ArrayArg& queries, const ArrayArg& keys, const ArrayArg& values, const ArrayArg& bias) {
  Operands o{asArray<float>(queries, "queries", 2), asArray<float>(keys, "keys", 2), std::nullopt, std::nullopt,
             0, 0, 0, 0};
  o.batch = o.q.shape(0);
  o.d = o.q.shape(1);
  o.n = o.k.shape(0);
  o.dv = o.d;
  if (static_cast<size_t>(o.k.shape(1)) != o.d)
    throw std::invalid_argument("keys must have d = " + std::to_string(o.d) + " columns like queries, got " +
                                std::to_string(o.k.shape(1)));
  if (!values.obj.is_none()) {
    o.v = asArray<float>(values, "values", 2);
    if (static_cast<size_t>(o.v->shape(0)) != o.n)
      throw std::invalid_argument("values must have N = " + std::to_string(o.n) + " rows like keys, got " +
                                  std::to_string(o.v->shape(0)));
    o.dv = o.v->shape(1);
  }
  if (!bias.obj.is_none()) {
    o.b = asArray<float>(bias, "bias", 1);
    if (static_cast<size_t>(o.b->shape(0)) != o.n)
      throw std::invalid_argument("bias must have length N = " + std::to_string(o.n) + ", got " +
                                  std::to_string(o.b->shape(0)));
  }
  return o;
}

// True when no element is NaN or +-Inf (exponent bits all ones): an integer OR over the buffer,
// which vectorises without reassociating float sums (a float sum of x * 0 was latency-bound:
// 7.0 against 2.7 us for 33k values).
MNEMONIX_SIMD_CLONES
bool allFiniteSerial(const float* p, size_t count) {
  uint32_t special = 0;
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + i, sizeof(bits));
    special |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return special == 0;
}

// True when no float16 / bfloat16 value is NaN or +-Inf: its magnitude bits reach `exponent`
// (the exponent bits all ones) only then. A 16-bit max over the buffer vectorises in full
// width (a flag per value widened to 32 bits ran at half the float32 check's rate).
MNEMONIX_SIMD_CLONES
bool allFinite16Serial(const uint16_t* p, size_t count, uint16_t exponent) {
  uint16_t largest = 0;
  for (size_t i = 0; i < count; ++i) largest = std::max(largest, static_cast<uint16_t>(p[i] & 0x7fffu));
  return largest < exponent;
}

// Past this many values a check is split over OpenMP's threads, each taking one contiguous share
// in thread order (a static schedule). An input (queries, or the arrays of the general path's
// checks) splits from kParallelFiniteValues: a parallel region after the threads went to sleep
// cost ~7 ms on a 2-vCPU VM (the sleeping vCPU's wake-up), where one core checks 128k values in
// ~15 us. A kernel's just-written result splits from kParallelResultValues: the kernel's threads
// are still spinning, and its rows sit in the cores' caches in the same order (torch's flash
// kernel hands thread t the t-th share of its query blocks), so each core reads back what it
// wrote. One core read such an out at ~8 GB/s (N = 1e3, d = 32, B = 1,024, float32: 33 us after
// the kernel, 3 us on a cached copy).
constexpr size_t kParallelFiniteValues = size_t(1) << 17;
constexpr size_t kParallelResultValues = size_t(1) << 14;

// `serial(begin, count)` over `count` values, in one share per thread from `minParallel` values
// (shares of a multiple of 16 values: whole 64-byte lines of float32); true when every share's is.
template <class Serial>
bool allShares(size_t count, size_t minParallel, const Serial& serial) {
  if (count < minParallel) return serial(size_t(0), count);
  bool finite = true;
#ifdef _OPENMP
#pragma omp parallel reduction(&& : finite)
  {
    const size_t threads = static_cast<size_t>(omp_get_num_threads());
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    const size_t share = ((count + threads - 1) / threads + 15) / 16 * 16;
    const size_t begin = std::min(count, t * share);
    finite = serial(begin, std::min(share, count - begin));
  }
#else
  finite = serial(size_t(0), count);
#endif
  return finite;
}

bool allFinite(const float* p, size_t count, size_t minParallel = kParallelFiniteValues) {
  return allShares(count, minParallel, [p](size_t begin, size_t n) { return allFiniteSerial(p + begin, n); });
}

// allFinite for float16 / bfloat16 values (exponent bits `exponent`).
bool allFinite16(const uint16_t* p, size_t count, uint16_t exponent, size_t minParallel) {
  return allShares(count, minParallel, [p, exponent](size_t begin, size_t n) {
    return allFinite16Serial(p + begin, n, exponent);
  });
}

// allFinite for `count` values of `type` (float32, float16 or bfloat16).
bool allFiniteRows(rows::RowType type, const void* p, size_t count, size_t minParallel = kParallelFiniteValues) {
  if (type == rows::RowType::Float32) return allFinite(static_cast<const float*>(p), count, minParallel);
  return allFinite16(static_cast<const uint16_t*>(p), count, type == rows::RowType::Float16 ? 0x7c00 : 0x7f80,
                     minParallel);
}

// The kernel with the finite checks folded in (call without the GIL): false when a query
// holds a NaN/Inf (checked before the kernel runs), or when a logit, lse or out does (no bias
// here: a -inf logit is a bad key). Shared by retrieve_checked and retrieve_checked_at.
// Operands are rows of `type`; out and lse float32.
bool retrieveFinite(rows::RowType type, const void* q, size_t batch, size_t d, const void* k, size_t n,
                    const void* v, size_t dv, float beta, int threads, float* out, float* lse, int64_t* argmax) {
  if (!allFiniteRows(type, q, batch * d)) return false;
  bool finite = true;
  retrieveRows(type, q, batch, d, k, n, v, dv, beta, nullptr, out, lse, argmax, threads, &finite);
  // out and lse were merged on this thread: read here, from this core's cache
  return finite && allFiniteSerial(lse, batch) && allFiniteSerial(out, batch * dv);
}

// out [B, dv], lse [B], argmax [B]; with `checkFinite`, None instead when a query holds a NaN/Inf
// (checked before the kernel runs) or when out or lse does (a NaN/Inf in keys or values, or
// logits beyond float32): the caller's general path then names the cause.
py::object run(const Operands& o, float beta, int threads, bool checkFinite) {
  py::array_t<float> out({o.batch, o.dv});
  py::array_t<float> lse(o.batch);
  py::array_t<int64_t> argmax(o.batch);
  float* outPtr = out.mutable_data();
  float* lsePtr = lse.mutable_data();
  int64_t* argPtr = argmax.mutable_data();
  bool finite = true;
  {
    py::gil_scoped_release release;
    if (checkFinite)  // (retrieve_checked takes no bias)
      finite = retrieveFinite(rows::RowType::Float32, o.q.data(), o.batch, o.d, o.k.data(), o.n,
                              o.v ? o.v->data() : nullptr, o.dv, beta, threads, outPtr, lsePtr, argPtr);
    else
      mnemonix::retrieval::retrieve(o.q.data(), o.batch, o.d, o.k.data(), o.n, o.v ? o.v->data() : nullptr, o.dv,
                                    beta, o.b ? o.b->data() : nullptr, outPtr, lsePtr, argPtr, threads, nullptr);
  }
  if (!finite) return py::none();
  return py::make_tuple(out, lse, argmax);
}

int threadCount(const IntArg& numThreads) {
  return static_cast<int>(asInt64(numThreads, "num_threads", std::numeric_limits<int>::min(),
                                  std::numeric_limits<int>::max(), "an int32 (<= 0: OpenMP's default)"));
}

py::object retrieve(const ArrayArg& queries, const ArrayArg& keys, const ArrayArg& values, const FloatArg& beta,
                    const ArrayArg& bias, const IntArg& numThreads) {
  const Operands o = parse(queries, keys, values, bias);
  return run(o, static_cast<float>(asDouble(beta, "beta")), threadCount(numThreads), false);
}

py::object retrieveChecked(const ArrayArg& queries, const ArrayArg& keys, const ArrayArg& values,
                           const FloatArg& beta) {
  const Operands o = parse(queries, keys, values, ArrayArg{py::none()});
  return run(o, static_cast<float>(asDouble(beta, "beta")), 0, true);
}

// A float32 buffer by address (common/python.hpp's addressArg), required when `count` > 0.
float* floatsAt(const py::handle& address, size_t count, const char* name, const char* fn) {
  return addressArg<float>(address, count > 0, fn, name);
}

// retrieve_checked on contiguous buffers given by address (the fast path's torch tensors: their
// data_ptr()s, no numpy views), writing out [B, dv] and, when given, lse [B] and argmax [B]
// (address 0: not wanted). Queries, keys, values and out are of `element_type` (0 float32,
// 1 float16, 2 bfloat16: rows::RowType's order; a 16-bit out is the float32 result rounded to
// nearest even, as torch rounds); lse is float32. False when a query, out or lse holds a NaN/Inf
// (out is then left unwritten).
constexpr const char* kRetrieveAt = "retrieve_checked_at";

rows::RowType elementType(int code, const char* fn) {
  if (code < 0 || code > 2)
    throw std::invalid_argument(std::string(fn) +
                                ": element_type must be 0 (float32), 1 (float16) or 2 (bfloat16), got " +
                                std::to_string(code));
  return static_cast<rows::RowType>(code);
}

// The operands of an address entry: their element type, queries, keys and values (0: the keys).
struct RowsAt {
  rows::RowType type;
  const void *q, *k, *v;
};

RowsAt rowsAt(int elementCode, const py::handle& queries, size_t batch, size_t d, const py::handle& keys, size_t n,
              const py::handle& values, size_t dv, const char* fn) {
  const RowsAt r{elementType(elementCode, fn), addressArg<const char>(queries, batch * d > 0, fn, "queries"),
                 addressArg<const char>(keys, n * d > 0, fn, "keys"),
                 addressArg<const char>(values, false, fn, "values")};
  if (!r.v && dv != d) throw std::invalid_argument(std::string(fn) + ": dv must equal d when the values are the keys");
  return r;
}

// float32 values rounded to float16 / bfloat16 bits, to nearest even (torch's rounding).
void roundTo16Bit(rows::RowType type, const float* x, size_t count, uint16_t* out) {
  for (size_t i = 0; i < count; ++i)
    out[i] = type == rows::RowType::Float16 ? rows::floatToHalf(x[i]) : rows::floatToBfloat16(x[i]);
}

bool retrieveCheckedAt(const py::handle& queries, size_t batch, size_t d, const py::handle& keys, size_t n,
                       const py::handle& values, size_t dv, double beta, const py::handle& out,
                       const py::handle& lse, const py::handle& argmax, int elementCode) {
  const RowsAt r = rowsAt(elementCode, queries, batch, d, keys, n, values, dv, kRetrieveAt);
  char* o = addressArg<char>(out, batch * dv > 0, kRetrieveAt, "out");
  float* l = floatsAt(lse, 0, "lse", kRetrieveAt);
  auto* a = addressArg<int64_t>(argmax, false, kRetrieveAt, "argmax");
  py::gil_scoped_release release;
  const bool wide = r.type == rows::RowType::Float32;
  std::vector<float> outHeld(wide ? 0 : batch * dv), lseHeld(l ? 0 : batch);
  std::vector<int64_t> argHeld(a ? 0 : batch);
  float* o32 = wide ? reinterpret_cast<float*>(o) : outHeld.data();
  if (!retrieveFinite(r.type, r.q, batch, d, r.k, n, r.v, dv, static_cast<float>(beta), 0, o32,
                      l ? l : lseHeld.data(), a ? a : argHeld.data()))
    return false;
  if (!wide) roundTo16Bit(r.type, outHeld.data(), outHeld.size(), reinterpret_cast<uint16_t*>(o));
  return true;
}

// retrieve on contiguous buffers given by address, no checks: the general path's call per group
// (rows of any of the kernel's element types, never widened in memory; bias [N] float32 or 0;
// out [B, dv], lse [B] and argmax [B] float32 / int64, all required).
constexpr const char* kPlainAt = "retrieve_at";

void retrieveAt(const py::handle& queries, size_t batch, size_t d, const py::handle& keys, size_t n,
                const py::handle& values, size_t dv, double beta, const py::handle& bias, const py::handle& out,
                const py::handle& lse, const py::handle& argmax, int elementCode) {
  const RowsAt r = rowsAt(elementCode, queries, batch, d, keys, n, values, dv, kPlainAt);
  const float* b = floatsAt(bias, 0, "bias", kPlainAt);
  float* o = floatsAt(out, batch * dv, "out", kPlainAt);
  float* l = floatsAt(lse, batch, "lse", kPlainAt);
  auto* a = addressArg<int64_t>(argmax, batch > 0, kPlainAt, "argmax");
  py::gil_scoped_release release;
  retrieveRows(r.type, r.q, batch, d, r.k, n, r.v, dv, static_cast<float>(beta), b, o, l, a, 0, nullptr);
}

// The kernel's float32 -> 16-bit rounding over a buffer (tests compare it with torch's).
void to16Bit(int elementCode, const py::handle& source, size_t count, const py::handle& out) {
  const rows::RowType type = elementType(elementCode, "to_16_bit");
  if (type == rows::RowType::Float32) throw std::invalid_argument("to_16_bit: element_type must be 1 or 2, got 0");
  const float* x = floatsAt(source, count, "source", "to_16_bit");
  roundTo16Bit(type, x, count, addressArg<uint16_t>(out, count > 0, "to_16_bit", "out"));
}

using Span = std::pair<const float*, size_t>;

// allFinite over every span, without the GIL (split over the threads from `minParallel` values).
bool allSpansFinite(const std::vector<Span>& spans, size_t minParallel) {
  py::gil_scoped_release release;
  for (const auto& [data, count] : spans)
    if (!allFinite(data, count, minParallel)) return false;
  return true;
}

// True when no float32 array of `arrays` holds a NaN/Inf: the fast path's check of the flash and
// GEMM paths in one call (~1 us where numpy's sums cost ~3 us per array).
bool allFiniteArrays(const py::args& arrays) {
  std::vector<CArray<float>> held;
  held.reserve(arrays.size());
  for (const py::handle& a : arrays) held.push_back(asArray<float>(ArrayArg{py::reinterpret_borrow<py::object>(a)},
                                                                   "every array"));
  std::vector<Span> spans;
  for (const auto& x : held) spans.emplace_back(x.data(), static_cast<size_t>(x.size()));
  return allSpansFinite(spans, kParallelFiniteValues);
}

// all_finite for contiguous float32 buffers given as (address, count) pairs of ints: the fast
// path's check of torch tensors it holds (their data_ptr() and numel()), skipping the numpy
// views (~2.3 us each per Tensor.numpy()). The caller keeps the tensors alive and contiguous.
bool allFiniteAt(const py::args& pairs) {
  if (pairs.size() % 2 != 0) throw std::invalid_argument("all_finite_at: expected (address, count) pairs");
  std::vector<Span> spans;
  for (size_t i = 0; i < pairs.size(); i += 2) {
    const auto count = pairs[i + 1].cast<size_t>();
    spans.emplace_back(floatsAt(pairs[i], count, "a span", "all_finite_at"), count);
  }
  return allSpansFinite(spans, kParallelResultValues);  // after a kernel: its results, operands it read
}

// all_finite_at for buffers of any of the kernel's element types, as (element_type, address,
// count) triples: the fast path's check of 16-bit queries and out next to a float32 lse.
bool allFiniteTypedAt(const py::args& triples) {
  if (triples.size() % 3 != 0)
    throw std::invalid_argument("all_finite_typed_at: expected (element_type, address, count) triples");
  std::vector<std::tuple<rows::RowType, const void*, size_t>> spans;
  for (size_t i = 0; i < triples.size(); i += 3) {
    const rows::RowType type = elementType(triples[i].cast<int>(), "all_finite_typed_at");
    const auto count = triples[i + 2].cast<size_t>();
    spans.emplace_back(type, addressArg<const char>(triples[i + 1], count > 0, "all_finite_typed_at", "a span"),
                       count);
  }
  py::gil_scoped_release release;
  for (const auto& [type, data, count] : spans)
    if (!allFiniteRows(type, data, count, kParallelResultValues)) return false;  // after the flash kernel
  return true;
}

// torch's flash kernel gives a query with no finite logit (every logit -inf: finite operands whose
// products pass float32's range) out = 0 and lse = 0, which reads as a real result, and which a
// merge of key parts would weigh as one. True when no row of lse [rows] and out [rows, dv] (of
// `type`) bears that mark: an exact 0 lse and an all-zero out row (a real result can bear it too,
// rarely; the caller then recomputes the call another way).
bool noEmptyRows(rows::RowType type, const void* out, const float* lse, size_t rows, size_t dv) {
  for (size_t r = 0; r < rows; ++r) {
    if (lse[r] != 0.0f) continue;
    bool zero = true;
    if (type == rows::RowType::Float32) {
      const float* o = static_cast<const float*>(out) + r * dv;
      for (size_t i = 0; i < dv && zero; ++i) zero = o[i] == 0.0f;
    } else {
      const uint16_t* o = static_cast<const uint16_t*>(out) + r * dv;
      for (size_t i = 0; i < dv && zero; ++i) zero = (o[i] & 0x7fffu) == 0;
    }
    if (zero) return false;
  }
  return true;
}

// The fast path's checks of torch's flash kernel, run as is: out [B, dv] of `element_type`, lse
// [B] float32, the queries and (keys_count > 0) the keys of that type all finite, and no row
// marked as one without a finite logit (noEmptyRows).
bool flashCheckedAt(int code, const py::handle& out, const py::handle& lse, size_t batch, size_t dv,
                    const py::handle& queries, size_t queryCount, const py::handle& keys, size_t keyCount) {
  constexpr const char* kName = "flash_checked_at";
  const rows::RowType type = elementType(code, kName);
  const void* o = addressArg<const char>(out, batch * dv > 0, kName, "out");
  const float* l = addressArg<const float>(lse, batch > 0, kName, "lse");
  const void* q = addressArg<const char>(queries, queryCount > 0, kName, "queries");
  const void* k = addressArg<const char>(keys, keyCount > 0, kName, "keys");
  py::gil_scoped_release release;
  return allFiniteRows(type, q, queryCount, kParallelResultValues) &&
         (keyCount == 0 || allFiniteRows(type, k, keyCount, kParallelResultValues)) &&
         allFiniteRows(type, o, batch * dv, kParallelResultValues) && allFiniteSerial(l, batch) &&
         noEmptyRows(type, o, l, batch, dv);
}

// The flash kernel's results over P key parts merged (merge_parts.hpp) into out [B, dv] and
// lse [B] (address 0: in place into part 0), and whether the queries and the merged out and lse
// are all finite (the fast path's checks: the flash kernel turns a NaN query into out = 0).
// Addresses of contiguous float32 buffers the caller keeps alive; the rest rows are `rest`
// rows of `key_stride` / `value_stride` floats.
constexpr const char* kMerge = "merge_parts_at";

// mergePartsAt on float16 / bfloat16 parts (the flash kernel's out in the operands' type, lse
// float32): the parts' out, the queries and the rest rows widened to float32 (exactly), merged
// in float32, and out rounded back to the type once, to nearest even (one rounding more than
// the kernel run unsplit: a part's out was rounded too). Call without the GIL.
bool mergeParts16(rows::RowType type, const uint16_t* pOut, float* pLse, size_t parts, size_t batch, size_t dv,
                  const uint16_t* q, size_t d, float beta, size_t rest, const uint16_t* k, size_t keyStride,
                  const uint16_t* v, size_t valueStride, uint16_t* out, float* lse) {
  if (!noEmptyRows(type, pOut, pLse, parts * batch, dv) || !allFiniteRows(type, q, batch * d, kParallelResultValues))
    return false;
  std::vector<float> wideOut(parts * batch * dv), wideQ(rest ? batch * d : 0), restK(rest * d), restV(rest * dv);
  convertRows(type, pOut, parts * batch, dv, wideOut.data(), nullptr);
  if (rest) convertRows(type, q, batch, d, wideQ.data(), nullptr);
  for (size_t j = 0; j < rest; ++j) {
    convertRows(type, k + j * keyStride, 1, d, restK.data() + j * d, nullptr);
    convertRows(type, v + j * valueStride, 1, dv, restV.data() + j * dv, nullptr);
  }
  std::vector<float> merged(batch * dv);
  mergeParts({wideOut.data(), pLse, parts, batch, dv, wideQ.data(), d, restK.data(), restV.data(), rest, d, dv,
              beta, merged.data(), lse});
  if (!allFiniteSerial(lse, batch) || !allFiniteSerial(merged.data(), merged.size())) return false;
  roundTo16Bit(type, merged.data(), merged.size(), out);
  return true;
}

bool mergePartsAt(const py::handle& partOut, const py::handle& partLse, size_t parts, size_t batch, size_t dv,
                  const py::handle& queries, size_t d, double beta, size_t rest, const py::handle& restKeys,
                  size_t keyStride, const py::handle& restValues, size_t valueStride, const py::handle& out,
                  const py::handle& lse, int elementCode) {
  if (parts == 0) throw std::invalid_argument("merge_parts_at: parts must be >= 1");
  const rows::RowType type = elementType(elementCode, kMerge);
  if (type != rows::RowType::Float32) {
    const auto* pOut = addressArg<uint16_t>(partOut, parts * batch * dv > 0, kMerge, "part_out");
    float* pLse = floatsAt(partLse, parts * batch, "part_lse", kMerge);
    const auto* q = addressArg<uint16_t>(queries, batch * d > 0, kMerge, "queries");
    const auto* k = addressArg<uint16_t>(restKeys, rest * d > 0, kMerge, "rest_keys");
    const auto* v = addressArg<uint16_t>(restValues, rest * dv > 0, kMerge, "rest_values");
    auto* o = addressArg<uint16_t>(out, false, kMerge, "out");
    float* l = floatsAt(lse, 0, "lse", kMerge);
    py::gil_scoped_release release;
    return mergeParts16(type, pOut, pLse, parts, batch, dv, q, d, static_cast<float>(beta), rest, k, keyStride, v,
                        valueStride, o ? o : const_cast<uint16_t*>(pOut), l ? l : pLse);
  }
  float* pOut = floatsAt(partOut, parts * batch * dv, "part_out", kMerge);
  float* pLse = floatsAt(partLse, parts * batch, "part_lse", kMerge);
  const float* q = floatsAt(queries, batch * d, "queries", kMerge);
  const float* k = floatsAt(restKeys, rest * d, "rest_keys", kMerge);
  const float* v = floatsAt(restValues, rest * dv, "rest_values", kMerge);
  float* o = floatsAt(out, 0, "out", kMerge);
  float* l = floatsAt(lse, 0, "lse", kMerge);
  o = o ? o : pOut;  // in place: part 0
  l = l ? l : pLse;
  const PartsToMerge m{pOut, pLse, parts, batch, dv, q, d, k, v, rest, keyStride, valueStride,
                       static_cast<float>(beta), o, l};
  py::gil_scoped_release release;
  if (!noEmptyRows(rows::RowType::Float32, pOut, pLse, parts * batch, dv)) return false;  // before out is written
  if (parts == 1 && rest == 0) {  // a copy: each thread copies and checks the share its kernel thread wrote
    const bool outFinite = allShares(batch * dv, kParallelResultValues, [pOut, o](size_t begin, size_t count) {
      if (o != pOut) std::copy(pOut + begin, pOut + begin + count, o + begin);
      return allFiniteSerial(o + begin, count);
    });
    if (l != pLse) std::copy(pLse, pLse + batch, l);
    return outFinite && allFinite(q, batch * d, kParallelResultValues) && allFiniteSerial(l, batch);
  }
  mergeParts(m);  // on this thread: out and lse are read back from this core's cache
  return allFinite(q, batch * d, kParallelResultValues) && allFiniteSerial(l, batch) && allFiniteSerial(o, batch * dv);
}

int setMaxLaneWidth(int width) {
  if (width != 8 && width != 16) throw std::invalid_argument("width must be 8 or 16, got " + std::to_string(width));
  return maxLaneWidth().exchange(width);
}

int maxThreads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void bind(py::module_& m) {
  m.doc() = "Fused modern-Hopfield retrieval on the CPU (float32, OpenMP over N, exact merge)";
  m.def("retrieve", &retrieve, py::arg("queries"), py::arg("keys"), py::arg("values") = py::none(), py::kw_only(),
        py::arg("beta"), py::arg("bias") = py::none(), py::arg("num_threads") = 0,
        "out [B, dv], lse [B], argmax [B] int64 of softmax(beta * Q K^T + bias) V.\n\n"
        "queries [B, d], keys [N, d], values [N, dv] or None (the keys), bias [N] or None\n"
        "(-inf excludes a pattern). num_threads <= 0 uses OpenMP's default.");
  m.def("retrieve_checked", &retrieveChecked, py::arg("queries"), py::arg("keys"), py::arg("values") = py::none(),
        py::kw_only(), py::arg("beta"),
        "retrieve(queries, keys, values, beta=beta) with finite checks folded in: (out, lse, argmax), or None\n"
        "when a query, out or lse holds a NaN/Inf (the caller's slower path then names the cause).");
  m.def("all_finite", &allFiniteArrays,
        "all_finite(*arrays): True when no float32 array (any shape) holds a NaN or an Inf.");
  m.def("all_finite_at", &allFiniteAt,
        "all_finite_at(address, count, ...): all_finite over contiguous float32 buffers given by address and\n"
        "element count (a tensor's data_ptr() and numel(); the caller keeps it alive).");
  m.def("all_finite_typed_at", &allFiniteTypedAt,
        "all_finite_typed_at(element_type, address, count, ...): all_finite over contiguous buffers of\n"
        "element_type 0 (float32), 1 (float16) or 2 (bfloat16), given by address and element count.");
  m.def("retrieve_at", &retrieveAt, py::arg("queries"), py::arg("batch"), py::arg("d"), py::arg("keys"),
        py::arg("n"), py::arg("values"), py::arg("dv"), py::arg("beta"), py::arg("bias"), py::arg("out"),
        py::arg("lse"), py::arg("argmax"), py::arg("element_type") = 0,
        "retrieve_at(queries, batch, d, keys, n, values, dv, beta, bias, out, lse, argmax, element_type=0):\n"
        "retrieve on contiguous buffers given by address, unchecked: queries, keys and values (0: the keys)\n"
        "of element_type (0 float32, 1 float16, 2 bfloat16), bias [N] float32 (0: none); writes out [B, dv]\n"
        "and lse [B] float32 and argmax [B] int64.");
  m.def("to_16_bit", &to16Bit, py::arg("element_type"), py::arg("source"), py::arg("count"), py::arg("out"),
        "to_16_bit(element_type, source, count, out): count float32 values at address source rounded to\n"
        "float16 (1) or bfloat16 (2) at address out, to nearest even (the kernel's 16-bit out; for tests).");
  m.def("retrieve_checked_at", &retrieveCheckedAt, py::arg("queries"), py::arg("batch"), py::arg("d"),
        py::arg("keys"), py::arg("n"), py::arg("values"), py::arg("dv"), py::arg("beta"), py::arg("out"),
        py::arg("lse"), py::arg("argmax"), py::arg("element_type") = 0,
        "retrieve_checked_at(queries, batch, d, keys, n, values, dv, beta, out, lse, argmax, element_type=0):\n"
        "retrieve_checked on contiguous buffers given by address (values 0: the keys; lse, argmax 0: not\n"
        "wanted), writing out [B, dv], lse [B] float32 and argmax [B] int64. Queries, keys, values and out hold\n"
        "element_type: 0 float32, 1 float16, 2 bfloat16 (read as float32 exactly; out computed in float32, then\n"
        "rounded to nearest even). False when a query, out or lse holds a NaN/Inf.");
  m.def("merge_parts_at", &mergePartsAt, py::arg("part_out"), py::arg("part_lse"), py::arg("parts"),
        py::arg("batch"), py::arg("dv"), py::arg("queries"), py::arg("d"), py::arg("beta"), py::arg("rest"),
        py::arg("rest_keys"), py::arg("key_stride"), py::arg("rest_values"), py::arg("value_stride"),
        py::arg("out") = 0, py::arg("lse") = 0, py::arg("element_type") = 0,
        "merge_parts_at(part_out, part_lse, parts, batch, dv, queries, d, beta, rest, rest_keys, key_stride,\n"
        "rest_values, value_stride, out=0, lse=0, element_type=0): the flash kernel's out [P, B, dv] and lse\n"
        "[P, B] over P key parts, plus `rest` rows scored here, merged exactly into out [B, dv] and lse [B]\n"
        "(0: into part 0; addresses of buffers the caller keeps alive). part_out, the queries, the rest rows\n"
        "and out hold element_type (0 float32; 1 float16, 2 bfloat16: widened exactly, merged in float32, out\n"
        "rounded to nearest even), the lse float32. True when the queries [B, d] and the merged out and lse\n"
        "are all finite, and no part's row bears the flash kernel's mark of a query without a finite logit\n"
        "(out = 0 and lse = 0 exactly).");
  m.def("flash_checked_at", &flashCheckedAt, py::arg("element_type"), py::arg("out"), py::arg("lse"),
        py::arg("batch"), py::arg("dv"), py::arg("queries"), py::arg("query_count"), py::arg("keys") = 0,
        py::arg("key_count") = 0,
        "flash_checked_at(element_type, out, lse, batch, dv, queries, query_count, keys=0, key_count=0): True\n"
        "when torch's flash kernel's out [B, dv] (of element_type 0 float32, 1 float16, 2 bfloat16), lse [B]\n"
        "(float32), the queries and the keys (key_count 0: not read) are all finite and no row bears the kernel's\n"
        "mark of a query without a finite logit (out = 0 and lse = 0 exactly). Addresses of contiguous buffers.");
  m.def("max_threads", &maxThreads, "Threads OpenMP would use by default.");
  m.attr("lane_min_batch") = kLaneMinBatch;
  m.attr("lane_one_group_batch") = kLaneOneGroupBatch;
  m.attr("lane_max_dims") = kLaneMaxDims;
  m.def("lane_width", &laneWidth,
        "The query-lane scan's vector width on this CPU: 16 with AVX-512, else 8 (capped by set_max_lane_width).");
  m.def("set_max_lane_width", &setMaxLaneWidth, py::arg("width"),
        "set_max_lane_width(width) -> previous cap: 8 or 16, process-wide (tests and benchmarks; both widths give\n"
        "the same bits).");
}

}  // namespace
}  // namespace retrieval
}  // namespace mnemonix

static mnemonix::Registrar reg("retrieval", &mnemonix::retrieval::bind);
