// Tokenizer: loading tokenizer.json, encoding (added tokens, normalizer, pre-tokenizer, BPE with
// byte fallback, post-processor) and decoding (decoder chain), with the semantics of Hugging
// Face `tokenizers` (tokenizer/added_vocabulary.rs, models/bpe/{model,word}.rs, decoders/*).
//
// Loading: the 33 MB Gemma file is mostly model.vocab and model.merges. A small JSON scanner
// walks the document once, checking its syntax; vocab and merges are read in place into flat
// tables (string arena + open-addressing index, pair -> (rank, id) table), and only the small
// sections (added_tokens, normalizer, ...) go through nlohmann::json.
//
// Encoding speed: BPE runs per word with a 4-ary heap of candidate merges (word.rs's algorithm,
// with its tie-breaking and stale-entry rule). Gemma has no pre-tokenizer, so a "word" is all
// the text between two added tokens; it is cut further before each '▁' across which no merge
// can reach (decided from the vocabulary at load, so the result is unchanged), and short words
// go through a per-thread cache.
//
// This file: loading tokenizer.json.
// (Moved from tokenizer.cc without changes to the code.)
#include "gemmatune/data/tokenizer_impl.h"
#include "gemmatune/data/tokenizer_json_scanner.h"

namespace gt {

using nlohmann::json;
using namespace ::gt::tokenizer_internal;
using detail::TokenizerImpl;

namespace {

std::atomic<uint64_t> g_tokenizer_serial{0};

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

class Loader {
 public:
  Loader(const std::string& text, const std::string& origin, TokenizerImpl& t)
      : doc_(text), origin_(origin), t_(t) {}

  void load() {
    Scanner top(doc_, doc_, origin_);
    std::string_view added, normalizer, pre, post, decoder, version;
    bool have_model = false, have_added = false, have_norm = false, have_pre = false, have_post = false,
         have_dec = false, have_version = false;
    if (top.peek() != '{') top.fail_at(top.pos(), str("expected a JSON object at the top level, found ", top.found()));
    top.object("in the top-level object", [&](const std::string& key) {
      if (key == "model") {
        if (have_model) top.fail_at(top.pos(), "a second \"model\" section");
        have_model = true;
        read_model(top);
        return;
      }
      std::string_view v = top.value();
      if (key == "added_tokens") added = v, have_added = true;
      else if (key == "normalizer") normalizer = v, have_norm = true;
      else if (key == "pre_tokenizer") pre = v, have_pre = true;
      else if (key == "post_processor") post = v, have_post = true;
      else if (key == "decoder") decoder = v, have_dec = true;
      else if (key == "version") version = v, have_version = true;
    });
    if (!top.at_end()) top.fail_at(top.pos(), "unexpected text after the top-level object");
    if (have_version) {
      json v = sub(version, "version");
      if (!v.is_string() || v.get<std::string>() != "1.0")
        fail(origin_, ": unsupported tokenizer.json version ", v.dump(), " (expected \"1.0\")");
    }
    if (!have_model) fail(origin_, ": no \"model\" section (expected a BPE model)");
    finish_model();
    if (have_norm) load_normalizer(sub(normalizer, "normalizer"), t_.normalizer);
    if (have_pre) load_pre_tokenizer(sub(pre, "pre_tokenizer"), t_.pre_tokenizer);
    if (have_added) load_added(sub(added, "added_tokens"));
    finish_ids();
    if (have_post) load_post(sub(post, "post_processor"));
    if (have_dec) {
      json d = sub(decoder, "decoder");
      if (!d.is_null()) {
        t_.has_decoder = true;
        load_decoder(d, t_.decoder);
      }
    }
    plan_streaming();
  }

 private:
  const std::string& doc_;
  const std::string& origin_;
  TokenizerImpl& t_;
  // The model section, gathered in one pass: vocab and merges are read in place when their
  // format is known by then (the usual key order), else their text is kept for later.
  json model_fields_ = json::object();
  bool vocab_done_ = false, merges_done_ = false, have_vocab_ = false, have_merges_ = false;
  std::string_view vocab_span_, merges_span_;
  std::vector<std::array<int32_t, 3>> merge_list_;  // (left, right, merged) in rank order

  json sub(std::string_view span, const char* what) {
    try {
      return json::parse(span.begin(), span.end());
    } catch (const json::exception& e) {
      Scanner s(doc_, span, origin_);
      s.fail_at(span.data(), str("in \"", what, "\": ", e.what()));
    }
  }

  [[noreturn]] void unsupported(const std::string& what, const json& j) {
    std::string d = j.dump();
    if (d.size() > 200) d = d.substr(0, 200) + "...";
    fail(origin_, ": unsupported ", what, ": ", d);
  }

  static std::string type_of(const json& j) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
    return j["type"].get<std::string>();
  }

  std::string get_string(const json& j, const char* key, const char* what) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_string())
      fail(origin_, ": ", what, ": expected a string field \"", key, "\", found ", j.dump());
    return j[key].get<std::string>();
  }

  bool get_bool(const json& j, const char* key, bool def, const char* what) {
    if (!j.is_object() || !j.contains(key) || j[key].is_null()) return def;
    if (!j[key].is_boolean()) fail(origin_, ": ", what, ": field \"", key, "\" must be true or false, found ", j[key].dump());
    return j[key].get<bool>();
  }

  // A Replace/Split pattern: {"String": "..."}; {"Regex": ...} is not supported.
  std::string string_pattern(const json& j, const char* what) {
    if (j.is_object() && j.contains("String") && j["String"].is_string()) {
      std::string p = j["String"].get<std::string>();
      if (p.empty()) unsupported(str(what, " with an empty pattern"), j);
      return p;
    }
    unsupported(str(what, " pattern (only {\"String\": ...} patterns are supported)"), j);
  }

  // ---- model ----
  void read_model(Scanner& s) {
    if (s.peek() != '{') s.fail_at(s.pos(), str("\"model\" must be an object, found ", s.found()));
    s.object("in \"model\"", [&](const std::string& key) {
      if (key == "vocab") {
        have_vocab_ = true;
        if (s.peek() == '{' && !vocab_done_) {
          load_vocab(s);
          vocab_done_ = true;
        } else {
          vocab_span_ = s.value();
        }
      } else if (key == "merges") {
        have_merges_ = true;
        // Merged tokens depend on continuing_subword_prefix: read in place once it is known.
        if (vocab_done_ && model_fields_.contains("continuing_subword_prefix") && !merges_done_) {
          read_model_options();
          load_merges(s);
          merges_done_ = true;
        } else {
          merges_span_ = s.value();
        }
      } else {
        model_fields_[key] = sub(s.value(), "model");
      }
    });
  }

  void read_model_options() {
    const json& m = model_fields_;
    auto opt_string = [&](const char* key, std::string& out) {
      if (!m.contains(key) || m[key].is_null()) return false;
      if (!m[key].is_string()) fail(origin_, ": model.", key, " must be a string or null, found ", m[key].dump());
      out = m[key].get<std::string>();
      return true;
    };
    t_.has_unk = opt_string("unk_token", t_.unk_token);
    t_.has_prefix = opt_string("continuing_subword_prefix", t_.prefix);
    t_.has_suffix = opt_string("end_of_word_suffix", t_.suffix);
    t_.fuse_unk = get_bool(m, "fuse_unk", false, "model");
    t_.byte_fallback = get_bool(m, "byte_fallback", false, "model");
    t_.ignore_merges = get_bool(m, "ignore_merges", false, "model");
  }

  void finish_model() {
    const json& m = model_fields_;
    std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "";
    if (!m.contains("type") && have_merges_) type = "BPE";
    if (type != "BPE")
      fail(origin_, ": unsupported model type '", type.empty() ? m.value("type", json()).dump() : type,
           "' (expected BPE)");
    if (!have_vocab_) fail(origin_, ": the BPE model has no \"vocab\"");
    if (m.contains("dropout") && !m["dropout"].is_null()) {
      const json& d = m["dropout"];
      if (!d.is_number() || d.get<double>() != 0.0) unsupported("BPE dropout (only null or 0 is supported)", d);
    }
    read_model_options();
    if (!vocab_done_) {
      Scanner s(doc_, vocab_span_, origin_);
      load_vocab(s);
    }
    if (have_merges_ && !merges_done_) {
      Scanner s(doc_, merges_span_, origin_);
      load_merges(s);
    }
    t_.merges.reserve(merge_list_.size());
    for (size_t r = 0; r < merge_list_.size(); ++r) {
      if (r + 16 < merge_list_.size()) t_.merges.prefetch(uint32_t(merge_list_[r + 16][0]), uint32_t(merge_list_[r + 16][1]));
      const auto& m3 = merge_list_[r];
      t_.merges.insert(uint32_t(m3[0]), uint32_t(m3[1]), uint32_t(r), m3[2]);
    }
    merge_list_ = {};
  }

  static constexpr size_t kMaxVocabHoles = size_t(1) << 16;

  void load_vocab(Scanner& s) {
    Vocab& v = t_.vocab;
    v.reserve(1 << 18, 1 << 22);
    if (s.peek() != '{') s.fail_at(s.pos(), str("model.vocab must be an object of token -> id, found ", s.found()));
    s.object("in model.vocab", [&](const std::string& key) {
      const char* at = s.pos();
      int64_t id = s.integer("as a model.vocab id");
      if (id < 0 || id >= (int64_t(1) << 24)) s.fail_at(at, str("model.vocab id ", id, " out of range [0, 2^24)"));
      if (!v.add(key, int32_t(id)))
        s.fail_at(at, str("model.vocab gives id ", id, " to both '", v.at(int32_t(id)), "' and '", key, "'"));
    });
    v.build([&](int32_t a, int32_t b) {
      fail(origin_, ": model.vocab has the token '", v.at(a), "' twice (ids ", a, " and ", b, ")");
    });
    // Per-id tables (about 40 bytes an id) are sized by the largest id: a few tokens with ids near
    // 2^24 would take 700 MB and seconds to load. Real vocabularies number their tokens densely.
    if (v.id_limit() > 2 * v.count() + kMaxVocabHoles)
      fail(origin_, ": model.vocab has ", v.count(), " tokens but ids up to ", v.id_limit() - 1,
           " (more than ", kMaxVocabHoles, " unused ids; expected ids numbered from 0 without large gaps)");
  }

  // Merges are read in batches: the three vocabulary lookups of each merge are cache misses,
  // so a batch's table slots, then the strings they point to, are prefetched before lookup.
  struct PendingMerge {
    const char* at;
    std::string a, b, joined;
    uint64_t h[3];
  };

  void load_merges(Scanner& s) {
    size_t prefix_len = t_.has_prefix ? t_.prefix.size() : 0;
    merge_list_.reserve(1 << 19);
    constexpr size_t kBatch = 32;
    std::vector<PendingMerge> batch(kBatch);
    size_t n = 0;
    const Vocab& v = t_.vocab;
    auto resolve = [&]() {
      for (size_t k = 0; k < n; ++k)
        for (uint64_t h : batch[k].h) v.prefetch_text(h);
      for (size_t k = 0; k < n; ++k) {
        const PendingMerge& m = batch[k];
        int32_t ia = v.find_hashed(m.a, m.h[0]), ib = v.find_hashed(m.b, m.h[1]);
        if (ia < 0) s.fail_at(m.at, str("merge token '", m.a, "' is not in model.vocab"));
        if (ib < 0) s.fail_at(m.at, str("merge token '", m.b, "' is not in model.vocab"));
        int32_t in = v.find_hashed(m.joined, m.h[2]);
        if (in < 0) s.fail_at(m.at, str("merged token '", m.joined, "' is not in model.vocab"));
        merge_list_.push_back({ia, ib, in});
      }
      n = 0;
    };
    char form = 0;  // '"' or '[': `tokenizers` takes one form for the whole list
    if (s.peek() != '[') s.fail_at(s.pos(), str("model.merges must be an array, found ", s.found()));
    s.array("in model.merges", [&]() {
      PendingMerge& m = batch[n];
      m.at = s.pos();
      char c = s.peek();
      if (form == 0) form = c;
      if (c != form) s.fail_at(m.at, "model.merges mixes \"a b\" strings and [\"a\", \"b\"] pairs");
      if (c == '"') {
        s.string(m.a, "in model.merges");
        size_t sp = m.a.find(' ');
        if (sp == std::string::npos || m.a.find(' ', sp + 1) != std::string::npos)
          s.fail_at(m.at, str("merge \"", m.a, "\" is not two tokens separated by one space"));
        m.b.assign(m.a, sp + 1);
        m.a.resize(sp);
      } else if (c == '[') {
        s.expect('[', "in model.merges");
        s.string(m.a, "in a model.merges pair");
        s.expect(',', "in a model.merges pair");
        s.string(m.b, "in a model.merges pair");
        s.expect(']', "after a model.merges pair (expected exactly two tokens)");
      } else {
        s.fail_at(m.at, str("expected a merge (\"a b\" or [\"a\", \"b\"]), found ", s.found()));
      }
      if (m.b.size() < prefix_len) s.fail_at(m.at, str("merge token '", m.b, "' is shorter than the subword prefix"));
      m.joined.assign(m.a);
      m.joined.append(m.b, prefix_len);
      m.h[0] = Vocab::hash(m.a);
      m.h[1] = Vocab::hash(m.b);
      m.h[2] = Vocab::hash(m.joined);
      for (uint64_t h : m.h) v.prefetch(h);
      if (++n == kBatch) resolve();
    });
    resolve();
  }

  // ---- added tokens (AddedVocabulary::add_tokens, one at a time, in file order) ----
  void load_added(const json& arr) {
    if (!arr.is_array()) fail(origin_, ": \"added_tokens\" must be an array, found ", arr.dump().substr(0, 100));
    std::unordered_set<std::string> special_set;
    int32_t max_added = -1;
    for (const json& j : arr) {
      if (!j.is_object()) fail(origin_, ": added_tokens: expected objects, found ", j.dump());
      AddedToken a;
      a.content = get_string(j, "content", "added_tokens");
      a.single_word = get_bool(j, "single_word", false, "added_tokens");
      a.lstrip = get_bool(j, "lstrip", false, "added_tokens");
      a.rstrip = get_bool(j, "rstrip", false, "added_tokens");
      a.normalized = get_bool(j, "normalized", true, "added_tokens");
      a.special = get_bool(j, "special", false, "added_tokens");
      if (!j.contains("id") || !j["id"].is_number_integer() || j["id"].get<int64_t>() < 0)
        fail(origin_, ": added_tokens: expected a non-negative integer \"id\" in ", j.dump());
      if (a.single_word) unsupported("added token option single_word=true", j);
      if (a.content.empty()) continue;  // ignored by `tokenizers`
      if (a.special) special_set.insert(a.content);
      // The id `tokenizers` gives it: the existing one (added, then model vocab), else the next
      // free one after the vocabulary. The "id" field is only checked there, with a warning.
      int32_t id;
      auto it = t_.added_index.find(a.content);
      if (it != t_.added_index.end()) {
        id = it->second;
      } else if (int32_t v = t_.vocab.find(a.content); v >= 0) {
        id = v;
      } else if (max_added < 0) {
        id = int32_t(t_.vocab.count());
      } else {
        int32_t vocab_len = int32_t(t_.vocab.count());  // entries, as Model::get_vocab_size()
        id = (max_added >= vocab_len || vocab_len == 0) ? max_added + 1 : vocab_len;
      }
      a.id = id;
      max_added = std::max(max_added, id);
      if (it != t_.added_index.end()) {
        for (AddedToken& e : t_.added)
          if (e.content == a.content) e = a;
      } else {
        t_.added_index.emplace(a.content, id);
        t_.added.push_back(a);
      }
    }
    for (AddedToken& a : t_.added) a.special = special_set.count(a.content) != 0;
  }

  void finish_ids() {
    int32_t n = int32_t(t_.vocab.id_limit());
    for (const AddedToken& a : t_.added) n = std::max(n, a.id + 1);
    t_.n_ids = n;
    t_.pieces.assign(size_t(n), std::string());
    t_.has_token.assign(size_t(n), 0);
    t_.special.assign(size_t(n), 0);
    for (size_t id = 0; id < t_.vocab.id_limit(); ++id)
      if (t_.vocab.has(int32_t(id))) {
        t_.pieces[id] = t_.vocab.at(int32_t(id));
        t_.has_token[id] = 1;
      }
    for (const AddedToken& a : t_.added) {
      t_.pieces[size_t(a.id)] = a.content;
      t_.has_token[size_t(a.id)] = 1;
    }
    // `tokenizers` decides "special" by the token string an id decodes to: the special added
    // token's own id, and a vocabulary id whose string is the same content.
    for (const AddedToken& a : t_.added) {
      if (!a.special) continue;
      t_.special[size_t(a.id)] = 1;
      int32_t v = t_.vocab.find(a.content);
      if (v >= 0 && t_.pieces[size_t(v)] == a.content) t_.special[size_t(v)] = 1;
    }
    // Tries: non-normalized tokens match the raw text, normalized ones the normalized pieces.
    for (size_t i = 0; i < t_.added.size(); ++i) {
      const AddedToken& a = t_.added[i];
      if (a.normalized) {
        std::string p = t_.normalize(a.content);
        if (p != a.content) t_.decode_override[a.id] = p;
        t_.norm_trie.add(p, int32_t(i));
      } else {
        t_.raw_trie.add(a.content, int32_t(i));
      }
    }
    for (const AddedToken& a : t_.added) {
      if (!a.special) continue;
      if (a.content == "<bos>") t_.bos = a.id;
      if (a.content == "<eos>") t_.eos = a.id;
      if (a.content == "<pad>") t_.pad = a.id;
    }
    // BPE lookups.
    for (int i = 0; i < 256; ++i) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", i);
      t_.byte_ids[i] = t_.vocab.find(name);
    }
    if (t_.has_unk) t_.unk_id = t_.vocab.find(t_.unk_token);
    if (!t_.has_prefix && !t_.has_suffix) {
      t_.cp_to_id.assign(0x110000, -1);
      for (size_t id = 0; id < t_.vocab.id_limit(); ++id) {
        if (!t_.vocab.has(int32_t(id))) continue;
        std::string_view s = t_.vocab.at(int32_t(id));
        if (s.empty() || s.size() > 4) continue;
        size_t len = utf8::char_len(s.data(), s.size());
        if (len != s.size() || (len == 1 && uint8_t(s[0]) >= 0x80)) continue;
        t_.cp_to_id[utf8::decode(s.data(), len)] = int32_t(id);
      }
      plan_chunking();
    }
  }

  // Whether words can be cut before '▁' (TokenizerImpl::bpe): needs plain code point symbols
  // (no subword prefix/suffix), no ignore_merges (it looks at whole words) and '▁' in the vocab.
  void plan_chunking() {
    if (t_.ignore_merges || t_.cp_to_id[kMetaspace] < 0) return;
    const std::string_view mark = "\xE2\x96\x81";
    std::vector<uint32_t>& j = t_.space_joiners;
    for (size_t id = 0; id < t_.vocab.id_limit(); ++id) {
      if (!t_.vocab.has(int32_t(id))) continue;
      std::string_view s = t_.vocab.at(int32_t(id));
      for (size_t p = s.find(mark, 1); p != std::string_view::npos; p = s.find(mark, p + 1)) {
        size_t q = p - 1;
        while (q > 0 && (uint8_t(s[q]) & 0xC0) == 0x80) --q;
        size_t len = utf8::char_len(s.data() + q, s.size() - q);
        uint32_t cp = utf8::decode(s.data() + q, len);
        if (q + len != p) cp = uint8_t(s[p - 1]);  // not valid UTF-8: be conservative
        if (cp != kMetaspace) j.push_back(cp);
      }
    }
    std::sort(j.begin(), j.end());
    j.erase(std::unique(j.begin(), j.end()), j.end());
    t_.chunk_at_space = true;
  }

  // ---- normalizer / pre-tokenizer ----
  void load_normalizer(const json& j, std::vector<NormStep>& out) {
    if (j.is_null()) return;
    std::string type = type_of(j);
    if (type == "Sequence") {
      if (!j.contains("normalizers") || !j["normalizers"].is_array()) unsupported("normalizer", j);
      for (const json& n : j["normalizers"]) load_normalizer(n, out);
    } else if (type == "Replace") {
      out.push_back({NormStep::kReplace, string_pattern(j.value("pattern", json()), "Replace normalizer"),
                     get_string(j, "content", "Replace normalizer")});
    } else if (type == "Prepend") {
      out.push_back({NormStep::kPrepend, get_string(j, "prepend", "Prepend normalizer"), ""});
    } else {
      unsupported("normalizer", j);
    }
  }

  void load_pre_tokenizer(const json& j, std::vector<PreTokStep>& out) {
    if (j.is_null()) return;
    std::string type = type_of(j);
    if (type == "Sequence") {
      if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) unsupported("pre_tokenizer", j);
      for (const json& p : j["pretokenizers"]) load_pre_tokenizer(p, out);
    } else if (type == "Split") {
      PreTokStep st;
      st.pattern = string_pattern(j.value("pattern", json()), "Split pre_tokenizer");
      std::string b = get_string(j, "behavior", "Split pre_tokenizer");
      if (b == "Removed") st.behavior = SplitBehavior::kRemoved;
      else if (b == "Isolated") st.behavior = SplitBehavior::kIsolated;
      else if (b == "MergedWithPrevious") st.behavior = SplitBehavior::kMergedWithPrevious;
      else if (b == "MergedWithNext") st.behavior = SplitBehavior::kMergedWithNext;
      else if (b == "Contiguous") st.behavior = SplitBehavior::kContiguous;
      else unsupported("Split behavior", j);
      st.invert = get_bool(j, "invert", false, "Split pre_tokenizer");
      out.push_back(st);
    } else {
      unsupported("pre_tokenizer", j);
    }
  }

  // ---- post-processor ----
  void load_post(const json& j) {
    if (j.is_null()) return;
    std::string type = type_of(j);
    if (type == "Sequence") {
      if (!j.contains("processors") || !j["processors"].is_array()) unsupported("post_processor", j);
      for (const json& p : j["processors"]) load_post(p);
    } else if (type == "ByteLevel") {
      // Only trims offsets; ids are unchanged.
    } else if (type == "TemplateProcessing") {
      if (!j.contains("single") || !j["single"].is_array()) unsupported("TemplateProcessing without \"single\"", j);
      std::vector<int32_t> pre, post;
      bool seen_seq = false;
      const json specials = j.value("special_tokens", json::object());
      for (const json& piece : j["single"]) {
        if (piece.contains("Sequence")) {
          std::string seq = piece["Sequence"].value("id", "A");
          if (seq != "A" || seen_seq) unsupported("TemplateProcessing single template", j["single"]);
          seen_seq = true;
        } else if (piece.contains("SpecialToken")) {
          std::string name = get_string(piece["SpecialToken"], "id", "TemplateProcessing");
          if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
            fail(origin_, ": post_processor: special token '", name, "' is used but not defined in special_tokens");
          for (const json& id : specials[name]["ids"]) {
            if (!id.is_number_integer()) fail(origin_, ": post_processor: bad id for '", name, "': ", id.dump());
            (seen_seq ? post : pre).push_back(id.get<int32_t>());
          }
        } else {
          unsupported("TemplateProcessing piece", piece);
        }
      }
      t_.post_prefix.push_back(pre);
      t_.post_suffix.push_back(post);
    } else {
      unsupported("post_processor", j);
    }
  }

  // ---- decoder ----
  void load_decoder(const json& j, std::vector<DecStep>& out) {
    std::string type = type_of(j);
    if (type == "Sequence") {
      if (!j.contains("decoders") || !j["decoders"].is_array()) unsupported("decoder", j);
      for (const json& d : j["decoders"]) load_decoder(d, out);
    } else if (type == "Replace") {
      DecStep s{DecStep::kReplace, string_pattern(j.value("pattern", json()), "Replace decoder"),
                get_string(j, "content", "Replace decoder")};
      out.push_back(s);
    } else if (type == "ByteFallback") {
      out.push_back(DecStep{DecStep::kByteFallback, "", ""});
    } else if (type == "Fuse") {
      out.push_back(DecStep{DecStep::kFuse, "", ""});
    } else if (type == "Strip") {
      DecStep s{DecStep::kStrip, "", ""};
      std::string c = get_string(j, "content", "Strip decoder");
      size_t len = c.empty() ? 0 : utf8::char_len(c.data(), c.size());
      if (c.empty() || len != c.size()) unsupported("Strip decoder content (expected one character)", j);
      s.strip_char = utf8::decode(c.data(), len);
      if (!j.contains("start") || !j["start"].is_number_unsigned() || !j.contains("stop") ||
          !j["stop"].is_number_unsigned())
        unsupported("Strip decoder (expected unsigned start and stop)", j);
      s.start = j["start"].get<size_t>();
      s.stop = j["stop"].get<size_t>();
      out.push_back(s);
    } else {
      unsupported("decoder", j);
    }
  }

  // Per-token steps, at most one ByteFallback, then only Fuse: push() can decode token by token.
  void plan_streaming() {
    t_.streamable = true;
    if (!t_.has_decoder) return;  // tokens joined with ' '
    bool fused = false;
    for (const DecStep& s : t_.decoder) {
      if (s.kind == DecStep::kFuse) {
        fused = true;
        continue;
      }
      if (fused) {
        t_.streamable = false;
        return;
      }
      if (s.kind == DecStep::kByteFallback) {
        if (t_.stream_bytes) {
          t_.streamable = false;  // a second ByteFallback could see fused runs
          return;
        }
        t_.stream_bytes = true;
      } else {
        (t_.stream_bytes ? t_.stream_post : t_.stream_pre).push_back(s);
      }
    }
  }
};

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) {
  if (is_directory(path)) fail(path, ": is a directory (expected a tokenizer.json file)");
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error& e) {
    fail("cannot load tokenizer: ", e.what());
  }
  return from_json_text(text, path);
}

Tokenizer Tokenizer::from_json_text(const std::string& text, const std::string& origin) {
  auto impl = std::make_shared<TokenizerImpl>();
  impl->origin = origin;
  impl->serial = ++g_tokenizer_serial;
  Loader(text, origin, *impl).load();
  return Tokenizer(std::move(impl));
}

}  // namespace gt
