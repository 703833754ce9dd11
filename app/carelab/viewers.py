"""Reusable viewers: orthogonal slices, line profiles, curves (bqplot), 3D volumes (ipyvolume)."""
from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from carecore.render import display_range, to_png


class SliceView(W.VBox):
    """One image (2D) or the orthogonal slices of a volume (3D) with a slider per slice.

    With a voxel size (``spacing``, {axis: size}) the XZ and YZ slices are drawn at their physical
    aspect: a stack on a coarse Z grid shows as tall as its restoration on a fine one, each on its own grid.
    """

    def __init__(self, title="", css=None, width=220):
        self.title = W.HTML(f"<b>{title}</b>")
        self.images = [W.Image(format="png", layout=W.Layout(width=f"{width}px")) for _ in range(3)]
        self.slider = W.IntSlider(description="Z", min=0, max=0, continuous_update=False)
        self.slider.observe(lambda c: self._draw(), "value")
        self.caption = W.HTML()
        super().__init__([self.title, W.HTML("<i style='color:#888'>nothing to show yet</i>")])
        if css:
            self.add_class(css)
        self.data = None
        self.range = (0.0, 1.0)
        self.spacing = None

    def clear(self):
        self.data = None
        self.children = [self.title, W.HTML("<i style='color:#888'>nothing to show yet</i>")]

    def set_image(self, data, lo=None, hi=None, spacing=None):
        self.data = np.asarray(data, np.float32)
        self.range = (lo, hi) if lo is not None else display_range(self.data)
        self.spacing = dict(spacing or {})
        grid = "×".join(map(str, self.data.shape))
        voxel = [f"{self.spacing[a]:g}" for a in "ZYX"[-min(self.data.ndim, 3):] if a in self.spacing]
        if voxel:
            grid += " · voxel " + " × ".join(voxel)
        self.caption.value = f"<span style='color:#666;font-size:12px'>{html.escape(grid)}</span>"
        if self.data.ndim == 3:
            self.slider.max = self.data.shape[0] - 1
            self.slider.value = self.data.shape[0] // 2
            self.children = [self.title, self.caption, self.images[0], self.slider, W.HBox(self.images[1:])]
        else:
            self.children = [self.title, self.caption, self.images[0]]
        self._draw()

    def _stretch(self):
        """Rows per Z slice in the XZ and YZ views: the physical aspect with a voxel size, else a guess."""
        d, sp = self.data, self.spacing or {}
        if sp.get("Z") and sp.get("X"):
            return max(sp["Z"] / sp["X"], 1e-3)
        return max(1, d.shape[1] // max(d.shape[0], 1) // 2)

    def _draw(self):
        if self.data is None:
            return
        lo, hi = self.range
        d = self.data
        if d.ndim == 2:
            self.images[0].value = to_png(d, lo, hi)
            return
        z = min(self.slider.value, d.shape[0] - 1)
        self.images[0].value = to_png(d[z], lo, hi)
        rows = max(1, int(round(d.shape[0] * self._stretch())))
        self.images[1].value = to_png(d[:, d.shape[1] // 2, :], lo, hi, size=(rows, d.shape[2]))
        self.images[2].value = to_png(d[:, :, d.shape[2] // 2], lo, hi, size=(rows, d.shape[1]))
        self.images[1].layout.width = self.images[2].layout.width = "110px"


def legend_html(items):
    """A chart legend as HTML, ``[(color, style, text), ...]`` with style solid, dashed (True) or band; a
    color None: the text alone (a note on the chart)."""
    def key(color, style):
        if color is None:
            return "<span style='margin-left:10px'></span>"
        style = {True: "dashed", False: "solid"}.get(style, style)
        if style == "band":
            return f"<span style='display:inline-block;width:24px;height:10px;background:{color};margin:0 4px 0 10px'></span>"
        return f"<span style='display:inline-block;width:24px;border-top:2px {style} {color};margin:0 4px 3px 10px'></span>"

    return "<div class='care-chart-legend' style='font-size:12px;color:#333'>" + "".join(
        f"{key(c, d)}{html.escape(t)}" for c, d, t in items) + "</div>"


class Curves(W.VBox):
    """A bqplot chart whose lines are set by name; updates under hold_sync, never redraws.

    Every axis has an explicit tick format: bqplot's own guess (``.{precision}g``) breaks on a
    one-point line next to a line with markers (the padded domain is a few ULPs wide, its ticks
    repeat, the precision comes out ``undefined``) and then throws ``invalid format: .undefinedg``
    on every update, which leaves the other lines undrawn. Non-finite points are dropped.

    Parameters
    ----------
    names : list of str
        One line per name, in this order.
    markers : set of str, optional
        Names drawn with point markers (e.g. the once-per-epoch validation).
    dashed : set of str, optional
        Names drawn as dashed lines (reference levels).
    x_min, y_range : float, (float, float), optional
        Fix the start of the x axis / the whole y axis (``None``: from the data).
    legend : str or None
        Where bqplot draws the legend; ``None``: no legend in the chart (bqplot sizes its box at one
        em per character and pushes long labels out of the plot), write one with :meth:`set_caption`.
    """

    def __init__(self, title, names, *, xlabel="", ylabel="", css=None, height="230px", colors=None, markers=(),
                 dashed=(), x_min=None, x_max=None, y_range=None, x_format=".3~g", y_format=".3~g",
                 legend="top-right", width="460px"):
        import bqplot as bq

        self.xs = bq.LinearScale(min=x_min, max=x_max)
        self.ys = bq.LinearScale(**({"min": y_range[0], "max": y_range[1]} if y_range else {}))
        colors = colors or ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
        self.lines = {}
        for n, c in zip(names, colors):
            kw = {"marker": "circle", "marker_size": 24} if n in markers else {}
            if n in dashed:
                kw.update(line_style="dashed", stroke_width=2)
            self.lines[n] = bq.Lines(x=[], y=[], scales={"x": self.xs, "y": self.ys}, colors=[c], labels=[n],
                                     display_legend=legend is not None, **kw)
        ax = bq.Axis(scale=self.xs, label=xlabel, tick_format=x_format)
        ay = bq.Axis(scale=self.ys, orientation="vertical", label=ylabel, tick_format=y_format)
        self.figure = bq.Figure(marks=list(self.lines.values()), axes=[ax, ay], title=title,
                                layout=W.Layout(width=width, height=height),
                                fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
                                legend_location=legend or "top-right")
        # the caption wraps within the chart's width, and the chart keeps it: a long caption (a filter's line
        # on an isotropic model's starts) had widened its box, and the box beside it shrank under its chart's
        # right end (the last validation hidden, as if the axis stopped short)
        self.caption = W.HTML(layout=W.Layout(max_width=width))
        super().__init__([self.figure, self.caption], layout=W.Layout(min_width=width, max_width=width))
        if css:
            self.add_class(css)

    def set_caption(self, items):
        """A legend under the chart: ``[(color, dashed, text), ...]``."""
        self.caption.value = legend_html(items)

    def set_range(self, x_max=None, y_range=None):
        """Fix the end of the x axis and the y axis (``None``: from the data)."""
        with self.xs.hold_sync(), self.ys.hold_sync():   # one message per scale (no min above max between)
            self.xs.max = None if x_max is None else float(x_max)
            self.ys.min, self.ys.max = (None, None) if y_range is None else (float(y_range[0]), float(y_range[1]))

    def set_curve(self, name, x, y, label=None):
        """Set one line (non-finite points are left out); ``label`` renames it in the legend."""
        x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
        keep = np.isfinite(x) & np.isfinite(y) if len(x) == len(y) else np.zeros(0, bool)
        line = self.lines[name]
        with line.hold_sync():
            line.x = x[keep] if keep.size else np.zeros(0)
            line.y = y[keep] if keep.size else np.zeros(0)
            if label is not None:
                line.labels = [label]


class BandProfile(W.VBox):
    """A line profile: the mean as a line and a confidence interval as a filled band (and the truth, dashed).

    The legend is written under the chart, with how the ground truth was scaled.
    """

    def __init__(self, css=None):
        import bqplot as bq

        self.xs, self.ys = bq.LinearScale(), bq.LinearScale()
        self.band = bq.Lines(x=[], y=[], scales={"x": self.xs, "y": self.ys}, fill="between", colors=["#9ecae1"],
                             fill_colors=["#9ecae1"], fill_opacities=[0.6], stroke_width=0, display_legend=False)
        self.mean = bq.Lines(x=[], y=[], scales={"x": self.xs, "y": self.ys}, colors=["#08519c"], labels=["mean"])
        self.truth = bq.Lines(x=[], y=[], scales={"x": self.xs, "y": self.ys}, colors=["#222222"],
                              line_style="dashed", labels=["ground truth"])
        self.figure = bq.Figure(marks=[self.band, self.mean, self.truth],
                                axes=[bq.Axis(scale=self.xs, label="X (pixels)", tick_format="d"),
                                      bq.Axis(scale=self.ys, orientation="vertical", tick_format=".3~g",
                                              label="intensity (the input's scale)")],
                                title="line profile (band: 90 % interval)", layout=W.Layout(width="620px", height="280px"),
                                fig_margin={"top": 40, "bottom": 40, "left": 70, "right": 20}, legend_location="top-right")
        self.caption = W.HTML()
        super().__init__([self.figure, self.caption])
        if css:
            self.add_class(css)

    def set_profile(self, mean, lower, upper, truth=None, truth_label="ground truth"):
        x = np.arange(len(mean), dtype=float)
        with self.band.hold_sync():
            self.band.x = x
            self.band.y = np.vstack([lower, upper]).astype(float)
        with self.mean.hold_sync():
            self.mean.x = x
            self.mean.y = np.asarray(mean, float)
        with self.truth.hold_sync():
            self.truth.x = x if truth is not None else []
            self.truth.y = np.asarray(truth, float) if truth is not None else []
        items = [("#08519c", False, "mean (restored)"), ("#9ecae1", "band", "90 % interval")]
        self.caption.value = legend_html(items + ([("#222222", True, truth_label)] if truth is not None else []))

    def clear(self):
        """No profile (the read-outs it showed are gone)."""
        for line in (self.band, self.mean, self.truth):
            with line.hold_sync():
                line.x, line.y = [], []
        self.caption.value = ""


def mip_colormap(color=(0.35, 1.0, 0.35), n=256):
    """An ipyvolume transfer function for maximum-intensity projection: black to ``color``.

    ipyvolume's MIP shader multiplies the colour by ``30 * alpha``: alpha is 1/30, the ramp is in
    the colour, so the rendered brightness follows the display window linearly.
    """
    import ipyvolume as ipv

    ramp = np.linspace(0, 1, n)[:, None]
    rgba = np.hstack([ramp * np.asarray(color)[None], np.full((n, 1), 1 / 30)])
    return ipv.TransferFunction(rgba=rgba.astype(np.float32))


class VolumeView(W.VBox):
    """One volume as a maximum-intensity projection (what a microscopist reads), with a contrast window.

    The window starts where the background ends (percentiles of the volume, from
    :func:`carecore.render.display_range`), so noise stays dark; the slider moves it in the
    image's intensity units.
    """

    def __init__(self, data, title, *, camera=None, window=(95.0, 99.8), color=(0.35, 1.0, 0.35), spacing=None):
        import ipyvolume as ipv

        data = np.asarray(data, np.float32)
        kw = {"camera": camera} if camera is not None else {}
        sp = dict(spacing or {})
        # physical extent (X, Y, Z) where the voxel size is known: two grids of one sample fill the same box
        extent = [[0, n * sp.get(a, 1.0)] for a, n in zip("XYZ", data.shape[::-1])] if sp else None
        self.figure = ipv.figure(width=320, height=320, controls=False, **kw)  # a new current figure
        ipv.style.use("dark")
        ipv.style.box_off()
        ipv.style.axes_off()
        dmin, dmax = display_range(data, 0.0, 100.0)
        lo, hi = display_range(data, *window)
        self.volume = ipv.volshow(data, tf=mip_colormap(color), data_min=dmin, data_max=dmax, controls=False,
                                  **({"extent": extent} if extent else {}))
        self.volume.rendering_method = "MAX_INTENSITY"
        self.volume.show_min, self.volume.show_max = lo, hi
        step = (dmax - dmin) / 500 or 1.0
        # the window's ends written beside it (the slider's own read-out box cuts numbers such as 3.91e+03)
        self.contrast = W.FloatRangeSlider(description="contrast", min=dmin, max=dmax, value=(lo, hi), step=step,
                                           readout=False, continuous_update=False, layout=W.Layout(width="260px"))
        self.contrast.add_class("care-view-contrast")
        self.window_text = W.HTML(layout=W.Layout(width="auto"))
        self.window_text.add_class("care-view-window")
        self.contrast.observe(self._window, "value")
        self._window({"new": (lo, hi)})
        super().__init__([W.HTML(f"<b>{title}</b> <span style='color:#666'>(maximum-intensity projection)</span>"),
                          self.figure, W.HBox([self.contrast, self.window_text])])

    def _window(self, change):
        with self.volume.hold_sync():
            self.volume.show_min, self.volume.show_max = change["new"]
        lo, hi = change["new"]
        self.window_text.value = f"<span style='font-size:12px'>{lo:.4g} – {hi:.4g}</span>"


def volume_pair(a, b, css=None, titles=("input", "restored"), spacings=(None, None)):
    """Two volumes side by side sharing one camera (rotating one rotates both), each with its contrast
    (and, with voxel sizes, each on its own grid in the same physical box)."""
    v1 = VolumeView(a, titles[0], spacing=spacings[0])
    v2 = VolumeView(b, titles[1], camera=v1.figure.camera, spacing=spacings[1])
    box = W.HBox([v1, v2])
    box.views = (v1, v2)
    if css:
        box.add_class(css)
    return box
