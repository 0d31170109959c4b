// mnemonix._core: the one compiled extension. Engines register their bindings
// through registry.hpp; each lands in a submodule named after the engine
// (mnemonix._core.plastic, mnemonix._core.retrieval, ...), sorted by name so
// that the module layout does not depend on link order. C++ exceptions of every
// engine are translated to Python here, one way (common/errors.hpp), and engine locks
// learn to release the GIL while they wait (common/shared_mutex.hpp).
#include <algorithm>

#include "common/python.hpp"
#include "registry.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "mnemonix compiled engines (no torch headers; numpy buffers at the boundary)";
  mnemonix::registerErrorTranslator();
  mnemonix::installGilReleasingWaits();
  auto entries = mnemonix::registry();
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [name, bind] : entries) {
    py::module_ sub = m.def_submodule(name.c_str());
    bind(sub);
  }
}
