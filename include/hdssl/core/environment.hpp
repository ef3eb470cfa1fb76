#pragma once
// This process's environment with some variables set or replaced: what a child process started with
// execve / posix_spawn gets (the --nproc launcher's ranks, the tests' children).
#include <unistd.h>  // environ (declared by glibc with _GNU_SOURCE, which g++ defines)

#include <map>
#include <string>
#include <vector>

namespace hdssl {

/// Every "NAME=value" of this process's environment, `overrides` replacing or adding their names.
inline std::vector<std::string> environment_with(const std::map<std::string, std::string>& overrides) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    const std::string v(*e);
    if (!overrides.count(v.substr(0, v.find('=')))) out.push_back(v);
  }
  for (const auto& [k, v] : overrides) out.push_back(k + "=" + v);
  return out;
}

/// Pointers into `strings` with the terminating null, as execve and posix_spawn take them.
inline std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (auto& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

}  // namespace hdssl
