#include "framework/tuning_file.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace braid {

namespace fs = std::filesystem;

std::vector<TuningRecord> read_tuning_file(const std::string& path, const std::string& environment,
                                           std::string* warning) {
  warning->clear();
  std::error_code ec;
  if (!fs::exists(path, ec)) return {};
  const std::string what = "GEMM algorithm file " + path;
  std::vector<TuningRecord> records;
  try {
    std::ifstream in(path);
    if (!in) {
      *warning = what + " cannot be opened; its choices are not used";
      return {};
    }
    const nlohmann::json j = nlohmann::json::parse(in);
    const bool ours = j.is_object() && j.contains("format") && j["format"] == "braid-gemm-algos" &&
                      j.contains("version") && j["version"].is_number_integer() && j["version"] == 1;
    if (!ours) {
      *warning = what + " is not a braid-gemm-algos version 1 file; its choices are not used";
      return {};
    }
    const std::string written = j.at("environment").get<std::string>();
    if (written != environment) {
      *warning = what + " was written on " + written + ", this GPU is " + environment +
                 "; its choices are not used (the GEMMs are timed again)";
      return {};
    }
    for (const auto& r : j.at("records")) {
      // Exactly typed: nlohmann would convert -1 to an unsigned value, 2.5 to 2.
      const auto& config = r.at("config");
      const auto& algo = r.at("algo");
      bool typed = config.is_array() && algo.is_array() && algo.size() == 8;
      for (const auto& x : config)  // (an unsigned value past int64's range would wrap)
        typed = typed && x.is_number_integer() && !(x.is_number_unsigned() && x.get<uint64_t>() > uint64_t(INT64_MAX));
      for (const auto& x : algo) typed = typed && x.is_number_unsigned();
      if (!typed) {
        *warning = what + " has a malformed record (config: integers; algo: 8 unsigned integers); its choices "
                          "are not used";
        return {};
      }
      records.push_back({config.get<std::vector<int64_t>>(), algo.get<std::array<uint64_t, 8>>()});
    }
  } catch (const std::exception& e) {
    *warning = what + " is unreadable (" + e.what() + "); its choices are not used";
    return {};
  }
  return records;
}

std::string write_tuning_file(const std::string& path, const std::string& environment,
                              const std::vector<TuningRecord>& records) {
  nlohmann::json j = {{"format", "braid-gemm-algos"}, {"version", 1}, {"environment", environment}};
  j["records"] = nlohmann::json::array();
  for (const auto& r : records) j["records"].push_back({{"config", r.config}, {"algo", r.algo}});
  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) return "cannot create " + parent.string() + ": " + ec.message();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump() << "\n";
    out.close();
    if (!out.good()) {
      fs::remove(tmp, ec);
      return "cannot write " + tmp;
    }
  }
  fs::rename(tmp, path, ec);  // whole or not at all
  if (ec) {
    const std::string error = "cannot rename " + tmp + " to " + path + ": " + ec.message();
    fs::remove(tmp, ec);
    return error;
  }
  return {};
}

}  // namespace braid
