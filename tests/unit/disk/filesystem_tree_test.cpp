// The path rules of disk/filesystem_tree: how exclusions and replacements are spelled and matched.
#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "disk/filesystem_tree.hpp"

using aggrik8s::normalize_tree_path;
using aggrik8s::parent_tree_path;

TEST_CASE("normalize_tree_path", "[unit][disk]") {
  CHECK(normalize_tree_path("/", "x") == "/");
  CHECK(normalize_tree_path("//", "x") == "/");
  CHECK(normalize_tree_path("/etc/fstab", "x") == "/etc/fstab");
  CHECK(normalize_tree_path("/etc//./fstab/", "x") == "/etc/fstab");
  CHECK_THROWS_WITH(normalize_tree_path("etc/fstab", "excluded path"),
                    "excluded path 'etc/fstab' is not an absolute path");
  CHECK_THROWS_WITH(normalize_tree_path("", "excluded path"), "excluded path '' is not an absolute path");
  CHECK_THROWS_WITH(normalize_tree_path("/etc/../root", "replaced file"),
                    "replaced file '/etc/../root' contains '..'; give the path without it");
  CHECK_THROWS_WITH(normalize_tree_path(std::string("/a\0b", 4), "x"), Catch::Contains("NUL"));
}

TEST_CASE("parent_tree_path", "[unit][disk]") {
  CHECK(parent_tree_path("/etc") == "/");
  CHECK(parent_tree_path("/etc/rancher/node") == "/etc/rancher");
}
