// ShardmeansNearestCentroids: the K-Means step's per-batch work, fused into one
// pass over the rows.
//
// ---- The op's contract (REGISTER_OP's Doc would hold it; the C API has no place for it) ----
//
// For each row of x and each of G groups of K centroids: the nearest centroid of
// the group and the squared distance to it; and per group, the per-cluster sums
// and counts of the valid rows, their inertia, and the rows farthest from their
// centroid. Given row weights (sample weights), the sums, inertia and weight sums
// are weighted: sum of w x, sum of w d^2, sum of w; the counts stay row counts.
//
// Inputs:
//   x           float32 [rows, D]
//   valid       bool    [rows]       false for a padding row: labelled, never summed
//   centroids   float32 [G, K, D]    G, K and D at least 1
//   bias        float32 [G, K]       0, or +inf for a padding centroid (it never wins)
//   weights     float32 [rows] or [0]  each row's weight (finite, >= 0), or none: [0]
//                                    (every row weighs 1; the unweighted kernel runs)
// Attributes:
//   n_far       int >= 0             how many far rows per group
//   per_row     bool = true          false: no labels or sq_dist (a Lloyd round needs
//                                    only the sums)
// Outputs, with R = rows if per_row else 0, and F = min(n_far, rows):
//   labels      int32   [R, G]       the nearest centroid's index in its group
//   sq_dist     float32 [R, G]       the squared distance to it, summed from the
//                                    differences x - c (no cancellation)
//   sums        float64 [G, K, D]    per cluster, the sum of its valid rows
//   counts      int64   [G, K]       per cluster, its valid rows
//   inertia     float64 [G]          the valid rows' squared distances, summed
//   far         int32   [G, F]       per group, the rows farthest from their centroid,
//                                    farthest first, padding rows counting as -1
//   far_sq_dist float32 [G, F]       their squared distances (-1: a padding row)
//   far_labels  int32   [G, F]       their nearest centroids
//   weight_sums float64 [G, K]       per cluster, the sum of its valid rows' weights
//                                    (without weights: the counts)
// With weights, a row of weight 0 is labelled and counted but adds nothing to the
// sums or inertia, and is never a far row (it counts as a padding row there: it
// could not re-seed an empty cluster). Shapes that disagree, empty centroids, or more rows than an
// int32 indexes: an InvalidArgument error.
//
// What tests/unit/test_native_op.py and tests/integration/test_native_op_processes.py
// hold it to:
// - The nearest centroid is the first one, the lowest index, on ties; rows equally
//   far keep row order among the far rows (tf.math.top_k's order).
// - On the tests' data, the labels, counts and far rows are those of TensorFlow's
//   own ops (the XLA step in transforms/step/step.py) and of NumPy's float64
//   argmin; the sums match them within float64 rounding, the distances and inertia
//   within float32's. (The scores are float32: two centroids equally near within
//   float32 rounding may be ordered otherwise than exact arithmetic would.)
// - The sums and inertia are accumulated in float64 in a fixed order: rows in order
//   within a unit of rows, whose size never depends on the threads, then the units'
//   partials in row order. So every output is the same bit for bit whatever the
//   number of threads (SHARDMEANS_OP_THREADS, the CPU affinity) and whether other
//   calls run at the same time.
// - per_row=false leaves every other output the same, bit for bit.
// - With weights, the sums, inertia and weight sums are NumPy's weighted ones within
//   float64 rounding (tests/unit/test_weighted_step.py), and weights of 1 give the
//   unweighted outputs bit for bit.
// - Builds for narrower vector widths (-march=x86-64-v3, a generic build) pass the
//   same result tests. Between widths the results agree within rounding, not bit
//   for bit: the vectors' lanes are summed in another order.
//
// ---- Why a custom op ----
//
// TensorFlow runs the same step as a matrix product followed by argmin, gather and
// segment-sum kernels, each a pass over a [rows, G*K] or [rows, G, D] array in
// memory (XLA:CPU does not fuse a dot with what follows). Here a tile of kRows rows
// is scored against a block of centroids in registers, the tile's scores stay in
// L1, and the argmin, the distance and the sums are done while the row is in
// cache, as scikit-learn's Lloyd kernel does (bench/RESULTS.md, 'The op against
// XLA by shape').
//
// Written against TensorFlow's C API (tensorflow/c/kernels.h, ops.h), not its C++
// one: those headers are plain C, so the op compiles in a fraction of the time
// TensorFlow's C++ headers (and the Eigen inside them) take to parse
// (bench/RESULTS.md, 'Fixed costs'), does not depend on TensorFlow's C++ ABI, and
// builds with any -march (Eigen's vector code does not compile for every one:
// AVX512-FP16 under GCC 12, for one). The C API has no intra-op thread pool, so
// the op has its own (WorkerPool).
//
// Built on first use by transforms/step/native/build.py with the host compiler and
// -march=native, so the vector width below is the machine's.
//
// ---- The file, in order ----
//
// The register tile and vector helpers; what a work unit reads and writes (Layout,
// TopN, Partial); the per-unit kernel (ScoreBlock, ArgMin, SquaredDistance,
// AddWidened, then AssignRows, which runs them over a unit's rows); the thread pool;
// the kernel's steps (ReadInputs, AllocateOutputs, MakeLayout, PartitionRows,
// NewPartials, RunUnits, MergeFarRows, MergeSums) and Compute, which runs them in
// that order; then the op's registration.
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
namespace {

// ---- The register tile and vector helpers ----

// The register tile: kRows rows x kVecs centroid vectors of accumulators, the
// kVecs centroid vectors and a broadcast row value must all fit in registers
// (a spilled accumulator costs a load and a store per FMA: bench/RESULTS.md,
// 'The kernel').
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

typedef float VecF __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t VecI __attribute__((vector_size(kLanes * sizeof(int32_t))));

// Half a vector of floats, and the same lanes as doubles (one full vector).
typedef float VecFH __attribute__((vector_size(kLanes / 2 * sizeof(float))));
typedef double VecDH __attribute__((vector_size(kLanes / 2 * sizeof(double))));

inline VecF LoadU(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// By value: a memcpy from an accumulator's own address can keep GCC from holding
// the accumulators in registers (a store per accumulator per feature).
inline void StoreU(float* p, VecF v) { std::memcpy(p, &v, sizeof(v)); }

inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

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

// `v`, which the compiler must then hold in a register: a centroid vector folded
// into each FMA as a memory operand costs kRows loads instead of one. (Pinning
// an array element instead can make GCC store it to the stack on every feature.)
inline VecF InRegister(VecF v) {
#if defined(__x86_64__)
  asm("" : "+v"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#endif
  return v;
}

// ---- What a work unit reads and writes ----

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
  std::vector<double> weight_sums;  // [g * k_pad], weighted calls only
  std::vector<double> inertia;
  std::vector<TopN> far;
};

// ---- The per-unit kernel ----

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

// Index (within [0, n_vec * kLanes)) of the smallest score, the first on ties.
// The minimum first (vminps, no index bookkeeping: blends that tracked an index
// per lane would compete with the scoring's FMAs for the same ports), then the
// first score equal to it, found from the bits of 64 / kLanes comparisons at a
// time: one branch per 64 scores. A branch per vector would mispredict, the
// minimum's place being random (bench/RESULTS.md, 'The kernel').
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

// sums[i] += w x[i] for i < d, in float64 (the weighted kernel's AddWidened).
inline void AddWeighted(const float* x, double w, double* sums, int64_t d) {
  constexpr int kHalf = kLanes / 2;
  const VecDH wv = VecDH{} + w;
  int64_t i = 0;
  for (; i + kHalf <= d; i += kHalf) {
    VecFH xf;
    VecDH s;
    std::memcpy(&xf, x + i, sizeof(xf));
    std::memcpy(&s, sums + i, sizeof(s));
    s += __builtin_convertvector(xf, VecDH) * wv;
    std::memcpy(sums + i, &s, sizeof(s));
  }
  for (; i < d; ++i) sums[i] += static_cast<double>(x[i]) * w;
}

// sums[i] += x[i] for i < d, in float64, half a float vector's lanes at a time so
// that the doubles fill one register of the machine's width. (A fixed 8-wide
// double type, 512 bits, is wider than an AVX2 register and goes through the
// stack there.)
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

// Rows [begin, end) of x: labels and distances out (unless null), sums into `part`.
// Weighted: `weights` [rows] scale each row's sums and distance (a separate
// instance, so that the unweighted kernel is the one it always was).
template <bool Weighted>
void AssignRows(const float* x, const bool* valid, const float* weights, const float* centroids,
                const Layout& L, int64_t begin, int64_t end, int32_t* labels, float* sq_dist,
                Partial* part) {
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
      // (Faster than row after row, or the distances row by row: bench/RESULTS.md,
      // 'The kernel'.)
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
        const int64_t j = g * L.k_pad + k;
        if constexpr (Weighted) {
          const bool counted = valid[row] && weights[row] > 0.0f;
          part->far[g].Offer({counted ? dist[r] : -1.0f, static_cast<int32_t>(row), k});
          if (!valid[row]) continue;
          const double w = static_cast<double>(weights[row]);
          AddWeighted(rows[r], w, part->sums.data() + j * L.d, L.d);
          part->counts[j] += 1;
          part->weight_sums[j] += w;
          inertia += w * static_cast<double>(dist[r]);
        } else {
          part->far[g].Offer({valid[row] ? dist[r] : -1.0f, static_cast<int32_t>(row), k});
          if (!valid[row]) continue;
          AddWidened(rows[r], part->sums.data() + j * L.d, L.d);
          part->counts[j] += 1;
          inertia += static_cast<double>(dist[r]);
        }
      }
      part->inertia[g] += inertia;
    }
  }
}

// ---- The thread pool ----

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

// ---- The kernel's steps ----

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

// Sets an InvalidArgument error in `status`; false, for the steps to return.
bool Invalid(TF_Status* status, const char* message) {
  TF_SetStatus(status, TF_INVALID_ARGUMENT, message);
  return false;
}

// The op's inputs (the contract's shapes checked), held for the call.
struct Inputs {
  TensorPtr held[5];
  int64_t n, g, k, d;  // x is [n, d], centroids [g, k, d]
  const float* x;
  const bool* valid;
  const float* centroids;
  const float* bias;
  const float* weights;  // [n], or null: unweighted
};

// Reads the five inputs and checks their shapes against each other, so that the
// steps after it may index them without checks; false, with `status` set, if not.
bool ReadInputs(TF_OpKernelContext* ctx, Inputs* in, TF_Status* status) {
  for (int i = 0; i < 5; ++i) {
    TF_Tensor* t = nullptr;
    TF_GetInput(ctx, i, &t, status);
    if (TF_GetCode(status) != TF_OK) return false;
    in->held[i].reset(t);
  }
  const TF_Tensor *x = in->held[0].get(), *valid = in->held[1].get(),
                  *centroids = in->held[2].get(), *bias = in->held[3].get(),
                  *weights = in->held[4].get();
  if (TF_NumDims(x) != 2) return Invalid(status, "x must be [rows, D]");
  if (TF_NumDims(centroids) != 3) return Invalid(status, "centroids must be [G, K, D]");
  const int64_t n = TF_Dim(x, 0), g = TF_Dim(centroids, 0), k = TF_Dim(centroids, 1),
                d = TF_Dim(centroids, 2);
  if (TF_Dim(x, 1) != d) return Invalid(status, "x and centroids differ in their last dimension");
  if (TF_NumDims(valid) != 1 || TF_Dim(valid, 0) != n)
    return Invalid(status, "valid must be [rows]");
  if (TF_NumDims(bias) != 2 || TF_Dim(bias, 0) != g || TF_Dim(bias, 1) != k)
    return Invalid(status, "bias must be [G, K]");
  if (TF_NumDims(weights) != 1 || (TF_Dim(weights, 0) != n && TF_Dim(weights, 0) != 0))
    return Invalid(status, "weights must be [rows] or [0]");
  if (g <= 0 || k <= 0 || d <= 0) return Invalid(status, "centroids must not be empty");
  if (n > std::numeric_limits<int32_t>::max())
    return Invalid(status, "x has more rows than int32 indexes");
  in->n = n;
  in->g = g;
  in->k = k;
  in->d = d;
  in->x = static_cast<const float*>(TF_TensorData(x));
  in->valid = static_cast<const bool*>(TF_TensorData(valid));
  in->centroids = static_cast<const float*>(TF_TensorData(centroids));
  in->bias = static_cast<const float*>(TF_TensorData(bias));
  // [0] is unweighted even with no rows ([0] either way: nothing to weigh).
  in->weights = TF_Dim(weights, 0) == n && n > 0 ? static_cast<const float*>(TF_TensorData(weights))
                                                 : nullptr;
  return true;
}

// The op's nine outputs, held for the call.
struct Outputs {
  TensorPtr held[9];
  int64_t n_far;        // F: the far rows' second dimension
  int32_t* labels;      // null unless per_row
  float* sq_dist;       // null unless per_row
  double* sums;         // [g, k, d]
  int64_t* counts;      // [g, k]
  double* inertia;      // [g]
  int32_t* far;         // [g, n_far]
  float* far_sq_dist;   // [g, n_far]
  int32_t* far_labels;  // [g, n_far]
  double* weight_sums;  // [g, k]
};

// Allocates the outputs in the contract's shapes (labels and sq_dist [0, G] unless
// per_row); false, with `status` set, if TensorFlow cannot.
bool AllocateOutputs(TF_OpKernelContext* ctx, const Attrs& attrs, const Inputs& in, Outputs* out,
                     TF_Status* status) {
  const int64_t n = in.n, g = in.g, k = in.k, d = in.d;
  const int64_t n_far = std::min<int64_t>(attrs.n_far, n);
  const int64_t per_row_n = attrs.per_row ? n : 0;
  struct Spec {
    TF_DataType dtype;
    std::vector<int64_t> dims;
  };
  const Spec specs[9] = {
      {TF_INT32, {per_row_n, g}},  // labels
      {TF_FLOAT, {per_row_n, g}},  // sq_dist
      {TF_DOUBLE, {g, k, d}},      // sums
      {TF_INT64, {g, k}},          // counts
      {TF_DOUBLE, {g}},            // inertia
      {TF_INT32, {g, n_far}},      // far
      {TF_FLOAT, {g, n_far}},      // far_sq_dist
      {TF_INT32, {g, n_far}},      // far_labels
      {TF_DOUBLE, {g, k}},         // weight_sums
  };
  void* data[9];
  for (int i = 0; i < 9; ++i) {
    size_t bytes = TF_DataTypeSize(specs[i].dtype);
    for (int64_t dim : specs[i].dims) bytes *= dim;
    out->held[i].reset(TF_AllocateOutput(ctx, i, specs[i].dtype, specs[i].dims.data(),
                                         specs[i].dims.size(), bytes, status));
    if (TF_GetCode(status) != TF_OK) return false;
    data[i] = TF_TensorData(out->held[i].get());
  }
  out->n_far = n_far;
  out->labels = attrs.per_row ? static_cast<int32_t*>(data[0]) : nullptr;
  out->sq_dist = attrs.per_row ? static_cast<float*>(data[1]) : nullptr;
  out->sums = static_cast<double*>(data[2]);
  out->counts = static_cast<int64_t*>(data[3]);
  out->inertia = static_cast<double*>(data[4]);
  out->far = static_cast<int32_t*>(data[5]);
  out->far_sq_dist = static_cast<float*>(data[6]);
  out->far_labels = static_cast<int32_t*>(data[7]);
  out->weight_sums = static_cast<double*>(data[8]);
  return true;
}

// The centroids laid out for ScoreBlock: each group's K columns padded to a
// multiple of kLanes (ArgMin reads whole vectors) and all columns to a multiple of
// kBlockCols, -2 c transposed, and |c|^2 + bias per column. A padding column's norm
// is +inf, so it never wins.
Layout MakeLayout(const Inputs& in) {
  const int64_t g = in.g, k = in.k, d = in.d;
  const float* c = in.centroids;
  const float* b = in.bias;
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
  return L;
}

constexpr int64_t kMinBlockRows = 4096;     // rows per parallel work unit (at least)
constexpr int64_t kMaxAccBytes = 64 << 20;  // bound on all units' float64 sums

// The rows as work units: `count` units of `rows` rows (the last may be shorter).
struct Units {
  int64_t rows, count;
};

// Fixed-size units of rows, each with its own float64 sums, added in unit order:
// the result does not depend on the number of threads. A unit has at least
// kMinBlockRows rows, and more when the units' sums would otherwise take more than
// kMaxAccBytes together.
Units PartitionRows(int64_t n, const Layout& L) {
  const int64_t acc_bytes = L.g * L.k_pad * L.d * static_cast<int64_t>(sizeof(double));
  const int64_t max_units = std::max<int64_t>(1, kMaxAccBytes / std::max<int64_t>(1, acc_bytes));
  const int64_t unit_rows = std::max(kMinBlockRows, (n + max_units - 1) / max_units);
  const int64_t units = std::max<int64_t>(1, (n + unit_rows - 1) / unit_rows);
  return {unit_rows, units};
}

// A zeroed Partial per unit, for the units to fill without sharing anything.
std::vector<Partial> NewPartials(const Units& units, const Layout& L, int64_t n_far,
                                 bool weighted) {
  std::vector<Partial> parts(units.count);
  for (Partial& p : parts) {
    p.sums.assign(L.g * L.k_pad * L.d, 0.0);
    p.counts.assign(L.g * L.k_pad, 0);
    if (weighted) p.weight_sums.assign(L.g * L.k_pad, 0.0);
    p.inertia.assign(L.g, 0.0);
    p.far.assign(L.g, TopN(n_far));
  }
  return parts;
}

// Every unit's rows through AssignRows on the pool, each into its own Partial;
// labels and sq_dist go straight to the outputs (each row is one unit's).
void RunUnits(const Inputs& in, const Layout& L, const Units& units, Outputs* out,
              std::vector<Partial>* parts) {
  WorkerPool::Get().Run(units.count, [&](int64_t u) {
    const int64_t begin = u * units.rows, end = std::min(in.n, (u + 1) * units.rows);
    if (in.weights != nullptr)
      AssignRows<true>(in.x, in.valid, in.weights, in.centroids, L, begin, end, out->labels,
                       out->sq_dist, &(*parts)[u]);
    else
      AssignRows<false>(in.x, in.valid, nullptr, in.centroids, L, begin, end, out->labels,
                        out->sq_dist, &(*parts)[u]);
  });
}

// Each group's n_far farthest rows over all units: the units are in row order, so
// offering their items in that order keeps ties in row order.
void MergeFarRows(const std::vector<Partial>& parts, int64_t g, Outputs* out) {
  const int64_t n_far = out->n_far;
  for (int64_t gi = 0; gi < g; ++gi) {
    TopN all(n_far);
    for (const Partial& p : parts)
      for (const FarRow& item : p.far[gi].items()) all.Offer(item);
    for (int64_t i = 0; i < n_far; ++i) {
      const FarRow& item = all.items()[i];
      out->far[gi * n_far + i] = item.row;
      out->far_sq_dist[gi * n_far + i] = item.value;
      out->far_labels[gi * n_far + i] = item.label;
    }
  }
}

// The units' sums, counts, weight sums and inertia added in unit order (a fixed
// order, whatever the threads), dropping the padding columns of k_pad. Unweighted,
// the weight sums are the counts.
void MergeSums(const std::vector<Partial>& parts, const Layout& L, bool weighted, Outputs* out) {
  const int64_t g = L.g, k = L.k, d = L.d;
  double* sums = out->sums;
  int64_t* counts = out->counts;
  double* inertia = out->inertia;
  double* weight_sums = out->weight_sums;
  std::fill(sums, sums + g * k * d, 0.0);
  std::fill(counts, counts + g * k, 0);
  std::fill(inertia, inertia + g, 0.0);
  std::fill(weight_sums, weight_sums + g * k, 0.0);
  for (const Partial& p : parts) {
    for (int64_t gi = 0; gi < g; ++gi) {
      inertia[gi] += p.inertia[gi];
      for (int64_t ki = 0; ki < k; ++ki) {
        const int64_t from = gi * L.k_pad + ki, to = gi * k + ki;
        counts[to] += p.counts[from];
        if (weighted) weight_sums[to] += p.weight_sums[from];
        for (int64_t i = 0; i < d; ++i) sums[to * d + i] += p.sums[from * d + i];
      }
    }
  }
  if (!weighted)
    for (int64_t j = 0; j < g * k; ++j) weight_sums[j] = static_cast<double>(counts[j]);
}

// The kernel's body, the steps above in order; an error leaves it with `status` set.
void Compute(const Attrs& attrs, TF_OpKernelContext* ctx, TF_Status* status) {
  Inputs in;
  if (!ReadInputs(ctx, &in, status)) return;
  Outputs out;
  if (!AllocateOutputs(ctx, attrs, in, &out, status)) return;
  const Layout L = MakeLayout(in);
  const Units units = PartitionRows(in.n, L);
  const bool weighted = in.weights != nullptr;
  std::vector<Partial> parts = NewPartials(units, L, out.n_far, weighted);
  RunUnits(in, L, units, &out, &parts);
  MergeFarRows(parts, L.g, &out);
  MergeSums(parts, L, weighted, &out);
}

void ComputeOrFail(void* attrs, TF_OpKernelContext* ctx) {
  TF_Status* status = TF_NewStatus();
  Compute(*static_cast<Attrs*>(attrs), ctx, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelContext_Failure(ctx, status);
  TF_DeleteStatus(status);
}

// ---- Registration ----

// Shapes that follow from the inputs alone: sums [G, K, D], counts [G, K],
// inertia [G] and weight_sums [G, K]. The others depend on the attributes, which the C API's shape
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
    if (out == 3 && TF_GetCode(status) == TF_OK)
      TF_ShapeInferenceContextSetOutput(ctx, 8, part, status);  // weight_sums, as counts
  }
  TF_DeleteShapeHandle(part);
  TF_DeleteShapeHandle(centroids);
}

// Registers the op and its CPU kernel when tf.load_op_library loads this library.
bool Register() {
  constexpr char kName[] = "ShardmeansNearestCentroids";
  TF_OpDefinitionBuilder* op = TF_NewOpDefinitionBuilder(kName);
  for (const char* spec :
       {"x: float", "valid: bool", "centroids: float", "bias: float", "weights: float"})
    TF_OpDefinitionBuilderAddInput(op, spec);
  for (const char* spec :
       {"labels: int32", "sq_dist: float", "sums: double", "counts: int64", "inertia: double",
        "far: int32", "far_sq_dist: float", "far_labels: int32", "weight_sums: double"})
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

}  // namespace
}  // namespace shardmeans
