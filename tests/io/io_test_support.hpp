#pragma once
// Shared by the io test files: raw byte helpers, the damaged NIfTI files (built from a valid file at
// test time; no binary test data is committed), and a runner for nibabel reference computations.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include "../test_support.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace hdssl::test {

using Bytes = std::vector<unsigned char>;

inline Bytes read_file_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("test helper: cannot open " + p.string());
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline void write_file_bytes(const std::filesystem::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) throw std::runtime_error("test helper: cannot write " + p.string());
}

/// gzip-compresses bytes (a complete, valid gzip stream).
inline Bytes gzip_bytes(const Bytes& in) {
  z_stream s{};
  if (deflateInit2(&s, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
  Bytes out(deflateBound(&s, static_cast<uLong>(in.size())) + 64);
  s.next_in = const_cast<Bytes::value_type*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  const int r = deflate(&s, Z_FINISH);
  deflateEnd(&s);
  if (r != Z_STREAM_END) throw std::runtime_error("deflate");
  out.resize(s.total_out);
  return out;
}

/// Decompresses a whole gzip file with zlib (independently of the code under test).
inline Bytes gunzip_file(const std::filesystem::path& p) {
  gzFile g = gzopen(p.c_str(), "rb");
  if (!g) throw std::runtime_error("gzopen " + p.string());
  Bytes out;
  unsigned char buf[1 << 16];
  int n;
  while ((n = gzread(g, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  gzclose(g);
  return out;
}

template <class T>
void put(Bytes& b, size_t offset, T value) {
  std::memcpy(b.data() + offset, &value, sizeof value);
}

struct CorruptCase {
  std::string name;               ///< what is wrong
  std::filesystem::path path;     ///< the damaged file
  std::vector<std::string> words; ///< the refusal message must contain each (besides the path)
};

/// Builds the damaged files in `dir` from `valid1` (the bytes of a valid uncompressed single-file
/// NIfTI-1 image, little-endian, vox_offset 352, at least a few hundred voxel bytes) and `valid2`
/// (the same for NIfTI-2, vox_offset 544).
inline std::vector<CorruptCase> make_corrupt_files(const std::filesystem::path& dir, const Bytes& valid1, const Bytes& valid2) {
  std::vector<CorruptCase> cases;
  auto add = [&](const std::string& name, const std::string& file, const Bytes& bytes, std::vector<std::string> words) {
    const auto p = dir / file;
    write_file_bytes(p, bytes);
    cases.push_back({name, p, std::move(words)});
  };
  const size_t n = valid1.size();

  add("empty file", "empty.nii", {}, {"empty"});
  add("three bytes", "tiny.nii", Bytes(valid1.begin(), valid1.begin() + 3), {"too short"});
  add("header cut in the middle", "halfheader.nii", Bytes(valid1.begin(), valid1.begin() + 200), {"header", "truncated"});
  add("header-only file", "header_only.nii", Bytes(valid1.begin(), valid1.begin() + 352), {"truncated"});
  add("data one byte short", "short_by_one.nii", Bytes(valid1.begin(), valid1.end() - 1), {"truncated"});
  add("NIfTI-2 data one byte short", "short_by_one_n2.nii", Bytes(valid2.begin(), valid2.end() - 1), {"truncated"});
  add("truncated .nii.gz (valid gzip of a short file)", "short.nii.gz", gzip_bytes(Bytes(valid1.begin(), valid1.end() - 1)), {"truncated"});
  const Bytes gz = gzip_bytes(valid1);
  add("gzip cut mid-stream", "cut.nii.gz", Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)), {"gzip"});
  add("gzip cut before its trailer", "cut_trailer.nii.gz", Bytes(gz.begin(), gz.end() - 4), {"gzip"});
  {
    Bytes b = gz;
    for (size_t i = b.size() / 2; i < b.size() / 2 + 16; ++i) b[i] ^= 0xA5;
    add("gzip corrupted mid-stream", "corrupt.nii.gz", b, {"gzip"});
  }
  {
    Bytes b = gz;
    b[b.size() - 6] ^= 0xFF;  // inside the CRC-32 of the trailer
    add("gzip CRC mismatch", "crc.nii.gz", b, {"gzip"});
  }
  add("not gzip at all (plain bytes named .nii.gz)", "plain.nii.gz", valid1, {"not gzip"});
  add("gzip bytes named .nii", "zipped.nii", gz, {"gzip"});
  {
    std::string text;
    while (text.size() < 2000) text += "This is a text file, not an image. 0123456789\n";
    add("text file", "text.nii", Bytes(text.begin(), text.end()), {"not a NIfTI"});
  }
  {
    Bytes b = valid1;
    std::memcpy(b.data() + 344, "abc\0", 4);
    add("bad magic", "badmagic.nii", b, {"magic"});
  }
  {
    Bytes b = valid1;
    std::memcpy(b.data() + 344, "ni1\0", 4);
    add("two-file magic in a single file", "ni1magic.nii", b, {"magic"});
  }
  {
    Bytes b = valid2;
    b[6] = 'X';
    add("bad NIfTI-2 magic", "badmagic2.nii", b, {"magic"});
  }
  {
    Bytes b = valid1;
    put<int32_t>(b, 0, 347);
    add("wrong sizeof_hdr", "sizeof347.nii", b, {"sizeof_hdr"});
  }
  {
    Bytes b = valid1;
    put<float>(b, 108, static_cast<float>(n + 4096));
    add("vox_offset past end", "offset_past_end.nii", b, {"vox_offset", "past the end"});
  }
  {
    Bytes b = valid1;
    put<float>(b, 108, static_cast<float>(n + 4096));
    add("vox_offset past end (gzip)", "offset_past_end.nii.gz", gzip_bytes(b), {"vox_offset"});
  }
  {
    Bytes b = valid1;
    put<float>(b, 108, 100.0f);
    add("vox_offset inside the header", "offset_in_header.nii", b, {"vox_offset"});
  }
  {
    Bytes b = valid1;
    put<float>(b, 108, std::nanf(""));
    add("vox_offset NaN", "offset_nan.nii", b, {"vox_offset"});
  }
  for (int16_t d0 : {int16_t(0), int16_t(8), int16_t(-1)}) {
    Bytes b = valid1;
    put<int16_t>(b, 40, d0);
    add("dim[0] = " + std::to_string(d0), "dim0_" + std::to_string(d0 + 10) + ".nii", b, {"dim[0]"});
  }
  {
    Bytes b = valid1;
    put<int16_t>(b, 44, int16_t(-5));
    add("negative dim", "negdim.nii", b, {"dim[2]"});
  }
  {
    Bytes b = valid1;
    put<int16_t>(b, 46, int16_t(0));
    add("zero dim", "zerodim.nii", b, {"dim[3]"});
  }
  {
    Bytes b = valid1;
    for (size_t i = 0; i < 3; ++i) put<int16_t>(b, 42 + 2 * i, int16_t(30000));
    add("absurd dims 30000^3", "absurd.nii", b, {"truncated"});
    add("absurd dims 30000^3 (gzip)", "absurd.nii.gz", gzip_bytes(b), {"absurd"});
  }
  {
    Bytes b = valid2;
    for (size_t i = 0; i < 3; ++i) put<int64_t>(b, 24 + 8 * i, int64_t(1) << 40);
    add("NIfTI-2 dims that overflow 64 bits", "overflow_n2.nii", b, {"absurd"});
  }
  {
    Bytes b = valid1;
    put<int16_t>(b, 40, int16_t(6));
    put<int16_t>(b, 48, int16_t(1));
    put<int16_t>(b, 50, int16_t(3));  // dim[5] = 3: a 6-D file (as CIFTI uses)
    put<int16_t>(b, 52, int16_t(1));
    add("6-D data", "sixd.nii", b, {"only 3-D"});
  }
  {
    Bytes b = valid1;
    put<int16_t>(b, 70, int16_t(9999));
    add("unknown datatype", "dtype9999.nii", b, {"unknown datatype"});
  }
  {
    Bytes b = valid1;
    put<int16_t>(b, 70, int16_t(32));
    add("unsupported datatype (complex64)", "complex.nii", b, {"complex64"});
  }
  {
    Bytes b = valid1;
    put<float>(b, 76 + 4 * 2, 0.0f);
    add("zero spacing", "zerospacing.nii", b, {"pixdim[2]"});
  }
  {
    Bytes b = valid1;
    put<float>(b, 76 + 4 * 1, std::nanf(""));
    add("NaN spacing", "nanspacing.nii", b, {"pixdim[1]"});
  }
  {
    Bytes b = valid1;
    put<float>(b, 112, 2.0f);
    put<float>(b, 116, std::nanf(""));
    add("NaN scl_inter with a slope", "nan_inter.nii", b, {"scl_inter"});
  }
  {
    Bytes b = valid1;
    for (size_t i = 0; i < 12; ++i) put<float>(b, 280 + 4 * i, 0.0f);  // sform rows all zero
    put<int16_t>(b, 254, int16_t(1));
    add("singular sform", "singular_sform.nii", b, {"singular"});
  }
  add("two-file .hdr name", "pair.hdr", valid1, {".hdr/.img"});
  return cases;
}

/// True when the system Python has nibabel (the reference for affines, data and statistics).
inline bool have_nibabel() {
  static const bool ok = std::system("/usr/bin/python3 -c 'import nibabel' > /dev/null 2>&1") == 0;
  return ok;
}

/// Runs a Python script (nibabel + numpy) with arguments; its stdout must be one JSON document.
inline nlohmann::json run_python(const TempDir& tmp, const std::string& script, const std::vector<std::string>& args) {
  const auto py = tmp / "check.py";
  std::ofstream(py) << script;
  std::string cmd = "/usr/bin/python3 '" + py.string() + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  REQUIRE(pclose(pipe) == 0);
  return nlohmann::json::parse(out);
}

}  // namespace hdssl::test
