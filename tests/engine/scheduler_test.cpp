// The continuous-batching scheduler on the tiny synthetic model (random weights, a real BPE
// vocabulary): many requests served together give exactly what each gives alone through a
// Session, on the CPU reference and on the fast path; long prompts are ingested in chunks while
// other slots stream; cancellation frees the slot; a full queue says busy; bad requests are
// refused before admission; max_tokens and the context end give "length".
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/cpu/reference_backend.h"
#include "backend/fast_compare.h"
#include "engine/generator.h"
#include "gguf/gguf_reader.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "model/synthetic_quant_mix.h"
#include "tokenizer/vocab.h"

namespace lockstep {
namespace {

using namespace std::chrono_literals;

struct Tiny {
  std::unique_ptr<Model> model;
  std::unique_ptr<tokenizer::Vocab> vocab;
};

const Tiny& tiny() {
  static const Tiny t = [] {
    const auto plan = plan_synthetic_model(*find_model_preset("tiny"), Arch::Llama,
                                           *find_quant_scheme("q8_0"), 11);
    Tiny r;
    r.model = std::make_unique<Model>(
        Model::from_file(gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny.gguf")));
    r.vocab = std::make_unique<tokenizer::Vocab>(tokenizer::Vocab::from_gguf(*r.model->file));
    return r;
  }();
  return t;
}

std::unique_ptr<Backend> make_backend(bool fast, int n_seq, int n_ctx) {
  const Model& m = *tiny().model;
  if (!fast) return std::make_unique<ReferenceBackend>(m, 2, n_ctx, 64, RefMatmulTuning{}, n_seq);
  cpu::TransformerOptions o;
  o.name = "cpu";
  o.n_threads = 2;
  o.n_ctx = n_ctx;
  o.n_seq = n_seq;
  return std::make_unique<backend_test::UngatedFast>(m, o);
}

// Everything one request heard, and a way to wait for its end.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  std::string text;
  bool done = false;
  std::string reason, error;
  bool context_full = false;
  int prompt_tokens = 0, completion_tokens = 0;
  int64_t first_event_order = -1, done_order = -1;
  std::atomic<int64_t>* clock = nullptr;  // shared event counter, to see interleaving
  std::vector<TokenLogprobs> logprobs;    // of the events that carried them

  StreamCallback callback() {
    return [this](const StreamEvent& ev) {
      std::lock_guard<std::mutex> lock(mu);
      const int64_t now = clock ? (*clock)++ : 0;
      if (first_event_order < 0) first_event_order = now;
      if (ev.token >= 0) tokens.push_back(ev.token);
      if (ev.logprobs) logprobs.push_back(*ev.logprobs);
      text += ev.text;
      if (ev.done) {
        done = true;
        done_order = now;
        reason = ev.finish_reason;
        error = ev.error;
        context_full = ev.context_full;
        prompt_tokens = ev.prompt_tokens;
        completion_tokens = ev.completion_tokens;
        cv.notify_all();
      }
    };
  }
  bool wait(std::chrono::seconds timeout = 60s) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [&] { return done; });
  }
  size_t n_tokens() {
    std::lock_guard<std::mutex> lock(mu);
    return tokens.size();
  }
};

struct Job {
  Job() = default;
  Job(std::vector<int32_t> p, SamplingParams s, int n)
      : prompt(std::move(p)), sampling(s), max_tokens(n) {}
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int max_tokens = 12;
  std::vector<std::string> stop;
};

ScheduledRequest to_request(const Job& job, Collector& c) {
  ScheduledRequest r;
  r.prompt = job.prompt;
  r.sampling = job.sampling;
  r.max_tokens = job.max_tokens;
  r.stop = job.stop;
  r.on_event = c.callback();
  return r;
}

GenerationResult alone(bool fast, const Job& job, int n_ctx) {
  Session s(make_backend(fast, 1, n_ctx), *tiny().vocab, job.sampling);
  GenerationRequest req;
  req.max_tokens = job.max_tokens;
  req.stop = job.stop;
  return s.generate(job.prompt, req);
}

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

// A prompt of exactly n tokens (BOS and English words), different for each variant.
std::vector<int32_t> prompt_of(int n, int variant) {
  static const char* kWords[] = {"the", "cat", "sat",   "on",   "a",    "mat",  "and", "looked",
                                 "at",  "sky", "while", "rain", "fell", "over", "town"};
  std::string text;
  for (int i = 0; i < n; ++i) text += std::string(i ? " " : "") + kWords[(i * 7 + variant) % 15];
  auto tokens = tiny().vocab->tokenize(text, true, false);
  tokens.resize(size_t(n));
  return tokens;
}

// Variants whose greedy continuation (fast path) runs for at least 400 tokens without an
// end-of-generation token (the others end within 300), for requests that must still be running when
// acted on.
constexpr int kNoEos = 4, kNoEos2 = 6;

std::string finish_of(const GenerationResult& r) {
  return r.finish_reason;
}

class SchedulerBatch : public ::testing::TestWithParam<bool> {};

TEST_P(SchedulerBatch, ThirtyTwoConcurrentRequestsGiveExactlyWhatEachGivesAlone) {
  const bool fast = GetParam();
  constexpr int kCtx = 96;
  std::vector<Job> jobs(32);
  for (int i = 0; i < 32; ++i) {
    Job& j = jobs[size_t(i)];
    j.prompt = prompt_of(2 + (i * 5) % 37, i);  // several longer than the 16-token chunk
    j.sampling = greedy();
    if (i % 4 == 3) {  // some sampled requests: their seed alone decides their tokens
      j.sampling = SamplingParams{};
      j.sampling.seed = uint64_t(1000 + i);
    }
    j.max_tokens = 6 + i % 11;
    if (i == 5) j.max_tokens = -1;  // runs into the end of the context
  }
  SchedulerOptions opt;
  opt.prompt_chunk = 16;
  Scheduler sched(make_backend(fast, 32, kCtx), *tiny().vocab, opt);
  ASSERT_EQ(sched.n_slots(), 32);
  std::vector<std::unique_ptr<Collector>> got;
  for (const Job& j : jobs) {
    got.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(sched.submit(to_request(j, *got.back())).accepted());
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    ASSERT_TRUE(got[i]->wait());
    const GenerationResult want = alone(fast, jobs[i], kCtx);
    EXPECT_EQ(got[i]->tokens, want.tokens);
    EXPECT_EQ(got[i]->text, want.text);
    EXPECT_EQ(got[i]->reason, finish_of(want));
    EXPECT_EQ(got[i]->context_full, want.context_full);
    EXPECT_EQ(got[i]->prompt_tokens, int(jobs[i].prompt.size()));
    EXPECT_EQ(got[i]->completion_tokens, int(want.tokens.size()));
  }
  EXPECT_TRUE(got[5]->context_full) << "request 5 was meant to reach the end of the context";
  EXPECT_EQ(got[5]->reason, "length");
  // Far fewer steps than requests x tokens: they were batched.
  EXPECT_LT(sched.steps(), 120);
}

INSTANTIATE_TEST_SUITE_P(CpuBackends, SchedulerBatch, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "fast" : "reference"; });

TEST(Scheduler, LongPromptIsChunkedWhileAnotherSlotStreams) {
  constexpr int kCtx = 256;
  SchedulerOptions opt;
  opt.prompt_chunk = 8;
  Scheduler sched(make_backend(false, 2, kCtx), *tiny().vocab, opt);
  std::atomic<int64_t> clock{0};
  Job long_job{prompt_of(120, 1), greedy(), 4};
  Job short_job{prompt_of(3, 2), greedy(), 8};
  ASSERT_GT(long_job.prompt.size(), 100u);
  Collector long_c, short_c;
  long_c.clock = short_c.clock = &clock;
  ASSERT_TRUE(sched.submit(to_request(long_job, long_c)).accepted());
  ASSERT_TRUE(sched.submit(to_request(short_job, short_c)).accepted());
  ASSERT_TRUE(long_c.wait());
  ASSERT_TRUE(short_c.wait());
  // The long prompt takes > 12 steps of 8 tokens; the short request streamed all its 8 tokens
  // and finished in the meantime.
  EXPECT_LT(short_c.done_order, long_c.first_event_order);
  EXPECT_EQ(short_c.tokens, alone(false, short_job, kCtx).tokens);
  EXPECT_EQ(long_c.tokens, alone(false, long_job, kCtx).tokens);
}

TEST(Scheduler, CancellationFreesTheSlotWithinAStep) {
  Scheduler sched(make_backend(true, 1, 512), *tiny().vocab);
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  Collector running;
  ScheduledRequest r = to_request({prompt_of(4, kNoEos), greedy(), -1}, running);
  r.cancel = cancel;
  ASSERT_TRUE(sched.submit(std::move(r)).accepted());
  while (running.n_tokens() < 3) std::this_thread::sleep_for(1ms);
  cancel->store(true);
  ASSERT_TRUE(running.wait());
  EXPECT_EQ(running.reason, "cancelled");
  EXPECT_LT(running.tokens.size(), 500u);
  EXPECT_EQ(sched.active_slots(), 0);

  // The one slot serves the next request, which gives what it gives alone.
  Collector next;
  Job job{prompt_of(5, 3), greedy(), 5};
  ASSERT_TRUE(sched.submit(to_request(job, next)).accepted());
  ASSERT_TRUE(next.wait());
  EXPECT_EQ(next.tokens, alone(true, job, 512).tokens);
}

// Every sampled token's logprobs are the float64 log-softmax of the raw logits it was sampled
// from, recomputed here independently (long double sums) from a single-sequence reference
// backend fed the same tokens. The request samples with a temperature and OpenAI penalties, which
// change the draw but not the reported log-probabilities; its tokens equal a Session's.
TEST(Scheduler, LogprobsAreTheLogSoftmaxOfTheRawLogits) {
  constexpr int kCtx = 64;
  Scheduler sched(make_backend(false, 2, kCtx), *tiny().vocab);
  Job job{prompt_of(7, 2), SamplingParams{}, 10};
  job.sampling.seed = 5;
  job.sampling.presence_penalty = 0.5f;
  job.sampling.frequency_penalty = 0.3f;
  Collector c, other;
  ScheduledRequest r = to_request(job, c);
  r.logprobs = 5;
  ASSERT_TRUE(sched.submit(to_request({prompt_of(9, 3), greedy(), 12}, other)).accepted());
  ASSERT_TRUE(sched.submit(std::move(r)).accepted());
  ASSERT_TRUE(c.wait());
  ASSERT_TRUE(other.wait());
  EXPECT_TRUE(other.logprobs.empty());
  EXPECT_EQ(c.tokens, alone(false, job, kCtx).tokens);

  const tokenizer::Vocab& vocab = *tiny().vocab;
  auto backend = make_backend(false, 1, kCtx);
  const size_t n_sample = std::min(size_t(backend->model().hp.n_vocab), size_t(vocab.n_tokens()));
  std::vector<float> logits(size_t(backend->model().hp.n_vocab));
  backend->forward(job.prompt, logits.data(), false);
  size_t checked = 0;
  for (int32_t token : c.tokens) {
    if (vocab.is_eog(token)) break;  // the end token carries no logprobs
    ASSERT_LT(checked, c.logprobs.size());
    const TokenLogprobs& got = c.logprobs[checked++];
    long double sum = 0;
    for (size_t i = 0; i < n_sample; ++i) sum += std::exp((long double)logits[i]);
    auto ref = [&](int32_t id) { return double((long double)logits[size_t(id)] - std::log(sum)); };
    EXPECT_EQ(got.token, token);
    EXPECT_NEAR(got.logprob, ref(token), 1e-9);
    std::vector<int32_t> order(n_sample);
    for (size_t i = 0; i < n_sample; ++i) order[i] = int32_t(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
    ASSERT_EQ(got.top.size(), 5u);
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(got.top[i].first, order[i]);
      EXPECT_NEAR(got.top[i].second, ref(order[i]), 1e-9);
    }
    backend->forward({&token, 1}, logits.data(), false);
  }
  EXPECT_EQ(checked, c.logprobs.size());
  EXPECT_GT(checked, 0u);
}

// An audited request (ScheduledRequest::on_logits) hands over every sampled token with the raw
// logits row it was sampled from: the rows a single-sequence reference backend computes for the
// same tokens, in order, also past the 256 rows the scheduler reserves at first. A request served
// beside it is not audited and gets what it gets alone.
TEST(Scheduler, AuditedRequestsHandOverTheRowOfEverySampledToken) {
  constexpr int kCtx = 320;
  Scheduler sched(make_backend(false, 2, kCtx), *tiny().vocab);
  Job job{prompt_of(5, kNoEos), SamplingParams{}, 270};
  job.sampling.seed = 9;
  Collector c, other;
  std::mutex mu;
  std::condition_variable cv;
  bool handed = false;
  std::vector<int32_t> tokens;
  std::vector<float> rows;
  ScheduledRequest r = to_request(job, c);
  r.on_logits = [&](std::vector<int32_t> t, std::vector<float> x) {
    std::lock_guard<std::mutex> lock(mu);
    tokens = std::move(t), rows = std::move(x), handed = true;
    cv.notify_all();
  };
  const Job plain{prompt_of(9, 3), greedy(), 40};
  ASSERT_TRUE(sched.submit(to_request(plain, other)).accepted());
  ASSERT_TRUE(sched.submit(std::move(r)).accepted());
  ASSERT_TRUE(c.wait());
  ASSERT_TRUE(other.wait());
  EXPECT_EQ(other.tokens, alone(false, plain, kCtx).tokens);
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return handed; }));
  EXPECT_EQ(tokens, c.tokens);
  ASSERT_GT(tokens.size(), 256u);  // past the first reservation

  auto backend = make_backend(false, 1, kCtx);
  const size_t V = size_t(backend->model().hp.n_vocab);
  ASSERT_EQ(rows.size(), tokens.size() * V);
  std::vector<float> logits(V);
  backend->forward(job.prompt, logits.data(), false);
  for (size_t i = 0; i < tokens.size(); ++i) {
    ASSERT_EQ(0, std::memcmp(logits.data(), rows.data() + i * V, V * sizeof(float)))
        << "row " << i << " is not the logits token " << i << " was sampled from";
    backend->forward({&tokens[i], 1}, logits.data(), false);
  }
}

// Counts what each step's items asked the backend for, delegating the work to a real backend.
class AskCounter : public Backend {
 public:
  explicit AskCounter(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  const Model& model() const override { return inner_->model(); }
  int n_ctx() const override { return inner_->n_ctx(); }
  int n_seq() const override { return inner_->n_seq(); }
  int n_past() const override { return inner_->n_past(); }
  int seq_past(int seq) const override { return inner_->seq_past(seq); }
  void truncate(int n_past) override { inner_->truncate(n_past); }
  void truncate_seq(int seq, int n_past) override { inner_->truncate_seq(seq, n_past); }
  std::atomic<int> picks_only{0}, rows{0};

 protected:
  void forward_impl(std::span<const int32_t>, float*, bool) override { ADD_FAILURE(); }
  void forward_batch_impl(std::span<const SeqTokens> batch) override {
    for (const SeqTokens& item : batch) {
      picks_only += item.argmax && !item.logits;
      rows += item.logits != nullptr;
    }
    inner_->forward_batch(batch);
  }
  bool picks_argmax(std::span<const SeqTokens>, size_t) const override { return true; }
  void drift_kv(int, int64_t, int64_t, float) override {}

 private:
  std::unique_ptr<Backend> inner_;
};

// A plain greedy request asks the backend only for its greedy pick (a GPU then copies an id, not
// a row of the vocabulary) and gets the tokens it gets alone; one that wants logprobs, samples or
// is penalised asks for rows.
TEST(Scheduler, PlainGreedyRequestsAskForThePickNotTheRow) {
  constexpr int kCtx = 64;
  for (int variant = 0; variant < 3; ++variant) {
    auto counter = std::make_unique<AskCounter>(make_backend(true, 2, kCtx));
    AskCounter& asked = *counter;
    Scheduler sched(std::move(counter), *tiny().vocab);
    Job job{prompt_of(6, variant), greedy(), 8};
    if (variant == 1) job.sampling.frequency_penalty = 0.5f;
    Collector c;
    ScheduledRequest r = to_request(job, c);
    if (variant == 2) r.logprobs = 0;
    ASSERT_TRUE(sched.submit(std::move(r)).accepted());
    ASSERT_TRUE(c.wait());
    EXPECT_EQ(c.tokens, alone(true, job, kCtx).tokens) << "variant " << variant;
    EXPECT_EQ(asked.picks_only.load(), variant == 0 ? int(c.tokens.size()) : 0);
    EXPECT_EQ(asked.rows.load(), variant == 0 ? 0 : int(c.tokens.size()));
  }
}

TEST(Scheduler, OpenAiPenaltiesChangeTheTokensAsInASession) {
  constexpr int kCtx = 96;
  Scheduler sched(make_backend(true, 2, kCtx), *tiny().vocab);
  Job plain{prompt_of(5, kNoEos), greedy(), 40};
  Job penalised = plain;
  penalised.sampling.presence_penalty = 1.5f;
  penalised.sampling.frequency_penalty = 1.0f;
  Collector a, b;
  ASSERT_TRUE(sched.submit(to_request(plain, a)).accepted());
  ASSERT_TRUE(sched.submit(to_request(penalised, b)).accepted());
  ASSERT_TRUE(a.wait());
  ASSERT_TRUE(b.wait());
  EXPECT_EQ(a.tokens, alone(true, plain, kCtx).tokens);
  EXPECT_EQ(b.tokens, alone(true, penalised, kCtx).tokens);
  EXPECT_NE(a.tokens, b.tokens);
  // Repeats are rarer with the penalties.
  auto distinct = [](std::vector<int32_t> v) {
    std::sort(v.begin(), v.end());
    return std::unique(v.begin(), v.end()) - v.begin();
  };
  EXPECT_GT(distinct(b.tokens), distinct(a.tokens));
}

TEST(Scheduler, AFullQueueAnswersBusyAndCancelledWaitersLeaveIt) {
  SchedulerOptions opt;
  opt.queue_capacity = 2;
  Scheduler sched(make_backend(true, 1, 512), *tiny().vocab, opt);
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  Collector running, q1, q2, q3;
  ScheduledRequest r = to_request({prompt_of(4, kNoEos), greedy(), -1}, running);
  r.cancel = cancel;
  ASSERT_TRUE(sched.submit(std::move(r)).accepted());
  while (running.n_tokens() < 1) std::this_thread::sleep_for(1ms);  // admitted: the queue is empty
  auto q1_cancel = std::make_shared<std::atomic<bool>>(false);
  ScheduledRequest w1 = to_request({prompt_of(4, 1), greedy(), 3}, q1);
  w1.cancel = q1_cancel;
  ASSERT_TRUE(sched.submit(std::move(w1)).accepted());
  ASSERT_TRUE(sched.submit(to_request({prompt_of(4, 2), greedy(), 3}, q2)).accepted());
  const SubmitResult busy = sched.submit(to_request({prompt_of(4, 3), greedy(), 3}, q3));
  EXPECT_EQ(busy.status, SubmitResult::Status::kBusy);
  EXPECT_NE(busy.error.find("busy"), std::string::npos) << busy.error;

  q1_cancel->store(true);  // a waiter that gives up never takes the slot
  cancel->store(true);
  ASSERT_TRUE(running.wait());
  ASSERT_TRUE(q1.wait());
  EXPECT_EQ(q1.reason, "cancelled");
  EXPECT_TRUE(q1.tokens.empty());
  ASSERT_TRUE(q2.wait());
  EXPECT_EQ(q2.reason, "length");
  EXPECT_EQ(q2.tokens.size(), 3u);
}

TEST(Scheduler, BadRequestsAreRejectedBeforeAdmission) {
  Scheduler sched(make_backend(false, 2, 32), *tiny().vocab);
  Collector c;
  auto over = to_request({prompt_of(40, 0), greedy(), 4}, c);
  ASSERT_GT(over.prompt.size(), 32u);
  SubmitResult r = sched.submit(std::move(over));
  EXPECT_EQ(r.status, SubmitResult::Status::kRejected);
  EXPECT_NE(r.error.find("context holds 32"), std::string::npos) << r.error;

  r = sched.submit(to_request({{}, greedy(), 4}, c));
  EXPECT_EQ(r.status, SubmitResult::Status::kRejected);
  EXPECT_NE(r.error.find("empty"), std::string::npos) << r.error;

  r = sched.submit(to_request({{1, 99999}, greedy(), 4}, c));
  EXPECT_EQ(r.status, SubmitResult::Status::kRejected);
  EXPECT_NE(r.error.find("99999"), std::string::npos) << r.error;

  SamplingParams bad = greedy();
  bad.top_p = 1.5f;
  r = sched.submit(to_request({{1, 2}, bad, 4}, c));
  EXPECT_EQ(r.status, SubmitResult::Status::kRejected);
  EXPECT_NE(r.error.find("top-p"), std::string::npos) << r.error;

  r = sched.submit(to_request({{1, 2}, greedy(), -2}, c));
  EXPECT_EQ(r.status, SubmitResult::Status::kRejected);

  auto many = to_request({{1, 2}, greedy(), 4}, c);
  many.logprobs = kMaxTopLogprobs + 1;
  r = sched.submit(std::move(many));
  EXPECT_EQ(r.status, SubmitResult::Status::kRejected);
  EXPECT_NE(r.error.find("logprobs"), std::string::npos) << r.error;
  EXPECT_FALSE(c.done);  // nothing was ever started
}

TEST(Scheduler, MaxTokensAndTheContextEndGiveLength) {
  constexpr int kCtx = 32;
  Scheduler sched(make_backend(true, 2, kCtx), *tiny().vocab);
  Collector limited, full, zero, exact;
  Job limited_job{prompt_of(6, 0), greedy(), 5};
  Job full_job{prompt_of(20, 1), greedy(), -1};
  Job exact_job{prompt_of(60, 2), greedy(), -1};
  exact_job.prompt.resize(kCtx);  // a prompt that fills the context exactly: one token, then length
  ASSERT_TRUE(sched.submit(to_request(limited_job, limited)).accepted());
  ASSERT_TRUE(sched.submit(to_request(full_job, full)).accepted());
  ASSERT_TRUE(sched.submit(to_request({prompt_of(3, 0), greedy(), 0}, zero)).accepted());
  ASSERT_TRUE(sched.submit(to_request(exact_job, exact)).accepted());
  for (Collector* c : {&limited, &full, &zero, &exact}) ASSERT_TRUE(c->wait());
  EXPECT_EQ(limited.reason, "length");
  EXPECT_FALSE(limited.context_full);
  EXPECT_EQ(limited.tokens, alone(true, limited_job, kCtx).tokens);
  EXPECT_EQ(full.reason, "length");
  EXPECT_TRUE(full.context_full);
  EXPECT_EQ(full.tokens, alone(true, full_job, kCtx).tokens);
  EXPECT_EQ(int(full_job.prompt.size() + full.tokens.size()), kCtx + 1);
  EXPECT_EQ(zero.reason, "length");
  EXPECT_TRUE(zero.tokens.empty());
  EXPECT_EQ(exact.reason, "length");
  EXPECT_TRUE(exact.context_full);
  EXPECT_EQ(exact.tokens.size(), 1u);
}

TEST(Scheduler, StopStringsEndARequestAsInASession) {
  // The greedy continuation alone, then a stop string taken from the middle of its text.
  Job job{prompt_of(5, 4), greedy(), 24};
  const GenerationResult free_run = alone(false, job, 128);
  ASSERT_GT(free_run.text.size(), 6u);
  job.stop = {free_run.text.substr(free_run.text.size() / 2, 3)};
  const GenerationResult want = alone(false, job, 128);
  ASSERT_EQ(want.finish_reason, "stop");
  Scheduler sched(make_backend(false, 2, 128), *tiny().vocab);
  Collector c;
  ASSERT_TRUE(sched.submit(to_request(job, c)).accepted());
  ASSERT_TRUE(c.wait());
  EXPECT_EQ(c.reason, "stop");
  EXPECT_EQ(c.text, want.text);
  EXPECT_EQ(c.tokens, want.tokens);
}

TEST(Scheduler, ShutdownLetsShortRequestsFinish) {
  auto sched = std::make_unique<Scheduler>(make_backend(true, 1, 512), *tiny().vocab);
  Collector first, second;
  ASSERT_TRUE(sched->submit(to_request({prompt_of(4, kNoEos), greedy(), 5}, first)).accepted());
  ASSERT_TRUE(sched->submit(to_request({prompt_of(4, kNoEos2), greedy(), 5}, second)).accepted());
  sched->shutdown(30s);  // returns as soon as both are done
  ASSERT_TRUE(first.wait(0s));
  ASSERT_TRUE(second.wait(0s));
  EXPECT_EQ(first.reason, "length");
  EXPECT_EQ(second.reason, "length");
  EXPECT_EQ(second.tokens.size(), 5u);
  Collector late;
  EXPECT_EQ(sched->submit(to_request({prompt_of(4, 0), greedy(), 2}, late)).status,
            SubmitResult::Status::kStopped);
}

TEST(Scheduler, ShutdownCancelsWhatOutlivesTheGrace) {
  auto sched = std::make_unique<Scheduler>(make_backend(true, 1, 512), *tiny().vocab);
  Collector running, waiting;
  ASSERT_TRUE(sched->submit(to_request({prompt_of(4, kNoEos), greedy(), 400}, running)).accepted());
  ASSERT_TRUE(
      sched->submit(to_request({prompt_of(4, kNoEos2), greedy(), 400}, waiting)).accepted());
  while (running.n_tokens() < 2) std::this_thread::sleep_for(1ms);
  const auto t0 = std::chrono::steady_clock::now();
  sched->shutdown(0ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  ASSERT_TRUE(running.wait(0s));
  ASSERT_TRUE(waiting.wait(0s));
  EXPECT_EQ(running.reason, "cancelled");
  EXPECT_LT(running.tokens.size(), 400u);
  EXPECT_EQ(waiting.reason, "error");
  EXPECT_NE(waiting.error.find("shut down"), std::string::npos) << waiting.error;
  EXPECT_TRUE(waiting.tokens.empty());
}

}  // namespace
}  // namespace lockstep
