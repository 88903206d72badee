// Reading whole input files and writing stdout, with every failure reported instead of ignored:
// a prompt path naming a directory is bad input, not an internal error, and a full disk or
// closed pipe on stdout must not end with exit status 0.
#pragma once

#include <string>
#include <string_view>

namespace lockstep {

// The whole content of `path`, read byte-exact. A pipe or a device is read to its end (so
// `-f <(cmd)` works); a directory or an unreadable file throws InputError("<what>: <reason>").
std::string read_whole_file(const std::string& path, const std::string& what);

// Writes `text` to stdout and flushes it, so streamed text appears as it is generated. Throws
// Error("writing to stdout failed: <reason>") when the write or the flush fails.
void write_stdout(std::string_view text);

// Flushes stdout; throws like write_stdout if that fails or an earlier write on it failed (the
// reason is known only when this flush itself fails: a printf whose buffer flush failed midway
// leaves just the stream's error flag).
void flush_stdout();

}  // namespace lockstep
