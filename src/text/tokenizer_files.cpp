// Loading the tokenizer's files (see tokenizer_files.h).

#include "tokenizer_files.h"

#include <climits>
#include <nlohmann/json.hpp>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"

namespace focusvla::bpe {
namespace {

using nlohmann::json;

// Through io/json_file.h: errors name the file; numbers beyond double range and deep nesting
// are refused there.
std::string read_file(const std::filesystem::path& path) { return io::read_text_file(path.string()); }
json read_json(const std::filesystem::path& path) { return io::read_json_file(path.string()); }

// Runs `read`, turning a JSON type error (a field of the wrong kind: "normalizer": 5, an object
// where an array belongs, ...) into an Error naming `file`.
template <class Read>
auto with_json_errors_named(const std::string& file, Read&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const json::exception& e) {
    throw Error(file + ": a field has the wrong JSON type (" + e.what() + ")");
  }
}

bool is_token_id(const json& value) {
  if (!value.is_number_integer()) return false;
  const auto id = value.get<int64_t>();
  return id >= 0 && id <= INT32_MAX;
}

int32_t json_to_id(const json& value, const std::string& where) {
  check(is_token_id(value), where, "token id must be an integer in [0, 2^31), got " + value.dump());
  return static_cast<int32_t>(value.get<int64_t>());
}

std::unordered_map<std::string, int32_t> parse_vocab(const json& vocab, const std::string& where) {
  check(vocab.is_object(), where, "vocabulary must be a JSON object of token -> id");
  std::unordered_map<std::string, int32_t> result;
  result.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!is_token_id(id)) json_to_id(id, where + ": token '" + token + "'");  // throws
    result.emplace(token, static_cast<int32_t>(id.get<int64_t>()));
  }
  return result;
}

// merges.txt: "#version" lines are skipped; every other line is "left right".
std::vector<MergeLine> parse_merges_txt(const std::string& text, const std::string& path) {
  std::vector<MergeLine> merges;
  size_t line_number = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      throw Error(path + " line " + std::to_string(line_number) +
                  ": expected two tokens separated by one space, got '" + line + "'");
    }
    merges.push_back({line.substr(0, space), line.substr(space + 1), line_number});
  }
  return merges;
}

AddedToken parse_added_token(const json& entry, int32_t id, const std::string& where) {
  check(entry.is_object() && entry.contains("content") && entry["content"].is_string(), where,
        "added token needs a string 'content'");
  AddedToken token;
  token.id = id;
  token.content = entry["content"].get<std::string>();
  token.single_word = entry.value("single_word", false);
  token.lstrip = entry.value("lstrip", false);
  token.rstrip = entry.value("rstrip", false);
  token.normalized = entry.value("normalized", !entry.value("special", false));
  token.special = entry.value("special", false);
  return token;
}

// Adds `token`; the same id twice must mean the same content.
void add_token(std::vector<AddedToken>& added, const AddedToken& token, const std::string& where) {
  for (const AddedToken& existing : added) {
    if (existing.id != token.id) continue;
    check(existing.content == token.content, where,
          "id " + std::to_string(token.id) + " is both '" + existing.content + "' and '" +
              token.content + "'");
    return;
  }
  added.push_back(token);
}

std::vector<MergeLine> parse_json_merges(const json& merges, const std::string& where) {
  check(merges.is_array(), where, "must be an array");
  std::vector<MergeLine> result;
  result.reserve(merges.size());
  auto item_where = [&](size_t i) { return where + "[" + std::to_string(i) + "]"; };
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& merge = merges[i];
    if (merge.is_string()) {
      const std::string& text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        throw Error(item_where(i) + ": expected \"left right\", got '" + text + "'");
      }
      result.push_back({text.substr(0, space), text.substr(space + 1), i});
    } else {
      const bool pair =
          merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string();
      if (!pair) throw Error(item_where(i) + ": expected \"left right\" or [left, right]");
      result.push_back({merge[0].get<std::string>(), merge[1].get<std::string>(), i});
    }
  }
  return result;
}

bool is_null_or_empty(const json& object, const char* key) {
  return !object.contains(key) || object[key].is_null() ||
         (object[key].is_string() && object[key].get<std::string>().empty());
}

void check_bpe_model(const json& model, const std::string& where) {
  check(model.is_object() && model.value("type", std::string("BPE")) == "BPE", where,
        "only BPE models are supported");
  check(is_null_or_empty(model, "dropout"), where, "BPE dropout is not supported");
  check(is_null_or_empty(model, "continuing_subword_prefix"), where,
        "continuing_subword_prefix is not supported");
  check(is_null_or_empty(model, "end_of_word_suffix"), where,
        "end_of_word_suffix is not supported");
  check(!model.value("byte_fallback", false), where, "byte_fallback is not supported");
}

// Accepts no normalizer, NFC, or a Sequence of those; returns whether NFC applies.
bool parse_normalizer(const json& normalizer, const std::string& where) {
  if (normalizer.is_null()) return false;
  const std::string type = normalizer.value("type", std::string());
  if (type == "NFC") return true;
  check(type == "Sequence" && normalizer.contains("normalizers"), where,
        "unsupported normalizer '" + type + "' (supported: none, NFC)");
  bool nfc = false;
  for (const json& inner : normalizer["normalizers"]) nfc = parse_normalizer(inner, where) || nfc;
  return nfc;
}

// Accepts the Qwen2 shape: Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)].
std::string parse_pre_tokenizer(const json& pre, const std::string& where) {
  const std::string expected =
      "expected Sequence[Split(Regex, behavior Isolated), ByteLevel(use_regex false, "
      "add_prefix_space false)]";
  check(pre.is_object() && pre.value("type", std::string()) == "Sequence" &&
            pre.contains("pretokenizers") && pre["pretokenizers"].size() == 2,
        where, expected);
  const json& split = pre["pretokenizers"][0];
  const json& byte_level = pre["pretokenizers"][1];
  check(split.value("type", std::string()) == "Split" && split.contains("pattern") &&
            split["pattern"].contains("Regex") &&
            split.value("behavior", std::string()) == "Isolated" && !split.value("invert", false),
        where, expected);
  check(byte_level.value("type", std::string()) == "ByteLevel" &&
            !byte_level.value("use_regex", true) && !byte_level.value("add_prefix_space", true),
        where, expected);
  return split["pattern"]["Regex"].get<std::string>();
}

TokenizerParts parse_tokenizer_json(const std::filesystem::path& path) {
  const std::string file = path.string();
  const json root = read_json(path);
  check(root.is_object() && root.contains("model"), file, "missing 'model'");
  TokenizerParts parts;
  parts.source = file;
  const json& model = root["model"];
  check_bpe_model(model, file + ": model");
  check(model.contains("vocab") && model.contains("merges"), file + ": model",
        "needs 'vocab' and 'merges'");
  parts.vocab = parse_vocab(model["vocab"], file + ": model.vocab");
  parts.merges = parse_json_merges(model["merges"], file + ": model.merges");
  parts.merge_label_prefix = file + ": model.merges[";
  parts.merge_label_suffix = "]";
  parts.ignore_merges = model.value("ignore_merges", false);
  parts.nfc = parse_normalizer(root.value("normalizer", json()), file + ": normalizer");
  parts.pattern =
      parse_pre_tokenizer(root.value("pre_tokenizer", json()), file + ": pre_tokenizer");
  const json decoder = root.value("decoder", json());
  check(decoder.is_object() && decoder.value("type", std::string()) == "ByteLevel",
        file + ": decoder", "only the ByteLevel decoder is supported");
  const json added = root.value("added_tokens", json::array());
  check(added.is_array(), file + ": added_tokens", "must be an array");
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string where = file + ": added_tokens[" + std::to_string(i) + "]";
    check(added[i].contains("id"), where, "missing 'id'");
    add_token(parts.added, parse_added_token(added[i], json_to_id(added[i]["id"], where), where),
              where);
  }
  return parts;
}


}  // namespace

TokenizerParts load_vocab_and_merges(const std::filesystem::path& dir) {
  TokenizerParts parts;
  const auto vocab_path = dir / "vocab.json";
  const auto merges_path = dir / "merges.txt";
  parts.source = vocab_path.string() + " + " + merges_path.string();
  parts.vocab = with_json_errors_named(vocab_path.string(),
                                       [&] { return parse_vocab(read_json(vocab_path), vocab_path.string()); });
  parts.merges = parse_merges_txt(read_file(merges_path), merges_path.string());
  parts.merge_label_prefix = merges_path.string() + " line ";

  const auto config_path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) with_json_errors_named(config_path.string(), [&] {
    const json config = read_json(config_path);
    check(config.is_object(), config_path.string(), "must be a JSON object");
    const json decoder = config.value("added_tokens_decoder", json::object());
    check(decoder.is_object(), config_path.string() + ": added_tokens_decoder", "must be an object of id -> token");
    for (const auto& [key, entry] : decoder.items()) {
      const std::string where = config_path.string() + ": added_tokens_decoder." + key;
      int32_t id = -1;
      try {
        id = json_to_id(json::parse(key), where);
      } catch (const json::exception&) {
        throw Error(where + ": key must be a token id");
      }
      add_token(parts.added, parse_added_token(entry, id, where), where);
    }
  });
  const auto added_path = dir / "added_tokens.json";
  if (std::filesystem::exists(added_path)) with_json_errors_named(added_path.string(), [&] {
    const json added = read_json(added_path);
    check(added.is_object(), added_path.string(), "must be a JSON object of token -> id");
    for (const auto& [content, id_value] : added.items()) {
      const std::string where = added_path.string() + ": '" + content + "'";
      AddedToken token;
      token.id = json_to_id(id_value, where);
      token.content = content;
      token.special = true;
      add_token(parts.added, token, where);
    }
  });
  return parts;
}

TokenizerParts load_tokenizer_json(const std::filesystem::path& path) {
  return with_json_errors_named(path.string(), [&] { return parse_tokenizer_json(path); });
}

}  // namespace focusvla::bpe
