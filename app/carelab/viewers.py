"""Reusable viewers: orthogonal slices, line profiles, curves (bqplot), 3D volumes (ipyvolume)."""
from __future__ import annotations

import ipywidgets as W
import numpy as np

from carecore.render import display_range, to_png


class SliceView(W.VBox):
    """One image (2D) or the orthogonal slices of a volume (3D) with a slider per slice."""

    def __init__(self, title="", css=None, width=220):
        self.title = W.HTML(f"<b>{title}</b>")
        self.images = [W.Image(format="png", layout=W.Layout(width=f"{width}px")) for _ in range(3)]
        self.slider = W.IntSlider(description="Z", min=0, max=0, continuous_update=False)
        self.slider.observe(lambda c: self._draw(), "value")
        super().__init__([self.title, W.HTML("<i style='color:#888'>nothing to show yet</i>")])
        if css:
            self.add_class(css)
        self.data = None
        self.range = (0.0, 1.0)

    def set_image(self, data, lo=None, hi=None):
        self.data = np.asarray(data, np.float32)
        self.range = (lo, hi) if lo is not None else display_range(self.data)
        if self.data.ndim == 3:
            self.slider.max = self.data.shape[0] - 1
            self.slider.value = self.data.shape[0] // 2
            self.children = [self.title, self.images[0], self.slider, W.HBox(self.images[1:])]
        else:
            self.children = [self.title, self.images[0]]
        self._draw()

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
        stretch = max(1, d.shape[1] // max(d.shape[0], 1) // 2)
        self.images[1].value = to_png(d[:, d.shape[1] // 2, :], lo, hi, size=(d.shape[0] * stretch, d.shape[2]))
        self.images[2].value = to_png(d[:, :, d.shape[2] // 2], lo, hi, size=(d.shape[0] * stretch, d.shape[1]))
        self.images[1].layout.width = self.images[2].layout.width = "110px"


class Curves(W.VBox):
    """A bqplot chart whose lines are set by name; updates under hold_sync, never redraws."""

    def __init__(self, title, names, *, xlabel="", ylabel="", css=None, log_y=False, height="230px", colors=None):
        import bqplot as bq

        self.xs = bq.LinearScale()
        self.ys = bq.LogScale() if log_y else bq.LinearScale()
        colors = colors or ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
        self.lines = {n: bq.Lines(x=[], y=[], scales={"x": self.xs, "y": self.ys}, colors=[c], labels=[n],
                                  display_legend=True, marker="circle" if i else None, marker_size=16)
                      for i, (n, c) in enumerate(zip(names, colors))}
        ax = bq.Axis(scale=self.xs, label=xlabel)
        ay = bq.Axis(scale=self.ys, orientation="vertical", label=ylabel, tick_format=".3g", num_ticks=5)
        self.figure = bq.Figure(marks=list(self.lines.values()), axes=[ax, ay], title=title,
                                layout=W.Layout(width="420px", height=height),
                                fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20}, legend_location="top-right")
        super().__init__([self.figure])
        if css:
            self.add_class(css)

    def set_curve(self, name, x, y):
        line = self.lines[name]
        with line.hold_sync():
            line.x = np.asarray(x, float)
            line.y = np.asarray(y, float)


class BandProfile(W.VBox):
    """A line profile: the mean as a line and a confidence interval as a filled band."""

    def __init__(self, css=None):
        import bqplot as bq

        self.xs, self.ys = bq.LinearScale(), bq.LinearScale()
        self.band = bq.Lines(x=[], y=[], scales={"x": self.xs, "y": self.ys}, fill="between", colors=["#9ecae1"],
                             fill_colors=["#9ecae1"], fill_opacities=[0.6], stroke_width=0, display_legend=False)
        self.mean = bq.Lines(x=[], y=[], scales={"x": self.xs, "y": self.ys}, colors=["#08519c"], labels=["mean"],
                             display_legend=True)
        self.truth = bq.Lines(x=[], y=[], scales={"x": self.xs, "y": self.ys}, colors=["#222222"],
                              line_style="dashed", labels=["ground truth"], display_legend=True)
        self.figure = bq.Figure(marks=[self.band, self.mean, self.truth],
                                axes=[bq.Axis(scale=self.xs, label="X (pixels)"),
                                      bq.Axis(scale=self.ys, orientation="vertical", tick_format=".3g")],
                                title="line profile (band: 90 % interval)", layout=W.Layout(width="560px", height="260px"),
                                fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20})
        super().__init__([self.figure])
        if css:
            self.add_class(css)

    def set_profile(self, mean, lower, upper, truth=None):
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


def volume_pair(a, b, css=None):
    """Two ipyvolume renderings side by side sharing one camera (rotating one rotates both)."""
    import ipyvolume as ipv

    def one(data, camera=None):
        kw = {"camera": camera} if camera is not None else {}
        fig = ipv.figure(width=300, height=300, controls=False, **kw)  # a new current figure
        lo, hi = display_range(data)
        vol = np.clip((np.asarray(data, np.float32) - lo) / (hi - lo), 0, 1)
        ipv.volshow(vol, level=[0.25, 0.6, 0.9], opacity=[0.03, 0.1, 0.2], controls=False)
        return fig

    f1 = one(a)
    f2 = one(b, camera=f1.camera)
    box = W.HBox([W.VBox([W.HTML("<b>input</b>"), f1]), W.VBox([W.HTML("<b>restored</b>"), f2])])
    if css:
        box.add_class(css)
    return box
