"""Words for the figures: their titles, captions and why one is not drawn yet. Like words.py, every sentence
here reads numbers that the summary or the figure already holds.
"""

from rethink.report.words import fmt_ratio


FIGURE_TITLES = {
    "ap_vs_iterations": "AP along training",
    "ap_vs_schedule": "Final AP vs schedule length",
    "ap_vs_train_size": "Best AP vs training-set size",
    "speedup": "Time to accuracy",
    "compute": "Images, instances and pixels seen",
    "overfitting": "Training loss vs validation AP on little data",
    "forecast": "Forecast of the final AP per schedule",
}
# why a figure is not drawn yet
NOT_DRAWN = {
    "no_evaluation": "no run has an evaluation yet",
    "one_schedule": "each training-set size has only one schedule done",
    "one_size": "only one training-set size has runs done",
    "no_speedup": "no speed-up: converges_faster has no curves of both arms",
    "no_run_done": "no run is done yet",
    "no_train_and_eval": "no run has both training and evaluation lines yet",
}


def caption_ap_vs_iterations() -> str:
    return ("Validation box AP along training, mean over seeds (line) and min-max over seeds (band), one panel per "
            "training-set size. Colors: init; line styles: schedule. Dotted vertical lines mark the LR drops; "
            "shorter schedules branch off the longest one at their first drop, where they were forked. Runs still in "
            "progress are included up to where they are.")


def caption_ap_vs_schedule() -> str:
    return ("Box AP at the end of each schedule, mean over seeds with error bars of one standard deviation (none "
            "with one seed): the paper's Table 1 as a chart.")


def caption_ap_vs_size(source: str | None, margin: float) -> str:
    reference = f" against {source}" if source else ""
    return ("Best box AP over the training curve against the number of training images, each init at its best "
            "schedule at each size, mean over seeds with one-standard-deviation error bars. The shaded breakdown "
            f"band lies between the largest size where random init is behind{reference} by more than the margin "
            f"({margin:.1f} AP, significantly when there are several seeds) and the smallest size from which it "
            "stays within the margin; where it is never shown within the margin, a dashed line marks the largest "
            "size where it is behind. Dotted arrows run from the pretrained arm's best AP at a size to the number "
            "of images at which random init's curve (interpolated in log size) reaches it: what pre-training is "
            "worth in labelled images.")


def caption_speedup() -> str:
    return ("Iterations each arm needs to first reach each AP level (10-90% of the pretrained arm's best before the "
            "longest schedule's first LR drop, dotted line), on the largest training set, mean over seeds; the "
            "speed-up of converges_faster is the median over the levels of the ratio random over pretrained. Open "
            "triangles: levels random init did not reach before the drop (its last evaluation, a lower bound).")


def title_speedup(speedup: float, size: str, schedule: str) -> str:
    return f"{fmt_ratio(speedup)} sooner (median over levels), {size}, {schedule}"


def caption_compute(size: str) -> str:
    return (f"What each arm has seen by the end of each schedule on {size}: fine-tuning (solid) plus pre-training "
            "(hatched, from the pre-training record) for pretrained inits, training from scratch for random init. "
            "Pre-training instances count one labelled instance per classification image unless the record says "
            "otherwise.")


def caption_overfitting() -> str:
    return ("Training loss (top) and validation box AP (bottom) on the smallest training set, longest schedule of "
            "each init, mean over seeds. A loss that keeps falling while AP peaks (star) and then drops is "
            "overfitting.")


def caption_forecast(interval: float) -> str:
    pct = int(round(interval * 100))
    return (f"Final box AP against schedule length, one panel per training-set size: measured (filled markers, solid "
            f"lines; means over the seeds done) and forecast from the curves so far (dashed lines in shaded {pct}% "
            "intervals) for every schedule not measured yet, by `rethink forecast`'s model of this experiment (a "
            "saturating curve until the first LR drop, the jump after it learned from the forks). The star marks "
            "where random init is within the margin of the pretrained arm's best (the catch-up). Labelled ticks: "
            "the schedules tried, the catch-up and the horizon (the longest forecast); unlabelled ticks: the other "
            "schedules forecast.")
