// Tokenizer for Jinja templates, configured like transformers' environment:
// trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, "\n" newlines.
// Whitespace control ({%- -%} {{- -}} {#- -#} and the + forms), comments and raw blocks are
// resolved here, so the parser sees only data, tag delimiters and expression tokens.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gt::jinja {

enum class Tok : uint8_t { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok type = Tok::Eof;
  int line = 1;
  std::string text;  // data, name, unescaped string value, or operator
  int64_t ival = 0;
  double fval = 0;
};

// Throws gt::Error("<origin>:<line>: ...") on a lexical error.
std::vector<Token> lex(const std::string& source, const std::string& origin);

}  // namespace gt::jinja
