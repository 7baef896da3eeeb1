"""Logins per second: fresh logins verifying argon2 with the default parameters,
on the unmodified ``chathack-rendezvous``; resumed sessions once they exist.

Each of ``LOOPS`` loops logs in (username and password in one write, wait for
``Servidor[OK]``), sends ``::quit``, closes, and starts again. The server
verifies with at most 2 argon2 worker threads, so a few loops saturate it.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.accounts import PASSWORD, create_accounts, rehashed
from benchmarks.pool import generators
from benchmarks.rendezvous_proc import HOST, rendezvous
from benchmarks.report import Result
from benchmarks.scenarios import Settings, measure
from chathack import protocol

#: Concurrent login loops (the server hashes on 2 worker threads).
LOOPS = 4
#: Concurrent resume loops (no hashing: more loops to keep the server busy).
RESUME_LOOPS = 32
RENDEZVOUS_DIR = Path(__file__).resolve().parents[2] / "rendezvous"


def resume_supported() -> bool:
    """Whether the rendezvous knows ``resume: NAME TOKEN`` yet."""
    return hasattr(protocol, "Resume") and any(
        "Resume(" in p.read_text(errors="replace") for p in RENDEZVOUS_DIR.glob("*.py")
    )


async def run(settings: Settings) -> Result:
    res = Result()
    work = settings.workdir("logins")
    names = [f"login{i}" for i in range(LOOPS)]
    resumers = [f"resume{i:02d}" for i in range(RESUME_LOOPS)]
    db = work / "rendezvous.sqlite3"
    create_accounts(db, names + resumers, cheap=False)
    resumed = None
    seconds = 6.0 if settings.quick else 10.0
    async with rendezvous(work, db, cheap_argon2=False) as srv:
        spec = {
            "role": "logins",
            "host": HOST,
            "port": srv.port,
            "password": PASSWORD,
            "names": names,
            "deadline_s": seconds + 60,
        }
        async with generators([spec], work) as pool:
            await pool.ready(30)
            w = await measure(pool, srv, warmup=1.0, seconds=seconds)
            await pool.command("stop")
        if resume_supported():
            spec = {**spec, "role": "resumes", "names": resumers, "login_concurrency": 4}
            async with generators([spec], work) as pool:
                await pool.ready(120)  # the first logins check passwords
                resumed = await measure(pool, srv, warmup=1.0, seconds=seconds)
                await pool.command("stop")
    res.add(
        "logins",
        "fresh logins (argon2 default parameters)",
        w.rate,
        "logins/s",
        note=f"{LOOPS} concurrent login loops; server CPU {w.server_us_per() or 0:,.0f} us "
        f"per login; the argon2 parameters are argon2-cffi's defaults (t=3, 64 MiB, p=4)",
    )
    res.add("logins", "fresh login latency p50 / p99", f"{w.p(0.5)} / {w.p(0.99)}", "ms")
    if resumed is not None:
        res.add(
            "logins",
            "resumed sessions (resume: NAME TOKEN)",
            resumed.rate,
            "resumes/s",
            note=f"{RESUME_LOOPS} loops: new connection, resume with the last token, wait for "
            f"the next token; server CPU {resumed.server_us_per() or 0:,.0f} us per resume; "
            f"CPU % of a core, server / generator / others: {resumed.cpu_split()}",
        )
        res.add(
            "logins",
            "resume latency p50 / p99",
            f"{resumed.p(0.5)} / {resumed.p(0.99)}",
            "ms",
        )
    else:
        res.add("logins", "resumed sessions", "n/a: not implemented yet", verdict="n/a")
    res.details = {
        "window": w.as_dict(),
        "resumed": resumed.as_dict() if resumed else None,
        "loops": LOOPS,
        "resume_loops": RESUME_LOOPS,
        "rehashed_accounts": rehashed(db, False),
    }
    return res
