// ConfigNode: yaml-cpp's tree copied into one that knows file positions, with bounds on what aliases
// can make of a small file.
#include "core/config_node.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>

using namespace aggrik8s;

namespace {

std::string all_errors(const Diagnostics& diagnostics) {
  std::string out;
  for (const auto& d : diagnostics.all()) out += d.str() + "\n";
  return out;
}

}  // namespace

TEST_CASE("config: an alias that contains itself is an error, not endless recursion") {
  // Found by the node_inventory_yaml fuzz target (tests/fuzz/regressions/): yaml-cpp shares the
  // anchored node, so `&a [*a]` is a cycle, and copying it overflowed the stack.
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string("nodes:\n  - &a [*a]\n", "cycle.yaml", diagnostics);
  CHECK(diagnostics.has_errors());
  CHECK_THAT(all_errors(diagnostics), Catch::Contains("cycle.yaml:") && Catch::Contains("nested more than 100 levels"));
}

TEST_CASE("config: aliases of aliases cannot expand a small file into billions of values") {
  // Ten lines, 10^7 values once expanded: before, the copy ran out of memory.
  std::string yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 6; ++i) {
    std::string previous = "*a" + std::to_string(i - 1);
    yaml += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) yaml += (j ? ", " : "") + previous;
    yaml += "]\n";
  }
  Diagnostics diagnostics;
  (void)load_yaml_string(yaml, "laughs.yaml", diagnostics);
  CHECK(diagnostics.has_errors());
  // Whichever of the two budgets runs out first (the values' count or their bytes) stops the copy.
  CHECK_THAT(all_errors(diagnostics), Catch::Contains("laughs.yaml:") && (Catch::Contains("more than 100000 values") ||
                                                                          Catch::Contains("expands to more than 16 MiB")));
}

TEST_CASE("config: YAML merge keys join the merged maps' entries, explicit keys win") {
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string("base: &base {a: 1, b: 2}\nmore: &more {c: 3}\n"
                                     "one: {<<: *base, b: 20}\nboth:\n  b: 30\n  <<: [*more, *base]\n", "m.yaml", diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  const ConfigNode* one = tree.find("one");
  REQUIRE(one != nullptr);
  CHECK(one->find("a")->scalar == "1");
  CHECK(one->find("b")->scalar == "20");  // the map's own key, though the merge comes first
  CHECK(one->entries.size() == 2);
  const ConfigNode* both = tree.find("both");
  CHECK(both->find("b")->scalar == "30");
  CHECK(both->find("c")->scalar == "3");
  CHECK(both->find("a")->scalar == "1");
  Diagnostics bad;
  (void)load_yaml_string("x: {<<: 5}\n", "bad.yaml", bad);
  CHECK_THAT(all_errors(bad), Catch::Contains("bad.yaml:1:5: '<<' (a YAML merge key) takes a map or a list of maps"));
  // A quoted "<<" is an ordinary key.
  Diagnostics quoted;
  ConfigNode literal = load_yaml_string("\"<<\": 5\n", "q.yaml", quoted);
  CHECK(literal.find("<<") != nullptr);
}

TEST_CASE("config: keys YAML 1.1 would read as numbers or booleans are written quoted") {
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string("hosts: {'123': a, '0x1f': b, 'no': c, cp1: d}\n", "k.yaml", diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  std::string text = to_yaml(tree);
  CHECK_THAT(text, Catch::Contains("\"123\": a") && Catch::Contains("\"0x1f\": b") && Catch::Contains("\"no\": c") &&
                       Catch::Contains("  cp1: d"));
}

TEST_CASE("config: ordinary aliases and nesting still work") {
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string("base: &base {a: 1, b: [x, y]}\ncopy: *base\n", "ok.yaml", diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  REQUIRE(tree.find("copy") != nullptr);
  CHECK(tree.find("copy")->find("b")->items.size() == 2);
}

TEST_CASE("config: aliases of a long value are bounded in bytes, not only in count") {
  // Found by the profile_yaml fuzz target: 10^4 aliases of a 4 KiB scalar stay under the value
  // bound but are 40 MiB once copied (and several times that under the sanitizers).
  std::string yaml = "s: &s " + std::string(4096, 'x') + "\na0: &a0 [*s, *s, *s, *s, *s, *s, *s, *s, *s, *s]\n";
  for (int i = 1; i <= 3; ++i) {
    std::string previous = "*a" + std::to_string(i - 1);
    yaml += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) yaml += (j ? ", " : "") + previous;
    yaml += "]\n";
  }
  Diagnostics diagnostics;
  (void)load_yaml_string(yaml, "long.yaml", diagnostics);
  CHECK(diagnostics.has_errors());
  CHECK_THAT(all_errors(diagnostics), Catch::Contains("long.yaml:") && Catch::Contains("expands to more than 16 MiB"));
}

TEST_CASE("config: input on which yaml-cpp's LoadAll never returns is a syntax error") {
  // Found by the profile_yaml fuzz target: YAML::LoadAll kept appending empty documents for this file
  // until memory ran out (validate hung).
  std::ifstream in(std::string(AGGRIK8S_TEST_SOURCE_DIR) + "/tests/fuzz/regressions/profile_yaml/loadall-endless-documents.yaml",
                   std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  REQUIRE_FALSE(text.empty());
  Diagnostics diagnostics;
  (void)load_yaml_string(text, "endless.yaml", diagnostics);
  CHECK(diagnostics.has_errors());
  CHECK_THAT(all_errors(diagnostics), Catch::Contains("endless.yaml:") && Catch::Contains("YAML syntax error"));
}

TEST_CASE("config: a tab in the indentation is named in the syntax error", "[config]") {
  Diagnostics diagnostics;
  (void)load_yaml_string("kind: talos-iso\nname: x\ntalos:\n\tiso: {path: a.iso}\n", "tab.yaml", diagnostics);
  REQUIRE(diagnostics.has_errors());
  CHECK_THAT(all_errors(diagnostics), Catch::Contains("tab.yaml:4:") && Catch::Contains("YAML syntax error") &&
                                          Catch::Contains("(line 4 is indented with a tab; YAML indents with spaces only)"));
  // A syntax error with no tab in sight gets no such hint.
  Diagnostics other;
  (void)load_yaml_string("a: [1, 2\n", "bracket.yaml", other);
  REQUIRE(other.has_errors());
  CHECK_THAT(all_errors(other), !Catch::Contains("tab"));
}

TEST_CASE("config: a second document is an error at its start, an empty one after --- is not") {
  Diagnostics two;
  (void)load_yaml_string("a: 1\n---\nb: 2\n", "two.yaml", two);
  CHECK_THAT(all_errors(two), Catch::Contains("two.yaml:3:1: expected one YAML document, found 2: another begins here"));
  Diagnostics trailing;
  ConfigNode tree = load_yaml_string("a: 1\n---\n", "trailing.yaml", trailing);
  CHECK_FALSE(trailing.has_errors());
  CHECK(tree.find("a") != nullptr);
}

TEST_CASE("config: written YAML may be followed by blank lines without changing a value, block scalars included") {
  // The Talos build pads a node ISO's config.yaml with newlines to whole 2048-byte blocks: a literal
  // block scalar kept whole (`|+`) as the last value would take those newlines in, so to_yaml must
  // never write one.
  Diagnostics diagnostics;
  ConfigNode read = load_yaml_string("a: 1\nfiles:\n  - content: |+\n      line one\n      line two\n\n", "t.yaml", diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  std::string written = to_yaml(read);
  ConfigNode again = load_yaml_string(written + std::string(2000, '\n'), "padded.yaml", diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  CHECK(to_yaml(again) == written);
  CHECK(again.entries.at(1).value.items.at(0).entries.at(0).value.scalar == "line one\nline two\n\n");
}
