"""Replica-step bodies for the generalized K-Means step contract (kernel_lab, issue #5).

Contract (G groups of K centroids, all static):
  in:  x f32 [b, D], valid bool [b], centroids f32 [G*K, D], bias f32 [G*K] (0 or +inf)
  out: labels i32 [b, G]   argmin_k (||c||^2 + bias - 2 x.c), first index on ties
       sq_dist f32 [b, G]  ||x - c_label||^2 from the difference
       sums f64 [G*K, D]   per-cluster sum of valid rows
       counts i64 [G*K]
       inertia f64 [G]     sum of valid sq_dist, accumulated in float64
       far i32 [G, n_far]  valid rows with the largest sq_dist, farthest first
                           (lower index first on ties; padding rows only if fewer
                           than n_far valid rows, marked by sq_dist -1 -> caller drops)

`make_body(name, G, K, n_far, **opts)` returns a Python function of
(x, valid, centroids, bias) to wrap in tf.function(jit_compile=...).
"""

import tensorflow as tf


def _scores(x, centroids, bias, G, K):
    """[T, G, K] scores, bit-identical to (||c||^2 + bias) - 2 * (x @ c^T)."""
    cnb = tf.reduce_sum(centroids * centroids, axis=1) + bias
    # x @ (-2c)^T == -2 (x @ c^T) exactly (power-of-two scaling), saves one pass.
    cross = tf.matmul(x, -2.0 * centroids, transpose_b=True)
    return tf.reshape(cnb[tf.newaxis, :] + cross, [-1, G, K])


def _first_argmin(scores, K):
    """argmin over the last axis, first index on ties, without tf.argmin."""
    m = tf.reduce_min(scores, axis=-1, keepdims=True)
    iota = tf.range(K, dtype=tf.int32)
    lab = tf.reduce_min(tf.where(scores == m, iota, K), axis=-1)
    return tf.minimum(lab, K - 1)  # NaN rows: index K-1 instead of out of range


def _dist(x, centroids, labels, G, K):
    """sq_dist [T, G] and diff [T, G, D] from the difference."""
    flat = labels + tf.range(G, dtype=tf.int32)[tf.newaxis, :] * K  # [T, G]
    diff = x[:, tf.newaxis, :] - tf.gather(centroids, flat)
    return tf.reduce_sum(diff * diff, axis=-1), diff


def _far(sq, valid, n_far, chunk):
    """[G, n_far] rows with the largest valid sq_dist (two-stage top_k if chunk)."""
    b = sq.shape[0]
    n_far = min(n_far, b)
    v = tf.transpose(tf.where(valid[:, tf.newaxis], sq, -tf.ones_like(sq)))  # [G, b]
    if not chunk or b <= chunk or b % chunk:
        return tf.math.top_k(v, n_far).indices
    G = v.shape[0]
    r = b // chunk
    k1 = min(n_far, chunk)
    vv, ii = tf.math.top_k(tf.reshape(v, [G, r, chunk]), k1)  # [G, r, k1]
    ii = ii + (tf.range(r, dtype=tf.int32) * chunk)[tf.newaxis, :, tf.newaxis]
    # Flattened chunk-major: on equal values the lower position is the lower row,
    # so the result equals a one-stage top_k exactly (values and tie order).
    _, j = tf.math.top_k(tf.reshape(vv, [G, r * k1]), n_far)
    return tf.gather(tf.reshape(ii, [G, r * k1]), j, batch_dims=1)


def body_current(G, K, n_far):
    """transforms/step/step.py _replica_step, generalized to G groups and bias."""

    def f(x, valid, centroids, bias):
        cross = tf.matmul(x, centroids, transpose_b=True)
        cn = tf.reduce_sum(centroids * centroids, axis=1) + bias
        scores = tf.reshape(cn[tf.newaxis, :] - 2.0 * cross, [-1, G, K])
        labels = tf.argmin(scores, axis=2, output_type=tf.int32)  # [b, G]
        sq, _ = _dist(x, centroids, labels, G, K)
        flat = labels + tf.range(G, dtype=tf.int32)[tf.newaxis, :] * K
        seg = tf.reshape(tf.where(valid[:, tf.newaxis], flat, G * K), [-1])
        x64 = tf.reshape(
            tf.tile(tf.cast(x, tf.float64)[:, tf.newaxis, :], [1, G, 1]), [-1, x.shape[1]]
        )
        sums = tf.math.unsorted_segment_sum(x64, seg, G * K + 1)[: G * K]
        counts = tf.math.unsorted_segment_sum(tf.ones_like(seg, tf.int64), seg, G * K + 1)[: G * K]
        masked = tf.where(valid[:, tf.newaxis], sq, tf.zeros_like(sq))
        inertia = tf.reduce_sum(tf.cast(masked, tf.float64), axis=0)
        far = _far(sq, valid, n_far, 0)
        return labels, sq, sums, counts, inertia, far

    return f


def _partials(xt, vt, centroids, bias, G, K, sums_mode):
    """Per row tile: labels [T,G], sq [T,G], sums [G*K,D] (f32 or f64), counts, inertia."""
    D = xt.shape[1]
    labels = _first_argmin(_scores(xt, centroids, bias, G, K), K)
    sq, diff = _dist(xt, centroids, labels, G, K)
    vmask = vt[:, tf.newaxis]
    inertia = tf.reduce_sum(tf.cast(tf.where(vmask, sq, 0.0), tf.float64), axis=0)  # [G]
    if sums_mode == "seg64":
        flat = labels + tf.range(G, dtype=tf.int32)[tf.newaxis, :] * K
        seg = tf.reshape(tf.where(vmask, flat, G * K), [-1])
        x64 = tf.cast(xt, tf.float64)
        if G > 1:
            x64 = tf.reshape(tf.tile(x64[:, tf.newaxis, :], [1, G, 1]), [-1, D])
        sums = tf.math.unsorted_segment_sum(x64, seg, G * K + 1)[: G * K]
        counts = tf.math.unsorted_segment_sum(tf.ones_like(seg), seg, G * K + 1)[: G * K]
        return labels, sq, sums, counts, inertia
    # one-hot [T, G, K] of valid rows; exact 0/1 in float32
    onehot = tf.cast(
        (labels[:, :, tf.newaxis] == tf.range(K, dtype=tf.int32)) & vmask[:, :, tf.newaxis],
        tf.float32,
    )
    counts = tf.cast(tf.reshape(tf.reduce_sum(onehot, axis=0), [G * K]), tf.int32)  # exact < 2^24
    if sums_mode in ("oh32", "oh64"):
        dt = tf.float64 if sums_mode == "oh64" else tf.float32
        oh = tf.cast(tf.reshape(onehot, [-1, G * K]), dt)
        sums = tf.matmul(oh, tf.cast(xt, dt), transpose_a=True)  # [G*K, D], all groups share x
    elif sums_mode == "oh32r":  # residuals x - c_label (small), c added back in float64
        sums = tf.reshape(tf.einsum("tgk,tgd->gkd", onehot, diff), [G * K, D])
    else:
        raise ValueError(sums_mode)
    return labels, sq, sums, counts, inertia


def body_fused(G, K, n_far, tile=0, sums="seg64", loop="map", far_chunk=1024):
    """Fused variants.

    tile=0: the whole batch at once. tile=T: rows in tiles of T (b % T == 0), either
    loop="map" (tf.map_fn -> a while loop: the [T, G*K] scores stay in cache) or
    loop="batched" (one batched op over [b/T, T, ...]: only the sums are per tile).
    sums: seg64 (float64 segment sum, exact), oh32 (one-hot matmul, float32 within a
    tile, float64 across tiles), oh32r (same on the residuals x - c_label, plus
    counts * c in float64), oh64 (one-hot matmul in float64).
    """

    def finish(labels, sq, sums, counts, inertia, valid, centroids):
        sums = tf.cast(sums, tf.float64)
        if sums_mode_residual:
            sums = sums + tf.cast(counts, tf.float64)[:, tf.newaxis] * tf.cast(
                centroids, tf.float64
            )
        far = _far(sq, valid, n_far, far_chunk)
        return labels, sq, sums, tf.cast(counts, tf.int64), inertia, far

    sums_mode_residual = sums == "oh32r"

    def f(x, valid, centroids, bias):
        b, D = x.shape
        if not tile or tile >= b:
            labels, sq, s, cnt, inertia = _partials(x, valid, centroids, bias, G, K, sums)
            return finish(labels, sq, s, cnt, inertia, valid, centroids)
        nt = b // tile
        assert nt * tile == b, (b, tile)
        xs = tf.reshape(x, [nt, tile, D])
        vs = tf.reshape(valid, [nt, tile])
        if loop == "map":
            sdt = tf.float64 if sums in ("seg64", "oh64") else tf.float32
            labels, sq, s, cnt, inertia = tf.map_fn(
                lambda a: _partials(a[0], a[1], centroids, bias, G, K, sums),
                (xs, vs),
                fn_output_signature=(tf.int32, tf.float32, sdt, tf.int32, tf.float64),
                parallel_iterations=1,
            )
            labels = tf.reshape(labels, [b, G])
            sq = tf.reshape(sq, [b, G])
        else:  # batched over tiles, no loop
            labels = _first_argmin(_scores(x, centroids, bias, G, K), K)  # [b, G]
            sq, diff = _dist(x, centroids, labels, G, K)
            vmask = valid[:, tf.newaxis]
            inertia = tf.reduce_sum(tf.cast(tf.where(vmask, sq, 0.0), tf.float64), axis=0)
            onehot = tf.cast(
                (labels[:, :, tf.newaxis] == tf.range(K, dtype=tf.int32)) & vmask[:, :, tf.newaxis],
                tf.float32,
            )  # [b, G, K]
            cnt = tf.cast(tf.reshape(tf.reduce_sum(onehot, axis=0), [G * K]), tf.int32)
            if sums == "oh32":
                s = tf.matmul(tf.reshape(onehot, [nt, tile, G * K]), xs, transpose_a=True)
            elif sums == "oh32r":
                s = tf.reshape(
                    tf.einsum(
                        "ntgk,ntgd->ngkd",
                        tf.reshape(onehot, [nt, tile, G, K]),
                        tf.reshape(diff, [nt, tile, G, D]),
                    ),
                    [nt, G * K, D],
                )
            else:
                raise ValueError(sums)
            return finish(
                labels,
                sq,
                tf.reduce_sum(tf.cast(s, tf.float64), axis=0),
                cnt,
                inertia,
                valid,
                centroids,
            )
        s = tf.reduce_sum(tf.cast(s, tf.float64), axis=0)
        return finish(
            labels,
            sq,
            s,
            tf.reduce_sum(cnt, axis=0),
            tf.reduce_sum(inertia, axis=0),
            valid,
            centroids,
        )

    return f


# ---- transposed layout: scores [G, K, T], reductions over K run across rows (vectorized)


def _scores_t(x, centroids, bias, G, K):
    """[G, K, T] scores, bit-identical to (||c||^2 + bias) - 2 * (c @ x^T)."""
    cnb = tf.reduce_sum(centroids * centroids, axis=1) + bias
    cross = tf.matmul(-2.0 * centroids, x, transpose_b=True)  # [G*K, T]
    return tf.reshape(cnb[:, tf.newaxis] + cross, [G, K, -1])


def _first_argmin_t(scores, K):
    """[G, T] argmin over axis 1 of [G, K, T], first index on ties."""
    m = tf.reduce_min(scores, axis=1, keepdims=True)
    iota = tf.range(K, dtype=tf.int32)[:, tf.newaxis]
    return tf.minimum(tf.reduce_min(tf.where(scores == m, iota, K), axis=1), K - 1)


def _dist_t(x, centroids, labels_t, G, K):
    """sq_dist [T, G] from the difference, in [G, D, T] layout (reductions over D vectorize)."""
    flat = labels_t + tf.range(G, dtype=tf.int32)[:, tf.newaxis] * K  # [G, T]
    ct = tf.transpose(centroids)  # [D, G*K]
    diff = tf.transpose(x)[tf.newaxis, :, :] - tf.transpose(tf.gather(ct, flat, axis=1), [1, 0, 2])
    return tf.transpose(tf.reduce_sum(diff * diff, axis=1))


def _sums_seg64(x, valid, labels, G, K):
    D = x.shape[1]
    flat = labels + tf.range(G, dtype=tf.int32)[tf.newaxis, :] * K
    seg = tf.reshape(tf.where(valid[:, tf.newaxis], flat, G * K), [-1])
    x64 = tf.cast(x, tf.float64)
    if G > 1:
        x64 = tf.reshape(tf.tile(x64[:, tf.newaxis, :], [1, G, 1]), [-1, D])
    sums = tf.math.unsorted_segment_sum(x64, seg, G * K + 1)[: G * K]
    counts = tf.math.unsorted_segment_sum(tf.ones_like(seg), seg, G * K + 1)[: G * K]
    return sums, tf.cast(counts, tf.int64)


def body_t(G, K, n_far, tile=0, sums="seg64", dist="row", argmin="first", far_chunk=1024):
    """Transposed-score variant: scores [G, K, rows], min/first-index over axis 1.

    tile=T: labels and sq_dist per T-row tile in a loop (scores [G*K, T] stay in cache);
    the exact float64 segment sums, inertia and far rows run once on the whole batch.
    """

    def assign(x, centroids, bias):
        st = _scores_t(x, centroids, bias, G, K)
        lt = _packed_argmin(st, K, 1) if argmin == "packed" else _first_argmin_t(st, K)
        labels = tf.transpose(lt)  # [rows, G]
        if dist == "row":
            sq, _ = _dist(x, centroids, labels, G, K)
        else:
            sq = _dist_t(x, centroids, lt, G, K)
        return labels, sq

    def f(x, valid, centroids, bias):
        b, D = x.shape
        if tile and tile < b:
            labels, sq = tf.map_fn(
                lambda a: assign(a, centroids, bias),
                tf.reshape(x, [b // tile, tile, D]),
                parallel_iterations=1,
                fn_output_signature=(tf.int32, tf.float32),
            )
            labels, sq = tf.reshape(labels, [b, G]), tf.reshape(sq, [b, G])
        else:
            labels, sq = assign(x, centroids, bias)
        s, counts = _sums_seg64(x, valid, labels, G, K)
        inertia = tf.reduce_sum(
            tf.cast(tf.where(valid[:, tf.newaxis], sq, 0.0), tf.float64), axis=0
        )
        return labels, sq, s, counts, inertia, _far(sq, valid, n_far, far_chunk)

    return f


# ---- packed (score, index) key: one int64 min reduction gives min and first index


def _packed_argmin(scores, K, axis):
    """First-index argmin over `axis` via one int64 min of (order-preserving score bits << 32 | k).

    Same result as tf.argmin on non-NaN input (first index on ties; -0.0 == +0.0).
    """
    s = tf.where(scores == 0.0, tf.zeros_like(scores), scores)  # -0.0 -> +0.0
    i = tf.bitcast(s, tf.int32)
    key = tf.bitwise.bitwise_xor(
        i, tf.bitwise.bitwise_and(tf.bitwise.right_shift(i, 31), tf.constant(0x7FFFFFFF, tf.int32))
    )
    shape = [1] * len(scores.shape)
    shape[axis] = K
    idx = tf.reshape(tf.range(K, dtype=tf.int64), shape)
    packed = tf.bitwise.bitwise_or(tf.bitwise.left_shift(tf.cast(key, tf.int64), 32), idx)
    return tf.cast(tf.bitwise.bitwise_and(tf.reduce_min(packed, axis=axis), 0xFFFFFFFF), tf.int32)
