"""Reload actions against real processes: PID files, managed children, wrapper children, commands."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sidecar_helpers import lines, recorder, wait_until

from spiffe_bridge.sidecar.actions import (
    Actions,
    ManagedChild,
    RunCommand,
    SignalPidFile,
    WrapperChild,
    exit_code,
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return recorder(tmp_path)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def started(record: Path) -> bool:
    return any(line.startswith("started") for line in lines(record))


def test_exit_code_is_shell_style() -> None:
    assert (exit_code(0), exit_code(3), exit_code(-15), exit_code(-9)) == (0, 3, 143, 137)


class TestSignalPidFile:
    def test_signals_the_pid_in_the_file_each_time(
        self, tmp_path: Path, script: Path, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        record, pidfile = tmp_path / "rec", tmp_path / "pid"
        procs.append(subprocess.Popen([sys.executable, str(script), str(record), str(pidfile)]))
        wait_until(lambda: started(record), "child start")
        action = SignalPidFile(str(pidfile), signal.SIGHUP)
        assert action.after_write(first=True, changed=True)
        wait_until(lambda: "signal SIGHUP" in lines(record), "first SIGHUP")
        assert action.after_write(first=False, changed=False)  # identical material: nothing sent
        assert action.after_write(first=False, changed=True)
        wait_until(lambda: lines(record).count("signal SIGHUP") == 2, "second SIGHUP")
        assert lines(record).count("signal SIGHUP") == 2

    def test_retries_while_the_process_restarts(
        self, tmp_path: Path, script: Path, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        record, pidfile = tmp_path / "rec", tmp_path / "pid"
        pidfile.write_text("999999999\n")  # stale: no such process
        action = SignalPidFile(str(pidfile), signal.SIGUSR1, retry_for=10.0)
        result: list[bool] = []
        worker = threading.Thread(target=lambda: result.append(action.after_write(first=False, changed=True)))
        worker.start()
        procs.append(subprocess.Popen([sys.executable, str(script), str(record), str(pidfile)]))
        worker.join(15)
        assert result == [True]
        wait_until(lambda: "signal SIGUSR1" in lines(record), "SIGUSR1 after restart")

    @pytest.mark.parametrize("content", ["9" * 23, "2147483648", "-5", "0", "12 34"])  # never a live PID
    def test_pid_that_is_no_process_id_is_retried_not_raised(self, tmp_path: Path, content: str) -> None:
        """A 23-digit PID used to raise OverflowError out of os.kill and through the daemon."""
        pidfile = tmp_path / "pid"
        pidfile.write_text(content + "\n")
        action = SignalPidFile(str(pidfile), signal.SIGHUP, retry_for=0.1)
        assert action.after_write(first=True, changed=True) is True  # first write: quietly tolerated
        assert action.after_write(first=False, changed=True) is False

    def test_missing_process_on_first_write_is_not_an_error(self, tmp_path: Path) -> None:
        # spiffe-helper#251: the consumer may start after the sidecar.
        action = SignalPidFile(str(tmp_path / "absent.pid"), signal.SIGHUP, retry_for=0.2)
        assert action.after_write(first=True, changed=True) is True
        assert action.after_write(first=False, changed=True) is False


class TestManagedChild:
    def test_started_once_signalled_then_restarted_after_exit(self, tmp_path: Path, script: Path) -> None:
        record = tmp_path / "rec"
        child = ManagedChild([sys.executable, str(script), str(record)], signal.SIGUSR1)
        try:
            assert child.after_write(first=True, changed=False)  # starts even if files were already there
            wait_until(lambda: started(record), "child start")
            assert child.after_write(first=False, changed=True)
            wait_until(lambda: "signal SIGUSR1" in lines(record), "renew signal")
            assert child.proc is not None
            first_pid = child.proc.pid
            child.proc.kill()
            child.proc.wait()
            assert child.after_write(first=False, changed=False)  # no rotation: not restarted
            assert child.proc.pid == first_pid
            assert child.after_write(first=False, changed=True)  # next rotation restarts it
            wait_until(lambda: sum(line.startswith("started") for line in lines(record)) == 2, "restart")
        finally:
            child.stop()
        assert child.proc is not None and child.proc.poll() is not None

    def test_unstartable_program_fails_the_action(self, tmp_path: Path) -> None:
        child = ManagedChild([str(tmp_path / "missing")], None)
        assert child.after_write(first=True, changed=True) is False


class TestWrapperChild:
    def test_exit_code_reported_and_signals_forwarded(self, tmp_path: Path, script: Path) -> None:
        record = tmp_path / "rec"
        codes: list[int] = []
        done = threading.Event()

        def on_exit(code: int) -> None:
            codes.append(code)
            done.set()

        child = WrapperChild([sys.executable, str(script), str(record)], signal.SIGHUP, on_exit)
        assert child.after_write(first=True, changed=True)
        wait_until(lambda: started(record), "child start")
        assert child.after_write(first=False, changed=True)
        wait_until(lambda: "signal SIGHUP" in lines(record), "renew signal")
        assert child.forward(signal.SIGTERM)
        assert done.wait(10)
        assert codes == [7]
        assert child.forward(signal.SIGTERM) is False  # gone

    def test_command_not_found_is_127(self, tmp_path: Path) -> None:
        codes: list[int] = []
        done = threading.Event()
        child = WrapperChild([str(tmp_path / "missing")], None, lambda c: (codes.append(c), done.set()))
        assert child.after_write(first=True, changed=True) is False
        assert done.wait(5) and codes == [127]


class TestRunCommand:
    def test_runs_argv_without_shell_on_change_only(self, tmp_path: Path) -> None:
        out = tmp_path / "ran"
        argv = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('x $HOME;\\n')", str(out)]
        action = RunCommand(argv, timeout=10)
        assert action.after_write(first=True, changed=True)
        assert action.after_write(first=False, changed=False)
        assert action.after_write(first=False, changed=True)
        assert lines(out) == ["x $HOME;", "x $HOME;"]  # no shell expansion

    def test_failures(self, tmp_path: Path) -> None:
        assert RunCommand([sys.executable, "-c", "raise SystemExit(3)"]).after_write(True, True) is False
        assert RunCommand([str(tmp_path / "missing")]).after_write(True, True) is False
        slow = RunCommand([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.3)
        assert slow.after_write(True, True) is False


def test_actions_run_in_order_and_report_failure(tmp_path: Path) -> None:
    out = tmp_path / "order"
    first = RunCommand([sys.executable, "-c", f"open({str(out)!r}, 'a').write('1\\n')"])
    failing = RunCommand([sys.executable, "-c", "raise SystemExit(1)"])
    second = RunCommand([sys.executable, "-c", f"open({str(out)!r}, 'a').write('2\\n')"])
    actions = Actions([first, failing, second])
    assert actions.after_write(True, True) is False
    assert lines(out) == ["1", "2"]
    assert not Actions([])
