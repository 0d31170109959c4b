// Python bindings of the fused CPU search scan: mnemonix._core.search.
//
// Inputs checked and converted with the GIL held (the key array is used as stored: its
// numpy dtype must match key_type exactly, nothing is cast), outputs allocated, the scan run
// with the GIL released (it is stateless: any number of threads may call it).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/numpy_buffer.hpp"
#include "common/python.hpp"
#include "common/rows.hpp"
#include "registry.hpp"
#include "search/search.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace search {
namespace {

// The numpy dtypes that hold rows of each storage type (bfloat16 travels as its bits).
bool dtypeHolds(const py::dtype& dt, RowType type) {
  switch (type) {
    case RowType::Float32: return dt.kind() == 'f' && dt.itemsize() == 4;
    case RowType::Float16: return (dt.kind() == 'f' || dt.kind() == 'u' || dt.kind() == 'i') && dt.itemsize() == 2;
    case RowType::BFloat16: return (dt.kind() == 'u' || dt.kind() == 'i') && dt.itemsize() == 2;
    case RowType::Int8: return dt.kind() == 'i' && dt.itemsize() == 1;
  }
  return false;
}

// `keys` as a C-contiguous 2-D array of the storage type, never cast (a copy only to make
// it contiguous).
py::array keyArray(const ArrayArg& keys, RowType type) {
  if (!py::isinstance<py::array>(keys.obj)) throw TypeError("keys must be a numpy array, got " + typeName(keys.obj));
  py::array arr = py::reinterpret_borrow<py::array>(keys.obj);
  if (!dtypeHolds(arr.dtype(), type))
    throw TypeError(std::string("keys must be a numpy array holding ") + rows::rowTypeName(type) +
                    " rows (bfloat16 as uint16 / int16 bits), got dtype " + py::str(arr.dtype()).cast<std::string>());
  if (arr.ndim() != 2)
    throw std::invalid_argument("keys must be 2-D, got " + std::to_string(arr.ndim()) + " dimensions");
  if (!(arr.flags() & py::array::c_style))
    arr = py::array::ensure(arr, py::array::c_style);
  return arr;
}

Layout parseLayout(const StrArg& layout) {
  if (!PyUnicode_Check(layout.obj.ptr())) throw TypeError("layout must be a str, got " + typeName(layout.obj));
  const std::string name = layout.obj.cast<std::string>();
  if (name == "auto") return Layout::Auto;
  if (name == "rows") return Layout::Rows;
  if (name == "panels") return Layout::Panels;
  throw std::invalid_argument("layout must be one of auto, rows, panels, got " + name);
}

py::tuple scanBinding(const ArrayArg& queries, const ArrayArg& keys, const StrArg& keyType, const ArrayArg& scales,
                      const ArrayArg& mask, const IntArg& nCand, const BoolArg& cosine, const BoolArg& wantNorm,
                      const IntArg& numThreads, const BoolArg& portable, const StrArg& layout) {
  if (!PyUnicode_Check(keyType.obj.ptr())) throw TypeError("key_type must be a str, got " + typeName(keyType.obj));
  ScanInput in;
  in.type = rows::parseRowType(keyType.obj.cast<std::string>(), "key_type");
  const CArray<float> q = asArray<float>(queries, "queries", 2);
  const py::array k = keyArray(keys, in.type);
  in.batch = q.shape(0);
  in.d = q.shape(1);
  in.n = k.shape(0);
  if (static_cast<size_t>(k.shape(1)) != in.d)
    throw std::invalid_argument("keys must have d = " + std::to_string(in.d) + " columns like queries, got " +
                                std::to_string(k.shape(1)));
  std::optional<CArray<float>> sc;
  if (!scales.obj.is_none()) {
    sc = asArray<float>(scales, "scales", 1);
    if (static_cast<size_t>(sc->shape(0)) != in.n)
      throw std::invalid_argument("scales must have length N = " + std::to_string(in.n) + ", got " +
                                  std::to_string(sc->shape(0)));
  }
  std::optional<py::array> m;
  if (!mask.obj.is_none()) {
    if (!py::isinstance<py::array>(mask.obj) || py::reinterpret_borrow<py::array>(mask.obj).dtype().kind() != 'b')
      throw TypeError("mask must be a numpy bool array, got " + typeName(mask.obj));
    m = py::array::ensure(mask.obj, py::array::c_style);
    if (m->ndim() != 1 || static_cast<size_t>(m->shape(0)) != in.n)
      throw std::invalid_argument("mask must have shape [" + std::to_string(in.n) + "]");
  }
  in.nCand = static_cast<size_t>(asInt64(nCand, "n_cand", 0, int64_t{1} << 40, "an integer in [0, 2**40]"));
  in.cosine = asBool(cosine, "cosine");
  in.wantNorm = asBool(wantNorm, "want_norm");
  in.threads = static_cast<int>(asInt64(numThreads, "num_threads", std::numeric_limits<int>::min(),
                                        std::numeric_limits<int>::max(), "an int32 (<= 0: OpenMP's default)"));
  in.portable = asBool(portable, "portable");
  in.layout = parseLayout(layout);
  in.queries = q.data();
  in.keys = k.data();
  in.scales = sc ? sc->data() : nullptr;
  in.mask = m ? static_cast<const uint8_t*>(m->data()) : nullptr;
  py::array_t<float> values({in.batch, in.nCand});
  py::array_t<int64_t> rowsOut({in.batch, in.nCand});
  ScanOutput out;
  out.values = values.mutable_data();
  out.rows = rowsOut.mutable_data();
  {
    py::gil_scoped_release release;
    scan(in, out);
  }
  return py::make_tuple(values, rowsOut, out.maxNorm, out.nonFinite);
}

std::string isa() { return rows::cpuHasAvx2F16c() ? "avx2" : "portable"; }

void bind(py::module_& m) {
  m.doc() = "Fused exact-search candidate scan on the CPU (float32/float16/bfloat16/int8 rows, OpenMP over N)";
  m.def("scan", &scanBinding, py::arg("queries"), py::arg("keys"), py::kw_only(), py::arg("key_type"),
        py::arg("scales") = py::none(), py::arg("mask") = py::none(), py::arg("n_cand"), py::arg("cosine") = false,
        py::arg("want_norm") = false, py::arg("num_threads") = 0, py::arg("portable") = false,
        py::arg("layout") = "auto",
        "(values [B, n_cand] float32, rows [B, n_cand] int64, max_norm, n_nonfinite): the n_cand\n"
        "best rows per query by float32 score, best first (ties by lower row; -inf / -1 past\n"
        "the allowed rows).\n\n"
        "queries [B, d] float32 (unit rows for cosine); keys [N, d] as stored: key_type\n"
        "'float32' (float32), 'float16' (float16 or its uint16 bits), 'bfloat16' (uint16 / int16\n"
        "bits) or 'int8' (int8, with scales [N] float32: the row is keys[n] * scales[n]); mask [N]\n"
        "bool or None. cosine divides by each row's float32 norm; want_norm reports the largest\n"
        "norm of an allowed row (else 0). n_nonfinite counts (query, allowed row) pairs whose\n"
        "score is NaN or +-Inf. num_threads <= 0 uses OpenMP's default; portable forces the\n"
        "kernel without AVX2 / F16C; layout 'rows' (memory-bound) or 'panels' (many queries)\n"
        "forces the inner loop, 'auto' picks by batch size (panels_min_batch()).");
  m.def("panels_min_batch", [] { return kPanelsMinBatch; }, "Batch size from which layout='auto' uses panels.");
  m.def("isa", &isa, "'avx2' when this CPU runs the AVX2 + FMA + F16C kernels, else 'portable'.");
}

}  // namespace
}  // namespace search
}  // namespace mnemonix

static mnemonix::Registrar reg("search", &mnemonix::search::bind);
