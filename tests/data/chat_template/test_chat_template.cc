// Chat template engine: every golden row of chat_render.jsonl byte for byte (library and CLI),
// plus unit tests of the jinja2 / Python semantics the goldens depend on.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

namespace {

using ojson = nlohmann::ordered_json;

std::vector<ojson> golden_rows() {
  std::ifstream in(gt::test::data("assets/golden/chat_render.jsonl"), std::ios::binary);
  std::vector<ojson> rows;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(ojson::parse(line));
  return rows;
}

// Renders `src` with the variables of `vars_json` (a JSON object, passed as `extra`).
std::string render(const std::string& src, const std::string& vars_json = "{}", const std::string& messages = "[]",
                   bool add_generation_prompt = false) {
  const gt::ChatTemplate t = gt::ChatTemplate::from_string(src, "unit.jinja");
  return t.render(ojson::parse(messages), add_generation_prompt, ojson::parse(vars_json), "<bos>", "<eos>");
}

std::string render_error(const std::string& src, const std::string& vars_json = "{}") {
  try {
    render(src, vars_json);
  } catch (const gt::Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

// ------------------------------------------------------------------------------ goldens

TEST(ChatTemplateGolden, AllRows) {
  const std::vector<ojson> rows = golden_rows();
  ASSERT_EQ(rows.size(), 69u);
  std::map<std::string, gt::ChatTemplate> templates;
  int passed = 0;
  for (const ojson& row : rows) {
    const std::string id = row["id"].get<std::string>();
    const std::string name = row["template"].get<std::string>();
    if (!templates.count(name))
      templates.emplace(name, gt::ChatTemplate::from_string(gt::read_file(gt::test::data("assets/" + name)), name));
    const gt::ChatTemplate& t = templates.at(name);
    const ojson extra = row.contains("extra") ? row["extra"] : ojson::object();
    try {
      const std::string got = t.render(row["messages"], row["add_generation_prompt"].get<bool>(), extra,
                                       row["bos_token"].get<std::string>(), row["eos_token"].get<std::string>());
      if (row.contains("expected_error")) {
        ADD_FAILURE() << id << ": expected error '" << row["expected_error"].get<std::string>() << "', got\n" << got;
      } else if (got != row["expected"].get<std::string>()) {
        ADD_FAILURE() << id << ": mismatch\n--- got ---\n"
                      << got << "\n--- expected ---\n"
                      << row["expected"].get<std::string>();
      } else {
        ++passed;
      }
    } catch (const gt::Error& e) {
      if (row.contains("expected_error") && contains(e.what(), row["expected_error"].get<std::string>())) {
        ++passed;
      } else {
        ADD_FAILURE() << id << ": error: " << e.what();
      }
    }
  }
  EXPECT_EQ(passed, 69);
}

TEST(ChatTemplateGolden, ErrorsNameTemplateAndLine) {
  for (const ojson& row : golden_rows()) {
    if (!row.contains("expected_error")) continue;
    const std::string name = row["template"].get<std::string>();
    const gt::ChatTemplate t = gt::ChatTemplate::from_string(gt::read_file(gt::test::data("assets/" + name)), name);
    try {
      t.render(row["messages"], row["add_generation_prompt"].get<bool>(), row.value("extra", ojson::object()),
               row["bos_token"].get<std::string>(), row["eos_token"].get<std::string>());
      ADD_FAILURE() << row["id"] << ": no error";
    } catch (const gt::Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(name + ":", 0), 0u) << e.what();
    }
  }
}

TEST(ChatTemplateGolden, CliRendersEveryRow) {
  const std::string cmd = gt::test::binary() + " template render --cases '" +
                          gt::test::data("assets/golden/chat_render.jsonl") + "' --assets '" +
                          gt::test::data("assets") + "' 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0);
  const std::vector<ojson> rows = golden_rows();
  size_t k = 0, start = 0;
  for (size_t nl = out.find('\n'); nl != std::string::npos; start = nl + 1, nl = out.find('\n', start), ++k) {
    ASSERT_LT(k, rows.size());
    const ojson got = ojson::parse(out.substr(start, nl - start));
    const ojson& row = rows[k];
    EXPECT_EQ(got["id"], row["id"]);
    if (row.contains("expected_error")) {
      ASSERT_TRUE(got["got"].is_object()) << row["id"];
      EXPECT_TRUE(contains(got["got"]["error"].get<std::string>(), row["expected_error"].get<std::string>()));
    } else {
      EXPECT_EQ(got["got"], row["expected"]) << row["id"];
    }
  }
  EXPECT_EQ(k, rows.size());
}

// ------------------------------------------------------------------------------ Python printing

TEST(ChatTemplate, FloatsPrintLikePythonRepr) {
  EXPECT_EQ(render("{{ a }} {{ b }} {{ c }} {{ d }} {{ e }} {{ f }}",
                   R"({"a": 5.0, "b": 0.25, "c": 1e-05, "d": 1e+16, "e": -0.0, "f": 1234567.0})"),
            "5.0 0.25 1e-05 1e+16 -0.0 1234567.0");
  EXPECT_EQ(render("{{ 0.1 + 0.2 }} {{ 1e22 }} {{ 0.0001 }} {{ 1e15 }} {{ 1/3 }} {{ 10/5 }} {{ 2.5e-7 }}"),
            "0.30000000000000004 1e+22 0.0001 1000000000000000.0 0.3333333333333333 2.0 2.5e-07");
  EXPECT_EQ(render("{{ x }} {{ x|tojson }}", R"({"x": [1, 1.0, 1.5e300]})"), "[1, 1.0, 1.5e+300] [1, 1.0, 1.5e+300]");
}

TEST(ChatTemplate, IntsFloatsNoneAndBooleans) {
  EXPECT_EQ(render("{{ a }} {{ b }} {{ n }} {{ t }} {{ f }} {{ a is integer }} {{ b is float }} {{ t is number }}",
                   R"({"a": 5, "b": 5.0, "n": null, "t": true, "f": false})"),
            "5 5.0 None True False True True True");
  EXPECT_EQ(render("{{ [none, true, 'a', {'k': 1}] }} {{ (1,) }}"), "[None, True, 'a', {'k': 1}] (1,)");
  EXPECT_EQ(render("{{ [\"it's\", 'x\\ny'] }}"), "[\"it's\", 'x\\ny']");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 'ab' * 2 }}"),
            "3 -4 2 3.5 1024 0.5 abab");
}

TEST(ChatTemplate, TrimIsPythonStrip) {
  // Stripped: \t \n \v \f \r, U+001C..U+001F, space, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028,
  // U+2029, U+202F, U+205F, U+3000. Kept: U+200B, U+FEFF, U+180E, U+2060.
  const std::string ws =
      "\\t\\n\\u000b\\f\\r\\u001c\\u001d\\u001e\\u001f "
      "\\u0085\\u00a0\\u1680\\u2000\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
  EXPECT_EQ(render("[{{ s|trim }}]", "{\"s\": \"" + ws + "x y" + ws + "\"}"), "[x y]");
  for (const char* kept : {"\\u200b", "\\ufeff", "\\u180e", "\\u2060"}) {
    const std::string got = render("{{ s|trim|length }}", std::string("{\"s\": \"") + kept + " x " + kept + "\"}");
    EXPECT_EQ(got, "5") << kept;
  }
  EXPECT_EQ(render("{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxaxx'|trim('x') }}", R"({"s": " a "})"),
            "a|a | a|a");
}

TEST(ChatTemplate, UpperLowerAreUnicodeAware) {
  EXPECT_EQ(render("{{ s|upper }}|{{ s|lower }}|{{ s.title() }}|{{ 'ǆemal'|capitalize }}", R"({"s": "straße éΣ"})"),
            "STRASSE ÉΣ|straße éς|Straße Éς|ǅemal");
}

TEST(ChatTemplate, OrAndReturnOperands) {
  EXPECT_EQ(render("{{ none or 'x' }}|{{ 'a' or 'b' }}|{{ [] or {} }}|{{ 0 and 1 }}|{{ 'a' and [1] }}|{{ u or 3 }}"),
            "x|a|{}|0|[1]|3");
  EXPECT_EQ(render("{{ name or 'unknown' }}", R"({"name": null})"), "unknown");
  EXPECT_EQ(render("{{ not none }} {{ not 'a' }}"), "True False");
}

TEST(ChatTemplate, Comparisons) {
  EXPECT_EQ(
      render("{{ 1 == 1.0 }} {{ 1 == true }} {{ 1 < 2 < 3 }} {{ 'a' in 'cat' }} {{ 2 not in [1] }} {{ 'k' in d }}",
             R"({"d": {"k": 1}})"),
      "True True True True True True");
  EXPECT_TRUE(contains(render_error("{{ 'a' < 1 }}"), "'<' not supported between instances of 'str' and 'int'"));
}

// ------------------------------------------------------------------------------ statements

TEST(ChatTemplate, LoopVariables) {
  EXPECT_EQ(render("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
                   "{{ loop.first|int }}{{ loop.last|int }}{{ loop.length }}{{ loop.previtem or '-' }}"
                   "{{ loop.nextitem or '-' }}{{ loop.cycle('x', 'y') }} {% endfor %}"),
            "1032103-bx 2121003acy 3210013b-x ");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}"),
            "2:1/2 4:2/2 ");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}"
                   "{% endif %}{{ x }}{% endfor %}"),
            "13");
  EXPECT_EQ(render("{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}", R"({"d": {"b": 2, "a": 1}})"),
            "a=1;b=2;");
  EXPECT_EQ(render("{% for x in [[1, [2]], 3] recursive %}{% if x is iterable %}[{{ loop(x) }}]{% else %}{{ x }}"
                   "@{{ loop.depth }}{% endif %}{% endfor %}"),
            "[1@2[2@3]]3@1");
}

TEST(ChatTemplate, ScopingAndNamespace) {
  // `set` inside a loop does not leak; namespace attributes do.
  EXPECT_EQ(render("{% set x = 0 %}{% set ns = namespace(x=0) %}{% for i in [1, 2] %}{% set x = x + i %}"
                   "{% set ns.x = ns.x + i %}{% endfor %}{{ x }} {{ ns.x }}"),
            "0 3");
  EXPECT_EQ(render("{% if true %}{% set y = 1 %}{% endif %}{{ y }}"), "1");
  EXPECT_EQ(render("{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns['a'] }}"), "121");
  EXPECT_TRUE(contains(render_error("{% set d = {} %}{% set d.x = 1 %}"), "non-namespace"));
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}"), "12");
  EXPECT_EQ(render("{% set s %}x{{ 1 + 1 }}{% endset %}[{{ s }}]{% set u | upper %}abc{% endset %}{{ u }}"), "[x2]ABC");
  EXPECT_EQ(render("{% with a = 5 %}{{ a }}{% endwith %}{{ a is defined }}"), "5False");
  EXPECT_EQ(render("{% filter upper %}hi {{ 'there' }}{% endfilter %}"), "HI THERE");
}

TEST(ChatTemplate, Macros) {
  EXPECT_EQ(render("{% macro m(a, b=2, c='z') %}{{ a }}-{{ b }}-{{ c }}{% endmacro %}{{ m(1) }}|{{ m(1, 3) }}|"
                   "{{ m(1, c='q') }}|{{ m(b=0, a=9) }}"),
            "1-2-z|1-3-z|1-2-q|9-0-z");
  // Macros may call macros defined later, and recursion works.
  EXPECT_EQ(render("{% macro a(n) %}{% if n %}{{ n }}{{ b(n - 1) }}{% endif %}{% endmacro %}"
                   "{% macro b(n) %}{{ a(n) }}{% endmacro %}{{ a(3) }}"),
            "321");
  EXPECT_EQ(render("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}"), "<in>");
  EXPECT_EQ(render("{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, k=2) }}"), "(1,){'k': 2}");
  EXPECT_TRUE(contains(render_error("{% macro m(a) %}{% endmacro %}{{ m(1, z=2) }}"), "no keyword argument 'z'"));
}

TEST(ChatTemplate, SlicingAndSubscripts) {
  EXPECT_EQ(render("{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[-1] }} {{ l[10] is defined }}",
                   R"({"l": [1, 2, 3]})"),
            "[2, 3] [1, 2] [3, 2, 1] [1, 3] 3 False");
  EXPECT_EQ(render("{{ s[1:4] }} {{ s[::-1] }} {{ s[-1:] }} {{ s[0] }} {{ s|length }}", R"({"s": "héllo"})"),
            "éll olléh o h 5");
  // x.y falls back to x['y'] and x['y'] to the attribute.
  EXPECT_EQ(render("{{ m.role }} {{ m['role'] }} {{ m.get('x', 'dflt') }} {{ m['get']('role') }}",
                   R"({"m": {"role": "user"}})"),
            "user user dflt user");
}

TEST(ChatTemplate, DictsortIsCaseInsensitiveAndStable) {
  EXPECT_EQ(render("{% for k, v in d|dictsort %}{{ k }} {% endfor %}",
                   R"({"d": {"Zeta": 1, "é": 2, "z": 3, "alpha": 4, "Beta": 5}})"),
            "alpha Beta z Zeta é ");
  EXPECT_EQ(render("{{ d|dictsort(by='value', reverse=true) }}", R"({"d": {"a": 1, "b": 2}})"), "[('b', 2), ('a', 1)]");
  EXPECT_EQ(render("{{ d|dictsort(true)|map(attribute=0)|join }}", R"({"d": {"b": 1, "B": 2, "a": 3}})"), "Bab");
}

TEST(ChatTemplate, UndefinedSemantics) {
  EXPECT_EQ(render("[{{ nope }}][{{ d.nope }}][{{ d['nope'] }}][{{ l[5] }}]", R"({"d": {}, "l": []})"), "[][][][]");
  EXPECT_EQ(render("{{ nope is defined }} {{ nope is undefined }} {{ nope|default('x') }} {{ nope|length }}"
                   "{% for x in nope %}!{% endfor %} {{ nope ~ 'a' }} {{ nope == nope }}"),
            "False True x 0 a True");
  // Undefined is not false: `is defined` distinguishes it from a false value.
  EXPECT_EQ(render("{{ f is defined }} {{ f|default(true) }} {{ f|default(true, true) }}", R"({"f": false})"),
            "True False True");
  EXPECT_TRUE(contains(render_error("{{ nope.x }}"), "'nope' is undefined"));
  EXPECT_TRUE(contains(render_error("{{ d.nope.x }}", R"({"d": {}})"), "'dict object' has no attribute 'nope'"));
  EXPECT_TRUE(contains(render_error("{{ nope + 1 }}"), "'nope' is undefined"));
  EXPECT_TRUE(contains(render_error("{{ nope|tojson }}"), "not JSON serializable"));
}

// ------------------------------------------------------------------------------ filters and methods

TEST(ChatTemplate, Tojson) {
  EXPECT_EQ(render("{{ x|tojson }}", R"({"x": {"b": [1, 2.5, null, true], "a": "é\"<>&\n"}})"),
            R"({"b": [1, 2.5, null, true], "a": "é\"<>&\n"})");
  EXPECT_EQ(render("{{ x|tojson(indent=2) }}", R"({"x": {"a": [1], "b": {}}})"),
            "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}");
  EXPECT_EQ(render("{{ x|tojson(sort_keys=true, separators=(',', ':')) }}", R"({"x": {"b": 1, "a": 2}})"),
            R"({"a":2,"b":1})");
  EXPECT_EQ(render("{{ 'é'|tojson(ensure_ascii=true) }}"), "\"\\u00e9\"");
}

TEST(ChatTemplate, CommonFilters) {
  EXPECT_EQ(render("{{ l|join(', ') }}|{{ l|first }}|{{ l|last }}|{{ l|length }}|{{ l|sort|list }}|{{ l|reverse|list }}"
                   "|{{ l|unique|list }}|{{ l|sum }}|{{ l|min }}|{{ l|max }}",
                   R"({"l": [3, 1, 3, 2]})"),
            "3, 1, 3, 2|3|2|4|[1, 2, 3, 3]|[2, 3, 1, 3]|[3, 1, 2]|9|1|3");
  EXPECT_EQ(
      render(
          "{{ ms|map(attribute='role')|join(',') }}|{{ ms|selectattr('role', 'equalto', 'user')|list|length }}"
          "|{{ ms|rejectattr('role', 'eq', 'user')|map(attribute='role')|first }}|{{ ['a', 'b']|map('upper')|list }}",
          R"({"ms": [{"role": "user"}, {"role": "assistant"}, {"role": "user"}]})"),
      "user,assistant,user|2|assistant|['A', 'B']");
  EXPECT_EQ(render("{{ 'a b'|replace(' ', '_') }}|{{ 'hello world'|title }}|{{ 'x'|string }}|{{ '42'|int + 1 }}"
                   "|{{ '2.5'|float }}|{{ -3|abs }}|{{ 2.5|round }}|{{ 2.675|round(2) }}|{{ d|items|list }}",
                   R"({"d": {"k": 1}})"),
            "a_b|Hello World|x|43|2.5|3|2.0|2.67|[('k', 1)]");
  EXPECT_EQ(render("{{ 'a\\nb'|indent(2) }}|{{ [1, 2, 3]|batch(2)|list }}|{{ '<b>x</b> y'|striptags }}|{{ "
                   "'%s=%d'|format('a', 1) }}"),
            "a\n  b|[[1, 2], [3]]|x y|a=1");
}

TEST(ChatTemplate, StringMethods) {
  EXPECT_EQ(
      render("{{ s.split('|') }} {{ s.startswith('a') }} {{ s.endswith(('x', 'c')) }} {{ s.upper() }} {{ "
             "s.replace('|', '') }}"
             " {{ s.find('b') }} {{ '  a  b '.split() }} {{ '{}-{:>3}'.format(1, 'x') }} {{ ', '.join(['p', 'q']) }}",
             R"({"s": "a|b|c"})"),
      "['a', 'b', 'c'] True True A|B|C abc 2 ['a', 'b'] 1-  x p, q");
}

TEST(ChatTemplate, SandboxRefusesMutation) {
  EXPECT_TRUE(contains(render_error("{% set l = [] %}{{ l.append(1) }}"),
                       "access to attribute 'append' of 'list' object is unsafe"));
  EXPECT_TRUE(contains(render_error("{% set d = {} %}{{ d.update({}) }}"), "unsafe"));
}

TEST(ChatTemplate, Globals) {
  EXPECT_EQ(render("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ dict(a=1) }} {{ strftime_now('%Y')|length }}"),
            "[0, 1, 2] [1, 3, 5] {'a': 1} 4");
  const std::string err = render_error("line1\n{{ raise_exception('bad ' ~ 'input') }}");
  EXPECT_TRUE(contains(err, "unit.jinja:2: bad input")) << err;
}

TEST(ChatTemplate, RenderVariables) {
  const gt::ChatTemplate t = gt::ChatTemplate::from_string(
      "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|{{ messages|length }}|"
      "{{ enable_thinking is defined }}|{{ custom }}",
      "vars.jinja");
  EXPECT_EQ(t.render(ojson::parse(R"([{"role": "user", "content": "x"}])"), true, ojson::parse(R"({"custom": 7})"),
                     "<b>", "<e>"),
            "<b>|<e>|True|None|None|1|False|7");
  EXPECT_EQ(t.render(ojson::array(), false, ojson::parse(R"({"tools": [1], "enable_thinking": false})"), "", ""),
            "||False|[1]|None|0|True|");
}

// ------------------------------------------------------------------------------ whitespace and syntax

TEST(ChatTemplate, WhitespaceControl) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(render("a\n  {% if true %}\n    b\n  {% endif %}\nc\n"), "a\n    b\nc");
  EXPECT_EQ(render("a  {{- 'x' -}}  \n b"), "axb");
  EXPECT_EQ(render("a\n  {%+ if true %}b{% endif +%}\nc"), "a\n  b\nc");
  EXPECT_EQ(render("{% for i in [1, 2] %}\n  {{ i }}\n{% endfor %}\n"), "  1\n  2\n");
  EXPECT_EQ(render("x {# comment #} y\n  {# own line #}\nz"), "x  y\nz");
  EXPECT_EQ(render("{% raw %}{{ kept }}{% endraw %}"), "{{ kept }}");
  EXPECT_EQ(render("{{ 'line' }}\n"), "line");  // keep_trailing_newline=False drops one final newline
  EXPECT_EQ(render("{{ 'line' }}\n\n"), "line\n");
  EXPECT_EQ(render("a\r\nb"), "a\nb");
}

TEST(ChatTemplate, SyntaxErrorsNameOriginAndLine) {
  try {
    gt::ChatTemplate::from_string("hello\n{{ x }}\n{% if x %}\nno end\n", "broken.jinja");
    FAIL() << "no error";
  } catch (const gt::Error& e) {
    EXPECT_TRUE(contains(e.what(), "broken.jinja:4:")) << e.what();
    EXPECT_TRUE(contains(e.what(), "endif")) << e.what();
  }
  try {
    gt::ChatTemplate::from_string("a\n\n{{ x | no_such_filter }}", "f.jinja");
    FAIL() << "no error";
  } catch (const gt::Error& e) {
    EXPECT_TRUE(contains(e.what(), "f.jinja:3: No filter named 'no_such_filter'")) << e.what();
  }
  try {
    gt::ChatTemplate::from_string("{% do x %}", "d.jinja");  // the `do` extension is not enabled in transformers
    FAIL() << "no error";
  } catch (const gt::Error& e) {
    EXPECT_TRUE(contains(e.what(), "d.jinja:1: Encountered unknown tag 'do'")) << e.what();
  }
}

TEST(ChatTemplate, RuntimeErrorsNameLine) {
  const std::string err = render_error("{% macro m(x) %}\n{{ x + 1 }}\n{% endmacro %}\n{{ m('a') }}");
  EXPECT_TRUE(contains(err, "unit.jinja:2: can only concatenate str (not \"int\") to str")) << err;
}

// ------------------------------------------------------------------------------ loading

TEST(ChatTemplate, FromModelDir) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(testing::TempDir()) / "gemmatune_chat_template_model";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    gt::write_file_atomic((dir / name).string(), text);
  };

  EXPECT_THROW(gt::ChatTemplate::from_model_dir(dir.string()), gt::Error);
  write(
      "tokenizer_config.json",
      R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ bos_token }}"}]})");
  EXPECT_EQ(gt::ChatTemplate::from_model_dir(dir.string()).render(ojson::array(), false, ojson::object(), "<b>", ""),
            "D<b>");
  write("tokenizer_config.json", R"({"chat_template": "S{{ messages|length }}"})");
  EXPECT_EQ(gt::ChatTemplate::from_model_dir(dir.string()).render(ojson::array(), false, ojson::object(), "", ""),
            "S0");
  write("chat_template.jinja", "J\n");
  EXPECT_EQ(gt::ChatTemplate::from_model_dir(dir.string()).render(ojson::array(), false, ojson::object(), "", ""), "J");
  write("other.jinja", "E");
  EXPECT_EQ(gt::ChatTemplate::from_model_dir(dir.string(), (dir / "other.jinja").string())
                .render(ojson::array(), false, ojson::object(), "", ""),
            "E");
  fs::remove_all(dir);
}

// ------------------------------------------------------------------------------ fuzzing regressions
// Inputs found by fuzz/fuzz_jinja.cc (see docs/FUZZING.md): each used to crash, trip a sanitizer,
// hang or exhaust memory; now it renders like Python or fails with a gt::Error naming the line.

// Renders with tighter limits than the defaults, so that the tests that run into them stay fast.
std::string render_limited(const std::string& src, size_t max_string, uint64_t max_steps) {
  gt::ChatTemplate t = gt::ChatTemplate::from_string(src, "unit.jinja");
  gt::ChatTemplate::Limits l;
  l.max_string = max_string;
  l.max_steps = max_steps;
  t.set_limits(l);
  try {
    return t.render(ojson::array(), false, ojson::object(), "<bos>", "<eos>");
  } catch (const gt::Error& e) {
    return e.what();
  }
}

TEST(ChatTemplateFuzz, IntegerEdgeCasesDoNotOverflow) {
  const std::string min = "(-9223372036854775807 - 1)";
  EXPECT_TRUE(contains(render_error("\n{{ " + min + " // -1 }}"), "unit.jinja:2: integer overflow"));
  EXPECT_EQ(render("{{ " + min + " % -1 }} {{ 7 % -1 }} {{ -7 % -1 }}"), "0 0 0");
  EXPECT_TRUE(contains(render_error("{{ -" + min + " }}"), "integer overflow"));
  EXPECT_TRUE(contains(render_error("{{ " + min + " | abs }}"), "integer overflow"));
  // Powers by squaring: a huge exponent of 0, 1 or -1 no longer loops 2**63 times.
  EXPECT_EQ(render("{{ 1 ** 9223372036854775807 }} {{ (-1) ** 9223372036854775807 }} {{ 0 ** 9223372036854775807 }}"),
            "1 -1 0");
  EXPECT_EQ(render("{{ 2 ** 62 }} {{ (-2) ** 63 }} {{ 3 ** 39 }} {{ 7 ** 0 }}"),
            "4611686018427387904 -9223372036854775808 4052555153018976267 1");
  EXPECT_TRUE(contains(render_error("{{ 2 ** 63 }}"), "integer overflow"));
  EXPECT_TRUE(contains(render_error("{{ 3 ** 9223372036854775807 }}"), "integer overflow"));
  // Slices and ranges with extreme steps and bounds.
  EXPECT_EQ(render("{{ 'abcdefg'[5::9223372036854775807] }} {{ 'abcdefg'[::" + min + "] }} {{ [1, 2, 3][2::9223372036854775807] }}"),
            "f g [3]");
  EXPECT_EQ(render("{{ range(0, -10, " + min + ") | list }} {{ range(9223372036854775806, 9223372036854775807) | list }}"),
            "[0] [9223372036854775806]");
  EXPECT_TRUE(contains(render_error("{{ range(" + min + ", 9223372036854775807) }}"), "Range too big"));
  EXPECT_EQ(render("[{{ 'abc'[1.5:] }}]"), "[]");  // jinja2's sandbox: a bad subscript is undefined
  // round() of an int is exact (half to even); float -> int conversions that do not fit fail.
  EXPECT_EQ(render("{{ 15 | round(-1) }} {{ 25 | round(-1) }} {{ -15 | round(-1) }} {{ 123 | round(-25) }}"),
            "20 20 -20 0");
  EXPECT_EQ(render("{{ 1.5 | round(" + min + ") }} {{ 2.675 | round(2) }}"), "0.0 2.67");
  EXPECT_TRUE(contains(render_error("{{ 9223372036854775807 | round(-1) }}"), "integer overflow"));
  EXPECT_TRUE(contains(render_error("{{ 1e308 | int }}"), "does not fit in a 64-bit integer"));
  EXPECT_TRUE(contains(render_error("{{ '%d' % 1e300 }}"), "number too large"));
  EXPECT_TRUE(contains(render_error("{{ '%c' % 1114112 }}"), "%c arg not in range(0x110000)"));
  EXPECT_TRUE(contains(render_error("{{ '{:c}'.format(-1) }}"), "%c arg not in range(0x110000)"));
  EXPECT_EQ(render("{{ '%x' % " + min + " }} {{ '%#o' % " + min + " }} {{ '%x|%5X|%-#6x|%05x|%+o|%.3x' % (-255, 255, 10, -10, 8, 5) }}"),
            "-8000000000000000 -0o1000000000000000000000 -ff|   FF|0xa   |-000a|+10|005");
}

TEST(ChatTemplateFuzz, HugeStringsAndListsFailInsteadOfExhaustingMemory) {
  for (const char* src : {"{{ 'a' * 100000000 }}", "{{ 'a'.center(10000000000) }}", "{{ 'a'.ljust(2000000000) }}",
                          "{{ 'a'.zfill(9223372036854775807) }}", "{{ '%999999999d' % 1 }}",
                          "{{ '%.999999999f' % 1.5 }}", "{{ '%99999999999999999999999s' % 1 }}",
                          "{{ '{0:>999999999}'.format(1) }}", "{{ 'a\nb' | indent(100000000) }}",
                          "{{ [1] | tojson(indent=1000000000) }}"})
    EXPECT_TRUE(contains(render_error(src), "more than the limit of 67108864 bytes for a string")) << src;
  EXPECT_TRUE(contains(render_error("{{ ([1] * 100000000) | length }}"), "list repetition"));
  EXPECT_TRUE(contains(render_error("{{ [1, 2] | batch(100000000, 0) | list }}"), "batch()"));
  EXPECT_TRUE(contains(render_error("{{ [1, 2] | slice(100000000) | list }}"), "slice()"));
  // Doubling a string, joining, replacing and printing a list of big strings stop at the limit.
  const std::string big = "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}";
  EXPECT_TRUE(contains(render_limited(big, 1 << 20, 1000), "unit.jinja:1: string: the result would be 2097152 bytes"));
  EXPECT_TRUE(contains(render_limited("{% set s = 'x' * 100000 %}{{ [s] * 20 }}", 1 << 20, 1000), "str()"));
  EXPECT_TRUE(contains(render_limited("{% set s = 'x' * 100000 %}{{ ([s] * 20) | join('') }}", 1 << 20, 1000), "join()"));
  EXPECT_TRUE(contains(render_limited("{{ ('x' * 400000).replace('', 'yy') }}", 1 << 20, 1000), "replace()"));
  EXPECT_TRUE(contains(render_limited("{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}", 1 << 20, 10000),
                       "template output"));
  // Widths past the old 511-byte snprintf buffer are exact now.
  EXPECT_EQ(render("{{ ('%600d' % 1) | length }} {{ ('%.600f' % 1.5) | length }}"), "600 602");
}

TEST(ChatTemplateFuzz, RunawayLoopsAndCallsStop) {
  EXPECT_TRUE(contains(render_limited("\n\n{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
                                      1 << 20, 10000),
                       "unit.jinja:3: the template ran more than 10000 steps (loop iterations, calls, items iterated)"));
  // Each call recurses twice: 2**40 calls, although no call is deeper than 41.
  EXPECT_TRUE(contains(render_limited("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
                                      "{{ f(40) }}",
                                      1 << 20, 10000),
                       "the template ran more than 10000 steps"));
  // Work inside one expression counts too: unique() and `in` over big lists.
  EXPECT_TRUE(contains(render_limited("{{ range(100000) | unique | length }}", 1 << 20, 1'000'000), "steps"));
  EXPECT_TRUE(contains(render_limited("{% set r = range(100000) | list %}{% for i in r %}{{ i in r }}{% endfor %}",
                                      1 << 20, 1'000'000),
                       "steps"));
  EXPECT_EQ(gt::ChatTemplate::Limits().max_steps, 50'000'000u);
}

TEST(ChatTemplateFuzz, DeeplyNestedValues) {
  // A 20000-deep list: printing or serialising it raises like Python's RecursionError, and
  // freeing it does not overflow the stack.
  const std::string deep = "{% set ns = namespace(x=[]) %}{% for i in range(20000) %}{% set ns.x = [ns.x] %}{% endfor %}";
  EXPECT_EQ(render_limited(deep + "ok", 1 << 20, 100000), "ok");
  EXPECT_TRUE(contains(render_limited(deep + "{{ ns.x }}", 1 << 20, 100000), "maximum recursion depth exceeded in str()"));
  EXPECT_TRUE(contains(render_limited(deep + "{{ ns.x | tojson }}", 1 << 20, 100000), "maximum recursion depth exceeded in tojson"));
  EXPECT_TRUE(contains(render_limited(deep + "{{ ns.x == ns.x }}", 1 << 20, 100000), "maximum recursion depth exceeded in =="));
  EXPECT_TRUE(contains(render_error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"), "maximum recursion depth"));
  // Variables nested deeper than the limit are refused before rendering.
  ojson v = ojson::array();
  for (int i = 0; i < 1000; ++i) v = ojson::array({v});
  const gt::ChatTemplate t = gt::ChatTemplate::from_string("{{ x }}", "unit.jinja");
  try {
    t.render(ojson::array(), false, ojson{{"x", v}}, "", "");
    ADD_FAILURE() << "no error";
  } catch (const gt::Error& e) {
    EXPECT_TRUE(contains(e.what(), "unit.jinja: template variables: maximum recursion depth exceeded")) << e.what();
  }
  v = ojson::array();
  for (int i = 0; i < 400; ++i) v = ojson::array({v});
  EXPECT_EQ(t.render(ojson::array(), false, ojson{{"x", v}}, "", "").size(), 802u);
}

}  // namespace
