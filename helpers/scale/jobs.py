"""Independent trainings side by side: every seed of a method, every cell of a sweep, each in its own process
(`python -m helpers train ... --seed S`) with `threads` CPU threads, `jobs` of them at once (on CUDA spread over
the visible GPUs, one `CUDA_VISIBLE_DEVICES` each). A local process pool, nothing more: a cluster runs the
same `train` commands as a job array (docs/many_gpus.md).

Each job's lines (one per epoch, "response seed 1 epoch 3/30 ...") are printed by this process as they come, so
notebooks (JupyterLab and papermill) and the terminal show them alike. A failing job stops the others and its
message is raised as one paragraph; every job resumes from its last saved epoch when the batch runs again.
A training's float results depend on its thread count, never on what runs beside it: a job gives bitwise
the checkpoint it gives alone with the same threads (tests/test_jobs.py).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.knobs import Config
from ..core import paths
from ..core.errors import UserError
from ..core.runtime import resolve_device
from .torchrun import CHILD, EPOCH_LINES

AUTO = "auto"
SIDE_BY_SIDE = "HELPERS_SIDE_BY_SIDE"  # a job's env: how many trainings its batch runs at once (recorded)


@dataclass(frozen=True)
class Job:
    """One training: `cfg` (its run, its knobs), `method`, `seed`; `label` goes before its lines (a sweep's cell)."""

    cfg: Config
    method: str
    seed: int
    label: str = ""

    @property
    def title(self) -> str:
        return f"{self.label + ': ' if self.label else ''}{self.method} seed {self.seed}"


@dataclass(frozen=True)
class Plan:
    """How a batch runs: `jobs` at once, `threads` each, over `gpus` (CUDA indices; () on the CPU)."""

    jobs: int
    threads: int
    gpus: tuple = ()

    def describe(self) -> str:
        where = f" over GPU{'s' if len(self.gpus) > 1 else ''} {','.join(map(str, self.gpus))}" if self.gpus else ""
        return f"{self.jobs} side by side{where}, {self.threads} thread{'s' if self.threads != 1 else ''} each"


def cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


PER_CORE = 2  # jobs 'auto' on the CPU: up to this many trainings per core at once


def plan(cfg: Config, waiting: int, total: int | None = None) -> Plan:
    """The plan for `waiting` trainings of a batch of `total` (default: all waiting). jobs 'auto': on the CPU
    the whole batch at once, up to PER_CORE per core (measured: 3 demo seeds on 2 cores, 1 thread each, take 0.71x
    the time of 2 at once then the third alone, whose core is then idle: docs/performance.md); on CUDA one per
    visible GPU. threads 'auto': cores / jobs, at least 1. Both follow from the knobs, the machine and `total`,
    never from how many are left, so a seed trains with the same thread count however its batch falls (a
    resumed batch included). nproc > 1 (one training over several processes, DDP) trains one at a time."""
    device = resolve_device(cfg.device)
    gpus = tuple(range(torch.cuda.device_count())) if device.type == "cuda" else ()
    if cfg.nproc > 1 and cfg.jobs not in (AUTO, 1):
        raise UserError(
            f"nproc={cfg.nproc} trains one run over several processes and jobs={cfg.jobs} runs several trainings "
            "side by side: give one of them (jobs for many small runs, nproc for one large run; docs/many_gpus.md)."
        )
    total = max(waiting, total or 0, 1)
    if cfg.nproc > 1:
        slots = 1
    elif cfg.jobs == AUTO:
        slots = min(total, len(gpus) or PER_CORE * cores())
    else:
        slots = int(cfg.jobs)
    threads = max(1, cores() // slots) if cfg.threads == AUTO else int(cfg.threads)
    return Plan(max(1, min(slots, waiting)), threads, gpus)


def run(batch: list[Job], how: Plan, timeout_s: float | None = None) -> None:
    """Train every job of `batch`, `how.jobs` at once, each in a `python -m helpers train` process; print their
    lines as they come. A job that fails stops the others (their finished epochs are saved) and raises its
    message; Ctrl-C stops them all."""
    if not batch:
        return
    with tempfile.TemporaryDirectory(prefix="helpers-jobs-") as tmp:
        pool = _Pool(how, Path(tmp))
        try:
            failure = pool.run(list(batch), timeout_s)
        except KeyboardInterrupt:
            pool.stop_all()
            raise KeyboardInterrupt(
                "the trainings of this batch were stopped; every finished epoch is saved, so running again "
                "continues each from its last checkpoint"
            ) from None
        finally:
            pool.stop_all()
    if failure is not None:
        job, rc, message = failure
        raise UserError(
            f"Training {job.title} failed (exit status {rc}): {message}\nThe other trainings of this batch were "
            "stopped; every finished epoch is saved, so running again continues each from its last checkpoint."
        )


class _Pool:
    """The running processes of one batch; lines come through one queue and are printed by this thread only
    (ipykernel shows output of the thread that runs the cell)."""

    def __init__(self, how: Plan, tmp: Path):
        self.how, self.tmp = how, tmp
        self.running: dict[int, tuple] = {}  # slot -> (process, job, its last lines, the thread reading them)
        self.lines: queue.Queue = queue.Queue()

    def run(self, waiting: list[Job], timeout_s: float | None):
        t0 = time.perf_counter()
        while waiting or self.running:
            for slot in range(self.how.jobs):
                if waiting and slot not in self.running:
                    self.start(slot, waiting.pop(0))
            self.show(timeout=0.2)
            for slot, (proc, job, last, reader) in list(self.running.items()):
                if proc.poll() is None:
                    continue
                reader.join(timeout=10)  # (every line it wrote is queued)
                self.show(timeout=0)
                del self.running[slot]
                if proc.returncode != 0:
                    return job, proc.returncode, _message(last)
            if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                return waiting[0] if waiting else next(iter(self.running.values()))[1], -1, "timed out"
        return None

    def start(self, slot: int, job: Job) -> None:
        import yaml

        settings = self.tmp / f"job{slot}-{job.method}-{job.seed}.yaml"
        values = {**job.cfg.to_dict(), "force": False, "jobs": 1, "threads": self.how.threads}
        settings.write_text(yaml.safe_dump(values, sort_keys=False))
        env = {
            **os.environ,
            EPOCH_LINES: "1",
            CHILD: "1",
            SIDE_BY_SIDE: str(self.how.jobs),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(self.how.threads),
        }
        if self.how.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.how.gpus[slot % len(self.how.gpus)])
        cmd = [sys.executable, "-m", "helpers", "train", "--method", job.method, "--seed", str(job.seed)]
        cmd += ["--resume", "--no-progress", "--preset", str(settings)]
        proc = subprocess.Popen(
            cmd, cwd=str(paths.root()), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        last = deque(maxlen=40)
        reader = threading.Thread(target=self._read, args=(proc, job, last), daemon=True)
        reader.start()
        self.running[slot] = (proc, job, last, reader)

    def _read(self, proc: subprocess.Popen, job: Job, last: deque) -> None:
        for line in proc.stdout:
            last.append(line.rstrip("\n"))
            self.lines.put((job, line.rstrip("\n")))
        self.lines.put((job, None))

    def show(self, timeout: float) -> None:
        """Print the lines that came (waiting up to `timeout` for the first); the child's error paragraph is
        kept for the failure message instead."""
        while True:
            try:
                job, line = self.lines.get(timeout=timeout) if timeout else self.lines.get_nowait()
            except queue.Empty:
                return
            if line is not None and not line.startswith(("error: ", "(run with --debug")):
                print(f"[{job.label}] {line}" if job.label else line, flush=True)
            timeout = 0

    def stop_all(self) -> None:
        for proc, *_ in self.running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, *_ in self.running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.running.clear()


def _message(last: deque) -> str:
    """The failed job's one-paragraph error (what `python -m helpers` prints after "error: "), else its last
    lines (a crash)."""
    lines = list(last)
    for i, line in enumerate(lines):
        if line.startswith("error: "):
            body = [line.removeprefix("error: ")]
            body += [ln for ln in lines[i + 1 :] if not ln.startswith("(run with --debug")]
            return "\n".join(body).strip()
    return "its last lines:\n" + "\n".join(lines[-15:])


def recorded(cfg: Config) -> str:
    """How the run's trainings ran, from their checkpoints (the report's environment section):
    "students: 1 thread each, 2 side by side (9 trainings); teacher: 2 threads"."""
    from ..core import checkpoint
    from ..models import checkpoint_path, seeds_of

    def read(method, seed=None):
        path = checkpoint_path(cfg, method, seed)
        return checkpoint.load(path) if path.is_file() else None

    ways: dict = {}
    for state in [read(m, s) for m in cfg.students for s in seeds_of(cfg)]:
        if state and "threads" in state:
            key = (state["threads"], state.get("side_by_side", 1))
            ways[key] = ways.get(key, 0) + 1
    parts = [
        f"{t} thread{'s' if t != 1 else ''} each, {j} side by side ({n} training{'s' if n != 1 else ''})"
        for (t, j), n in sorted(ways.items())
    ]
    out = f"students: {'; '.join(parts)}" if parts else "students: not recorded (checkpoints from before threads were)"
    teacher = read("teacher") if cfg.teacher_weights in ("scratch", "torchvision") else None
    if teacher and "threads" in teacher:
        out += f"; teacher: {teacher['threads']} thread{'s' if teacher['threads'] != 1 else ''}"
    return out
