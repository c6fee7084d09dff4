"""A minimal CDR API v2 on loopback that serves a fixed day of odd records: non-ASCII everywhere, huge texts.

The stand-in generates realistic records; this one serves records a generator would not: every text
field in several scripts (with a NUL, combining marks, an emoji, right-to-left text), a uuid that is
not ASCII, and one 5 MB message. It honours `start_datetime`/`end_datetime`, `page`/`per_page`, and
answers `search_token: null`: paging is not what is tested here.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ODD_TEXTS = [
    "Zoë Ångström \u2013 café",
    "日本語のテキスト",
    "مرحبا بالعالم",
    "\u202eRTL override\u202c",
    "emoji 😀🚀👩‍👩‍👧",
    "NUL\u0000inside",
    "e\u0301 combining",
    "Ελληνικά / кириллица \\ ../../etc/passwd",
]


def odd_records(day: str, count: int = 40) -> list[dict[str, Any]]:
    records = []
    for number in range(count):
        text = ODD_TEXTS[number % len(ODD_TEXTS)]
        records.append(
            {
                "uuid": f"odd-{number:04d}" + ("-ü" if number % 5 == 0 else ""),
                "timestamp": f"{day}T{number % 24:02d}:{number % 60:02d}:07.000+00:00",
                "type": "outbound_sms" if number % 2 else "inbound",
                "disposition": "answered",
                "agent": text,
                "from": f"+55 {text}",
                "to": text[::-1],
                "queue": text.upper(),
                "destination_name": text,
                "text": "ç" * 5_000_000 if number == 7 else text * 3,
                "duration": "00:01:05",
            }
        )
    return records


class OddRecordsAPI:
    """Serves odd_records(day) at /api/v2/cdr on a free loopback port, in a thread."""

    timezone = "UTC"
    api_key = "odd-key"

    def __init__(self, day: str) -> None:
        self.records = odd_records(day)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = {name: values[-1] for name, values in parse_qs(urlsplit(self.path).query).items()}
                if params.get("key") != api.api_key:
                    return self._send(401, {"error": "Invalid api_key"})
                start, end = params.get("start_datetime", ""), params.get("end_datetime", "~")
                matching = [r for r in api.records if start <= r["timestamp"][:19] <= end]
                per_page, page = int(params.get("per_page", 1000)), int(params.get("page", 1))
                shown = matching[(page - 1) * per_page : page * per_page]
                self._send(200, {"records": shown, "search_token": None, "total": len(matching)})

            def _send(self, status: int, payload: Any) -> None:
                body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> OddRecordsAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
