// Python bindings of the fused CPU lifespan step: mnemonix._core.lifespan.
//
// Inputs converted to C-contiguous arrays of the core's dtypes with the GIL held, outputs
// allocated before the GIL is released around the step. The value checks run in the same call
// (row by row, just before each row's step), and a failure returns its code instead of results
// (the new outputs are dropped; the caller's arrays are never written): the Python op raises
// the same errors as its torch path. `step_or_none` is the lean entry of the op's fast path:
// positional arguments, arrays taken only when they are exactly the core's (no conversion),
// flat results, None for anything else.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/numpy_buffer.hpp"
#include "common/python.hpp"
#include "lifespan/lifespan.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace lifespan {
namespace {

void requireShape(const py::array& a, const char* name, size_t rows, size_t cols) {
  if (static_cast<size_t>(a.shape(0)) != rows || static_cast<size_t>(a.shape(1)) != cols)
    throw std::invalid_argument(std::string(name) + " must have shape [" + std::to_string(rows) + ", " +
                                std::to_string(cols) + "]");
}

// One step's inputs as C-contiguous arrays of the core's dtypes, shapes checked, and its scalars.
struct Call {
  CArray<float> life;
  CArray<uint8_t> types;
  std::optional<CArray<int32_t>> age;
  CArray<int64_t> idx;
  CArray<float> delta;
  int64_t capacity = 0;
  Codes codes{};
  bool check = true;
};

void convertScalars(Call& c, const IntArg& capacityArg, const IntArg& codesArg0, const IntArg& codesArg1,
                    const IntArg& codesArg2, const BoolArg& checkArg) {
  c.capacity = asInt64(capacityArg, "stm_capacity", 0, std::numeric_limits<int64_t>::max(), ">= 0");
  auto code = [](const IntArg& a, const char* name) {
    return static_cast<uint8_t>(asInt64(a, name, 0, 255, "a uint8 engram code"));
  };
  c.codes = Codes{code(codesArg0, "working"), code(codesArg1, "shortterm"), code(codesArg2, "longterm")};
  c.check = asBool(checkArg, "check");
}

// step's inputs: any arrays convertible to the core's dtypes (converted once, a copy only when
// needed); a wrong rank or shape raises, naming the argument.
Call convert(const ArrayArg& lifespanArg, const ArrayArg& typesArg, const ArrayArg& ageArg, const ArrayArg& idxArg,
             const ArrayArg& deltaArg) {
  Call c{asArray<float>(lifespanArg, "lifespan", 2), asArray<uint8_t>(typesArg, "types", 2), std::nullopt,
         asArray<int64_t>(idxArg, "reminded_indices", 2), asArray<float>(deltaArg, "delta", 2)};
  const size_t batch = c.life.shape(0), length = c.life.shape(1), reminded = c.idx.shape(1);
  requireShape(c.types, "types", batch, length);
  requireShape(c.idx, "reminded_indices", batch, reminded);
  requireShape(c.delta, "delta", batch, reminded);
  if (!ageArg.obj.is_none()) {
    c.age = asArray<int32_t>(ageArg, "age", 2);
    requireShape(*c.age, "age", batch, length);
  }
  return c;
}

// `obj` itself when it is exactly a C-contiguous 2-D numpy.ndarray (not a subclass) of T's dtype.
template <typename T>
std::optional<CArray<T>> exactMatrix(py::handle obj) {
  if (Py_TYPE(obj.ptr()) != py::detail::npy_api::get().PyArray_Type_ || !CArray<T>::check_(obj) ||
      py::detail::array_proxy(obj.ptr())->nd != 2)
    return std::nullopt;
  return py::reinterpret_borrow<CArray<T>>(obj);
}

bool sameShape(const py::array& a, const py::array& b) {
  return a.shape(0) == b.shape(0) && a.shape(1) == b.shape(1);
}

// step_or_none's inputs: only arrays that are exactly the core's (int32 indices are widened), with
// matching shapes; anything else is nothing (no conversion, no error: the caller's general path).
std::optional<Call> exactly(const ArrayArg& lifespanArg, const ArrayArg& typesArg, const ArrayArg& ageArg,
                            const ArrayArg& idxArg, const ArrayArg& deltaArg) {
  auto life = exactMatrix<float>(lifespanArg.obj);
  auto types = exactMatrix<uint8_t>(typesArg.obj);
  auto delta = exactMatrix<float>(deltaArg.obj);
  auto idx = exactMatrix<int64_t>(idxArg.obj);
  if (!idx && exactMatrix<int32_t>(idxArg.obj)) idx = CArray<int64_t>::ensure(idxArg.obj);  // widened: a copy
  std::optional<CArray<int32_t>> age;
  if (!ageArg.obj.is_none() && !(age = exactMatrix<int32_t>(ageArg.obj))) return std::nullopt;
  if (!life || !types || !idx || !delta || !sameShape(*types, *life) || (age && !sameShape(*age, *life)) ||
      idx->shape(0) != life->shape(0) || !sameShape(*delta, *idx))
    return std::nullopt;
  return Call{std::move(*life), std::move(*types), std::move(age), std::move(*idx), std::move(*delta)};
}

// Runs the call: the first failed value check (the outputs, new arrays, are dropped), or the
// results (lifespan, types, age or None, keep, rank, num_kept) in `results`.
Fault run(const Call& c, py::object& results) {
  const size_t batch = c.life.shape(0), length = c.life.shape(1), reminded = c.idx.shape(1);
  py::array_t<float> lifeOut({batch, length});
  py::array_t<uint8_t> typesOut({batch, length});
  py::array_t<bool> keep({batch, length});
  py::array_t<int64_t> rank({batch, length});
  py::array_t<int64_t> numKept(batch);
  std::optional<py::array_t<int32_t>> ageOut;
  if (c.age)
    ageOut.emplace(std::vector<py::ssize_t>{static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(length)});
  const Step s{c.life.data(), c.types.data(), c.age ? c.age->data() : nullptr, c.idx.data(), c.delta.data(),
               batch, length, reminded, c.capacity, lifeOut.mutable_data(), typesOut.mutable_data(),
               ageOut ? ageOut->mutable_data() : nullptr, keep.mutable_data(), rank.mutable_data(),
               numKept.mutable_data()};
  Fault fault;
  {
    py::gil_scoped_release release;
    fault = step(s, c.codes, c.check);
  }
  if (!fault.which) {
    py::object ageObj = ageOut ? py::object(*ageOut) : py::object(py::none());
    results = py::make_tuple(lifeOut, typesOut, ageObj, keep, rank, numKept);
  }
  return fault;
}

// (fault, value, results): fault 0 and the results (lifespan, types, age or None, keep, rank,
// num_kept), or the first failed check's code and value and None (see lifespan.hpp's Fault).
py::tuple stepChecked(const ArrayArg& lifespanArg, const ArrayArg& typesArg, const ArrayArg& ageArg,
                      const ArrayArg& idxArg, const ArrayArg& deltaArg, const IntArg& capacityArg,
                      const IntArg& codesArg0, const IntArg& codesArg1, const IntArg& codesArg2,
                      const BoolArg& checkArg) {
  Call c = convert(lifespanArg, typesArg, ageArg, idxArg, deltaArg);
  convertScalars(c, capacityArg, codesArg0, codesArg1, codesArg2, checkArg);
  py::object results = py::none();
  const Fault fault = run(c, results);
  return py::make_tuple(fault.which, fault.value, results);
}

// step's results alone, or None: for arrays that are not exactly the core's (see `exactly`) and
// for a failed value check. The lean entry of the op's fast path, whose general path then runs.
py::object stepOrNone(const ArrayArg& lifespanArg, const ArrayArg& typesArg, const ArrayArg& ageArg,
                      const ArrayArg& idxArg, const ArrayArg& deltaArg, const IntArg& capacityArg,
                      const IntArg& codesArg0, const IntArg& codesArg1, const IntArg& codesArg2,
                      const BoolArg& checkArg) {
  std::optional<Call> c = exactly(lifespanArg, typesArg, ageArg, idxArg, deltaArg);
  if (!c) return py::none();
  convertScalars(*c, capacityArg, codesArg0, codesArg1, codesArg2, checkArg);
  py::object results = py::none();
  run(*c, results);
  return results;
}

void bind(py::module_& m) {
  m.doc() = "Fused Memoria engram lifespan step on the CPU (value checks and the step in one call)";
  m.def("step", &stepChecked, py::arg("lifespan"), py::arg("types"), py::arg("age"), py::arg("reminded_indices"),
        py::arg("delta"), py::kw_only(), py::arg("stm_capacity"), py::arg("working"), py::arg("shortterm"),
        py::arg("longterm"), py::arg("check") = true,
        "(fault, value, results) of one lifespan step.\n\n"
        "lifespan [B, M] float32, types [B, M] uint8, age [B, M] int32 or None, reminded_indices [B, R]\n"
        "int64, delta [B, R] float32. fault 0: results = (lifespan, types, age or None, keep, rank,\n"
        "num_kept); else the first failed value check (1 type code > longterm, 2 NaN / -inf lifespan,\n"
        "3 NaN / Inf delta, 4 index >= M; value: the largest code or index) and results None.");
  m.def("step_or_none", &stepOrNone, py::arg("lifespan"), py::arg("types"), py::arg("age"),
        py::arg("reminded_indices"), py::arg("delta"), py::arg("stm_capacity"), py::arg("working"),
        py::arg("shortterm"), py::arg("longterm"), py::arg("check"), py::pos_only(),
        "step's results (lifespan, types, age or None, keep, rank, num_kept), or None: when an array is\n"
        "not exactly C-contiguous 2-D numpy of step's dtype (reminded_indices int64 or int32), shapes do\n"
        "not match, or a value check fails (results dropped). Positional arguments: the lean entry of\n"
        "the op's fast path, whose general path then runs (and raises the error).");
}

}  // namespace
}  // namespace lifespan
}  // namespace mnemonix

static mnemonix::Registrar reg("lifespan", &mnemonix::lifespan::bind);
