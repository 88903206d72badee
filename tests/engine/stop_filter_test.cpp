// StopFilter against a brute-force reference on random texts cut into random chunks.
#include "engine/stop_filter.h"

#include <gtest/gtest.h>

#include <random>

namespace lockstep {
namespace {

TEST(StopFilter, NeverShowsTheStopStringOrABeginningOfIt) {
  StopFilter f({"\nUser:"});
  std::string shown;
  shown += f.push("Hello");
  EXPECT_EQ(shown, "Hello");
  shown += f.push(" world\n");
  EXPECT_EQ(shown, "Hello world");  // "\n" might begin the stop string: held
  shown += f.push("Us");
  EXPECT_EQ(shown, "Hello world");
  shown += f.push("er: more");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.matched(), "\nUser:");
  EXPECT_EQ(shown, "Hello world");
  EXPECT_EQ(f.text(), "Hello world");
  EXPECT_EQ(f.push("ignored"), "");
}

TEST(StopFilter, HeldTextIsReleasedWhenItTurnsOutNotToBeAStop) {
  StopFilter f({"STOP"});
  std::string shown = f.push("a ST");
  EXPECT_EQ(shown, "a ");
  shown += f.push("ART");
  EXPECT_EQ(shown, "a START");
  shown += f.push(" S");
  EXPECT_EQ(shown, "a START ");
  shown += f.flush();  // generation ended for another reason
  EXPECT_EQ(shown, "a START S");
  EXPECT_FALSE(f.stopped());
}

TEST(StopFilter, NoStopStringsPassesEverything) {
  StopFilter f({"", ""});
  EXPECT_EQ(f.push("abc"), "abc");
  EXPECT_EQ(f.flush(), "");
}

TEST(StopFilter, MatchesABruteForceReferenceOnRandomChunks) {
  std::mt19937 rng(2024);
  auto rand_str = [&](size_t len) {
    std::string s;
    for (size_t i = 0; i < len; ++i) s += char('a' + rng() % 3);
    return s;
  };
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops;
    for (int k = 0, n = 1 + int(rng() % 3); k < n; ++k) stops.push_back(rand_str(1 + rng() % 4));
    std::vector<std::string> chunks;
    for (int k = 0, n = int(rng() % 12); k < n; ++k) chunks.push_back(rand_str(rng() % 4));

    // Reference: after each chunk, the earliest occurrence of any stop string in all the text so
    // far; the first chunk that creates one cuts the text there.
    std::string all, expected;
    bool expect_stop = false;
    for (const auto& c : chunks) {
      all += c;
      size_t cut = std::string::npos;
      for (const auto& s : stops) cut = std::min(cut, all.find(s));
      if (cut != std::string::npos) {
        expected = all.substr(0, cut);
        expect_stop = true;
        break;
      }
    }
    if (!expect_stop) expected = all;

    StopFilter f(stops);
    std::string shown;
    for (const auto& c : chunks) {
      shown += f.push(c);
      // What is shown is always a prefix of the final text and never contains a stop string.
      ASSERT_EQ(expected.compare(0, shown.size(), shown), 0) << "trial " << trial;
      for (const auto& s : stops) ASSERT_EQ(shown.find(s), std::string::npos) << "trial " << trial;
      if (f.stopped()) break;
    }
    EXPECT_EQ(f.stopped(), expect_stop) << "trial " << trial;
    if (!f.stopped()) shown += f.flush();
    EXPECT_EQ(shown, expected) << "trial " << trial;
    EXPECT_EQ(f.text(), expected) << "trial " << trial;
  }
}

}  // namespace
}  // namespace lockstep
