"""CPU kernels of the guided filter: box sums by running sums, fused with the elementwise steps.

Imported lazily by :mod:`hazefree.ops` (numba compiles each kernel on first use and caches it on
disk, so importing hazefree compiles nothing). Every window statistic is a float64 sum; inputs and
outputs may be float32 or float64. Windows are clipped at the border and normalised by their true
size, as in :mod:`hazefree.ops`.

The filter (He et al. 2013, Alg. 1; Ma et al. 2021, Alg. 1) is two box-filter stages:

1. window sums of I, I I^T, x and I x, then per pixel a = (Sigma + eps U)^-1 cov(I, x) and
   b = mean(x) - a . mean(I)   (Alg. 1, lines 1-8);
2. window sums of a and b, then y = (S(a) . I + S(b)) / |w|   (lines 9-11).

One kernel walks down a band of rows and runs both stages together: each stage keeps the column
sums of its window rows (one row enters, one leaves per step) and sums them along the row with a
running sum, so the cost per pixel does not depend on r; stage 1 runs r + 1 rows ahead of stage 2
and hands its a and b rows over in a ring of 2 r + 2 rows. No full-size temporary is written: the
output is the only image-sized array (fresh image-sized arrays cost as much as the arithmetic here,
in page faults).

Backward (Ma et al. 2021, Alg. 2, gradient w.r.t. x). With u = g / |w| for the upstream gradient g,
Alg. 2 lines 4-6 read

    grad_b = S(u),  grad_a = S(u I) - grad_b mean(I),  c = (Sigma + eps U)^-1 grad_a,
    grad_x = S(c / |w|) . I + S((grad_b - c . mean(I)) / |w|)

where S is the (unnormalised) window sum, the adjoint of the window mean being S(. / |w|). Stage 1
run on u in place of x gives a = c / |w| and b = (grad_b - c . mean(I)) / |w| exactly, so the
backward is the same kernel on u, with stage 2 not dividing by |w| (``mode`` selects the variant).
For the coefficients alone (the fast guided filter), the gradients G_a, G_b of mean_a, mean_b give
grad_b = S(G_b / |w|), and S(u I) is replaced by S(G_a / |w|).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")

# stage 1: what plays the role of x and of I x
X_IS_SRC = 0  # forward: x = src, q = I x
X_IS_SRC_OVER_COUNT = 1  # backward of the filter: x = g / |w|, q = I x
X_AND_Q_GIVEN = 2  # backward of the coefficients: x = G_b / |w|, q = G_a / |w|
# stage 2: what is written
APPLY_MEAN = 0  # y = (S(a) . I + S(b)) / |w|
APPLY_SUM = 1  # y = S(a) . I + S(b)   (backward)
MEANS_ONLY = 2  # mean_a = S(a) / |w|, mean_b = S(b) / |w|, not applied

@_jit
def _inverse_counts(n, r):
    """1 / number of indices in the window [i - r, i + r] clipped to [0, n)."""
    out = np.empty(n)
    for i in range(n):
        out[i] = 1.0 / (min(i + r, n - 1) - max(i - r, 0) + 1)
    return out


@_jit
def _window_sums(col, out, rh):
    """out[x] = col[x + 1] + ... + col[x + 2 rh + 1]: the sum over the clipped window [x - rh, x + rh]
    of a row of column sums stored with rh + 1 zeros on the left and rh on the right.

    A running sum is a chain of dependent additions; the row is cut into four segments whose
    chains are independent, so the CPU overlaps them.
    """
    w = out.shape[0]
    span = 2 * rh + 1
    if w < 64:
        s = 0.0
        for j in range(span):
            s += col[j]
        for x in range(w):
            s += col[x + span] - col[x]
            out[x] = s
        return
    seg = (w + 3) // 4
    p1, p2, p3 = seg, 2 * seg, 3 * seg
    s0 = s1 = s2 = s3 = 0.0
    for j in range(span):
        s0 += col[j]
        s1 += col[p1 + j]
        s2 += col[p2 + j]
        s3 += col[p3 + j]
    for i in range(w - p3):
        s0 += col[i + span] - col[i]
        s1 += col[p1 + i + span] - col[p1 + i]
        s2 += col[p2 + i + span] - col[p2 + i]
        s3 += col[p3 + i + span] - col[p3 + i]
        out[i] = s0
        out[p1 + i] = s1
        out[p2 + i] = s2
        out[p3 + i] = s3
    for i in range(w - p3, seg):
        s0 += col[i + span] - col[i]
        s1 += col[p1 + i + span] - col[p1 + i]
        s2 += col[p2 + i + span] - col[p2 + i]
        out[i] = s0
        out[p1 + i] = s1
        out[p2 + i] = s2


@_jit
def _all_window_sums(cols, out, rh):
    for k in range(out.shape[0]):
        _window_sums(cols[k], out[k], rh)


@_jit
def _accumulate(col, values, sign):
    for x in range(values.shape[0]):
        col[x] += sign * values[x]



# ---------------------------------------------------------------------------------------------
# stage 1, gray guide: column-sum channels 0: I, 1: I^2, then per src channel c: x_c, q_c
# ---------------------------------------------------------------------------------------------


@_jit
def _gray_rows(cols, guide, src, extra, mode, n, y, sign, iny, inx, off):
    """Add (sign = 1) or remove (sign = -1) row y to the column sums of I, I^2 and, per channel
    c, x_c and q_c (channels 0, 1, 2 + 2c, 3 + 2c)."""
    w = guide.shape[3]
    gi = guide[n, 0, y]
    c0, c1 = cols[0, off : off + w], cols[1, off : off + w]
    for x in range(w):
        i = np.float64(gi[x])
        c0[x] += sign * i
        c1[x] += sign * (i * i)
    sy = iny[y]
    for c in range(src.shape[1]):
        xs, ex = src[n, c, y], extra[n, c, 0, y] if mode == X_AND_Q_GIVEN else extra[0, 0, 0, 0]
        cx, cq = cols[2 + 2 * c, off : off + w], cols[3 + 2 * c, off : off + w]
        if mode == X_IS_SRC:
            for x in range(w):
                v = np.float64(xs[x])
                cx[x] += sign * v
                cq[x] += sign * (np.float64(gi[x]) * v)
        elif mode == X_IS_SRC_OVER_COUNT:
            for x in range(w):
                v = np.float64(xs[x]) * (sy * inx[x])
                cx[x] += sign * v
                cq[x] += sign * (np.float64(gi[x]) * v)
        else:
            for x in range(w):
                inv_n = sy * inx[x]
                cx[x] += sign * (np.float64(xs[x]) * inv_n)
                cq[x] += sign * (ex[x] * inv_n)



# ---------------------------------------------------------------------------------------------
# stage 1, colour guide: channels 0-2: I_p, 3-8: I_p I_q (p <= q), then per src channel c: x_c and
# q_{c,p} (4 channels from 9 + 4c)
# ---------------------------------------------------------------------------------------------


@_jit
def _colour_rows(cols, guide, src, extra, mode, n, y, sign, iny, inx, off):
    w = guide.shape[3]
    g0, g1, g2 = guide[n, 0, y], guide[n, 1, y], guide[n, 2, y]
    c0, c1, c2 = cols[0, off : off + w], cols[1, off : off + w], cols[2, off : off + w]
    c00, c01, c02 = cols[3, off : off + w], cols[4, off : off + w], cols[5, off : off + w]
    c11, c12, c22 = cols[6, off : off + w], cols[7, off : off + w], cols[8, off : off + w]
    for x in range(w):
        i0, i1, i2 = np.float64(g0[x]), np.float64(g1[x]), np.float64(g2[x])
        c0[x] += sign * i0
        c1[x] += sign * i1
        c2[x] += sign * i2
        c00[x] += sign * (i0 * i0)
        c01[x] += sign * (i0 * i1)
        c02[x] += sign * (i0 * i2)
        c11[x] += sign * (i1 * i1)
        c12[x] += sign * (i1 * i2)
        c22[x] += sign * (i2 * i2)
    sy = iny[y]
    for c in range(src.shape[1]):
        k = 9 + 4 * c
        xs = src[n, c, y]
        cx, cq0 = cols[k, off : off + w], cols[k + 1, off : off + w]
        cq1, cq2 = cols[k + 2, off : off + w], cols[k + 3, off : off + w]
        if mode == X_AND_Q_GIVEN:
            e0, e1, e2 = extra[n, c, 0, y], extra[n, c, 1, y], extra[n, c, 2, y]
            for x in range(w):
                inv_n = sy * inx[x]
                cx[x] += sign * (np.float64(xs[x]) * inv_n)
                cq0[x] += sign * (e0[x] * inv_n)
                cq1[x] += sign * (e1[x] * inv_n)
                cq2[x] += sign * (e2[x] * inv_n)
        else:
            over_count = mode == X_IS_SRC_OVER_COUNT
            for x in range(w):
                v = np.float64(xs[x])
                if over_count:
                    v *= sy * inx[x]
                cx[x] += sign * v
                cq0[x] += sign * (np.float64(g0[x]) * v)
                cq1[x] += sign * (np.float64(g1[x]) * v)
                cq2[x] += sign * (np.float64(g2[x]) * v)



@_jit
def _stage1_rows(cols, guide, src, extra, mode, n, y, sign, iny, inx, off):
    if guide.shape[1] == 1:
        _gray_rows(cols, guide, src, extra, mode, n, y, sign, iny, inx, off)
    else:
        _colour_rows(cols, guide, src, extra, mode, n, y, sign, iny, inx, off)


@_jit
def _stage1_advance(cols, guide, src, extra, mode, n, row, rv, iny, inx, off):
    """Move the stage-1 column sums from the window of ``row`` to that of ``row + 1``."""
    h = guide.shape[2]
    if row + rv + 1 < h:
        _stage1_rows(cols, guide, src, extra, mode, n, row + rv + 1, 1.0, iny, inx, off)
    if row - rv >= 0:
        _stage1_rows(cols, guide, src, extra, mode, n, row - rv, -1.0, iny, inx, off)


@_jit
def _coefficient_row(sums, stats, eps, sy, inx, a_ring, b_ring, slot):
    """a and b of one row from its stage-1 window sums, into ring ``slot``."""
    c_n, g_n, w = a_ring.shape[0], a_ring.shape[1], a_ring.shape[3]
    if g_n == 1:
        s_i, s_ii = sums[0], sums[1]
        for c in range(c_n):
            s_x, s_q = sums[2 + 2 * c], sums[3 + 2 * c]
            a_row, b_row = a_ring[c, 0, slot], b_ring[c, slot]
            for x in range(w):
                inv_n = sy * inx[x]
                mean_i = s_i[x] * inv_n
                var = max(s_ii[x] * inv_n - mean_i * mean_i, 0.0)
                mean_x = s_x[x] * inv_n
                a = (s_q[x] * inv_n - mean_i * mean_x) / (var + eps)
                a_row[x] = a
                b_row[x] = mean_x - a * mean_i
        return
    # colour: mean I, then (Sigma + eps U)^-1 (6 upper entries) per pixel, shared by all c
    m0, m1, m2, t00, t01, t02, t11, t12, t22 = stats[0], stats[1], stats[2], stats[3], stats[4], stats[5], stats[6], stats[7], stats[8]
    for x in range(w):
        inv_n = sy * inx[x]
        u0, u1, u2 = sums[0, x] * inv_n, sums[1, x] * inv_n, sums[2, x] * inv_n
        s00 = max(sums[3, x] * inv_n - u0 * u0, 0.0) + eps
        s01 = sums[4, x] * inv_n - u0 * u1
        s02 = sums[5, x] * inv_n - u0 * u2
        s11 = max(sums[6, x] * inv_n - u1 * u1, 0.0) + eps
        s12 = sums[7, x] * inv_n - u1 * u2
        s22 = max(sums[8, x] * inv_n - u2 * u2, 0.0) + eps
        # inverse of the symmetric 3 x 3 matrix by its adjugate
        d00 = s11 * s22 - s12 * s12
        d01 = s02 * s12 - s01 * s22
        d02 = s01 * s12 - s02 * s11
        inv_det = 1.0 / (s00 * d00 + s01 * d01 + s02 * d02)
        m0[x], m1[x], m2[x] = u0, u1, u2
        t00[x], t01[x], t02[x] = d00 * inv_det, d01 * inv_det, d02 * inv_det
        t11[x] = (s00 * s22 - s02 * s02) * inv_det
        t12[x] = (s01 * s02 - s00 * s12) * inv_det
        t22[x] = (s00 * s11 - s01 * s01) * inv_det
    for c in range(c_n):
        k = 9 + 4 * c
        s_x, s_q0, s_q1, s_q2 = sums[k], sums[k + 1], sums[k + 2], sums[k + 3]
        a0_row, a1_row, a2_row, b_row = a_ring[c, 0, slot], a_ring[c, 1, slot], a_ring[c, 2, slot], b_ring[c, slot]
        for x in range(w):
            inv_n = sy * inx[x]
            mean_x = s_x[x] * inv_n
            v0 = s_q0[x] * inv_n - m0[x] * mean_x
            v1 = s_q1[x] * inv_n - m1[x] * mean_x
            v2 = s_q2[x] * inv_n - m2[x] * mean_x
            a0 = t00[x] * v0 + t01[x] * v1 + t02[x] * v2
            a1 = t01[x] * v0 + t11[x] * v1 + t12[x] * v2
            a2 = t02[x] * v0 + t12[x] * v1 + t22[x] * v2
            a0_row[x], a1_row[x], a2_row[x] = a0, a1, a2
            b_row[x] = mean_x - (a0 * m0[x] + a1 * m1[x] + a2 * m2[x])


@_jit
def _ab_rows(cols, a_ring, b_ring, slot, sign, off):
    """Add or remove one ring row of a and b to the stage-2 column sums (G + 1 channels per c)."""
    c_n, g_n, w = a_ring.shape[0], a_ring.shape[1], a_ring.shape[3]
    for c in range(c_n):
        for g in range(g_n):
            _accumulate(cols[c * (g_n + 1) + g, off : off + w], a_ring[c, g, slot], sign)
        _accumulate(cols[c * (g_n + 1) + g_n, off : off + w], b_ring[c, slot], sign)


@_jit
def _output_row(sums, guide, out_mode, out, mean_a, mean_b, n, y, sy, inx):
    """Stage 2 for row y from its window sums of a and b."""
    c_n, g_n, w = out.shape[1] if out_mode != MEANS_ONLY else mean_b.shape[1], guide.shape[1], guide.shape[3]
    for c in range(c_n):
        k = c * (g_n + 1)
        s_b = sums[k + g_n]
        if out_mode == MEANS_ONLY:
            for g in range(g_n):
                s_a, m_a = sums[k + g], mean_a[n, c, g, y]
                for x in range(w):
                    m_a[x] = s_a[x] * (sy * inx[x])
            m_b = mean_b[n, c, y]
            for x in range(w):
                m_b[x] = s_b[x] * (sy * inx[x])
            continue
        o = out[n, c, y]
        if g_n == 1:
            s_a, gi = sums[k], guide[n, 0, y]
            if out_mode == APPLY_MEAN:
                for x in range(w):
                    o[x] = (s_a[x] * gi[x] + s_b[x]) * (sy * inx[x])
            else:
                for x in range(w):
                    o[x] = s_a[x] * gi[x] + s_b[x]
        else:
            s_a0, s_a1, s_a2 = sums[k], sums[k + 1], sums[k + 2]
            g0, g1, g2 = guide[n, 0, y], guide[n, 1, y], guide[n, 2, y]
            scale = sy if out_mode == APPLY_MEAN else 1.0
            for x in range(w):
                v = s_a0[x] * g0[x] + s_a1[x] * g1[x] + s_a2[x] * g2[x] + s_b[x]
                o[x] = v * (scale * inx[x]) if out_mode == APPLY_MEAN else v


@_jit
def _enter_row(cols1, sums1, stats, cols2, a_ring, b_ring, guide, src, extra, mode, eps, n, row, last, rv, rh,
               iny, inx, off):
    """a and b of ``row`` (the row whose window cols1 sums) into the ring and the stage-2 column
    sums; then cols1 moves on to the next row unless ``row`` is the ``last`` one needed."""
    _all_window_sums(cols1, sums1, rh)
    slot = row % a_ring.shape[2]
    _coefficient_row(sums1, stats, eps, iny[row], inx, a_ring, b_ring, slot)
    _ab_rows(cols2, a_ring, b_ring, slot, 1.0, off)
    if row < last:
        _stage1_advance(cols1, guide, src, extra, mode, n, row, rv, iny, inx, off)
        return row + 1
    return row


@_jit
def _filter_band(guide, src, extra, mode, out_mode, r, eps, out, mean_a, mean_b, n, y0, y1):
    """Both stages for output rows [y0, y1) of image n (see the module docstring)."""
    h, w = guide.shape[2], guide.shape[3]
    g_n, c_n = guide.shape[1], src.shape[1]
    rv, rh = min(r, h), min(r, w)
    iny, inx = _inverse_counts(h, rv), _inverse_counts(w, rh)
    off = rh + 1
    k1 = 2 + 2 * c_n if g_n == 1 else 9 + 4 * c_n
    k2 = c_n * (g_n + 1)
    cols1, sums1 = np.zeros((k1, w + 2 * rh + 1)), np.empty((k1, w))
    cols2, sums2 = np.zeros((k2, w + 2 * rh + 1)), np.empty((k2, w))
    stats = np.empty((9, w))
    ring = min(2 * rv + 2, h)
    a_ring, b_ring = np.empty((c_n, g_n, ring, w)), np.empty((c_n, ring, w))

    first, last = max(0, y0 - rv), min(h - 1, y1 - 1 + rv)  # rows of a and b that stage 2 reads
    for y in range(max(0, first - rv), min(h, first + rv + 1)):
        _stage1_rows(cols1, guide, src, extra, mode, n, y, 1.0, iny, inx, off)
    row = first  # the row whose window cols1 sums
    for q in range(first, min(h, y0 + rv + 1)):  # stage-2 window of y0
        row = _enter_row(cols1, sums1, stats, cols2, a_ring, b_ring, guide, src, extra, mode, eps, n, row,
                         last, rv, rh, iny, inx, off)
    for y in range(y0, y1):
        _all_window_sums(cols2, sums2, rh)
        _output_row(sums2, guide, out_mode, out, mean_a, mean_b, n, y, iny[y], inx)
        if y + 1 == y1:
            break
        q = y + rv + 1  # enters the window of y + 1
        if q < h:
            row = _enter_row(cols1, sums1, stats, cols2, a_ring, b_ring, guide, src, extra, mode, eps, n, row,
                             last, rv, rh, iny, inx, off)
        if y - rv >= 0:  # leaves it
            _ab_rows(cols2, a_ring, b_ring, (y - rv) % ring, -1.0, off)


# ---------------------------------------------------------------------------------------------
# driver: bands of rows on a thread pool (the kernel releases the GIL)
# ---------------------------------------------------------------------------------------------

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="hazefree-gf")
        return _POOL


# below this many pixels per thread, handing work to the pool costs more than it saves
_MIN_PIXELS_PER_THREAD = 2**18


def _bands(height: int, width: int, radius: int, threads: int) -> list[tuple[int, int]]:
    # a band repeats stage 1 on the r rows beyond each of its edges: bands of at least 2 r rows
    threads = min(threads, height * width // _MIN_PIXELS_PER_THREAD)
    count = max(1, min(threads, height // max(64, 2 * min(radius, height))))
    edges = [round(i * height / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def run_bands(kernel, args: tuple, jobs: list[tuple], threads: int) -> None:
    """kernel(*args, *job) for every job; on the thread pool when there are several threads."""
    if threads <= 1 or len(jobs) == 1:
        for job in jobs:
            kernel(*args, *job)
        return
    for future in [_pool().submit(kernel, *args, *job) for job in jobs]:
        future.result()


_NO_ARRAY = np.zeros((1, 1, 1, 1, 1))


def guided_filter(guide, src, radius, eps, mode, out_mode, threads, out_dtype=np.float64, extra=None):
    """The filter (or its adjoint, or the coefficient means) of N x C x H x W arrays.

    guide: N x G x H x W (G = 1 or 3), src: N x C x H x W, float32 or float64, C-contiguous;
    ``extra`` (N x C x G x H x W float64) only with X_AND_Q_GIVEN. Returns the N x C x H x W output
    in ``out_dtype``, or (mean_a N x C x G x H x W, mean_b N x C x H x W) float64 with MEANS_ONLY.
    Bands of rows of every image run in parallel on ``threads`` threads.
    """
    n, c, h, w = src.shape
    g = guide.shape[1]
    if out_mode == MEANS_ONLY:
        out = _NO_ARRAY.reshape(1, 1, 1, 1)
        mean_a, mean_b = np.empty((n, c, g, h, w)), np.empty((n, c, h, w))
    else:
        out = np.empty((n, c, h, w), dtype=out_dtype)
        mean_a, mean_b = _NO_ARRAY, _NO_ARRAY.reshape(1, 1, 1, 1)
    args = (guide, src, _NO_ARRAY if extra is None else extra, mode, out_mode, radius, float(eps), out, mean_a, mean_b)
    run_bands(_filter_band, args, [(i, y0, y1) for i in range(n) for y0, y1 in _bands(h, w, radius, threads)], threads)
    return (mean_a, mean_b) if out_mode == MEANS_ONLY else out


# ---------------------------------------------------------------------------------------------
# DCP inference: the elementwise steps around the filter, one pass each over the image
# ---------------------------------------------------------------------------------------------


@_jit
def _gray_min_rows(image, luma, a, gray, dark, n, y0, y1):
    w0, w1, w2 = luma[0], luma[1], luma[2]
    a0, a1, a2 = a[n, 0], a[n, 1], a[n, 2]
    for y in range(y0, y1):
        r, g, b, o_gray, o_min = image[n, 0, y], image[n, 1, y], image[n, 2, y], gray[n, 0, y], dark[n, 0, y]
        for x in range(image.shape[3]):
            o_gray[x] = (r[x] * w0 + g[x] * w1) + b[x] * w2
            o_min[x] = min(min(r[x] / a0, g[x] / a1), b[x] / a2)


def gray_and_scaled_min(image, luma, a, threads):
    """(luma-weighted gray, min over channels of image / a), each N x 1 x H x W, of an N x 3 x H x W
    ``image``, weights ``luma`` (3,) and airlight ``a`` (N x 3), all of one float dtype: the
    operations of :func:`hazefree.ops.rgb_to_gray` and of the minimum of the quotients, in the same
    order, so the same values."""
    n, _, h, w = image.shape
    gray, dark = np.empty((n, 1, h, w), image.dtype), np.empty((n, 1, h, w), image.dtype)
    run_bands(_gray_min_rows, (image, luma, a, gray, dark), _row_jobs(n, h, w, threads), threads)
    return gray, dark


def _row_jobs(n: int, h: int, w: int, threads: int) -> list[tuple[int, int, int]]:
    threads = max(1, min(threads, h * w // _MIN_PIXELS_PER_THREAD))
    rows = -(-h // threads)
    return [(i, y0, min(h, y0 + rows)) for i in range(n) for y0 in range(0, h, rows)]


@_jit
def _recover_rows(hazy, t, a, t_min, out, n, y0, y1):
    for c in range(hazy.shape[1]):
        ac = a[n, c]
        for y in range(y0, y1):
            i_row, t_row, o_row = hazy[n, c, y], t[n, 0, y], out[n, c, y]
            for x in range(hazy.shape[3]):
                v = (i_row[x] - ac) / max(t_row[x], t_min) + ac
                o_row[x] = min(max(v, 0.0), 1.0)  # exact: v itself, 0 or 1


def recover(hazy, t, a, t_min, threads):
    """clip((I - A) / max(t, t_min) + A, 0, 1) (Ma et al. 2021, eq. 42) of N x 3 x H x W ``hazy``,
    N x 1 x H x W ``t`` and N x 3 ``a``, all of one float dtype, in that dtype: the operations of
    :func:`hazefree.physics.remove_haze` in the same order, so the same values."""
    n, _, h, w = hazy.shape
    out = np.empty_like(hazy)
    run_bands(_recover_rows, (hazy, t, a, hazy.dtype.type(t_min), out), _row_jobs(n, h, w, threads), threads)
    return out
