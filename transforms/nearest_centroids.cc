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
// Built on first use by transforms/native_op.py with the host compiler and
// -march=native, so the vector width below is the machine's.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace shardmeans {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

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
  if constexpr (kLanes >= 16) { const V s = Rotate<8>(v); v = s < v ? s : v; }
  if constexpr (kLanes >= 8) { const V s = Rotate<4>(v); v = s < v ? s : v; }
  { const V s = Rotate<2>(v); v = s < v ? s : v; }
  { const V s = Rotate<1>(v); v = s < v ? s : v; }
  return v;
}

// Index (within [0, n_vec * kLanes)) of the smallest score, the first on ties.
inline int32_t ArgMin(const float* s, int64_t n_vec) {
  VecI lane;
  for (int i = 0; i < kLanes; ++i) lane[i] = i;
  VecF best = LoadU(s);
  VecI at = lane;
  for (int64_t c = 1; c < n_vec; ++c) {
    const VecF v = LoadU(s + c * kLanes);
    const VecI lower = v < best;  // strict: each lane keeps its first minimum
    best = lower ? v : best;
    at = lower ? lane + static_cast<int32_t>(c * kLanes) : at;
  }
  const VecF m = AllMin(best);
  const VecI none = VecI{} + std::numeric_limits<int32_t>::max();
  const int32_t first = AllMin(best == m ? at : none)[0];
  // All +inf (or NaN): argmin's convention, the first centroid.
  return first == std::numeric_limits<int32_t>::max() ? 0 : first;
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
    for (int v = 0; v < kVecs; ++v)
      StoreU(tile + r * L.cols + col + v * kLanes, acc[r][v]);
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

class NearestCentroidsOp : public OpKernel {
 public:
  explicit NearestCentroidsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("n_far", &n_far_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("per_row", &per_row_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& valid = ctx->input(1);
    const Tensor& centroids = ctx->input(2);
    const Tensor& bias = ctx->input(3);
    OP_REQUIRES(ctx, x.dims() == 2, absl::InvalidArgumentError("x must be [rows, D]"));
    OP_REQUIRES(ctx, centroids.dims() == 3,
                absl::InvalidArgumentError("centroids must be [G, K, D]"));
    const int64_t n = x.dim_size(0), g = centroids.dim_size(0), k = centroids.dim_size(1),
                  d = centroids.dim_size(2);
    OP_REQUIRES(ctx, x.dim_size(1) == d,
                absl::InvalidArgumentError("x and centroids differ in their last dimension"));
    OP_REQUIRES(ctx, valid.dims() == 1 && valid.dim_size(0) == n,
                absl::InvalidArgumentError("valid must be [rows]"));
    OP_REQUIRES(ctx, bias.dims() == 2 && bias.dim_size(0) == g && bias.dim_size(1) == k,
                absl::InvalidArgumentError("bias must be [G, K]"));
    OP_REQUIRES(ctx, g > 0 && k > 0 && d > 0,
                absl::InvalidArgumentError("centroids must not be empty"));

    OP_REQUIRES(ctx, n <= std::numeric_limits<int32_t>::max(),
                absl::InvalidArgumentError("x has more rows than int32 indexes"));
    const int64_t n_far = std::min<int64_t>(n_far_, n);
    Tensor *labels_t, *sq_t, *sums_t, *counts_t, *inertia_t, *far_t, *far_sq_t, *far_label_t;
    const int64_t per_row_n = per_row_ ? n : 0;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({per_row_n, g}), &labels_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({per_row_n, g}), &sq_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({g, k, d}), &sums_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({g, k}), &counts_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({g}), &inertia_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({g, n_far}), &far_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, TensorShape({g, n_far}), &far_sq_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(7, TensorShape({g, n_far}), &far_label_t));

    const float* c = centroids.flat<float>().data();
    const float* b = bias.flat<float>().data();
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
    const float* xs = x.flat<float>().data();
    const bool* vs = valid.flat<bool>().data();
    int32_t* labels = per_row_ ? labels_t->flat<int32_t>().data() : nullptr;
    float* sq = per_row_ ? sq_t->flat<float>().data() : nullptr;
    auto work = [&](int64_t first, int64_t last) {
      for (int64_t u = first; u < last; ++u) {
        AssignRows(xs, vs, c, L, u * unit_rows, std::min(n, (u + 1) * unit_rows), labels, sq,
                   &parts[u]);
      }
    };
    const int64_t cost_per_unit = unit_rows * L.cols * d * 2;
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(units, cost_per_unit,
                                                                         work);

    double* sums = sums_t->flat<double>().data();
    int64_t* counts = counts_t->flat<int64_t>().data();
    double* inertia = inertia_t->flat<double>().data();
    std::fill(sums, sums + g * k * d, 0.0);
    std::fill(counts, counts + g * k, 0);
    std::fill(inertia, inertia + g, 0.0);
    int32_t* far = far_t->flat<int32_t>().data();
    float* far_sq = far_sq_t->flat<float>().data();
    int32_t* far_label = far_label_t->flat<int32_t>().data();
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

 private:
  int64_t n_far_;
  bool per_row_;
};

REGISTER_OP("ShardmeansNearestCentroids")
    .Input("x: float")
    .Input("valid: bool")
    .Input("centroids: float")
    .Input("bias: float")
    .Output("labels: int32")
    .Output("sq_dist: float")
    .Output("sums: double")
    .Output("counts: int64")
    .Output("inertia: double")
    .Output("far: int32")
    .Output("far_sq_dist: float")
    .Output("far_labels: int32")
    .Attr("n_far: int >= 0")
    .Attr("per_row: bool = true")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, centroids;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &centroids));
      DimensionHandle rows = c->Dim(x, 0), g = c->Dim(centroids, 0), k = c->Dim(centroids, 1),
                      d = c->Dim(centroids, 2);
      bool per_row;
      TF_RETURN_IF_ERROR(c->GetAttr("per_row", &per_row));
      const DimensionHandle labelled = per_row ? rows : c->MakeDim(0);
      c->set_output(0, c->Matrix(labelled, g));
      c->set_output(1, c->Matrix(labelled, g));
      c->set_output(2, c->MakeShape({g, k, d}));
      c->set_output(3, c->Matrix(g, k));
      c->set_output(4, c->Vector(g));
      int64_t n_far;
      TF_RETURN_IF_ERROR(c->GetAttr("n_far", &n_far));
      const DimensionHandle far = c->MakeDim(
          c->ValueKnown(rows) ? std::min(n_far, c->Value(rows)) : InferenceContext::kUnknownDim);
      for (int i = 5; i < 8; ++i) c->set_output(i, c->Matrix(g, far));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Nearest of G groups of K centroids for each row, and per-cluster partial sums.

x: float32 [rows, D]. valid: bool [rows], false for padding rows (labelled, not summed).
centroids: float32 [G, K, D]. bias: float32 [G, K], 0 or +inf (a padding centroid).
labels: int32 [rows, G], first nearest on ties. sq_dist: float32 [rows, G].
  Both [0, G] when per_row is false (the sums are all a Lloyd round needs).
sums: float64 [G, K, D]. counts: int64 [G, K]. inertia: float64 [G], of valid rows.
far: int32 [G, min(n_far, rows)], per group the rows farthest from their centroid,
  farthest first (padding rows count as -1), as tf.math.top_k orders them.
far_sq_dist: float32 [G, min(n_far, rows)], their squared distances (-1: padding).
far_labels: int32 [G, min(n_far, rows)], their nearest centroids.
)doc");

REGISTER_KERNEL_BUILDER(Name("ShardmeansNearestCentroids").Device(DEVICE_CPU),
                        NearestCentroidsOp);

}  // namespace shardmeans
