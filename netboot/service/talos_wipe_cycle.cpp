#include "netboot/service/talos_wipe_cycle.hpp"

namespace aggrik8s::netboot {

const char* to_string(TalosBootKind kind) { return kind == TalosBootKind::wipe ? "wipe" : "normal"; }

std::optional<TalosBootKind> parse_talos_boot_kind(std::string_view text) {
  if (text == "wipe") return TalosBootKind::wipe;
  if (text == "normal") return TalosBootKind::normal;
  return std::nullopt;
}

const char* to_string(TalosWipeTransition transition) {
  switch (transition) {
    case TalosWipeTransition::power_on_wipe: return "power-on-wipe";
    case TalosWipeTransition::wipe_repeat: return "wipe-repeat";
    case TalosWipeTransition::wipe_reboot_normal: return "wipe-reboot-normal";
    case TalosWipeTransition::wipe_expired: return "wipe-expired";
    case TalosWipeTransition::normal_repeat: return "normal-repeat";
    case TalosWipeTransition::clock_went_back: return "clock-went-back";
    case TalosWipeTransition::other_address: return "other-address";
    case TalosWipeTransition::wipe_files_fetched: return "wipe-files-fetched";
    case TalosWipeTransition::normal_files_fetched: return "normal-files-fetched";
  }
  return "power-on-wipe";
}

TalosWipeDecision decide_talos_wipe_boot(const std::optional<TalosWipeCycle>& state, WallClock::time_point now,
                                         std::chrono::seconds reboot_window, std::string_view client) {
  auto serve = [&](TalosBootKind boot, TalosWipeTransition transition, WallClock::time_point served_at) {
    return TalosWipeDecision{boot, transition, TalosWipeCycle{boot, served_at, std::nullopt, std::string(client)}};
  };
  if (!state) return serve(TalosBootKind::wipe, TalosWipeTransition::power_on_wipe, now);
  // The latest time recorded: a clock set back past it makes every elapsed time below meaningless.
  WallClock::time_point latest = state->files_fetched_at.value_or(state->served_at);
  if (now < latest) return serve(TalosBootKind::wipe, TalosWipeTransition::clock_went_back, now);
  // Whatever the last boot did, this is not known to be the same machine asking again.
  if (state->served_to.empty() || state->served_to != client) {
    return serve(TalosBootKind::wipe, TalosWipeTransition::other_address, now);
  }
  if (state->served == TalosBootKind::wipe) {
    // Before its files the node is still in the wipe boot (iPXE asking again): the same answer. Later
    // than the window it is the wipe all the same, but for a new power-on.
    if (!state->files_fetched_at) {
      if (now - state->served_at <= reboot_window) {
        return serve(TalosBootKind::wipe, TalosWipeTransition::wipe_repeat, state->served_at);
      }
      return serve(TalosBootKind::wipe, TalosWipeTransition::power_on_wipe, now);
    }
    if (now - *state->files_fetched_at <= reboot_window) {
      return serve(TalosBootKind::normal, TalosWipeTransition::wipe_reboot_normal, now);
    }
    return serve(TalosBootKind::wipe, TalosWipeTransition::wipe_expired, now);
  }
  // A repeat keeps the first served_at, so that repeats cannot stretch the window forever.
  if (!state->files_fetched_at && now - state->served_at <= reboot_window) {
    return serve(TalosBootKind::normal, TalosWipeTransition::normal_repeat, state->served_at);
  }
  return serve(TalosBootKind::wipe, TalosWipeTransition::power_on_wipe, now);
}

std::optional<TalosWipeFilesFetched> note_talos_boot_files_fetched(const std::optional<TalosWipeCycle>& state,
                                                                   WallClock::time_point now, std::string_view client) {
  if (!state || state->files_fetched_at || state->served_to.empty() || state->served_to != client) return std::nullopt;
  TalosWipeCycle next = *state;
  next.files_fetched_at = now;
  return TalosWipeFilesFetched{state->served == TalosBootKind::wipe ? TalosWipeTransition::wipe_files_fetched
                                                                    : TalosWipeTransition::normal_files_fetched,
                               next};
}

const char* talos_wipe_cycle_state(const TalosWipeCycle& cycle) {
  if (cycle.served == TalosBootKind::wipe) return cycle.files_fetched_at ? "wipe-running" : "wipe-served";
  return cycle.files_fetched_at ? "normal-running" : "normal-served";
}

std::string describe_talos_wipe_cycle(const TalosWipeCycle& cycle, WallClock::time_point now,
                                      std::chrono::seconds reboot_window) {
  // What the node's next request would get, said in the words of the boots rather than the states.
  TalosWipeDecision next = decide_talos_wipe_boot(cycle, now, reboot_window, cycle.served_to);
  std::string where = cycle.served == TalosBootKind::wipe ? "wipe boot" : "normal boot";
  where += cycle.files_fetched_at ? " running" : " served, its files not fetched yet";
  return where + "; next script: " + to_string(next.boot) + " boot (" + to_string(next.transition) + ")";
}

std::optional<std::string> check_talos_wipe_argument(std::string_view text) {
  if (text == "system") return std::nullopt;
  constexpr std::string_view prefix = "system:";
  std::string expected = "expected 'system' or 'system:LABEL[,LABEL...]' with Talos partition labels such as "
                         "EPHEMERAL and STATE";
  if (!text.starts_with(prefix)) return "'" + std::string(text) + "' is not a Talos wipe target: " + expected;
  std::string_view labels = text.substr(prefix.size());
  while (true) {
    auto comma = labels.find(',');
    std::string_view label = labels.substr(0, comma);
    if (label.empty()) return "'" + std::string(text) + "' has an empty partition label: " + expected;
    for (char c : label) {
      // Talos' partition labels: upper case, digits, '-' and '_' (EPHEMERAL, STATE, META, BOOT, EFI).
      bool allowed = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
      if (!allowed) {
        return "'" + std::string(text) + "': partition label '" + std::string(label) +
               "' may hold only A-Z, 0-9, '-' and '_' (Talos' labels are upper case, e.g. STATE)";
      }
    }
    if (comma == std::string_view::npos) return std::nullopt;
    labels = labels.substr(comma + 1);
  }
}

std::string talos_wipe_kernel_argument(std::string_view wipe) {
  return "talos.experimental.wipe=" + std::string(wipe);
}

}  // namespace aggrik8s::netboot
