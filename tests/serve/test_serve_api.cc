// The server's pure API layer (serve/api.h): request parsing and validation (every error class gets
// a 4xx with OpenAI's error shape), adapter names, the API-key compare, SSE framing, the thinking
// splitter, and the metrics text.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gemmatune/generate/chat_format.h"
#include "gemmatune/serve/api.h"
#include "gemmatune/serve/server.h"
#include "test_util.h"

using namespace gt;
using namespace gt::serve;
using json = nlohmann::ordered_json;

namespace {

ApiRequest chat(const std::string& body) { return parse_request(body, Endpoint::Chat); }
ApiRequest completion(const std::string& body) { return parse_request(body, Endpoint::Completion); }

// The ApiError a parse throws (status 0 and "(no error)" when it parses).
ApiError error_of(const std::string& body, Endpoint ep = Endpoint::Chat) {
  try {
    parse_request(body, ep);
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "(no error)");
}

const std::string kUser = R"("messages":[{"role":"user","content":"hi"}])";
std::string with(const std::string& fields) { return "{" + kUser + (fields.empty() ? "" : "," + fields) + "}"; }

}  // namespace

TEST(ServeApi, MinimalChatHasOpenAIDefaults) {
  ApiRequest r = chat(with(""));
  EXPECT_EQ(r.endpoint, Endpoint::Chat);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0]["role"], "user");
  EXPECT_EQ(r.messages[0]["content"], "hi");
  EXPECT_EQ(r.model, "");
  EXPECT_FALSE(r.stream);
  EXPECT_FLOAT_EQ(r.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.top_p, 1.0f);
  EXPECT_EQ(r.top_k, 0);
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_EQ(r.top_logprobs, -1);
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_FALSE(r.enable_thinking);
  EXPECT_EQ(r.template_kwargs["enable_thinking"], false);
}

TEST(ServeApi, EveryFieldIsRead) {
  ApiRequest r = chat(with(R"("model":"fr","stream":true,"stream_options":{"include_usage":true},"temperature":0.5,
      "top_p":0.9,"top_k":40,"min_p":0.05,"seed":-7,"stop":["a","bc"],"max_completion_tokens":33,"frequency_penalty":0.5,
      "presence_penalty":-0.5,"repetition_penalty":1.1,"logprobs":true,"top_logprobs":3,
      "chat_template_kwargs":{"enable_thinking":true,"custom":1},"lora":[{"name":"x","scale":0.5},{"id":1}],
      "some_unknown_field":{"deep":[1,2]},"user":"me")"));
  EXPECT_EQ(r.model, "fr");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_FLOAT_EQ(r.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.top_p, 0.9f);
  EXPECT_EQ(r.top_k, 40);
  EXPECT_FLOAT_EQ(r.min_p, 0.05f);
  ASSERT_TRUE(r.seed.has_value());
  EXPECT_EQ(*r.seed, uint64_t(int64_t(-7)));
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(r.max_tokens, 33);
  EXPECT_FLOAT_EQ(r.frequency_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.presence_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.repetition_penalty, 1.1f);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_TRUE(r.enable_thinking);
  EXPECT_EQ(r.template_kwargs["custom"], 1);
  EXPECT_EQ(r.template_kwargs["enable_thinking"], true);
  ASSERT_EQ(r.lora.size(), 2u);
  EXPECT_EQ(r.lora[0].name, "x");
  EXPECT_FLOAT_EQ(r.lora[0].scale, 0.5f);
  EXPECT_EQ(r.lora[1].id, 1);
  EXPECT_FLOAT_EQ(r.lora[1].scale, 1.0f);
}

TEST(ServeApi, MessagesSystemToolAndTextParts) {
  ApiRequest r = chat(R"({"messages":[{"role":"developer","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
      {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
      {"role":"tool","tool_call_id":"c1","content":"42"}],"tools":[{"type":"function","function":{"name":"f"}}],"max_tokens":null})");
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[1]["content"], "ab");
  EXPECT_EQ(r.messages[2]["content"], "");
  EXPECT_TRUE(r.messages[2]["tool_calls"].is_array());
  EXPECT_EQ(r.messages[3]["tool_call_id"], "c1");
  EXPECT_TRUE(r.template_kwargs["tools"].is_array());
  EXPECT_EQ(r.max_tokens, -1);  // null = absent
}

TEST(ServeApi, StopAsAString) {
  EXPECT_EQ(chat(with(R"("stop":"END")")).stop, std::vector<std::string>{"END"});
}

TEST(ServeApi, CompletionPrompts) {
  EXPECT_EQ(completion(R"({"prompt":"The capital"})").prompt, "The capital");
  ApiRequest ids = completion(R"({"prompt":[2,651,6037]})");
  EXPECT_TRUE(ids.prompt_is_ids);
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{2, 651, 6037}));
  EXPECT_EQ(completion(R"({"prompt":["one"]})").prompt, "one");
  EXPECT_EQ(completion(R"({"prompt":[[5,6]]})").prompt_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(completion(R"({"prompt":"x","logprobs":2})").top_logprobs, 2);
}

// Every error class: the status, the parameter named, and a message that says what was expected.
TEST(ServeApi, MalformedBodies) {
  for (const char* body : {"", "{", "{\"messages\": [}", "nul", "{\"a\":1}x"}) {
    ApiError e = error_of(body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_TRUE(test::contains(e.message, "malformed JSON")) << e.message;
  }
  ApiError arr = error_of("[1,2]");
  EXPECT_EQ(arr.status, 400);
  EXPECT_TRUE(test::contains(arr.message, "must be a JSON object"));
  ApiError utf = error_of("{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}");
  EXPECT_EQ(utf.status, 400);
  EXPECT_TRUE(test::contains(utf.message, "not valid UTF-8 (byte 39)")) << utf.message;
  EXPECT_EQ(error_of("{\"messages\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}").status, 400);  // a surrogate
  EXPECT_EQ(error_of("{\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}]}").status, 400);      // overlong '/'
}

TEST(ServeApi, WrongTypesNameTheField) {
  struct Case {
    std::string fields, param, words;
  };
  const Case cases[] = {
      {R"("temperature":"hot")", "temperature", "must be a number, got a string"},
      {R"("stream":"yes")", "stream", "must be a boolean, got a string"},
      {R"("max_tokens":1.5)", "max_tokens", "must be an integer"},
      {R"("max_tokens":true)", "max_tokens", "must be an integer, got a boolean"},
      {R"("stop":5)", "stop", "a string or an array of strings"},
      {R"("stop":["a",1])", "stop[1]", "must be a string"},
      {R"("model":7)", "model", "must be a string"},
      {R"("lora":{"name":"x"})", "lora", "must be an array"},
      {R"("lora":[{"scale":1}])", "lora[0]", "needs a 'name' or an 'id'"},
      {R"("stream_options":true)", "stream_options", "must be an object"},
      {R"("chat_template_kwargs":{"enable_thinking":"yes"})", "chat_template_kwargs.enable_thinking", "must be a boolean"},
      {R"("seed":"1")", "seed", "must be an integer"},
      {R"("logprobs":1)", "logprobs", "must be a boolean"},
  };
  for (const Case& c : cases) {
    ApiError e = error_of(with(c.fields));
    EXPECT_EQ(e.status, 400) << c.fields;
    EXPECT_EQ(e.param, c.param) << c.fields;
    EXPECT_TRUE(test::contains(e.message, c.words)) << c.fields << " -> " << e.message;
  }
}

TEST(ServeApi, OutOfRangeNumbers) {
  for (const char* f : {R"("max_tokens":0)", R"("max_tokens":-5)", R"("max_tokens":1e20)", R"("max_tokens":99999999999999999999)",
                        R"("temperature":-0.1)", R"("temperature":1e308)", R"("temperature":2.5)", R"("top_p":0)", R"("top_p":1.5)",
                        R"("top_k":-2)", R"("min_p":2)", R"("frequency_penalty":3)", R"("presence_penalty":-9)",
                        R"("repetition_penalty":0)", R"("seed":18446744073709551615)", R"("logprobs":true,"top_logprobs":21)",
                        R"("n":2)", R"("lora":[{"name":"a","scale":1e9}])", R"("lora":[{"id":-1}])"}) {
    ApiError e = error_of(with(f));
    EXPECT_EQ(e.status, 400) << f;
    EXPECT_FALSE(e.param.empty()) << f;
  }
  EXPECT_TRUE(test::contains(error_of(with(R"("max_tokens":-5)")).message, "'max_tokens' must be between 1 and 2147483647, got -5"));
  EXPECT_EQ(error_of(with(R"("top_logprobs":2)")).param, "top_logprobs");  // needs logprobs: true
  EXPECT_EQ(chat(with(R"("top_k":-1)")).top_k, 0);                         // -1 = off (vLLM)
  EXPECT_EQ(chat(with(R"("max_tokens":16.0)")).max_tokens, 16);            // an integral float is an integer
}

TEST(ServeApi, BadMessages) {
  EXPECT_EQ(error_of("{}").param, "messages");
  EXPECT_EQ(error_of(R"({"messages":"hi"})").param, "messages");
  EXPECT_TRUE(test::contains(error_of(R"({"messages":[]})").message, "must not be empty"));
  EXPECT_EQ(error_of(R"({"messages":[1]})").param, "messages[0]");
  EXPECT_EQ(error_of(R"({"messages":[{"content":"x"}]})").param, "messages[0].role");
  EXPECT_TRUE(test::contains(error_of(R"({"messages":[{"role":"wizard","content":"x"}]})").message, "'wizard'"));
  EXPECT_EQ(error_of(R"({"messages":[{"role":"user"}]})").param, "messages[0].content");
  ApiError img = error_of(R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]})");
  EXPECT_EQ(img.status, 400);
  EXPECT_TRUE(test::contains(img.message, "only text content parts are supported"));
  std::string many = R"({"messages":[)";
  for (int i = 0; i < 2000; ++i) many += std::string(i ? "," : "") + R"({"role":"user","content":"x"})";
  EXPECT_TRUE(test::contains(error_of(many + "]}").message, "at most 1024"));
}

TEST(ServeApi, BadPrompts) {
  EXPECT_EQ(error_of("{}", Endpoint::Completion).param, "prompt");
  EXPECT_TRUE(test::contains(error_of(R"({"prompt":["a","b"]})", Endpoint::Completion).message, "one prompt per request"));
  EXPECT_EQ(error_of(R"({"prompt":[1,-2]})", Endpoint::Completion).param, "prompt[1]");
  EXPECT_EQ(error_of(R"({"prompt":[1,3000000000]})", Endpoint::Completion).param, "prompt[1]");
  EXPECT_EQ(error_of(R"({"prompt":[]})", Endpoint::Completion).param, "prompt");
  EXPECT_EQ(error_of(R"({"prompt":{"x":1}})", Endpoint::Completion).param, "prompt");
  EXPECT_EQ(error_of(R"({"prompt":"x","echo":true})", Endpoint::Completion).param, "echo");
}

TEST(ServeApi, ErrorBodyHasOpenAIShape) {
  ApiError e = error_of(with(R"("temperature":"hot")"));
  json j = json::parse(e.body());
  ASSERT_TRUE(j["error"].is_object());
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_TRUE(j["error"]["code"].is_null());
  EXPECT_TRUE(test::contains(j["error"]["message"].get<std::string>(), "temperature"));
  EXPECT_EQ(error_type(401), "authentication_error");
  EXPECT_EQ(error_type(404), "not_found_error");
  EXPECT_EQ(error_type(413), "request_too_large");
  EXPECT_EQ(error_type(429), "rate_limit_exceeded");
  EXPECT_EQ(error_type(503), "service_unavailable");
  // Invalid UTF-8 in a message never breaks the body.
  EXPECT_NO_THROW(json::parse(ApiError(400, "bad \xff byte").body()));
}

TEST(ServeApi, AdapterNamesCannotLeaveTheFolder) {
  for (const char* ok : {"fr", "demo-adapter_v1.2", "A"}) EXPECT_TRUE(valid_adapter_name(ok)) << ok;
  for (const char* bad : {"", ".", "..", "../x", "a/b", "/abs", ".hidden", "a b", "a\\b", "caf\xc3\xa9"}) EXPECT_FALSE(valid_adapter_name(bad)) << bad;
  EXPECT_FALSE(valid_adapter_name(std::string(65, 'a')));
  EXPECT_TRUE(valid_adapter_name(std::string(64, 'a')));

  AdapterOp op = parse_adapter_op(R"({"lora_name":"fr","lora_path":"fr-v2"})", true);
  EXPECT_EQ(op.name, "fr");
  EXPECT_EQ(op.dir_name, "fr-v2");
  EXPECT_EQ(parse_adapter_op(R"({"lora_name":"fr"})", true).dir_name, "fr");
  for (const char* body : {R"({"lora_name":"fr","lora_path":"../../etc"})", R"({"lora_name":"fr","lora_path":"/etc/passwd"})",
                           R"({"lora_name":"../fr"})", R"({"lora_path":"fr"})", R"({"lora_name":3})", "nope"}) {
    try {
      parse_adapter_op(body, true);
      ADD_FAILURE() << "accepted " << body;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400) << body;
    }
  }
}

TEST(ServeApi, BearerKey) {
  EXPECT_TRUE(bearer_matches("Bearer s3cret", "s3cret"));
  EXPECT_FALSE(bearer_matches("Bearer s3creT", "s3cret"));
  EXPECT_FALSE(bearer_matches("Bearer s3cret ", "s3cret"));
  EXPECT_FALSE(bearer_matches("bearer s3cret", "s3cret"));
  EXPECT_FALSE(bearer_matches("", "s3cret"));
  EXPECT_FALSE(bearer_matches("s3cret", "s3cret"));
}

TEST(ServeApi, SseFraming) {
  EXPECT_EQ(sse("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

TEST(ServeApi, InvalidUtf8Offsets) {
  EXPECT_EQ(invalid_utf8_at("plain"), -1);
  EXPECT_EQ(invalid_utf8_at("caf\xc3\xa9 \xf0\x9f\x98\x80"), -1);
  EXPECT_EQ(invalid_utf8_at("ab\x80"), 2);
  EXPECT_EQ(invalid_utf8_at("ab\xe2\x82"), 2);          // truncated
  EXPECT_EQ(invalid_utf8_at("\xf4\x90\x80\x80"), 0);   // > U+10FFFF
  EXPECT_EQ(invalid_utf8_at("\xe0\x80\xaf"), 0);        // overlong
}

// The server splits a Gemma 4 reply with generate/chat_format's ReasoningSplitter (as `chat` does);
// its behaviour on streamed pieces, as the server feeds it.
TEST(ServeApi, ThinkingSplitsReasoningFromContent) {
  const std::string text = "<|channel>thought\nLet me think.<channel|>Paris.";
  auto whole = ReasoningSplitter(nullptr);
  auto d = whole.push(text);
  auto f = whole.flush();
  EXPECT_EQ(d.reasoning + f.reasoning, "Let me think.");
  EXPECT_EQ(d.content + f.content, "Paris.");
  // Byte by byte: markers split across pieces are held back, the result is the same.
  auto bytes = ReasoningSplitter(nullptr);
  std::string reasoning, content;
  for (char c : text) {
    auto p = bytes.push(std::string(1, c));
    reasoning += p.reasoning;
    content += p.content;
    EXPECT_EQ(p.content.find('<'), std::string::npos);
  }
  auto e = bytes.flush();
  EXPECT_EQ(reasoning + e.reasoning, "Let me think.");
  EXPECT_EQ(content + e.content, "Paris.");
  // No markers: all content, nothing lost (also text that only starts like a marker).
  auto plain = ReasoningSplitter(nullptr);
  auto a = plain.push("<|chan");
  auto b = plain.push("nel? no");
  auto c = plain.flush();
  EXPECT_EQ(a.content + b.content + c.content, "<|channel? no");
  auto shortr = ReasoningSplitter(nullptr);
  auto s1 = shortr.push("Hi");
  auto s2 = shortr.flush();
  EXPECT_EQ(s1.content + s2.content, "Hi");
}

TEST(ServeApi, MetricsText) {
  EngineStats s;
  s.requests_total = 5;
  s.requests_waiting = 2;
  s.kv_bytes_used = 25;
  s.kv_bytes_budget = 100;
  s.tokens_per_second = 12.5;
  HttpCounters h;
  h.rejected_429 = 3;
  const std::string t = metrics_text(s, h);
  EXPECT_TRUE(test::contains(t, "# TYPE gemmatune_requests_total counter\ngemmatune_requests_total 5\n"));
  EXPECT_TRUE(test::contains(t, "\ngemmatune_requests_waiting 2\n"));
  EXPECT_TRUE(test::contains(t, "\ngemmatune_kv_cache_usage_ratio 0.25\n"));
  EXPECT_TRUE(test::contains(t, "\ngemmatune_generation_tokens_per_second 12.5\n"));
  EXPECT_TRUE(test::contains(t, "\ngemmatune_http_rejected_total 3\n"));
  // Every sample line is "name value" after its HELP and TYPE lines.
  std::istringstream in(t);
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    if (line.rfind("#", 0) == 0) continue;
    const size_t sp = line.find(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    EXPECT_NO_THROW((void)std::stod(line.substr(sp + 1))) << line;
    EXPECT_TRUE(test::contains(t, "# TYPE " + line.substr(0, sp) + " ")) << line;
    ++samples;
  }
  EXPECT_GE(samples, 15);
}
