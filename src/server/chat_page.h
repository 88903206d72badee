// The chat page served at GET / (src/server/chat_page.html), compiled into the binary: CMake reads
// the HTML into a generated source (chat_page.cpp.in) at configure time.
#pragma once

#include <string_view>

namespace lockstep::server {

std::string_view chat_page_html();

}  // namespace lockstep::server
