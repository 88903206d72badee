#include "tokenizer/tokenizer_test_util.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace lockstep::tokenizer::test {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "required test data file is missing or unreadable: " << path;
    throw std::runtime_error("missing test data: " + path);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> split_inp(const std::string& data) {
  static const std::string kSep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < data.size()) {
    const size_t next = data.find(kSep, pos);
    if (next == std::string::npos) {
      out.push_back(data.substr(pos));
      break;
    }
    out.push_back(data.substr(pos, next - pos));
    pos = next + kSep.size();
  }
  return out;
}

std::vector<std::vector<TokenId>> parse_out(const std::string& data) {
  std::vector<std::vector<TokenId>> out;
  std::istringstream lines(data);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream nums(line);
    std::vector<TokenId> ids;
    long long v;
    while (nums >> v) ids.push_back(static_cast<TokenId>(v));
    out.push_back(std::move(ids));
  }
  return out;
}

const Vocab& cached_vocab(const std::string& path) {
  static std::map<std::string, std::unique_ptr<Vocab>> cache;
  auto it = cache.find(path);
  if (it == cache.end()) {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) {
      ADD_FAILURE() << "required test data file is missing or unreadable: " << path;
      throw std::runtime_error("missing test data: " + path);
    }
    it = cache.emplace(path, std::make_unique<Vocab>(Vocab::load(path))).first;
  }
  return *it->second;
}

namespace {

std::string slurp_fd(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

}  // namespace

CommandResult run_lockstep(const std::vector<std::string>& args) {
  CommandResult r;
  char out_path[] = "/tmp/lockstep_tok_outXXXXXX";
  char err_path[] = "/tmp/lockstep_tok_errXXXXXX";
  const int out_fd = mkstemp(out_path);
  const int err_fd = mkstemp(err_path);
  if (out_fd < 0 || err_fd < 0) throw std::runtime_error("mkstemp failed");
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    std::vector<char*> argv;
    std::string bin = LOCKSTEP_BINARY;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  lseek(out_fd, 0, SEEK_SET);
  lseek(err_fd, 0, SEEK_SET);
  r.out = slurp_fd(out_fd);
  r.err = slurp_fd(err_fd);
  close(out_fd);
  close(err_fd);
  unlink(out_path);
  unlink(err_path);
  return r;
}

std::string ids_to_string(const std::vector<TokenId>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(ids[i]);
  }
  return s + "]";
}

}  // namespace lockstep::tokenizer::test
