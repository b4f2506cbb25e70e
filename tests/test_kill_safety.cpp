// Kill safety: `rakv train` killed with SIGKILL while it writes a checkpoint leaves the previous
// checkpoint.safetensors and model.safetensors intact and loadable, and `rakv train --resume`
// continues from them to the last step.
//
// The kill lands inside a write deterministically through the fault injection of
// src/io/atomic_file.cpp (RAKV_FAULT_PAUSE_IN_WRITE=STAGE:NAME makes the child stop there and
// wait); a second test kills at random moments of a run that checkpoints every step.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "rakv/io/atomic_file.h"
#include "rakv/model/checkpoint.h"
#include "test_helpers.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using rakv::testing::run_cli;
using rakv::testing::TempDir;

constexpr int64_t kMaxIters = 6;

// A model small enough that a step takes milliseconds; a checkpoint every step. A vocabulary
// larger than the 256 bytes the text uses makes the checkpoints larger and slower to write.
std::vector<std::string> train_args(const std::string& out, bool resume,
                                    int64_t max_iters = kMaxIters, int64_t vocab = 256) {
  std::vector<std::string> args = {"train", "--no-progress", "--out", out};
  if (resume) {
    args.push_back("--resume");
    return args;
  }
  for (const char* set :
       {"CONFIG_N_LAYER=1", "CONFIG_N_HEAD=2", "CONFIG_N_EMBD=32", "CONFIG_RMLP_R_FF=16",
        "CONFIG_BLOCK_SIZE=32", "CONFIG_BATCH_SIZE=4", "CONFIG_EVAL_ITERS=1",
        "CONFIG_EVAL_INTERVAL=1", "CONFIG_WARMUP_ITERS=2"}) {
    args.insert(args.end(), {"--set", set});
  }
  args.insert(args.end(), {"--set", "CONFIG_MAX_ITERS=" + std::to_string(max_iters)});
  args.insert(args.end(), {"--set", "CONFIG_VOCAB_SIZE=" + std::to_string(vocab)});
  return args;
}

std::string shell_join(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args)
    out += " '" + a + "'";
  return out;
}

// The CLI as a child process with stderr in `err_file`, and `extra_env` ("NAME=value") added.
pid_t spawn_cli(const std::vector<std::string>& args, const std::string& err_file,
                const std::string& extra_env) {
  std::vector<std::string> argv_storage = {RAKV_CLI_PATH};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string env_storage = extra_env;
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e)
    envp.push_back(*e);
  if (!env_storage.empty())
    envp.push_back(env_storage.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_file.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, RAKV_CLI_PATH, &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "posix_spawn failed: " << std::strerror(rc);
  return rc == 0 ? pid : -1;
}

// SIGKILLs `pid` and reaps it; true when it died of that signal (not of its own accord).
bool kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

// Waits until the child has printed `marker` to `err_file`; false (with the child's stderr
// reported) when it exited first or took longer than the limit.
bool wait_for_marker(pid_t pid, const std::string& err_file, const std::string& marker) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (rakv::io::read_file(err_file).find(marker) != std::string::npos)
      return true;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      ADD_FAILURE() << "the child exited before reaching the fault:\n"
                    << rakv::io::read_file(err_file);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "no '" << marker << "' within 5 minutes:\n" << rakv::io::read_file(err_file);
  return false;
}

std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().find(".tmp.") != std::string::npos) {
      found.push_back(entry.path().filename().string());
    }
  }
  return found;
}

// The steps of log.csv's rows, in order.
std::vector<int64_t> logged_steps(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  std::vector<int64_t> steps;
  while (std::getline(in, line))
    steps.push_back(std::stoll(line.substr(0, line.find(','))));
  return steps;
}

// Step of a checkpoint file, after checking that it loads completely: the safetensors layout and
// metadata, and (through load_model) every weight into a model of its configuration.
int64_t loadable_step(const std::string& path, const std::string& kind) {
  const rakv::io::TensorFile file = rakv::io::load_safetensors(path);
  const rakv::model::CheckpointInfo info = rakv::model::checkpoint_info(file, path);
  EXPECT_EQ(info.kind, kind) << path;
  const rakv::model::LoadedModel loaded = rakv::model::load_model(path);
  EXPECT_EQ(loaded.step, info.step) << path;
  return info.step;
}

// Resumes to the last step and checks the run is complete: both files at max_iters, every step of
// the log exactly once, and no temporary file left behind.
void resume_to_the_end(const std::string& out, int64_t max_iters = kMaxIters) {
  const auto resumed = run_cli(shell_join(train_args(out, true)));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(loadable_step(out + "/checkpoint.safetensors", "training"), max_iters);
  EXPECT_EQ(loadable_step(out + "/model.safetensors", "model"), max_iters);
  std::vector<int64_t> expected(max_iters + 1);
  for (int64_t s = 0; s <= max_iters; ++s)
    expected[s] = s;
  EXPECT_EQ(logged_steps(out + "/log.csv"), expected);
  EXPECT_TRUE(temp_files(out).empty()) << temp_files(out).front();
}

struct Fault {
  std::string stage;  // where write_file_atomically stops
  std::string file;   // which file's write
};

void PrintTo(const Fault& fault, std::ostream* out) {
  *out << fault.stage << ":" << fault.file;
}

class KillDuringWrite : public ::testing::TestWithParam<Fault> {};

TEST_P(KillDuringWrite, PreviousCheckpointSurvivesAndResumeCompletes) {
  const Fault fault = GetParam();
  TempDir dir;
  const std::string out = dir.file("run");
  const std::string checkpoint = out + "/checkpoint.safetensors";
  const std::string model = out + "/model.safetensors";

  auto first = train_args(out, false);
  first.insert(first.end(), {"--stop-after", "2"});
  const auto trained = run_cli(shell_join(first));
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const std::string checkpoint_before = rakv::io::read_file(checkpoint);
  const std::string model_before = rakv::io::read_file(model);

  // Step 3 writes model.safetensors, then checkpoint.safetensors; the child stops in one of them.
  const pid_t pid = spawn_cli(train_args(out, true), dir.file("err"),
                              "RAKV_FAULT_PAUSE_IN_WRITE=" + fault.stage + ":" + fault.file);
  ASSERT_GT(pid, 0);
  const bool paused = wait_for_marker(pid, dir.file("err"), "rakv: fault injection: paused");
  const std::string temp = out + "/" + fault.file + ".tmp." + std::to_string(pid);
  const uintmax_t temp_size = paused && fs::exists(temp) ? fs::file_size(temp) : 0;
  EXPECT_TRUE(kill_and_reap(pid));
  ASSERT_TRUE(paused);

  // The kill landed inside the write: its temporary file is there, half or wholly written (the
  // tensors are those of step 2, so the complete file has the same size).
  const bool killed_in_model = fault.file == "model.safetensors";
  const uintmax_t full_size = (killed_in_model ? model_before : checkpoint_before).size();
  EXPECT_EQ(temp_size, fault.stage == "mid-write" ? full_size / 2 : full_size);

  // The training checkpoint is the previous one, byte for byte. The model is too when the kill
  // hit its own write; otherwise it was already renamed into place at step 3, ahead of the
  // checkpoint, which the resumed run recomputes identically.
  EXPECT_EQ(rakv::io::read_file(checkpoint), checkpoint_before);
  EXPECT_EQ(loadable_step(checkpoint, "training"), 2);
  if (killed_in_model) {
    EXPECT_EQ(rakv::io::read_file(model), model_before);
    EXPECT_EQ(loadable_step(model, "model"), 2);
  } else {
    EXPECT_EQ(loadable_step(model, "model"), 3);
  }
  resume_to_the_end(out);
}

INSTANTIATE_TEST_SUITE_P(KillSafety, KillDuringWrite,
                         ::testing::Values(Fault{"mid-write", "checkpoint.safetensors"},
                                           Fault{"before-rename", "checkpoint.safetensors"},
                                           Fault{"mid-write", "model.safetensors"},
                                           Fault{"before-rename", "model.safetensors"}),
                         [](const ::testing::TestParamInfo<Fault>& info) {
                           std::string name = info.param.stage + "_" + info.param.file;
                           for (char& c : name)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

// Kills at random moments (a fixed seed) of runs that checkpoint every step: whatever the moment,
// each file that exists loads, the model is never behind the training checkpoint, and a resume
// (or a fresh start when no checkpoint was written yet) gets to the end.
TEST(KillSafety, RandomKillsNeverLeaveAnUnloadableCheckpoint) {
  constexpr int64_t kSteps = 12;
  constexpr int64_t kVocab = 8192;  // 1 MB model + 3 MB checkpoint written every step
  TempDir dir;
  const std::string out = dir.file("run");
  const std::string checkpoint = out + "/checkpoint.safetensors";
  const std::string model = out + "/model.safetensors";
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> delay_ms(0, 400);
  int killed = 0;
  int inside_a_write = 0;  // kills that left a temporary file: they landed during a write
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const bool resume = fs::exists(checkpoint);
    if (resume && loadable_step(checkpoint, "training") == kSteps)
      break;
    const pid_t pid = spawn_cli(train_args(out, resume, kSteps, kVocab), dir.file("err"), "");
    ASSERT_GT(pid, 0);
    // Random moments of the training loop, not of the process start-up.
    if (!wait_for_marker(pid, dir.file("err"), "rakv train:")) {
      kill_and_reap(pid);
      FAIL() << "the run did not start";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    killed += kill_and_reap(pid);
    inside_a_write += !temp_files(out).empty();
    if (fs::exists(checkpoint)) {
      EXPECT_GE(loadable_step(model, "model"), loadable_step(checkpoint, "training"));
    }
    if (fs::exists(model))
      loadable_step(model, "model");
  }
  RecordProperty("runs_killed", killed);
  RecordProperty("kills_inside_a_write", inside_a_write);
  EXPECT_GT(killed, 0);
  if (!fs::exists(checkpoint)) {
    const auto fresh = run_cli(shell_join(train_args(out, false, kSteps, kVocab)));
    ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  }
  if (loadable_step(checkpoint, "training") < kSteps)
    resume_to_the_end(out, kSteps);
  EXPECT_EQ(loadable_step(model, "model"), kSteps);
  EXPECT_TRUE(temp_files(out).empty());
}

}  // namespace
