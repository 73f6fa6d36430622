"""A point's verdict: every rule applied to its records, the findings ranked worst first, the
headline, the evidence, the accuracy and the cure (`judge`); one line for a run directory
(`headline`, what `vanishing train` prints)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vanishing.reporting.loading import load_runs
from vanishing.reporting.results import Point, RunRecords, make_points
from vanishing.reporting.verdict import sentences as say
from vanishing.reporting.verdict.cures import at_fixed_point_init, cure_sentence
from vanishing.reporting.verdict.profile import Profile, last_signal_factor, profile
from vanishing.reporting.verdict.rules import (
    EVIDENCE,
    FAILURES,
    GATES,
    NOTES,
    UNITS,
    WORDS,
    Steps,
    ThroughTime,
    at_chance,
    born_dead_runs,
    closed_gates,
    dead_at_init,
    divergence,
    exploding_in_point,
    gradient,
    grown_in_point,
    huge_at_init,
    huge_final_loss,
    large_steps,
    later_signal,
    learned_well,
    saturated_gates,
    small_steps,
    steps,
    through_time,
    units_hurt,
    vanishing_through_time,
    weakest,
    weight_note,
)
from vanishing.reporting.verdict.thresholds import THRESHOLDS, Thresholds
from vanishing.reporting.verdict.time_profile import TimeLayer
from vanishing.settings import naming


@dataclass(frozen=True)
class Verdict:
    """One point's verdict: the failures found (`kinds`, worst first), its sentences (the
    headline first, evidence next, the cure last) and the factors behind them."""

    kinds: tuple[str, ...]  # e.g. ("vanishing", "forward-collapse", "cancel"); ("healthy",)
    headline: str  # the first sentence
    sentences: tuple[str, ...]  # headline, evidence, accuracy, cure
    profile: Profile
    cure: str = ""  # the last sentence, '' when nothing needs curing

    @property
    def word(self) -> str:
        """The short verdict for a table cell: 'vanishing, forward collapse'."""
        return ", ".join(WORDS[k] for k in self.kinds if k in WORDS)


@dataclass
class Findings:
    """Sentences as a verdict accrues them: (kind, sentence) pairs, worst kinds first."""

    headline: list[tuple[str, str]] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    # A gradient through time that neither vanishes nor explodes: (the headline where nothing
    # failed, the evidence under another failure).
    time: tuple[str, str] = ("", "")

    def add(self, kind: str, sentence: str, headline: bool = True) -> None:
        assert kind in (*FAILURES, *NOTES, *EVIDENCE), kind  # noqa: S101 one vocabulary (`rules`)
        self.kinds.append(kind)
        if headline:
            self.headline.append((kind, sentence))
        else:
            self.evidence.append(sentence)


def judge(point: Point, thresholds: Thresholds = THRESHOLDS) -> Verdict:
    """The point's verdict from every signal its records hold."""
    findings = Findings()
    found = profile(point)
    linear_layers, names = point.depth + 1, point.names
    diverged = divergence(point)
    if diverged:
        findings.add("training-blow-up", say.divergence_sentence(diverged, linear_layers, names))
    huge = huge_final_loss(point, found, thresholds)
    if huge:
        findings.add("training-blow-up", say.huge_loss_sentence(huge))
    grown = grown_in_point(point, thresholds)
    if grown:
        findings.add("training-blow-up", say.grown_sentence(grown, linear_layers, names))

    step0 = gradient(found, point.vanishing_ratio_init, thresholds)
    if reads_depth(point):
        rectifier = point.activation.family == "rectifier"
        dead = dead_at_init(point) if found.signal_factor == 0 else 0
        born = born_dead_runs(point)
        # Some runs born dead (the others' factor alone would hide them), or all, at others.
        told = born is not None and (born.rest > 0 or not dead or len(born.layers) > 1)
        if born and told:
            findings.add("vanishing", say.born_dead_sentence(born, names))
        probe = born.probe if born else "every sample"
        for kind, sentence in say.gradient_sentences(found, step0, rectifier, dead, probe):
            if told and kind == "vanishing" and found.signal_factor == 0:
                continue  # said, run by run, by the born-dead sentence
            findings.add(kind, sentence)
        init = huge_at_init(point, thresholds)
        if init:
            findings.add(
                "exploding",
                say.huge_init_sentence(init, linear_layers, names),
                headline="exploding" not in findings.kinds,
            )
        note = weight_note(found, step0, thresholds)
        if note:
            findings.add(
                note.kind, say.weight_note_sentence(note, found, step0.ratio), headline=False
            )
        if "growing" in step0.kinds and at_fixed_point_init(point):
            findings.evidence.append(say.fixed_point_sentence(point, found))
        if point.ratio_underflow:
            findings.add("underflow", say.UNDERFLOW, headline=False)
        if point.activation.derivative_bound < 1 and step0.signal in ("vanishing", "attenuated"):
            findings.evidence.append(say.bound_sentence(point))
    found_time = through_time(point)
    if found_time is not None:
        read_time(point, found_time, findings, thresholds)
    chance = at_chance(point, thresholds)
    moves = steps(point)
    if moves is not None:
        read_steps(point, step0.kinds, moves, chance, findings, thresholds)
    for kind, sentence in say.units_sentences(point, thresholds):
        if kind in UNITS and not chance and not units_hurt(point, thresholds):
            sentence += say.units_spared(point)
        findings.add(kind, sentence, headline=kind in UNITS)
    if chance:
        findings.kinds.append("no-learning")
    return finish(point, found, step0.signal, findings, thresholds)


def read_steps(
    point: Point,
    kinds: tuple[str, ...],
    moves: Steps,
    chance: bool,
    findings: Findings,
    thresholds: Thresholds,
) -> None:
    """What the optimizer's steps add: whether a small gradient slows the first layers (the
    optimizer's part), and steps too large or too small for a run that did not learn."""
    # Not where seeds were born dead: their steps are 0, and the others' would speak for them.
    born = born_dead_runs(point)
    if {"vanishing", "attenuated"} & set(kinds) and math.isfinite(moves.relative) and not born:
        learned = learned_well(point, thresholds) and "forward-collapse" not in kinds
        findings.add("steps", say.steps_sentence(moves, point.names, learned), headline=False)
    big = large_steps(moves, thresholds)
    if big and (chance or "training-blow-up" in findings.kinds):
        findings.add("large-steps", say.large_steps_sentence(big, moves, point.names))
    tiny = small_steps(moves, thresholds)
    # Steps tiny because the gradient vanished or the forward pass collapsed (the output
    # layer's input is ~0) are that failure's, not the learning rate's.
    vanished = {"vanishing", "forward-collapse", "vanishing-through-time"}
    if tiny and chance and not vanished & (set(kinds) | set(findings.kinds)):
        findings.add("small-steps", say.small_steps_sentence(tiny, moves, point.names))


def read_time(point: Point, found: ThroughTime, findings: Findings, thresholds: Thresholds) -> None:
    """What the records say through time, read apart from depth: a gradient that explodes
    (at any probe) or vanishes (after training, where measured) from the last step back to the
    first, and the gates behind it; else how much of it reaches step 1, as evidence."""
    judged = found.judged
    named = point.watched or len(judged.layers) > 1
    peak = exploding_in_point(point, thresholds)
    if peak:
        findings.add("exploding-through-time", say.exploding_time_sentence(peak, named))
        at = (
            "at initialisation" if peak.first and peak.step in (0, None) else f"at step {peak.step}"
        )
        last = judged.layers[-1].name
        bound_evidence(point, peak.layer, last, at, findings, vanishing=False)
    vanished = vanishing_through_time(judged, thresholds)
    if vanished:
        sentence = say.vanishing_time_sentence(vanished, found, named)
        findings.add("vanishing-through-time", sentence)
        last = judged.layers[-1].name
        bound_evidence(point, vanished, last, judged.moment, findings, vanishing=True)
    elif not peak and (layer := weakest(judged)) is not None:
        healthy = say.time_evidence_sentence(layer, found, named)
        findings.time = ("Healthy gradient through time" + healthy.removeprefix("Through time"),
                         healthy)  # fmt: skip
    if not vanished:
        # The gates are why a gradient vanishes through time, not a failure of their own: a
        # mean over units hides the few that keep the memory, as in an LSTM that solved the
        # adding problem with its forget gates at 0.6 on average.
        return
    closed = closed_gates(judged, thresholds)
    if closed and closed.layer.name != vanished.name:
        closed = None  # another layer's gates: not why this one's gradient vanishes
    if closed:
        findings.add("closed-gates", say.closed_gate_sentence(closed, judged.when, named))
    shut = saturated_gates(judged, thresholds)
    if shut:
        findings.add("saturated-gates", say.saturated_gate_sentence(shut, judged.when, named))


def bound_evidence(
    point: Point, layer: TimeLayer, last: str, when: str, findings: Findings, vanishing: bool
) -> None:
    """The slope bound through time of a plain RNN's last layer (named `last`), where its
    recurrent weight's norm was recorded and the bound explains the finding (under 1 per step
    for a vanishing gradient, over 1 for an exploding one): the theory behind the factor. For a
    lower layer of a stack the layer above adds paths of its own, and there is no such bound."""
    if layer.cell != "rnn" or layer.name != last or not layer.recurrent_norm >= 0:
        return
    bound = 1.0 if point.watched else point.activation.derivative_bound
    if (bound * layer.recurrent_norm < 1) != vanishing:
        return
    if point.watched:  # nn.RNN: tanh or relu, both of slope at most 1
        subject, slope = "An nn.RNN", "its activation's largest slope"
    else:
        label = point.activation.label
        subject, slope = f"A {label} RNN", f"{label}'s largest slope"
    findings.evidence.append(say.time_bound_sentence(layer, subject, slope, bound, when))


def reads_depth(point: Point) -> bool:
    """Whether the layers' gradients make a profile across depth. Not one recurrent layer and
    its head: the layer's weight gradient sums T steps' and the head's sees one, so their ratio
    is no gradient across depth; depth is read where recurrent layers stack."""
    return not (naming.recurrent(point.runs[0].config) and point.depth < 2)


def finish(
    point: Point, found: Profile, signal: str, findings: Findings, thresholds: Thresholds
) -> Verdict:
    """The Verdict: the worst finding as the headline, the others and the accuracy as evidence,
    the cure last."""
    ranked = sorted(findings.headline, key=lambda item: FAILURES.index(item[0]))
    kinds = sorted(dict.fromkeys(k for k in findings.kinds if k in FAILURES), key=FAILURES.index)
    kinds += [k for k in NOTES if k in findings.kinds]
    # Dead or saturated units, and the gates, never head the verdict: the gradient's fate
    # comes first.
    aside = (*UNITS, *GATES)
    gradient_first = [(kind, sentence) for kind, sentence in ranked if kind not in aside]
    units = [sentence for kind, sentence in ranked if kind in aside]
    evidence: list[str] = []
    healthy_time, time_note = findings.time
    if gradient_first:
        headline = gradient_first[0][1]
        evidence = [sentence for _, sentence in gradient_first[1:]]
    elif "no-learning" in kinds:
        headline = say.NO_LEARNING
    else:
        kinds = ["healthy", *kinds]
        depth = ""
        if not reads_depth(point):
            pass
        elif signal:
            depth = say.signal_sentence(found, "healthy")
        elif math.isfinite(point.vanishing_ratio_init):
            ratio = point.vanishing_ratio_init
            depth = say.ratio_sentence("healthy", ratio, found.names, "initialisation")
        if healthy_time:  # a recurrent network: its steps first, its layers next
            headline, time_note = healthy_time, ""
            evidence += [depth] if depth else []
        elif depth:
            headline = depth
        else:
            headline = say.NO_GRADIENT
            kinds = kinds[1:]
    if time_note:
        evidence.insert(0, time_note)
    if kinds and kinds[0] != "healthy" and signal == "healthy" and found.layers >= 2:
        evidence.append(say.signal_evidence(found))
    if found.last < found.layers and signal:
        evidence.insert(0, say.head_sentence(found))
    evidence += findings.evidence + units
    if "training-blow-up" not in kinds:
        factor = last_signal_factor(point)
        later = later_signal(signal, factor, thresholds)
        if later:
            when = "After training (last probe)"
            evidence.append(say.later_signal_sentence(when, later, factor, point.names, found.last))
    accuracy = say.accuracy_sentence(point, thresholds)
    if accuracy:
        evidence.append(accuracy)
    if any(r.status == "diverged" for r in point.runs) and point.ok:
        evidence.append(say.LEFT_OUT)
    clipped = say.clipping_sentence(point)
    if clipped:
        evidence.append(clipped)
    cure = cure_sentence(point, tuple(kinds))
    all_sentences = (headline, *evidence, *([cure] if cure else []))
    return Verdict(tuple(kinds), headline, all_sentences, found, cure)


def headline(source: Path | str | Sequence[RunRecords], thresholds: Thresholds = THRESHOLDS) -> str:
    """One short line: the headline verdict of a run directory (or of runs' records), e.g. for
    `vanishing train` to print; with several points, each prefixed by its label."""
    runs = load_runs([source])[0] if isinstance(source, (str, Path)) else list(source)
    points = make_points(runs)
    if not points:
        return "No finished run: no verdict."
    verdicts = [judge(g, thresholds) for g in points]
    if len(points) == 1:
        return verdicts[0].headline
    return " ".join(f"{g.label}: {v.headline}" for g, v in zip(points, verdicts, strict=True))
