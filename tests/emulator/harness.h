// What the emulator programs (the *_emulate.cpp files here) share around the kernels they run:
// `key=value` arguments, 16-byte aligned element buffers, a tally of wrong outputs, and the
// verdict (exit status 0 when every output matches, the launch completed and the detector is clean;
// 1 otherwise; the programs return 2 themselves for a case they cannot run).
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "warp_emu.h"

namespace dlk_emu {

// Calls set(key, value) for each `key=value` argument; false on an argument without '=' or one that
// set() rejects (returns false for).
template <typename Set>
bool parse_arguments(int argc, char** argv, Set set) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (eq == std::string::npos || !set(arg.substr(0, eq), arg.substr(eq + 1))) return false;
  }
  return true;
}

inline int to_int(const std::string& v) { return std::atoi(v.c_str()); }

// "a,b,c" -> {a, b, c}; false on an empty item.
inline bool to_int_list(const std::string& v, std::vector<int>& out) {
  out.clear();
  for (size_t at = 0; at <= v.size();) {
    const size_t comma = std::min(v.find(',', at), v.size());
    if (comma == at) return false;
    out.push_back(std::atoi(v.substr(at, comma - at).c_str()));
    at = comma + 1;
  }
  return true;
}

// Element storage: T-typed, 16-byte aligned (the cp.async loaders' requirement), one spare vector.
template <typename T>
struct Buffer {
  std::vector<uint4> storage;
  size_t size = 0;
  explicit Buffer(size_t n) : storage((n * sizeof(T) + 15) / 16 + 1), size(n) {}
  T* data() { return reinterpret_cast<T*>(storage.data()); }
  T& operator[](size_t i) { return data()[i]; }
};

// Wrong outputs among those checked: the count, the largest error seen and the first one's description.
struct Tally {
  size_t wrong = 0, checked = 0;
  double worst = 0;
  std::string first;

  // Records one output; describe() is called for the first wrong one only. NaN errors count as wrong.
  template <typename Describe>
  void check(bool ok, double err, Describe describe) {
    ++checked;
    if (!ok && wrong++ == 0) first = describe();
    if (err > worst || err != err) worst = err;
  }
};

// Prints the first wrong output, the detector's findings and an incomplete launch; the exit status.
inline int verdict(const Tally& tally, const Findings& findings, bool ran) {
  if (tally.wrong) std::printf("  first wrong: %s\n", tally.first.c_str());
  findings.print(stdout);
  if (!ran) std::printf("  the emulated launch did not complete\n");
  return ran && tally.wrong == 0 && findings.total() == 0 ? 0 : 1;
}

}  // namespace dlk_emu
