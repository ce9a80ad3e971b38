#pragma once
// The TFTP server: one listening UDP socket, and for each read request a transfer on its own ephemeral
// socket (its TID, RFC 1350), run as a C++20 coroutine on the caller's io_context. Read-only: write
// requests are refused with ERROR 2.
//
// Threading: requests are read, remapped, checked and their files opened on the io_context's thread; run
// that io_context on one thread. Once its file is open, a transfer sends it from one of the server's own
// transfer threads (TftpServerConfig::transfer_threads; 0 keeps every transfer on the io_context).
// stop() and counters() may be called from any thread. Observer callbacks and the client_tree and
// client_directories functions run on the io_context thread and must not block.
#include "netboot/asio.hpp"
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "netboot/tftp/tftp_file_source.hpp"
#include "netboot/tftp/tftp_packet.hpp"
#include "netboot/tftp/tftp_remap.hpp"
#include "netboot/tftp/tftp_retransmit_schedule.hpp"
#include "netboot/tftp/tftp_transfer_threads.hpp"

namespace aggrik8s::netboot {

enum class TftpTransferOutcome {
  completed,
  probe,   // the client read the start and ended with an ERROR, as the Raspberry Pi does to test for a file
  failed,  // refused (not found, access), timed out, client error mid-file, server stopping
};

struct TftpTransferStarted {
  boost::asio::ip::udp::endpoint client;
  std::string requested;  // as the client sent it
  std::filesystem::path path;
  std::uint64_t file_size = 0;
  std::uint16_t blksize = tftp_default_blksize;
  std::uint16_t windowsize = 1;
};

struct TftpTransferEnded {
  boost::asio::ip::udp::endpoint client;
  std::string requested;
  std::filesystem::path path;  // empty if the request was refused before a file was opened
  TftpTransferOutcome outcome = TftpTransferOutcome::failed;
  std::uint64_t bytes_sent = 0;  // payload bytes, counting each block once
  std::chrono::steady_clock::duration duration{};
  std::string detail;  // why it failed, or the client's ERROR message for a probe
  // The ERROR a refused request was answered with (file not found, access violation...); nullopt when
  // the transfer started (and failed later, or did not fail).
  std::optional<TftpErrorCode> refused_with;
};

// Hook for the boot event log and /metrics. Default implementations ignore the event.
class TftpServerObserver {
 public:
  virtual ~TftpServerObserver() = default;
  virtual void transfer_started(const TftpTransferStarted& event) { (void)event; }
  virtual void transfer_finished(const TftpTransferEnded& event) { (void)event; }  // completed or probe
  virtual void transfer_failed(const TftpTransferEnded& event) { (void)event; }
};

struct TftpServerCounters {
  std::uint64_t requests = 0;  // RRQ/WRQ received
  std::uint64_t completed = 0;
  std::uint64_t probes = 0;
  std::uint64_t failed = 0;
  std::uint64_t malformed = 0;   // datagrams that did not parse, on any socket
  std::uint64_t bytes_sent = 0;  // payload bytes of completed and probed transfers
  std::uint64_t active = 0;      // transfers in progress
  std::uint64_t retransmissions = 0;  // timeouts that resent a window or an OACK
};

// Where one client's request is read from, when it is not the shared root: the netboot inventory gives
// a Raspberry Pi node its image's boot partition. `filename` is the name inside `source` (a Pi's serial
// number prefix already stripped); a non-empty `refusal` answers "File not found" without looking.
struct TftpClientTree {
  std::shared_ptr<const TftpFileSource> source;
  std::string filename;
  std::vector<std::string> prefixes;
  std::string refusal;
};

struct TftpServerConfig {
  boost::asio::ip::udp::endpoint listen{boost::asio::ip::address_v4::loopback(), 69};  // port 0: ephemeral
  std::filesystem::path root;  // the shared tree; may be empty when client_tree answers every request
  TftpServerLimits limits;
  // First retransmission timeout (ROMs like iDRAC8 need it well below 10 s), its back-off, and the
  // timeouts in a row before a transfer is dropped; see TftpRetransmitSchedule.
  TftpRetransmitPolicy retransmit;
  std::shared_ptr<const TftpRemapRules> remap;
  // Directories (relative to the root) to look in before the root for this client, e.g. a MAC directory.
  std::function<std::vector<std::string>(const boost::asio::ip::address&)> client_directories;
  // Asked first, after remapping, for every read request; nullopt falls back to the root.
  std::function<std::optional<TftpClientTree>(const boost::asio::ip::address& client, const std::string& filename)>
      client_tree;
  std::shared_ptr<TftpServerObserver> observer;
  // Threads that send the blocks of open transfers (started by start(), joined by the destructor); 0 sends
  // them from the io_context's own thread. Fixed for the server's life: reconfigure() does not change it.
  unsigned transfer_threads = TftpTransferThreads::default_count();
};

class TftpServer {
 public:
  // Binds the listening socket now (so local_endpoint() is known before serving); throws aggrik8s::Error
  // if the root is unusable or the address cannot be bound.
  TftpServer(boost::asio::io_context& io, TftpServerConfig config);
  ~TftpServer();
  TftpServer(const TftpServer&) = delete;
  TftpServer& operator=(const TftpServer&) = delete;

  void start();  // spawns the listener on the io_context
  void stop();   // closes the listener and ends transfers in flight; run() then returns

  // New option limits, retransmission policy and remap rules for requests from now on (SIGHUP).
  void reconfigure(TftpServerLimits limits, TftpRetransmitPolicy retransmit,
                   std::shared_ptr<const TftpRemapRules> remap);

  boost::asio::ip::udp::endpoint local_endpoint() const;
  TftpServerCounters counters() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace aggrik8s::netboot
