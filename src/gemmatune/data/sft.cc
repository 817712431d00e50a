#include "gemmatune/data/sft.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

using ojson = nlohmann::ordered_json;

namespace {

// The assistant content rendered to find where a finished turn's header ends.
const char kProbe[] = "gemmatune_probe_answer_7f3a";

ojson prefix(const ojson& msgs, size_t k) {
  ojson out = ojson::array();
  for (size_t i = 0; i < k; ++i) out.push_back(msgs[i]);
  return out;
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// A short, printable quote of some text (newlines escaped).
std::string quote(const std::string& s, size_t max = 80) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\\n";
    else out += c;
  }
  if (out.size() > max) out = "..." + out.substr(out.size() - max);
  return "\"" + out + "\"";
}

}  // namespace

SftMode parse_sft_mode(const std::string& name) { return parse_enum(kSftModeNames, name, "sft_mode"); }

const char* sft_mode_name(SftMode m) { return enum_name(kSftModeNames, m).data(); }

OnBad parse_on_bad(const std::string& name) { return parse_enum(kOnBadNames, name, "on_bad_example"); }

Truncation parse_truncation(const std::string& name) { return parse_enum(kTruncationNames, name, "truncation"); }

void set_special_tokens(const Tokenizer& tok, const std::string& model_dir, SftOptions& opt) {
  if (tok.bos_id() >= 0) opt.bos_token = tok.token_text(tok.bos_id());
  if (tok.eos_id() >= 0) opt.eos_token = tok.token_text(tok.eos_id());
  const std::string cfg = model_dir.empty() ? std::string() : model_dir + "/tokenizer_config.json";
  if (cfg.empty() || !file_exists(cfg)) return;
  ojson j;
  try {
    j = ojson::parse(read_file(cfg));
  } catch (const nlohmann::json::exception& e) {
    fail(cfg, ": invalid JSON: ", e.what());
  }
  auto pick = [&](const char* key, std::string& out) {
    if (!j.is_object() || !j.contains(key)) return;
    const ojson& v = j[key];
    if (v.is_string()) out = v.get<std::string>();
    else if (v.is_object() && v.contains("content") && v["content"].is_string()) out = v["content"].get<std::string>();
  };
  pick("bos_token", opt.bos_token);
  pick("eos_token", opt.eos_token);
}

int64_t SftExample::trained() const {
  int64_t n = 0;
  for (uint8_t m : target_mask) n += m != 0;
  return n;
}

std::vector<uint8_t> next_token_mask(const std::vector<uint8_t>& target_mask) {
  std::vector<uint8_t> out(target_mask.size(), 0);
  for (size_t t = 0; t + 1 < target_mask.size(); ++t) out[t] = target_mask[t + 1];
  return out;
}

SftBuilder::SftBuilder(const Tokenizer& tok, const ChatTemplate* tmpl, SftOptions opt)
    : tok_(tok), tmpl_(tmpl), opt_(std::move(opt)) {
  GT_CHECK(opt_.template_vars.is_object(), "template variables must be a JSON object, found ",
           opt_.template_vars.type_name());
}

SftExample SftBuilder::build(const Conversation& c) const {
  try {
    SftExample ex = c.kind == Conversation::Kind::Text ? build_text(c) : build_chat(c);
    ex.origin = c.origin;
    return ex;
  } catch (const Error& e) {
    fail(c.origin, ": ", e.what());
  }
}

SftExample SftBuilder::build_text(const Conversation& c) const {
  SftExample ex;
  if (opt_.text_add_bos && tok_.bos_id() >= 0) ex.ids.push_back(tok_.bos_id());
  const std::vector<int32_t> body = tok_.encode(c.text, false);
  ex.ids.insert(ex.ids.end(), body.begin(), body.end());
  if (opt_.text_add_eos && tok_.eos_id() >= 0) ex.ids.push_back(tok_.eos_id());
  ex.target_mask.assign(ex.ids.size(), 1);
  if (!ex.ids.empty()) ex.target_mask[0] = 0;
  return ex;
}

namespace {

// A trained span of the whole render: tokens [begin, end) are trained; `inserted` (the generation
// prompt's block, untrained) goes right before them.
struct Span {
  size_t begin, end;
  std::vector<int32_t> inserted;
};

SftExample stitch(const std::vector<int32_t>& full, const std::vector<Span>& spans) {
  SftExample ex;
  size_t extra_len = 0;
  for (const Span& s : spans) extra_len += s.inserted.size();
  ex.ids.reserve(full.size() + extra_len);
  ex.target_mask.reserve(full.size() + extra_len);
  size_t pos = 0;
  for (const Span& s : spans) {
    ex.ids.insert(ex.ids.end(), full.begin() + long(pos), full.begin() + long(s.begin));
    ex.ids.insert(ex.ids.end(), s.inserted.begin(), s.inserted.end());
    ex.target_mask.resize(ex.ids.size(), 0);
    ex.ids.insert(ex.ids.end(), full.begin() + long(s.begin), full.begin() + long(s.end));
    ex.target_mask.resize(ex.ids.size(), 1);
    pos = s.end;
  }
  ex.ids.insert(ex.ids.end(), full.begin() + long(pos), full.end());
  ex.target_mask.resize(ex.ids.size(), 0);
  return ex;
}

}  // namespace

SftExample SftBuilder::build_chat(const Conversation& c) const {
  if (!tmpl_) fail("a chat example needs a chat template (none was given)");
  const ojson& msgs = c.messages;
  ojson extra = opt_.template_vars;
  for (auto it = c.extra.begin(); it != c.extra.end(); ++it) extra[it.key()] = it.value();
  auto render = [&](const ojson& m, bool gen, const char* what) {
    try {
      return tmpl_->render(m, gen, extra, opt_.bos_token, opt_.eos_token);
    } catch (const Error& e) {
      fail("chat template failed rendering ", what, ": ", e.what());
    }
  };
  auto show = [&](const std::vector<int32_t>& ids, size_t from, size_t to) {
    std::vector<int32_t> part(ids.begin() + long(std::min(from, ids.size())), ids.begin() + long(std::min(to, ids.size())));
    return quote(tok_.decode(part, false));
  };

  const std::string full_text = render(msgs, false, "the conversation");
  const std::vector<int32_t> full = tok_.encode(full_text, false);

  std::vector<Span> spans;
  const bool keep = opt_.mode == SftMode::KeepGenerationPrompt;
  for (size_t k = c.first_trained; k < msgs.size(); ++k) {
    if (msgs[k]["role"] != "assistant") continue;
    if (k == 0) fail("message 0 is an assistant message: there is no prompt before it to train it on");
    const ojson history = prefix(msgs, k);
    const std::string what_p = str("messages[:", k, "] with the generation prompt");
    const std::string p_text = render(history, true, what_p.c_str());
    const std::vector<int32_t> p = tok_.encode(p_text, false);
    std::vector<int32_t> f_own;
    const std::vector<int32_t>* f = &full;
    if (k + 1 < msgs.size()) {
      const std::string what_f = str("messages[:", k + 1, "]");
      f_own = tok_.encode(render(prefix(msgs, k + 1), false, what_f.c_str()), false);
      f = &f_own;
    }
    const size_t fp = common_prefix(*f, full);
    if (fp < f->size())
      fail("assistant message ", k, ": the conversation rendered up to this turn is not a token prefix of the "
           "whole conversation's render (they differ at token ", fp, ": ", show(*f, fp, fp + 8), " vs ",
           show(full, fp, fp + 8), "); the template renders this turn differently once later messages follow "
           "(e.g. it drops an earlier turn's reasoning), so its trained tokens cannot be cut from one render");
    const size_t L = common_prefix(p, *f);
    if (L == 0)
      fail("assistant message ", k, ": the generation prompt and the finished turn share no token prefix");
    if (L >= f->size())
      fail("assistant message ", k, ": the finished turn adds no token after the generation prompt ",
           show(p, L > 8 ? L - 8 : 0, p.size()));
    std::vector<int32_t> g(p.begin() + long(L), p.end());
    // The probe verdict depends on the inserted block and the turn header before L; a verdict
    // already reached for the same G and the same tokens before L back to (and including) the
    // nearest special token (at most 16) is reused.
    std::vector<int32_t> key;
    if (!g.empty()) {
      size_t from = L;
      while (from > 0 && L - from < 16) {
        --from;
        if (tok_.is_special(p[from])) break;
      }
      key = g;
      key.push_back(-1);
      key.insert(key.end(), p.begin() + long(from), p.begin() + long(L));
    }
    int verdict = 0;  // 1: L is the header's end; 2: L is past it
    if (!g.empty()) {
      std::lock_guard<std::mutex> lock(probe_mu_);
      auto it = probe_cache_.find(key);
      if (it != probe_cache_.end()) verdict = it->second;
    }
    if (verdict == 2 && keep)
      fail("assistant message ", k, ": mode keep_generation_prompt cannot insert the generation prompt's ",
           show(g, 0, g.size()), ": the finished turn already opens that block itself (it continues with ",
           show(*f, L, L + 6), ", e.g. a reasoning field with thinking off), so the insertion would land inside it "
           "(MaxText #4010's corruption). Use mode maxtext_default for this data");
    if (!g.empty() && verdict == 0) {
      // Where does a finished turn's header end? Render the history plus a probe answer.
      ojson probe = history;
      probe.push_back(ojson{{"role", "assistant"}, {"content", kProbe}});
      const std::string q = render(probe, false, "a probe answer after the history");
      const size_t at = q.find(kProbe);
      if (at == std::string::npos)
        fail("assistant message ", k, ": the template does not write an assistant's content into its turn "
             "(probe answer not found), so the trained span cannot be checked");
      const std::string head = q.substr(0, at);
      if (p_text.compare(0, head.size(), head) != 0) {
        size_t d = 0;
        while (d < head.size() && d < p_text.size() && head[d] == p_text[d]) ++d;
        fail("assistant message ", k, ": the generation prompt disagrees with the template's finished turns in a "
             "way neither SFT mode explains: inference prompts continue ", quote(p_text.substr(d), 60),
             " where finished turns write ", quote(head.substr(d), 60), " (after ", quote(head.substr(0, d), 40), ")");
      }
      // Tokens of the header: those head's tokens that begin the generation prompt's tokens too.
      const size_t H = common_prefix(tok_.encode(head, false), p);
      if (L < H)
        fail("assistant message ", k, ": the finished turn departs from the generation prompt inside the turn "
             "header (at token ", L, ": ", show(*f, L, L + 6), " vs ", show(p, L, L + 6),
             "); neither SFT mode explains this template");
      if (keep && L > H)
        fail("assistant message ", k, ": mode keep_generation_prompt cannot insert the generation prompt's ",
             show(g, 0, g.size()), ": the finished turn already opens that block itself (it continues ",
             show(*f, H, L), " with ", show(*f, L, L + 6),
             ", e.g. a reasoning field with thinking off), so the insertion would land inside it (MaxText "
             "#4010's corruption). Use mode maxtext_default for this data");
      std::lock_guard<std::mutex> lock(probe_mu_);
      if (probe_cache_.size() < 4096) probe_cache_[key] = L == H ? 1 : 2;
    }
    if (!spans.empty() && L < spans.back().end)
      fail("assistant message ", k, ": its trained span starts at token ", L,
           ", inside the previous assistant turn's span (which ends at ", spans.back().end, ")");
    spans.push_back(Span{L, f->size(), keep ? std::move(g) : std::vector<int32_t>()});
  }

  return stitch(full, spans);
}

// ---------------------------------------------------------------------------------------------
// SftDataset

SftDataset::SftDataset(JsonlRecords records, std::shared_ptr<const SftBuilder> builder, DataOptions opt)
    : records_(std::move(records)), builder_(std::move(builder)), opt_(std::move(opt)) {
  GT_CHECK(builder_, "SftDataset needs a builder");
  GT_CHECK(opt_.max_len >= 0, "max_len must be >= 0, got ", opt_.max_len);
  state_.assign(records_.size(), Pending);
  examples_.resize(records_.size());
}

std::unique_ptr<SftDataset> SftDataset::open(const std::vector<std::string>& paths,
                                             std::shared_ptr<const SftBuilder> builder, DataOptions opt) {
  JsonlRecords r;
  for (const auto& f : expand_data_paths(paths)) r.add_file(f);
  return std::make_unique<SftDataset>(std::move(r), std::move(builder), std::move(opt));
}

SftDataset::Outcome SftDataset::prepare(size_t i) const {
  Outcome o{Ok, {}, {}};
  const std::string origin = records_.origin(i);
  try {
    o.ex = builder_->build(parse_conversation(records_.line(i), opt_.conv, origin));
  } catch (const Error& e) {
    o.state = opt_.on_bad == OnBad::Fail ? Failed : Skipped;
    o.message = e.what();
    return o;
  }
  const int64_t n = int64_t(o.ex.ids.size());
  if (opt_.max_len > 0 && n > opt_.max_len) {
    switch (opt_.truncation) {
      case Truncation::Fail:
        o.state = opt_.on_bad == OnBad::Fail ? Failed : Skipped;
        o.message = str(origin, ": example has ", n, " tokens, more than max_len ", opt_.max_len);
        break;
      case Truncation::Drop:
        o.state = Dropped;
        o.message = str(origin, ": dropped: ", n, " tokens, more than max_len ", opt_.max_len);
        break;
      case Truncation::Truncate:
        o.ex.ids.resize(size_t(opt_.max_len));
        o.ex.target_mask.resize(size_t(opt_.max_len));
        if (o.ex.trained() == 0) {
          o.state = Dropped;
          o.message = str(origin, ": dropped: ", n, " tokens, and its first max_len ", opt_.max_len,
                          " hold no trained token");
        } else {
          o.state = Truncated;
          o.message = str(origin, ": truncated from ", n, " to ", opt_.max_len, " tokens");
        }
        break;
    }
    if (o.state != Truncated) o.ex = SftExample();
  }
  return o;
}

void SftDataset::store(size_t i, Outcome&& o) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_[i] != Pending) return;
  state_[i] = o.state;
  if (o.state == Ok || o.state == Truncated) examples_[i] = std::move(o.ex);
  if (!o.message.empty()) messages_[i] = std::move(o.message);
}

const SftExample* SftDataset::get(size_t i) {
  GT_CHECK(i < records_.size(), "example index ", i, " out of range (", records_.size(), " records)");
  uint8_t s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = state_[i];
  }
  if (s == Pending) {
    store(i, prepare(i));
    std::lock_guard<std::mutex> lock(mu_);
    s = state_[i];
  }
  if (s == Failed) {
    std::lock_guard<std::mutex> lock(mu_);
    throw Error(messages_[i]);
  }
  return (s == Ok || s == Truncated) ? &examples_[i] : nullptr;
}

void SftDataset::prepare_all(int threads, const std::function<void(size_t, size_t)>& progress) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  const size_t n = records_.size();
  threads = int(std::min<size_t>(size_t(threads), std::max<size_t>(1, n)));
  std::atomic<size_t> done{0};
  auto work = [&](size_t t) {
    for (size_t i = t; i < n; i += size_t(threads)) {
      bool pending;
      {
        std::lock_guard<std::mutex> lock(mu_);
        pending = state_[i] == Pending;
      }
      if (pending) store(i, prepare(i));
      const size_t d = ++done;
      if (t == 0 && progress && d % 1000 == 0) progress(d, n);
    }
  };
  if (threads == 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work, size_t(t));
    work(0);
    for (auto& th : pool) th.join();
  }
  if (progress) progress(n, n);
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < n; ++i)
    if (state_[i] == Failed) throw Error(messages_[i]);
}

DataReport SftDataset::report() const {
  std::lock_guard<std::mutex> lock(mu_);
  DataReport r;
  r.records = records_.size();
  for (size_t i = 0; i < state_.size(); ++i) {
    const uint8_t s = state_[i];
    if (s == Pending) continue;
    ++r.prepared;
    if (s == Ok || s == Truncated) {
      const SftExample& ex = examples_[i];
      ++r.examples;
      const int64_t n = int64_t(ex.ids.size());
      r.tokens += n;
      r.trained_tokens += ex.trained();
      r.max_tokens = std::max(r.max_tokens, n);
      int64_t b = 1;
      while (b < n) b *= 2;
      ++r.length_hist[b];
    }
    auto msg = messages_.find(i);
    switch (s) {
      case Skipped:
      case Failed:
        ++r.skipped;
        r.issues.push_back({DataIssue::Kind::Skipped, i, msg->second});
        break;
      case Dropped:
        ++r.dropped;
        r.issues.push_back({DataIssue::Kind::Dropped, i, msg->second});
        break;
      case Truncated:
        ++r.truncated;
        r.issues.push_back({DataIssue::Kind::Truncated, i, msg->second});
        break;
      default:
        break;
    }
  }
  return r;
}

std::string DataReport::summary() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%zu examples, %lld tokens (%.1f%% trained), %zu skipped, %zu dropped (too long), %zu truncated",
                examples, (long long)tokens, tokens ? 100.0 * double(trained_tokens) / double(tokens) : 0.0, skipped,
                dropped, truncated);
  std::string s = buf;
  if (prepared < records) s += str(" (", prepared, " of ", records, " records prepared)");
  return s;
}

}  // namespace gt
