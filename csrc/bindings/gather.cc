// fastdata._native.gather: the per-batch copy, run without the GIL.
#include "fastdata/gather.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fastdata/shard_view.h"

namespace py = pybind11;

namespace fastdata::bindings {

std::shared_ptr<const ShardView> shard_of(py::handle obj);  // shard.cc

namespace {

using Spans = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

OutDtype out_dtype(const py::array& out) {
  if (py::isinstance<py::array_t<std::int64_t>>(out)) return OutDtype::kInt64;
  if (py::isinstance<py::array_t<std::int32_t>>(out)) return OutDtype::kInt32;
  if (py::isinstance<py::array_t<std::uint16_t>>(out)) return OutDtype::kUint16;
  if (py::isinstance<py::array_t<std::uint32_t>>(out)) return OutDtype::kUint32;
  throw py::type_error("out must have dtype int64, int32, uint16 or uint32, got " +
                       py::str(out.dtype()).cast<std::string>());
}

// `out` is written through its raw pointer, so it must be exactly what we write: no copy.
void check_writable_vector(const py::array& array, const char* name) {
  if (array.ndim() != 1 || (array.flags() & py::array::c_style) == 0 || !array.writeable()) {
    throw py::value_error(std::string(name) + " must be a writeable, C-contiguous 1-D array");
  }
}

void gather_py(const py::sequence& shards, const Spans& spans, py::array out,
               const py::object& mask_out) {
  // Holding the views keeps every mapping alive even if another thread closes a shard.
  std::vector<std::shared_ptr<const ShardView>> owners;
  std::vector<const ShardView*> views;
  owners.reserve(shards.size());
  for (const py::handle item : shards) {
    owners.push_back(shard_of(item));
    views.push_back(owners.back().get());
  }
  if (spans.ndim() != 2 || spans.shape(1) != 3) {
    throw py::value_error("spans must have shape (N, 3): shard index, token offset, length");
  }
  GatherOutput target;
  target.dtype = out_dtype(out);
  check_writable_vector(out, "out");
  target.tokens = out.mutable_data();
  target.size = static_cast<std::uint64_t>(out.size());
  py::array mask;
  if (!mask_out.is_none()) {
    if (!py::isinstance<py::array_t<std::uint8_t>>(mask_out)) {
      throw py::type_error("mask_out must be a numpy uint8 array");
    }
    mask = py::reinterpret_borrow<py::array>(mask_out);
    check_writable_vector(mask, "mask_out");
    if (mask.size() != out.size()) {
      throw py::value_error("mask_out has " + std::to_string(mask.size()) +
                            " elements but out has " + std::to_string(out.size()));
    }
    target.mask = static_cast<std::uint8_t*>(mask.mutable_data());
  }
  const std::int64_t* rows = spans.data();
  const auto num_rows = static_cast<std::size_t>(spans.shape(0));
  py::gil_scoped_release release;
  gather(views, rows, num_rows, target);
}

}  // namespace

void register_gather(py::module_& m) {
  m.def("gather", &gather_py, py::arg("shards"), py::arg("spans"), py::arg("out"),
        py::arg("mask_out") = py::none(),
        "Copy token spans from shards into `out`, back to back, without the GIL.\n\n"
        "spans: int64 array of shape (N, 3), rows (shard index, token offset, length).\n"
        "out: writeable C-contiguous 1-D int64/int32/uint16/uint32 array whose length is the\n"
        "sum of the span lengths. mask_out: optional uint8 array of the same length that\n"
        "receives the loss masks (1 where a shard has no mask). Every span is checked before\n"
        "anything is written: IndexError for a span outside its shard or a bad shard index,\n"
        "ValueError for negative lengths, lengths not summing to len(out) or uint32 tokens\n"
        "into uint16 output. uint32 tokens >= 2**31 wrap in int32 output, as with astype.");
}

}  // namespace fastdata::bindings
