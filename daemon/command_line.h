// A daemon's command line: flags over an optional YAML config file.
//
// parse_command_line reads argv twice. The first pass only finds --config
// (and --version, and syntax errors); then the file is loaded into a fresh
// config, and the second pass writes the flags given on the command line
// over it. So flags win over the file and the file over the defaults, without
// a list of "was this flag given" checks per setting.
//
// Exit codes: 0 for --help and --version, 2 for a bad flag or config file.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "daemon/process.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::daemon {

// Flags every daemon has, beside its config's own.
struct CommonFlags {
  std::string config_path;
  std::string durability;
  bool version = false;
};

// Prints "<program>: <message>" and returns 2, the exit code of bad input.
inline int config_error(const char* program, const Status& status) {
  std::fprintf(stderr, "%s: %s\n", program, status.message().c_str());
  return 2;
}

// `bind` adds the daemon's own flags to `app`, writing into `config`.
// `load_file` reads a config file into `config`. Returns an exit code when
// the process should end now, nullopt when `*config` is ready to validate.
template <typename Config>
std::optional<int> parse_command_line(
    int argc, char** argv, const char* program, const std::string& description,
    const std::function<void(CLI::App&, Config*)>& bind,
    const std::function<Status(const std::string&, Config*)>& load_file, Config* config) {
  auto make_app = [&](Config* into, CommonFlags* flags) {
    auto app = std::make_unique<CLI::App>(description);
    app->add_flag("--version", flags->version, "print the version and exit");
    app->add_option("-c,--config", flags->config_path, "YAML config file");
    app->add_option("--durability", flags->durability, "sync | group");
    bind(*app, into);
    return app;
  };
  CommonFlags first;
  {
    Config probe;
    auto app = make_app(&probe, &first);
    try {
      app->parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app->exit(e) == 0 ? 0 : 2;
    }
  }
  if (first.version) {
    std::printf("%s %s\n", program, version());
    return 0;
  }
  Config result;
  if (!first.config_path.empty()) {
    if (Status s = load_file(first.config_path, &result); !s.ok()) {
      return config_error(program, s);
    }
  }
  CommonFlags flags;
  auto app = make_app(&result, &flags);
  try {
    app->parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app->exit(e) == 0 ? 0 : 2;
  }
  if (!flags.durability.empty()) {
    auto d = parse_durability(flags.durability);
    if (!d.ok()) return config_error(program, invalid_argument("--" + d.status().message()));
    result.durability = *d;
  }
  *config = std::move(result);
  return std::nullopt;
}

}  // namespace canopy::daemon
