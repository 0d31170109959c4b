// Python bindings of the fused exact salience recall: mnemonix._core.salience.
//
// Inputs converted to C-contiguous arrays of the core's dtypes with the GIL held (float32
// queries, keys and payloads; float64 saliences and norms; bool valid), outputs allocated
// before the GIL is released around the recall. Value checks run in the same call; a failure
// returns its code instead of results, and the Python op raises its general path's error.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/numpy_buffer.hpp"
#include "common/python.hpp"
#include "registry.hpp"
#include "salience/salience.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace salience {
namespace {

void requireRows(const py::array& a, const char* name, size_t rows) {
  if (static_cast<size_t>(a.shape(0)) != rows)
    throw std::invalid_argument(std::string(name) + " must have " + std::to_string(rows) + " rows (one per key), got " +
                                std::to_string(a.shape(0)));
}

template <typename T>
std::optional<CArray<T>> optionalArray(const ArrayArg& arg, const char* name, int ndim, size_t rows) {
  if (arg.obj.is_none()) return std::nullopt;
  CArray<T> a = asArray<T>(arg, name, ndim);
  requireRows(a, name, rows);
  return a;
}

// log-salience [N] float64: given, or computed from (r0, tau, alpha) into `store`.
Fault logSalience(const ArrayArg& logArg, const ArrayArg& r0Arg, const ArrayArg& tauArg, const FloatArg& alphaArg,
                  const bool* valid, size_t n, bool check, std::optional<CArray<double>>& given,
                  std::vector<double>& store, const double*& logS) {
  given = optionalArray<double>(logArg, "log_salience", 1, n);
  if (given) {
    logS = given->data();
    return kNone;
  }
  const CArray<double> r0 = asArray<double>(r0Arg, "r0", 1), tau = asArray<double>(tauArg, "tau", 1);
  requireRows(r0, "r0", n);
  requireRows(tau, "tau", n);
  store.resize(n);
  logS = store.data();
  const double alpha = asDouble(alphaArg, "alpha");
  py::gil_scoped_release release;
  return logSalienceOf(r0.data(), tau.data(), alpha, valid, n, check, store.data());
}

py::tuple faultOnly(Fault f) { return py::make_tuple(static_cast<int>(f), py::none(), py::none(), py::none(), py::none()); }

// (fault, recall or None, indices, weights, scores); fault != 0: the first failed check's code
// (salience.hpp's Fault) and Nones.
py::tuple recallChecked(const ArrayArg& queriesArg, const ArrayArg& keysArg, const ArrayArg& payloadsArg,
                        const ArrayArg& logArg, const ArrayArg& r0Arg, const ArrayArg& tauArg,
                        const FloatArg& alphaArg, const ArrayArg& validArg, const ArrayArg& normsArg,
                        const IntArg& kArg, const BoolArg& checkArg) {
  const CArray<float> queries = asArray<float>(queriesArg, "queries", 2), keys = asArray<float>(keysArg, "keys", 2);
  const size_t batch = queries.shape(0), d = queries.shape(1), n = keys.shape(0);
  if (static_cast<size_t>(keys.shape(1)) != d)
    throw std::invalid_argument("keys must have d = " + std::to_string(d) + " columns like queries");
  const auto payloads = optionalArray<float>(payloadsArg, "payloads", 2, n);
  const auto valid = optionalArray<bool>(validArg, "valid", 1, n);
  const auto norms = optionalArray<double>(normsArg, "key_norms", 1, n);
  const size_t k = static_cast<size_t>(asInt64(kArg, "k", 1, static_cast<int64_t>(n), "in 1..N"));
  const bool check = asBool(checkArg, "check");
  std::optional<CArray<double>> given;
  std::vector<double> store;
  const double* logS = nullptr;
  const Fault logFault = logSalience(logArg, r0Arg, tauArg, alphaArg, valid ? valid->data() : nullptr, n, check,
                                     given, store, logS);
  if (logFault != kNone) return faultOnly(logFault);
  const size_t dz = payloads ? payloads->shape(1) : 0;
  py::array_t<int64_t> indices({batch, k});
  py::array_t<float> weights({batch, k}), scores({batch, k});
  std::optional<py::array_t<float>> out;
  if (payloads) out.emplace(std::vector<py::ssize_t>{static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(dz)});
  const Recall r{queries.data(), keys.data(), payloads ? payloads->data() : nullptr,
                 valid ? valid->data() : nullptr, norms ? norms->data() : nullptr, batch, d, n, dz, k, check,
                 indices.mutable_data(), weights.mutable_data(), scores.mutable_data(),
                 out ? out->mutable_data() : nullptr};
  Fault fault;
  {
    py::gil_scoped_release release;
    fault = recall(r, logS);
  }
  if (fault != kNone) return faultOnly(fault);
  return py::make_tuple(0, out ? py::object(*out) : py::object(py::none()), indices, weights, scores);
}

void bind(py::module_& m) {
  m.doc() = "Exact top-k salience recall on the CPU (float64 scores, value checks in the same call)";
  m.def("recall", &recallChecked, py::arg("queries"), py::arg("keys"), py::arg("payloads"), py::arg("log_salience"),
        py::arg("r0"), py::arg("tau"), py::arg("alpha"), py::arg("valid"), py::arg("key_norms"), py::arg("k"),
        py::arg("check"),
        "(fault, recall, indices, weights, scores) of one exact top-k salience recall.\n\n"
        "queries [B, d] and keys [N, d] float32, payloads [N, dz] float32 or None; log_salience [N]\n"
        "float64, or None and r0, tau [N] float64 with alpha (ages from the latest valid tau); valid [N]\n"
        "bool or None; key_norms [N] or None (checked only); 1 <= k <= N. fault 0: recall [B, dz] or None,\n"
        "indices [B, k] int64 (-1 past the valid count), weights and scores [B, k] float32; else the\n"
        "first failed value check (salience.hpp's Fault) and Nones.");
}

}  // namespace
}  // namespace salience
}  // namespace mnemonix

static mnemonix::Registrar reg("salience", &mnemonix::salience::bind);
