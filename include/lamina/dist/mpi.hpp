#pragma once
// The MPI implementation of dist::Communicator: the only lamina header that
// includes <mpi.h> (link lamina::mpi, CMake option LAMINA_MPI).
//
// MpiCommunicator attaches to an MPI_Comm (MPI_COMM_WORLD by default) and never
// initialises, finalises or frees anything: programs that manage MPI themselves
// keep doing so. MpiEnvironment is the RAII helper for programs that want
// lamina to call MPI_Init_thread / MPI_Finalize; its destructor, reached by an
// exception, aborts the job instead of finalising (a finalise would leave the
// other ranks waiting in their next collective).
#include <mpi.h>

#include <climits>
#include <cstddef>
#include <exception>
#include <span>
#include <string>
#include <string_view>

#include "lamina/core/error.hpp"
#include "lamina/dist/communicator.hpp"

namespace lamina::dist {

namespace detail_mpi {
inline void check(int rc, std::string_view call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail<error>("dist::MpiCommunicator", call, "MPI_SUCCESS", std::string_view(text, std::size_t(len)));
}
inline int count(std::size_t n, std::string_view call) {
  require(n <= std::size_t(INT_MAX), "dist::MpiCommunicator", call, lamina::detail::text("at most ", INT_MAX, " elements"), n);
  return int(n);
}
}  // namespace detail_mpi

class MpiCommunicator final : public Communicator {
 public:
  /// Attaches to `comm` (not owned: it must outlive this object). MPI must be
  /// initialised; errors on `comm` are returned to lamina, which throws.
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int up = 0;
    MPI_Initialized(&up);
    require(up != 0, "dist::MpiCommunicator", "MPI state", "MPI_Init called (or a dist::MpiEnvironment alive)",
            "not initialised");
    detail_mpi::check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail_mpi::check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    detail_mpi::check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  }
  MPI_Comm native() const noexcept { return comm_; }
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }

  void allreduce_sum(std::span<float> v) override { allreduce(v.data(), v.size(), MPI_FLOAT); }
  void allreduce_sum(std::span<double> v) override { allreduce(v.data(), v.size(), MPI_DOUBLE); }
  void broadcast(std::span<float> v, int root = 0) override { bcast(v.data(), v.size(), MPI_FLOAT, root); }
  void broadcast(std::span<double> v, int root = 0) override { bcast(v.data(), v.size(), MPI_DOUBLE, root); }
  void broadcast(std::span<std::byte> v, int root = 0) override { bcast(v.data(), v.size(), MPI_BYTE, root); }
  void barrier() override { detail_mpi::check(MPI_Barrier(comm_), "MPI_Barrier"); }
  [[noreturn]] void abort(int code, std::string_view message) noexcept override {
    print_abort(message);
    MPI_Abort(comm_, code);
    std::_Exit(code);  // MPI_Abort should not return
  }

 private:
  void allreduce(void* p, std::size_t n, MPI_Datatype t) {
    if (n == 0) return;
    detail_mpi::check(MPI_Allreduce(MPI_IN_PLACE, p, detail_mpi::count(n, "MPI_Allreduce count"), t, MPI_SUM, comm_),
                      "MPI_Allreduce");
  }
  void bcast(void* p, std::size_t n, MPI_Datatype t, int root) {
    require_root(root, "broadcast root");
    if (n == 0) return;
    detail_mpi::check(MPI_Bcast(p, detail_mpi::count(n, "MPI_Bcast count"), t, root, comm_), "MPI_Bcast");
  }
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

/// Initialises MPI (MPI_THREAD_FUNNELED: OpenMP threads inside a rank, MPI
/// calls from the main thread) unless it already is, and finalises it at the
/// end if it initialised it. Reached by an exception, the destructor aborts
/// the job: the other ranks would otherwise wait for this one forever.
class MpiEnvironment {
 public:
  MpiEnvironment(int& argc, char**& argv) : exceptions_(std::uncaught_exceptions()) {
    int up = 0;
    MPI_Initialized(&up);
    if (up) return;
    int provided = 0;
    detail_mpi::check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    owner_ = true;
  }
  MpiEnvironment() : MpiEnvironment(no_argc_, no_argv_) {}
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;
  ~MpiEnvironment() {
    if (!owner_) return;
    if (std::uncaught_exceptions() > exceptions_) {
      MpiCommunicator(MPI_COMM_WORLD).abort(1, "an exception left the scope of dist::MpiEnvironment");
    }
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  }
  bool owns_mpi() const noexcept { return owner_; }

 private:
  static inline int no_argc_ = 0;
  static inline char** no_argv_ = nullptr;
  int exceptions_;
  bool owner_ = false;
};

}  // namespace lamina::dist
