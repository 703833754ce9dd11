"""The five steps of CARE Lab as thin views bound to :class:`LabState`.

Layout, event wiring and callbacks are kept apart in each step: ``_layout`` builds widgets,
``_wire`` binds them to the state, callbacks call one state method and show errors in the step's
message area. Long work runs in a thread so the page stays responsive.
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import threading
import traceback

from pathlib import Path

import ipywidgets as W
import numpy as np

from carecore import CareError
from carecore.data.patches import few_validation_note
from carecore.models.care import MIN_BUDGET_STEPS
from carecore.progress import Stopped
from carecore.qc import coverage_text, coverage_verdict, spread_text
from carecore.render import profile_row

from .state import BUDGETS, RESTORE_WHERE, TASKS, LabState, job_task, progress_text, task_spec
from .viewers import BandProfile, Curves, SliceView, volume_pair

#: The Data step's alignment column: aligned, shifted, or no clear match either way (carecore.check_alignment)
ALIGNMENT_MARKS = {True: "✓", False: "⚠ misaligned", None: "? no clear match: check this pair"}


class Message(W.HTML):
    """A step's message line: errors in red, notes in grey."""

    def __init__(self, css):
        super().__init__("")
        self.add_class(css)

    def error(self, text):
        self.value = f"<div style='color:#b00020;font-weight:bold' class='care-error'>⚠ {html.escape(str(text))}</div>"

    def note(self, text):
        self.value = f"<div style='color:#444'>{html.escape(str(text))}</div>"


def run_guarded(msg, fn, *, thread=False, done=None, fresh=True):
    """Call ``fn``; show a CareError (or any failure) in ``msg`` instead of breaking the page. With
    ``fresh`` (a user's action) an error the step showed before is taken down first (it was about an
    earlier action); an update the page makes by itself leaves it."""
    if fresh and "care-error" in msg.value:
        msg.value = ""

    def body():
        try:
            out = fn()
            if done is not None:
                done(out)
        except CareError as e:
            msg.error(e)
        except Exception as e:  # noqa: BLE001 - an unexpected failure must not kill the app
            msg.error(f"{type(e).__name__}: {e}")
            traceback.print_exc()

    if thread:
        threading.Thread(target=body, daemon=True).start()
    else:
        body()


def kernel_loop():
    """The event loop on which the IPython kernel this runs in takes the page's messages, or None (no
    kernel: a test driving the widgets, a script)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    io_loop = getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
    return getattr(io_loop, "asyncio_loop", None)


class PageThread:
    """Runs calls on the thread that takes the page's messages: the kernel's event loop, where the step
    was built (a user's pick reaches the widgets there, one message at a time).

    A call made on another thread (a training job's watcher) is queued for that thread, so that the two
    never change a widget at once. Outside a kernel, or built off its loop, a call runs where it is made
    (as in a test driving the widgets). (The page's messages reach the thread that built it in Voila and
    in a notebook; not in a JupyterLab subshell console, which has a thread of its own.)
    """

    def __init__(self):
        loop = kernel_loop()
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        self._loop = loop if loop is not None and loop is here else None
        self._ident = threading.get_ident()

    def call(self, fn):
        """``fn()`` now on the page's thread, or queued for it from another thread (now where the loop
        no longer runs)."""
        if self._loop is None or threading.get_ident() == self._ident or not self._loop.is_running():
            fn()
            return
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:   # the loop is closed (the kernel is shutting down): nobody can pick any more
            fn()


def button(label, css, style="primary", icon=""):
    b = W.Button(description=label, button_style=style, icon=icon, layout=W.Layout(width="auto"))
    b.add_class(css)
    return b


class DataStep(W.VBox):
    def __init__(self, state: LabState):
        self.state = state
        self.msg = Message("care-data-msg")
        self.task = W.Dropdown(options=[(v["label"], k) for k, v in TASKS.items()], value=state.task, description="Task",
                               layout=W.Layout(width="420px"))
        self.task.add_class("care-data-task")
        self.source = W.ToggleButtons(options=[("Pairs from folders", "folders"), ("Simulate from the demo", "simulate")],
                                      value=state.source, style={"button_width": "180px"})   # (labels were cut off)
        self.source.add_class("care-data-source")
        self.low = W.Text(description="Low", layout=W.Layout(width="420px"))
        self.high = W.Text(description="High", layout=W.Layout(width="420px"))
        self.axes = W.Text(description="Axes", layout=W.Layout(width="180px"))
        self.axes_note = W.HTML()
        self.scan = button("Check pairs", "care-data-scan", icon="search")
        self.dose = W.FloatSlider(description="Light dose", min=1, max=100, value=state.light_dose, step=1,
                                  continuous_update=False, readout_format=".0f")
        self.factor = W.FloatSlider(description="Axial factor", min=1.5, max=8, value=state.axial_factor, step=0.5,
                                    continuous_update=False)
        self.factor.add_class("care-data-factor")
        self.psf = W.FloatSlider(description="PSF σ (px)", min=0.5, max=4, value=state.psf_sigma, step=0.05,
                                 continuous_update=False)
        self.psf.add_class("care-data-psf")
        self.structures = W.Dropdown(description="Structures", options=[("tubules and granules", "tubules,granules"),
                                                                      ("tubules", "tubules"), ("granules", "granules")],
                                     value=state.structures)
        self.structures.add_class("care-data-structures")
        self.photons = W.FloatLogSlider(description="Noise: photons", base=10, min=0.5, max=3.5, value=state.sim_photons,
                                        step=0.05, continuous_update=False, readout_format=".0f",
                                        style={"description_width": "110px"})
        self.photons.add_class("care-data-photons")
        #: the widget of each Data-step setting a task may name in ``options`` or ``sim_options``
        self.option_widgets = {"light_dose": self.dose, "axial_factor": self.factor, "psf_sigma": self.psf,
                               "structures": self.structures, "sim_photons": self.photons}
        self.preview_btn = button("Preview generated pairs", "care-data-preview", icon="eye")
        self.preview2_low = SliceView("input (2nd pair)", "care-preview2-low")
        self.preview2_high = SliceView("target (2nd pair)", "care-preview2-high")
        self.options_box = W.VBox()
        self.options_box.add_class("care-data-options")
        self.options_note = W.HTML()
        self.simulate = button("Simulate pairs", "care-data-simulate", icon="magic")
        self.table = W.HTML()
        self.preview_low = SliceView("input (low quality)", "care-preview-low")
        self.preview_high = SliceView("target (high quality)", "care-preview-high")
        self.patch_btn = button("Extract training patches", "care-data-patches", "success", "th")
        self.patch_bar = W.IntProgress(min=0, max=1, description="patches")
        self.patch_note = W.HTML()
        self.patch_note.add_class("care-patches-status")
        self.folder_box = W.VBox()
        self.sim_box = W.VBox()
        super().__init__()
        self._wire()
        self._layout()
        self._show_patches()   # (patches a page before this one made, adopted by the state)

    def _layout(self):
        s = self.state
        t = task_spec(s.task)
        pairs = s.needs_high
        self.options_box.children = [self.option_widgets[k] for k in t["options"]] + (
            [self.options_note] if t["options"] else [])
        self.options_note.value = self._options_text(t)
        self.psf.description = "axial PSF σ (px)" if s.task == "isotropic" else "PSF σ (px)"
        self.psf.style = {"description_width": "110px"} if s.task == "isotropic" else {}
        options = (("Pairs from folders" if pairs else "Stacks from a folder", "folders"),
                   ("Simulate from the demo", "simulate"))
        if tuple(self.source.options) != options:   # relabel (the task changed); keep the chosen source
            source = s.source
            with self.source.hold_sync():   # (the page gets the labels with the choice in one message)
                self.source.options = options
                s.source = self.source.value = source
        self.low.description = "Low" if pairs else "Stacks"
        if t["high_axes"]:
            self.low.description, self.high.description = "Low (3D)", f"High ({len(t['high_axes'])}D)"
        else:
            self.high.description = "High"
        self.scan.description = "Check pairs" if pairs else "Check stacks"
        self.simulate.description = "Simulate pairs" if pairs else "Simulate stacks"
        self.folder_box.children = [self.low] + ([self.high] if pairs else []) + [
            W.HBox([self.axes, self.axes_note]), W.HBox([self.scan])]
        self.sim_box.children = [self.option_widgets[k] for k in t["sim_options"] if k not in t["options"]] + [
            W.HBox([self.simulate])]
        intro = ("Choose the task, then load pairs of low- and high-quality images, or simulate them from the "
                 "embedded demo volume." if pairs and t["simulate"] else
                 "Choose the task, then load pairs of low-quality 3D stacks and their high-quality 2D projections "
                 "(same file names)." if t["high_axes"] else
                 "Choose the task, then load the low-quality stacks it trains on (no high-quality images are "
                 "needed), or simulate them from the embedded demo volume.")
        self.preview_low.title.value = "<b>input (low quality)</b>" if pairs else "<b>stack (low quality, its own grid)</b>"
        previews = [self.preview_low, self.preview_high] if pairs else [self.preview_low]
        source = [self.source, self.folder_box if s.source == "folders" else self.sim_box]
        if t["simulate"] is None:   # pairs from folders only
            source = [self.folder_box]
        if not t["folders"]:   # trained on simulations alone: no folders, a preview of what it trains on
            intro = ("This task trains on simulated structures only, seen through your microscope's PSF and noise: "
                     "set them, preview a few generated pairs, then make the training patches. Real images are "
                     "only restored (step 3).")
            self.preview_low.title.value = "<b>simulated input (PSF + noise)</b>"
            self.preview_high.title.value = "<b>simulated target</b>"
            previews = [W.VBox([W.HBox([self.preview_low, self.preview_high]),
                                W.HBox([self.preview2_low, self.preview2_high])])]
            source = [W.HBox([self.preview_btn])]
        else:
            self.preview_high.title.value = "<b>target (high quality)</b>"
        self.children = [W.HTML(f"<h3>1 · Data</h3><p>{html.escape(intro)}</p>"),
                         self.task, self.options_box, *source,
                         self.msg, self.table, W.HBox(previews),
                         W.HBox([self.patch_btn, self.patch_bar]), self.patch_note]

    @staticmethod
    def _options_text(t):
        if t["kind"] == "isotropic":
            return ("<span style='color:#666'>The axial factor is the Z voxel size over the lateral one; the axial "
                    "PSF σ is in lateral pixels. Training degrades the stacks' own lateral slices like this.</span>")
        if t["kind"] == "upsampling":
            return "<span style='color:#666'>The axial factor: Z voxel size over the lateral one.</span>"
        if t["kind"] == "subdiffraction":
            return ("<span style='color:#666'>PSF σ: the microscope's lateral PSF as a Gaussian sigma in pixels. Each "
                    "simulated image gets between a third and three times the chosen photons at its brightest "
                    "pixel (plus read noise), so that the network meets a range of noise levels.</span>")
        return ""

    def _wire(self):
        s = self.state
        W.link((s, "task"), (self.task, "value"))
        W.link((s, "source"), (self.source, "value"))
        W.link((s, "low_dir"), (self.low, "value"))
        W.link((s, "high_dir"), (self.high, "value"))
        W.link((s, "axes"), (self.axes, "value"))
        W.link((s, "light_dose"), (self.dose, "value"))
        W.link((s, "axial_factor"), (self.factor, "value"))
        W.link((s, "psf_sigma"), (self.psf, "value"))
        W.link((s, "structures"), (self.structures, "value"))
        W.link((s, "sim_photons"), (self.photons, "value"))
        s.observe(lambda c: self._layout(), ["source", "task", "needs_high"])
        s.observe(self._task_changed, "task")
        s.observe(self._axes_note, "axes_error")
        s.observe(lambda c: self._table(), ["pairs", "stacks"])
        self.scan.on_click(lambda b: self.on_scan())
        self.simulate.on_click(lambda b: self.on_simulate())
        self.preview_btn.on_click(lambda b: self.on_preview())
        self.patch_btn.on_click(lambda b: self.on_patches())

    def _task_changed(self, change):
        self.msg.value = self.patch_note.value = ""
        self.patch_bar.value = 0
        for v in (self.preview_low, self.preview_high, self.preview2_low, self.preview2_high):
            v.clear()
        self._table()          # what the state kept for this task (its scan, its patches)
        self._show_patches()

    def _show_patches(self):
        """The patches' note: how many, of what, and their warnings (misaligned pairs)."""
        import json

        s = self.state
        if not s.patches_dir:
            self.patch_note.value = ""
            return
        try:
            meta = json.loads((Path(s.patches_dir) / "patches.json").read_text())
        except (OSError, ValueError):
            self.patch_note.value = ""
            return
        origin = ("" if s.needs_high else " made from the stacks' own lateral slices"
                  if task_spec(s.task)["folders"] else " from simulated structures")
        self.patch_note.value = (f"<b class='care-patches-ready'>{meta.get('n_patches', s.n_patches)} patch pairs "
                                 f"ready</b>{origin} ({meta.get('n_val', 0)} for validation), axes {meta.get('axes', '')}. "
                                 "Next: step 2 · Train."
                                 + (f"<br><span class='care-patches-few' style='color:#a15c00'>{html.escape(few)}</span>"
                                    if (few := few_validation_note(meta.get("n_val", 0))) else "")
                                 + "".join(f"<br><span class='care-patches-warning' style='color:#a15c00'>warning: "
                                           f"{html.escape(w)}</span>" for w in s.patch_warnings))

    def _axes_note(self, change):
        self.axes_note.value = (f"<span style='color:#b00020'>{html.escape(change['new'])}</span>" if change["new"]
                                else "<span style='color:green'>✓</span>")

    def _table(self):
        s = self.state
        extra = f"<p style='color:#a66'>{html.escape(s.unmatched)}</p>" if s.unmatched else ""
        if not s.needs_high:
            td = "<td style='padding:2px 12px'>"
            rows = "".join(f"<tr>{td}{html.escape(r['name'])}</td>{td}{r['shape']}</td>{td}{r['axes']}</td>"
                           f"{td}{html.escape(r['spacing'])}</td></tr>" for r in s.stacks)
            self.table.value = ("<table class='care-stacks' style='border-collapse:collapse'><tr><th>file</th>"
                                "<th>shape</th><th>axes</th><th>voxel size (Z × Y × X, µm)</th></tr>" + rows + "</table>"
                                + extra) if rows else ""
            return
        td = "<td style='padding:2px 12px'>"
        rows = "".join(f"<tr>{td}{html.escape(r['name'])}</td>{td}{r['low']}</td>{td}{r['high']}</td>{td}{r['shift']}</td>"
                       f"{td}{ALIGNMENT_MARKS[r['aligned']]}</td></tr>" for r in s.pairs)
        self.table.value = ("<table class='care-pairs' style='border-collapse:collapse'><tr><th>file</th><th>low</th>"
                            "<th>high</th><th>shift (px)</th><th>alignment</th></tr>" + rows + "</table>" + extra) if rows else ""

    def _previews(self):
        s = self.state
        if s.low is not None:
            self.preview_low.set_image(s.low, spacing=s.low_spacing)
        if s.high is not None and s.needs_high:
            self.preview_high.set_image(s.high)

    def on_scan(self):
        what = "pairs" if self.state.needs_high else "stacks"
        self.msg.note(f"reading {what} ...")
        for v in (self.preview_low, self.preview_high):   # (a failed scan leaves none of the scan before)
            v.clear()

        def done(rows):
            off = sum(1 for r in rows if r.get("aligned") is False)
            unclear = sum(1 for r in rows if "aligned" in r and r["aligned"] is None)
            self.msg.note(f"{len(rows)} {what[:-1]}(s) ready" + (f"; {off} misaligned (see the table): register them, "
                                                                "or training learns to blur" if off else "")
                          + (f"; {unclear} with no clear match to their ground truth (see the table): check that each "
                             "pair shows the same field" if unclear else ""))
            self._previews()

        run_guarded(self.msg, self.state.scan, done=done)

    def on_preview(self):
        self.msg.note("simulating a few training pairs ...")

        def show(pairs):
            views = [(self.preview_low, self.preview_high), (self.preview2_low, self.preview2_high)]
            for (lo, hi), (v_lo, v_hi) in zip(pairs, views):
                v_lo.set_image(lo)
                v_hi.set_image(hi)
            self.msg.note(f"{len(pairs)} generated pairs ({self.state.structures.replace(',', ' and ')}, PSF σ "
                          f"{self.state.psf_sigma:g} px); training simulates more of them")

        run_guarded(self.msg, self.state.preview_pairs, done=show)

    def on_simulate(self):
        self.msg.note("simulating ...")
        what = "pair" if self.state.needs_high else "stack"

        def go():
            self.state.simulate()
            return self.state.scan()

        run_guarded(self.msg, go, done=lambda r: (self.msg.note(f"simulated {len(r)} {what}(s) at light dose "
                                                                f"{self.state.light_dose:g}"), self._previews()))

    def on_patches(self):
        self.patch_btn.disabled = True

        def progress(done, total, what):
            self.patch_bar.max, self.patch_bar.value = total, done

        def finished(ps):
            self._show_patches()
            self.patch_btn.disabled = False

        def go():
            try:
                return self.state.make_patches(progress)
            except CareError as e:   # (named: after a failed check, the same error came back word for word, and
                self.patch_note.value = ""   # the click looked ignored: a user trial)
                if str(e).startswith("no training patches"):
                    raise
                raise CareError(f"no training patches: {e}") from e
            except Exception:   # (the last patches' "ready ... Next: step 2" stayed under the error: a user trial)
                self.patch_note.value = ""
                raise
            finally:
                self.patch_btn.disabled = False

        run_guarded(self.msg, go, thread=True, done=finished)


def _mmss(seconds):
    seconds = int(round(seconds or 0))
    return f"{seconds // 60}:{seconds % 60:02d}"


#: The loss chart's legend (under it: inside, bqplot's box covered the curve's late epochs).
LOSS_LEGEND = [("#1f77b4", False, "training (per step)"), ("#ff7f0e", False, "validation (per epoch)")]


class TrainStep(W.VBox):
    def __init__(self, state: LabState):
        self.state = state
        self.msg = Message("care-train-msg")
        self._running_note = None   # (the note of a Stop, taken down when the training ends)
        self.budget = W.ToggleButtons(options=state.budget_options(), value=state.time_limit,
                                      style={"button_width": "170px"})
        self.budget.add_class("care-train-budget")
        self.recipe = W.HTML()
        self.recipe.add_class("care-train-recipe")
        self.epochs = W.BoundedIntText(description="Epochs", min=1, max=1000, value=state.epochs)
        self.steps = W.BoundedIntText(description="Steps/epoch", min=1, max=10000, value=state.steps,
                                      style={"description_width": "90px"})
        self.batch = W.BoundedIntText(description="Batch", min=1, max=256, value=state.batch_size)
        self.epochs.add_class("care-train-epochs")
        self.steps.add_class("care-train-steps")
        # labels in full (a fixed-width one was cut to "Probabilistic (confidence in…" and "Ensemble M")
        self.prob = W.Checkbox(description="Probabilistic (confidence intervals)", value=state.probabilistic,
                               indent=False, layout=W.Layout(width="auto", margin="0 24px 0 10px"))
        self.prob.add_class("care-train-prob")
        self.ensemble = W.BoundedIntText(description="Ensemble members (M)", min=0, max=10, value=state.ensemble,
                                         tooltip="0 or 1: one network; M ≥ 2: an ensemble of M networks that share "
                                                 "the budget (the Reliability step's disagreement map)",
                                         style={"description_width": "initial"}, layout=W.Layout(width="230px"))
        self.prob_row = W.HBox([self.prob, self.ensemble])
        self.kind_note = W.HTML()
        self.kind_note.add_class("care-train-kind-note")
        self.filters = W.BoundedIntText(description="Filters", min=4, max=128, value=state.filters)
        self.lr = W.FloatText(description="Learning rate", value=state.learning_rate,
                              style={"description_width": "initial"})   # (the label was cut off)
        self.precision = W.Dropdown(description="Precision", value=state.precision, options=[
            ("auto (for this machine)", "auto"), ("mixed bfloat16", "mixed_bfloat16"), ("float32", "float32")])
        self.seed = W.IntText(description="Seed", value=state.seed)
        self.custom = W.HBox([W.VBox([self.epochs, self.steps, self.batch]), W.VBox([self.filters, self.lr])])
        self.custom.add_class("care-train-custom")
        self.advanced = W.Accordion([W.VBox([self.precision, self.seed])])
        self.advanced.set_title(0, "Advanced")
        self.advanced.selected_index = None
        self.pre_btn = button("Estimate", "care-train-preflight", "info", "clock-o")
        self.pre_note = W.HTML()
        self.pre_note.add_class("care-train-estimate")
        self.start = button("Start", "care-train-start", "success", "play")
        self.stop = button("Stop", "care-train-stop", "danger", "stop")
        self.resume = button("Resume", "care-train-resume", "warning", "repeat")
        self.epoch_bar = W.IntProgress(description="epoch", min=0, max=1)
        self.step_bar = W.IntProgress(description="step", min=0, max=1)
        self.status = W.HTML()
        self.status.add_class("care-train-status")
        self.loss = self.ssim = None
        self.charts = W.HBox()
        super().__init__()
        self._layout()
        self._wire()

    def _layout(self):
        custom = self.state.time_limit <= 0
        self.children = [W.HTML("<h3>2 · Train</h3><p>Choose how long to train; the network, batches and patches are "
                                "sized for the budget. Training runs in the background (closing the page does not "
                                "stop it).</p>"),
                         self.budget, self.recipe] + ([self.custom] if custom else []) + [
                         self.prob_row, self.kind_note, self.advanced, W.HBox([self.pre_btn, self.pre_note]),
                         W.HBox([self.start, self.stop, self.resume]), self.msg,
                         W.HBox([self.epoch_bar, self.step_bar]), self.status, self.charts]
        self._recipe()

    def _recipe(self):
        """What the chosen budget will train (read from the configuration carecore builds)."""
        t = task_spec(self.state.task)
        self.prob_row.layout.display = None if t["probabilistic"] else "none"
        self.kind_note.value = "" if t["probabilistic"] else (
            f"<span style='color:#666'>{html.escape(t['label'])}: the model predicts one value per voxel, so "
            "there are no confidence intervals and no ensembles (step 5 does not apply).</span>")
        from carecore.models.precision import needs_timing

        if self.state.precision == "auto" and len(t["axes"]) == 3 and needs_timing():   # (once per machine)
            self.recipe.value = ("<i>Timing a training step in bfloat16 and in float32 to choose the faster on this "
                                 "machine (once, about 10 s)…</i>")
        try:
            c = self.state.config()
        except CareError as e:
            self.recipe.value = f"<span style='color:#b00020'>{html.escape(str(e))}</span>"
            return
        what = (f"{c.unet_filters} filters, {'×'.join(map(str, c.patch_size))} patches in batches of {c.batch_size}, "
                f"peak learning rate {c.learning_rate:g}, in {'mixed bfloat16' if c.precision == 'mixed_bfloat16' else c.precision}")
        if c.time_limit > 0:
            text = (f"{_mmss(c.time_limit)} of training: {what}, about {c.epochs} validations; the epochs are "
                    "sized from timed steps and the deadline ends training."
                    + (" An ensemble shares the budget." if t["probabilistic"] else ""))
            if c.time_limit > BUDGETS[0][1]:   # longer than the quick budget: what the benchmark found
                text += (" A longer budget helps most with more training data: in our benchmark 30 minutes beat 3 on "
                         "24 simulated volumes, not on 3 of them nor on one 2D image, whose validation curve could "
                         "still rise"
                         + ("; an ensemble spends the time on several networks." if t["probabilistic"] else "."))
        else:
            text = f"{c.epochs} epochs × {c.steps_per_epoch} steps: {what}."
        self.recipe.value = f"<span style='color:#444'>{html.escape(text)}</span>"

    def activate(self):
        """Build the charts when the tab is first shown (bqplot cannot lay out inside a hidden tab)."""
        if self.loss is None:
            self.loss = Curves("loss", ["training", "validation"], xlabel="epoch", css="care-train-loss",
                               markers={"validation"}, x_min=0, legend=None, height="280px")
            # the legend under the chart: inside it, bqplot's box covered the curve's late epochs
            self.loss.set_caption(LOSS_LEGEND)
            self.ssim = Curves("validation SSIM", ["CARE", "best filter"], xlabel="epoch", css="care-train-ssim",
                               colors=["#2ca02c", "#555555"], markers={"CARE"}, dashed={"best filter"}, x_min=0,
                               legend=None, height="280px")
            self.charts.children = [self.loss, self.ssim]
            self.update()

    def _wire(self):
        s = self.state
        for w, t in ((self.budget, "time_limit"), (self.epochs, "epochs"), (self.steps, "steps"),
                     (self.batch, "batch_size"), (self.prob, "probabilistic"), (self.ensemble, "ensemble"),
                     (self.filters, "filters"), (self.lr, "learning_rate"), (self.precision, "precision"),
                     (self.seed, "seed")):
            W.link((s, t), (w, "value"))
        s.observe(lambda c: self._layout(), "time_limit")
        s.observe(lambda c: self._recipe(), ["epochs", "steps", "batch_size", "filters", "learning_rate", "task",
                                             "probabilistic", "ensemble", "precision"])
        # an estimate is of the settings it was made for (a user trial saw one task's on the others' pages)
        s.observe(lambda c: setattr(self.pre_note, "value", ""), ["epochs", "steps", "batch_size", "filters",
                                                                  "learning_rate", "task", "probabilistic", "ensemble",
                                                                  "precision", "time_limit"])
        self.pre_btn.on_click(lambda b: self.on_preflight())
        self.start.on_click(lambda b: self.on_start())
        self.resume.on_click(lambda b: self.on_start(resume=True))
        self.stop.on_click(lambda b: run_guarded(self.msg, self.state.stop_training, done=self._about_running))
        s.observe(lambda c: self.update(), ["losses", "history", "job_state", "progress_step", "baseline", "job_notes",
                                            "job_preparing", "task"])
        s.observe(self._training_ended, "job_state")

    def _about_running(self, text):
        """A note of the running training (``text``), taken down when it ends."""
        self.msg.note(text)
        self._running_note = self.msg.value

    def _training_ended(self, change):
        """Take down what the step said of the training that ran ("a training is running", "stopping ..."):
        a user trial found the refusal of a second Start still there after the training had ended."""
        if change["new"] in ("starting", "running"):
            return
        if self.msg.value and (self.msg.value == self._running_note or "a training is running (" in self.msg.value):
            self.msg.value = ""

    def on_start(self, resume=False):
        self.msg.value = ""
        self.start.disabled = self.resume.disabled = True

        def go():
            try:
                self.state.start_training(resume=resume, note=self.msg.note)
            finally:
                self.update()   # (Start stays off while the job runs)

        run_guarded(self.msg, go, thread=True)

    def on_preflight(self):
        self.pre_note.value = "preparing as training does, timing steps and a validation ..."

        def show(p):
            s = self.state
            text = (f"{p['parameters']:,} parameters · patches {p['patch_memory_mib']:.0f} MiB · "
                    f"{p['seconds_per_step']:.2f} s/step")
            if "steps_in_budget" in p:
                budget = _mmss(s.time_limit)
                if p.get("members", 1) > 1:   # the filters' line is tuned once, before the budget is shared
                    budget = f"each of {p['members']} members' share of {budget}"
                    if round(p["seconds_filters_line"]) >= 1:
                        budget += f" less {p['seconds_filters_line']:.0f} s for the filters' line"
                kept = (p["validations"] - 1) * p["seconds_per_validation"] + p["seconds_after_training"]
                text += (f" · about {p['steps_in_budget']:,} steps fit in {budget}, "
                         f"{p['seconds_preparation']:.0f} s of it for the preparation and {kept:.0f} s for "
                         f"{p['validations']} validation(s) and the work after training")
                if p["room"] < MIN_BUDGET_STEPS:   # training says so too, and trains all the same
                    text += " · too few steps to learn from: give a longer budget"
            else:
                text += f" · ~{p['seconds_per_epoch']:.0f} s/epoch · ~{p['seconds_total'] / 60:.1f} min in all"
            self.pre_note.value = html.escape(text)

        def go():
            try:
                return self.state.run_preflight(note=self.msg.note)
            except Exception:   # (it said "preparing ..." for good under the error: a user trial)
                self.pre_note.value = ""
                raise

        run_guarded(self.msg, go, thread=True, done=show)

    def update(self):
        s = self.state
        if self.loss is not None:
            cv = s.curves()
            self.loss.set_curve("training", *cv["training"])
            self.loss.set_curve("validation", *cv["validation"])
            # (a user trial asked what a loss below 0 meant: the probabilistic networks' Laplace loss)
            below = any(np.nanmin(np.asarray(cv[n][1], float), initial=np.inf) < 0 for n in ("training", "validation"))
            self.loss.set_caption(LOSS_LEGEND + [(None, None, "· below 0: the loss of a probabilistic network is a "
                                                              "negative log-likelihood (Laplace), not an error; lower "
                                                              "is better")] * below)
            self.ssim.set_curve("CARE", *cv["ssim"])
            legend = [("#2ca02c", False, "CARE")]
            if "baseline" in cv:
                self.ssim.set_curve("best filter", *cv["baseline"], label=s.baseline_label())
                legend.append(("#555555", True, f"{s.baseline_label()}: SSIM {cv['baseline'][1][0]:.3f} on the same "
                                                  "validation patches"))
            self.ssim.set_caption(legend)
            # both x axes span the epochs the job plans from its first step, and CARE's points share the
            # y axis with the filters' line
            ends = [float(x) for name in ("training", "ssim") for x in cv[name][0][-1:]]
            horizon = max([s.epochs_planned()] + ends) or None
            self.loss.set_range(x_max=horizon)
            self.ssim.set_range(x_max=horizon, y_range=s.ssim_range(cv))
        ev = s.last_event
        members = int(ev.get("members") or (s.ensemble if s.ensemble >= 2 else 1))
        epochs = int(ev.get("epochs") or s.epochs) * members
        steps = int(ev.get("steps") or max(s.steps, 1))
        n_hist = len([h for h in s.history if h.get("epoch") is not None])
        self.epoch_bar.max, self.epoch_bar.value = max(epochs, 1), min(n_hist, epochs)
        self.step_bar.max, self.step_bar.value = steps, min(s.progress_step, steps)
        state = s.job_state
        # an ensemble's epochs are the member's, its budget's clock the ensemble's
        who = "training"
        if int(ev.get("members") or 1) >= 2:
            who += f" member {ev.get('member')} of {ev['members']}"
        # (under a budget the epochs' total is what the time left holds at the pace so far: an estimate)
        about = "about " if s.job_time_limit > 0 else ""
        running = f"{who}: epoch {s.progress_epoch}" + (f" of {about}{ev['epochs']}" if ev.get("epochs") else "")
        if ev.get("elapsed") is not None and state == "running":
            if s.job_time_limit > 0:   # the budget's clock, counted from the call's start as its deadline is
                from carecore.training.events import budget_clock

                used = budget_clock(ev, s.job_time_limit)
                running += (f" · {_mmss(used)} of the {_mmss(s.job_time_limit)} budget used, "
                            f"about {_mmss(s.job_time_limit - used)} left")
            else:
                running += f" · {_mmss(ev['elapsed'])} elapsed" + (f", about {_mmss(ev['eta'])} left" if ev.get("eta") else "")
        prep = s.job_preparing
        if prep and state == "running":   # (a minute on a 3D stack said "epoch 0")
            m = f" member {prep.get('member')} of {prep['members']}" if int(prep.get("members") or 1) >= 2 else ""
            running = (f"training{m}: preparing ("
                       + ("tuning the classical filters on the validation patches, the line to beat, and building "
                          "the network" if prep.get("tuning", True) else "building the network") + ") ...")
        text = {"starting": "starting the training process ...", "running": running,
                "completed": "training completed. Next: step 3 · Restore.",
                "time_limit": "the time budget is used up: training ended on time with its best weights. "
                              "Next: step 3 · Restore.",
                "stopped": "training stopped.", "early_stopped": "stopped early (no more improvement).",
                "nan": "training failed", "error": "training failed", "died": "the training process ended unexpectedly",
                "unknown": "cannot read this job's status", "unreadable": "cannot read the last training job"}.get(state, "")
        other = job_task(s.job_dir)
        if text and state in ("starting", "running") and other and other != s.task:
            # a training of the task chosen before (a user trial switched task mid-run: the status line named none)
            try:
                text = f"{task_spec(other)['label']}, {s.rel(s.job_dir)}: {text}"
            except ValueError:   # (a job outside the data root: its path as given)
                text = f"{task_spec(other)['label']}, {s.job_dir}: {text}"
        if text and s.job_dir and state not in ("starting", "running", "unreadable"):
            # which training this is (a user trial: after a change of task its "Next: step 3" read as the new task's)
            try:
                text = f"last training, {s.rel(s.job_dir)}: {text}"
            except ValueError:   # (a job outside the data root: its path as given)
                text = f"last training, {s.job_dir}: {text}"
        verdict = s.line_verdict() if state in ("completed", "time_limit", "early_stopped", "stopped") else ""
        resumed = (f"<br><span class='care-job-line'>{html.escape(verdict)}.</span>" if verdict else "") + \
            (f"<br><span style='color:#666'>{html.escape(s.resume_note)}</span>" if s.resume_note else "")
        notes = "".join(f"<br><span class='care-job-note' style='color:#a15c00'>{html.escape(n)}</span>"
                        for n in s.job_notes.splitlines())
        self.status.value = f"<span class='care-job-{state}'>{html.escape(text)}</span>{resumed}{notes}"
        # one training at a time, and no estimate beside it (its timed steps would share the CPU)
        self.start.disabled = self.resume.disabled = self.pre_btn.disabled = state in ("starting", "running")
        if s.job_message and state in ("nan", "error", "died", "stopped", "unreadable"):
            (self.msg.error if state != "stopped" else self.msg.note)(s.job_message)


class RestoreStep(W.VBox):
    def __init__(self, state: LabState):
        self.state = state
        self.msg = Message("care-restore-msg")
        self.model = W.Dropdown(description="Model", options=[], layout=W.Layout(width="480px"))
        self.image = W.Dropdown(description="Image", options=[], layout=W.Layout(width="480px"))
        self.model.add_class("care-restore-model")
        self.image.add_class("care-restore-image")
        self.refresh = button("Refresh lists", "care-restore-refresh", "", "refresh")
        self.where = W.ToggleButtons(options=RESTORE_WHERE, value=state.restore_where, style={"button_width": "150px"})
        self.where.add_class("care-restore-where")
        self.tta = W.Checkbox(description="Average the image's flips and 90° rotations (8 views, 4 for a model trained "
                                          "on patches that were not square: as many times the work; smoother where "
                                          "the structure is faint)", value=state.tta, indent=False,
                              layout=W.Layout(width="auto"))
        self.tta.add_class("care-restore-tta")
        self.smooth = W.Checkbox(description="Apply the model's output smoothing, if it has one (chosen by training "
                                             "on the validation patches; off: the network's output as it is)",
                                 value=state.smooth, indent=False, layout=W.Layout(width="auto"))
        self.smooth.add_class("care-restore-smooth")
        self.own = W.Checkbox(description="Scale the image by its own percentiles (an image taken with another gain, "
                                          "offset or laser power than the training images; off: by theirs, as the "
                                          "network learned)", value=state.own_percentiles, indent=False,
                              layout=W.Layout(width="auto"))
        self.own.add_class("care-restore-own")
        self.own_note = W.HTML()   # (in its place for a model that always scales by the image's own percentiles)
        self.own_note.add_class("care-restore-own-note")
        self.address = W.Text(description="Scheduler", placeholder="tcp://127.0.0.1:8786", value=state.scheduler_address,
                              layout=W.Layout(width="480px"))
        self.address.add_class("care-restore-scheduler")
        self.workers = W.BoundedIntText(description="Workers", min=1, max=64, value=state.n_workers,
                                        layout=W.Layout(width="180px"))
        self.workers.add_class("care-restore-workers")
        self.chunks = W.Text(description="Chunks", placeholder="automatic (e.g. 8,64,64)", value=state.chunks,
                             layout=W.Layout(width="300px"))
        self.chunks.add_class("care-restore-chunks")
        self.cluster_note = W.HTML(
            "<span style='color:#666'>Chunk by chunk on a Dask cluster: every chunk is restored with the network's "
            "halo around it (the same result as in this process) and written into "
            "<code>restored/&lt;model&gt;/&lt;image's folders&gt;/&lt;image&gt;.ome.zarr</code> (OME-Zarr with a pyramid; extras of "
            "probabilistic models under <code>extras/</code>). The workers must see the data root at the same path. "
            "The app then shows the full-resolution level read back into memory: fine for the demo; open very "
            "large outputs in napari or Fiji (MoBIE, BigDataViewer). Upsampling, isotropic and projection models "
            "restore in this process only.</span>")
        self.cluster_box = W.VBox()
        self.cluster_box.add_class("care-restore-cluster")
        self.go = button("Restore", "care-restore-go", "success", "magic")
        self.stop = button("Stop", "care-restore-stop", "danger", "stop")
        self.stop.disabled = True
        self.bar = W.IntProgress(description="tiles", min=0, max=1)
        self.progress = W.HTML()
        self.progress.add_class("care-restore-progress")
        self._counted = None   # (done, total, what) of the last tiles' (chunks') count: beside the filters' own
        self.problems = W.HTML()
        self.metrics = W.HTML()
        self.metrics.add_class("care-restore-metrics")
        self.before = SliceView("input", "care-restore-input")
        self.after = SliceView("restored", "care-restore-output")
        # a time-lapse or a stack of samples: every frame is restored and saved; this picks the one shown and scored
        self.frame = W.IntSlider(description="time point", min=0, max=0, continuous_update=False,
                                 style={"description_width": "initial"}, layout=W.Layout(width="480px", display="none"))
        self.frame.add_class("care-restore-frame")
        # the thread setting the slider from the state (None: none is): its own changes are not the user's. A
        # move of the user's meanwhile (it reaches the kernel on another thread) is taken: a flag for all
        # threads dropped it, and a quick second move was never shown (the slider at 2, time point 1 shown)
        self._framing = None
        self._frame_lock = threading.Lock()
        self._frame_busy, self._frame_wanted = False, 0   # a frame being shown; the one the slider asks for
        # the chosen model as a bioimage.io package (a user trial looked for it here and found the CLI only)
        self.author = W.Text(description="Author", placeholder="your name, written into the package (several: A; B)",
                             layout=W.Layout(width="420px"))
        self.author.add_class("care-export-author")
        self.export = button("Export for Fiji, KNIME, napari", "care-export-go", "", "download")
        self.export_msg = Message("care-export-msg")
        self.export_box = W.VBox([W.HTML(
            "<h4>Share the model</h4><p style='color:#666'>The chosen model as a bioimage.io package (a .zip "
            "checked against this lab's own prediction before it is written), for Fiji's deepImageJ, KNIME, napari "
            "or <code>carecore predict --model PACKAGE.zip</code>. Denoising and sub-diffraction models; an "
            "ensemble gives its first member.</p>"), W.HBox([self.author, self.export]), self.export_msg])
        self.export_box.add_class("care-export")
        super().__init__([W.HTML("<h3>3 · Restore</h3><p>Choose a model and an image (a TIFF or an OME-Zarr "
                                 "<code>*.ome.zarr</code>); it is restored tile by tile "
                                 "and saved with the output's axes and voxel size (the input's, or a finer Z for "
                                 "upsampling and isotropic models) as <code>restored/&lt;model&gt;/&lt;image's path&gt;</code>, "
                                 "or chunk by chunk on a Dask cluster for large images. "
                                 "With a ground truth, CARE is compared on the output's grid with the input brought "
                                 "onto it and with classical filters tuned on that ground truth.</p>"),
                          W.HBox([self.model, self.refresh]), self.problems, self.image, self.tta, self.smooth, self.own, self.own_note,
                          self.where,
                          self.cluster_box,
                          W.HBox([self.go, self.stop, self.bar, self.progress]),
                          self.msg, self.metrics, self.frame, W.HBox([self.before, self.after]), self.export_box])
        self._where()
        self.refresh.on_click(lambda b: run_guarded(self.msg, self.fill))
        self.go.on_click(lambda b: self.on_restore())
        self.stop.on_click(lambda b: self.on_stop())
        self.export.on_click(lambda b: self.on_export())
        self.frame.observe(lambda c: None if self._framing == threading.get_ident() else self.on_frame(c["new"]),
                           "value")
        # one way (dropdown -> state): an empty dropdown's None must not reach the state
        # (nor a selection a dropdown passes through while fill sets its options: fill gives the state its final one)
        self._fill_lock, self._filling = threading.RLock(), None   # (the thread filling the lists, if any)
        self.model.observe(lambda c: self._chosen("model_dir", c["new"]), "value")
        self.image.observe(lambda c: self._chosen("input_path", c["new"]), "value")
        for w, t in ((self.tta, "tta"), (self.smooth, "smooth"), (self.own, "own_percentiles"), (self.where, "restore_where"),
                     (self.address, "scheduler_address"), (self.workers, "n_workers"), (self.chunks, "chunks")):
            W.link((state, t), (w, "value"))
        state.observe(lambda c: self._where(), "restore_where")
        # a new task offers its own model first; a model chosen (here, or a training's that ended) is kept (a user
        # trial: choosing another task's model snapped back to this task's within a second)
        # (on the page's thread: a job's watcher sets the model it trained from its own thread, and an image
        # picked at that moment could lose to the watcher's fill, two threads changing one dropdown)
        page = PageThread()
        state.observe(lambda c: page.call(lambda: run_guarded(self.msg, self.fill, fresh=False)), "task")
        state.observe(lambda c: page.call(lambda: run_guarded(self.msg, lambda: self.fill(keep_model=True), fresh=False)),
                      "model_dir")
        state.observe(lambda c: self.msg.note(c["new"]) if c["new"] else None, "restore_note")
        # (on the page's thread: a training's watcher sets the model it trained from its own)
        state.observe(lambda c: page.call(self._own_for_model), "model_dir")
        run_guarded(self.msg, self.fill)
        self._own_for_model()

    def _own_for_model(self):
        """The own-percentiles box, or in its place a note where the chosen model always scales by the image's own."""
        why = self.state.model_scales_by_own()
        self.own.layout.display = "none" if why else None
        self.own_note.value = (f"<span style='color:#666'>This model scales every image by its own percentiles "
                               f"({html.escape(why)}).</span>" if why else "")

    def _where(self):
        """The cluster's settings, shown when a cluster is chosen."""
        where = self.state.restore_where
        first = [self.address] if where == "scheduler" else [self.workers] if where == "local" else []
        self.cluster_box.children = [] if where == "here" else [W.HBox(first + [self.chunks]), self.cluster_note]

    def _chosen(self, trait, value):
        """A dropdown's selection to the state: the user's, not one fill passes through (nor an empty one's None)."""
        if value and self._filling != threading.get_ident():
            setattr(self.state, trait, value)

    def fill(self, keep_model=False):
        """The model and image lists, read again; the chosen ones kept where they are still offered.

        New options select their first entry before the chosen one is set again: the page gets each list
        and its selection in one message, and the state only the final selection. (The page was sent the
        first entry, then the chosen one: an image the user picked in between was dropped, and a browser
        test restored another image than the one it had chosen.) A job's watcher that sets the model it
        trained has its fill run on the page's thread (:class:`PageThread`), after or before a pick the
        page sends, never during it: an image picked then is kept (the page sends a pick as a place in
        the list it has: the images keep their places, and so do the models, new ones listed last, so a
        model picked then is kept too; only a folder deleted meanwhile moves the ones after it); one fill at
        a time all the same."""
        s = self.state
        with self._fill_lock:
            with self._unsaid():
                models = s.models_available()
                self.problems.value = "".join(f"<div style='color:#a66'>not offered: {html.escape(p)}</div>"
                                              for p in s.model_problems)
                chosen = s.chosen_model
                # the model chosen, or (a new task, a refresh) the task's own, where it has one
                current = chosen if keep_model and chosen in models else s.model_for_task(models)
                # the places the page has kept: new folders (a training's that ended, one made by hand) last
                shown = [m for m in self.model.options if m in models]
                opts = shown + [m for m in models if m not in shown]
                opts = opts if current in opts or not current else opts + [current]
                # (not under hold_trait_notifications: a dropdown validates its value against options that
                # only update when notifications flow)
                with self.model.hold_sync():
                    self.model.options = opts
                    if current in opts:
                        self.model.value = current
            if self.model.value and self.model.value != s.model_dir:   # (another model, or the watcher's absolute
                s.model_dir = self.model.value   # path: the state's observer fills again, its training images named)
                return
            with self._unsaid():
                default = s.input_path or s.default_input()
                choices = s.image_choices()   # (label, path): ground truths last; training images named
                with self.image.hold_sync():
                    self.image.options = choices
                    if default in [path for _, path in choices]:
                        self.image.value = default
            if self.image.value and self.image.value != s.input_path:
                s.input_path = self.image.value

    @contextlib.contextmanager
    def _unsaid(self):
        """The dropdowns' selections in this thread not told to the state (:meth:`_chosen`)."""
        outer, self._filling = self._filling, threading.get_ident()
        try:
            yield
        finally:
            self._filling = outer

    def on_stop(self):
        self.state.stop_restore()
        self.msg.note("skipping the classical filters' rows ..." if self.state.scores_pending else
                      "stopping after the running tiles or chunks ...")

    def on_restore(self):
        self.go.disabled = self.frame.disabled = True
        self.stop.disabled = False
        self.progress.value, self._counted = "", None
        self.metrics.value = ""   # (not the image before's scores while this one is restored)
        for v in (self.before, self.after):   # nor its images (a user trial took them for this one's for minutes)
            v.clear()
        counted = "chunks" if self.state.restore_where != "here" else "tiles"
        self.bar.description, self.bar.value = counted, 0

        progress = self._progress

        def show(restored):
            s = self.state
            self._show_count()   # the tiles' (chunks') count: where a stop left it, or all of them
            if restored is None:
                more = (" The chunks written are kept: restoring again with the same settings continues."
                        if s.restore_where != "here" else "")
                self.msg.note("stopped." + more)
                if s.restored is not None:
                    self._render()   # the restoration shown before (its summary names it)
                return
            if not self._counted:   # (no count came: the bar full; else _show_count put it back to the count)
                self.bar.description, self.bar.value = counted, self.bar.max
            self._render()
            self.msg.note("restored. Next: step 4 · View.")

        def shown():   # the restoration saved and shown; the filters' rows follow (minutes on a large image)
            self._render()
            self.msg.note("restored and saved; tuning the classical filters on its ground truth for the comparison ...")

        def go():
            try:
                try:
                    restored = self.state.restore(progress, shown=shown)
                except Stopped:
                    restored = None
                except Exception:
                    if self.state.restored is not None:
                        self._render()   # the restoration shown before (its summary names it), then the error
                    raise
                show(restored)
            finally:   # (after show: a frame chosen before it had its filters' count overwritten by show's)
                self.go.disabled = self.frame.disabled = False
                self.stop.disabled = True

        self.msg.note("restoring ...")
        run_guarded(self.msg, go, thread=True)


    def on_export(self):
        """Write the chosen model's package (seconds: each weight format is checked against carecore) in a thread;
        the button is given back once the result (or the error) is said."""
        self.export.disabled = True

        def show(model, r):
            where = Path(self.state.data_root) / r["path"]
            said = [f"<b class='care-export-done'>wrote <code>{html.escape(str(where))}</code></b> "
                    f"({r['mib']:.1f} MiB{', replacing the earlier export' if r['replaced'] else ''}; on the machine "
                    f"that runs this lab) from <code>{html.escape(r['member'] or model)}</code>"
                    + (" (the ensemble's first member: the format holds one network)" if r["member"] else "")
                    + ". In Fiji: deepImageJ → Install Model, from this file; or restore with "
                    f"<code>carecore predict --model {html.escape(str(where))} --in IMAGE --out RESTORED.tif</code>."]
            if r["probabilistic"]:   # (deepImageJ shows a two-channel image: a trial asked what the second was)
                said.append("Its output has two channels: the restoration (mean) and the width of its Laplace "
                            "distribution (scale).")
            if not r["authors"]:
                said.append("Its author is \"CARE Lab user\": type your name above and export again before you publish it.")
            if r["test_input"]:   # (a crop of it travels in the package: a user may not be free to share it)
                said.append(f"Its test image is a crop of <code>{html.escape(r['test_input'])}</code>: publish the "
                            "package only if you may share that image, or export with <code>carecore export "
                            "--test-input IMAGE</code>.")
            self.export_msg.value = "<div style='color:#444'>" + "<br>".join(said) + "</div>"

        def go():
            try:
                model = self.state.chosen_model
                show(model, self.state.export_model(self.author.value))
            except Exception as e:   # (said first, then the button given back: a second click's note stays its own)
                self.export_msg.error(e if isinstance(e, CareError) else f"{type(e).__name__}: {e}")
                if not isinstance(e, CareError):
                    traceback.print_exc()
            finally:
                self.export.disabled = False

        self.export_msg.note(f"exporting {self.model.value or 'the chosen model'} (each weight format is checked "
                             "against this lab's prediction) ...")
        run_guarded(self.export_msg, go, thread=True, fresh=False)

    def _progress(self, done, total, what):
        if what not in ("filters", "starts"):
            self._counted = (done, total, what)
            self._show_count()
            return
        # the chunks' (or tiles') count stays next to the filters' own (or their screening of the model's
        # classical starts'), said done where they all were
        self.bar.description = what
        self.bar.max, self.bar.value = max(total, 1), done
        text = f"{what} {done}/{total}"
        if self._counted:
            d, t, w = self._counted
            text = f"{progress_text(d, t, w)}{' done' if d == t else ''} · {text}"
        self.progress.value = f"<span class='care-restore-count'>{html.escape(text)}</span>"

    def _show_count(self):
        """The bar and the label beside it at the last tiles' (chunks') count: while they are restored, and once
        the filters' tuning after them has ended or was stopped (their own bar and count no longer shown)."""
        if not self._counted:
            self.progress.value = ""
            return
        done, total, what = self._counted
        self.bar.description = what if what in ("chunks", "slices") else "tiles"   # (an isotropic model's: slices)
        self.bar.max, self.bar.value = max(total, 1), done
        self.progress.value = f"<span class='care-restore-count'>{html.escape(progress_text(done, total, what))}</span>"

    def _render(self):
        """The shown frame's views, the summary and the scores; the frame slider for a time-lapse."""
        s = self.state
        self.before.set_image(s.input_image, spacing=s.input_spacing)
        self.after.set_image(s.restored, spacing=s.output_spacing)
        td = "<td style='padding:2px 10px'>"
        rows = "".join(f"<tr>{td}{html.escape(k)}</td>{td}{m['nrmse']:.4f}</td>{td}{m['ssim']:.4f}</td>"
                       f"{td}{m['psnr']:.2f}</td></tr>" for k, m in s.metrics.items())
        table = ("<table><tr><th></th><th>NRMSE</th><th>SSIM</th><th>PSNR (dB)</th></tr>" + rows + "</table>") if rows else \
            "" if s.metrics_note.startswith("not scored") else \
            "<i>no ground truth found for this image (looked for the same name in a <code>high</code> folder "\
            "next to its <code>low</code> folder)</i>"
        pending = " care-restore-pending" if s.scores_pending else ""
        note = f"<p class='care-restore-note{pending}' style='color:#666'>{html.escape(s.metrics_note)}</p>" \
            if s.metrics_note else ""
        note += "".join(f"<p class='care-restore-verdict'><b>{html.escape(x)}.</b></p>" for x in s.metrics_verdict)
        shown = (" (an OME-Zarr store: shown here is its full-resolution level read into memory; open large "
                 "outputs in napari or Fiji)" if s.restored_path.lower().endswith(".zarr") else "")
        warned = "".join(f"<p class='care-restore-warning' style='color:#a15c00'>warning: {html.escape(w)}</p>"
                         for w in s.restore_warnings)
        self.metrics.value = (f"<p class='care-restore-summary'>{html.escape(s.restore_summary)}; saved "
                              f"<code>{html.escape(s.restored_path)}</code>{html.escape(shown)}</p>{warned}{table}{note}")
        self._framing = threading.get_ident()
        try:   # (0 first: step 4's slider, linked, is never clamped to a max below the value shown before)
            self.frame.value = 0
            self.frame.max = max(s.frame_count - 1, 0)
            self.frame.value = s.frame_index
            self.frame.description = s.frame_name + " (from 0)"
            self.frame.layout.display = "" if s.frame_count > 1 else "none"
        finally:
            self._framing = None

    def on_frame(self, index):
        """Show and score another frame of the restored time-lapse (the filters are tuned on it), in a
        thread; moves of the slider meanwhile are taken when it ends (the last one), one frame at a time."""
        with self._frame_lock:
            self._frame_wanted = index
            if self._frame_busy:
                return
            self._frame_busy = True
        self.go.disabled, self.stop.disabled = True, False
        self.msg.note("scoring this frame ...")
        threading.Thread(target=self._frame_loop, daemon=True).start()

    def _frame_loop(self):
        s = self.state
        try:
            while True:
                with self._frame_lock:
                    index = self._frame_wanted
                try:
                    s.choose_frame(index, self._progress, shown=self._render)   # (its filters' rows follow)
                    self.msg.note(f"showing {s.frame_name} {index} (counted from 0).")
                except CareError as e:
                    self.msg.error(e)
                except Exception as e:  # noqa: BLE001 - an unexpected failure must not kill the app
                    self.msg.error(f"{type(e).__name__}: {e}")
                    traceback.print_exc()
                self._render()   # the frame the state shows (the one before, after an error)
                self._show_count()   # (not the filters' count of a tuning ended or stopped)
                with self._frame_lock:
                    if self._frame_wanted == index:
                        self._frame_busy = False
                        return
        finally:
            with self._frame_lock:
                self._frame_busy = False
            self.go.disabled, self.stop.disabled = False, True


class ViewStep(W.VBox):
    def __init__(self, state: LabState):
        self.state = state
        self.msg = Message("care-view-msg")
        self.show3d = button("Show volumes", "care-view-show", "primary", "cube")
        self.vol_box = W.Box()
        self.ortho_in = SliceView("input (its own grid)", "care-view-input")
        self.ortho_out = SliceView("restored (the output's grid)", "care-view-output")
        self.row = W.IntSlider(description="profile row", min=0, max=0, continuous_update=False)
        self.profile = None
        self.profile_box = W.Box()
        self.caption = W.HTML()
        self.caption.add_class("care-view-caption")
        # a time-lapse or a stack of samples: the frame shown (linked to step 3's slider, which scores it)
        self.frame = W.IntSlider(description="time point", min=0, max=0, continuous_update=False,
                                 style={"description_width": "initial"}, layout=W.Layout(width="480px", display="none"))
        self.frame.add_class("care-view-frame")
        self.frame.observe(self._frame_moved, "value")
        self._shown = None   # the state's view_count when the views were filled (None: never)
        self.intro = W.HTML()
        super().__init__([self.intro, W.HBox([self.show3d]), self.msg, self.caption, self.frame, self.vol_box, W.HBox([self.ortho_in, self.ortho_out]), self.row,
                          self.profile_box])
        self.show3d.on_click(lambda b: run_guarded(self.msg, self.on_show))
        state.observe(lambda c: self._for_task(), "task")
        self._for_task()
        self.row.observe(lambda c: self._profile(), "value")
        self.ortho_out.slider.observe(lambda c: self._profile(), "value")
        # the Z sliders follow each other through the grids' ratio (one to one on the same grid)
        self.ortho_in.slider.observe(lambda c: self._follow(self.ortho_in, self.ortho_out, c["new"]), "value")
        self.ortho_out.slider.observe(lambda c: self._follow(self.ortho_out, self.ortho_in, c["new"]), "value")

    def _for_task(self):
        """What the step shows, said for the task's output: volumes for a stack, images for a 2D output (a user
        trial found "Show volumes" and "drag to rotate" above a projection's and a 2D model's images)."""
        t = task_spec(self.state.task)
        volumes = len(t["axes"]) == 3 and t.get("high_axes") != "YX"
        self.show3d.description = "Show volumes" if volumes else "Show images"
        self.intro.value = (
            "<h3>4 · View</h3><p>Input and restored data side by side, each on its own grid"
            + (" (a coarse stack and its finer restoration are drawn at their voxel sizes): maximum-intensity "
               "projections with a shared camera (drag to rotate; each has its contrast window), orthogonal slices "
               "(the slice sliders follow each other in space), and a line profile on the output's grid.</p>"
               if volumes else ": the images (a stack by its slices, with their slider), each with its contrast "
                               "window, and a line profile on the output's grid.</p>"))

    def _frame_moved(self, change):
        """The user chose another frame here: step 3 scores it, then the views follow (``view_count``)."""
        s = self.state
        if s.restored is not None and change["new"] != s.frame_index:   # (not the slider set from step 3)
            self.msg.note(f"scoring {s.frame_name} {change['new']} (counted from 0) in step 3 ...")
        elif "in step 3 ..." in self.msg.value:   # set back to the frame shown (its scoring failed: step 3 says why)
            self.msg.value = ""

    @staticmethod
    def _follow(src, dst, z):
        if src.data is None or dst.data is None or src.data.ndim != 3 or dst.data.ndim != 3:
            return
        n_src, n_dst = src.data.shape[0], dst.data.shape[0]
        if int(round(dst.slider.value * n_src / n_dst)) == z:   # already there (no ping-pong between grids)
            return
        dst.slider.value = min(int(round(z * n_dst / n_src)), n_dst - 1)

    def activate(self):
        if self.profile is None:
            # the legend goes under the chart: the input's label can be long ("input interpolated along Z")
            self.profile = Curves("line profile", ["input", "restored"], xlabel="X (pixels)", ylabel="intensity",
                                  css="care-view-profile", x_min=0, x_format="d", legend=None,
                                  colors=["#1f77b4", "#ff7f0e"])
            self.profile_box.children = [self.profile]
        if self._shown is not None and self._shown != self.state.view_count:
            # restored again, or another frame chosen in step 3, since the views were filled
            run_guarded(self.msg, self.on_show)

    def on_show(self):
        s = self.state
        if s.restored is None:
            raise CareError("restore an image first (step 3)")
        self._shown = s.view_count
        if "in step 3 ..." in self.msg.value:   # (the frame chosen here, scored)
            self.msg.value = ""
        self.activate()
        caption = html.escape(s.shown_caption)
        if s.frame_count > 1:
            caption += f" (another {html.escape(s.frame_name)}: the slider below)"
        self.caption.value = f"<p style='color:#666'>showing {caption}</p>"
        self.ortho_in.set_image(s.input_image, spacing=s.input_spacing)
        self.ortho_out.set_image(s.restored, spacing=s.output_spacing)
        self.row.max = s.restored.shape[-2] - 1
        # through the brightest structure of the slice shown (a middle row can cross only background)
        self.row.value = profile_row(s.restored[self.ortho_out.slider.value] if s.restored.ndim == 3 else s.restored)
        if s.restored.ndim == 3 and s.input_image.ndim == 3:
            self.vol_box.children = [volume_pair(s.input_image, s.restored, css="care-view-volumes",
                                                 spacings=(s.input_spacing, s.output_spacing))]
        else:
            what = "the output is a 2D image" if s.input_image.ndim == 3 else "2D images"
            self.vol_box.children = [W.HTML(f"<i>{what}: no volume rendering</i>")]
        self._profile()

    def _profile(self):
        s = self.state
        if s.restored is None or self.profile is None:
            return
        z = self.ortho_out.slider.value if s.restored.ndim == 3 else None
        pick = (lambda a: a[z, self.row.value]) if z is not None else (lambda a: a[self.row.value])
        x = np.arange(s.restored.shape[-1])
        self.profile.set_curve("restored", x, pick(s.restored))
        grid = s.input_on_grid if s.input_on_grid is not None else s.input_image
        legend = [("#ff7f0e", False, "restored")]
        if grid is not None and grid.shape == s.restored.shape:
            self.profile.set_curve("input", x, pick(grid), label=s.input_label)
            legend.insert(0, ("#1f77b4", False, s.input_label))
        else:
            self.profile.set_curve("input", [], [])
        where = f"slice Z {z}, row {self.row.value}" if z is not None else f"row {self.row.value}"
        # (the input's scale said here: in the axis label it was cut at the chart's left edge)
        self.profile.set_caption(legend + [("transparent", False, f"({where} of the output's grid; intensities on the "
                                                                  "input's scale)")])


class ReliabilityStep(W.VBox):
    def __init__(self, state: LabState):
        self.state = state
        self.msg = Message("care-rel-msg")
        self.go = button("Compute confidence", "care-rel-go", "primary", "bar-chart")
        self.row = W.IntSlider(description="row", min=0, max=0, continuous_update=False)
        self.z = W.IntSlider(description="slice", min=0, max=0, continuous_update=False)
        self.band = self.calib = None
        # (the calibration chart keeps its width: the text beside it had squeezed it, its title and x axis cut)
        self.band_box, self.calib_box = W.Box(), W.Box(layout=W.Layout(flex="0 0 auto"))
        self.play = W.Play(min=0, max=0, interval=400, description="play")
        self.frame = W.IntSlider(description="sample", min=0, max=0)
        W.jslink((self.play, "value"), (self.frame, "value"))
        self.movie = W.Image(format="png", layout=W.Layout(width="260px", display="none"))   # (no broken icon)
        self.movie.add_class("care-rel-movie")
        self.dmap = W.Image(format="png", layout=W.Layout(width="260px", display="none"))
        self.dnote = W.HTML()
        # the map's colour bar: what a colour means (a trial missed one)
        self.dbar_image = W.Image(format="png", layout=W.Layout(width="160px", height="12px", margin="0 6px"))
        self.dbar = W.HBox([W.HTML("<small>0 agree</small>"), self.dbar_image, W.HTML("<small>1 disjoint</small>")],
                           layout=W.Layout(display="none", align_items="center"))
        self.dbar.add_class("care-rel-dbar")
        self.ece = W.HTML()
        self.spread = W.HTML()   # (how wide the intervals are on the structures: a trial found nothing said it)
        self.spread.add_class("care-rel-spread")
        self.caption = W.HTML()
        self.caption.add_class("care-rel-caption")
        self._of = None   # what the read-outs shown are of (None: none shown)
        self.kind_note = W.HTML()   # (a task whose models give no intervals: said before a click, not after it)
        self.kind_note.add_class("care-rel-kind-note")
        self.readouts = W.VBox([self.caption, W.HBox([self.z, self.row]), self.band_box, self.spread,
                                W.HBox([W.VBox([W.HTML("<b>uncertainty movie</b>"), W.HBox([self.play, self.frame]),
                                                self.movie]),
                                        W.VBox([W.HTML("<b>disagreement D</b>"), self.dmap, self.dbar, self.dnote])]),
                                W.HBox([self.calib_box, self.ece])])
        super().__init__([W.HTML("<h3>5 · Reliability</h3><p>Where may the restoration be wrong? The 90 % interval "
                                 "along a line (on the input's intensity scale; for an ensemble, of the mixture of its "
                                 "members), an uncertainty movie of samples, the ensemble disagreement and the "
                                 "calibration curve, measured without fitting anything to the ground truth.</p>"),
                          self.kind_note, W.HBox([self.go]), self.msg, self.readouts])
        self.go.on_click(lambda b: self.on_compute())
        state.observe(lambda c: self._for_task(), "task")
        self._for_task()
        for w in (self.row, self.z):
            w.observe(lambda c: self._profile(), "value")
        self.frame.observe(lambda c: self._frame(), "value")
        # restored again, or another frame shown: the read-outs of the one before are taken down
        state.observe(lambda c: None if c["new"] else self._stale(), "reliability_ready")

    def _for_task(self):
        """A task whose models predict one value per voxel: said up front, Compute off and no empty read-outs (a
        user trial found them shown, and the reason only after a click)."""
        t = task_spec(self.state.task)
        self.go.disabled = not t["probabilistic"]
        self.readouts.layout.display = None if t["probabilistic"] else "none"
        self.kind_note.value = "" if t["probabilistic"] else (
            f"<p style='color:#666'>{html.escape(t['label'])}: its models predict one value per voxel, so there are no "
            "confidence intervals, samples or disagreement to read out here. The scores against a ground truth (step 3) "
            "and the comparison with the classical methods are this task's check.</p>")

    def _stale(self):
        if self._of is None:
            return
        before, self._of = self._of, None
        if self.band is not None:
            self.band.clear()
            for name in ("calibrated", "model"):
                self.calib.set_curve(name, [], [])
        self.movie.value = b""
        self.movie.layout.display = "none"
        self.dmap.layout.display = self.dbar.layout.display = "none"
        self.dnote.value = self.ece.value = self.spread.value = ""
        now = self.state.shown_caption
        self.caption.value = (f"<p style='color:#a15c00'>the read-outs of {html.escape(before)} were taken down: step 3 "
                              f"shows {html.escape(now) or 'nothing'} now; compute again for it</p>")

    def activate(self):
        if self.band is None:
            self.band = BandProfile(css="care-rel-band")
            self.calib = Curves("calibration (no fit to the truth)", ["calibrated", "model"], xlabel="confidence",
                                ylabel="accuracy", css="care-rel-calibration", colors=["#999999", "#d62728"],
                                markers={"model"}, dashed={"calibrated"}, x_min=0, x_max=1, y_range=(0, 1),
                                x_format=".1f", y_format=".1f", legend="top-left", width="360px", height="300px")
            # (shown with the first read-outs: empty charts would draw meaningless axes)

    def on_compute(self):
        self.activate()
        self.msg.note("computing ...")
        run_guarded(self.msg, self.state.compute_reliability, thread=True, done=lambda r: self.show(r))

    def show(self, r):
        from carecore.render import colorbar_png, display_range, to_png

        self._of = r.get("of", "")
        if r is not self.state.readouts:   # restored again, or another frame shown, since they were computed
            self._stale()
            self.msg.note("step 3 changed what it shows while these were computed: compute again")
            return
        self.caption.value = f"<p style='color:#666'>of {html.escape(self._of)}</p>"
        self.band_box.children, self.calib_box.children = [self.band], [self.calib]   # (no empty charts before)
        m = r["mean"]
        self.z.max = m.shape[0] - 1 if m.ndim == 3 else 0
        self.z.value = m.shape[0] // 2 if m.ndim == 3 else 0
        self.z.layout.display = "" if m.ndim == 3 else "none"   # (a 2D image has no slices)
        self.row.max = m.shape[-2] - 1
        # through the brightest structure of the slice (a trial's middle row crossed only background: a flat band)
        self.row.value = profile_row(m[self.z.value] if m.ndim == 3 else m)
        self._range = display_range(m)
        self.frame.max = self.play.max = len(r["samples"]) - 1
        self._profile()
        self._frame()
        said = spread_text(r.get("spread"), r.get("confidence", 0.9))
        self.spread.value = f"<p style='color:#444'>{html.escape(said)}.</p>" if said else ""
        if "disagreement" in r:
            d = r["disagreement"]
            self.dmap.value = to_png(d[d.shape[0] // 2] if d.ndim == 3 else d, 0, 1, cmap="inferno")
            self.dmap.layout.display = self.dbar.layout.display = None
            if not self.dbar_image.value:
                self.dbar_image.value = colorbar_png("inferno")
            self.dnote.value = (f"mean D = {float(d.mean()):.3f}: how far the ensemble's members disagree at each "
                                "pixel, 0 where their distributions agree, 1 where they do not overlap at all")
        else:
            self.dnote.value = "<i>train an ensemble (M ≥ 2) for the disagreement map</i>"
        if "calibration" in r:
            c = r["calibration"]
            self.calib.set_curve("calibrated", [0, 1], [0, 1])
            self.calib.set_curve("model", c["confidence"], c["accuracy"])
            self.ece.value = (f"<p class='care-rel-ece'>ECE = <b>{c['ece']:.3f}</b> (expected calibration error: the "
                              "curve's mean distance from the diagonal over its confidence levels; 0 when calibrated; a "
                              "curve below the diagonal means over-confident intervals, above it too wide ones)<br>"
                              f"<span style='color:#666'>measured in the {html.escape(c.get('space', ''))}</span></p>")
            if c.get("by_brightness"):   # (the curve is mostly background)
                self.ece.value += ("<p class='care-rel-coverage'>90 % intervals holding the truth, by its brightness "
                                   f"(0.90 when calibrated):<br>{html.escape(coverage_text(c['by_brightness']))}</p>")
                said = coverage_verdict(c["by_brightness"], capital=True)
                if said:
                    self.ece.value += (f"<p class='care-rel-narrow' style='color:#a15c00'><b>{html.escape(said)}."
                                       "</b></p>")
            if r.get("trained_on"):
                self.ece.value += ("<p class='care-rel-trained' style='color:#a15c00'>CARE was trained on this image or a part of it: "
                                   "its calibration here flatters it (measure it on images CARE never saw)</p>")
        else:
            why = r.get("calibration_note") or "no ground truth for this image: no calibration curve"
            self.ece.value = f"<i>{html.escape(why)}</i>"
        self.msg.note("done")

    def _pick(self, a):
        return a[self.z.value, self.row.value] if a.ndim == 3 else a[self.row.value]

    def _profile(self):
        r = self.state.readouts
        if not r or self.band is None:
            return
        truth = r.get("truth_rescaled")
        self.band.set_profile(self._pick(r["mean"]), self._pick(r["lower"]), self._pick(r["upper"]),
                              None if truth is None else self._pick(truth), r.get("truth_label", "ground truth"))

    def _frame(self):
        from carecore.render import to_png

        r = self.state.readouts
        if not r:
            return
        f = r["samples"][self.frame.value]
        self.movie.value = to_png(f[f.shape[0] // 2] if f.ndim == 3 else f, *self._range)
        self.movie.layout.display = ""


class CareLab(W.VBox):
    """The whole wizard: five steps as tabs, one shared state."""

    def __init__(self, state: LabState):
        self.state = state
        self.steps = [DataStep(state), TrainStep(state), RestoreStep(state), ViewStep(state), ReliabilityStep(state)]
        self.tabs = W.Tab(children=self.steps)
        for i, t in enumerate(["1 · Data", "2 · Train", "3 · Restore", "4 · View", "5 · Reliability"]):
            self.tabs.set_title(i, t)
        self.tabs.add_class("care-tabs")
        self.tabs.observe(self._tab_shown, "selected_index")
        # step 4's frame slider is step 3's (scored there): linked both ways, shown with it
        restore, view = self.steps[2], self.steps[3]
        for trait in ("value", "max", "description", "disabled"):
            W.link((restore.frame, trait), (view.frame, trait))
        W.dlink((restore.frame.layout, "display"), (view.frame.layout, "display"))
        # a frame chosen in step 3 or 4 whose scoring ends while the View tab is open: its views follow
        state.observe(lambda c: self.steps[3].activate() if self.tabs.selected_index == 3 else None, "view_count")
        root = W.HTML(f"<p style='color:#666'>data root: <code>{html.escape(state.data_root)}</code></p>")
        super().__init__([root, self.tabs])
        self.add_class("care-lab")
        state.attach_latest_job()   # never raises: a damaged job folder becomes a message
        self.steps[1].update()

    def _tab_shown(self, change):
        step = self.steps[change["new"]] if change["new"] is not None else None
        if hasattr(step, "activate"):
            step.activate()

    @classmethod
    def from_env(cls):
        """The app as Voila serves it: data root and quick mode from the environment."""
        import os

        from carecore.simulate import write_demo_data

        root = os.environ.get("CARELAB_DATA_ROOT", "lab-data")
        quick = os.environ.get("CARELAB_QUICK", "") not in ("", "0")
        from pathlib import Path

        if not (Path(root) / "denoising3d").exists():
            write_demo_data(root, size="tiny" if quick else "small")
        return cls(LabState(root, quick=quick))
