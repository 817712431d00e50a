// gemmatune tokenize: encode / decode with a tokenizer.json, one case per JSON line or one
// string from the command line.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt::cli {
namespace {

using nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

bool bool_field(const json& row, const char* key, bool def, const std::string& where) {
  if (!row.contains(key) || row[key].is_null()) return def;
  if (!row[key].is_boolean()) fail(where, ": \"", key, "\" must be true or false, found ", dump(row[key]));
  return row[key].get<bool>();
}

std::vector<int32_t> ids_field(const json& v, const std::string& where) {
  if (!v.is_array()) fail(where, ": \"ids\" must be an array of integers, found ", dump(v));
  std::vector<int32_t> ids;
  for (const json& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < INT32_MIN || x.get<int64_t>() > INT32_MAX)
      fail(where, ": \"ids\" must hold 32-bit integers, found ", dump(x));
    ids.push_back(int32_t(x.get<int64_t>()));
  }
  return ids;
}

int run(int argc, char** argv) {
  Args a("tokenize",
         "Encode or decode with a Hugging Face tokenizer.json.\n\n"
         "With --cases, each JSON line is one case: {\"id\": ..., \"text\": \"...\"} is encoded (honouring an\n"
         "optional \"add_special_tokens\", default false: no <bos> is added) and {\"id\": ..., \"ids\": [...]}\n"
         "is decoded (honouring an optional \"skip_special_tokens\", default false). A row with both\n"
         "\"text\" and \"ids\" (a golden row) is decoded when it has \"skip_special_tokens\", else encoded;\n"
         "\"op\": \"encode\" | \"decode\" forces either. One JSON line is printed per case, in order:\n"
         "{\"id\": <id>, \"got\": <ids or text>}.",
         argc, argv);
  std::string tok_path = a.required("tokenizer", "tokenizer.json to load");
  std::string cases = a.str("cases", "", "JSON-lines file of cases (see above)");
  std::string text = a.str("text", "", "encode this string and print its ids");
  std::string ids_arg = a.str("ids", "", "decode these comma-separated ids and print the text as JSON");
  bool add_special = a.flag("add-special-tokens", "with --text: apply the post-processor (Gemma: prepend <bos>)");
  bool skip_special = a.flag("skip-special-tokens", "with --ids: drop special tokens");
  if (a.finish()) return 0;
  int given = int(!cases.empty()) + int(a.given("text")) + int(!ids_arg.empty());
  if (given != 1) fail("tokenize: give exactly one of --cases, --text or --ids (see gemmatune tokenize --help)");

  auto t0 = std::chrono::steady_clock::now();
  Tokenizer tok = Tokenizer::from_file(tok_path);
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (a.given("text")) {
    std::printf("%s\n", dump(json(tok.encode(text, add_special))).c_str());
    return 0;
  }
  if (!ids_arg.empty()) {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i <= ids_arg.size()) {
      size_t j = ids_arg.find(',', i);
      if (j == std::string::npos) j = ids_arg.size();
      std::string part = ids_arg.substr(i, j - i);
      char* end = nullptr;
      long long v = std::strtoll(part.c_str(), &end, 10);
      if (part.empty() || *end || v < INT32_MIN || v > INT32_MAX)
        fail("tokenize: --ids expects comma-separated integers, got '", part, "'");
      ids.push_back(int32_t(v));
      i = j + 1;
    }
    std::printf("%s\n", dump(json(tok.decode(ids, skip_special))).c_str());
    return 0;
  }

  std::string body = read_file(cases);
  size_t n_enc = 0, n_dec = 0, line_no = 0;
  auto t1 = std::chrono::steady_clock::now();
  for (size_t pos = 0; pos < body.size();) {
    size_t nl = body.find('\n', pos);
    if (nl == std::string::npos) nl = body.size();
    std::string_view line(body.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    std::string where = str(cases, ":", line_no);
    json row;
    try {
      row = json::parse(line);
    } catch (const json::exception& e) {
      fail(where, ": not valid JSON: ", e.what());
    }
    if (!row.is_object()) fail(where, ": expected a JSON object, found ", dump(row).substr(0, 80));
    json id = row.contains("id") ? row["id"] : json(line_no);
    // Golden rows carry the expected answer too (tokenize rows: text + ids, decode rows: ids +
    // skip_special_tokens + text), so a row with skip_special_tokens is a decode case.
    std::string op;
    if (row.contains("op")) {
      if (!row["op"].is_string() || (row["op"] != "encode" && row["op"] != "decode"))
        fail(where, ": \"op\" must be \"encode\" or \"decode\", found ", dump(row["op"]).substr(0, 80));
      op = row["op"].get<std::string>();
    } else if (row.contains("ids") && (row.contains("skip_special_tokens") || !row.contains("text"))) {
      op = "decode";
    } else if (row.contains("text")) {
      op = "encode";
    } else {
      fail(where, ": expected a \"text\" (to encode) or an \"ids\" (to decode) field");
    }
    json got;
    if (op == "encode") {
      if (!row.contains("text") || !row["text"].is_string())
        fail(where, ": \"text\" must be a string, found ", dump(row.value("text", json())).substr(0, 80));
      got = tok.encode(row["text"].get<std::string>(), bool_field(row, "add_special_tokens", false, where));
      ++n_enc;
    } else {
      if (!row.contains("ids")) fail(where, ": a decode case needs an \"ids\" array");
      got = tok.decode(ids_field(row["ids"], where), bool_field(row, "skip_special_tokens", false, where));
      ++n_dec;
    }
    std::printf("{\"id\": %s, \"got\": %s}\n", dump(id).c_str(), dump(got).c_str());
  }
  double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  std::fflush(stdout);
  std::fprintf(stderr, "tokenize: %zu cases (%zu encoded, %zu decoded); tokenizer loaded in %.2f s, cases took %.3f s\n",
               n_enc + n_dec, n_enc, n_dec, load_s, run_s);
  return 0;
}

Command reg("tokenize", "encode / decode text with a tokenizer.json", run);

}  // namespace
}  // namespace gt::cli
