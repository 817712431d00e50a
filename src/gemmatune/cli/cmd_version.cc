#include <cstdio>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("version", "Print the gemmatune version.", argc, argv);
  if (a.finish()) return 0;
  std::printf("gemmatune 0.1.0\n");
  return 0;
}
Command reg("version", "print the version", run);
}  // namespace
}  // namespace gt::cli
