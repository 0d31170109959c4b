// Python bindings of the fused CPU lifespan step: mnemonix._core.lifespan.
//
// Inputs converted to C-contiguous arrays of the core's dtypes with the GIL held, outputs
// allocated before the GIL is released around the step. The value checks run first, in the
// same call, and a failure returns its code instead of results (nothing is written): the
// Python op raises the same errors as its torch path.
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

// (fault, value, results): fault 0 and the results (lifespan, types, age or None, keep, rank,
// num_kept), or the first failed check's code and value and None (see lifespan.hpp's Fault).
py::tuple stepChecked(const ArrayArg& lifespanArg, const ArrayArg& typesArg, const ArrayArg& ageArg,
                      const ArrayArg& idxArg, const ArrayArg& deltaArg, const IntArg& capacityArg,
                      const IntArg& codesArg0, const IntArg& codesArg1, const IntArg& codesArg2,
                      const BoolArg& checkArg) {
  const CArray<float> life = asArray<float>(lifespanArg, "lifespan", 2);
  const CArray<uint8_t> types = asArray<uint8_t>(typesArg, "types", 2);
  const CArray<int64_t> idx = asArray<int64_t>(idxArg, "reminded_indices", 2);
  const CArray<float> delta = asArray<float>(deltaArg, "delta", 2);
  const size_t batch = life.shape(0), length = life.shape(1), reminded = idx.shape(1);
  requireShape(types, "types", batch, length);
  requireShape(idx, "reminded_indices", batch, reminded);
  requireShape(delta, "delta", batch, reminded);
  std::optional<CArray<int32_t>> age;
  if (!ageArg.obj.is_none()) {
    age = asArray<int32_t>(ageArg, "age", 2);
    requireShape(*age, "age", batch, length);
  }
  const int64_t capacity = asInt64(capacityArg, "stm_capacity", 0, std::numeric_limits<int64_t>::max(), ">= 0");
  auto code = [](const IntArg& a, const char* name) {
    return static_cast<uint8_t>(asInt64(a, name, 0, 255, "a uint8 engram code"));
  };
  const Codes codes{code(codesArg0, "working"), code(codesArg1, "shortterm"), code(codesArg2, "longterm")};
  py::array_t<float> lifeOut({batch, length});
  py::array_t<uint8_t> typesOut({batch, length});
  py::array_t<bool> keep({batch, length});
  py::array_t<int64_t> rank({batch, length});
  py::array_t<int64_t> numKept(batch);
  std::optional<py::array_t<int32_t>> ageOut;
  if (age) ageOut.emplace(std::vector<py::ssize_t>{static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(length)});
  const Step s{life.data(), types.data(), age ? age->data() : nullptr, idx.data(), delta.data(),
               batch, length, reminded, capacity, lifeOut.mutable_data(), typesOut.mutable_data(),
               ageOut ? ageOut->mutable_data() : nullptr, keep.mutable_data(), rank.mutable_data(),
               numKept.mutable_data()};
  const bool check = asBool(checkArg, "check");
  Fault fault;
  {
    py::gil_scoped_release release;
    if (check) fault = checkValues(s, codes);
    if (!fault.which) step(s, codes);
  }
  if (fault.which) return py::make_tuple(fault.which, fault.value, py::none());
  py::object ageObj = ageOut ? py::object(*ageOut) : py::object(py::none());
  return py::make_tuple(0, 0, py::make_tuple(lifeOut, typesOut, ageObj, keep, rank, numKept));
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
}

}  // namespace
}  // namespace lifespan
}  // namespace mnemonix

static mnemonix::Registrar reg("lifespan", &mnemonix::lifespan::bind);
