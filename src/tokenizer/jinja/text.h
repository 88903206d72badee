// Python's string operations on UTF-8 text, by code point as Python counts them: whitespace
// (str.isspace), strip, split on whitespace, case changes (ASCII and Latin-1 letters; other
// letters are kept as they are).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lockstep::tokenizer::jinja {

bool py_space(uint32_t cp);
// Byte offsets where the text is left after stripping: [begin, end). `chars` empty: whitespace;
// otherwise the code points in `chars`.
size_t lstrip_begin(const std::string& s, const std::string& chars = "");
size_t rstrip_end(const std::string& s, const std::string& chars = "");
// Byte offset of each code point start, plus s.size() at the end.
std::vector<size_t> code_point_offsets(const std::string& s);
std::string py_lower(const std::string& s);
std::string py_upper(const std::string& s);
std::string py_title(const std::string& s);
std::string py_capitalize(const std::string& s);

}  // namespace lockstep::tokenizer::jinja
