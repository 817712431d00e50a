#include "gemmatune/model/quantize.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/quant/blocks.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {
namespace fs = std::filesystem;

namespace {

void prepare_out(const std::string& in, const std::string& out, bool force, const char* cmd) {
  std::error_code ec;
  if (fs::exists(out) && fs::equivalent(in, out, ec)) fail(cmd, ": --out ", out, " is the input folder");
  if (fs::exists(out) && !fs::is_empty(out) && !force)
    fail(cmd, ": --out ", out, " exists and is not empty (pass --force to replace its files)");
  make_dirs(out);
}

// Copies every file of `in` that is not a weight file or config.json.
void copy_other_files(const std::string& in, const std::string& out) {
  for (const auto& e : fs::directory_iterator(in)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (name == "config.json" || name == "model.safetensors.index.json" || e.path().extension() == ".safetensors")
      continue;
    write_file_atomic(out + "/" + name, read_file(e.path().string()));
  }
}

nlohmann::json read_config(const std::string& in) {
  const std::string p = in + "/config.json";
  if (!file_exists(p)) fail(p, ": missing (a model folder needs its config.json)");
  try {
    return nlohmann::json::parse(read_file(p));
  } catch (const std::exception& e) {
    fail(p, ": not valid JSON: ", e.what());
  }
}

}  // namespace

QuantizeReport quantize_folder(const std::string& in, const std::string& out, const std::string& type, bool force,
                               const std::function<void(const QuantizeReport::Row&)>& on_tensor) {
  const quant::BlockType want = quant::block_type_from_name(type);
  const std::string tname = quant::block_info(want).name;
  nlohmann::json cfg = read_config(in);
  if (cfg.contains("quantization_config"))
    fail(in, "/config.json: the model is already quantized (quantization_config); quantize the dense model");
  TensorStore st = TensorStore::open_folder(in);
  prepare_out(in, out, force, "quantize");

  QuantizeReport rep;
  std::vector<std::vector<uint8_t>> keep;  // quantized blocks (alive until written)
  std::vector<TensorOut> outs;
  nlohmann::json tensors = nlohmann::json::object();
  std::map<std::string, int> src_dtypes;
  const auto names = st.names();
  keep.reserve(names.size());
  for (const auto& name : names) {
    const TensorView& v = st.get(name);
    QuantizeReport::Row row;
    row.name = name;
    row.bytes_in = v.nbytes;
    const bool dense = v.dtype == DType::F32 || v.dtype == DType::BF16 || v.dtype == DType::F16;
    if (dense && quant::quantize_policy(name, v.shape)) {
      const int64_t k = v.shape.back(), rows = v.numel() / k;
      const quant::BlockType bt = quant::block_type_for(want, k);  // q4_k -> q4_0 when k % 256 != 0
      const std::string bname = quant::block_info(bt).name;
      const int64_t rb = quant::quantized_bytes(bt, k, name);
      keep.emplace_back(size_t(rows * rb));
      uint8_t* dst = keep.back().data();
      const size_t es = dtype_size(v.dtype);
      double err = 0, ref = 0;
#pragma omp parallel reduction(+ : err, ref)
      {
        std::vector<float> x(static_cast<size_t>(k)), y(static_cast<size_t>(k));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
          to_f32(v.dtype, static_cast<const uint8_t*>(v.data) + size_t(r * k) * es, x.data(), size_t(k));
          quant::quantize(bt, x.data(), k, dst + r * rb);
          quant::dequantize(bt, dst + r * rb, k, y.data());
          for (int64_t i = 0; i < k; ++i) {
            const double d = double(x[size_t(i)]) - double(y[size_t(i)]);
            err += d * d;
            ref += double(x[size_t(i)]) * double(x[size_t(i)]);
          }
        }
      }
      row.type = bname;
      row.rms_rel_error = ref > 0 ? std::sqrt(err / ref) : 0.0;
      std::vector<int64_t> stored = v.shape;
      stored.back() = rb;
      outs.push_back(TensorOut{name, DType::U8, stored, dst, keep.back().size()});
      tensors[name] = {{"type", bname}, {"shape", v.shape}};
      src_dtypes[dtype_name(v.dtype)]++;
    } else {
      row.type = dtype_name(v.dtype);
      outs.push_back(TensorOut{name, v.dtype, v.shape, v.data, v.nbytes});
    }
    row.bytes_out = outs.back().nbytes;
    rep.bytes_in += row.bytes_in;
    rep.bytes_out += row.bytes_out;
    if (on_tensor) on_tensor(row);
    rep.rows.push_back(std::move(row));
  }
  if (tensors.empty()) fail("quantize: ", in, ": no tensor matches the quantization policy (docs/QUANTIZATION.md)");
  std::string src = "F32";
  int best = 0;
  for (const auto& [d, n] : src_dtypes)
    if (n > best) best = n, src = d;
  cfg["quantization_config"] = {
      {"quant_method", "gemmatune"},
      {"format", "ggml_blocks"},
      {"type", tname},
      {"source_dtype", src},
      {"policy",
       "quantized: language-model q/k/v/o/gate/up/down projections, MoE experts (per expert), token embedding and "
       "LM head; kept: norms, scalars, router, per-layer embeddings, vision/audio towers"},
      {"tensors", tensors}};
  if (want == quant::BlockType::Q4_K)
    cfg["quantization_config"]["fallback"] =
        "q4_0 for tensors whose last dimension is not a multiple of 256 (a Q4_K super-block)";
  copy_other_files(in, out);
  write_safetensors(out + "/model.safetensors", outs);
  write_file_atomic(out + "/config.json", cfg.dump(2) + "\n");
  return rep;
}

void dequantize_folder(const std::string& in, const std::string& out, bool force) {
  nlohmann::json cfg = read_config(in);
  if (!cfg.contains("quantization_config") || !cfg["quantization_config"].contains("tensors"))
    fail(in, "/config.json: no quantization_config (not a quantized folder)");
  const auto qt = cfg["quantization_config"]["tensors"];
  TensorStore st = TensorStore::open_folder(in);
  prepare_out(in, out, force, "dequantize");
  std::vector<std::vector<float>> keep;
  std::vector<TensorOut> outs;
  const auto names = st.names();
  keep.reserve(names.size());
  for (const auto& name : names) {
    const TensorView& v = st.get(name);
    std::vector<int64_t> shape = v.shape;
    if (qt.contains(name)) {
      const auto bt = quant::block_type_from_name(qt[name]["type"].get<std::string>());
      shape = qt[name]["shape"].get<std::vector<int64_t>>();
      int64_t n = 1;
      for (auto d : shape) n *= d;
      if (v.dtype != DType::U8 || size_t(quant::quantized_bytes(bt, n, name)) != v.nbytes)
        fail(v.file, ": tensor '", name, "' does not hold ", n, " values of ", quant::block_info(bt).name);
      keep.emplace_back(size_t(n));
      quant::dequantize(bt, static_cast<const uint8_t*>(v.data), n, keep.back().data());
    } else if (v.dtype == DType::F32 || v.dtype == DType::BF16 || v.dtype == DType::F16) {
      keep.emplace_back(size_t(v.numel()));
      to_f32(v.dtype, v.data, keep.back().data(), size_t(v.numel()));
    } else {
      outs.push_back(TensorOut{name, v.dtype, v.shape, v.data, v.nbytes});
      continue;
    }
    outs.push_back(TensorOut{name, DType::F32, shape, keep.back().data(), keep.back().size() * 4});
  }
  cfg.erase("quantization_config");
  if (cfg.contains("torch_dtype")) cfg["torch_dtype"] = "float32";
  if (cfg.contains("dtype")) cfg["dtype"] = "float32";
  copy_other_files(in, out);
  write_safetensors(out + "/model.safetensors", outs);
  write_file_atomic(out + "/config.json", cfg.dump(2) + "\n");
}

}  // namespace gt
