#include <cstdio>

#include "cli/commands.hpp"
#include "site/site_status.hpp"

namespace aggrik8s::cli {

Command status_command() {
  CommandSpec spec{
      "status",
      "SITE",
      "Per machine of a site: what was built, whether and when it booted, from which address",
      "Reads the site file (kind: site), each profile's build record (<output>/<profile name>/manifest.json,\n"
      "and for ephemeral Pi machines ephemeral/<profile>/current.json) and serve's boot event log\n"
      "(serve.boot_log in the site, or --boot-log). One row per machine:\n"
      "  BUILT      the node's main file's sha256 (first 12 hex digits: the Pi image, the Talos ISO or\n"
      "             config ISO) and when manifest.json was written; for a Pi booting `ephemeral` the\n"
      "             ephemeral build current.json names and when it was published; else 'not built'\n"
      "  LAST BOOT  the newest boot step serve logged as ok for it (time, step, file), 'never seen', or\n"
      "             'no step succeeded' when all its events failed or were refused\n"
      "  FROM       the address that step came from; '(site: ADDRESS)' when the site gives another\n"
      "  LAST SEEN  the newest event of any result, its age, and the step and result when not ok\n"
      "An event belongs to a machine by the node name serve logged, else by the MAC, UUID or Pi serial\n"
      "its request named. Malformed log lines are warned about (FILE:LINE) and skipped; an unfinished\n"
      "last line (serve writing it) is skipped silently. Times are UTC.\n"
      "Exit status: 0; 1 when the site is invalid, a boot log cannot be read or a manifest is malformed\n"
      "(the table is still printed).",
      {{"boot-log", '\0', "FILE",
        "serve's boot event log to read instead of the site's serve.boot_log; repeat for rotated files, oldest "
        "first",
        true},
       {"json", '\0', "", "machine-readable output (every built file with its sha256, the events in full)"},
       {"out", '\0', "DIR", "the site was built with `build SITE --out DIR`: read its build records there, not in the "
        "site's output:"}},
      1,
      1};
  return {spec, [](const ParsedArguments& args) {
            Diagnostics diagnostics;
            // status reads no secret and no overlay: it runs where the builds and the log are, as any user.
            builder::ProfileCheckOptions checks;
            checks.check_secrets = false;
            checks.check_paths = false;
            auto site = site::load_site(args.positional[0], diagnostics, checks);
            if (!site) {
              print_diagnostics(diagnostics);
              return exit_failure;
            }
            if (auto out = args.value("out")) site->site.output = *out;
            std::vector<std::filesystem::path> logs;
            if (args.values.contains("boot-log")) {
              for (const auto& file : args.values.at("boot-log")) logs.emplace_back(file);
            } else if (site->site.serve.boot_log) {
              logs.push_back(*site->site.serve.boot_log);
            } else {
              diagnostics.warning({args.positional[0], 0, 0},
                                  "no boot event log: the site has no serve.boot_log and no --boot-log was given; "
                                  "boot columns are empty");
            }
            site::SiteBootHistory history = site::read_boot_history(site->site, logs, diagnostics);
            auto builds = site::read_site_builds(*site, diagnostics);
            auto rows = site::machine_statuses(*site, builds, history);
            print_diagnostics(diagnostics);
            if (args.flag("json")) {
              std::fputs(site::status_json(site->site.name, rows, history).c_str(), stdout);
            } else {
              std::fputs(site::status_table(rows, history, site::StatusClock::now()).c_str(), stdout);
            }
            return diagnostics.has_errors() ? exit_failure : exit_success;
          }};
}

}  // namespace aggrik8s::cli
