// Python bindings of the fused CPU retrieval kernel: mnemonix._core.retrieval.
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "registry.hpp"
#include "retrieval/retrieval.hpp"

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

namespace {

void requireMatrix(const FloatArray& a, const char* name) {
  if (a.ndim() != 2)
    throw py::value_error(std::string(name) + " must be a 2-D float32 array, got " + std::to_string(a.ndim()) +
                          " dimensions");
}

py::tuple retrieve(const FloatArray& queries, const FloatArray& keys, const std::optional<FloatArray>& values,
                   float beta, const std::optional<FloatArray>& bias, int numThreads) {
  requireMatrix(queries, "queries");
  requireMatrix(keys, "keys");
  const size_t batch = queries.shape(0), d = queries.shape(1), n = keys.shape(0);
  if (static_cast<size_t>(keys.shape(1)) != d)
    throw py::value_error("keys must have d = " + std::to_string(d) + " columns like queries, got " +
                          std::to_string(keys.shape(1)));
  size_t dv = d;
  const float* valuesPtr = nullptr;
  if (values) {
    requireMatrix(*values, "values");
    if (static_cast<size_t>(values->shape(0)) != n)
      throw py::value_error("values must have N = " + std::to_string(n) + " rows like keys, got " +
                            std::to_string(values->shape(0)));
    dv = values->shape(1);
    valuesPtr = values->data();
  }
  const float* biasPtr = nullptr;
  if (bias) {
    if (bias->ndim() != 1 || static_cast<size_t>(bias->shape(0)) != n)
      throw py::value_error("bias must be a 1-D float32 array of length N = " + std::to_string(n));
    biasPtr = bias->data();
  }
  FloatArray out({batch, dv});
  FloatArray lse(batch);
  py::array_t<int64_t> argmax(batch);
  float* outPtr = out.mutable_data();
  float* lsePtr = lse.mutable_data();
  int64_t* argPtr = argmax.mutable_data();
  const float* qPtr = queries.data();
  const float* kPtr = keys.data();
  try {
    py::gil_scoped_release release;
    mnemonix::retrieval::retrieve(qPtr, batch, d, kPtr, n, valuesPtr, dv, beta, biasPtr, outPtr, lsePtr, argPtr,
                                  numThreads);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return py::make_tuple(out, lse, argmax);
}

int maxThreads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

static mnemonix::Registrar reg("retrieval", [](py::module_& m) {
  m.doc() = "Fused modern-Hopfield retrieval on the CPU (float32, OpenMP over N, exact merge)";
  m.def("retrieve", &retrieve, py::arg("queries"), py::arg("keys"), py::arg("values") = py::none(),
        py::kw_only(), py::arg("beta"), py::arg("bias") = py::none(), py::arg("num_threads") = 0,
        "out [B, dv], lse [B], argmax [B] int64 of softmax(beta * Q K^T + bias) V.\n\n"
        "queries [B, d], keys [N, d], values [N, dv] or None (the keys), bias [N] or None\n"
        "(-inf excludes a pattern). num_threads <= 0 uses OpenMP's default.");
  m.def("max_threads", &maxThreads, "Threads OpenMP would use by default.");
});
