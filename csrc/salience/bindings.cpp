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
#include <memory>
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

py::tuple faultOnly(Fault f) {
  return py::make_tuple(static_cast<int>(f), py::none(), py::none(), py::none(), py::none());
}

// The converted operands of one recall (log-salience computed, and checked, when given as r0, tau).
struct Operands {
  CArray<float> queries, keys;
  std::optional<CArray<bool>> valid;
  std::optional<CArray<double>> norms, given;  // given: log_salience as passed
  std::vector<double> store;                   // else: computed from (r0, tau, alpha)
  size_t batch = 0, d = 0, n = 0, k = 0;
  bool check = true;
  Fault logFault = kNone;

  const double* logS() const { return given ? given->data() : store.data(); }

  Recall recall(const float* payloads, size_t dz) const {
    return Recall{queries.data(), keys.data(), payloads, valid ? valid->data() : nullptr,
                  norms ? norms->data() : nullptr, batch, d, n, dz, k, check,
                  nullptr, nullptr, nullptr, nullptr};
  }
};

// log-salience [N] float64: given (kept as passed), or computed from (r0, tau, alpha) into `store`
// (checked when o.check).
Fault logSalience(Operands& o, const ArrayArg& logArg, const ArrayArg& r0Arg, const ArrayArg& tauArg,
                  const FloatArg& alphaArg) {
  o.given = optionalArray<double>(logArg, "log_salience", 1, o.n);
  if (o.given) return kNone;
  const CArray<double> r0 = asArray<double>(r0Arg, "r0", 1), tau = asArray<double>(tauArg, "tau", 1);
  requireRows(r0, "r0", o.n);
  requireRows(tau, "tau", o.n);
  o.store.resize(o.n);
  const double alpha = asDouble(alphaArg, "alpha");
  py::gil_scoped_release release;
  return logSalienceOf(r0.data(), tau.data(), alpha, o.valid ? o.valid->data() : nullptr, o.n, o.check,
                       o.store.data());
}

std::unique_ptr<Operands> parse(const ArrayArg& queriesArg, const ArrayArg& keysArg, const ArrayArg& logArg,
                                const ArrayArg& r0Arg, const ArrayArg& tauArg, const FloatArg& alphaArg,
                                const ArrayArg& validArg, const ArrayArg& normsArg, const IntArg& kArg,
                                const BoolArg& checkArg) {
  auto o = std::make_unique<Operands>(Operands{asArray<float>(queriesArg, "queries", 2),
                                               asArray<float>(keysArg, "keys", 2), {}, {}, {}, {}});
  o->batch = o->queries.shape(0);
  o->d = o->queries.shape(1);
  o->n = o->keys.shape(0);
  if (static_cast<size_t>(o->keys.shape(1)) != o->d)
    throw std::invalid_argument("keys must have d = " + std::to_string(o->d) + " columns like queries");
  o->valid = optionalArray<bool>(validArg, "valid", 1, o->n);
  o->norms = optionalArray<double>(normsArg, "key_norms", 1, o->n);
  o->k = static_cast<size_t>(asInt64(kArg, "k", 1, static_cast<int64_t>(o->n), "in 1..N"));
  o->check = asBool(checkArg, "check");
  o->logFault = logSalience(*o, logArg, r0Arg, tauArg, alphaArg);
  return o;
}

// Output buffers of one recall: recall [B, dz] (when there are payloads), indices, weights, scores [B, k].
struct Outputs {
  py::array_t<int64_t> indices;
  py::array_t<float> weights, scores;
  std::optional<py::array_t<float>> recall;

  Outputs(size_t batch, size_t k, std::optional<size_t> dz)
      : indices({batch, k}), weights({batch, k}), scores({batch, k}) {
    if (dz) recall.emplace(std::vector<py::ssize_t>{static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(*dz)});
  }
  Recall into(Recall r) {
    r.indices = indices.mutable_data();
    r.weights = weights.mutable_data();
    r.scores = scores.mutable_data();
    r.recall = recall ? recall->mutable_data() : nullptr;
    return r;
  }
  py::tuple result() const {
    return py::make_tuple(0, recall ? py::object(*recall) : py::object(py::none()), indices, weights, scores);
  }
};

// (fault, recall or None, indices, weights, scores); fault != 0: the first failed check's code
// (salience.hpp's Fault) and Nones.
py::tuple recallChecked(const ArrayArg& queriesArg, const ArrayArg& keysArg, const ArrayArg& payloadsArg,
                        const ArrayArg& logArg, const ArrayArg& r0Arg, const ArrayArg& tauArg,
                        const FloatArg& alphaArg, const ArrayArg& validArg, const ArrayArg& normsArg,
                        const IntArg& kArg, const BoolArg& checkArg) {
  const auto o = parse(queriesArg, keysArg, logArg, r0Arg, tauArg, alphaArg, validArg, normsArg, kArg, checkArg);
  const auto payloads = optionalArray<float>(payloadsArg, "payloads", 2, o->n);
  if (o->logFault != kNone) return faultOnly(o->logFault);
  Outputs out(o->batch, o->k, payloads ? std::optional<size_t>(payloads->shape(1)) : std::nullopt);
  const Recall r = out.into(o->recall(payloads ? payloads->data() : nullptr, payloads ? payloads->shape(1) : 0));
  Fault fault;
  {
    py::gil_scoped_release release;
    fault = recall(r, o->logS());
  }
  return fault != kNone ? faultOnly(fault) : out.result();
}

// recall() on contiguous buffers given by address (the fast path's torch tensors: their
// data_ptr()s, no numpy views): queries [B, d], keys [N, d], payloads [N, dz] (0: none) float32,
// log_salience [N] float64, valid [N] bool and key_norms [N] float64 (0: none). The same
// (fault, recall, indices, weights, scores).
py::tuple recallAt(const py::handle& queries, size_t batch, size_t d, const py::handle& keys, size_t n,
                   const py::handle& payloads, size_t dz, const py::handle& logSalience, const py::handle& valid,
                   const py::handle& keyNorms, size_t k, bool check) {
  if (batch == 0 || d == 0 || k == 0 || k > n)
    throw std::invalid_argument("recall_at: expected B, d >= 1 and 1 <= k <= N");
  constexpr const char* fn = "recall_at";
  const float* z = addressArg<const float>(payloads, false, fn, "payloads");
  Outputs out(batch, k, z ? std::optional<size_t>(dz) : std::nullopt);
  const float* q = addressArg<const float>(queries, true, fn, "queries");
  const float* c = addressArg<const float>(keys, true, fn, "keys");
  const bool* v = addressArg<const bool>(valid, false, fn, "valid");
  const double* norms = addressArg<const double>(keyNorms, false, fn, "key_norms");
  const Recall r = out.into(Recall{q, c, z, v, norms, batch, d, n, z ? dz : 0, k, check, nullptr, nullptr, nullptr,
                                   nullptr});
  const double* logS = addressArg<const double>(logSalience, true, fn, "log_salience");
  Fault fault;
  {
    py::gil_scoped_release release;
    fault = recall(r, logS);
  }
  return fault != kNone ? faultOnly(fault) : out.result();
}

// The chunked form (salience.hpp's ChunkedRecall) for Python: scan(dots, start) per chunk of keys
// with their dot products, then finish(payloads).
class Selection {
 public:
  Selection(const ArrayArg& queries, const ArrayArg& keys, const ArrayArg& logS, const ArrayArg& r0,
            const ArrayArg& tau, const FloatArg& alpha, const ArrayArg& valid, const ArrayArg& norms,
            const IntArg& k, const BoolArg& check)
      : o_(parse(queries, keys, logS, r0, tau, alpha, valid, norms, k, check)) {
    if (o_->logFault == kNone) impl_ = std::make_unique<ChunkedRecall>(o_->recall(nullptr, 0), o_->logS());
  }

  int fault() const { return o_->logFault != kNone ? o_->logFault : impl_->fault(); }

  bool scan(const ArrayArg& dotsArg, const IntArg& startArg) {
    if (fault()) return false;
    const CArray<float> dots = asArray<float>(dotsArg, "dots", 2);
    const int64_t start = asInt64(startArg, "start", 0, static_cast<int64_t>(o_->n), "in 0..N");
    const size_t width = dots.shape(1);
    if (static_cast<size_t>(dots.shape(0)) != o_->batch || start + width > o_->n)
      throw std::invalid_argument("dots must have shape [B, w] with start + w <= N, got [" +
                                  std::to_string(dots.shape(0)) + ", " + std::to_string(width) + "]");
    py::gil_scoped_release release;
    return impl_->scan(dots.data(), static_cast<size_t>(start), static_cast<size_t>(start) + width);
  }

  py::tuple finish(const ArrayArg& payloadsArg) {
    if (fault()) return faultOnly(static_cast<Fault>(fault()));
    const auto payloads = optionalArray<float>(payloadsArg, "payloads", 2, o_->n);
    Outputs out(o_->batch, o_->k, payloads ? std::optional<size_t>(payloads->shape(1)) : std::nullopt);
    const Recall r = out.into(o_->recall(payloads ? payloads->data() : nullptr, payloads ? payloads->shape(1) : 0));
    Fault fault;
    {
      py::gil_scoped_release release;
      fault = impl_->finish(r);
    }
    return fault != kNone ? faultOnly(fault) : out.result();
  }

 private:
  std::unique_ptr<Operands> o_;
  std::unique_ptr<ChunkedRecall> impl_;
};

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
  m.def("recall_at", &recallAt, py::arg("queries"), py::arg("batch"), py::arg("d"), py::arg("keys"), py::arg("n"),
        py::arg("payloads"), py::arg("dz"), py::arg("log_salience"), py::arg("valid"), py::arg("key_norms"),
        py::arg("k"), py::arg("check"),
        "recall() on contiguous buffers given by address (the caller keeps them alive): queries [B, d], keys\n"
        "[N, d], payloads [N, dz] (0: None) float32, log_salience [N] float64, valid [N] bool and key_norms [N]\n"
        "float64 (0: None). The same (fault, recall, indices, weights, scores).");
  py::class_<Selection>(m, "Selection",
                        "recall() with the float32 dot products given chunk by chunk (from a GEMM): "
                        "Selection(queries, keys, log_salience, r0, tau, alpha, valid, key_norms, k, check), "
                        "then scan(dots [B, w] float32, start) for each chunk of keys, then finish(payloads).")
      .def(py::init<const ArrayArg&, const ArrayArg&, const ArrayArg&, const ArrayArg&, const ArrayArg&,
                    const FloatArg&, const ArrayArg&, const ArrayArg&, const IntArg&, const BoolArg&>(),
           py::arg("queries"), py::arg("keys"), py::arg("log_salience"), py::arg("r0"), py::arg("tau"),
           py::arg("alpha"), py::arg("valid"), py::arg("key_norms"), py::arg("k"), py::arg("check"))
      .def_property_readonly("fault", &Selection::fault, "the first failed check's code so far (0: none)")
      .def("scan", &Selection::scan, py::arg("dots"), py::arg("start"),
           "Screen keys [start, start + w) with their dot products; False once a check failed.")
      .def("finish", &Selection::finish, py::arg("payloads"),
           "(fault, recall or None, indices, weights, scores), as recall().");
}

}  // namespace
}  // namespace salience
}  // namespace mnemonix

static mnemonix::Registrar reg("salience", &mnemonix::salience::bind);
