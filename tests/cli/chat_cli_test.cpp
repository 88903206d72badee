// `lockstep chat` as a user drives it: the commands (/help, /clear, /exit), multi-line input, a
// full context that is reported and recovered from with /clear, Ctrl-C that stops an answer and
// Ctrl-C at the prompt that quits, and line editing with history at a terminal.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli/cli_models_util.h"
#include "cli/interactive_process_util.h"
#include "common/cli_process_util.h"

namespace lockstep::test {
namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

size_t count_of(const std::string& s, const std::string& part) {
  size_t n = 0;
  for (size_t at = s.find(part); at != std::string::npos; at = s.find(part, at + part.size())) ++n;
  return n;
}

// Prompt tokens fed per answered turn, from the "[N new prompt tok, ..." stderr lines.
std::vector<int> fed_per_turn(const std::string& err) {
  std::vector<int> fed;
  for (size_t at = err.find("new prompt tok"); at != std::string::npos;
       at = err.find("new prompt tok", at + 1)) {
    const size_t open = err.rfind('[', at);
    fed.push_back(std::stoi(err.substr(open + 1)));
  }
  return fed;
}

std::vector<std::string> chat_args(std::vector<std::string> extra) {
  std::vector<std::string> a = {"chat", "-m", chain_model_path(), "-t", "1", "--temp", "0"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST(ChatCommands, HelpClearAndMultiLineInput) {
  const auto r = run_lockstep(chat_args({"-c", "1024", "-n", "3"}),
                              "hello\n/help\n/clear\nhello\n/nope\n"
                              "first line \\\nsecond line\n"
                              "\"\"\"\nblock one\n\nblock two\n\"\"\"\n"
                              "\"\"\"one-line block\"\"\"\n/exit\nnever read\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"/help", "/clear", "/exit", "\"\"\""}) EXPECT_TRUE(contains(r.err, s)) << s;
  EXPECT_TRUE(contains(r.err, "new conversation")) << r.err;
  EXPECT_TRUE(contains(r.err, "unknown command /nope")) << r.err;
  // Turns: hello, hello (after /clear), the continued line, the block, the one-line block.
  const auto fed = fed_per_turn(r.err);
  ASSERT_EQ(fed.size(), 5u) << r.err;
  // /clear emptied the cache: the same first message is fed whole again.
  EXPECT_EQ(fed[1], fed[0]) << r.err;
  // Without /clear only the new turn is fed, not the whole conversation again.
  EXPECT_LT(fed[2], fed[0] + fed[1]) << r.err;
  EXPECT_EQ(count_of(r.out, "\n"), 5u) << r.out;  // one answer line per turn
  EXPECT_FALSE(contains(r.out, "commands")) << "help belongs on stderr";
}

TEST(ChatCommands, AFullContextIsReportedAndClearStartsOver) {
  // The chain vocabulary renders ChatML as many byte tokens: a 60-token context takes one short
  // exchange, cuts the answer, refuses the next message and recovers after /clear. The
  // reference needs no gate, whose probe would not fit.
  const auto r =
      run_lockstep(chat_args({"-c", "60", "--backend", "cpu-ref"}), "hi\nhi again\n/clear\nhi\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err,
                       "stopped: the context of 60 tokens is full; /clear starts a new "
                       "conversation"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "does not fit the context of 60 tokens; /clear")) << r.err;
  EXPECT_EQ(fed_per_turn(r.err).size(), 2u) << r.err;  // hi, and hi after /clear
}

TEST(ChatCommands, CtrlCStopsTheAnswerAndTheChatGoesOn) {
  // Random weights never end the answer: it would run until the 8192-token context is full
  // (seconds). Ctrl-C as soon as it starts streaming stops it.
  InteractiveRun chat({"chat", "-m", tiny_model_path(), "-t", "1", "--temp", "0", "-c", "8192",
                       "--backend", "cpu-ref"},
                      /*terminal=*/false);
  chat.write("tell me everything\n");
  ASSERT_TRUE(chat.wait_for_out(" ", 60000)) << chat.err();
  chat.interrupt();
  ASSERT_TRUE(chat.wait_for_err("stopped by Ctrl-C", 60000)) << chat.err();
  EXPECT_TRUE(contains(chat.err(), "| cancelled]")) << chat.err();
  EXPECT_FALSE(contains(chat.err(), "context of 8192 tokens is full")) << chat.err();
  // Back at the prompt: the next message is answered, and Ctrl-C stops that one too.
  const size_t err_mark = chat.err().size(), out_mark = chat.out().size();
  chat.write("/clear\nshort\n");
  ASSERT_TRUE(chat.wait_for_err("new conversation", 60000, err_mark)) << chat.err();
  ASSERT_TRUE(chat.wait_for_out(" ", 60000, out_mark)) << chat.out();
  chat.interrupt();
  ASSERT_TRUE(chat.wait_for_err("stopped by Ctrl-C", 60000, err_mark)) << chat.err();
  chat.close_stdin();
  EXPECT_EQ(chat.wait(60000), 0) << chat.err();
}

TEST(ChatTerminal, CtrlCAtThePromptQuitsWithZero) {
  InteractiveRun chat(chat_args({"-c", "1024", "-n", "3"}), /*terminal=*/true);
  ASSERT_TRUE(chat.wait_for_out("> ", 60000)) << chat.err();
  chat.interrupt();
  EXPECT_EQ(chat.wait(10000), 0) << chat.err();
}

TEST(ChatTerminal, CtrlCDuringAnAnswerReturnsToThePrompt) {
  // --ignore-eos: the answer runs until the context is full (seconds), so the Ctrl-C always
  // lands during it (the tiny model would otherwise end its answer within milliseconds).
  InteractiveRun chat({"chat", "-m", tiny_model_path(), "-t", "1", "--temp", "0", "-c", "8192",
                       "--backend", "cpu-ref", "--ignore-eos"},
                      /*terminal=*/true);
  ASSERT_TRUE(chat.wait_for_out("> ", 60000)) << chat.err();
  ASSERT_TRUE(chat.wait_for_line_editor(10000));
  chat.write("tell me everything\r");
  // The echoed line ends in "\r\n"; the answer streams after it.
  ASSERT_TRUE(chat.wait_for_out("everything\r\n", 10000)) << chat.out();
  const size_t answer_at = chat.out().size();
  // Well into the answer: the bytes right after the typed line may still be libedit's redisplay
  // of it (typed before libedit took the terminal), and Ctrl-C then would land at the prompt.
  ASSERT_TRUE(chat.wait_for_out_bytes(answer_at + 256, 60000)) << chat.out();
  chat.interrupt();
  ASSERT_TRUE(chat.wait_for_err("stopped by Ctrl-C", 60000)) << chat.err();
  ASSERT_TRUE(chat.wait_for_out("\r\n> ", 10000, answer_at)) << chat.out();  // the prompt again
  chat.interrupt();  // the second Ctrl-C quits
  EXPECT_EQ(chat.wait(10000), 0) << chat.err();
}

TEST(ChatTerminal, LineEditingAndHistory) {
#ifndef LOCKSTEP_HAVE_LIBEDIT
  GTEST_SKIP() << "skipped: built without libedit (scripts/install-deps.sh installs it)";
#endif
  InteractiveRun chat(chat_args({"-c", "1024", "-n", "3"}), /*terminal=*/true);
  ASSERT_TRUE(chat.wait_for_out("> ", 60000)) << chat.err();
  // Typed with a typo fixed by backspace, then recalled from history with the up arrow.
  ASSERT_TRUE(chat.wait_for_line_editor(10000));
  chat.write("helo\x7flo\r");
  ASSERT_TRUE(chat.wait_for_err("new prompt tok", 60000)) << chat.err();
  const size_t err_mark = chat.err().size();
  ASSERT_TRUE(chat.wait_for_out("> ", 10000, chat.out().find("> ") + 2)) << chat.out();
  ASSERT_TRUE(chat.wait_for_line_editor(10000));
  chat.write("\x1b[A\r");
  ASSERT_TRUE(chat.wait_for_err("new prompt tok", 60000, err_mark)) << chat.err();
  ASSERT_TRUE(chat.wait_for_line_editor(10000));
  chat.write("/exit\r");
  ASSERT_EQ(chat.wait(10000), 0) << chat.err();
  const auto fed = fed_per_turn(chat.err());
  ASSERT_EQ(fed.size(), 2u) << chat.err();
  // The up arrow redrew the prompt with the recalled "hello" (not the escape sequence as text);
  // the editor, not the terminal, echoed the typing (a plain read would show "helo^?lo").
  EXPECT_TRUE(contains(chat.out(), "\r> hello\r\n")) << ::testing::PrintToString(chat.out());
  EXPECT_FALSE(contains(chat.out(), "^[[A")) << chat.out();
  EXPECT_FALSE(contains(chat.out(), "^?")) << chat.out();
}

}  // namespace
}  // namespace lockstep::test
