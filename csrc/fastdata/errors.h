// Exceptions thrown by the fastdata C++ core. The bindings translate them, in one place
// (csrc/bindings/module.cc), to fastdata.errors.FastdataFormatError / FastdataIOError.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace fastdata {

// A shard is malformed: names the file, the offending field and the field's byte offset.
class FormatError : public std::runtime_error {
 public:
  FormatError(std::string path, std::string field, std::uint64_t byte_offset,
              const std::string& message)
      : std::runtime_error(path + ": field '" + field + "' at byte " + std::to_string(byte_offset) +
                           ": " + message),
        path_(std::move(path)),
        field_(std::move(field)),
        byte_offset_(byte_offset) {}

  const std::string& path() const noexcept { return path_; }
  const std::string& field() const noexcept { return field_; }
  std::uint64_t byte_offset() const noexcept { return byte_offset_; }

 private:
  std::string path_;
  std::string field_;
  std::uint64_t byte_offset_;
};

// A system call on a file failed: names the file, the operation and the errno message.
class IoError : public std::runtime_error {
 public:
  IoError(std::string path, std::string operation, int error_number)
      : std::runtime_error("cannot " + operation + " " + path + ": " +
                           std::generic_category().message(error_number)),
        path_(std::move(path)),
        operation_(std::move(operation)),
        error_number_(error_number) {}

  const std::string& path() const noexcept { return path_; }
  const std::string& operation() const noexcept { return operation_; }  // "open", "map", ...
  int error_number() const noexcept { return error_number_; }

 private:
  std::string path_;
  std::string operation_;
  int error_number_;
};

}  // namespace fastdata
