#pragma once
// NIfTI-1 / NIfTI-2 reading and writing (.nii and .nii.gz) into hdssl::Volume.
//
// Why the bytes are read here and not by nifti_image_read: the NIfTI C library zero-fills truncated
// files, reads a file with a bad magic as ANALYZE, trusts offsets past the end of the file and hides
// corrupt gzip streams. So the header bytes are checked here first (size, magic, dims, datatype,
// offset, spacing, byte count against what the file can hold), the voxel bytes are read here with
// every short read and zlib error caught, and nifticlib is used for what it is good at: turning a
// validated header into qform/sform matrices (with byte swapping), and building headers to write.
//
// Axis convention (method.md section 1): the raw buffer viewed C-contiguously is (Z, Y, X); it is
// permuted once here into an (X, Y, Z) tensor.
#include <hdssl/core/error.hpp>
#include <hdssl/core/orientation.hpp>
#include <hdssl/core/volume.hpp>
#include <hdssl/io/atomic_file.hpp>

#include <nifti2_io.h>
#include <zlib.h>

#include <Eigen/Dense>
#include <torch/torch.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace hdssl::io {

/// How voxel values are returned by read_nifti.
enum class LoadType {
  Float32,  ///< float32, scl_slope/scl_inter applied (default)
  Native,   ///< the file's own type (uint16 -> int32, uint32 -> int64); float32 if scaling is present
  Int64,    ///< int64 for label maps; every (scaled) value must be a whole number
};

struct NiftiReadOptions {
  /// Reorient to the closest canonical (RAS) orientation; the file's own orientation is kept in
  /// meta.source_affine / meta.source_shape so outputs can be written back (to_source_orientation).
  bool reorient = true;
  int64_t volume = 0;                   ///< which volume of a 4-D file (0-based)
  LoadType load_as = LoadType::Float32;
  int64_t max_bytes = int64_t(1) << 36;  ///< refuse files whose voxel data would exceed this (64 GiB)
};

struct NiftiWriteOptions {
  int datatype = 16;          ///< NIfTI datatype code on disk (default float32; see datatype_from_name)
  int nifti_version = 1;      ///< 1 or 2 (NIfTI-2 keeps the affine in double precision)
  double scl_slope = 1.0;     ///< stored = (value - scl_inter) / scl_slope, rounded for integer types
  double scl_inter = 0.0;
  int compression_level = 6;  ///< zlib level for .nii.gz
  /// Reorient back to the voxel order of the source file (meta.source_affine) before writing.
  bool to_source_orientation = false;
  std::string description;    ///< descrip field (80 bytes max); empty: the volume's meta.description
};

/// Everything read_nifti learns from a header, after validation.
struct NiftiHeader {
  std::filesystem::path path;
  int version = 1;                         ///< 1 or 2
  bool gzipped = false;
  bool byte_swapped = false;               ///< file is in the other byte order than this machine
  int datatype = 0;                        ///< NIFTI_TYPE_* code
  int bytes_per_voxel = 0;
  std::array<int64_t, 8> dim{};            ///< dim[0] = number of dimensions
  std::array<double, 8> pixdim{};
  int64_t vox_offset = 0;
  double scl_slope = 1.0, scl_inter = 0.0; ///< effective scaling (1, 0 when the file has none)
  bool scaled = false;
  int qform_code = 0, sform_code = 0;
  int xyzt_units = 0, intent_code = 0;
  std::string description;
  Eigen::Matrix4d affine = Eigen::Matrix4d::Identity();  ///< in file voxel order, nibabel's rule
  std::string affine_source;               ///< "sform", "qform" or "pixdim"
  int64_t nx = 1, ny = 1, nz = 1, nt = 1;
  int64_t volume_bytes = 0;                ///< bytes of one 3-D volume
  int64_t data_bytes = 0;                  ///< bytes of all volumes
  int64_t file_size = 0;                   ///< bytes on disk (compressed size for .gz)
};

namespace detail {

/// Bytes of a NIfTI-1 (348) or NIfTI-2 (540) header, before the 4-byte extension flag.
inline int64_t header_bytes(int version) { return version == 1 ? 348 : 540; }

[[noreturn]] inline void fail(const std::filesystem::path& p, const std::string& why) {
  throw IoError(p.string() + ": " + why);
}

inline bool ends_with_ci(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) != suffix[i]) return false;
  return true;
}

/// Bytes per voxel of the datatypes hdssl reads; 0 for any other code.
inline int datatype_size(int dt) {
  switch (dt) {
    case DT_UINT8: case DT_INT8: return 1;
    case DT_INT16: case DT_UINT16: return 2;
    case DT_INT32: case DT_UINT32: case DT_FLOAT32: return 4;
    case DT_INT64: case DT_FLOAT64: return 8;
    default: return 0;
  }
}

inline bool datatype_is_integer(int dt) { return dt != DT_FLOAT32 && dt != DT_FLOAT64; }

/// Sequential reader over a plain or gzip file that turns every short read and zlib error into an
/// IoError naming the file.
class ByteReader {
 public:
  ByteReader(const std::filesystem::path& p, bool gz) : path_(p), gz_(gz) {
    if (gz_) {
      gz_file_ = gzopen(p.c_str(), "rb");
      if (!gz_file_) fail(p, std::string("cannot open: ") + std::strerror(errno));
      gzbuffer(gz_file_, 1 << 17);
    } else {
      file_ = std::fopen(p.c_str(), "rb");
      if (!file_) fail(p, std::string("cannot open: ") + std::strerror(errno));
    }
  }
  ByteReader(const ByteReader&) = delete;
  ByteReader& operator=(const ByteReader&) = delete;
  ~ByteReader() {
    if (gz_file_) gzclose(gz_file_);
    if (file_) std::fclose(file_);
  }

  /// Reads up to n bytes; returns fewer only at the end of the data. Corrupt streams throw.
  int64_t read(void* dst, int64_t n) {
    auto* out = static_cast<unsigned char*>(dst);
    int64_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(n - done, int64_t(1) << 30));
      int64_t got = 0;
      if (gz_) {
        const int r = gzread(gz_file_, out + done, chunk);
        check_gz();
        if (r < 0) fail(path_, "gzip stream cannot be read");
        got = r;
      } else {
        got = static_cast<int64_t>(std::fread(out + done, 1, chunk, file_));
        if (std::ferror(file_)) fail(path_, std::string("read error: ") + std::strerror(errno));
      }
      if (got == 0) break;
      done += got;
    }
    position_ += done;
    return done;
  }

  /// Skips n bytes; returns how many were there.
  int64_t skip(int64_t n) {
    if (!gz_) {
      // Plain files: the caller has already compared offsets with the file size.
      if (fseeko(file_, static_cast<off_t>(n), SEEK_CUR) != 0) fail(path_, std::string("seek failed: ") + std::strerror(errno));
      position_ += n;
      return n;
    }
    std::vector<unsigned char> sink(static_cast<size_t>(std::min<int64_t>(n, 1 << 20)));
    int64_t done = 0;
    while (done < n) {
      const int64_t got = read(sink.data(), std::min<int64_t>(n - done, static_cast<int64_t>(sink.size())));
      if (got == 0) break;
      done += got;
    }
    return done;
  }

  /// Reads to the end of the stream (so gzip's length and CRC trailer are verified) and returns
  /// the number of bytes that were left.
  int64_t drain() { return skip(std::numeric_limits<int64_t>::max() / 2); }

  int64_t position() const { return position_; }

 private:
  void check_gz() {
    int errnum = Z_OK;
    const char* msg = gzerror(gz_file_, &errnum);
    if (errnum == Z_OK) return;
    std::string reason = msg ? msg : "unknown zlib error";
    if (errnum == Z_BUF_ERROR) reason = "gzip stream is cut short (" + reason + ")";
    else if (errnum == Z_DATA_ERROR) reason = "gzip stream is corrupt (" + reason + ")";
    else if (errnum == Z_ERRNO) reason = std::string("read error: ") + std::strerror(errno);
    fail(path_, reason);
  }

  std::filesystem::path path_;
  bool gz_ = false;
  gzFile gz_file_ = nullptr;
  FILE* file_ = nullptr;
  int64_t position_ = 0;
};

inline uint32_t bswap32(uint32_t v) {
  return (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
}

inline std::string datatype_name(int dt);

/// Checks the parsed fields; the rules are ours (nibabel's where sound, docs/io.md), checked on the raw
/// fields before nifticlib builds the qform / sform matrices from a header repaired by those rules.
inline NiftiHeader interpret_header(const std::filesystem::path& p, const unsigned char* raw, int version, bool swapped) {
  NiftiHeader h;
  h.path = p;
  h.version = version;
  h.byte_swapped = swapped;
  nifti_set_debug_level(0);
  int64_t dim[8];
  double pixdim[8];
  double vox_offset = 0, slope = 0, inter = 0;
  double quatern[6];  // quatern_b, c, d, qoffset_x, y, z
  nifti_1_header n1;  // in this machine's byte order
  nifti_2_header n2;
  if (version == 1) {
    std::memcpy(&n1, raw, sizeof n1);
    if (swapped) swap_nifti_header(&n1, 1);
    for (int i = 0; i < 8; ++i) { dim[i] = n1.dim[i]; pixdim[i] = n1.pixdim[i]; }
    h.datatype = n1.datatype;
    vox_offset = n1.vox_offset;
    slope = n1.scl_slope; inter = n1.scl_inter;
    h.qform_code = n1.qform_code; h.sform_code = n1.sform_code;
    h.xyzt_units = n1.xyzt_units; h.intent_code = n1.intent_code;
    h.description.assign(n1.descrip, strnlen(n1.descrip, sizeof n1.descrip));
    const float q[6] = {n1.quatern_b, n1.quatern_c, n1.quatern_d, n1.qoffset_x, n1.qoffset_y, n1.qoffset_z};
    std::copy(q, q + 6, quatern);
  } else {
    std::memcpy(&n2, raw, sizeof n2);
    if (swapped) swap_nifti_header(&n2, 2);
    for (int i = 0; i < 8; ++i) { dim[i] = n2.dim[i]; pixdim[i] = n2.pixdim[i]; }
    h.datatype = n2.datatype;
    vox_offset = static_cast<double>(n2.vox_offset);
    slope = n2.scl_slope; inter = n2.scl_inter;
    h.qform_code = n2.qform_code; h.sform_code = n2.sform_code;
    h.xyzt_units = n2.xyzt_units; h.intent_code = n2.intent_code;
    h.description.assign(n2.descrip, strnlen(n2.descrip, sizeof n2.descrip));
    const double q[6] = {n2.quatern_b, n2.quatern_c, n2.quatern_d, n2.qoffset_x, n2.qoffset_y, n2.qoffset_z};
    std::copy(q, q + 6, quatern);
  }
  const int64_t header_size = header_bytes(version);

  // Dimensions.
  if (dim[0] < 1 || dim[0] > 7) fail(p, "dim[0] = " + std::to_string(dim[0]) + " is out of range 1..7 (damaged header)");
  for (int i = 1; i <= dim[0]; ++i)
    if (dim[i] < 1) fail(p, "dim[" + std::to_string(i) + "] = " + std::to_string(dim[i]) + " is not a positive size");
  for (int i = 5; i <= dim[0]; ++i)
    if (dim[i] > 1)
      fail(p, "has " + std::to_string(dim[0]) + "-D data (dim[" + std::to_string(i) + "] = " + std::to_string(dim[i]) +
                  "); only 3-D volumes and 4-D series are supported");
  for (int i = 0; i < 8; ++i) h.dim[static_cast<size_t>(i)] = (i > dim[0]) ? 1 : dim[i];
  h.dim[0] = dim[0];
  h.nx = h.dim[1]; h.ny = h.dim[2]; h.nz = h.dim[3]; h.nt = h.dim[4];

  // Datatype.
  h.bytes_per_voxel = datatype_size(h.datatype);
  if (h.bytes_per_voxel == 0) {
    const std::string name = datatype_name(h.datatype);
    if (name.rfind("code ", 0) == 0) fail(p, "unknown datatype " + std::to_string(h.datatype));
    fail(p, "datatype " + name + " is not supported (uint8, int8, int16, uint16, int32, uint32, int64, float32, float64 are)");
  }

  // Total size, with overflow checks before anything is allocated.
  int64_t voxels = 1;
  for (int64_t n : {h.nx, h.ny, h.nz}) {
    if (__builtin_mul_overflow(voxels, n, &voxels)) fail(p, "dimensions are absurd (voxel count overflows)");
  }
  if (__builtin_mul_overflow(voxels, static_cast<int64_t>(h.bytes_per_voxel), &h.volume_bytes) ||
      __builtin_mul_overflow(h.volume_bytes, h.nt, &h.data_bytes))
    fail(p, "dimensions are absurd (byte count overflows)");

  // Offset of the voxel data.
  if (!std::isfinite(vox_offset) || vox_offset != std::floor(vox_offset) || vox_offset > 9.0e15)
    fail(p, "vox_offset " + std::to_string(vox_offset) + " is not a valid byte offset");
  h.vox_offset = static_cast<int64_t>(vox_offset);
  // A single file holds the header, then the 4-byte extension flag, then (extensions and) the data.
  if (h.vox_offset < header_size + 4)
    fail(p, "vox_offset " + std::to_string(h.vox_offset) + " lies inside the " + std::to_string(header_size) +
                "-byte header or its 4-byte extension flag (a single-file NIfTI-" + std::to_string(version) +
                " needs at least " + std::to_string(header_size + 4) + ")");

  // Spacing of the spatial axes present in the file: the magnitude counts (nibabel), since NIfTI encodes
  // axis flips in the qform's qfac and the sform, never in pixdim; a negative spacing would otherwise
  // flip the axis in the pixdim affine and be replaced by 1.0 in nifticlib's qform.
  for (int i = 1; i <= std::min<int64_t>(3, dim[0]); ++i) {
    if (!std::isfinite(pixdim[i]) || pixdim[i] == 0.0)
      fail(p, "pixdim[" + std::to_string(i) + "] = " + std::to_string(pixdim[i]) + " is not a valid voxel spacing (must be finite and non-zero)");
    h.pixdim[static_cast<size_t>(i)] = std::abs(pixdim[i]);
  }
  for (int i = static_cast<int>(std::min<int64_t>(3, dim[0])) + 1; i <= 3; ++i) h.pixdim[static_cast<size_t>(i)] = 1.0;
  // qfac: -1 flips the qform's third axis; any other value means +1 (the standard, nibabel; nifticlib
  // would take any negative value for -1).
  h.pixdim[0] = pixdim[0] == -1.0 ? -1.0 : 1.0;
  for (int i = 4; i < 8; ++i) h.pixdim[static_cast<size_t>(i)] = pixdim[i];

  // Intensity scaling: a zero or non-finite slope means none (NIfTI standard, nibabel).
  if (std::isfinite(slope) && slope != 0.0) {
    if (!std::isfinite(inter)) fail(p, "scl_inter is not finite while scl_slope = " + std::to_string(slope));
    h.scl_slope = slope;
    h.scl_inter = inter;
    h.scaled = !(slope == 1.0 && inter == 0.0);
  }

  // Transform codes outside the standard's 0..5 mean nothing: ignored, as nibabel does.
  if (h.qform_code < 0 || h.qform_code > 5) h.qform_code = 0;
  if (h.sform_code < 0 || h.sform_code > 5) h.sform_code = 0;

  // Affine, nibabel's rule: sform if coded, else qform if coded, else pixdim (x flipped, centred).
  if (h.sform_code == 0 && h.qform_code > 0) {
    // nifticlib zeroes a non-finite quaternion or offset (inventing an orientation or an origin) and
    // renormalises an impossible one (b^2 + c^2 + d^2 > 1, which nibabel refuses): both are refused here.
    static const char* names[6] = {"quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"};
    for (int i = 0; i < 6; ++i)
      if (!std::isfinite(quatern[i]))
        fail(p, std::string("the qform's ") + names[i] + " is " + std::to_string(quatern[i]) + " (qform_code " +
                    std::to_string(h.qform_code) + ", no sform): no orientation can be built from it");
    const double w2 = 1.0 - (quatern[0] * quatern[0] + quatern[1] * quatern[1] + quatern[2] * quatern[2]);
    if (w2 < -3 * 1.1920929e-07)  // float32 rounding of a unit quaternion, nibabel's tolerance
      fail(p, "the qform's quaternion (b, c, d) = (" + std::to_string(quatern[0]) + ", " + std::to_string(quatern[1]) + ", " +
                  std::to_string(quatern[2]) + ") has b^2 + c^2 + d^2 > 1: not a rotation");
  }
  if (h.sform_code > 0 || h.qform_code > 0) {
    // nifticlib builds the matrices from the header as the rules above read it.
    nifti_image* nim = nullptr;
    if (version == 1) {
      for (int i = 0; i < 4; ++i) n1.pixdim[i] = static_cast<float>(h.pixdim[static_cast<size_t>(i)]);
      n1.qform_code = static_cast<short>(h.qform_code);
      n1.sform_code = static_cast<short>(h.sform_code);
      nim = nifti_convert_n1hdr2nim(n1, nullptr);
    } else {
      for (int i = 0; i < 4; ++i) n2.pixdim[i] = h.pixdim[static_cast<size_t>(i)];
      n2.qform_code = h.qform_code;
      n2.sform_code = h.sform_code;
      nim = nifti_convert_n2hdr2nim(n2, nullptr);
    }
    if (!nim) fail(p, "header rejected by nifticlib");
    const nifti_dmat44& m = h.sform_code > 0 ? nim->sto_xyz : nim->qto_xyz;
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) h.affine(r, c) = m.m[r][c];
    nifti_image_free(nim);
    h.affine.row(3) << 0, 0, 0, 1;
    h.affine_source = h.sform_code > 0 ? "sform" : "qform";
  } else {
    const double dx = h.pixdim[1], dy = h.pixdim[2], dz = h.pixdim[3];
    h.affine.setIdentity();
    h.affine(0, 0) = -dx; h.affine(1, 1) = dy; h.affine(2, 2) = dz;
    h.affine(0, 3) = (static_cast<double>(h.nx) - 1) / 2.0 * dx;
    h.affine(1, 3) = -(static_cast<double>(h.ny) - 1) / 2.0 * dy;
    h.affine(2, 3) = -(static_cast<double>(h.nz) - 1) / 2.0 * dz;
    h.affine_source = "pixdim";
  }
  if (!h.affine.allFinite()) fail(p, "the " + h.affine_source + " affine has non-finite entries");
  // Degenerate geometry, judged per voxel axis (the columns) so that scale alone never counts: a zero
  // or implausible voxel size, or axes that (nearly) coincide. Sizes that differ a lot are fine.
  const Eigen::Matrix3d m3 = h.affine.topLeftCorner<3, 3>();
  for (int c = 0; c < 3; ++c) {
    const double size = m3.col(c).norm();
    if (!(size >= 1e-6 && size <= 1e6))
      fail(p, "the " + h.affine_source + " affine is singular or damaged: voxel axis " + std::to_string(c) + " has a size of " +
                  std::to_string(size) + " mm (outside 1e-6 .. 1e6 mm)");
  }
  const double volume_ratio = std::abs(m3.determinant()) / (m3.col(0).norm() * m3.col(1).norm() * m3.col(2).norm());
  if (volume_ratio < 1e-6)
    fail(p, "the " + h.affine_source + " affine is singular: its voxel axes are (nearly) collinear (|det| / product of axis sizes = " +
                std::to_string(volume_ratio) + ")");
  return h;
}

/// Finite double values beyond float32's range would load as infinities, counted as "non-finite" voxels
/// the file never had: refused, naming the largest value, unless the caller keeps the file's type.
/// The largest finite |value| of d (0 for an empty tensor or one without finite values).
inline double largest_finite(const torch::Tensor& d) {
  if (d.numel() == 0) return 0.0;
  const auto finite = torch::isfinite(d);
  return torch::where(finite, d.abs(), torch::zeros_like(d)).max().item<double>();
}

/// Refuses values that a float32 result cannot hold, naming the largest.
inline void check_float32_range(const std::filesystem::path& p, double largest, const std::string& when) {
  if (largest > static_cast<double>(std::numeric_limits<float>::max())) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", largest);
    fail(p, std::string("voxel values") + (when.empty() ? "" : " " + when) + " reach " + buf +
                ", beyond float32's range (3.40282e+38): they cannot load as float32 (load with LoadType::Native to keep float64)");
  }
}

/// Reads and validates the header; leaves the reader positioned just after it.
inline NiftiHeader read_header(const std::filesystem::path& p, std::unique_ptr<ByteReader>& reader) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::status(p, ec);
  if (ec || !fs::exists(status)) fail(p, "no such file");
  if (!fs::is_regular_file(status)) fail(p, "not a regular file");
  const int64_t file_size = static_cast<int64_t>(fs::file_size(p, ec));
  if (ec) fail(p, "cannot get file size: " + ec.message());
  if (file_size == 0) fail(p, "empty file");

  const std::string name = p.filename().string();
  if (ends_with_ci(name, ".hdr") || ends_with_ci(name, ".img") || ends_with_ci(name, ".hdr.gz") || ends_with_ci(name, ".img.gz"))
    fail(p, "two-file NIfTI/ANALYZE (.hdr/.img) is not supported; convert it to a single .nii or .nii.gz");
  const bool gz = ends_with_ci(name, ".gz");

  // Compare the name with the first bytes: zlib would read plain bytes through a .gz name unchanged
  // and nifticlib would read gzip bytes of a .nii as voxel values.
  unsigned char magic2[2] = {0, 0};
  {
    FILE* f = std::fopen(p.c_str(), "rb");
    if (!f) fail(p, std::string("cannot open: ") + std::strerror(errno));
    const size_t got = std::fread(magic2, 1, 2, f);
    std::fclose(f);
    const bool is_gzip = got == 2 && magic2[0] == 0x1f && magic2[1] == 0x8b;
    if (gz && !is_gzip) fail(p, "named .gz but is not gzip-compressed");
    if (!gz && is_gzip) fail(p, "is gzip-compressed but not named .gz");
  }

  reader = std::make_unique<ByteReader>(p, gz);
  unsigned char raw[540];
  std::memset(raw, 0, sizeof raw);
  const int64_t got4 = reader->read(raw, 4);
  if (got4 < 4) fail(p, "too short for a NIfTI header (" + std::to_string(got4) + " bytes)");
  uint32_t sizeof_hdr = 0;
  std::memcpy(&sizeof_hdr, raw, 4);
  bool swapped = false;
  int version = 0;
  if (sizeof_hdr == 348u) version = 1;
  else if (sizeof_hdr == 540u) version = 2;
  else if (bswap32(sizeof_hdr) == 348u) { version = 1; swapped = true; }
  else if (bswap32(sizeof_hdr) == 540u) { version = 2; swapped = true; }
  else
    fail(p, "not a NIfTI file: sizeof_hdr is " + std::to_string(sizeof_hdr) + " (expected 348 for NIfTI-1 or 540 for NIfTI-2)");
  const int64_t header_size = header_bytes(version);
  const int64_t got = reader->read(raw + 4, header_size - 4) + 4;
  if (got < header_size)
    fail(p, "header is truncated (" + std::to_string(got) + " of " + std::to_string(header_size) + " bytes)");

  if (version == 1) {
    const char* m = reinterpret_cast<const char*>(raw + 344);
    if (std::memcmp(m, "ni1\0", 4) == 0) fail(p, "magic 'ni1' marks a two-file (.hdr/.img) header, but this is a single file");
    if (std::memcmp(m, "n+1\0", 4) != 0) fail(p, "bad magic for NIfTI-1 (expected 'n+1'); ANALYZE files are not supported");
  } else {
    static const unsigned char n2magic[8] = {'n', '+', '2', 0, '\r', '\n', 0x1a, '\n'};
    if (std::memcmp(raw + 4, "ni2\0", 4) == 0) fail(p, "magic 'ni2' marks a two-file (.hdr/.img) header, but this is a single file");
    if (std::memcmp(raw + 4, n2magic, 8) != 0) fail(p, "bad magic for NIfTI-2 (expected 'n+2' followed by \\r\\n\\032\\n)");
  }

  NiftiHeader h = interpret_header(p, raw, version, swapped);
  h.gzipped = gz;
  h.file_size = file_size;

  // A lying header must not cause a huge allocation or a silent zero-fill: compare what it promises
  // with what the file can hold before any voxel is read.
  const int64_t needed = h.vox_offset + h.data_bytes;
  if (needed < h.vox_offset) fail(p, "dimensions are absurd (byte count overflows)");
  if (!gz) {
    if (h.vox_offset > file_size)
      fail(p, "vox_offset " + std::to_string(h.vox_offset) + " is past the end of the file (" + std::to_string(file_size) + " bytes)");
    if (needed > file_size)
      fail(p, "truncated (or absurd dimensions): header promises " + std::to_string(h.data_bytes) + " bytes of voxel data at offset " +
                  std::to_string(h.vox_offset) + " but the file has only " + std::to_string(file_size - h.vox_offset));
  } else {
    // deflate cannot expand data by more than about 1032:1.
    const int64_t most = file_size > std::numeric_limits<int64_t>::max() / 1100 ? std::numeric_limits<int64_t>::max()
                                                                               : file_size * 1032 + 4096;
    if (needed > most)
      fail(p, "header promises " + std::to_string(needed) + " bytes but a " + std::to_string(file_size) +
                  "-byte gzip file can hold at most " + std::to_string(most) + " (absurd dimensions or truncated file)");
  }
  return h;
}

inline std::string datatype_name(int dt) {
  switch (dt) {
    case DT_UINT8: return "uint8";
    case DT_INT8: return "int8";
    case DT_INT16: return "int16";
    case DT_UINT16: return "uint16";
    case DT_INT32: return "int32";
    case DT_UINT32: return "uint32";
    case DT_INT64: return "int64";
    case DT_UINT64: return "uint64";
    case DT_FLOAT32: return "float32";
    case DT_FLOAT64: return "float64";
    case DT_FLOAT128: return "float128";
    case DT_COMPLEX64: return "complex64";
    case DT_COMPLEX128: return "complex128";
    case DT_COMPLEX256: return "complex256";
    case DT_RGB24: return "rgb24";
    case DT_RGBA32: return "rgba32";
    case DT_BINARY: return "binary";
    default: return "code " + std::to_string(dt);
  }
}

/// View of one volume's bytes (already in native byte order) as a (Z, Y, X) tensor of the file's
/// type; it refers to `bytes` except for uint16/uint32, which are widened into new tensors.
inline torch::Tensor raw_view(std::vector<unsigned char>& bytes, const NiftiHeader& h) {
  const std::vector<int64_t> zyx = {h.nz, h.ny, h.nx};
  auto blob = [&](torch::ScalarType st) { return torch::from_blob(bytes.data(), zyx, torch::TensorOptions().dtype(st)); };
  switch (h.datatype) {
    case DT_UINT8: return blob(torch::kUInt8);
    case DT_INT8: return blob(torch::kInt8);
    case DT_INT16: return blob(torch::kInt16);
    // LibTorch 1.13 has no uint16/uint32: widen and undo the sign extension.
    case DT_UINT16: return blob(torch::kInt16).to(torch::kInt32).bitwise_and(0xFFFF);
    case DT_INT32: return blob(torch::kInt32);
    case DT_UINT32: return blob(torch::kInt32).to(torch::kInt64).bitwise_and(int64_t(0xFFFFFFFF));
    case DT_INT64: return blob(torch::kInt64);
    case DT_FLOAT32: return blob(torch::kFloat32);
    case DT_FLOAT64: return blob(torch::kFloat64);
    default: fail(h.path, "datatype " + datatype_name(h.datatype) + " is not supported");
  }
}

/// The (Z, Y, X) view of the file's bytes as an (X, Y, Z) view, its axes then permuted as r says (a view:
/// no voxel moves yet; r's flips are applied to the result in place, apply_flips).
inline torch::Tensor oriented_view(const torch::Tensor& zyx, const Reorientation& r) {
  return permuted_view(zyx.permute({2, 1, 0}), r);
}

/// (view) -> new contiguous tensor of type st: the axis permutation and the type conversion happen in one
/// pass over the voxels.
inline torch::Tensor to_xyz(const torch::Tensor& view, torch::ScalarType st) {
  torch::Tensor out = torch::empty(view.sizes(), torch::TensorOptions().dtype(st));
  out.copy_(view);
  return out;
}

/// The result of `view` as type st, converted one x slab at a time through float64 by `slab_fn(d)`
/// (scaling, checks), so that no whole-volume float64 copy exists.
template <typename F>
torch::Tensor convert_by_slab(const torch::Tensor& view, torch::ScalarType st, F&& slab_fn) {
  torch::Tensor out = torch::empty(view.sizes(), torch::TensorOptions().dtype(st));
  for (int64_t x = 0; x < view.size(0); ++x) {
    torch::Tensor d = view.select(0, x).to(torch::kFloat64);
    slab_fn(d);
    out.select(0, x).copy_(d);
  }
  return out;
}

}  // namespace detail

/// Name of a NIfTI datatype code ("uint8", "float32", ...; "code N" if unknown).
inline std::string datatype_name(int datatype) { return detail::datatype_name(datatype); }

/// Datatype code from a name ("uint8", "int8", "int16", "uint16", "int32", "uint32", "int64",
/// "float32", "float64"). Throws ConfigError for anything else.
inline int datatype_from_name(const std::string& name) {
  for (int dt : {DT_UINT8, DT_INT8, DT_INT16, DT_UINT16, DT_INT32, DT_UINT32, DT_INT64, DT_FLOAT32, DT_FLOAT64})
    if (detail::datatype_name(dt) == name) return dt;
  throw ConfigError("datatype '" + name + "': expected one of uint8, int8, int16, uint16, int32, uint32, int64, float32, float64");
}

/// Reads and validates only the header (no voxel data is read, except that a .gz is decompressed
/// as far as the header).
inline NiftiHeader read_nifti_header(const std::filesystem::path& path) {
  std::unique_ptr<detail::ByteReader> reader;
  return detail::read_header(path, reader);
}

/// Reads one 3-D volume of a NIfTI-1/-2 file (.nii or .nii.gz). Throws IoError naming the file and
/// the reason for any damaged or unsupported file, ConfigError for a volume index out of range,
/// DataError when LoadType::Int64 meets non-integer values.
inline Volume read_nifti(const std::filesystem::path& path, const NiftiReadOptions& options = {}) {
  std::unique_ptr<detail::ByteReader> reader;
  const NiftiHeader h = detail::read_header(path, reader);
  if (options.volume < 0 || options.volume >= h.nt)
    throw ConfigError(path.string() + ": volume index " + std::to_string(options.volume) + " is out of range (the file has " +
                      std::to_string(h.nt) + " volume" + (h.nt == 1 ? "" : "s") + ")");
  if (h.volume_bytes > options.max_bytes)
    detail::fail(path, "a volume of " + std::to_string(h.volume_bytes) + " bytes exceeds the limit of " + std::to_string(options.max_bytes) +
                           " bytes (NiftiReadOptions::max_bytes)");

  // Skip the extensions and the volumes before the requested one.
  const int64_t header_size = detail::header_bytes(h.version);
  const int64_t before = h.vox_offset - header_size + options.volume * h.volume_bytes;
  // A gzip stream that ends early may be corrupt rather than short: drain() reports zlib's
  // verdict first, so the message names the real cause.
  if (reader->skip(before) < before) {
    if (h.gzipped) reader->drain();
    detail::fail(path, "data ends before the voxel data starts (vox_offset " + std::to_string(h.vox_offset) + " is past the end of the data)");
  }

  // Read the volume in chunks, so that memory grows only with bytes actually present.
  std::vector<unsigned char> bytes;
  const int64_t chunk = int64_t(16) << 20;
  int64_t have = 0;
  while (have < h.volume_bytes) {
    const int64_t want = std::min(chunk, h.volume_bytes - have);
    bytes.resize(static_cast<size_t>(have + want));
    const int64_t got = reader->read(bytes.data() + have, want);
    have += got;
    if (got < want) break;
  }
  const int64_t after = (h.nt - options.volume - 1) * h.volume_bytes;
  const int64_t rest = have == h.volume_bytes ? reader->skip(after) : 0;
  if (have < h.volume_bytes || rest < after) {
    if (h.gzipped) reader->drain();
    const int64_t present = have + rest + options.volume * h.volume_bytes;
    detail::fail(path, "truncated: header promises " + std::to_string(h.data_bytes) + " bytes of voxel data but only " +
                           std::to_string(present) + " are present");
  }
  // Read to the end of a gzip stream: its CRC and length trailer are the only check that the bytes
  // already read are the ones that were written.
  if (h.gzipped) reader->drain();
  reader.reset();

  if (h.byte_swapped && h.bytes_per_voxel > 1)
    nifti_swap_Nbytes(static_cast<int64_t>(bytes.size()) / h.bytes_per_voxel, h.bytes_per_voxel, bytes.data());
  const torch::Tensor raw = detail::raw_view(bytes, h);
  const bool float_file = !detail::datatype_is_integer(h.datatype);
  // Reorientation (nibabel's as_closest_canonical) is folded into the one converting copy: its axis
  // permutation as a view of the file's bytes, its flips in place afterwards. With scaling done slab by
  // slab, a read peaks at the file's bytes plus the result, never a second whole volume.
  Reorientation r;
  if (options.reorient) r = reorientation_between(io_orientation(h.affine), ras_orientation());
  const torch::Tensor view = detail::oriented_view(raw, r);
  torch::Tensor t;
  switch (options.load_as) {
    case LoadType::Float32:
    case LoadType::Native:
      if (h.scaled) {
        // Scale in double, as the NIfTI standard's float arithmetic allows, then round once.
        double largest = 0;
        t = detail::convert_by_slab(view, torch::kFloat32, [&](torch::Tensor& d) {
          d.mul_(h.scl_slope).add_(h.scl_inter);
          largest = std::max(largest, detail::largest_finite(d));
        });
        detail::check_float32_range(path, largest, "after scl_slope / scl_inter");
      } else {
        if (options.load_as == LoadType::Float32 && raw.scalar_type() == torch::kFloat64) {
          double largest = 0;  // slab by slab: no whole-volume temporaries
          for (int64_t x = 0; x < view.size(0); ++x) largest = std::max(largest, detail::largest_finite(view.select(0, x)));
          detail::check_float32_range(path, largest, "");
        }
        t = detail::to_xyz(view, options.load_as == LoadType::Float32 ? torch::kFloat32 : raw.scalar_type());
      }
      break;
    case LoadType::Int64:
      if (h.scaled || float_file) {
        bool whole = true;
        t = detail::convert_by_slab(view, torch::kInt64, [&](torch::Tensor& d) {
          if (h.scaled) d.mul_(h.scl_slope).add_(h.scl_inter);
          whole = whole && torch::isfinite(d).all().item<bool>() && torch::equal(d, d.round()) &&
                  (d.numel() == 0 || (d.abs().max().item<double>() < 9.0e18));
          if (!whole) d.zero_();  // refused below; keeps the conversion defined
        });
        if (!whole) throw DataError(path.string() + ": cannot load as integer labels, the voxel values are not all whole numbers");
      } else {
        t = detail::to_xyz(view, torch::kInt64);
      }
      break;
  }
  std::vector<unsigned char>().swap(bytes);
  apply_flips(t, r);
  // Count what the caller gets: scaling can also push finite values past float32's range.
  int64_t non_finite = 0;
  // Slab by slab: LibTorch's sum of a whole-volume bool mask widens it to int64 first (8 bytes a voxel).
  if (t.is_floating_point() && (float_file || h.scaled))
    for (int64_t x = 0; x < t.size(0); ++x) {
      const torch::Tensor slab = t.select(0, x);
      non_finite += slab.numel() - torch::isfinite(slab).sum().item<int64_t>();
    }

  Volume v;
  v.source = path.string();
  v.data = t;
  v.affine = r.is_identity() ? h.affine : reoriented_affine(h.affine, r, {{h.nx, h.ny, h.nz}});
  NiftiMeta& m = v.meta;
  m.nifti_version = h.version;
  m.datatype = h.datatype;
  m.scl_slope = h.scl_slope;
  m.scl_inter = h.scl_inter;
  m.qform_code = h.qform_code;
  m.sform_code = h.sform_code;
  m.xyz_units = h.xyzt_units & 0x07;
  m.time_units = h.xyzt_units & 0x38;
  m.intent_code = h.intent_code;
  m.description = h.description;
  m.source_shape = {{h.nx, h.ny, h.nz}};
  m.source_affine = h.affine;
  m.num_volumes = h.nt;
  m.volume_index = options.volume;
  m.non_finite_count = non_finite;
  return v;
}

namespace detail {

/// Converts (X, Y, Z[, T]) values to the on-disk representation, C-ordered as (T, Z, Y, X).
inline torch::Tensor to_disk_values(const std::filesystem::path& path, const torch::Tensor& data, const NiftiWriteOptions& o) {
  torch::Tensor t = data.dim() == 3 ? data.unsqueeze(3) : data;
  t = t.permute({3, 2, 1, 0});
  const bool scaled = !(o.scl_slope == 1.0 && o.scl_inter == 0.0);
  const bool integer_target = datatype_is_integer(o.datatype);
  if (!integer_target) {
    torch::Tensor v = scaled ? (t.to(torch::kFloat64) - o.scl_inter) / o.scl_slope : t;
    return v.to(o.datatype == DT_FLOAT32 ? torch::kFloat32 : torch::kFloat64).contiguous();
  }
  double lo = 0, hi = 0;
  torch::ScalarType st = torch::kUInt8;
  switch (o.datatype) {
    case DT_UINT8: lo = 0; hi = 255; st = torch::kUInt8; break;
    case DT_INT8: lo = -128; hi = 127; st = torch::kInt8; break;
    case DT_INT16: lo = -32768; hi = 32767; st = torch::kInt16; break;
    case DT_UINT16: lo = 0; hi = 65535; st = torch::kInt32; break;
    case DT_INT32: lo = -2147483648.0; hi = 2147483647.0; st = torch::kInt32; break;
    case DT_UINT32: lo = 0; hi = 4294967295.0; st = torch::kInt64; break;
    case DT_INT64: lo = -9.2e18; hi = 9.2e18; st = torch::kInt64; break;
    default: fail(path, "cannot write datatype " + datatype_name(o.datatype));
  }
  torch::Tensor v;
  if (!scaled && !t.is_floating_point()) {
    v = t.to(torch::kInt64);  // exact for every integer input
  } else {
    torch::Tensor d = t.to(torch::kFloat64);
    if (scaled) d = (d - o.scl_inter) / o.scl_slope;
    if (!torch::isfinite(d).all().item<bool>())
      throw DataError(path.string() + ": cannot store non-finite values as " + datatype_name(o.datatype));
    v = d.round();
  }
  if (v.numel() > 0) {
    const double mn = v.min().item<double>(), mx = v.max().item<double>();
    if (mn < lo || mx > hi)
      throw DataError(path.string() + ": values " + std::to_string(mn) + ".." + std::to_string(mx) + " do not fit datatype " +
                      datatype_name(o.datatype) + (scaled ? " after scaling" : ""));
  }
  v = v.to(torch::kInt64);
  // uint16 / uint32 are written from their wider holders: narrow with two's-complement wrap,
  // which yields exactly the unsigned bit pattern.
  if (o.datatype == DT_UINT16) return v.to(torch::kInt32).bitwise_and(0xFFFF).to(torch::kInt16).contiguous();
  if (o.datatype == DT_UINT32) return v.bitwise_and(int64_t(0xFFFFFFFF)).to(torch::kInt32).contiguous();
  return v.to(st).contiguous();
}

/// Writes all bytes of a new file, plain or through zlib (gz); every failure throws an IoError naming
/// `target`. finish() completes the file; write_atomically flushes and renames it.
class ByteWriter {
 public:
  ByteWriter(const std::filesystem::path& file, const std::filesystem::path& target, bool gz, int level)
      : target_(target), gz_(gz) {
    fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(target, std::string("cannot create temporary file: ") + std::strerror(errno));
    if (gz_) {
      const int dup_fd = ::dup(fd_);
      const std::string mode = "wb" + std::to_string(std::clamp(level, 1, 9));
      gz_file_ = dup_fd >= 0 ? gzdopen(dup_fd, mode.c_str()) : nullptr;
      if (!gz_file_) {
        if (dup_fd >= 0) ::close(dup_fd);
        ::close(fd_);
        fail(target, "cannot start gzip stream");
      }
      gzbuffer(gz_file_, 1 << 17);
    }
  }
  ByteWriter(const ByteWriter&) = delete;
  ByteWriter& operator=(const ByteWriter&) = delete;
  ~ByteWriter() {
    if (gz_file_) gzclose(gz_file_);
    if (fd_ >= 0) ::close(fd_);
  }
  void write(const void* src, int64_t n) {
    const auto* p = static_cast<const unsigned char*>(src);
    while (n > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(n, int64_t(1) << 30));
      int64_t done = 0;
      if (gz_) {
        const int r = gzwrite(gz_file_, p, chunk);
        if (r <= 0) {
          int errnum = 0;
          const char* msg = gzerror(gz_file_, &errnum);
          fail(target_, std::string("write failed: ") + (errnum == Z_ERRNO ? std::strerror(errno) : (msg ? msg : "zlib error")));
        }
        done = r;
      } else {
        const ssize_t r = ::write(fd_, p, chunk);
        if (r < 0) {
          if (errno == EINTR) continue;
          fail(target_, std::string("write failed: ") + std::strerror(errno));
        }
        done = r;
      }
      p += done;
      n -= done;
    }
  }
  /// Ends the gzip stream and closes the file, reporting what only shows there (a full disk).
  void finish() {
    if (gz_) {
      const int r = gzclose(gz_file_);
      gz_file_ = nullptr;
      if (r != Z_OK) fail(target_, "write failed while finishing the gzip stream (zlib code " + std::to_string(r) + ")");
    }
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail(target_, std::string("close failed: ") + std::strerror(errno));
  }

 private:
  std::filesystem::path target_;
  bool gz_ = false;
  int fd_ = -1;
  gzFile gz_file_ = nullptr;
};

}  // namespace detail

/// Writes data (X, Y, Z) or (X, Y, Z, T) with a voxel-to-RAS affine as NIfTI (.nii.gz compressed
/// by its extension). Both sform and qform are set from the affine with code 1 (the qform is the
/// nearest rigid approximation when the affine is sheared). The file appears atomically: it is
/// written to a temporary file beside it, flushed and renamed over the target (io/atomic_file.hpp).
inline void write_nifti(const std::filesystem::path& path, const torch::Tensor& data, const Eigen::Matrix4d& affine,
                        const NiftiWriteOptions& options = {}, const NiftiMeta* meta = nullptr) {
  namespace fs = std::filesystem;
  if (!data.defined() || (data.dim() != 3 && data.dim() != 4))
    throw DataError(path.string() + ": data to write must be a 3-D (X, Y, Z) or 4-D (X, Y, Z, T) tensor");
  if (data.is_complex() || data.scalar_type() == torch::kBool)
    throw DataError(path.string() + ": cannot write tensors of type " + std::string(c10::toString(data.scalar_type())));
  for (int64_t d = 0; d < data.dim(); ++d)
    if (data.size(d) < 1) throw DataError(path.string() + ": data has an empty dimension");
  if (options.nifti_version != 1 && options.nifti_version != 2)
    throw ConfigError(path.string() + ": nifti_version must be 1 or 2, not " + std::to_string(options.nifti_version));
  if (detail::datatype_size(options.datatype) == 0)
    throw ConfigError(path.string() + ": cannot write datatype " + datatype_name(options.datatype));
  if (!std::isfinite(options.scl_slope) || options.scl_slope == 0.0 || !std::isfinite(options.scl_inter))
    throw ConfigError(path.string() + ": scl_slope must be finite and non-zero and scl_inter finite");
  if (!affine.allFinite() || std::abs(affine.topLeftCorner<3, 3>().determinant()) == 0.0)
    throw DataError(path.string() + ": affine must be finite and invertible");
  if (options.nifti_version == 1)
    for (int64_t d = 0; d < data.dim(); ++d)
      if (data.size(d) > 32767)
        throw DataError(path.string() + ": dimension " + std::to_string(data.size(d)) + " does not fit NIfTI-1 (max 32767); use nifti_version 2");

  const torch::Tensor disk = detail::to_disk_values(path, data.cpu(), options);
  const int64_t nt = data.dim() == 4 ? data.size(3) : 1;

  int64_t dims[8] = {data.dim() == 4 ? 4 : 3, data.size(0), data.size(1), data.size(2), nt, 1, 1, 1};
  double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
  nifti_dmat44 m;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) m.m[r][c] = affine(r, c);
  nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
  const int xyzt = meta ? (meta->xyz_units | meta->time_units) : NIFTI_UNITS_MM;
  const int intent = meta ? meta->intent_code : 0;
  std::string descrip = options.description.empty() && meta ? meta->description : options.description;
  descrip.resize(std::min<size_t>(descrip.size(), 79));

  std::vector<unsigned char> header;
  if (options.nifti_version == 1) {
    std::unique_ptr<nifti_1_header, decltype(&std::free)> h(nifti_make_new_n1_header(dims, options.datatype), &std::free);
    if (!h) detail::fail(path, "nifticlib could not build a NIfTI-1 header");
    h->pixdim[0] = static_cast<float>(qfac);
    h->pixdim[1] = static_cast<float>(dx); h->pixdim[2] = static_cast<float>(dy); h->pixdim[3] = static_cast<float>(dz);
    for (int i = 4; i < 8; ++i) h->pixdim[i] = 1.0f;
    for (int i = static_cast<int>(dims[0]) + 1; i < 8; ++i) h->dim[i] = 1;  // unused dims are 1, as nibabel writes
    h->vox_offset = 352.0f;
    h->scl_slope = static_cast<float>(options.scl_slope);
    h->scl_inter = static_cast<float>(options.scl_inter);
    h->qform_code = NIFTI_XFORM_SCANNER_ANAT;
    h->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    h->quatern_b = static_cast<float>(qb); h->quatern_c = static_cast<float>(qc); h->quatern_d = static_cast<float>(qd);
    h->qoffset_x = static_cast<float>(qx); h->qoffset_y = static_cast<float>(qy); h->qoffset_z = static_cast<float>(qz);
    for (int c = 0; c < 4; ++c) {
      h->srow_x[c] = static_cast<float>(affine(0, c));
      h->srow_y[c] = static_cast<float>(affine(1, c));
      h->srow_z[c] = static_cast<float>(affine(2, c));
    }
    h->xyzt_units = static_cast<char>(xyzt);
    h->intent_code = static_cast<short>(intent);
    std::memset(h->descrip, 0, sizeof h->descrip);
    std::memcpy(h->descrip, descrip.data(), descrip.size());
    header.resize(352, 0);  // + 4-byte extension flag, all zero: no extensions
    std::memcpy(header.data(), h.get(), 348);
  } else {
    std::unique_ptr<nifti_2_header, decltype(&std::free)> h(nifti_make_new_n2_header(dims, options.datatype), &std::free);
    if (!h) detail::fail(path, "nifticlib could not build a NIfTI-2 header");
    h->pixdim[0] = qfac; h->pixdim[1] = dx; h->pixdim[2] = dy; h->pixdim[3] = dz;
    for (int i = 4; i < 8; ++i) h->pixdim[i] = 1.0;
    for (int i = static_cast<int>(dims[0]) + 1; i < 8; ++i) h->dim[i] = 1;
    h->vox_offset = 544;
    h->scl_slope = options.scl_slope;
    h->scl_inter = options.scl_inter;
    h->qform_code = NIFTI_XFORM_SCANNER_ANAT;
    h->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    h->quatern_b = qb; h->quatern_c = qc; h->quatern_d = qd;
    h->qoffset_x = qx; h->qoffset_y = qy; h->qoffset_z = qz;
    for (int c = 0; c < 4; ++c) {
      h->srow_x[c] = affine(0, c);
      h->srow_y[c] = affine(1, c);
      h->srow_z[c] = affine(2, c);
    }
    h->xyzt_units = xyzt;
    h->intent_code = intent;
    std::memset(h->descrip, 0, sizeof h->descrip);
    std::memcpy(h->descrip, descrip.data(), descrip.size());
    header.resize(544, 0);
    std::memcpy(header.data(), h.get(), 540);
  }

  const bool gz = detail::ends_with_ci(path.filename().string(), ".gz");
  write_atomically(
      path,
      [&](const fs::path& tmp) {
        detail::ByteWriter w(tmp, path, gz, options.compression_level);
        w.write(header.data(), static_cast<int64_t>(header.size()));
        w.write(disk.data_ptr(), disk.numel() * static_cast<int64_t>(disk.element_size()));
        w.finish();
      },
      path.string() + ": ", gz ? ".gz" : "");
}

/// Writes a Volume (see the overload above); its meta supplies units, intent and description.
/// With options.to_source_orientation the volume is first put back into its source file's voxel order.
inline void write_nifti(const std::filesystem::path& path, const Volume& volume, const NiftiWriteOptions& options = {}) {
  if (options.to_source_orientation) {
    const Volume back = to_source_orientation(volume);
    write_nifti(path, back.data, back.affine, options, &back.meta);
  } else {
    write_nifti(path, volume.data, volume.affine, options, &volume.meta);
  }
}

}  // namespace hdssl::io

// nifticlib's helper macros with generic names would otherwise reach every file that includes hdssl (and
// clash with ordinary identifiers such as swap_2 or LSB_FIRST); hdssl uses none of them. The NIfTI API
// itself (functions, DT_* / NIFTI_* codes) stays available.
#undef swap_2
#undef swap_4
#undef ASSIF
#undef LSB_FIRST
#undef MSB_FIRST
#undef REVERSE_ORDER
#undef LNI_FERR
#undef LNI_MAX_NIA_EXT_LEN
