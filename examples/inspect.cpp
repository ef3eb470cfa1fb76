// hdssl-inspect FILE... : header, geometry and intensity summary of NIfTI volumes.
//
// Each file is reported on its own; a file that cannot be read gives one line on stderr naming the
// file and the reason, the remaining files are still reported, and the exit status is 2.
#include "cli_common.hpp"

#include <hdssl/core/orientation.hpp>
#include <hdssl/io/nifti.hpp>
#include <hdssl/preprocess/intensity.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Stats {
  int64_t finite = 0;
  int64_t non_finite = 0;
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
  double mean = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::pair<double, double>> percentiles;  // (p, value)
};

/// Summary of the finite voxels; percentiles by numpy's default rule (preprocess/intensity.hpp).
Stats summarize(const torch::Tensor& data, std::vector<double> ps) {
  Stats s;
  const torch::Tensor flat = data.to(torch::kFloat32).reshape({-1}).contiguous();
  const float* p = flat.data_ptr<float>();
  const int64_t n = flat.numel();
  // One pass: count, copy out the finite values, min / max / sum.
  std::vector<float> v;
  v.reserve(static_cast<size_t>(n));
  double sum = 0.0, mn = std::numeric_limits<double>::infinity(), mx = -mn;
  for (int64_t i = 0; i < n; ++i) {
    const float x = p[i];
    if (!std::isfinite(x)) continue;
    v.push_back(x);
    sum += x;
    mn = std::min(mn, static_cast<double>(x));
    mx = std::max(mx, static_cast<double>(x));
  }
  s.finite = static_cast<int64_t>(v.size());
  s.non_finite = n - s.finite;
  std::sort(ps.begin(), ps.end());
  if (s.finite == 0) {
    for (double q : ps) s.percentiles.emplace_back(q, std::numeric_limits<double>::quiet_NaN());
    return s;
  }
  s.min = mn;
  s.max = mx;
  s.mean = sum / static_cast<double>(s.finite);
  const std::vector<double> values = hdssl::preprocess::percentiles_in_place(v, ps);
  for (size_t i = 0; i < ps.size(); ++i) s.percentiles.emplace_back(ps[i], values[i]);
  return s;
}

std::string fmt(double x) {
  if (std::isnan(x)) return "nan";
  std::ostringstream o;
  o << std::setprecision(7) << x;
  return o.str();
}

nlohmann::json json_number(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }

std::string percentile_label(double p) {
  std::ostringstream o;
  o << p;
  return o.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "hdssl-inspect: print the header, geometry and intensity summary of NIfTI files (.nii, .nii.gz; NIfTI-1 and -2).\n"
      "Per file: dims, datatype and scaling, voxel spacing, orientation codes (e.g. RAS) and where the affine\n"
      "comes from (sform, qform or pixdim), the 4x4 voxel-to-RAS affine in the file's own voxel order,\n"
      "intensity min/max/mean and percentiles of the finite voxels (after scl_slope/scl_inter), and the\n"
      "number of non-finite (NaN/Inf) voxels.\n"
      "A file that cannot be read (damaged, truncated, unsupported) is reported as one line on stderr naming\n"
      "the file and the reason; the other files are still reported.\n"
      "Exit status: 0 every file read, 2 at least one file refused, other values for command-line errors.",
      "hdssl-inspect"};
  std::vector<std::string> files;
  bool as_json = false;
  int64_t volume = 0;
  int threads = 0;
  std::vector<double> percentiles = {0.5, 1, 50, 99, 99.5};
  app.add_option("files", files, "NIfTI files to inspect")->required();
  app.add_flag("--json", as_json,
               "print one JSON array instead of text: one object per file with keys file, nifti_version, gzipped, dims, "
               "datatype, scl_slope, scl_inter, volume, num_volumes, spacing, orientation, affine_source, affine, "
               "min, max, mean, percentiles, non_finite; a refused file gives {file, error}");
  app.add_option("--volume", volume, "volume of a 4-D file to summarise (0-based, default 0)")->check(CLI::NonNegativeNumber);
  app.add_option("--percentiles", percentiles, "comma-separated percentiles in [0, 100] (default 0.5,1,50,99,99.5)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 100.0));
  hdssl::cli::add_threads_option(app, threads);

  return hdssl::cli::run(app, argc, argv, [&]() {
    hdssl::cli::apply_threads(threads);
    int status = hdssl::cli::kExitOk;
    nlohmann::json all = nlohmann::json::array();
    for (const std::string& file : files) {
      try {
        const hdssl::io::NiftiHeader h = hdssl::io::read_nifti_header(file);
        hdssl::io::NiftiReadOptions opt;
        opt.reorient = false;  // report the file as it is stored
        opt.volume = volume;
        const hdssl::Volume v = hdssl::io::read_nifti(file, opt);
        const Stats s = summarize(v.data, percentiles);
        const Eigen::Vector3d sp = v.spacing();
        const std::string codes = hdssl::axis_codes(v.affine);
        std::vector<int64_t> dims(h.dim.begin() + 1, h.dim.begin() + 1 + std::max<int64_t>(h.dim[0], 3));

        if (as_json) {
          nlohmann::json j;
          j["file"] = file;
          j["nifti_version"] = h.version;
          j["gzipped"] = h.gzipped;
          j["dims"] = dims;
          j["datatype"] = hdssl::io::datatype_name(h.datatype);
          j["scl_slope"] = h.scl_slope;
          j["scl_inter"] = h.scl_inter;
          j["volume"] = volume;
          j["num_volumes"] = h.nt;
          j["spacing"] = {sp[0], sp[1], sp[2]};
          j["orientation"] = codes;
          j["affine_source"] = h.affine_source;
          nlohmann::json aff = nlohmann::json::array();
          for (int r = 0; r < 4; ++r) aff.push_back({v.affine(r, 0), v.affine(r, 1), v.affine(r, 2), v.affine(r, 3)});
          j["affine"] = aff;
          j["min"] = json_number(s.min);
          j["max"] = json_number(s.max);
          j["mean"] = json_number(s.mean);
          nlohmann::json pj = nlohmann::json::object();
          for (const auto& [p, val] : s.percentiles) pj[percentile_label(p)] = json_number(val);
          j["percentiles"] = pj;
          j["non_finite"] = s.non_finite;
          all.push_back(j);
        } else {
          std::ostringstream o;
          o << file << "\n";
          o << "  format:      NIfTI-" << h.version << (h.gzipped ? " (gzip)" : "")
            << (h.byte_swapped ? ", opposite byte order" : "") << "\n";
          o << "  dims:        ";
          for (size_t i = 0; i < dims.size(); ++i) o << (i ? " x " : "") << dims[i];
          if (h.nt > 1) o << "  (summarising volume " << volume << " of 0.." << h.nt - 1 << ")";
          o << "\n";
          o << "  datatype:    " << hdssl::io::datatype_name(h.datatype);
          if (h.scaled) o << "  (scl_slope " << fmt(h.scl_slope) << ", scl_inter " << fmt(h.scl_inter) << ")";
          o << "\n";
          o << "  spacing:     " << fmt(sp[0]) << " x " << fmt(sp[1]) << " x " << fmt(sp[2]) << "\n";
          o << "  orientation: " << codes << "  (affine from " << h.affine_source << ")\n";
          o << "  affine:\n";
          for (int r = 0; r < 4; ++r) {
            o << "   ";
            for (int c = 0; c < 4; ++c) o << " " << std::setw(12) << fmt(v.affine(r, c));
            o << "\n";
          }
          o << "  intensity:   min " << fmt(s.min) << "  max " << fmt(s.max) << "  mean " << fmt(s.mean) << "\n";
          o << "  percentiles:";
          for (const auto& [p, val] : s.percentiles) o << "  p" << percentile_label(p) << " " << fmt(val);
          o << "\n";
          o << "  non-finite voxels: " << s.non_finite << "\n";
          std::cout << o.str() << std::flush;
        }
      } catch (const std::exception& e) {
        std::string msg = e.what();
        if (msg.find(file) == std::string::npos) msg = file + ": " + msg;
        hdssl::cli::print_error(app.get_name(), msg);
        if (as_json) all.push_back({{"file", file}, {"error", msg}});
        // Refused input is status 2; anything else is a failure of the tool itself (1), unless a
        // refused file already set 2.
        const bool refused = dynamic_cast<const hdssl::Error*>(&e) != nullptr;
        if (refused) status = hdssl::cli::kExitBadInput;
        else if (status == hdssl::cli::kExitOk) status = hdssl::cli::kExitFailure;
      }
    }
    if (as_json) std::cout << all.dump(2) << std::endl;
    return status;
  });
}
