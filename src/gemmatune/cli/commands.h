// Subcommand registry. Each cli/cmd_*.cc registers its command with a static Command object;
// the cli sources are compiled into the executable itself, so every registration is linked.
#pragma once
#include <functional>
#include <string>

namespace gt::cli {

using CommandFn = std::function<int(int argc, char** argv)>;

struct Command {
  Command(const char* name, const char* summary, CommandFn fn);
};

int dispatch(int argc, char** argv);

}  // namespace gt::cli
