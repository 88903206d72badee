#include "server/api_error.h"

namespace lockstep::server {

ApiError bad_request(const std::string& message, const std::string& param,
                     const std::string& code) {
  return ApiError(400, message, "invalid_request_error", param, code);
}

ApiError unsupported(const std::string& param, const std::string& why) {
  return ApiError(
      400,
      "'" + param + "' is not supported by lockstep serve" + (why.empty() ? "" : " (" + why + ")"),
      "invalid_request_error", param, "unsupported_parameter");
}

ApiError unavailable(const std::string& message, const std::string& code, int retry_after_s) {
  ApiError e(503, message, "unavailable_error", "", code);
  e.retry_after_s = retry_after_s;
  return e;
}

nlohmann::ordered_json error_json(const ApiError& e) {
  nlohmann::ordered_json err;
  err["message"] = e.what();
  err["type"] = e.type;
  err["param"] = e.param.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(e.param);
  err["code"] = e.code.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(e.code);
  return {{"error", err}};
}

}  // namespace lockstep::server
