// The verdict cache (parity/verdict_cache.h) through the CLI on the real stories260K model: a pass
// of the fast CPU path is remembered and reused under --parity auto, never under strict or with a
// fault, missed when the model file changes, and a corrupt or foreign cache file is ignored with
// one warning line. ctest runs every other test with LOCKSTEP_VERDICT_CACHE=off; these set their
// own directory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/cli_process_util.h"

namespace lockstep::test {
namespace {

namespace fs = std::filesystem;

const std::string kModel = "../shared/models/stories260K.gguf";

std::vector<std::string> run_args(const std::string& model, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"run", "-m",    model,    "-p", "Once upon a time",
                                "-n",  "24",    "--temp", "0",  "--backend",
                                "cpu", "--json"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

struct Verdict {
  CliRun run;
  nlohmann::json parity;
  std::string text;
};

Verdict run_with_cache(const std::string& cache, const std::string& model,
                       std::vector<std::string> extra = {}, std::string fault = "") {
  Verdict v;
  v.run = run_lockstep(run_args(model, std::move(extra)), "",
                       {{"LOCKSTEP_VERDICT_CACHE", cache},
                        {"LOCKSTEP_FAULT", fault.empty() ? std::nullopt : std::optional(fault)},
                        {"LOCKSTEP_PARITY_STEPS", std::nullopt}});
  if (v.run.exit_code == 0) {
    const auto j = nlohmann::json::parse(v.run.out);
    v.parity = j["parity"];
    v.text = j["text"];
  }
  return v;
}

std::vector<fs::path> cache_files(const std::string& dir) {
  std::vector<fs::path> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path());
  return out;
}

int count_lines_with(const CliRun& r, const std::string& what) {
  int n = 0;
  for (const auto& l : r.err_lines()) n += l.find(what) != std::string::npos;
  return n;
}

class VerdictCacheCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kModel)) << kModel << " is missing (../shared)";
    dir_ =
        temp_dir() + "/verdicts-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(VerdictCacheCli, APassIsRememberedAndReusedWithTheSameAnswer) {
  const Verdict first = run_with_cache(dir_, kModel);
  ASSERT_EQ(first.run.exit_code, 0) << first.run.err;
  EXPECT_EQ(first.parity["status"], "passed");
  EXPECT_EQ(first.parity["cached"], false);
  EXPECT_GT(first.parity["reference_ms"].get<double>(), 0);
  ASSERT_EQ(cache_files(dir_).size(), 1u);

  const Verdict second = run_with_cache(dir_, kModel);
  ASSERT_EQ(second.run.exit_code, 0) << second.run.err;
  EXPECT_EQ(second.parity["status"], "passed");
  EXPECT_EQ(second.parity["cached"], true);
  EXPECT_EQ(second.parity["reference_ms"].get<double>(), 0) << "nothing was computed";
  EXPECT_EQ(second.parity["worst"]["value"], first.parity["worst"]["value"]);
  EXPECT_EQ(second.text, first.text);
  EXPECT_EQ(count_lines_with(second.run, "parity passed (cached:"), 1) << second.run.err;

  // Strict always recomputes, and the thread count is not part of the key.
  const Verdict strict = run_with_cache(dir_, kModel, {"--parity", "strict"});
  ASSERT_EQ(strict.run.exit_code, 0) << strict.run.err;
  EXPECT_EQ(strict.parity["cached"], false);
  const Verdict threads = run_with_cache(dir_, kModel, {"-t", "1"});
  EXPECT_EQ(threads.parity["cached"], true);
  EXPECT_EQ(threads.text, first.text);

  // Off: no cache at all.
  const Verdict off = run_with_cache("off", kModel);
  EXPECT_EQ(off.parity["cached"], false);
}

TEST_F(VerdictCacheCli, AFaultIsNeverHiddenByARememberedPass) {
  ASSERT_EQ(run_with_cache(dir_, kModel).run.exit_code, 0);
  const Verdict faulty = run_with_cache(dir_, kModel, {}, "kv_drift:2");
  // A forced backend that the gate rejects fails the run (exit 3) naming the step.
  EXPECT_EQ(faulty.run.exit_code, 3) << faulty.run.err;
  EXPECT_EQ(count_lines_with(faulty.run, "[lockstep-parity-v1] cpu path rejected"), 1)
      << faulty.run.err;
}

TEST_F(VerdictCacheCli, AChangedModelFileMisses) {
  const std::string model = dir_ + "-model.gguf";
  fs::copy_file(kModel, model, fs::copy_options::overwrite_existing);
  ASSERT_EQ(run_with_cache(dir_, model).parity["cached"], false);
  ASSERT_EQ(run_with_cache(dir_, model).parity["cached"], true);

  // A new modification time alone misses.
  struct stat st {};
  ASSERT_EQ(stat(model.c_str(), &st), 0);
  timespec times[2] = {st.st_atim, st.st_mtim};
  times[1].tv_sec -= 100;
  ASSERT_EQ(utimensat(AT_FDCWD, model.c_str(), times, 0), 0);
  EXPECT_EQ(run_with_cache(dir_, model).parity["cached"], false);
  EXPECT_EQ(run_with_cache(dir_, model).parity["cached"], true);

  // So does a change in the header with size and modification time restored: one byte of a
  // metadata key's name (general.name's value is free text) changes the table hash.
  {
    std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
    std::string head(16384, '\0');
    f.read(head.data(), std::streamsize(head.size()));
    const size_t at = head.find("general.name");
    ASSERT_NE(at, std::string::npos);
    // The value follows the key: its type (4 bytes) and length (8); flip its first character.
    const size_t value_at = at + std::string("general.name").size() + 4 + 8;
    f.seekp(std::streamoff(value_at));
    f.put(head[value_at] == 'X' ? 'Y' : 'X');
  }
  ASSERT_EQ(stat(model.c_str(), &st), 0);
  timespec same[2] = {st.st_atim, times[1]};
  ASSERT_EQ(utimensat(AT_FDCWD, model.c_str(), same, 0), 0);
  EXPECT_EQ(run_with_cache(dir_, model).parity["cached"], false);
}

TEST_F(VerdictCacheCli, CorruptOrForeignCacheFilesAreIgnoredWithOneWarning) {
  ASSERT_EQ(run_with_cache(dir_, kModel).run.exit_code, 0);
  const auto files = cache_files(dir_);
  ASSERT_EQ(files.size(), 1u);
  const fs::path file = files[0];

  std::ofstream(file, std::ios::trunc) << "{ not json";
  Verdict r = run_with_cache(dir_, kModel);
  ASSERT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_EQ(r.parity["cached"], false);
  EXPECT_EQ(count_lines_with(r.run, "verdict cache:"), 1) << r.run.err;
  EXPECT_EQ(run_with_cache(dir_, kModel).parity["cached"], true) << "the pass is stored again";

  // A well-formed file holding another key (another model or build) under this name.
  std::ifstream in(file);
  nlohmann::json j = nlohmann::json::parse(in);
  in.close();
  j["key"] = std::string(j["key"]) + "extra=1\n";
  std::ofstream(file, std::ios::trunc) << j.dump();
  r = run_with_cache(dir_, kModel);
  EXPECT_EQ(r.parity["cached"], false);
  EXPECT_EQ(count_lines_with(r.run, "belongs to another"), 1) << r.run.err;

  // A pass claimed with impossible metrics is not believed.
  j = nlohmann::json::parse(std::ifstream(file));
  j["worst_cosine"] = 7.0;
  std::ofstream(file, std::ios::trunc) << j.dump();
  r = run_with_cache(dir_, kModel);
  EXPECT_EQ(r.parity["cached"], false);
  EXPECT_EQ(count_lines_with(r.run, "out of range"), 1) << r.run.err;
}

}  // namespace
}  // namespace lockstep::test
