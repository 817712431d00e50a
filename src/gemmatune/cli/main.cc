#include <cstdio>

#include "gemmatune/cli/commands.h"
#include "gemmatune/util/error.h"

int main(int argc, char** argv) {
  try {
    return gt::cli::dispatch(argc, argv);
  } catch (const gt::Error& e) {
    std::fprintf(stderr, "gemmatune: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gemmatune: internal error: %s\n", e.what());
    return 2;
  }
}
