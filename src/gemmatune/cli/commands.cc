#include "gemmatune/cli/commands.h"

#include <cstdio>
#include <cstring>
#include <map>

#include "gemmatune/util/error.h"

namespace gt::cli {

namespace {
struct Entry {
  std::string summary;
  CommandFn fn;
};
std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  return r;
}
void usage() {
  std::printf("gemmatune: fine-tune and run Gemma 3 / Gemma 4 models on the CPU\n\nusage: gemmatune COMMAND [options]\n\ncommands:\n");
  for (const auto& [name, e] : registry()) std::printf("  %-14s %s\n", name.c_str(), e.summary.c_str());
  std::printf("\nRun 'gemmatune COMMAND --help' for a command's options.\n");
}
}  // namespace

Command::Command(const char* name, const char* summary, CommandFn fn) {
  registry()[name] = Entry{summary, std::move(fn)};
}

int dispatch(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage();
    return argc < 2 ? 1 : 0;
  }
  auto it = registry().find(argv[1]);
  if (it == registry().end()) {
    std::fprintf(stderr, "gemmatune: unknown command '%s'\n\n", argv[1]);
    usage();
    return 1;
  }
  return it->second.fn(argc - 2, argv + 2);
}

}  // namespace gt::cli
