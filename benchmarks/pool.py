"""The parent's side of the load-generator processes (:mod:`benchmarks.loadgen`).

``generators(specs)`` starts one worker per spec, waits until each has logged
its clients in, and kills them all on the way out, whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

#: Seconds a worker may take to answer a command other than setup.
COMMAND_TIMEOUT = 30.0


def output_file(path: Path) -> int:
    """A new file for a child's output, as a descriptor (the child keeps its copy)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


class GeneratorFailed(Exception):
    """A load-generator process reported an error or died: see its stderr file."""


class Worker:
    def __init__(self, proc: trio.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self._buf = b""

    async def read(self) -> dict:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            data = await self.proc.stdout.receive_some(65536)
            if not data:
                tail = self.stderr.read_text(errors="replace")[-2000:]
                raise GeneratorFailed(f"a load generator exited early:\n{tail}")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if "error" in msg:
            raise GeneratorFailed(f"a load generator failed: {msg['error']}")
        return msg

    async def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(word.encode() + b"\n")


class Pool:
    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    async def command(self, word: str, within: float = COMMAND_TIMEOUT) -> list[dict]:
        """Send ``word`` to every worker at once; their answers, in worker order."""
        answers: list[dict] = [{} for _ in self.workers]

        async def one(i: int, w: Worker) -> None:
            await w.send(word)
            answers[i] = await w.read()

        with trio.fail_after(within):
            async with trio.open_nursery() as nursery:
                for i, w in enumerate(self.workers):
                    nursery.start_soon(one, i, w)
        return answers

    async def ready(self, within: float) -> list[dict]:
        """Wait (at most ``within`` s) until every worker has logged its clients in."""
        answers: list[dict] = [{} for _ in self.workers]

        async def one(i: int, w: Worker) -> None:
            answers[i] = await w.read()

        with trio.fail_after(within):
            async with trio.open_nursery() as nursery:
                for i, w in enumerate(self.workers):
                    nursery.start_soon(one, i, w)
        return answers

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]


@asynccontextmanager
async def generators(specs: list[dict], workdir: Path) -> AsyncIterator[Pool]:
    """Start one worker per spec (each gets ``deadline_s`` to live); kill all on exit."""
    workers: list[Worker] = []
    try:
        for i, spec in enumerate(specs):
            err = workdir / f"loadgen-{spec['role']}-{i}.stderr"
            fd = output_file(err)
            try:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "benchmarks.loadgen", json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=fd,
                )
            finally:
                os.close(fd)
            workers.append(Worker(proc, err))
        yield Pool(workers)
    finally:
        with trio.CancelScope(shield=True):
            for w in workers:
                if w.proc.poll() is None:
                    w.proc.kill()
            for w in workers:
                await w.proc.wait()
