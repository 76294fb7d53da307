#pragma once
// A minimal SVG line/point chart for example results (opens in any browser).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace examples {

struct Series {
  std::string name;
  std::vector<double> x, y;
  bool points_only = false;
};

inline void write_svg_chart(const std::string& path, const std::string& title, const std::string& xlabel,
                            const std::string& ylabel, const std::vector<Series>& series) {
  const double W = 720, H = 440, L = 70, R = 180, T = 40, B = 50;
  double x0 = std::numeric_limits<double>::max(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const Series& s : series)
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad;
  y1 += pad;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  std::ofstream o(path);
  char buf[256];
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif' font-size='12'>\n";
  o << "<rect width='100%' height='100%' fill='white'/>\n";
  o << "<text x='" << W / 2 << "' y='22' text-anchor='middle' font-size='15'>" << title << "</text>\n";
  o << "<line x1='" << L << "' y1='" << H - B << "' x2='" << W - R << "' y2='" << H - B << "' stroke='black'/>\n";
  o << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << H - B << "' stroke='black'/>\n";
  for (int k = 0; k <= 5; ++k) {
    const double xv = x0 + (x1 - x0) * k / 5, yv = y0 + (y1 - y0) * k / 5;
    std::snprintf(buf, sizeof buf, "<text x='%.1f' y='%.1f' text-anchor='middle'>%.4g</text>\n", px(xv), H - B + 16, xv);
    o << buf;
    std::snprintf(buf, sizeof buf, "<text x='%.1f' y='%.1f' text-anchor='end'>%.4g</text>\n", L - 6, py(yv) + 4, yv);
    o << buf;
    std::snprintf(buf, sizeof buf, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", L, py(yv), W - R, py(yv));
    o << buf;
  }
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 12 << "' text-anchor='middle'>" << xlabel << "</text>\n";
  o << "<text x='16' y='" << (T + H - B) / 2 << "' text-anchor='middle' transform='rotate(-90 16 " << (T + H - B) / 2
    << ")'>" << ylabel << "</text>\n";
  for (std::size_t s = 0; s < series.size(); ++s) {
    const char* c = colors[s % 8];
    const Series& se = series[s];
    if (!se.points_only && se.x.size() > 1) {
      o << "<polyline fill='none' stroke='" << c << "' stroke-width='2' points='";
      for (std::size_t i = 0; i < se.x.size(); ++i) {
        std::snprintf(buf, sizeof buf, "%.1f,%.1f ", px(se.x[i]), py(se.y[i]));
        o << buf;
      }
      o << "'/>\n";
    }
    for (std::size_t i = 0; i < se.x.size(); ++i) {
      std::snprintf(buf, sizeof buf, "<circle cx='%.1f' cy='%.1f' r='3.5' fill='%s'/>\n", px(se.x[i]), py(se.y[i]), c);
      o << buf;
    }
    std::snprintf(buf, sizeof buf, "<rect x='%.1f' y='%.1f' width='12' height='12' fill='%s'/><text x='%.1f' y='%.1f'>%s</text>\n",
                  W - R + 12, T + 18.0 * double(s), c, W - R + 30, T + 18.0 * double(s) + 10, se.name.c_str());
    o << buf;
  }
  o << "</svg>\n";
}

}  // namespace examples
