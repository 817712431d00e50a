// A GGUF file (llama.cpp's converter output) as a model: its metadata mapped to the equivalent
// Hugging Face config.json (then parsed by parse_config, so validation is shared), its tensors
// renamed to the Hugging Face keys (so LoRA targets, PEFT adapters and merges see HF names), its
// vocabulary turned into the equivalent tokenizer.json, and its chat template. docs/QUANTIZATION.md
// ("GGUF") lists what is mapped.
//
// Supported: general.architecture "gemma3" (Gemma 3 text models, as convert_hf_to_gguf.py writes
// them; Gemma 4 ("gemma4") is refused with a message). Tensor types: F32, F16, BF16 (dense views of
// the mapping), Q8_0 and Q4_0 (ggml blocks used in place; dequantized to f32 where the quantization
// policy keeps a tensor dense). Any other ggml type is refused naming the tensor.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/io/gguf.h"
#include "gemmatune/io/safetensors.h"
#include "gemmatune/kernels/linear.h"

namespace gt {

// True for an existing regular file whose name ends in ".gguf" (any case).
bool is_gguf_path(const std::string& path);

struct GgufModel {
  std::shared_ptr<const GgufFile> file;
  nlohmann::json config;         // the equivalent config.json
  std::vector<int32_t> eos_ids;  // generation stop ids (eos, eot, <end_of_turn>)
  TensorStore store;             // every tensor under its Hugging Face name
  struct Blocks {
    WFormat format = WFormat::Dense;
    std::vector<int64_t> shape;  // logical shape; the store holds U8 [.., k/32*block_bytes]
  };
  std::map<std::string, Blocks> blocks;  // HF name -> blocks used in place
  // Gemma 3 RMSNorm weights: the converter stores 1 + w (in f32). The store holds w = stored - 1
  // (the HF form); `gains` keeps the stored 1 + w, which is the exact effective gain.
  std::map<std::string, std::vector<float>> gains;
  std::vector<std::string> notes;  // conversions done at load (dequantized tensors)
};

// Opens and maps a GGUF model. Fails naming the file and the key or tensor on anything missing,
// contradictory or unsupported.
GgufModel open_gguf_model(const std::string& path);

// The pieces, for tools and tests.
nlohmann::json gguf_config_json(const GgufFile& f);
// The equivalent Hugging Face tokenizer.json (BPE with byte fallback; merges rebuilt from the
// SentencePiece scores, as transformers' converter builds them). Fails on a vocabulary type other
// than "llama" (SentencePiece).
std::string gguf_tokenizer_json(const GgufFile& f);
// tokenizer.chat_template, or "" when absent.
std::string gguf_chat_template(const GgufFile& f);
// HF tensor name of a GGUF tensor name for `arch` ("" when it has none).
std::string gguf_to_hf_name(const std::string& arch, const std::string& gguf_name);

}  // namespace gt
