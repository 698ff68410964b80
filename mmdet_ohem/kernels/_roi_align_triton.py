"""The Triton kernels of :mod:`mmdet_ohem.kernels.roi_align` (imported only when one runs: it imports triton)."""
import triton
import triton.language as tl

__all__ = ['roi_align_avg_f32', 'roi_align_levels_avg_f32']


@triton.jit
def _clamp_axis(v, size):
    """mmcv's ``bilinear_interpolate`` on one axis of sample position ``v``: whether it lies outside the map
    (``< -1`` or ``> size``), the low and high neighbours (clamped as mmcv does) and the position used for
    the weights."""
    outside = (v < -1.0) | (v > size)
    v = tl.where(v <= 0.0, 0.0, v)
    low = v.to(tl.int32)
    top = low >= size - 1
    low = tl.where(top, size - 1, low)
    high = tl.where(top, size - 1, low + 1)
    return outside, low, high, tl.where(top, low.to(tl.float32), v)


@triton.jit
def _sample_axis_f32(start, i, bin_size, grid, size):
    """One axis of sample ``i`` in each bin, in float32 as mmcv's float kernel computes it: :func:`_clamp_axis`,
    then the weights ``l`` (towards high) and ``h = 1 - l``."""
    v = start + tl.math.div_rn((i.to(tl.float32) + 0.5) * bin_size, grid)
    outside, low, high, v = _clamp_axis(v, size)
    lo_w = v - low.to(tl.float32)
    return outside, low, high, lo_w, 1.0 - lo_w


@triton.jit
def _lanes(C, PH: tl.constexpr, PW: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's RoI, its channels and bins (lanes) with their masks, and each bin's row and column."""
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    bins = tl.arange(0, BLOCK_B)
    return n, cs, cs < C, bins, bins < PH * PW, (bins // PW).to(tl.float32), (bins % PW).to(tl.float32)


@triton.jit
def _neighbours(base, y_low, y_high, x_low, x_high, W, C, cs, m):
    """Each bin's sample's four neighbours over the block's channels, channels-last, as float32 (0 where
    ``m`` is off). Offsets are int32 (the callers check that a map has fewer than 2**31 values)."""
    r1 = ((y_low * W + x_low) * C)[:, None] + cs[None, :]
    r2 = ((y_low * W + x_high) * C)[:, None] + cs[None, :]
    r3 = ((y_high * W + x_low) * C)[:, None] + cs[None, :]
    r4 = ((y_high * W + x_high) * C)[:, None] + cs[None, :]
    return (tl.load(base + r1, mask=m, other=0.0).to(tl.float32), tl.load(base + r2, mask=m, other=0.0).to(tl.float32),
            tl.load(base + r3, mask=m, other=0.0).to(tl.float32), tl.load(base + r4, mask=m, other=0.0).to(tl.float32))


@triton.jit
def _store(out_ptr, res, n, cs, cmask, bins, bmask, C, PH: tl.constexpr, PW: tl.constexpr):
    """``res`` (bins x channels) into ``out[n]``, laid out ``(C, PH, PW)``, in the output's dtype."""
    out = out_ptr + n * C * (PH * PW) + cs[None, :].to(tl.int64) * (PH * PW) + bins[:, None]
    tl.store(out, res.to(out_ptr.dtype.element_ty), mask=bmask[:, None] & cmask[None, :])


@triton.jit
def _align_bins_f32(base, r, scale, offset, H, W, C, cs, cmask, bins, bmask, ph, pw, sampling_ratio, aligned,
                    PH: tl.constexpr, PW: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """mmcv's average-mode RoIAlign with ``T = float`` of the RoI at ``r`` (``batch, x1, y1, x2, y2``; the batch
    index is read by the caller, ``base`` is that image's channels-last map of ``H x W x C``): each bin's mean
    over the block's channels, ``(BLOCK_B, BLOCK_C)`` float32."""
    roi_start_w = tl.load(r + 1) * scale - offset
    roi_start_h = tl.load(r + 2) * scale - offset
    roi_width = (tl.load(r + 3) * scale - offset) - roi_start_w
    roi_height = (tl.load(r + 4) * scale - offset) - roi_start_h
    if aligned == 0:
        roi_width = tl.maximum(roi_width, 1.0)
        roi_height = tl.maximum(roi_height, 1.0)
    bin_h = tl.math.div_rn(roi_height, PH * 1.0)  # IEEE division, as nvcc's default and the CPU's
    bin_w = tl.math.div_rn(roi_width, PW * 1.0)
    grid_h = tl.where(sampling_ratio > 0, sampling_ratio, tl.ceil(bin_h).to(tl.int32))  # ceilf(roi_height / ph)
    grid_w = tl.where(sampling_ratio > 0, sampling_ratio, tl.ceil(bin_w).to(tl.int32))
    count = tl.maximum(grid_h * grid_w, 1).to(tl.float32)
    y0 = roi_start_h + ph * bin_h
    x0 = roi_start_w + pw * bin_w
    acc = tl.zeros((BLOCK_B, BLOCK_C), tl.float32)
    iy = grid_h * 0
    while iy < grid_h:
        y_out, y_low, y_high, ly, hy = _sample_axis_f32(y0, iy, bin_h, grid_h.to(tl.float32), H)
        ix = grid_w * 0
        while ix < grid_w:
            x_out, x_low, x_high, lx, hx = _sample_axis_f32(x0, ix, bin_w, grid_w.to(tl.float32), W)
            out_of_map = y_out | x_out
            v1, v2, v3, v4 = _neighbours(base, y_low, y_high, x_low, x_high, W, C, cs,
                                         (bmask & ~out_of_map)[:, None] & cmask[None, :])
            val = (hy * hx)[:, None] * v1 + (hy * lx)[:, None] * v2 + (ly * hx)[:, None] * v3 \
                + (ly * lx)[:, None] * v4
            acc += tl.where(out_of_map[:, None], 0.0, val)  # bilinear_interpolate returns 0 there
            ix += 1
        iy += 1
    return tl.math.div_rn(acc, count)


@triton.jit
def roi_align_avg_f32(feat_ptr, rois_ptr, out_ptr, C, H, W, scale, offset, sampling_ratio, aligned,
                      PH: tl.constexpr, PW: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """mmcv's average-mode RoIAlign with ``T = float`` on features of any floating dtype (each loaded value
    is exact in float32) and float32 RoIs; the result is stored in the output's dtype."""
    n, cs, cmask, bins, bmask, ph, pw = _lanes(C, PH, PW, BLOCK_B, BLOCK_C)
    r = rois_ptr + n * 5
    b = tl.load(r).to(tl.int64)  # int roi_batch_ind = offset_rois[0]
    base = feat_ptr + b * H * W * C
    res = _align_bins_f32(base, r, scale, offset, H, W, C, cs, cmask, bins, bmask, ph, pw, sampling_ratio, aligned,
                          PH, PW, BLOCK_B, BLOCK_C)
    _store(out_ptr, res, n, cs, cmask, bins, bmask, C, PH, PW)


@triton.jit
def _pick_level(lvl, level: tl.constexpr, f, h, w, s, base, H, W, scale, b, C):
    """Level ``level``'s map (``f``: ``B x h x w x C`` channels-last), size and scale where ``lvl == level``, else
    what the caller had."""
    if lvl == level:
        base = f + b * h * w * C
        H = h
        W = w
        scale = s
    return base, H, W, scale


@triton.jit(do_not_specialize=['H0', 'H1', 'H2', 'H3', 'H4', 'W0', 'W1', 'W2', 'W3', 'W4'])
def roi_align_levels_avg_f32(f0, f1, f2, f3, f4, H0, H1, H2, H3, H4, W0, W1, W2, W3, W4, S0, S1, S2, S3, S4,
                             rois_ptr, levels_ptr, out_ptr, C, offset, sampling_ratio, aligned, L: tl.constexpr,
                             PH: tl.constexpr, PW: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """:func:`roi_align_avg_f32` over ``L`` (at most 5) feature levels in one launch: RoI ``n`` is aligned on
    level ``l = levels[n]``, the channels-last map ``fl`` (``B x Hl x Wl x C``) with ``spatial_scale = Sl``:
    per RoI the same arithmetic as :func:`roi_align_avg_f32` on that level alone. (The sizes are not
    specialised: a size of 1 would otherwise become a constant of another type in one branch.) A level
    outside ``[0, L)`` (mmdet's mapping of a RoI of negative area is NaN cast to an integer) gives zeros, as in
    mmdet's extractor, where no level takes that RoI."""
    n, cs, cmask, bins, bmask, ph, pw = _lanes(C, PH, PW, BLOCK_B, BLOCK_C)
    r = rois_ptr + n * 5
    b = tl.load(r).to(tl.int64)
    lvl = tl.load(levels_ptr + n).to(tl.int64)  # compared before any narrowing: mmdet's NaN level is -2**63
    # the same test in every bin lane, for the masks: a block (Triton's interpreter makes a block & scalar of
    # booleans an int32 mask, which its 3.9 refuses)
    lvl_lanes = tl.load(levels_ptr + n + bins * 0).to(tl.int64)
    on_a_level = (lvl_lanes >= 0) & (lvl_lanes < L)
    base = f0 + b * H0 * W0 * C
    H = H0
    W = W0
    scale = S0
    if L > 1:
        base, H, W, scale = _pick_level(lvl, 1, f1, H1, W1, S1, base, H, W, scale, b, C)
    if L > 2:
        base, H, W, scale = _pick_level(lvl, 2, f2, H2, W2, S2, base, H, W, scale, b, C)
    if L > 3:
        base, H, W, scale = _pick_level(lvl, 3, f3, H3, W3, S3, base, H, W, scale, b, C)
    if L > 4:
        base, H, W, scale = _pick_level(lvl, 4, f4, H4, W4, S4, base, H, W, scale, b, C)
    res = _align_bins_f32(base, r, scale, offset, H, W, C, cs, cmask, bins, bmask & on_a_level, ph, pw,
                          sampling_ratio, aligned, PH, PW, BLOCK_B, BLOCK_C)
    _store(out_ptr, tl.where(on_a_level[:, None], res, 0.0), n, cs, cmask, bins, bmask, C, PH, PW)
