#include <gtest/gtest.h>

#include "gguf/gguf_reader.h"

using lockstep::gguf::GgufFile;

TEST(GgufReaderShared, ReadsStories260K) {
  auto f = GgufFile::open("../shared/models/stories260K.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture").value(), "llama");
  EXPECT_NE(f.find_tensor("token_embd.weight"), nullptr);
}
