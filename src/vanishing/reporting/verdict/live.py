"""The live line: one line for a run still training, from its metrics rows so far, by the rules
`judge` applies to a finished point (`rules`), applied to the first probe (step 0) and the
latest rows: a loss that blew up, gradients grown huge or steps as large as the weights first, the
gradient at step 0 next (a recurrent network's through time before it: at the latest probe,
as `judge` reads it after training), the signal at the latest probe where it reads otherwise,
dead units last."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vanishing.model.activations import ACTIVATIONS
from vanishing.reporting.formats import number, percent
from vanishing.reporting.results import numbers
from vanishing.reporting.verdict.profile import Profile, signal_factor
from vanishing.reporting.verdict.rules import (
    FORWARD,
    ThroughTime,
    dead_units,
    exploding_through_time,
    gradient,
    grown_gradients,
    large_steps,
    later_signal,
    loss_alarm,
    probe_steps,
    vanishing_through_time,
    weakest,
)
from vanishing.reporting.verdict.sentences import (
    exploding_time_sentence,
    large_steps_sentence,
    later_signal_sentence,
    layer_name,
    ratio_sentence,
    scale_sentence,
    signal_sentence,
    time_evidence_sentence,
    vanishing_time_sentence,
)
from vanishing.reporting.verdict.thresholds import THRESHOLDS, Thresholds
from vanishing.reporting.verdict.time_profile import TIME_KEY, TimeProfile, layer_lists
from vanishing.settings.naming import NUMBERED, LayerNames, watched


def live_headline(
    rows: Sequence[dict[str, Any]], config: dict[str, Any], thresholds: Thresholds = THRESHOLDS
) -> str:
    """One line for a run still training, from its metrics rows so far: the back-propagated
    signal's verdict at the first probe (step 0), in `judge`'s words, and the latest probe's
    where it reads otherwise; a net of one hidden layer by its weight-gradient ratio. What the
    latest rows show that step 0 cannot (`live_alarm`) heads it, dead units (`live_dead`)
    follow it."""
    probes = [row for row in rows if row.get("kind") == "probe"]
    if not probes:
        return "No probe yet: no verdict."
    first, latest = probes[0], probes[-1]
    layers = len(config.get("hidden") or [])
    found = Profile.of_probe(first, layers, config)
    ratio = first.get("vanishing_ratio")
    step0 = gradient(found, ratio if isinstance(ratio, (int, float)) else math.nan, thresholds)
    at = f"step {first.get('step')}"
    if step0.by_signal:
        activation = ACTIVATIONS.get(config.get("activation") or "")
        rectifier = activation is not None and activation.family == "rectifier"
        line = signal_sentence(found, step0.signal, rectifier)
        if step0.scale in FORWARD:
            line += " " + scale_sentence(found, step0.scale)
        if latest is not first:
            factor = signal_factor(latest, config)
            now = later_signal(step0.signal, factor, thresholds)
            if now:
                when = f"At step {latest.get('step')}"
                line += " " + later_signal_sentence(when, now, factor, found.names, found.last)
    elif step0.ratio_word:
        line = ratio_sentence(step0.ratio_word, step0.ratio, found.names, at)
    else:
        line = f"No gradient measured at {at}."
    alarm = live_alarm(probes, rows, config, thresholds)
    time = live_time(probes, config, thresholds)
    return alarm + time + line + live_dead(latest, thresholds, found.names)


def live_time(
    probes: Sequence[dict[str, Any]], config: dict[str, Any], thresholds: Thresholds = THRESHOLDS
) -> str:
    """A recurrent network's line through time (`judge`'s rules): a gradient that explodes at
    any probe so far, else how much of it reaches step 1 at the latest probe, vanishing or not,
    with the first probe's beside it; '' where no probe holds a time profile (an MLP)."""
    rows = [row for row in probes if layer_lists(row.get(TIME_KEY))]
    first = TimeProfile.of_rows(rows[:1], config, final=False)
    if first is None:
        return ""
    latest = TimeProfile.of_rows(rows[-1:], config, final=False) if len(rows) > 1 else None
    found = ThroughTime(first, latest)
    named = watched(config) or len(first.layers) > 1
    peak = exploding_through_time([rows], config, thresholds)
    if peak:
        return exploding_time_sentence(peak, named) + " "
    vanished = vanishing_through_time(found.judged, thresholds)
    if vanished:
        return vanishing_time_sentence(vanished, found, named) + " "
    layer = weakest(found.judged)
    return time_evidence_sentence(layer, found, named) + " " if layer else ""


def live_alarm(
    probes: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    config: dict[str, Any],
    thresholds: Thresholds = THRESHOLDS,
) -> str:
    """What the latest rows of a training run show that step 0 cannot: a loss that blew up
    (`rules.loss_alarm`), gradients grown huge (`rules.grown_gradients`), a step as large as
    the weights it moved (`rules.large_steps`); '' when none. It heads the live line."""
    loss = loss_alarm(probes, rows, config, thresholds)
    if loss:
        # At step 0 nothing has trained yet: a huge loss there is the init's, not a blow-up.
        when = "At initialisation" if loss.step == 0 else f"Blew up: by step {loss.step}"
        if not math.isfinite(loss.loss):
            still = "not" if loss.step == 0 else "no longer"
            return f"{when} the loss is {still} a finite number. "
        return f"{when} the loss is {number(loss.loss)}, far above {loss.reference.words}. "
    grown = grown_gradients(probes, thresholds)
    if grown:
        layers = len(config.get("hidden") or []) + 1
        where = layer_name(grown.peak.layer, layers, LayerNames.of(config))
        return (
            f"Exploding during training: gradient norms reached {number(grown.peak.norm)} "
            f"({where}) by step {grown.peak.step}. "
        )
    # As `judge` names them only for a run that did not learn: where a later probe's loss has
    # not fallen below step 0's (never at step 0 alone, nor where no loss is recorded: a
    # watched run without a probe batch).
    moved = probe_steps(probes, config)
    big = large_steps(moved, thresholds) if moved else None
    if moved and big and loss_stuck(probes):
        return f"{large_steps_sentence(big, moved, LayerNames.of(config))} "
    return ""


def loss_stuck(probes: Sequence[dict[str, Any]]) -> bool:
    """A later probe's loss, recorded, is no lower than step 0's: the run has not learned."""
    if len(probes) < 2:
        return False
    first, latest = probes[0].get("loss"), probes[-1].get("loss")
    numeric = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (first, latest))
    return numeric and latest >= first  # type: ignore[operator]


def live_dead(
    latest: dict[str, Any], thresholds: Thresholds = THRESHOLDS, names: LayerNames = NUMBERED
) -> str:
    """' Dead units: ...' where a layer's units output 0 on the whole probe batch
    (`rules.dead_units`); else ''."""
    dead = dead_units(numbers(latest.get("dead_fraction") or []), thresholds)
    if dead is None or not dead.over:
        return ""
    return (
        f" Dead units: {percent(dead.share)} of {names.units(dead.layer)} units output 0 "
        f"on every probe image at step {latest.get('step')}."
    )
