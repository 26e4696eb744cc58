"""Measure names: ir_measures' syntax in, ir_measures' canonical names out.

lead accepts any name `ir_measures.parse_measure` reads (`P@10`, `MRR@10`, `nDCG`,
`AP(rel=2)@1000`, ...) whose measure it can compute with trec_eval's semantics (see
lead/evaluation/evaluate.py), and reports it under ir_measures' canonical spelling
(`MRR@10` -> `RR@10`), so every name lead writes is a valid input that reads back to the same
measure.

The relevance level of a binary measure is the evaluation's `relevance_level` unless the name
gives `rel=` explicitly. A canonical name carries `rel=` only when it is not 1, so a name
without it reads back at the evaluation's level: `AP(rel=1)@1000` at level 2 would be written
`AP@1000` and read back as `AP(rel=2)@1000`, and is refused for that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ir_measures

from lead.errors import ConfigError

# The CLI's measures when neither --measures nor --depth is given (the pipeline's evaluate rule).
DEFAULT_MEASURES = ("RR@10", "nDCG@10", "R@50", "R@100", "R@1000", "AP@1000")
# ir_measures family -> (pytrec_eval measure to request, key of its per-query value), computed
# on the run cut at the measure's cut-off; {k} is the cut-off. None: family-specific (below).
_TREC_MEASURES: dict[str, tuple[str, str] | None] = {
    "P": ("P.{k}", "P_{k}"),
    "R": ("recall.{k}", "recall_{k}"),
    "Success": ("success.{k}", "success_{k}"),
    "RR": ("recip_rank", "recip_rank"),
    "AP": ("map", "map"),
    "nDCG": None,  # ndcg_cut.{k}, or ndcg without a cut-off: its ideal ranking is not cut
    "Judged": None,  # num_rel_ret / num_ret with every judgment counted as relevant
    "Rprec": ("Rprec", "Rprec"),
    "Bpref": ("bpref", "bpref"),
}
SUPPORTED = tuple(_TREC_MEASURES)
_SUPPORTED_TEXT = f"lead computes {', '.join(SUPPORTED)}, with parameters @k and rel= only"


@dataclass(frozen=True)
class Measure:
    """One measure as lead computes it: the run is cut at `cutoff` (None: the whole run)."""

    family: str
    cutoff: int | None
    rel: int | None  # explicit rel= of the name; None: the evaluation's relevance level

    @property
    def binary(self) -> bool:
        """Whether grades count as relevant from a level on (nDCG uses them as gains)."""
        return "rel" in ir_measures.measures.registry[self.family].SUPPORTED_PARAMS

    def level(self, relevance_level: int) -> int:
        """The relevance level this measure is computed at in an evaluation at `relevance_level`."""
        if not self.binary:
            return relevance_level
        if self.rel == 1 and relevance_level != 1:
            given = f"{self.family}(rel=1)" + ("" if self.cutoff is None else f"@{self.cutoff}")
            raise ConfigError(
                f"measure {given!r} at relevance level {relevance_level}: ir_measures names it "
                f"{self.name(1)!r}, which reads back at level {relevance_level}; evaluate it "
                f"at level 1"
            )
        return relevance_level if self.rel is None else self.rel

    def name(self, relevance_level: int) -> str:
        """ir_measures' canonical name at an evaluation's level: `AP(rel=2)@1000`, `nDCG@10`."""
        params: dict[str, int] = {}
        if self.binary:
            params["rel"] = self.level(relevance_level)
        if self.cutoff is not None:
            params["cutoff"] = self.cutoff
        return repr(ir_measures.measures.registry[self.family](**params))

    def trec_requests(self) -> tuple[str, ...]:
        """The pytrec_eval measures to request, on the run cut at the cut-off."""
        if self.family == "Judged":
            return ("num_rel_ret", "num_ret")
        if self.family == "nDCG":
            return ("ndcg",) if self.cutoff is None else (f"ndcg_cut.{self.cutoff}",)
        return (_TREC_MEASURES[self.family][0].format(k=self.cutoff),)

    def value(self, scored: dict[str, float]) -> float:
        """This measure's value from pytrec_eval's results for one query."""
        if self.family == "Judged":
            return scored["num_rel_ret"] / scored["num_ret"]
        if self.family == "nDCG":
            return scored["ndcg" if self.cutoff is None else f"ndcg_cut_{self.cutoff}"]
        return scored[_TREC_MEASURES[self.family][1].format(k=self.cutoff)]


def parse_measure(name: str) -> Measure:
    """Read an ir_measures name; unknown or not computable here is a one-line ConfigError."""
    try:
        parsed = ir_measures.parse_measure(name)
    except (ValueError, NameError, TypeError) as err:
        raise ConfigError(f"unknown measure {name!r} ({err}); {_SUPPORTED_TEXT}") from err
    if parsed.NAME not in _TREC_MEASURES:
        raise ConfigError(f"measure {name!r} is not supported; {_SUPPORTED_TEXT}")
    cutoff_param = parsed.SUPPORTED_PARAMS.get("cutoff")
    if cutoff_param is not None and cutoff_param.required and "cutoff" not in parsed.params:
        raise ConfigError(f"measure {name!r} needs a cut-off ({parsed.NAME}@k)")
    try:
        parsed.validate_params()
    except AssertionError as err:
        raise ConfigError(f"measure {name!r}: {err}; {_SUPPORTED_TEXT}") from err
    params = dict(parsed.params)
    cutoff, rel = params.pop("cutoff", None), params.pop("rel", None)
    for key, value in params.items():
        if value != parsed.SUPPORTED_PARAMS[key].default:
            raise ConfigError(f"measure {name!r}: lead does not support {key}=; {_SUPPORTED_TEXT}")
    for key, value in (("cut-off", cutoff), ("rel", rel)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ConfigError(f"measure {name!r}: {key} must be an integer >= 1, got {value!r}")
    return Measure(parsed.NAME, cutoff, rel)


def parse_measures(names: Sequence[str], relevance_level: int) -> list[Measure]:
    """A non-empty list of distinct measures (distinct once named at `relevance_level`)."""
    if isinstance(names, str) or not names:
        raise ConfigError(f"measures must be a non-empty list of names, got {names!r}")
    parsed = [parse_measure(name) for name in names]
    canonical = [measure.name(relevance_level) for measure in parsed]
    if len(set(canonical)) != len(canonical):
        repeated = next(name for name in canonical if canonical.count(name) > 1)
        raise ConfigError(f"measures name {repeated!r} twice: {list(names)}")
    return parsed


def measure_name(name: str, relevance_level: int) -> str:
    """The name under which an evaluation at `relevance_level` reports measure `name`."""
    return parse_measure(name).name(relevance_level)


def default_measures(depth: int) -> tuple[str, ...]:
    """The measures that suit a run retrieved `depth` deep: RR@10, nDCG@10, R@100, R@depth,
    AP@depth (R@100 only when the run reaches rank 100)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"depth must be an integer >= 1, got {depth!r}")
    names = ["RR@10", "nDCG@10", *(["R@100"] if depth >= 100 else []), f"R@{depth}", f"AP@{depth}"]
    return tuple(dict.fromkeys(names))
