#include "netboot/dhcp_server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "core/log.hpp"

namespace aggrik8s::netboot {

namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

DhcpPacket reply_to(const DhcpPacket& request, DhcpMessageType type, std::uint32_t server) {
  DhcpPacket reply;
  reply.op = 2;
  reply.htype = request.htype;
  reply.hlen = request.hlen;
  reply.xid = request.xid;
  reply.flags = request.flags;
  reply.giaddr = request.giaddr;
  reply.chaddr = request.chaddr;
  reply.set(dhcp_option::message_type, std::vector<std::uint8_t>{static_cast<std::uint8_t>(type)});
  reply.set_address(dhcp_option::server_identifier, server);
  return reply;
}

void add_boot(DhcpPacket& reply, const DhcpBootAnswer& boot) {
  if (!boot.offer) return;
  reply.siaddr = boot.siaddr;
  reply.file = boot.file;
  if (boot.vendor_class) reply.set(dhcp_option::vendor_class, *boot.vendor_class);
  if (boot.vendor_options) reply.set(dhcp_option::vendor_specific, *boot.vendor_options);
  if (boot.tftp_server_option) reply.set(dhcp_option::tftp_server_name, *boot.tftp_server_option);
  if (boot.bootfile_option) reply.set(dhcp_option::bootfile_name, *boot.bootfile_option);
  if (boot.client_uuid) reply.set(dhcp_option::client_uuid, *boot.client_uuid);
}

void add_network(DhcpPacket& reply, const DhcpServerConfig& config, bool with_lease) {
  reply.set_address(dhcp_option::subnet_mask, config.netmask);
  if (config.router) reply.set_address(dhcp_option::router, *config.router);
  if (!config.dns.empty()) {
    std::vector<std::uint8_t> data;
    for (auto address : config.dns) {
      for (int shift = 24; shift >= 0; shift -= 8) data.push_back(static_cast<std::uint8_t>(address >> shift));
    }
    reply.set(dhcp_option::dns_server, std::move(data));
  }
  if (config.domain) reply.set(dhcp_option::domain_name, *config.domain);
  if (with_lease) {
    std::uint32_t lease = config.pool.lease_time;
    reply.set_u32(dhcp_option::lease_time, lease);
    reply.set_u32(dhcp_option::renewal_time, lease / 2);
    reply.set_u32(dhcp_option::rebinding_time, lease / 8 * 7);
  }
}

}  // namespace

DhcpReplyPlan plan_dhcp_reply(const DhcpServerConfig& config, DhcpLeasePool* pool, const DhcpPacket& request,
                              bool on_proxy_port, std::int64_t now) {
  DhcpReplyPlan plan;
  auto type = request.message_type();
  std::string mac = request.hardware_address();
  if (request.op != 1 || !type) {
    plan.log = "ignored: not a DHCP request from " + mac;
    return plan;
  }
  std::string what = std::string(to_string(*type)) + " from " + mac;
  DhcpBootAnswer boot = config.decide ? config.decide(request) : DhcpBootAnswer{};
  std::string boot_text = boot.offer ? " boot=" + std::string(to_string(boot.kind)) + (boot.file.empty() ? "" : " file=" + boot.file)
                                     : " (no boot offer: " + (boot.reason.empty() ? std::string("none") : boot.reason) + ")";

  if (config.mode == DhcpMode::proxy || on_proxy_port) {
    // proxyDHCP: another server gives addresses; we answer boot clients only, with yiaddr 0.
    if (!boot.offer) {
      plan.log = what + " ignored" + boot_text;
      return plan;
    }
    bool wanted = on_proxy_port ? (*type == DhcpMessageType::request || *type == DhcpMessageType::inform)
                                : *type == DhcpMessageType::discover;
    if (!wanted) {
      plan.log = what + " ignored (proxy answers DISCOVER on 67, REQUEST on 4011)";
      return plan;
    }
    DhcpPacket reply = reply_to(request, on_proxy_port ? DhcpMessageType::ack : DhcpMessageType::offer, config.server_address);
    add_boot(reply, boot);
    if (!reply.has(dhcp_option::vendor_class)) reply.set(dhcp_option::vendor_class, "PXEClient");
    plan.reply = std::move(reply);
    plan.log = what + " -> proxy " + (on_proxy_port ? "ACK" : "OFFER") + boot_text;
    return plan;
  }
  if (pool == nullptr) return plan;
  // One pool per server, on the interface's subnet: a request relayed from another subnet must not get
  // an address from it (per-relay pools are not implemented yet).
  if (request.giaddr != 0 && (request.giaddr & config.netmask) != (config.server_address & config.netmask)) {
    plan.log = what + " via relay " + ipv4_to_string(request.giaddr) + " ignored: no pool for that subnet";
    return plan;
  }

  switch (*type) {
    case DhcpMessageType::discover: {
      auto address = pool->offer(mac, request.requested_address(), now);
      if (!address) {
        plan.log = what + ": no free address in the pool";
        return plan;
      }
      DhcpPacket reply = reply_to(request, DhcpMessageType::offer, config.server_address);
      reply.yiaddr = *address;
      add_network(reply, config, true);
      add_boot(reply, boot);
      plan.reply = std::move(reply);
      plan.log = what + " -> OFFER " + ipv4_to_string(*address) + boot_text;
      return plan;
    }
    case DhcpMessageType::request: {
      if (auto server = request.server_identifier(); server && *server != config.server_address) {
        pool->release(mac, 0);  // it chose another server: drop our offer hold
        plan.log = what + " chose server " + ipv4_to_string(*server) + ", not us";
        return plan;
      }
      // SELECTING / INIT-REBOOT carry option 50; RENEWING / REBINDING carry ciaddr.
      std::uint32_t address = request.requested_address().value_or(request.ciaddr);
      auto lease = address != 0 ? pool->prepare(mac, address, now) : std::nullopt;
      if (!lease) {
        DhcpPacket nak = reply_to(request, DhcpMessageType::nak, config.server_address);
        nak.flags = 0x8000;  // the client may hold an address it must not use: broadcast
        nak.set(dhcp_option::message, "address " + ipv4_to_string(address) + " is not available to this client");
        plan.reply = std::move(nak);
        plan.log = what + " for " + ipv4_to_string(address) + " -> NAK";
        return plan;
      }
      DhcpPacket reply = reply_to(request, DhcpMessageType::ack, config.server_address);
      reply.yiaddr = address;
      reply.ciaddr = request.ciaddr;
      add_network(reply, config, true);
      add_boot(reply, boot);
      plan.reply = std::move(reply);
      plan.to_commit = lease;
      plan.log = what + " -> ACK " + ipv4_to_string(address) + boot_text;
      return plan;
    }
    case DhcpMessageType::release:
      plan.rewrite_leases = pool->release(mac, request.ciaddr);
      plan.log = what + " released " + ipv4_to_string(request.ciaddr);
      return plan;
    case DhcpMessageType::decline: {
      std::uint32_t address = request.requested_address().value_or(0);
      pool->decline(mac, address, now);
      plan.rewrite_leases = true;
      plan.log = what + " declined " + ipv4_to_string(address) + " (quarantined)";
      return plan;
    }
    case DhcpMessageType::inform: {
      DhcpPacket reply = reply_to(request, DhcpMessageType::ack, config.server_address);
      reply.ciaddr = request.ciaddr;
      add_network(reply, config, false);
      add_boot(reply, boot);
      plan.reply = std::move(reply);
      plan.log = what + " -> ACK (INFORM)" + boot_text;
      return plan;
    }
    default:
      plan.log = what + " ignored";
      return plan;
  }
}

void write_dhcp_lease_file(const std::filesystem::path& file, const std::string& text) {
  std::filesystem::path temp = file;
  temp += ".tmp";
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw_system_error("creating " + temp.string(), errno);
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t wrote = ::write(fd, text.data() + done, text.size() - done);
    if (wrote < 0) {
      int err = errno;
      ::close(fd);
      throw_system_error("writing " + temp.string(), err);
    }
    done += static_cast<std::size_t>(wrote);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    throw_system_error("fsync of " + temp.string(), err);
  }
  ::close(fd);
  if (::rename(temp.c_str(), file.c_str()) != 0) throw_system_error("renaming " + temp.string() + " to " + file.string(), errno);
  // The rename itself must be durable too, or a crash could bring back the old file.
  auto directory = file.parent_path().empty() ? std::filesystem::path(".") : file.parent_path();
  int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

struct DhcpServer::State {
  State(asio::io_context& context, DhcpServerConfig server_config)
      : io(context), config(std::move(server_config)), pool(config.pool), socket(context), proxy_socket(context) {}
  asio::io_context& io;
  DhcpServerConfig config;
  DhcpLeasePool pool;
  udp::socket socket;
  udp::socket proxy_socket;
  udp::endpoint listening_on;
  bool stopping = false;
  // Atomic: counters() is read from other threads (metrics, tests) while the io thread serves.
  struct {
    std::atomic<std::uint64_t> received{0}, malformed{0}, flood_dropped{0}, offers{0}, acks{0}, naks{0}, ignored{0};
  } counters;
  int journal = -1;                 // the lease file, open for appending
  std::size_t journal_lines = 0;    // lines appended since the last compaction

  ~State() {
    if (journal >= 0) ::close(journal);
  }

  // Rewrites the lease file from the pool (temp + fsync + rename) and reopens it for appending.
  void compact() {
    if (!config.lease_file) return;
    write_dhcp_lease_file(*config.lease_file, format_dhcp_leases(pool.leases()));
    if (journal >= 0) ::close(journal);
    journal = ::open(config.lease_file->c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (journal < 0) throw_system_error("opening " + config.lease_file->string(), errno);
    journal_lines = 0;
  }

  // Appends journal lines and waits until they are on disk.
  void append(const std::string& lines) {
    if (journal < 0) return;
    ssize_t wrote = ::write(journal, lines.data(), lines.size());
    if (wrote != static_cast<ssize_t>(lines.size())) throw_system_error("appending to " + config.lease_file->string(), errno);
    if (::fdatasync(journal) != 0) throw_system_error("fdatasync of " + config.lease_file->string(), errno);
    journal_lines += static_cast<std::size_t>(std::count(lines.begin(), lines.end(), '\n'));
    if (journal_lines > 2 * pool.leases().size() + 1000) compact();
  }
  std::map<std::string, std::pair<std::int64_t, unsigned>> recent;  // MAC -> (second, requests in it)
};

namespace {

void bind_socket(udp::socket& socket, const DhcpServerConfig& config, const udp::endpoint& where) {
  boost::system::error_code ec;
  socket.open(udp::v4(), ec);
  if (!ec) socket.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) socket.set_option(asio::socket_base::broadcast(true), ec);
  // Room for a burst (many nodes powering on at once) while a batch is being written to disk.
  if (!ec) socket.set_option(asio::socket_base::receive_buffer_size(4 << 20), ec);
  if (!ec && config.interface) {
    const std::string& name = *config.interface;
    if (::setsockopt(socket.native_handle(), SOL_SOCKET, SO_BINDTODEVICE, name.c_str(),
                     static_cast<socklen_t>(name.size())) != 0) {
      throw_system_error("DHCP server: binding to interface " + name, errno);
    }
  }
  if (!ec) socket.bind(where, ec);
  if (ec) {
    std::ostringstream text;
    text << where;
    throw Error("DHCP server cannot listen on " + text.str() + (config.interface ? " (interface " + *config.interface + ")" : "") +
                ": " + ec.message());
  }
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

udp::endpoint destination(const DhcpServerConfig& config, const DhcpPacket& request, const DhcpPacket& reply,
                          const udp::endpoint& from, bool on_proxy_port) {
  if (request.giaddr != 0) return {asio::ip::address_v4(request.giaddr), config.port};  // back through the relay
  if (on_proxy_port || !config.interface) return from;
  bool nak = reply.message_type() == DhcpMessageType::nak;
  if (request.ciaddr != 0 && !nak) return {asio::ip::address_v4(request.ciaddr), config.client_port};
  // The client has no address yet: unicasting to yiaddr would need an ARP entry we cannot add from
  // a UDP socket, so broadcast on the bound interface (always allowed by RFC 2131).
  return {asio::ip::address_v4::broadcast(), config.client_port};
}

// One received request and what to do about it.
struct Pending {
  DhcpPacket request;
  udp::endpoint from;
  DhcpReplyPlan plan;
};

// Parses and plans one datagram; nullopt when it is dropped (malformed, flood).
std::optional<Pending> plan_datagram(DhcpServer::State& state, std::span<const std::uint8_t> datagram,
                                     const udp::endpoint& from, bool proxy_port, std::int64_t now,
                                     std::string& journal) {
  ++state.counters.received;
  Pending pending;
  pending.from = from;
  try {
    pending.request = parse_dhcp_packet(datagram);
  } catch (const DhcpParseError& e) {
    auto malformed = ++state.counters.malformed;
    log::warning("dhcp: dropped malformed packet from ", from.address().to_string(), " (", malformed,
                 " so far): ", e.what());
    return std::nullopt;
  }
  std::string mac = pending.request.hardware_address();
  auto& [second, count] = state.recent[mac];
  if (second != now) {
    second = now;
    count = 0;
  }
  if (++count > state.config.max_requests_per_mac_per_second) {
    auto dropped = ++state.counters.flood_dropped;
    if (count == state.config.max_requests_per_mac_per_second + 1) {
      log::warning("dhcp: flood from ", mac, ": more than ", state.config.max_requests_per_mac_per_second,
                   " requests this second, dropping (", dropped, " dropped so far)");
    }
    return std::nullopt;
  }
  if (state.recent.size() > 100000) state.recent.clear();  // bounded memory under a MAC-spoofing flood
  pending.plan = plan_dhcp_reply(state.config, state.config.mode == DhcpMode::full ? &state.pool : nullptr,
                                 pending.request, proxy_port, now);
  // Committed in memory at once so the next request of this batch sees it; the batch's journal lines
  // reach the disk before any of its replies is sent.
  if (pending.plan.to_commit) {
    state.pool.commit(*pending.plan.to_commit);
    journal += format_dhcp_lease_line(*pending.plan.to_commit);
  } else if (pending.plan.rewrite_leases) {
    journal += format_dhcp_lease_line(DhcpLease{mac, 0, 0});  // tombstone: the pool already dropped it
  }
  return pending;
}

asio::awaitable<void> serve(std::shared_ptr<DhcpServer::State> state, udp::socket& socket, bool proxy_port) {
  // Group commit: everything already queued on the socket (up to a batch) is planned, the lease lines
  // of the whole batch are written with one fdatasync, then the replies go out. Under load this makes
  // the per-ACK durability cost a per-batch one; a lone request is still a batch of one.
  constexpr std::size_t max_batch = 256;
  std::vector<std::uint8_t> buffer(1500);
  socket.non_blocking(true);
  std::vector<Pending> batch;
  std::string journal;
  while (!state->stopping) {
    boost::system::error_code ec;
    co_await socket.async_wait(udp::socket::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    if (state->stopping || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) break;
    if (ec) continue;
    batch.clear();
    journal.clear();
    std::int64_t now = unix_now();
    for (std::size_t i = 0; i < max_batch; ++i) {
      udp::endpoint from;
      std::size_t size = socket.receive_from(asio::buffer(buffer), from, 0, ec);
      if (ec) break;  // would_block: the queue is drained
      try {
        if (auto pending = plan_datagram(*state, std::span<const std::uint8_t>(buffer.data(), size), from, proxy_port, now, journal)) {
          batch.push_back(std::move(*pending));
        }
      } catch (const std::exception& e) {
        log::error("dhcp: request from ", from.address().to_string(), ": ", e.what(), " (no reply sent)");
      }
    }
    if (!journal.empty()) {
      try {
        state->append(journal);
      } catch (const std::exception& e) {
        // Nothing of this batch is acknowledged: a lease not on disk must not be granted.
        log::error("dhcp: lease file: ", e.what(), "; ", batch.size(), " requests left unanswered");
        continue;
      }
    }
    for (auto& pending : batch) {
      auto& plan = pending.plan;
      if (plan.to_commit && state->config.leased) state->config.leased(pending.request, plan.to_commit->address);
      log::info("dhcp: ", plan.log);
      if (!plan.reply) {
        ++state->counters.ignored;
        continue;
      }
      auto type = plan.reply->message_type();
      if (type == DhcpMessageType::offer) ++state->counters.offers;
      if (type == DhcpMessageType::ack) ++state->counters.acks;
      if (type == DhcpMessageType::nak) ++state->counters.naks;
      auto bytes = encode_dhcp_packet(*plan.reply);
      boost::system::error_code send_error;
      socket.send_to(asio::buffer(bytes), destination(state->config, pending.request, *plan.reply, pending.from, proxy_port), 0,
                     send_error);
      if (send_error) log::warning("dhcp: reply to ", pending.request.hardware_address(), " not sent: ", send_error.message());
    }
  }
}

}  // namespace

DhcpServer::DhcpServer(asio::io_context& io, DhcpServerConfig config) : state_(std::make_shared<State>(io, std::move(config))) {
  auto& s = *state_;
  if (s.config.mode == DhcpMode::full && s.config.lease_file && std::filesystem::exists(*s.config.lease_file)) {
    std::ifstream in(*s.config.lease_file);
    std::stringstream text;
    text << in.rdbuf();
    auto leases = parse_dhcp_leases(text.str(), s.config.lease_file->string());
    s.pool.load(leases);
    log::info("dhcp: ", leases.size(), " leases read from ", s.config.lease_file->string());
  }
  if (s.config.mode == DhcpMode::full) s.compact();
  bind_socket(s.socket, s.config, {asio::ip::address_v4::any(), s.config.port});
  s.listening_on = s.socket.local_endpoint();
  if (s.config.mode == DhcpMode::proxy) {
    bind_socket(s.proxy_socket, s.config, {asio::ip::address_v4(s.config.server_address), s.config.proxy_port});
  }
}

DhcpServer::~DhcpServer() { stop(); }

void DhcpServer::start() {
  asio::co_spawn(state_->io, serve(state_, state_->socket, false), asio::detached);
  if (state_->proxy_socket.is_open()) asio::co_spawn(state_->io, serve(state_, state_->proxy_socket, true), asio::detached);
}

void DhcpServer::stop() {
  asio::post(state_->io, [state = state_]() {
    if (state->stopping) return;
    state->stopping = true;
    boost::system::error_code ignored;
    state->socket.close(ignored);
    state->proxy_socket.close(ignored);
  });
}

void DhcpServer::set_reservations(std::map<std::string, std::uint32_t> reservations) {
  asio::post(state_->io, [state = state_, reservations = std::move(reservations)]() mutable {
    state->pool.set_reservations(std::move(reservations));
  });
}

udp::endpoint DhcpServer::local_endpoint() const { return state_->listening_on; }
DhcpServerCounters DhcpServer::counters() const {
  const auto& c = state_->counters;
  return DhcpServerCounters{c.received.load(), c.malformed.load(), c.flood_dropped.load(), c.offers.load(),
                            c.acks.load(), c.naks.load(), c.ignored.load()};
}

}  // namespace aggrik8s::netboot
