// Writing quantized model folders (`gemmatune quantize`) and their dequantized f32 twins.
//
// A quantized folder (docs/QUANTIZATION.md) is a Hugging Face model folder whose quantized tensors
// are stored under their own names as U8 safetensors tensors holding ggml blocks, row by row: a
// logical [.., n, k] weight is stored U8 [.., n, k/block_values*block_bytes]. config.json gets
//   "quantization_config": {"quant_method": "gemmatune", "format": "ggml_blocks", "type": "q4_0",
//     ("fallback": "..." for q4_k),
//     "source_dtype": "BF16", "policy": "...",
//     "tensors": {"model.layers.0.self_attn.q_proj.weight": {"type": "q4_0", "shape": [n, k]}, ...}}
// Every other tensor is written as stored; every other file of the folder is copied.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace gt {

struct QuantizeReport {
  struct Row {
    std::string name;
    std::string type;  // "q8_0" / "q4_0" / "q4_k", or the stored dtype when kept
    double rms_rel_error = 0;  // sqrt(Σ(x - deq(q(x)))² / Σ x²); 0 for kept tensors
    size_t bytes_in = 0, bytes_out = 0;
  };
  std::vector<Row> rows;
  size_t bytes_in = 0, bytes_out = 0;
};

// Quantizes the model folder `in` into `out` with `type` ("q8_0" | "q4_0" | "q4_k") by the policy
// of quant::quantize_policy (q4_k: tensors whose rows are not whole super-blocks of 256 get q4_0,
// quant::block_type_for; each tensor's entry in "tensors" names its own type). `out` must not exist or be empty (unless `force`). Atomic per file.
QuantizeReport quantize_folder(const std::string& in, const std::string& out, const std::string& type, bool force,
                               const std::function<void(const QuantizeReport::Row&)>& on_tensor = {});

// Writes the dequantized weights of a quantized folder as an f32 model folder (every tensor F32,
// no quantization_config): the reference the quantized kernels must match in f32 math.
void dequantize_folder(const std::string& in, const std::string& out, bool force);

}  // namespace gt
