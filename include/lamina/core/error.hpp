#pragma once
// Exceptions of lamina (spec/conventions.md "Errors and bad input"): every
// message names the module, the argument, the expected and the actual value.
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <ostream>

namespace lamina {

/// Base of every exception lamina throws.
struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A tensor argument has the wrong shape (or is not contiguous).
struct shape_error : error {
  using error::error;
};
/// A hyper-parameter or option is outside its domain.
struct value_error : error {
  using error::error;
};
/// A file could not be read or written, or its content is malformed.
struct io_error : error {
  using error::error;
};
/// Training produced a NaN or an infinity.
struct non_finite_error : error {
  using error::error;
};

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  os.precision(17);
  (os << ... << parts);
  return os.str();
}

/// A message fragment joined only when it is printed: `text("[..., ", D, "]")`
/// holds references to its parts, so a check that passes never formats or
/// allocates. Use it for arguments of require(); it must not outlive the call.
template <class... Parts>
struct Text {
  std::tuple<const Parts&...> parts;
  friend std::ostream& operator<<(std::ostream& os, const Text& t) {
    std::apply([&](const auto&... p) { (os << ... << p); }, t.parts);
    return os;
  }
};
template <class... Parts>
Text<Parts...> text(const Parts&... parts) noexcept {
  return {std::tie(parts...)};
}
}  // namespace detail

/// "lamina::<module>: <argument>: expected <expected>, got <actual>"
template <class E = value_error, class Argument, class Expected, class Actual>
[[noreturn]] void fail(std::string_view module, const Argument& argument, const Expected& expected,
                       const Actual& actual) {
  throw E(detail::concat("lamina::", module, ": ", argument, ": expected ", expected, ", got ", actual));
}

/// Throws E with fail()'s message unless ok. The message is formatted only on
/// failure; pass composite parts as detail::text(...), never as a std::string
/// built before the call.
template <class E = value_error, class Argument, class Expected, class Actual>
void require(bool ok, std::string_view module, const Argument& argument, const Expected& expected,
             const Actual& actual) {
  if (!ok) [[unlikely]] fail<E>(module, argument, expected, actual);
}

}  // namespace lamina
