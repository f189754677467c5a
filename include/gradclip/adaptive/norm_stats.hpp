// gradclip: statistics of gradient norms, to choose or audit a threshold and to
// answer "how often does clipping fire, lately?".
//
//   gradclip::norm_stats stats;
//   stats.record(clip(grads));               // any clipper's result
//   stats.record(clip(grads), step_taken);   // false: the optimizer step was skipped
//   stats.report(std::cout);                 // every figure below and a suggested max_norm
//   stats.write_histogram_csv(file);         // or write_histogram_json
//
// What each figure covers:
// - count(), clipped_count(), clip_rate(), skipped_count(): every record.
// - recent_clip_rate(), recent_clipped_count(), recent_skipped_count(): the last
//   `window` records (recent_count() of them).
// - clip_rate_ema(): every record, weighted: the first one sets it to its flag (1
//   clipped, 0 not), each later one e <- alpha e + (1 - alpha) flag (pandas
//   ewm(alpha = 1 - ema_alpha, adjust = False)); 0 before the first record.
// - mean(), stddev() (population), min(), max(): every finite norm before clipping;
//   quantile() and suggest_max_norm(): the last `window` finite ones.
// - post_*(): the same for the norm after clipping, over the records that carry it:
//   a clip_result gives total_norm * scale when clipped and total_norm when not
//   (nothing was written). record(double, bool) carries none, nor do the per-unit
//   results (agc_result, unit_clip_result: their scale is the smallest of many) or
//   adagc_result past its warm-up (a scale per buffer; record its buffers instead).
// - histogram(): every norm before clipping, in tenths of a decade (norm_histogram).
// A skipped step is an ordinary observation (its norms enter every figure, as
// OLMo-core's spike rule keeps skipped steps' values) that is also counted as skipped.
//
// Observing changes nothing in the run. record() allocates only while a window
// fills, and if that allocation throws it records nothing.
//
// State (save/load): version 2 holds every figure, so a resumed run reports the same
// numbers. A version 1 record (gradclip 0.1: counts, moments, the window of norms)
// still loads: what it lacks starts empty at the resume (legacy_count() says how
// many records came before): the recent flags, the skipped count (v1 could record
// none), the post-clip figures and the histogram; the EMA starts at the overall clip
// rate, and ema_alpha is this object's.
#ifndef GRADCLIP_ADAPTIVE_NORM_STATS_HPP
#define GRADCLIP_ADAPTIVE_NORM_STATS_HPP

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <locale>
#include <numeric>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../clip_norm.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/p2_quantile.hpp"
#include "../detail/state_io.hpp"
#include "../detail/validate.hpp"

namespace gradclip {

struct norm_stats_options {
  std::size_t window = 1000;  // > 0: the recent records (clip rates) and finite norms (quantiles) looked at
  double ema_alpha = 0.99;    // in [0, 1): the past's weight in clip_rate_ema() (about 1 / (1 - alpha) records)
};

namespace detail {

// 10^(k / 10 - 8) for k = 0..160, each the double nearest to it (computed to 80
// digits; tests/test_norm_stats.cpp checks them in long double). A table, not
// std::pow, so that the bins are the same on every platform.
inline constexpr double log10_edges[161] = {
    1e-08, 1.2589254117941673e-08, 1.5848931924611136e-08, 1.9952623149688796e-08, 2.51188643150958e-08,
    3.162277660168379e-08, 3.981071705534972e-08, 5.011872336272723e-08, 6.309573444801932e-08, 7.943282347242815e-08,
    1e-07, 1.2589254117941672e-07, 1.5848931924611136e-07, 1.9952623149688795e-07, 2.51188643150958e-07,
    3.162277660168379e-07, 3.9810717055349724e-07, 5.011872336272723e-07, 6.309573444801933e-07, 7.943282347242815e-07,
    1e-06, 1.2589254117941672e-06, 1.5848931924611134e-06, 1.9952623149688796e-06, 2.51188643150958e-06,
    3.162277660168379e-06, 3.9810717055349725e-06, 5.0118723362727224e-06, 6.309573444801932e-06, 7.943282347242815e-06,
    1e-05, 1.2589254117941671e-05, 1.5848931924611134e-05, 1.9952623149688796e-05, 2.51188643150958e-05,
    3.1622776601683795e-05, 3.981071705534973e-05, 5.011872336272723e-05, 6.309573444801932e-05, 7.943282347242815e-05,
    0.0001, 0.00012589254117941672, 0.00015848931924611134, 0.00019952623149688796, 0.000251188643150958,
    0.00031622776601683794, 0.00039810717055349724, 0.0005011872336272723, 0.0006309573444801932, 0.0007943282347242815,
    0.001, 0.0012589254117941673, 0.0015848931924611134, 0.00199526231496888, 0.0025118864315095803,
    0.0031622776601683794, 0.0039810717055349725, 0.005011872336272723, 0.006309573444801933, 0.007943282347242816,
    0.01, 0.012589254117941671, 0.015848931924611134, 0.019952623149688795, 0.0251188643150958,
    0.03162277660168379, 0.03981071705534973, 0.05011872336272723, 0.06309573444801933, 0.07943282347242815,
    0.1, 0.12589254117941673, 0.15848931924611134, 0.19952623149688797, 0.251188643150958,
    0.31622776601683794, 0.39810717055349726, 0.5011872336272722, 0.6309573444801932, 0.7943282347242815,
    1.0, 1.2589254117941673, 1.5848931924611134, 1.9952623149688795, 2.51188643150958,
    3.1622776601683795, 3.9810717055349727, 5.011872336272723, 6.3095734448019325, 7.943282347242815,
    10.0, 12.589254117941673, 15.848931924611135, 19.952623149688797, 25.118864315095802,
    31.622776601683793, 39.81071705534973, 50.11872336272723, 63.09573444801932, 79.43282347242815,
    100.0, 125.89254117941672, 158.48931924611134, 199.52623149688796, 251.188643150958,
    316.22776601683796, 398.10717055349727, 501.1872336272723, 630.9573444801932, 794.3282347242815,
    1000.0, 1258.9254117941673, 1584.8931924611136, 1995.2623149688795, 2511.8864315095802,
    3162.2776601683795, 3981.0717055349724, 5011.872336272723, 6309.573444801932, 7943.282347242815,
    10000.0, 12589.254117941671, 15848.931924611135, 19952.623149688796, 25118.8643150958,
    31622.776601683792, 39810.71705534973, 50118.72336272723, 63095.73444801933, 79432.82347242815,
    100000.0, 125892.54117941672, 158489.31924611135, 199526.23149688795, 251188.643150958,
    316227.7660168379, 398107.1705534973, 501187.2336272723, 630957.3444801932, 794328.2347242815,
    1000000.0, 1258925.4117941672, 1584893.1924611134, 1995262.3149688796, 2511886.43150958,
    3162277.6601683795, 3981071.7055349727, 5011872.336272723, 6309573.444801932, 7943282.347242815,
    10000000.0, 12589254.117941672, 15848931.924611134, 19952623.149688795, 25118864.3150958,
    31622776.60168379, 39810717.05534972, 50118723.362727225, 63095734.448019326, 79432823.47242814,
    100000000.0};

}  // namespace detail

// Counts of norms in bins of log10(norm), a tenth of a decade each, from 1e-8 to 1e8.
struct norm_histogram {
  static constexpr int bins_per_decade = 10;
  static constexpr std::size_t bins = 160;
  std::uint64_t zero = 0;                    // norm <= 0 (a negative value passed in lands here)
  std::uint64_t underflow = 0;               // 0 < norm < 1e-8, subnormal ones included
  std::array<std::uint64_t, bins> counts{};  // counts[k]: edge(k) <= norm < edge(k + 1)
  std::uint64_t overflow = 0;                // 1e8 <= norm < inf
  std::uint64_t nonfinite = 0;               // NaN or inf

  // 10^(k / 10 - 8) rounded to the nearest double, k in [0, 160] (exact powers of
  // ten are their literals: edge(80) == 1.0); NaN for other k.
  static double edge(std::size_t k) noexcept {
    return k <= bins ? detail::log10_edges[k] : std::numeric_limits<double>::quiet_NaN();
  }
  // The bin of a norm in [1e-8, 1e8), else bins.
  static std::size_t bin_of(double norm) noexcept {
    if (!(norm >= edge(0) && norm < edge(bins))) return bins;
    return static_cast<std::size_t>(std::upper_bound(detail::log10_edges, detail::log10_edges + bins + 1, norm) -
                                    detail::log10_edges) - 1;
  }
  std::uint64_t total() const noexcept {
    return std::accumulate(counts.begin(), counts.end(), zero + underflow + overflow + nonfinite);
  }
  void add(double norm) noexcept { ++at(slot_of(norm)); }

  // Slots in increasing order of norm: 0 zero, 1 underflow, 2 + k bin k, bins + 2
  // overflow, bins + 3 non-finite.
  static constexpr std::size_t slots = bins + 4;
  static std::size_t slot_of(double norm) noexcept {
    if (!detail::is_finite(norm)) return bins + 3;
    if (norm <= 0.0) return 0;
    if (norm < edge(0)) return 1;
    if (norm >= edge(bins)) return bins + 2;
    return bin_of(norm) + 2;
  }
  std::uint64_t& at(std::size_t slot) noexcept {
    if (slot == 0) return zero;
    if (slot == 1) return underflow;
    if (slot == bins + 2) return overflow;
    if (slot == bins + 3) return nonfinite;
    return counts[slot - 2];
  }
  std::uint64_t at(std::size_t slot) const noexcept {
    if (slot == 0) return zero;
    if (slot == 1) return underflow;
    if (slot == bins + 2) return overflow;
    if (slot == bins + 3) return nonfinite;
    return counts[slot - 2];
  }
};

namespace detail {

// Result types that are summaries of many unit clips (agc_result, unit_clip_result),
// and adagc_result: matched by their members, so this header needs neither.
template <class R, class = void>
struct is_unit_summary : std::false_type {};
template <class R>
struct is_unit_summary<R, std::void_t<decltype(std::declval<const R&>().summary.total_norm),
                                      decltype(std::declval<const R&>().units)>> : std::true_type {};
template <class R, class = void>
struct is_buffer_results : std::false_type {};
template <class R>
struct is_buffer_results<R, std::void_t<decltype(std::declval<const R&>().buffers.front().scale),
                                        decltype(std::declval<const R&>().warmup)>> : std::true_type {};

// The shortest decimal text that reads back as x (classic locale, whatever the
// stream's or the C locale's), "nan", "inf" or "-inf".
inline std::string exact_text(double x) {
  if (is_nan(x)) return "nan";
  if (is_inf(x)) return x > 0 ? "inf" : "-inf";
  std::ostringstream out;
  out.imbue(std::locale::classic());
  for (int digits = 1;; ++digits) {
    out.str("");
    out.precision(digits);
    out << x;
    if (digits == 17) return out.str();  // always reads back
    std::istringstream in(out.str());
    in.imbue(std::locale::classic());
    double y = 0.0;
    if (in >> y && bits_of(y) == bits_of(x)) return out.str();
  }
}

// Room for one more element in a ring of `window`, so that the push after it does
// not allocate (grows geometrically up to the window, never past it).
template <class T>
void reserve_one(std::vector<T>& ring, std::size_t window) {
  if (ring.size() < window && ring.size() == ring.capacity()) {
    ring.reserve(std::min(window, std::max<std::size_t>(8, 2 * ring.capacity())));
  }
}

}  // namespace detail

class norm_stats {
 public:
  // window: how many recent records the window clip rates and recent finite norms
  // the quantiles look at (> 0). Throws std::invalid_argument for window 0 or
  // ema_alpha outside [0, 1).
  explicit norm_stats(std::size_t window = 1000) : norm_stats(norm_stats_options{window}) {}
  explicit norm_stats(const norm_stats_options& options) : window_(options.window), alpha_(options.ema_alpha) {
    if (window_ == 0) throw std::invalid_argument("gradclip::norm_stats: window must be > 0");
    if (!(alpha_ >= 0.0 && alpha_ < 1.0)) {
      throw std::invalid_argument("gradclip::norm_stats: ema_alpha must be in [0, 1), got " +
                                  detail::number_text(alpha_));
    }
  }

  // A norm before clipping and whether it was clipped; no post-clip norm.
  void record(double total_norm, bool clipped, bool step_taken = true) {
    observe(total_norm, clipped, step_taken, false, 0.0);
  }
  // Any clipper's result that converts to clip_result (clip_by_global_norm,
  // auto_clip, zclip, block_rms_result, one buffer of adagc_result): both norms.
  void record(const clip_result& r, bool step_taken = true) {
    observe(r.total_norm, r.clipped, step_taken, true, r.clipped ? r.total_norm * r.scale : r.total_norm);
  }
  // agc_result, unit_clip_result: the norm of all units before clipping, clipped
  // when any unit was; no post-clip norm.
  template <class R, std::enable_if_t<detail::is_unit_summary<R>::value, int> = 0>
  void record(const R& r, bool step_taken = true) {
    record(r.summary.total_norm, r.summary.clipped, step_taken);
  }
  // adagc_result: the group's norm, clipped when any buffer was; the post-clip norm
  // during the warm-up (one scale for the group).
  template <class R, std::enable_if_t<detail::is_buffer_results<R>::value, int> = 0>
  void record(const R& r, bool step_taken = true) {
    bool clipped = false;
    for (const auto& b : r.buffers) clipped = clipped || b.clipped;
    if (r.warmup) {
      observe(r.total_norm, clipped, step_taken, true, clipped ? r.total_norm * r.buffers.front().scale : r.total_norm);
    } else {
      record(r.total_norm, clipped, step_taken);
    }
  }

  // Every record.
  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t nonfinite_count() const noexcept { return pre_.nonfinite; }
  std::uint64_t clipped_count() const noexcept { return clipped_; }
  std::uint64_t skipped_count() const noexcept { return skipped_; }
  double clip_rate() const noexcept { return rate(clipped_, count_); }
  double clip_rate_ema() const noexcept { return ema_; }
  // The last window() records (fewer before it fills, or after resuming from a
  // version 1 record).
  std::uint64_t recent_count() const noexcept { return flags_.size(); }
  std::uint64_t recent_clipped_count() const noexcept { return recent_clipped_; }
  std::uint64_t recent_skipped_count() const noexcept { return recent_skipped_; }
  double recent_clip_rate() const noexcept { return rate(recent_clipped_, flags_.size()); }

  // Norms before clipping: over the finite ones, NaN before the first one.
  double mean() const noexcept { return pre_.mean_or_nan(); }
  double variance() const noexcept { return pre_.variance(); }
  double stddev() const noexcept { return std::sqrt(variance()); }
  double min() const noexcept { return pre_.min_or_nan(); }
  double max() const noexcept { return pre_.max_or_nan(); }
  // The q-quantile (q in [0, 1]) of the recent finite norms, interpolated linearly
  // as numpy's default; NaN when there are none. Throws std::invalid_argument for q
  // outside [0, 1].
  double quantile(double q) const { return pre_.quantile(q, "gradclip::norm_stats::quantile"); }
  // The max_norm AutoClip would use now with window() (auto_clip_options::window):
  // the percentile (in [0, 100]; 10, the paper's and auto_clip's default) of the
  // recent finite norms, bit for bit auto_clip::threshold(). NaN when there are
  // none. Throws std::invalid_argument for a percentile outside [0, 100].
  double suggest_max_norm(double percentile = 10.0) const {
    if (detail::is_nan(percentile) || percentile < 0.0 || percentile > 100.0) {
      throw std::invalid_argument("gradclip::norm_stats::suggest_max_norm: percentile must be in [0, 100]");
    }
    return quantile(percentile / 100.0);  // as auto_clip and numpy.percentile divide
  }

  // Norms after clipping, over the records that carried one (see the header).
  std::uint64_t post_count() const noexcept { return post_.finite + post_.nonfinite; }
  std::uint64_t post_nonfinite_count() const noexcept { return post_.nonfinite; }
  double post_mean() const noexcept { return post_.mean_or_nan(); }
  double post_variance() const noexcept { return post_.variance(); }
  double post_stddev() const noexcept { return std::sqrt(post_variance()); }
  double post_min() const noexcept { return post_.min_or_nan(); }
  double post_max() const noexcept { return post_.max_or_nan(); }
  double post_quantile(double q) const { return post_.quantile(q, "gradclip::norm_stats::post_quantile"); }

  // Every norm before clipping since the first record (or the resume from a version
  // 1 record): histogram().total() + legacy_count() == count().
  const norm_histogram& histogram() const noexcept { return histogram_; }
  std::uint64_t legacy_count() const noexcept { return legacy_; }

  std::size_t window() const noexcept { return window_; }
  double ema_alpha() const noexcept { return alpha_; }

  // The histogram's non-empty slots, in increasing order of norm, numbers as the
  // shortest text that reads back exactly (classic locale):
  //   bin,lower,upper,count
  //   zero,0,0,1                      (norm <= 0)
  //   underflow,0,1e-08,2             (0 < norm < 1e-8)
  //   80,1,1.2589254117941673,5       (bin k: lower <= norm < upper)
  //   overflow,1e+08,inf,1
  //   nonfinite,nan,nan,1
  void write_histogram_csv(std::ostream& out) const {
    std::string s = "bin,lower,upper,count\n";
    for_each_slot([&s](const std::string& name, double lower, double upper, std::uint64_t n) {
      s += name + ',' + detail::exact_text(lower) + ',' + detail::exact_text(upper) + ',' + std::to_string(n) + '\n';
    });
    out << s;
  }
  // The same as one JSON object and a newline:
  //   {"bins_per_decade":10,"lowest":1e-08,"highest":1e+08,"zero":1,"underflow":2,
  //    "overflow":1,"nonfinite":1,"bins":[{"bin":80,"lower":1,"upper":1.2589254117941673,"count":5}]}
  // (on one line; "bins" lists the non-empty ones).
  void write_histogram_json(std::ostream& out) const {
    const norm_histogram& h = histogram_;
    std::string s = "{\"bins_per_decade\":" + std::to_string(norm_histogram::bins_per_decade) +
                    ",\"lowest\":" + detail::exact_text(norm_histogram::edge(0)) +
                    ",\"highest\":" + detail::exact_text(norm_histogram::edge(norm_histogram::bins)) +
                    ",\"zero\":" + std::to_string(h.zero) + ",\"underflow\":" + std::to_string(h.underflow) +
                    ",\"overflow\":" + std::to_string(h.overflow) + ",\"nonfinite\":" + std::to_string(h.nonfinite) +
                    ",\"bins\":[";
    bool first = true;
    for (std::size_t k = 0; k < norm_histogram::bins; ++k) {
      if (h.counts[k] == 0) continue;
      s += std::string(first ? "" : ",") + "{\"bin\":" + std::to_string(k) +
           ",\"lower\":" + detail::exact_text(norm_histogram::edge(k)) +
           ",\"upper\":" + detail::exact_text(norm_histogram::edge(k + 1)) + ",\"count\":" + std::to_string(h.counts[k]) +
           '}';
      first = false;
    }
    out << s << "]}\n";
  }

  // A short summary for people (classic locale, 6 significant digits):
  //   norm_stats: 1000 records (non-finite norms: 3), window 1000
  //   clipped: 12.5% of all (125), 10.4% of the last 1000 (104), EMA 9.87% (alpha 0.99)
  //   skipped steps: 2 (1 of the last 1000)
  //   before clipping: mean 1.2 stddev 0.5 min 0.01 max 12 | last 997 finite: p10 0.5 p50 1 p90 2 p99 5
  //   after clipping (1000 records, 3 non-finite): mean ... | last 997 finite: ...
  //   suggested max_norm: 0.5 (10th percentile of the last 997 finite norms, as AutoClip)
  void report(std::ostream& out) const {
    std::ostringstream s;
    s.imbue(std::locale::classic());
    s.precision(6);
    s << "norm_stats: " << count_ << " records (non-finite norms: " << pre_.nonfinite << "), window " << window_
      << '\n';
    if (legacy_ != 0) {
      s << "resumed from a version 1 record after " << legacy_
        << " records: the recent, skipped, after-clipping and histogram figures start there\n";
    }
    s << "clipped: " << 100.0 * clip_rate() << "% of all (" << clipped_ << "), " << 100.0 * recent_clip_rate()
      << "% of the last " << flags_.size() << " (" << recent_clipped_ << "), EMA " << 100.0 * ema_ << "% (alpha "
      << alpha_ << ")\n";
    s << "skipped steps: " << skipped_ << " (" << recent_skipped_ << " of the last " << flags_.size() << ")\n";
    s << "before clipping: ";
    pre_.describe(s);
    s << "after clipping (" << post_count() << " records, " << post_.nonfinite << " non-finite): ";
    post_.describe(s);
    s << "suggested max_norm: " << suggest_max_norm() << " (10th percentile of the last " << pre_.recent.size()
      << " finite norms, as AutoClip)\n";
    out << s.str();
  }

  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    // Version 1's fields, in its order...
    w.put_u64(window_);
    w.put_u64(count_);
    w.put_u64(pre_.finite);
    w.put_u64(pre_.nonfinite);
    w.put_u64(clipped_);
    w.put_double(pre_.mean);
    w.put_double(pre_.m2);
    w.put_double(pre_.min);
    w.put_double(pre_.max);
    w.put_u64(pre_.next);
    w.put_doubles(pre_.recent);
    // ...then version 2's.
    w.put_double(alpha_);
    w.put_double(ema_);
    w.put_u64(skipped_);
    w.put_u64(legacy_);
    w.put_u64(flags_next_);
    w.put_u64(flags_.size());
    for (unsigned char f : flags_) {
      w.put_bool((f & clipped_flag) != 0);
      w.put_bool((f & skipped_flag) != 0);
    }
    post_.save(w);
    for (std::size_t i = 0; i < norm_histogram::slots; ++i) w.put_u64(histogram_.at(i));
    w.write(out);
  }

  // Replaces this object's state with a saved one (version 1 or 2; see the header);
  // on any error throws gradclip::state_error and leaves it unchanged.
  void load(std::istream& in) {
    detail::state_reader r(in, kind, 1, version);
    norm_stats s(1);
    s.window_ = static_cast<std::size_t>(r.get_u64());
    s.count_ = r.get_u64();
    s.pre_.finite = r.get_u64();
    s.pre_.nonfinite = r.get_u64();
    s.clipped_ = r.get_u64();
    s.pre_.mean = r.get_double();
    s.pre_.m2 = r.get_double();
    s.pre_.min = r.get_double();
    s.pre_.max = r.get_double();
    s.pre_.next = static_cast<std::size_t>(r.get_u64());
    s.pre_.recent = r.get_doubles();
    if (s.window_ == 0 || s.pre_.finite + s.pre_.nonfinite != s.count_ || s.clipped_ > s.count_ ||
        !s.pre_.consistent(s.window_)) {
      r.fail("inconsistent fields");
    }
    if (r.version() == 1) {
      s.alpha_ = alpha_;
      s.ema_ = s.clip_rate();
      s.legacy_ = s.count_;
    } else {
      s.alpha_ = r.get_double();
      s.ema_ = r.get_double();
      s.skipped_ = r.get_u64();
      s.legacy_ = r.get_u64();
      s.flags_next_ = static_cast<std::size_t>(r.get_u64());
      const std::uint64_t flags = r.get_u64();
      if (s.legacy_ > s.count_ || flags != std::min<std::uint64_t>(s.count_ - s.legacy_, s.window_)) {
        r.fail("inconsistent fields");
      }
      for (std::uint64_t i = 0; i < flags; ++i) {  // each flag is two bytes of the payload: bounded by its length
        const bool clipped = r.get_bool();
        const bool skipped = r.get_bool();
        s.flags_.push_back(static_cast<unsigned char>((clipped ? clipped_flag : 0) | (skipped ? skipped_flag : 0)));
        s.recent_clipped_ += clipped;
        s.recent_skipped_ += skipped;
      }
      s.post_.load(r);
      for (std::size_t i = 0; i < norm_histogram::slots; ++i) s.histogram_.at(i) = r.get_u64();
      if (!s.extension_consistent()) r.fail("inconsistent fields");
    }
    r.finish();
    *this = std::move(s);
  }

 private:
  // Running moments of the finite values of one norm, and a ring of the last
  // `window` of them.
  struct series {
    std::uint64_t finite = 0, nonfinite = 0;
    double mean = 0.0, m2 = 0.0;
    double min = std::numeric_limits<double>::infinity();
    double max = -std::numeric_limits<double>::infinity();
    std::vector<double> recent;  // ring buffer of the last window finite values
    std::size_t next = 0;

    void add(double x, std::size_t window) {  // after detail::reserve_one(recent, window): no allocation
      if (!detail::is_finite(x)) {
        ++nonfinite;
        return;
      }
      // Welford's update: stable for long runs.
      ++finite;
      const double delta = x - mean;
      mean += delta / static_cast<double>(finite);
      m2 += delta * (x - mean);
      min = std::min(min, x);
      max = std::max(max, x);
      if (recent.size() < window) {
        recent.push_back(x);
      } else {
        recent[next] = x;
      }
      next = (next + 1) % window;
    }

    double mean_or_nan() const noexcept { return finite ? mean : nan(); }
    double variance() const noexcept { return finite ? m2 / static_cast<double>(finite) : nan(); }
    double min_or_nan() const noexcept { return finite ? min : nan(); }
    double max_or_nan() const noexcept { return finite ? max : nan(); }
    double quantile(double q, const char* who) const {
      if (detail::is_nan(q) || q < 0.0 || q > 1.0) throw std::invalid_argument(std::string(who) + ": q must be in [0, 1]");
      if (recent.empty()) return nan();
      std::vector<double> sorted = recent;
      std::sort(sorted.begin(), sorted.end());
      return detail::linear_quantile(sorted.data(), sorted.size(), q);
    }

    void describe(std::ostream& s) const {
      s << "mean " << mean_or_nan() << " stddev " << std::sqrt(variance()) << " min " << min_or_nan() << " max "
        << max_or_nan() << " | last " << recent.size() << " finite:";
      for (int p : {10, 50, 90, 99}) s << " p" << p << ' ' << quantile(p / 100.0, "");
      s << '\n';
    }

    void save(detail::state_writer& w) const {
      w.put_u64(finite);
      w.put_u64(nonfinite);
      w.put_double(mean);
      w.put_double(m2);
      w.put_double(min);
      w.put_double(max);
      w.put_u64(next);
      w.put_doubles(recent);
    }
    void load(detail::state_reader& r) {
      finite = r.get_u64();
      nonfinite = r.get_u64();
      mean = r.get_double();
      m2 = r.get_double();
      min = r.get_double();
      max = r.get_double();
      next = static_cast<std::size_t>(r.get_u64());
      recent = r.get_doubles();
    }

    // What add() can reach: the ring holds the last min(finite, window) values;
    // nothing before the first finite value; after it a finite mean, min <= max, the
    // ring within [min, max]. (m2 may be inf: the spread of values above ~1e154
    // squares past DBL_MAX.)
    bool consistent(std::size_t window) const noexcept {
      if (recent.size() > window || next >= window || recent.size() != std::min<std::uint64_t>(finite, window) ||
          (recent.size() < window && next != recent.size()) || !(m2 >= 0.0) || finite + nonfinite < finite) {
        return false;
      }
      if (finite == 0) {
        return mean == 0.0 && m2 == 0.0 && min == std::numeric_limits<double>::infinity() &&
               max == -std::numeric_limits<double>::infinity();
      }
      if (!detail::is_finite(mean) || !detail::is_finite(min) || !detail::is_finite(max) || !(min <= max)) {
        return false;
      }
      return std::all_of(recent.begin(), recent.end(), [this](double x) { return x >= min && x <= max; });
    }
  };

  void observe(double pre, bool clipped, bool step_taken, bool has_post, double post) {
    // The only allocations first: a throw leaves everything as it was.
    detail::reserve_one(flags_, window_);
    if (detail::is_finite(pre)) detail::reserve_one(pre_.recent, window_);
    if (has_post && detail::is_finite(post)) detail::reserve_one(post_.recent, window_);

    ++count_;
    if (clipped) ++clipped_;
    if (!step_taken) ++skipped_;
    const double flag = clipped ? 1.0 : 0.0;
    ema_ = count_ == 1 ? flag : alpha_ * ema_ + (1.0 - alpha_) * flag;
    const unsigned char f = static_cast<unsigned char>((clipped ? clipped_flag : 0) | (step_taken ? 0 : skipped_flag));
    if (flags_.size() < window_) {
      flags_.push_back(f);
    } else {
      recent_clipped_ -= (flags_[flags_next_] & clipped_flag) != 0;
      recent_skipped_ -= (flags_[flags_next_] & skipped_flag) != 0;
      flags_[flags_next_] = f;
    }
    recent_clipped_ += clipped;
    recent_skipped_ += !step_taken;
    flags_next_ = (flags_next_ + 1) % window_;
    histogram_.add(pre);
    pre_.add(pre, window_);
    if (has_post) post_.add(post, window_);
  }

  // Version 2's fields against version 1's (already checked) and each other: what
  // record() can reach.
  bool extension_consistent() const noexcept {
    const std::uint64_t tracked = count_ - legacy_;  // legacy_ <= count_ checked
    if (!(alpha_ >= 0.0 && alpha_ < 1.0) || !(ema_ >= 0.0 && ema_ <= 1.0) ||
        (count_ == 0 && detail::bits_of(ema_) != 0) || skipped_ > tracked || flags_next_ >= window_ ||
        (flags_.size() < window_ && flags_next_ != flags_.size()) || recent_clipped_ > clipped_ ||
        recent_skipped_ > skipped_ || post_count() > tracked || !post_.consistent(window_)) {
      return false;
    }
    std::uint64_t total = 0;  // the histogram's, without wrapping
    for (std::size_t i = 0; i < norm_histogram::slots; ++i) {
      if (histogram_.at(i) > tracked - total) return false;
      total += histogram_.at(i);
    }
    if (total != tracked) return false;
    if (legacy_ != 0) return histogram_.nonfinite <= pre_.nonfinite && total - histogram_.nonfinite <= pre_.finite;
    // The histogram holds every norm: the non-finite ones, and the finite ones
    // from min's slot to max's, both non-empty.
    if (histogram_.nonfinite != pre_.nonfinite) return false;
    if (pre_.finite == 0) return true;
    const std::size_t lo = norm_histogram::slot_of(pre_.min), hi = norm_histogram::slot_of(pre_.max);
    if (histogram_.at(lo) == 0 || histogram_.at(hi) == 0) return false;
    for (std::size_t i = 0; i < norm_histogram::slots - 1; ++i) {
      if ((i < lo || i > hi) && histogram_.at(i) != 0) return false;
    }
    return true;
  }

  // f(name, lower, upper, count) for each non-empty slot of the histogram, in order.
  template <class F>
  void for_each_slot(F&& f) const {
    constexpr std::size_t bins = norm_histogram::bins;
    for (std::size_t i = 0; i < norm_histogram::slots; ++i) {
      const std::uint64_t n = histogram_.at(i);
      if (n == 0) continue;
      if (i == 0) {
        f("zero", 0.0, 0.0, n);
      } else if (i == 1) {
        f("underflow", 0.0, norm_histogram::edge(0), n);
      } else if (i == bins + 2) {
        f("overflow", norm_histogram::edge(bins), std::numeric_limits<double>::infinity(), n);
      } else if (i == bins + 3) {
        f("nonfinite", nan(), nan(), n);
      } else {
        f(std::to_string(i - 2), norm_histogram::edge(i - 2), norm_histogram::edge(i - 1), n);
      }
    }
  }

  static double rate(std::uint64_t n, std::uint64_t of) noexcept {
    return of ? static_cast<double>(n) / static_cast<double>(of) : 0.0;
  }
  static double nan() noexcept { return std::numeric_limits<double>::quiet_NaN(); }

  static constexpr const char* kind = "norm_stats";
  static constexpr std::uint32_t version = 2;
  static constexpr unsigned char clipped_flag = 1, skipped_flag = 2;

  std::size_t window_;
  double alpha_;
  std::uint64_t count_ = 0, clipped_ = 0, skipped_ = 0;
  std::uint64_t legacy_ = 0;  // records loaded from a version 1 record
  double ema_ = 0.0;
  series pre_, post_;
  std::vector<unsigned char> flags_;  // ring of the last window_ records' clipped_flag | skipped_flag
  std::size_t flags_next_ = 0;
  std::uint64_t recent_clipped_ = 0, recent_skipped_ = 0;  // in flags_
  norm_histogram histogram_;
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_NORM_STATS_HPP
