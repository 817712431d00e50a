// Training data files: JSON lines in the usual chat-dataset formats, turned into Conversations
// (a normalised message list, or plain text) with every problem reported as "file:line: reason".
//
// Accepted rows (one JSON object per line; blank lines are ignored):
//   {"messages": [...]}                      OpenAI / Hugging Face chat format (also ShareGPT
//                                            {"from": "human"|"gpt"|..., "value": ...} messages)
//   {"conversations": [...]}                 the same under ShareGPT's column name
//   {"prompt": P, "completion": C}           P, C each a string (one user / one assistant message)
//                                            or a list of messages; only C's assistant turns train
//   {"question": Q, "answer": A}             MaxText's math QA columns: one user + one assistant turn
//   {"text": T}                              continued pretraining: every token is trained
// The first of these that a row has decides its kind. Other column names are mapped with a
// FieldMap (CLI: --field messages=conversation).
//
// Messages: "role" is system | developer (index 0 only), user, assistant or tool; "content" is a
// string or a list of parts ({"type": "text", "text": ...}, {"type": "image"}, ...), and may be
// null/absent only on an assistant message with tool_calls. Every other key (reasoning,
// reasoning_content, tool_calls, tool_call_id, name, ...) goes to the chat template untouched,
// except: "thinking" is renamed "reasoning" (when there is no "reasoning"), and a tool call's
// function.arguments given as a JSON string holding an object (OpenAI style) is parsed to that
// object, the form Gemma's templates expect. A row-level "tools" list becomes the template
// variable `tools`.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace gt {

// Canonical column name -> the name used in the files. Canonical names: messages,
// conversations, prompt, completion, question, answer, text, tools.
struct FieldMap {
  std::map<std::string, std::string> names;
  // The file's name for a canonical column (the canonical name itself when not mapped).
  const std::string& operator()(const std::string& canonical) const;
  // Parses "canonical=name"; throws gt::Error on a bad spec or an unknown canonical name.
  void add(const std::string& spec);
};

struct Conversation {
  enum class Kind { Chat, Text };
  Kind kind = Kind::Chat;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // Chat: normalised messages
  std::string text;                                                   // Text
  // Assistant messages before this index are context only (the prompt of a prompt/completion row).
  size_t first_trained = 0;
  // Template variables from the row (e.g. "tools"), merged over SftOptions::template_vars.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  std::string origin;  // "file:line"
};

struct ConversationOptions {
  FieldMap fields;
  // An assistant message with no content (empty string, no text parts) and no tool_calls or
  // reasoning is refused ("empty assistant turn") unless this is set. The golden row
  // sft-g4-parts-image-empty-answer trains such a turn (it teaches the end-of-turn token alone).
  bool allow_empty_answers = false;
};

// Parses one row (already JSON) into a Conversation; throws gt::Error("<origin>: <reason>") on a
// missing field, a wrong type, an unknown role, a misplaced system message, an empty assistant
// turn or a conversation without any assistant turn to train.
Conversation to_conversation(const nlohmann::ordered_json& row, const ConversationOptions& opt,
                             const std::string& origin);
// Same from the line's text; malformed JSON is reported with the parser's message.
Conversation parse_conversation(std::string_view line, const ConversationOptions& opt, const std::string& origin);

// Files named by `paths`: a file as is, a directory as its *.jsonl files (sorted by name, not
// recursive). Throws when a path does not exist or a directory holds no .jsonl file.
std::vector<std::string> expand_data_paths(const std::vector<std::string>& paths);

// The non-blank lines of JSONL files, with where each came from. Lines are split on '\n' only
// (a trailing '\r' is dropped); line numbers count from 1.
class JsonlRecords {
 public:
  void add_file(const std::string& path);
  // The same for a file's contents already in memory; `path` only names the lines' origin.
  void add_text(const std::string& path, std::string_view body);
  size_t size() const { return lines_.size(); }
  std::string_view line(size_t i) const { return lines_[i].text; }
  std::string origin(size_t i) const;  // "file:line"
  const std::vector<std::string>& files() const { return files_; }

 private:
  struct Line {
    uint32_t file;
    uint32_t line;
    std::string text;
  };
  std::vector<std::string> files_;
  std::vector<Line> lines_;
};

}  // namespace gt
