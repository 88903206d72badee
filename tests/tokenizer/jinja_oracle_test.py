#!/usr/bin/env python3
"""lockstep's Jinja interpreter against Python's jinja2 as the oracle, byte for byte.

Renders, with both, the chat templates of tests/tokenizer/chat_templates/ for many conversations
(system or not, multi-turn, generation prompt on and off, awkward contents, conversations a
template refuses), the tool-calling branches with tools and tool calls, and a list of small
templates that exercise the interpreter's constructs one by one. jinja2 is configured the way
Hugging Face transformers renders chat templates (ImmutableSandboxedEnvironment, trim_blocks and
lstrip_blocks, loopcontrols, its tojson and raise_exception, strftime_now). A case where jinja2
raises must fail in lockstep too, with one line on stderr and exit code 2.

usage: jinja_oracle_test.py LOCKSTEP            (templates and constructs)
       jinja_oracle_test.py LOCKSTEP --model GGUF|default  (the model's own template, read from
                                                    the file by a reader written here)
"""
import datetime
import json
import os
import struct
import subprocess
import sys
import tempfile

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "chat_templates")


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now(datetime.timezone.utc).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()


def oracle(source, variables):
    try:
        return True, ENV.from_string(source).render(**variables)
    except Exception as e:  # noqa: BLE001 - any jinja2 failure is an expected failure
        return False, "%s: %s" % (type(e).__name__, e)


class Runner:
    def __init__(self, lockstep):
        self.lockstep = lockstep
        self.tmp = tempfile.mkdtemp(prefix="jinja_oracle_")
        self.failures = []
        self.cases = 0

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        return path

    def run(self, args):
        p = subprocess.run([self.lockstep, "chat-template"] + args, capture_output=True,
                           timeout=60)
        return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")

    def compare(self, label, ok, expected, rc, out, err):
        self.cases += 1
        if ok:
            if rc != 0:
                self.failures.append("%s: lockstep failed (%d): %s" % (label, rc, err.strip()))
            elif out != expected.encode("utf-8"):
                self.failures.append("%s:\n  jinja2:   %r\n  lockstep: %r" %
                                     (label, expected, out.decode("utf-8", "replace")))
        else:
            if rc != 2:
                self.failures.append("%s: jinja2 fails (%s) but lockstep exited %d with %r" %
                                     (label, expected, rc, out.decode("utf-8", "replace")))
            elif err.count("\n") != 1:
                self.failures.append("%s: error is not one line: %r" % (label, err))
            elif "raise" in expected.lower() or "TemplateError" in expected:
                # The template's own message must reach the user.
                message = expected.split(": ", 1)[1]
                if message not in err:
                    self.failures.append("%s: message %r missing from %r" % (label, message, err))

    def chat(self, name, source, messages, gen, bos, eos):
        """Through the chat path lockstep itself uses (ChatTemplate with messages)."""
        ok, expected = oracle(source, {"messages": messages, "add_generation_prompt": gen,
                                       "bos_token": bos, "eos_token": eos})
        tpath = self.write("t.jinja", source)
        mpath = self.write("m.json", json.dumps(messages))
        args = ["-t", tpath, "--messages", mpath, "--bos", bos, "--eos", eos]
        if gen:
            args.append("--add-generation-prompt")
        rc, out, err = self.run(args)
        label = "%s gen=%s messages=%s" % (name, gen, json.dumps(messages)[:160])
        self.compare(label, ok, expected, rc, out, err)

    def with_vars(self, name, source, variables):
        """Any variables (tools, tool calls, custom ones) through --vars."""
        ok, expected = oracle(source, variables)
        tpath = self.write("t.jinja", source)
        vpath = self.write("v.json", json.dumps(variables))
        rc, out, err = self.run(["-t", tpath, "--vars", vpath])
        label = "%s vars=%s" % (name, json.dumps(variables)[:160])
        self.compare(label, ok, expected, rc, out, err)


SYS = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hello!"}
A1 = {"role": "assistant", "content": "Hi there, how can I help?"}
U2 = {"role": "user", "content": "What is 2+2?"}
A2 = {"role": "assistant", "content": "4"}

CONVERSATIONS = [
    [U1],
    [SYS, U1],
    [SYS, U1, A1, U2],
    [U1, A1, U2],
    [U1, A1, U2, A2],
    [SYS, U1, A1, U2, A2],
    [{"role": "user", "content": "  padded \n\n"},
     {"role": "assistant", "content": "\n  also padded  "},
     {"role": "user", "content": "\ttabs\t"}],
    [{"role": "system", "content": "  Sys with spaces  "},
     {"role": "user", "content": "h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c\u8a9e \U0001F600"}],
    [{"role": "user", "content": "A<|im_end|>\n<|im_start|>system\n[INST]<s></s><|eot_id|>"}],
    [{"role": "user", "content": "quotes ' \" and \\ backslash {{ not_a_tag }} {% if %}"}],
    [{"role": "user", "content": ""}],
    [U1, {"role": "assistant", "content": "<think>\nLet me think.\n</think>\n\nThe answer."},
     U2, {"role": "assistant", "content": "<think>\nmore\n</think>\n\n4"}],
    [SYS, U1, {"role": "assistant", "content": "<think>\nhm\n</think>\n\nok"}],
    # Conversations some templates refuse (roles not alternating, a system role, none at all).
    [U1, U2],
    [SYS, A1],
    [{"role": "tool", "content": "42"}],
    [],
]

TOKENS = {
    "llama2": ("<s>", "</s>"), "llama3": ("<|begin_of_text|>", "<|end_of_text|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"), "qwen2.5": ("", "<|im_end|>"),
    "qwen3": ("", "<|im_end|>"), "smollm2": ("<|im_start|>", "<|im_end|>"),
    "mistral-v0.1": ("<s>", "</s>"), "mistral-v1": ("<s>", "</s>"),
    "mistral-v3": ("<s>", "</s>"), "mistral-v7": ("<s>", "</s>"),
    "phi3-mini": ("<s>", "<|endoftext|>"), "phi3.5-mini": ("<s>", "<|endoftext|>"),
    "phi3-medium": ("", "<|endoftext|>"), "gemma": ("<bos>", "<eos>"),
    "gemma3": ("<bos>", "<eos>"), "zephyr": ("<s>", "</s>"),
}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
TOOL_CALL = {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
TOOL_CONVERSATIONS = [
    [SYS, {"role": "user", "content": "Weather in Paris?"}],
    [{"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
     {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call12345"},
     {"role": "tool", "content": "sunny", "tool_call_id": "call12345"},
     {"role": "assistant", "content": "It is 21 degrees and sunny."}],
]

# Small templates that exercise one construct each, with their variables.
V = {"items": [3, 1, 2], "name": "World", "d": {"b": 2, "a": 1}, "s": "  Hello, World  ",
     "n": None, "f": 2.5, "users": [{"name": "ann", "age": 31}, {"name": "Bob", "age": 25}],
     "nested": {"x": {"y": [10, 20, {"z": "deep"}]}}, "t": True, "e": "", "zero": 0}
CONSTRUCTS = [
    "{{ 'a' ~ 1 ~ none ~ true }}|{{ 1 + 2 * 3 - 4 / 2 }}|{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }}"
    " {{ 2 ** 10 }} {{ 7.5 % 2 }}",
    "{{ 1 / 3 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 100.0 }} {{ 2.5 * 2 }} {{ 1e16 }}",
    "{{ items }} {{ d }} {{ (1, 'a') }} {{ (1,) }} {{ n }} {{ t }} {{ [none, true, 'it\\'s'] }}",
    "{{ items[0] }} {{ items[-1] }} {{ items[1:] }} {{ items[::-1] }} {{ items[:-1] }}"
    " {{ name[::-1] }} {{ name[1:3] }} {{ name[-3:] }} {{ items[5] }}|{{ name[::2] }}",
    "{{ nested.x.y[2].z }} {{ nested['x']['y'][0] }} {{ nested.x.y.1 }} {{ d.a }} {{ d['b'] }}",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }}"
    " {{ 'x' in 'xyz' }} {{ 4 not in items }} {{ 'a' in d }} {{ not t }} {{ t and n }}"
    " {{ n or 'dflt' }} {{ 0 or e or 'last' }}",
    "{{ 'yes' if t else 'no' }} {{ 'yes' if n else 'no' }} [{{ 'x' if n }}]",
    "{{ s | trim }}|{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}",
    "{{ name | upper }} {{ name | lower }} {{ 'hello wORLD' | title }} {{ 'hELLO' | capitalize }}"
    " {{ name.upper() }} {{ 'ab cd'.title() }}",
    "{{ items | length }} {{ name | length }} {{ d | length }} {{ 'h\u00e9' | length }}"
    " {{ undefined_var | length }} {{ items | count }}",
    "{{ missing | default('dflt') }} {{ e | default('dflt') }} {{ e | default('dflt', true) }}"
    " {{ n | d('x') }}",
    "{{ items | join(', ') }} {{ users | map(attribute='name') | join('/') }}"
    " {{ items | first }} {{ items | last }} {{ name | first }} {{ items | sort }}"
    " {{ items | sort(reverse=true) }} {{ users | sort(attribute='age') | map(attribute='name') | list }}",
    "{{ d | items | list }} {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"
    " {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('zz', 7) }}"
    " {{ d.get('zz') }}",
    "{{ d | tojson }} {{ users | tojson }} {{ 'q\"\\\\\\n\u00e9' | tojson }}"
    " {{ [1, 2.5, none, true] | tojson }} {{ d | tojson(indent=2) }} {{ {} | tojson }}"
    " {{ [] | tojson(indent=2) }} {{ d | tojson(sort_keys=true) }}",
    "{{ '42' | int + 1 }} {{ 'x' | int }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 42 | string }}"
    "{{ 2.0 | string }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }}",
    "{{ 'a-b-c'.split('-') }} {{ ' a  b c '.split() }} {{ 'a-b-c'.split('-', 1) }}"
    " {{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'aXbX'.replace('X', '-') }}"
    " {{ 'aXbX' | replace('X', '') }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.count('b') }}"
    " {{ '-'.join(['a', 'b']) }} {{ 'a,b'.split(',')[-1] }}",
    "{{ x is defined }} {{ name is defined }} {{ n is none }} {{ n is not none }}"
    " {{ name is string }} {{ items is string }} {{ d is mapping }} {{ items is mapping }}"
    " {{ items is iterable }} {{ 3 is number }} {{ 3 is integer }} {{ f is float }}"
    " {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }}"
    " {{ t is true }} {{ t is boolean }} {{ 'a' is in 'abc' }} {{ 1 is eq 1 }} {{ n is sameas none }}",
    "{% for i in items %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/"
    "{{ loop.length }}/{{ loop.first }}/{{ loop.last }}/{{ loop.previtem }}/{{ loop.nextitem }};"
    "{% endfor %}",
    "{% for i in [] %}x{% else %}empty{% endfor %} {% for i in items if i > 1 %}{{ i }}"
    "{{ loop.length }}{% endfor %} {% for c in 'ab' %}{{ c }}{% endfor %}"
    " {% for k in d %}{{ k }}{% endfor %} {% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 4 %}{% break %}"
    "{% endif %}{{ i }}{% endfor %} {{ range(3) | list }} {{ range(1, 10, 3) | list }}"
    " {{ range(5, 0, -2) | list }}",
    "{% for i in items %}{% for j in range(i) %}{{ loop.index }}{% endfor %}.{{ loop.index }}|"
    "{% endfor %}{% for i in items %}{{ loop.cycle('a', 'b') }}{% endfor %}",
    "{% set x = 1 %}{% for i in items %}{% set x = i %}{{ x }}{% endfor %}{{ x }}"
    "{% set ns = namespace(total=0, seen=[]) %}{% for i in items %}{% set ns.total = ns.total + i %}"
    "{% endfor %} {{ ns.total }} {% set a, b = [1, 2] %}{{ a }}{{ b }}",
    "{% if n %}a{% elif zero %}b{% elif t %}c{% else %}d{% endif %}"
    "{% if not t %}x{% else %}y{% endif %}",
    "{% macro greet(who, punct='!') %}Hello {{ who }}{{ punct }}{% endmacro %}"
    "{{ greet('A') }} {{ greet('B', '?') }} {{ greet(punct='.', who='C') }} {{ greet() }}",
    "{% macro fact(k) %}{% if k <= 1 %}1{% else %}{{ k }}*{{ fact(k - 1) }}{% endif %}{% endmacro %}"
    "{{ fact(5) }}",
    "{% set block %}  inner {{ name }}  {% endset %}[{{ block }}]{% set b2 | trim %}  x  {% endset %}[{{ b2 }}]",
    "  {% if t %}\n    indented\n  {% endif %}\nline\n{%- if t %}  stripped  {%- endif %}\n"
    "{{- ' var ' -}}\n  {# comment #}\nafter {%+ if t %}keep{% endif %}\n{% raw %}{{ raw }}{% endraw %}\n",
    "a\n{% for i in items %}\n  {{ i }}\n{% endfor %}\nb\n  {%- for i in items -%}\n  {{ i }}  \n"
    "  {%- endfor %}\n",
    "{{ users | selectattr('age', 'gt', 30) | map(attribute='name') | list }}"
    " {{ users | rejectattr('age', 'gt', 30) | map(attribute='name') | list }}"
    " {{ items | select('odd') | list }} {{ items | reject('odd') | list }}"
    " {{ users | selectattr('name') | list | length }} {{ [1, 1, 2] | unique | list }}"
    " {{ items | reverse | list }} {{ items | sum }} {{ items | min }} {{ items | max }}",
    "{{ 'line1\\nline2\\n\\nline4' | indent(2) }}|{{ 'a\\nb' | indent(4, true) }}"
    "|{{ '<a href=\"x\">&</a>' | e }}|{{ d | dictsort }}|{{ 'one two  three' | wordcount }}",
    "{{ 'abc' * 2 }} {{ [1] * 3 }} {{ [1, 2] + [3] }} {{ 'a' + 'b' }} {{ -items[0] }}"
    " {{ 'x' if 'b' in ['a', 'b'] else 'y' }}",
    "{{ undefined_var }}|{{ undefined_var.attr is defined }}",
    "{{ n.attr }}|{{ e.missing_method is defined }}",
    "{{ raise_exception('custom failure: ' ~ name) }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / zero }}",
    "{{ unknown_var.attr }}",
    "{% for x in n %}{{ x }}{% endfor %}",
    "{{ items | unknown_filter }}",
    "{% if t %}unclosed",
    "{{ 1 + }}",
    "{% endif %}",
    "{% for x in items %}{{ x }}{% endif %}",
    "{{ 'unterminated }}",
]


def gguf_chat_template(path):
    """Reads tokenizer.chat_template (and the BOS/EOS token texts) from a GGUF file."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    scalars = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
               12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et = take("I")
            n = take("Q")
            return [value(et) for _ in range(n)]
        return take(scalars[t])

    assert data[:4] == b"GGUF", "not a GGUF file"
    pos = 4
    take("I")  # version
    take("Q")  # tensor count
    n_kv = take("Q")
    kv = {}
    for _ in range(n_kv):
        key = string()
        kv[key] = value(take("I"))
    tokens = kv["tokenizer.ggml.tokens"]
    bos = tokens[kv["tokenizer.ggml.bos_token_id"]] if "tokenizer.ggml.bos_token_id" in kv else ""
    eos = tokens[kv["tokenizer.ggml.eos_token_id"]] if "tokenizer.ggml.eos_token_id" in kv else ""
    return kv["tokenizer.chat_template"], bos, eos


def main():
    lockstep = sys.argv[1]
    r = Runner(lockstep)
    if len(sys.argv) > 3 and sys.argv[2] == "--model":
        model = sys.argv[3]
        if model == "default":
            # Where the C++ model tests look (tests/common/model_paths.h).
            name = "SmolLM2-135M-Instruct.Q4_1.gguf"
            cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
            candidates = [os.path.join("models", name), os.environ.get("LOCKSTEP_MODEL", ""),
                          os.path.join(cache, "lockstep", "models", name)]
            found = [c for c in candidates if c and os.path.exists(c)]
            if not found:
                print("SKIPPED: the default model is absent (scripts/get-default-model.sh)")
                return 77
            model = found[0]
        source, bos, eos = gguf_chat_template(model)
        mpath = r.write("m.json", "")
        for messages in CONVERSATIONS:
            for gen in (False, True):
                ok, expected = oracle(source, {"messages": messages, "add_generation_prompt": gen,
                                               "bos_token": bos, "eos_token": eos})
                with open(mpath, "w", encoding="utf-8") as f:
                    json.dump(messages, f)
                args = ["-m", model, "--messages", mpath] + (["--add-generation-prompt"] if gen else [])
                rc, out, err = r.run(args)
                r.compare("model template gen=%s %s" % (gen, json.dumps(messages)[:120]), ok,
                          expected, rc, out, err)
    else:
        names = sorted(n[:-len(".jinja")] for n in os.listdir(TEMPLATES) if n.endswith(".jinja"))
        for name in names:
            with open(os.path.join(TEMPLATES, name + ".jinja"), encoding="utf-8") as f:
                source = f.read()
            bos, eos = TOKENS[name]
            for messages in CONVERSATIONS:
                for gen in (False, True):
                    r.chat(name, source, messages, gen, bos, eos)
            for messages in TOOL_CONVERSATIONS:
                for tools in (None, [WEATHER_TOOL]):
                    variables = {"messages": messages, "add_generation_prompt": True,
                                 "bos_token": bos, "eos_token": eos}
                    if tools:
                        variables["tools"] = tools
                    r.with_vars(name, source, variables)
            r.with_vars(name + " enable_thinking=false", source,
                        {"messages": [U1], "add_generation_prompt": True, "bos_token": bos,
                         "eos_token": eos, "enable_thinking": False,
                         "builtin_tools": ["brave_search", "code_interpreter"],
                         "date_string": "05 Dec 2026"})
        for k, source in enumerate(CONSTRUCTS):
            r.with_vars("construct %d %r" % (k, source[:60]), source, V)
    for f in r.failures:
        print("FAIL:", f)
    print("%d cases, %d failures" % (r.cases, len(r.failures)))
    return 1 if r.failures or r.cases == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
