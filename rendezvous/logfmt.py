"""``--log-format json``: one JSON object a line, for log pipelines.

Each line holds ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the
call site's message template: the same for every occurrence, so lines group
and alert by it), ``args`` (the values filled into it) and ``message`` (the
sentence a person reads), plus the traceback as ``exc`` when there is one.
The values are the program's own (addresses, user names where the text log
has them, never message text); a value that is not JSON is written as text.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        args = record.args if isinstance(record.args, tuple) else ()
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": str(record.msg),
            "args": [a if isinstance(a, int | float | bool) else str(a) for a in args],
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
