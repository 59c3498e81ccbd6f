// fastdata._native: the private compiled module. The C++ core (csrc/fastdata) knows nothing
// of Python; this file registers the bindings and is the one place where C++ exceptions
// become Python ones.
#include <pybind11/pybind11.h>

#include <exception>
#include <system_error>

#include "fastdata/errors.h"
#include "fastdata/format.h"

namespace py = pybind11;

namespace fastdata::bindings {
void register_shard(py::module_& m);   // shard.cc
void register_gather(py::module_& m);  // gather.cc
void register_index(py::module_& m);   // index.cc
}  // namespace fastdata::bindings

namespace {

// FormatError -> fastdata.errors.FastdataFormatError (with path / field / byte_offset
// attributes), IoError -> fastdata.errors.FastdataIOError (an OSError with errno and
// filename). std::out_of_range -> IndexError and std::invalid_argument -> ValueError are
// pybind11's built-in translations. The Python classes are imported lazily, here, so the
// module holds no Python objects in statics.
void translate(std::exception_ptr error) {
  try {
    if (error) std::rethrow_exception(error);
  } catch (const fastdata::FormatError& e) {
    py::object cls = py::module_::import("fastdata.errors").attr("FastdataFormatError");
    py::object exc = cls(e.what());
    exc.attr("path") = e.path();
    exc.attr("field") = e.field();
    exc.attr("byte_offset") = e.byte_offset();
    PyErr_SetObject(cls.ptr(), exc.ptr());
  } catch (const fastdata::IoError& e) {
    py::object cls = py::module_::import("fastdata.errors").attr("FastdataIOError");
    const std::string strerror =
        "cannot " + e.operation() + ": " + std::generic_category().message(e.error_number());
    py::object exc = cls(e.error_number(), strerror, e.path());
    PyErr_SetObject(cls.ptr(), exc.ptr());
  }
}

py::dict format_constants() {
  namespace fmt = fastdata::format;
  namespace field = fastdata::format::field;
  py::dict offsets;
  offsets["magic"] = field::kMagic;
  offsets["version"] = field::kVersion;
  offsets["dtype"] = field::kDtype;
  offsets["flags"] = field::kFlags;
  offsets["header_crc32"] = field::kHeaderCrc32;
  offsets["num_docs"] = field::kNumDocs;
  offsets["num_tokens"] = field::kNumTokens;
  offsets["index_offset"] = field::kIndexOffset;
  offsets["tokens_offset"] = field::kTokensOffset;
  offsets["mask_offset"] = field::kMaskOffset;
  offsets["file_size"] = field::kFileSize;
  offsets["block_size"] = field::kBlockSize;
  offsets["num_blocks"] = field::kNumBlocks;
  offsets["block_table_offset"] = field::kBlockTableOffset;
  offsets["reserved"] = field::kReserved;
  py::dict codes;
  py::dict itemsizes;
  for (std::uint8_t code : {fmt::kDtypeUint16, fmt::kDtypeUint32}) {
    codes[fmt::dtype_name(code)] = code;
    itemsizes[py::int_(code)] = fmt::itemsize(code);
  }
  py::dict constants;
  constants["magic"] = py::bytes(fmt::kMagic, sizeof(fmt::kMagic));
  constants["version"] = fmt::kVersion;
  constants["header_size"] = fmt::kHeaderSize;
  constants["page"] = fmt::kPage;
  constants["index_offset"] = fmt::kIndexOffset;
  constants["flag_loss_mask"] = fmt::kFlagLossMask;
  constants["known_flags"] = fmt::kKnownFlags;
  constants["flag_block_table"] = fmt::kFlagBlockTable;
  constants["block_entry_size"] = fmt::kBlockEntrySize;
  constants["min_block_size"] = fmt::kMinBlockSize;
  constants["max_block_size"] = fmt::kMaxBlockSize;
  constants["dtype_codes"] = codes;
  constants["itemsizes"] = itemsizes;
  constants["field_offsets"] = offsets;
  constants["reserved_size"] = field::kReservedSize;
  return constants;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "Private compiled core of fastdata: memory-mapped shard views and batch gather.";
  py::register_exception_translator(&translate);
  m.attr("FORMAT") = format_constants();
  fastdata::bindings::register_shard(m);
  fastdata::bindings::register_gather(m);
  fastdata::bindings::register_index(m);
}
