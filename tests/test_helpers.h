// Shared helpers for the test suite: error measures, finite differences, running the CLI.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

namespace rakv::testing {

// max |a - b| / max(max |b|, tiny): the relative error used across the suite.
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const auto ad = a.detach().to(torch::kFloat64);
  const auto bd = b.detach().to(torch::kFloat64);
  const double scale = std::max(bd.abs().max().item<double>(), 1e-30);
  return (ad - bd).abs().max().item<double>() / scale;
}

// Central finite difference of scalar `f` with respect to every entry of `param` (float64).
inline torch::Tensor finite_difference(const std::function<double()>& f, torch::Tensor param,
                                       double eps = 1e-6) {
  torch::NoGradGuard no_grad;
  torch::Tensor grad = torch::zeros_like(param);
  auto flat = param.view({-1});
  auto g = grad.view({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double original = flat[i].item<double>();
    flat[i].fill_(original + eps);
    const double plus = f();
    flat[i].fill_(original - eps);
    const double minus = f();
    flat[i].fill_(original);
    g[i].fill_((plus - minus) / (2 * eps));
  }
  return grad;
}

// Chunked attention written out in float64: query i of chunk c sees keys 0 .. Lk - Tq + i of
// its key set (the reference for ops::chunked_causal_attention).
inline torch::Tensor chunk_attention_reference(const torch::Tensor& q, const torch::Tensor& k,
                                               const torch::Tensor& v) {
  const int64_t rows = q.size(2);
  const int64_t keys = k.size(2);
  torch::Tensor scores =
      torch::matmul(q.to(torch::kFloat64), k.to(torch::kFloat64).transpose(-2, -1)) /
      std::sqrt(static_cast<double>(q.size(3)));
  const torch::Tensor hidden =
      torch::ones({rows, keys}, torch::kBool).triu(keys - rows + 1).to(q.device());
  scores = scores.masked_fill(hidden, -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1), v.to(torch::kFloat64));
}

// Expects `f` to throw an exception whose message contains `needle`.
inline void expect_error_containing(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message was: " << e.what() << "\nexpected it to contain: " << needle;
    return;
  }
  ADD_FAILURE() << "expected an error containing: " << needle;
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs the rakv CLI with `args` (a shell-quoted string), capturing stdout and stderr.
CommandResult run_cli(const std::string& args);

// Expects a failure as the user must see it: exit code 1 or 2, exactly one non-empty line on
// stderr, starting "rakv: error: " and containing `needle`.
void expect_clean_failure(const CommandResult& result, const std::string& needle);

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace rakv::testing
