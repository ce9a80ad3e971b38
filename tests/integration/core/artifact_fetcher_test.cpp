// The fetch cache against a real HTTP server on loopback that misbehaves in the ways mirrors do.
#include "core/artifact_fetcher.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <random>
#include <thread>

#include "core/error.hpp"
#include "core/progress.hpp"
#include "tests/loopback_http_server.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;
using test::LoopbackHttpServer;
using test::LoopbackResponse;

using aggrik8s::test::random_bytes;

namespace {

FetchOptions quick_options(const fs::path& cache) {
  FetchOptions options;
  options.cache_dir = cache;
  options.initial_backoff = std::chrono::milliseconds(10);
  options.max_backoff = std::chrono::milliseconds(40);
  options.max_attempts = 4;
  options.connect_timeout_seconds = 5;
  return options;
}

ArtifactSource pinned(const std::string& url, const std::string& content) {
  return ArtifactSource{url, Sha256::of(content), {}};
}

}  // namespace

TEST_CASE("downloads into the content-addressed cache and serves later fetches from it", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  std::string content = random_bytes(3'000'000, 1);
  server.serve("/base.img.xz", {content});
  ArtifactFetcher fetcher(quick_options(dir / "cache"));

  FetchedArtifact first = fetcher.fetch(pinned(server.url("/base.img.xz"), content));
  CHECK(first.downloaded);
  CHECK(first.path == dir / "cache" / "sha256" / Sha256::of(content).hex());
  CHECK(test::read_file(first.path) == content);
  CHECK(first.size == content.size());
  CHECK_FALSE(fs::exists(dir / "cache" / "partial" / (Sha256::of(content).hex() + ".part")));

  FetchedArtifact second = fetcher.fetch(pinned(server.url("/base.img.xz"), content));
  CHECK_FALSE(second.downloaded);
  CHECK(server.request_count("/base.img.xz") == 1);

  SECTION("offline uses the cache and fails clearly for what is not cached") {
    FetchOptions options = quick_options(dir / "cache");
    options.offline = true;
    ArtifactFetcher offline(options);
    CHECK(offline.fetch(pinned(server.url("/base.img.xz"), content)).path == first.path);
    CHECK_THROWS_WITH(offline.fetch(pinned(server.url("/other.img"), "other")),
                      Catch::Contains("not in the cache") && Catch::Contains("--offline"));
    CHECK(server.request_count("/other.img") == 0);
  }
}

TEST_CASE("a connection dropped mid-file is resumed with a range request", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  std::string content = random_bytes(2'000'000, 2);
  LoopbackResponse response{content};
  response.drop_after = 700'000;
  response.drop_count = 2;  // two drops, then a whole answer
  server.serve("/rke2.tar.gz", response);
  ArtifactFetcher fetcher(quick_options(dir / "cache"));

  FetchedArtifact fetched = fetcher.fetch(pinned(server.url("/rke2.tar.gz"), content));
  CHECK(test::read_file(fetched.path) == content);
  auto ranges = server.ranges_requested("/rke2.tar.gz");
  REQUIRE(ranges.size() == 3);
  CHECK(ranges[0].empty());
  CHECK(ranges[1] == "700000-");
  CHECK(ranges[2] == "1400000-");
}

TEST_CASE("a partial download left by an earlier run is resumed, and restarted when the server ignores ranges",
          "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  std::string content = random_bytes(1'000'000, 3);
  std::string hex = Sha256::of(content).hex();
  test::write_file(dir / "cache" / "partial" / (hex + ".part"), content.substr(0, 400'000));

  SECTION("server honours Range") {
    server.serve("/f", {content});
    ArtifactFetcher fetcher(quick_options(dir / "cache"));
    CHECK(test::read_file(fetcher.fetch(pinned(server.url("/f"), content)).path) == content);
    CHECK(server.ranges_requested("/f") == std::vector<std::string>{"400000-"});
  }
  SECTION("server ignores Range and sends the whole file") {
    LoopbackResponse response{content};
    response.ignore_range = true;
    server.serve("/f", response);
    ArtifactFetcher fetcher(quick_options(dir / "cache"));
    CHECK(test::read_file(fetcher.fetch(pinned(server.url("/f"), content)).path) == content);
    CHECK(server.request_count("/f") == 1);  // the whole body it sent is the file: no second download
  }
  SECTION("stale partial bytes from other content: one clean restart") {
    test::write_file(dir / "cache" / "partial" / (hex + ".part"), std::string(400'000, 'z'));
    server.serve("/f", {content});
    ArtifactFetcher fetcher(quick_options(dir / "cache"));
    CHECK(test::read_file(fetcher.fetch(pinned(server.url("/f"), content)).path) == content);
    CHECK(server.ranges_requested("/f") == std::vector<std::string>{"400000-", ""});
  }
}

TEST_CASE("a cached file cut short or changed is checked again, removed and downloaded anew", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  std::string content = random_bytes(500'000, 8);
  server.serve("/base.img", {content});
  ArtifactFetcher fetcher(quick_options(dir / "cache"));
  FetchedArtifact first = fetcher.fetch(pinned(server.url("/base.img"), content));
  REQUIRE(first.downloaded);
  fs::resize_file(first.path, 100'000);  // a disk that filled up, a hand edit
  FetchedArtifact again = fetcher.fetch(pinned(server.url("/base.img"), content));
  CHECK(again.downloaded);
  CHECK(test::read_file(again.path) == content);
  CHECK(server.request_count("/base.img") == 2);
  // Offline, the damaged file is not served under the pinned hash either.
  fs::resize_file(again.path, 100'000);
  FetchOptions options = quick_options(dir / "cache");
  options.offline = true;
  CHECK_THROWS_WITH(ArtifactFetcher(options).fetch(pinned(server.url("/base.img"), content)),
                    Catch::Contains("not in the cache"));
  // A cache from before the stamps: hashed once, then trusted by its stamp.
  FetchedArtifact repaired = fetcher.fetch(pinned(server.url("/base.img"), content));
  fs::remove(repaired.path.string() + ".checked");
  CHECK_FALSE(fetcher.fetch(pinned(server.url("/base.img"), content)).downloaded);
  CHECK(fs::exists(repaired.path.string() + ".checked"));
}

TEST_CASE("a URL's password is never in a message", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  std::string url = server.url("/missing.img");
  url.replace(url.find("://") + 3, 0, "alice:s3cretPW@");
  ArtifactSource source = pinned(url, "x");
  CHECK(source.shown().find("s3cretPW") == std::string::npos);
  CHECK(source.shown().find("alice:***@") != std::string::npos);
  try {
    ArtifactFetcher(quick_options(dir / "cache")).fetch(source);
    FAIL("a 404 must fail");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("s3cretPW") == std::string::npos);
    CHECK(std::string(e.what()).find("alice:***@") != std::string::npos);
  }
  CHECK(redact_url_credentials("https://h/x@y") == "https://h/x@y");
  CHECK(redact_url_credentials("https://tok@h/x") == "https://***@h/x");  // a token as the user
  CHECK(redact_url_credentials("/local/a:b@c") == "/local/a:b@c");
}

TEST_CASE("wrong bytes fail with both checksums named and leave nothing in the cache", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  std::string expected = random_bytes(100'000, 4);
  std::string served = random_bytes(100'000, 5);
  server.serve("/img", {served});
  ArtifactFetcher fetcher(quick_options(dir / "cache"));
  ArtifactSource source = pinned(server.url("/img"), expected);
  source.where = {"profiles/demo.yaml", 7, 5};
  CHECK_THROWS_WITH(fetcher.fetch(source), Catch::Contains("sha256 mismatch") &&
                                               Catch::Contains(Sha256::of(expected).hex()) &&
                                               Catch::Contains(Sha256::of(served).hex()) &&
                                               Catch::Contains("profiles/demo.yaml:7:5"));
  CHECK_FALSE(fs::exists(dir / "cache" / "sha256" / Sha256::of(expected).hex()));
  CHECK(fs::is_empty(dir / "cache" / "partial"));
  CHECK(server.request_count("/img") == 1);  // wrong bytes are not a transient failure
}

TEST_CASE("404 fails at once, 503 is retried with backoff", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  ArtifactFetcher fetcher(quick_options(dir / "cache"));

  CHECK_THROWS_WITH(fetcher.fetch(pinned(server.url("/missing.img"), "x")),
                    Catch::Contains("HTTP 404") && Catch::Contains("/missing.img"));
  CHECK(server.request_count("/missing.img") == 1);

  std::string content = "after two failures";
  LoopbackResponse flaky{content};
  flaky.fail_count = 2;
  server.serve("/flaky", flaky);
  CHECK(test::read_file(fetcher.fetch(pinned(server.url("/flaky"), content)).path) == content);
  CHECK(server.request_count("/flaky") == 3);

  LoopbackResponse down{"never served"};
  down.fail_count = 100;
  server.serve("/down", down);
  CHECK_THROWS_WITH(fetcher.fetch(pinned(server.url("/down"), "never served")),
                    Catch::Contains("HTTP 503") && Catch::EndsWith("gave up after 4 attempts)"));
  CHECK(server.request_count("/down") == 4);
}

TEST_CASE("nothing listening is a clear connection error", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  std::uint16_t port = 0;
  { LoopbackHttpServer server; port = server.port(); }
  FetchOptions options = quick_options(dir / "cache");
  options.max_attempts = 2;
  ArtifactFetcher fetcher(options);
  // An unreachable host is what an offline build machine meets: the error says how builds work there.
  CHECK_THROWS_WITH(fetcher.fetch(pinned("http://127.0.0.1:" + std::to_string(port) + "/x", "x")),
                    Catch::Contains("127.0.0.1") && Catch::Contains("gave up after 2 attempts") &&
                        Catch::EndsWith("bring that cache (--cache-dir) and run with --offline"));
}

TEST_CASE("local paths and file URLs are verified in place", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  test::write_file(dir / "my image.img", "local bytes");
  ArtifactFetcher fetcher(quick_options(dir / "cache"));
  auto local = fetcher.fetch({(dir / "my image.img").string(), Sha256::of("local bytes"), {}});
  CHECK(local.path == dir / "my image.img");
  CHECK_FALSE(local.downloaded);

  std::string url = "file://" + (dir / "my%20image.img").string();
  CHECK(fetcher.fetch({url, Sha256::of("local bytes"), {}}).path == dir / "my image.img");
  CHECK_THROWS_WITH(fetcher.fetch({(dir / "my image.img").string(), Sha256::of("other"), {}}),
                    Catch::Contains("sha256 mismatch"));
  CHECK_THROWS_WITH(fetcher.fetch({(dir / "absent.img").string(), std::nullopt, {}}), Catch::Contains("No such file"));
  CHECK_THROWS_WITH(fetcher.fetch({"ftp://example/x", std::nullopt, {}}), Catch::Contains("unsupported URL scheme 'ftp'"));

  // The file fetch() reads, named before it runs (a build starts reading a local ISO meanwhile).
  CHECK(local_artifact_path({(dir / "my image.img").string(), std::nullopt, {}}) == dir / "my image.img");
  CHECK(local_artifact_path({url, std::nullopt, {}}) == dir / "my image.img");
  CHECK_FALSE(local_artifact_path({"https://example/x.iso", std::nullopt, {}}));
  CHECK_FALSE(local_artifact_path({"ftp://example/x", std::nullopt, {}}));
  CHECK_FALSE(local_artifact_path({"file://relative/x.iso", std::nullopt, {}}));
}

TEST_CASE("several inputs download concurrently, every failure is reported together", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  std::vector<ArtifactSource> sources;
  std::vector<std::string> contents;
  for (unsigned i = 0; i < 6; ++i) {
    contents.push_back(random_bytes(500'000 + i, 10 + i));
    server.serve("/a" + std::to_string(i), {contents.back()});
    sources.push_back(pinned(server.url("/a" + std::to_string(i)), contents.back()));
  }
  sources.push_back(sources.front());  // the same input twice is fetched once
  ArtifactFetcher fetcher(quick_options(dir / "cache"));
  auto fetched = fetcher.fetch_all(sources);
  REQUIRE(fetched.size() == 7);
  for (unsigned i = 0; i < 6; ++i) CHECK(test::read_file(fetched[i].path) == contents[i]);
  CHECK(fetched[6].path == fetched[0].path);
  CHECK(server.request_count("/a0") == 1);

  std::vector<ArtifactSource> bad{pinned(server.url("/nope1"), "1"), pinned(server.url("/nope2"), "2"), sources[1]};
  CHECK_THROWS_WITH(fetcher.fetch_all(bad), Catch::Contains("2 inputs could not be fetched") &&
                                                Catch::Contains("/nope1") && Catch::Contains("/nope2"));
}

TEST_CASE("unpinned URLs are cached by URL and re-fetched unless offline", "[fetch]") {
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  server.serve("/sha256sum-arm64.txt", {"v1"});
  ArtifactFetcher fetcher(quick_options(dir / "cache"));
  ArtifactSource source{server.url("/sha256sum-arm64.txt"), std::nullopt, {}};
  CHECK(test::read_file(fetcher.fetch(source).path) == "v1");
  server.serve("/sha256sum-arm64.txt", {"v2"});
  auto refreshed = fetcher.fetch(source);
  CHECK(test::read_file(refreshed.path) == "v2");
  CHECK(refreshed.sha256 == Sha256::of("v2"));
  FetchOptions options = quick_options(dir / "cache");
  options.offline = true;
  CHECK(test::read_file(ArtifactFetcher(options).fetch(source).path) == "v2");
  CHECK(server.request_count("/sha256sum-arm64.txt") == 2);
}

TEST_CASE("a 416 to a request for the whole file is the server's error, not an empty download", "[fetch]") {
  // Found with a mirror answering 416 to a plain GET: reported as "sha256 mismatch ... got e3b0c442..."
  // (the digest of nothing), as if the download had been empty.
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  LoopbackResponse refused{"not a file"};
  refused.status = 416;
  server.serve("/image.img", refused);
  ArtifactFetcher fetcher(quick_options(dir / "cache"));
  CHECK_THROWS_WITH(fetcher.fetch(pinned(server.url("/image.img"), "the bytes")),
                    Catch::Contains("HTTP 416 from " + server.url("/image.img")) && !Catch::Contains("mismatch"));
}

TEST_CASE("a fetch that waited for another process's download works on the file that is there after it", "[fetch]") {
  // Found running two fetches into one cache: the second one waited on the lock of the first one's
  // partial download, which the first then renamed into the cache; the second truncated that finished
  // file through the descriptor it had opened before the lock, and failed ("cannot open ... .part").
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  LoopbackHttpServer server;
  server.serve("/sha256sum-arm64.txt", {"the server's list"});
  ArtifactSource source{server.url("/sha256sum-arm64.txt"), std::nullopt, {}};
  const std::string key = Sha256::of(source.location).hex();
  fs::create_directories(dir / "cache" / "partial");
  fs::create_directories(dir / "cache" / "url");
  const fs::path partial = dir / "cache" / "partial" / (key + ".part");
  // The other process: holds the partial's lock while it downloads.
  int other = ::open(partial.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(other >= 0);
  REQUIRE(::flock(other, LOCK_EX) == 0);
  std::string waiting_result;
  std::thread waiting([&] {
    try {
      waiting_result = test::read_file(ArtifactFetcher(quick_options(dir / "cache")).fetch(source).path);
    } catch (const std::exception& e) {
      waiting_result = std::string("error: ") + e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // ... which it completes and renames into the cache, then lets go.
  REQUIRE(::write(other, "the other's list", 16) == 16);
  REQUIRE(::rename(partial.c_str(), (dir / "cache" / "url" / key).c_str()) == 0);
  ::close(other);
  waiting.join();
  CHECK(waiting_result == "the server's list");
  CHECK(test::read_file(dir / "cache" / "url" / key) == "the server's list");
  CHECK_FALSE(fs::exists(partial));
}

TEST_CASE("a verified local input replaced or written after its check is caught before it is used", "[fetch]") {
  // Found replacing a build's `path:` base while the build downloaded RKE2: the base had been hashed,
  // and its replacement was decoded into the image and into the cache under the pinned sha256.
  set_progress_mode(ProgressMode::off);
  test::TempDir dir;
  test::write_file(dir / "base.img.xz", "the pinned bytes");
  ArtifactFetcher fetcher(quick_options(dir / "cache"));
  FetchedArtifact fetched = fetcher.fetch(ArtifactSource{(dir / "base.img.xz").string(), Sha256::of(std::string("the pinned bytes")), {}});
  REQUIRE(fetched.local_stamp);
  CHECK_NOTHROW(check_local_input_unchanged(fetched));
  test::write_file(dir / "other", "other bytes, same length");
  fs::rename(dir / "other", dir / "base.img.xz");  // mv over it
  CHECK_THROWS_WITH(check_local_input_unchanged(fetched),
                    Catch::Contains("changed while the build was using it") && Catch::Contains("base.img.xz"));
  // An input without a pinned sha256 was never verified: nothing to check.
  FetchedArtifact unpinned = fetcher.fetch(ArtifactSource{(dir / "base.img.xz").string(), std::nullopt, {}});
  CHECK_FALSE(unpinned.local_stamp);
}
