// Self-registration of binding files into the one extension module.
//
// Each csrc/<engine>/bindings.cpp defines
//     static mnemonix::Registrar reg("plastic", [](py::module_& m) { ... });
// and csrc/module.cpp calls every registered function inside PYBIND11_MODULE.
// This keeps engines independent: none edits a central list.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/pybind11.h>

namespace mnemonix {

using BindFn = std::function<void(pybind11::module_&)>;

inline std::vector<std::pair<std::string, BindFn>>& registry() {
  static std::vector<std::pair<std::string, BindFn>> fns;  // function-local: no init-order issue
  return fns;
}

struct Registrar {
  Registrar(std::string name, BindFn fn) { registry().emplace_back(std::move(name), std::move(fn)); }
};

}  // namespace mnemonix
