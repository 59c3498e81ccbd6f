// fastdata._native.permute: the per-index shuffle behind the sample order.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "fastdata/permute.h"

namespace py = pybind11;

namespace fastdata::bindings {

namespace {
template <typename T>
using Vector = py::array_t<T, py::array::c_style | py::array::forcecast>;

py::array_t<std::int64_t> permute_py(const Vector<std::int64_t>& index, const Vector<std::int64_t>& size,
                                     const Vector<std::uint64_t>& key) {
  if (index.ndim() != 1 || size.ndim() != 1 || key.ndim() != 1 || size.size() != index.size() ||
      key.size() != index.size()) {
    throw py::value_error("index, size and key must be 1-D arrays of one length");
  }
  py::array_t<std::int64_t> out(index.size());
  const auto count = static_cast<std::size_t>(index.size());
  const std::int64_t* pi = index.data();
  const std::int64_t* ps = size.data();
  const std::uint64_t* pk = key.data();
  std::int64_t* po = out.mutable_data();
  {
    py::gil_scoped_release release;
    permute_many(pi, ps, pk, po, count);
  }
  return out;
}
}  // namespace

void register_index(py::module_& m) {
  m.def("permute", &permute_py, py::arg("index"), py::arg("size"), py::arg("key"),
        "out[i] = image of index[i] under the keyed bijection of [0, size[i]) with key[i]\n"
        "(4-round Feistel network with cycle walking; see fastdata/sampling/permute.py).");
}

}  // namespace fastdata::bindings
