// The generation loop on a tiny in-memory model whose greedy continuation is known by
// construction (chain_model_util.h): end-of-generation, token limit, stop strings, UTF-8 safe
// streaming, a full context, and a cache that carries over between calls.
#include "engine/generator.h"

#include <gtest/gtest.h>

#include "backend/cpu/reference_backend.h"
#include "engine/chain_model_util.h"
#include "util/error.h"

namespace lockstep {
namespace {

using namespace lockstep::test;

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

struct Fixture {
  ChainModel cm = make_chain_model();
  std::unique_ptr<Session> session(const SamplingParams& p = greedy(), int n_ctx = 64) {
    return std::make_unique<Session>(std::make_unique<ReferenceBackend>(*cm.model, 1, n_ctx),
                                     *cm.vocab, p);
  }
};

struct Collected {
  std::vector<std::string> pieces;
  PieceCallback callback() {
    return [this](std::string_view p) { pieces.emplace_back(p); };
  }
  std::string joined() const {
    std::string s;
    for (const auto& p : pieces) s += p;
    return s;
  }
};

const std::vector<int32_t> kOncePrompt = {kBos, kOnce};

TEST(Generator, CancelStopsBeforeTheNextTokenAndKeepsTheTextSoFar) {
  Fixture f;
  auto s = f.session();
  Collected out;
  GenerationRequest req;
  // Cancelled once two pieces have been shown, as a Ctrl-C during streaming would.
  req.cancelled = [&out] { return out.pieces.size() >= 2; };
  auto r = s->generate(kOncePrompt, req, out.callback());
  EXPECT_EQ(r.finish_reason, "cancelled");
  EXPECT_EQ(r.text, " upon a");
  EXPECT_EQ(out.joined(), r.text);
  EXPECT_EQ(r.tokens, (std::vector<int32_t>{kUpon, kA}));
  // The session goes on: the next call continues from the cache.
  auto next = s->generate({}, {}, nullptr);
  EXPECT_EQ(next.finish_reason, "eos");
  EXPECT_EQ(next.text, " time the end.");
}

TEST(Generator, StopsAtEndOfGenerationWithoutPrintingIt) {
  Fixture f;
  auto s = f.session();
  Collected out;
  auto r = s->generate(kOncePrompt, {}, out.callback());
  EXPECT_EQ(r.finish_reason, "eos");
  EXPECT_EQ(r.text, " upon a time the end.");
  EXPECT_EQ(out.joined(), r.text);
  EXPECT_EQ(r.tokens, (std::vector<int32_t>{kUpon, kA, kTime, kThe, kEnd, kDot, kEos}));
  EXPECT_EQ(r.timings.prompt_tokens, 2);
  EXPECT_EQ(r.timings.gen_tokens, 7);
  EXPECT_GT(r.timings.prompt_ms, 0);
  EXPECT_GT(r.timings.gen_ms, 0);
  // The EOS was sampled but never fed back.
  EXPECT_EQ(s->cached_tokens(),
            (std::vector<int32_t>{kBos, kOnce, kUpon, kA, kTime, kThe, kEnd, kDot}));
  EXPECT_EQ(s->backend().n_past(), 8);
}

// --ignore-eos: where the chain would end, something else is sampled instead, so only the limit
// ends the answer; no end-of-generation id is ever produced.
TEST(Generator, IgnoreEosSamplesPastTheEndUntilTheLimit) {
  Fixture f;
  auto s = f.session();
  GenerationRequest req;
  req.max_tokens = 12;
  req.ignore_eos = true;
  auto r = s->generate(kOncePrompt, req);
  EXPECT_EQ(r.finish_reason, "length");
  ASSERT_EQ(r.tokens.size(), 12u);
  for (int32_t t : r.tokens) EXPECT_NE(t, kEos);
  EXPECT_EQ(std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + 6),
            (std::vector<int32_t>{kUpon, kA, kTime, kThe, kEnd, kDot}));
}

TEST(Generator, TokenLimitEndsWithLength) {
  Fixture f;
  auto s = f.session();
  GenerationRequest req;
  req.max_tokens = 3;
  auto r = s->generate(kOncePrompt, req);
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_FALSE(r.context_full);
  EXPECT_EQ(r.text, " upon a time");
  EXPECT_EQ(r.tokens.size(), 3u);

  auto s0 = f.session();
  req.max_tokens = 0;
  auto r0 = s0->generate(kOncePrompt, req);
  EXPECT_EQ(r0.finish_reason, "length");
  EXPECT_TRUE(r0.tokens.empty());
  EXPECT_EQ(r0.text, "");
}

TEST(Generator, StopStringIsNeverShownNorAnyBeginningOfIt) {
  Fixture f;
  for (const std::string stop : {"time", " the e", "e end", "."}) {
    auto s = f.session();
    Collected out;
    GenerationRequest req;
    req.stop = {"never", stop};
    auto r = s->generate(kOncePrompt, req, out.callback());
    const std::string full = " upon a time the end.";
    EXPECT_EQ(r.finish_reason, "stop") << stop;
    EXPECT_EQ(r.text, full.substr(0, full.find(stop))) << stop;
    EXPECT_EQ(out.joined(), r.text) << stop;
  }
}

TEST(Generator, AStopStringThatNeverCompletesIsReleasedAtTheEnd) {
  Fixture f;
  auto s = f.session();
  Collected out;
  GenerationRequest req;
  req.stop = {"end!"};  // " end" is held back as a possible beginning, then "." rules it out
  auto r = s->generate(kOncePrompt, req, out.callback());
  EXPECT_EQ(r.finish_reason, "eos");
  EXPECT_EQ(out.joined(), " upon a time the end.");
}

TEST(Generator, StreamsWholeUtf8CharactersOnly) {
  Fixture f;
  auto s = f.session();
  Collected out;
  auto r = s->generate(std::vector<int32_t>{kBos, kCaf}, {}, out.callback());
  EXPECT_EQ(r.finish_reason, "eos");
  EXPECT_EQ(r.text, "\xC3\xA9");
  // The two bytes of "é" come from two tokens but reach the caller as one piece.
  EXPECT_EQ(out.pieces, (std::vector<std::string>{"\xC3\xA9"}));

  // Cut after the first byte: the incomplete character becomes U+FFFD, not a stray byte.
  auto s2 = f.session();
  GenerationRequest req;
  req.max_tokens = 1;
  auto r2 = s2->generate(std::vector<int32_t>{kBos, kCaf}, req);
  EXPECT_EQ(r2.text, "\xEF\xBF\xBD");
}

TEST(Generator, FullContextEndsWithLength) {
  Fixture f;
  auto s = f.session(greedy(), /*n_ctx=*/6);
  auto r = s->generate(std::vector<int32_t>{kBos, kLoop}, {});
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_TRUE(r.context_full);
  EXPECT_EQ(r.tokens.size(), 5u);  // 2 prompt + 4 fed back = 6 positions, plus the last sample
  EXPECT_EQ(r.text, " la la la la la");
}

TEST(Generator, RejectsPromptsThatCannotRun) {
  Fixture f;
  auto s = f.session(greedy(), 4);
  EXPECT_THROW(s->generate(std::vector<int32_t>{}, {}), InputError);
  EXPECT_THROW(s->generate(std::vector<int32_t>{kBos, 99}, {}), InputError);
  EXPECT_THROW(s->generate(std::vector<int32_t>{kBos, kA, kA, kA, kA}, {}), InputError);
  EXPECT_EQ(s->backend().n_past(), 0);
}

TEST(Generator, ACallContinuesFromTheCache) {
  Fixture f;
  auto s = f.session();
  GenerationRequest req;
  req.max_tokens = 2;
  auto r1 = s->generate(kOncePrompt, req);
  EXPECT_EQ(r1.text, " upon a");
  // Feed the last sampled token ourselves: the chain continues where it left off.
  auto r2 = s->generate(std::vector<int32_t>{r1.tokens.back()}, req);
  EXPECT_EQ(r2.text, " time the");
  EXPECT_EQ(s->cached_tokens(), (std::vector<int32_t>{kBos, kOnce, kUpon, kA, kTime}));
  s->truncate(2);
  EXPECT_EQ(s->backend().n_past(), 2);
  auto r3 = s->generate(std::vector<int32_t>{kCaf}, {});
  EXPECT_EQ(r3.text, "\xC3\xA9");
}

TEST(Generator, SameSeedSameTextAtTemperature) {
  Fixture f;
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 9;
  GenerationRequest req;
  req.max_tokens = 6;
  auto a = f.session(p)->generate(kOncePrompt, req);
  auto b = f.session(p)->generate(kOncePrompt, req);
  EXPECT_EQ(a.tokens, b.tokens);
  // The margin is ~40 logits, so sampling at temperature 1 still follows the chain.
  EXPECT_EQ(a.text, " upon a time the end.");
}

}  // namespace
}  // namespace lockstep
