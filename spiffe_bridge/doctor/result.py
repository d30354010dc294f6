"""The result of one doctor check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    """One line of doctor output: which check, pass or fail, what was seen, how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    #: not run because an earlier check failed (still not a pass)
    skipped: bool = False

    def line(self) -> str:
        """``PASS name: detail``, ``FAIL name: detail -- fix: ...`` or ``SKIP name: why``."""
        text = f"{'PASS' if self.ok else 'SKIP' if self.skipped else 'FAIL'} {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} -- fix: {self.fix}"

    def as_dict(self) -> dict[str, object]:
        """The result as JSON-ready data."""
        return {
            "check": self.name,
            "ok": self.ok,
            "skipped": self.skipped,
            "detail": self.detail,
            "fix": self.fix,
        }


def passed(name: str, detail: str) -> CheckResult:
    """A passing check."""
    return CheckResult(name, True, detail)


def failed(name: str, detail: str, fix: str) -> CheckResult:
    """A failing check with the fix to apply."""
    return CheckResult(name, False, detail, fix)


def skipped(name: str, because: str) -> CheckResult:
    """A check that could not run because an earlier one failed (counts as a failure)."""
    return CheckResult(name, False, f"not checked ({because})", skipped=True)
