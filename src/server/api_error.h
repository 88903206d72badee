// The error every endpoint answers with, OpenAI's shape:
//   {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
// Thrown by request parsing and handlers (ApiError is an exception) and written by the server's
// handler wrapper, so a bad request never disturbs anything else.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace lockstep::server {

struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string type, std::string param = "",
           std::string code = "")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}

  int status;
  std::string type;       // "invalid_request_error", "authentication_error", ...
  std::string param;      // the offending request field, "" for none
  std::string code;       // a machine-readable reason, "" for none
  int retry_after_s = 0;  // > 0: a Retry-After header (busy, loading)
};

// 400 invalid_request_error naming the field.
ApiError bad_request(const std::string& message, const std::string& param = "",
                     const std::string& code = "invalid_value");
// 400 for a parameter lockstep does not implement (rather than ignoring it).
ApiError unsupported(const std::string& param, const std::string& why = "");
// 503 with Retry-After.
ApiError unavailable(const std::string& message, const std::string& code, int retry_after_s);

nlohmann::ordered_json error_json(const ApiError& e);

}  // namespace lockstep::server
