// The autotuned GEMM choices' file (framework/tuning_file.h): what is written is read back
// whole; every way the file can be wrong (missing, truncated, not JSON, another format or
// version, another GPU or cuBLASLt, a malformed record) gives no records and, except for
// a missing file, a warning naming the file and the reason; writes are atomic.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "framework/tuning_file.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

const char* kEnv = "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, cuBLASLt 130100";

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("braid_test_tuning_" + name);
  fs::remove_all(d);
  return d;
}

std::vector<TuningRecord> sample_records() {
  std::vector<TuningRecord> r(2);
  r[0].config = {1, 0, 2304, 16384, 768, 768, 768, 2304, 14, 14, 0, 0, 256, 256, 256, 256, 256, 0};
  r[0].algo = {0, 1, 2, 3, 4, 5, 6, ~uint64_t(0)};  // the full uint64 range survives JSON
  r[1].config = {0, 1, 768, 3072, 16384, 768, 3072, 768, 14, 0, 0, 0, 256, 256, 256, 256, 256, 116};
  r[1].algo = {uint64_t(1) << 63, 42, 0, 0, 0, 0, 0, 7};
  return r;
}

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

TEST(TuningFile, RoundTripsEveryBit) {
  const fs::path p = fresh_dir("round") / "tuning" / "gemm-algos.rank0.json";  // directory made on write
  const auto records = sample_records();
  ASSERT_EQ(write_tuning_file(p.string(), kEnv, records), "");
  EXPECT_FALSE(fs::exists(p.string() + ".tmp"));
  std::string warning = "stale";
  const auto back = read_tuning_file(p.string(), kEnv, &warning);
  EXPECT_EQ(warning, "");
  ASSERT_EQ(back.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(back[i].config, records[i].config) << i;
    EXPECT_EQ(back[i].algo, records[i].algo) << i;
  }
  // Rewritten whole: fewer records replace more.
  ASSERT_EQ(write_tuning_file(p.string(), kEnv, {records[1]}), "");
  EXPECT_EQ(read_tuning_file(p.string(), kEnv, &warning).size(), 1u);
}

TEST(TuningFile, MissingFileIsNoRecordsAndNoWarning) {
  std::string warning = "stale";
  EXPECT_TRUE(read_tuning_file((fresh_dir("missing") / "none.json").string(), kEnv, &warning).empty());
  EXPECT_EQ(warning, "");
}

TEST(TuningFile, AnotherGpuOrLibraryIsRefusedWithAWarning) {
  const fs::path p = fresh_dir("env") / "a.json";
  ASSERT_EQ(write_tuning_file(p.string(), kEnv, sample_records()), "");
  std::string warning;
  const char* other = "NVIDIA H200, sm_90, 132 SMs, cuBLASLt 130100";
  EXPECT_TRUE(read_tuning_file(p.string(), other, &warning).empty());
  EXPECT_NE(warning.find(p.string()), std::string::npos) << warning;
  EXPECT_NE(warning.find("was written on NVIDIA H100"), std::string::npos) << warning;
  EXPECT_NE(warning.find("this GPU is NVIDIA H200"), std::string::npos) << warning;
}

TEST(TuningFile, DamagedFilesGiveNoRecordsAndNameTheFile) {
  const fs::path d = fresh_dir("damaged");
  const fs::path good = d / "good.json";
  ASSERT_EQ(write_tuning_file(good.string(), kEnv, sample_records()), "");
  std::string text;
  {
    std::ifstream in(good);
    std::getline(in, text);
  }
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"truncated", text.substr(0, text.size() / 2)},
      {"empty", ""},
      {"not_json", "gemm algorithms, trust me"},
      {"array", "[1, 2, 3]"},
      {"other_format", R"({"format": "braid-checkpoint", "version": 1, "environment": "x", "records": []})"},
      {"other_version", R"({"format": "braid-gemm-algos", "version": 2, "environment": "x", "records": []})"},
      {"format_not_string", R"({"format": 5, "version": 1})"},
      {"version_not_integer", std::string(R"({"format": "braid-gemm-algos", "version": true, "environment": ")") + kEnv +
                                  R"(", "records": []})"},
      {"config_past_int64", std::string(R"({"format": "braid-gemm-algos", "version": 1, "environment": ")") + kEnv +
                                R"(", "records": [{"config": [18446744073709551615], "algo": [0, 0, 0, 0, 0, 0, 0, 0]}]})"},
      {"no_records", std::string(R"({"format": "braid-gemm-algos", "version": 1, "environment": ")") + kEnv + "\"}"},
      {"short_algo", std::string(R"({"format": "braid-gemm-algos", "version": 1, "environment": ")") + kEnv +
                         R"(", "records": [{"config": [1, 2], "algo": [1, 2, 3]}]})"},
      {"negative_algo", std::string(R"({"format": "braid-gemm-algos", "version": 1, "environment": ")") + kEnv +
                            R"(", "records": [{"config": [1], "algo": [-1, 0, 0, 0, 0, 0, 0, 0]}]})"},
      {"fractional_config", std::string(R"({"format": "braid-gemm-algos", "version": 1, "environment": ")") + kEnv +
                                R"(", "records": [{"config": [2.5], "algo": [0, 0, 0, 0, 0, 0, 0, 0]}]})"},
      {"config_not_ints", std::string(R"({"format": "braid-gemm-algos", "version": 1, "environment": ")") + kEnv +
                              R"(", "records": [{"config": ["m"], "algo": [0, 0, 0, 0, 0, 0, 0, 0]}]})"},
  };
  for (const auto& [name, body] : cases) {
    const fs::path p = d / (name + ".json");
    write_text(p, body);
    std::string warning;
    EXPECT_TRUE(read_tuning_file(p.string(), kEnv, &warning).empty()) << name;
    EXPECT_NE(warning.find(p.string()), std::string::npos) << name << ": " << warning;
  }
}

TEST(TuningFile, UnwritableDirectoryIsAnErrorNotACrash) {
  const fs::path d = fresh_dir("unwritable");
  write_text(d / "blocker", "a file where the directory should be");
  const std::string error = write_tuning_file((d / "blocker" / "gemm-algos.rank0.json").string(), kEnv, sample_records());
  EXPECT_NE(error, "");
}

}  // namespace
}  // namespace braid
