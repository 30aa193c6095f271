"""A real SMTP server on loopback (aiosmtpd) that records what it accepts and can be told
to refuse the next few messages, as a flaky mail relay would."""

import asyncio
import email
import email.policy
import threading
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from testbed.waiting import wait_until


class RecordingHandler:
    def __init__(self):
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.refusals_left = 0
        self.refused = 0
        self.delay = 0.0

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.refusals_left = self.refused = 0
            self.delay = 0.0

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.lock:
            refuse = self.refusals_left > 0
            if refuse:
                self.refusals_left -= 1
                self.refused += 1
        if refuse:
            return "451 4.3.0 Temporary failure, try again later"
        if self.delay:
            await asyncio.sleep(self.delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted"

    def sent_to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 30) -> list[EmailMessage]:
        return wait_until(
            lambda: len(received := self.sent_to(address)) >= count and received,
            timeout,
            f"{count} email(s) to {address}",
        )


class SmtpServer:
    def __init__(self, port: int):
        self.handler = RecordingHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
