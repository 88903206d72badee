#include "backend/backend.h"

#include <algorithm>
#include <limits>

#include "backend/greedy_pick.h"
#include "util/error.h"
#include "util/hash.h"

namespace lockstep {

void Backend::forward(std::span<const int32_t> tokens, float* logits, bool all_logits) {
  const SeqTokens item{0, tokens, logits, all_logits};
  forward_batch({&item, 1});
}

void Backend::validate(std::span<const SeqTokens> batch, std::vector<int>& pos_begin) const {
  const int64_t n_vocab = model().hp.n_vocab;
  if (batch.empty()) throw Error(name() + ": forward_batch() called with no sequences");
  for (size_t j = 0; j < batch.size(); ++j) {
    const SeqTokens& item = batch[j];
    // Single-sequence messages stay as they were; a batch names the sequence.
    const std::string who = n_seq() == 1 ? "" : "sequence " + std::to_string(item.seq) + ": ";
    if (item.seq < 0 || item.seq >= n_seq())
      throw Error(name() + ": sequence " + std::to_string(item.seq) + " out of range (" +
                  std::to_string(n_seq()) + " sequences)");
    for (size_t i = 0; i < j; ++i)
      if (batch[i].seq == item.seq)
        throw Error(name() + ": sequence " + std::to_string(item.seq) + " twice in one batch");
    const int64_t n = int64_t(item.tokens.size());
    if (n == 0) throw Error(name() + ": " + who + "forward() called with no tokens");
    for (int64_t i = 0; i < n; ++i)
      if (item.tokens[size_t(i)] < 0 || item.tokens[size_t(i)] >= n_vocab)
        throw InputError(who + "token id " + std::to_string(item.tokens[size_t(i)]) +
                         " at batch index " + std::to_string(i) +
                         " is outside the vocabulary (n_vocab " + std::to_string(n_vocab) + ")");
    if (item.argmax && (item.argmax_cols < 0 || item.argmax_cols > n_vocab))
      throw Error(name() + ": " + who + "argmax over " + std::to_string(item.argmax_cols) +
                  " logits of " + std::to_string(n_vocab));
    const int64_t past = seq_past(item.seq);
    if (past + n > n_ctx())
      throw Error(who + "context overflow: " + std::to_string(past) + " cached + " +
                  std::to_string(n) + " new tokens > n_ctx " + std::to_string(n_ctx()));
    pos_begin.push_back(int(past));
  }
}

void Backend::forward_batch(std::span<const SeqTokens> batch) {
  check_may_compute();
  // A member, so that a steady stream of calls allocates nothing once it has grown.
  pos_begin_.clear();
  validate(batch, pos_begin_);
  // Argmax picks the backend does not make itself are made here, from the row (a scratch row when
  // the caller asked for none); so are all of them while a fault that edits logits is in force,
  // so that the fault reaches the pick as it reaches a sampled row.
  const bool logits_fault = fault_.kind == FaultSpec::NaN || fault_.kind == FaultSpec::AfterCalls ||
                            fault_.kind == FaultSpec::FromPosition;
  std::span<const SeqTokens> run = batch;
  bool host_picks = false;
  for (size_t i = 0; i < batch.size(); ++i)
    host_picks = host_picks || (batch[i].argmax && (logits_fault || !picks_argmax(batch, i)));
  const size_t V = size_t(model().hp.n_vocab);
  if (host_picks) {
    host_pick_items_.assign(batch.begin(), batch.end());
    size_t scratch = 0;
    for (const SeqTokens& item : host_pick_items_) scratch += item.argmax && !item.logits;
    host_pick_rows_.resize(scratch * V);
    scratch = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      SeqTokens& item = host_pick_items_[i];
      if (!item.argmax || (!logits_fault && picks_argmax(batch, i))) continue;
      if (!item.logits) item.logits = host_pick_rows_.data() + V * scratch++;
      item.argmax = nullptr;  // the backend need not pick: it is done below
    }
    run = host_pick_items_;
  }
  forward_batch_impl(run);
  const int64_t call = fault_calls_++;
  for (size_t i = 0; i < run.size(); ++i) apply_fault(run[i], pos_begin_[i], call);
  if (!host_picks) return;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!batch[i].argmax || run[i].argmax) continue;
    const SeqTokens& item = run[i];
    const float* row = item.logits + (item.all_logits ? V * (item.tokens.size() - 1) : 0);
    *batch[i].argmax = greedy_pick({row, item.argmax_cols ? size_t(item.argmax_cols) : V});
  }
}

void Backend::set_fault(const FaultSpec& fault) {
  validate_fault(fault, model().hp.n_layer);
  fault_ = fault;
  fault_calls_ = 0;
  fault_nan_done_ = false;
}

void Backend::apply_fault(const SeqTokens& item, int64_t pos_begin, int64_t call) {
  const int64_t pos_end = pos_begin + int64_t(item.tokens.size());
  if (fault_.kind == FaultSpec::KvDrift && call > 0)
    drift_kv(item.seq, pos_begin, pos_end, fault_.magnitude * float(call));
  if (fault_.kind == FaultSpec::NaN && !fault_nan_done_ && item.logits) {
    // Rows returned: every position (all_logits) or only the last one.
    const int64_t first_row_pos = item.all_logits ? pos_begin : pos_end - 1;
    const int64_t pos = std::max<int64_t>(first_row_pos, fault_.position);
    if (pos >= pos_end) return;
    const size_t V = size_t(model().hp.n_vocab);
    float* row = item.logits + size_t(pos - first_row_pos) * V;
    std::fill(row, row + V, std::numeric_limits<float>::quiet_NaN());
    fault_nan_done_ = true;
  }
  if ((fault_.kind == FaultSpec::AfterCalls && call >= fault_.calls) ||
      fault_.kind == FaultSpec::FromPosition) {
    if (!item.logits) return;
    const int64_t first_row_pos = item.all_logits ? pos_begin : pos_end - 1;
    const int64_t from = fault_.kind == FaultSpec::FromPosition
                             ? std::max<int64_t>(first_row_pos, fault_.position)
                             : first_row_pos;
    const size_t V = size_t(model().hp.n_vocab);
    for (int64_t pos = from; pos < pos_end; ++pos) {
      float* row = item.logits + size_t(pos - first_row_pos) * V;
      for (size_t i = 0; i < V; ++i)
        row[i] += fault_.magnitude * unit_noise(hash4(5, uint64_t(pos), i, 0));
    }
  }
}

void require_plain_architecture(const Model& model, const std::string& backend,
                                bool rope_variants) {
  HParams hp = model.hp;
  if (rope_variants) hp.has_rope_freqs = hp.rope_yarn = false;  // the backend implements them
  const std::vector<std::string> features = extended_features(hp);
  if (features.empty()) return;
  std::string list;
  for (size_t i = 0; i < features.size(); ++i)
    list += (i == 0 ? "" : i + 1 == features.size() ? " and " : ", ") + features[i];
  const std::string where = model.file ? model.file->path() + ": " : std::string();
  throw Error(where + "the " + backend + " backend does not implement " + model.hp.arch_name +
                  "'s " + list + " (the CPU backends do)",
              kExitDevice);
}

}  // namespace lockstep
