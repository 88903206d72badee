// The qa heuristics on hand-written answers: what a healthy model says passes, the failure modes a
// broken backend produces (the "ampiezza" kind of output, repeated words, stray specials) fail.
#include <gtest/gtest.h>

#include "engine/qa.h"

namespace lockstep {
namespace {

TEST(QaHeuristics, Greetings) {
  EXPECT_TRUE(looks_like_greeting("Hello! How can I assist you today?"));
  EXPECT_TRUE(looks_like_greeting("Hi there."));
  EXPECT_TRUE(looks_like_greeting("Hey, nice to see you"));
  EXPECT_FALSE(looks_like_greeting("The capital of France is Paris."));
  EXPECT_FALSE(looks_like_greeting("ampiezza ampiezza"));
}

TEST(QaHeuristics, Gibberish) {
  std::string why;
  EXPECT_FALSE(looks_like_gibberish("The answer to this classic math problem is 4.", &why)) << why;
  EXPECT_FALSE(looks_like_gibberish("2 + 2 = 4", &why)) << why;
  EXPECT_TRUE(looks_like_gibberish("ampiezza ampiezza ampiezza ampiezza ampiezza ampiezza", &why));
  EXPECT_NE(why.find("ampiezza"), std::string::npos);
  EXPECT_TRUE(looks_like_gibberish("}}{{%%##@@!!))((**&&^^%%$$##@@!!~~``", &why));
  EXPECT_TRUE(looks_like_gibberish("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &why));
  EXPECT_TRUE(looks_like_gibberish("   \n", &why));
  EXPECT_FALSE(looks_like_gibberish("Привет! Как я могу помочь?", &why)) << why;
}

}  // namespace
}  // namespace lockstep
