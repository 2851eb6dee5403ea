"""Typed readers of the analysis summaries: identify, compare, evaluate and sweep (``summary.json``).

Each reader checks the file's format and schema version and walks it once into dataclasses; what a reader needs
that the file lacks is one line naming the file and the field. Parts that sparcom shows as they are (validity
evidence, set specificity) stay plain JSON in ``raw`` fields, to be rendered generically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparcom.artifacts.fields import Fields, read_document
from sparcom.artifacts.summary import Header, read_record

IDENTIFY_FORMAT, COMPARE_FORMAT, EVALUATE_FORMAT, SWEEP_FORMAT = (
    "sparcom-identify", "sparcom-compare", "sparcom-evaluate", "sparcom-sweep")
#: The schema version of the analysis summaries (2: the common header).
SUMMARY_VERSION = 2
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Interval:
    """A set statistic's plug-in estimate and interval; ``corrected`` and ``bias`` (= estimate − corrected) come
    with subsampling intervals, ``replicate_mean`` with the Poisson bootstrap's spread."""

    estimate: float
    low: float
    high: float
    corrected: float | None = None
    bias: float | None = None
    replicate_mean: float | None = None


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap intervals of the set statistics (``available`` False: why not, in ``note``)."""

    available: bool
    note: str | None
    replicates: int | None
    method: str | None
    level: float | None
    intervals: dict[str, Interval]

    @classmethod
    def read(cls, f: Fields) -> Bootstrap:
        intervals = f.mapping("intervals", lambda g, k: read_record(Interval, g.obj(k))) if f.has("intervals") else {}
        return cls(f.flag("available"), f.opt_text("note"), f.opt_integer("replicates"), f.opt_text("method"),
                   f.opt_number("level"), intervals)


@dataclass(frozen=True)
class Overlap:
    categories: list[str]
    jaccard: list[list[float]]
    containment: list[list[float]]
    intersection: list[list[float]]

    @classmethod
    def read(cls, f: Fields) -> Overlap:
        return cls(f.texts("categories"), f.matrix("jaccard"), f.matrix("containment_row_in_column"),
                   f.matrix("intersection"))


def _number(f: Fields, key: str) -> float:
    """A number that JSON stored as null when it was undefined (NaN)."""
    value = f.opt_number(key)
    return float("nan") if value is None else value


@dataclass(frozen=True)
class GeneralityNullRecord:
    """The generality claim against a reference corpus, as decided (:mod:`sparcom.analysis.generality`)."""

    epsilon: float
    general: int
    reference_top: int
    instruction_general: int
    #: Share of the general set not top-ε on the reference: subsampling estimate (trend-corrected) and interval.
    share: Interval
    noise_dropout: float
    decision: str
    rule: str

    @classmethod
    def read(cls, f: Fields) -> GeneralityNullRecord:
        share = f.obj("instruction_general_share")
        return cls(f.number("epsilon"), f.integer("general"), f.integer("reference_top"),
                   f.integer("instruction_general"),
                   Interval(_number(share, "corrected"), _number(share, "low"), _number(share, "high")),
                   _number(f, "noise_dropout"), f.text("decision"), f.text("rule"))


@dataclass(frozen=True)
class UniquenessRecord:
    """The uniqueness claim's margin test and unique-member decoding, as decided
    (:mod:`sparcom.analysis.uniqueness`)."""

    margin: float
    #: within − across cross-source agreement: subsampling estimate (trend-corrected) and interval.
    difference: Interval
    decoding: Interval  # held-out accuracy of the unique members alone, with its interval
    random_mean: float
    p_value: float
    random_sets: int
    decision: str
    reason: str
    #: The same decoding against frequency-matched random sets (NaN: not drawn, or a file written before them).
    matched_random_mean: float = float("nan")
    matched_p_value: float = float("nan")

    @classmethod
    def read(cls, f: Fields) -> UniquenessRecord:
        diff, dec = f.obj("within_minus_across"), f.obj("unique_decoding")
        ci = dec.raw("ci") or [None, None]
        return cls(f.number("margin"), Interval(_number(diff, "corrected"), _number(diff, "low"), _number(diff, "high")),
                   Interval(_number(dec, "accuracy"), *(float("nan") if v is None else float(v) for v in ci)),
                   _number(dec, "random_mean"), _number(dec, "p_value"), dec.integer("random_sets"),
                   f.text("decision"), f.text("reason"), _number(dec, "matched_random_mean"),
                   _number(dec, "matched_p_value"))


@dataclass(frozen=True)
class ClaimNullsRecord:
    """One kind's nulls of the set claims (None where they did not run; ``notes`` say why)."""

    generality: GeneralityNullRecord | None
    uniqueness: UniquenessRecord | None
    notes: list[str]

    @classmethod
    def read(cls, f: Fields) -> ClaimNullsRecord:
        general, unique = f.opt_obj("generality"), f.opt_obj("uniqueness")
        return cls(GeneralityNullRecord.read(general) if general else None,
                   UniquenessRecord.read(unique) if unique else None, f.texts("notes"))


@dataclass(frozen=True)
class KindSets:
    """General, shared and unique members of one kind's category sets (one kind of an identify summary)."""

    components: int
    layers: int
    selected: dict[str, int]
    selected_any: int
    general: int
    shared_by: dict[str, int]
    unique: dict[str, int]
    unique_total: int
    never_selected: int
    #: Activity counts (dead, always on, ...) as the analysis reported them.
    activity: dict[str, int]
    shares: dict[str, float]
    chance: dict[str, float]
    overlap: Overlap | None
    bootstrap: Bootstrap | None
    #: Whatever else the summary holds for this kind (e.g. LAPE details), shown generically.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The set claims' nulls (runs with counts per instruction).
    claim_nulls: ClaimNullsRecord | None = None

    KNOWN = ("components", "layers", "selected", "selected_any", "general", "shared_by", "unique", "unique_total",
             "never_selected", "dead", "always_on", "shares", "chance_baseline", "overlap", "bootstrap",
             "claim_nulls")

    @classmethod
    def read(cls, f: Fields) -> KindSets:
        overlap, boot = f.opt_obj("overlap"), f.opt_obj("bootstrap")
        return cls(
            f.integer("components"), f.integer("layers"), f.counts("selected"), f.integer("selected_any"),
            f.integer("general"), f.counts("shared_by"), f.counts("unique"), f.integer("unique_total"),
            f.integer("never_selected"), {k: f.integer(k) for k in ("dead", "always_on") if f.has(k)},
            f.mapping("shares", Fields.number), f.mapping("chance_baseline", Fields.number),
            Overlap.read(overlap) if overlap else None, Bootstrap.read(boot) if boot else None,
            {k: v for k, v in f.data.items() if k not in cls.KNOWN},
            ClaimNullsRecord.read(nulls) if (nulls := f.opt_obj("claim_nulls")) else None)


@dataclass(frozen=True)
class Decoding:
    """One decoder's held-out accuracy with its interval and its random sets (a validity headline)."""

    accuracy: float
    ci_low: float
    ci_high: float
    random_mean: float
    p_value: float
    #: Against frequency-matched random sets (None: not drawn, or a summary written before them).
    matched_random_mean: float | None
    matched_p_value: float | None


@dataclass(frozen=True)
class ValidityHeadline:
    """The numbers a reader wants first from the validity evidence of one kind."""

    decoders: dict[str, Decoding]
    all_components: float
    chance: float
    stability: float
    cross_source_within: float
    cross_source_across: float

    @classmethod
    def read(cls, f: Fields) -> ValidityHeadline:
        decoders = {name: read_record(Decoding, f.obj(name)) for name in ("set_score", "centroid") if f.has(name)}
        numbers = [f.opt_number(k) for k in ("all_components", "chance", "stability", "cross_source_within",
                                             "cross_source_across")]
        return cls(decoders, *(float("nan") if v is None else v for v in numbers))


@dataclass(frozen=True)
class KindValidity:
    headline: ValidityHeadline
    #: The kind's whole validity summary, shown generically.
    raw: dict[str, Any]


@dataclass(frozen=True)
class Rule:
    parameters: dict[str, Any]
    description: str

    @property
    def name(self) -> str | None:
        return self.parameters.get("rule")

    @classmethod
    def read(cls, f: Fields) -> Rule:
        return cls(dict(f.obj("rule").data), f.text("rule_description"))


@dataclass(frozen=True)
class IdentifySummary:
    """What ``sparcom identify`` wrote: the sets of every kind, their validity evidence, the notes."""

    path: Path
    header: Header
    rule: Rule
    kinds: dict[str, KindSets]
    validity: dict[str, KindValidity]
    #: Why there is no validity evidence (None when there is).
    validity_note: str | None
    notes: list[str]

    @property
    def categories(self) -> list[str]:
        return self.header.data.categories

    @classmethod
    def read(cls, f: Fields, path: Path) -> IdentifySummary:
        validity, note = read_validity(f.obj("validity"))
        return cls(path, Header.read(f), Rule.read(f), f.mapping("kinds", lambda g, k: KindSets.read(g.obj(k))),
                   validity, note, f.texts("notes"))


def read_validity(f: Fields) -> tuple[dict[str, KindValidity], str | None]:
    """Per kind, the validity headline and summary; or the note saying why there is none."""
    if not f.flag("available"):
        return {}, f.opt_text("note")
    kinds = {k: KindValidity(ValidityHeadline.read(f.obj(k).obj("headline")), dict(f.obj(k).data))
             for k in f.names() if k not in ("available", "settings", "note")}
    return kinds, None


@dataclass(frozen=True)
class SetChange:
    base: int
    tuned: int
    retained: int
    gained: int
    lost: int
    jaccard: float


@dataclass(frozen=True)
class Correlation:
    spearman: float
    pearson: float
    mean_abs_change: float


@dataclass(frozen=True)
class Change:
    base: float
    tuned: float
    change: float


@dataclass(frozen=True)
class KindComparison:
    per_category: dict[str, SetChange]
    correlation: dict[str, Correlation]
    structure: dict[str, Change]
    classes: list[str]
    transitions: list[list[float]]  # [base class, tuned class] counts

    @classmethod
    def read(cls, f: Fields) -> KindComparison:
        t = f.obj("class_transitions")
        return cls(f.mapping("per_category", lambda g, c: read_record(SetChange, g.obj(c))),
                   f.mapping("correlation", lambda g, c: read_record(Correlation, g.obj(c))),
                   f.mapping("structure", lambda g, c: read_record(Change, g.obj(c))),
                   t.texts("classes"), t.matrix("base_rows_tuned_columns"))


@dataclass(frozen=True)
class CompareSummary:
    """What ``sparcom compare`` wrote: the header is the base run's; ``tuned`` the tuned run's model and data."""

    path: Path
    header: Header
    tuned: Header
    rule: Rule
    kinds: dict[str, KindComparison]
    forced_despite: list[str]
    notes: list[str]

    @property
    def categories(self) -> list[str]:
        return self.header.data.categories

    @classmethod
    def read(cls, f: Fields, path: Path) -> CompareSummary:
        return cls(path, Header.read(f), Header.read(f.obj("tuned")), Rule.read(f),
                   f.mapping("kinds", lambda g, k: KindComparison.read(g.obj(k))), f.texts("forced_despite"),
                   f.texts("notes"))


@dataclass(frozen=True)
class EvaluateSummary:
    """What ``sparcom evaluate`` wrote: per kind, how the fixed sets decode the evaluated run's instructions."""

    path: Path
    header: Header
    selection: dict[str, Any]
    headline: dict[str, ValidityHeadline]
    kinds: dict[str, dict[str, Any]]
    notes: list[str]

    @classmethod
    def read(cls, f: Fields, path: Path) -> EvaluateSummary:
        return cls(path, Header.read(f), dict(f.obj("selection").data),
                   f.mapping("headline", lambda g, k: ValidityHeadline.read(g.obj(k))),
                   {k: dict(v) for k, v in f.obj("kinds").data.items()}, f.texts("notes"))


@dataclass(frozen=True)
class SweepSummary:
    """What ``sparcom sweep`` wrote: per kind, one row per rule variant and ε."""

    path: Path
    header: Header
    rules: list[dict[str, Any]]
    kinds: dict[str, dict[str, Any]]
    notes: list[str]

    @classmethod
    def read(cls, f: Fields, path: Path) -> SweepSummary:
        return cls(path, Header.read(f), [dict(r.data) for r in f.items("rules")],
                   {k: dict(v) for k, v in f.obj("kinds").data.items()}, f.texts("notes"))


READERS = {IDENTIFY_FORMAT: IdentifySummary, COMPARE_FORMAT: CompareSummary, EVALUATE_FORMAT: EvaluateSummary,
           SWEEP_FORMAT: SweepSummary}


def _read(folder: str | Path, format_: str):
    path = Path(folder)
    file = path / SUMMARY_FILE if path.is_dir() else path
    return READERS[format_].read(read_document(file, format_, SUMMARY_VERSION), file.parent)


def read_identify(folder: str | Path) -> IdentifySummary:
    """The identify summary in ``folder`` (or the summary.json file itself)."""
    return _read(folder, IDENTIFY_FORMAT)


def read_compare(folder: str | Path) -> CompareSummary:
    return _read(folder, COMPARE_FORMAT)


def read_evaluate(folder: str | Path) -> EvaluateSummary:
    return _read(folder, EVALUATE_FORMAT)


def read_sweep(folder: str | Path) -> SweepSummary:
    return _read(folder, SWEEP_FORMAT)


__all__ = [
    "COMPARE_FORMAT",
    "EVALUATE_FORMAT",
    "IDENTIFY_FORMAT",
    "SUMMARY_VERSION",
    "SWEEP_FORMAT",
    "Bootstrap",
    "ClaimNullsRecord",
    "CompareSummary",
    "EvaluateSummary",
    "GeneralityNullRecord",
    "IdentifySummary",
    "KindComparison",
    "KindSets",
    "KindValidity",
    "Rule",
    "SweepSummary",
    "UniquenessRecord",
    "ValidityHeadline",
    "read_compare",
    "read_evaluate",
    "read_identify",
    "read_sweep",
    "read_validity",
]
