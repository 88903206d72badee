// The Jinja interpreter's pieces: lexer whitespace control, parser errors and bounds, evaluator
// limits against hostile templates, marks through string operations, Python's float repr.
// Rendering as a whole is compared with Python's jinja2 in jinja_oracle_test.py; the expected
// strings here are what jinja2 3.1 renders (checked by hand with it).
#include <gtest/gtest.h>

#include "tokenizer/jinja/lexer.h"
#include "tokenizer/jinja/template.h"

namespace lockstep::tokenizer::jinja {
namespace {

std::string render(const std::string& src, const Dict& vars = {}, const Limits& limits = {}) {
  return Template(src).render(vars, limits).text;
}

// The error a template fails with (empty when it renders).
std::string error_of(const std::string& src, const Dict& vars = {}, const Limits& limits = {}) {
  try {
    render(src, vars, limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> texts(const std::string& src) {
  std::vector<std::string> out;
  for (const Token& t : lex(src))
    if (t.type == Token::Type::kText) out.push_back(t.value);
  return out;
}

TEST(JinjaLexer, WhitespaceControl) {
  // "-" strips all whitespace on its side, newlines included.
  EXPECT_EQ(texts("a \n {%- if x -%} \n b"), (std::vector<std::string>{"a", "b"}));
  // trim_blocks: one newline after a block tag goes; lstrip_blocks: indentation before it.
  EXPECT_EQ(texts("a\n    {% if x %}\nb\n  {% endif %}\n\nc"),
            (std::vector<std::string>{"a\n", "b\n", "\nc"}));
  // Neither applies to {{ }}; "+" turns lstrip off.
  EXPECT_EQ(texts("  {{ x }}\n  {%+ if x %}y{% endif %}"),
            (std::vector<std::string>{"  ", "\n  ", "y"}));
  // Comments are dropped and trimmed like blocks.
  EXPECT_EQ(texts("a\n  {# note #}\nb"), (std::vector<std::string>{"a\n", "b"}));
}

TEST(JinjaLexer, NewlinesAndStrings) {
  // \r\n and \r read as \n; one trailing newline is dropped.
  EXPECT_EQ(texts("a\r\nb\rc\n"), (std::vector<std::string>{"a\nb\nc"}));
  const auto toks = lex("{{ 'it\\'s\\n\\u00e9\\x41' \"q\" 12 3.5 1e3 }}");
  ASSERT_GE(toks.size(), 7u);
  EXPECT_EQ(toks[1].type, Token::Type::kString);
  EXPECT_EQ(toks[1].value,
            "it's\n\xc3\xa9"
            "A");
  EXPECT_EQ(toks[2].value, "q");
  EXPECT_EQ(toks[3].int_value, 12);
  EXPECT_EQ(toks[4].float_value, 3.5);
  EXPECT_EQ(toks[5].float_value, 1000.0);
  // messages.0.content: after ".", an integer, not the float 0.
  const auto attr = lex("{{ m.0.c }}");
  EXPECT_EQ(attr[3].type, Token::Type::kInt);
  EXPECT_EQ(attr[4].value, ".");
}

TEST(JinjaLexer, MalformedTagsNameTheLine) {
  for (const char* src : {"a\n{{ x", "{{ 'abc }}", "x\n\n{# no end", "{{ x ) }}", "{{ $ }}"}) {
    try {
      lex(src);
      FAIL() << src;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("line ", 0), 0u) << e.what();
    }
  }
}

TEST(JinjaParser, ErrorsNameLineAndWhat) {
  EXPECT_EQ(error_of("a\n{% if x %}b"), "line 2: missing {% elif or else or endif %}");
  EXPECT_NE(error_of("{% for x in y %}{% endif %}").find("line 1"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 + }}").find("unexpected '}}'"), std::string::npos);
  EXPECT_NE(error_of("{% include 'x' %}").find("unsupported statement 'include'"),
            std::string::npos);
}

TEST(JinjaParser, NestingIsBounded) {
  // Operator chains, brackets and blocks deep enough to overflow a recursive parser or evaluator
  // are refused with an error.
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += " + 1";
  chain += " }}";
  EXPECT_NE(error_of(chain).find("too deep"), std::string::npos);
  const std::string parens = "{{ " + std::string(200, '(') + "1" + std::string(200, ')') + " }}";
  EXPECT_NE(error_of(parens).find("too deep"), std::string::npos);
  std::string blocks;
  for (int i = 0; i < 1000; ++i) blocks += "{% if true %}";
  EXPECT_NE(error_of(blocks).find("too deep"), std::string::npos);
  // Within the bounds, fine.
  std::string ok = "{{ 0";
  for (int i = 0; i < 100; ++i) ok += " + 1";
  EXPECT_EQ(render(ok + " }}"), "100");
}

TEST(JinjaEvaluator, HostileTemplatesEndInErrors) {
  Limits small;
  small.max_steps = 200000;
  small.max_output = 1 << 20;
  small.max_items = 100000;
  EXPECT_NE(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("too deep"),
            std::string::npos);
  EXPECT_NE(error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                     "{% endfor %}",
                     {}, small)
                .find("step limit"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'x' * 1000000000000 }}", {}, small).find("longer than"),
            std::string::npos);
  EXPECT_NE(error_of("{{ range(1000000000000) | length }}", {}, small).find("longer than"),
            std::string::npos);
  EXPECT_NE(error_of("{% for i in range(10000) %}{{ 'abcdefghij' * 1000 }}{% endfor %}", {}, small)
                .find("longer than"),
            std::string::npos);
  EXPECT_NE(
      error_of(
          "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
          "{% endfor %}",
          {}, small)
          .find("longer than"),
      std::string::npos);
  // A namespace holding itself: printing it is refused, and the cycle is freed (ASan builds).
  EXPECT_NE(error_of("{% set ns = namespace(a=1) %}{% set ns.self = ns %}{{ ns }}").find("nested"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 9223372036854775807 + 1 }}").find("overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ 2 ** 64 }}").find("overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 // 0 }}").find("zero"), std::string::npos);
  EXPECT_EQ(error_of("{{ x.y }}"), "line 1: 'x' is undefined");
  EXPECT_EQ(error_of("\n{{ raise_exception('bad ' ~ 1) }}"),
            "line 2: the template raised an error: bad 1");
}

TEST(JinjaEvaluator, ScopesAsJinja) {
  // set inside a loop stays in its iteration; namespace() attributes carry out; macros see the
  // variables of the scope they were defined in at call time.
  EXPECT_EQ(render("{% set x = 5 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}"
                   "{{ x }}"),
            "51525");
  EXPECT_EQ(render("{% for i in [1, 2, 3] %}{% if loop.first %}{% set y = 1 %}{% endif %}"
                   "[{{ y }}]{% endfor %}"),
            "[1][][]");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}"
                   "{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(render("{% macro m() %}{{ y }}{% endmacro %}{% set y = 3 %}{{ m() }}"), "3");
}

TEST(JinjaEvaluator, PythonValueFormatting) {
  EXPECT_EQ(
      render("{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }} {{ 123456789.125 }} {{ 2.0 }} {{ -0.5 }}"),
      "0.30000000000000004 1e+16 1e-05 123456789.125 2.0 -0.5");
  EXPECT_EQ(render("{{ [1, 'a', none, true, (2,)] }} {{ {'k': \"it's\"} }}"),
            "[1, 'a', None, True, (2,)] {'k': \"it's\"}");
  EXPECT_EQ(render("{{ {'a': [1, 2.5, none]} | tojson }}|{{ 'é\"' | tojson }}"),
            "{\"a\": [1, 2.5, null]}|\"é\\\"\"");
}

Dict chat_vars(const std::string& content) {
  Dict m = {{"role", Value::string(Str("user"))}, {"content", Value::string(Str::marked(content))}};
  return {{"messages", Value::make_list({Value::make_dict(std::move(m))})}};
}

// The marked ranges of a rendering, as the strings they cover.
std::vector<std::string> marked(const std::string& src, const std::string& content) {
  const Str out = Template(src).render(chat_vars(content));
  std::vector<std::string> parts;
  for (const Span& s : out.marks) parts.push_back(out.text.substr(s.begin, s.len));
  return parts;
}

TEST(JinjaMarks, FollowContentThroughStringOperations) {
  using V = std::vector<std::string>;
  // Concatenation and trim keep the exact range.
  EXPECT_EQ(marked("{{ '<' + messages[0].content | trim + '>' }}", "  hi <x>  "), V{"hi <x>"});
  EXPECT_EQ(marked("{% set c = messages[0].content %}{{ c.split('|')[1] }}-{{ c[1:3] }}", "ab|cd"),
            (V{"cd", "b|"}));
  // Template text is never marked, content always is, even when transformed.
  EXPECT_EQ(marked("{{ messages[0].content | upper }}", "abc"), V{"ABC"});
  EXPECT_EQ(marked("{{ messages[0].content[::-1] }}", "abc"), V{"cba"});
  EXPECT_EQ(marked("{{ 'lit' }}{{ messages[0].content | length }}", "abc"), V{});
  // Touching pieces of content merge into one range.
  EXPECT_EQ(marked("{% set p = messages[0].content.split(' ') %}{{ p[0] ~ ' ' ~ p[1] }}", "a b"),
            (V{"a", "b"}));
}

}  // namespace
}  // namespace lockstep::tokenizer::jinja
