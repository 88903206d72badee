// Compiles the engine tests' chain model (tests/engine/chain_model_util.cpp) into the CLI test
// binaries as well, so the CLI tests can write a model whose exact output is known, without
// putting it in tests/common (which every test binary of every folder would compile).
#include "engine/chain_model_util.cpp"  // NOLINT(bugprone-suspicious-include)
