// Python class fastdata._native.ShardView over fastdata::ShardView.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl/filesystem.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fastdata/format.h"
#include "fastdata/shard_view.h"
#include "fastdata/token_type.h"

namespace py = pybind11;

namespace fastdata::bindings {
namespace {

using SharedView = std::shared_ptr<const ShardView>;
using OffsetsArray = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>;

// The Python object. close() drops this handle's reference to the mapping; arrays handed
// out earlier own their own reference (see zero_copy), so they stay valid until they die.
class ShardHandle {
 public:
  ShardHandle(std::string path, SharedView view) : path_(std::move(path)), view_(std::move(view)) {}

  const std::string& path() const noexcept { return path_; }
  bool closed() const noexcept { return view_ == nullptr; }
  void close() noexcept { view_.reset(); }

  const SharedView& shared() const {
    if (view_ == nullptr) throw py::value_error("I/O operation on closed shard " + path_);
    return view_;
  }
  const ShardView& view() const { return *shared(); }

 private:
  std::string path_;
  SharedView view_;
};

std::uint64_t non_negative(std::int64_t value, const char* what) {
  if (value < 0)
    throw py::index_error(std::string(what) + " must be >= 0, got " + std::to_string(value));
  return static_cast<std::uint64_t>(value);
}

// A read-only numpy array over `count` items at `data`, whose base is a capsule holding a
// reference to the mapping: the array stays valid after close() and after the shard dies.
template <typename T>
py::array zero_copy(const SharedView& owner, const T* data, std::uint64_t count) {
  auto holder = std::make_unique<SharedView>(owner);
  py::capsule base(holder.get(), [](void* p) { delete static_cast<SharedView*>(p); });
  holder.release();  // the capsule owns it now
  py::array array(py::dtype::of<T>(), {static_cast<py::ssize_t>(count)}, {}, data, base);
  // pybind11 marks arrays with a non-array base writeable and has no public setter.
  py::detail::array_proxy(array.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return array;
}

py::array tokens_array(const SharedView& view, std::uint64_t start, std::uint64_t stop) {
  view->check_token_range(start, stop);
  return visit_token_type(view->token_type(), [&](auto tag) {
    using T = decltype(tag);
    return zero_copy(view, static_cast<const T*>(view->tokens()) + start, stop - start);
  });
}

py::array mask_array(const SharedView& view, std::uint64_t start, std::uint64_t stop) {
  if (!view->has_mask()) throw py::value_error(view->path() + ": shard has no loss_mask");
  view->check_token_range(start, stop);
  return zero_copy(view, view->mask() + start, stop - start);
}

// [first token, end token) of document i.
std::pair<std::uint64_t, std::uint64_t> doc_range(const ShardView& view, std::int64_t i) {
  const std::uint64_t doc = non_negative(i, "document index");
  const std::uint64_t start = view.doc_start(doc);
  return {start, start + view.doc_len(doc)};
}

ShardHandle open_shard(const std::filesystem::path& path) {
  std::string name = path.string();
  SharedView view;
  {
    py::gil_scoped_release release;  // mapping, CRC and index checks touch the disk
    view = std::make_shared<const ShardView>(name);
  }
  return ShardHandle(std::move(name), std::move(view));
}

// A view of raw tokens (a Megatron .bin range): see ShardView's raw-token constructor.
ShardHandle open_tokens(const std::filesystem::path& path, std::uint64_t byte_offset,
                        const std::string& dtype, const OffsetsArray& doc_offsets) {
  if (doc_offsets.ndim() != 1) throw py::value_error("doc_offsets must be a 1-D array");
  const TokenType type = token_type_named(dtype);
  std::vector<std::uint64_t> offsets(doc_offsets.data(), doc_offsets.data() + doc_offsets.size());
  std::string name = path.string();
  SharedView view;
  {
    py::gil_scoped_release release;  // mapping touches the disk
    view = std::make_shared<const ShardView>(name, byte_offset, type, std::move(offsets));
  }
  return ShardHandle(std::move(name), std::move(view));
}

std::string repr(const ShardHandle& self) {
  std::string text = "ShardView(" + py::repr(py::str(self.path())).cast<std::string>();
  if (self.closed()) return text + ", closed)";
  const ShardView& v = self.view();
  return text + ", num_docs=" + std::to_string(v.num_docs()) +
         ", num_tokens=" + std::to_string(v.num_tokens()) +
         ", dtype=" + token_name(v.token_type()) +
         ", has_loss_mask=" + (v.has_mask() ? "True" : "False") + ")";
}

}  // namespace

// For gather.cc: the open ShardView behind a Python ShardView object.
std::shared_ptr<const ShardView> shard_of(py::handle obj) {
  if (!py::isinstance<ShardHandle>(obj)) {
    throw py::type_error("expected a ShardView, got " +
                         py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
  }
  return obj.cast<const ShardHandle&>().shared();
}

void register_shard(py::module_& m) {
  py::class_<ShardHandle>(m, "ShardView",
                          "A memory-mapped raw shard, validated once when opened.\n\n"
                          "Arrays it returns are read-only views of the mapping (no copy); they\n"
                          "keep the mapping alive after close(). Indices must be >= 0.")
      .def(py::init(&open_shard), py::arg("path"),
           "Map and validate the shard at `path`.\n\n"
           "Raises FastdataFormatError (naming the file, field and byte offset) for a\n"
           "malformed shard and FastdataIOError when the file cannot be opened or mapped.")
      .def_static("from_tokens", &open_tokens, py::arg("path"), py::arg("byte_offset"),
                  py::arg("dtype"), py::arg("doc_offsets"),
                  "A view of raw tokens with no fastdata header (a range of a Megatron .bin).\n\n"
                  "Maps the doc_offsets[-1] tokens of `dtype` (uint8, int8, int16, uint16, int32,\n"
                  "uint32 or int64) at `byte_offset` of `path`, cut into documents at `doc_offsets`\n"
                  "(uint64, num_docs + 1 token offsets from 0, never decreasing). Raises\n"
                  "FastdataFormatError when the offsets are malformed, the offset is misaligned or\n"
                  "the file ends before the range; ValueError for an unknown dtype.")
      .def_property_readonly("path", &ShardHandle::path, "The path the shard was opened from.")
      .def_property_readonly("closed", &ShardHandle::closed, "Whether close() was called.")
      .def_property_readonly(
          "num_docs", [](const ShardHandle& s) { return s.view().num_docs(); },
          "Number of documents.")
      .def_property_readonly(
          "num_tokens", [](const ShardHandle& s) { return s.view().num_tokens(); },
          "Number of tokens.")
      .def_property_readonly(
          "dtype", [](const ShardHandle& s) { return token_name(s.view().token_type()); },
          "Token dtype name: 'uint16' or 'uint32' (a raw token view: any integer dtype).")
      .def_property_readonly(
          "has_loss_mask", [](const ShardHandle& s) { return s.view().has_mask(); },
          "Whether the shard stores a per-token loss mask.")
      .def_property_readonly(
          "file_size", [](const ShardHandle& s) { return s.view().file_size(); },
          "File size in bytes.")
      .def(
          "doc_bounds",
          [](const ShardHandle& s, std::int64_t i) {
            const auto [start, stop] = doc_range(s.view(), i);
            return py::make_tuple(start, stop - start);
          },
          py::arg("i"), "(first token, token count) of document `i`; IndexError if out of range.")
      .def(
          "doc",
          [](const ShardHandle& s, std::int64_t i) {
            const auto [start, stop] = doc_range(s.view(), i);
            return tokens_array(s.shared(), start, stop);
          },
          py::arg("i"), "Tokens of document `i` as a read-only zero-copy array.")
      .def(
          "doc_loss_mask",
          [](const ShardHandle& s, std::int64_t i) {
            const auto [start, stop] = doc_range(s.view(), i);
            return mask_array(s.shared(), start, stop);
          },
          py::arg("i"), "Loss mask (uint8) of document `i`, zero-copy; ValueError without a mask.")
      .def(
          "tokens",
          [](const ShardHandle& s, std::int64_t start, std::int64_t stop) {
            return tokens_array(s.shared(), non_negative(start, "start"),
                                non_negative(stop, "stop"));
          },
          py::arg("start"), py::arg("stop"), "Tokens [start, stop) as a read-only zero-copy array.")
      .def(
          "loss_mask",
          [](const ShardHandle& s, std::int64_t start, std::int64_t stop) {
            return mask_array(s.shared(), non_negative(start, "start"), non_negative(stop, "stop"));
          },
          py::arg("start"), py::arg("stop"), "Loss mask [start, stop) (uint8), zero-copy.")
      .def(
          "doc_offsets",
          [](const ShardHandle& s) {
            return zero_copy(s.shared(), s.view().index(), s.view().num_docs() + 1);
          },
          "The document index: num_docs + 1 uint64 token offsets, zero-copy.")
      .def("close", &ShardHandle::close,
           "Drop this object's reference to the mapping. Arrays taken earlier stay valid; "
           "other methods raise ValueError afterwards. Idempotent.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](ShardHandle& s, const py::args&) { s.close(); })
      .def("__repr__", &repr);
}

}  // namespace fastdata::bindings
