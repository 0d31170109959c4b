// The Python side of every binding file: argument conversion and error translation.
//
// Recipe of a binding (hnswlib style): every argument and default is listed in the `.def`
// table; scalar arguments arrive as IntArg / FloatArg / BoolArg / StrArg (shown to Python as
// int / float / bool / str) and are converted inside the binding with the Python name, so a
// bad value raises a TypeError or ValueError naming it instead of pybind11's "incompatible
// function arguments" dump; then the GIL is released around the core call only; outputs are
// built after (numpy_buffer.hpp). Calls that take a few hundred nanoseconds (point lookups)
// keep the GIL: the engine lock releases it if it has to wait (installGilReleasingWaits).
// Cores throw the exceptions of common/errors.hpp, which registerErrorTranslator maps to
// Python for the whole extension.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/errors.hpp"
#include "common/shared_mutex.hpp"

namespace mnemonix {

// An argument converted by the binding itself (see asInt64 & co.): the caster accepts any
// object, so that the conversion can name the argument when it fails.
struct IntArg {
  pybind11::object obj;
};
struct FloatArg {
  pybind11::object obj;
};
struct BoolArg {
  pybind11::object obj;
};
struct StrArg {
  pybind11::object obj;
};
struct StrListArg {
  pybind11::object obj;
};

}  // namespace mnemonix

namespace pybind11 {
namespace detail {

template <typename Arg>
struct AnyObjectCaster {
  bool load(handle src, bool) {
    value.obj = reinterpret_borrow<object>(src);
    return true;
  }
  static handle cast(const Arg& arg, return_value_policy, handle) { return arg.obj.inc_ref(); }
  operator Arg&() { return value; }
  template <typename T>
  using cast_op_type = Arg&;

 protected:
  Arg value;
};

template <>
struct type_caster<mnemonix::IntArg> : AnyObjectCaster<mnemonix::IntArg> {
  static constexpr auto name = const_name("int");
};
template <>
struct type_caster<mnemonix::FloatArg> : AnyObjectCaster<mnemonix::FloatArg> {
  static constexpr auto name = const_name("float");
};
template <>
struct type_caster<mnemonix::BoolArg> : AnyObjectCaster<mnemonix::BoolArg> {
  static constexpr auto name = const_name("bool");
};
template <>
struct type_caster<mnemonix::StrArg> : AnyObjectCaster<mnemonix::StrArg> {
  static constexpr auto name = const_name("str");
};
template <>
struct type_caster<mnemonix::StrListArg> : AnyObjectCaster<mnemonix::StrListArg> {
  static constexpr auto name = const_name("list[str]");
};

}  // namespace detail
}  // namespace pybind11

namespace mnemonix {

inline std::string typeName(pybind11::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

// A short, always printable form of an int (str() of a huge int may itself fail).
inline std::string describeInt(pybind11::handle value) {
  const auto bits = value.attr("bit_length")().cast<int64_t>();
  if (bits > 256) return "an int of " + std::to_string(bits) + " bits";
  return pybind11::str(value).cast<std::string>();
}

// `obj` as a Python int (anything with __index__: int, numpy integers; not bool, float or str).
inline pybind11::object asIndex(pybind11::handle obj, const char* name) {
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()))
    throw TypeError(std::string(name) + " must be an int, got " + typeName(obj));
  PyObject* index = PyNumber_Index(obj.ptr());
  if (!index) throw pybind11::error_already_set();
  return pybind11::reinterpret_steal<pybind11::object>(index);
}

// An int in [lo, hi]; out of range -> ValueError naming the argument and the range.
inline int64_t asInt64(const IntArg& arg, const char* name, int64_t lo = std::numeric_limits<int64_t>::min(),
                       int64_t hi = std::numeric_limits<int64_t>::max(), const char* expected = nullptr) {
  pybind11::object index = asIndex(arg.obj, name);
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw pybind11::error_already_set();
  if (overflow != 0 || v < lo || v > hi) {
    std::string range = expected ? expected
                                 : "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (!expected && lo == std::numeric_limits<int64_t>::min() && hi == std::numeric_limits<int64_t>::max())
      range = "an integer in [-2**63, 2**63 - 1] (int64)";
    throw std::invalid_argument(std::string(name) + " must be " + range + ", got " + describeInt(index));
  }
  return static_cast<int64_t>(v);
}

// An int in [0, 2**64 - 1] (seeds).
inline uint64_t asUint64(const IntArg& arg, const char* name) {
  pybind11::object index = asIndex(arg.obj, name);
  const bool negative = PyObject_RichCompareBool(index.ptr(), pybind11::int_(0).ptr(), Py_LT) == 1;
  const unsigned long long v = negative ? 0 : PyLong_AsUnsignedLongLong(index.ptr());
  if (negative || (v == static_cast<unsigned long long>(-1) && PyErr_Occurred())) {
    PyErr_Clear();
    throw std::invalid_argument(std::string(name) + " must be an integer in [0, 2**64 - 1] (uint64), got " +
                                describeInt(index));
  }
  return static_cast<uint64_t>(v);
}

// A real number: int, float or anything with __float__ (numpy floats); not str, not None.
inline double asDouble(const FloatArg& arg, const char* name) {
  PyObject* o = arg.obj.ptr();
  PyNumberMethods* nb = Py_TYPE(o)->tp_as_number;
  if (PyBool_Check(o) || !(PyFloat_Check(o) || PyLong_Check(o) || (nb && (nb->nb_float || nb->nb_index))))
    throw TypeError(std::string(name) + " must be a float, got " + typeName(arg.obj));
  const double v = PyFloat_AsDouble(o);
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw std::invalid_argument(std::string(name) + " must be a float in the float64 range");
  }
  return v;
}

// True / False, numpy.bool_, or the ints 0 / 1.
inline bool asBool(const BoolArg& arg, const char* name) {
  PyObject* o = arg.obj.ptr();
  if (PyBool_Check(o)) return o == Py_True;
  const std::string type = typeName(arg.obj);
  if (type == "numpy.bool_" || type == "numpy.bool") return PyObject_IsTrue(o) == 1;
  if (PyIndex_Check(o)) {  // (not a bool, checked above)
    const int64_t v = asInt64(IntArg{arg.obj}, name, 0, 1, "a bool (or 0 / 1)");
    return v == 1;
  }
  throw TypeError(std::string(name) + " must be a bool, got " + type);
}

// A buffer's address passed as a Python int (a torch tensor's data_ptr(): the fast paths hand
// contiguous tensors to the kernels this way, no numpy view); 0 is refused when `required`
// (a buffer of elements to read or write), else it means none. `fn` and `name` go in the error.
template <typename T>
T* addressArg(pybind11::handle address, bool required, const char* fn, const char* name) {
  const auto value = address.cast<uintptr_t>();
  if (value == 0 && required)
    throw std::invalid_argument(std::string(fn) + ": a null address for " + name + " with a count > 0");
  return reinterpret_cast<T*>(value);
}

// A str as UTF-32 code points (Python's own indexing); lone surrogates have no UTF-32 form.
inline std::u32string asU32String(pybind11::handle obj, const std::string& name) {
  if (!PyUnicode_Check(obj.ptr())) throw TypeError(name + " must be a str, got " + typeName(obj));
  const Py_ssize_t n = PyUnicode_GetLength(obj.ptr());
  if (n < 0) throw pybind11::error_already_set();
  std::u32string out(static_cast<size_t>(n), U'\0');
  const int kind = PyUnicode_KIND(obj.ptr());
  const void* data = PyUnicode_DATA(obj.ptr());
  for (Py_ssize_t i = 0; i < n; ++i) {
    const Py_UCS4 c = PyUnicode_READ(kind, data, i);
    if (c >= 0xD800 && c <= 0xDFFF)
      throw std::invalid_argument(name + " must be valid unicode (no lone surrogates), got a surrogate at index " +
                                  std::to_string(i));
    out[static_cast<size_t>(i)] = static_cast<char32_t>(c);
  }
  return out;
}
inline std::u32string asU32String(const StrArg& arg, const char* name) { return asU32String(arg.obj, name); }

// A list (any sequence or iterable but a str) of str.
inline std::vector<std::u32string> asU32Strings(const StrListArg& arg, const char* name) {
  if (PyUnicode_Check(arg.obj.ptr()))
    throw TypeError(std::string(name) + " must be a list of str, got a single str");
  if (!PyList_Check(arg.obj.ptr()) && !PyTuple_Check(arg.obj.ptr()) && !PyObject_HasAttrString(arg.obj.ptr(), "__iter__"))
    throw TypeError(std::string(name) + " must be a list of str, got " + typeName(arg.obj));
  std::vector<std::u32string> out;
  size_t i = 0;
  for (pybind11::handle item : arg.obj) {
    out.push_back(asU32String(item, std::string(name) + "[" + std::to_string(i) + "]"));
    ++i;
  }
  return out;
}

// Engine locks release the GIL while they wait (common/shared_mutex.hpp): a thread never
// waits for an engine lock while holding the GIL, so cheap reads may keep it.
inline void installGilReleasingWaits() {
  SharedMutex::setWaitHook([](void (*wait)(void*), void* lock) {
    if (PyGILState_Check()) {
      pybind11::gil_scoped_release release;
      wait(lock);
    } else {
      wait(lock);
    }
  });
}

// The one translation of C++ exceptions for the whole extension (see common/errors.hpp).
inline void registerErrorTranslator() {
  pybind11::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::domain_error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::out_of_range& e) {
      PyErr_SetString(PyExc_IndexError, e.what());
    } catch (const std::length_error& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const std::bad_alloc&) {
      PyErr_SetString(PyExc_MemoryError, "out of memory in a mnemonix C++ engine");
    }
  });
}

}  // namespace mnemonix
