// Byte-level BPE (Qwen2 / Qwen2.5), exact to HF `tokenizers`. See the header for the pipeline.
//
// The parts, each private to src/text/ (namespace focusvla::bpe):
//   utf8.h              UTF-8 decoding and encoding (shared with prompt.cpp)
//   unicode.h           the Unicode-version bridges to tokenizers 0.23: tables, `\s` / `\w`, NFC
//   byte_level.h        the GPT-2 byte-level alphabet and decoder
//   pre_tokenizer.h     the Oniguruma -> PCRE2 rewrite and the regex splitter
//   added_tokens.h      cutting added tokens out of the text
//   bpe_merges.h        the merge table and the merge loops
//   tokenizer_files.h   tokenizer.json / vocab.json + merges.txt
// This file: the word cache and the tokenizer itself.

#include "focusvla/text/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "added_tokens.h"
#include "bpe_merges.h"
#include "byte_level.h"
#include "focusvla/core/error.h"
#include "pre_tokenizer.h"
#include "tokenizer_files.h"
#include "unicode.h"
#include "utf8.h"

namespace focusvla {
namespace {

using bpe::AddedToken;
using bpe::AddedTokenSplitter;
using bpe::MergeLine;
using bpe::MergeTable;
using bpe::RegexSplitter;
using bpe::TokenizerParts;

// Ids index a table, so they are bounded (far above any real vocabulary).
constexpr int32_t kMaxTokenId = (1 << 24) - 1;
constexpr size_t kDefaultCacheCapacity = 65536;
constexpr size_t kCacheShards = 16;
constexpr size_t kMaxCachedPieceBytes = 256;

void validate_utf8(std::string_view text) {
  const size_t invalid = utf8::find_invalid(text);
  if (invalid != std::string_view::npos) {
    throw Error("BpeTokenizer::encode: invalid UTF-8 at byte offset " + std::to_string(invalid));
  }
}

// ---------------------------------------------------------------------------------------------
// Word cache: piece bytes -> ids, sharded so that threads rarely wait on one another.

class WordCache {
 public:
  explicit WordCache(size_t capacity) : capacity_(capacity) {}

  void set_capacity(size_t capacity) {
    capacity_.store(capacity);
    clear();
  }

  bool lookup(std::string_view piece, std::vector<int32_t>& out) const {
    if (capacity_.load(std::memory_order_relaxed) == 0 || piece.size() > kMaxCachedPieceBytes) {
      return false;
    }
    Shard& shard = shard_of(piece);
    std::lock_guard<std::mutex> lock(shard.mutex);
    const auto it = shard.words.find(std::string(piece));
    if (it == shard.words.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }

  void store(std::string_view piece, const int32_t* ids, size_t count) const {
    const size_t capacity = capacity_.load(std::memory_order_relaxed);
    if (capacity == 0 || piece.size() > kMaxCachedPieceBytes) return;
    const size_t per_shard = std::max<size_t>(1, capacity / kCacheShards);
    Shard& shard = shard_of(piece);
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.words.size() >= per_shard) shard.words.clear();
    shard.words.emplace(std::string(piece), std::vector<int32_t>(ids, ids + count));
  }

  void clear() const {
    for (Shard& shard : shards_) {
      std::lock_guard<std::mutex> lock(shard.mutex);
      shard.words.clear();
    }
  }

 private:
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> words;
  };

  Shard& shard_of(std::string_view piece) const {
    return shards_[std::hash<std::string_view>{}(piece) % kCacheShards];
  }

  std::atomic<size_t> capacity_;
  mutable std::array<Shard, kCacheShards> shards_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct BpeTokenizer::Impl {
  explicit Impl(TokenizerParts parts);

  void encode_text(std::string_view text, pcre2_match_data* data, std::vector<int32_t>& ids) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;

  std::unordered_map<std::string, int32_t> vocab;
  std::unordered_map<std::string, int32_t> added_ids;
  std::vector<std::string> token_of_id;  // decode text per id; empty where no token
  size_t id_count = 0;
  MergeTable merges;
  std::array<int32_t, 256> byte_ids{};
  bool nfc = true;
  bool ignore_merges = false;
  RegexSplitter splitter;
  AddedTokenSplitter raw_tokens;         // added tokens with normalized=false
  AddedTokenSplitter normalized_tokens;  // added tokens with normalized=true
  WordCache cache{kDefaultCacheCapacity};
};

namespace {

// The id of `token`, a part or the result of `merge`; Error naming the merge when unknown.
int32_t merge_token_id(const std::unordered_map<std::string, int32_t>& vocab,
                       const std::string& token, const MergeLine& merge,
                       const TokenizerParts& parts) {
  const auto it = vocab.find(token);
  if (it != vocab.end()) return it->second;
  throw Error(parts.merge_label_prefix + std::to_string(merge.number) + parts.merge_label_suffix +
              " ('" + merge.left + " " + merge.right + "'): token '" + token +
              "' is not in the vocabulary");
}

}  // namespace

BpeTokenizer::Impl::Impl(TokenizerParts parts)
    : vocab(std::move(parts.vocab)),
      nfc(parts.nfc),
      ignore_merges(parts.ignore_merges),
      splitter(parts.pattern) {
  merges.reserve(parts.merges.size());
  for (size_t rank = 0; rank < parts.merges.size(); ++rank) {
    const MergeLine& line = parts.merges[rank];
    const int32_t left = merge_token_id(vocab, line.left, line, parts);
    const int32_t right = merge_token_id(vocab, line.right, line, parts);
    const int32_t merged = merge_token_id(vocab, line.left + line.right, line, parts);
    merges.insert(left, right, {static_cast<int32_t>(rank), merged});
  }

  const bpe::ByteLevelAlphabet& alphabet = bpe::byte_level_alphabet();
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(alphabet.symbol_of_byte[b]);
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", b);
    check(it != vocab.end(), parts.source,
          std::string("the vocabulary lacks the byte-level symbol of byte ") + hex);
    byte_ids[b] = it->second;
  }

  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) max_id = std::max(max_id, id);
  for (const AddedToken& token : parts.added) max_id = std::max(max_id, token.id);
  check(max_id <= kMaxTokenId, parts.source,
        "token id " + std::to_string(max_id) + " exceeds " + std::to_string(kMaxTokenId));
  token_of_id.assign(static_cast<size_t>(max_id) + 1, std::string());
  for (const auto& [token, id] : vocab) {
    if (!token_of_id[id].empty()) {
      throw Error(parts.source + ": id " + std::to_string(id) + " is used by both '" +
                  token_of_id[id] + "' and '" + token + "'");
    }
    token_of_id[id] = token;
  }

  std::sort(parts.added.begin(), parts.added.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  for (const AddedToken& token : parts.added) {
    if (token.content.empty()) continue;
    const auto in_vocab = vocab.find(token.content);
    check(in_vocab == vocab.end() || in_vocab->second == token.id, parts.source,
          "added token '" + token.content + "' has id " + std::to_string(token.id) +
              " but the vocabulary gives it " +
              std::to_string(in_vocab == vocab.end() ? -1 : in_vocab->second));
    check(token_of_id[token.id].empty() || token_of_id[token.id] == token.content, parts.source,
          "added token '" + token.content + "' reuses id " + std::to_string(token.id) + " of '" +
              token_of_id[token.id] + "'");
    const std::string pattern = token.normalized && nfc ? bpe::hf_nfc(token.content) : token.content;
    token_of_id[token.id] = token.normalized ? pattern : token.content;
    added_ids[token.content] = token.id;
    (token.normalized ? normalized_tokens : raw_tokens).add(token, pattern);
  }
  id_count = static_cast<size_t>(std::count_if(token_of_id.begin(), token_of_id.end(),
                                               [](const std::string& t) { return !t.empty(); }));
}

void BpeTokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  if (cache.lookup(piece, ids)) return;
  const size_t first = ids.size();
  if (ignore_merges) {
    const auto whole = vocab.find(bpe::to_byte_level(piece));
    if (whole != vocab.end()) {
      ids.push_back(whole->second);
      cache.store(piece, ids.data() + first, 1);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  for (char c : piece) symbols.push_back(byte_ids[static_cast<unsigned char>(c)]);
  if (symbols.size() <= bpe::kLinearMergeLimit) {
    bpe::merge_linear(merges, symbols);
  } else {
    bpe::merge_with_heap(merges, symbols);
  }
  ids.insert(ids.end(), symbols.begin(), symbols.end());
  cache.store(piece, symbols.data(), symbols.size());
}

void BpeTokenizer::Impl::encode_text(std::string_view text, pcre2_match_data* data,
                                     std::vector<int32_t>& ids) const {
  raw_tokens.split(text, [&](std::string_view span, int32_t id) {
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    auto encode_normalized = [&](std::string_view normalized) {
      normalized_tokens.split(normalized, [&](std::string_view part, int32_t part_id) {
        if (part_id >= 0) {
          ids.push_back(part_id);
          return;
        }
        splitter.split(part, data, [&](std::string_view piece) { encode_piece(piece, ids); });
      });
    };
    if (!nfc || bpe::nfc_trivially(span)) {
      encode_normalized(span);
    } else {
      encode_normalized(bpe::hf_nfc(span));
    }
  });
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer BpeTokenizer::from_directory(const std::string& dir) {
  const std::filesystem::path root(dir);
  check(std::filesystem::is_directory(root), dir, "tokenizer directory does not exist");
  const auto tokenizer_json = root / "tokenizer.json";
  TokenizerParts parts = std::filesystem::exists(tokenizer_json)
                             ? bpe::load_tokenizer_json(tokenizer_json)
                             : bpe::load_vocab_and_merges(root);
  return BpeTokenizer(std::make_unique<Impl>(std::move(parts)));
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  validate_utf8(text);
  std::vector<int32_t> ids;
  if (text.empty()) return ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->encode_text(text, RegexSplitter::thread_match_data(), ids);
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (const int32_t id : ids) {
    const bool known = id >= 0 && static_cast<size_t>(id) < impl_->token_of_id.size() &&
                       !impl_->token_of_id[id].empty();
    if (!known) throw Error("BpeTokenizer::decode: id " + std::to_string(id) + " has no token");
    bpe::append_token_bytes(impl_->token_of_id[id], bytes);
  }
  return utf8::lossy(bytes);
}

std::optional<int32_t> BpeTokenizer::find(const std::string& token) const {
  if (const auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (const auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

int32_t BpeTokenizer::token_to_id(const std::string& token) const {
  const std::optional<int32_t> id = find(token);
  check(id.has_value(), "BpeTokenizer::token_to_id", "unknown token '" + token + "'");
  return *id;
}

const std::string& BpeTokenizer::pre_tokenizer_pattern() const { return impl_->splitter.source(); }

size_t BpeTokenizer::vocab_size() const { return impl_->id_count; }

void BpeTokenizer::set_cache_capacity(size_t entries) { impl_->cache.set_capacity(entries); }

void BpeTokenizer::clear_cache() const { impl_->cache.clear(); }

}  // namespace focusvla
