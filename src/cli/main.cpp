// lockstep command-line entry point: parses the subcommand and maps errors to exit codes.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "parity/gate.h"
#include "util/error.h"

int main(int argc, char** argv) {
  try {
    return lockstep::cli::run_main(argc, argv);
  } catch (const lockstep::ParityError& e) {
    // Already the complete tagged line: one line on stderr, nothing else.
    std::fprintf(stderr, "%s\n", e.what());
    return e.exit_code();
  } catch (const lockstep::Error& e) {
    std::fprintf(stderr, "lockstep: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep: internal error: %s\n", e.what());
    return lockstep::kExitRuntime;
  }
}
