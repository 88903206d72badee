// The bench outputs from a report built by hand: one row per test in md, json and csv, and the
// single-report overload the bench drivers use.
#include "engine/bench.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace lockstep {
namespace {

BenchReport report(int threads) {
  BenchReport r;
  r.model.name = "m, with a comma";
  r.model.file_type = "Q8_0";
  r.backend = "cpu";
  r.threads = threads;
  r.weight_bytes_per_token = 1000;
  BenchStat pp{"pp8", 8, false, 0, {100, 120, 110}};
  BenchStat tg{"tg4", 4, true, 0, {50}};
  summarize_stat(pp);
  summarize_stat(tg);
  tg.gb_per_s = 1000 * tg.median / 1e9;
  r.stats = {pp, tg};
  return r;
}

size_t lines(const std::string& s) {
  return size_t(std::count(s.begin(), s.end(), '\n'));
}

TEST(BenchOutput, OneRowPerTestOfEveryReport) {
  const std::vector<BenchReport> reports = {report(1), report(2)};
  EXPECT_EQ(lines(bench_markdown(reports)), 2u + 4u);
  // The single-report form (bench/cpu_backend_bench.cpp) is the same table.
  EXPECT_EQ(bench_markdown(report(1)), bench_markdown(std::vector<BenchReport>{report(1)}));

  const auto j = nlohmann::json::parse(bench_json(reports));
  ASSERT_EQ(j.size(), 4u);
  EXPECT_EQ(j[0]["test"], "pp8");
  EXPECT_EQ(j[0]["n_prompt"], 8);
  EXPECT_EQ(j[0]["n_gen"], 0);
  EXPECT_EQ(j[0]["median"], 110);
  EXPECT_EQ(j[3]["test"], "tg4");
  EXPECT_EQ(j[3]["threads"], 2);
  EXPECT_EQ(j[3]["n_gen"], 4);
  EXPECT_DOUBLE_EQ(j[3]["gen_weights_gb_per_s"].get<double>(), 50e3 / 1e9);

  const std::string csv = bench_csv(reports);
  EXPECT_EQ(lines(csv), 1u + 4u);
  // A field with a comma is quoted, so every row keeps the header's column count.
  EXPECT_NE(csv.find("\"m, with a comma\",Q8_0,"), std::string::npos) << csv;
}

}  // namespace
}  // namespace lockstep
