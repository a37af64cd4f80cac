// One attention case of the emulator programs (attention_fwd_emulate.cpp, attention_bwd_emulate.cpp),
// from `key=value` arguments: dtype f16|bf16|f32, d 32|64|96|128|256, b, hq, hk, nq, nk, causal
// (bottom-right; with top_left=1 from the top-left corner), seed (of the inputs), dropout (p), philox
// (the dropout seed, which the kernels read through AttentionParams::seed), bias (an additive bias
// broadcast over the batch, dense only), lens_q / lens_k (varlen: packed sequences of these lengths),
// max_q / max_k (varlen: a stated max_seqlen below the longest), detect, sm90 (the forward's Hopper
// kernel) and aligned (0: the unaligned path). Each program checks what it can run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "harness.h"

namespace dlk_emu {

struct AttentionCase {
  std::string dtype = "f16";
  int d = 64, b = 1, hq = 2, hk = 1, nq = 37, nk = 150;
  bool causal = false, detect = true;
  bool top_left = false;  // causal from the top-left corner (SDPA's is_causal) instead of bottom-right
  bool sm90 = false;    // the forward program: the Hopper (wgmma) kernel
  bool aligned = true;  // the forward program: false takes the unaligned (element-copy) path
  uint32_t seed = 1;
  double dropout = 0.0;
  int64_t philox = 0;
  bool bias = false;
  std::vector<int> lens_q, lens_k;  // varlen: each sequence's length (b, nq, nk then follow from them)
  // varlen: max_seqlen_q / _k as the caller states them, when below the longest sequence (a caller's
  // error the op cannot check under capture: the kernels must fill that sequence with NaN); 0: the longest.
  int max_q = 0, max_k = 0;
};

// The keys query row i of a (len_q, len_k) sequence sees, written out here rather than taken from the
// kernels' own attention_key_end: all of them, or causal up to key i + shift, shift = len_k - len_q
// (bottom-right, flash-attention's varlen convention) or 0 (top-left, SDPA's is_causal), clamped to
// [0, len_k].
inline int reference_key_end(const AttentionCase& c, int i, int len_q, int len_k) {
  if (!c.causal) return len_k;
  const int end = i + 1 + (c.top_left ? 0 : len_k - len_q);
  return std::min(std::max(end, 0), len_k);
}

// The case's sequences as the kernels are told them: dense (b sequences of nq queries and nk keys) or
// varlen (packed, lens_q / lens_k), with cu_seqlens either way; nq / nk are max_seqlen as stated
// (varlen: max_q / max_k when given, else the longest).
struct AttentionSequences {
  bool varlen = false;
  int batch = 0, nq = 0, nk = 0;
  std::vector<int> cu_q{0}, cu_k{0};
  // A packed sequence longer than the stated max_seqlen: the kernels must fill its outputs with NaN.
  bool too_long(int bb) const {
    return varlen && (cu_q[bb + 1] - cu_q[bb] > nq || cu_k[bb + 1] - cu_k[bb] > nk);
  }
};

inline AttentionSequences attention_sequences(const AttentionCase& c) {
  AttentionSequences s;
  s.varlen = !c.lens_q.empty();
  s.batch = s.varlen ? int(c.lens_q.size()) : c.b;
  for (int bb = 0; bb < s.batch; ++bb) {
    s.cu_q.push_back(s.cu_q.back() + (s.varlen ? c.lens_q[bb] : c.nq));
    s.cu_k.push_back(s.cu_k.back() + (s.varlen ? c.lens_k[bb] : c.nk));
  }
  const auto longest = [](const std::vector<int>& lens) { return *std::max_element(lens.begin(), lens.end()); };
  s.nq = !s.varlen ? c.nq : c.max_q > 0 ? c.max_q : longest(c.lens_q);
  s.nk = !s.varlen ? c.nk : c.max_k > 0 ? c.max_k : longest(c.lens_k);
  return s;
}

inline bool parse_attention_case(int argc, char** argv, AttentionCase& c) {
  return parse_arguments(argc, argv, [&](const std::string& key, const std::string& v) {
    const int x = to_int(v);
    if (key == "dtype") c.dtype = v;
    else if (key == "d") c.d = x;
    else if (key == "b") c.b = x;
    else if (key == "hq") c.hq = x;
    else if (key == "hk") c.hk = x;
    else if (key == "nq") c.nq = x;
    else if (key == "nk") c.nk = x;
    else if (key == "causal") c.causal = x != 0;
    else if (key == "top_left") c.top_left = x != 0;
    else if (key == "detect") c.detect = x != 0;
    else if (key == "sm90") c.sm90 = x != 0;
    else if (key == "aligned") c.aligned = x != 0;
    else if (key == "seed") c.seed = uint32_t(x);
    else if (key == "dropout") c.dropout = std::atof(v.c_str());
    else if (key == "philox") c.philox = std::strtoll(v.c_str(), nullptr, 0);
    else if (key == "bias") c.bias = x != 0;
    else if (key == "lens_q") return to_int_list(v, c.lens_q);
    else if (key == "lens_k") return to_int_list(v, c.lens_k);
    else if (key == "max_q") c.max_q = x;
    else if (key == "max_k") c.max_k = x;
    else return false;
    return true;
  });
}

}  // namespace dlk_emu
