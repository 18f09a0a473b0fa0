"""What changed between two looks of ``fastrpc doctor --watch``: which
findings are new, since when each has been there, and which are gone."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastrpc.doctor.checks import Finding


def finding_key(finding: Finding) -> tuple[str, str]:
    """A finding's identity across looks: its check and its subject (its
    detail, a message count say, may change while it stays the same finding)."""
    return finding.check, finding.subject


@dataclass
class Look:
    """One look: the findings with when each was first seen and whether it is
    new since the previous look, and the findings of that look now gone."""

    number: int
    findings: list[Finding]
    since: dict[tuple[str, str], str]
    new: set[tuple[str, str]]
    gone: list[tuple[str, str]]

    def is_new(self, finding: Finding) -> bool:
        return finding_key(finding) in self.new


@dataclass
class ChangeTracker:
    """Feed it each look's findings in turn (``update``). The first look has
    nothing new: everything was already there when the watch began."""

    _since: dict[tuple[str, str], str] = field(default_factory=dict)
    _looks: int = 0

    def update(self, findings: list[Finding], at: str) -> Look:
        """``at``: when this look was taken (as it should show in ``since``)."""
        keys = [finding_key(f) for f in findings]
        present = set(keys)
        gone = [key for key in self._since if key not in present]
        for key in gone:
            del self._since[key]
        new = {key for key in keys if key not in self._since}
        for key in new:
            self._since[key] = at
        self._looks += 1
        return Look(self._looks, findings, dict(self._since), new if self._looks > 1 else set(), gone)
