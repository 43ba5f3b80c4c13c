"""Best variant found (kernel_lab, issue #5): drop-in body for the replica step.

Wrap with tf.function(jit_compile=True). G, K, n_far, tile are static Python ints.
"""

import tensorflow as tf


def replica_step(x, valid, centroids, bias, *, G, K, n_far=16, tile=8192, far_chunk=1024):
    """x f32 [b, D], valid bool [b], centroids f32 [G*K, D], bias f32 [G*K] (0 or +inf).

    Returns labels i32 [b, G], sq_dist f32 [b, G], sums f64 [G*K, D], counts i64 [G*K],
    inertia f64 [G], far i32 [G, min(n_far, b)].
    """
    b, D = x.shape
    cnb = tf.reduce_sum(centroids * centroids, axis=1) + bias  # [G*K]
    cm2 = -2.0 * centroids  # exact scaling
    goff = tf.range(G, dtype=tf.int32) * K
    iota_k = tf.range(K, dtype=tf.int32)[:, tf.newaxis]

    def assign(xt):  # one row tile [T, D] -> labels [T, G], sq [T, G]
        # Scores transposed, [G, K, T]: the reductions over K run across contiguous rows.
        # Bit-identical to (||c||^2 + bias) - 2 x.c for the same matmul values.
        s = tf.reshape(cnb[:, tf.newaxis] + tf.matmul(cm2, xt, transpose_b=True), [G, K, -1])
        m = tf.reduce_min(s, axis=1, keepdims=True)
        lt = tf.minimum(tf.reduce_min(tf.where(s == m, iota_k, K), axis=1), K - 1)  # first index
        labels = tf.transpose(lt)  # [T, G]
        diff = xt[:, tf.newaxis, :] - tf.gather(centroids, labels + goff[tf.newaxis, :])
        return labels, tf.reduce_sum(diff * diff, axis=-1)

    if tile and b > tile and b % tile == 0:  # tiles keep the [G*K, T] scores in L2
        labels, sq = tf.map_fn(
            assign,
            tf.reshape(x, [b // tile, tile, D]),
            fn_output_signature=(tf.int32, tf.float32),
            parallel_iterations=1,
        )
        labels, sq = tf.reshape(labels, [b, G]), tf.reshape(sq, [b, G])
    else:
        labels, sq = assign(x)

    vmask = valid[:, tf.newaxis]
    seg = tf.reshape(
        tf.where(vmask, labels + goff[tf.newaxis, :], G * K), [-1]
    )  # padding -> dropped
    x64 = tf.cast(x, tf.float64)
    if G > 1:
        x64 = tf.reshape(tf.tile(x64[:, tf.newaxis, :], [1, G, 1]), [-1, D])
    sums = tf.math.unsorted_segment_sum(x64, seg, G * K + 1)[: G * K]  # exact: f32 data, f64 adds
    counts = tf.cast(
        tf.math.unsorted_segment_sum(tf.ones_like(seg), seg, G * K + 1)[: G * K], tf.int64
    )
    inertia = tf.reduce_sum(tf.cast(tf.where(vmask, sq, 0.0), tf.float64), axis=0)

    # far: two-stage top_k (per 1024-row chunk, then over the candidates); same values and
    # tie order (lower row first) as one top_k; padding rows carry -1.
    nf = min(n_far, b)
    v = tf.transpose(tf.where(vmask, sq, -tf.ones_like(sq)))  # [G, b]
    if b > far_chunk and b % far_chunk == 0:
        r, k1 = b // far_chunk, min(nf, far_chunk)
        vv, ii = tf.math.top_k(tf.reshape(v, [G, r, far_chunk]), k1)
        ii = ii + (tf.range(r, dtype=tf.int32) * far_chunk)[tf.newaxis, :, tf.newaxis]
        _, j = tf.math.top_k(tf.reshape(vv, [G, r * k1]), nf)
        far = tf.gather(tf.reshape(ii, [G, r * k1]), j, batch_dims=1)
    else:
        far = tf.math.top_k(v, nf).indices
    return labels, sq, sums, counts, inertia, far
