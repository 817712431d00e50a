#include "gemmatune/tools/golden.h"

#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "gemmatune/generate/sampler.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/lora/merge.h"
#include "gemmatune/train/adamw.h"
#include "gemmatune/io/safetensors.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"


namespace gt {

namespace {

struct IdMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<int32_t> v;
  const int32_t* row(int64_t r) const { return v.data() + r * cols; }
};

IdMatrix read_ids(const TensorStore& g, const std::string& name) {
  const TensorView& t = g.get(name);
  if (t.dtype != DType::I32 || t.shape.size() != 2) fail(t.file, ": tensor '", name, "' must be I32 [B, T], got ", dtype_name(t.dtype), " ", t.shape_str());
  IdMatrix m;
  m.rows = t.shape[0];
  m.cols = t.shape[1];
  m.v.resize(size_t(m.rows * m.cols));
  std::memcpy(m.v.data(), t.data, m.v.size() * 4);
  return m;
}

}  // namespace

namespace {

// One fixture's golden computation: the model, the fixture's inputs, and one method per part.
struct GoldenRun {
  const std::string dir;
  const GoldenOptions& opt;
  std::string gj_path;
  nlohmann::json gj;
  TensorStore gs;
  Model model;
  Decoder dec;
  int64_t V;
  IdMatrix ids;
  int64_t B, T;
  std::unique_ptr<Adapter> adapter_;
  GoldenResult out;

  GoldenRun(const std::string& d, const GoldenOptions& o)
      : dir(d),
        opt(o),
        gj_path(d + "/golden.json"),
        gj(parse_json(gj_path)),
        gs(TensorStore::open_file(d + "/golden.safetensors")),
        model(Model::load(d + "/model")),
        dec(model),
        V(model.vocab_rows()),
        ids(read_ids(gs, "input_ids")),
        B(ids.rows),
        T(ids.cols) {}

  static nlohmann::json parse_json(const std::string& path) {
    try {
      return nlohmann::json::parse(read_file(path));
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": not valid JSON: ", e.what());
    }
  }

  Adapter& adapter() {
    if (!adapter_)
      adapter_ = std::make_unique<Adapter>(Adapter::load_peft(opt.adapter_dir.empty() ? dir + "/adapter" : opt.adapter_dir, model));
    return *adapter_;
  }

  std::vector<SeqChunk> full_rows() const {
    std::vector<SeqChunk> chunks;
    for (int64_t b = 0; b < B; ++b) chunks.push_back({nullptr, ids.row(b), T});
    return chunks;
  }

  void forward(const char* name) {
    auto& t = out.tensors[name];
    t.shape = {B, T, V};
    dec.forward(full_rows(), LogitsFor::All, t.f32);
  }

  void decode() {
    const int64_t P = gj.at("decode").at("prefill_len").get<int64_t>();
    if (P <= 0 || P >= T) fail(gj_path, ": decode.prefill_len ", P, " must be in (0, ", T, ")");
    std::vector<KvCache> caches;
    for (int64_t b = 0; b < B; ++b) caches.emplace_back(model, T);
    std::vector<SeqChunk> chunks;
    for (int64_t b = 0; b < B; ++b) chunks.push_back({&caches[size_t(b)], ids.row(b), P});
    auto& pre = out.tensors["decode_prefill_logits"];
    pre.shape = {B, P, V};
    dec.forward(chunks, LogitsFor::All, pre.f32);
    auto& st = out.tensors["decode_logits"];
    st.shape = {B, T - P, V};
    st.f32.assign(size_t(B * (T - P) * V), 0.0f);
    std::vector<float> lg;
    for (int64_t s = P; s < T; ++s) {
      for (int64_t b = 0; b < B; ++b) chunks[size_t(b)] = {&caches[size_t(b)], ids.row(b) + s, 1};
      dec.forward(chunks, LogitsFor::Last, lg);
      for (int64_t b = 0; b < B; ++b)
        std::memcpy(&st.f32[size_t((b * (T - P) + (s - P)) * V)], &lg[size_t(b * V)], size_t(V) * 4);
    }
  }

  void greedy(const char* ids_name, const char* logits_name) {
    IdMatrix prompt = read_ids(gs, "greedy_prompt_ids");
    const int64_t steps = gj.at("greedy").at("new_tokens").get<int64_t>();
    const int64_t Pg = prompt.cols;
    std::vector<KvCache> caches;
    for (int64_t b = 0; b < B; ++b) caches.emplace_back(model, Pg + steps);
    std::vector<SeqChunk> chunks;
    for (int64_t b = 0; b < prompt.rows; ++b) chunks.push_back({&caches[size_t(b)], prompt.row(b), Pg});
    auto& gi = out.tensors[ids_name];
    auto& gl = out.tensors[logits_name];
    gi.is_int = true;
    gi.shape = {prompt.rows, steps};
    gl.shape = {prompt.rows, steps, V};
    gi.i32.assign(size_t(prompt.rows * steps), 0);
    gl.f32.assign(size_t(prompt.rows * steps * V), 0.0f);
    std::vector<float> lg;
    std::vector<int32_t> next(size_t(prompt.rows));
    for (int64_t s = 0; s < steps; ++s) {
      dec.forward(chunks, LogitsFor::Last, lg);
      for (int64_t b = 0; b < prompt.rows; ++b) {
        next[size_t(b)] = argmax(&lg[size_t(b * V)], V);
        gi.i32[size_t(b * steps + s)] = next[size_t(b)];
        std::memcpy(&gl.f32[size_t((b * steps + s) * V)], &lg[size_t(b * V)], size_t(V) * 4);
        chunks[size_t(b)] = {&caches[size_t(b)], &next[size_t(b)], 1};
      }
    }
  }

  void lora() {
    dec.set_lora(bind_adapter(adapter(), model, float(opt.adapter_scale)));
    forward("lora_logits");
    greedy("lora_greedy_ids", "lora_greedy_logits");
    dec.set_lora({});
  }

  // Loss, every adapter gradient and one AdamW step.
  void train() {
    IdMatrix mask = read_ids(gs, "loss_mask");
    std::vector<uint8_t> m8;
    const std::vector<SeqChunk> chunks = full_rows();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) m8.push_back(uint8_t(mask.row(b)[t] != 0));
    auto base = dec.loss(chunks, m8);
    Adapter& ad = adapter();
    dec.set_lora(bind_adapter(ad, model, float(opt.adapter_scale)));
    std::vector<std::vector<float>> grads;
    auto lr = dec.forward_backward(chunks, m8, grads);
    dec.set_lora({});
    out.tensors["loss"] = {{1}, {float(lr.sum / double(lr.tokens))}, {}, false};
    out.tensors["base_loss"] = {{1}, {float(base.sum / double(base.tokens))}, {}, false};
    const auto& tr = gj.at("train");
    AdamW adamw(golden_adamw_config(gj));
    std::vector<std::vector<float>*> params;
    for (auto& mod : ad.modules) {
      params.push_back(&mod.A);
      params.push_back(&mod.B);
    }
    for (size_t i = 0; i < ad.modules.size(); ++i) {
      const auto& mod = ad.modules[i];
      out.tensors[mod.key_a + ".grad"] = {{mod.experts * mod.r, mod.in}, grads[2 * i], {}, false};
      out.tensors[mod.key_b + ".grad"] = {{mod.out, mod.r * mod.experts}, grads[2 * i + 1], {}, false};
    }
    adamw.step(params, grads, tr.at("lr").get<double>());
    for (const auto& mod : ad.modules) {
      out.tensors[mod.key_a + ".adamw"] = {{mod.experts * mod.r, mod.in}, mod.A, {}, false};
      out.tensors[mod.key_b + ".adamw"] = {{mod.out, mod.r * mod.experts}, mod.B, {}, false};
    }
    adapter_.reset();  // the optimizer step changed it
  }

  // W + delta in f32 as the merge command forms it (before rounding to the checkpoint's dtype).
  void merge() {
    for (const auto& mod : adapter().modules) {
      const std::string key = mod.kind == LoraKind::Linear ? mod.target + ".weight" : mod.target;
      auto& t = out.tensors[key + ".merged"];
      t.shape = mod.kind == LoraKind::Linear ? std::vector<int64_t>{mod.out, mod.in}
                                             : std::vector<int64_t>{mod.experts, mod.out, mod.in};
      t.f32 = merged_weight(model, mod, opt.adapter_scale);
    }
  }
};

}  // namespace

GoldenResult compute_golden(const std::string& dir, const std::vector<std::string>& parts, const GoldenOptions& opt) {
  GoldenRun run(dir, opt);
  for (const std::string& part : parts) {
    if (part == "forward") run.forward("logits");
    else if (part == "decode") run.decode();
    else if (part == "greedy") run.greedy("greedy_ids", "greedy_logits");
    else if (part == "lora") run.lora();
    else if (part == "train") run.train();
    else if (part == "merge") run.merge();
    else fail("golden: unknown part '", part, "' (expected forward, decode, greedy, lora, train, merge)");
  }
  return std::move(run.out);
}

AdamWConfig golden_adamw_config(const nlohmann::json& gj) {
  const auto& tr = gj.at("train");
  AdamWConfig c;
  c.beta1 = tr.at("betas")[0].get<double>();
  c.beta2 = tr.at("betas")[1].get<double>();
  c.eps = tr.at("eps").get<double>();
  c.weight_decay = tr.at("weight_decay").get<double>();
  return c;
}

void write_golden(const std::string& path, const GoldenResult& r) {
  std::vector<TensorOut> ts;
  for (const auto& [name, t] : r.tensors) {
    if (t.is_int) ts.push_back(tensor_out_i32(name, t.shape, t.i32));
    else ts.push_back(tensor_out_f32(name, t.shape, t.f32));
  }
  write_safetensors(path, ts);
}

}  // namespace gt
