#pragma once
// The one place the netboot server includes Boost.Asio. Two workarounds for Boost 1.74 with GCC 12
// live here so every file that needs Asio gets them the same way:
//  - awaitable.hpp uses std::exchange without including <utility>;
//  - GCC 12 reports -Wnull-dereference inside Asio's scheduler (thread_info after inlining) at -O2 even
//    though Boost comes in as a system header: the check runs after inlining, where the system-header
//    exemption is decided by the pragma state at the header's own lines. Ignoring it around the includes
//    silences it for Asio's code without turning it off for ours.
#include <utility>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#pragma GCC diagnostic pop
