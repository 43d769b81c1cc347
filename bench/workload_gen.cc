// canopy_workload_gen: writes a seeded Kubernetes-like change stream as JSON lines.
//
//   canopy_workload_gen [--seed N] [--initial N] [--changes N] --out FILE
//
// The file holds the --initial creations followed by --changes mixed changes (70% patches,
// 20% creations, 10% removals); see bench/workload.h for the format.
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "workload.h"

namespace {

void usage(std::FILE* to) {
  std::fputs(
      "usage: canopy_workload_gen [--seed N] [--initial N] [--changes N] --out FILE\n"
      "  --seed N     generator seed (default 1)\n"
      "  --initial N  documents created at the head of the stream (default 1000)\n"
      "  --changes N  mixed changes after them: 70% patch, 20% create, 10% remove (default 20000)\n"
      "  --out FILE   output file, JSON lines\n",
      to);
}

bool parse_u64(std::string_view s, uint64_t* out) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && p == end && !s.empty();
}

}  // namespace

int main(int argc, char** argv) {
  canopy::bench::WorkloadOptions options;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    }
    std::string_view value;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "canopy_workload_gen: %s needs a value\n", argv[i]);
      usage(stderr);
      return 2;
    }
    uint64_t n = 0;
    const bool numeric = parse_u64(value, &n);
    if (arg == "--out") {
      out = std::string(value);
    } else if ((arg == "--seed" || arg == "--initial" || arg == "--changes") && !numeric) {
      std::fprintf(stderr, "canopy_workload_gen: %.*s wants a non-negative integer\n",
                   static_cast<int>(arg.size()), arg.data());
      return 2;
    } else if (arg == "--seed") {
      options.seed = n;
    } else if (arg == "--initial") {
      options.initial_docs = static_cast<size_t>(n);
    } else if (arg == "--changes") {
      options.changes = static_cast<size_t>(n);
    } else {
      std::fprintf(stderr, "canopy_workload_gen: unknown option %.*s\n",
                   static_cast<int>(arg.size()), arg.data());
      usage(stderr);
      return 2;
    }
  }
  if (out.empty()) {
    std::fputs("canopy_workload_gen: --out FILE is required\n", stderr);
    usage(stderr);
    return 2;
  }

  const auto changes = canopy::bench::generate_workload(options);
  std::string error;
  if (!canopy::bench::write_workload(out, changes, &error)) {
    std::fprintf(stderr, "canopy_workload_gen: %s\n", error.c_str());
    return 1;
  }
  size_t counts[3] = {0, 0, 0};
  for (const auto& c : changes) ++counts[c.kind];
  std::fprintf(
      stderr, "canopy_workload_gen: wrote %zu changes (%zu create, %zu patch, %zu remove) to %s\n",
      changes.size(), counts[canopy::bench::Change::kCreate], counts[canopy::bench::Change::kPatch],
      counts[canopy::bench::Change::kRemove], out.c_str());
  return 0;
}
