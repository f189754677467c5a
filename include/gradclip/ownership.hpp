// gradclip/ownership.hpp: the report of an ownership audit of a sharded norm (which
// buffers count on which rank), shared by gradclip::mpi::audit_ownership and
// gradclip::torch::audit_ownership (c10d). Those gather every rank's buffers'
// (id, counted flag, norm); this header turns the gathered records into the report.
#ifndef GRADCLIP_OWNERSHIP_HPP
#define GRADCLIP_OWNERSHIP_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "detail/float_bits.hpp"
#include "detail/kernels/kernels.hpp"
#include "detail/validate.hpp"

namespace gradclip {

// What an ownership audit found. Ids name what a buffer holds: the same id on two
// ranks (or twice on one) means copies of the same data.
struct ownership_report {
  static constexpr std::uint64_t none = std::numeric_limits<std::uint64_t>::max();

  double counted_norm = 0.0;       // the norm the counted masks give: the collective call's bits
  double deduplicated_norm = 0.0;  // each id once (its first holder's copy), from the buffers' norms
  std::size_t buffers = 0;         // buffers over all ranks
  std::size_t distinct = 0;        // distinct ids
  std::uint64_t counted_twice = none;     // the smallest id counted by more than one holder
  int counted_twice_ranks[2] = {-1, -1};  //   two ranks that count it (the same rank when held twice there)
  std::uint64_t never_counted = none;     // the smallest id no holder counts
  int never_counted_rank = -1;            //   the lowest rank that holds it
  std::uint64_t copies_differ = none;     // the smallest id whose copies' norms differ: replicas out of sync

  // Every id counted exactly once and every id's copies alike.
  bool ok() const noexcept { return counted_twice == none && never_counted == none && copies_differ == none; }

  std::string summary() const {
    std::string s = ok() ? "ownership ok: " : "ownership NOT ok: ";
    s += std::to_string(distinct) + " pieces in " + std::to_string(buffers) + " buffers; counted norm " +
         detail::number_text(counted_norm) + ", norm without duplicates " + detail::number_text(deduplicated_norm);
    if (counted_twice != none) {
      s += "; piece " + std::to_string(counted_twice) + " counted twice (ranks " +
           std::to_string(counted_twice_ranks[0]) + " and " + std::to_string(counted_twice_ranks[1]) + ")";
    }
    if (never_counted != none) {
      s += "; piece " + std::to_string(never_counted) + " counted nowhere (held on rank " +
           std::to_string(never_counted_rank) + ")";
    }
    if (copies_differ != none) s += "; the copies of piece " + std::to_string(copies_differ) + " differ";
    return s;
  }
};

namespace detail {

// A buffer's partial from its norm n: n^p = n^p * 1 ({n, 1}), or {1, n} for L-inf
// and non-finite n (as the measure stage marks them).
inline kernels::norm_partial partial_of_norm(double n, const kernels::norm_spec& spec) noexcept {
  if (n == 0.0) return {};
  if (spec.kind == kernels::norm_kind::linf || !is_finite(n)) return {1.0, n};
  return {n, 1.0};
}

// The report from every rank's records, gathered in (rank, buffer) order: ids,
// counted flags, norms and the rank of each. The same on every rank that holds the
// same records. counted_norm is left to the caller (the collective's own result).
inline ownership_report ownership_from_records(const std::vector<std::uint64_t>& ids,
                                               const std::vector<unsigned char>& counted,
                                               const std::vector<double>& norms, const std::vector<int>& rank_of,
                                               const kernels::norm_spec& spec) {
  const auto alike = [](double a, double b) { return a == b || (is_nan(a) && is_nan(b)); };
  std::vector<std::size_t> order(ids.size());
  for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
  // (id, rank, index): the gathered order breaks ties.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ids[a] < ids[b]; });

  ownership_report report;
  kernels::norm_accumulator dedup(spec);
  report.buffers = ids.size();
  for (std::size_t k = 0; k < order.size();) {
    std::size_t end = k;
    while (end < order.size() && ids[order[end]] == ids[order[k]]) ++end;
    const std::uint64_t id = ids[order[k]];
    ++report.distinct;
    dedup.add(partial_of_norm(norms[order[k]], spec));
    int counting[2] = {-1, -1};
    int counters = 0;
    bool differ = false;
    for (std::size_t j = k; j < end; ++j) {
      const std::size_t r = order[j];
      if (counted[r] != 0) {
        if (counters < 2) counting[counters] = rank_of[r];
        ++counters;
      }
      differ = differ || !alike(norms[r], norms[order[k]]);
    }
    if (counters > 1 && report.counted_twice == ownership_report::none) {
      report.counted_twice = id;
      report.counted_twice_ranks[0] = counting[0];
      report.counted_twice_ranks[1] = counting[1];
    }
    if (counters == 0 && report.never_counted == ownership_report::none) {
      report.never_counted = id;
      report.never_counted_rank = rank_of[order[k]];
    }
    if (differ && report.copies_differ == ownership_report::none) report.copies_differ = id;
    k = end;
  }
  report.deduplicated_norm = dedup.total();
  return report;
}

}  // namespace detail
}  // namespace gradclip

#endif  // GRADCLIP_OWNERSHIP_HPP
