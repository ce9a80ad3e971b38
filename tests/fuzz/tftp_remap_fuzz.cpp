// libFuzzer target for the tftp-hpa remap file reader and the rule engine: every file either parses or
// throws aggrik8s::Error naming the file and line; parsed rules are applied to a few request names
// (read and write, the fuzzer's own bytes among them), which must never crash or loop forever.
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "netboot/tftp/tftp_remap.hpp"

using namespace aggrik8s::netboot;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  TftpRemapRules rules;
  try {
    rules = TftpRemapRules::parse(text, "fuzz.remap");
  } catch (const aggrik8s::Error&) {
    return 0;
  }
  const std::uint8_t octets[4] = {192, 0, 2, 169};
  // The last line of the input doubles as a request name, so the fuzzer can make rules match.
  std::string_view own = text.substr(text.rfind('\n') == std::string_view::npos ? 0 : text.rfind('\n') + 1);
  TftpRemapClient reader = TftpRemapClient::ipv4(octets, false);
  for (std::string_view name : {std::string_view("\\Boot\\BCD"), std::string_view("9ffefdef/config.txt"), own.substr(0, 128)}) {
    (void)rules.apply(name, reader);
  }
  (void)rules.apply(own.substr(0, 128), TftpRemapClient::ipv4(octets, true));
  return 0;
}
