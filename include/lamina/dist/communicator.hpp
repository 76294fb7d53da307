#pragma once
// A backend-neutral communicator for data-parallel training (issue 16): rank,
// size, in-place all-reduce sum, broadcast, barrier and abort. The core of
// lamina never includes an MPI header; dist/mpi.hpp implements this interface
// over MPI, and LocalCommunicator is the one-process case (every collective is
// the identity), so one program runs with and without MPI.
//
// Collectives are called by every rank in the same order with spans of the same
// length; a rank that fails between collectives must abort the job (abort(), or
// run_or_abort() below), otherwise the other ranks wait for it forever.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>
#include <string>
#include <string_view>

#include "lamina/core/error.hpp"

namespace lamina::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  bool is_root() const noexcept { return rank() == 0; }

  /// v[i] = sum over ranks of v[i], on every rank.
  virtual void allreduce_sum(std::span<float> v) = 0;
  virtual void allreduce_sum(std::span<double> v) = 0;
  /// v = root's v, on every rank.
  virtual void broadcast(std::span<float> v, int root = 0) = 0;
  virtual void broadcast(std::span<double> v, int root = 0) = 0;
  virtual void broadcast(std::span<std::byte> v, int root = 0) = 0;
  virtual void barrier() = 0;
  /// Ends every rank of the job with `code`, after printing `message` (one line,
  /// prefixed with this rank) on stderr. Never returns.
  [[noreturn]] virtual void abort(int code, std::string_view message) noexcept = 0;

 protected:
  void require_root(int root, std::string_view what) const {
    require(root >= 0 && root < size(), "dist::Communicator", what, lamina::detail::text("a root rank in [0, ", size(), ")"),
            root);
  }
  void print_abort(std::string_view message) const noexcept {
    std::fprintf(stderr, "lamina: rank %d of %d: %.*s; aborting the job\n", rank(), size(), int(message.size()),
                 message.data());
    std::fflush(stderr);
  }
};

/// One process: rank 0 of 1; collectives leave the data as it is.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  void allreduce_sum(std::span<float>) override {}
  void allreduce_sum(std::span<double>) override {}
  void broadcast(std::span<float>, int root = 0) override { require_root(root, "broadcast root"); }
  void broadcast(std::span<double>, int root = 0) override { require_root(root, "broadcast root"); }
  void broadcast(std::span<std::byte>, int root = 0) override { require_root(root, "broadcast root"); }
  void barrier() override {}
  [[noreturn]] void abort(int code, std::string_view message) noexcept override {
    print_abort(message);
    std::_Exit(code);
  }
};

/// s = root's s, on every rank (two broadcasts: the length, then the bytes).
inline void broadcast(Communicator& comm, std::string& s, int root = 0) {
  double n = double(s.size());
  comm.broadcast(std::span<double>(&n, 1), root);
  s.resize(std::size_t(n));
  comm.broadcast(std::as_writable_bytes(std::span<char>(s.data(), s.size())), root);
}

/// Runs fn(); if it throws, prints the exception with this rank and aborts
/// every rank (instead of leaving the others blocked in a collective). With
/// one rank it rethrows, so single-process programs handle errors as usual.
template <class F>
decltype(auto) run_or_abort(Communicator& comm, F&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    if (comm.size() == 1) throw;
    comm.abort(1, e.what());
  } catch (...) {
    if (comm.size() == 1) throw;
    comm.abort(1, "unknown exception");
  }
  std::_Exit(1);  // not reached: abort() does not return (GCC ignores [[noreturn]] on virtual calls)
}

}  // namespace lamina::dist
