// Peak memory of reading one large NIfTI volume, against the size of what the read returns.
//
//   bench_nifti_memory --write FILE X Y Z DTYPE [SLOPE]   writes an X*Y*Z volume of DTYPE (uint8, int16,
//                                                          float32, ...) in LAS order (one flipped axis,
//                                                          so the read reorients), scaled by SLOPE if given
//   bench_nifti_memory FILE                                reads it (float32, reoriented) and prints the
//                                                          peak resident memory the read added
// Run the two in separate processes: the peak (getrusage's ru_maxrss) never goes down within one.
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "hdssl/io/nifti.hpp"

namespace {

double resident_mib() {  // current resident set, from /proc/self/statm (pages)
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}
double peak_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 7 && std::string(argv[1]) == "--write") {
      const int64_t X = std::atoll(argv[3]), Y = std::atoll(argv[4]), Z = std::atoll(argv[5]);
      hdssl::io::NiftiWriteOptions o;
      o.datatype = hdssl::io::datatype_from_name(argv[6]);
      if (argc >= 8) o.scl_slope = std::atof(argv[7]);
      // A ramp of small integers (exact in every type and after scaling).
      const torch::Tensor data = torch::arange(X * Y * Z, torch::kInt64).remainder(100).reshape({X, Y, Z}).to(torch::kFloat32) * o.scl_slope;
      Eigen::Matrix4d affine = Eigen::Matrix4d::Identity();
      affine(0, 0) = -1.0;  // LAS: reading reorients (flips x)
      hdssl::io::write_nifti(argv[2], data, affine, o);
      std::printf("wrote %s: %lldx%lldx%lld %s\n", argv[2], static_cast<long long>(X), static_cast<long long>(Y),
                  static_cast<long long>(Z), argv[6]);
      return 0;
    }
    if (argc != 2) {
      std::fprintf(stderr, "usage: %s --write FILE X Y Z DTYPE [SLOPE] | %s FILE\n", argv[0], argv[0]);
      return 2;
    }
    const hdssl::io::NiftiHeader h = hdssl::io::read_nifti_header(argv[1]);
    const double before = resident_mib();
    const hdssl::Volume v = hdssl::io::read_nifti(argv[1]);
    const double peak = peak_mib() - before;
    const double out = static_cast<double>(v.data.numel() * v.data.element_size()) / (1024.0 * 1024.0);
    const double file = static_cast<double>(h.volume_bytes) / (1024.0 * 1024.0);
    std::printf("read %s (%s, %.0f MiB of voxels) -> float32 %.0f MiB (%s): peak +%.0f MiB = %.2f x the result, "
                "%.2f x (result + file bytes)\n",
                argv[1], hdssl::io::datatype_name(h.datatype).c_str(), file, out, hdssl::axis_codes(v.affine).c_str(), peak,
                peak / out, peak / (out + file));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_nifti_memory: %s\n", e.what());
    return 1;
  }
}
