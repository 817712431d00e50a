// libFuzzer target: the GGUF container reader (io/gguf) and its mapping to a model
// (model/gguf_model: config, HF tensor names, the vocabulary as a tokenizer.json). The input is the
// bytes of a .gguf file; every metadata value is visited and every tensor's data range is read at
// both ends, so a view outside the mapping is an ASan report. gt::Error is the expected way to fail; anything else -- a
// crash, a sanitizer report, another exception, a hang, runaway memory -- is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include "fuzz_files.h"
#include "gemmatune/io/gguf.h"
#include "gemmatune/model/gguf_model.h"
#include "gemmatune/util/error.h"

namespace {

volatile uint64_t g_sink;

void visit(const gt::GgufValue& v) {
  if (auto* a = std::get_if<gt::GgufArray>(&v.v)) {
    for (const auto& e : *a) visit(e);
  } else if (auto* s = std::get_if<std::string>(&v.v)) {
    g_sink = g_sink + s->size();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gt_fuzz::fresh_dir("gguf") + "/model.gguf";
  gt_fuzz::write_bytes(path, std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    gt::GgufFile f(path);
    for (const auto& [key, v] : f.metadata()) {
      visit(v);
      try {
        g_sink = g_sink + uint64_t(f.get_int(key));
      } catch (const gt::Error&) {
      }
    }
    for (const auto& t : f.tensors()) {
      g_sink = g_sink + uint64_t(t.numel()) + t.shape().size();
      if (t.nbytes > 0) g_sink = g_sink + t.data[0] + t.data[t.nbytes - 1];
      if (f.find(t.name) != &t) __builtin_trap();
    }
    // The model-level mapping: each part fails alone with gt::Error or succeeds.
    try {
      g_sink = g_sink + gt::gguf_tokenizer_json(f).size();
    } catch (const gt::Error&) {
    }
    try {
      const gt::GgufModel m = gt::open_gguf_model(path);
      for (const auto& n : m.store.names()) g_sink = g_sink + m.store.get(n).nbytes;
    } catch (const gt::Error&) {
    }
  } catch (const gt::Error&) {
  }
  return 0;
}
