// exploding_rnn: gradient clipping in a real training run in which the gradients explode.
//
// Task ("delayed recall"): the input is a sequence of T = 50 values drawn uniformly from [-1, 1];
// at every step t >= 5 the network must output the value it was shown 5 steps earlier. The loss
// is the mean squared error over those steps. Predicting the mean target (0) scores Var = 1/3:
// that is the baseline a run has to beat.
//
// Model: a vanilla RNN, h_t = tanh(W h_{t-1} + U x_t + b), y_t = V h_t + c, trained by SGD with
// momentum and weight decay, and hand-written backpropagation through time over all 50 steps
// (--gradcheck checks it against finite differences). W starts with gain 2.2, a spectral radius
// well above 1, which puts the network in its chaotic regime: the backward pass multiplies by
// W^T fifty times, and the first gradients are typically 40-350 in norm where a trained
// network's are ~0.01. An unclipped SGD step of that size throws the weights into a region
// where they are larger still: within 20 steps the norm reaches 1e7-1e18.
//
// The same initial weights are trained on the same data stream once per clipping method (the
// rows of `methods()`); every step goes to a CSV file and a summary table compares the runs, and
// a gnuplot script beside the CSV draws the loss and the gradient norm of every run per step, on
// log scales, into an SVG (when gnuplot is installed; the demo says so when it is not).
// Without clipping the first exploded steps throw the weights so far that the run overflows to
// NaN, or every tanh unit saturates and the loss sticks at the baseline; clipping the global
// norm makes the same run converge.
//
//   exploding_rnn [--steps N] [--csv PATH] [--plot PATH] [--no-plot] [--seed S] [--quiet] [--check]
//                 [--gradcheck]

#include <gradclip/gradclip.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace {

constexpr double kPi = 3.14159265358979323846;

// ------------------------------------------------------------------------------------------------
// Random numbers. std::mt19937_64's output sequence is fixed by the standard, but the standard
// distributions are not, so the conversions to uniform and normal values are written out here:
// the run is the same with libstdc++, libc++ and MSVC.
// ------------------------------------------------------------------------------------------------
class random_source {
 public:
  explicit random_source(std::uint64_t seed) : engine_(seed) {}

  // Uniform in [0, 1) from the top 53 bits: every value is a multiple of 2^-53.
  double uniform() { return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  // Standard normal by the Box-Muller transform; the second value of each pair is kept.
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double radius = std::sqrt(-2.0 * std::log(1.0 - uniform()));  // 1 - u is in (0, 1]
    const double angle = 2.0 * kPi * uniform();
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return radius * std::cos(angle);
  }

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// ------------------------------------------------------------------------------------------------
// Configuration. Tuned so that the outcome does not hang on the default seed: see the note at the
// end of the file.
// ------------------------------------------------------------------------------------------------
struct config {
  int seq_len = 50;           // T: time steps per sequence, all of them backpropagated through
  int delay = 5;              // target at step t is the input at step t - delay
  int hidden = 32;            // H
  int batch = 32;             // sequences per SGD step, drawn fresh every step
  int steps = 1500;           // SGD steps per run
  double gain = 2.2;          // W ~ N(0, gain^2 / H): spectral radius ~ gain (circular law)
  double lr = 0.2;            // peak SGD learning rate, decayed to 0 along a cosine
  double momentum = 0.9;      // heavy-ball momentum
  double weight_decay = 1e-3; // L2 penalty: pulls W back towards stable dynamics
  double max_norm = 0.25;     // clip_by_global_norm threshold
  double clip_value = 0.03;   // clip_by_value threshold
  std::uint64_t seed = 42;
};

// A batch of input sequences: row t holds the inputs of step t, one column per sequence. The
// targets are the same rows shifted by `delay`, so they need no storage of their own.
using sequences = Eigen::MatrixXd;

sequences make_batch(random_source& rng, int seq_len, int batch) {
  sequences x(seq_len, batch);
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    for (Eigen::Index t = 0; t < x.rows(); ++t) x(t, j) = rng.uniform(-1.0, 1.0);
  }
  return x;
}

// ------------------------------------------------------------------------------------------------
// The model. The same struct holds parameters, gradients and momentum buffers.
// ------------------------------------------------------------------------------------------------
struct rnn {
  Eigen::MatrixXd W;     // H x H recurrent weights
  Eigen::MatrixXd U;     // H x 1 input weights
  Eigen::VectorXd b;     // H     hidden bias
  Eigen::RowVectorXd V;  // 1 x H readout
  Eigen::VectorXd c;     // 1     readout bias

  // The five tensors as one gradclip group: clipping treats them as a single vector.
  auto tensors() { return std::tie(W, U, b, V, c); }
  auto tensors() const { return std::tie(W, U, b, V, c); }

  static rnn zeros(int hidden) {
    rnn z;
    z.W.setZero(hidden, hidden);
    z.U.setZero(hidden, 1);
    z.b.setZero(hidden);
    z.V.setZero(hidden);
    z.c.setZero(1);
    return z;
  }
};

rnn init_rnn(random_source& rng, const config& cfg) {
  const int H = cfg.hidden;
  rnn p = rnn::zeros(H);
  const double w_std = cfg.gain / std::sqrt(static_cast<double>(H));
  for (Eigen::Index i = 0; i < p.W.size(); ++i) p.W.data()[i] = w_std * rng.normal();
  for (Eigen::Index i = 0; i < p.U.size(); ++i) p.U.data()[i] = rng.normal();
  for (Eigen::Index i = 0; i < p.V.size(); ++i) p.V.data()[i] = rng.normal() / std::sqrt(static_cast<double>(H));
  return p;
}

// Spectral radius by Gelfand's formula, rho = lim ||W^k||^(1/k), with k = 2^10 reached by
// repeated squaring; the running scale is kept as a logarithm so that nothing overflows.
double spectral_radius(const Eigen::MatrixXd& w) {
  Eigen::MatrixXd m = w;
  double log_scale = 0.0;
  constexpr int squarings = 10;
  for (int i = 0; i < squarings; ++i) {
    m = (m * m).eval();
    const double n = m.norm();
    if (n == 0.0) return 0.0;
    m /= n;
    log_scale = 2.0 * log_scale + std::log(n);
  }
  return std::exp(log_scale / static_cast<double>(1 << squarings));
}

// Buffers reused across steps so that the training loop does not allocate.
struct workspace {
  std::vector<Eigen::MatrixXd> h;  // h[t + 1] = hidden state after step t (H x B); h[0] = 0
  Eigen::MatrixXd err;             // prediction errors, one row per step (T x B)
  Eigen::MatrixXd dh, da;          // dL/dh_t and dL/d(pre-activation) (H x B)
};

// Mean squared error over the scored steps; with `grad`, also its gradient by BPTT.
double loss_and_grad(const rnn& p, const sequences& x, int delay, rnn* grad, workspace& ws) {
  const Eigen::Index T = x.rows();
  const Eigen::Index B = x.cols();
  const Eigen::Index H = p.W.rows();

  ws.h.resize(static_cast<std::size_t>(T + 1));
  ws.h[0].setZero(H, B);
  ws.err.setZero(T, B);
  double loss = 0.0;
  for (Eigen::Index t = 0; t < T; ++t) {
    Eigen::MatrixXd& h = ws.h[static_cast<std::size_t>(t + 1)];
    h.noalias() = p.W * ws.h[static_cast<std::size_t>(t)];
    h.noalias() += p.U * x.row(t);
    h.colwise() += p.b;
    h = h.array().tanh().matrix();
    if (t >= delay) {
      ws.err.row(t) = (p.V * h).array() + p.c(0) - x.row(t - delay).array();
      loss += ws.err.row(t).squaredNorm();
    }
  }
  const double count = static_cast<double>((T - delay) * B);
  loss /= count;
  if (grad == nullptr) return loss;

  // Backward through time. dL/dy_t = 2 err_t / count on the scored steps.
  *grad = rnn::zeros(static_cast<int>(H));
  ws.dh.setZero(H, B);
  for (Eigen::Index t = T - 1; t >= 0; --t) {
    const Eigen::MatrixXd& h = ws.h[static_cast<std::size_t>(t + 1)];
    const Eigen::MatrixXd& h_prev = ws.h[static_cast<std::size_t>(t)];
    if (t >= delay) {
      const Eigen::RowVectorXd dy = (2.0 / count) * ws.err.row(t);
      grad->V.noalias() += dy * h.transpose();
      grad->c(0) += dy.sum();
      ws.dh.noalias() += p.V.transpose() * dy;
    }
    ws.da = (ws.dh.array() * (1.0 - h.array().square())).matrix();  // through tanh
    grad->W.noalias() += ws.da * h_prev.transpose();
    grad->U.noalias() += ws.da * x.row(t).transpose();
    grad->b += ws.da.rowwise().sum();
    ws.dh.noalias() = p.W.transpose() * ws.da;  // this is where the explosion happens
  }
  return loss;
}

// ------------------------------------------------------------------------------------------------
// Clipping methods: the rows of the comparison. Each one gets the raw gradient and the current
// parameters (for methods that scale by the parameter norm, such as AGC), clips the gradient in
// place and reports what it saw. `make` builds a fresh clipper for every run, so methods that
// keep statistics across steps (AutoClip, ZClip) start each run from scratch.
// ------------------------------------------------------------------------------------------------
using clip_step = std::function<gradclip::clip_result(rnn& grad, const rnn& params)>;

struct method {
  std::string name;
  std::string description;
  std::function<clip_step()> make;
};

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::vector<method> methods(const config& cfg) {
  std::vector<method> list;

  list.push_back({"none", "no clipping", [] {
                    return clip_step([](rnn& g, const rnn&) {
                      return gradclip::clip_result{gradclip::global_norm(g.tensors()), 1.0, false};
                    });
                  }});

  const double cv = cfg.clip_value;
  list.push_back({"value", "clip_by_value, c = " + number_text(cv), [cv] {
                    return clip_step([clip = gradclip::value_clipper(cv), cv](rnn& g, const rnn&) {
                      // Value clipping has no single scale; "clipped" means some element was clamped,
                      // i.e. the infinity norm exceeded the threshold.
                      const double before = gradclip::global_norm(g.tensors());
                      const bool hit = gradclip::global_norm(g.tensors(), std::numeric_limits<double>::infinity()) > cv;
                      clip(g.tensors());
                      return gradclip::clip_result{before, 1.0, hit};
                    });
                  }});

  const double mn = cfg.max_norm;
  list.push_back({"global_norm", "clip_by_global_norm, max_norm = " + number_text(mn), [mn] {
                    return clip_step([clip = gradclip::norm_clipper(mn)](rnn& g, const rnn&) {
                      return clip(g.tensors());
                    });
                  }});

  // The adaptive methods: thresholds that follow the data instead of a hand-tuned max_norm.
  // AGC: each unit (row of W, U; the whole of b, V, c) limited to 5% of its parameter norm
  // (a larger clipping than NFNets' 0.01, which targets large-batch image models; with 0.01 the
  // small recurrent net barely moves).
  list.push_back({"agc", "agc, clipping = 0.05, eps = 1e-3", [] {
                    return clip_step([clip = gradclip::agc(0.05, 1e-3)](rnn& g, const rnn& p) {
                      return gradclip::clip_result(clip(p.tensors(), g.tensors()));
                    });
                  }});
  // AutoClip: the 10th percentile of every gradient norm seen so far (the paper's default).
  list.push_back({"auto_clip", "auto_clip, 10th percentile of the norm history", [] {
                    return clip_step([clip = std::make_shared<gradclip::auto_clip>(10.0)](rnn& g, const rnn&) {
                      return (*clip)(g.tensors());
                    });
                  }});
  // ZClip: z-score spike detection on an EMA of the norm, capped by max_norm during warm-up.
  list.push_back({"zclip", "zclip, z_thresh = 2.5, alpha = 0.97, warm-up cap = max_norm", [mn] {
                    gradclip::zclip_options o;
                    o.max_grad_norm = mn;
                    return clip_step([clip = std::make_shared<gradclip::zclip>(o)](rnn& g, const rnn&) {
                      return (*clip)(g.tensors());
                    });
                  }});

  return list;
}

// ------------------------------------------------------------------------------------------------
// Training
// ------------------------------------------------------------------------------------------------
struct run_summary {
  std::string name;
  double final_loss = 0.0;      // mean training loss over the last `tail` steps
  double heldout_loss = 0.0;    // loss of the final weights on held-out sequences
  double max_grad_norm = 0.0;   // largest finite gradient norm seen (before clipping)
  double min_grad_norm = std::numeric_limits<double>::infinity();  // smallest positive finite one
  double min_loss = std::numeric_limits<double>::infinity();       // smallest and largest finite
  double max_loss = 0.0;                                           // training losses (the plot's range)
  int nonfinite_steps = 0;      // steps whose loss or gradient norm was NaN or infinite
  int first_nonfinite = 0;      // the first such step, 0 if none
  int clipped_steps = 0;
  int steps = 0;
};

// Outcome labels, relative to the baseline loss (predicting the mean target).
enum class outcome { diverged, stalled, partial, converged };

outcome classify(const run_summary& s, double baseline) {
  if (s.nonfinite_steps > 0 || !std::isfinite(s.final_loss) || s.final_loss > 2.0 * baseline) return outcome::diverged;
  if (s.final_loss >= 0.9 * baseline) return outcome::stalled;  // no better than predicting the mean
  if (s.final_loss < 0.5 * baseline) return outcome::converged;
  return outcome::partial;
}

const char* to_string(outcome o) {
  switch (o) {
    case outcome::diverged: return "diverged";
    case outcome::stalled: return "stalled";
    case outcome::partial: return "partial";
    case outcome::converged: return "converged";
  }
  return "?";
}

// CSV numbers: "nan" and "inf" spelled the same on every platform.
std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

run_summary train(const method& m, const rnn& init, const sequences& heldout, const config& cfg, std::ofstream& csv,
                  bool quiet) {
  rnn params = init;
  rnn grad = rnn::zeros(cfg.hidden);
  rnn velocity = rnn::zeros(cfg.hidden);
  random_source data(cfg.seed + 1);  // the same data stream for every method
  workspace ws;
  const clip_step clip = m.make();

  run_summary s;
  s.name = m.name;
  s.steps = cfg.steps;
  const int tail = std::max(1, cfg.steps / 10);
  const int report_every = std::max(1, cfg.steps / 10);
  double tail_sum = 0.0;
  double window_sum = 0.0, window_max_norm = 0.0;  // max over the finite norms
  int window_clipped = 0, window_nonfinite = 0;

  if (!quiet) std::printf("\n%s (%s)\n", m.name.c_str(), m.description.c_str());
  for (int step = 1; step <= cfg.steps; ++step) {
    const sequences x = make_batch(data, cfg.seq_len, cfg.batch);
    const double loss = loss_and_grad(params, x, cfg.delay, &grad, ws);
    const gradclip::clip_result r = clip(grad, params);

    // SGD with momentum and weight decay on the (possibly clipped) gradient. As in
    // torch.optim.SGD the decay term is added after clipping, so the clippers see the data
    // gradient alone. The learning rate follows a cosine from cfg.lr down to 0, so the last
    // steps, which the summary averages, see a settled model.
    const double lr = 0.5 * cfg.lr * (1.0 + std::cos(kPi * (step - 1) / cfg.steps));
    auto update = [&](auto& p, auto& v, const auto& g) {
      v = cfg.momentum * v + g + cfg.weight_decay * p;
      p -= lr * v;
    };
    update(params.W, velocity.W, grad.W);
    update(params.U, velocity.U, grad.U);
    update(params.b, velocity.b, grad.b);
    update(params.V, velocity.V, grad.V);
    update(params.c, velocity.c, grad.c);

    const bool finite = std::isfinite(loss) && std::isfinite(r.total_norm);
    if (!finite && s.nonfinite_steps++ == 0) s.first_nonfinite = step;
    if (std::isfinite(r.total_norm)) s.max_grad_norm = std::max(s.max_grad_norm, r.total_norm);
    if (std::isfinite(r.total_norm) && r.total_norm > 0.0) s.min_grad_norm = std::min(s.min_grad_norm, r.total_norm);
    if (std::isfinite(loss)) {
      s.min_loss = std::min(s.min_loss, loss);
      s.max_loss = std::max(s.max_loss, loss);
    }
    s.clipped_steps += r.clipped ? 1 : 0;
    if (step > cfg.steps - tail) tail_sum += loss;

    csv << step << ',' << m.name << ',' << csv_number(loss) << ',' << csv_number(r.total_norm) << ','
        << (r.clipped ? 1 : 0) << '\n';

    window_sum += loss;
    if (std::isfinite(r.total_norm)) window_max_norm = std::max(window_max_norm, r.total_norm);
    window_clipped += r.clipped ? 1 : 0;
    window_nonfinite += finite ? 0 : 1;
    if (step % report_every == 0) {
      if (!quiet) {
        std::printf("  step %5d  loss %-10.4g  max grad norm %-10.3g  clipped %3.0f%%", step, window_sum / report_every,
                    window_max_norm, 100.0 * window_clipped / report_every);
        if (window_nonfinite > 0) std::printf("  non-finite %d", window_nonfinite);
        std::printf("\n");
      }
      window_sum = window_max_norm = 0.0;
      window_clipped = window_nonfinite = 0;
    }
  }
  s.final_loss = tail_sum / tail;
  s.heldout_loss = loss_and_grad(params, heldout, cfg.delay, nullptr, ws);
  return s;
}

// ------------------------------------------------------------------------------------------------
// Finite-difference check of the BPTT gradient on a small network with the same large gain.
// ------------------------------------------------------------------------------------------------
bool gradcheck(const config& base) {
  config cfg = base;
  cfg.hidden = 6;
  cfg.seq_len = 16;
  cfg.batch = 3;
  random_source rng(cfg.seed + 3);
  rnn p = init_rnn(rng, cfg);
  const sequences x = make_batch(rng, cfg.seq_len, cfg.batch);
  workspace ws;
  rnn g;
  loss_and_grad(p, x, cfg.delay, &g, ws);

  std::printf("gradient check: H = %d, T = %d, B = %d, gain %.2f, central differences\n", cfg.hidden, cfg.seq_len,
              cfg.batch, cfg.gain);
  constexpr double h = 1e-6;
  constexpr double tolerance = 1e-6;
  bool ok = true;
  auto check = [&](const char* name, auto& param, const auto& analytic) {
    double worst = 0.0;
    for (Eigen::Index i = 0; i < param.size(); ++i) {
      const double saved = param.data()[i];
      param.data()[i] = saved + h;
      const double up = loss_and_grad(p, x, cfg.delay, nullptr, ws);
      param.data()[i] = saved - h;
      const double down = loss_and_grad(p, x, cfg.delay, nullptr, ws);
      param.data()[i] = saved;
      const double numeric = (up - down) / (2.0 * h);
      const double a = analytic.data()[i];
      // Relative error, with an absolute floor for entries whose gradient is ~0.
      worst = std::max(worst, std::abs(a - numeric) / std::max(1e-6, std::abs(a) + std::abs(numeric)));
    }
    const bool pass = worst < tolerance;
    ok = ok && pass;
    std::printf("  %-2s %3td entries  max relative error %.2e  %s\n", name, static_cast<std::ptrdiff_t>(param.size()),
                worst, pass ? "ok" : "FAIL");
  };
  check("W", p.W, g.W);
  check("U", p.U, g.U);
  check("b", p.b, g.b);
  check("V", p.V, g.V);
  check("c", p.c, g.c);
  std::printf("gradient check %s\n", ok ? "passed" : "FAILED");
  return ok;
}

// ------------------------------------------------------------------------------------------------
// The picture: a gnuplot script, written beside the CSV, that draws the loss and the gradient norm
// of every run per step on log scales (steps too: the unclipped run explodes in its first steps)
// into an SVG. The demo runs gnuplot on it when gnuplot is
// installed and keeps the script, so the plot can be redrawn or restyled (`gnuplot <script>`).
// File names reach gnuplot only as gnuplot strings inside the script, and the shell only as one
// quoted argument (the script's name), so no character of a path is ever interpreted.
// ------------------------------------------------------------------------------------------------
struct plot_run {
  std::string name;   // the CSV's `run` column
  std::string label;  // the key: name and outcome
};

// A log axis from lo to hi (powers of ten); lo = hi = 0 leaves it to gnuplot.
struct plot_axis {
  double lo = 0.0;
  double hi = 0.0;
};

// From the smallest value of any run to 100 times the largest of the runs that did not diverge:
// a diverged run's 1e300 would otherwise squash every other line into the bottom row, so it leaves
// the plot at the top instead.
plot_axis log_axis(double smallest, double largest_kept) {
  if (!(smallest > 0.0) || !std::isfinite(smallest) || !(largest_kept > 0.0) || !std::isfinite(largest_kept)) {
    return {};
  }
  return {std::pow(10.0, std::floor(std::log10(smallest))),
          std::pow(10.0, std::ceil(std::log10(100.0 * largest_kept)))};
}

std::string yrange(const plot_axis& a) {
  if (a.lo == 0.0 && a.hi == 0.0) return "set autoscale y\n";
  return "set yrange [" + csv_number(a.lo) + ":" + csv_number(a.hi) + "]\n";
}

// A gnuplot single-quoted string: nothing in it is special but the quote, which is doubled.
std::string gnuplot_string(const std::string& s) {
  std::string out = "'";
  for (const char c : s) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

// One argument for the shell of std::system, taken literally.
std::string shell_argument(const std::string& s) {
#ifdef _WIN32
  return '"' + s + '"';  // cmd.exe; names with " % ! ^ are refused before we get here
#else
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
#endif
}

bool usable_in_script(const std::string& path) {
  for (const char c : path) {
    if (static_cast<unsigned char>(c) < 0x20) return false;  // a newline would end the gnuplot line
#ifdef _WIN32
    if (c == '"' || c == '%' || c == '!' || c == '^') return false;
#endif
  }
  return true;
}

void write_plot_script(std::ostream& gp, const std::string& csv, const std::string& svg,
                       const std::vector<plot_run>& runs, const config& cfg, double baseline,
                       const plot_axis& loss_axis, const plot_axis& norm_axis) {
  // One colour per run, the same in both panels: the unclipped run red, global-norm clipping blue.
  static const char* const colors[] = {"#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b",
                                       "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  constexpr std::size_t ncolors = sizeof colors / sizeof colors[0];
  // The reference line first (drawn under the runs), then the runs last to first, so that the
  // first rows of the table (no clipping, value, global norm) lie on top; `set key invert` lists
  // them in the table's order. Text is `noenhanced`: run names have underscores.
  auto series = [&](int column, const std::string& reference, const std::string& reference_title, bool titled) {
    std::string clauses = "plot " + reference + " with lines dt 2 lw 1.2 lc rgb '#444444' title " +
                          gnuplot_string(reference_title) + " noenhanced";
    for (std::size_t k = runs.size(); k-- > 0;) {
      clauses += ", \\\n     data using 1:(strcol(2) eq " + gnuplot_string(runs[k].name) + " ? $" +
                 std::to_string(column) + " : NaN) with lines lw 1.4 lc rgb '" + colors[k % ncolors] + "' " +
                 (titled ? "title " + gnuplot_string(runs[k].label) + " noenhanced" : std::string("notitle"));
    }
    return clauses + "\n";
  };
  const std::string title = "exploding_rnn: a vanilla RNN trained by SGD with backpropagation through " +
                            std::to_string(cfg.seq_len) + " steps, once per clipping method (seed " +
                            std::to_string(cfg.seed) + ")";
  gp << "# exploding_rnn: training loss and gradient norm per step of every run, log scales.\n"
        "# Written by the demo beside its CSV; `gnuplot <this file>` draws the plot again.\n"
        "set terminal svg size 1040,720 enhanced font 'Helvetica,13' background rgb 'white'\n"
        "set output " << gnuplot_string(svg) << "\n"
        "data = " << gnuplot_string(csv) << "\n"
        "set datafile separator ','\n"
        "set logscale xy\n"
        "set xrange [1:" << cfg.steps << "]\n"
        "set format y '10^{%L}'\n"
        "set grid xtics ytics lc rgb '#dddddd'\n"
        "set lmargin at screen 0.09\n"
        "set rmargin at screen 0.71\n"
        "set multiplot title " << gnuplot_string(title) << " noenhanced\n"
        "set tmargin at screen 0.92\n"
        "set bmargin at screen 0.54\n"
        "set key at screen 0.73,0.92 left top Left reverse invert samplen 2 spacing 1.3\n"
        "set format x ''\n"
        "set ylabel 'training loss (batch MSE)'\n"
     << yrange(loss_axis) << "baseline = " << csv_number(baseline) << "\n"
     << series(3, "baseline", "loss of predicting the mean", true)
     << "set tmargin at screen 0.48\n"
        "set bmargin at screen 0.10\n"
        "set key at screen 0.73,0.48\n"
        "set format x '%g'\n"
        "set xlabel 'SGD step'\n"
        "set ylabel 'gradient norm before clipping'\n"
     << yrange(norm_axis) << "max_norm = " << csv_number(cfg.max_norm) << "\n"
     << series(4, "max_norm", "max_norm of global_norm", false) << "unset multiplot\n";
}

// Writes the script and, when gnuplot is installed, the SVG. Never fails the run: a plot that
// cannot be drawn is reported, and the CSV is there either way.
void plot(const std::string& svg_path, const std::string& csv_path, const std::vector<run_summary>& results,
          const config& cfg, double baseline) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // Absolute names in the script, so that it redraws the plot from any directory.
  const fs::path svg = fs::absolute(svg_path, ec);
  const fs::path csv = ec ? fs::path() : fs::absolute(csv_path, ec);
  fs::path script = svg;
  script.replace_extension(".gp");
  if (script == svg || script == csv) script = svg.string() + ".gp";  // never overwrite the plot or the data
  if (ec || !usable_in_script(svg.string()) || !usable_in_script(csv.string())) {
    std::printf("plot: not drawn (cannot name %s or %s in a gnuplot script)\n", svg_path.c_str(), csv_path.c_str());
    return;
  }
  std::vector<plot_run> runs;
  double min_loss = std::numeric_limits<double>::infinity(), min_norm = min_loss;
  double max_loss_kept = 0.0, max_norm_kept = 0.0;
  for (const run_summary& s : results) {
    const outcome o = classify(s, baseline);
    std::string label = s.name + ": " + to_string(o);
    if (s.nonfinite_steps > 0) label += ", NaN from step " + std::to_string(s.first_nonfinite);
    runs.push_back({s.name, label});
    min_loss = std::min(min_loss, s.min_loss);
    min_norm = std::min(min_norm, s.min_grad_norm);
    if (o != outcome::diverged) {
      max_loss_kept = std::max(max_loss_kept, s.max_loss);
      max_norm_kept = std::max(max_norm_kept, s.max_grad_norm);
    }
  }
  {
    std::ofstream gp(script);
    write_plot_script(gp, csv.string(), svg.string(), runs, cfg, baseline, log_axis(min_loss, max_loss_kept),
                      log_axis(min_norm, max_norm_kept));
    gp.close();
    if (!gp) {
      std::printf("plot: not drawn (cannot write %s)\n", script.string().c_str());
      return;
    }
  }
#ifdef _WIN32
  const char* const probe = "gnuplot --version >NUL 2>&1";
#else
  const char* const probe = "gnuplot --version >/dev/null 2>&1";
#endif
  if (std::system(probe) != 0) {
    std::printf("plot: gnuplot not found, no plot drawn; install it (Debian: apt-get install gnuplot-nox) and run "
                "gnuplot %s\n", shell_argument(script.string()).c_str());
    return;
  }
  std::fflush(stdout);  // the child writes to the same stream
  const std::string command = "gnuplot " + shell_argument(script.string());
  if (std::system(command.c_str()) != 0) {
    std::printf("plot: gnuplot failed on %s; no plot drawn\n", script.string().c_str());
    return;
  }
  std::printf("plot: %s (gnuplot script %s)\n", svg.string().c_str(), script.string().c_str());
}

// ------------------------------------------------------------------------------------------------
// Command line
// ------------------------------------------------------------------------------------------------
struct options {
  config cfg;
  std::string csv_path = "exploding_rnn.csv";
  std::string plot_path;  // empty: the CSV's path with the extension .svg
  bool plot = true;
  bool quiet = false;
  bool check = false;
  bool gradcheck = false;
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: exploding_rnn [--steps N] [--csv PATH] [--plot PATH] [--no-plot] [--seed S] [--quiet]\n"
               "                     [--check] [--gradcheck]\n"
               "  --steps N     SGD steps per run (default 1500)\n"
               "  --csv PATH    per-step log: step,run,loss,grad_norm_before,clipped (default exploding_rnn.csv)\n"
               "  --plot PATH   SVG of loss and gradient norm per step, drawn by gnuplot from a script written\n"
               "                beside it (PATH with the extension .gp); default: the CSV's path with .svg\n"
               "  --no-plot     neither the script nor the plot\n"
               "  --seed S      seed of the initial weights and the data (default 42)\n"
               "  --quiet       print only the summary\n"
               "  --check       exit 1 unless no clipping fails and global-norm clipping converges\n"
               "  --gradcheck   compare the BPTT gradient with finite differences and exit\n");
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--steps") {
      const std::string v = value();
      std::size_t used = 0;
      const long n = std::stol(v, &used);
      if (used != v.size() || n < 1 || n > 10'000'000) throw std::invalid_argument("bad --steps: " + v);
      o.cfg.steps = static_cast<int>(n);
    } else if (arg == "--seed") {
      const std::string v = value();
      std::size_t used = 0;
      o.cfg.seed = std::stoull(v, &used);
      if (used != v.size()) throw std::invalid_argument("bad --seed: " + v);
    } else if (arg == "--csv") {
      o.csv_path = value();
    } else if (arg == "--plot") {
      o.plot_path = value();
    } else if (arg == "--no-plot") {
      o.plot = false;
    } else if (arg == "--quiet") {
      o.quiet = true;
    } else if (arg == "--check") {
      o.check = true;
    } else if (arg == "--gradcheck") {
      o.gradcheck = true;
    } else if (arg == "--help" || arg == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown option " + arg);
    }
  }
  return o;
}

int run(const options& opt) {
  const config& cfg = opt.cfg;
  if (opt.gradcheck) return gradcheck(cfg) ? 0 : 1;

  random_source init_rng(cfg.seed);
  const rnn init = init_rnn(init_rng, cfg);
  random_source heldout_rng(cfg.seed + 2);
  const sequences heldout = make_batch(heldout_rng, cfg.seq_len, 1024);

  // Baseline: the best constant prediction, the mean target, scores the targets' variance.
  const Eigen::ArrayXXd targets = heldout.bottomRows(cfg.seq_len - cfg.delay).array();
  const double baseline = (targets - targets.mean()).square().mean();

  std::ofstream csv(opt.csv_path);
  if (!csv) throw std::runtime_error("cannot write " + opt.csv_path);
  csv << "step,run,loss,grad_norm_before,clipped\n";

  std::printf("delayed recall: T = %d, delay %d; RNN H = %d, spectral radius of W %.2f; "
              "SGD lr %g (cosine), momentum %g, weight decay %g, batch %d, %d steps\n",
              cfg.seq_len, cfg.delay, cfg.hidden, spectral_radius(init.W), cfg.lr, cfg.momentum, cfg.weight_decay,
              cfg.batch, cfg.steps);

  std::vector<run_summary> results;
  for (const method& m : methods(cfg)) results.push_back(train(m, init, heldout, cfg, csv, opt.quiet));
  csv.close();
  if (!csv) throw std::runtime_error("error writing " + opt.csv_path);

  const int tail = std::max(1, cfg.steps / 10);
  std::printf("\nbaseline (predict the mean target): loss %.4f.  final loss: mean training loss of the last %d steps\n",
              baseline, tail);
  std::printf("%-12s %11s %9s %11s %17s %14s %8s  %s\n", "run", "final loss", "/ base", "held-out",
              "non-finite steps", "max grad norm", "clipped", "outcome");
  for (const run_summary& s : results) {
    char nonfinite[32];
    if (s.nonfinite_steps > 0) {
      std::snprintf(nonfinite, sizeof nonfinite, "%d (from %d)", s.nonfinite_steps, s.first_nonfinite);
    } else {
      std::snprintf(nonfinite, sizeof nonfinite, "0");
    }
    std::printf("%-12s %11.4g %9.3g %11.4g %17s %14.3g %7.1f%%  %s\n", s.name.c_str(), s.final_loss,
                s.final_loss / baseline, s.heldout_loss, nonfinite, s.max_grad_norm, 100.0 * s.clipped_steps / s.steps,
                to_string(classify(s, baseline)));
  }
  std::printf("per-step log: %s\n", opt.csv_path.c_str());
  if (opt.plot) {
    std::string svg = opt.plot_path;
    if (svg.empty()) svg = std::filesystem::path(opt.csv_path).replace_extension(".svg").string();
    plot(svg, opt.csv_path, results, cfg, baseline);
  }

  if (!opt.check) return 0;
  auto find = [&](const std::string& name) -> const run_summary& {
    for (const run_summary& s : results) {
      if (s.name == name) return s;
    }
    throw std::logic_error("no run named " + name);
  };
  const outcome none = classify(find("none"), baseline);
  const outcome norm = classify(find("global_norm"), baseline);
  const bool none_failed = none == outcome::diverged || none == outcome::stalled;
  const bool norm_converged = norm == outcome::converged;
  std::printf("check: no clipping %s (%s), global-norm clipping %s (%s)\n", to_string(none),
              none_failed ? "expected" : "UNEXPECTED", to_string(norm), norm_converged ? "expected" : "UNEXPECTED");
  return none_failed && norm_converged ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "exploding_rnn: %s\n", e.what());
    usage(stderr);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exploding_rnn: %s\n", e.what());
    return 1;
  }
}

// Tuning note (seeds 1-80 each). Gradient norm at initialisation, T = 50: ~3 for gains up to
// 1.5, ~10 at 2, 40-270 at 2.2, 400-4000 at 2.5. The larger the gain, the harder a clipped run
// finds its way out of the chaotic regime: at 2.5 one seed in seven stayed there. Clipped SGD
// mostly takes steps of lr * max_norm while the unclipped run takes lr * |g|, so a high lr with a
// low max_norm separates the two best: with lr 0.05 / max_norm 1 some unclipped runs survived
// and some clipped ones stalled; with lr 0.2 / max_norm 0.25 no unclipped run got below
// 0.98 x baseline (most overflow to NaN), but 6 clipped runs in 80 still ended at 0.5-0.8 x
// baseline, bouncing between cliffs to the end. Weight decay 1e-3 fixed that: all 80 clipped
// runs ended at 0.0009-0.0014 x baseline and all 80 unclipped runs still failed (3e-4 gave
// 0.0006-0.044). The cosine decay of lr matters as well: with a constant lr the clipped runs
// kept bouncing off the cliffs to the end. clip_by_value is sensitive to its threshold here
// (without weight decay c = 0.1 mostly stalled, c = 0.03 mostly converged).
