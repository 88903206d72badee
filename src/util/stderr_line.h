// Messages that layers below the CLI write on stderr (the gate's verdict lines, warnings about a
// file) go through stderr_line, so that a progress line the CLI is drawing at a terminal
// (cli/progress_line.h) is erased first and the message gets a line of its own.
#pragma once

namespace lockstep {

// printf-style; the format ends with its own "\n", as fprintf's would.
void stderr_line(const char* format, ...) __attribute__((format(printf, 1, 2)));

// Called (under stderr_line's lock) before each message; null: none. The CLI's progress line sets
// it while it may be drawn.
void set_stderr_line_hook(void (*before_message)());

}  // namespace lockstep
