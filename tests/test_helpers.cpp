// Implementation of the shared test helpers.
#include "test_helpers.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace rakv::testing {

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

CommandResult run_cli(const std::string& args) {
  TempDir dir;
  const std::string command = std::string("'") + RAKV_CLI_PATH + "' " + args + " > '" +
                              dir.file("out") + "' 2> '" + dir.file("err") + "'";
  const int status = std::system(command.c_str());
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = slurp(dir.file("out"));
  result.err = slurp(dir.file("err"));
  return result;
}

void expect_clean_failure(const CommandResult& result, const std::string& needle) {
  EXPECT_TRUE(result.exit_code == 1 || result.exit_code == 2) << "exit code " << result.exit_code;
  std::istringstream lines(result.err);
  std::string line;
  int non_empty = 0;
  while (std::getline(lines, line)) non_empty += !line.empty();
  EXPECT_EQ(non_empty, 1) << result.err;
  EXPECT_EQ(result.err.rfind("rakv: error: ", 0), 0u) << result.err;
  EXPECT_NE(result.err.find(needle), std::string::npos) << result.err;
}

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = (std::filesystem::temp_directory_path() /
           ("rakv-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
              .string();
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace rakv::testing
