// Python bindings of the fused CPU retrieval kernel: mnemonix._core.retrieval.
//
// Inputs converted to C-contiguous float32 with the GIL held, outputs allocated, the kernel
// run with the GIL released (it is stateless: any number of threads may call it).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/numpy_buffer.hpp"
#include "common/python.hpp"
#include "registry.hpp"
#include "retrieval/retrieval.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace retrieval {
namespace {

using FloatArray = CArray<float>;

py::tuple retrieve(const ArrayArg& queries, const ArrayArg& keys, const ArrayArg& values, const FloatArg& beta,
                   const ArrayArg& bias, const IntArg& numThreads) {
  const FloatArray q = asArray<float>(queries, "queries", 2);
  const FloatArray k = asArray<float>(keys, "keys", 2);
  const size_t batch = q.shape(0), d = q.shape(1), n = k.shape(0);
  if (static_cast<size_t>(k.shape(1)) != d)
    throw std::invalid_argument("keys must have d = " + std::to_string(d) + " columns like queries, got " +
                                std::to_string(k.shape(1)));
  size_t dv = d;
  std::optional<FloatArray> v;  // None: the values are the keys
  if (!values.obj.is_none()) {
    v = asArray<float>(values, "values", 2);
    if (static_cast<size_t>(v->shape(0)) != n)
      throw std::invalid_argument("values must have N = " + std::to_string(n) + " rows like keys, got " +
                                  std::to_string(v->shape(0)));
    dv = v->shape(1);
  }
  std::optional<FloatArray> b;
  if (!bias.obj.is_none()) {
    b = asArray<float>(bias, "bias", 1);
    if (static_cast<size_t>(b->shape(0)) != n)
      throw std::invalid_argument("bias must have length N = " + std::to_string(n) + ", got " +
                                  std::to_string(b->shape(0)));
  }
  const float betaValue = static_cast<float>(asDouble(beta, "beta"));
  const int threads = static_cast<int>(asInt64(numThreads, "num_threads", std::numeric_limits<int>::min(),
                                               std::numeric_limits<int>::max(), "an int32 (<= 0: OpenMP's default)"));
  py::array_t<float> out({batch, dv});
  py::array_t<float> lse(batch);
  py::array_t<int64_t> argmax(batch);
  float* outPtr = out.mutable_data();
  float* lsePtr = lse.mutable_data();
  int64_t* argPtr = argmax.mutable_data();
  const float* valuesPtr = v ? v->data() : nullptr;
  const float* biasPtr = b ? b->data() : nullptr;
  {
    py::gil_scoped_release release;
    mnemonix::retrieval::retrieve(q.data(), batch, d, k.data(), n, valuesPtr, dv, betaValue, biasPtr, outPtr, lsePtr,
                                  argPtr, threads);
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

void bind(py::module_& m) {
  m.doc() = "Fused modern-Hopfield retrieval on the CPU (float32, OpenMP over N, exact merge)";
  m.def("retrieve", &retrieve, py::arg("queries"), py::arg("keys"), py::arg("values") = py::none(), py::kw_only(),
        py::arg("beta"), py::arg("bias") = py::none(), py::arg("num_threads") = 0,
        "out [B, dv], lse [B], argmax [B] int64 of softmax(beta * Q K^T + bias) V.\n\n"
        "queries [B, d], keys [N, d], values [N, dv] or None (the keys), bias [N] or None\n"
        "(-inf excludes a pattern). num_threads <= 0 uses OpenMP's default.");
  m.def("max_threads", &maxThreads, "Threads OpenMP would use by default.");
}

}  // namespace
}  // namespace retrieval
}  // namespace mnemonix

static mnemonix::Registrar reg("retrieval", &mnemonix::retrieval::bind);
