// gemmatune quantize: writes a quantized model folder (docs/QUANTIZATION.md), or with --type f32
// the dequantized f32 twin of a quantized folder.
#include <chrono>
#include <cstdio>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/model/quantize.h"
#include "gemmatune/util/error.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("quantize",
         "Quantize a model folder's weights to ggml blocks (Q8_0, Q4_0 or Q4_K; docs/QUANTIZATION.md for the "
         "policy and the folder encoding; with q4_k, tensors whose rows are not a multiple of 256 values get "
         "q4_0). Prints the RMS relative error of each quantized tensor. --type f32 instead writes the "
         "dequantized f32 weights of a quantized folder (the exactness reference).",
         argc, argv);
  const std::string model_dir = a.required("model", "Hugging Face model folder (dense; or quantized with --type f32)");
  const std::string out_dir = a.required("out", "folder to write (must not exist or be empty)");
  const std::string type = a.str("type", "q8_0", "q8_0 | q4_0 | q4_k | f32 (dequantize a quantized folder)");
  const bool force = a.flag("force", "write into --out even if it is not empty");
  const int threads = threads_option(a);
  if (a.finish()) return 0;
  apply_threads(threads);
  const auto t0 = std::chrono::steady_clock::now();
  if (type == "f32") {
    dequantize_folder(model_dir, out_dir, force);
    std::printf("wrote the dequantized f32 model to %s\n", out_dir.c_str());
    return 0;
  }
  if (type != "q8_0" && type != "q4_0" && type != "q4_k")
    fail("quantize: --type must be q8_0, q4_0, q4_k or f32, got '", type, "'");
  std::printf("%-64s %-6s %12s %12s %10s\n", "tensor", "type", "bytes_in", "bytes_out", "rms_rel_err");
  const QuantizeReport rep = quantize_folder(model_dir, out_dir, type, force, [](const QuantizeReport::Row& r) {
    if (r.type == "q8_0" || r.type == "q4_0" || r.type == "q4_k")
      std::printf("%-64s %-6s %12zu %12zu %10.3e\n", r.name.c_str(), r.type.c_str(), r.bytes_in, r.bytes_out,
                  r.rms_rel_error);
    else
      std::printf("%-64s %-6s %12zu %12zu %10s\n", r.name.c_str(), r.type.c_str(), r.bytes_in, r.bytes_out, "kept");
    std::fflush(stdout);
  });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wrote %s: %.1f MB -> %.1f MB (%.2fx smaller) in %.1f s\n", out_dir.c_str(), double(rep.bytes_in) / 1e6,
              double(rep.bytes_out) / 1e6, double(rep.bytes_in) / double(std::max<size_t>(rep.bytes_out, 1)), s);
  return 0;
}
const Command reg("quantize", "quantize a model folder to Q8_0 / Q4_0 / Q4_K blocks (QLoRA / fast decode)", run);
}  // namespace
}  // namespace gt::cli
