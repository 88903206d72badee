// The bench outputs from a report built by hand: one row per test in md, json and csv, and the
// single-report overload the bench drivers use.
#include "engine/bench.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "backend/fast_compare.h"
#include "gguf/gguf_reader.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "util/error.h"

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

// --batch on the tiny synthetic model: one pp and one tg row per batch size, each with its
// sequence count, finite positive rates, and every sequence's cache cleared afterwards.
TEST(BatchedBench, OneRowPairPerBatchSizeOnAMultiSequenceBackend) {
  const auto plan =
      plan_synthetic_model(*find_model_preset("tiny"), Arch::Llama, *find_quant_scheme("q8_0"), 3);
  const Model model =
      Model::from_file(gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny.gguf"));
  cpu::TransformerOptions o;
  o.name = "cpu";
  o.n_threads = 2;
  o.n_ctx = 32;
  o.n_seq = 4;
  backend_test::UngatedFast backend(model, o);
  BenchParams p;
  p.batch = {1, 4};
  p.n_prompt = {8};
  p.n_gen = {4};
  p.reps = 2;
  ASSERT_EQ(batched_bench_ctx(p), 12);
  const BenchReport r = run_batched_bench(backend, p, ModelSummary{}, 2, nullptr);
  ASSERT_EQ(r.stats.size(), 4u);
  EXPECT_EQ(r.stats[0].test, "pp8 B=1");
  EXPECT_EQ(r.stats[1].test, "tg4 B=1");
  EXPECT_EQ(r.stats[2].test, "pp8 B=4");
  EXPECT_EQ(r.stats[3].test, "tg4 B=4");
  EXPECT_EQ(r.stats[3].n_seq, 4);
  EXPECT_TRUE(r.stats[3].is_gen);
  for (const auto& s : r.stats) {
    ASSERT_EQ(s.tok_per_s.size(), 2u);
    for (double v : s.tok_per_s) EXPECT_TRUE(std::isfinite(v) && v > 0) << s.test;
  }
  for (int seq = 0; seq < 4; ++seq) EXPECT_EQ(backend.seq_past(seq), 0);
  const auto j = nlohmann::json::parse(bench_json(std::vector<BenchReport>{r}));
  EXPECT_EQ(j[3]["n_seq"], 4);
  EXPECT_EQ(j[3]["n_gen"], 4);

  BenchParams too_many = p;
  too_many.batch = {5};
  EXPECT_THROW(run_batched_bench(backend, too_many, ModelSummary{}, 2, nullptr), InputError);
  BenchParams too_long = p;
  too_long.n_prompt = {30};
  EXPECT_THROW(run_batched_bench(backend, too_long, ModelSummary{}, 2, nullptr), InputError);
}

// Records where each forward of a bench run starts, delegating the work to a real backend.
class StartRecorder : public Backend {
 public:
  explicit StartRecorder(Backend& inner) : inner_(inner) {}
  std::string name() const override { return inner_.name(); }
  const Model& model() const override { return inner_.model(); }
  int n_ctx() const override { return inner_.n_ctx(); }
  int n_past() const override { return inner_.n_past(); }
  void truncate(int n_past) override { inner_.truncate(n_past); }
  double measured_copy_gb_per_s() override { return 2000; }
  std::vector<std::pair<int, size_t>> starts;  // (n_past, tokens) per forward

 protected:
  void forward_impl(std::span<const int32_t> tokens, float* logits, bool all_logits) override {
    starts.emplace_back(inner_.n_past(), tokens.size());
    inner_.forward(tokens, logits, all_logits);
  }
  void drift_kv(int, int64_t, int64_t, float) override {}

 private:
  Backend& inner_;
};

// -d: every test runs at every depth, after exactly that many cached tokens (the prefill of the
// depth is not a measured forward), named as llama-bench names it; the context covers the
// deepest test; the copy bandwidth a backend measures is the yardstick of tg rows.
TEST(Bench, DepthPutsThatManyTokensInTheCacheBeforeEveryTest) {
  const auto plan =
      plan_synthetic_model(*find_model_preset("tiny"), Arch::Llama, *find_quant_scheme("q8_0"), 3);
  const Model model =
      Model::from_file(gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny.gguf"));
  cpu::TransformerOptions o;
  o.name = "cpu";
  o.n_threads = 1;
  o.n_ctx = 32;
  backend_test::UngatedFast inner(model, o);
  StartRecorder backend(inner);
  BenchParams p;
  p.n_prompt = {5};
  p.n_gen = {3};
  p.n_depth = {0, 9};
  p.reps = 2;
  EXPECT_EQ(bench_max_tokens(p), 14);
  const BenchReport r = run_bench(backend, p, ModelSummary{}, 1, nullptr);
  ASSERT_EQ(r.stats.size(), 4u);
  EXPECT_EQ(r.stats[0].test, "pp5");
  EXPECT_EQ(r.stats[1].test, "tg3");
  EXPECT_EQ(r.stats[2].test, "pp5 @ d9");
  EXPECT_EQ(r.stats[3].test, "tg3 @ d9");
  EXPECT_EQ(r.stats[3].n_depth, 9);
  EXPECT_EQ(r.copy_gb_per_s, 2000);
  // Measured forwards: pp at 0 (x2), tg at 0,1,2 (x2), then the depth prefill (9 tokens, once),
  // pp at 9 (x2), tg at 9,10,11 (x2); the warm-up's come first.
  const std::vector<std::pair<int, size_t>> want = {
      {0, 5}, {0, 5}, {0, 1}, {1, 1},  {2, 1},  {0, 1}, {1, 1},  {2, 1}, {0, 9},
      {9, 5}, {9, 5}, {9, 1}, {10, 1}, {11, 1}, {9, 1}, {10, 1}, {11, 1}};
  ASSERT_GE(backend.starts.size(), want.size());
  const std::vector<std::pair<int, size_t>> measured(backend.starts.end() - ptrdiff_t(want.size()),
                                                     backend.starts.end());
  EXPECT_EQ(measured, want);
  const std::string md = bench_markdown(r);
  EXPECT_NE(md.find("tg3 @ d9"), std::string::npos) << md;
  EXPECT_NE(md.find(" %)"), std::string::npos) << md;  // share of the copy bandwidth
  const auto j = nlohmann::json::parse(bench_json(std::vector<BenchReport>{r}));
  EXPECT_EQ(j[2]["n_depth"], 9);
  EXPECT_TRUE(j[3].contains("percent_of_copy_bandwidth"));
  EXPECT_FALSE(j[2].contains("percent_of_copy_bandwidth"));  // a pp row

  BenchParams too_deep = p;
  too_deep.n_depth = {28};
  EXPECT_THROW(run_bench(backend, too_deep, ModelSummary{}, 1, nullptr), InputError);
}

}  // namespace
}  // namespace lockstep
