#include "netboot/tftp/tftp_server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <sstream>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/log_escape.hpp"
#include "netboot/listen_failure.hpp"
#include "netboot/tftp/tftp_block_reader.hpp"
#include "netboot/tftp/tftp_path.hpp"
#include "netboot/tftp/tftp_retransmit_schedule.hpp"
#include "netboot/tftp/tftp_send_window.hpp"
#include "netboot/tftp/udp_batch_sender.hpp"

namespace aggrik8s::netboot {

namespace asio = boost::asio;
using asio::ip::udp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t max_datagram = 65536;
// The most DATA bytes read and sent per system call: a 16-block window of 1468-byte blocks fits.
constexpr std::size_t max_batch_bytes = 60000;
// Client replies are ACKs and ERRORs; anything longer is truncated, which is harmless for both.
constexpr std::size_t client_reply_buffer = 2048;

std::string describe(const udp::endpoint& endpoint) {
  std::ostringstream out;
  out << endpoint;
  return out.str();
}

double seconds(Clock::duration duration) { return std::chrono::duration<double>(duration).count(); }

TftpRemapClient remap_client(const asio::ip::address& address, bool is_write) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return remap_client(asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()), is_write);
  }
  if (address.is_v4()) {
    auto bytes = address.to_v4().to_bytes();
    const std::uint8_t octets[4] = {bytes[0], bytes[1], bytes[2], bytes[3]};
    return TftpRemapClient::ipv4(octets, is_write);
  }
  TftpRemapClient client;
  client.address = address.to_string();
  static constexpr char hex[] = "0123456789ABCDEF";
  for (auto byte : address.to_v6().to_bytes()) {
    client.address_hex += hex[byte >> 4];
    client.address_hex += hex[byte & 0xf];
  }
  client.ipv6 = true;
  client.is_write = is_write;
  return client;
}

}  // namespace

class TftpTransfer;

struct TftpServer::State {
  State(asio::io_context& io_context, TftpServerConfig server_config)
      : io(io_context), config(std::move(server_config)), listener(io_context) {
    if (!config.root.empty()) root = std::make_shared<TftpDirectorySource>(config.root, ConfinedReach::world_readable_only);
  }

  asio::io_context& io;  // the listener, request checks and observer calls
  TftpServerConfig config;  // io thread only
  std::shared_ptr<const TftpFileSource> root;  // null: no shared tree
  udp::socket listener;
  udp::endpoint listening_on;  // kept: the socket's own answer is gone once stop() closed it
  std::unique_ptr<TftpTransferThreads> threads;  // null: transfers run on `io` too
  std::atomic<bool> stopping{false};

  std::mutex transfers_mutex;  // transfers start on the io thread and end on theirs
  std::set<TftpTransfer*> transfers;

  std::atomic<std::uint64_t> requests{0}, completed{0}, probes{0}, failed{0}, malformed{0}, bytes_sent{0},
      active{0}, retransmissions{0};
};

// One read transfer from its own socket. The request is checked and the file opened on the server's io
// thread (prepare); the blocks are then sent from the transfer's own io_context (run), a transfer
// thread's or the server's. Owned by shared_ptr so the watchdog timer's handler can keep it alive; the
// coroutine holds a reference too.
class TftpTransfer : public std::enable_shared_from_this<TftpTransfer> {
 public:
  TftpTransfer(std::shared_ptr<TftpServer::State> state, udp::endpoint client, TftpRequest request)
      : state_(std::move(state)),
        thread_(state_->threads ? std::optional(state_->threads->acquire_least_busy()) : std::nullopt),
        io_(thread_ ? state_->threads->io(*thread_) : state_->io),
        socket_(io_),
        watchdog_(io_),
        server_work_(state_->io.get_executor()),
        client_(std::move(client)),
        request_(std::move(request)),
        started_(Clock::now()),
        policy_(state_->config.retransmit) {
    ++state_->active;
    std::lock_guard lock(state_->transfers_mutex);
    state_->transfers.insert(this);
  }

  ~TftpTransfer() {
    if (thread_) state_->threads->release(*thread_);
  }

  // On the server's io thread: remap, confinement-checked open, option negotiation. False when the
  // request was refused (and answered) here.
  bool prepare() {
    try {
      if (open_file()) return true;
    } catch (const std::exception& e) {
      send_error(TftpErrorCode::not_defined, "Server error");
      fail(e.what());
    }
    finish();
    return false;
  }

  static asio::awaitable<void> run(std::shared_ptr<TftpTransfer> self) {
    try {
      co_await self->send_file();
    } catch (const std::exception& e) {
      // A read error or a send that failed for good: tell the client rather than let it time out.
      self->send_error(TftpErrorCode::not_defined, "Server error");
      self->fail(e.what());
    }
    self->finish();
  }

  asio::io_context& io() { return io_; }

  // From stop(), on the transfer's own thread: wakes the coroutine with operation_aborted wherever it waits.
  void abort() {
    watchdog_.cancel();
    boost::system::error_code ignored;
    socket_.cancel(ignored);
  }

 private:
  enum class Wait { packet, timeout, stopped };

  bool open_file() {
    const auto& config = state_->config;
    socket_.open(client_.protocol());
    socket_.bind(udp::endpoint(state_->listening_on.address(), 0));
    socket_.non_blocking(true);  // send() must never block the io_context thread

    if (request_.is_write) {
      refuse(TftpErrorCode::access_violation, "Writes are not supported", "write request refused");
      return false;
    }

    std::string filename = request_.filename;
    if (config.remap) {
      TftpRemapResult mapped = config.remap->apply(filename, remap_client(client_.address(), false));
      if (mapped.denied) {
        refuse(TftpErrorCode::access_violation, mapped.denial_reason,
                        "refused by remap rules: " + mapped.denial_reason);
        return false;
      }
      if (mapped.filename != filename) log::debug("tftp: remapped ", log_escape(filename), " to ", log_escape(mapped.filename));
      filename = std::move(mapped.filename);
    }

    // Refused names ("..", NUL) are refused before anyone picks a tree, so no tree can be probed with them.
    if (TftpRelativePath checked = normalize_tftp_request_path(filename); !checked.ok()) {
      refuse(TftpErrorCode::access_violation, "Access violation", "request " + checked.refusal);
      return false;
    }
    std::optional<TftpClientTree> tree;
    if (config.client_tree) tree = config.client_tree(client_.address(), filename);
    TftpOpenedFile& file = file_;
    if (tree && !tree->refusal.empty()) {
      file.reason = tree->refusal;
    } else if (tree && tree->source) {
      file = tree->source->open(tree->filename, tree->prefixes);
    } else if (state_->root) {
      std::vector<std::string> directories;
      if (config.client_directories) directories = config.client_directories(client_.address());
      file = state_->root->open(filename, directories);
    } else {
      file.reason = "no TFTP tree for this client";
    }
    if (file.status == TftpOpenStatus::not_found) {
      refuse(TftpErrorCode::file_not_found, "File not found", file.reason);
      return false;
    }
    if (file.status != TftpOpenStatus::opened) {
      refuse(TftpErrorCode::access_violation, "Access violation", file.reason);
      return false;
    }
    path_ = file.path;

    TftpServerLimits limits = config.limits;
    limits.ipv6 = client_.address().is_v6() && !client_.address().to_v6().is_v4_mapped();
    std::optional<std::uint64_t> known_size;
    if (request_.mode == TftpMode::octet) known_size = file.size;
    options_ = negotiate_tftp_options(request_.options, limits, known_size);
    for (const auto& ignored : options_.ignored) log::debug("tftp: ", describe(client_), ": option ", log_escape(ignored));
    if (options_.timeout_seconds) client_timeout_ = std::chrono::seconds(*options_.timeout_seconds);
    reader_ = TftpBlockReader::create(file.fd.get(), request_.mode, options_.blksize,
                                      TftpBlockReader::default_read_ahead, known_size);

    log::debug("tftp: ", describe(client_), " reads ", log_escape(file.path.string()), " (", file.size, " bytes, blksize ",
               options_.blksize, ", windowsize ", options_.windowsize, ", ", tftp_mode_name(request_.mode), ")");
    if (config.observer) {
      config.observer->transfer_started(
          TftpTransferStarted{client_, request_.filename, file.path, file.size, options_.blksize, options_.windowsize});
    }
    return true;
  }

  // The end of every transfer, on the thread it ended on.
  void finish() {
    report(TftpTransferOutcome::failed, "server stopped");  // no-op if the outcome is already known
    --state_->active;
    {
      std::lock_guard lock(state_->transfers_mutex);
      state_->transfers.erase(this);
    }
    watchdog_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

  // The OACK is block 0: resent on timeout until ACK 0 arrives.
  asio::awaitable<bool> send_until_acknowledged(const std::vector<std::uint8_t>& oack) {
    schedule_ = TftpRetransmitSchedule::for_option_ack(policy_, client_timeout_);
    while (true) {
      if (!co_await send(oack)) co_return false;
      auto deadline = Clock::now() + schedule_->interval();
      while (true) {
        Wait wait = co_await receive_until(deadline);
        if (wait == Wait::stopped) co_return false;
        if (wait == Wait::timeout) break;
        if (auto* ack = std::get_if<TftpAck>(&received_); ack != nullptr && ack->block == 0) co_return true;
        if (auto* error = std::get_if<TftpErrorPacket>(&received_)) {
          client_ended(*error, 0);
          co_return false;
        }
      }
      if (!schedule_->timed_out()) {
        fail("no ACK for the OACK after " + std::to_string(schedule_->max_retransmits()) + " retransmissions");
        co_return false;
      }
      ++state_->retransmissions;
    }
  }

  asio::awaitable<void> send_file() {
    if (options_.needs_option_ack()) {
      std::vector<std::uint8_t> oack = encode_tftp_packet(TftpOptionAck{options_.acknowledged});
      if (!co_await send_until_acknowledged(oack)) co_return;
    }
    TftpBlockReader& reader = *reader_;
    const TftpNegotiatedOptions& options = options_;
    schedule_.emplace(policy_, client_timeout_);
    TftpSendWindow window(options.windowsize);
    // A window goes out in batches of back-to-back DATA datagrams (header + payload each), read with one
    // preadv and sent with one system call (UdpBatchSender); lockstep transfers are batches of one.
    const std::size_t segment = tftp_data_header_size + options.blksize;
    const std::size_t batch_blocks = std::clamp<std::size_t>(max_batch_bytes / segment, 1, options.windowsize);
    std::vector<std::uint8_t> batch(segment * batch_blocks);
    std::vector<std::size_t> sizes(batch_blocks);
    while (true) {
      for (std::uint64_t block = window.first_unacknowledged(); block <= window.window_end();) {
        auto wanted = static_cast<std::size_t>(std::min<std::uint64_t>(batch_blocks, window.window_end() - block + 1));
        std::size_t filled = reader.read_blocks(block, options.blksize, std::span(batch).subspan(tftp_data_header_size),
                                                segment, std::span(sizes).first(wanted));
        if (filled == 0) throw Error("TFTP read of block " + std::to_string(block) + " returned nothing");
        std::size_t length = 0;
        for (std::size_t i = 0; i < filled; ++i) {
          std::uint64_t number = block + i;
          if (number > window.highest_sent()) bytes_sent_ += sizes[i];
          window.sent(number, sizes[i] < options.blksize);
          write_tftp_data_header(
              std::span<std::uint8_t, tftp_data_header_size>(batch.data() + i * segment, tftp_data_header_size),
              TftpSendWindow::wire_block(number));
          length = i * segment + tftp_data_header_size + sizes[i];
        }
        if (!co_await send_batch(std::span(batch).first(length), segment)) co_return;
        block += filled;
      }
      auto deadline = Clock::now() + schedule_->interval();
      bool resend = false;
      while (!resend) {
        Wait wait = co_await receive_until(deadline);
        if (wait == Wait::stopped) co_return;
        if (wait == Wait::timeout) {
          if (!schedule_->timed_out()) {
            fail("no ACK for block " + std::to_string(window.first_unacknowledged()) + " after " +
                 std::to_string(schedule_->max_retransmits()) + " retransmissions");
            co_return;
          }
          ++state_->retransmissions;
          log::debug("tftp: ", describe(client_), ": timeout, resending from block ", window.first_unacknowledged(),
                     " (next wait ", schedule_->interval().count(), " ms)");
          break;
        }
        if (auto* ack = std::get_if<TftpAck>(&received_)) {
          switch (window.on_ack(ack->block)) {
            case TftpSendWindow::AckEffect::stale: break;  // never answer a duplicate ACK
            case TftpSendWindow::AckEffect::finished: complete(); co_return;
            case TftpSendWindow::AckEffect::advanced:
              schedule_->progressed();
              reader.forget_before(window.first_unacknowledged());
              resend = true;
              break;
          }
        } else if (auto* error = std::get_if<TftpErrorPacket>(&received_)) {
          client_ended(*error, window.acknowledged());
          co_return;
        }
      }
    }
  }

  // Waits for a packet from the client until `deadline`; packets from other ports get ERROR 5 and garbage
  // is dropped, neither disturbs the transfer. The parsed packet is left in received_.
  asio::awaitable<Wait> receive_until(Clock::time_point deadline) {
    deadline_ = deadline;
    while (true) {
      if (state_->stopping) co_return Wait::stopped;
      if (Clock::now() >= deadline_) co_return Wait::timeout;
      arm_watchdog();
      udp::endpoint from;
      boost::system::error_code ec;
      receiving_ = true;
      std::size_t size = co_await socket_.async_receive_from(asio::buffer(reply_), from,
                                                             asio::redirect_error(asio::use_awaitable, ec));
      receiving_ = false;
      if (state_->stopping) co_return Wait::stopped;
      if (ec == asio::error::operation_aborted) {
        if (expired_) {
          expired_ = false;
          co_return Wait::timeout;
        }
        continue;
      }
      expired_ = false;  // a watchdog that fired as this datagram arrived cancelled nothing
      if (ec) continue;  // e.g. an ICMP error surfaced on the socket: the client may still answer
      if (from != client_) {
        log::debug("tftp: ", describe(from), " sent to the transfer port of ", describe(client_));
        std::vector<std::uint8_t> error =
            encode_tftp_packet(TftpErrorPacket{TftpErrorCode::unknown_transfer_id, "Unknown transfer ID"});
        boost::system::error_code ignored;
        socket_.send_to(asio::buffer(error), from, 0, ignored);
        continue;
      }
      try {
        received_ = parse_tftp_packet(std::span<const std::uint8_t>(reply_.data(), size));
        co_return Wait::packet;
      } catch (const TftpParseError& e) {
        ++state_->malformed;
        log::debug("tftp: ", describe(client_), ": ignoring malformed packet: ", log_escape(e.what()));
      }
    }
  }

  // One timer per transfer, re-armed lazily: a deadline that moves later (every ACK of a lockstep
  // transfer) leaves the timer alone, which then fires early once and is set again. A deadline that moves
  // earlier must re-arm it, or the wait silently lasts as long as the old one: the first DATA after an
  // OACK (6 s) and the first wait after progress ends a back-off (up to 8 s) are both shorter. When the
  // deadline has really passed it cancels the pending receive, which then reports a timeout.
  void arm_watchdog() {
    if (watchdog_armed_ && watchdog_expiry_ <= deadline_) return;
    watchdog_armed_ = true;
    watchdog_expiry_ = deadline_;
    std::uint64_t generation = ++watchdog_generation_;
    watchdog_.expires_at(deadline_);  // cancels a wait for a later deadline; its handler sees the generation
    watchdog_.async_wait([self = shared_from_this(), generation](const boost::system::error_code& ec) {
      if (generation != self->watchdog_generation_) return;  // superseded by an earlier deadline
      self->watchdog_armed_ = false;
      if (ec || self->state_->stopping) return;
      if (Clock::now() < self->deadline_) {
        self->arm_watchdog();
      } else if (self->receiving_) {
        self->expired_ = true;
        boost::system::error_code ignored;
        self->socket_.cancel(ignored);
      }
    });
  }

  asio::awaitable<bool> send(std::span<const std::uint8_t> datagram) {
    // Try the send right away: a UDP socket with room in its buffer takes the datagram at once, and going
    // through the scheduler for that costs a round trip per block (a third of lockstep throughput).
    // Only a full send buffer (large windows) waits asynchronously.
    boost::system::error_code ec;
    socket_.send_to(asio::buffer(datagram.data(), datagram.size()), client_, 0, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      co_await socket_.async_send_to(asio::buffer(datagram.data(), datagram.size()), client_,
                                     asio::redirect_error(asio::use_awaitable, ec));
    }
    if (state_->stopping) co_return false;
    // A lost send is a lost packet: the retransmission timeout deals with it.
    if (ec) log::debug("tftp: send to ", describe(client_), " failed: ", ec.message());
    co_return true;
  }

  asio::awaitable<bool> send_batch(std::span<const std::uint8_t> datagrams, std::size_t segment) {
    while (!datagrams.empty()) {
      int error = 0;
      std::size_t sent = batch_sender_.send(socket_.native_handle(), client_.data(),
                                            static_cast<socklen_t>(client_.size()), datagrams, segment, error);
      datagrams = datagrams.subspan(sent);
      if (error == EAGAIN || error == EWOULDBLOCK) {
        // The socket's send buffer is full (large windows): wait until it drains, never block the thread.
        boost::system::error_code ec;
        co_await socket_.async_wait(udp::socket::wait_write, asio::redirect_error(asio::use_awaitable, ec));
        if (state_->stopping || ec == asio::error::operation_aborted) co_return false;
        continue;
      }
      // A lost send is a lost packet: the retransmission timeout deals with it.
      if (error != 0) log::debug("tftp: send to ", describe(client_), " failed: ", std::strerror(error));
    }
    co_return !state_->stopping;
  }

  void send_error(TftpErrorCode code, const std::string& message) {
    if (!socket_.is_open() || state_->stopping) return;
    std::vector<std::uint8_t> packet = encode_tftp_packet(TftpErrorPacket{code, message});
    boost::system::error_code ignored;
    socket_.send_to(asio::buffer(packet), client_, 0, ignored);
  }

  void refuse(TftpErrorCode code, const std::string& message, const std::string& why) {
    send_error(code, message);
    refused_with_ = code;
    log::info("tftp: ", describe(client_), " asked for ", log_escape(request_.filename), ": ", message, " (", log_escape(why), ")");
    report(TftpTransferOutcome::failed, why);
  }

  void client_ended(const TftpErrorPacket& error, std::uint64_t acknowledged_blocks) {
    // The Raspberry Pi bootloader reads a file's first block (or just the OACK's tsize) and then sends
    // ERROR "Early terminate": a probe, not a failure.
    if (acknowledged_blocks < 2) {
      log::debug("tftp: ", describe(client_), " probed ", log_escape(path_.string()), " and ended with ERROR ",
                 static_cast<unsigned>(error.code), " \"", log_escape(error.message), "\"");
      report(TftpTransferOutcome::probe, error.message);
      return;
    }
    fail("client sent ERROR " + std::to_string(static_cast<unsigned>(error.code)) + " \"" + error.message +
         "\" after " + std::to_string(acknowledged_blocks) + " blocks");
  }

  void complete() {
    log::info("tftp: sent ", log_escape(path_.string()), " to ", describe(client_), ": ", bytes_sent_, " bytes in ",
              seconds(Clock::now() - started_), " s");
    report(TftpTransferOutcome::completed, {});
  }

  void fail(const std::string& why) {
    log::warning("tftp: transfer of ", log_escape(request_.filename), " to ", describe(client_), " failed: ", log_escape(why));
    report(TftpTransferOutcome::failed, why);
  }

  void report(TftpTransferOutcome outcome, const std::string& detail) {
    if (reported_) return;
    reported_ = true;
    auto& state = *state_;
    switch (outcome) {
      case TftpTransferOutcome::completed: ++state.completed; break;
      case TftpTransferOutcome::probe: ++state.probes; break;
      case TftpTransferOutcome::failed: ++state.failed; break;
    }
    if (outcome != TftpTransferOutcome::failed) state.bytes_sent += bytes_sent_;
    // Observers (boot log, metrics, the node inventory) live on the server's io thread. The work guard
    // goes along, so that io_context's run() returns only once every transfer has been reported.
    TftpTransferEnded event{client_, request_.filename, path_, outcome, bytes_sent_, Clock::now() - started_, detail, refused_with_};
    asio::post(state.io, [state = state_, event = std::move(event), work = std::move(server_work_)]() {
      const auto& observer = state->config.observer;
      if (!observer) return;
      if (event.outcome == TftpTransferOutcome::failed) {
        observer->transfer_failed(event);
      } else {
        observer->transfer_finished(event);
      }
    });
  }

  std::shared_ptr<TftpServer::State> state_;
  std::optional<TftpErrorCode> refused_with_;
  std::optional<std::size_t> thread_;  // index in state_->threads, if the transfer runs on one
  asio::io_context& io_;
  udp::socket socket_;
  asio::steady_timer watchdog_;
  asio::executor_work_guard<asio::io_context::executor_type> server_work_;
  udp::endpoint client_;
  TftpRequest request_;
  Clock::time_point started_;
  std::filesystem::path path_;
  TftpOpenedFile file_;
  TftpNegotiatedOptions options_;
  std::unique_ptr<TftpBlockReader> reader_;  // reads file_
  TftpRetransmitPolicy policy_;  // taken when the request arrives: a reload changes only later transfers
  std::optional<std::chrono::seconds> client_timeout_;  // the RFC 2349 timeout option, if granted
  std::optional<TftpRetransmitSchedule> schedule_;
  UdpBatchSender batch_sender_;
  std::array<std::uint8_t, client_reply_buffer> reply_{};
  TftpPacket received_;
  Clock::time_point deadline_{};
  bool watchdog_armed_ = false;
  Clock::time_point watchdog_expiry_{};
  std::uint64_t watchdog_generation_ = 0;
  bool receiving_ = false;
  bool expired_ = false;
  bool reported_ = false;
  std::uint64_t bytes_sent_ = 0;
};

// Wakes every transfer on its own thread; each then ends as "server stopped". Any thread.
void abort_transfers(TftpServer::State& state) {
  state.stopping = true;
  std::lock_guard lock(state.transfers_mutex);
  for (TftpTransfer* transfer : state.transfers) {
    asio::post(transfer->io(), [transfer = transfer->shared_from_this()] { transfer->abort(); });
  }
}

namespace {

asio::awaitable<void> listen(std::shared_ptr<TftpServer::State> state) {
  std::vector<std::uint8_t> buffer(max_datagram);
  while (!state->stopping) {
    udp::endpoint from;
    boost::system::error_code ec;
    std::size_t size = co_await state->listener.async_receive_from(asio::buffer(buffer), from,
                                                                   asio::redirect_error(asio::use_awaitable, ec));
    if (state->stopping || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) break;
    if (ec) continue;
    std::span<const std::uint8_t> datagram(buffer.data(), size);
    TftpPacket packet;
    try {
      packet = parse_tftp_packet(datagram);
    } catch (const TftpParseError& e) {
      ++state->malformed;
      log::debug("tftp: malformed request from ", describe(from), ": ", log_escape(e.what()));
      // A broken request deserves an answer (the client is waiting); stray junk does not.
      std::uint16_t opcode = size >= 2 ? static_cast<std::uint16_t>(buffer[0] << 8 | buffer[1]) : 0;
      if (opcode == 1 || opcode == 2) {
        auto error = encode_tftp_packet(TftpErrorPacket{TftpErrorCode::illegal_operation, e.what()});
        boost::system::error_code ignored;
        state->listener.send_to(asio::buffer(error), from, 0, ignored);
      }
      continue;
    }
    auto* request = std::get_if<TftpRequest>(&packet);
    if (request == nullptr) {
      log::debug("tftp: ignoring ", tftp_opcode_name(static_cast<std::uint16_t>(buffer[0] << 8 | buffer[1])),
                 " from ", describe(from), " on the listening port");
      continue;
    }
    ++state->requests;
    auto transfer = std::make_shared<TftpTransfer>(state, from, std::move(*request));
    if (!transfer->prepare()) continue;
    asio::io_context& transfer_io = transfer->io();
    asio::co_spawn(transfer_io, TftpTransfer::run(std::move(transfer)), asio::detached);
  }
}

}  // namespace

TftpServer::TftpServer(asio::io_context& io, TftpServerConfig config)
    : state_(std::make_shared<State>(io, std::move(config))) {
  boost::system::error_code ec;
  state_->listener.open(state_->config.listen.protocol(), ec);
  if (!ec) state_->listener.bind(state_->config.listen, ec);
  if (ec) {
    ListenFailure failure{"TFTP", describe(state_->config.listen), state_->config.listen.port(), true, "tftp.port (--tftp-port)", {},
                          "tftpd-hpa, dnsmasq or another serve"};
    throw Error(listen_failure_message(failure, ec.value(), ec.message()));
  }
  state_->listening_on = state_->listener.local_endpoint();
}

TftpServer::~TftpServer() {
  stop();
  // The server's io_context may no longer run (stop() acts through it): wake the transfers directly,
  // then wait for the transfer threads to finish them.
  abort_transfers(*state_);
  if (state_->threads) state_->threads->join();
}

void TftpServer::start() {
  if (state_->config.transfer_threads > 0 && !state_->threads) {
    state_->threads = std::make_unique<TftpTransferThreads>(state_->config.transfer_threads);
  }
  asio::co_spawn(state_->io, listen(state_), asio::detached);
}

void TftpServer::stop() {
  asio::post(state_->io, [state = state_]() {
    boost::system::error_code ignored;
    state->listener.close(ignored);
    abort_transfers(*state);
  });
}

void TftpServer::reconfigure(TftpServerLimits limits, TftpRetransmitPolicy retransmit,
                             std::shared_ptr<const TftpRemapRules> remap) {
  // Applied on the io thread, between requests: a transfer reads these when its request arrives and
  // keeps what it read, so transfers in flight finish with the settings they started with.
  asio::post(state_->io, [state = state_, limits = std::move(limits), retransmit, remap = std::move(remap)]() mutable {
    state->config.limits = std::move(limits);
    state->config.retransmit = retransmit;
    state->config.remap = std::move(remap);
  });
}

udp::endpoint TftpServer::local_endpoint() const { return state_->listening_on; }

TftpServerCounters TftpServer::counters() const {
  const auto& s = *state_;
  return TftpServerCounters{s.requests,   s.completed,  s.probes, s.failed,
                            s.malformed,  s.bytes_sent, s.active, s.retransmissions};
}

}  // namespace aggrik8s::netboot
