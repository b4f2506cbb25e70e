// Checks kv_select_exact and kv_select_sampling against CPU references on random rows, then times
// them. Exact: the index sets must equal the float64-order reference (ties to the lower index)
// exactly. Sampling: the output must equal a CPU implementation of the same definition (same
// sample positions; integer key arithmetic, so bit-identical), except on rows that report the
// exact fallback, which must equal the exact selection. Every output is poisoned first (-1) and
// every row's status (0x7f7f7f7f); the workspace is filled with garbage.
//
// Usage: test_kv_select [--quick] [--no-bench | --bench-only | --profile]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "rakv/kernels/cuda/kv_select.h"
#include "test_util.h"

namespace kc = rakv::kernels::cuda;
using rakv_test::DeviceBuffer;

namespace {

uint32_t key_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct Geometry {
  int64_t recent, E, need;
};
Geometry geometry(int64_t T, int64_t k, int64_t recency) {
  const int64_t recent = T > recency ? std::min(k, recency) : 0;
  return {recent, T - recent, k - recent};
}

// The need largest keys of the eligible prefix (ties to the lower index), ascending, then recency.
std::vector<int64_t> ref_exact(const float* row, int64_t T, int64_t k, int64_t recency) {
  const Geometry g = geometry(T, k, recency);
  std::vector<int64_t> idx(g.E);
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int64_t a, int64_t b) {
    const double va = row[a], vb = row[b];  // float64 order; -0 == +0 as doubles too
    if (va != vb) return va > vb;
    return a < b;
  };
  if (g.need < g.E) std::nth_element(idx.begin(), idx.begin() + g.need, idx.end(), better);
  idx.resize(g.need);
  std::sort(idx.begin(), idx.end());
  for (int64_t t = 0; t < g.recent; ++t) idx.push_back(g.E + t);
  return idx;
}

int64_t band_cap(int64_t T) { return T < 8192 ? T : std::max<int64_t>(T / 8, 8192); }

struct SamplingRef {
  std::vector<int64_t> out;
  bool overflow = false;  // the GPU must report the exact fallback for this row
};

SamplingRef ref_sampling(const float* row, int64_t r, int64_t T, int64_t k, int64_t recency, double fraction,
                         int64_t min_samples, uint64_t seed) {
  const Geometry g = geometry(T, k, recency);
  const int64_t E = g.E, need = g.need;
  SamplingRef res;
  std::vector<char> keep(E, 0);
  if (need == E) std::fill(keep.begin(), keep.end(), 1);
  if (need > 0 && need < E) {
    int64_t n = static_cast<int64_t>(std::floor(static_cast<double>(E) * fraction));
    n = std::min<int64_t>(std::min<int64_t>(std::max(n, min_samples), E), 49152);
    int64_t ks = std::llround(static_cast<double>(need) * n / E);
    ks = std::clamp<int64_t>(ks, 1, n);
    std::vector<uint32_t> s(n);
    for (int64_t j = 0; j < n; ++j) s[j] = key_of(row[kc::sampling_position(seed, r, j, n, E)]);
    std::sort(s.begin(), s.end(), std::greater<uint32_t>());
    const uint64_t tau = s[ks - 1];
    const uint64_t upper = ks >= 2 ? s[ks - 2] : (1ull << 32);
    const uint64_t lower = ks < n ? s[ks] : 0;
    std::vector<uint32_t> key(E);
    int64_t band = 0;
    for (int64_t p = 0; p < E; ++p) {
      key[p] = key_of(row[p]);
      band += key[p] >= lower && key[p] < upper;
    }
    if (band > band_cap(T)) {
      res.overflow = true;
      return res;
    }
    int64_t c = 0;
    for (int64_t p = 0; p < E; ++p) {
      keep[p] = key[p] >= tau;
      c += keep[p];
    }
    if (c > need) {
      const int64_t d = c - need;
      std::vector<int64_t> B;
      for (int64_t p = 0; p < E; ++p)
        if (key[p] >= tau && key[p] < upper) B.push_back(p);
      if (static_cast<int64_t>(B.size()) >= d) {
        std::sort(B.begin(), B.end(), [&](int64_t a, int64_t b) { return key[a] != key[b] ? key[a] < key[b] : a > b; });
        for (int64_t q = 0; q < d; ++q) keep[B[q]] = 0;
      } else {
        for (int64_t p : B) keep[p] = 0;
        int64_t x = d - static_cast<int64_t>(B.size());
        for (int64_t p = 0; p < E && x > 0; ++p)
          if (keep[p]) {
            keep[p] = 0;
            --x;
          }
      }
    } else if (c < need) {
      const int64_t a = need - c;
      std::vector<int64_t> A;
      for (int64_t p = 0; p < E; ++p)
        if (key[p] < tau && key[p] >= lower) A.push_back(p);
      if (static_cast<int64_t>(A.size()) >= a) {
        std::sort(A.begin(), A.end(), [&](int64_t x, int64_t y) { return key[x] != key[y] ? key[x] > key[y] : x < y; });
        for (int64_t q = 0; q < a; ++q) keep[A[q]] = 1;
      } else {
        for (int64_t p : A) keep[p] = 1;
        int64_t y = a - static_cast<int64_t>(A.size());
        for (int64_t p = E - 1; p >= 0 && y > 0; --p)
          if (key[p] < lower) {
            keep[p] = 1;
            --y;
          }
      }
    }
  }
  for (int64_t p = 0; p < E; ++p)
    if (keep[p]) res.out.push_back(p);
  for (int64_t t = 0; t < g.recent; ++t) res.out.push_back(E + t);
  return res;
}

enum class Dist { kUniform, kLogNormal, kNormal, kQuantized16, kTwoValues, kAscending };
const char* dist_name(Dist d) {
  switch (d) {
    case Dist::kUniform: return "uniform";
    case Dist::kLogNormal: return "lognormal";
    case Dist::kNormal: return "normal";
    case Dist::kQuantized16: return "quant16";
    case Dist::kTwoValues: return "two-values";
    case Dist::kAscending: return "ascending";
  }
  return "?";
}

// Importance-like values, never all zeros.
std::vector<float> make_rows(int64_t rows, int64_t T, int64_t stride, Dist dist, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(rows * stride), std::nanf(""));  // padding is NaN: must not be read
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < T; ++t) {
      float x = 0;
      switch (dist) {
        case Dist::kUniform: x = u(rng) + 1e-6f; break;
        case Dist::kLogNormal: x = 1e-4f * std::exp(2.f * n(rng)); break;
        case Dist::kNormal: x = n(rng); break;
        case Dist::kQuantized16: x = std::floor(u(rng) * 16.f) / 16.f + 1.f / 32.f; break;
        case Dist::kTwoValues: x = u(rng) < 0.5f ? 0.25f : 0.75f; break;
        case Dist::kAscending: x = 1e-3f * static_cast<float>(t + 1); break;
      }
      v[r * stride + t] = x;
    }
  return v;
}

enum class Method { kExact, kSampling };

struct RunResult {
  std::vector<int64_t> out;
  std::vector<int32_t> status;
};

RunResult run_select(Method method, kc::SelectPath path, const DeviceBuffer<float>& d_in, int64_t rows, int64_t T,
                     int64_t stride, int64_t k, int64_t recency, double fraction, uint64_t seed) {
  const int64_t out_stride = std::max<int64_t>(k, 1) + 3;  // padded rows: the gap must stay -1
  DeviceBuffer<int64_t> d_out(rows * out_stride);
  DeviceBuffer<int32_t> d_status(rows);
  DeviceBuffer<unsigned char> d_ws(kc::kv_select_workspace_bytes(rows, T));
  d_out.fill_bytes(0xff);
  d_status.fill_bytes(0x7f);
  d_ws.fill_bytes(0xa5);
  kc::SelectionParams common;
  common.importance = d_in.ptr;
  common.row_stride = stride;
  common.rows = rows;
  common.T = T;
  common.k_keep = k;
  common.recency = recency;
  common.out = d_out.ptr;
  common.out_row_stride = out_stride;
  common.row_status = d_status.ptr;
  common.workspace = d_ws.ptr;
  if (method == Method::kExact) {
    kc::ExactSelectParams p;
    static_cast<kc::SelectionParams&>(p) = common;
    p.path = path;
    LAUNCH_CHECK(kc::kv_select_exact(p, nullptr));
  } else {
    kc::SamplingSelectParams p;
    static_cast<kc::SelectionParams&>(p) = common;
    p.sample_fraction = fraction;
    p.min_samples = 64;
    p.seed = seed;
    LAUNCH_CHECK(kc::kv_select_sampling(p, nullptr));
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  RunResult res;
  const std::vector<int64_t> all = d_out.download(rows * out_stride);
  res.status = d_status.download(rows);
  bool gap_ok = true;
  for (int64_t r = 0; r < rows; ++r) {
    res.out.insert(res.out.end(), all.begin() + r * out_stride, all.begin() + r * out_stride + k);
    for (int64_t q = k; q < out_stride; ++q) gap_ok &= all[r * out_stride + q] == -1;
  }
  if (!gap_ok) res.status.assign(rows, -999);  // wrote past k_keep
  return res;
}

const char* path_name(kc::SelectPath p) {
  switch (p) {
    case kc::SelectPath::kAuto: return "auto";
    case kc::SelectPath::kSingleBlock: return "single";
    case kc::SelectPath::kMultiBlock: return "multi";
    case kc::SelectPath::kMultiBlockFallback: return "fallback";
  }
  return "?";
}

// Structural checks of one output row: ascending, in range, recency block present.
bool well_formed(const int64_t* o, int64_t T, int64_t k, int64_t recency) {
  const Geometry g = geometry(T, k, recency);
  for (int64_t q = 0; q < k; ++q) {
    if (o[q] < 0 || o[q] >= T) return false;
    if (q > 0 && o[q] <= o[q - 1]) return false;
  }
  for (int64_t t = 0; t < g.recent; ++t)
    if (o[g.need + t] != g.E + t) return false;
  return true;
}

void test_exact(rakv_test::Tally& tally, bool quick) {
  struct Case {
    int64_t rows, T, k, recency;
    Dist dist;
  };
  std::vector<Case> cases = {
      {3, 1, 1, 64, Dist::kUniform},         {2, 1, 0, 0, Dist::kUniform},
      {4, 2, 1, 0, Dist::kNormal},           {5, 63, 63, 64, Dist::kUniform},
      {5, 64, 10, 64, Dist::kLogNormal},     {5, 65, 1, 64, Dist::kLogNormal},
      {5, 65, 64, 64, Dist::kLogNormal},     {5, 65, 65, 64, Dist::kUniform},
      {7, 100, 38, 64, Dist::kNormal},       {7, 1000, 382, 64, Dist::kLogNormal},
      {7, 1000, 382, 0, Dist::kQuantized16}, {3, 1000, 500, 64, Dist::kTwoValues},
      {9, 4097, 1565, 64, Dist::kLogNormal}, {9, 4097, 1, 0, Dist::kUniform},
      {9, 4097, 4097, 0, Dist::kUniform},    {9, 4097, 4096, 1, Dist::kNormal},
      {6, 8191, 3129, 64, Dist::kAscending}, {6, 8193, 3129, 64, Dist::kLogNormal},
      {6, 16384, 6225, 64, Dist::kLogNormal}, {6, 16384, 6225, 64, Dist::kQuantized16},
      {6, 16384, 6225, 64, Dist::kTwoValues}, {5, 20000, 7640, 64, Dist::kNormal},
      {5, 20000, 100, 64, Dist::kLogNormal}, {5, 20000, 19990, 64, Dist::kUniform},
      {4, 49152, 18000, 64, Dist::kLogNormal}, {4, 131072, 49807, 64, Dist::kLogNormal},
      {3, 131072, 49807, 64, Dist::kQuantized16}, {2, 131072, 1, 0, Dist::kUniform},
      {2, 131072, 131072, 64, Dist::kUniform}, {3, 300001, 114600, 64, Dist::kLogNormal},
  };
  const kc::SelectPath paths[] = {kc::SelectPath::kAuto, kc::SelectPath::kSingleBlock, kc::SelectPath::kMultiBlock,
                                  kc::SelectPath::kMultiBlockFallback};
  uint64_t seed = 1;
  int fallbacks = 0;
  for (const Case& c : cases) {
    if (quick && c.T > 50000) continue;
    const int64_t stride = c.T + (c.T % 3);  // padded rows (NaN padding) for some sizes
    const std::vector<float> h = make_rows(c.rows, c.T, stride, c.dist, ++seed);
    DeviceBuffer<float> d(h.size());
    d.upload(h);
    std::vector<std::vector<int64_t>> ref(c.rows);
    for (int64_t r = 0; r < c.rows; ++r) ref[r] = ref_exact(h.data() + r * stride, c.T, c.k, c.recency);
    for (kc::SelectPath path : paths) {
      if (path == kc::SelectPath::kSingleBlock && geometry(c.T, c.k, c.recency).E > 49152) continue;
      if (path == kc::SelectPath::kMultiBlockFallback && c.T > 140000) continue;
      const RunResult res = run_select(Method::kExact, path, d, c.rows, c.T, stride, c.k, c.recency, 0, 0);
      bool ok = true;
      for (int64_t r = 0; r < c.rows; ++r) {
        ok &= (res.status[r] & ~kc::kRowStatusFallback) == 0;
        fallbacks += (res.status[r] & kc::kRowStatusFallback) != 0;
        ok &= std::equal(ref[r].begin(), ref[r].end(), res.out.begin() + r * c.k);
      }
      char what[256];
      std::snprintf(what, sizeof(what), "exact rows=%lld T=%lld k=%lld recency=%lld %s path=%s", (long long)c.rows,
                    (long long)c.T, (long long)c.k, (long long)c.recency, dist_name(c.dist), path_name(path));
      tally.check(ok, what);
    }
  }
  std::printf("exact: %d row runs took the fallback pass (forced ones included)\n", fallbacks);

  // NaN: flagged on its row only; outputs still well formed.
  for (kc::SelectPath path : {kc::SelectPath::kSingleBlock, kc::SelectPath::kMultiBlock}) {
    const int64_t rows = 4, T = 20000, k = 7640;
    std::vector<float> h = make_rows(rows, T, T, Dist::kLogNormal, 99);
    h[1 * T + 12345] = std::nanf("");
    h[3 * T + 0] = -std::nanf("");
    DeviceBuffer<float> d(h.size());
    d.upload(h);
    const RunResult res = run_select(Method::kExact, path, d, rows, T, T, k, 64, 0, 0);
    bool ok = (res.status[0] & 1) == 0 && (res.status[1] & 1) == 1 && (res.status[2] & 1) == 0 &&
              (res.status[3] & 1) == 1;
    for (int64_t r = 0; r < rows; ++r) ok &= well_formed(res.out.data() + r * k, T, k, 64);
    tally.check(ok, std::string("exact NaN flag, path=") + path_name(path));
  }
}

void test_sampling(rakv_test::Tally& tally, bool quick) {
  struct Case {
    int64_t rows, T, k, recency;
    Dist dist;
    double fraction;
  };
  std::vector<Case> cases = {
      {3, 1, 1, 64, Dist::kUniform, 0.02},         {4, 50, 20, 64, Dist::kUniform, 0.02},
      {5, 100, 38, 64, Dist::kNormal, 0.02},       {5, 1000, 382, 64, Dist::kLogNormal, 0.02},
      {5, 1000, 382, 64, Dist::kQuantized16, 0.02}, {5, 1000, 1000, 64, Dist::kUniform, 0.02},
      {5, 1000, 70, 64, Dist::kLogNormal, 0.02},   {5, 1000, 65, 64, Dist::kLogNormal, 0.02},
      {8, 4096, 1564, 64, Dist::kLogNormal, 0.02}, {8, 4097, 4000, 64, Dist::kUniform, 0.02},
      {8, 16384, 6225, 64, Dist::kLogNormal, 0.02}, {8, 16384, 6225, 64, Dist::kTwoValues, 0.02},
      {8, 16384, 6225, 64, Dist::kAscending, 0.02}, {8, 16384, 6225, 0, Dist::kNormal, 0.5},
      {4, 131072, 49807, 64, Dist::kLogNormal, 0.02}, {4, 131072, 49807, 64, Dist::kQuantized16, 0.02},
      {2, 300001, 114600, 64, Dist::kLogNormal, 0.02},
  };
  uint64_t seed = 1000;
  for (const Case& c : cases) {
    if (quick && c.T > 50000) continue;
    const int64_t stride = c.T;
    const std::vector<float> h = make_rows(c.rows, c.T, stride, c.dist, ++seed);
    DeviceBuffer<float> d(h.size());
    d.upload(h);
    const uint64_t sseed = 0x1234 + seed;
    const RunResult res = run_select(Method::kSampling, kc::SelectPath::kAuto, d, c.rows, c.T, stride, c.k, c.recency,
                                     c.fraction, sseed);
    bool ok = true;
    int overflow = 0;
    for (int64_t r = 0; r < c.rows; ++r) {
      const float* row = h.data() + r * stride;
      const SamplingRef ref = ref_sampling(row, r, c.T, c.k, c.recency, c.fraction, 64, sseed);
      const std::vector<int64_t> expect = ref.overflow ? ref_exact(row, c.T, c.k, c.recency) : ref.out;
      overflow += ref.overflow;
      ok &= res.status[r] == (ref.overflow ? kc::kRowStatusFallback : 0);
      ok &= static_cast<int64_t>(expect.size()) == c.k;
      ok &= well_formed(res.out.data() + r * c.k, c.T, c.k, c.recency);
      ok &= std::equal(expect.begin(), expect.end(), res.out.begin() + r * c.k);
    }
    char what[256];
    std::snprintf(what, sizeof(what), "sampling rows=%lld T=%lld k=%lld recency=%lld %s fraction=%g (%d overflow rows)",
                  (long long)c.rows, (long long)c.T, (long long)c.k, (long long)c.recency, dist_name(c.dist),
                  c.fraction, overflow);
    tally.check(ok, what);
  }
}

// Recall of sampling against exact (eligible part), lognormal rows, 2% sample.
// Parameters the launchers must reject, before touching any buffer, with a message naming the
// parameter (last_error_detail) and nothing launched.
void test_rejected(rakv_test::Tally& tally) {
  struct Bad {
    int64_t rows, T, k, recency;
    const char* says;
  };
  const Bad cases[] = {
      {1, 0, 0, 0, "T=0"},
      {1, int64_t(1) << 31, 1, 0, "T=2147483648"},
      {1, 65536 * 8192, 1, 0, "longest row"},  // more chunks than a grid's second dimension
      {2, 100, 101, 0, "k_keep=101"},
      {2, 100, 10, -1, "recency=-1"},
      {-1, 100, 10, 0, "rows=-1"},
  };
  for (const Bad& c : cases) {
    kc::ExactSelectParams p;
    p.rows = c.rows;
    p.T = c.T;
    p.k_keep = c.k;
    p.recency = c.recency;
    kc::SamplingSelectParams q;
    static_cast<kc::SelectionParams&>(q) = static_cast<const kc::SelectionParams&>(p);
    const int exact_err = kc::kv_select_exact(p, nullptr);
    const std::string exact_says = kc::last_error_detail();
    const int sampling_err = kc::kv_select_sampling(q, nullptr);
    const std::string sampling_says = kc::last_error_detail();
    tally.check(exact_err != 0 && exact_says.find(c.says) != std::string::npos,
                std::string("exact rejects ") + c.says + " (said: " + exact_says + ")");
    tally.check(sampling_err != 0 && sampling_says.find(c.says) != std::string::npos,
                std::string("sampling rejects ") + c.says + " (said: " + sampling_says + ")");
  }
}

void recall_table(bool quick) {
  std::printf("\n| sampling recall vs exact (lognormal, 2%% sample) | T | k | recall (mean over rows) |\n|---|---|---|---|\n");
  for (int64_t T : {4096, 16384, 131072}) {
    if (quick && T > 50000) continue;
    const int64_t rows = 24, k = static_cast<int64_t>(std::floor(T * 0.382));
    const std::vector<float> h = make_rows(rows, T, T, Dist::kLogNormal, 7 + T);
    DeviceBuffer<float> d(h.size());
    d.upload(h);
    const RunResult e = run_select(Method::kExact, kc::SelectPath::kAuto, d, rows, T, T, k, 64, 0, 0);
    const RunResult s = run_select(Method::kSampling, kc::SelectPath::kAuto, d, rows, T, T, k, 64, 0.02, 42);
    const Geometry g = geometry(T, k, 64);
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int64_t> a(e.out.begin() + r * k, e.out.begin() + r * k + g.need);
      std::vector<int64_t> b(s.out.begin() + r * k, s.out.begin() + r * k + g.need);
      std::vector<int64_t> both;
      std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
      sum += static_cast<double>(both.size()) / std::max<int64_t>(g.need, 1);
    }
    std::printf("| | %lld | %lld | %.4f |\n", (long long)T, (long long)k, sum / rows);
  }
}

void bench(bool quick, bool profile) {
  rakv_test::Timer timer;
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  // Device-to-device copy ceiling (bytes read + written).
  {
    const size_t bytes = size_t(1) << 30;
    DeviceBuffer<char> a(bytes), b(bytes);
    a.fill_bytes(1);
    const double us = timer.median_us([&] { CUDA_CHECK(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice, stream)); },
                                      2, 10, false, stream);
    std::printf("\ncopy ceiling: %.0f GB/s (1 GiB device-to-device, read + write)\n", 2.0 * bytes / us / 1e3);
  }
  std::printf("\n| selection [8,12,T] fp32 | T | k | path | one call, events (us) | flushed L2 (us) | graph of 20 calls, per call (us) | floor bytes (MB) | GB/s (graph) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  struct B {
    int64_t T, k;
    Method m;
    kc::SelectPath path;
  };
  std::vector<B> cases = {
      {16384, 6225, Method::kExact, kc::SelectPath::kAuto},     {16384, 6225, Method::kExact, kc::SelectPath::kSingleBlock},
      {16384, 6225, Method::kExact, kc::SelectPath::kMultiBlock}, {16384, 6225, Method::kSampling, kc::SelectPath::kAuto},
      {4096, 1556, Method::kExact, kc::SelectPath::kAuto},      {32768, 12451, Method::kExact, kc::SelectPath::kAuto},
      {32768, 12451, Method::kExact, kc::SelectPath::kSingleBlock},
      {131072, 49807, Method::kExact, kc::SelectPath::kAuto},   {131072, 49807, Method::kSampling, kc::SelectPath::kAuto},
  };
  const int64_t rows = 96;
  for (const B& c : cases) {
    if (quick && c.T > 50000) continue;
    if (profile && (c.path == kc::SelectPath::kSingleBlock || c.T == 4096 || c.T == 32768)) continue;
    const std::vector<float> h = make_rows(rows, c.T, c.T, Dist::kLogNormal, 5);
    DeviceBuffer<float> d(h.size());
    d.upload(h);
    DeviceBuffer<int64_t> out(rows * c.k);
    DeviceBuffer<int32_t> status(rows);
    DeviceBuffer<unsigned char> ws(kc::kv_select_workspace_bytes(rows, c.T));
    std::function<void()> fn;
    kc::SelectionParams common;
    common.importance = d.ptr;
    common.row_stride = c.T;
    common.rows = rows;
    common.T = c.T;
    common.k_keep = c.k;
    common.recency = 64;
    common.out = out.ptr;
    common.out_row_stride = c.k;
    common.row_status = status.ptr;
    common.workspace = ws.ptr;
    if (c.m == Method::kExact) {
      kc::ExactSelectParams p;
      static_cast<kc::SelectionParams&>(p) = common;
      p.path = c.path;
      fn = [p, stream] { LAUNCH_CHECK(kc::kv_select_exact(p, stream)); };
    } else {
      kc::SamplingSelectParams p;
      static_cast<kc::SelectionParams&>(p) = common;
      p.seed = 3;
      fn = [p, stream] { LAUNCH_CHECK(kc::kv_select_sampling(p, stream)); };
    }
    if (profile) {
      fn();
      CUDA_CHECK(cudaStreamSynchronize(stream));
      continue;
    }
    const double hot = timer.median_us(fn, 5, 50, false, stream);
    const double cold = timer.median_us(fn, 2, 30, true, stream);
    const double graph = timer.graph_us(fn, 20, 20, stream);
    const std::vector<int32_t> st = status.download(rows);
    int fb = 0;
    for (int32_t s : st) fb += (s & kc::kRowStatusFallback) != 0;
    const double bytes = rows * c.T * 4.0 + rows * c.k * 8.0;
    std::printf("| %s | %lld | %lld | %s%s | %.1f | %.1f | %.1f | %.1f | %.0f |\n", c.m == Method::kExact ? "exact" : "sampling",
                (long long)c.T, (long long)c.k, c.m == Method::kExact ? path_name(c.path) : "-",
                fb ? " (fallback rows!)" : "", hot, cold, graph, bytes / 1e6, bytes / graph / 1e3);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = rakv_test::has_flag(argc, argv, "--quick");
  const bool do_bench = !rakv_test::has_flag(argc, argv, "--no-bench");
  const bool profile = rakv_test::has_flag(argc, argv, "--profile");  // one call per bench case, no checks
  std::printf("device: %s\n", rakv_test::device_name().c_str());
  if (profile || rakv_test::has_flag(argc, argv, "--bench-only")) {
    bench(quick, profile);
    return 0;
  }
  rakv_test::Tally tally;
  test_exact(tally, quick);
  test_sampling(tally, quick);
  test_rejected(tally);
  std::printf("kv_select: %d passed, %d failed\n", tally.passed, tally.failed);
  recall_table(quick);
  if (do_bench) bench(quick, false);
  return tally.failed == 0 ? 0 : 1;
}
