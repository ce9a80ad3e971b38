// tftp_serve ROOT [ADDRESS [PORT]] [--remap FILE] [--max-blksize N] [--mtu N] [--max-windowsize N]
//            [--timeout-ms N] [--transfer-threads N] [--debug]
// Serves ROOT over TFTP until SIGINT/SIGTERM, printing the bound port on stdout first so a script can
// start it on port 0. For benchmarks and interop checks; the product's entry point is `aggrik8s-image serve`.
#include "netboot/asio.hpp"
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "core/log.hpp"
#include "netboot/tftp/tftp_server.hpp"

namespace netboot = aggrik8s::netboot;

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  netboot::TftpServerConfig config;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "tftp_serve: " << arg << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--remap") {
      config.remap = std::make_shared<const netboot::TftpRemapRules>(netboot::TftpRemapRules::load(value()));
    } else if (arg == "--max-blksize") {
      config.limits.max_blksize = static_cast<std::uint16_t>(std::stoul(value()));
    } else if (arg == "--mtu") {
      config.limits.path_mtu = static_cast<std::uint32_t>(std::stoul(value()));
    } else if (arg == "--max-windowsize") {
      config.limits.max_windowsize = static_cast<std::uint16_t>(std::stoul(value()));
    } else if (arg == "--timeout-ms") {
      config.retransmit.first = std::chrono::milliseconds(std::stoul(value()));
      config.retransmit.longest = std::max(config.retransmit.longest, config.retransmit.first);
    } else if (arg == "--transfer-threads") {
      config.transfer_threads = static_cast<unsigned>(std::stoul(value()));
    } else if (arg == "--debug") {
      aggrik8s::log::set_level(aggrik8s::log::Level::debug);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.empty() || positional.size() > 3) {
    std::cerr << "usage: tftp_serve ROOT [ADDRESS [PORT]] [--remap FILE] [--max-blksize N] [--mtu N]"
                 " [--max-windowsize N] [--timeout-ms N] [--transfer-threads N] [--debug]\n";
    return 2;
  }
  try {
    config.root = positional[0];
    auto address = boost::asio::ip::make_address(positional.size() > 1 ? positional[1] : "127.0.0.1");
    auto port = static_cast<unsigned short>(positional.size() > 2 ? std::stoul(positional[2]) : 0);
    config.listen = {address, port};

    boost::asio::io_context io;
    netboot::TftpServer server(io, config);
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&server](const boost::system::error_code&, int) { server.stop(); });
    server.start();
    std::cout << server.local_endpoint().port() << std::endl;
    io.run();
    auto counters = server.counters();
    std::cerr << "tftp_serve: " << counters.completed << " completed, " << counters.probes << " probes, "
              << counters.failed << " failed, " << counters.bytes_sent << " bytes\n";
  } catch (const std::exception& e) {
    std::cerr << "tftp_serve: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
