// Errors thrown by native code. `code` becomes the JS error class (see lib/errors.ts).
#pragma once
#include <stdexcept>
#include <string>

namespace ha {

enum class ErrorCode { InvalidArgument, OutOfMemory, Device, NotImplemented, Kernel, Disposed };

inline const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::InvalidArgument: return "InvalidArgument";
    case ErrorCode::OutOfMemory: return "OutOfMemory";
    case ErrorCode::Device: return "DeviceError";
    case ErrorCode::NotImplemented: return "NotImplemented";
    case ErrorCode::Kernel: return "KernelError";
    case ErrorCode::Disposed: return "Disposed";
  }
  return "KernelError";
}

struct Error : std::runtime_error {
  ErrorCode code;
  std::string argument;  // the offending argument's name, when there is one
  Error(ErrorCode c, const std::string& msg, std::string arg = "")
      : std::runtime_error(msg), code(c), argument(std::move(arg)) {}
};

}  // namespace ha
