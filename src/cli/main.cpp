// lockstep command-line entry point: parses the subcommand and maps errors to exit codes. Every
// error is printed here, as exactly one line (one_line escapes what a message quotes from files
// and flags).
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "parity/gate.h"
#include "util/error.h"
#include "util/stdio_files.h"

int main(int argc, char** argv) {
  try {
    const int code = lockstep::cli::run_main(argc, argv);
    // Output a command wrote but that never reached its destination (a full disk, /dev/full) is
    // a failure, whatever the command returned.
    lockstep::flush_stdout();
    return code;
  } catch (const lockstep::ParityError& e) {
    // Already the complete tagged line: one line on stderr, nothing else.
    std::fprintf(stderr, "%s\n", lockstep::one_line(e.what()).c_str());
    return e.exit_code();
  } catch (const lockstep::Error& e) {
    std::fprintf(stderr, "lockstep: error: %s\n", lockstep::one_line(e.what()).c_str());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep: internal error: %s\n", lockstep::one_line(e.what()).c_str());
    return lockstep::kExitRuntime;
  }
}
