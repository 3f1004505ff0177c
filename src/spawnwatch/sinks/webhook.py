"""Every alert record POSTed as it is to a URL (any JSON receiver: a chat relay, a
collector).  Alertmanager has a client of its own: sinks/alertmanager.py."""

from __future__ import annotations

from typing import Any

from spawnwatch.records import ALERT
from spawnwatch.sinks import Record
from spawnwatch.sinks.http import Delivery


class Webhook:
    def __init__(self, url: str, **delivery: Any) -> None:
        self.delivery = Delivery(url, **delivery)

    def send(self, record: Record) -> None:
        if record.get("kind") == ALERT:
            self.delivery.submit(record)

    def counts(self) -> dict[str, int]:
        return self.delivery.counts()

    @property
    def deliveries(self) -> list[Delivery]:
        return [self.delivery]

    def close(self) -> None:
        self.delivery.close()
