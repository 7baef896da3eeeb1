"""``connect:`` lookups per second.

``CLIENTS`` logged-in clients each look up the next one (``connect: NAME``)
with ``WINDOW`` lookups in flight, sending another for every
``Servidor[PEER]`` answer. Each lookup also sends the target a
``Servidor[CALL]`` (that is what ``connect:`` does), which it reads and drops.
"""

from __future__ import annotations

from benchmarks.accounts import PASSWORD, create_accounts
from benchmarks.pool import generators
from benchmarks.rendezvous_proc import HOST, rendezvous
from benchmarks.report import Result
from benchmarks.scenarios import Settings, measure, split

WINDOW = 4


async def run(settings: Settings) -> Result:
    res = Result()
    clients = 100 if settings.quick else 200
    work = settings.workdir("connect")
    names = [f"look{i:04d}" for i in range(clients)]
    targets = {n: names[(i + 1) % clients] for i, n in enumerate(names)}
    db = work / "rendezvous.sqlite3"
    create_accounts(db, names, cheap=True)
    async with rendezvous(work, db, cheap_argon2=True) as srv:
        specs = [
            {
                "role": "lookups",
                "host": HOST,
                "port": srv.port,
                "password": PASSWORD,
                "names": chunk,
                "targets": [targets[n] for n in chunk],
                "window": WINDOW,
                "deadline_s": settings.duration + 120,
            }
            for chunk in split(names, settings.gen_procs)
        ]
        async with generators(specs, work) as pool:
            await pool.ready(60)
            w = await measure(pool, srv, warmup=2.0, seconds=settings.duration)
            await pool.command("stop")
    res.add(
        "connect",
        "connect: lookups",
        w.rate,
        "lookups/s",
        note=f"{clients} clients, {WINDOW} in flight each, {len(specs)} generator processes; "
        f"errors: {w.errors}",
    )
    res.add("connect", "server CPU per lookup", w.server_us_per(), "us")
    res.add(
        "connect",
        "CPU: server / generators / others",
        w.cpu_split(),
        "% of a core",
        note="others: processes outside this benchmark (the machine is shared)",
    )
    res.details = {"window": w.as_dict(), "clients": clients, "window_per_client": WINDOW}
    return res
