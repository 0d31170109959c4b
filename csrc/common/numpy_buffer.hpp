// numpy buffers at the boundary of every engine: array arguments in, zero-copy arrays out.
//
// In: an ArrayArg (shown to Python as numpy.ndarray) becomes a C-contiguous array of the
// engine's dtype (converted once, no copy when it already is one); a failure raises a
// TypeError naming the argument. Out: results whose size is known before the call are
// allocated as numpy arrays before the GIL is released and filled by the core; results whose
// size the core discovers (edge lists) are std::vectors moved into a heap holder that a
// capsule owns, so numpy frees them and nothing is copied.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

#include "common/python.hpp"

namespace mnemonix {

struct ArrayArg {
  pybind11::object obj;
};

template <typename T>
using CArray = pybind11::array_t<T, pybind11::array::c_style | pybind11::array::forcecast>;

template <typename T>
const char* dtypeName() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  if constexpr (std::is_same_v<T, double>) return "float64";
  if constexpr (std::is_same_v<T, int64_t>) return "int64";
  if constexpr (std::is_same_v<T, int32_t>) return "int32";
  if constexpr (std::is_same_v<T, uint32_t>) return "uint32";
  return "numeric";
}

// `arg` as a C-contiguous T array; `ndim` >= 0 also checks the number of dimensions.
template <typename T>
CArray<T> asArray(const ArrayArg& arg, const char* name, int ndim = -1) {
  if (arg.obj.is_none()) throw TypeError(std::string(name) + " must be an array, got None");
  CArray<T> out = CArray<T>::ensure(arg.obj);
  if (!out)
    throw TypeError(std::string(name) + " must be an array convertible to " + dtypeName<T>() + ", got " +
                    typeName(arg.obj));
  if (ndim >= 0 && out.ndim() != ndim)
    throw std::invalid_argument(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " +
                                std::to_string(out.ndim()) + " dimensions");
  return out;
}

// A numpy array that owns `values` (moved, not copied) through a capsule.
template <typename T>
pybind11::array_t<T> toNumpy(std::vector<T>&& values, std::vector<pybind11::ssize_t> shape = {}) {
  if (shape.empty()) shape.push_back(static_cast<pybind11::ssize_t>(values.size()));
  auto* owned = new std::vector<T>(std::move(values));
  pybind11::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return pybind11::array_t<T>(shape, owned->data(), owner);
}

}  // namespace mnemonix

namespace pybind11 {
namespace detail {
template <>
struct type_caster<mnemonix::ArrayArg> : AnyObjectCaster<mnemonix::ArrayArg> {
  static constexpr auto name = const_name("numpy.ndarray");
};
}  // namespace detail
}  // namespace pybind11
