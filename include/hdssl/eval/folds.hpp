#pragma once
// Seeded K-fold cross-validation over a datalist's training list. Fold f tests on the f-th part and trains
// on the others; the datalist's own validation list (if any) validates every fold. The volumes are dealt
// into folds in an order drawn from the seed (Philox, Purpose::folds), so a given (list, K, seed) always
// gives the same folds, and each fold is also written as a datalist (DIR/splits/fold-<f>.json) that
// `--data` accepts to repeat that fold alone.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/rng.hpp"
#include "hdssl/data/datalist.hpp"
#include "hdssl/io/atomic_file.hpp"

namespace hdssl::eval {

/// The indices 0..n-1 dealt into k folds of near-equal size (sizes differ by at most one), each sorted.
inline std::vector<std::vector<size_t>> kfold_indices(size_t n, size_t k, uint64_t seed) {
  if (k < 2) throw ConfigError("folds: cross-validation needs at least 2 folds");
  if (k > n)
    throw ConfigError("folds: " + std::to_string(k) + " folds need at least as many training volumes, the list has " +
                      std::to_string(n));
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  Rng rng = Rng::for_stream(seed, 0, 0, Purpose::folds);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(static_cast<uint32_t>(i))]);  // Fisher-Yates
  std::vector<std::vector<size_t>> folds(k);
  for (size_t i = 0; i < n; ++i) folds[i % k].push_back(order[i]);
  for (auto& f : folds) std::sort(f.begin(), f.end());
  return folds;
}

/// Fold f of `list` as a datalist: test = fold f, training = the other folds, validation = list.validation.
inline data::Datalist fold_datalist(const data::Datalist& list, const std::vector<std::vector<size_t>>& folds, size_t f) {
  data::Datalist d;
  d.source = list.source;
  d.validation = list.validation;
  for (size_t g = 0; g < folds.size(); ++g)
    for (size_t i : folds[g]) (g == f ? d.test : d.training).push_back(list.training.at(i));
  return d;
}

/// Writes every fold's datalist into `dir` (fold-0.json, ...) and returns their paths.
inline std::vector<std::filesystem::path> write_fold_datalists(const data::Datalist& list, size_t k, uint64_t seed,
                                                               const std::filesystem::path& dir) {
  const auto folds = kfold_indices(list.training.size(), k, seed);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError("splits folder '" + dir.string() + "': cannot create (" + ec.message() + ")");
  std::vector<std::filesystem::path> out;
  for (size_t f = 0; f < k; ++f) {
    auto j = data::datalist_json(fold_datalist(list, folds, f));
    j["fold"] = f;
    j["folds"] = k;
    j["seed"] = seed;
    out.push_back(dir / ("fold-" + std::to_string(f) + ".json"));
    io::write_text_atomically(out.back(), j.dump(2) + "\n");
  }
  return out;
}

}  // namespace hdssl::eval
