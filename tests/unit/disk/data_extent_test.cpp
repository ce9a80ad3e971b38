#include "disk/data_extent.hpp"

#include <catch2/catch.hpp>

#include <limits>
#include <vector>

using namespace aggrik8s;

TEST_CASE("data extents: merge joins overlapping and touching extents, subtract cuts them out") {
  CHECK(merge_extents({{20, 5}, {0, 10}, {10, 2}, {30, 0}, {21, 10}}) == std::vector<DataExtent>{{0, 12}, {20, 11}});

  const std::vector<DataExtent> data{{0, 100}, {200, 50}};
  CHECK(subtract_extents(data, {}) == data);
  CHECK(subtract_extents(data, {{0, 100}, {200, 50}}).empty());
  // A cut inside, one across the end of an extent and the start of the next, one touching an edge.
  CHECK(subtract_extents(data, {{10, 5}, {90, 120}, {250, 10}}) == std::vector<DataExtent>{{0, 10}, {15, 75}, {210, 40}});
  // Unsorted, overlapping cuts; a cut before everything; everything past an offset (a file's end).
  CHECK(subtract_extents(data, {{50, 10}, {45, 10}, {0, 1}}) == std::vector<DataExtent>{{1, 44}, {60, 40}, {200, 50}});
  CHECK(subtract_extents(data, {{220, std::numeric_limits<std::uint64_t>::max() - 220}}) ==
        std::vector<DataExtent>{{0, 100}, {200, 20}});
  // Extents given unsorted and touching come out merged.
  CHECK(subtract_extents({{200, 50}, {100, 100}, {0, 100}}, {{150, 10}}) == std::vector<DataExtent>{{0, 150}, {160, 90}});
}
