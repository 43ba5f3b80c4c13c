// NearestCentroids: the K-Means step's per-batch work in one pass over the rows.
//
// For each row of x, against G groups of K centroids: the nearest centroid of
// each group (first one on ties), the squared distance to it, and per group the
// per-cluster float64 sums, counts and inertia of the valid rows.
//
// Why a custom op: TensorFlow runs the same step as a matrix product followed by
// argmin, gather and segment-sum kernels, each a pass over a [rows, G*K] or
// [rows, G, D] array in memory (XLA:CPU does not fuse a dot with what follows).
// Here a tile of kRows rows is scored against a block of centroids in registers,
// the tile's scores stay in L1, and the argmin, the distance and the sums are
// done while the row is in cache, as scikit-learn's Lloyd kernel does.
//
// Written against TensorFlow's C API (tensorflow/c/kernels.h, ops.h), not its C++
// one: those headers are plain C, so the op compiles in under 2 s instead of
// the ~8-20 s TensorFlow's C++ headers (and the Eigen inside them) take, does
// not depend on TensorFlow's C++ ABI, and builds with any -march (Eigen's
// AVX512-FP16 code did not compile under GCC 12). The C API has no intra-op
// thread pool, so the op has its own (WorkerPool below).
//
// Built on first use by transforms/step/native/build.py with the host compiler and
// -march=native, so the vector width below is the machine's.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__SSE2__)  // EqualBits' x86 branches
#include <immintrin.h>
#endif

#include "tensorflow/c/kernels.h"
#include "tensorflow/c/ops.h"

namespace shardmeans {

// The register tile: kRows rows x kVecs centroid vectors of accumulators, the
// kVecs centroid vectors and a broadcast row value must all fit in registers
// (a spilled accumulator costs a load and a store per FMA: 2-3x slower).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRows = 4;
constexpr int kVecs = 4;  // 16 accumulators + 4 centroid vectors of the 32 registers
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kRows = 6;
constexpr int kVecs = 2;  // 12 accumulators + 2 centroid vectors + a broadcast of the 16
#else
constexpr int kLanes = 4;
constexpr int kRows = 6;
constexpr int kVecs = 2;
#endif
constexpr int kBlockCols = kLanes * kVecs;  // centroid columns per register tile
constexpr int64_t kMinBlockRows = 4096;     // rows per parallel work unit (at least)
constexpr int64_t kMaxAccBytes = 64 << 20;  // bound on all units' float64 sums

typedef float VecF __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t VecI __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline VecF LoadU(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// By value: memcpy from an accumulator's own address kept GCC from holding the
// accumulators in registers (AVX2: a store per accumulator per feature).
inline void StoreU(float* p, VecF v) { std::memcpy(p, &v, sizeof(v)); }

inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The centroids as the scoring loop reads them: column j = g * k_pad + k.
struct Layout {
  int64_t g, k, d, k_pad, cols;
  std::vector<float> neg2_ct;  // [d][cols]: -2 c[j][d]
  std::vector<float> norms;    // [cols]: |c_j|^2 + bias_j
};

// A row far from its centroid: its squared distance (-1 for a padding row), index
// and label.
struct FarRow {
  float value;
  int32_t row, label;
};

// The n largest rows offered by value, largest first, the lower row first on ties
// (tf.math.top_k's order).
class TopN {
 public:
  explicit TopN(int64_t n) : n_(n) { items_.reserve(n + 1); }

  void Offer(const FarRow& item) {
    if (n_ == 0) return;
    if (static_cast<int64_t>(items_.size()) == n_ && !(item.value > items_.back().value)) return;
    // Rows arrive in increasing order: after every item not below this one.
    auto at = std::upper_bound(items_.begin(), items_.end(), item.value,
                               [](float v, const FarRow& other) { return v > other.value; });
    items_.insert(at, item);
    if (static_cast<int64_t>(items_.size()) > n_) items_.pop_back();
  }

  const std::vector<FarRow>& items() const { return items_; }

 private:
  int64_t n_;
  std::vector<FarRow> items_;
};

// Per work unit: float64 sums [g * k_pad, d], counts [g * k_pad], inertia [g],
// and per group the rows farthest from their centroid (padding rows at -1).
struct Partial {
  std::vector<double> sums;
  std::vector<int64_t> counts;
  std::vector<double> inertia;
  std::vector<TopN> far;
};

// Lane i of the result is lane (i + W) % kLanes of v.
template <int W, typename V>
inline V Rotate(V v) {
  VecI mask;
  for (int i = 0; i < kLanes; ++i) mask[i] = (i + W) % kLanes;
  return __builtin_shuffle(v, mask);
}

// The minimum over lanes, in every lane (log2(kLanes) rotations).
template <typename V>
inline V AllMin(V v) {
  if constexpr (kLanes >= 16) {
    const V s = Rotate<8>(v);
    v = s < v ? s : v;
  }
  if constexpr (kLanes >= 8) {
    const V s = Rotate<4>(v);
    v = s < v ? s : v;
  }
  {
    const V s = Rotate<2>(v);
    v = s < v ? s : v;
  }
  {
    const V s = Rotate<1>(v);
    v = s < v ? s : v;
  }
  return v;
}

// Bit i set where lane i of a equals lane i of b.
inline uint32_t EqualBits(VecF a, VecF b) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ);
#elif defined(__AVX__)
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)));
#elif defined(__SSE2__)
  return static_cast<uint32_t>(_mm_movemask_ps(_mm_cmpeq_ps(a, b)));
#else
  uint32_t bits = 0;
  for (int i = 0; i < kLanes; ++i) bits |= static_cast<uint32_t>(a[i] == b[i]) << i;
  return bits;
#endif
}

// Index (within [0, n_vec * kLanes)) of the smallest score, the first on ties.
// The minimum first (vminps, no index bookkeeping: the blends that tracked one per
// lane competed with the scoring's FMAs for the same ports), then the first score
// equal to it, found from the bits of 64 / kLanes comparisons at a time: one branch
// per 64 scores. A branch per vector mispredicts, the minimum's place being random
// (1M x 32, K=64: 65 against 57 ms on AVX2, 48 against 38 ms on AVX-512).
inline int32_t ArgMin(const float* s, int64_t n_vec) {
  VecF best = LoadU(s);
  for (int64_t c = 1; c < n_vec; ++c) {
    const VecF v = LoadU(s + c * kLanes);
    best = v < best ? v : best;
  }
  const VecF m = AllMin(best);
  constexpr int64_t kPerWord = 64 / kLanes;
  for (int64_t c0 = 0; c0 < n_vec; c0 += kPerWord) {
    const int64_t c1 = std::min(n_vec, c0 + kPerWord);
    uint64_t bits = 0;
    for (int64_t c = c0; c < c1; ++c)
      bits |= static_cast<uint64_t>(EqualBits(LoadU(s + c * kLanes), m)) << ((c - c0) * kLanes);
    if (bits != 0) return static_cast<int32_t>(c0 * kLanes + __builtin_ctzll(bits));
  }
  return 0;  // all NaN: argmin's convention, the first centroid
}

// `v`, which the compiler must then hold in a register: a centroid vector folded
// into each FMA as a memory operand costs kRows loads instead of one. (Pinning
// an array element instead made GCC store it to the stack on every feature.)
inline VecF InRegister(VecF v) {
#if defined(__x86_64__)
  asm("" : "+v"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#endif
  return v;
}

// Scores of kRows rows against the centroid columns [col, col + kBlockCols):
// |c|^2 + bias - 2 x.c, written to tile[r * cols + col ...].
inline void ScoreBlock(const float* const* rows, const Layout& L, int64_t col, float* tile) {
  VecF acc[kRows][kVecs];
  for (int v = 0; v < kVecs; ++v) {
    const VecF n = LoadU(&L.norms[col + v * kLanes]);
    for (int r = 0; r < kRows; ++r) acc[r][v] = n;
  }
  const float* ct = L.neg2_ct.data() + col;
  for (int64_t j = 0; j < L.d; ++j, ct += L.cols) {
    VecF c[kVecs];
    for (int v = 0; v < kVecs; ++v) c[v] = InRegister(LoadU(ct + v * kLanes));
    for (int r = 0; r < kRows; ++r) {
      const float xb = rows[r][j];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += xb * c[v];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) StoreU(tile + r * L.cols + col + v * kLanes, acc[r][v]);
}

// Half a vector of floats, and the same lanes as doubles (one full vector).
typedef float VecFH __attribute__((vector_size(kLanes / 2 * sizeof(float))));
typedef double VecDH __attribute__((vector_size(kLanes / 2 * sizeof(double))));

// sums[i] += x[i] for i < d, in float64. (A fixed 8-wide double type, 512 bits,
// went through the stack on AVX2.)
inline void AddWidened(const float* x, double* sums, int64_t d) {
  constexpr int kHalf = kLanes / 2;
  int64_t i = 0;
  for (; i + kHalf <= d; i += kHalf) {
    VecFH xf;
    VecDH s;
    std::memcpy(&xf, x + i, sizeof(xf));
    std::memcpy(&s, sums + i, sizeof(s));
    s += __builtin_convertvector(xf, VecDH);
    std::memcpy(sums + i, &s, sizeof(s));
  }
  for (; i < d; ++i) sums[i] += static_cast<double>(x[i]);
}

inline float SquaredDistance(const float* x, const float* c, int64_t d) {
  VecF acc = VecF{};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    const VecF diff = LoadU(x + j) - LoadU(c + j);
    acc += diff * diff;
  }
  if constexpr (kLanes >= 16) acc += Rotate<8>(acc);
  if constexpr (kLanes >= 8) acc += Rotate<4>(acc);
  acc += Rotate<2>(acc);
  acc += Rotate<1>(acc);
  float total = acc[0];
  for (; j < d; ++j) total += (x[j] - c[j]) * (x[j] - c[j]);
  return total;
}

// Rows [begin, end) of x: labels and distances out (unless null), sums into `part`.
void AssignRows(const float* x, const bool* valid, const float* centroids, const Layout& L,
                int64_t begin, int64_t end, int32_t* labels, float* sq_dist, Partial* part) {
  std::vector<float> tile(kRows * L.cols);
  const int64_t k_vec = L.k_pad / kLanes;
  for (int64_t r0 = begin; r0 < end; r0 += kRows) {
    const int64_t n = std::min<int64_t>(kRows, end - r0);
    const float* rows[kRows];
    for (int r = 0; r < kRows; ++r) rows[r] = x + (r0 + std::min<int64_t>(r, n - 1)) * L.d;
    for (int64_t col = 0; col < L.cols; col += kBlockCols) ScoreBlock(rows, L, col, tile.data());
    for (int64_t g = 0; g < L.g; ++g) {
      // The tile's argmins first, then its distances: each independent across
      // rows, so they overlap in the pipeline; the sums wait on their results.
      // (Row after row was ~15% slower on Zen 4; the distances row by row, ~8% on
      // Zen 3.)
      int32_t best[kRows];
      for (int64_t r = 0; r < n; ++r)
        best[r] = ArgMin(tile.data() + r * L.cols + g * L.k_pad, k_vec);
      // The distance itself from the difference, not the expansion: no cancellation.
      float dist[kRows];
      for (int64_t r = 0; r < n; ++r)
        dist[r] = SquaredDistance(rows[r], centroids + (g * L.k + best[r]) * L.d, L.d);
      // A local sum: in `part` it costs a load and a store a row, since the
      // compiler cannot rule out that AddWidened's stores change it.
      double inertia = 0.0;
      for (int64_t r = 0; r < n; ++r) {
        const int64_t row = r0 + r;
        const int32_t k = best[r];
        if (labels != nullptr) {
          labels[row * L.g + g] = k;
          sq_dist[row * L.g + g] = dist[r];
        }
        part->far[g].Offer({valid[row] ? dist[r] : -1.0f, static_cast<int32_t>(row), k});
        if (!valid[row]) continue;
        const int64_t j = g * L.k_pad + k;
        AddWidened(rows[r], part->sums.data() + j * L.d, L.d);
        part->counts[j] += 1;
        inertia += static_cast<double>(dist[r]);
      }
      part->inertia[g] += inertia;
    }
  }
}

// The CPUs this process may run on (its affinity mask: taskset, cgroups' cpusets).
int AvailableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Threads for the op, the caller's included: SHARDMEANS_OP_THREADS if it is a
// positive integer of digits (for a CPU quota, which the affinity mask does not
// show), else AvailableCpus(). build.py warns about any other value.
int OpThreads() {
  const char* configured = std::getenv("SHARDMEANS_OP_THREADS");
  const std::string value = configured != nullptr ? configured : "";
  if (!value.empty() && value.size() <= 4 &&
      std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
      std::stoi(value) > 0)
    return std::stoi(value);
  return AvailableCpus();
}

// One pool per process, shared by all calls of the op (several replicas or Beam
// threads may call it at once): OpThreads() less one workers, since each caller
// works on its own call too. A call's units are claimed one at a time by
// its caller and any idle worker, so concurrent calls share the CPUs instead of
// each starting a thread per CPU.
class WorkerPool {
 public:
  // The pool of this process (a child forked after the pool started has none of
  // its threads: it gets a pool of its own; the parent's is left, never freed).
  static WorkerPool& Get() {
    static std::mutex mu;
    static WorkerPool* pool = nullptr;
    std::lock_guard<std::mutex> lock(mu);
    if (pool == nullptr || pool->pid_ != getpid()) pool = new WorkerPool(OpThreads() - 1);
    return *pool;
  }

  // fn(u) for every u in [0, n), on the calling thread and the pool's; returns
  // when all are done.
  void Run(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 1 || workers_ == 0) {
      for (int64_t u = 0; u < n; ++u) fn(u);
      return;
    }
    auto job = std::make_shared<Job>(n, fn);
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job);
    }
    wake_.notify_all();
    Work(*job);
    std::unique_lock<std::mutex> lock(job->mu);
    job->all_done.wait(lock, [&] { return job->done == job->n; });
  }

 private:
  struct Job {
    Job(int64_t n, const std::function<void(int64_t)>& fn) : n(n), fn(fn) {}
    const int64_t n;
    const std::function<void(int64_t)>& fn;  // the caller's: it waits for all units
    std::atomic<int64_t> next{0};
    std::mutex mu;
    std::condition_variable all_done;
    int64_t done = 0;  // guarded by mu
  };

  explicit WorkerPool(int workers) : workers_(std::max(0, workers)), pid_(getpid()) {
    for (int i = 0; i < workers_; ++i) std::thread([this] { Loop(); }).detach();
  }

  // Runs units of `job` until none is left to claim.
  static void Work(Job& job) {
    int64_t ran = 0;
    for (int64_t u; (u = job.next.fetch_add(1)) < job.n; ++ran) job.fn(u);
    if (ran == 0) return;
    std::lock_guard<std::mutex> lock(job.mu);
    job.done += ran;
    if (job.done == job.n) job.all_done.notify_all();
  }

  void Loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return !queue_.empty(); });
        job = queue_.front();
      }
      Work(*job);
      // No unit left to claim: the call leaves the queue (if no other worker took
      // it out already), and the next call's units are next.
      std::lock_guard<std::mutex> lock(mu_);
      if (!queue_.empty() && queue_.front() == job) queue_.pop_front();
    }
  }

  const int workers_;
  const pid_t pid_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;  // calls with units left, oldest first
};

// The op's attributes, read once per kernel instance.
struct Attrs {
  int64_t n_far;
  bool per_row;
};

void* Create(TF_OpKernelConstruction* ctx) {
  auto* attrs = new Attrs{0, true};
  TF_Status* status = TF_NewStatus();
  TF_OpKernelConstruction_GetAttrInt64(ctx, "n_far", &attrs->n_far, status);
  TF_Bool per_row = 1;
  if (TF_GetCode(status) == TF_OK)
    TF_OpKernelConstruction_GetAttrBool(ctx, "per_row", &per_row, status);
  attrs->per_row = per_row != 0;
  if (TF_GetCode(status) != TF_OK) TF_OpKernelConstruction_Failure(ctx, status);
  TF_DeleteStatus(status);
  return attrs;
}

void Delete(void* attrs) { delete static_cast<Attrs*>(attrs); }

// TF_Tensor handles, freed on scope exit (TF_GetInput and TF_AllocateOutput each
// return a new one).
struct TensorDeleter {
  void operator()(TF_Tensor* t) const { TF_DeleteTensor(t); }
};
using TensorPtr = std::unique_ptr<TF_Tensor, TensorDeleter>;

// Sets an InvalidArgument error in `status`.
void Invalid(TF_Status* status, const char* message) {
  TF_SetStatus(status, TF_INVALID_ARGUMENT, message);
}

// The kernel's body; an error leaves it with `status` set.
void Compute(const Attrs& attrs, TF_OpKernelContext* ctx, TF_Status* status) {
  TensorPtr in[4];
  for (int i = 0; i < 4; ++i) {
    TF_Tensor* t = nullptr;
    TF_GetInput(ctx, i, &t, status);
    if (TF_GetCode(status) != TF_OK) return;
    in[i].reset(t);
  }
  const TF_Tensor *x = in[0].get(), *valid = in[1].get(), *centroids = in[2].get(),
                  *bias = in[3].get();
  if (TF_NumDims(x) != 2) return Invalid(status, "x must be [rows, D]");
  if (TF_NumDims(centroids) != 3) return Invalid(status, "centroids must be [G, K, D]");
  const int64_t n = TF_Dim(x, 0), g = TF_Dim(centroids, 0), k = TF_Dim(centroids, 1),
                d = TF_Dim(centroids, 2);
  if (TF_Dim(x, 1) != d) return Invalid(status, "x and centroids differ in their last dimension");
  if (TF_NumDims(valid) != 1 || TF_Dim(valid, 0) != n)
    return Invalid(status, "valid must be [rows]");
  if (TF_NumDims(bias) != 2 || TF_Dim(bias, 0) != g || TF_Dim(bias, 1) != k)
    return Invalid(status, "bias must be [G, K]");
  if (g <= 0 || k <= 0 || d <= 0) return Invalid(status, "centroids must not be empty");
  if (n > std::numeric_limits<int32_t>::max())
    return Invalid(status, "x has more rows than int32 indexes");

  const int64_t n_far = std::min<int64_t>(attrs.n_far, n);
  const int64_t per_row_n = attrs.per_row ? n : 0;
  struct Spec {
    TF_DataType dtype;
    std::vector<int64_t> dims;
  };
  const Spec specs[8] = {
      {TF_INT32, {per_row_n, g}},  // labels
      {TF_FLOAT, {per_row_n, g}},  // sq_dist
      {TF_DOUBLE, {g, k, d}},      // sums
      {TF_INT64, {g, k}},          // counts
      {TF_DOUBLE, {g}},            // inertia
      {TF_INT32, {g, n_far}},      // far
      {TF_FLOAT, {g, n_far}},      // far_sq_dist
      {TF_INT32, {g, n_far}},      // far_labels
  };
  TensorPtr out[8];
  void* data[8];
  for (int i = 0; i < 8; ++i) {
    size_t bytes = TF_DataTypeSize(specs[i].dtype);
    for (int64_t dim : specs[i].dims) bytes *= dim;
    out[i].reset(TF_AllocateOutput(ctx, i, specs[i].dtype, specs[i].dims.data(),
                                   specs[i].dims.size(), bytes, status));
    if (TF_GetCode(status) != TF_OK) return;
    data[i] = TF_TensorData(out[i].get());
  }

  const float* c = static_cast<const float*>(TF_TensorData(centroids));
  const float* b = static_cast<const float*>(TF_TensorData(bias));
  Layout L{g, k, d, RoundUp(k, kLanes), 0, {}, {}};
  L.cols = RoundUp(g * L.k_pad, kBlockCols);
  L.neg2_ct.assign(d * L.cols, 0.0f);
  L.norms.assign(L.cols, std::numeric_limits<float>::infinity());  // padding never wins
  for (int64_t gi = 0; gi < g; ++gi) {
    for (int64_t ki = 0; ki < k; ++ki) {
      const float* cj = c + (gi * k + ki) * d;
      const int64_t col = gi * L.k_pad + ki;
      float norm = 0.0f;
      for (int64_t i = 0; i < d; ++i) {
        norm += cj[i] * cj[i];
        L.neg2_ct[i * L.cols + col] = -2.0f * cj[i];
      }
      L.norms[col] = norm + b[gi * k + ki];
    }
  }

  // Fixed-size units of rows, each with its own float64 sums, added in unit
  // order: the result does not depend on the number of threads.
  const int64_t acc_bytes = g * L.k_pad * d * static_cast<int64_t>(sizeof(double));
  const int64_t max_units = std::max<int64_t>(1, kMaxAccBytes / std::max<int64_t>(1, acc_bytes));
  const int64_t unit_rows = std::max(kMinBlockRows, (n + max_units - 1) / max_units);
  const int64_t units = std::max<int64_t>(1, (n + unit_rows - 1) / unit_rows);
  std::vector<Partial> parts(units);
  for (Partial& p : parts) {
    p.sums.assign(g * L.k_pad * d, 0.0);
    p.counts.assign(g * L.k_pad, 0);
    p.inertia.assign(g, 0.0);
    p.far.assign(g, TopN(n_far));
  }
  const float* xs = static_cast<const float*>(TF_TensorData(x));
  const bool* vs = static_cast<const bool*>(TF_TensorData(valid));
  int32_t* labels = attrs.per_row ? static_cast<int32_t*>(data[0]) : nullptr;
  float* sq = attrs.per_row ? static_cast<float*>(data[1]) : nullptr;
  WorkerPool::Get().Run(units, [&](int64_t u) {
    AssignRows(xs, vs, c, L, u * unit_rows, std::min(n, (u + 1) * unit_rows), labels, sq,
               &parts[u]);
  });

  double* sums = static_cast<double*>(data[2]);
  int64_t* counts = static_cast<int64_t*>(data[3]);
  double* inertia = static_cast<double*>(data[4]);
  std::fill(sums, sums + g * k * d, 0.0);
  std::fill(counts, counts + g * k, 0);
  std::fill(inertia, inertia + g, 0.0);
  int32_t* far = static_cast<int32_t*>(data[5]);
  float* far_sq = static_cast<float*>(data[6]);
  int32_t* far_label = static_cast<int32_t*>(data[7]);
  for (int64_t gi = 0; gi < g; ++gi) {
    TopN all(n_far);  // units in row order: offering their items in order keeps ties by row
    for (const Partial& p : parts)
      for (const FarRow& item : p.far[gi].items()) all.Offer(item);
    for (int64_t i = 0; i < n_far; ++i) {
      const FarRow& item = all.items()[i];
      far[gi * n_far + i] = item.row;
      far_sq[gi * n_far + i] = item.value;
      far_label[gi * n_far + i] = item.label;
    }
  }
  for (const Partial& p : parts) {
    for (int64_t gi = 0; gi < g; ++gi) {
      inertia[gi] += p.inertia[gi];
      for (int64_t ki = 0; ki < k; ++ki) {
        const int64_t from = gi * L.k_pad + ki, to = gi * k + ki;
        counts[to] += p.counts[from];
        for (int64_t i = 0; i < d; ++i) sums[to * d + i] += p.sums[from * d + i];
      }
    }
  }
}

void ComputeOrFail(void* attrs, TF_OpKernelContext* ctx) {
  TF_Status* status = TF_NewStatus();
  Compute(*static_cast<Attrs*>(attrs), ctx, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelContext_Failure(ctx, status);
  TF_DeleteStatus(status);
}

// Shapes that follow from the inputs alone: sums [G, K, D], counts [G, K] and
// inertia [G]. The others depend on the attributes, which the C API's shape
// functions cannot read; the Python caller sets them (transforms/step/step.py).
void InferShapes(TF_ShapeInferenceContext* ctx, TF_Status* status) {
  TF_ShapeInferenceContextSetUnknownShape(ctx, status);
  TF_ShapeHandle* centroids = TF_NewShapeHandle();
  TF_ShapeHandle* part = TF_NewShapeHandle();
  TF_ShapeInferenceContextGetInput(ctx, 2, centroids, status);
  if (TF_GetCode(status) == TF_OK)
    TF_ShapeInferenceContextWithRank(ctx, centroids, 3, centroids, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, 2, centroids, status);
  for (int64_t out = 3, rank = 2; out <= 4 && TF_GetCode(status) == TF_OK; ++out, --rank) {
    TF_ShapeInferenceContextSubshape(ctx, centroids, 0, rank, part, status);
    if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, out, part, status);
  }
  TF_DeleteShapeHandle(part);
  TF_DeleteShapeHandle(centroids);
}

// Registers the op and its CPU kernel when tf.load_op_library loads this library.
bool Register() {
  constexpr char kName[] = "ShardmeansNearestCentroids";
  TF_OpDefinitionBuilder* op = TF_NewOpDefinitionBuilder(kName);
  for (const char* spec : {"x: float", "valid: bool", "centroids: float", "bias: float"})
    TF_OpDefinitionBuilderAddInput(op, spec);
  for (const char* spec :
       {"labels: int32", "sq_dist: float", "sums: double", "counts: int64", "inertia: double",
        "far: int32", "far_sq_dist: float", "far_labels: int32"})
    TF_OpDefinitionBuilderAddOutput(op, spec);
  TF_OpDefinitionBuilderAddAttr(op, "n_far: int >= 0");
  TF_OpDefinitionBuilderAddAttr(op, "per_row: bool = true");
  TF_OpDefinitionBuilderSetShapeInferenceFunction(op, InferShapes);
  TF_Status* status = TF_NewStatus();
  TF_RegisterOpDefinition(op, status);
  if (TF_GetCode(status) == TF_OK) {
    TF_KernelBuilder* kernel = TF_NewKernelBuilder(kName, "CPU", Create, ComputeOrFail, Delete);
    TF_RegisterKernelBuilder(kName, kernel, status);
  }
  const bool ok = TF_GetCode(status) == TF_OK;
  TF_DeleteStatus(status);
  return ok;
}

[[maybe_unused]] const bool registered = Register();  // build.py checks the op is there

}  // namespace shardmeans

// The op's contract (as REGISTER_OP's Doc would hold it; the C API has no place for it):
//
// ShardmeansNearestCentroids: the nearest of G groups of K centroids for each row,
// and per-cluster partial sums.
// x: float32 [rows, D]. valid: bool [rows], false for padding rows (labelled, not summed).
// centroids: float32 [G, K, D]. bias: float32 [G, K], 0 or +inf (a padding centroid).
// labels: int32 [rows, G], first nearest on ties. sq_dist: float32 [rows, G].
//   Both [0, G] when per_row is false (the sums are all a Lloyd round needs).
// sums: float64 [G, K, D]. counts: int64 [G, K]. inertia: float64 [G], of valid rows.
// far: int32 [G, min(n_far, rows)], per group the rows farthest from their centroid,
//   farthest first (padding rows count as -1), as tf.math.top_k orders them.
// far_sq_dist: float32 [G, min(n_far, rows)], their squared distances (-1: padding).
// far_labels: int32 [G, min(n_far, rows)], their nearest centroids.
