#include "netboot/dhcp/dhcp_server.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/log_escape.hpp"
#include "netboot/listen_failure.hpp"

namespace aggrik8s::netboot {

namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

std::string hex32(std::uint32_t value) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(8, '0');
  for (int i = 7; i >= 0; --i, value >>= 4) out[static_cast<std::size_t>(i)] = digits[value & 15];
  return out;
}

// One received request and what to do about it.
struct Pending {
  DhcpPacket request;
  udp::endpoint from;
  bool proxy_port = false;
  DhcpReplyPlan plan;
};

}  // namespace

// Durability and allocation (group commit). The io thread does all the allocating: it plans each
// request against the pools and commits a REQUEST's lease in memory at once, so the address is taken
// for every later request even while its journal line still waits for the disk (no second client can
// be offered or acknowledged it meanwhile). Its replies are split: OFFERs, NAKs and INFORM answers
// promise nothing a crash could break and leave at once; an ACK waits in `waiting` until the journal
// thread says the line holding its lease is fdatasync'ed, and only then is sent. So the disk never
// stalls the answers that need no disk, and a slow sync costs ACK latency, not throughput.
// Why a crash (kill -9, power loss) cannot hand one address to two clients: the journal writes lines
// in the order they were queued and stops appending after a failure until it is rewritten, so the
// file is always a prefix of the queued lines (or a snapshot of the pools followed by such a prefix),
// and reading it back gives a state the pools really were in at some moment, in which no address had
// two holders. Every ACK ever sent is for a line inside that prefix, because it left only after the
// line was durable. A lease committed in memory but lost in the crash was never acknowledged: its
// client does not use the address, asks again, and the restarted server may give that address to
// anyone. A line that was written but not yet synced when the process died (kill -9 keeps the page
// cache) only keeps an address for a client that never heard of it, until the lease expires.
struct DhcpServer::State {
  State(asio::io_context& context, DhcpServerConfig server_config)
      : io(context),
        config(std::move(server_config)),
        socket(context),
        proxy_socket(context),
        lease_clock(context),
        caught_up(context) {
    for (const auto& subnet : config.subnets) {
      DhcpPoolRange range = subnet.pool;
      if (range.netmask == 0) range.netmask = subnet.netmask;  // never lease its network/broadcast address
      pools.emplace_back(range);
    }
  }
  asio::io_context& io;
  DhcpServerConfig config;
  std::vector<DhcpLeasePool> pools;  // parallels config.subnets
  udp::socket socket;
  udp::socket proxy_socket;
  asio::steady_timer lease_clock;    // recounts the active leases for the metrics
  asio::steady_timer caught_up;      // serve() waits on it while too many ACKs wait for the disk
  udp::endpoint listening_on;
  bool stopping = false;
  // Atomic: counters() is read from other threads (metrics, tests) while the io thread serves.
  struct {
    std::atomic<std::uint64_t> received{0}, offers{0}, acks{0}, naks{0}, journal_appends{0}, journal_compactions{0},
        leases_active{0};
    std::array<std::atomic<std::uint64_t>, 9> received_by_type{};
    std::array<std::atomic<std::uint64_t>, dhcp_drop_reasons> dropped{};
  } counters;
  std::uint64_t drop(DhcpDropReason reason) { return ++counters.dropped[static_cast<std::size_t>(reason)]; }

  std::size_t lease_count() const {
    std::size_t count = 0;
    for (const auto& pool : pools) count += pool.leases().size();
    return count;
  }
  void count_active_leases(std::int64_t now) {
    std::uint64_t active = 0;
    for (const auto& pool : pools) {
      for (const auto& [mac, lease] : pool.leases()) {
        if (lease.expires > now && !is_dhcp_quarantine(lease)) ++active;  // a quarantine is no client's
      }
    }
    counters.leases_active = active;
  }
  // A client holds one lease in all: the journal keeps the last line per client, so a client that moved
  // to another subnet gives up the lease it had in the old one (forgotten, not kept as an expired
  // binding: two pools holding one client would make the snapshot keep only one of them).
  void commit(std::size_t subnet, const DhcpLease& lease) {
    for (std::size_t i = 0; i < pools.size(); ++i) {
      if (i != subnet) pools[i].forget(lease.client);
    }
    pools[subnet].commit(lease);
  }
  void load(const std::vector<DhcpLease>& leases) {
    for (const auto& lease : leases) pools[dhcp_subnet_of_address(config.subnets, lease.address)].commit(lease);
  }
  void set_reservations(const std::map<std::string, std::uint32_t>& reservations) {
    std::vector<std::map<std::string, std::uint32_t>> per_subnet(pools.size());
    for (const auto& [mac, address] : reservations) per_subnet[dhcp_subnet_of_address(config.subnets, address)][mac] = address;
    for (std::size_t i = 0; i < pools.size(); ++i) pools[i].set_reservations(std::move(per_subnet[i]));
  }

  // The pools' leases as a whole lease file; includes leases whose lines are still queued (they are
  // taken in memory, see above).
  std::string snapshot() const {
    std::map<std::string, DhcpLease> all;
    for (const auto& pool : pools) all.insert(pool.leases().begin(), pool.leases().end());
    return format_dhcp_leases(all);
  }

  // Full mode with a lease file only. Reset in the stop handler, which waits for what is queued.
  FileDescriptor lease_lock;  // lock_dhcp_lease_file's, for the server's life
  std::unique_ptr<DhcpLeaseJournal> journal;
  std::size_t journal_lines = 0;  // lines queued since the last compaction
  bool repair_queued = false;     // a compaction to recover from a failed append is queued
  struct WaitingAck {
    std::uint64_t ticket = 0;
    Pending pending;
  };
  std::deque<WaitingAck> waiting;  // ACKs whose lines are not durable yet, in ticket order
  // Bounds the memory held by `waiting` when the disk cannot keep up: serve() stops reading (the
  // socket's buffer then holds the burst) until the journal catches up.
  static constexpr std::size_t max_waiting_acks = 4096;

  void queue_compaction() {
    journal->compact(snapshot());
    journal_lines = 0;
  }
  // Queues a batch's lease lines; `acks` are sent once they are durable.
  void queue_lines(std::string lines, std::vector<Pending>& acks) {
    journal_lines += static_cast<std::size_t>(std::count(lines.begin(), lines.end(), '\n'));
    auto ticket = journal->append(std::move(lines));
    for (auto& pending : acks) waiting.push_back({ticket, std::move(pending)});
    acks.clear();
    std::size_t limit = config.compact_after_lines != 0 ? config.compact_after_lines : 2 * lease_count() + 1000;
    if (journal_lines > limit) queue_compaction();
  }
  // On the io thread, for each result the journal thread posts.
  void settled(const DhcpJournalResult& result) {
    if (stopping) return;
    if (result.compaction) {
      repair_queued = false;
      if (result.durable) {
        ++counters.journal_compactions;
      } else {
        log::error("dhcp: rewriting the lease file: ", result.error);
      }
      return;
    }
    if (result.durable) ++counters.journal_appends;  // before the ACKs: a client may look right after
    std::size_t unanswered = 0;
    while (!waiting.empty() && waiting.front().ticket <= result.through) {
      Pending pending = std::move(waiting.front().pending);
      waiting.pop_front();
      if (result.durable) {
        answer(pending);
      } else {
        drop(DhcpDropReason::lease_file);
        ++unanswered;
      }
    }
    send_outbox();
    if (!result.durable) {
      // A lease not on disk must not be granted; the clients ask again. The file is rewritten from the
      // pools (their leases include these, unacknowledged: they stay taken until they expire).
      log::error("dhcp: lease file: ", result.error, "; ", unanswered, " ACKs not sent");
      if (!repair_queued) {
        repair_queued = true;
        queue_compaction();
      }
    }
    caught_up.cancel();
  }

  // Logs, counts and sends one planned reply (an ACK only once its lease is durable).
  void answer(Pending& pending) {
    auto& plan = pending.plan;
    if (plan.to_commit && config.boot_policy) config.boot_policy->leased(pending.request, *plan.to_commit);
    // A release's record is the lease, expired now; a decline's the address quarantined: either way
    // the client that held the address does not any more.
    if (plan.to_record && plan.to_record->address != 0 && config.boot_policy) {
      config.boot_policy->lease_ended(plan.to_record->address);
    }
    if (plan.dropped == DhcpDropReason::no_subnet || plan.dropped == DhcpDropReason::no_free_address) {
      auto so_far = drop(plan.dropped);
      log::warning("dhcp: ", log_escape(plan.log, 1024), " (", to_string(plan.dropped), ": ", so_far, " dropped so far)");
    } else {
      if (plan.dropped != DhcpDropReason::none) drop(plan.dropped);
      log::info("dhcp: ", log_escape(plan.log, 1024));
    }
    if (!plan.reply) return;
    auto type = plan.reply->message_type();
    if (type == DhcpMessageType::offer) ++counters.offers;
    if (type == DhcpMessageType::ack) ++counters.acks;
    if (type == DhcpMessageType::nak) ++counters.naks;
    outbox[pending.proxy_port ? 1 : 0].push_back({encode_dhcp_packet(*plan.reply), destination(pending, *plan.reply)});
  }

  // Replies go out in one sendmmsg per up to 64 (each with its own destination): one system call per
  // reply was a sixth of the server's time under perfdhcp (perf record).
  struct Outgoing {
    std::vector<std::uint8_t> bytes;
    udp::endpoint to;
  };
  // The client's MAC for a log line, read back from the encoded reply's chaddr only when a send fails
  // (not kept per reply: a string per reply was one more allocation on every exchange).
  static std::string client_of(const Outgoing& out) {
    try {
      return parse_dhcp_packet(out.bytes).hardware_address();
    } catch (const DhcpParseError&) {
      return "?";
    }
  }
  std::array<std::vector<Outgoing>, 2> outbox;  // [0]: port 67, [1]: the proxy port
  void send_outbox() {
    for (std::size_t which = 0; which < outbox.size(); ++which) {
      auto& queue = outbox[which];
      if (queue.empty()) continue;
      int fd = (which == 0 ? socket : proxy_socket).native_handle();
      constexpr std::size_t chunk = 64;
      std::array<mmsghdr, chunk> messages{};
      std::array<iovec, chunk> iovecs{};
      for (std::size_t done = 0; done < queue.size();) {
        std::size_t count = std::min(chunk, queue.size() - done);
        for (std::size_t i = 0; i < count; ++i) {
          auto& out = queue[done + i];
          iovecs[i] = {out.bytes.data(), out.bytes.size()};
          messages[i] = {};
          messages[i].msg_hdr.msg_name = out.to.data();
          messages[i].msg_hdr.msg_namelen = static_cast<socklen_t>(out.to.size());
          messages[i].msg_hdr.msg_iov = &iovecs[i];
          messages[i].msg_hdr.msg_iovlen = 1;
        }
        int sent = fd < 0 ? -1 : ::sendmmsg(fd, messages.data(), static_cast<unsigned>(count), 0);
        if (sent <= 0) {  // the first one failed: say so, skip it, go on with the rest
          int err = fd < 0 ? EBADF : errno;
          if (err == EINTR) continue;
          log::warning("dhcp: reply to ", client_of(queue[done]), " not sent: ", std::strerror(err));
          sent = 1;
        }
        done += static_cast<std::size_t>(sent);
      }
      queue.clear();
    }
  }

  udp::endpoint destination(const Pending& pending, const DhcpPacket& reply) const {
    const DhcpPacket& request = pending.request;
    if (request.giaddr != 0) return {asio::ip::address_v4(request.giaddr), config.port};  // back through the relay
    if (pending.proxy_port || !config.interface) return pending.from;
    bool nak = reply.message_type() == DhcpMessageType::nak;
    if (request.ciaddr != 0 && !nak) return {asio::ip::address_v4(request.ciaddr), config.client_port};
    // The client has no address yet: unicasting to yiaddr would need an ARP entry we cannot add from
    // a UDP socket, so broadcast on the bound interface (always allowed by RFC 2131).
    return {asio::ip::address_v4::broadcast(), config.client_port};
  }

  // client key -> (second, requests in it); looked up for every datagram, never iterated: hashed.
  std::unordered_map<std::string, std::pair<std::int64_t, unsigned>> recent;
  std::int64_t last_no_client_id_log = 0, last_truncated_log = 0;  // see first_this_second()
};

namespace {

void bind_socket(udp::socket& socket, const DhcpServerConfig& config, const udp::endpoint& where) {
  boost::system::error_code ec;
  socket.open(udp::v4(), ec);
  // Proxy mode shares port 67 with the network's DHCP server when that runs on this machine too, so it
  // allows address reuse. Full mode does not: a second DHCP server handing out addresses on the same
  // link (another serve with another lease file, a dnsmasq or Kea) must fail to start, not run beside
  // it and hand out the same addresses (one lease file per server is held by its lock; this covers the rest).
  if (!ec && config.mode == DhcpMode::proxy) socket.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) socket.set_option(asio::socket_base::broadcast(true), ec);
  // Room for a burst (many nodes powering on at once), and for when the journal falls behind.
  if (!ec) socket.set_option(asio::socket_base::receive_buffer_size(4 << 20), ec);
  if (!ec && config.interface) {
    const std::string& name = *config.interface;
    if (::setsockopt(socket.native_handle(), SOL_SOCKET, SO_BINDTODEVICE, name.c_str(),
                     static_cast<socklen_t>(name.size())) != 0) {
      throw_system_error("DHCP server: binding to interface " + name, errno);
    }
  }
  if (!ec) socket.bind(where, ec);
  // A full-mode server on its way out (a restart) releases its lease lock as its process ends, a moment
  // before its socket: a second's patience before calling the port another server's.
  for (int attempt = 0; ec == asio::error::address_in_use && config.mode == DhcpMode::full && attempt < 10; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ec = {};
    socket.bind(where, ec);
  }
  if (ec) {
    std::ostringstream text;
    text << where;
    // Port 67 in full mode is not shared (above): its holder is another DHCP server on this link.
    std::string_view holders =
        config.mode == DhcpMode::full
            ? "another DHCP server on this link: dnsmasq, Kea, isc-dhcp-server or another serve with full-mode DHCP; "
              "two would hand out the same addresses"
        : where.port() == config.proxy_port
            ? "a PXE proxy: dnsmasq, pixiecore or another serve in proxy mode"
            : "a DHCP server on this machine that does not share the port (proxy mode shares it; serve in full mode "
              "does not)";
    ListenFailure failure{"DHCP", text.str(), where.port(), true, {}, config.interface.value_or(""), holders};
    throw Error(listen_failure_message(failure, ec.value(), ec.message()));
  }
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Warnings about what any sender can cause (packets without a client identity, truncated datagrams)
// are written at most once a second each, with the count so far: a flood of them must not flood the log.
bool first_this_second(std::int64_t& last_logged, std::int64_t now) {
  if (last_logged == now) return false;
  last_logged = now;
  return true;
}

// Parses and plans one datagram; nullopt when it is dropped (malformed, no client identity, flood).
std::optional<Pending> plan_datagram(DhcpServer::State& state, std::span<const std::uint8_t> datagram,
                                     const udp::endpoint& from, bool proxy_port, std::int64_t now,
                                     std::string& journal) {
  ++state.counters.received;
  Pending pending;
  pending.from = from;
  pending.proxy_port = proxy_port;
  try {
    pending.request = parse_dhcp_packet(datagram);
  } catch (const DhcpParseError& e) {
    ++state.counters.received_by_type[0];
    auto malformed = state.drop(DhcpDropReason::malformed);
    log::warning("dhcp: dropped malformed packet from ", from.address().to_string(), " (", malformed,
                 " so far): ", e.what());
    return std::nullopt;
  }
  auto type = pending.request.message_type();
  auto type_index = type ? static_cast<std::size_t>(*type) : 0;
  ++state.counters.received_by_type[type_index < state.counters.received_by_type.size() ? type_index : 0];
  // The lease and the flood limit are per client (option 61, else htype + chaddr): clients with
  // neither would all share one lease and one limit, so they get nothing.
  auto key = pending.request.client_key();
  if (!key) {
    auto dropped = state.drop(DhcpDropReason::no_client_id);
    if (first_this_second(state.last_no_client_id_log, now)) {
      log::warning("dhcp: dropped ", type ? to_string(*type) : "untyped packet", " xid=0x", hex32(pending.request.xid),
                   " from ", from.address().to_string(), ": no client identifier (option 61) and no usable chaddr (htype ",
                   unsigned{pending.request.htype}, ", hlen ", unsigned{pending.request.hlen}, ") (", dropped,
                   " dropped so far)");
    }
    return std::nullopt;
  }
  auto& [second, count] = state.recent[*key];
  if (second != now) {
    second = now;
    count = 0;
  }
  if (++count > state.config.max_requests_per_mac_per_second) {
    auto dropped = state.drop(DhcpDropReason::flood);
    if (count == state.config.max_requests_per_mac_per_second + 1) {
      log::warning("dhcp: flood from ", *key, ": more than ", state.config.max_requests_per_mac_per_second,
                   " requests this second, dropping (", dropped, " dropped so far)");
    }
    return std::nullopt;
  }
  if (state.recent.size() > 100000) state.recent.clear();  // bounded memory under a MAC-spoofing flood
  pending.plan = plan_dhcp_reply(state.config, state.config.mode == DhcpMode::full ? &state.pools : nullptr,
                                 pending.request, proxy_port, now);
  // Committed in memory at once, so the next request sees the address taken even before the line is
  // durable (see DhcpServer::State).
  if (pending.plan.to_commit) {
    state.commit(pending.plan.subnet, *pending.plan.to_commit);
    journal += format_dhcp_lease_line(*pending.plan.to_commit);
  } else if (pending.plan.to_record) {
    journal += format_dhcp_lease_line(*pending.plan.to_record);  // the pool has already applied it
  }
  return pending;
}

// The active-lease gauge is a scan of every lease: once a second, not per packet.
asio::awaitable<void> count_leases(std::shared_ptr<DhcpServer::State> state) {
  while (!state->stopping) {
    state->count_active_leases(unix_now());
    state->lease_clock.expires_after(std::chrono::seconds(1));
    boost::system::error_code ec;
    co_await state->lease_clock.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> serve(std::shared_ptr<DhcpServer::State> state, udp::socket& socket, bool proxy_port) {
  // Everything already queued on the socket (up to a batch) is planned in one go; the batch's lease
  // lines go to the journal thread as one append, the replies that need no disk leave at once, and
  // the ACKs follow when the journal says their lines are durable (State::settled). The journal
  // merges the appends queued while it syncs, so under load one fdatasync covers many batches.
  // Datagrams are read with recvmmsg, up to `chunk` per system call.
  constexpr std::size_t max_batch = 256, chunk = 64, datagram_size = 1500;
  std::vector<std::uint8_t> buffers(chunk * datagram_size);
  std::array<mmsghdr, chunk> messages{};
  std::array<iovec, chunk> iovecs{};
  std::array<udp::endpoint, chunk> senders;
  socket.non_blocking(true);
  std::vector<Pending> batch, acks;
  std::string journal;
  while (!state->stopping) {
    boost::system::error_code ec;
    co_await socket.async_wait(udp::socket::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    if (state->stopping || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) break;
    if (ec) continue;
    batch.clear();
    journal.clear();
    std::int64_t now = unix_now();
    for (std::size_t taken = 0; taken < max_batch;) {
      for (std::size_t i = 0; i < chunk; ++i) {
        iovecs[i] = {buffers.data() + i * datagram_size, datagram_size};
        messages[i] = {};
        messages[i].msg_hdr.msg_name = senders[i].data();
        messages[i].msg_hdr.msg_namelen = static_cast<socklen_t>(senders[i].capacity());
        messages[i].msg_hdr.msg_iov = &iovecs[i];
        messages[i].msg_hdr.msg_iovlen = 1;
      }
      int got = ::recvmmsg(socket.native_handle(), messages.data(), static_cast<unsigned>(chunk), MSG_DONTWAIT, nullptr);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;  // EAGAIN: the queue is drained
      for (std::size_t i = 0; i < static_cast<std::size_t>(got); ++i) {
        const udp::endpoint& from = senders[i];
        if ((messages[i].msg_hdr.msg_flags & MSG_TRUNC) != 0) {
          // Larger than the buffer: what was read is a prefix, and a prefix can parse (options cut
          // at a boundary), so it would be answered as a packet the client never sent.
          ++state->counters.received;
          ++state->counters.received_by_type[0];
          auto dropped = state->drop(DhcpDropReason::malformed);
          if (first_this_second(state->last_truncated_log, now)) {
            log::warning("dhcp: dropped a datagram from ", from.address().to_string(), " larger than ", datagram_size,
                         " bytes (truncated on receipt; ", dropped, " malformed so far)");
          }
          continue;
        }
        try {
          std::span<const std::uint8_t> datagram(buffers.data() + i * datagram_size, messages[i].msg_len);
          if (auto pending = plan_datagram(*state, datagram, from, proxy_port, now, journal)) {
            (pending->plan.to_commit && state->journal ? acks : batch).push_back(std::move(*pending));
          }
        } catch (const std::exception& e) {
          log::error("dhcp: request from ", from.address().to_string(), ": ", e.what(), " (no reply sent)");
        }
      }
      taken += static_cast<std::size_t>(got);
      if (static_cast<std::size_t>(got) < chunk) break;
    }
    if (!journal.empty() && state->journal) state->queue_lines(std::move(journal), acks);
    for (auto& pending : batch) state->answer(pending);
    state->send_outbox();
    while (state->waiting.size() > DhcpServer::State::max_waiting_acks && !state->stopping) {
      state->caught_up.expires_at(asio::steady_timer::time_point::max());
      co_await state->caught_up.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
}

}  // namespace

DhcpServer::DhcpServer(asio::io_context& io, DhcpServerConfig config) : state_(std::make_shared<State>(io, std::move(config))) {
  auto& s = *state_;
  if (const char* every = std::getenv("AGGRIK8S_DHCP_COMPACT_EVERY"); every != nullptr && s.config.compact_after_lines == 0) {
    // Tests only (tests/e2e/dhcp_kill9.sh): compactions while clients are served, to be killed in.
    s.config.compact_after_lines = static_cast<std::size_t>(std::strtoull(every, nullptr, 10));
    log::warning("dhcp: AGGRIK8S_DHCP_COMPACT_EVERY: compacting the lease file every ", s.config.compact_after_lines,
                 " lines (a test setting)");
  }
  const bool journaled = s.config.mode == DhcpMode::full && s.config.lease_file;
  if (journaled) {
    // Before the file is read: a second server must not even load leases the first is appending to.
    // A few seconds' patience for a server still writing its last leases on its way out (a restart);
    // taken before binding, so that such a server has also closed its port 67 (full mode does not
    // share it) by the time the lock is ours.
    s.lease_lock = lock_dhcp_lease_file(*s.config.lease_file, std::chrono::seconds(3));
  }
  // Bound before the lease file is read or rewritten: a server that cannot have the port leaves it as it was.
  // Proxy mode on an interface binds port 67 to the broadcast address: it hears what boot clients
  // broadcast (DISCOVERs) and nothing sent to this machine's address. Bound to 0.0.0.0 beside the
  // network's DHCP server on the same machine, the kernel handed every unicast datagram for port 67
  // (renewals, INFORMs, relayed requests: the DHCP server's) to whichever socket was bound last, and
  // proxy mode ignored them. Replies still leave from the interface's address (Linux sends from a
  // socket bound to a broadcast address with the device's own address).
  auto listen_address = s.config.mode == DhcpMode::proxy && s.config.interface ? asio::ip::address_v4::broadcast()
                                                                                : asio::ip::address_v4::any();
  bind_socket(s.socket, s.config, {listen_address, s.config.port});
  s.listening_on = s.socket.local_endpoint();
  if (s.config.mode == DhcpMode::proxy) {
    bind_socket(s.proxy_socket, s.config, {asio::ip::address_v4(s.config.server_address), s.config.proxy_port});
  }
  if (journaled) {
    if (std::filesystem::exists(*s.config.lease_file)) {
      std::ifstream in(*s.config.lease_file);
      std::stringstream text;
      text << in.rdbuf();
      std::string torn;
      auto leases = parse_dhcp_leases(text.str(), s.config.lease_file->string(), &torn);
      s.load(leases);
      log::info("dhcp: ", leases.size(), " leases read from ", s.config.lease_file->string());
      if (!torn.empty()) {
        // Never complete on disk, so never acknowledged; the rewrite below drops it from the file.
        log::warning("dhcp: ", s.config.lease_file->string(), ": ignoring its last ", torn.size(),
                     " bytes, a lease line without its newline (cut off by a crash while it was written)");
      }
    }
    // The journal thread posts its results here; it holds no reference to the state, which may be
    // gone by the time a result runs.
    std::weak_ptr<State> weak = state_;
    auto settled = [weak, &io](const DhcpJournalResult& result) {
      asio::post(io, [weak, result] {
        if (auto state = weak.lock()) state->settled(result);
      });
    };
    s.journal = std::make_unique<DhcpLeaseJournal>(*s.config.lease_file, s.snapshot(), std::move(settled),
                                                   s.config.before_journal_sync);
    ++s.counters.journal_compactions;
  }
}

DhcpServer::~DhcpServer() { stop(); }

void DhcpServer::start() {
  asio::co_spawn(state_->io, serve(state_, state_->socket, false), asio::detached);
  if (state_->config.mode == DhcpMode::full) asio::co_spawn(state_->io, count_leases(state_), asio::detached);
  if (state_->proxy_socket.is_open()) asio::co_spawn(state_->io, serve(state_, state_->proxy_socket, true), asio::detached);
}

void DhcpServer::stop() {
  asio::post(state_->io, [state = state_]() {
    if (state->stopping) return;
    state->stopping = true;
    boost::system::error_code ignored;
    state->socket.close(ignored);
    state->proxy_socket.close(ignored);
    state->lease_clock.cancel();
    state->caught_up.cancel();
    // Waits for the lines already queued to be written and synced, so the file is complete when the
    // server has stopped, and no journal thread outlives the io_context's work. Their ACKs are not
    // sent any more: the clients ask the next server.
    state->journal.reset();
    state->waiting.clear();
  });
}

void DhcpServer::set_reservations(std::map<std::string, std::uint32_t> reservations) {
  asio::post(state_->io, [state = state_, reservations = std::move(reservations)]() {
    state->set_reservations(reservations);
  });
}

udp::endpoint DhcpServer::local_endpoint() const { return state_->listening_on; }
std::vector<DhcpLease> DhcpServer::leases() const {
  std::vector<DhcpLease> all;
  for (const auto& pool : state_->pools) {
    for (const auto& [client, lease] : pool.leases()) {
      if (!is_dhcp_quarantine(lease)) all.push_back(lease);
    }
  }
  return all;
}

DhcpServerCounters DhcpServer::counters() const {
  const auto& c = state_->counters;
  DhcpServerCounters out;
  out.received = c.received;
  for (std::size_t i = 0; i < out.received_by_type.size(); ++i) out.received_by_type[i] = c.received_by_type[i];
  out.offers = c.offers;
  out.acks = c.acks;
  out.naks = c.naks;
  for (std::size_t i = 0; i < out.dropped.size(); ++i) out.dropped[i] = c.dropped[i];
  out.journal_appends = c.journal_appends;
  out.journal_compactions = c.journal_compactions;
  out.leases_active = c.leases_active;
  return out;
}

}  // namespace aggrik8s::netboot
