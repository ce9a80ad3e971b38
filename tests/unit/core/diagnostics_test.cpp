// What a user reads of a run's diagnostics: each message once.
#include "core/diagnostics.hpp"

#include <catch2/catch.hpp>

using namespace aggrik8s;

TEST_CASE("diagnostics: a message repeated at the same place is shown once, and still counted for callers", "[diagnostics]") {
  // Found validating a site whose three profiles extend one base with a missing overlay: the same
  // error three times, "invalid (3 errors)".
  Diagnostics d;
  d.error({"base.yaml", 35, 5}, "overlay directory overlays/x does not exist");
  d.warning({"site.yaml", 3, 1}, "an even control plane");
  d.error({"base.yaml", 35, 5}, "overlay directory overlays/x does not exist");
  d.error({"base.yaml", 36, 5}, "overlay directory overlays/x does not exist");  // another place: kept
  CHECK(d.error_count() == 3);
  CHECK(d.distinct_error_count() == 2);
  auto shown = d.distinct();
  REQUIRE(shown.size() == 3);
  CHECK(shown[0].str() == "base.yaml:35:5: overlay directory overlays/x does not exist");
  CHECK(shown[1].str() == "site.yaml:3:1: warning: an even control plane");
  CHECK(shown[2].where.line == 36);
}
