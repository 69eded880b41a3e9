"""Triton kernels of the SIFA operator (imported only when the Triton backend first runs).

See :mod:`sifa_hub.ops.triton_backend` for the algorithm and the Python entry points.
"""

import triton
import triton.language as tl

__all__ = ["sifa_backward_kernel", "sifa_forward_kernel"]


@triton.jit
def _corners(ph, pw, H, W):
    """Integer corner (top-left) and fractions of bilinear points ``(BLOCK_P,)``; ``valid`` = some corner in frame."""
    valid = (ph >= -1) & (ph < H) & (pw >= -1) & (pw < W)
    ph = tl.minimum(tl.maximum(ph, -2.0), H + 1.0)  # keep the integer conversion in range
    pw = tl.minimum(tl.maximum(pw, -2.0), W + 1.0)
    h0f = tl.floor(ph)
    w0f = tl.floor(pw)
    return valid, h0f.to(tl.int32), w0f.to(tl.int32), ph - h0f, pw - w0f


@triton.jit
def _position(
    off_ptr,
    off_base,
    k,
    h,
    w,
    mask_p,
    pix,
    HW,
    STEPS,
    K: tl.constexpr,
    DIL: tl.constexpr,
    PAD: tl.constexpr,
    HAS_OFF: tl.constexpr,
    ACC: tl.constexpr,
):
    """Sample position ``(row, col)`` of kernel position ``k`` for pixels ``(h, w)``."""
    ph = (h - PAD + (k // K) * DIL).to(ACC)
    pw = (w - PAD + (k % K) * DIL).to(ACC)
    if HAS_OFF:
        row_ptr = off_ptr + off_base + (2 * k * STEPS) * HW + pix
        ph += tl.load(row_ptr, mask=mask_p, other=0.0).to(ACC)
        pw += tl.load(row_ptr + STEPS * HW, mask=mask_p, other=0.0).to(ACC)
    return ph, pw


@triton.jit
def _load_corner(keys_ptr, key_base, r, c, valid, H, W, C, offs_c, mask_c):
    """``(BLOCK_P, BLOCK_C)`` values of corner ``(r, c)`` (0 outside the frame) and its in-frame mask."""
    inside = valid & (r >= 0) & (r < H) & (c >= 0) & (c < W)
    ptr = keys_ptr + key_base + ((r * W + c).to(tl.int64) * C)[:, None] + offs_c[None, :]
    return tl.load(ptr, mask=inside[:, None] & mask_c[None, :], other=0.0), inside


@triton.jit
def _sample(keys_ptr, key_base, ph, pw, H, W, C, offs_c, mask_c, ACC: tl.constexpr):
    """Bilinear samples ``(BLOCK_P, BLOCK_C)`` at ``(ph, pw)`` with zero padding."""
    valid, h0, w0, lh, lw = _corners(ph, pw, H, W)
    v00, _ = _load_corner(keys_ptr, key_base, h0, w0, valid, H, W, C, offs_c, mask_c)
    v01, _ = _load_corner(keys_ptr, key_base, h0, w0 + 1, valid, H, W, C, offs_c, mask_c)
    v10, _ = _load_corner(keys_ptr, key_base, h0 + 1, w0, valid, H, W, C, offs_c, mask_c)
    v11, _ = _load_corner(keys_ptr, key_base, h0 + 1, w0 + 1, valid, H, W, C, offs_c, mask_c)
    top = v00.to(ACC) * (1 - lw)[:, None] + v01.to(ACC) * lw[:, None]
    bottom = v10.to(ACC) * (1 - lw)[:, None] + v11.to(ACC) * lw[:, None]
    return top * (1 - lh)[:, None] + bottom * lh[:, None]


@triton.jit
def _pick(tile, kk, k):
    """Column ``k`` of a ``(BLOCK_P, KK)`` tile."""
    return tl.sum(tl.where(kk[None, :] == k, tile, 0.0), axis=1)


@triton.jit
def _correlations(
    x_ptr,
    keys_ptr,
    off_ptr,
    gy_ptr,
    q_base,
    key_base,
    off_base,
    c_start,
    h,
    w,
    pix,
    mask_p,
    kk,
    C,
    H,
    W,
    HW,
    T,
    STEPS,
    CG,
    inv_c,
    K: tl.constexpr,
    DIL: tl.constexpr,
    PAD: tl.constexpr,
    HAS_OFF: tl.constexpr,
    WITH_GRAD: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    KK: tl.constexpr,
    ACC: tl.constexpr,
):
    """``(BLOCK_P, KK)`` correlations of one channel group and, ``WITH_GRAD``, ``Σ_c grad_y · sample``."""
    corr = tl.zeros((BLOCK_P, KK), dtype=ACC)
    dots = tl.zeros((BLOCK_P, KK), dtype=ACC)
    for c0 in range(0, CG, BLOCK_C):
        offs_c = c_start + c0 + tl.arange(0, BLOCK_C)
        mask_c = c0 + tl.arange(0, BLOCK_C) < CG
        mask = mask_p[:, None] & mask_c[None, :]
        native = q_base + offs_c[None, :].to(tl.int64) * T * HW + pix[:, None]  # (B, C, T, H, W) addresses
        q = tl.load(x_ptr + native, mask=mask, other=0.0).to(ACC)
        if WITH_GRAD:
            gy = tl.load(gy_ptr + native, mask=mask, other=0.0).to(ACC)
        for k in tl.static_range(K * K):
            ph, pw = _position(off_ptr, off_base, k, h, w, mask_p, pix, HW, STEPS, K, DIL, PAD, HAS_OFF, ACC)
            s = _sample(keys_ptr, key_base, ph, pw, H, W, C, offs_c, mask_c, ACC)
            corr += tl.where(kk[None, :] == k, tl.sum(q * s, axis=1)[:, None], 0.0)
            if WITH_GRAD:
                dots += tl.where(kk[None, :] == k, tl.sum(gy * s, axis=1)[:, None], 0.0)
    return corr * inv_c, dots


@triton.jit
def _weights(corr, kk, scale, SOFTMAX: tl.constexpr, K: tl.constexpr):
    """Sample weights ``(BLOCK_P, KK)``: the correlations, or their softmax over k."""
    if SOFTMAX:
        z = tl.where(kk[None, :] < K * K, corr * scale, float("-inf"))
        z = tl.exp(z - tl.max(z, axis=1)[:, None])
        return z / tl.sum(z, axis=1)[:, None]
    return corr


@triton.jit
def sifa_forward_kernel(
    x_ptr,
    keys_ptr,
    off_ptr,
    y_ptr,
    C,
    H,
    W,
    T,
    CG,
    G,
    inv_c,
    scale,
    K: tl.constexpr,
    DIL: tl.constexpr,
    PAD: tl.constexpr,
    HAS_OFF: tl.constexpr,
    SOFTMAX: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    KK: tl.constexpr,
    ACC: tl.constexpr,
):
    HW = H * W
    STEPS = T - 1
    n = tl.program_id(1)  # image = (batch, step)
    b = n // STEPS
    step = n % STEPS
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = pix < HW
    h = pix // W
    w = pix % W
    kk = tl.arange(0, KK)
    q_base = (b.to(tl.int64) * C * T + step) * HW  # + c * T * HW + pix
    key_base = n.to(tl.int64) * HW * C
    off_base = (b.to(tl.int64) * 2 * K * K * STEPS + step) * HW
    for gi in range(G):
        c_start = gi * CG
        corr, _ = _correlations(
            x_ptr,
            keys_ptr,
            off_ptr,
            x_ptr,
            q_base,
            key_base,
            off_base,
            c_start,
            h,
            w,
            pix,
            mask_p,
            kk,
            C,
            H,
            W,
            HW,
            T,
            STEPS,
            CG,
            inv_c,
            K,
            DIL,
            PAD,
            HAS_OFF,
            False,
            BLOCK_P,
            BLOCK_C,
            KK,
            ACC,
        )
        wts = _weights(corr, kk, scale, SOFTMAX, K)
        for c0 in range(0, CG, BLOCK_C):
            offs_c = c_start + c0 + tl.arange(0, BLOCK_C)
            mask_c = c0 + tl.arange(0, BLOCK_C) < CG
            acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
            for k in tl.static_range(K * K):
                ph, pw = _position(off_ptr, off_base, k, h, w, mask_p, pix, HW, STEPS, K, DIL, PAD, HAS_OFF, ACC)
                s = _sample(keys_ptr, key_base, ph, pw, H, W, C, offs_c, mask_c, ACC)
                acc += _pick(wts, kk, k)[:, None] * s
            native = q_base + offs_c[None, :].to(tl.int64) * T * HW + pix[:, None]
            tl.store(y_ptr + native, acc.to(y_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_c[None, :])


@triton.jit
def sifa_backward_kernel(
    x_ptr,
    keys_ptr,
    off_ptr,
    gy_ptr,
    gx_ptr,
    gkeys_ptr,
    goff_ptr,
    C,
    H,
    W,
    T,
    CG,
    G,
    inv_c,
    scale,
    K: tl.constexpr,
    DIL: tl.constexpr,
    PAD: tl.constexpr,
    HAS_OFF: tl.constexpr,
    NEED_OFF: tl.constexpr,
    SOFTMAX: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    KK: tl.constexpr,
    ACC: tl.constexpr,
):
    HW = H * W
    STEPS = T - 1
    n = tl.program_id(1)
    b = n // STEPS
    step = n % STEPS
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = pix < HW
    h = pix // W
    w = pix % W
    kk = tl.arange(0, KK)
    q_base = (b.to(tl.int64) * C * T + step) * HW
    key_base = n.to(tl.int64) * HW * C
    off_base = (b.to(tl.int64) * 2 * K * K * STEPS + step) * HW
    d_row = tl.zeros((BLOCK_P, KK), dtype=ACC)  # d loss / d offsets, summed over all groups
    d_col = tl.zeros((BLOCK_P, KK), dtype=ACC)
    for gi in range(G):
        c_start = gi * CG
        corr, dots = _correlations(
            x_ptr,
            keys_ptr,
            off_ptr,
            gy_ptr,
            q_base,
            key_base,
            off_base,
            c_start,
            h,
            w,
            pix,
            mask_p,
            kk,
            C,
            H,
            W,
            HW,
            T,
            STEPS,
            CG,
            inv_c,
            K,
            DIL,
            PAD,
            HAS_OFF,
            True,
            BLOCK_P,
            BLOCK_C,
            KK,
            ACC,
        )
        wts = _weights(corr, kk, scale, SOFTMAX, K)
        if SOFTMAX:  # noqa: SIM108 (constexpr branch) d loss / d (q · sample) = d loss / d corr / C
            gcorr = scale * wts * (dots - tl.sum(wts * dots, axis=1)[:, None]) * inv_c
        else:
            gcorr = dots * inv_c
        for c0 in range(0, CG, BLOCK_C):
            offs_c = c_start + c0 + tl.arange(0, BLOCK_C)
            mask_c = c0 + tl.arange(0, BLOCK_C) < CG
            mask = mask_p[:, None] & mask_c[None, :]
            native = q_base + offs_c[None, :].to(tl.int64) * T * HW + pix[:, None]
            q = tl.load(x_ptr + native, mask=mask, other=0.0).to(ACC)
            gy = tl.load(gy_ptr + native, mask=mask, other=0.0).to(ACC)
            dq = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
            for k in tl.static_range(K * K):
                ph, pw = _position(off_ptr, off_base, k, h, w, mask_p, pix, HW, STEPS, K, DIL, PAD, HAS_OFF, ACC)
                valid, h0, w0, lh, lw = _corners(ph, pw, H, W)
                valid = valid & mask_p
                v00, m00 = _load_corner(keys_ptr, key_base, h0, w0, valid, H, W, C, offs_c, mask_c)
                v01, m01 = _load_corner(keys_ptr, key_base, h0, w0 + 1, valid, H, W, C, offs_c, mask_c)
                v10, m10 = _load_corner(keys_ptr, key_base, h0 + 1, w0, valid, H, W, C, offs_c, mask_c)
                v11, m11 = _load_corner(keys_ptr, key_base, h0 + 1, w0 + 1, valid, H, W, C, offs_c, mask_c)
                v00 = v00.to(ACC)
                v01 = v01.to(ACC)
                v10 = v10.to(ACC)
                v11 = v11.to(ACC)
                a = (1 - lh)[:, None]
                bh = lh[:, None]
                c = (1 - lw)[:, None]
                d = lw[:, None]
                s = (v00 * c + v01 * d) * a + (v10 * c + v11 * d) * bh
                gc = _pick(gcorr, kk, k)[:, None]
                dq += gc * s
                gs = _pick(wts, kk, k)[:, None] * gy + gc * q  # d loss / d sample
                corner = gkeys_ptr + key_base + offs_c[None, :]
                row0 = (h0 * W + w0).to(tl.int64) * C
                tl.atomic_add(corner + row0[:, None], gs * a * c, mask=m00[:, None] & mask_c[None, :])
                tl.atomic_add(corner + (row0 + C)[:, None], gs * a * d, mask=m01[:, None] & mask_c[None, :])
                tl.atomic_add(corner + (row0 + W * C)[:, None], gs * bh * c, mask=m10[:, None] & mask_c[None, :])
                tl.atomic_add(corner + (row0 + W * C + C)[:, None], gs * bh * d, mask=m11[:, None] & mask_c[None, :])
                if NEED_OFF:
                    dr = tl.sum(gs * ((v10 - v00) * c + (v11 - v01) * d), axis=1)
                    dc = tl.sum(gs * ((v01 - v00) * a + (v11 - v10) * bh), axis=1)
                    d_row += tl.where(kk[None, :] == k, dr[:, None], 0.0)
                    d_col += tl.where(kk[None, :] == k, dc[:, None], 0.0)
            tl.store(gx_ptr + native, dq.to(gx_ptr.dtype.element_ty), mask=mask)
    if NEED_OFF:
        goff = goff_ptr + off_base + (2 * kk[None, :] * STEPS) * HW + pix[:, None]
        mask = mask_p[:, None] & (kk[None, :] < K * K)
        tl.store(goff, d_row.to(goff_ptr.dtype.element_ty), mask=mask)
        tl.store(goff + STEPS * HW, d_col.to(goff_ptr.dtype.element_ty), mask=mask)
