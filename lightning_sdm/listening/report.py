"""The listening report: how often each system was preferred, with a 95 % Wilson interval
and a two-sided exact binomial test against no preference; per rater and per prompt."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightning_sdm.errors import UserInputError
from lightning_sdm.listening.answers import Answer, read_answers, some_bad_lines

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sound at small n and near 0 or 1)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_test_p(successes: int, trials: int) -> float:
    """Two-sided exact binomial test of p = 0.5: the probability of an outcome at most as
    likely as the one seen. Written out (a dozen lines) rather than adding SciPy for it."""
    if trials == 0:
        return 1.0
    probabilities = [math.comb(trials, k) / 2**trials for k in range(trials + 1)]
    observed = probabilities[successes]
    tolerance = observed * 1e-7  # equal probabilities computed apart
    return min(1.0, sum(p for p in probabilities if p <= observed + tolerance))


@dataclass
class Preference:
    a_preferred: int
    b_preferred: int
    no_preference: int

    @property
    def decided(self) -> int:
        return self.a_preferred + self.b_preferred

    def to_dict(self) -> dict[str, Any]:
        share = self.a_preferred / self.decided if self.decided else None
        low, high = wilson_interval(self.a_preferred, self.decided)
        return {
            **asdict(self),
            "answers": self.decided + self.no_preference,
            "decided": self.decided,
            "a_share": share,  # of the answers with a preference
            "a_share_95ci": [low, high] if self.decided else None,
            "p_value": binomial_test_p(self.a_preferred, self.decided),
        }


def tally(answers: Iterable[Answer]) -> Preference:
    counts = Counter(answer.choice for answer in answers)
    return Preference(counts["A"], counts["B"], counts["none"])


MARKDOWN_BAD_LINES = 50  # skipped lines the markdown lists; the JSON keeps every one


def build_report(answers_path: str | Path) -> dict[str, Any]:
    read = read_answers(answers_path)
    if not read.answers:
        problems = "".join(f"\n  {line}" for line in some_bad_lines(read.bad_lines))
        raise UserInputError(f"{answers_path} holds no answers{problems}")
    tests: dict[tuple[str, str], list[Answer]] = defaultdict(list)
    for answer in read.answers:
        tests[answer.system_a, answer.system_b].append(answer)
    comparisons = []
    for (system_a, system_b), given in tests.items():
        answers, earlier = _split_by_audio(given)
        if not answers:
            continue
        by_rater, by_prompt = defaultdict(list), defaultdict(list)
        for answer in answers:
            by_rater[answer.rater].append(answer)
            by_prompt[answer.prompt].append(answer)
        comparisons.append(
            {
                "system_a": system_a,
                "system_b": system_b,
                "overall": tally(answers).to_dict(),
                "a_heard_first": sum(a.heard_first == "A" for a in answers) / len(answers),
                "per_rater": {r: tally(a).to_dict() for r, a in sorted(by_rater.items())},
                "per_prompt": {p: tally(a).to_dict() for p, a in sorted(by_prompt.items())},
                "answers_to_earlier_audio": len(earlier),
            }
        )
    return {"answers_file": str(answers_path), "comparisons": comparisons,
            "bad_lines": read.bad_lines}  # fmt: skip


def _split_by_audio(answers: list[Answer]) -> tuple[list[Answer], list[Answer]]:
    """(answers to each pair's latest audio, answers to audio regenerated since). A folder
    regenerated between sessions keeps its name, so only the wavs' digests tell the two
    systems apart; answers saved before digests were recorded count as the latest."""
    latest = {answer.pair_id: answer.audio for answer in answers if answer.audio_a}
    current = [a for a in answers if not a.audio_a or a.audio == latest[a.pair_id]]
    earlier = [a for a in answers if a.audio_a and a.audio != latest[a.pair_id]]
    return current, earlier


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _row(name: str, entry: dict[str, Any]) -> str:
    return (
        f"| {name} | {entry['answers']} | {entry['a_preferred']} | {entry['b_preferred']} | "
        f"{entry['no_preference']} | {_percent(entry['a_share'])} | {_ci_text(entry)} | "
        f"{entry['p_value']:.3g} |"
    )


def report_markdown(report: dict[str, Any]) -> str:
    header = (
        "| | answers | A preferred | B preferred | no preference | A's share | 95 % CI "
        "(Wilson) | p (two-sided binomial) |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [f"# Listening test: {report['answers_file']}", ""]
    for comparison in report["comparisons"]:
        overall = comparison["overall"]
        lines += [
            f"## A = `{comparison['system_a']}`, B = `{comparison['system_b']}`",
            "",
            f"A was preferred in {_percent(overall['a_share'])} of {overall['decided']} answers "
            f"with a preference (95 % CI {_ci_text(overall)}; p = {overall['p_value']:.3g} "
            f"against no preference); {overall['no_preference']} answers had none. "
            f"A played first in {_percent(comparison['a_heard_first'])} of the answers."
            + _earlier_text(comparison["answers_to_earlier_audio"]),
            "",
            header,
            _row("all", overall),
            "",
            "### Per rater",
            "",
            header,
            *(_row(_cell(rater), e) for rater, e in comparison["per_rater"].items()),
            "",
            "### Per prompt",
            "",
            header,
            *(_row(_cell(prompt), e) for prompt, e in comparison["per_prompt"].items()),
            "",
        ]
    skipped = report["bad_lines"]
    if skipped:
        every = " (every one is in the JSON report)" if len(skipped) > MARKDOWN_BAD_LINES else ""
        shown = some_bad_lines(skipped, limit=MARKDOWN_BAD_LINES)
        lines += [f"## Lines skipped{every}", "", *(f"- {line}" for line in shown), ""]
    return "\n".join(lines)


def _earlier_text(count: int) -> str:
    if not count:
        return ""
    return (
        f" Left out: {count} answers given to earlier audio of these folders (regenerated since)."
    )


def _ci_text(entry: dict[str, Any]) -> str:
    interval = entry["a_share_95ci"]
    return "–" if interval is None else f"{_percent(interval[0])} – {_percent(interval[1])}"


def write_report(answers_path: str | Path, output: str | Path | None = None) -> tuple[Path, Path]:
    """OUTPUT.md and OUTPUT.json (default: beside the answers, named after them)."""
    report = build_report(answers_path)
    answers_path = Path(answers_path)
    stem = Path(output) if output else answers_path.with_name(f"{answers_path.stem}-report")
    stem.parent.mkdir(parents=True, exist_ok=True)
    markdown, data = stem.with_suffix(".md"), stem.with_suffix(".json")
    markdown.write_text(report_markdown(report), encoding="utf-8")
    data.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return markdown, data
